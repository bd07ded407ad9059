"""Shared pytest fixtures for the CloudyPoints test suite (kept small; add fixtures as needed).

Tests skip (``pytest.importorskip``) when an optional third-party library is absent, so the core
tier runs in a partial environment. ``scripts/test.sh`` runs the suite in the full environment it
has just installed from requirements.txt and says so with ``CLOUDYPOINTS_FULL_ENV=1``: then a
requirement that is missing or fails to import is an error at start-up, never a quiet skip.
"""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest

#: Set by scripts/test.sh: every module of requirements.txt must import.
FULL_ENVIRONMENT = os.environ.get("CLOUDYPOINTS_FULL_ENV") == "1"
#: The import names of requirements.txt (mlflow is only looked up: importing it takes seconds).
REQUIRED_MODULES = (
    "torch",
    "numpy",
    "cv2",
    "onnx",
    "onnxruntime",
    "rosbags",
    "yaml",
    "tqdm",
    "matplotlib",
    "rclpy",
    "sensor_msgs",
    "diagnostic_msgs",
)
REQUIRED_PRESENT = ("mlflow", "ruff", "mypy")


def pytest_sessionstart(session: pytest.Session) -> None:
    if not FULL_ENVIRONMENT:
        return
    broken: dict[str, str] = {}
    for name in REQUIRED_MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - every failure is reported below
            broken[name] = f"{type(exc).__name__}: {exc}"
    for name in REQUIRED_PRESENT:
        if importlib.util.find_spec(name) is None:
            broken[name] = "not installed"
    if broken:
        raise pytest.UsageError(
            "CLOUDYPOINTS_FULL_ENV=1 but requirements do not import (their tests would only "
            f"skip): {broken}; re-run scripts/setup_env.sh"
        )


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator so every test run sees the same random data."""
    return np.random.default_rng(12345)
