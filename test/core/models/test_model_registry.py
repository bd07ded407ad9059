"""Tests of the depth networks: registry, shapes, bounded output, FLOPs, ONNX-friendly ops."""

from __future__ import annotations

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from cloudypoints_core.errors import ConfigError  # noqa: E402
from cloudypoints_core.models import count_flops, create_model, list_models  # noqa: E402
from cloudypoints_core.models.layers import DepthHead, make_divisible  # noqa: E402

#: Small configurations of every registered network (fast on a CPU).
SMALL = {
    "mobile_unet": {"width_mult": 0.35, "min_depth_m": 0.5, "max_depth_m": 100.0},
    "resnet_unet": {
        "widths": (16, 24, 32, 48),
        "blocks": (1, 1, 1, 1),
        "decoder_channels": (32, 24, 16, 16, 8),
        "min_depth_m": 1.0,
        "max_depth_m": 50.0,
    },
}
#: The ops ONNX opset 17 / TensorRT 10 run well (BatchNorm folded away; ReLU6 becomes Clip).
ALLOWED_OPS = {
    "Conv",
    "Relu",
    "Clip",
    "Sigmoid",
    "Mul",
    "Add",
    "Exp",
    "Concat",
    "Resize",
    "HardSwish",
    "Constant",
    "Identity",
}


def test_registry_lists_at_least_two_networks() -> None:
    assert {"mobile_unet", "resnet_unet"} <= set(list_models())
    # depth_anything_v2 and midas_small (official checkpoints, relative output: no metric
    # bounds) have their own tests: test_depth_anything_v2.py, test_midas_small.py.
    others = set(list_models()) - {"depth_anything_v2", "midas_small"}
    assert set(SMALL) == others, "add a small config for every new network"


def test_unknown_network_and_bad_config_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown network 'nope'"):
        create_model("nope")
    with pytest.raises(ConfigError, match="bad configuration"):
        create_model("mobile_unet", no_such_option=1)
    with pytest.raises(ConfigError, match="min_depth_m"):
        create_model("mobile_unet", min_depth_m=10.0, max_depth_m=5.0)
    with pytest.raises(ConfigError, match="decoder_channels"):
        create_model("resnet_unet", decoder_channels=(8, 8))


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("size", [(64, 128), (96, 64)])
def test_shape_and_bounded_depth(name: str, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    cfg = SMALL[name]
    model = create_model(name, **cfg).eval()
    height, width = size
    # Extreme inputs push the logits far out; the head must still bound the depth.
    x = torch.randn(2, 3, height, width) * 50.0
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, torch.Tensor)
    assert out.shape == (2, 1, height, width)
    assert torch.isfinite(out).all()
    assert out.min() >= cfg["min_depth_m"] * (1 - 1e-5)
    assert out.max() <= cfg["max_depth_m"] * (1 + 1e-5)


def test_depth_head_is_log_uniform_between_bounds() -> None:
    head = DepthHead(0.5, 80.0)
    logits = torch.tensor([-1e4, 0.0, 1e4])
    out = head(logits)
    np.testing.assert_allclose(out.numpy(), [0.5, np.sqrt(0.5 * 80.0), 80.0], rtol=1e-5)


def test_make_divisible() -> None:
    assert make_divisible(32 * 0.5) == 16
    assert make_divisible(24 * 0.35) == 8
    assert make_divisible(100) == 104
    assert make_divisible(7) == 8


def test_count_flops_matches_hand_count() -> None:
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),  # 32*32*8 outputs x 3*9 MACs
        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8),  # 16*16*8 x 9
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 16 * 16, 10),  # 10 x 2048
    )
    expected = 32 * 32 * 8 * 27 + 16 * 16 * 8 * 9 + 10 * 2048
    params = sum(p.numel() for p in model.parameters())
    cost = count_flops(model, 32, 32)
    assert cost["gmacs"] == pytest.approx(expected / 1e9)
    assert cost["gflops"] == cost["gmacs"]
    assert cost["params_m"] == pytest.approx(params / 1e6)


def test_real_time_network_within_budget_at_512x256() -> None:
    """The real-time network's default configuration costs at most 3 GFLOPs at 512x256."""
    cost = count_flops(create_model("mobile_unet"), 256, 512)
    assert 0.1 < cost["gflops"] <= 3.0
    # FLOPs grow with the pixel count: a fully convolutional network has no fixed-size part.
    half = count_flops(create_model("mobile_unet"), 128, 256)
    assert half["gflops"] == pytest.approx(cost["gflops"] / 4, rel=1e-6)
    larger = count_flops(create_model("resnet_unet"), 256, 512)
    assert larger["gflops"] > 3 * cost["gflops"]


@pytest.mark.parametrize("name", sorted(SMALL))
def test_exported_graph_uses_only_portable_ops(name: str) -> None:
    model = create_model(name, **SMALL[name]).eval()
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, 64, 128),),
            buffer,
            opset_version=17,
            input_names=["image"],
            output_names=["depth"],
            dynamo=False,
        )
    graph = onnx.load_from_string(buffer.getvalue()).graph
    ops = {node.op_type for node in graph.node}
    assert ops <= ALLOWED_OPS, f"unexpected ops {ops - ALLOWED_OPS}"
    assert "BatchNormalization" not in ops  # folded into the convolutions
    for node in graph.node:
        if node.op_type == "Resize":
            mode = next(a.s for a in node.attribute if a.name == "mode")
            assert mode in (b"nearest", b"linear")
            if mode == b"linear":
                attrs = {a.name: a.s for a in node.attribute}
                ctm = attrs["coordinate_transformation_mode"]
                assert ctm in (b"half_pixel", b"pytorch_half_pixel")
