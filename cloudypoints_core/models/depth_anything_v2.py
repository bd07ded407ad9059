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

:func:`deterministic_state_dict` fills any network with weights computed from each parameter's
name and shape (the parity fixtures and tests use it; see its docstring for the rule).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudypoints_core._optional import require
from cloudypoints_core.errors import ConfigError, ModelError
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

__all__ = [
    "DA2_ENCODERS",
    "HEADS",
    "DepthAnythingV2",
    "deterministic_state_dict",
    "deterministic_tensor",
    "load_checkpoint_state",
]

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
        # Sizes as Python ints from the fixed grid: the traced graph gets constant Resize sizes.
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

    @property
    def input_multiple(self) -> int:
        """Input height and width must be multiples of this (the patch size)."""
        return PATCH_SIZE

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters of the pre-trained encoder (for a learning-rate multiplier or freezing)."""
        return list(self.pretrained.parameters())

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


# ------------------------------------------------------------------------ checkpoint loading
def load_checkpoint_state(path: str | Path) -> dict[str, Any]:
    """The state dict in an official ``.pth`` file (``weights_only=True``), tensors on the CPU.

    Accepts a bare state dict (the released files) or a training checkpoint holding it under
    ``model``. ModelError when the file is missing, unreadable or holds something else.
    """
    p = Path(path)
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise ModelError(f"weights file {p} does not exist") from exc
    except Exception as exc:  # pickle / zip errors of corrupt or non-tensor files
        raise ModelError(
            f"weights file {p} cannot be read as a PyTorch state dict: {exc}"
        ) from exc
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"weights file {p} does not hold a state dict of tensors")
    return {str(k): v for k, v in obj.items()}


def load_strict(model: nn.Module, state: Mapping[str, Any], source: str) -> None:
    """``load_state_dict(strict=True)`` with a ModelError listing missing / unexpected keys.

    Shapes are compared first so a checkpoint of another encoder size says which keys differ.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(
        f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})"
        for k in set(own) & set(state)
        if tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or wrong_shape:

        def _head(items: list[str]) -> str:
            shown = ", ".join(items[:8])
            return shown + (f", ... ({len(items)} in all)" if len(items) > 8 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {_head(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_head(unexpected)}")
        if wrong_shape:
            parts.append(f"wrong shapes: {_head(wrong_shape)}")
        raise ModelError(
            f"{source} does not fit {type(model).__name__} "
            f"({_describe(model)}): " + "; ".join(parts)
        )
    model.load_state_dict(dict(state), strict=True)


def _describe(model: nn.Module) -> str:
    if isinstance(model, DepthAnythingV2):
        return f"encoder={model.encoder}, head={model.head}"
    return "this architecture"


# ------------------------------------------------------------------- deterministic weights
def deterministic_tensor(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """A float32 tensor computed from a parameter's ``name`` and ``shape`` only.

    The rule (documented beside the parity fixture, recomputable by any implementation):
    seed = first 8 bytes of SHA-256(name) as a little-endian integer, masked to 63 bits;
    u = 2 * torch.rand(shape, generator=torch.Generator().manual_seed(seed)) - 1 (float32,
    uniform in [-1, 1)); then by name:

    - ends with ``pos_embed``, ``cls_token`` or ``mask_token``: 0.02 * u
    - ends with ``.gamma`` (layer scale): 0.1 + 0.05 * u
    - 1-D ``...norm...weight`` (LayerNorm gains): 1 + 0.1 * u
    - other 1-D (biases): 0.02 * u
    - >= 2-D (Linear / Conv weights): u * sqrt(3 / fan), fan = numel / shape[0] (unit-variance
      outputs for unit-variance inputs, so deep stacks stay numerically sane)
    """
    seed = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")
    generator = torch.Generator().manual_seed(seed & 0x7FFF_FFFF_FFFF_FFFF)
    u = torch.rand(shape, generator=generator, dtype=torch.float32) * 2.0 - 1.0
    if name.endswith(("pos_embed", "cls_token", "mask_token")):
        return 0.02 * u
    if name.endswith(".gamma"):
        return 0.1 + 0.05 * u
    if len(shape) <= 1:
        if "norm" in name and name.endswith(".weight"):
            return 1.0 + 0.1 * u
        return 0.02 * u
    fan = max(1, math.prod(shape) // shape[0])
    return u * math.sqrt(3.0 / fan)


def deterministic_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state dict with every float entry replaced by :func:`deterministic_tensor`.

    Integer buffers (BatchNorm step counters) are kept. Load the result with ``strict=True``.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            out[key] = deterministic_tensor(key, tuple(value.shape)).to(value.dtype)
        else:
            out[key] = value.detach().clone()
    return out
