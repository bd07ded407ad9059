"""The training configuration: frozen dataclasses loaded from YAML, with ``key=value`` overrides.

A file has the sections ``data``, ``model``, ``optim``, ``augment``, ``train`` and ``tracking``
(all optional; missing keys take the defaults below). Unknown sections or keys, wrong types and
out-of-range values raise :class:`ConfigError` naming the key, so a typo never trains silently
with a default. ``cloudypoints_core/configs/synthcity_default.yaml`` is the shipped example.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from cloudypoints_core.errors import ConfigError

__all__ = [
    "AugmentConfig",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "TrackingConfig",
    "TrainConfig",
    "TrainingConfig",
    "apply_overrides",
    "load_config",
]

#: Folder of the training configurations shipped inside the package.
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass(frozen=True)
class DataConfig:
    """What to train and validate on, and at which network input size.

    ``train``, ``val`` and ``test`` are option mappings handed to the data set factory
    registered as ``dataset`` (see :mod:`cloudypoints_core.training.data`); ``test`` is
    optional and evaluated once, with the best model, for the model card. Evaluation follows the
    literature: ground truth in (``eval_min_depth_m``, ``eval_max_depth_m``), predictions
    clamped to that range, metrics per image then averaged.
    """

    dataset: str = "synthcity"
    input_width: int = 384
    input_height: int = 192
    train: Mapping[str, Any] = field(default_factory=dict)
    val: Mapping[str, Any] = field(default_factory=dict)
    test: Mapping[str, Any] | None = None
    #: Where pre-rendered / decoded samples are cached; None: $CLOUDYPOINTS_CACHE or
    #: ~/.cache/cloudypoints.
    cache_dir: str | None = None
    num_workers: int = 1
    #: ``clamp``: targets beyond the head's range (and pixels a data set marks as far, such as
    #: SynthCity's sky) are trained as the maximum depth; ``ignore``: they are masked out.
    far_targets: str = "clamp"
    eval_min_depth_m: float = 1e-3
    eval_max_depth_m: float = 80.0

    def validate(self) -> None:
        for key in ("input_width", "input_height"):
            value = getattr(self, key)
            # The multiple (32 for the U-Nets, 14 for ViTs) is the network's: checked in
            # TrainingConfig.validate, which knows the architecture.
            if value <= 0:
                raise ConfigError(f"data.{key} must be positive, got {value}")
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {self.num_workers}")
        if self.far_targets not in ("clamp", "ignore"):
            raise ConfigError(
                f"data.far_targets must be 'clamp' or 'ignore', got {self.far_targets!r}"
            )
        if not 0 <= self.eval_min_depth_m < self.eval_max_depth_m:
            raise ConfigError(
                "need 0 <= data.eval_min_depth_m < data.eval_max_depth_m, got "
                f"{self.eval_min_depth_m}, {self.eval_max_depth_m}"
            )


@dataclass(frozen=True)
class ModelConfig:
    """The network and the spec fields of the package it becomes.

    ``arch_config`` goes to ``create_model(architecture, **arch_config)``; its
    ``min_depth_m``/``max_depth_m`` bound the network's head (canonical camera), while
    ``valid_min_depth_m``/``valid_max_depth_m`` become the spec's valid range (outside is NaN at
    inference). ``train_fx_px`` is the canonical focal length at the input resolution; None
    takes the first training sample's focal length scaled to the input width.
    """

    name: str = "cloudypoints-depth"
    architecture: str = "mobile_unet"
    arch_config: Mapping[str, Any] = field(default_factory=dict)
    train_fx_px: float | None = None
    valid_min_depth_m: float = 0.5
    valid_max_depth_m: float = 80.0
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    #: A state dict file (an official ``.pth`` checkpoint, or a package's ``model.pt``) loaded
    #: with ``strict=True`` before training starts: every key must fit, none may be left over.
    init_weights: str | None = None

    def validate(self) -> None:
        from cloudypoints_core.models import list_models

        if self.architecture not in list_models():
            raise ConfigError(
                f"model.architecture {self.architecture!r} is not registered; known: "
                f"{list_models()}"
            )
        if self.train_fx_px is not None and not (
            math.isfinite(self.train_fx_px) and self.train_fx_px > 0
        ):
            raise ConfigError(
                f"model.train_fx_px must be positive or null, got {self.train_fx_px}"
            )
        if not 0 < self.valid_min_depth_m < self.valid_max_depth_m:
            raise ConfigError(
                "need 0 < model.valid_min_depth_m < model.valid_max_depth_m, got "
                f"{self.valid_min_depth_m}, {self.valid_max_depth_m}"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError(
                f"model.mean/std need 3 values (std > 0), got {self.mean}, {self.std}"
            )
        if dict(self.arch_config).get("head", "metric") != "metric":
            # The losses fit metric depth; a relative (affine-invariant) head cannot learn it.
            raise ConfigError(
                "training fits metric depth: model.arch_config.head must be 'metric', got "
                f"{dict(self.arch_config)['head']!r}"
            )
        if self.init_weights is not None and not self.init_weights:
            raise ConfigError("model.init_weights must be a file path or null, got ''")

    @property
    def head_range_m(self) -> tuple[float, float]:
        """(min, max) depth of the network's head in the canonical camera."""
        cfg = dict(self.arch_config)
        # ``max_depth`` is the sigmoid head's scale of Depth Anything V2 (its official name);
        # that head reaches down to 0, so targets are only floored at the valid minimum.
        if "max_depth" in cfg:
            return float(self.valid_min_depth_m), float(cfg["max_depth"])
        return float(cfg.get("min_depth_m", 0.5)), float(cfg.get("max_depth_m", 100.0))


@dataclass(frozen=True)
class OptimConfig:
    """AdamW, a warm-up + cosine (or one-cycle) schedule, clipping, and the loss weights."""

    lr: float = 2e-3
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    #: ``cosine``: linear warm-up then cosine decay to ``final_lr_frac`` * lr;
    #: ``onecycle``: the same shape with a longer warm-up (``warmup_frac`` 0.3 by convention)
    #: and decay to lr / 1e4.
    schedule: str = "cosine"
    warmup_frac: float = 0.05
    final_lr_frac: float = 0.01
    grad_clip_norm: float | None = 1.0
    silog_lambda: float = 0.85
    gradient_weight: float = 0.5
    gradient_scales: int = 4
    #: Learning rate of a pre-trained encoder relative to ``lr`` (networks exposing
    #: ``encoder_parameters()``, such as depth_anything_v2; 0.1 keeps pre-trained features).
    encoder_lr_mult: float = 1.0
    #: Train only the decoder/head for this many first epochs (encoder frozen), then all.
    freeze_encoder_epochs: int = 0
    #: Weight of the loss on a sample's ``depth_m`` (its main supervision, e.g. a teacher's).
    depth_weight: float = 1.0
    #: Weight of the loss on ``aux_depth_m``, a second supervision source that some data sets
    #: provide (e.g. LiDAR projected to the camera, sparse); ignored where a sample has none.
    aux_weight: float = 1.0

    def validate(self) -> None:
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"optim.lr must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        if self.schedule not in ("cosine", "onecycle", "constant"):
            raise ConfigError(
                f"optim.schedule must be cosine, onecycle or constant, got {self.schedule!r}"
            )
        if not 0 <= self.warmup_frac < 1:
            raise ConfigError(f"optim.warmup_frac must be in [0, 1), got {self.warmup_frac}")
        if not 0 <= self.final_lr_frac <= 1:
            raise ConfigError(f"optim.final_lr_frac must be in [0, 1], got {self.final_lr_frac}")
        if self.grad_clip_norm is not None and self.grad_clip_norm <= 0:
            raise ConfigError(
                f"optim.grad_clip_norm must be positive or null, got {self.grad_clip_norm}"
            )
        if not 0 <= self.silog_lambda <= 1:
            raise ConfigError(f"optim.silog_lambda must be in [0, 1], got {self.silog_lambda}")
        if not (math.isfinite(self.encoder_lr_mult) and self.encoder_lr_mult > 0):
            raise ConfigError(
                f"optim.encoder_lr_mult must be positive, got {self.encoder_lr_mult}"
            )
        if self.freeze_encoder_epochs < 0:
            raise ConfigError(
                f"optim.freeze_encoder_epochs must be >= 0, got {self.freeze_encoder_epochs}"
            )
        if self.gradient_weight < 0 or self.gradient_scales < 1:
            raise ConfigError(
                "optim.gradient_weight must be >= 0 and optim.gradient_scales >= 1, got "
                f"{self.gradient_weight}, {self.gradient_scales}"
            )
        if not (self.depth_weight >= 0 and self.aux_weight >= 0) or not (
            self.depth_weight > 0 or self.aux_weight > 0
        ):
            raise ConfigError(
                "optim.depth_weight and optim.aux_weight must be >= 0 and not both 0, got "
                f"{self.depth_weight}, {self.aux_weight}"
            )


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation; geometry changes carry the intrinsics (and so the targets) along.

    ``scale_range``: the image is enlarged by a factor drawn log-uniformly from this range and
    cropped back to the input size at a random position (a zoom: the focal length grows with
    it, so canonical targets shrink by the same factor). Colour factors are drawn uniformly in
    [1 - x, 1 + x].
    """

    hflip_prob: float = 0.5
    scale_range: tuple[float, float] = (1.0, 1.25)
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25

    def validate(self) -> None:
        if not 0 <= self.hflip_prob <= 1:
            raise ConfigError(f"augment.hflip_prob must be in [0, 1], got {self.hflip_prob}")
        lo, hi = self.scale_range
        if not 1.0 <= lo <= hi:
            raise ConfigError(
                "augment.scale_range must satisfy 1 <= lo <= hi (zoom in only), got "
                f"{self.scale_range}"
            )
        for key in ("brightness", "contrast", "saturation"):
            if not 0 <= getattr(self, key) < 1:
                raise ConfigError(f"augment.{key} must be in [0, 1), got {getattr(self, key)}")


@dataclass(frozen=True)
class TrainConfig:
    """The loop: epochs, batch size, seed, device, precision, checkpoints and best-model choice."""

    epochs: int = 10
    batch_size: int = 8
    seed: int = 0
    #: ``auto``: CUDA when available, else CPU.
    device: str = "auto"
    #: Mixed precision (torch.autocast float16 + GradScaler): ``auto`` enables it on CUDA only.
    amp: str = "auto"
    #: Stop after this many optimiser steps in total (smoke tests); None: run all epochs.
    max_steps: int | None = None
    #: Also checkpoint every N steps inside an epoch (0: only at epoch ends).
    checkpoint_every_steps: int = 0
    keep_epoch_checkpoints: bool = False
    best_metric: str = "abs_rel"
    val_batch_size: int = 8
    threads: int | None = None

    def validate(self) -> None:
        from cloudypoints_core.evaluation.metrics import METRIC_NAMES

        if self.epochs < 1:
            raise ConfigError(f"train.epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1 or self.val_batch_size < 1:
            raise ConfigError(
                f"train.batch_size and train.val_batch_size must be >= 1, got {self.batch_size}, "
                f"{self.val_batch_size}"
            )
        if self.amp not in ("auto", "true", "false"):
            raise ConfigError(f"train.amp must be auto, true or false, got {self.amp!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"train.max_steps must be >= 1 or null, got {self.max_steps}")
        if self.checkpoint_every_steps < 0:
            raise ConfigError(
                f"train.checkpoint_every_steps must be >= 0, got {self.checkpoint_every_steps}"
            )
        # ``aux_<metric>`` ranks epochs by the error against a data set's second depth source.
        if self.best_metric.removeprefix("aux_") not in METRIC_NAMES:
            raise ConfigError(
                f"train.best_metric must be one of {list(METRIC_NAMES)} (or aux_<metric>), got "
                f"{self.best_metric!r}"
            )
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"train.threads must be >= 1 or null, got {self.threads}")


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow tracking (optional: ``enabled: false`` needs no mlflow at all).

    ``tracking_uri`` None: $MLFLOW_TRACKING_URI if set, else a local file store ``./mlruns``.
    """

    enabled: bool = False
    tracking_uri: str | None = None
    experiment: str = "cloudypoints"
    run_name: str | None = None
    log_package: bool = True

    def validate(self) -> None:
        if not self.experiment:
            raise ConfigError("tracking.experiment must not be empty")


@dataclass(frozen=True)
class TrainingConfig:
    """The whole training configuration (one section per field)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def validate(self) -> None:
        for section in fields(self):
            getattr(self, section.name).validate()
        from cloudypoints_core.models import model_info

        multiple = model_info(self.model.architecture).input_multiple
        for key in ("input_width", "input_height"):
            value = getattr(self.data, key)
            if value % multiple:
                raise ConfigError(
                    f"data.{key} must be a multiple of {multiple} for network "
                    f"{self.model.architecture!r}, got {value}"
                )

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, source: str = "config") -> TrainingConfig:
        data = {} if data is None else data
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"{source}: expected a mapping of sections, got {type(data).__name__}"
            )
        sections = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(sections))
        if unknown:
            raise ConfigError(f"{source}: unknown sections {unknown}; known: {sorted(sections)}")
        kwargs: dict[str, Any] = {}
        for name, f in sections.items():
            section_cls = f.default_factory
            if not isinstance(section_cls, type):
                # Every section field defaults to its dataclass; a field without one is a bug here.
                raise ConfigError(
                    f"{source}: section {name!r} has no section class as its default factory, "
                    f"got {section_cls!r}"
                )
            kwargs[name] = _build_section(section_cls, data.get(name), f"{source}: {name}")
        config = cls(**kwargs)
        config.validate()
        return config

    @classmethod
    def from_yaml(cls, text: str, source: str = "config") -> TrainingConfig:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML ({exc})") from exc
        return cls.from_dict(data, source)


def _plain(value: Any) -> Any:
    """Tuples -> lists and mappings -> dicts, recursively (YAML-safe)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """``value`` checked against (and converted to) the field type ``annotation``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # PyYAML (YAML 1.1) reads 5e-4 without a dot as a string.
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):  # YAML reads "true" as a bool; amp takes it as a string
            return str(value).lower()
        raise ConfigError(f"{where} must be a string, got {value!r}")
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where} must be a list of {len(args)} values, got {value!r}")
        return tuple(
            _coerce(v, a, f"{where}[{i}]")
            for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if origin in (Mapping, dict) or annotation in (Mapping, dict):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    return value


def _build_section(cls: type, data: Any, where: str) -> Any:
    if data is None:
        return cls()
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; known keys: {sorted(known)}")
    kwargs = {key: _coerce(value, hints[key], f"{where}.{key}") for key, value in data.items()}
    return cls(**kwargs)


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``data`` with ``section.key[.sub]=value`` overrides applied (values parsed as YAML)."""
    import copy

    import yaml

    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like section.key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from exc
        parts = key.strip().split(".")
        if len(parts) < 2:
            raise ConfigError(f"override {item!r} must name a section and a key (train.epochs=3)")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return out


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainingConfig:
    """The configuration in YAML file ``path`` (None: all defaults) with ``overrides`` applied.

    A bare name such as ``synthcity_default`` resolves to the shipped
    ``cloudypoints_core/configs/synthcity_default.yaml``.
    """
    import yaml

    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        if not p.exists() and not p.suffix and (CONFIG_DIR / f"{p.name}.yaml").exists():
            p = CONFIG_DIR / f"{p.name}.yaml"
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise ConfigError(f"training config {p} does not exist") from exc
        except OSError as exc:
            raise ConfigError(f"training config {p} cannot be read: {exc}") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML ({exc})") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping of sections, got {type(loaded).__name__}")
        data = loaded or {}
        source = str(p)
    if overrides:
        data = apply_overrides(data, overrides)
    return TrainingConfig.from_dict(data, source=source)
