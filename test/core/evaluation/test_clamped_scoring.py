"""Out-of-range predictions are clamped and scored, not dropped, on every evaluation path.

One scene, the issue's example: ground truth 60 m everywhere (a few invalid pixels), the network
says 120 m on half of the pixels (beyond the model's 80 m limit: the facade publishes NaN
there), NaN itself on a tenth of them and 60 m on the rest. Clamped to the protocol's range
(0.001, 80) m, as monodepth2 scores it, that is AbsRel 0.6 * 20 / 60 = 0.2 and delta<1.25 0.4 with
coverage 0.4; the pipeline before this test existed reported AbsRel 0.0, delta<1.25 1.0. The
expected numbers are computed here from monodepth2's formulas, independently of
``cloudypoints_core.evaluation.metrics``, and every path must give them: the evaluation loop of
``cloudypoints evaluate`` and its model card, ``bag evaluate`` (offline), the live scoring of the
published depth, the demo summary and the trainer's validation.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cloudypoints_core.bags.evaluate import evaluate_bag, score_frame
from cloudypoints_core.bags.writer import FrameRecord, write_frames_bag
from cloudypoints_core.cli.demo import score_recording
from cloudypoints_core.evaluation.evaluate import EvalSource, run_evaluation
from cloudypoints_core.evaluation.model_card import write_model_card
from cloudypoints_core.evaluation.protocols import (
    COVERAGE_WARNING_BELOW,
    SYNTHCITY_PROTOCOL,
    evaluate_image,
)
from cloudypoints_core.geometry import Intrinsics
from cloudypoints_core.inference.facade import DepthEstimator
from cloudypoints_core.inference.spec import ModelSpec

H, W = 32, 64
GT_M = 60.0
#: The model's input is the image's size and its camera the training camera: scale factor 1.
INTR = Intrinsics(40.0, 40.0, 31.5, 15.5, W, H)
SPEC = ModelSpec(
    name="clamp_test",
    architecture="fixed",
    input_width=W,
    input_height=H,
    output_kind="metric_depth",
    train_fx_px=40.0,
    min_depth_m=0.5,
    max_depth_m=80.0,
    weights_file=None,
)


def _scene() -> tuple[np.ndarray, np.ndarray]:
    """(ground truth, raw network output): columns 0-31 at 120 m, 32-38 NaN, the rest 60 m."""
    gt = np.full((H, W), GT_M, dtype=np.float32)
    gt[0, :] = np.nan  # no ground truth: never scored
    gt[1, :] = 0.0
    raw = np.full((H, W), GT_M, dtype=np.float32)
    raw[:, :32] = 120.0
    raw[:, 32:38] = np.nan
    return gt, raw


def _monodepth2(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """monodepth2's compute_errors, written out from its definition."""
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


def _expected() -> tuple[dict[str, float], float]:
    """(metrics, coverage) the protocol must report, from the raw output clamped by hand."""
    gt, raw = _scene()
    valid = np.isfinite(gt) & (gt > 1e-3) & (gt < 80.0)
    pred = raw[valid].astype(np.float64)
    inside = np.isfinite(pred) & (pred >= 1e-3) & (pred <= 80.0)
    pred = np.where(np.isnan(pred), 80.0, np.clip(pred, 1e-3, 80.0))  # NaN: the far edge
    return _monodepth2(gt[valid].astype(np.float64), pred), float(inside.mean())


EXPECTED, COVERAGE = _expected()


def test_the_expected_numbers_are_the_issue_example() -> None:
    # By hand: 32 + 6 of 64 columns at the far edge (AbsRel 1/3, ratio 4/3), 26 exact.
    assert EXPECTED["abs_rel"] == pytest.approx(38 / 64 / 3)
    assert EXPECTED["a1"] == pytest.approx(26 / 64)
    assert EXPECTED["a2"] == 1.0
    assert EXPECTED["rmse"] == pytest.approx(math.sqrt(38 / 64 * 400))
    assert COVERAGE == pytest.approx(26 / 64)


class _FixedOutput:
    """A backend whose network always returns the scene's raw output."""

    name = "fixed"
    device = "cpu"

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return _scene()[1].copy()

    def close(self) -> None:
        pass


def _estimator() -> DepthEstimator:
    return DepthEstimator(SPEC, _FixedOutput())


def _rgb() -> np.ndarray:
    return np.full((H, W, 3), 128, dtype=np.uint8)


def _check_metrics(metrics: dict[str, Any] | None) -> None:
    assert metrics is not None
    for name, value in EXPECTED.items():
        assert metrics[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name


def _check(metrics: dict[str, Any] | None, coverage: float | None) -> None:
    _check_metrics(metrics)
    assert coverage == pytest.approx(COVERAGE)


def test_the_facade_publishes_nan_and_keeps_the_unmasked_depth() -> None:
    result = _estimator().predict(_rgb(), INTR, keep_unmasked=True)
    assert np.isnan(result.depth_m[:, :38]).all() and (result.depth_m[:, 38:] == GT_M).all()
    assert result.depth_unmasked_m is not None
    assert (result.depth_unmasked_m[:, :32] == 120.0).all()
    assert _estimator().predict(_rgb(), INTR).depth_unmasked_m is None


@pytest.mark.parametrize("detailed", [True, False])
def test_the_scoring_function(detailed: bool) -> None:
    gt, raw = _scene()
    ev = evaluate_image(SYNTHCITY_PROTOCOL, gt, raw, detailed=detailed)
    _check(ev.metrics, ev.coverage)
    assert ev.n_evaluated == ev.n_gt_valid == (H - 2) * W


def test_live_scoring_of_the_published_depth() -> None:
    # The node publishes NaN beyond 80 m: the live path scores exactly what offline clamps.
    gt, _ = _scene()
    published = _estimator().predict(_rgb(), INTR).depth_m
    score = score_frame(gt, published, SYNTHCITY_PROTOCOL)
    assert score.status == "ok"
    _check(score.metrics, score.coverage)


def test_cli_evaluation_loop_and_model_card(tmp_path: Path) -> None:
    gt, _ = _scene()

    def sample(index: int) -> dict[str, Any]:
        return {"rgb": _rgb(), "depth_m": gt, "intrinsics": INTR, "key": f"frame{index}"}

    source = EvalSource("scene", 2, sample, {"name": "scene", "description": "the scene"})
    results = run_evaluation(
        _estimator(), source, SYNTHCITY_PROTOCOL, tmp_path / "eval", progress=False
    )
    _check(results["metrics"], results["coverage_mean"])
    assert COVERAGE < COVERAGE_WARNING_BELOW
    assert results["coverage_warning"] and "coverage 0.4062" in results["coverage_warning"]
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "WARNING: coverage 0.4062" in report
    card = write_model_card([tmp_path / "eval"], tmp_path / "card" / "MODEL_CARD.md").read_text()
    assert f"| {EXPECTED['abs_rel']:.3f} |" in card and f"| {EXPECTED['a1']:.3f} |" in card
    assert "0.4062 (**warning**" in card


def test_offline_bag_evaluation(tmp_path: Path) -> None:
    gt, _ = _scene()
    frames = [FrameRecord(_rgb(), INTR, 1_000_000_000 + i * 50_000_000, gt) for i in range(2)]
    bag = write_frames_bag(tmp_path / "bag", frames, progress=False)
    summary = evaluate_bag(
        bag, out_dir=tmp_path / "out", estimator=_estimator(), protocol="synthcity", plots=False
    )
    assert summary["frames"]["ok"] == 2
    _check(summary["metrics"], summary["coverage_mean"])
    assert any("coverage 0.4062" in w for w in summary["warnings"])
    detailed = evaluate_bag(
        bag, estimator=_estimator(), protocol="synthcity", detailed=True, progress=False
    )
    _check(detailed["metrics"], detailed["coverage_mean"])


def test_demo_summary_scoring() -> None:
    gt, _ = _scene()
    published = _estimator().predict(_rgb(), INTR).depth_m
    rows, coverage = score_recording({1: published, 2: published}, {1: gt}, SYNTHCITY_PROTOCOL)
    assert len(rows) == 1  # frame 2 has no ground truth
    _check(rows[0], coverage[0])


def test_trainer_validation() -> None:
    torch = pytest.importorskip("torch")
    from cloudypoints_core.training.trainer import evaluate

    gt, raw = _scene()

    class Fixed(torch.nn.Module):
        def forward(self, image: Any) -> Any:
            return torch.from_numpy(raw)[None, None].expand(image.shape[0], 1, H, W)

    batch = {
        "image": torch.zeros(2, 3, H, W),
        "fx_px": torch.tensor([40.0, 40.0]),
        "depth_m": torch.from_numpy(gt)[None, None].expand(2, 1, H, W),
    }
    metrics = evaluate(Fixed(), [batch], torch.device("cpu"), 40.0, 1e-3, 80.0)
    _check_metrics(metrics)


def test_a_narrower_spec_range_cannot_game_offline_metrics(tmp_path: Path) -> None:
    # A copy of the model whose spec only lowers max_depth_m to 50: the facade now publishes NaN
    # for the 60 m pixels too, but the offline paths score the network's unmasked depth: the
    # same numbers as before. Live, the node publishes NaN there: scored at the far edge.
    gamed = DepthEstimator(replace(SPEC, max_depth_m=50.0), _FixedOutput())
    gt, _ = _scene()

    def sample(index: int) -> dict[str, Any]:
        return {"rgb": _rgb(), "depth_m": gt, "intrinsics": INTR, "key": f"frame{index}"}

    source = EvalSource("scene", 1, sample, {"name": "scene"})
    results = run_evaluation(gamed, source, SYNTHCITY_PROTOCOL, tmp_path / "eval", progress=False)
    _check(results["metrics"], results["coverage_mean"])
    bag = write_frames_bag(
        tmp_path / "bag", [FrameRecord(_rgb(), INTR, 10**9, gt)], progress=False
    )
    summary = evaluate_bag(bag, estimator=gamed, protocol="synthcity", progress=False)
    _check(summary["metrics"], summary["coverage_mean"])
    live = score_frame(gt, gamed.predict(_rgb(), INTR).depth_m, SYNTHCITY_PROTOCOL)
    assert live.coverage == 0.0
    assert live.metrics is not None and live.metrics["abs_rel"] == pytest.approx(20 / 60)
