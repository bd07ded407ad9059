"""DepthEstimator: canonical focal scaling, valid range, resizing, scale recovery and errors."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from inference_fixtures import plane_scene, tiny_factory, tiny_spec

from cloudypoints_core.errors import BackendError, ConfigError, InputError, ModelError
from cloudypoints_core.geometry import Intrinsics
from cloudypoints_core.inference.facade import DepthEstimator, apply_valid_range, resize_depth
from cloudypoints_core.inference.package import default_model_path
from cloudypoints_core.inference.spec import ModelSpec


class FixedOutput:
    """A backend returning a preset raw output (and recording the batches it got)."""

    name = "fixed"
    device = "cpu"

    def __init__(self, raw: np.ndarray) -> None:
        self.raw = raw.astype(np.float32)
        self.batches: list[np.ndarray] = []

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(batch.copy())
        return self.raw

    def close(self) -> None:
        pass


def _image(intr: Intrinsics, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, intr.shape + (3,), dtype=np.uint8)


@pytest.fixture(scope="module")
def estimator(tiny_package_dir: Path) -> DepthEstimator:
    return DepthEstimator.from_package(tiny_package_dir, backend="onnxruntime", num_threads=1)


# ------------------------------------------------------------------ canonical focal rule
def test_double_focal_length_gives_double_depth(estimator: DepthEstimator) -> None:
    k = Intrinsics(60.0, 60.0, 79.5, 39.5, 160, 80)
    k2 = Intrinsics(120.0, 120.0, 79.5, 39.5, 160, 80)
    rgb = _image(k)
    one = estimator.predict(rgb, k)
    two = estimator.predict(rgb, k2)
    assert (one.scale_method, two.scale_method) == ("canonical_focal", "canonical_focal")
    # fx at the 64x32 model input is 60 * 64 / 160 = 24 px; train_fx_px is 40.
    assert one.scale == pytest.approx(24.0 / 40.0)
    assert two.scale == pytest.approx(2 * 24.0 / 40.0)
    both = np.isfinite(one.depth_m) & np.isfinite(two.depth_m)
    assert both.mean() > 0.9
    np.testing.assert_allclose(two.depth_m[both], 2 * one.depth_m[both], rtol=1e-5)


def test_metric_depth_is_raw_times_scale_plus_shift(tiny_package_dir: Path) -> None:
    spec = tiny_spec(output_scale=2.0, output_shift=1.0, train_fx_px=24.0)
    raw = np.linspace(1.0, 10.0, 32 * 64, dtype=np.float32).reshape(32, 64)
    est = DepthEstimator(spec, FixedOutput(raw))
    k = Intrinsics(48.0, 48.0, 31.5, 15.5, 64, 32)  # fx at input 48 -> factor 2
    result = est.predict(_image(k), k)
    np.testing.assert_allclose(result.depth_m, (raw * 2.0 + 1.0) * 2.0, rtol=1e-6)
    assert result.scale == pytest.approx(2.0)


def test_same_camera_at_another_resolution_gives_the_same_depth(estimator: DepthEstimator) -> None:
    # Half the image size with half the focal length: the same fx at the model input. The full
    # image repeats each pixel of the half one 2x2, so both reach the network as the same
    # 64x32 picture (area averaging of equal pixels): the depth must be the same.
    k_half = Intrinsics(40.0, 40.0, 31.5, 15.5, 64, 32)
    half_rgb = _image(k_half)
    full_rgb = np.repeat(np.repeat(half_rgb, 2, axis=0), 2, axis=1)
    k_full = Intrinsics(80.0, 80.0, 63.5, 31.5, 128, 64)
    assert k_full.resized(64, 32) == k_half
    full = estimator.predict(full_rgb, k_full, output_resolution="model")
    half = estimator.predict(half_rgb, k_half, output_resolution="model")
    assert full.scale == pytest.approx(half.scale) and full.intrinsics == half.intrinsics
    assert np.isfinite(half.depth_m).mean() > 0.5
    np.testing.assert_allclose(full.depth_m, half.depth_m, rtol=1e-6, equal_nan=True)
    # At the input resolution, the full prediction is the half one upsampled: same values at
    # the 2x2 block centres' neighbourhood on average, and the same range of depths.
    full_in = estimator.predict(full_rgb, k_full).depth_m
    assert full_in.shape == (64, 128)
    both = np.isfinite(full_in[::2, ::2]) & np.isfinite(half.depth_m)
    assert np.nanmedian(full_in[::2, ::2][both] / half.depth_m[both]) == pytest.approx(1, rel=0.05)


# ----------------------------------------------------------------------------- validity
def test_values_outside_the_valid_range_become_nan() -> None:
    spec = tiny_spec(min_depth_m=1.0, max_depth_m=50.0, train_fx_px=40.0)
    raw = np.full((32, 64), 10.0, dtype=np.float32)
    raw[0, :8] = [0.5, 0.999, 1.0, 50.0, 50.001, 1e6, np.nan, np.inf]
    raw[1, :2] = [-3.0, 0.0]
    k = Intrinsics(40.0, 40.0, 31.5, 15.5, 64, 32)  # factor 1
    result = DepthEstimator(spec, FixedOutput(raw)).predict(_image(k), k)
    row = result.depth_m[0, :8]
    np.testing.assert_array_equal(
        np.isnan(row), [True, True, False, False, True, True, True, True]
    )
    assert row[2] == 1.0 and row[3] == 50.0
    assert np.isnan(result.depth_m[1, :2]).all()
    assert np.all(result.depth_m[2:] == 10.0)


def test_apply_valid_range_in_place() -> None:
    depth = np.array([0.1, 2.0, np.inf, -np.inf, np.nan, 90.0], dtype=np.float32)
    out = apply_valid_range(depth, 0.5, 80.0)
    assert out is depth
    np.testing.assert_array_equal(np.isnan(depth), [True, False, True, True, True, True])


@pytest.mark.parametrize("resolution", ["input", "model"])
def test_upsampled_output_never_leaves_the_valid_range(
    estimator: DepthEstimator, resolution: str
) -> None:
    k = Intrinsics(300.0, 300.0, 250.0, 120.0, 500, 250)
    depth = estimator.predict(_image(k), k, output_resolution=resolution).depth_m
    valid = depth[np.isfinite(depth)]
    assert valid.size and valid.min() >= estimator.spec.min_depth_m
    assert valid.max() <= estimator.spec.max_depth_m


# ------------------------------------------------------------------------------ resizing
def test_output_intrinsics_match_the_depth_grid(estimator: DepthEstimator) -> None:
    k = Intrinsics(90.0, 95.0, 70.3, 41.2, 150, 77, dist=(0.01, 0.0, 0.0, 0.0, 0.0))
    rgb = _image(k)
    full = estimator.predict(rgb, k)
    assert full.depth_m.shape == (77, 150) and full.intrinsics == k
    small = estimator.predict(rgb, k, output_resolution="model")
    assert small.depth_m.shape == (32, 64) and small.intrinsics == k.resized(64, 32)
    assert full.depth_m.dtype == small.depth_m.dtype == np.float32


@pytest.mark.parametrize(("w", "h"), [(256, 128), (200, 90), (40, 24)])
def test_linear_resize_keeps_planes_exact(w: int, h: int) -> None:
    # Inverse depth of a plane is affine in (u, v); bilinear interpolation of it is exact, so the
    # resized depth equals the plane's depth rendered directly at the output resolution.
    k = Intrinsics(70.0, 70.0, 31.5, 15.5, 64, 32)
    target = k.resized(w, h)

    def slanted_plane(intr: Intrinsics) -> np.ndarray:
        u, v = np.meshgrid(np.arange(intr.width), np.arange(intr.height))
        x, y = (u - intr.cx_px) / intr.fx_px, (v - intr.cy_px) / intr.fy_px
        # Plane n . X = 10 with n = (0.2, 0.3, 1): depth z = 10 / (0.2 x + 0.3 y + 1).
        return (10.0 / (0.2 * x + 0.3 * y + 1.0)).astype(np.float32)

    resized = resize_depth(slanted_plane(k), w, h, "linear")
    expected = slanted_plane(target)
    # Border pixels replicate the edge (cv2 border mode); compare the interior.
    m = max(1, int(np.ceil(w / 64)))
    n = max(1, int(np.ceil(h / 32)))
    np.testing.assert_allclose(resized[n:-n, m:-m], expected[n:-n, m:-m], rtol=2e-5)


def test_nan_does_not_leak_into_valid_pixels() -> None:
    depth = np.full((32, 64), 5.0, dtype=np.float32)
    depth[:, 40:] = 20.0
    depth[10:20, 10:20] = np.nan
    out = resize_depth(depth, 256, 128, "linear")
    valid = out[np.isfinite(out)]
    # Never a blend with an invalid pixel (which would pull values towards infinity or zero).
    assert valid.min() >= 5.0 - 1e-4 and valid.max() <= 20.0 + 1e-3
    # The NaN hole grows by less than one model pixel (4 output pixels) on each side.
    rows = np.nonzero(np.isnan(out[:, 60]))[0]
    assert rows.min() >= 10 * 4 - 4 and rows.max() <= 20 * 4 + 3
    assert np.isfinite(out[:30, 60]).all() and np.isfinite(out[90:, 60]).all()


@pytest.mark.parametrize(("size", "out_size"), [((32, 64), (256, 128)), ((48, 40), (30, 70))])
def test_nan_aware_resize_compiled_and_numpy_give_the_same_bits(
    size, out_size, monkeypatch
) -> None:
    """With numba (requirements.txt) the last pass of the NaN-aware resize is compiled; it must
    give numpy's bits: the same float32 division and comparison, NaN at the same pixels."""
    from cloudypoints_core import _fused

    assert _fused.available()
    rng = np.random.default_rng(3)
    depth = rng.uniform(0.5, 80.0, size).astype(np.float32)
    depth[: size[0] // 3] = np.nan  # a sky
    depth[rng.random(size) < 0.05] = np.inf
    compiled = resize_depth(depth, *out_size, "linear")
    monkeypatch.setattr(_fused, "available", lambda: False)
    reference = resize_depth(depth, *out_size, "linear")
    assert np.isnan(reference).any() and np.isfinite(reference).any()
    np.testing.assert_array_equal(compiled.view(np.uint32), reference.view(np.uint32))


def test_nearest_resize_invents_no_values() -> None:
    depth = np.random.default_rng(0).uniform(1.0, 30.0, (32, 64)).astype(np.float32)
    depth[5, 5] = np.nan
    out = resize_depth(depth, 150, 70, "nearest")
    assert set(np.unique(out[np.isfinite(out)])) <= set(np.unique(depth[np.isfinite(depth)]))
    assert np.isnan(out).any()


def test_bad_interpolation_and_resolution(estimator: DepthEstimator) -> None:
    with pytest.raises(InputError, match="interpolation"):
        resize_depth(np.ones((4, 4), np.float32), 8, 8, "cubic")
    k = Intrinsics(40.0, 40.0, 31.5, 15.5, 64, 32)
    with pytest.raises(InputError, match="output_resolution"):
        estimator.predict(_image(k), k, output_resolution="full")


# ------------------------------------------------------------------------ relative models
def _relative_spec(kind: str = "relative_inverse_depth") -> ModelSpec:
    return tiny_spec(
        output_kind=kind,
        train_fx_px=None,
        input_width=320,
        input_height=160,
        min_depth_m=0.5,
        max_depth_m=80.0,
    )


def _relative_setup(unknown: float = 4.2) -> tuple[Intrinsics, np.ndarray, np.ndarray]:
    k = Intrinsics(400.0, 400.0, 320.0, 158.0, 640, 320)
    at_model = k.resized(320, 160)
    truth = plane_scene(at_model, camera_height_m=1.3, pitch_rad=0.04)
    with np.errstate(divide="ignore"):
        raw = (unknown / truth).astype(np.float32)  # inverse depth times an unknown factor
    return k, truth, raw


@pytest.mark.parametrize("kind", ["relative_inverse_depth", "disparity"])
def test_relative_model_gets_metric_scale_from_the_ground(kind: str) -> None:
    k, truth, raw = _relative_setup()
    est = DepthEstimator(_relative_spec(kind), FixedOutput(raw))
    result = est.predict(
        _image(k), k, output_resolution="model", camera_height_m=1.3, camera_pitch_rad=0.04
    )
    assert result.scale_method == "ground_plane"
    valid = np.isfinite(result.depth_m) & np.isfinite(truth)
    assert valid.mean() > 0.4
    ratio = np.median(result.depth_m[valid] / truth[valid])
    assert ratio == pytest.approx(1.0, rel=0.05)


def test_camera_height_option_is_the_default(caplog: pytest.LogCaptureFixture) -> None:
    k, truth, raw = _relative_setup()
    est = DepthEstimator(_relative_spec(), FixedOutput(raw), camera_height_m=1.3)
    assert est.predict(_image(k), k).scale_method == "ground_plane"


def test_relative_model_without_height_uses_the_fixed_scale(
    caplog: pytest.LogCaptureFixture,
) -> None:
    k, _, raw = _relative_setup(unknown=1.0)
    est = DepthEstimator(_relative_spec(), FixedOutput(raw), fixed_scale=2.0)
    with caplog.at_level(logging.WARNING):
        result = est.predict(_image(k), k, output_resolution="model")
    assert (result.scale_method, result.scale) == ("fixed_scale", 2.0)
    expected = np.where(raw > 0, 2.0 / np.where(raw > 0, raw, 1.0), np.nan)
    expected = np.where((expected >= 0.5) & (expected <= 80.0), expected, np.nan)
    np.testing.assert_allclose(result.depth_m, expected, rtol=1e-5)
    assert "no camera height given" in caplog.text


def test_failed_ground_fit_falls_back_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    k = Intrinsics(400.0, 400.0, 320.0, 158.0, 640, 320)
    wall = np.full((160, 320), 1 / 7.0, dtype=np.float32)
    est = DepthEstimator(_relative_spec(), FixedOutput(wall), fixed_scale=3.0)
    with caplog.at_level(logging.WARNING):
        result = est.predict(_image(k), k, camera_height_m=1.5)
    assert result.scale_method == "fixed_scale"
    assert "ground-plane fit failed" in caplog.text
    # Fallback warnings are throttled: a second failure logs nothing new.
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        est.predict(_image(k), k, camera_height_m=1.5)
    assert "ground-plane" not in caplog.text


def test_relative_model_with_no_scale_source_is_refused() -> None:
    k, _, raw = _relative_setup(unknown=1.0)
    with pytest.raises(ConfigError, match="camera_height_m.*fixed_scale"):
        DepthEstimator(_relative_spec(), FixedOutput(raw)).predict(_image(k), k)


def test_unscaled_relative_depth_only_on_request() -> None:
    k, _, raw = _relative_setup(unknown=1.0)
    est = DepthEstimator(_relative_spec(), FixedOutput(raw), scale_method="none")
    result = est.predict(_image(k), k, camera_height_m=1.3)
    assert (result.scale_method, result.scale, result.shift) == ("none", 1.0, 0.0)


# -------------------------------------------------------------------- result and options
def test_result_metadata(estimator: DepthEstimator) -> None:
    k = Intrinsics(40.0, 40.0, 31.5, 15.5, 64, 32)
    result = estimator.predict(_image(k), k)
    assert (result.backend, result.device) == ("onnxruntime", "cpu")
    assert set(result.timings) == {"preprocess", "infer", "postprocess", "total"}
    with pytest.raises(AttributeError):
        result.scale = 2.0  # type: ignore[misc]


def test_timings_measure_each_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    # A clock that moves only inside the backend's infer (by 50 ms): the infer stage must
    # report exactly that, the other stages nothing, and the total all of it.
    from cloudypoints_core.inference import facade

    clock = {"now": 100.0}
    monkeypatch.setattr(facade.time, "perf_counter", lambda: clock["now"])

    class SlowBackend(FixedOutput):
        def infer(self, batch: np.ndarray) -> np.ndarray:
            clock["now"] += 0.05
            return super().infer(batch)

    k = Intrinsics(40.0, 40.0, 31.5, 15.5, 64, 32)
    backend = SlowBackend(np.full((32, 64), 5.0, np.float32))
    timings = DepthEstimator(tiny_spec(), backend).predict(_image(k), k).timings
    assert timings["infer"] == pytest.approx(50.0)
    assert timings["preprocess"] == timings["postprocess"] == 0.0
    assert timings["total"] == pytest.approx(50.0)


def test_backend_receives_the_preprocessed_batch() -> None:
    spec = tiny_spec(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    backend = FixedOutput(np.ones((32, 64), np.float32))
    k = Intrinsics(40.0, 40.0, 31.5, 15.5, 64, 32)
    rgb = _image(k)
    DepthEstimator(spec, backend).predict(rgb, k)
    np.testing.assert_allclose(backend.batches[0][0], rgb.transpose(2, 0, 1) / 255.0, atol=1e-6)


def test_torch_and_onnxruntime_facades_agree(
    tiny_package_dir: Path, estimator: DepthEstimator
) -> None:
    k = Intrinsics(90.0, 90.0, 60.0, 30.0, 120, 60)
    rgb = _image(k, 3)
    with DepthEstimator.from_package(
        tiny_package_dir, backend="torch", model_factory=tiny_factory
    ) as est:
        a = est.predict(rgb, k).depth_m
    b = estimator.predict(rgb, k).depth_m
    np.testing.assert_allclose(a, b, rtol=1e-4, equal_nan=True)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"fixed_scale": -1.0}, ConfigError, "fixed_scale"),
        ({"interpolation": "cubic"}, ConfigError, "interpolation"),
        ({"camera_height_m": 0.0}, InputError, "camera_height_m"),
        ({"ground_plane": {"iterations": 0}}, ConfigError, "iterations"),
        ({"ground_plane": {"colour": 1}}, ConfigError, "ground_plane"),
        ({"frobnicate": True}, ConfigError, "unknown options \\['frobnicate'\\]"),
    ],
)
def test_bad_options(
    tiny_package_dir: Path, options: dict[str, Any], error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        DepthEstimator.from_package(tiny_package_dir, **options)


def test_bad_package_backend_and_device(tiny_package_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        DepthEstimator.from_package(tmp_path / "nowhere")
    with pytest.raises(BackendError, match="unknown inference backend 'onnx'"):
        DepthEstimator.from_package(tiny_package_dir, backend="onnx")
    with pytest.raises(BackendError, match="unknown device"):
        DepthEstimator.from_package(tiny_package_dir, backend="onnxruntime", device="npu")
    broken = Path(shutil.copytree(tiny_package_dir, tmp_path / "broken"))
    (broken / "model.onnx").write_bytes(b"\x08\x01garbage")
    with pytest.raises(ModelError, match="ONNX Runtime cannot load"):
        DepthEstimator.from_package(broken, backend="onnxruntime")
    (broken / "spec.yaml").write_text("name: x\n")
    with pytest.raises(ModelError, match="missing required spec fields"):
        DepthEstimator.from_package(broken)


def test_bad_inputs_to_predict(estimator: DepthEstimator) -> None:
    k = Intrinsics(40.0, 40.0, 31.5, 15.5, 64, 32)
    with pytest.raises(InputError, match="uint8"):
        estimator.predict(np.zeros((32, 64, 3), np.float64), k)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="intrinsics describe"):
        estimator.predict(np.zeros((32, 65, 3), np.uint8), k)
    with pytest.raises(InputError, match="camera_height_m"):
        estimator.predict(np.zeros((32, 64, 3), np.uint8), k, camera_height_m=-2.0)


@pytest.mark.skipif(
    not (default_model_path() / "spec.yaml").is_file(),
    reason="the default model is not trained yet",
)
def test_default_model_smoke() -> None:
    with DepthEstimator.from_package(None) as est:
        w, h = est.input_size
        k = Intrinsics(1.2 * w, 1.2 * w, (w - 1) / 2, (h - 1) / 2, 2 * w, 2 * h).resized(w, h)
        result = est.predict(_image(k), k)
    assert result.depth_m.shape == (h, w)
    assert np.isfinite(result.depth_m).mean() > 0.5
