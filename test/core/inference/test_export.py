"""Tests of ONNX export: spec in the metadata, fixed I/O, parity with PyTorch, package files."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from cloudypoints_core.errors import ModelError  # noqa: E402
from cloudypoints_core.inference.export import (  # noqa: E402
    export_onnx,
    export_package,
    load_torch_model,
    normalise_batch,
    onnx_parity,
)
from cloudypoints_core.inference.onnx_meta import read_spec_from_onnx  # noqa: E402
from cloudypoints_core.inference.package import load_model_package  # noqa: E402
from cloudypoints_core.inference.spec import ModelSpec  # noqa: E402
from cloudypoints_core.models import create_model  # noqa: E402

ARCH = {"width_mult": 0.35, "min_depth_m": 0.5, "max_depth_m": 100.0}


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    return ModelSpec(
        name="export-test",
        architecture="mobile_unet",
        arch_config=ARCH,
        input_width=128,
        input_height=64,
        train_fx_px=141.4,
        max_depth_m=80.0,
        input_name="rgb_in",
        output_name="depth_out",
    )


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(3)
    net = create_model("mobile_unet", **ARCH)
    # Non-trivial BatchNorm statistics so that folding them into the convolutions is exercised.
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(4, 3, 64, 128))
    return net.eval()


def test_export_embeds_spec_and_fixes_io(tmp_path: Path, spec: ModelSpec, model) -> None:
    path = export_onnx(model, spec, tmp_path / "m.onnx")
    assert read_spec_from_onnx(path) == spec
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    (inp,) = proto.graph.input
    (out,) = proto.graph.output
    assert inp.name == "rgb_in" and out.name == "depth_out"
    dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == [1, 3, 64, 128]
    assert [d.dim_value for d in out.type.tensor_type.shape.dim] == [1, 1, 64, 128]
    assert proto.opset_import[0].version == 17
    # Atomic write: nothing but the target is left in the folder.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_parity_on_synthcity_frames(tmp_path: Path, spec: ModelSpec, model) -> None:
    path = export_onnx(model, spec, tmp_path / "m.onnx")
    parity = onnx_parity(model, path, spec, seeds=(1_000_003, 1_000_004))
    assert parity.max_abs < 1e-3
    # Independent check on one frame: ONNX Runtime output against torch, relative error.
    rgb = np.random.default_rng(0).integers(0, 256, (64, 128, 3), dtype=np.uint8)
    x = normalise_batch(rgb, spec)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["depth_out"], {"rgb_in": x})
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_parity_detects_a_different_model(tmp_path: Path, spec: ModelSpec, model) -> None:
    path = export_onnx(model, spec, tmp_path / "m.onnx")
    torch.manual_seed(99)
    other = create_model("mobile_unet", **ARCH).eval()
    parity = onnx_parity(other, path, spec, seeds=(1_000_003,))
    assert parity.max_abs > 1e-2


def test_parity_figures_match_a_direct_comparison(tmp_path: Path, spec: ModelSpec, model) -> None:
    path = export_onnx(model, spec, tmp_path / "m.onnx")
    torch.manual_seed(7)
    other = create_model("mobile_unet", **ARCH).eval()
    frames = [
        np.random.default_rng(seed).integers(0, 256, (64, 128, 3), dtype=np.uint8)
        for seed in (1, 2)
    ]
    parity = onnx_parity(other, path, spec, images=frames)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    diffs, peaks = [], []
    for rgb in frames:
        x = normalise_batch(rgb, spec)
        (got,) = session.run(["depth_out"], {"rgb_in": x})
        with torch.no_grad():
            want = other(torch.from_numpy(x)).numpy()
        diffs.append(np.abs(got - want).max())
        peaks.append(np.abs(want).max())
    assert parity.max_abs == pytest.approx(max(diffs), rel=1e-6)
    assert parity.max_rel == pytest.approx(max(diffs) / max(peaks), rel=1e-6)
    assert 0.0 < parity.max_rel < parity.max_abs  # depth peaks above 1 m here


def test_normalise_batch_matches_spec(spec: ModelSpec) -> None:
    rgb = np.zeros((64, 128, 3), np.uint8)
    rgb[..., 0] = 255
    x = normalise_batch(rgb, spec)
    assert x.shape == (1, 3, 64, 128) and x.dtype == np.float32 and x.flags.c_contiguous
    assert x[0, 0, 0, 0] == pytest.approx((1.0 - 0.485) / 0.229)
    assert x[0, 1, 0, 0] == pytest.approx((0.0 - 0.456) / 0.224)
    # A BGR network: red feeds channel 2, whose mean/std are the spec's third values (the
    # spec lists them in the network's channel order).
    bgr = replace(spec, channel_order="bgr")
    assert normalise_batch(rgb, bgr)[0, 2, 0, 0] == pytest.approx((1.0 - 0.406) / 0.225)
    assert normalise_batch(rgb, bgr)[0, 0, 0, 0] == pytest.approx((0.0 - 0.485) / 0.229)
    with pytest.raises(ModelError, match="128x64"):
        normalise_batch(np.zeros((10, 10, 3), np.uint8), spec)


def test_export_package_round_trip(tmp_path: Path, spec: ModelSpec, model) -> None:
    out = export_package(model, spec, tmp_path / "pkg", model_card="# card\n")
    assert sorted(p.name for p in out.iterdir()) == [
        "MODEL_CARD.md",
        "model.onnx",
        "model.pt",
        "spec.yaml",
    ]
    package = load_model_package(out)
    assert package.spec == spec
    assert read_spec_from_onnx(package.onnx_path) == spec
    # model.pt is a plain state dict of tensors: weights_only loading works, no metadata inside.
    state = torch.load(str(package.weights_path), weights_only=True)
    assert isinstance(state, dict)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert set(state) == set(model.state_dict())
    restored = load_torch_model(spec, package.weights_path)
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        torch.testing.assert_close(restored(x), model(x))


def test_load_torch_model_rejects_mismatched_weights(
    tmp_path: Path, spec: ModelSpec, model
) -> None:
    out = export_package(model, spec, tmp_path / "pkg")
    wider = replace(spec, arch_config={**ARCH, "width_mult": 0.5})
    with pytest.raises(ModelError, match="does not fit"):
        load_torch_model(wider, out / "model.pt")
    with pytest.raises(ModelError, match="does not exist"):
        load_torch_model(spec, tmp_path / "missing.pt")
