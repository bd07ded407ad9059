"""Training losses on log depth, masked to valid pixels: SILog and multi-scale gradient matching.

Both work on the log residual r = log(pred) - log(target) over pixels where ``mask`` is true, so a
relative error costs the same near and far (depth errors grow with distance for any monocular
estimator). Inputs are (B, 1, H, W) tensors of positive depths; masked-out pixels may hold any
value (NaN included), they never reach a gradient.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cloudypoints_core._optional import require

# The static branch gives mypy torch's real types; at run time a missing torch names this feature.
if TYPE_CHECKING:
    import torch
else:
    torch = require("torch", "the training losses")

__all__ = ["depth_loss", "gradient_matching_loss", "log_residual", "silog_loss"]

_EPS = 1e-6


def log_residual(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log pred - log target with zeros outside ``mask``, mask as float)."""
    m = mask.to(pred.dtype)
    # torch.where keeps NaN/inf targets of invalid pixels out of the graph (0 * nan = nan).
    safe_target = torch.where(mask, target, torch.ones_like(target))
    r = (torch.log(pred.clamp_min(_EPS)) - torch.log(safe_target.clamp_min(_EPS))) * m
    return r, m


def silog_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, lam: float = 0.85
) -> torch.Tensor:
    """Scale-invariant log loss (Eigen et al. 2014), per image then averaged over the batch.

    sqrt(mean(r^2) - lam * mean(r)^2): ``lam`` = 0 is the RMSE of log depth (fully metric),
    ``lam`` = 1 ignores a global scale; 0.85 (BTS, AdaBins) keeps most of the scale penalty while
    letting the structure converge first. Images without valid pixels contribute zero.
    """
    r, m = log_residual(pred, target, mask)
    n = m.flatten(1).sum(1)
    valid = n > 0
    n = n.clamp_min(1.0)
    mean = r.flatten(1).sum(1) / n
    mean_sq = (r * r).flatten(1).sum(1) / n
    var = (mean_sq - lam * mean * mean).clamp_min(0.0)
    per_image = torch.sqrt(var + _EPS) * valid.to(var.dtype)
    return per_image.sum() / valid.sum().clamp_min(1)


def gradient_matching_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, scales: int = 4
) -> torch.Tensor:
    """Multi-scale gradient matching on the log residual (as MiDaS uses it on depth).

    At scale k the residual is subsampled by 2^k; |dr/dx| + |dr/dy| is summed over pixel pairs
    that are both valid and divided by their count. Sharp depth edges (car against wall, pole
    against sky) must then sit where the ground truth has them.
    """
    r, m = log_residual(pred, target, mask)
    total = pred.new_zeros(())
    for k in range(scales):
        step = 2**k
        rk = r[:, :, ::step, ::step]
        mk = m[:, :, ::step, ::step]
        mx = mk[:, :, :, 1:] * mk[:, :, :, :-1]
        my = mk[:, :, 1:, :] * mk[:, :, :-1, :]
        gx = (rk[:, :, :, 1:] - rk[:, :, :, :-1]).abs() * mx
        gy = (rk[:, :, 1:, :] - rk[:, :, :-1, :]).abs() * my
        count = mx.sum() + my.sum()
        total = total + (gx.sum() + gy.sum()) / count.clamp_min(1.0)
    return total / scales


def depth_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    silog_lambda: float = 0.85,
    gradient_weight: float = 0.5,
    gradient_scales: int = 4,
) -> tuple[torch.Tensor, dict[str, float]]:
    """SILog + ``gradient_weight`` * gradient matching; returns (loss, {term: value})."""
    silog = silog_loss(pred, target, mask, silog_lambda)
    loss = silog
    terms = {"silog": float(silog.detach())}
    if gradient_weight > 0:
        grad = gradient_matching_loss(pred, target, mask, gradient_scales)
        loss = loss + gradient_weight * grad
        terms["grad"] = float(grad.detach())
    return loss, terms
