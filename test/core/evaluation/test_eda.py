"""Data analysis: streamed statistics against direct computation, and the report on fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from cityscapes_fixture import FixtureTree

from cloudypoints_core.errors import DatasetError
from cloudypoints_core.evaluation.eda import (
    ROW_BINS,
    DepthStats,
    cityscapes_sources,
    log_edges,
    percentiles_from_histogram,
    run_eda,
    synthcity_sources,
)


def test_histogram_percentiles_close_to_exact() -> None:
    rng = np.random.default_rng(3)
    values = np.exp(rng.normal(np.log(15.0), 0.8, 200_000))
    edges = log_edges()
    hist, _ = np.histogram(values, bins=edges)
    got = percentiles_from_histogram(edges, hist, [1, 25, 50, 75, 99])
    want = np.percentile(values, [1, 25, 50, 75, 99])
    np.testing.assert_allclose(got, want, rtol=0.012)  # bin width 2.3 %: error under half
    assert np.isnan(percentiles_from_histogram(edges, np.zeros_like(hist), [50])[0])


def test_depth_stats_against_direct_computation() -> None:
    rng = np.random.default_rng(0)
    depth = rng.uniform(2.0, 120.0, (ROW_BINS, 40)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.2] = np.nan
    depth[:5] = np.inf  # sky rows
    depth[-10:, :3] = 0.0  # invalid
    stats = DepthStats()
    stats.add(depth, region_rows=ROW_BINS - 32)
    stats.add(depth, region_rows=ROW_BINS - 32)
    summary = stats.summary()
    valid = np.isfinite(depth) & (depth > 0)
    region = depth[: ROW_BINS - 32][valid[: ROW_BINS - 32]]
    assert summary["images"] == 2
    assert summary["valid_ratio"] == pytest.approx(region.size / ((ROW_BINS - 32) * 40))
    assert summary["valid_ratio_all_rows"] == pytest.approx(valid.mean())
    assert summary["infinite_ratio"] == pytest.approx(5 / ROW_BINS)
    assert summary["depth_mean_m"] == pytest.approx(region.mean(), rel=1e-6)
    assert summary["depth_max_m"] == pytest.approx(region.max())
    assert summary["beyond_cap_ratio"] == pytest.approx((region >= 80.0).mean())
    assert summary["percentiles_m"]["p50"] == pytest.approx(np.median(region), rel=0.012)
    # Row profile: with ROW_BINS rows, one bin per row.
    _, mean, ratio = stats.row_profile()
    want_mean = np.where(valid, depth, 0).sum(axis=1)[5:] / valid.sum(axis=1)[5:]
    np.testing.assert_allclose(mean[5:], want_mean, rtol=1e-5)
    assert np.isnan(mean[:5]).all()
    np.testing.assert_allclose(ratio, valid.mean(axis=1))


def test_cityscapes_eda_report(cs_tree: FixtureTree, tmp_path: Path) -> None:
    summary = run_eda(
        cityscapes_sources(cs_tree.root, progress=False), tmp_path, title="fixture", progress=False
    )
    for name in (
        "report.md",
        "summary.json",
        "counts.png",
        "depth_histogram.png",
        "row_profile.png",
        "calibration.png",
        "examples.png",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    assert not list(tmp_path.glob(".*tmp*")), "temporary files left behind"
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["splits"]["train"]["groups"] == {"aachen": 2, "bochum": 2}
    assert summary["splits"]["test"]["frames"] == 4
    # Valid ratio above the hood, computed straight from the disparity PNGs (p > 1 is valid).
    raws = [
        cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        for p in sorted((cs_tree.root / "disparity" / "val").rglob("*_disparity.png"))
    ]
    want = np.mean([(raw[:96] > 1).mean() for raw in raws])
    assert summary["splits"]["val"]["depth"]["valid_ratio"] == pytest.approx(want)
    fx = summary["splits"]["train"]["calibration"]["fx_px"]
    assert fx["distinct"] == 2 and fx["min"] < fx["max"]
    report = (tmp_path / "report.md").read_text()
    assert "| train | 4 | 2 | aachen (2), bochum (2) |" in report
    assert "![depth histogram](depth_histogram.png)" in report
    assert "baseline_m" in report and "pitch_rad" in report


def test_cityscapes_eda_reports_bad_frames_and_goes_on(
    cs_tree: FixtureTree, tmp_path: Path
) -> None:
    import shutil

    root = tmp_path / "cs"
    shutil.copytree(cs_tree.root, root)
    victim = next((root / "disparity" / "train" / "aachen").iterdir())
    victim.write_bytes(b"")
    summary = run_eda(
        cityscapes_sources(root, ["train"], progress=False),
        tmp_path / "out",
        title="broken",
        progress=False,
        n_examples=1,
    )
    assert summary["splits"]["train"]["frames"] == 3
    assert "Problems found" in (tmp_path / "out" / "report.md").read_text()
    assert victim.name in (tmp_path / "out" / "report.md").read_text()
    with pytest.raises(DatasetError, match="expected"):
        cityscapes_sources(tmp_path / "out", progress=False)


def test_synthcity_eda(tmp_path: Path) -> None:
    summary = run_eda(
        synthcity_sources([0, 1], 96, 48), tmp_path, title="synth", progress=False, n_examples=2
    )
    ((name, entry),) = summary["splits"].items()
    assert name == "synthcity seeds 0-1" and entry["frames"] == 2
    assert 0 < entry["depth"]["infinite_ratio"] < 1  # sky
    assert entry["depth"]["valid_ratio"] == pytest.approx(1 - entry["depth"]["infinite_ratio"])
    assert entry["calibration"]["fx_px"]["min"] > 0
    assert (tmp_path / "examples.png").is_file()
