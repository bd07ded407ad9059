"""Helpers of the ROS tests: a tiny ONNX model package, a test-only DDS domain, SynthCity frames.

The model is written with ``onnx.helper`` (no torch, no training): one 3x3 convolution, softplus
and an affine head, so its depth varies with image content and part of it falls outside the
spec's valid range (NaN), exercising the invalid-pixel paths of the node.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cloudypoints_core.inference.spec import ModelSpec

MODEL_WIDTH = 64
MODEL_HEIGHT = 32


def test_spec(name: str = "ros_test_net") -> ModelSpec:
    return ModelSpec(
        name=name,
        architecture="ros_test_conv",
        input_width=MODEL_WIDTH,
        input_height=MODEL_HEIGHT,
        output_kind="metric_depth",
        train_fx_px=50.0,
        min_depth_m=2.0,
        max_depth_m=20.0,
        weights_file=None,
    )


def make_model_package(
    root: Path, seed: int = 0, *, spec: ModelSpec | None = None, scale: float = 6.0
) -> Path:
    """Write spec.yaml and model.onnx (spec embedded) into ``root``; return ``root``.

    The network computes ``(softplus(conv(image)) * scale + 1) m`` at the training camera.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from cloudypoints_core.inference.onnx_meta import embed_spec_in_onnx_model

    spec = spec or test_spec()
    rng = np.random.default_rng(seed)
    weight = rng.normal(0.0, 0.6, size=(1, 3, 3, 3)).astype(np.float32)
    bias = np.array([0.2], dtype=np.float32)
    h, w = spec.input_height, spec.input_width
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["image", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Softplus", ["c"], ["s"]),
            helper.make_node("Mul", ["s", "scale"], ["m"]),
            helper.make_node("Add", ["m", "shift"], ["depth"]),
        ],
        "ros_test_conv",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, h, w])],
        [helper.make_tensor_value_info("depth", TensorProto.FLOAT, [1, 1, h, w])],
        initializer=[
            numpy_helper.from_array(weight, "w"),
            numpy_helper.from_array(bias, "b"),
            numpy_helper.from_array(np.array(scale, dtype=np.float32), "scale"),
            numpy_helper.from_array(np.array(1.0, dtype=np.float32), "shift"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    embed_spec_in_onnx_model(model, spec)
    root.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(root / "model.onnx"))
    spec.save(root / "spec.yaml")
    return root


def test_domain_id() -> int:
    """A DDS domain for this test process, away from env.sh's default (77) and other runs."""
    return 120 + os.getpid() % 90
