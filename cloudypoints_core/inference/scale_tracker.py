"""Scale and shift of a relative depth model over a stream of frames: smoothed, held, inspectable.

A per-frame ground fit (:class:`~cloudypoints_core.inference.scale.ScaleFit`) jitters with the
scene (a car covers half the road, a speed bump) and sometimes fails (a wall in front). Depth
published from the raw per-frame values would flicker, and a failed frame would have no metres
at all. :class:`ScaleTracker` keeps one running estimate for a camera:

- Fits are smoothed in the inverse-depth coefficients ``alpha = 1 / scale`` and
  ``beta = shift / scale`` (``1/z = alpha * x + beta``) by an exponential moving average with
  weight ``smoothing`` for the new fit. Averaging these (not scale and shift) averages the
  inverse depths that every output value maps to, which keeps the result a valid affine model.
- A fit that would move the road's depth by more than ``max_jump`` (relative, compared at the
  10th and 90th percentile of the output on the fit's inliers) is held back as an outlier; after
  ``reset_after`` such fits in a row the camera or scene really changed and the tracker restarts
  from the newest fit.
- A failed fit leaves the estimate as it was (the last good fit, smoothed): the caller keeps
  publishing metres with it and the state says for how many frames it has been held.

Thread-safe: the node's inference workers share one tracker.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from cloudypoints_core.errors import ConfigError
from cloudypoints_core.inference.scale import ScaleFit

__all__ = ["ScaleState", "ScaleTracker"]


@dataclass(frozen=True)
class ScaleState:
    """The tracker's estimate and its history (``depth_m = scale / (x + shift)``).

    ``scale`` is None until a first good fit. ``held`` is True when the last update did not
    change the estimate (the fit failed or was an outlier); ``frames_since_fit`` counts such
    updates in a row. ``inlier_ratio``, ``fit_method`` and ``reason`` describe the last fit
    (``reason`` is empty when it was accepted).
    """

    scale: float | None
    shift: float
    inlier_ratio: float
    fit_method: str
    held: bool
    frames_since_fit: int
    fits: int
    failures: int
    outliers: int
    reason: str

    @property
    def ok(self) -> bool:
        return self.scale is not None


class ScaleTracker:
    """Running scale and shift of one camera's relative depth (see the module docstring)."""

    def __init__(
        self, smoothing: float = 0.3, max_jump: float = 0.25, reset_after: int = 5
    ) -> None:
        if not (isinstance(smoothing, (int, float)) and 0 < smoothing <= 1):
            raise ConfigError(f"smoothing must be in (0, 1], got {smoothing!r}")
        if not (isinstance(max_jump, (int, float)) and math.isfinite(max_jump) and max_jump > 0):
            raise ConfigError(f"max_jump must be finite and positive, got {max_jump!r}")
        if not (isinstance(reset_after, int) and reset_after >= 1):
            raise ConfigError(f"reset_after must be an integer >= 1, got {reset_after!r}")
        self.smoothing = float(smoothing)
        self.max_jump = float(max_jump)
        self.reset_after = reset_after
        self._lock = threading.Lock()
        self._alpha: float | None = None
        self._beta = 0.0
        self._inlier_ratio = 0.0
        self._fit_method = ""
        self._held = False
        self._since_fit = 0
        self._fits = 0
        self._failures = 0
        self._outliers = 0
        self._outliers_in_row = 0
        self._reason = "no fit yet"

    def reset(self) -> None:
        """Forget the estimate (e.g. the camera was re-mounted)."""
        with self._lock:
            self._alpha = None
            self._beta = 0.0
            self._outliers_in_row = 0
            self._reason = "reset"

    @staticmethod
    def _jump(old: tuple[float, float], new: tuple[float, float], fit: ScaleFit) -> float:
        """Largest relative change of depth from the ``old`` to the ``new`` (alpha, beta),
        where the fit has road data."""
        lo, hi = fit.x_range if fit.x_range is not None else (1.0, 1.0)
        worst = 0.0
        for x in (lo, hi):
            inv_old = old[0] * x + old[1]
            inv_new = new[0] * x + new[1]
            if not (inv_old > 0 and inv_new > 0):
                return math.inf
            worst = max(worst, abs(inv_old / inv_new - 1.0))  # = depth_new / depth_old - 1
        return worst

    def update(self, fit: ScaleFit) -> ScaleState:
        """Fold one frame's fit into the estimate and return the new state."""
        with self._lock:
            self._inlier_ratio = fit.inlier_ratio
            self._fit_method = fit.method
            if fit.scale is None or not (math.isfinite(fit.scale) and fit.scale > 0):
                self._failures += 1
                self._since_fit += 1
                self._held = True
                self._reason = fit.reason or "the fit failed"
                return self._state()
            alpha, beta = 1.0 / fit.scale, fit.shift / fit.scale
            self._fits += 1
            if self._alpha is None:
                self._alpha, self._beta = alpha, beta
            else:
                jump = self._jump((self._alpha, self._beta), (alpha, beta), fit)
                if jump > self.max_jump and self._outliers_in_row + 1 < self.reset_after:
                    self._outliers += 1
                    self._outliers_in_row += 1
                    self._since_fit += 1
                    self._held = True
                    self._reason = (
                        f"the fit would change the road's depth by {jump:.0%} "
                        f"(> {self.max_jump:.0%}); held back as an outlier"
                    )
                    return self._state()
                if jump > self.max_jump:
                    # reset_after outliers in a row: the world changed, follow it.
                    self._alpha, self._beta = alpha, beta
                else:
                    w = self.smoothing
                    self._alpha = (1.0 - w) * self._alpha + w * alpha
                    self._beta = (1.0 - w) * self._beta + w * beta
            self._outliers_in_row = 0
            self._since_fit = 0
            self._held = False
            self._reason = ""
            return self._state()

    @property
    def state(self) -> ScaleState:
        with self._lock:
            return self._state()

    def _state(self) -> ScaleState:
        scale = None if self._alpha is None else 1.0 / self._alpha
        shift = 0.0 if self._alpha is None else self._beta / self._alpha
        return ScaleState(
            scale=scale,
            shift=shift,
            inlier_ratio=self._inlier_ratio,
            fit_method=self._fit_method,
            held=self._held,
            frames_since_fit=self._since_fit,
            fits=self._fits,
            failures=self._failures,
            outliers=self._outliers,
            reason=self._reason,
        )
