"""Tests of the training configuration: YAML loading, overrides and clear validation errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudypoints_core.errors import ConfigError
from cloudypoints_core.training.config import (
    CONFIG_DIR,
    TrainingConfig,
    apply_overrides,
    load_config,
)


def test_shipped_default_config_loads_and_round_trips() -> None:
    config = load_config(CONFIG_DIR / "synthcity_default.yaml")
    assert config.data.dataset == "synthcity"
    assert config.data.input_width % 32 == 0 and config.data.input_height % 32 == 0
    assert config.model.architecture in ("mobile_unet", "resnet_unet")
    # Held-out test seeds are never trained or validated on.
    assert config.data.train["seed_start"] + config.data.train["seed_count"] <= 1_000_000
    assert config.data.val["seed_start"] + config.data.val["seed_count"] <= 1_000_000
    assert config.data.test is not None and config.data.test["seed_start"] >= 1_000_000
    again = TrainingConfig.from_yaml(config.to_yaml())
    assert again == config
    # A bare name finds the shipped file.
    assert load_config("synthcity_default") == config


def test_defaults_and_overrides() -> None:
    config = load_config(
        None,
        [
            "train.epochs=3",
            "optim.lr=5e-4",
            "data.train.seed_count=10",
            "augment.scale_range=[1.0, 1.5]",
            "train.amp=false",
        ],
    )
    assert config.train.epochs == 3
    assert config.optim.lr == pytest.approx(5e-4)
    assert config.data.train == {"seed_count": 10}
    assert config.augment.scale_range == (1.0, 1.5)
    assert config.train.amp == "false"
    data = {"train": {"epochs": 1}}
    out = apply_overrides(data, ["train.epochs=2"])
    assert out["train"]["epochs"] == 2 and data["train"]["epochs"] == 1  # input untouched


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("trian: {epochs: 2}", "unknown sections \\['trian'\\]"),
        ("train: {epoch: 2}", "unknown keys \\['epoch'\\]"),
        ("train: {epochs: two}", "train.epochs must be an integer, got 'two'"),
        ("train: {epochs: 0}", "train.epochs must be >= 1"),
        ("data: {input_width: 100}", "data.input_width must be a multiple of 32"),
        ("model: {architecture: vit}", "model.architecture 'vit' is not registered"),
        ("optim: {schedule: step}", "optim.schedule must be cosine, onecycle or constant"),
        ("augment: {scale_range: [0.8, 1.2]}", "zoom in only"),
        ("augment: {scale_range: 1.2}", "augment.scale_range must be a list of 2 values"),
        ("train: {best_metric: accuracy}", "train.best_metric must be one of"),
        ("data: {far_targets: drop}", "data.far_targets must be 'clamp' or 'ignore'"),
        ("- just a list", "expected a mapping of sections"),
    ],
)
def test_invalid_configs_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_bad_override_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["epochs"])
    with pytest.raises(ConfigError, match="must name a section and a key"):
        load_config(None, ["epochs=3"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
