"""The auto-generated MODEL_CARD.md of a trained model package and the run's library versions."""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cloudypoints_core.evaluation.metrics import METRIC_NAMES
from cloudypoints_core.inference.spec import ModelSpec
from cloudypoints_core.training.config import TrainingConfig

__all__ = ["library_versions", "render_model_card"]

_METRIC_TITLES = {
    "abs_rel": "AbsRel",
    "sq_rel": "SqRel",
    "rmse": "RMSE (m)",
    "rmse_log": "RMSE log",
    "a1": "δ<1.25",
    "a2": "δ<1.25²",
    "a3": "δ<1.25³",
}


def library_versions() -> dict[str, str]:
    """Versions of Python, the libraries training touches and the git commit (if any)."""
    import importlib.metadata

    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in (
        "torch",
        "numpy",
        "onnx",
        "onnxruntime",
        "opencv-python-headless",
        "PyYAML",
        "mlflow-skinny",
    ):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if commit.returncode == 0 and commit.stdout.strip():
            versions["git_commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return versions


def _metrics_table(rows: Mapping[str, Mapping[str, float] | None]) -> str:
    header = "| split | " + " | ".join(_METRIC_TITLES[m] for m in METRIC_NAMES) + " |"
    sep = "|---|" + "---:|" * len(METRIC_NAMES)
    lines = [header, sep]
    for split, metrics in rows.items():
        if metrics is None:
            continue
        values = " | ".join(f"{metrics[m]:.3f}" for m in METRIC_NAMES)
        lines.append(f"| {split} | {values} |")
    return "\n".join(lines)


def render_model_card(
    spec: ModelSpec,
    config: TrainingConfig,
    *,
    command: str,
    cost: Mapping[str, float],
    metrics: Mapping[str, Mapping[str, float] | None],
    summary: Mapping[str, Any],
    versions: Mapping[str, str],
) -> str:
    """MODEL_CARD.md text: the model, its data, the exact command and config, and its metrics."""
    data = config.data
    splits = "\n".join(
        f"- {split}: `{dict(opts)}`"
        for split, opts in (("train", data.train), ("val", data.val), ("test", data.test))
        if opts
    )
    lines = [
        f"# Model card: {spec.name}",
        "",
        "Monocular metric depth network for CloudyPoints (RGB in, z-depth in metres out).",
        "",
        "## Model",
        f"- Architecture: `{spec.architecture}` with `{dict(spec.arch_config)}`",
        f"- Input: {spec.input_width}x{spec.input_height} {spec.channel_order.upper()}, "
        f"mean {list(spec.mean)}, std {list(spec.std)} (on pixel / 255), resize policy "
        f"`{spec.resize_policy}`",
        f"- Output: `{spec.output_kind}` in metres, valid range "
        f"[{spec.min_depth_m:g}, {spec.max_depth_m:g}] m (outside is NaN)",
        f"- Canonical focal length `train_fx_px` = {spec.train_fx_px:.3f} px at the input "
        "resolution: for another camera depth is multiplied by fx_camera_at_input / train_fx_px",
        f"- Parameters: {cost['params_m']:.2f} M; cost {cost['gflops']:.3f} GFLOPs "
        "(multiply-accumulates) per frame",
        "",
        "## Training data",
        f"- Data set: `{data.dataset}`",
        splits,
        "- SynthCity seeds >= 1000000 are the held-out test set, never used for training or "
        "validation."
        if data.dataset == "synthcity"
        else "",
        "",
        "## How it was trained",
        f"- Command: `{command}`",
        f"- Seed: {config.train.seed}; epochs run: {summary.get('epochs_run')}; optimiser steps: "
        f"{summary.get('steps')}; batch size {config.train.batch_size} x world size "
        f"{summary.get('world_size', 1)}",
        f"- Optimiser: AdamW lr {config.optim.lr:g}, weight decay {config.optim.weight_decay:g}, "
        f"{config.optim.schedule} schedule with {config.optim.warmup_frac:.0%} warm-up, gradient "
        f"clipping {config.optim.grad_clip_norm}",
        f"- Loss: SILog (lambda {config.optim.silog_lambda:g}) + {config.optim.gradient_weight:g} "
        f"x gradient matching on log depth ({config.optim.gradient_scales} scales)",
        f"- Device: {summary.get('device')}; mixed precision: {summary.get('amp')}",
        f"- Training time: {summary.get('train_time_s', 0.0) / 60:.1f} min wall clock",
        f"- Best epoch (by validation {config.train.best_metric}): {summary.get('best_epoch')}",
        "- Libraries: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        "",
        "## Held-out metrics",
        f"Ground truth in ({data.eval_min_depth_m:g}, {data.eval_max_depth_m:g}) m, prediction "
        "clamped to that range, no median scaling (metric), per image then averaged.",
        "",
        _metrics_table(metrics),
        "",
        "## Limitations",
        "- Trained on the data above only; expect a domain gap on other cameras and scenes "
        "(for SynthCity-trained models: on real images).",
        "- Metric scale holds for cameras whose intrinsics are given; mounting height and pitch "
        "far from the training data's degrade it.",
        "",
        "## Full configuration",
        "```yaml",
        config.to_yaml().rstrip(),
        "```",
        "",
    ]
    return "\n".join(line for line in lines if line is not None)
