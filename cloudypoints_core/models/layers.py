"""Building blocks of the depth networks, limited to ops ONNX opset 17 and TensorRT 10 run well.

Every block is Conv + BatchNorm (folded into the Conv by the ONNX exporter in eval mode) + a
pointwise activation, element-wise Add, Concat, fixed-factor Resize, Sigmoid and Exp. There is no
data-dependent control flow, so tracing gives the same graph for every input.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from cloudypoints_core._optional import require
from cloudypoints_core.errors import ConfigError

# The static branch gives mypy torch's real types; at run time a missing torch names this feature.
if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.nn import functional as F
else:
    torch = require("torch", "the depth networks")
    nn = torch.nn
    F = torch.nn.functional

__all__ = [
    "ACTIVATIONS",
    "BasicBlock",
    "ConvBNAct",
    "DepthHead",
    "InvertedResidual",
    "SeparableConv",
    "Upsample",
    "make_divisible",
]

#: Activations every target runtime fuses with the preceding convolution.
ACTIVATIONS = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "silu": nn.SiLU,
    "hardswish": nn.Hardswish,
}


def make_divisible(value: float, divisor: int = 8) -> int:
    """``value`` rounded to a multiple of ``divisor``, never below 90 % of it (MobileNet's rule).

    Channel counts that are multiples of 8 keep vectorised CPU kernels and tensor cores busy.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def _activation(name: str | None) -> nn.Module:
    if name is None:
        return nn.Identity()
    try:
        return ACTIVATIONS[name](inplace=True)
    except KeyError as exc:
        raise ConfigError(
            f"activation {name!r} is not supported; expected one of {sorted(ACTIVATIONS)}"
        ) from exc


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) + BatchNorm2d + activation; ``act=None`` leaves the output linear."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 3,
        stride: int = 1,
        groups: int = 1,
        act: str | None = "relu",
    ) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
            _activation(act),
        )


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise (maybe strided), linear 1x1 project.

    The residual Add exists only when the block keeps resolution and width (decided at
    construction, so the traced graph is static).
    """

    def __init__(
        self, in_ch: int, out_ch: int, stride: int, expand: int, act: str = "relu6"
    ) -> None:
        super().__init__()
        hidden = in_ch * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNAct(in_ch, hidden, 1, act=act))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act=act),
            ConvBNAct(hidden, out_ch, 1, act=None),
        ]
        self.body = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.use_residual else out


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convolutions) with a 1x1 projection shortcut when needed."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, act: str = "relu") -> None:
        super().__init__()
        self.conv1 = ConvBNAct(in_ch, out_ch, 3, stride, act=act)
        self.conv2 = ConvBNAct(out_ch, out_ch, 3, 1, act=None)
        self.shortcut: nn.Module = (
            ConvBNAct(in_ch, out_ch, 1, stride, act=None)
            if stride != 1 or in_ch != out_ch
            else nn.Identity()
        )
        self.act = _activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class SeparableConv(nn.Sequential):
    """Depthwise 3x3 + pointwise 1x1, each with BatchNorm and activation (FastDepth's decoder)."""

    def __init__(self, in_ch: int, out_ch: int, act: str = "relu") -> None:
        super().__init__(
            ConvBNAct(in_ch, in_ch, 3, groups=in_ch, act=act),
            ConvBNAct(in_ch, out_ch, 1, act=act),
        )


class Upsample(nn.Module):
    """Resize by a fixed integer factor (nearest, or bilinear with align_corners=False).

    A constant scale factor exports as one ONNX Resize with constant scales, which TensorRT
    builds without shape arithmetic.
    """

    def __init__(self, factor: int = 2, mode: str = "nearest") -> None:
        super().__init__()
        if mode not in ("nearest", "bilinear"):
            raise ConfigError(
                f"upsampling mode {mode!r} is not supported; use nearest or bilinear"
            )
        self.factor = float(factor)
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "nearest":
            return F.interpolate(x, scale_factor=self.factor, mode="nearest")
        return F.interpolate(x, scale_factor=self.factor, mode="bilinear", align_corners=False)


class DepthHead(nn.Module):
    """Logits -> metric depth bounded to [min_depth_m, max_depth_m], uniform in log depth.

    depth = exp(log(min) + sigmoid(x) * (log(max) - log(min))). Bounded by construction (no
    negative or infinite depth whatever the weights), and a unit step of the logit is the same
    relative depth change near and far, matching the log-space losses.
    """

    def __init__(self, min_depth_m: float, max_depth_m: float) -> None:
        super().__init__()
        if not (0 < min_depth_m < max_depth_m and math.isfinite(max_depth_m)):
            raise ConfigError(
                f"depth head needs 0 < min_depth_m < max_depth_m < inf, got {min_depth_m!r}, "
                f"{max_depth_m!r}"
            )
        self.min_depth_m = float(min_depth_m)
        self.max_depth_m = float(max_depth_m)
        self.log_min = math.log(min_depth_m)
        self.log_range = math.log(max_depth_m) - math.log(min_depth_m)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.log_min + torch.sigmoid(logits) * self.log_range)
