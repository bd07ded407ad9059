"""Preprocessing: normalisation values, channel order, input validation, exact intrinsics."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from inference_fixtures import tiny_spec

from cloudypoints_core.errors import InputError
from cloudypoints_core.geometry import Intrinsics
from cloudypoints_core.inference.preprocess import Preprocessor, normalisation_lut

MEAN = (0.4, 0.5, 0.6)
STD = (0.2, 0.25, 0.3)


def _reference(rgb: np.ndarray, width: int, height: int, order: str) -> np.ndarray:
    """Independent float64 computation of the expected batch."""
    interp = (
        cv2.INTER_AREA if width <= rgb.shape[1] and height <= rgb.shape[0] else cv2.INTER_LINEAR
    )
    img = cv2.resize(rgb, (width, height), interpolation=interp).astype(np.float64) / 255.0
    if order == "bgr":
        img = img[..., ::-1]
    img = (img - np.array(MEAN)) / np.array(STD)
    return img.transpose(2, 0, 1)[None]


@pytest.mark.parametrize("order", ["rgb", "bgr"])
@pytest.mark.parametrize(("w", "h"), [(64, 32), (200, 90), (48, 20), (64, 40)])
def test_batch_values(order: str, w: int, h: int, rng: np.random.Generator) -> None:
    spec = tiny_spec(channel_order=order, mean=MEAN, std=STD)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    batch, _ = Preprocessor(spec)(rgb, Intrinsics(50.0, 50.0, w / 2, h / 2, w, h))
    assert batch.shape == (1, 3, 32, 64) and batch.dtype == np.float32
    assert batch.flags.c_contiguous
    np.testing.assert_allclose(batch, _reference(rgb, 64, 32, order), atol=2e-6)


def test_lut_is_the_normalisation_formula() -> None:
    lut = normalisation_lut(tiny_spec(mean=MEAN, std=STD))
    assert lut.shape == (1, 256, 3)
    np.testing.assert_allclose(lut[0, 255], (1 - np.array(MEAN)) / np.array(STD), rtol=1e-6)
    np.testing.assert_allclose(lut[0, 0], -np.array(MEAN) / np.array(STD), rtol=1e-6)


def test_non_contiguous_input_is_accepted(rng: np.random.Generator) -> None:
    rgb = rng.integers(0, 256, (40, 80, 3), dtype=np.uint8)
    view = rgb[:, ::-1]  # negative strides, which cv2 refuses
    intr = Intrinsics(50.0, 50.0, 40.0, 20.0, 80, 40)
    batch, _ = Preprocessor(tiny_spec())(view, intr)
    expected, _ = Preprocessor(tiny_spec())(np.ascontiguousarray(view), intr)
    np.testing.assert_array_equal(batch, expected)


def test_same_size_keeps_intrinsics_identical() -> None:
    intr = Intrinsics(41.0, 43.0, 30.2, 15.7, 64, 32, dist=(0.1, 0.0, 0.0, 0.0, 0.0))
    _, at_input = Preprocessor(tiny_spec())(np.zeros((32, 64, 3), np.uint8), intr)
    assert at_input == intr


def _blob(width: int, height: int, u: float, v: float, sigma: float) -> np.ndarray:
    uu, vv = np.meshgrid(np.arange(width), np.arange(height))
    g = np.exp(-((uu - u) ** 2 + (vv - v) ** 2) / (2 * sigma**2))
    return np.repeat((g * 255).round().astype(np.uint8)[..., None], 3, axis=2)


def _centroid(batch: np.ndarray) -> tuple[float, float]:
    # Undo the normalisation of channel 0 to get intensities, then take the weighted centroid.
    img = batch[0, 0] * STD[0] + MEAN[0]
    img = np.clip(img - img.min(), 0, None)
    vv, uu = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    return float((img * uu).sum() / img.sum()), float((img * vv).sum() / img.sum())


@pytest.mark.parametrize(("src_w", "src_h"), [(400, 256), (100, 40)])
def test_intrinsics_follow_the_resize_exactly(src_w: int, src_h: int) -> None:
    # A 3D point projects to (u, v) in the source image; after preprocessing its blob must sit
    # where the returned intrinsics project the same point. Shrinking (area) and enlarging
    # (linear) with different x and y factors; a convention error of half a pixel shows up.
    spec = tiny_spec(input_width=128, input_height=64, mean=MEAN, std=STD)
    intr = Intrinsics(
        300.0 * src_w / 400, 280.0 * src_h / 256, 0.47 * src_w, 0.53 * src_h, src_w, src_h
    )
    point = np.array([0.4, -0.3, 5.0])
    u = intr.fx_px * point[0] / point[2] + intr.cx_px
    v = intr.fy_px * point[1] / point[2] + intr.cy_px
    sigma = 0.04 * src_w
    batch, at_input = Preprocessor(spec)(_blob(src_w, src_h, u, v, sigma), intr)
    assert at_input.size == (128, 64)
    expected_u = at_input.fx_px * point[0] / point[2] + at_input.cx_px
    expected_v = at_input.fy_px * point[1] / point[2] + at_input.cy_px
    got_u, got_v = _centroid(batch)
    assert abs(got_u - expected_u) < 0.05
    assert abs(got_v - expected_v) < 0.05
    # The naive mapping (cx * s, no half-pixel terms) would be measurably off.
    naive_u = u * 128 / src_w
    assert abs(naive_u - expected_u) > 0.1


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((32, 64, 3), np.float32), "uint8"),
        (np.zeros((32, 64), np.uint8), "shape \\(H, W, 3\\)"),
        (np.zeros((32, 64, 4), np.uint8), "3 channels"),
        (np.zeros((33, 64, 3), np.uint8), "64x33 .* 64x32"),
        ([[1, 2, 3]], "numpy array"),
    ],
)
def test_bad_images_are_input_errors(image: object, message: str) -> None:
    intr = Intrinsics(50.0, 50.0, 32.0, 16.0, 64, 32)
    with pytest.raises(InputError, match=message):
        Preprocessor(tiny_spec())(image, intr)  # type: ignore[arg-type]


def test_intrinsics_must_be_intrinsics() -> None:
    with pytest.raises(InputError, match="Intrinsics"):
        not_intrinsics = (50, 50, 32, 16)
        Preprocessor(tiny_spec())(np.zeros((32, 64, 3), np.uint8), not_intrinsics)  # type: ignore[arg-type]
