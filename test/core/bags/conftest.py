"""Fixtures of the bag tests: SynthCity and Cityscapes-layout bags, a tiny model package."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_CORE_TESTS = Path(__file__).resolve().parents[1]
# This folder's helpers and those of the data and inference tests (plain modules, no package
# __init__; "conftest" itself is a name every test folder uses, so nothing imports from it).
for folder in (_CORE_TESTS / "bags", _CORE_TESTS / "data", _CORE_TESTS / "inference"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from bag_helpers import SYNTH_FRAMES, SYNTH_H, SYNTH_SEED, SYNTH_W  # noqa: E402


@pytest.fixture(scope="session")
def synth_frames() -> list:
    """The SynthCity frames the synth bags hold (rendered independently of the writer)."""
    from cloudypoints_core.data.synthcity import render_sequence

    return list(render_sequence(SYNTH_SEED, SYNTH_FRAMES, SYNTH_W, SYNTH_H))


@pytest.fixture(scope="session")
def synth_bags(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """SynthCity bags by (storage, image_format); treat as read-only."""
    from cloudypoints_core.bags.writer import write_synthcity_bag

    root = tmp_path_factory.mktemp("synth_bags")
    bags = {}
    for storage in ("mcap", "sqlite3"):
        for fmt in ("raw", "png", "jpeg"):
            bags[(storage, fmt)] = write_synthcity_bag(
                root / f"synth_{storage}_{fmt}",
                seed=SYNTH_SEED,
                n_frames=SYNTH_FRAMES,
                width=SYNTH_W,
                height=SYNTH_H,
                storage=storage,
                image_format=fmt,
                progress=False,
            )
    return bags


@pytest.fixture(scope="session")
def cityscapes_tree(tmp_path_factory: pytest.TempPathFactory):
    """A Cityscapes-layout tree: val/frankfurt and val/lindau with 6-frame sequences 0 and 1."""
    from cityscapes_fixture import write_cityscapes_fixture

    return write_cityscapes_fixture(
        tmp_path_factory.mktemp("cityscapes"),
        width=128,
        height=64,
        layout={"val": ("frankfurt", "lindau")},
        sequence_splits=("val",),
        snippet_length=6,
    )


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny metric model package (64x32 input) from the inference tests' helper."""
    from inference_fixtures import make_tiny_package

    return make_tiny_package(tmp_path_factory.mktemp("tiny_model"))
