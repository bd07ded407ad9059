"""The DINOv2 vision transformer (ViT-S/B/L with 14-pixel patches) as Depth Anything V2 uses it.

Written from the DINOv2 paper (Oquab et al., 2023) and the layout of Meta's reference model, so
the official checkpoints load under their own parameter names (``patch_embed.proj``,
``blocks.N.attn.qkv``, ``blocks.N.ls1.gamma``, ...). Only what inference and fine-tuning of a
depth network need is here: pre-norm blocks with layer scale, a learned position embedding for a
37x37 grid (518 px) interpolated bicubically to the input grid, and the normalised patch tokens
of chosen intermediate blocks. Masked-image training, register tokens and stochastic depth of
the pre-training recipe are left out; ``mask_token`` is kept only because checkpoints hold it.

The attention is spelled out as MatMul + Softmax (no fused kernel) so that the ONNX graph holds
ops every TensorRT 10 parser accepts and the numbers match the reference implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cloudypoints_core._optional import require
from cloudypoints_core.errors import ConfigError, InputError

# The static branch gives mypy torch's real types; at run time a missing torch names this feature.
if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.nn import functional as F
else:
    torch = require("torch", "the DINOv2 encoder")
    nn = torch.nn
    F = torch.nn.functional

__all__ = ["VIT_CONFIGS", "DinoVisionTransformer", "ViTConfig"]

#: Patch size of every Depth Anything V2 encoder (pixels).
PATCH_SIZE = 14
#: The grid the position embedding was learned on: 518 px / 14 = 37 patches a side.
PRETRAIN_GRID = 37
#: DINOv2 adds this to the target grid before computing the interpolation scale, a guard against
#: floating-point error in the output size inherited from DINO; the checkpoints were trained with
#: it, so it is part of the model.
INTERPOLATE_OFFSET = 0.1
LAYER_NORM_EPS = 1e-6


@dataclass(frozen=True)
class ViTConfig:
    """Width, depth and heads of one ViT size."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0


#: The three encoders Depth Anything V2 released checkpoints for (vitg was never released).
VIT_CONFIGS: dict[str, ViTConfig] = {
    "vits": ViTConfig(embed_dim=384, depth=12, num_heads=6),
    "vitb": ViTConfig(embed_dim=768, depth=12, num_heads=12),
    "vitl": ViTConfig(embed_dim=1024, depth=24, num_heads=16),
}


class PatchEmbed(nn.Module):
    """Non-overlapping 14x14 patches -> tokens: one strided convolution, then (B, N, C)."""

    def __init__(self, embed_dim: int, patch_size: int = PATCH_SIZE, in_chans: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection (the checkpoints' layout)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"embedding width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        # Scaling q before the product (not the logits after) keeps fp16 logits in range.
        weights = torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(out)

    def extra_macs(self, tokens: int, batch: int) -> int:
        """Multiply-accumulates of the two token-by-token products (not nn.Linear layers)."""
        return 2 * batch * self.num_heads * tokens * tokens * self.head_dim


class LayerScale(nn.Module):
    """Per-channel learned residual gain (CaiT); stored as ``gamma`` in the checkpoints."""

    def __init__(self, dim: int, init_value: float = 1.0) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """Linear -> exact GELU -> Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x)))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoVisionTransformer(nn.Module):
    """DINOv2 ViT with a class token and a learned 37x37 position embedding.

    ``get_intermediate_layers(x, indices)`` returns, for each block index, the layer-normed
    patch tokens (B, N, C) and the class token (B, C), the features a DPT head reads. Input
    height and width must be multiples of 14.

    ``fix_grid(rows, cols)`` precomputes the interpolated position embedding for one patch grid
    (a buffer outside the state dict); the forward pass then uses it for that grid, so an ONNX
    export at a fixed size holds a constant instead of a bicubic resize. Call ``fix_grid(None)``
    (or train, which changes the embedding) to go back to interpolating on every call.
    """

    def __init__(self, encoder: str = "vits") -> None:
        super().__init__()
        if encoder not in VIT_CONFIGS:
            raise ConfigError(
                f"unknown DINOv2 encoder {encoder!r}; expected one of {sorted(VIT_CONFIGS)}"
            )
        cfg = VIT_CONFIGS[encoder]
        self.encoder = encoder
        self.embed_dim = cfg.embed_dim
        self.patch_size = PATCH_SIZE
        self.patch_embed = PatchEmbed(cfg.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, PRETRAIN_GRID**2 + 1, cfg.embed_dim))
        # Unused at inference; present in every official checkpoint (masked-image pre-training).
        self.mask_token = nn.Parameter(torch.zeros(1, cfg.embed_dim))
        self.blocks = nn.ModuleList(
            Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=LAYER_NORM_EPS)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self._fixed_grid: tuple[int, int] | None = None
        self.register_buffer("_fixed_pos_embed", torch.zeros(0), persistent=False)

    # ------------------------------------------------------------------ position embedding
    def interpolated_pos_embed(self, rows: int, cols: int) -> torch.Tensor:
        """The (1, 1 + rows * cols, C) position embedding for a rows x cols patch grid.

        Bicubic resampling of the 37x37 grid (no antialiasing), with DINOv2's scale factor
        (grid + 0.1) / 37 per axis; the 37x37 grid itself is returned unchanged.
        """
        if rows == PRETRAIN_GRID and cols == PRETRAIN_GRID:
            return self.pos_embed
        pos = self.pos_embed.float()
        dim = pos.shape[-1]
        grid = pos[:, 1:].reshape(1, PRETRAIN_GRID, PRETRAIN_GRID, dim).permute(0, 3, 1, 2)
        # A scale factor, not an output size: the sampling positions depend on it, and the
        # checkpoints were trained with exactly this mapping.
        scale = (
            (rows + INTERPOLATE_OFFSET) / PRETRAIN_GRID,
            (cols + INTERPOLATE_OFFSET) / PRETRAIN_GRID,
        )
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", align_corners=False)
        if tuple(grid.shape[-2:]) != (rows, cols):
            raise InputError(
                f"position embedding resampled to {tuple(grid.shape[-2:])}, expected "
                f"{(rows, cols)}"
            )
        patches = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, dim)
        return torch.cat((pos[:, :1], patches), dim=1).to(self.pos_embed.dtype)

    def fix_grid(self, rows: int | None, cols: int | None = None) -> None:
        """Precompute the position embedding for a rows x cols grid (None: interpolate live)."""
        if rows is None or cols is None:
            self._fixed_grid = None
            self._fixed_pos_embed = torch.zeros(0, device=self.pos_embed.device)
            return
        with torch.no_grad():
            self._fixed_pos_embed = self.interpolated_pos_embed(rows, cols).detach().clone()
        self._fixed_grid = (rows, cols)

    def _pos_embed_for(self, rows: int, cols: int) -> torch.Tensor:
        if self._fixed_grid == (rows, cols) and not self.training:
            return self._fixed_pos_embed
        return self.interpolated_pos_embed(rows, cols)

    # ------------------------------------------------------------------------------ forward
    def grid_of(self, height: int, width: int) -> tuple[int, int]:
        """Patch rows and columns of an input of ``height`` x ``width`` pixels."""
        if height % self.patch_size or width % self.patch_size or height <= 0 or width <= 0:
            raise InputError(
                f"DINOv2 input must be a positive multiple of {self.patch_size} px in height "
                f"and width, got {height}x{width} (HxW)"
            )
        return height // self.patch_size, width // self.patch_size

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 1 + N, C): class token, patch tokens, position embedding."""
        rows, cols = self.grid_of(int(x.shape[-2]), int(x.shape[-1]))
        patches = self.patch_embed(x)
        cls = self.cls_token.expand(patches.shape[0], -1, -1)
        return torch.cat((cls, patches), dim=1) + self._pos_embed_for(rows, cols)

    def get_intermediate_layers(
        self, x: torch.Tensor, indices: Sequence[int]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """For each block index: (normed patch tokens (B, N, C), normed class token (B, C))."""
        wanted = sorted(set(int(i) for i in indices))
        if not wanted or wanted[0] < 0 or wanted[-1] >= len(self.blocks):
            raise ConfigError(
                f"intermediate block indices {list(indices)} must lie in [0, {len(self.blocks)})"
            )
        h = self.tokens(x)
        taken: dict[int, torch.Tensor] = {}
        # Blocks after the last tapped one cannot change the output: skip them.
        for i, block in enumerate(self.blocks[: wanted[-1] + 1]):
            h = block(h)
            if i in wanted:
                taken[i] = h
        out = []
        for i in indices:
            normed = self.norm(taken[int(i)])
            out.append((normed[:, 1:], normed[:, 0]))
        return out

    def count_extra_macs(self, height: int, width: int, batch: int = 1) -> int:
        """Attention products of one forward pass (the part a Linear/Conv counter misses)."""
        rows, cols = self.grid_of(height, width)
        n = rows * cols + 1
        return sum(
            block.attn.extra_macs(n, batch) for block in self.blocks if isinstance(block, Block)
        )
