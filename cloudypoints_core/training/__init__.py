"""Training of the depth networks: config, data, losses, the trainer and experiment tracking.

``train(load_config("synthcity_default"))`` trains the shipped default model; the submodules
import torch, this package does not until one of the names below is used.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "TrainingConfig",
    "gradient_matching_loss",
    "load_config",
    "register_dataset",
    "silog_loss",
    "train",
]

_LAZY = {
    "TrainingConfig": "cloudypoints_core.training.config",
    "load_config": "cloudypoints_core.training.config",
    "register_dataset": "cloudypoints_core.training.data",
    "silog_loss": "cloudypoints_core.training.losses",
    "gradient_matching_loss": "cloudypoints_core.training.losses",
    "train": "cloudypoints_core.training.trainer",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
