"""Oracle ONNX networks with the I/O signature of each preset's real export, and encoded frames.

A frame's exact depth is written into its red channel as a log code (:func:`encode_frame`:
code 0 = sky, 1..255 = log depth between :data:`Z_MIN` and :data:`Z_MAX`); green and blue hold
other values so a channel mix-up is caught. The oracle (:func:`oracle_model`) undoes the
preset's input normalisation, decodes the depth per pixel and returns what the real network
would: metres, canonical-camera depth (depth * reference / focal, the focal being that of the
network input, given by the test), or an affine inverse depth (a / z + b); a sky output is 1
where the code is 0. So the test knows the truth, and the whole chain (fitting, padding,
un-padding, focal rule, scale) must give it back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

Z_MIN = 1.0
Z_MAX = 150.0
_LOG_SPAN = math.log(Z_MAX / Z_MIN)


def encode_depth(depth_m: npt.NDArray[np.floating]) -> npt.NDArray[np.uint8]:
    """Log code of depth (1..255), 0 where depth is not finite (sky)."""
    finite = np.isfinite(depth_m) & (depth_m > 0)
    safe = np.where(finite, np.clip(depth_m, Z_MIN, Z_MAX), Z_MIN)
    code = 1.0 + 254.0 * np.log(safe / Z_MIN) / _LOG_SPAN
    return np.where(finite, np.round(code), 0).astype(np.uint8)


def encode_frame(depth_m: npt.NDArray[np.floating]) -> npt.NDArray[np.uint8]:
    """(H, W, 3) uint8 RGB: red = depth code, green = 255 - code, blue = 40."""
    code = encode_depth(depth_m)
    rgb = np.empty(depth_m.shape + (3,), dtype=np.uint8)
    rgb[..., 0] = code
    rgb[..., 1] = 255 - code
    rgb[..., 2] = 40
    return rgb


def oracle_model(
    *,
    input_name: str,
    output_name: str,
    width: int,
    height: int,
    mean: Sequence[float],
    std: Sequence[float],
    kind: str,
    factor: float = 1.0,
    affine: tuple[float, float] = (1.0, 0.0),
    squeeze_channel: bool = False,
    sky_output: str | None = None,
    dynamic: bool = False,
    extra_outputs: Sequence[str] = (),
) -> Any:
    """An onnx.ModelProto (opset 17) computing a preset's raw output from encoded frames.

    ``kind``: ``"metric"`` (z * factor: factor = reference focal / network-input focal for a
    canonical-camera model, 1 otherwise) or ``"affine"`` (a / z + b with ``affine`` = (a, b)).
    ``mean``/``std`` are the spec's (applied to pixel / 255), undone for the red channel.
    """
    import onnx
    from onnx import TensorProto, helper

    def const(name: str, values: Sequence[float] | float, dtype: int = TensorProto.FLOAT) -> Any:
        arr = np.asarray(values, dtype=np.float32 if dtype == TensorProto.FLOAT else np.int64)
        return helper.make_node(
            "Constant",
            [],
            [name],
            value=helper.make_tensor(name + "_t", dtype, arr.shape, arr.ravel().tolist()),
        )

    # Network value x of the red channel = (pixel / 255 - mean) / std -> pixel = (x * std +
    # mean) * 255 -> log depth.
    a_code = 255.0 * std[0]
    b_code = 255.0 * mean[0]
    nodes = [
        const("starts", [0], TensorProto.INT64),
        const("ends", [1], TensorProto.INT64),
        const("axes", [1], TensorProto.INT64),
        helper.make_node("Slice", [input_name, "starts", "ends", "axes"], ["red"]),
        const("a_code", a_code),
        const("b_code", b_code),
        helper.make_node("Mul", ["red", "a_code"], ["red_s"]),
        helper.make_node("Add", ["red_s", "b_code"], ["code"]),
        const("log_a", _LOG_SPAN / 254.0),
        const("log_b", math.log(Z_MIN) - _LOG_SPAN / 254.0),
        helper.make_node("Mul", ["code", "log_a"], ["log_s"]),
        helper.make_node("Add", ["log_s", "log_b"], ["log_z"]),
        helper.make_node("Exp", ["log_z"], ["z"]),
    ]
    if kind == "metric":
        nodes += [const("factor", factor), helper.make_node("Mul", ["z", "factor"], ["raw"])]
    elif kind == "affine":
        nodes += [
            helper.make_node("Reciprocal", ["z"], ["inv"]),
            const("aff_a", affine[0]),
            const("aff_b", affine[1]),
            helper.make_node("Mul", ["inv", "aff_a"], ["inv_a"]),
            helper.make_node("Add", ["inv_a", "aff_b"], ["raw"]),
        ]
    else:
        raise ValueError(kind)
    out_h: Any = "H" if dynamic else height
    out_w: Any = "W" if dynamic else width
    if squeeze_channel:
        nodes += [
            const("sq_axes", [1], TensorProto.INT64),
            helper.make_node("Squeeze", ["raw", "sq_axes"], [output_name]),
        ]
        out_shape: list[Any] = [1, out_h, out_w]
    else:
        nodes += [helper.make_node("Identity", ["raw"], [output_name])]
        out_shape = [1, 1, out_h, out_w]
    outputs = [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, out_shape)]
    if sky_output:
        nodes += [
            const("half", 0.5),
            helper.make_node("Less", ["code", "half"], ["is_sky"]),
            helper.make_node("Cast", ["is_sky"], [sky_output], to=TensorProto.FLOAT),
        ]
        outputs.append(
            helper.make_tensor_value_info(sky_output, TensorProto.FLOAT, [1, 1, out_h, out_w])
        )
    for extra in extra_outputs:
        nodes.append(helper.make_node("Identity", ["z"], [extra]))
        outputs.append(
            helper.make_tensor_value_info(extra, TensorProto.FLOAT, [1, 1, out_h, out_w])
        )
    in_shape: list[Any] = ["N", 3, "H", "W"] if dynamic else [1, 3, height, width]
    graph = helper.make_graph(
        nodes,
        "oracle",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, in_shape)],
        outputs,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
