"""Depth Anything V2: parity with the official code, official key layout, strict loading, export.

The fixture (``fixtures/depth_anything_v2``, see its PROVENANCE.md) holds the official model's
output on deterministic weights and the official state-dict keys of every encoder; no weights are
shipped and nothing is downloaded.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from cloudypoints_core.errors import ConfigError, InputError, ModelError  # noqa: E402
from cloudypoints_core.models import count_flops, create_model  # noqa: E402
from cloudypoints_core.models.depth_anything_v2 import DepthAnythingV2  # noqa: E402
from cloudypoints_core.models.weights import (  # noqa: E402
    deterministic_state_dict,
    deterministic_tensor,
    load_checkpoint_state,
    load_strict,
)

FIXTURES = Path(__file__).parent / "fixtures" / "depth_anything_v2"

#: Ops of the exported graph; every one is in the TensorRT 10 ONNX parser's supported list
#: (onnx-tensorrt docs/operators.md), LayerNormalization included since TensorRT 8.6.
TRT10_OPS = {
    "Add",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "ConvTranspose",
    "Div",
    "Equal",
    "Erf",
    "Expand",
    "LayerNormalization",
    "MatMul",
    "Mul",
    "Relu",
    "Reshape",
    "Resize",
    "Shape",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Split",
    "Squeeze",
    "Transpose",
    "Where",
}


@pytest.fixture(scope="module")
def parity() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "da2_vits_parity.npz") as data:
        return {k: data[k] for k in data.files}


def _model(head: str, max_depth: float = 80.0) -> DepthAnythingV2:
    model = create_model("depth_anything_v2", encoder="vits", head=head, max_depth=max_depth)
    assert isinstance(model, DepthAnythingV2)
    load_strict(model, deterministic_state_dict(model), "deterministic weights")
    return model.eval()


@pytest.mark.parametrize("head", ["relative", "metric"])
def test_vits_matches_official_output(parity: dict[str, np.ndarray], head: str) -> None:
    model = _model(head, float(parity["max_depth"]))
    x = torch.from_numpy(parity["input"].astype(np.float32))
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, 1, 98, 140)
    ours = out[:, 0].numpy()
    ref = parity[head]
    # The fixture must exercise the network: a mostly-zero relative map would prove little.
    assert np.count_nonzero(ref) > 0.1 * ref.size
    rel_err = float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))
    assert rel_err <= 1e-4, f"{head}: max relative difference {rel_err:.2e}"
    if head == "relative":
        assert ours.min() >= 0.0
    else:
        assert 0.0 < ours.min() and ours.max() < float(parity["max_depth"])


@pytest.mark.parametrize("encoder", ["vits", "vitb", "vitl"])
def test_state_dict_keys_and_shapes_match_official(encoder: str) -> None:
    official = json.loads((FIXTURES / "da2_state_dict_keys.json").read_text())[encoder]
    with torch.device("meta"):
        model = create_model("depth_anything_v2", encoder=encoder, head="metric")
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: shape for k, shape in official}
    assert sorted(ours) == sorted(theirs)
    assert ours == theirs


def test_vits_parameter_count_is_the_published_24_8_m() -> None:
    with torch.device("meta"):
        model = create_model("depth_anything_v2", encoder="vits")
    params = sum(p.numel() for p in model.parameters())
    assert round(params / 1e6, 1) == 24.8


def test_checkpoint_file_round_trip_and_wrong_files(tmp_path: Path) -> None:
    model = _model("relative")
    path = tmp_path / "depth_anything_v2_vits.pth"
    torch.save(model.state_dict(), path)
    fresh = create_model("depth_anything_v2", encoder="vits")
    load_strict(fresh, load_checkpoint_state(path), str(path))
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key

    # A training checkpoint with the state dict under "model" loads too.
    torch.save({"model": model.state_dict(), "epoch": 3}, tmp_path / "ckpt.pth")
    assert set(load_checkpoint_state(tmp_path / "ckpt.pth")) == set(model.state_dict())

    state = dict(model.state_dict())
    state.pop("depth_head.scratch.output_conv1.bias")
    state["depth_head.extra.weight"] = torch.zeros(1)
    with pytest.raises(ModelError) as err:
        load_strict(fresh, state, "broken.pth")
    message = str(err.value)
    assert "missing keys: depth_head.scratch.output_conv1.bias" in message
    assert "unexpected keys: depth_head.extra.weight" in message

    # A Small checkpoint offered to a Base network: every mismatch named, with shapes.
    with torch.device("meta"):
        base = create_model("depth_anything_v2", encoder="vitb")
    with pytest.raises(ModelError, match=r"encoder=vitb.*wrong shapes: .*\(expected"):
        load_strict(base, model.state_dict(), "small.pth")

    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot be read"):
        load_checkpoint_state(tmp_path / "junk.pth")
    with pytest.raises(ModelError, match="does not exist"):
        load_checkpoint_state(tmp_path / "missing.pth")
    torch.save({"weights": [1, 2]}, tmp_path / "other.pth")
    with pytest.raises(ModelError, match="state dict of tensors"):
        load_checkpoint_state(tmp_path / "other.pth")


def test_bad_configuration_and_input_size() -> None:
    with pytest.raises(ConfigError, match="encoder 'vitg'"):
        create_model("depth_anything_v2", encoder="vitg")
    with pytest.raises(ConfigError, match="head 'disparity'"):
        create_model("depth_anything_v2", head="disparity")
    with pytest.raises(ConfigError, match="max_depth"):
        create_model("depth_anything_v2", head="metric", max_depth=0.0)
    model = _model("relative")
    with pytest.raises(InputError, match="multiple of 14"):
        model(torch.zeros(1, 3, 64, 140))


def test_deterministic_rule_depends_on_name_and_shape_only() -> None:
    a = deterministic_tensor("blocks.0.attn.qkv.weight", (6, 4))
    assert torch.equal(a, deterministic_tensor("blocks.0.attn.qkv.weight", (6, 4)))
    assert not torch.equal(a, deterministic_tensor("blocks.1.attn.qkv.weight", (6, 4)))
    assert float(a.abs().max()) <= (3.0 / 4) ** 0.5
    gamma = deterministic_tensor("blocks.0.ls1.gamma", (100,))
    assert 0.05 <= float(gamma.min()) and float(gamma.max()) <= 0.15


def test_fixed_position_embedding_equals_live_interpolation() -> None:
    model = _model("metric")
    x = torch.randn(1, 3, 42, 70, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        live = model(x)
        model.fix_input_size(42, 70)
        fixed = model(x)
        other = model(torch.randn(1, 3, 56, 56))  # another size still interpolates live
        model.fix_input_size(None)
    assert torch.equal(live, fixed)
    assert other.shape == (1, 1, 56, 56)
    # The pre-training grid (518 px) uses the learned embedding as it is.
    emb = model.pretrained.interpolated_pos_embed(37, 37)
    assert emb is model.pretrained.pos_embed


def test_flops_include_attention_and_transposed_convolutions() -> None:
    model = create_model("depth_anything_v2", encoder="vits")
    small = count_flops(model, 98, 140)
    tokens = 7 * 10 + 1
    attention = 12 * 2 * tokens * tokens * 384
    assert small["params_m"] == pytest.approx(24.785, abs=1e-3)
    assert small["gmacs"] * 1e9 > attention + 12 * tokens * 12 * 384 * 384


def test_export_has_no_runtime_interpolation_and_only_tensorrt_ops() -> None:
    model = _model("metric")
    model.fix_input_size(98, 140)
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, 98, 140),),
            buffer,
            opset_version=17,
            input_names=["image"],
            output_names=["depth"],
            dynamo=False,
        )
    model.fix_input_size(None)
    graph = onnx.load_from_string(buffer.getvalue()).graph
    ops = {node.op_type for node in graph.node}
    assert ops <= TRT10_OPS, f"ops TensorRT 10 may not parse: {ops - TRT10_OPS}"
    resizes = [n for n in graph.node if n.op_type == "Resize"]
    # Four fusion blocks and the final upsampling; no bicubic resize of the position embedding.
    assert len(resizes) == 5
    for node in resizes:
        attrs = {a.name: a.s for a in node.attribute if a.type == onnx.AttributeProto.STRING}
        assert attrs["mode"] == b"linear"
        assert attrs["coordinate_transformation_mode"] == b"align_corners"
