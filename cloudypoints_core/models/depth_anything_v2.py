"""Depth Anything V2: a DINOv2 encoder + DPT head that loads the official checkpoints as they are.

Written from the papers (Depth Anything V2, Yang et al. 2024; DPT, Ranftl et al. 2021) and the
module layout of the official repository, so ``load_state_dict(strict=True)`` takes the released
``depth_anything_v2_vits.pth`` (and ``_metric_vkitti_vitb.pth``, ...) under their own key names:
``pretrained.*`` is the encoder, ``depth_head.*`` the head. Two heads:

- ``relative``: non-negative relative inverse depth (affine-invariant disparity), ReLU output;
- ``metric``: depth in metres, ``sigmoid * max_depth`` (80 m for the Virtual KITTI 2 outdoor
  checkpoints, 20 m for the Hypersim indoor ones).

The DPT head reads the patch tokens of four encoder blocks, reassembles them into maps at 4x,
2x, 1x and 1/2x the patch grid, fuses them coarse to fine with residual convolution units and
upsamples to the input resolution. Input: (B, 3, H, W) ImageNet-normalised RGB with H and W
multiples of 14; output (B, 1, H, W). Resize sizes are fixed by the input shape, so a traced ONNX
graph has constant shapes; with :meth:`DepthAnythingV2.fix_input_size` the position embedding is
a constant too (no bicubic resize in the graph).

Loading a checkpoint file strictly, with a clear error, and deterministic test weights are in
:mod:`cloudypoints_core.models.weights`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cloudypoints_core._optional import require
from cloudypoints_core.errors import ConfigError
from cloudypoints_core.models.dinov2 import PATCH_SIZE, VIT_CONFIGS, DinoVisionTransformer

# The static branch gives mypy torch's real types; at run time a missing torch names this feature.
if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.nn import functional as F
else:
    torch = require("torch", "the Depth Anything V2 network")
    nn = torch.nn
    F = torch.nn.functional

__all__ = ["DA2_ENCODERS", "HEADS", "DepthAnythingV2"]

HEADS = ("relative", "metric")


@dataclass(frozen=True)
class DA2Encoder:
    """The DPT head's widths for one encoder and the blocks it reads."""

    features: int
    out_channels: tuple[int, int, int, int]
    taps: tuple[int, int, int, int]


#: Head widths and tapped blocks of the released checkpoints (ViT-S/B read blocks 2, 5, 8, 11;
#: ViT-L reads 4, 11, 17, 23: evenly spread intermediate layers, not the last four).
DA2_ENCODERS: dict[str, DA2Encoder] = {
    "vits": DA2Encoder(64, (48, 96, 192, 384), (2, 5, 8, 11)),
    "vitb": DA2Encoder(128, (96, 192, 384, 768), (2, 5, 8, 11)),
    "vitl": DA2Encoder(256, (256, 512, 1024, 1024), (4, 11, 17, 23)),
}


class ResidualConvUnit(nn.Module):
    """x + conv(relu(conv(relu(x)))): DPT's refinement unit (3x3 convolutions with bias)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Not in-place: x is still needed for the skip connection.
        out = self.conv1(F.relu(x))
        return x + self.conv2(F.relu(out))


class FeatureFusionBlock(nn.Module):
    """Add the refined skip, refine, upsample bilinearly (align_corners) and mix with a 1x1 conv.

    The coarsest block has no skip; its ``resConfUnit1`` exists (and is in the checkpoints) but
    is unused, as in the reference network.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1)
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(
        self, x: torch.Tensor, skip: torch.Tensor | None, size: tuple[int, int]
    ) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class _Scratch(nn.Module):
    """Container that gives the head's fusion layers their checkpoint names (``scratch.*``)."""

    def __init__(self, out_channels: tuple[int, ...], features: int, metric: bool) -> None:
        super().__init__()
        self.layer1_rn = nn.Conv2d(out_channels[0], features, 3, padding=1, bias=False)
        self.layer2_rn = nn.Conv2d(out_channels[1], features, 3, padding=1, bias=False)
        self.layer3_rn = nn.Conv2d(out_channels[2], features, 3, padding=1, bias=False)
        self.layer4_rn = nn.Conv2d(out_channels[3], features, 3, padding=1, bias=False)
        self.refinenet1 = FeatureFusionBlock(features)
        self.refinenet2 = FeatureFusionBlock(features)
        self.refinenet3 = FeatureFusionBlock(features)
        self.refinenet4 = FeatureFusionBlock(features)
        self.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
        self.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 1, 1),
            nn.Sigmoid() if metric else nn.ReLU(),
        )


class DPTHead(nn.Module):
    """Reassemble four token maps into a 4-level pyramid, fuse coarse to fine, predict one map."""

    def __init__(
        self, embed_dim: int, features: int, out_channels: tuple[int, ...], metric: bool
    ) -> None:
        super().__init__()
        self.projects = nn.ModuleList(nn.Conv2d(embed_dim, c, 1) for c in out_channels)
        # Strides 14/4, 14/2, 14 and 28 px: transposed convolutions up, a strided one down.
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(out_channels[0], out_channels[0], 4, stride=4),
                nn.ConvTranspose2d(out_channels[1], out_channels[1], 2, stride=2),
                nn.Identity(),
                nn.Conv2d(out_channels[3], out_channels[3], 3, stride=2, padding=1),
            ]
        )
        self.scratch = _Scratch(out_channels, features, metric)

    def forward(self, tokens: list[torch.Tensor], rows: int, cols: int) -> torch.Tensor:
        maps = []
        for i, t in enumerate(tokens):
            x = t.transpose(1, 2).reshape(t.shape[0], t.shape[-1], rows, cols)
            maps.append(self.resize_layers[i](self.projects[i](x)))
        s = self.scratch
        l1, l2, l3 = s.layer1_rn(maps[0]), s.layer2_rn(maps[1]), s.layer3_rn(maps[2])
        l4 = s.layer4_rn(maps[3])
        # Output sizes as Python ints from the patch grid, never read from feature maps at run
        # time: a traced graph holds them as constants.
        size1 = (rows * 4, cols * 4)
        size2 = (rows * 2, cols * 2)
        path = s.refinenet4(l4, None, (rows, cols))
        path = s.refinenet3(path, l3, size2)
        path = s.refinenet2(path, l2, size1)
        path = s.refinenet1(path, l1, (rows * 8, cols * 8))
        out = s.output_conv1(path)
        out = F.interpolate(
            out, size=(rows * PATCH_SIZE, cols * PATCH_SIZE), mode="bilinear", align_corners=True
        )
        return s.output_conv2(out)


class DepthAnythingV2(nn.Module):
    """Depth Anything V2 (``encoder`` vits | vitb | vitl, ``head`` relative | metric).

    ``forward(x)``: (B, 3, H, W) ImageNet-normalised RGB, H and W multiples of 14 ->
    (B, 1, H, W): relative inverse depth >= 0, or metric depth in (0, ``max_depth``) metres.
    ``max_depth`` is used by the metric head only (80 for the outdoor checkpoints).
    """

    def __init__(self, encoder: str = "vits", head: str = "relative", max_depth: float = 80.0):
        super().__init__()
        if encoder not in DA2_ENCODERS:
            raise ConfigError(
                f"Depth Anything V2 encoder {encoder!r} is not supported; expected one of "
                f"{sorted(DA2_ENCODERS)}"
            )
        if head not in HEADS:
            raise ConfigError(f"Depth Anything V2 head {head!r} must be one of {HEADS}")
        if not (math.isfinite(float(max_depth)) and float(max_depth) > 0):
            raise ConfigError(f"max_depth must be a positive number of metres, got {max_depth!r}")
        cfg = DA2_ENCODERS[encoder]
        self.encoder = encoder
        self.head = head
        self.max_depth = float(max_depth)
        self.taps = cfg.taps
        self.pretrained = DinoVisionTransformer(encoder)
        self.depth_head = DPTHead(
            VIT_CONFIGS[encoder].embed_dim, cfg.features, cfg.out_channels, head == "metric"
        )
        # Never used by the forward pass (pre-training's mask token; the coarsest fusion block
        # has no skip input) but present in the checkpoints: frozen, so optimisers and DDP's
        # gradient reduction skip them.
        for p in self._unused_parameters():
            p.requires_grad_(False)

    def _unused_parameters(self) -> list[nn.Parameter]:
        return [
            self.pretrained.mask_token,
            *self.depth_head.scratch.refinenet4.resConfUnit1.parameters(),
        ]

    def extra_repr(self) -> str:
        return f"encoder={self.encoder}, head={self.head}, max_depth={self.max_depth:g}"

    @property
    def input_multiple(self) -> int:
        """Input height and width must be multiples of this (the patch size)."""
        return PATCH_SIZE

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters of the pre-trained encoder (learning-rate multiplier, freezing)."""
        unused = {id(p) for p in self._unused_parameters()}
        return [p for p in self.pretrained.parameters() if id(p) not in unused]

    def fix_input_size(self, height: int | None, width: int | None = None) -> None:
        """Precompute the position embedding for ``height`` x ``width`` inputs (None: undo).

        The export path calls this so the ONNX graph holds the embedding as a constant.
        """
        if height is None or width is None:
            self.pretrained.fix_grid(None)
            return
        rows, cols = self.pretrained.grid_of(height, width)
        self.pretrained.fix_grid(rows, cols)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, cols = self.pretrained.grid_of(int(x.shape[-2]), int(x.shape[-1]))
        features = self.pretrained.get_intermediate_layers(x, self.taps)
        out = self.depth_head([patches for patches, _cls in features], rows, cols)
        if self.head == "metric":
            return out * self.max_depth
        return out

    def count_extra_macs(self, height: int, width: int, batch: int = 1) -> int:
        """Multiply-accumulates of the attention products (a Conv/Linear counter misses them)."""
        return self.pretrained.count_extra_macs(height, width, batch)
