"""Data sets: the SynthCity generator, the Cityscapes reader and their transforms."""

from __future__ import annotations

from typing import Any

_SYNTHCITY = (
    "SynthCityConfig",
    "SynthCityDataset",
    "SynthFrame",
    "SynthLabel",
    "base_intrinsics",
    "render_frame",
    "render_sequence",
    "write_sequence",
)

__all__ = list(_SYNTHCITY)


def __getattr__(name: str) -> Any:
    # Lazy, so that importing one data set does not pull in (or break on) the others.
    if name in _SYNTHCITY:
        from cloudypoints_core.data import synthcity

        return getattr(synthcity, name)
    raise AttributeError(f"module 'cloudypoints_core.data' has no attribute {name!r}")
