"""MiDaS v2.1 small ("MidasNet_small"): EfficientNet-Lite3 encoder, RefineNet-style decoder.

Written from the MiDaS paper (Ranftl et al., TPAMI 2022) and the layer layout of the official
repository (isl-org/MiDaS, ``midas/midas_net_custom.py`` and ``midas/blocks.py`` at commit
4545977; encoder ``tf_efficientnet_lite3`` of rwightman/gen-efficientnet-pytorch at 771ce08),
so that ``load_state_dict(strict=True)`` takes the released ``midas_v21_small_256.pt`` under its
own key names (``pretrained.layer1..4`` the encoder, ``scratch.*`` the decoder). The released
configuration: ``features=64``, ``expand=True`` (decoder widths 64, 128, 256, 512),
``non_negative=True`` (ReLU output), 21.3 M parameters, 256x256 input.

Encoder (EfficientNet-Lite3: width x1.2, depth x1.4, first and last stage not deepened, ReLU6,
no squeeze-and-excitation, BatchNorm eps 1e-3, TensorFlow "SAME" padding, which is asymmetric
for the stride-2 convolutions): a stride-2 stem of 32 channels, then stages of depthwise-separable
and inverted-residual blocks with outputs 24, 32, 48, 96, 136, 232, 384. MiDaS taps it at strides
4, 8, 16 and 32 (32, 48, 136 and 384 channels). Decoder: a 3x3 convolution per tap to 64, 128,
256, 512 channels, four fusion blocks from coarse to fine (residual convolution units, x2
bilinear upsampling with aligned corners, a 1x1 convolution halving the width), then 3x3
convolution to 32, x2 bilinear upsampling (corners not aligned), 3x3 convolution, ReLU, 1x1 to
one channel, ReLU: relative inverse depth at the input resolution.

Input: (B, 3, H, W) ImageNet-normalised RGB, H and W multiples of 32. Output (B, 1, H, W); the
official network squeezes the channel axis, (B, H, W). Padding amounts are Python ints computed
from the input shape, so a traced ONNX graph has constant shapes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cloudypoints_core._optional import require
from cloudypoints_core.errors import ConfigError, InputError

# MiDaS's refinement unit is DPT's (the same module and parameter names in both repositories).
from cloudypoints_core.models.depth_anything_v2 import ResidualConvUnit

# The static branch gives mypy torch's real types; at run time a missing torch names this feature.
if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.nn import functional as F
else:
    torch = require("torch", "the MiDaS v2.1 small network")
    nn = torch.nn
    F = torch.nn.functional

__all__ = ["LITE3_STAGES", "MidasNetSmall"]

#: EfficientNet-Lite3 stages after scaling (width x1.2 rounded to multiples of 8, depth x1.4
#: rounded up, first and last stage kept at one block): (block type, blocks, kernel, stride,
#: expansion, output channels). "ds" = depthwise-separable, "ir" = inverted residual.
LITE3_STAGES: tuple[tuple[str, int, int, int, int, int], ...] = (
    ("ds", 1, 3, 1, 1, 24),
    ("ir", 3, 3, 2, 6, 32),
    ("ir", 3, 5, 2, 6, 48),
    ("ir", 5, 3, 2, 6, 96),
    ("ir", 5, 5, 1, 6, 136),
    ("ir", 6, 5, 2, 6, 232),
    ("ir", 1, 3, 1, 6, 384),
)
#: The stem's width (fixed, not scaled, in the Lite variants).
STEM_CHANNELS = 32
#: Encoder stages per MiDaS tap (``layer1`` also holds the stem): strides 4, 8, 16, 32.
TAP_STAGES = ((0, 1), (2,), (3, 4), (5, 6))
#: TensorFlow's BatchNorm epsilon, used by the ``tf_`` EfficientNet ports.
BN_EPS = 1e-3


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (before, after) of one axis: the output has ceil(size/stride)
    samples; the odd pixel goes after (right/bottom)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """Bias-free convolution with TensorFlow "SAME" padding (symmetric for stride 1, padded in
    ``forward`` from the input's size for stride 2, as the TensorFlow-trained weights expect)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1):
        static = stride == 1
        super().__init__(
            in_ch,
            out_ch,
            kernel,
            stride=stride,
            padding=kernel // 2 if static else 0,
            groups=groups,
            bias=False,
        )
        self._dynamic = not static

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._dynamic:
            top, bottom = _same_pad(int(x.shape[-2]), self.kernel_size[0], self.stride[0])
            left, right = _same_pad(int(x.shape[-1]), self.kernel_size[1], self.stride[1])
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class DepthwiseSeparable(nn.Module):
    """Depthwise conv, BN, ReLU6, pointwise conv, BN (no activation); residual when the shape
    is kept."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.residual = stride == 1 and in_ch == out_ch
        self.conv_dw = SameConv2d(in_ch, in_ch, kernel, stride, groups=in_ch)
        self.bn1 = _bn(in_ch)
        self.conv_pw = SameConv2d(in_ch, out_ch, 1)
        self.bn2 = _bn(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv_pw(F.relu6(self.bn1(self.conv_dw(x)))))
        return out + x if self.residual else out


class InvertedResidual(nn.Module):
    """Pointwise expansion, depthwise conv (carries the stride), linear pointwise projection,
    each followed by BN (ReLU6 after the first two); residual when the shape is kept."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expansion: int):
        super().__init__()
        mid = in_ch * expansion  # a multiple of 8 already: no rounding needed
        self.residual = stride == 1 and in_ch == out_ch
        self.conv_pw = SameConv2d(in_ch, mid, 1)
        self.bn1 = _bn(mid)
        self.conv_dw = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self.bn2 = _bn(mid)
        self.conv_pwl = SameConv2d(mid, out_ch, 1)
        self.bn3 = _bn(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu6(self.bn1(self.conv_pw(x)))
        out = F.relu6(self.bn2(self.conv_dw(out)))
        out = self.bn3(self.conv_pwl(out))
        return out + x if self.residual else out


class _ReLU6(nn.ReLU6):
    """The stem's activation as a module: it holds a position in ``layer1`` (index 2), so the
    blocks after it keep their checkpoint indices."""


def _lite3_stages() -> list[nn.Sequential]:
    stages = []
    in_ch = STEM_CHANNELS
    for kind, blocks, kernel, stride, expansion, out_ch in LITE3_STAGES:
        stage: list[nn.Module] = []
        for i in range(blocks):
            s = stride if i == 0 else 1  # only a stage's first block changes the resolution
            if kind == "ds":
                stage.append(DepthwiseSeparable(in_ch, out_ch, kernel, s))
            else:
                stage.append(InvertedResidual(in_ch, out_ch, kernel, s, expansion))
            in_ch = out_ch
        stages.append(nn.Sequential(*stage))
    return stages


class _Encoder(nn.Module):
    """EfficientNet-Lite3 cut into MiDaS's four taps (``layer1`` = stem + stages 0-1, ...)."""

    def __init__(self) -> None:
        super().__init__()
        stages = _lite3_stages()
        stem = [SameConv2d(3, STEM_CHANNELS, 3, 2), _bn(STEM_CHANNELS), _ReLU6()]
        self.layer1 = nn.Sequential(*stem, *(stages[i] for i in TAP_STAGES[0]))
        self.layer2 = nn.Sequential(*(stages[i] for i in TAP_STAGES[1]))
        self.layer3 = nn.Sequential(*(stages[i] for i in TAP_STAGES[2]))
        self.layer4 = nn.Sequential(*(stages[i] for i in TAP_STAGES[3]))

    @staticmethod
    def tap_channels() -> tuple[int, int, int, int]:
        """Channels of the four taps (32, 48, 136, 384)."""
        last = [stage[-1] for stage in TAP_STAGES]
        return (
            LITE3_STAGES[last[0]][5],
            LITE3_STAGES[last[1]][5],
            LITE3_STAGES[last[2]][5],
            LITE3_STAGES[last[3]][5],
        )


class FusionBlock(nn.Module):
    """Add the refined skip, refine, upsample x2 (bilinear, aligned corners), 1x1 convolution
    to ``out_features`` (half the width when the decoder expands).

    The coarsest block has no skip; its ``resConfUnit1`` is in the checkpoint but unused.
    """

    def __init__(self, features: int, out_features: int) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, out_features, 1)
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        size = (int(x.shape[-2]) * 2, int(x.shape[-1]) * 2)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class Upsample2x(nn.Module):
    """x2 bilinear upsampling without aligned corners (the output head's, as released)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (int(x.shape[-2]) * 2, int(x.shape[-1]) * 2)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class _Scratch(nn.Module):
    """The decoder under its checkpoint names (``scratch.layerN_rn``, ``refinenetN``,
    ``output_conv``)."""

    def __init__(self, taps: tuple[int, int, int, int], features: int, non_negative: bool):
        super().__init__()
        widths = (features, features * 2, features * 4, features * 8)  # expand=True
        self.layer1_rn = nn.Conv2d(taps[0], widths[0], 3, padding=1, bias=False)
        self.layer2_rn = nn.Conv2d(taps[1], widths[1], 3, padding=1, bias=False)
        self.layer3_rn = nn.Conv2d(taps[2], widths[2], 3, padding=1, bias=False)
        self.layer4_rn = nn.Conv2d(taps[3], widths[3], 3, padding=1, bias=False)
        # Blocks 4..2 halve the width on the way up; block 1 keeps it (not expanded).
        self.refinenet4 = FusionBlock(widths[3], widths[2])
        self.refinenet3 = FusionBlock(widths[2], widths[1])
        self.refinenet2 = FusionBlock(widths[1], widths[0])
        self.refinenet1 = FusionBlock(widths[0], widths[0])
        self.output_conv = nn.Sequential(
            nn.Conv2d(features, features // 2, 3, padding=1),
            Upsample2x(),
            nn.Conv2d(features // 2, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 1, 1),
            nn.ReLU() if non_negative else nn.Identity(),
        )


class MidasNetSmall(nn.Module):
    """MiDaS v2.1 small (module docstring). ``features``: the finest decoder width (64 released);
    ``non_negative``: ReLU on the output (True released).

    ``forward(x)``: (B, 3, H, W) ImageNet-normalised RGB, H and W multiples of 32 -> (B, 1, H, W)
    relative inverse depth (affine-invariant: scale and shift unknown).
    """

    def __init__(self, features: int = 64, non_negative: bool = True) -> None:
        super().__init__()
        if not (isinstance(features, int) and features >= 2 and features % 2 == 0):
            raise ConfigError(f"features must be an even int >= 2, got {features!r}")
        self.features = features
        self.non_negative = bool(non_negative)
        self.pretrained = _Encoder()
        self.scratch = _Scratch(_Encoder.tap_channels(), features, self.non_negative)

    def extra_repr(self) -> str:
        return f"features={self.features}, non_negative={self.non_negative}"

    @property
    def input_multiple(self) -> int:
        """Input height and width must be multiples of this (five stride-2 stages)."""
        return 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = int(x.shape[-2]), int(x.shape[-1])
        if height % 32 or width % 32:
            # The decoder doubles each map's size to meet the next skip: only multiples of 32
            # line up through five stride-2 stages.
            raise InputError(
                f"MiDaS small input must be a multiple of 32 on both sides, got {width}x{height}"
            )
        p, s = self.pretrained, self.scratch
        layer1 = p.layer1(x)
        layer2 = p.layer2(layer1)
        layer3 = p.layer3(layer2)
        layer4 = p.layer4(layer3)
        path = s.refinenet4(s.layer4_rn(layer4))
        path = s.refinenet3(path, s.layer3_rn(layer3))
        path = s.refinenet2(path, s.layer2_rn(layer2))
        path = s.refinenet1(path, s.layer1_rn(layer1))
        out: torch.Tensor = s.output_conv(path)
        return out
