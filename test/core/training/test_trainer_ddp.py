"""A two-process DistributedDataParallel run through torchrun (gloo on CPU), as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent

SCRIPT = """
import sys
sys.path.insert(0, {here!r})
from training_fixtures import toy_config
from cloudypoints_core.training.trainer import train
config = toy_config(train={{"epochs": 1, "threads": 1}})
train(config, out_dir={out!r}, command="torchrun test")
"""


@pytest.mark.slow
def test_two_process_gloo_run_writes_one_package(tmp_path: Path) -> None:
    script = tmp_path / "ddp_train.py"
    out = tmp_path / "run"
    script.write_text(SCRIPT.format(here=str(HERE), out=str(out)))
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(script),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # 16 toy samples over 2 ranks in batches of 4: 2 optimiser steps per epoch, logged once.
    steps = [json.loads(x) for x in (out / "steps.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert (out / "package" / "model.onnx").is_file()
    assert "world size 2" in (out / "package" / "MODEL_CARD.md").read_text()
