"""ScaleTracker: smoothing of scale and shift over frames, outliers, holding the last good fit."""

from __future__ import annotations

import pytest

from cloudypoints_core.errors import ConfigError
from cloudypoints_core.inference.scale import ScaleFit
from cloudypoints_core.inference.scale_tracker import ScaleTracker


def _fit(scale: float, shift: float = 0.0, x_range: tuple[float, float] = (0.5, 2.0)) -> ScaleFit:
    return ScaleFit("affine_ransac", scale, shift, 0.7, 1000, "", x_range)


FAILED = ScaleFit("affine_ransac", None, 0.0, 0.1, 1000, "only 10 % agree")


def test_first_fit_is_taken_as_is() -> None:
    tracker = ScaleTracker()
    assert not tracker.state.ok and tracker.state.reason == "no fit yet"
    state = tracker.update(_fit(4.0, -0.2))
    assert (state.scale, state.shift) == pytest.approx((4.0, -0.2))
    assert not state.held and state.fits == 1 and state.inlier_ratio == 0.7


def test_smoothing_averages_inverse_depth_and_converges() -> None:
    tracker = ScaleTracker(smoothing=0.5)
    tracker.update(_fit(4.0, 0.0))
    state = tracker.update(_fit(5.0, 0.0))  # 1/scale averaged: 1 / ((1/4 + 1/5) / 2)
    assert state.scale == pytest.approx(1.0 / ((0.25 + 0.2) / 2.0))
    for _ in range(30):
        state = tracker.update(_fit(5.0, 0.1))
    assert (state.scale, state.shift) == pytest.approx((5.0, 0.1), rel=1e-6)


def test_a_failed_fit_holds_the_last_good_one() -> None:
    tracker = ScaleTracker()
    tracker.update(_fit(3.0, -0.1))
    for n in (1, 2, 3):
        state = tracker.update(FAILED)
        assert state.held and state.frames_since_fit == n
        assert (state.scale, state.shift) == pytest.approx((3.0, -0.1))
    assert state.failures == 3 and state.reason == "only 10 % agree"
    assert state.inlier_ratio == 0.1  # the last fit's, so diagnostics show why
    assert not tracker.update(_fit(3.0, -0.1)).held


def test_a_failed_fit_before_any_good_one_has_no_scale() -> None:
    state = ScaleTracker().update(FAILED)
    assert state.scale is None and not state.ok and state.failures == 1


def test_a_jump_is_held_back_until_it_persists() -> None:
    tracker = ScaleTracker(smoothing=0.3, max_jump=0.25, reset_after=3)
    tracker.update(_fit(4.0))
    for n in (1, 2):
        state = tracker.update(_fit(8.0))  # depth doubled: an outlier
        assert state.held and state.outliers == n and state.scale == pytest.approx(4.0)
        assert "held back" in state.reason
    state = tracker.update(_fit(8.0))  # third in a row: the scene really changed
    assert not state.held and state.scale == pytest.approx(8.0)
    # A small change is smoothed, not held.
    state = tracker.update(_fit(8.8))
    assert not state.held and 8.0 < (state.scale or 0.0) < 8.8


def test_reset_forgets_the_estimate() -> None:
    tracker = ScaleTracker()
    tracker.update(_fit(2.0))
    tracker.reset()
    assert tracker.state.scale is None
    assert tracker.update(_fit(6.0)).scale == pytest.approx(6.0)


@pytest.mark.parametrize(
    "kwargs", [{"smoothing": 0.0}, {"smoothing": 1.5}, {"max_jump": -1.0}, {"reset_after": 0}]
)
def test_bad_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        ScaleTracker(**kwargs)  # type: ignore[arg-type]
