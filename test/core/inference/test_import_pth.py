"""``import-model`` of official Depth Anything V2 checkpoints (.pth) -> package -> predict.

The checkpoint is our network's state dict filled by the deterministic weight rule and saved the
way the official files are (a bare state dict under the official key names): outputs are
meaningless, but shapes, metric handling and ONNX Runtime vs PyTorch agreement are real. A small
input (140x98) keeps it fast.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from cloudypoints_core.cli.import_model import run_import  # noqa: E402
from cloudypoints_core.cli.main import main as cli_main  # noqa: E402
from cloudypoints_core.data.synthcity import render_frame  # noqa: E402
from cloudypoints_core.errors import ConfigError, ModelError  # noqa: E402
from cloudypoints_core.inference import import_pth  # noqa: E402
from cloudypoints_core.inference.facade import DepthEstimator  # noqa: E402
from cloudypoints_core.inference.import_pth import PARITY_RTOL  # noqa: E402
from cloudypoints_core.inference.onnx_meta import read_spec_from_onnx  # noqa: E402
from cloudypoints_core.inference.package import load_model_package  # noqa: E402
from cloudypoints_core.inference.presets import PRESETS  # noqa: E402
from cloudypoints_core.models import create_model  # noqa: E402
from cloudypoints_core.models.weights import deterministic_state_dict  # noqa: E402

SIZE = (140, 98)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = create_model("depth_anything_v2", encoder="vits", head="relative")
    path = tmp_path_factory.mktemp("ckpt") / "depth_anything_v2_vits.pth"
    torch.save(deterministic_state_dict(model), path)
    return path


@pytest.fixture(scope="module")
def metric_package(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pkg") / "da2_metric"
    code = run_import("depth-anything-v2-metric-outdoor-small", checkpoint, out, input_size=SIZE)
    assert code == 0
    return out


def test_presets_cover_the_official_checkpoints() -> None:
    for size, encoder in (("small", "vits"), ("base", "vitb"), ("large", "vitl")):
        rel = PRESETS[f"depth-anything-v2-{size}"]
        assert rel.weights_kinds == ("pth",)
        assert rel.spec_fields["arch_config"] == {"encoder": encoder, "head": "relative"}
        assert rel.spec_fields["output_kind"] == "affine_inverse_depth"
        for place, max_depth in (("outdoor", 80.0), ("indoor", 20.0)):
            met = PRESETS[f"depth-anything-v2-metric-{place}-{size}"]
            assert met.spec_fields["arch_config"]["max_depth"] == max_depth
            assert met.spec_fields["max_depth_m"] == max_depth
            assert met.spec_fields["output_kind"] == "metric_depth"


def test_metric_package_spec_files_and_graph(metric_package: Path) -> None:
    package = load_model_package(metric_package)
    spec = package.spec
    assert spec.architecture == "depth_anything_v2"
    assert dict(spec.arch_config) == {"encoder": "vits", "head": "metric", "max_depth": 80.0}
    assert (spec.input_width, spec.input_height, spec.input_multiple) == (140, 98, 14)
    assert spec.output_kind == "metric_depth" and spec.focal_rule == "none"
    assert spec.resize_policy == "lower_bound" and spec.interpolation == "cubic"
    assert spec.max_depth_m == 80.0
    assert read_spec_from_onnx(package.onnx_path) == spec
    assert {p.name for p in metric_package.iterdir()} == {
        "spec.yaml",
        "model.onnx",
        "model.pt",
        "MODEL_CARD.md",
    }
    card = (metric_package / "MODEL_CARD.md").read_text()
    assert "depth_anything_v2_vits.pth" in card and "ONNX Runtime vs PyTorch" in card
    # Both parity figures, absolute and relative to the output's range, from export.onnx_parity.
    figures = re.search(r"max \|difference\| (\S+) \((\S+) relative\)", card)
    assert figures is not None
    assert 0.0 <= float(figures.group(2)) <= PARITY_RTOL
    graph = onnx.load(str(package.onnx_path)).graph
    modes = [
        a.s for n in graph.node if n.op_type == "Resize" for a in n.attribute if a.name == "mode"
    ]
    assert modes and set(modes) == {b"linear"}  # no bicubic position-embedding resize left
    (inp,) = graph.input
    dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == [1, 3, 98, 140]


def test_predict_onnxruntime_and_torch_agree_with_metric_handling(metric_package: Path) -> None:
    frame = render_frame(1_000_003, 256, 128)
    results = {}
    for backend in ("onnxruntime", "torch"):
        est = DepthEstimator.from_package(metric_package, backend=backend, device="cpu")
        results[backend] = est.predict(frame.rgb, frame.intrinsics)
    ort_depth = results["onnxruntime"].depth_m
    torch_depth = results["torch"].depth_m
    assert ort_depth.shape == torch_depth.shape == (128, 256)
    both = np.isfinite(ort_depth) & np.isfinite(torch_depth)
    # Valid-range edges may flip for a pixel whose depth sits on a limit; nothing more.
    assert np.mean(np.isfinite(ort_depth) != np.isfinite(torch_depth)) < 1e-3
    assert both.mean() > 0.5
    np.testing.assert_allclose(ort_depth[both], torch_depth[both], rtol=1e-3, atol=1e-3)
    # Metric for any camera (focal rule none): metres straight from sigmoid x 80, valid range.
    assert results["onnxruntime"].scale_method == "metric"
    valid = ort_depth[both]
    assert 0.1 <= valid.min() and valid.max() <= 80.0


def test_relative_package_needs_a_scale_source(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "rel"
    assert run_import("depth-anything-v2-small", checkpoint, out, input_size=SIZE) == 0
    spec = load_model_package(out).spec
    assert spec.output_kind == "affine_inverse_depth"
    frame = render_frame(1_000_004, 140, 98)
    with pytest.raises(ConfigError):
        DepthEstimator.from_package(out, backend="onnxruntime").predict(
            frame.rgb, frame.intrinsics
        )
    est = DepthEstimator.from_package(out, backend="onnxruntime", fixed_scale=10.0)
    result = est.predict(frame.rgb, frame.intrinsics)
    assert result.depth_m.shape == (98, 140)
    assert result.scale_method == "fixed_scale"


def test_cli_import_then_predict(checkpoint: Path, metric_package: Path, tmp_path: Path) -> None:
    import cv2

    frame = render_frame(1_000_005, 196, 98)
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), frame.rgb[..., ::-1])
    intr = frame.intrinsics
    code = cli_main(
        [
            "predict",
            "--image",
            str(image),
            "--fx",
            str(intr.fx_px),
            "--cx",
            str(intr.cx_px),
            "--cy",
            str(intr.cy_px),
            "--out",
            str(tmp_path / "pred"),
            "--model",
            str(metric_package),
        ]
    )
    assert code == 0
    depth = np.load(tmp_path / "pred" / "frame_depth.npy")
    assert depth.shape == (98, 196) and np.isfinite(depth).mean() > 0.5
    meta = json.loads((tmp_path / "pred" / "frame_depth.json").read_text())
    assert meta["scale_method"] == "metric"


def test_wrong_checkpoint_or_size_is_refused(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="missing keys|wrong shapes") as err:
        run_import("depth-anything-v2-base", checkpoint, tmp_path / "b", input_size=SIZE)
    assert "encoder=vitb" in str(err.value)
    assert not (tmp_path / "b").exists()
    with pytest.raises(ConfigError, match="multiple of 14"):
        run_import("depth-anything-v2-small", checkpoint, tmp_path / "c", input_size=(128, 64))
    onnx_file = tmp_path / "x.onnx"
    onnx_file.write_bytes(b"")
    with pytest.raises(ConfigError, match="imports \\['pth'\\] weights"):
        run_import("depth-anything-v2-small", onnx_file, tmp_path / "d")


def test_failed_parity_check_names_both_figures_and_writes_nothing(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tolerance no export meets: the importer must refuse and leave no package behind.
    monkeypatch.setattr(import_pth, "PARITY_RTOL", -1.0)
    with pytest.raises(ModelError, match=r"parity check failed: .* differ by \S+ \(\S+ of the"):
        run_import("depth-anything-v2-small", checkpoint, tmp_path / "p", input_size=SIZE)
    assert not (tmp_path / "p").exists()
    assert list(tmp_path.iterdir()) == []
