"""Network weights from files and from rules: strict checkpoint loading and deterministic weights.

``load_checkpoint_state`` reads a ``.pth`` / ``.pt`` state dict with ``weights_only=True`` (bare,
or nested in a training checkpoint), the one loader for importers, training and the torch backend;
``load_strict`` loads it with ``strict=True`` and, when it does not fit, raises a ModelError that
lists the missing, unexpected and wrongly shaped keys. ``deterministic_state_dict`` fills a
network with weights computed from each entry's name and shape only, a rule any implementation
can recompute: parity tests compare networks this way without shipping real weights.
"""

from __future__ import annotations

import hashlib
import math
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zipfile import BadZipFile

from cloudypoints_core._optional import require
from cloudypoints_core.errors import ModelError

if TYPE_CHECKING:
    import torch
    from torch import nn
else:
    torch = require("torch", "loading network weights")
    nn = torch.nn

__all__ = [
    "CHECKPOINT_STATE_KEYS",
    "deterministic_state_dict",
    "deterministic_tensor",
    "load_checkpoint_state",
    "load_strict",
    "state_dict_mismatch",
]


#: Keys under which a training checkpoint nests its state dict, tried in this order: ours and
#: the official repositories' ("model"), Lightning's and mmcv's ("state_dict").
CHECKPOINT_STATE_KEYS = ("model", "state_dict")

# What torch.load raises for a truncated, corrupt or non-PyTorch file, and what the
# weights_only unpickler raises for pickled code it refuses.
_READ_ERRORS = (RuntimeError, EOFError, ValueError, OSError, pickle.UnpicklingError, BadZipFile)


def _is_tensor_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _describe(obj: object) -> str:
    """The keys found in a file that is not a state dict, for the error message."""
    if not isinstance(obj, Mapping):
        return f"a {type(obj).__name__}, not a dict"
    keys = [str(k) for k in obj]
    shown = ", ".join(repr(k) for k in keys[:12]) + (", ..." if len(keys) > 12 else "")
    return f"keys [{shown}]"


def load_checkpoint_state(path: str | Path) -> dict[str, Any]:
    """The state dict in a ``.pth`` / ``.pt`` file (``weights_only=True``), tensors on the CPU.

    Accepts a bare state dict (the released files, our packages' ``model.pt``) or a training
    checkpoint holding it under one of ``CHECKPOINT_STATE_KEYS``. ModelError when the file is
    missing, unreadable, or holds neither (the message names the keys it found).
    """
    p = Path(path)
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise ModelError(f"weights file {p} does not exist") from exc
    except _READ_ERRORS as exc:
        raise ModelError(
            f"weights file {p} cannot be read: truncated, corrupt or not a PyTorch state dict "
            f"(loaded with weights_only=True): {exc}"
        ) from exc
    if not _is_tensor_dict(obj):
        nested = [
            k
            for k in CHECKPOINT_STATE_KEYS
            if isinstance(obj, Mapping) and _is_tensor_dict(obj.get(k))
        ]
        if not nested:
            raise ModelError(
                f"weights file {p} holds neither a state dict of tensors nor one under "
                f"{' or '.join(repr(k) for k in CHECKPOINT_STATE_KEYS)}: found {_describe(obj)}"
            )
        obj = obj[nested[0]]
    return {str(k): v for k, v in obj.items()}


def state_dict_mismatch(model: Any, state: Mapping[str, Any]) -> list[str]:
    """What keeps ``state`` from loading strictly into ``model``: one phrase per kind (missing
    keys, unexpected keys, wrong shapes), each listing at most 8 keys; empty when it fits.

    Shapes are compared too, so a checkpoint of another encoder size says which keys differ.
    """
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    given = {k: tuple(v.shape) for k, v in state.items()}
    missing = sorted(set(own) - set(given))
    unexpected = sorted(set(given) - set(own))
    wrong_shape = sorted(
        f"{k} {given[k]} (expected {own[k]})" for k in set(own) & set(given) if given[k] != own[k]
    )

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
    return parts


def load_strict(model: nn.Module, state: Mapping[str, Any], source: str) -> None:
    """``load_state_dict(strict=True)`` with a ModelError listing missing / unexpected keys and
    wrong shapes (:func:`state_dict_mismatch`)."""
    parts = state_dict_mismatch(model, state)
    if parts:
        raise ModelError(
            f"{source} does not fit {type(model).__name__}({model.extra_repr()}): "
            + "; ".join(parts)
        )
    model.load_state_dict(dict(state), strict=True)


# ------------------------------------------------------------------- deterministic weights
def deterministic_tensor(name: str, shape: tuple[int, ...], gain: bool = False) -> torch.Tensor:
    """A float32 tensor computed from a parameter's ``name`` and ``shape`` only.

    The rule (documented beside the parity fixture, recomputable by any implementation):
    seed = first 8 bytes of SHA-256(name) as a little-endian integer, masked to 63 bits;
    u = 2 * torch.rand(shape, generator=torch.Generator().manual_seed(seed)) - 1 (float32,
    uniform in [-1, 1)); then by name:

    - ends with ``pos_embed``, ``cls_token`` or ``mask_token``: 0.02 * u
    - ends with ``.gamma`` (layer scale): 0.1 + 0.05 * u
    - 1-D ``...norm...weight`` (LayerNorm gains), any ``gain`` (a normalisation layer's weight
      whose name does not say so, e.g. BatchNorm in ``nn.Sequential``) and ``running_var``
      (BatchNorm variances, which must be positive): 1 + 0.1 * u
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
    if gain or name.endswith("running_var"):
        return 1.0 + 0.1 * u
    if len(shape) <= 1:
        if "norm" in name and name.endswith(".weight"):
            return 1.0 + 0.1 * u
        return 0.02 * u
    fan = max(1, math.prod(shape) // shape[0])
    return u * math.sqrt(3.0 / fan)


def deterministic_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state dict with every float entry replaced by :func:`deterministic_tensor`.

    Integer buffers (BatchNorm step counters) are kept. The weights of normalisation layers
    (BatchNorm, LayerNorm, GroupNorm) get the gain rule whatever their name. Load the result with
    ``strict=True``.
    """
    norm_types = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
    gains = {
        f"{name}.weight" if name else "weight"
        for name, module in model.named_modules()
        if isinstance(module, norm_types)
    }
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            tensor = deterministic_tensor(key, tuple(value.shape), gain=key in gains)
            out[key] = tensor.to(value.dtype)
        else:
            out[key] = value.detach().clone()
    return out
