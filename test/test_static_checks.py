"""Lint, format and type checks run as tests, so a change that breaks them fails the suite."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
#: What ruff lints and formats: the packages, tests, benchmarks, launch files and setup.py.
RUFF_PATHS = ["cloudypoints_core", "cloudypoints_ros", "test", "benchmarks", "launch", "setup.py"]
#: What mypy checks (configured in pyproject.toml [tool.mypy]).
MYPY_PACKAGES = ["cloudypoints_core", "cloudypoints_ros"]


def _run(tool: str, *args: str) -> None:
    """Run ``python -m <tool> <args>`` in the repository root and fail with its output."""
    pytest.importorskip(tool, reason=f"{tool} is not installed (see requirements.txt)")
    cmd = [sys.executable, "-m", tool, *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (
        f"{' '.join(cmd[2:])} exited with {proc.returncode}:\n{proc.stdout}{proc.stderr}"
    )


def test_ruff_check() -> None:
    # --no-cache: nothing written into the source tree.
    _run("ruff", "check", "--no-cache", *RUFF_PATHS)


def test_ruff_format() -> None:
    _run("ruff", "format", "--check", "--no-cache", *RUFF_PATHS)


def test_mypy() -> None:
    # The cache lives outside the source tree (a read-only or colcon-symlinked checkout stays
    # clean) but persists between runs: a warm run takes about a second, a cold one ~15 s.
    # One folder per checkout so two checkouts never share (and thrash) a cache.
    key = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
    cache_dir = Path(tempfile.gettempdir()) / f"cloudypoints-mypy-cache-{key}"
    _run("mypy", "--cache-dir", str(cache_dir), *MYPY_PACKAGES)
