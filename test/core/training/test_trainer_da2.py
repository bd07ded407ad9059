"""Fine-tuning Depth Anything V2 (metric head): strict init weights, frozen encoder, exact resume.

Two optimiser steps on one tiny batch (70x42 input: 5x3 patches), weights from the deterministic
rule written to a ``.pth`` file the way an official checkpoint is.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from training_fixtures import toy_config

torch = pytest.importorskip("torch")

from cloudypoints_core.errors import ConfigError, ModelError  # noqa: E402
from cloudypoints_core.inference.package import load_model_package  # noqa: E402
from cloudypoints_core.models import create_model  # noqa: E402
from cloudypoints_core.models.weights import deterministic_state_dict  # noqa: E402
from cloudypoints_core.training.config import TrainingConfig  # noqa: E402
from cloudypoints_core.training.trainer import train  # noqa: E402

ARCH = {"encoder": "vits", "head": "metric", "max_depth": 80.0}


@pytest.fixture(scope="module")
def init_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Written as the official relative checkpoint would be: the metric head has the same keys.
    model = create_model("depth_anything_v2", encoder="vits", head="relative")
    path = tmp_path_factory.mktemp("da2") / "depth_anything_v2_vits.pth"
    torch.save(deterministic_state_dict(model), path)
    return path


def _config(init_file: Path, **train: Any) -> TrainingConfig:
    return toy_config(
        data={
            "input_width": 70,
            "input_height": 42,
            "train": {"start": 0, "count": 2},
            "val": {"start": 500, "count": 2},
        },
        model={
            "name": "da2-toy",
            "architecture": "depth_anything_v2",
            "arch_config": ARCH,
            "init_weights": str(init_file),
            "valid_min_depth_m": 0.5,
        },
        optim={
            "lr": 2e-4,
            "warmup_frac": 0.0,
            "schedule": "constant",
            "encoder_lr_mult": 0.1,
            "freeze_encoder_epochs": 1,
            "gradient_weight": 0.0,
        },
        # One batch of both samples per epoch, no augmentation: both steps see the same data.
        augment={
            "hflip_prob": 0.0,
            "scale_range": [1.0, 1.0],
            "brightness": 0.0,
            "contrast": 0.0,
            "saturation": 0.0,
        },
        train={"epochs": 2, "batch_size": 2, "val_batch_size": 2, **train},
    )


def _losses(run: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (run / "steps.jsonl").read_text().splitlines()]


def test_two_steps_decrease_the_loss_and_resume_exactly(
    init_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cloudypoints_core")
    full = train(_config(init_file), out_dir=tmp_path / "full", command="test")
    losses = _losses(full)
    assert len(losses) == 2
    assert losses[1] < losses[0]
    record = json.loads((full / "init_weights.json").read_text())
    assert record["tensors"] == len(torch.load(init_file, weights_only=True))
    assert len(record["sha256"]) == 64
    assert "initialised all" in (full / "train.log").read_text()
    assert f"from {init_file}" in caplog.text

    # Stop after the first step (encoder still frozen), then resume.
    part = tmp_path / "part"
    train(_config(init_file, max_steps=1), out_dir=part, command="test")
    first = torch.load(part / "checkpoints" / "last.pt", weights_only=True)["model"]
    init = torch.load(init_file, weights_only=True)
    assert torch.equal(
        first["pretrained.blocks.3.attn.qkv.weight"], init["pretrained.blocks.3.attn.qkv.weight"]
    )
    assert not torch.equal(
        first["depth_head.scratch.output_conv1.weight"],
        init["depth_head.scratch.output_conv1.weight"],
    )
    train(_config(init_file), resume=part / "checkpoints" / "last.pt", command="test")
    np.testing.assert_allclose(_losses(part), losses, rtol=1e-6, atol=1e-7)
    a = torch.load(full / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(part / "checkpoints" / "last.pt", weights_only=True)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    # The encoder trained in the second epoch, with its smaller learning rate.
    key = "pretrained.blocks.3.attn.qkv.weight"
    assert not torch.equal(a[key], init[key])

    package = load_model_package(full / "package")
    assert package.spec.architecture == "depth_anything_v2"
    assert (package.spec.input_width, package.spec.input_height) == (70, 42)
    assert package.spec.output_kind == "metric_depth"


def test_config_errors_name_the_problem(init_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="multiple of 14"):
        toy_config(
            data={"input_width": 64, "input_height": 42},
            model={"architecture": "depth_anything_v2", "arch_config": ARCH},
        )
    with pytest.raises(ConfigError, match="head must be 'metric'"):
        toy_config(
            data={"input_width": 70, "input_height": 42},
            model={"architecture": "depth_anything_v2", "arch_config": {"head": "relative"}},
        )
    with pytest.raises(ConfigError, match="pre-trained encoder"):
        train(toy_config(optim={"encoder_lr_mult": 0.1}), out_dir=tmp_path / "x", command="t")
    wrong = tmp_path / "vitb.pth"
    with torch.device("meta"):
        base = create_model("depth_anything_v2", encoder="vitb")
    torch.save({k: torch.zeros(1) for k in list(base.state_dict())[:3]}, wrong)
    with pytest.raises(
        ModelError, match="does not fit DepthAnythingV2.*missing keys: .*wrong shapes"
    ):
        train(_config(wrong), out_dir=tmp_path / "y", command="t")


@pytest.mark.parametrize("name", ["cityscapes_da2_small", "synthcity_da2_small"])
def test_shipped_da2_configs_load(name: str) -> None:
    from cloudypoints_core.training.config import load_config

    config = load_config(name)
    assert config.model.architecture == "depth_anything_v2"
    assert config.model.arch_config["head"] == "metric"
    assert config.data.input_width % 14 == 0 and config.data.input_height % 14 == 0
    assert config.model.head_range_m == (0.5, 80.0)
    assert 0 < config.optim.encoder_lr_mult < 1
