"""Depth networks by name: ``create_model(name, **config)``, ``list_models()`` and a FLOP counter.

Every registered network maps (B, 3, H, W) normalised RGB (H, W multiples of its registered
``input_multiple``: 32 for the U-Nets, 14 for ViTs) to (B, 1, H, W) depth and uses only ops that
ONNX opset 17 and TensorRT 10 handle well. Registered networks (cost tables in
:mod:`cloudypoints_core.models.networks`):

- ``mobile_unet``: MobileNetV2 encoder + FastDepth-style separable decoder, the fewest FLOPs
  (0.80 GFLOPs at 512x256; 0.14 GFLOPs at 384x192 with ``width_mult=0.5``).
- ``resnet_unet``: ResNet-style encoder + 3x3 U-Net decoder; its default (ResNet-18 layout, 6.6
  GFLOPs at 512x256) is the larger, more accurate network for a GPU or a Jetson with TensorRT,
  and a slim configuration (0.53 GFLOPs at 384x192) is the shipped default model: dense
  convolutions train faster per step on a CPU than depthwise ones.

- ``depth_anything_v2``: Depth Anything V2 (:mod:`cloudypoints_core.models.depth_anything_v2`),
  a DINOv2 ViT-S/B/L encoder and a DPT head, relative inverse depth or metric depth
  (``sigmoid * max_depth``); loads the official checkpoints. Small: 24.8 M parameters.
- ``midas_small``: MiDaS v2.1 small (:mod:`cloudypoints_core.models.midas_small`), an
  EfficientNet-Lite3 encoder and a RefineNet-style decoder, non-negative relative inverse depth
  (scale and shift unknown); the released ``midas_v21_small_256.pt`` key layout, 21.3 M parameters.

torch is imported lazily (on the first ``create_model`` or ``count_flops``), so importing this
package is cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cloudypoints_core.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = [
    "ModelInfo",
    "count_flops",
    "create_model",
    "list_models",
    "model_info",
    "register_model",
]


@dataclass(frozen=True)
class ModelInfo:
    """A registry entry: the import path of the network class and a one-line description."""

    name: str
    target: str  # "module:Class"
    description: str
    #: Input height and width must be multiples of this (32: five stride-2 stages; 14: ViT patch).
    input_multiple: int = 32

    def load_class(self) -> Callable[..., Any]:
        import importlib

        module, _, cls = self.target.partition(":")
        return getattr(importlib.import_module(module), cls)


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(name: str, target: str, description: str, input_multiple: int = 32) -> None:
    """Register the class at ``target`` ("module:Class") under ``name`` (replacing any entry)."""
    if not name or ":" not in target:
        raise ConfigError(
            f"register_model needs a name and a 'module:Class' target, got {target!r}"
        )
    if input_multiple < 1:
        raise ConfigError(f"input_multiple must be >= 1, got {input_multiple}")
    _REGISTRY[name] = ModelInfo(name, target, description, int(input_multiple))


def list_models() -> list[str]:
    """Names of the registered networks, sorted."""
    return sorted(_REGISTRY)


def model_info(name: str) -> ModelInfo:
    """The registry entry for ``name``; ConfigError naming the known networks otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError as exc:
        raise ConfigError(f"unknown network {name!r}; registered: {list_models()}") from exc


def create_model(name: str, **config: Any) -> torch.nn.Module:
    """A new (randomly initialised) network ``name`` built with keyword ``config``."""
    cls = model_info(name).load_class()
    try:
        return cls(**config)
    except TypeError as exc:
        raise ConfigError(f"bad configuration for network {name!r}: {exc}") from exc


def count_flops(
    model: torch.nn.Module, input_height: int, input_width: int, batch: int = 1
) -> dict[str, float]:
    """Multiply-accumulates of Conv2d, ConvTranspose2d and Linear layers, and parameters.

    A network with other multiply-heavy products (attention's token-by-token matrices) adds
    them through a ``count_extra_macs(height, width, batch) -> int`` method.

    Returns ``{"gmacs", "gflops", "params_m"}`` where ``gflops`` equals ``gmacs`` (one MAC
    counted as one FLOP, the convention of MobileNet, FastDepth and most depth papers;
    element-wise ops, BatchNorm and resizes are ignored: they are a few percent at most and
    BatchNorm is folded into the convolutions on export).
    """
    import torch

    macs = 0

    def conv_hook(module: torch.nn.Conv2d, _inp: Any, out: torch.Tensor) -> None:
        nonlocal macs
        kh, kw = module.kernel_size
        per_output = (module.in_channels // module.groups) * kh * kw
        macs += int(out.numel()) * per_output

    def linear_hook(module: torch.nn.Linear, _inp: Any, out: torch.Tensor) -> None:
        nonlocal macs
        macs += int(out.numel()) * int(module.in_features)

    def deconv_hook(module: torch.nn.ConvTranspose2d, inp: Any, _out: torch.Tensor) -> None:
        # Every input pixel scatters in_channels x kernel taps into out_channels / groups.
        nonlocal macs
        kh, kw = module.kernel_size
        per_input = (module.out_channels // module.groups) * kh * kw
        macs += int(inp[0].numel()) * per_input

    handles = []
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, torch.nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
        elif isinstance(module, torch.nn.ConvTranspose2d):
            handles.append(module.register_forward_hook(deconv_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(batch, 3, input_height, input_width))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    # Networks with products of two activations (attention) count those themselves.
    extra = getattr(model, "count_extra_macs", None)
    if callable(extra):
        macs += int(extra(input_height, input_width, batch))
    params = sum(p.numel() for p in model.parameters())
    return {"gmacs": macs / 1e9, "gflops": macs / 1e9, "params_m": params / 1e6}


register_model(
    "mobile_unet",
    "cloudypoints_core.models.networks:MobileUNet",
    "MobileNetV2 encoder + separable U-Net decoder; 0.80 GFLOPs at 512x256 (width_mult=1)",
)
register_model(
    "resnet_unet",
    "cloudypoints_core.models.networks:ResUNet",
    "ResNet-18-style encoder + 3x3 U-Net decoder; 6.6 GFLOPs at 512x256",
)
register_model(
    "depth_anything_v2",
    "cloudypoints_core.models.depth_anything_v2:DepthAnythingV2",
    "Depth Anything V2 (DINOv2 ViT-S/B/L + DPT head; relative or metric); official checkpoints",
    input_multiple=14,
)
register_model(
    "midas_small",
    "cloudypoints_core.models.midas_small:MidasNetSmall",
    "MiDaS v2.1 small (EfficientNet-Lite3 + RefineNet decoder; relative inverse depth); "
    "official checkpoint layout",
)
