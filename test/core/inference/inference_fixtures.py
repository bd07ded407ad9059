"""Tiny model packages and analytic scenes for the inference tests (no trained model needed).

``make_tiny_package`` writes a complete package (spec.yaml, model.onnx with the spec in its
metadata, model.pt state dict) of a two-convolution network, exported the way the real export
does (legacy TorchScript exporter, opset 17). ``plane_scene`` renders exact z-depth of a ground
plane with a box on it and sky above the horizon, for a camera at a given height and pitch.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cloudypoints_core.geometry import Intrinsics
from cloudypoints_core.inference.spec import ModelSpec

TINY_ARCH = "tiny_test_net"


def tiny_network(channels: int = 6, min_depth: float = 1.0) -> Any:
    """A fully convolutional (B, 3, H, W) -> (B, 1, H, W) net with a positive head."""
    import torch
    from torch import nn

    class TinyDepthNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encode = nn.Conv2d(3, channels, 3, stride=2, padding=1)
            self.decode = nn.Conv2d(channels, 1, 3, padding=1)
            self.min_depth = min_depth

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.encode(x))
            y = nn.functional.interpolate(self.decode(y), scale_factor=2.0, mode="bilinear")
            return nn.functional.softplus(y) * 10.0 + self.min_depth

    return TinyDepthNet()


def tiny_factory(architecture: str, **config: Any) -> Any:
    """A models-registry stand-in that knows only :data:`TINY_ARCH`."""
    if architecture != TINY_ARCH:
        raise KeyError(f"unknown architecture {architecture!r}")
    return tiny_network(**config)


def tiny_spec(**overrides: Any) -> ModelSpec:
    fields: dict[str, Any] = {
        "name": "tiny",
        "architecture": TINY_ARCH,
        "arch_config": {"channels": 6},
        "input_width": 64,
        "input_height": 32,
        "output_kind": "metric_depth",
        "train_fx_px": 40.0,
        "min_depth_m": 0.5,
        "max_depth_m": 80.0,
    }
    fields.update(overrides)
    return ModelSpec(**fields)


def make_tiny_package(
    root: Path,
    spec: ModelSpec | None = None,
    seed: int = 0,
    export_shape: tuple[int, int] | None = None,
) -> Path:
    """Write a package for ``spec`` (default :func:`tiny_spec`) into ``root``; returns ``root``.

    ``export_shape`` (height, width) exports the ONNX at another size than the spec says, to test
    the mismatch check.
    """
    import onnx
    import torch

    from cloudypoints_core.inference.onnx_meta import embed_spec_in_onnx_model

    spec = spec or tiny_spec()
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    net = tiny_network(**dict(spec.arch_config)).eval()
    h, w = export_shape or (spec.input_height, spec.input_width)
    onnx_path = root / (spec.onnx_file or "model.onnx")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter announces its deprecation
        torch.onnx.export(
            net,
            (torch.zeros(1, 3, h, w),),
            str(onnx_path),
            dynamo=False,
            opset_version=17,
            input_names=[spec.input_name],
            output_names=[spec.output_name],
        )
    proto = onnx.load(str(onnx_path))
    embed_spec_in_onnx_model(proto, spec)
    onnx.save(proto, str(onnx_path))
    torch.save(net.state_dict(), root / (spec.weights_file or "model.pt"))
    spec.save(root / "spec.yaml")
    return root


#: Output names of :func:`multi_head_network`, in graph order (the spec's output first).
MULTI_HEAD_OUTPUTS = ("depth", "sky", "label")


def multi_head_network(channels: int = 6, min_depth: float = 1.0) -> Any:
    """:func:`tiny_network` plus two heads, returned as a dict: a float ``sky`` probability
    (B, 1, H, W) and an int64 ``label`` (B, H, W), like multi-head exports (Depth Anything 3)."""
    import torch
    from torch import nn

    class MultiHeadNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.depth = tiny_network(channels, min_depth)
            self.sky = nn.Conv2d(3, 1, 1)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            sky = torch.sigmoid(self.sky(x))
            label = (sky[:, 0] > 0.5).to(torch.int64)
            return {"depth": self.depth(x), "sky": sky, "label": label}

    return MultiHeadNet()


def multi_head_factory(architecture: str, **config: Any) -> Any:
    """A models-registry stand-in building :func:`multi_head_network` for :data:`TINY_ARCH`."""
    if architecture != TINY_ARCH:
        raise KeyError(f"unknown architecture {architecture!r}")
    return multi_head_network(**config)


def make_multi_head_package(root: Path, seed: int = 0) -> Path:
    """A package of :func:`multi_head_network` (spec output ``depth``), ONNX and state dict."""
    import warnings

    import onnx
    import torch

    from cloudypoints_core.inference.onnx_meta import embed_spec_in_onnx_model

    spec = tiny_spec(name="tiny_multi_head")
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    net = multi_head_network(**dict(spec.arch_config)).eval()
    onnx_path = root / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter announces its deprecation
        torch.onnx.export(
            net,
            (torch.zeros(1, 3, spec.input_height, spec.input_width),),
            str(onnx_path),
            dynamo=False,
            opset_version=17,
            input_names=[spec.input_name],
            output_names=list(MULTI_HEAD_OUTPUTS),
        )
    proto = onnx.load(str(onnx_path))
    embed_spec_in_onnx_model(proto, spec)
    onnx.save(proto, str(onnx_path))
    torch.save(net.state_dict(), root / "model.pt")
    spec.save(root / "spec.yaml")
    return root


def with_spec(spec: ModelSpec, **changes: Any) -> ModelSpec:
    return replace(spec, **changes)


def plane_scene(
    intrinsics: Intrinsics,
    camera_height_m: float = 1.5,
    pitch_rad: float = 0.03,
    box: tuple[float, float, float] | None = (8.0, -1.0, 1.0),
) -> npt.NDArray[np.float32]:
    """Exact z-depth (H, W) of flat ground ``camera_height_m`` below a camera pitched down by
    ``pitch_rad``, with a fronto-parallel box face at depth ``box[0]`` spanning lateral
    x in [box[1], box[2]] (camera frame), and inf for sky (rays that never hit the ground).
    """
    h, w = intrinsics.shape
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    rx = (u - intrinsics.cx_px) / intrinsics.fx_px
    ry = (v - intrinsics.cy_px) / intrinsics.fy_px
    up = np.array([0.0, -math.cos(pitch_rad), -math.sin(pitch_rad)])
    along_up = rx * up[0] + ry * up[1] + up[2]  # ray (rx, ry, 1) . up
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(along_up < -1e-9, -camera_height_m / along_up, np.inf)
    if box is not None:
        zb, x0, x1 = box
        x_at_box = rx * zb
        # The box face stands on the ground and is 2 m tall.
        height_above_ground = zb * along_up + camera_height_m
        hit = (
            (x_at_box >= x0)
            & (x_at_box <= x1)
            & (height_above_ground >= 0)
            & (height_above_ground <= 2.0)
        )
        z = np.where(hit & (zb < z), zb, z)
    return z.astype(np.float32)
