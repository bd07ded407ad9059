"""Evaluation outputs: ``results.json``, ``per_image.csv`` and ``report.md`` (with its plots).

Everything is written atomically, so a report folder never holds a half-written file; the JSON is
the machine-readable record (the model card is generated from it), the Markdown the human one.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cloudypoints_core.errors import ConfigError
from cloudypoints_core.evaluation.metrics import METRIC_NAMES
from cloudypoints_core.io import atomic_write_text

RESULTS_FILE = "results.json"
PER_IMAGE_FILE = "per_image.csv"
REPORT_FILE = "report.md"

#: Column titles of the metric tables (the literature's notation).
METRIC_TITLES: Mapping[str, str] = {
    "abs_rel": "AbsRel",
    "sq_rel": "SqRel",
    "rmse": "RMSE",
    "rmse_log": "RMSE log",
    "a1": "δ<1.25",
    "a2": "δ<1.25²",
    "a3": "δ<1.25³",
}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (cells converted with ``str``; pipes escaped)."""

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(cell(h) for h in header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def format_metric(name: str, value: float | None) -> str:
    """Three decimals as the papers print them (errors and accuracies alike); '-' if missing."""
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.3f}"


def metrics_row(metrics: Mapping[str, float] | None) -> list[str]:
    return [format_metric(n, (metrics or {}).get(n)) for n in METRIC_NAMES]


def metrics_table(rows: Mapping[str, Mapping[str, float] | None], first: str = "") -> str:
    """One row per entry of ``rows`` (label -> metrics), columns in the literature's order."""
    header = [first, *(METRIC_TITLES[n] for n in METRIC_NAMES)]
    return markdown_table(header, [[label, *metrics_row(m)] for label, m in rows.items()])


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf floats as None: JSON has no NaN and strict readers refuse it."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_results_json(results: Mapping[str, Any], out_dir: str | Path) -> Path:
    text = json.dumps(json_safe(dict(results)), indent=2, default=_json_default)
    return atomic_write_text(Path(out_dir) / RESULTS_FILE, text + "\n")


def read_results_json(eval_dir: str | Path) -> dict[str, Any]:
    """The ``results.json`` of an evaluation folder (or the file itself)."""
    path = Path(eval_dir)
    if path.is_dir():
        path = path / RESULTS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{path} does not exist: pass the folder written by 'cloudypoints evaluate --out'"
        ) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not a readable results file: {exc}") from exc
    if not isinstance(data, dict) or "metrics" not in data or "protocol" not in data:
        raise ConfigError(f"{path} is not an evaluation results file (no 'metrics'/'protocol')")
    return data


def write_per_image_csv(rows: Sequence[Mapping[str, Any]], out_dir: str | Path) -> Path:
    """One line per image; columns are the union of the rows' keys in first-seen order."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(row.get(k)) for k in columns})
    return atomic_write_text(Path(out_dir) / PER_IMAGE_FILE, buffer.getvalue())


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.6g}"
    return value


def evaluation_markdown(results: Mapping[str, Any], per_image: Sequence[Mapping[str, Any]]) -> str:
    """The report text for ``results`` (as written to results.json)."""
    model = results.get("model", {})
    dataset = results.get("dataset", {})
    protocol = results["protocol"]
    lines = [f"# Depth evaluation: {model.get('name', '?')} on {dataset.get('name', '?')}", ""]
    scaling = "**ON**" if protocol.get("median_scaling") else "**OFF**"
    lines += [
        f"Per-image median scaling: {scaling}"
        + (
            " (scale-ambiguous evaluation: the metric scale of the model is not tested)."
            if protocol.get("median_scaling")
            else " (metric depth evaluated as predicted)."
        ),
        "",
        "## Setup",
        "",
        f"- Model: `{model.get('name', '?')}` ({model.get('architecture', '?')}, "
        f"{model.get('output_kind', '?')}, input {model.get('input_width', '?')}x"
        f"{model.get('input_height', '?')}) from `{model.get('path', '?')}`",
        f"- Backend: {model.get('backend', '?')} on {model.get('device', '?')}",
        f"- Data: {dataset.get('description', dataset.get('name', '?'))}",
        f"- Images evaluated: {results.get('n_images', 0)} of "
        f"{results.get('n_images_requested', 0)}",
        f"- Protocol: {protocol.get('summary', protocol.get('name'))}",
        f"- Model input view: {', '.join(results.get('model_input_views', [])) or '-'}",
        "- Evaluated window(s) (rows, columns; end exclusive): "
        + (
            ", ".join(
                f"[{w[0]}, {w[1]}) x [{w[2]}, {w[3]})" for w in results.get("windows_px", [])
            )
            or "-"
        ),
        f"- Mean coverage (pixels with valid ground truth predicted inside the range, not "
        f"clamped; every such pixel is scored): {results.get('coverage_mean', float('nan')):.4f}",
        f"- Scale methods used by the model: {results.get('scale_methods', {})}",
        "",
    ]
    notes = results.get("notes") or []
    if notes:
        lines += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["## Metrics (per image, then averaged)", ""]
    lines.append(metrics_table({"all": results["metrics"]}, first="pixels"))
    lines += [
        "",
        "Lower is better for AbsRel, SqRel, RMSE (m) and RMSE log; higher for the δ accuracies.",
        "",
        "## By distance band (ground-truth depth)",
        "",
    ]
    bands = results.get("bands", {})
    band_rows = {
        f"{label} ({entry.get('n_images', 0)} img, {entry.get('n_pixels', 0):,} px)": entry.get(
            "metrics"
        )
        for label, entry in bands.items()
    }
    lines.append(metrics_table(band_rows, first="band"))
    plots = results.get("plots", {})
    titles = [
        ("examples", "Colourised depth beside ground truth, with the AbsRel error map"),
        ("error_vs_distance", "Error against distance (pixel-weighted AbsRel per 2 m bin)"),
        ("bands", "Errors by distance band"),
        ("per_image_abs_rel", "Per-image AbsRel"),
    ]
    lines += [""]
    for key, title in titles:
        if key in plots:
            lines += [f"### {title}", "", f"![{key}]({plots[key]})", ""]
    scored = [r for r in per_image if r.get("abs_rel") is not None and r.get("abs_rel") != ""]
    if scored:
        worst = sorted(scored, key=lambda r: -float(r["abs_rel"]))[:5]
        lines += ["## Worst images by AbsRel", ""]
        lines.append(
            markdown_table(
                ["key", "AbsRel", "RMSE", "δ<1.25", "coverage"],
                [
                    [
                        r["key"],
                        format_metric("abs_rel", float(r["abs_rel"])),
                        format_metric("rmse", float(r["rmse"])),
                        format_metric("a1", float(r["a1"])),
                        f"{float(r['coverage']):.3f}",
                    ]
                    for r in worst
                ],
            )
        )
        lines += [
            "",
            f"Every image: [{PER_IMAGE_FILE}]({PER_IMAGE_FILE}); machine-readable "
            f"summary: [{RESULTS_FILE}]({RESULTS_FILE}).",
            "",
        ]
    timing = results.get("timing_ms") or {}
    if timing:
        lines += [
            f"Inference time per image: {timing.get('mean', float('nan')):.1f} ms mean "
            f"({model.get('backend', '?')}, {model.get('device', '?')}, includes pre- and "
            "post-processing).",
            "",
        ]
    return "\n".join(lines)


def write_evaluation_report(
    results: Mapping[str, Any], per_image: Sequence[Mapping[str, Any]], out_dir: str | Path
) -> dict[str, Path]:
    """Write results.json, per_image.csv and report.md into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    return {
        "results": write_results_json(results, out),
        "per_image": write_per_image_csv(per_image, out),
        "report": atomic_write_text(out / REPORT_FILE, evaluation_markdown(results, per_image)),
    }
