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
