"""Model cards generated from evaluation results (and, when given, the training run).

The card states what the model is, the data and command it was trained with, how it scores under
which protocol (median scaling stated), the plots, and what it is and is not meant for. Plots are
copied into an assets folder beside the card so that the card travels with a model package.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cloudypoints_core.errors import ConfigError
from cloudypoints_core.evaluation.protocols import coverage_warning
from cloudypoints_core.evaluation.report import (
    markdown_table,
    metrics_table,
    read_results_json,
)
from cloudypoints_core.io import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

#: Files of a training run folder the card quotes, in order of preference per role.
_CONFIG_FILES = ("config.yaml", "config.yml", "resolved_config.yaml", "config.json")
#: ``summary.json`` is what ``cloudypoints train`` writes; the others are for runs from elsewhere.
_RUN_INFO_FILES = ("summary.json", "run.json", "run_info.json", "meta.json")
_COMMAND_FILES = ("command.txt", "cmd.txt")
_RUN_PLOTS = ("loss_curves.png",)
#: Facts of a run's summary the card lists, in this order, when present.
_RUN_FACTS = (
    "epochs_run",
    "epochs",
    "steps",
    "best_epoch",
    "world_size",
    "device",
    "amp",
    "train_time_s",
    "wall_time_s",
    "seed",
    "git_commit",
)
#: Most configuration text a card quotes before cutting it (the file is linked anyway).
_MAX_CONFIG_CHARS = 6000

INTENDED_USE = """\
- Per-pixel metric depth (metres along the optical axis) from one forward-looking RGB camera on a
  road vehicle or robot in daytime urban streets, at the ranges the evaluation covers (up to
  80 m), turned into point clouds by the CloudyPoints ROS 2 node or the `cloudypoints` tools.
- Research, prototyping, visualisation, offline mapping experiments and as a baseline to compare
  other depth sources against."""

LIMITS = """\
- Not a safety component: do not use it as the only obstacle or free-space sensor of a vehicle
  or robot. Errors grow with distance (see the distance bands) and are largest on thin
  structures, object boundaries, reflective, transparent and textureless surfaces.
- Metric scale relies on correct intrinsics: the network's output is rescaled by the camera's
  focal length (canonical-camera rule), so wrong or missing calibration gives wrongly scaled
  depth. Results obtained with median scaling do not show that metric scale is right.
- Outside the training distribution (other countries or road layouts, night, rain, snow, glare,
  indoor scenes, fisheye or strongly distorted lenses, unusual camera heights or pitch, images
  with the hood or other ego-vehicle parts in view) accuracy is unknown and likely worse.
- Sky and anything past the valid range come out as invalid (NaN), not as far depth.
- Cityscapes ground truth comes from stereo matching: it has holes, is noisy far away and
  misses thin structures; its numbers bound what the evaluation can show."""


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def read_train_run(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """What a training-run folder tells about the model: config text, command, run info, files."""
    root = Path(run_dir)
    if not root.is_dir():
        raise ConfigError(
            f"training run {root} is not a folder (pass the run directory "
            "'cloudypoints train' printed)"
        )
    info: dict[str, Any] = {
        "path": str(root.resolve()),
        "files": sorted(p.name for p in root.iterdir() if not p.name.startswith(".")),
    }
    for name in _CONFIG_FILES:
        text = _read_text(root / name)
        if text is not None:
            info["config_file"] = name
            info["config_text"] = text
            break
    for name in _RUN_INFO_FILES:
        text = _read_text(root / name)
        if text is None:
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict):
            info["run_file"] = name
            info["run"] = data
            break
    for name in _COMMAND_FILES:
        text = _read_text(root / name)
        if text is not None:
            info["command"] = text.strip()
            break
    run = info.get("run", {})
    if "command" not in info and isinstance(run.get("command"), (str, list)):
        command = run["command"]
        info["command"] = command if isinstance(command, str) else " ".join(map(str, command))
    text = _read_text(root / "versions.json")
    if text is not None:
        try:
            versions = json.loads(text)
        except json.JSONDecodeError:
            versions = None
        if isinstance(versions, dict):
            info["versions"] = versions
    if info.get("config_text") and info.get("config_file", "").endswith((".yaml", ".yml")):
        try:
            import yaml

            parsed = yaml.safe_load(info["config_text"])
        except Exception:  # noqa: BLE001 - a config the card cannot parse is quoted verbatim
            parsed = None
        if isinstance(parsed, dict):
            info["config"] = parsed
    for name in _RUN_PLOTS:
        if (root / name).is_file():
            info.setdefault("plots", []).append(name)
    return info


def _copy_plots(
    results: Mapping[str, Any], eval_dir: Path, assets: Path, prefix: str
) -> dict[str, str]:
    copied: dict[str, str] = {}
    for key, name in (results.get("plots") or {}).items():
        source = eval_dir / name
        if not source.is_file():
            log.warning("plot %s listed in %s is missing", source, eval_dir)
            continue
        target = assets / f"{prefix}_{name}"
        with atomic_path(target, fsync=False) as tmp:
            shutil.copyfile(source, tmp)
        copied[key] = target.name
    return copied


def _model_section(model: Mapping[str, Any]) -> list[str]:
    rows = [
        ["name", model.get("name", "?")],
        ["architecture", model.get("architecture", "?")],
        ["output", model.get("output_kind", "?")],
        [
            "input size (W x H)",
            f"{model.get('input_width', '?')} x {model.get('input_height', '?')}",
        ],
        ["training focal length (px at input size)", model.get("train_fx_px", "-")],
        [
            "valid depth range (m)",
            f"{model.get('min_depth_m', '?')} - {model.get('max_depth_m', '?')}",
        ],
        ["package", f"`{model.get('path', '?')}`"],
    ]
    return ["## Model details", "", markdown_table(["field", "value"], rows), ""]


def _fact(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _training_section(run: Mapping[str, Any] | None, assets: Path) -> list[str]:
    lines = ["## Training", ""]
    if not run:
        return lines + [
            "No training run was given to the card generator (`--train-run`), so the training "
            "data, command and configuration are not recorded here.",
            "",
        ]
    lines.append(f"Run folder: `{run['path']}`.")
    lines.append("")
    config = run.get("config") or {}
    data = config.get("data") if isinstance(config.get("data"), Mapping) else None
    if data:
        lines += ["### Training data", ""]
        lines.append(
            f"- Data set: `{data.get('dataset', '?')}` at network input "
            f"{data.get('input_width', '?')}x{data.get('input_height', '?')}"
        )
        for split in ("train", "val", "test"):
            if data.get(split):
                lines.append(f"- {split}: `{json.dumps(data[split], sort_keys=True)}`")
        lines.append("")
    if run.get("command"):
        lines += ["### Command", "", "```bash", str(run["command"]), "```", ""]
    info = run.get("run") or {}
    facts = [[key, _fact(info[key])] for key in _RUN_FACTS if key in info]
    if facts:
        lines += ["### Run", "", markdown_table(["", "value"], facts), ""]
    cost = info.get("cost")
    if isinstance(cost, Mapping) and cost:
        lines += [
            "Cost: "
            + ", ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in cost.items()
            ),
            "",
        ]
    metrics = info.get("metrics")
    if isinstance(metrics, Mapping) and any(isinstance(v, Mapping) for v in metrics.values()):
        lines += [
            "Metrics the trainer measured (its own validation/test sets, no median scaling):",
            "",
            metrics_table(
                {k: v for k, v in metrics.items() if isinstance(v, Mapping)}, first="split"
            ),
            "",
        ]
    for name in run.get("plots", []):
        target = assets / f"train_{name}"
        with atomic_path(target, fsync=False) as tmp:
            shutil.copyfile(Path(run["path"]) / name, tmp)
        lines += [f"![{name}]({assets.name}/{target.name})", ""]
    versions = run.get("versions") or info.get("versions")
    if isinstance(versions, Mapping) and versions:
        lines += ["Library versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    if run.get("config_text"):
        text = run["config_text"]
        cut = len(text) > _MAX_CONFIG_CHARS
        lang = "json" if run["config_file"].endswith(".json") else "yaml"
        lines += [
            f"### Configuration (`{run['config_file']}`{', shortened' if cut else ''})",
            "",
            f"```{lang}",
            text[:_MAX_CONFIG_CHARS].rstrip(),
            "```",
            "",
        ]
    return lines


def _coverage(value: Any) -> str:
    if not isinstance(value, (int, float)) or value != value:
        return "-"
    warning = coverage_warning(float(value))
    return f"{value:.4f}" + (f" (**warning**: {warning})" if warning else "")


def _evaluation_section(
    results: Mapping[str, Any], plots: Mapping[str, str], assets: str
) -> list[str]:
    dataset = results.get("dataset", {})
    protocol = results.get("protocol", {})
    backend = results.get("model", {})
    scaling = (
        "with per-image median scaling (scale-ambiguous: metric scale not tested)"
        if protocol.get("median_scaling")
        else "without median scaling (metric depth)"
    )
    lines = [
        f"### {dataset.get('name', '?')}, {scaling}",
        "",
        f"- Data: {dataset.get('description', '?')}",
        f"- Protocol: {protocol.get('summary', protocol.get('name', '?'))}",
        f"- Images: {results.get('n_images', '?')}; backend {backend.get('backend', '?')} on "
        f"{backend.get('device', '?')}; evaluated {results.get('created', '?')}",
        f"- Coverage (pixels with valid ground truth predicted inside the range, not clamped; "
        f"all of them are scored): {_coverage(results.get('coverage_mean'))}",
        "",
        metrics_table({"all pixels": results.get("metrics")}, first=""),
        "",
    ]
    bands = results.get("bands") or {}
    if bands:
        lines += [
            "By ground-truth distance:",
            "",
            metrics_table({k: v.get("metrics") for k, v in bands.items()}, first="band"),
            "",
        ]
    for note in results.get("notes") or []:
        lines.append(f"- Note: {note}")
    if results.get("notes"):
        lines.append("")
    for key, title in (
        ("examples", "Examples (RGB, ground truth, prediction, AbsRel)"),
        ("error_vs_distance", "AbsRel against distance"),
        ("bands", "Errors by distance band"),
    ):
        if key in plots:
            lines += [f"![{title}]({assets}/{plots[key]})", ""]
    return lines


def write_model_card(
    eval_dirs: Sequence[str | os.PathLike[str]],
    out_path: str | os.PathLike[str],
    *,
    train_run: str | os.PathLike[str] | None = None,
    title: str | None = None,
) -> Path:
    """Write a Markdown model card from evaluation folders (and a training run) to ``out_path``.

    Plots go to ``<card stem>_assets/`` beside the card. Returns the card's path.
    """
    if not eval_dirs:
        raise ConfigError("a model card needs at least one evaluation folder (--eval)")
    out = Path(out_path)
    if out.suffix.lower() != ".md":
        raise ConfigError(f"the model card must be a .md file, got {out}")
    assets = out.parent / f"{out.stem}_assets"
    evaluations = []
    for i, eval_dir in enumerate(eval_dirs):
        folder = Path(eval_dir)
        results = read_results_json(folder)
        plots = _copy_plots(
            results, folder if folder.is_dir() else folder.parent, assets, f"eval{i}"
        )
        evaluations.append((results, plots))
    run = read_train_run(train_run) if train_run is not None else None
    model = evaluations[0][0].get("model", {})
    names = {r.get("model", {}).get("name") for r, _ in evaluations}
    if len(names) > 1:
        log.warning(
            "the evaluations are of different models: %s; the card describes %s",
            sorted(map(str, names)),
            model.get("name"),
        )
    today = _dt.date.today().isoformat()
    lines = [
        f"# Model card: {title or model.get('name', 'depth model')}",
        "",
        f"Generated by `cloudypoints card` on {today} from "
        f"{len(evaluations)} evaluation(s)" + (" and the training run." if run else "."),
        "",
    ]
    lines += _model_section(model)
    lines += [
        "## Intended use",
        "",
        INTENDED_USE,
        "",
        "## Limits and out-of-scope use",
        "",
        LIMITS,
        "",
    ]
    lines += _training_section(run, assets)
    lines += [
        "## Evaluation",
        "",
        "Metrics as monodepth2 defines them, per image then averaged over images: AbsRel, "
        "SqRel, RMSE (m), RMSE log (lower is better), and the share of pixels with "
        "max(gt/pred, pred/gt) below 1.25, 1.25², 1.25³ (higher is better).",
        "",
    ]
    for results, plots in evaluations:
        lines += _evaluation_section(results, plots, assets.name)
    package = model.get("path", "MODEL_DIR")
    lines += [
        "## How to use",
        "",
        "One image (give the camera's intrinsics at that image's size, or a Cityscapes camera "
        "JSON):",
        "",
        "```bash",
        f"cloudypoints predict --model {package} --image frame.png --fx 2262.5 --out depth/",
        "```",
        "",
        f"In ROS 2, set the node parameter `model_path: {package}` (see `config/depth.yaml`).",
        "",
    ]
    atomic_write_text(out, "\n".join(lines))
    log.info("model card written to %s", out)
    return out
