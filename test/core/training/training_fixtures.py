"""A tiny, instant data set for trainer tests: a ground plane with sky, registered as ``toy``.

Samples follow the documented schema (rgb uint8, depth_m float32 with inf for sky, intrinsics,
far_mask); depth is the exact z-depth of a camera 1.5 m above a flat ground, so the task is
learnable from the image rows and the colours (near ground is darker).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cloudypoints_core.geometry import Intrinsics
from cloudypoints_core.training.config import DataConfig, TrainingConfig
from cloudypoints_core.training.data import register_dataset


def toy_sample(k: int, width: int = 96, height: int = 48, fx: float = 60.0) -> dict[str, Any]:
    rng = np.random.default_rng(k)
    cy = height / 2 - 0.5 + rng.uniform(-3, 3)
    intr = Intrinsics(fx, fx, width / 2 - 0.5 + rng.uniform(-2, 2), cy, width, height)
    v = np.arange(height, dtype=np.float32)[:, None]
    below = v - cy
    with np.errstate(divide="ignore"):
        depth_col = np.where(below > 0.5, 1.5 * fx / np.maximum(below, 1e-6), np.inf)
    depth = np.repeat(depth_col, width, axis=1).astype(np.float32)
    shade = np.clip(255 - np.where(np.isfinite(depth), 120 + 2 * np.minimum(depth, 60), 0), 0, 255)
    rgb = np.stack([shade, shade * 0.9, np.where(np.isfinite(depth), shade * 0.8, 230)], -1)
    rgb = (rgb + rng.normal(0, 6, rgb.shape)).clip(0, 255).astype(np.uint8)
    return {
        "rgb": rgb,
        "depth_m": depth,
        "intrinsics": intr,
        "far_mask": np.isposinf(depth),
        "seed": k,
        "index": 0,
    }


class ToyDataset:
    def __init__(self, start: int, count: int, width: int, height: int) -> None:
        self.start, self.count, self.width, self.height = start, count, width, height

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, k: int) -> dict[str, Any]:
        if not 0 <= k < self.count:
            raise IndexError(k)
        return toy_sample(self.start + k, self.width, self.height)


def toy_dataset(
    options: dict[str, Any], *, split: str, data: DataConfig, cache_dir: Path
) -> ToyDataset:
    return ToyDataset(
        int(options.get("start", 0)),
        int(options.get("count", 16)),
        int(options.get("width", 96)),
        int(options.get("height", 48)),
    )


register_dataset("toy", "training_fixtures:toy_dataset")


def toy_config(**sections: dict[str, Any]) -> TrainingConfig:
    """A config of the ``toy`` set at 64x32 input, a very small network, CPU, no workers."""
    base: dict[str, dict[str, Any]] = {
        "data": {
            "dataset": "toy",
            "input_width": 64,
            "input_height": 32,
            "train": {"start": 0, "count": 16},
            "val": {"start": 500, "count": 4},
            "num_workers": 0,
        },
        "model": {
            "name": "toy-net",
            "architecture": "mobile_unet",
            "arch_config": {"width_mult": 0.35, "min_depth_m": 0.5, "max_depth_m": 100.0},
        },
        "optim": {"lr": 0.003, "warmup_frac": 0.1},
        "train": {"epochs": 2, "batch_size": 4, "seed": 7, "device": "cpu", "val_batch_size": 4},
        "tracking": {"enabled": False},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return TrainingConfig.from_dict(base, source="toy")
