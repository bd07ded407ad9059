"""Offline bag evaluation: per-frame scores against an independent computation, and reports."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from bag_helpers import (
    SYNTH_FRAMES,
    big_bag,
    depth_msgs,
    info_msgs,
    rgb_msgs,
    write_bag,
)

from cloudypoints_core.bags.evaluate import evaluate_bag, make_protocol, score_frame
from cloudypoints_core.errors import BagError
from cloudypoints_core.inference.facade import DepthEstimator


def _reference(gt: np.ndarray, pred: np.ndarray, lo: float = 1e-3, hi: float = 80.0) -> dict:
    """monodepth2's formulas written out again, on every pixel with valid ground truth, the
    prediction clamped (NaN at the far edge)."""
    keep = np.isfinite(gt) & (gt > lo) & (gt < hi)
    g = gt[keep].astype(np.float64)
    raw = pred[keep].astype(np.float64)
    p = np.where(np.isnan(raw), hi, np.clip(raw, lo, hi))
    ratio = np.maximum(g / p, p / g)
    return {
        "abs_rel": np.mean(np.abs(g - p) / g),
        "rmse": np.sqrt(np.mean((g - p) ** 2)),
        "a1": np.mean(ratio < 1.25),
        "n_valid": int(keep.sum()),
        "coverage": np.mean((raw >= lo) & (raw <= hi)),
    }


def test_score_frame_matches_the_formulas(rng: np.random.Generator) -> None:
    gt = rng.uniform(0.5, 100.0, (20, 30)).astype(np.float32)
    gt[rng.random(gt.shape) < 0.2] = np.nan
    pred = (gt * rng.uniform(0.7, 1.4, gt.shape)).astype(np.float32)
    pred[rng.random(gt.shape) < 0.1] = np.nan
    pred[0, :5] = 200.0  # clamped to 80 m
    score = score_frame(gt, pred)
    want = _reference(gt, pred)
    assert score.status == "ok" and score.n_evaluated == want["n_valid"]
    for key in ("abs_rel", "rmse", "a1"):
        assert score.metrics[key] == pytest.approx(want[key], rel=1e-9)
    assert score.coverage == pytest.approx(want["coverage"])


@pytest.mark.parametrize("median_scaling", [False, True])
def test_score_frame_over_several_blocks_equals_compute_errors(
    rng: np.random.Generator, median_scaling: bool
) -> None:
    """A frame larger than the scoring block (32768 pixels), every metric against
    compute_errors on the pixels selected, scaled and clamped independently."""
    from cloudypoints_core.evaluation.metrics import compute_errors

    gt = rng.uniform(0.0, 95.0, (230, 310)).astype(np.float32)
    gt[rng.random(gt.shape) < 0.15] = np.nan
    gt[3, :3] = [0.001, 80.0, -1.0]  # the range is open at both ends
    pred = (gt * rng.uniform(0.6, 1.5, gt.shape)).astype(np.float32)
    pred[rng.random(gt.shape) < 0.1] = np.nan
    pred[5, :4] = [0.0, -3.0, np.inf, 500.0]
    protocol = make_protocol("whole_frame", median_scaling=median_scaling)
    score = score_frame(gt, pred, protocol)
    gt_ok = np.isfinite(gt) & (gt > 1e-3) & (gt < 80.0)
    usable = gt_ok & np.isfinite(pred) & (pred > 0)
    g, p = gt[gt_ok].astype(np.float64), pred[gt_ok].astype(np.float64)
    g_use, p_use = gt[usable].astype(np.float64), pred[usable].astype(np.float64)
    scale = float(np.median(g_use) / np.median(p_use)) if median_scaling else 1.0
    # Every valid ground-truth pixel is scored: NaN at the far edge, the rest clamped.
    p = np.where(np.isnan(p), 80.0, np.clip(p * scale, 1e-3, 80.0))
    want = compute_errors(g, p)
    assert (score.n_gt_valid, score.n_evaluated) == (int(gt_ok.sum()), int(gt_ok.sum()))
    assert score.median_scale == pytest.approx(scale, rel=1e-12)
    assert score.metrics is not None
    for name, value in want.items():
        assert score.metrics[name] == pytest.approx(value, rel=1e-12), name


def test_evaluate_bag_loads_its_models_for_sharing_the_cores(
    synth_bags, tiny_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its reading and scoring threads need the cores: models it loads do not busy-wait, and
    on a CPU with 2+ cores two of them split the cores (one frame each)."""
    seen: list[dict] = []
    load = DepthEstimator.from_package

    def spy(path, backend="auto", device="cpu", **options):
        seen.append(dict(options))
        return load(path, backend=backend, device=device, **options)

    monkeypatch.setattr(DepthEstimator, "from_package", staticmethod(spy))
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    bag = synth_bags[("mcap", "raw")]
    common = {"progress": False, "plots": False, "max_frames": 2}
    summary = evaluate_bag(bag, tiny_model, **common)
    assert summary["inference_workers"] == 2
    assert seen == [{"allow_spinning": False, "num_threads": 2}] * 2
    seen.clear()
    evaluate_bag(bag, tiny_model, estimator_options={"allow_spinning": True}, **common)
    assert seen == [{"allow_spinning": True, "num_threads": 2}] * 2
    seen.clear()
    evaluate_bag(bag, tiny_model, backend="onnxruntime", inference_workers=1, **common)
    assert seen == [{"allow_spinning": False}]


def test_evaluation_with_two_workers_equals_one_worker(synth_bags, tiny_model) -> None:
    bag = synth_bags[("mcap", "raw")]
    models = [DepthEstimator.from_package(tiny_model, num_threads=1) for _ in range(2)]
    one = evaluate_bag(bag, estimator=models[0], progress=False, plots=False)
    two = evaluate_bag(bag, estimator=models, progress=False, plots=False)
    assert (one["inference_workers"], two["inference_workers"]) == (1, 2)
    assert one["frames"] == two["frames"] and two["frames"]["ok"] == SYNTH_FRAMES
    assert two["metrics"] == pytest.approx(one["metrics"], rel=1e-12)


def test_score_frame_edge_cases() -> None:
    gt = np.full((4, 6), 10.0, np.float32)
    assert score_frame(None, gt).status == "no_gt"
    assert score_frame(np.full((4, 6), np.nan, np.float32), gt).status == "no_valid_pixels"
    assert score_frame(gt, np.full((4, 6), np.nan, np.float32)).coverage == 0.0
    # Half-resolution prediction: resampled to the ground truth's grid, and said so.
    small = np.full((2, 3), 12.5, np.float32)
    score = score_frame(gt, small)
    assert score.status == "ok" and "resampled" in score.note
    assert score.metrics["abs_rel"] == pytest.approx(0.25)
    scaled = score_frame(
        gt, np.full((4, 6), 5.0, np.float32), make_protocol("whole_frame", median_scaling=True)
    )
    assert scaled.median_scale == pytest.approx(2.0) and scaled.metrics["abs_rel"] == 0.0


def test_score_frame_applies_the_protocol_window(rng: np.random.Generator) -> None:
    gt = rng.uniform(2.0, 60.0, (64, 128)).astype(np.float32)
    pred = (gt * rng.uniform(0.8, 1.25, gt.shape)).astype(np.float32)
    cityscapes = make_protocol("cityscapes")
    # Rows 256-767 and columns 192-1855 of 2048x1024, as fractions: rows 16-47, columns 12-115.
    r0, r1, c0, c1 = 16, 48, 12, 116
    want = _reference(gt[r0:r1, c0:c1], pred[r0:r1, c0:c1])
    score = score_frame(gt, pred, cityscapes)
    assert score.n_evaluated == want["n_valid"] == (r1 - r0) * (c1 - c0)
    assert score.metrics["abs_rel"] == pytest.approx(want["abs_rel"], rel=1e-9)
    # The evaluation module's own per-image path agrees.
    from cloudypoints_core.evaluation.protocols import evaluate_image

    assert evaluate_image(cityscapes, gt, pred).metrics["rmse"] == pytest.approx(
        score.metrics["rmse"], rel=1e-9
    )


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_offline_evaluation_of_synthcity(
    synth_bags, synth_frames, tiny_model, tmp_path: Path, storage: str
) -> None:
    out = tmp_path / "report"
    summary = evaluate_bag(synth_bags[(storage, "raw")], tiny_model, out, progress=False)
    assert summary["partial"] is False and summary["frames"]["ok"] == SYNTH_FRAMES
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert len(rows) == SYNTH_FRAMES
    # The same model run by hand on the independently rendered frames gives the same scores.
    estimator = DepthEstimator.from_package(tiny_model)
    per_frame = []
    for row, frame in zip(rows, synth_frames, strict=True):
        pred = estimator.predict(frame.rgb, frame.intrinsics).depth_m
        gt = np.where(np.isfinite(frame.depth_m), frame.depth_m, np.nan).astype(np.float32)
        want = _reference(gt, pred)
        per_frame.append(want)
        assert int(row["stamp_ns"]) == frame.stamp_ns and row["status"] == "ok"
        # The CSV keeps 6 significant digits; results.json below holds full precision.
        assert float(row["abs_rel"]) == pytest.approx(want["abs_rel"], rel=1e-5)
        assert float(row["rmse"]) == pytest.approx(want["rmse"], rel=1e-5)
        assert int(row["n_evaluated"]) == want["n_valid"]
        assert float(row["inference_ms"]) > 0 and float(row["read_ms"]) >= 0
    results = json.loads((out / "results.json").read_text())
    assert results["metrics"]["abs_rel"] == pytest.approx(
        np.mean([w["abs_rel"] for w in per_frame]), rel=1e-9
    )
    assert results["latency"]["inference"]["n"] == SYNTH_FRAMES
    assert results["topics"]["image"] == "/camera/image"
    assert results["model"]["name"] == "tiny"
    assert results["protocol"]["name"] == "synthcity"  # auto: from the bag's metadata
    for plot in ("metrics_per_frame.png", "latency.png", "examples.png", "per_image_abs_rel.png"):
        assert (out / plot).stat().st_size > 1000
        assert plot in (out / "report.md").read_text()


def test_detailed_scoring_adds_bands_with_the_same_metrics(rng: np.random.Generator) -> None:
    gt = rng.uniform(1.0, 79.0, (32, 64)).astype(np.float32)
    pred = (gt * rng.uniform(0.8, 1.25, gt.shape)).astype(np.float32)
    lean = score_frame(gt, pred, make_protocol("synthcity"))
    full = score_frame(gt, pred, make_protocol("synthcity"), detailed=True)
    assert lean.bands == {} and lean.curve_counts is None
    assert set(full.bands) == {"0-10m", "10-20m", "20-40m", "40-80m"}
    assert int(full.curve_counts.sum()) == full.n_evaluated == lean.n_evaluated
    for name, value in lean.metrics.items():
        assert full.metrics[name] == pytest.approx(value, rel=1e-9)
    near = gt < 10
    want = np.mean(np.abs(gt[near] - pred[near]) / gt[near])
    assert full.bands["0-10m"]["abs_rel"] == pytest.approx(want, rel=1e-6)


def test_detailed_report(synth_bags, tiny_model, tmp_path: Path) -> None:
    summary = evaluate_bag(
        synth_bags[("mcap", "raw")], tiny_model, tmp_path / "r", detailed=True, progress=False
    )
    assert summary["bands"]["0-10m"]["metrics"] is not None
    rows = list(csv.DictReader((tmp_path / "r" / "per_image.csv").open()))
    assert sum(summary["abs_rel_vs_distance"]["pixels"]) == sum(
        int(r["n_evaluated"]) for r in rows
    )
    text = (tmp_path / "r" / "report.md").read_text()
    assert "By distance band" in text and "error_vs_distance.png" in text


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_offline_evaluation_of_cityscapes(
    cityscapes_tree, tiny_model, tmp_path: Path, storage: str
) -> None:
    from cloudypoints_core.bags.convert import convert_cityscapes

    bag = convert_cityscapes(
        cityscapes_tree.root,
        "val",
        "frankfurt",
        0,
        tmp_path / "bag",
        storage=storage,
        image_format="jpeg",
        progress=False,
    )
    summary = evaluate_bag(bag, tiny_model, tmp_path / "r", progress=False, plots=False)
    assert summary["frames"] == {"total": 6, "ok": 6, "no_gt": 0, "no_valid_pixels": 0, "error": 0}
    assert summary["protocol"]["name"] == "cityscapes"
    assert "cityscapes" in (tmp_path / "r" / "report.md").read_text()
    assert summary["partial"] is False
    assert 0 < summary["metrics"]["abs_rel"] < 10 and 0 <= summary["metrics"]["a1"] <= 1


def test_truncated_bag_gives_a_partial_report(tiny_model, tmp_path: Path) -> None:
    bag, written = big_bag(tmp_path / "b", n=8)
    data = bag / "b.mcap"
    os.truncate(data, int(data.stat().st_size * 0.7))
    summary = evaluate_bag(bag, tiny_model, tmp_path / "r", progress=False, plots=False)
    assert summary["partial"] is True
    assert any("truncated" in r for r in summary["partial_reasons"])
    assert 0 < summary["frames"]["ok"] < len(written)
    saved = json.loads((tmp_path / "r" / "results.json").read_text())
    assert saved["partial"] is True and saved["frames"] == summary["frames"]


def test_bag_without_ground_truth_is_partial(
    tiny_model, tmp_path: Path, rng: np.random.Generator
) -> None:
    bag = write_bag(
        tmp_path / "b", {"/cam/image": rgb_msgs(3, rng), "/cam/camera_info": info_msgs(3)}
    )
    summary = evaluate_bag(bag, tiny_model, tmp_path / "r", progress=False, plots=False)
    assert summary["partial"] is True and summary["frames"]["no_gt"] == 3
    assert "the bag has no ground-truth depth topic" in summary["partial_reasons"]
    assert summary["metrics"] is None


def test_ground_truth_at_another_resolution(
    tiny_model, tmp_path: Path, rng: np.random.Generator
) -> None:
    from cloudypoints_core.bags import messages as m

    gt = [(s, m.depth_message(np.full((8, 16), 7.0, np.float32), s)) for s, _ in depth_msgs(3)]
    bag = write_bag(
        tmp_path / "b",
        {"/cam/image": rgb_msgs(3, rng), "/cam/camera_info": info_msgs(3), "/cam/depth_gt": gt},
    )
    summary = evaluate_bag(bag, tiny_model, tmp_path / "r", progress=False, plots=False)
    assert summary["frames"]["ok"] == 3 and summary["partial"] is False
    assert any("sizes differ" in w and "resampled to gt 16x8" in w for w in summary["warnings"])


def test_unusable_bag_raises_before_any_report(
    tiny_model, tmp_path: Path, rng: np.random.Generator
) -> None:
    with pytest.raises(BagError, match="does not exist"):
        evaluate_bag(tmp_path / "missing", tiny_model, tmp_path / "r1", progress=False)
    bag = write_bag(tmp_path / "b", {"/cam/camera_info": info_msgs(2)})
    with pytest.raises(BagError, match="no colour image topic"):
        evaluate_bag(bag, tiny_model, tmp_path / "r2", progress=False)
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_cli_functions(
    synth_bags, tiny_model, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cloudypoints_core.cli.bag import run_convert, run_evaluate, run_info

    assert run_info(synth_bags[("mcap", "png")]) == 0
    text = capsys.readouterr().out
    assert "/camera/image/compressed" in text and "sensor_msgs/msg/CompressedImage" in text
    assert run_info(synth_bags[("mcap", "png")], as_json=True) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["evaluation_topics"]["compressed"] is True
    bag = tmp_path / "s"
    assert run_convert("synthcity", bag, frames=2, width=32, height=16, progress=False) == 0
    assert (
        run_evaluate(bag, tmp_path / "r", model=str(tiny_model), plots=False, progress=False) == 0
    )
    assert "2/2 frames scored" in capsys.readouterr().out
    shutil.rmtree(tmp_path / "r")


class _FlakyEstimator:
    """The real estimator, failing on every second frame of ``bag`` the way a bad frame fails.

    Frames are told apart by their pixels, not by the order of the calls: two inference threads
    may call for frame 2 before frame 1."""

    def __init__(self, model: Path, bag: Path) -> None:
        from cloudypoints_core.bags.reader import FrameReader

        self.inner = DepthEstimator.from_package(model)
        self.bad = {f.rgb.tobytes() for f in FrameReader(bag) if f.index % 2 == 1}

    def predict(self, rgb, intrinsics, output_resolution="input", keep_unmasked=False):
        from cloudypoints_core.errors import InputError

        if rgb.tobytes() in self.bad:
            raise InputError("bad frame")
        return self.inner.predict(
            rgb, intrinsics, output_resolution=output_resolution, keep_unmasked=keep_unmasked
        )


def test_failing_frames_make_a_partial_report(synth_bags, tiny_model, tmp_path: Path) -> None:
    summary = evaluate_bag(
        synth_bags[("mcap", "raw")],
        None,
        tmp_path / "r",
        progress=False,
        plots=False,
        estimator=_FlakyEstimator(tiny_model, synth_bags[("mcap", "raw")]),
    )
    assert summary["frames"]["error"] == SYNTH_FRAMES // 2
    assert summary["frames"]["ok"] == SYNTH_FRAMES - SYNTH_FRAMES // 2
    assert summary["partial"] is True and any("failed" in r for r in summary["partial_reasons"])
    rows = list(csv.DictReader((tmp_path / "r" / "per_image.csv").open()))
    assert [r["status"] for r in rows][:2] == ["ok", "error"]
    assert "inference failed: bad frame" in rows[1]["note"]


def test_an_unexpected_exception_stops_cleanly(synth_bags) -> None:
    import threading

    class Boom:
        def predict(self, *args, **kwargs):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        evaluate_bag(synth_bags[("mcap", "raw")], estimator=Boom(), progress=False)
    names = [t.name for t in threading.enumerate()]
    assert not any(n.startswith("cloudypoints-") for n in names), names
