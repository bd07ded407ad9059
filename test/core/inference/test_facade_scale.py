"""DepthEstimator with relative and affine models: scale methods, refusal without a scale source,
the tracker, and the whole chain on a SynthCity frame through an ONNX network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from inference_fixtures import tiny_spec

from cloudypoints_core.data.synthcity import render_frame
from cloudypoints_core.errors import ConfigError, ModelError, ScaleError
from cloudypoints_core.geometry import Intrinsics
from cloudypoints_core.inference.facade import DepthEstimator
from cloudypoints_core.inference.scale_tracker import ScaleTracker
from cloudypoints_core.inference.spec import ModelSpec

W, H = 320, 160
A, SHIFT_FRACTION = 1.7, 0.3


class FixedOutput:
    """A backend returning a preset raw output."""

    name = "fixed"
    device = "cpu"

    def __init__(self, raw: np.ndarray) -> None:
        self.raw = raw.astype(np.float32)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.raw

    def close(self) -> None:
        pass


def _affine_spec(**overrides: object) -> ModelSpec:
    fields: dict[str, object] = {
        "output_kind": "affine_inverse_depth",
        "train_fx_px": None,
        "input_width": W,
        "input_height": H,
        "min_depth_m": 0.5,
        "max_depth_m": 80.0,
        "weights_file": None,
    }
    fields.update(overrides)
    return tiny_spec(**fields)


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray, Intrinsics, float, float, float]:
    """(rgb, true depth, intrinsics, height, pitch, b) of a frame and its affine output b."""
    frame = render_frame(2, W, H)
    return frame.rgb, frame.depth_m, frame.intrinsics, frame.camera_height_m, frame.pitch_rad, 0.0


def _raw(depth_m: np.ndarray) -> tuple[np.ndarray, float]:
    inverse = np.where(np.isfinite(depth_m), 1.0 / depth_m.astype(np.float64), 0.0)
    b = SHIFT_FRACTION * A * float(inverse.max())
    return (A * inverse + b).astype(np.float32), b


def _median_rel_error(pred: np.ndarray, truth: np.ndarray) -> float:
    ok = np.isfinite(pred) & np.isfinite(truth) & (truth < 80.0)
    return float(np.median(np.abs(pred[ok] - truth[ok]) / truth[ok]))


def test_spec_accepts_affine_inverse_depth(tmp_path: Path) -> None:
    spec = _affine_spec()
    spec.save(tmp_path / "spec.yaml")
    assert ModelSpec.load(tmp_path / "spec.yaml") == spec
    with pytest.raises(ModelError, match="output_kind"):
        _affine_spec(output_kind="affine_depth")


def test_affine_model_gets_metres_from_the_ground(scene: tuple) -> None:  # type: ignore[type-arg]
    rgb, truth, k, height, pitch, _ = scene
    raw, b = _raw(truth)
    est = DepthEstimator(_affine_spec(), FixedOutput(raw), camera_height_m=height)
    result = est.predict(rgb, k, camera_pitch_rad=pitch)
    assert result.scale_method == "ground_plane"
    assert (result.scale, result.shift) == pytest.approx((A, -b), rel=0.02)
    fit = result.scale_fit
    assert fit is not None and fit.ok and fit.method == "affine_ransac"
    assert fit.inlier_ratio > 0.5
    assert _median_rel_error(result.depth_m, truth) < 0.01


def test_output_mapping_of_the_spec_applies_before_the_fit(scene: tuple) -> None:  # type: ignore[type-arg]
    rgb, truth, k, height, pitch, _ = scene
    raw, b = _raw(truth)
    # The network writes (x - 0.5) * 4; the spec maps it back: raw * 0.25 + 0.5 = x.
    est = DepthEstimator(
        _affine_spec(output_scale=0.25, output_shift=0.5), FixedOutput((raw - 0.5) * 4.0)
    )
    result = est.predict(rgb, k, camera_height_m=height, camera_pitch_rad=pitch)
    assert (result.scale, result.shift) == pytest.approx((A, -b), rel=0.02)


def test_affine_model_without_a_scale_source_is_refused(scene: tuple) -> None:  # type: ignore[type-arg]
    rgb, truth, k, *_ = scene
    est = DepthEstimator(_affine_spec(), FixedOutput(_raw(truth)[0]))
    with pytest.raises(ConfigError, match="scale and shift.*camera_height_m"):
        est.predict(rgb, k)
    est = DepthEstimator(_affine_spec(), FixedOutput(_raw(truth)[0]), scale_method="ground_plane")
    with pytest.raises(ConfigError, match="camera_height_m"):
        est.predict(rgb, k)
    with pytest.raises(ConfigError, match="fixed_scale"):
        DepthEstimator(_affine_spec(), FixedOutput(_raw(truth)[0]), scale_method="fixed")
    with pytest.raises(ConfigError, match="scale_method"):
        DepthEstimator(_affine_spec(), FixedOutput(_raw(truth)[0]), scale_method="median")


def test_fixed_scale_and_shift(scene: tuple) -> None:  # type: ignore[type-arg]
    rgb, truth, k, height, *_ = scene
    raw, b = _raw(truth)
    est = DepthEstimator(
        _affine_spec(), FixedOutput(raw), scale_method="fixed", fixed_scale=A, fixed_shift=-b
    )
    # A height is ignored with scale_method "fixed".
    result = est.predict(rgb, k, camera_height_m=height)
    assert (result.scale_method, result.scale, result.shift) == ("fixed_scale", A, -b)
    assert result.scale_fit is None
    assert _median_rel_error(result.depth_m, truth) < 1e-4


def test_failed_fit_raises_without_a_fallback_and_falls_back_with_one() -> None:
    k = Intrinsics(200.0, 200.0, 160.0, 80.0, W, H)
    wall = np.full((H, W), 0.3, np.float32)
    rgb = np.zeros((H, W, 3), np.uint8)
    with pytest.raises(ScaleError, match="ground-plane fit failed"):
        DepthEstimator(_affine_spec(), FixedOutput(wall)).predict(rgb, k, camera_height_m=1.5)
    est = DepthEstimator(_affine_spec(), FixedOutput(wall), fixed_scale=2.0)
    result = est.predict(rgb, k, camera_height_m=1.5)
    assert result.scale_method == "fixed_scale"
    assert result.scale_fit is not None and not result.scale_fit.ok


def test_tracker_holds_the_last_good_fit(scene: tuple) -> None:  # type: ignore[type-arg]
    rgb, truth, k, height, pitch, _ = scene
    raw, b = _raw(truth)
    tracker = ScaleTracker()
    backend = FixedOutput(raw)
    est = DepthEstimator(
        _affine_spec(),
        backend,
        camera_height_m=height,
        camera_pitch_rad=pitch,
        scale_tracker=tracker,
    )
    good = est.predict(rgb, k)
    assert good.scale_method == "ground_plane"
    backend.raw = np.full((H, W), 0.3, np.float32)  # a frame the fit cannot use
    held = est.predict(rgb, k)
    assert held.scale_method == "ground_plane_held"
    assert (held.scale, held.shift) == (good.scale, good.shift)
    assert tracker.state.frames_since_fit == 1 and tracker.state.failures == 1
    # No height at all (e.g. TF unavailable for a moment): the held fit, too.
    backend.raw = raw
    est.camera_height_m = None
    assert est.predict(rgb, k).scale_method == "ground_plane_held"


def test_unscaled_output_only_on_request(scene: tuple) -> None:  # type: ignore[type-arg]
    rgb, truth, k, height, *_ = scene
    raw, _ = _raw(truth)
    result = DepthEstimator(_affine_spec(), FixedOutput(raw), scale_method="none").predict(
        rgb, k, camera_height_m=height
    )
    assert (result.scale_method, result.scale, result.shift) == ("none", 1.0, 0.0)


def test_metric_models_ignore_the_scale_options(scene: tuple) -> None:  # type: ignore[type-arg]
    rgb, truth, k, *_ = scene
    spec = tiny_spec(input_width=W, input_height=H, train_fx_px=float(k.fx_px))
    result = DepthEstimator(spec, FixedOutput(np.full((H, W), 5.0)), scale_method="none").predict(
        rgb, k
    )
    assert result.scale_method == "canonical_focal" and result.shift == 0.0


def test_whole_chain_through_onnx_on_synthcity(tmp_path: Path) -> None:
    """A package whose ONNX network turns log-depth encoded in the red channel into affine
    inverse depth; the facade must give the true depth back from the camera height."""
    from oracle_net import encode_depth, make_oracle_package

    frame = render_frame(4, W, H)
    package = make_oracle_package(tmp_path / "oracle", W, H, a=A, b=0.6)
    with DepthEstimator.from_package(
        package, backend="onnxruntime", camera_height_m=frame.camera_height_m
    ) as est:
        assert est.spec.output_kind == "affine_inverse_depth"
        result = est.predict(
            encode_depth(frame.depth_m), frame.intrinsics, camera_pitch_rad=frame.pitch_rad
        )
    assert result.scale_method == "ground_plane"
    assert _median_rel_error(result.depth_m, frame.depth_m) < 0.03
