"""Evaluation protocols: crop window, range, clamping, median scaling, and the evaluation loop."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cityscapes_fixture import FixtureTree, write_full_size_frame

from cloudypoints_core.data.cityscapes import CityscapesDataset
from cloudypoints_core.errors import ConfigError, DatasetError
from cloudypoints_core.evaluation.evaluate import EvalSource, cityscapes_source, run_evaluation
from cloudypoints_core.evaluation.protocols import (
    CITYSCAPES_PROTOCOL,
    SYNTHCITY_PROTOCOL,
    EvalProtocol,
    evaluate_image,
    get_protocol,
    resize_prediction,
)
from cloudypoints_core.evaluation.report import read_results_json
from cloudypoints_core.geometry import Intrinsics


@pytest.mark.parametrize(
    ("size", "window"),
    [
        ((2048, 1024), (256, 768, 192, 1856)),
        ((1024, 512), (128, 384, 96, 928)),
        ((256, 128), (32, 96, 24, 232)),
    ],
)
def test_cityscapes_crop_window(size: tuple[int, int], window: tuple[int, ...]) -> None:
    assert CITYSCAPES_PROTOCOL.crop_window(size[1], size[0]) == window
    assert CITYSCAPES_PROTOCOL.kept_rows(size[1]) == size[1] * 3 // 4


def test_full_frame_window_boundaries() -> None:
    # Rows 256-767 and columns 192-1855 of 2048x1024, inclusive: an error on row 767 or
    # column 1855 counts, one on row 255, row 768 or column 191 does not.
    gt = np.full((1024, 2048), 10.0, dtype=np.float32)
    pred = np.full_like(gt, 10.0)
    pred[:256] = pred[768:] = 1000.0
    pred[:, :192] = pred[:, 1856:] = 1000.0
    ev = evaluate_image(CITYSCAPES_PROTOCOL, gt, pred)
    assert ev.n_evaluated == 512 * 1664 and ev.metrics is not None
    assert ev.metrics["abs_rel"] == 0.0
    pred[767, 192:1856] = 20.0  # one full row inside, AbsRel 1 there
    pred[300, 1855] = 20.0  # one pixel of the last column
    ev = evaluate_image(CITYSCAPES_PROTOCOL, gt, pred)
    assert ev.metrics is not None
    assert ev.metrics["abs_rel"] == pytest.approx((1664 + 1) / (512 * 1664))
    assert np.isnan(ev.abs_rel_map[255]).all() and np.isnan(ev.abs_rel_map[:, 191]).all()
    assert ev.abs_rel_map[767, 192] == 1.0


def test_range_excludes_ground_truth_limits() -> None:
    protocol = SYNTHCITY_PROTOCOL
    gt = np.array([[1e-3, 80.0, 79.9, np.nan, np.inf, 0.5]], dtype=np.float64)
    pred = np.full_like(gt, 40.0)
    ev = evaluate_image(protocol, gt, pred)
    # Only 79.9 and 0.5 are strictly inside (1e-3, 80).
    assert ev.n_gt_valid == 2 and ev.n_evaluated == 2
    assert ev.metrics is not None
    assert ev.metrics["abs_rel"] == pytest.approx((abs(79.9 - 40) / 79.9 + 39.5 / 0.5) / 2)


def test_prediction_clamped_to_range() -> None:
    gt = np.array([[50.0, 1.0]])
    pred = np.array([[100.0, 1e-5]])
    ev = evaluate_image(SYNTHCITY_PROTOCOL, gt, pred)
    assert ev.metrics is not None
    # 100 -> 80 (AbsRel 0.6); 1e-5 -> 1e-3 (AbsRel 0.999).
    assert ev.metrics["abs_rel"] == pytest.approx((0.6 + 0.999) / 2)


def test_median_scaling_before_clamping() -> None:
    gt = np.array([[40.0, 60.0, 70.0]])
    pred = 2.0 * gt
    plain = evaluate_image(SYNTHCITY_PROTOCOL, gt, pred)
    scaled = evaluate_image(SYNTHCITY_PROTOCOL.with_options(median_scaling=True), gt, pred)
    assert plain.metrics is not None and scaled.metrics is not None
    # Without scaling everything clamps to 80: AbsRel (40/40 + 20/60 + 10/70) / 3.
    assert plain.metrics["abs_rel"] == pytest.approx((1.0 + 1 / 3 + 1 / 7) / 3)
    assert plain.scale_ratio == 1.0
    # Scaling by median(gt) / median(pred) = 0.5 first recovers gt exactly (clamping first
    # would not).
    assert scaled.scale_ratio == pytest.approx(0.5)
    assert scaled.metrics["abs_rel"] == pytest.approx(0.0, abs=1e-12)


def test_coverage_counts_missing_predictions() -> None:
    gt = np.full((4, 4), 10.0)
    pred = np.full((4, 4), 11.0)
    pred[:2] = np.nan
    ev = evaluate_image(SYNTHCITY_PROTOCOL, gt, pred)
    # Missing predictions are scored at the far edge (80 m: AbsRel 7), never left out.
    assert ev.coverage == 0.5 and ev.n_evaluated == 16
    assert ev.metrics is not None and ev.metrics["abs_rel"] == pytest.approx((7.0 + 0.1) / 2)
    assert ev.metrics["a1"] == 0.5
    empty = evaluate_image(SYNTHCITY_PROTOCOL, gt, np.full((4, 4), np.nan))
    assert empty.metrics is not None and empty.coverage == 0.0
    assert empty.metrics["abs_rel"] == pytest.approx(7.0)
    no_gt = evaluate_image(SYNTHCITY_PROTOCOL, np.full((4, 4), np.nan), pred)
    assert no_gt.metrics is None and no_gt.n_gt_valid == 0


def test_hood_rows_excluded_without_crop() -> None:
    protocol = EvalProtocol("hood_only", keep_top_fraction=0.75)
    gt = np.full((8, 4), 10.0)
    pred = np.full((8, 4), 10.0)
    pred[6:] = 50.0  # the hood
    ev = evaluate_image(protocol, gt, pred)
    assert ev.n_evaluated == 6 * 4 and ev.metrics is not None
    assert ev.metrics["abs_rel"] == 0.0


def test_band_and_curve_bookkeeping() -> None:
    gt = np.array([[5.0, 15.0, 30.0, 60.0]])
    pred = np.array([[6.0, 15.0, 24.0, 60.0]])
    ev = evaluate_image(SYNTHCITY_PROTOCOL, gt, pred)
    assert ev.bands["0-10m"]["abs_rel"] == pytest.approx(0.2)  # type: ignore[index]
    assert ev.bands["20-40m"]["abs_rel"] == pytest.approx(0.2)  # type: ignore[index]
    assert ev.curve_counts.sum() == 4
    assert ev.curve_sums[2] == pytest.approx(0.2)  # bin [4, 6) m holds the 5 m pixel


def test_protocol_validation_and_lookup() -> None:
    with pytest.raises(ConfigError, match="min_depth_m"):
        EvalProtocol("x", min_depth_m=5.0, max_depth_m=1.0)
    with pytest.raises(ConfigError, match="crop"):
        EvalProtocol("x", crop=(0.5, 0.2, 0.0, 1.0))
    with pytest.raises(ConfigError, match="known"):
        get_protocol("kitti")
    assert get_protocol("cityscapes", median_scaling=True).median_scaling
    assert "median scaling ON" in get_protocol("cityscapes", median_scaling=True).summary()
    assert "no median scaling" in CITYSCAPES_PROTOCOL.summary()


def test_model_input_auto_follows_the_model_aspect() -> None:
    p = CITYSCAPES_PROTOCOL
    assert p.resolve_model_input(2048, 1024, 512, 192) == "above_hood"  # ManyDepth's 8:3
    assert p.resolve_model_input(2048, 1024, 512, 256) == "full"
    assert p.with_options(model_input="full").resolve_model_input(2048, 1024, 512, 192) == "full"
    assert SYNTHCITY_PROTOCOL.resolve_model_input(512, 256, 512, 192) == "full"


def test_resize_prediction_inverse_depth_and_nan() -> None:
    # Inverse depth linear in u: bilinear resizing of 1/z is exact for it.
    u = np.arange(8, dtype=np.float64)
    pred = np.tile(1.0 / (0.1 + 0.01 * u), (4, 1)).astype(np.float32)
    out = resize_prediction(pred, 8, 16)
    centres = (np.arange(16) + 0.5) / 2 - 0.5  # source coordinates of output pixel centres
    want = 1.0 / (0.1 + 0.01 * np.clip(centres, 0, 7))
    np.testing.assert_allclose(out[3], want, rtol=1e-5)
    holes = pred.copy()
    holes[:, :2] = np.nan
    out = resize_prediction(holes, 8, 16)
    assert np.isnan(out[:, :3]).all()  # the hole (and nothing far from it) stays invalid
    np.testing.assert_allclose(out[:, 6:], resize_prediction(pred, 8, 16)[:, 6:], rtol=1e-5)


# --------------------------------------------------------------------------- evaluation loop
@dataclass
class _Result:
    depth_m: np.ndarray
    scale_method: str = "canonical_focal"


class OracleEstimator:
    """Returns ``factor`` x the ground truth of whichever image it is shown (looked up by hash)."""

    def __init__(
        self, dataset: CityscapesDataset, factor: float, input_size: tuple[int, int] | None = None
    ) -> None:
        self.factor = factor
        self.calls: list[tuple[tuple[int, ...], Intrinsics, Any]] = []
        self.by_hash: dict[str, np.ndarray] = {}
        if input_size is not None:
            self.input_size = input_size
        for sample in dataset:
            rgb, depth = sample["rgb"], sample["depth_m"]
            for rows in (rgb.shape[0], rgb.shape[0] * 3 // 4):
                self.by_hash[self._hash(rgb[:rows])] = depth[:rows] * factor

    @staticmethod
    def _hash(rgb: np.ndarray) -> str:
        return hashlib.sha1(np.ascontiguousarray(rgb).tobytes()).hexdigest() + str(rgb.shape)

    def predict(
        self,
        rgb: np.ndarray,
        intrinsics: Intrinsics,
        output_resolution: str = "input",
        camera_height_m: float | None = None,
        camera_pitch_rad: float | None = None,
        keep_unmasked: bool = False,
    ) -> _Result:
        assert output_resolution == "input" and keep_unmasked
        self.calls.append((rgb.shape, intrinsics, camera_height_m))
        return _Result(self.by_hash[self._hash(rgb)].astype(np.float32))


def test_run_evaluation_exact_on_fixture(cs_tree: FixtureTree, tmp_path: Path) -> None:
    dataset = CityscapesDataset(cs_tree.root, "test", hood="none")
    oracle = OracleEstimator(dataset, 1.1)
    source = cityscapes_source(cs_tree.root, "test", progress=False)
    results = run_evaluation(
        oracle,
        source,
        CITYSCAPES_PROTOCOL,
        tmp_path / "a",
        progress=False,
        model={"name": "oracle"},
    )
    assert results["n_images"] == 4
    assert results["metrics"]["abs_rel"] == pytest.approx(0.1, rel=1e-5)
    assert results["metrics"]["a1"] == 1.0
    assert results["coverage_mean"] == 1.0
    assert results["model_input_views"] == ["full"]  # no input size: the full frame
    assert any("1525" in note for note in results["notes"])
    # Each frame's mounting reaches the model (relative models use it for scale).
    assert sorted({c[2] for c in oracle.calls}) == [1.15, 1.3]
    on_disk = read_results_json(tmp_path / "a")
    assert on_disk["metrics"]["abs_rel"] == pytest.approx(results["metrics"]["abs_rel"])
    scaled = run_evaluation(
        oracle,
        source,
        CITYSCAPES_PROTOCOL.with_options(median_scaling=True),
        tmp_path / "b",
        progress=False,
        model={"name": "oracle"},
    )
    assert scaled["metrics"]["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    assert scaled["median_scale_ratio"]["mean"] == pytest.approx(1 / 1.1, rel=1e-5)
    assert "**ON**" in (tmp_path / "b" / "report.md").read_text()


def test_run_evaluation_feeds_rows_above_hood(cs_tree: FixtureTree, tmp_path: Path) -> None:
    dataset = CityscapesDataset(cs_tree.root, "test", hood="none")
    oracle = OracleEstimator(dataset, 1.0, input_size=(128, 48))  # 8:3 like ManyDepth
    source = cityscapes_source(cs_tree.root, "test", progress=False)
    results = run_evaluation(
        oracle,
        source,
        CITYSCAPES_PROTOCOL,
        tmp_path,
        progress=False,
        model={"name": "oracle"},
        n_examples=0,
    )
    assert results["model_input_views"] == ["above_hood"]
    shape, intr, _ = oracle.calls[0]
    assert shape == (96, 256, 3) and intr.height == 96
    assert intr == dataset[0]["intrinsics"].cropped(0, 0, 256, 96)
    assert results["metrics"]["abs_rel"] == pytest.approx(0.0, abs=1e-7)


def test_protocol_on_a_full_size_frame(tmp_path: Path) -> None:
    key, cal = write_full_size_frame(tmp_path / "cs")
    dataset = CityscapesDataset(tmp_path / "cs", "test", hood="none")
    sample = dataset[0]
    assert sample["key"] == key and sample["depth_m"].shape == (1024, 2048)
    oracle = OracleEstimator(dataset, 1.1)
    # Outside the window the oracle is wrong by a factor 10: none of it may count.
    for value in oracle.by_hash.values():
        outside = np.ones(value.shape, dtype=bool)
        outside[256:768, 192:1856] = False
        value[outside] *= 10.0
    source = cityscapes_source(tmp_path / "cs", "test", progress=False)
    results = run_evaluation(
        oracle,
        source,
        CITYSCAPES_PROTOCOL,
        tmp_path / "out",
        progress=False,
        model={"name": "oracle"},
        n_examples=1,
    )
    assert results["metrics"]["abs_rel"] == pytest.approx(0.1, rel=1e-5)
    gt = sample["depth_m"][256:768, 192:1856]
    want_pixels = int((np.isfinite(gt) & (gt > 1e-3) & (gt < 80)).sum())
    assert sum(b["n_pixels"] for b in results["bands"].values()) == want_pixels
    assert (tmp_path / "out" / "examples.png").stat().st_size > 0


def test_run_evaluation_skips_unreadable_frames(tmp_path: Path) -> None:
    gt = np.full((8, 16), 10.0, dtype=np.float32)
    intr = Intrinsics(10.0, 10.0, 8.0, 4.0, 16, 8)

    def get(index: int) -> dict[str, Any]:
        if index == 1:
            raise DatasetError("cannot decode image broken.png")
        return {
            "rgb": np.zeros((8, 16, 3), np.uint8),
            "depth_m": gt,
            "intrinsics": intr,
            "key": f"f{index}",
        }

    class Constant:
        def predict(self, rgb: np.ndarray, intrinsics: Intrinsics, **_: Any) -> _Result:
            return _Result(np.full(rgb.shape[:2], 12.0, dtype=np.float32))

    results = run_evaluation(
        Constant(),
        EvalSource("toy", 3, get),
        SYNTHCITY_PROTOCOL,
        tmp_path,
        progress=False,
        model={"name": "constant"},
    )
    assert results["n_images"] == 2
    assert results["metrics"]["abs_rel"] == pytest.approx(0.2)
    assert any("broken.png" in n for n in results["notes"])
    rows = (tmp_path / "per_image.csv").read_text().splitlines()
    assert rows[0].startswith("key,") and len(rows) == 3
    with pytest.raises(DatasetError, match="none of the 1 frames"):
        run_evaluation(
            Constant(),
            EvalSource("bad", 1, lambda i: get(1)),
            SYNTHCITY_PROTOCOL,
            tmp_path / "x",
            progress=False,
        )
