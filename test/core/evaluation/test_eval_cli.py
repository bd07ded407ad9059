"""``cloudypoints eda``, ``evaluate`` and ``card`` end to end on the fixture tree and SynthCity."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from cityscapes_fixture import FixtureTree

from cloudypoints_core.cli import main as cli_main
from cloudypoints_core.cli.eda import parse_seeds, parse_size
from cloudypoints_core.errors import ConfigError
from cloudypoints_core.evaluation.metrics import METRIC_NAMES

MINE = ("eda", "evaluate", "card")


@pytest.fixture()
def cli(monkeypatch: pytest.MonkeyPatch):
    """``main(argv)`` with only this task's subcommands (others may be mid-development)."""
    monkeypatch.setattr(cli_main, "COMMAND_MODULES", MINE)
    return cli_main.main


def test_commands_are_registered() -> None:
    assert set(MINE) <= set(cli_main.COMMAND_MODULES)


@pytest.mark.parametrize("command", MINE)
def test_help(cli, command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert f"cloudypoints {command}" in out and "--out" in out and "example" in out


def test_seed_and_size_parsing() -> None:
    assert parse_seeds("0-3,7, 9-9") == [0, 1, 2, 3, 7, 9]
    assert parse_size("512x256") == (512, 256)
    with pytest.raises(ConfigError, match="bad seed"):
        parse_seeds("a-b")
    with pytest.raises(ConfigError, match="end is below"):
        parse_seeds("5-1")
    with pytest.raises(ConfigError, match="WIDTHxHEIGHT"):
        parse_size("512")


def test_eda_commands(
    cli, cs_tree: FixtureTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CITYSCAPES_DATASET", raising=False)
    assert (
        cli(
            [
                "eda",
                "--dataset",
                "cityscapes",
                "--root",
                str(cs_tree.root),
                "--splits",
                "val",
                "test",
                "--out",
                str(tmp_path / "cs"),
                "--no-progress",
            ]
        )
        == 0
    )
    summary = json.loads((tmp_path / "cs" / "summary.json").read_text())
    assert list(summary["splits"]) == ["val", "test"]
    assert (
        cli(
            [
                "eda",
                "--dataset",
                "synthcity",
                "--seeds",
                "0-1",
                "--size",
                "96x48",
                "--out",
                str(tmp_path / "sc"),
                "--no-progress",
                "--examples",
                "1",
            ]
        )
        == 0
    )
    assert (tmp_path / "sc" / "report.md").read_text().startswith("# Data analysis: SynthCity")
    # Errors from the core are one line and exit code 2, not a traceback.
    assert (
        cli(
            [
                "eda",
                "--dataset",
                "cityscapes",
                "--root",
                str(tmp_path / "nowhere"),
                "--out",
                str(tmp_path / "x"),
                "--no-progress",
            ]
        )
        == 2
    )
    assert cli(["eda", "--dataset", "cityscapes", "--out", str(tmp_path / "x")]) == 2
    # The root may come from $CITYSCAPES_DATASET, as for the official cityscapesScripts.
    monkeypatch.setenv("CITYSCAPES_DATASET", str(cs_tree.root))
    assert (
        cli(
            [
                "eda",
                "--dataset",
                "cityscapes",
                "--splits",
                "test",
                "--limit",
                "1",
                "--examples",
                "0",
                "--out",
                str(tmp_path / "env"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        json.loads((tmp_path / "env" / "summary.json").read_text())["splits"]["test"]["depth"][
            "images"
        ]
        == 1
    )


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_evaluate_cityscapes_then_card(
    cli,
    cs_tree: FixtureTree,
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "ev_cs"
    assert (
        cli(
            [
                "evaluate",
                "--model",
                str(tiny_model_dir),
                "--dataset",
                "cityscapes",
                "--root",
                str(cs_tree.root),
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    assert "cityscapes test: 4 images, median scaling off: abs_rel=" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["n_images"] == 4 and results["median_scaling"] is False
    assert results["model"]["name"] == "tiny_eval" and results["model"]["backend"] == "onnxruntime"
    assert results["windows_px"] == [[32, 96, 24, 232]]
    assert results["dataset"]["split_file"].endswith("cityscapes_test_1525.txt")
    # The averages are the per-image means of the CSV (per image, then averaged).
    rows = _csv_rows(out / "per_image.csv")
    assert len(rows) == 4
    for name in METRIC_NAMES:
        assert results["metrics"][name] == pytest.approx(
            np.mean([float(r[name]) for r in rows]), rel=1e-5
        ), name
        assert np.isfinite(results["metrics"][name])
    report = (out / "report.md").read_text()
    assert "Per-image median scaling: **OFF**" in report
    assert "rows 256-767 and columns 192-1855" in report
    assert "1525" in report
    for plot in results["plots"].values():
        assert (out / plot).stat().st_size > 0 and f"]({plot})" in report

    scaled = tmp_path / "ev_cs_ms"
    assert (
        cli(
            [
                "evaluate",
                "--model",
                str(tiny_model_dir),
                "--dataset",
                "cityscapes",
                "--root",
                str(cs_tree.root),
                "--out",
                str(scaled),
                "--median-scaling",
                "--split-file",
                "none",
                "--limit",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    results_ms = json.loads((scaled / "results.json").read_text())
    assert results_ms["median_scaling"] is True and results_ms["n_images"] == 2
    assert results_ms["dataset"]["split_file"] is None
    ratios = [float(r["median_scale_ratio"]) for r in _csv_rows(scaled / "per_image.csv")]
    assert all(r > 0 for r in ratios)
    assert results_ms["median_scale_ratio"]["mean"] == pytest.approx(np.mean(ratios), rel=1e-5)
    assert "Per-image median scaling: **ON**" in (scaled / "report.md").read_text()

    card = tmp_path / "pkg" / "MODEL_CARD.md"
    assert cli(["card", "--eval", str(out), "--eval", str(scaled), "--out", str(card)]) == 0
    text = card.read_text()
    assert text.startswith("# Model card: tiny_eval")
    for section in ("## Intended use", "## Limits", "## Training", "## Evaluation"):
        assert section in text
    assert f"| all pixels | {results['metrics']['abs_rel']:.3f} |" in text
    assert "with per-image median scaling" in text and "without median scaling" in text
    links = [line.split("](")[1].rstrip(")") for line in text.splitlines() if "](" in line]
    assert links and all((card.parent / link).is_file() for link in links)
    assert "No training run was given" in text


def test_card_with_training_run(cli, tmp_path: Path) -> None:
    ev = tmp_path / "ev"
    ev.mkdir()
    results = {
        "model": {"name": "m1", "architecture": "mobile_unet", "backend": "torch"},
        "dataset": {"name": "synthcity", "description": "SynthCity held out"},
        "protocol": {"name": "synthcity", "median_scaling": False, "summary": "synthcity: ..."},
        "n_images": 3,
        "metrics": {n: 0.5 for n in METRIC_NAMES},
        "bands": {},
        "plots": {"bands": "missing.png"},
    }
    (ev / "results.json").write_text(json.dumps(results))
    # A run folder as 'cloudypoints train' leaves it.
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(
        "data:\n  dataset: cityscapes\n  input_width: 512\n  input_height: 256\n"
        "  train:\n    root: /data/cs\n    folder: train\n"
    )
    (run / "command.txt").write_text("cloudypoints train --config cs.yaml --out runs/cs\n")
    (run / "versions.json").write_text(json.dumps({"torch": "2.13.0", "numpy": "2.4.6"}))
    (run / "summary.json").write_text(
        json.dumps(
            {
                "epochs_run": 12,
                "best_epoch": 7,
                "device": "cpu",
                "train_time_s": 61.5,
                "metrics": {"val (best epoch)": {n: 0.25 for n in METRIC_NAMES}, "test": None},
                "cost": {"params_m": 1.2, "gflops": 0.12},
            }
        )
    )
    (run / "loss_curves.png").write_bytes(b"\x89PNG not really")
    card = tmp_path / "CARD.md"
    assert (
        cli(
            [
                "card",
                "--eval",
                str(ev),
                "--train-run",
                str(run),
                "--out",
                str(card),
                "--title",
                "My model",
            ]
        )
        == 0
    )
    text = card.read_text()
    assert text.startswith("# Model card: My model")
    assert "cloudypoints train --config cs.yaml --out runs/cs" in text
    assert "- Data set: `cityscapes` at network input 512x256" in text
    assert '"root": "/data/cs"' in text
    assert "| best_epoch | 7 |" in text and "| epochs_run | 12 |" in text
    assert "| val (best epoch) | 0.250 |" in text
    assert "torch 2.13.0" in text and "dataset: cityscapes" in text
    assert (tmp_path / "CARD_assets" / "train_loss_curves.png").is_file()
    # Bad inputs: one-line errors.
    assert cli(["card", "--eval", str(tmp_path / "nothing"), "--out", str(card)]) == 2
    assert cli(["card", "--eval", str(ev), "--out", str(tmp_path / "card.txt")]) == 2


def test_evaluate_synthcity_any_backend(cli, tiny_model_dir: Path, tmp_path: Path) -> None:
    metrics = {}
    for backend in ("onnxruntime", "torch"):
        out = tmp_path / backend
        assert (
            cli(
                [
                    "evaluate",
                    "--model",
                    str(tiny_model_dir),
                    "--dataset",
                    "synthcity",
                    "--seeds",
                    "1000000-1000001",
                    "--size",
                    "128x64",
                    "--backend",
                    backend,
                    "--out",
                    str(out),
                    "--no-progress",
                    "--examples",
                    "1",
                ]
            )
            == 0
        )
        results = json.loads((out / "results.json").read_text())
        assert results["n_images"] == 2 and results["model"]["backend"] == backend
        assert results["windows_px"] == [[0, 64, 0, 128]]  # no crop, no hood
        assert results["dataset"]["seeds"] == [1_000_000, 1_000_001]
        metrics[backend] = results["metrics"]
    for name in METRIC_NAMES:
        assert metrics["torch"][name] == pytest.approx(metrics["onnxruntime"][name], abs=1e-3)


def test_default_synthcity_seeds_are_held_out() -> None:
    from cloudypoints_core.evaluation.evaluate import SYNTHCITY_EVAL_SEEDS
    from cloudypoints_core.training.data import TEST_SEED_MIN

    assert min(SYNTHCITY_EVAL_SEEDS) >= TEST_SEED_MIN
