"""The trainer: one loop for every data set, from a config to a validated model package.

``train(config)`` renders/caches the data, trains with AdamW under a warm-up + cosine schedule
(mixed precision on CUDA, gradient clipping), validates on the held-out split every epoch with
the standard metrics, keeps the best model, checkpoints every epoch (and optionally every N
steps) for an exact resume, and finally writes a model package with an auto-generated model card.
Under ``torchrun`` (WORLD_SIZE > 1) it trains with DistributedDataParallel (gloo on CPU, nccl on
CUDA); only rank 0 logs and writes.

Run folder::

    config.yaml  command.txt  [resume_commands.txt]  versions.json  train.log  summary.json
    metrics.jsonl  metrics.csv  steps.jsonl  loss_curves.png
    checkpoints/last.pt  best_model.pt
    package/ (spec.yaml, model.onnx, model.pt, MODEL_CARD.md)
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import logging
import math
import os
import random
import shlex
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, cast

import numpy as np
import numpy.typing as npt

from cloudypoints_core._optional import require
from cloudypoints_core.errors import ConfigError, ModelError
from cloudypoints_core.evaluation.metrics import (
    LOWER_IS_BETTER,
    METRIC_NAMES,
    mean_errors,
)
from cloudypoints_core.evaluation.protocols import EvalProtocol, evaluate_image
from cloudypoints_core.inference.spec import ModelSpec
from cloudypoints_core.io import atomic_path, atomic_write_bytes, atomic_write_text
from cloudypoints_core.training.config import TrainingConfig

# The static branch gives mypy torch's real types; at run time a missing torch names this feature.
if TYPE_CHECKING:
    import torch
else:
    torch = require("torch", "training")

__all__ = [
    "CHECKPOINT_FORMAT",
    "build_spec",
    "evaluate",
    "load_checkpoint",
    "model_from_checkpoint",
    "train",
]

log = logging.getLogger(__name__)


class _LossOptions(TypedDict):
    """The keyword arguments of :func:`depth_loss` taken from ``config.optim``."""

    silog_lambda: float
    gradient_weight: float
    gradient_scales: int


CHECKPOINT_FORMAT = "cloudypoints-checkpoint-v1"


# ------------------------------------------------------------------------------------ helpers
@dataclass
class _Dist:
    """This process's place in a (possibly single-process) distributed run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.initialised:
            torch.distributed.barrier()


def _setup_distributed(device_kind: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not torch.distributed.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend)
    return _Dist(rank, world, local, True)


def _select_device(config: TrainingConfig, dist: _Dist) -> Any:
    name = config.train.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device is {config.train.device!r} but CUDA is not available")
        if name == "cuda":
            name = f"cuda:{dist.local_rank}"
    elif name != "cpu":
        raise ConfigError(f"train.device must be auto, cpu or cuda[:N], got {name!r}")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (seeds legacy global RNG users)
    torch.manual_seed(seed)


def _worker_init(worker_id: int) -> None:
    # torch gives each worker a distinct seed derived from the loader's generator; pass it on so
    # any numpy/random use inside a data set differs between workers yet is reproducible.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # noqa: NPY002 (seeds legacy global RNG users)
    random.seed(seed)


def _rng_state() -> dict[str, Any]:
    """Global RNG states as tensors and numbers (loadable with weights_only=True)."""
    # legacy=True (numpy's default) always returns the MT19937 tuple or raises, but numpy's stubs
    # type the call as dict | tuple (and the no-argument call as dict only).
    np_state = cast(
        "tuple[str, npt.NDArray[np.uint32], int, int, float]",
        np.random.get_state(legacy=True),  # noqa: NPY002 (saves the legacy global RNG)
    )
    py_state = random.getstate()
    state: dict[str, Any] = {
        "rng_torch": torch.get_rng_state(),
        "rng_numpy_keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
        "rng_numpy_pos": int(np_state[2]),
        "rng_numpy_has_gauss": int(np_state[3]),
        "rng_numpy_cached_gauss": float(np_state[4]),
        "rng_python_version": int(py_state[0]),
        "rng_python_state": torch.tensor(py_state[1], dtype=torch.int64),
        "rng_python_gauss": py_state[2],
    }
    if torch.cuda.is_available():
        state["rng_cuda"] = torch.stack([s.cpu() for s in torch.cuda.get_rng_state_all()])
    return state


def _restore_rng(ckpt: Mapping[str, Any]) -> None:
    torch.set_rng_state(ckpt["rng_torch"])
    np.random.set_state(  # noqa: NPY002 (restores the legacy global RNG)
        (
            "MT19937",
            ckpt["rng_numpy_keys"].numpy().astype(np.uint32),
            int(ckpt["rng_numpy_pos"]),
            int(ckpt["rng_numpy_has_gauss"]),
            float(ckpt["rng_numpy_cached_gauss"]),
        )
    )
    random.setstate(
        (
            int(ckpt["rng_python_version"]),
            tuple(int(v) for v in ckpt["rng_python_state"].tolist()),
            ckpt["rng_python_gauss"],
        )
    )
    if "rng_cuda" in ckpt and torch.cuda.is_available():
        states = list(ckpt["rng_cuda"])
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


def _lr_lambda(config: TrainingConfig, total_steps: int) -> Any:
    opt = config.optim
    warmup_frac = opt.warmup_frac
    final = opt.final_lr_frac
    if opt.schedule == "onecycle":
        warmup_frac = max(warmup_frac, 0.3)
        final = 1e-4
    warmup = int(round(warmup_frac * total_steps))

    def factor(step: int) -> float:
        if opt.schedule == "constant":
            return 1.0
        if step < warmup:
            # Start at 1/25 of the peak like one-cycle: a full lr on random weights diverges.
            return 0.04 + 0.96 * step / max(1, warmup)
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def build_spec(config: TrainingConfig, train_fx_px: float) -> ModelSpec:
    """The package spec of a model trained with ``config``."""
    from cloudypoints_core.models import model_info

    return ModelSpec(
        name=config.model.name,
        architecture=config.model.architecture,
        arch_config=dict(config.model.arch_config),
        input_width=config.data.input_width,
        input_height=config.data.input_height,
        mean=config.model.mean,
        std=config.model.std,
        output_kind="metric_depth",
        min_depth_m=config.model.valid_min_depth_m,
        max_depth_m=config.model.valid_max_depth_m,
        train_fx_px=float(train_fx_px),
        input_multiple=model_info(config.model.architecture).input_multiple,
    )


def _encoder_parameters(model: Any, config: TrainingConfig) -> list[Any]:
    """The network's pre-trained encoder parameters when the config treats them apart."""
    wants = config.optim.encoder_lr_mult != 1.0 or config.optim.freeze_encoder_epochs > 0
    getter = getattr(model, "encoder_parameters", None)
    if not wants:
        return []
    if not callable(getter):
        raise ConfigError(
            f"optim.encoder_lr_mult / optim.freeze_encoder_epochs need a network with a "
            f"pre-trained encoder (such as depth_anything_v2); {config.model.architecture!r} "
            "has none"
        )
    return list(getter())


def _param_groups(
    model: Any, encoder_params: list[Any], config: TrainingConfig
) -> list[dict[str, Any]]:
    """AdamW groups: (encoder | rest) x (decayed weights | norms, biases and gains)."""
    encoder_ids = {id(p) for p in encoder_params}
    groups = []
    for in_encoder, lr in (
        (False, config.optim.lr),
        (True, config.optim.lr * config.optim.encoder_lr_mult),
    ):
        params = [
            p
            for p in model.parameters()
            if (id(p) in encoder_ids) == in_encoder and (p.requires_grad or id(p) in encoder_ids)
        ]
        # Norm scales and biases: decaying them only fights the normalisation.
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        groups += [
            {"params": decay, "weight_decay": config.optim.weight_decay, "lr": lr},
            {"params": no_decay, "weight_decay": 0.0, "lr": lr},
        ]
    return [g for g in groups if g["params"]]


def _init_weights(model: Any, path: str, run_dir: Path | None) -> None:
    """Load ``path`` into ``model`` strictly; record the file and its hash in the run folder."""
    from cloudypoints_core.models.weights import load_checkpoint_state, load_strict

    file = Path(path).expanduser()
    state = load_checkpoint_state(file)
    load_strict(model, state, f"model.init_weights {file}")
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    log.info(
        "initialised all %d tensors from %s (sha256 %s, strict)", len(state), file, digest[:16]
    )
    if run_dir is not None:
        record = {"path": str(file.resolve()), "sha256": digest, "tensors": len(state)}
        atomic_write_text(run_dir / "init_weights.json", json.dumps(record, indent=2) + "\n")


def _unwrap(model: Any) -> Any:
    return model.module if hasattr(model, "module") else model


def _state_dict_cpu(model: Any) -> dict[str, Any]:
    return {k: v.detach().to("cpu", copy=True) for k, v in _unwrap(model).state_dict().items()}


def _save_torch(obj: Any, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A training checkpoint, loaded with ``weights_only=True`` (no pickled code)."""
    path = Path(path)
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise ModelError(f"checkpoint {path} does not exist") from exc
    except Exception as exc:  # zip/pickle errors of corrupt or foreign files
        raise ModelError(f"checkpoint {path} cannot be read: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{path} is not a CloudyPoints training checkpoint ({CHECKPOINT_FORMAT})")
    return ckpt


def model_from_checkpoint(path: str | Path, which: str = "best") -> tuple[Any, ModelSpec]:
    """(network in eval mode, spec) from a checkpoint; ``which``: ``best`` or ``last`` weights."""
    from cloudypoints_core.models import create_model

    ckpt = load_checkpoint(path)
    config = TrainingConfig.from_yaml(ckpt["config_yaml"], source=f"{path} config")
    spec = build_spec(config, float(ckpt["train_fx_px"]))
    model = create_model(spec.architecture, **dict(spec.arch_config))
    state = ckpt.get("best_model") if which == "best" else None
    model.load_state_dict(state if state else ckpt["model"], strict=True)
    return model.eval(), spec


# -------------------------------------------------------------------------------- evaluation
def evaluate(
    model: Any,
    loader: Any,
    device: Any,
    train_fx_px: float,
    eval_min_m: float,
    eval_max_m: float,
    loss_kwargs: Mapping[str, Any] | None = None,
    desc: str = "val",
) -> dict[str, float]:
    """Mean per-image metrics (and loss) of ``model`` over ``loader`` (metric depth, no scaling).

    Predictions (canonical camera) become metric with fx_at_input / train_fx_px; ground truth
    outside (eval_min_m, eval_max_m) is ignored and predictions are clamped to that range.
    Batches that carry ``aux_depth_m`` (a second depth source) are also scored against it, as
    ``aux_<metric>`` keys.
    """
    from tqdm import tqdm

    from cloudypoints_core.training.losses import depth_loss

    protocol = EvalProtocol(name=desc, min_depth_m=eval_min_m, max_depth_m=eval_max_m)
    model.eval()
    rows: list[dict[str, float]] = []
    aux_rows: list[dict[str, float]] = []
    has_aux = False
    losses: list[float] = []
    with torch.no_grad():
        for batch in tqdm(loader, desc=desc, leave=False, mininterval=2.0, disable=None):
            image = batch["image"].to(device)
            pred = model(image).float()
            if loss_kwargs is not None:
                loss, _ = depth_loss(
                    pred, batch["target"].to(device), batch["mask"].to(device), **loss_kwargs
                )
                losses.append(float(loss))
            scale = (batch["fx_px"].to(device).float() / train_fx_px).view(-1, 1, 1, 1)
            metric = (pred * scale).cpu().numpy()
            rows += _score_batch(protocol, batch["depth_m"].numpy(), metric)
            if "aux_depth_m" in batch:
                has_aux = True
                aux_rows += _score_batch(protocol, batch["aux_depth_m"].numpy(), metric)
    nan = {m: float("nan") for m in METRIC_NAMES}
    out = mean_errors(rows) if rows else dict(nan)
    if has_aux:
        out.update(
            {f"aux_{k}": v for k, v in (mean_errors(aux_rows) if aux_rows else nan).items()}
        )
    if losses:
        out["loss"] = float(np.mean(losses))
    return out


def _score_batch(
    protocol: EvalProtocol, gt: npt.NDArray[np.float32], metric: npt.NDArray[np.float32]
) -> list[dict[str, float]]:
    """Per-image metrics of (B, 1, H, W) predictions against ground truth with the evaluation's
    one scoring function: every valid ground-truth pixel, the prediction clamped (a NaN from the
    network scored at the far edge); images without valid ground truth are skipped."""
    rows = []
    for k in range(gt.shape[0]):
        ev = evaluate_image(protocol, gt[k, 0], metric[k, 0], detailed=False)
        if ev.metrics is not None:
            rows.append(ev.metrics)
    return rows


def _supervised_loss(
    pred: Any,
    batch: Mapping[str, Any],
    target: Any,
    mask: Any,
    device: Any,
    config: TrainingConfig,
    loss_kwargs: _LossOptions,
) -> tuple[Any, dict[str, float]]:
    """The loss on ``depth_m`` and, where the batch has one, on the second source ``aux_depth_m``,
    each with its weight from ``config.optim``; returns (loss, {term: value})."""
    from cloudypoints_core.training.losses import depth_loss

    loss, terms = depth_loss(pred, target, mask, **loss_kwargs)
    if "aux_target" not in batch:
        return config.optim.depth_weight * loss, terms
    aux_loss, aux_terms = depth_loss(
        pred,
        batch["aux_target"].to(device, non_blocking=True),
        batch["aux_mask"].to(device, non_blocking=True),
        **loss_kwargs,
    )
    total = config.optim.depth_weight * loss + config.optim.aux_weight * aux_loss
    return total, {**terms, **{f"aux_{k}": v for k, v in aux_terms.items()}}


# -------------------------------------------------------------------------------------- train
@dataclass
class _History:
    """Per-epoch rows (metrics.jsonl) and per-step rows (steps.jsonl) of the run."""

    epochs: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows), fsync=False)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue(), fsync=False)


def _plot(path: Path, epochs: list[dict[str, Any]], steps: list[dict[str, Any]]) -> None:
    """Loss curves (per step, per epoch) and validation AbsRel / delta<1.25 per epoch."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is missing: no loss curves")
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if steps:
        s = np.array([r["step"] for r in steps])
        v = np.array([r["loss"] for r in steps])
        axes[0].plot(s, v, color="0.75", lw=0.6, label="train loss (step)")
        if len(v) >= 20:
            k = max(5, len(v) // 50)
            smooth = np.convolve(v, np.ones(k) / k, mode="valid")
            axes[0].plot(s[k - 1 :], smooth, color="C0", label=f"train loss ({k}-step mean)")
    if epochs:
        e_steps = [r["step"] for r in epochs]
        if all("val_loss" in r for r in epochs):
            axes[0].plot(
                e_steps, [r["val_loss"] for r in epochs], "o-", color="C1", label="val loss"
            )
        ep = [r["epoch"] for r in epochs]
        if all("val_abs_rel" in r for r in epochs):
            axes[1].plot(ep, [r["val_abs_rel"] for r in epochs], "o-", label="val AbsRel")
            axes[1].plot(ep, [r["val_a1"] for r in epochs], "s-", label="val δ<1.25")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("loss")
    axes[0].legend()
    axes[1].set_xlabel("epoch")
    axes[1].legend()
    axes[1].grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


def _make_loader(dataset: Any, sampler: Any, batch_size: int, workers: int, device: Any) -> Any:
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        worker_init_fn=_worker_init if workers else None,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )


def _default_run_dir(config: TrainingConfig) -> Path:
    return Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{config.model.name}"


def train(
    config: TrainingConfig,
    out_dir: str | Path | None = None,
    resume: str | Path | None = None,
    command: str | None = None,
) -> Path:
    """Train as ``config`` says; returns the run folder (holding ``package/``, the best model).

    ``resume`` is a checkpoint (``<run>/checkpoints/last.pt``): training continues exactly where
    it stopped, in that run's folder unless ``out_dir`` says otherwise. ``command`` is recorded
    in the model card (default: this process's command line).
    """
    from tqdm import tqdm

    from cloudypoints_core.models import count_flops, create_model
    from cloudypoints_core.training.data import (
        EpochSampler,
        SampleTransform,
        TransformedDataset,
        cache_root,
        create_dataset,
    )
    from cloudypoints_core.training.model_card import library_versions
    from cloudypoints_core.training.tracking import create_tracker

    wall_start = time.monotonic()
    ckpt: dict[str, Any] | None = None
    if resume is not None:
        ckpt = load_checkpoint(resume)
        saved = TrainingConfig.from_yaml(ckpt["config_yaml"], source=f"{resume} config")
        if (
            saved.model != config.model
            or saved.data.input_width != config.data.input_width
            or (saved.data.input_height != config.data.input_height)
        ):
            raise ConfigError(
                f"checkpoint {resume} was trained with another model or input size; resume with "
                "its own config (cloudypoints train --resume PATH without --config)"
            )
        if out_dir is None:
            out_dir = Path(resume).resolve().parent.parent
    run_dir = Path(out_dir) if out_dir is not None else _default_run_dir(config)
    command = command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])

    device_kind = (
        "cuda"
        if config.train.device.startswith("cuda")
        or (config.train.device == "auto" and torch.cuda.is_available())
        else "cpu"
    )
    dist = _setup_distributed(device_kind)
    device = _select_device(config, dist)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    use_amp = config.train.amp == "true" or (config.train.amp == "auto" and device.type == "cuda")
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    seed_everything(config.train.seed + dist.rank)

    file_handler: logging.Handler | None = None
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "checkpoints").mkdir(exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", config.to_yaml(), fsync=False)
        original = run_dir / "command.txt"
        if resume is not None and original.is_file() and original.read_text().strip():
            # A resumed run keeps the command that defined it (its overrides are in the card's
            # "Command"); each resume command is recorded beside it.
            resume_command = command
            command = original.read_text().strip()
            with (run_dir / "resume_commands.txt").open("a", encoding="utf-8") as handle:
                handle.write(resume_command + "\n")
        else:
            atomic_write_text(original, command + "\n", fsync=False)
        versions = library_versions()
        atomic_write_text(run_dir / "versions.json", json.dumps(versions, indent=2) + "\n")
        file_handler = logging.FileHandler(run_dir / "train.log")
        file_handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        logging.getLogger("cloudypoints_core").addHandler(file_handler)
    else:
        versions = {}
    tracker = create_tracker(config.tracking, run_dir, enabled=dist.is_main)
    status = "FAILED"
    try:
        # --- data: rank 0 fills the cache first so ranks never render the same frames twice.
        cache_dir = cache_root(config.data)
        sources: dict[str, Any] = {}
        for turn in (0, 1):
            if (turn == 0) == dist.is_main:
                for split in ("train", "val", "test"):
                    options = getattr(config.data, split)
                    if split == "test" and not options:
                        continue
                    sources[split] = create_dataset(
                        config.data.dataset,
                        options,
                        split=split,
                        data=config.data,
                        cache_dir=cache_dir,
                    )
            dist.barrier()
        if ckpt is not None:
            train_fx = float(ckpt["train_fx_px"])
        elif config.model.train_fx_px is not None:
            train_fx = float(config.model.train_fx_px)
        else:
            intr = sources["train"][0]["intrinsics"]
            train_fx = intr.resized(config.data.input_width, config.data.input_height).fx_px
        head = config.model.head_range_m
        make_transform = functools.partial(
            SampleTransform,
            data=config.data,
            mean=config.model.mean,
            std=config.model.std,
            train_fx_px=train_fx,
            head_range_m=head,
        )
        train_tf = make_transform(augment=config.augment, seed=config.train.seed)
        train_set = TransformedDataset(sources["train"], train_tf)
        eval_tf = make_transform()
        eval_sets = {s: TransformedDataset(sources[s], eval_tf) for s in sources if s != "train"}
        batch = config.train.batch_size
        sampler = EpochSampler(
            len(train_set),
            shuffle=True,
            seed=config.train.seed,
            rank=dist.rank,
            world_size=dist.world_size,
            batch_size=batch,
            drop_last=True,
        )
        steps_per_epoch = len(sampler) // batch
        if steps_per_epoch < 1:
            raise ConfigError(
                f"the training split has {len(train_set)} samples, fewer than one batch of "
                f"{batch} per process"
            )
        total_steps = steps_per_epoch * config.train.epochs

        # --- model and optimiser
        model = create_model(config.model.architecture, **dict(config.model.arch_config))
        if config.model.init_weights is not None and ckpt is None:
            # A resumed run restores its own weights; init_weights only starts a run.
            _init_weights(model, config.model.init_weights, run_dir if dist.is_main else None)
        cost = count_flops(model, config.data.input_height, config.data.input_width)
        model.to(device)
        encoder_params = _encoder_parameters(model, config)
        optimizer = torch.optim.AdamW(
            _param_groups(model, encoder_params, config),
            lr=config.optim.lr,
            betas=config.optim.betas,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config, total_steps))
        scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
        epoch, step, step_in_epoch = 0, 0, 0
        best_value: float | None = None
        best_epoch = -1
        best_state: dict[str, Any] | None = None
        train_time = 0.0
        epoch_loss_sum, epoch_loss_n = 0.0, 0
        history = _History()
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            scaler.load_state_dict(ckpt["scaler"])
            epoch, step = int(ckpt["epoch"]), int(ckpt["step"])
            step_in_epoch = int(ckpt["step_in_epoch"])
            best_value = ckpt["best_value"]
            best_epoch = int(ckpt["best_epoch"])
            best_state = ckpt.get("best_model") or None
            train_time = float(ckpt["train_time_s"])
            epoch_loss_sum = float(ckpt["epoch_loss_sum"])
            epoch_loss_n = int(ckpt["epoch_loss_n"])
            _restore_rng(ckpt)
            # The rows logged after this checkpoint belong to the interrupted attempt.
            history.epochs = [
                r for r in _read_jsonl(run_dir / "metrics.jsonl") if r["epoch"] <= epoch
            ]
            history.steps = [r for r in _read_jsonl(run_dir / "steps.jsonl") if r["step"] <= step]
            # Epochs count from 1, as the progress bar's "epoch 2/2" does.
            log.info(
                "resumed from %s in epoch %d/%d after %d of its steps (global step %d)",
                resume,
                epoch + 1,
                config.train.epochs,
                step_in_epoch,
                step,
            )
        if dist.initialised:
            ddp_ids = [device.index] if device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ddp_ids)
        loss_kwargs: _LossOptions = {
            "silog_lambda": config.optim.silog_lambda,
            "gradient_weight": config.optim.gradient_weight,
            "gradient_scales": config.optim.gradient_scales,
        }
        spec = build_spec(config, train_fx)
        if dist.is_main:
            log.info(
                "training %s (%s, %.2f M params, %.3f GFLOPs at %dx%d) on %s: %d train / %d val "
                "samples, %d steps per epoch, %d epochs, device %s x %d",
                spec.name,
                spec.architecture,
                cost["params_m"],
                cost["gflops"],
                spec.input_width,
                spec.input_height,
                config.data.dataset,
                len(train_set),
                len(eval_sets["val"]),
                steps_per_epoch,
                config.train.epochs,
                device,
                dist.world_size,
            )
            tracker.log_params(
                {
                    **config.to_dict(),
                    "train_fx_px": train_fx,
                    "gflops": cost["gflops"],
                    "params_m": cost["params_m"],
                }
            )

        def checkpoint(next_epoch: int, in_epoch: int) -> None:
            if not dist.is_main:
                return
            state = {
                "format": CHECKPOINT_FORMAT,
                "config_yaml": config.to_yaml(),
                "train_fx_px": float(train_fx),
                "model": _state_dict_cpu(model),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch": int(next_epoch),
                "step": int(step),
                "step_in_epoch": int(in_epoch),
                "best_value": best_value,
                "best_epoch": int(best_epoch),
                "best_model": best_state or {},
                "train_time_s": float(train_time),
                "epoch_loss_sum": float(epoch_loss_sum),
                "epoch_loss_n": int(epoch_loss_n),
                **_rng_state(),
            }
            path = run_dir / "checkpoints" / "last.pt"
            _save_torch(state, path)
            if config.train.keep_epoch_checkpoints and in_epoch == 0:
                _save_torch(state, run_dir / "checkpoints" / f"epoch_{next_epoch:03d}.pt")
            _write_jsonl(run_dir / "steps.jsonl", history.steps)

        val_loader = _make_loader(
            eval_sets["val"], None, config.train.val_batch_size, config.data.num_workers, device
        )
        # max_steps counts steps in total: a run resumed at or past it trains no further (resume
        # with train.max_steps=null to go on).
        stop = config.train.max_steps is not None and step >= config.train.max_steps
        frozen: bool | None = None
        while epoch < config.train.epochs and not stop:
            freeze = epoch < config.optim.freeze_encoder_epochs
            # Every parameter starts trainable: only a freeze, or a later thaw, changes anything.
            changed = freeze != frozen and (freeze or frozen is not None)
            frozen = freeze
            if changed:
                for p in encoder_params:
                    p.requires_grad_(not freeze)
                log.info("encoder %s from epoch %d", "frozen" if freeze else "trained", epoch + 1)
                if dist.initialised:
                    # DDP fixes the set of gradients it reduces when wrapping: wrap again.
                    ddp_ids = [device.index] if device.type == "cuda" else None
                    model = torch.nn.parallel.DistributedDataParallel(
                        _unwrap(model), device_ids=ddp_ids
                    )
            model.train()
            sampler.set_epoch(epoch, start=step_in_epoch * batch)
            loader = _make_loader(train_set, sampler, batch, config.data.num_workers, device)
            t0 = epoch_start = time.monotonic()
            bar = tqdm(
                loader,
                total=steps_per_epoch,
                initial=step_in_epoch,
                mininterval=2.0,
                desc=f"epoch {epoch + 1}/{config.train.epochs}",
                disable=not dist.is_main or None,
                dynamic_ncols=True,
            )
            for batch_data in bar:
                image = batch_data["image"].to(device, non_blocking=True)
                target = batch_data["target"].to(device, non_blocking=True)
                mask = batch_data["mask"].to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                    pred = model(image)
                loss, terms = _supervised_loss(
                    pred.float(), batch_data, target, mask, device, config, loss_kwargs
                )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if config.optim.grad_clip_norm:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip_norm)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step += 1
                step_in_epoch += 1
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise ModelError(f"training diverged: loss {value} at step {step}")
                epoch_loss_sum += value
                epoch_loss_n += 1
                history.steps.append(
                    {
                        "step": step,
                        "epoch": epoch,
                        "loss": value,
                        "lr": optimizer.param_groups[0]["lr"],
                        **terms,
                    }
                )
                bar.set_postfix(loss=f"{value:.4f}", refresh=False)
                stop = config.train.max_steps is not None and step >= config.train.max_steps
                end_of_epoch = step_in_epoch >= steps_per_epoch
                if not end_of_epoch and (
                    stop
                    or (
                        config.train.checkpoint_every_steps
                        and step % config.train.checkpoint_every_steps == 0
                    )
                ):
                    train_time += time.monotonic() - t0
                    t0 = time.monotonic()
                    checkpoint(epoch, step_in_epoch)
                if stop:
                    break
            bar.close()
            train_time += time.monotonic() - t0
            if step_in_epoch < steps_per_epoch:
                break  # stopped by max_steps mid-epoch: the checkpoint above resumes it
            # --- end of epoch: validate, keep the best, log, checkpoint
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "step": step,
                "train_loss": epoch_loss_sum / max(1, epoch_loss_n),
                "lr": optimizer.param_groups[0]["lr"],
                "epoch_time_s": time.monotonic() - epoch_start,
                "train_time_s": train_time,
            }
            if dist.is_main:
                val = evaluate(
                    _unwrap(model),
                    val_loader,
                    device,
                    train_fx,
                    config.data.eval_min_depth_m,
                    config.data.eval_max_depth_m,
                    loss_kwargs,
                    desc="validating",
                )
                row.update({f"val_{k}": v for k, v in val.items()})
                if config.train.best_metric not in val:
                    raise ConfigError(
                        f"train.best_metric {config.train.best_metric!r} is not among the "
                        f"validation metrics {sorted(val)} (aux_* needs a data set with a second "
                        "depth source)"
                    )
                metric = val[config.train.best_metric]
                better = best_value is None or (
                    metric < best_value
                    if config.train.best_metric.removeprefix("aux_") in LOWER_IS_BETTER
                    else metric > best_value
                )
                if better and math.isfinite(metric):
                    best_value, best_epoch = float(metric), epoch + 1
                    best_state = _state_dict_cpu(model)
                    _save_torch(best_state, run_dir / "best_model.pt")
                history.epochs.append(row)
                _write_jsonl(run_dir / "metrics.jsonl", history.epochs)
                _write_csv(run_dir / "metrics.csv", history.epochs)
                _plot(run_dir / "loss_curves.png", history.epochs, history.steps)
                tracker.log_metrics(
                    {k: v for k, v in row.items() if isinstance(v, float) and math.isfinite(v)},
                    step=epoch + 1,
                )
                log.info(
                    "epoch %d/%d: train loss %.4f, val loss %.4f, AbsRel %.4f, a1 %.4f, "
                    "RMSE %.2f m (best epoch %d)",
                    epoch + 1,
                    config.train.epochs,
                    row["train_loss"],
                    val.get("loss", math.nan),
                    val["abs_rel"],
                    val["a1"],
                    val["rmse"],
                    best_epoch,
                )
            epoch += 1
            step_in_epoch = 0
            epoch_loss_sum, epoch_loss_n = 0.0, 0
            checkpoint(epoch, 0)
            dist.barrier()

        # --- final package of the best model (rank 0)
        if dist.is_main:
            final = _unwrap(model)
            if best_state is not None:
                final.load_state_dict(best_state)
            else:
                log.warning("no epoch completed: the package holds the last, unvalidated weights")
            final.eval()
            metrics: dict[str, dict[str, float] | None] = {}
            best_row = next((r for r in history.epochs if r["epoch"] == best_epoch), None)
            if best_row is not None:
                metrics["val (best epoch)"] = {m: best_row[f"val_{m}"] for m in METRIC_NAMES}
            if "test" in eval_sets:
                test_loader = _make_loader(
                    eval_sets["test"], None, config.train.val_batch_size, 0, device
                )
                test_metrics = evaluate(
                    final,
                    test_loader,
                    device,
                    train_fx,
                    config.data.eval_min_depth_m,
                    config.data.eval_max_depth_m,
                    desc="testing",
                )
                metrics["test"] = test_metrics
                tracker.log_metrics({f"test_{k}": v for k, v in test_metrics.items()}, step=epoch)
            summary = {
                "epochs_run": epoch,
                "steps": step,
                "world_size": dist.world_size,
                "device": str(device),
                "amp": use_amp,
                "train_time_s": train_time,
                "best_epoch": best_epoch,
                "wall_time_s": time.monotonic() - wall_start,
            }
            _finish_package(
                final.to("cpu"), spec, run_dir, config, command, cost, metrics, summary, versions
            )
            atomic_write_text(
                run_dir / "summary.json",
                json.dumps({**summary, "metrics": metrics, "cost": cost}, indent=2) + "\n",
            )
            if config.tracking.log_package:
                for name in ("package", "loss_curves.png", "metrics.csv", "config.yaml"):
                    if (run_dir / name).exists():
                        where = "package" if name == "package" else None
                        tracker.log_artifact(run_dir / name, where)
            log.info("model package written to %s", run_dir / "package")
        dist.barrier()
        status = "FINISHED"
        return run_dir
    finally:
        tracker.close(status)
        if file_handler is not None:
            logging.getLogger("cloudypoints_core").removeHandler(file_handler)
            file_handler.close()
        if dist.initialised:
            torch.distributed.destroy_process_group()


def _finish_package(
    model: Any,
    spec: ModelSpec,
    run_dir: Path,
    config: TrainingConfig,
    command: str,
    cost: Mapping[str, float],
    metrics: Mapping[str, Mapping[str, float] | None],
    summary: Mapping[str, Any],
    versions: Mapping[str, str],
) -> None:
    from cloudypoints_core.inference.export import export_package
    from cloudypoints_core.training.model_card import render_model_card

    card = render_model_card(
        spec,
        config,
        command=command,
        cost=cost,
        metrics=metrics,
        summary=summary,
        versions=versions,
    )
    export_package(model, spec, run_dir / "package", model_card=card)
