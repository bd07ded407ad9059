"""Shared pytest fixtures for the CloudyPoints test suite (kept small; add fixtures as needed)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator so every test run sees the same random data."""
    return np.random.default_rng(12345)
