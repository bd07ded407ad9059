"""The whole chain for every preset, on oracle networks: true depth comes back.

For each preset an oracle ONNX network with the real export's signature (``preset_oracles``)
is imported with ``import_model`` and run through ``DepthEstimator`` on SynthCity frames whose
exact depth is encoded in the image, for several aspect ratios (2:1, 16:9, KITTI's 1242x375)
and focal lengths. Canonical-camera oracles are built with the focal length of the network
input computed here from the policy's definition (independently of ``preprocess``), so a wrong
fit, a missed un-padding or a wrong focal rule shows up as a depth error. Relative presets get
a real shift (20 % of the output range) and are made metric twice: from the known transform
(``scale_method="fixed"``) and from the affine ground fit with the frame's camera height.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from preset_oracles import encode_frame, oracle_model
from test_import_model import SIGNATURES

from cloudypoints_core.data.synthcity import SynthCityConfig, SynthFrame, render_frame
from cloudypoints_core.inference.facade import DepthEstimator
from cloudypoints_core.inference.presets import PRESETS, ImportOptions, import_model

#: (width, height, fx = fy) of the test cameras: 2:1 at two focal lengths, 16:9 at two, KITTI.
CAMERAS = [
    (1024, 512, 1131.25),
    (1024, 512, 560.0),
    (1280, 720, 900.0),
    (1280, 720, 1500.0),
    (1242, 375, 721.5),
]
#: Affine inverse depth of the relative oracles: a / z + b, b about 20 % of the output range.
AFFINE = (3.0, 0.4)


@pytest.fixture(scope="module")
def frames() -> dict[tuple[int, int, float], SynthFrame]:
    out = {}
    for w, h, fx in CAMERAS:
        config = SynthCityConfig(base_width=w, base_height=h, fx_px=fx)
        out[(w, h, fx)] = render_frame(1_000_002, w, h, config)
    return out


def _multiple_at_least(value: float, multiple: int, minimum: int) -> int:
    out = round(value / multiple) * multiple
    return out if out >= minimum else math.ceil(value / multiple) * multiple


def network_scales(
    preset_name: str, w: int, h: int, size: tuple[int, int] | None = None
) -> tuple[float, float, float]:
    """(sx, sy, fraction of the image the network sees) from the policy definitions: letterbox
    by min(W/w, H/h); lower bound by max(...) with each side rounded to the multiple, then a
    centred crop (which keeps the focal length)."""
    preset = PRESETS[preset_name]
    iw, ih = size or preset.default_input_size
    policy = preset.spec_fields["resize_policy"]
    if policy == "keep_aspect_pad":  # Metric3D's own code scales the intrinsics by `scale`
        s = min(iw / w, ih / h)
        sx = int(w * s + 1e-6) / w
        sy = int(h * s + 1e-6) / h
    elif policy == "lower_bound":
        s = max(iw / w, ih / h)
        multiple = preset.input_multiples[0]
        sx = _multiple_at_least(w * s, multiple, iw) / w
        sy = _multiple_at_least(h * s, multiple, ih) / h
    else:
        sx, sy = iw / w, ih / h
    seen = min(1.0, iw / (w * sx)) * min(1.0, ih / (h * sy))
    return sx, sy, seen


def network_focal(
    preset_name: str, w: int, h: int, fx: float, fy: float, size: tuple[int, int] | None = None
) -> float:
    """The focal length (the preset's rule) of the camera at the network input."""
    sx, sy, _ = network_scales(preset_name, w, h, size)
    rule = PRESETS[preset_name].spec_fields.get("focal_rule", "none")
    return fx * sx if rule == "fx" else 0.5 * (fx * sx + fy * sy)


def build_package(
    tmp_path: Path,
    preset_name: str,
    camera: tuple[int, int, float],
    frame: SynthFrame,
    size: tuple[int, int] | None = None,
) -> Path:
    import onnx

    preset = PRESETS[preset_name]
    sig: dict[str, Any] = dict(SIGNATURES[preset_name])
    kind = sig.pop("kind")
    reference = preset.spec_fields.get("reference_focal_px")
    factor = 1.0
    if reference is not None:
        k = frame.intrinsics
        factor = reference / network_focal(
            preset_name, camera[0], camera[1], k.fx_px, k.fy_px, size
        )
    width, height = size or preset.default_input_size
    model = oracle_model(
        width=width,
        height=height,
        mean=preset.spec_fields["mean"],
        std=preset.spec_fields["std"],
        kind=kind,
        factor=factor,
        affine=AFFINE,
        dynamic=size is not None,
        **sig,
    )
    weights = tmp_path / "net.onnx"
    onnx.save(model, str(weights))
    options = ImportOptions(
        max_depth_m=80.0 if preset.required_options else None, input_size=size, check=False
    )
    return import_model(preset_name, weights, tmp_path / "pkg", options)


def relative_errors(pred: npt.NDArray[np.float32], truth: npt.NDArray[np.float32]) -> Any:
    valid = np.isfinite(truth) & np.isfinite(pred) & (truth < 80.0)
    return np.abs(pred[valid] - truth[valid]) / truth[valid], valid


def check_chain(
    tmp_path: Path,
    frame: SynthFrame,
    preset_name: str,
    camera: tuple[int, int, float],
    size: tuple[int, int] | None = None,
) -> list[float]:
    """Run the chain with every scale source of the preset; returns the median errors."""
    package = build_package(tmp_path, preset_name, camera, frame, size)
    rgb = encode_frame(frame.depth_m)
    truth = frame.depth_m
    relative = SIGNATURES[preset_name]["kind"] == "affine"
    sources: list[dict[str, Any]] = [{}]
    if relative:
        sources = [
            {"scale_method": "fixed", "fixed_scale": AFFINE[0], "fixed_shift": -AFFINE[1]},
            {
                "scale_method": "ground_plane",
                "camera_height_m": frame.camera_height_m,
                "camera_pitch_rad": frame.pitch_rad,
            },
        ]
    _, _, seen = network_scales(preset_name, camera[0], camera[1], size)
    medians = []
    for options in sources:
        est = DepthEstimator.from_package(package, backend="onnxruntime", **options)
        result = est.predict(rgb, frame.intrinsics)
        assert result.depth_m.shape == truth.shape
        assert result.intrinsics == frame.intrinsics
        errors, valid = relative_errors(result.depth_m, truth)
        median = float(np.median(errors))
        assert median <= 0.03, (preset_name, options.get("scale_method"), median)
        medians.append(median)
        # The part of the scene the fit shows comes back (a cropping fit leaves sides out).
        finite_truth = np.isfinite(truth) & (truth < 80.0)
        assert valid.sum() >= 0.85 * seen * finite_truth.sum()
        if preset_name == "depth-anything-3-metric":
            sky = ~np.isfinite(truth)
            assert sky.any()
            leaked = np.isfinite(result.depth_m[sky]).mean()
            assert leaked < 0.02, f"{leaked:.1%} of sky pixels have a depth"
        model = est.predict(rgb, frame.intrinsics, output_resolution="model")
        # The model-resolution output lies on the exact grid its intrinsics describe.
        assert model.depth_m.shape == model.intrinsics.shape
        est.close()
    return medians


@pytest.mark.parametrize("camera", CAMERAS, ids=lambda c: f"{c[0]}x{c[1]}f{c[2]:g}")
@pytest.mark.parametrize("preset_name", sorted(SIGNATURES))
def test_true_depth_comes_back(
    tmp_path: Path,
    frames: dict[tuple[int, int, float], SynthFrame],
    preset_name: str,
    camera: tuple[int, int, float],
) -> None:
    check_chain(tmp_path, frames[camera], preset_name, camera)


@pytest.mark.parametrize(
    ("camera", "size"),
    [((1242, 375, 721.5), (1722, 518)), ((1280, 720, 900.0), (924, 518))],
    ids=["kitti-1722x518", "16:9-924x518"],
)
@pytest.mark.parametrize("preset_name", ["depth-anything-v2-relative", "depth-anything-3-metric"])
def test_camera_matched_input_sizes_see_the_whole_image(
    tmp_path: Path,
    frames: dict[tuple[int, int, float], SynthFrame],
    preset_name: str,
    camera: tuple[int, int, float],
    size: tuple[int, int],
) -> None:
    """Depth Anything's own rule for these cameras (shorter side 518, multiple of 14)."""
    assert network_scales(preset_name, camera[0], camera[1], size)[2] > 0.99
    check_chain(tmp_path, frames[camera], preset_name, camera, size)


def test_letterbox_is_unpadded_exactly(tmp_path: Path, frames: Any) -> None:
    """Metric3D on KITTI's shape: a third of the input is padding; none of it may survive."""
    camera = (1242, 375, 721.5)
    frame = frames[camera]
    package = build_package(tmp_path, "metric3d-v2", camera, frame)
    est = DepthEstimator.from_package(package, backend="onnxruntime")
    rgb = encode_frame(frame.depth_m)
    model = est.predict(rgb, frame.intrinsics, output_resolution="model")
    # 1064 / 1242 * 375 = 321.3 rows of image in 616: the window is the un-padded part only.
    assert model.depth_m.shape == (321, 1064)
    assert model.intrinsics.cy_px == pytest.approx(
        (frame.intrinsics.cy_px + 0.5) * 321 / 375 - 0.5
    )
    full = est.predict(rgb, frame.intrinsics)
    errors, _ = relative_errors(full.depth_m, frame.depth_m)
    # Rows at the top and bottom edge are as good as the rest: no pad colour leaked in.
    edge = np.zeros(frame.depth_m.shape, bool)
    edge[:8] = edge[-8:] = True
    edge_errors, _ = relative_errors(
        np.where(edge, full.depth_m, np.nan).astype(np.float32), frame.depth_m
    )
    assert float(np.median(edge_errors)) <= 0.03
    assert float(np.median(errors)) <= 0.03
