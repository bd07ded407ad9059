"""Depth metrics against values computed by hand on tiny arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cloudypoints_core.errors import InputError
from cloudypoints_core.evaluation.metrics import (
    abs_rel_by_distance,
    band_errors,
    compute_errors,
    mean_errors,
)


def test_compute_errors_by_hand() -> None:
    # gt = (1, 2, 4), pred = (1.5, 2, 2): differences (-0.5, 0, 2).
    errors = compute_errors([1.0, 2.0, 4.0], [1.5, 2.0, 2.0])
    assert errors["abs_rel"] == pytest.approx((0.5 / 1 + 0 + 2 / 4) / 3)  # 1/3
    assert errors["sq_rel"] == pytest.approx((0.25 / 1 + 0 + 4 / 4) / 3)  # 0.41667
    assert errors["rmse"] == pytest.approx(math.sqrt((0.25 + 0 + 4) / 3))  # 1.19024
    assert errors["rmse_log"] == pytest.approx(
        math.sqrt((math.log(1.5) ** 2 + 0 + math.log(2.0) ** 2) / 3)
    )  # 0.46363
    # ratios max(gt/pred, pred/gt) = (1.5, 1, 2): below 1.25 only the middle one; below
    # 1.5625 the first two; below 1.953125 still the first two (2 is not below).
    assert errors["a1"] == pytest.approx(1 / 3)
    assert errors["a2"] == pytest.approx(2 / 3)
    assert errors["a3"] == pytest.approx(2 / 3)


def test_compute_errors_literal_values() -> None:
    errors = compute_errors([10.0, 20.0], [12.0, 15.0])
    # AbsRel (0.2 + 0.25) / 2; SqRel (4/10 + 25/20) / 2; RMSE sqrt((4 + 25) / 2).
    assert errors["abs_rel"] == pytest.approx(0.225)
    assert errors["sq_rel"] == pytest.approx(0.825)
    assert errors["rmse"] == pytest.approx(3.807886552931954)
    # ratios 1.2 and 1.3333: one below 1.25, both below 1.5625.
    assert (errors["a1"], errors["a2"], errors["a3"]) == (0.5, 1.0, 1.0)


def test_thresholds_are_strict() -> None:
    # A ratio of exactly 1.25 (5/4, exact in binary) is not "below 1.25".
    errors = compute_errors([4.0], [5.0])
    assert errors["a1"] == 0.0 and errors["a2"] == 1.0
    assert compute_errors([1.0], [1.25**2])["a2"] == 0.0


def test_perfect_prediction() -> None:
    errors = compute_errors([3.0, 7.0, 50.0], [3.0, 7.0, 50.0])
    assert errors == {
        "abs_rel": 0.0,
        "sq_rel": 0.0,
        "rmse": 0.0,
        "rmse_log": 0.0,
        "a1": 1.0,
        "a2": 1.0,
        "a3": 1.0,
    }


def test_mean_errors_is_per_image_then_mean() -> None:
    # Image A: one pixel with AbsRel 0.5; image B: three pixels with AbsRel 0. Per-image mean
    # gives 0.25 (pooling the pixels would give 0.125).
    a = compute_errors([2.0], [1.0])
    b = compute_errors([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert mean_errors([a, b])["abs_rel"] == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("gt", "pred", "message"),
    [
        ([1.0], [1.0, 2.0], "must match"),
        ([], [], "no valid pixels"),
        ([1.0, np.nan], [1.0, 1.0], "finite and positive"),
        ([1.0], [0.0], "finite and positive"),
    ],
)
def test_compute_errors_rejects_bad_input(gt, pred, message: str) -> None:
    with pytest.raises(InputError, match=message):
        compute_errors(gt, pred)


def test_band_errors_by_hand() -> None:
    gt = [5.0, 15.0, 10.0, 30.0, 60.0, 85.0]
    pred = [6.0, 15.0, 12.0, 24.0, 60.0, 1.0]
    bands = band_errors(gt, pred)
    assert list(bands) == ["0-10m", "10-20m", "20-40m", "40-80m"]
    assert bands["0-10m"]["abs_rel"] == pytest.approx(0.2)  # type: ignore[index]
    # 10 m belongs to [10, 20): AbsRel (0 + 0.2) / 2.
    assert bands["10-20m"]["abs_rel"] == pytest.approx(0.1)  # type: ignore[index]
    assert bands["20-40m"]["abs_rel"] == pytest.approx(0.2)  # type: ignore[index]
    assert bands["20-40m"]["rmse"] == pytest.approx(6.0)  # type: ignore[index]
    assert bands["40-80m"]["abs_rel"] == 0.0  # type: ignore[index]
    # 85 m lies in no band; an empty band is None.
    assert band_errors([5.0], [5.0])["40-80m"] is None


def test_abs_rel_by_distance_sums_and_counts() -> None:
    sums, counts = abs_rel_by_distance(
        [5.0, 15.0, 10.0, 25.0], [4.0, 15.0, 12.0, 1.0], [0.0, 10.0, 20.0]
    )
    np.testing.assert_allclose(sums, [0.2, 0.2])
    np.testing.assert_array_equal(counts, [1, 2])
    with pytest.raises(InputError, match="strictly increasing"):
        abs_rel_by_distance([1.0], [1.0], [5.0, 5.0])


def test_error_terms_agree_with_compute_errors() -> None:
    from cloudypoints_core.evaluation.metrics import ErrorTerms, band_index

    rng = np.random.default_rng(7)
    gt = rng.uniform(0.5, 90.0, 5000)
    pred = gt * rng.lognormal(0.0, 0.3, gt.size)
    terms = ErrorTerms(gt, pred)
    whole = terms.reduce()[0]
    assert whole is not None
    reference = compute_errors(gt, pred)
    for name, value in reference.items():
        assert whole[name] == pytest.approx(value, rel=1e-12), name
    bands = ((0.0, 10.0), (10.0, 20.0), (20.0, 40.0), (40.0, 80.0))
    grouped = terms.reduce(band_index(gt, bands), len(bands))
    for (lo, hi), got in zip(bands, grouped, strict=True):
        inside = (gt >= lo) & (gt < hi)
        want = compute_errors(gt[inside], pred[inside])
        assert got is not None
        for name, value in want.items():
            assert got[name] == pytest.approx(value, rel=1e-12), (lo, name)


def _textbook(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """monodepth2's expressions as written (float64, one temporary per term)."""
    thresh = np.maximum(gt / pred, pred / gt)
    return {
        "abs_rel": float(np.mean(np.abs(gt - pred) / gt)),
        "sq_rel": float(np.mean((gt - pred) ** 2 / gt)),
        "rmse": float(np.sqrt(np.mean((gt - pred) ** 2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(gt) - np.log(pred)) ** 2))),
        "a1": float(np.mean(thresh < 1.25)),
        "a2": float(np.mean(thresh < 1.25**2)),
        "a3": float(np.mean(thresh < 1.25**3)),
    }


@pytest.mark.parametrize("size", [1, 1000, 100_003])  # the last spans several blocks
def test_compute_errors_matches_the_textbook_expressions(size: int) -> None:
    rng = np.random.default_rng(size)
    gt = rng.uniform(0.5, 80.0, size)
    pred = gt * rng.lognormal(0.0, 0.25, size)
    # Ratios of exactly 1.25, 1.5625 and their inverses sit on the strict thresholds.
    edge = min(size, 4)
    pred[:edge] = (gt[:edge] * np.array([1.25, 0.8, 1.5625, 0.64])[:edge]).round(6)
    gt[:edge] = pred[:edge] / np.array([1.25, 0.8, 1.5625, 0.64])[:edge]
    got, want = compute_errors(gt, pred), _textbook(gt, pred)
    assert set(got) == set(want)
    for name in ("a1", "a2", "a3"):
        assert got[name] == want[name], name  # the same threshold decisions, pixel by pixel
    for name in ("abs_rel", "sq_rel", "rmse", "rmse_log"):
        assert got[name] == pytest.approx(want[name], rel=1e-12), name


def test_compute_errors_takes_float32_and_nested_inputs() -> None:
    gt32 = np.array([[1.0, 2.0], [4.0, 8.0]], np.float32)
    pred32 = np.array([[1.5, 2.0], [2.0, 9.0]], np.float32)
    got = compute_errors(gt32, pred32)
    want = _textbook(gt32.astype(np.float64).ravel(), pred32.astype(np.float64).ravel())
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-12), name
    for bad in ([1.0, np.inf], [1.0, -1.0]):
        with pytest.raises(InputError, match="finite and positive"):
            compute_errors([1.0, 2.0], bad)


def test_error_sums_fed_in_pieces_equal_one_call() -> None:
    from cloudypoints_core.evaluation.metrics import ErrorSums

    rng = np.random.default_rng(3)
    gt = rng.uniform(1.0, 60.0, 70_000)
    pred = gt * rng.uniform(0.7, 1.4, gt.size)
    sums = ErrorSums()
    for lo, hi in ((0, 10), (10, 40_000), (40_000, 70_000)):
        sums.add(gt[lo:hi], pred[lo:hi])
    assert sums.count == gt.size
    whole = compute_errors(gt, pred)
    for name, value in sums.metrics().items():
        assert value == pytest.approx(whole[name], rel=1e-12), name
    with pytest.raises(InputError, match="no valid pixels"):
        ErrorSums().metrics()
    with pytest.raises(InputError, match="must match"):
        ErrorSums().add(gt[:3], pred[:2])
