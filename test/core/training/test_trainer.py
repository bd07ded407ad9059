"""Tests of the trainer: tiny end-to-end runs, exact resume, weights-only checkpoints, tracking."""

from __future__ import annotations

import importlib.metadata
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from training_fixtures import toy_config

torch = pytest.importorskip("torch")

from cloudypoints_core.errors import ConfigError, ModelError  # noqa: E402
from cloudypoints_core.evaluation.metrics import METRIC_NAMES  # noqa: E402
from cloudypoints_core.inference.onnx_meta import read_spec_from_onnx  # noqa: E402
from cloudypoints_core.inference.package import load_model_package  # noqa: E402
from cloudypoints_core.training.trainer import (  # noqa: E402
    load_checkpoint,
    model_from_checkpoint,
    train,
)


def _steps(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "steps.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 2-epoch toy run (4 steps per epoch)."""
    return train(toy_config(), out_dir=tmp_path_factory.mktemp("full") / "run", command="test")


def test_tiny_run_writes_logs_checkpoint_and_package(full_run: Path) -> None:
    rows = [json.loads(x) for x in (full_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(f"val_{m}" in rows[0] for m in METRIC_NAMES)
    assert (full_run / "metrics.csv").read_text().splitlines()[0].startswith("epoch,")
    assert (full_run / "loss_curves.png").stat().st_size > 1000
    assert len(_steps(full_run)) == 8
    versions = json.loads((full_run / "versions.json").read_text())
    assert versions["torch"] == importlib.metadata.version("torch")
    assert versions["torch"].split("+")[0] == torch.__version__.split("+")[0]
    package = load_model_package(full_run / "package")
    spec = package.spec
    assert (spec.input_width, spec.input_height) == (64, 32)
    assert spec.output_kind == "metric_depth"
    # Canonical focal length: the first training sample's fx (60 px at 96 wide) at 64 wide.
    assert spec.train_fx_px == pytest.approx(60.0 * 64 / 96)
    assert read_spec_from_onnx(package.onnx_path) == spec
    card = (full_run / "package" / "MODEL_CARD.md").read_text()
    for needle in ("Command: `test`", "Seed: 7", "Training time", "AbsRel", "toy", "val (best"):
        assert needle in card
    summary = json.loads((full_run / "summary.json").read_text())
    assert summary["steps"] == 8 and summary["best_epoch"] in (1, 2)


def test_checkpoint_loads_weights_only_and_holds_plain_values(full_run: Path) -> None:
    path = full_run / "checkpoints" / "last.pt"
    raw = torch.load(str(path), weights_only=True)
    allowed = (torch.Tensor, int, float, str, type(None), dict, list, tuple, bool)

    def check(value: object) -> None:
        assert isinstance(value, allowed), type(value)
        if isinstance(value, dict):
            for v in value.values():
                check(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                check(v)

    check(raw)
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 2 and ckpt["step"] == 8 and ckpt["step_in_epoch"] == 0
    model, spec = model_from_checkpoint(path)
    x = torch.randn(1, 3, 32, 64)
    pkg_state = torch.load(str(full_run / "package" / "model.pt"), weights_only=True)
    reference, _ = model_from_checkpoint(path)
    reference.load_state_dict(pkg_state)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference.eval()(x))
    with pytest.raises(ModelError, match="not a CloudyPoints training checkpoint"):
        bogus = full_run / "bogus.pt"
        torch.save({"a": torch.zeros(1)}, bogus)
        load_checkpoint(bogus)


@pytest.mark.parametrize("stop_at", [3, 4])
def test_resume_continues_exactly(
    full_run: Path, tmp_path: Path, stop_at: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopping at step ``stop_at`` (mid-epoch or at an epoch end) and resuming gives the same
    losses, step for step, and the same final weights as the uninterrupted run; the run keeps
    the command that defined it."""
    run = tmp_path / "run"
    first = f"cloudypoints train --config toy.yaml train.max_steps={stop_at}"
    train(toy_config(train={"max_steps": stop_at}), out_dir=run, command=first)
    assert len(_steps(run)) == stop_at
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["step"] == stop_at
    again = f"cloudypoints train --resume {run}/checkpoints/last.pt"
    with caplog.at_level(logging.INFO, logger="cloudypoints_core"):
        train(toy_config(), resume=run / "checkpoints" / "last.pt", command=again)
    assert (run / "command.txt").read_text() == first + "\n"
    assert (run / "resume_commands.txt").read_text() == again + "\n"
    assert f"Command: `{first}`" in (run / "package" / "MODEL_CARD.md").read_text()
    # 4 steps per epoch: step 3 is inside epoch 1 of 2, step 4 ends it (resume in epoch 2).
    epoch, into = (1, 3) if stop_at == 3 else (2, 0)
    resumed = [r.getMessage() for r in caplog.records if "resumed from" in r.getMessage()]
    assert len(resumed) == 1
    assert f"in epoch {epoch}/2 after {into} of its steps (global step {stop_at})" in resumed[0]
    want = [r["loss"] for r in _steps(full_run)]
    got = [r["loss"] for r in _steps(run)]
    assert len(got) == len(want) == 8
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    a = torch.load(str(full_run / "checkpoints" / "last.pt"), weights_only=True)["model"]
    b = torch.load(str(run / "checkpoints" / "last.pt"), weights_only=True)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]


def test_resume_refuses_another_model(full_run: Path, tmp_path: Path) -> None:
    other = toy_config(model={"arch_config": {"width_mult": 0.5}})
    with pytest.raises(ConfigError, match="another model"):
        train(other, out_dir=tmp_path / "x", resume=full_run / "checkpoints" / "last.pt")


def test_synthcity_end_to_end_through_the_cli_function(tmp_path: Path) -> None:
    from cloudypoints_core.cli.train import run_train

    code = run_train(
        "synthcity_default",
        out=tmp_path / "run",
        overrides=[
            "data.input_width=64",
            "data.input_height=32",
            "data.train={seed_start: 0, seed_count: 4, width: 64, height: 32}",
            "data.val={seed_start: 900000, seed_count: 2}",
            "data.test={seed_start: 1000000, seed_count: 1}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "data.num_workers=0",
            "model.architecture=mobile_unet",
            "model.arch_config={width_mult: 0.35}",
            "train.epochs=1",
            "train.batch_size=2",
            "train.val_batch_size=2",
            "train.checkpoint_every_steps=0",
        ],
        command="cloudypoints train --config synthcity_default (tiny)",
    )
    assert code == 0
    package = load_model_package(tmp_path / "run" / "package")
    # SynthCity's canonical camera: fx = 2262.5 px at 2048 wide, scaled to the input width.
    assert package.spec.train_fx_px == pytest.approx(2262.5 * 64 / 2048)
    card = (tmp_path / "run" / "package" / "MODEL_CARD.md").read_text()
    assert "| test |" in card and "seeds >= 1000000" in card


def test_mlflow_tracking_logs_params_metrics_and_package(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    store = tmp_path / "mlruns"
    config = toy_config(
        train={"epochs": 1},
        tracking={"enabled": True, "tracking_uri": store.as_uri(), "experiment": "toy"},
    )
    train(config, out_dir=tmp_path / "run", command="test")
    metric_files = list(store.rglob("metrics/val_abs_rel"))
    assert len(metric_files) == 1
    run_dir = metric_files[0].parent.parent
    assert (run_dir / "params" / "optim.lr").read_text().strip() == "0.003"
    artifacts = {p.name for p in (run_dir / "artifacts").rglob("*")}
    assert {"model.onnx", "spec.yaml", "MODEL_CARD.md", "loss_curves.png"} <= artifacts


def test_export_cli_function_writes_a_checked_package(full_run: Path, tmp_path: Path) -> None:
    from cloudypoints_core.cli.export import run_export

    ckpt = full_run / "checkpoints" / "last.pt"
    assert run_export(ckpt, tmp_path / "best") == 0
    assert run_export(ckpt, tmp_path / "last", which="last") == 0
    best = load_model_package(tmp_path / "best")
    assert best.spec == load_model_package(full_run / "package").spec
    # "best" exports the best epoch's weights: the same as the run's own package.
    a = torch.load(str(tmp_path / "best" / "model.pt"), weights_only=True)
    b = torch.load(str(full_run / "package" / "model.pt"), weights_only=True)
    for key in a:
        torch.testing.assert_close(a[key], b[key])
    with pytest.raises(ModelError, match="does not exist"):
        run_export(tmp_path / "missing.pt", tmp_path / "x")


def test_cli_parsers_accept_the_documented_arguments() -> None:
    import argparse

    from cloudypoints_core.cli import export as export_cli
    from cloudypoints_core.cli import train as train_cli

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    train_cli.register(sub)
    export_cli.register(sub)
    args = parser.parse_args(
        [
            "train",
            "--config",
            "synthcity_default",
            "--out",
            "runs/x",
            "train.epochs=3",
            "optim.lr=0.001",
        ]
    )
    assert args.overrides == ["train.epochs=3", "optim.lr=0.001"] and args.out == Path("runs/x")
    args = parser.parse_args(["export", "--checkpoint", "c.pt", "--out", "pkg", "--which", "last"])
    assert args.which == "last" and args.checkpoint == Path("c.pt")
    with pytest.raises(ConfigError, match="--config"):
        train_cli.run_train(None)
