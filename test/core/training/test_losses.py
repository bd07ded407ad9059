"""Tests of the log-depth losses against independent numpy computations."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cloudypoints_core.training.losses import (  # noqa: E402
    depth_loss,
    gradient_matching_loss,
    silog_loss,
)


def _batch(rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    target = rng.uniform(1.0, 60.0, (2, 1, 12, 16)).astype(np.float32)
    pred = (target * rng.uniform(0.7, 1.4, target.shape)).astype(np.float32)
    mask = rng.random(target.shape) > 0.3
    target[~mask] = np.nan  # invalid pixels may hold anything
    return torch.from_numpy(pred), torch.from_numpy(target), torch.from_numpy(mask)


def test_silog_matches_numpy(rng: np.random.Generator) -> None:
    pred, target, mask = _batch(rng)
    got = float(silog_loss(pred, target, mask, lam=0.85))
    per_image = []
    for b in range(2):
        m = mask[b].numpy()
        d = np.log(pred[b].numpy()[m]) - np.log(target[b].numpy()[m])
        per_image.append(np.sqrt(np.mean(d**2) - 0.85 * np.mean(d) ** 2))
    assert got == pytest.approx(float(np.mean(per_image)), rel=1e-4)


def test_silog_scale_behaviour(rng: np.random.Generator) -> None:
    _, target, mask = _batch(rng)
    exact = torch.where(mask, target, torch.ones_like(target))
    assert float(silog_loss(exact, target, mask)) < 1e-2  # sqrt(eps) floor
    doubled = exact * 2.0
    # lambda = 1: a global scale error costs nothing; lambda = 0: it costs |log 2|.
    assert float(silog_loss(doubled, target, mask, lam=1.0)) < 1e-2
    assert float(silog_loss(doubled, target, mask, lam=0.0)) == pytest.approx(np.log(2), rel=1e-3)


def test_gradients_ignore_invalid_pixels(rng: np.random.Generator) -> None:
    pred, target, mask = _batch(rng)
    pred = pred.clone().requires_grad_(True)
    loss, terms = depth_loss(pred, target, mask)
    loss.backward()
    assert torch.isfinite(loss) and set(terms) == {"silog", "grad"}
    assert torch.isfinite(pred.grad).all()
    assert (pred.grad[~mask] == 0).all()


def test_image_without_valid_pixels_contributes_nothing(rng: np.random.Generator) -> None:
    pred, target, mask = _batch(rng)
    one = silog_loss(pred[:1], target[:1], mask[:1])
    mask2 = mask.clone()
    mask2[1] = False
    assert float(silog_loss(pred, target, mask2)) == pytest.approx(float(one), rel=1e-5)


def test_gradient_matching_matches_numpy_and_ignores_scale(rng: np.random.Generator) -> None:
    pred, target, mask = _batch(rng)
    got = float(gradient_matching_loss(pred, target, mask, scales=2))
    log_target = np.log(np.nan_to_num(target.numpy(), nan=1))
    r = np.where(mask.numpy(), np.log(pred.numpy()) - log_target, 0)
    m = mask.numpy().astype(np.float64)
    want = 0.0
    for k in range(2):
        rk, mk = r[:, :, :: 2**k, :: 2**k], m[:, :, :: 2**k, :: 2**k]
        mx = mk[..., 1:] * mk[..., :-1]
        my = mk[..., 1:, :] * mk[..., :-1, :]
        num = (np.abs(np.diff(rk, axis=-1)) * mx).sum() + (np.abs(np.diff(rk, axis=-2)) * my).sum()
        want += num / (mx.sum() + my.sum())
    assert got == pytest.approx(want / 2, rel=1e-4)
    exact = torch.where(mask, target, torch.ones_like(target))
    assert float(gradient_matching_loss(exact * 3.0, target, mask)) < 1e-5
