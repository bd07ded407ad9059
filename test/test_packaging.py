"""The package build: setuptools (what colcon's ament_python build runs) without warnings, and
the data the core needs (default model, configs, split files) in the built package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_setup_py_builds_without_warnings_and_ships_the_data(tmp_path: Path) -> None:
    # PYTHONDONTWRITEBYTECODE makes distutils say "byte-compiling is disabled" for any package.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    proc = subprocess.run(
        [
            sys.executable,
            "setup.py",
            "--quiet",
            "egg_info",
            "--egg-base",
            str(tmp_path),
            "build",
            "--build-base",
            str(tmp_path / "build"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr
    built = tmp_path / "build" / "lib" / "cloudypoints_core"
    for name in (
        "assets/default_model/spec.yaml",
        "assets/default_model/model.onnx",
        "assets/default_model/model.pt",
        "assets/default_model/MODEL_CARD.md",
        "configs/synthcity_default.yaml",
        "data/splits/cityscapes_test_1525.txt",
    ):
        assert (built / name).is_file(), name
