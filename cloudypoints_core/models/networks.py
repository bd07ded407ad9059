"""Encoder-decoder depth networks: a real-time MobileNetV2 U-Net and a larger ResNet U-Net.

Both take (B, 3, H, W) normalised RGB with H and W multiples of 32 and return (B, 1, H, W) metric
depth in metres for the canonical camera they were trained with, bounded by a log-space sigmoid
head. Cost (multiply-accumulates counted as FLOPs, as most papers report; see
:func:`cloudypoints_core.models.count_flops`) with the default configurations:

=================  ======  =============  =============  =============
network            params  GFLOPs 320x160  GFLOPs 384x192  GFLOPs 512x256
=================  ======  =============  =============  =============
mobile_unet         1.88M  0.31           0.45           0.80
mobile_unet (0.5)   0.50M  0.10           0.14           0.25
resnet_unet        13.16M  2.58           3.71           6.60
resnet_unet (slim)  0.59M  0.37           0.53           0.95
=================  ======  =============  =============  =============

(``mobile_unet (0.5)`` is ``width_mult=0.5``; ``resnet_unet (slim)`` is ``widths=(32, 48, 64,
96)``, ``blocks=(1, 1, 2, 1)``, ``decoder_channels=(96, 64, 48, 32, 16)``, the shipped default
model's configuration.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from cloudypoints_core._optional import require
from cloudypoints_core.errors import ConfigError
from cloudypoints_core.models.layers import (
    BasicBlock,
    ConvBNAct,
    DepthHead,
    InvertedResidual,
    SeparableConv,
    Upsample,
    make_divisible,
)

# The static branch gives mypy torch's real types; at run time a missing torch names this feature.
if TYPE_CHECKING:
    import torch
    from torch import nn
else:
    torch = require("torch", "the depth networks")
    nn = torch.nn

__all__ = ["MobileUNet", "ResUNet"]

#: MobileNetV2's encoder: (expansion, channels, repeats, first stride) per group of blocks.
_MBV2_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
#: Index of the group after which each feature map (strides 2, 4, 8, 16, 32) is taken.
_MBV2_TAPS = (0, 1, 2, 4, 6)


def _check_channels(name: str, values: Sequence[int], n: int) -> tuple[int, ...]:
    out = tuple(int(v) for v in values)
    if len(out) != n or any(v <= 0 for v in out):
        raise ConfigError(f"{name} needs {n} positive channel counts, got {list(values)!r}")
    return out


class _UNetDecoder(nn.Module):
    """Coarse-to-fine decoder: refine, upsample x2, concatenate the skip; logits at stride 2.

    Refining before upsampling keeps the expensive convolutions at the coarser resolution; the
    final logits are upsampled bilinearly to the input size (cheap, and depth is smooth at that
    scale) before the bounded head.
    """

    def __init__(
        self,
        skip_channels: Sequence[int],
        decoder_channels: Sequence[int],
        block: str,
        upsample: str,
        act: str,
    ) -> None:
        super().__init__()
        skips = list(skip_channels)  # fine to coarse: strides 2, 4, 8, 16, 32
        dec = list(decoder_channels)  # coarse to fine
        self.refine = nn.ModuleList()
        in_ch = skips[-1]
        for i, out_ch in enumerate(dec[:-1]):
            self.refine.append(self._block(block, in_ch, out_ch, act))
            in_ch = out_ch + skips[-2 - i]
        self.last = self._block(block, in_ch, dec[-1], act)
        self.logits = nn.Conv2d(dec[-1], 1, 3, padding=1)
        self.up = Upsample(2, upsample)
        self.up_logits = Upsample(2, "bilinear")

    @staticmethod
    def _block(kind: str, in_ch: int, out_ch: int, act: str) -> nn.Module:
        if kind == "separable":
            return SeparableConv(in_ch, out_ch, act=act)
        return ConvBNAct(in_ch, out_ch, 3, act=act)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        for i, refine in enumerate(self.refine):
            x = torch.cat([self.up(refine(x)), feats[-2 - i]], dim=1)
        return self.up_logits(self.logits(self.last(x)))


class MobileUNet(nn.Module):
    """Real-time network: MobileNetV2 encoder (width multiplier) + FastDepth-style U-Net decoder.

    Decoder blocks are depthwise-separable (3x3 depthwise + 1x1) with nearest-neighbour
    upsampling and concatenated skips at strides 16, 8, 4 and 2. The classifier's 1280-channel
    convolution of MobileNetV2 is dropped: it adds parameters, not depth cues.
    """

    def __init__(
        self,
        width_mult: float = 1.0,
        decoder_channels: Sequence[int] = (128, 64, 32, 24, 16),
        min_depth_m: float = 0.5,
        max_depth_m: float = 100.0,
        act: str = "relu6",
        upsample: str = "nearest",
    ) -> None:
        super().__init__()
        if not 0.1 <= width_mult <= 4.0:
            raise ConfigError(f"width_mult must be in [0.1, 4], got {width_mult!r}")
        dec = _check_channels("decoder_channels", decoder_channels, 5)
        # The decoder narrows with the encoder, but never below half width: its full-resolution
        # stages decide edge sharpness, and they are cheap next to the encoder.
        dec = tuple(make_divisible(c * min(1.0, max(width_mult, 0.5)), 8) for c in dec)
        stem_ch = make_divisible(32 * width_mult)
        self.stem = ConvBNAct(3, stem_ch, 3, 2, act=act)
        groups: list[nn.Module] = []
        in_ch = stem_ch
        skip_channels: list[int] = []
        for gi, (expand, ch, repeats, stride) in enumerate(_MBV2_SETTINGS):
            out_ch = make_divisible(ch * width_mult)
            blocks = []
            for r in range(repeats):
                first_stride = stride if r == 0 else 1
                blocks.append(InvertedResidual(in_ch, out_ch, first_stride, expand, act))
                in_ch = out_ch
            groups.append(nn.Sequential(*blocks))
            if gi in _MBV2_TAPS:
                skip_channels.append(out_ch)
        self.groups = nn.ModuleList(groups)
        self.decoder = _UNetDecoder(skip_channels, dec, "separable", upsample, "relu")
        self.head = DepthHead(min_depth_m, max_depth_m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        feats = []
        for gi, group in enumerate(self.groups):
            x = group(x)
            if gi in _MBV2_TAPS:
                feats.append(x)
        return self.head(self.decoder(feats))


class ResUNet(nn.Module):
    """Larger, more accurate network: ResNet-18-style encoder (basic blocks) + 3x3 U-Net decoder.

    ``blocks`` sets the depth per stage ((2, 2, 2, 2) is ResNet-18's layout, (3, 4, 6, 3)
    ResNet-34's) and ``widths`` the channels per stage; the decoder uses full 3x3 convolutions
    and bilinear upsampling, which resolve thin structures (poles, kerbs) better than the
    separable decoder.
    """

    def __init__(
        self,
        widths: Sequence[int] = (64, 128, 256, 512),
        blocks: Sequence[int] = (2, 2, 2, 2),
        decoder_channels: Sequence[int] = (256, 128, 64, 48, 32),
        min_depth_m: float = 0.5,
        max_depth_m: float = 100.0,
        act: str = "relu",
        upsample: str = "bilinear",
    ) -> None:
        super().__init__()
        widths_t = _check_channels("widths", widths, 4)
        blocks_t = _check_channels("blocks", blocks, 4)
        dec = _check_channels("decoder_channels", decoder_channels, 5)
        stem_ch = widths_t[0] // 2
        self.stem = nn.Sequential(
            ConvBNAct(3, stem_ch, 3, 2, act=act), ConvBNAct(stem_ch, stem_ch, 3, 1, act=act)
        )
        stages: list[nn.Module] = []
        in_ch = stem_ch
        for width, repeats in zip(widths_t, blocks_t, strict=True):
            layers = []
            for r in range(repeats):
                layers.append(BasicBlock(in_ch, width, 2 if r == 0 else 1, act))
                in_ch = width
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.decoder = _UNetDecoder((stem_ch, *widths_t), dec, "conv", upsample, act)
        self.head = DepthHead(min_depth_m, max_depth_m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        feats = [x]
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return self.head(self.decoder(feats))
