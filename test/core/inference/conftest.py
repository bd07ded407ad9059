"""Fixtures of the inference tests: tiny model packages built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from inference_fixtures import make_tiny_package, tiny_spec

from cloudypoints_core.inference.package import ModelPackage, load_model_package


@pytest.fixture(scope="session")
def tiny_package_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A metric tiny package (64x32 input, train_fx_px 40); treat as read-only."""
    return make_tiny_package(tmp_path_factory.mktemp("tiny_pkg"), tiny_spec())


@pytest.fixture(scope="session")
def tiny_package(tiny_package_dir: Path) -> ModelPackage:
    return load_model_package(tiny_package_dir)
