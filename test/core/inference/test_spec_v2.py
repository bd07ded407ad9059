"""Model spec v2: versions, validation, input fitting per policy, exact intrinsics, padding, masks,
focal rules, and the bundled v1 model running exactly as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from inference_fixtures import tiny_spec
from test_preprocess import MEAN, STD, _blob, _centroid

from cloudypoints_core.errors import ModelError
from cloudypoints_core.geometry import Intrinsics
from cloudypoints_core.inference.facade import DepthEstimator, apply_valid_range, resize_depth
from cloudypoints_core.inference.package import default_model_path, load_model_package
from cloudypoints_core.inference.preprocess import Preprocessor, fit_input
from cloudypoints_core.inference.spec import MaskOutput, ModelSpec


def v2(**fields: Any) -> ModelSpec:
    base: dict[str, Any] = {"spec_version": 2, "input_multiple": 14}
    base.update(fields)
    return tiny_spec(**base)


# ----------------------------------------------------------------------------------- versions
def test_bundled_v1_spec_loads_and_saves_as_v1(tmp_path: Path) -> None:
    spec = load_model_package(None).spec
    assert spec.spec_version == 1 and spec.fit_policy == "stretch"
    assert spec.reference_focal == spec.train_fx_px
    spec.save(tmp_path / "spec.yaml")
    text = (tmp_path / "spec.yaml").read_text()
    assert "focal_rule" not in text and "input_multiple" not in text
    assert text == (default_model_path() / "spec.yaml").read_text()
    assert ModelSpec.load(tmp_path / "spec.yaml") == spec


def test_a_spec_without_version_is_v1() -> None:
    data = tiny_spec().to_dict()
    del data["spec_version"]
    for key in ("input_multiple", "interpolation", "focal_rule", "reference_focal_px"):
        del data[key]
    del data["pad_value"], data["mask_outputs"]
    assert ModelSpec.from_dict(data).spec_version == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("resize_policy", "keep_aspect_pad"),
        ("focal_rule", "mean_fxfy"),
        ("interpolation", "cubic"),
        ("output_kind", "affine_inverse_depth"),
        ("mask_outputs", ({"name": "sky", "threshold": 0.3},)),
    ],
)
def test_v1_specs_cannot_use_v2_features(field: str, value: Any) -> None:
    with pytest.raises(ModelError, match=f"version 2 features .*{field}.*spec_version: 2"):
        tiny_spec(spec_version=1, **{field: value})
    v2(input_multiple=32, **{field: value})  # fine in version 2


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"input_width": 64}, "multiple of input_multiple 14"),
        ({"input_multiple": 0}, "input_multiple must be a positive integer"),
        ({"resize_policy": "letterbox"}, "resize_policy must be one of"),
        ({"interpolation": "lanczos"}, "interpolation must be one of"),
        ({"focal_rule": "fy"}, "focal_rule must be one of"),
        ({"train_fx_px": None}, "need reference_focal_px or train_fx_px"),
        ({"pad_value": (0, 0, 300)}, "pad_value needs 3 values in \\[0, 255\\]"),
        ({"mask_outputs": ({"name": "depth", "threshold": 0.3},)}, "differ from output_name"),
        (
            {"mask_outputs": ({"name": "sky", "threshold": 0.3, "invalid_when": "up"},)},
            "invalid_when must be one of",
        ),
        ({"mask_outputs": ({"name": "sky"},)}, "bad mask_outputs entry"),
    ],
)
def test_bad_v2_fields_are_named(fields: dict[str, Any], message: str) -> None:
    base = {"input_width": 56, "input_height": 28}
    base.update(fields)
    with pytest.raises(ModelError, match=message):
        v2(**base)


def test_v2_round_trips_through_yaml() -> None:
    spec = v2(
        input_width=56,
        input_height=28,
        resize_policy="keep_aspect_pad",
        pad_value=(123.675, 116.28, 103.53),
        focal_rule="mean_fxfy",
        reference_focal_px=300.0,
        mask_outputs=(MaskOutput("sky", 0.3),),
        interpolation="area_or_cubic",
    )
    assert ModelSpec.from_yaml(spec.to_yaml()) == spec
    assert spec.reference_focal == 300.0
    assert v2(input_width=56, input_height=28, focal_rule="none").reference_focal is None


# ------------------------------------------------------------------------------------ fitting
@pytest.mark.parametrize(
    ("policy", "image", "net", "multiple", "resized", "offset"),
    [
        # Depth Anything's infer_image(img, 518) on KITTI: 1242x375 -> 1722x518 (issue text).
        ("lower_bound", (1242, 375), (1722, 518), 14, (1722, 518), (0, 0)),
        # ... and a square 518 network crops the middle of that.
        ("lower_bound", (1242, 375), (518, 518), 14, (1722, 518), (-602, 0)),
        # The DA3 peer's 16:9 input 504x280 is exactly the lower bound of 1920x1080.
        ("lower_bound", (1920, 1080), (504, 280), 14, (504, 280), (0, 0)),
        # Metric3D on KITTI: scale min(616/375, 1064/1242), 1064x321, 147 rows of pad on top.
        ("keep_aspect_pad", (1242, 375), (1064, 616), 14, (1064, 321), (0, 147)),
        ("keep_aspect_pad", (1000, 1000), (1064, 616), 14, (616, 616), (224, 0)),
        ("keep_aspect_crop", (1280, 720), (512, 512), 32, (910, 512), (-199, 0)),
        ("stretch", (1280, 720), (256, 256), 32, (256, 256), (0, 0)),
    ],
)
def test_fit_per_policy(
    policy: str,
    image: tuple[int, int],
    net: tuple[int, int],
    multiple: int,
    resized: tuple[int, int],
    offset: tuple[int, int],
) -> None:
    spec = v2(
        input_width=net[0], input_height=net[1], input_multiple=multiple, resize_policy=policy
    )
    fit = fit_input(spec, *image)
    assert (fit.resized_size, fit.offset) == (resized, offset)


@pytest.mark.parametrize("policy", ["keep_aspect_pad", "keep_aspect_crop", "lower_bound"])
@pytest.mark.parametrize(("src_w", "src_h"), [(400, 180), (150, 150), (90, 200)])
def test_intrinsics_follow_every_fit_exactly(policy: str, src_w: int, src_h: int) -> None:
    # As test_preprocess does for stretching: a 3D point's blob must land where the returned
    # network-input intrinsics project it, through resize + crop or pad.
    spec = v2(
        input_width=140,
        input_height=84,
        resize_policy=policy,
        mean=MEAN,
        std=STD,
        interpolation="linear",
        pad_value=(0, 0, 0),
    )
    intr = Intrinsics(0.8 * src_w, 0.75 * src_w, 0.46 * src_w, 0.52 * src_h, src_w, src_h)
    point = np.array([0.05, 0.04, 5.0])
    u = intr.fx_px * point[0] / point[2] + intr.cx_px
    v = intr.fy_px * point[1] / point[2] + intr.cy_px
    batch, at_input = Preprocessor(spec)(_blob(src_w, src_h, u, v, 0.03 * src_w), intr)
    assert at_input.size == (140, 84)
    got_u, got_v = _centroid(batch)
    assert abs(got_u - (at_input.fx_px * point[0] / point[2] + at_input.cx_px)) < 0.05
    assert abs(got_v - (at_input.fy_px * point[1] / point[2] + at_input.cy_px)) < 0.05
    # Aspect kept: fx / fy changes only by the rounding of the resized sides to whole pixels.
    assert at_input.fx_px / at_input.fy_px == pytest.approx(intr.fx_px / intr.fy_px, rel=0.03)


def test_pad_value_is_exact_and_in_rgb_order() -> None:
    pad = (123.675, 116.28, 103.53)
    spec = v2(
        input_width=56,
        input_height=56,
        resize_policy="keep_aspect_pad",
        pad_value=pad,
        mean=(0.0, 0.0, 0.0),
        std=(1 / 255,) * 3,
        channel_order="bgr",
    )
    rgb = np.full((10, 20, 3), (10, 20, 30), np.uint8)
    batch, at_input = Preprocessor(spec)(rgb, Intrinsics(20.0, 20.0, 9.5, 4.5, 20, 10))
    # 20x10 -> 56x28 placed at row 14; network channels are BGR.
    np.testing.assert_allclose(batch[0, :, 0, 0], pad[::-1], rtol=1e-6)
    np.testing.assert_allclose(batch[0, :, 20, 10], (30, 20, 10), rtol=1e-6)
    assert at_input.cy_px == pytest.approx((4.5 + 0.5) * 2.8 - 0.5 + 14)


# ---------------------------------------------------------------------------------- the facade
class Echo:
    """A backend returning fixed outputs (primary first), to test the postprocessing alone."""

    name = "echo"
    device = "cpu"

    def __init__(self, outputs: dict[str, np.ndarray]) -> None:
        self.outputs = outputs
        self.output_names = tuple(outputs)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return next(iter(self.outputs.values())).copy()

    def infer_all(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self.outputs.items()}

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("rule", "expected"),
    [("fx", 2.0 * 140 / 1000 * 10), ("mean_fxfy", 1.5 * 140 / 1000 * 10), ("none", 10.0)],
)
def test_focal_rules_use_the_network_input_camera(rule: str, expected: float) -> None:
    spec = v2(
        input_width=140,
        input_height=70,
        resize_policy="stretch",
        focal_rule=rule,
        reference_focal_px=1.0,
        train_fx_px=None,
    )
    est = DepthEstimator(spec, Echo({"depth": np.full((70, 140), 10.0, np.float32)}))
    # fx 2 px and fy 1 px per unit at 1000 px wide: at the input 0.28 and 0.14 px.
    intr = Intrinsics(2.0, 1.0, 499.5, 249.5, 1000, 500)
    result = est.predict(np.zeros((500, 1000, 3), np.uint8), intr, output_resolution="model")
    assert float(np.nanmedian(result.depth_m)) == pytest.approx(expected, rel=1e-5)
    assert result.scale_method == ("metric" if rule == "none" else "canonical_focal")


@pytest.mark.parametrize(
    ("direction", "sky_rows"), [("above", slice(0, 10)), ("below", slice(10, 70))]
)
def test_mask_outputs_make_pixels_nan(direction: str, sky_rows: slice) -> None:
    sky = np.zeros((1, 1, 70, 140), np.float32)
    sky[..., :10, :] = 1.0
    spec = v2(
        input_width=140,
        input_height=70,
        focal_rule="none",
        train_fx_px=None,
        mask_outputs=(MaskOutput("sky", 0.3, direction),),
    )
    est = DepthEstimator(spec, Echo({"depth": np.full((70, 140), 5.0, np.float32), "sky": sky}))
    intr = Intrinsics(100.0, 100.0, 69.5, 34.5, 140, 70)
    depth = est.predict(np.zeros((70, 140, 3), np.uint8), intr).depth_m
    assert np.isnan(depth[sky_rows]).all()
    rest = np.ones(70, bool)
    rest[sky_rows] = False
    assert (depth[rest] == 5.0).all()


def test_missing_mask_output_is_refused(tmp_path: Path) -> None:
    from test_import_model import write_oracle

    from cloudypoints_core.inference.presets import import_model

    weights = write_oracle(tmp_path / "m.onnx", "depth-anything-3-metric")
    out = import_model("depth-anything-3-metric", weights, tmp_path / "pkg")
    spec = load_model_package(out).spec
    data = spec.to_dict()
    data["mask_outputs"] = [{"name": "clouds", "threshold": 0.5}]
    ModelSpec.from_dict(data).save(out / "spec.yaml")
    with pytest.raises(
        ModelError, match="mask outputs \\[.clouds.\\] are not outputs the onnxruntime backend"
    ):
        DepthEstimator.from_package(out, backend="onnxruntime")


def test_bundled_model_runs_exactly_as_version_1() -> None:
    """The v1 pipeline written out here (stretch with area/linear, LUT-free normalisation,
    fx / train_fx_px, range, inverse-depth resize) and the facade agree bit for bit."""
    from cloudypoints_core.data.synthcity import render_frame

    frame = render_frame(1_000_123, 640, 320)
    est = DepthEstimator.from_package(None, backend="onnxruntime", num_threads=1)
    spec = est.spec
    w, h = spec.input_width, spec.input_height
    small = cv2.resize(frame.rgb, (w, h), interpolation=cv2.INTER_AREA)
    lut = (np.arange(256)[:, None] / 255.0 - np.array(spec.mean)) / np.array(spec.std)
    batch = np.ascontiguousarray(
        lut.astype(np.float32)[small, np.arange(3)].transpose(2, 0, 1)[None]
    )
    raw = est.backend.infer(batch).copy()
    factor = frame.intrinsics.resized(w, h).fx_px / float(spec.train_fx_px or 0)
    depth = raw * np.float32(spec.output_scale * factor)
    apply_valid_range(depth, spec.min_depth_m, spec.max_depth_m)
    expected_model = depth.copy()
    expected = resize_depth(depth, 640, 320)
    result = est.predict(frame.rgb, frame.intrinsics)
    np.testing.assert_array_equal(result.depth_m, expected)
    assert result.scale == factor and result.scale_method == "canonical_focal"
    model = est.predict(frame.rgb, frame.intrinsics, output_resolution="model")
    np.testing.assert_array_equal(model.depth_m, expected_model)
    assert model.intrinsics == frame.intrinsics.resized(w, h)
    est.close()
