"""Evaluate a depth model on a rosbag2 without ROS, and the scoring and report shared with replay.

Offline: frames are read from the bag (:mod:`.reader`), run through the node's inference facade
(``DepthEstimator.predict(..., output_resolution="input")``) and scored against the bag's
ground-truth depth under an evaluation protocol (:mod:`cloudypoints_core.evaluation.protocols`:
crop window, valid range, clamping, optional median scaling). Live replay
(``cloudypoints_ros.replay_evaluator``) scores the node's ``depth/image`` with the same
:func:`score_frame` and writes the same report with :func:`write_report`, so the two agree on
every frame both saw.

Report folder (the evaluation report's files, see :mod:`cloudypoints_core.evaluation.report`):
``results.json`` (mean metrics, protocol, model, frame accounting, latency statistics, the
``partial`` flag with its reasons, warnings), ``per_image.csv`` (one row per frame), ``report.md``
and plots (``examples.png``, ``per_image_abs_rel.png``, ``metrics_per_frame.png``,
``latency.png``).
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cloudypoints_core.errors import BagError, CloudyPointsError, ConfigError
from cloudypoints_core.evaluation.metrics import METRIC_NAMES, mean_errors
from cloudypoints_core.evaluation.protocols import (
    EvalProtocol,
    coverage_warning,
    get_protocol,
    scored_depth,
)

log = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
PER_FRAME_FILE = "per_image.csv"
REPORT_FILE = "report.md"
#: Per-frame statuses: scored, no ground truth, ground truth without a valid pixel, failed.
STATUSES: tuple[str, ...] = ("ok", "no_gt", "no_valid_pixels", "error")
#: Columns of per_image.csv, in order (latency columns a run does not measure stay empty).
CSV_COLUMNS: tuple[str, ...] = (
    "key",
    "index",
    "stamp_ns",
    "status",
    *METRIC_NAMES,
    "n_gt_valid",
    "n_evaluated",
    "coverage",
    "median_scale_ratio",
    "read_ms",
    "inference_ms",
    "metrics_ms",
    "end_to_end_ms",
    "note",
)
#: Frames drawn in examples.png (evenly spread over the bag).
N_EXAMPLES = 4
#: Protocol names ``--protocol`` takes; ``auto`` follows the bag's source (converter metadata).
PROTOCOL_CHOICES: tuple[str, ...] = ("auto", "whole_frame", "cityscapes", "synthcity")

#: Any bag: the whole frame, ground truth in (1e-3, 80) m, prediction clamped to that range.
WHOLE_FRAME_PROTOCOL = EvalProtocol(
    name="whole_frame",
    description="whole frame, ground truth in (0.001, 80) m, prediction clamped to that range",
)


def make_protocol(
    name: str = "auto",
    source: str | None = None,
    *,
    median_scaling: bool = False,
    min_depth_m: float | None = None,
    max_depth_m: float | None = None,
) -> EvalProtocol:
    """The protocol called ``name``; ``auto`` picks ``cityscapes`` or ``synthcity`` from the
    bag's source (its ``cloudypoints.source`` metadata), else ``whole_frame``."""
    if name not in PROTOCOL_CHOICES:
        raise ConfigError(f"protocol must be one of {list(PROTOCOL_CHOICES)}, got {name!r}")
    if name == "auto":
        name = source if source in ("cityscapes", "synthcity") else "whole_frame"
    protocol = WHOLE_FRAME_PROTOCOL if name == "whole_frame" else get_protocol(name)
    changes: dict[str, Any] = {"median_scaling": bool(median_scaling)}
    if min_depth_m is not None:
        changes["min_depth_m"] = float(min_depth_m)
    if max_depth_m is not None:
        changes["max_depth_m"] = float(max_depth_m)
    return protocol.with_options(**changes)


@dataclass(frozen=True)
class FrameScore:
    """Score of one prediction against its ground truth (``metrics`` None unless status ok)."""

    status: str
    metrics: dict[str, float] | None = None
    n_gt_valid: int = 0
    n_evaluated: int = 0
    #: Fraction of valid ground-truth pixels that also have a valid (finite, > 0) prediction.
    coverage: float = float("nan")
    median_scale: float = 1.0
    note: str = ""
    #: Metrics per distance band (label -> metrics or None) and the AbsRel-by-distance sums.
    bands: dict[str, dict[str, float] | None] = field(default_factory=dict)
    curve_sums: npt.NDArray[np.float64] | None = None
    curve_counts: npt.NDArray[np.int64] | None = None
    #: Evaluated window (row0, row1, col0, col1) at the ground truth's resolution.
    window: tuple[int, int, int, int] | None = None


def score_frame(
    gt_m: npt.NDArray[np.floating[Any]] | None,
    pred_m: npt.NDArray[np.floating[Any]],
    protocol: EvalProtocol = WHOLE_FRAME_PROTOCOL,
    *,
    detailed: bool = False,
) -> FrameScore:
    """Score ``pred_m`` against ``gt_m`` (both metres); never raises on bad data.

    The evaluation module's one scoring function,
    :func:`~cloudypoints_core.evaluation.protocols.evaluate_image`: every pixel of the window
    with ground truth strictly inside (min_depth_m, max_depth_m) is scored, the prediction
    optionally median-scaled, then clamped to the range with NaN at the far edge (what the node
    publishes for "beyond the valid range"). Offline evaluation passes the facade's unmasked
    prediction, live replay the published depth. ``detailed`` adds distance bands and the
    AbsRel-by-distance curve (the metrics are the same). A prediction at another resolution
    than the ground truth is resampled to it first (``resize_prediction``), as ``note`` says.
    """
    from cloudypoints_core.evaluation.protocols import evaluate_image, resize_prediction

    if gt_m is None:
        return FrameScore("no_gt", note="no ground truth for this frame")
    gt = np.asarray(gt_m, dtype=np.float32)
    pred = np.asarray(pred_m, dtype=np.float32)
    if gt.ndim != 2 or pred.ndim != 2:
        return FrameScore("error", note=f"depth must be 2-D, got gt {gt.shape} pred {pred.shape}")
    note = ""
    if pred.shape != gt.shape:
        note = (
            f"prediction {pred.shape[1]}x{pred.shape[0]} resampled to gt "
            f"{gt.shape[1]}x{gt.shape[0]}"
        )
        pred = resize_prediction(pred, gt.shape[0], gt.shape[1])
    try:
        ev = evaluate_image(protocol, gt, pred, detailed=detailed)
    except CloudyPointsError as exc:
        return FrameScore("error", note="; ".join(filter(None, [note, str(exc)])))
    if ev.metrics is None:
        return FrameScore(
            "no_valid_pixels",
            note="; ".join(filter(None, [note, "no valid ground truth pixel"])),
            window=ev.window,
        )
    return FrameScore(
        "ok",
        dict(ev.metrics),
        ev.n_gt_valid,
        ev.n_evaluated,
        ev.coverage,
        ev.scale_ratio,
        note,
        dict(ev.bands),
        ev.curve_sums,
        ev.curve_counts,
        ev.window,
    )


# ------------------------------------------------------------------------------------- report
def latency_stats(values_s: Sequence[float | None]) -> dict[str, float] | None:
    """Mean and percentiles in milliseconds of durations given in seconds (None if empty)."""
    vals = np.asarray(
        [v for v in values_s if v is not None and math.isfinite(v)], dtype=np.float64
    )
    if vals.size == 0:
        return None
    ms = vals * 1e3
    return {
        "n": int(ms.size),
        "mean_ms": float(ms.mean()),
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
    }


@dataclass
class EvalReport:
    """Everything a report folder holds; built by the offline and the live evaluators alike."""

    kind: str  # "offline" or "live"
    bag: str
    protocol: EvalProtocol
    rows: list[dict[str, Any]] = field(default_factory=list)
    partial_reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: Extra top-level entries of results.json (bag info, topics, model, live counters, ...).
    info: dict[str, Any] = field(default_factory=dict)
    #: Durations in seconds per frame, by stage ("read", "inference", "metrics", "end_to_end").
    timings: dict[str, list[float]] = field(default_factory=dict)
    wall_s: float = 0.0
    #: Example frames for examples.png: dicts with title, rgb (or None), gt, pred (m).
    examples: list[dict[str, Any]] = field(default_factory=list)
    #: Aggregates over scored frames: per-band metric rows, the distance curve, windows.
    band_rows: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    curve_sums: npt.NDArray[np.float64] | None = None
    curve_counts: npt.NDArray[np.int64] | None = None
    windows: set[tuple[int, int, int, int]] = field(default_factory=set)

    @property
    def partial(self) -> bool:
        return bool(self.partial_reasons)

    def add_row(
        self, index: int, stamp_ns: int, score: FrameScore, **timing_s: float | None
    ) -> None:
        row: dict[str, Any] = {name: None for name in CSV_COLUMNS}
        row.update(
            {
                "key": f"frame_{index:05d}",
                "index": index,
                "stamp_ns": int(stamp_ns),
                "status": score.status,
                "n_gt_valid": score.n_gt_valid,
                "n_evaluated": score.n_evaluated,
                "coverage": score.coverage,
                "median_scale_ratio": score.median_scale if self.protocol.median_scaling else None,
                "note": score.note,
            }
        )
        row.update(score.metrics or {})
        for label, band in score.bands.items():
            if band is not None:
                self.band_rows.setdefault(label, []).append(band)
        if score.curve_sums is not None and score.curve_counts is not None:
            if self.curve_sums is None or self.curve_counts is None:
                self.curve_sums = np.zeros_like(score.curve_sums)
                self.curve_counts = np.zeros_like(score.curve_counts)
            self.curve_sums += score.curve_sums
            self.curve_counts += score.curve_counts
        if score.window is not None:
            self.windows.add(tuple(int(v) for v in score.window))  # type: ignore[arg-type]
        for stage, seconds in timing_s.items():
            if seconds is None:
                continue
            row[f"{stage}_ms"] = seconds * 1e3
            self.timings.setdefault(stage, []).append(seconds)
        self.rows.append(row)

    def counts(self) -> dict[str, int]:
        out = {status: 0 for status in STATUSES}
        for row in self.rows:
            out[row["status"]] = out.get(row["status"], 0) + 1
        return out

    def summary(self) -> dict[str, Any]:
        """The results.json content (the evaluation report's keys plus the bag's own)."""
        counts = self.counts()
        scored = [r for r in self.rows if r["status"] == "ok"]
        metrics = mean_errors(scored) if scored else None
        reasons = list(self.partial_reasons)
        if metrics is None and "no frame was scored" not in reasons:
            reasons.append("no frame was scored")
        coverage = [r["coverage"] for r in self.rows if r["status"] == "ok"]
        coverage_mean = float(np.mean(coverage)) if coverage else None
        warnings = list(self.warnings)
        low_coverage = coverage_warning(coverage_mean)
        if low_coverage is not None:
            warnings.insert(0, low_coverage)
        infer = self.timings.get("inference", [])
        protocol = self.protocol
        curve: dict[str, Any] | None = None
        if self.curve_sums is not None and self.curve_counts is not None:
            from cloudypoints_core.evaluation.protocols import DISTANCE_CURVE_EDGES_M

            counts_px = self.curve_counts
            with np.errstate(invalid="ignore", divide="ignore"):
                means = np.where(counts_px > 0, self.curve_sums / np.maximum(counts_px, 1), np.nan)
            curve = {
                "edges_m": list(DISTANCE_CURVE_EDGES_M),
                "abs_rel": means.tolist(),
                "pixels": counts_px.tolist(),
            }
        bands: dict[str, dict[str, Any]] = {}
        for lo, hi in protocol.bands:
            label = f"{lo:g}-{hi:g}m"
            rows = self.band_rows.get(label, [])
            bands[label] = {"n_images": len(rows), "metrics": mean_errors(rows) if rows else None}
            if curve is not None:
                # Pixels per band from the 2 m distance bins (band edges fall on bin edges).
                edges = np.asarray(curve["edges_m"])
                inside = (edges[:-1] >= lo) & (edges[1:] <= hi)
                bands[label]["n_pixels"] = int(np.asarray(curve["pixels"])[inside].sum())
        return {
            "kind": self.kind,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "partial": bool(reasons),
            "partial_reasons": reasons,
            "bag": self.bag,
            "dataset": {
                "name": f"bag {Path(self.bag).name}",
                "description": f"rosbag2 {self.bag} ({self.kind} evaluation)",
            },
            "protocol": {**protocol.to_dict(), "summary": protocol.summary()},
            "median_scaling": protocol.median_scaling,
            "n_images": len(scored),
            "n_images_requested": len(self.rows),
            "frames": {"total": len(self.rows), **counts},
            "metrics": metrics,
            "metrics_std": (
                {n: float(np.std([r[n] for r in scored])) for n in METRIC_NAMES}
                if scored
                else None
            ),
            "bands": bands,
            "abs_rel_vs_distance": curve,
            # The node and the offline path feed the model the whole camera image.
            "model_input_views": ["full"],
            "windows_px": sorted(self.windows),
            "coverage_mean": coverage_mean,
            "latency": {stage: latency_stats(v) for stage, v in self.timings.items()},
            "timing_ms": (
                {"mean": float(np.mean(infer)) * 1e3, "median": float(np.median(infer)) * 1e3}
                if infer
                else None
            ),
            "throughput_fps": (len(self.rows) / self.wall_s) if self.wall_s > 0 else None,
            "wall_s": self.wall_s,
            **self.info,
            # Full precision per frame (the CSV rounds to 6 digits), for comparing runs.
            "per_frame": [
                {k: r[k] for k in ("index", "stamp_ns", "status", *METRIC_NAMES)}
                for r in self.rows
            ],
            "notes": warnings,
            "warnings": warnings,
        }


def write_report(
    report: EvalReport, out_dir: str | os.PathLike[str], *, plots: bool = True
) -> dict[str, Any]:
    """Write results.json, per_image.csv, the plots and report.md into ``out_dir`` (each file
    atomically); return the summary. A failing plot is a warning, never a lost report."""
    from cloudypoints_core.evaluation.report import write_per_image_csv, write_results_json
    from cloudypoints_core.io import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_per_image_csv(report.rows, out)
    written: dict[str, str] = {}
    if plots:
        try:
            written = _write_plots(report, out)
        except Exception as exc:  # plotting is a convenience; the numbers must still land
            report.warnings.append(f"plots not written: {type(exc).__name__}: {exc}")
            log.warning("plots not written: %s", exc)
    summary = report.summary()
    summary["plots"] = written
    write_results_json(summary, out)
    atomic_write_text(out / REPORT_FILE, report_markdown(summary, report.rows))
    return read_back(out)


def read_back(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """results.json as written (NaN became null), for callers that return the summary."""
    import json

    return dict(json.loads((Path(out_dir) / RESULTS_FILE).read_text(encoding="utf-8")))


def report_markdown(summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    """report.md: status, frame accounting, latency, metrics (the evaluation report's tables),
    distance bands when scored in detail, plots and the worst frames."""
    from cloudypoints_core.evaluation.report import format_metric, markdown_table, metrics_table

    plots = summary.get("plots") or {}
    model = summary.get("model") or {}
    lines = [
        f"# {summary['kind'].capitalize()} bag evaluation: {model.get('name', '?')} on "
        f"`{summary['bag']}`",
        "",
    ]
    if summary["partial"]:
        lines += ["**PARTIAL REPORT**: " + "; ".join(summary["partial_reasons"]), ""]
    frames = summary["frames"]
    lines += [
        f"- Frames: {frames['total']} ({frames['ok']} scored, {frames['no_gt']} without ground "
        f"truth, {frames['no_valid_pixels']} without valid pixels, {frames['error']} failed)",
        f"- Model: `{model.get('name', '?')}` from `{model.get('path', '?')}`, backend "
        f"{model.get('backend', '?')} on {model.get('device', '?')}",
        f"- Protocol: {summary['protocol'].get('summary', summary['protocol'].get('name'))}",
    ]
    if summary.get("coverage_mean") is not None:
        lines.append(
            f"- Mean coverage (valid ground truth predicted inside the range, not clamped; "
            f"every such pixel is scored): {summary['coverage_mean']:.4f}"
        )
    if summary.get("dropped_frames") is not None:
        lines.append(
            f"- Live replay: {summary.get('frames_published')} input frames, "
            f"{summary['dropped_frames']} dropped (no depth came back)"
        )
    lines += [
        "",
        "## Metrics (per frame, then averaged)",
        "",
        metrics_table({"all": summary.get("metrics")}, first="frames"),
        "",
    ]
    bands = {
        f"{k} ({v.get('n_images', 0)} frames, {v.get('n_pixels', 0):,} px)": v["metrics"]
        for k, v in (summary.get("bands") or {}).items()
        if v.get("metrics")
    }
    if bands:
        lines += [
            "## By distance band (ground-truth depth)",
            "",
            metrics_table(bands, first="band"),
            "",
        ]
    lat = {k: v for k, v in (summary.get("latency") or {}).items() if v}
    if lat:
        lines += [
            "## Latency per frame",
            "",
            markdown_table(
                ["stage", "n", "mean ms", "p50 ms", "p90 ms", "p99 ms", "max ms"],
                [
                    [
                        k,
                        v["n"],
                        *(
                            f"{v[f]:.2f}"
                            for f in ("mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms")
                        ),
                    ]
                    for k, v in lat.items()
                ],
            ),
            "",
        ]
        if summary.get("throughput_fps"):
            lines += [
                f"Throughput: {summary['throughput_fps']:.2f} frames/s over "
                f"{summary.get('wall_s', 0.0):.1f} s.",
                "",
            ]
    for key, title in (
        ("examples", "Depth beside ground truth, with the AbsRel error map"),
        ("metrics_per_frame", "Metrics along the drive"),
        ("error_vs_distance", "Error against distance"),
        ("bands", "Errors by distance band"),
        ("per_image_abs_rel", "AbsRel per frame"),
        ("latency", "Latency per frame"),
    ):
        if key in plots:
            lines += [f"### {title}", "", f"![{key}]({plots[key]})", ""]
    scored = [r for r in rows if r.get("status") == "ok"]
    if scored:
        worst = sorted(scored, key=lambda r: -float(r["abs_rel"]))[:5]
        lines += [
            "## Worst frames by AbsRel",
            "",
            markdown_table(
                ["frame", "stamp (ns)", "AbsRel", "RMSE", "δ<1.25", "coverage"],
                [
                    [
                        r["key"],
                        r["stamp_ns"],
                        format_metric("abs_rel", r["abs_rel"]),
                        format_metric("rmse", r["rmse"]),
                        format_metric("a1", r["a1"]),
                        f"{r['coverage']:.3f}",
                    ]
                    for r in worst
                ],
            ),
            "",
        ]
    warnings = summary.get("warnings") or []
    if warnings:
        lines += ["## Warnings", "", *[f"- {w}" for w in warnings[:20]], ""]
    lines += [
        f"Every frame: [{PER_FRAME_FILE}]({PER_FRAME_FILE}); machine-readable summary: "
        f"[{RESULTS_FILE}]({RESULTS_FILE}).",
        "",
    ]
    return "\n".join(lines)


def _write_plots(report: EvalReport, out: Path) -> dict[str, str]:
    from cloudypoints_core.evaluation import plots as eplots
    from cloudypoints_core.evaluation.protocols import evaluate_image

    written: dict[str, str] = {}
    ok = [r for r in report.rows if r["status"] == "ok"]
    if report.examples:
        examples = []
        for ex in report.examples:
            # The error map comes from the protocol's own per-pixel evaluation.
            ev = evaluate_image(report.protocol, ex["gt"], ex["pred"], detailed=True)
            rgb = ex["rgb"] if ex["rgb"] is not None else np.zeros((*ex["gt"].shape, 3), np.uint8)
            error_map = ev.abs_rel_map
            if error_map is None:  # a detailed evaluation always has one
                error_map = np.full(ex["gt"].shape, np.nan, np.float32)
            examples.append(
                {
                    "title": ex["title"],
                    "rgb": eplots.thumbnail(rgb),
                    "gt": eplots.thumbnail(ex["gt"]),
                    "pred": eplots.thumbnail(ex["pred"]),
                    "abs_rel": eplots.thumbnail(error_map),
                }
            )
        written["examples"] = eplots.plot_eval_examples(
            examples, out / "examples.png", report.protocol.max_depth_m
        ).name
    if ok:
        written["per_image_abs_rel"] = eplots.plot_per_image_metric(
            [float(r["abs_rel"]) for r in ok], out / "per_image_abs_rel.png"
        ).name
        fig = eplots.new_figure(7.0, 4.0)
        ax1 = fig.add_subplot(2, 1, 1)
        ax1.plot([r["index"] for r in ok], [r["abs_rel"] for r in ok], ".-", color="C3")
        ax1.set_ylabel("AbsRel")
        ax1.set_title(
            f"{report.kind} evaluation per frame" + (" (PARTIAL)" if report.partial else "")
        )
        ax2 = fig.add_subplot(2, 1, 2, sharex=ax1)
        ax2.plot([r["index"] for r in ok], [r["a1"] for r in ok], ".-", color="C2")
        ax2.set_ylabel("δ < 1.25")
        ax2.set_xlabel("frame")
        written["metrics_per_frame"] = eplots.save_figure(fig, out / "metrics_per_frame.png").name
    if report.curve_sums is not None and report.curve_counts is not None:
        from cloudypoints_core.evaluation.protocols import DISTANCE_CURVE_EDGES_M

        with np.errstate(invalid="ignore", divide="ignore"):
            curve = np.where(
                report.curve_counts > 0,
                report.curve_sums / np.maximum(report.curve_counts, 1),
                np.nan,
            )
        written["error_vs_distance"] = eplots.plot_error_vs_distance(
            np.asarray(DISTANCE_CURVE_EDGES_M),
            curve,
            report.curve_counts,
            out / "error_vs_distance.png",
        ).name
    band_means = {k: mean_errors(v) for k, v in report.band_rows.items() if v}
    if band_means:
        written["bands"] = eplots.plot_band_errors(band_means, out / "bands.png").name
    if any(report.timings.values()):
        fig = eplots.new_figure(6.4, 3.4)
        ax = fig.add_subplot(1, 1, 1)
        for stage, values in report.timings.items():
            if values:
                ax.hist(np.asarray(values) * 1e3, bins=30, alpha=0.6, label=stage)
        ax.set_xlabel("ms")
        ax.set_ylabel("frames")
        ax.legend()
        ax.set_title("latency per frame")
        written["latency"] = eplots.save_figure(fig, out / "latency.png").name
    return written


# ------------------------------------------------------------------------------- offline run
_END = object()


def _prefetch(frames: Iterator[Any], depth: int = 2) -> Generator[Any, None, None]:
    """Run ``frames`` in a thread, ``depth`` items ahead: bag reading and image decoding (numpy,
    zlib, libjpeg: they release the GIL) overlap with inference. Exceptions are re-raised here,
    in order; closing this generator stops the thread."""
    buf: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                buf.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for frame in frames:
                if not put(("frame", frame)):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            put(("error", exc))
            return
        put(("end", _END))

    thread = threading.Thread(target=work, name="cloudypoints-bag-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = buf.get()
            if kind == "frame":
                yield item
            elif kind == "error":
                raise item
            else:
                return
    finally:
        stop.set()
        thread.join(timeout=10.0)
        close = getattr(frames, "close", None)
        if close is not None and not thread.is_alive():
            close()


@dataclass(frozen=True)
class _FrameOutcome:
    """One frame through inference and scoring; the images only for an example frame (a long
    bag must not stay in memory)."""

    index: int
    stamp_ns: int
    read_s: float
    score: FrameScore
    infer_s: float | None = None
    metrics_s: float | None = None
    example: dict[str, Any] | None = None
    warning: str | None = None


def _load_estimators(
    model: str | os.PathLike[str] | None,
    backend: str,
    device: str,
    options: dict[str, Any],
    workers: int,
) -> list[Any]:
    """The models of the inference workers (``workers`` 0 = auto, see :func:`evaluate_bag`)."""
    from cloudypoints_core.inference.facade import DepthEstimator

    cores = os.cpu_count() or 1
    onnxruntime = backend in ("auto", "onnxruntime")
    if onnxruntime:
        # Reading and scoring threads share the cores with the network: ONNX Runtime's
        # busy-waiting threads would take them (as in the ROS node; measured in
        # benchmarks/bench_bag_eval.py). Ignored by other backends.
        options.setdefault("allow_spinning", False)
    auto = workers == 0
    if auto:
        workers = min(2, cores) if onnxruntime and str(device) == "cpu" else 1
    split_threads = workers > 1 and "num_threads" not in options
    if split_threads:
        options["num_threads"] = max(1, cores // workers)  # the workers share the cores
    first = DepthEstimator.from_package(model, backend=backend, device=device, **options)
    if auto and workers > 1 and (first.backend_name, first.device) != ("onnxruntime", "cpu"):
        # auto picked another backend: one model with the threads the caller asked for.
        first.close()
        if split_threads:
            del options["num_threads"]
        return [DepthEstimator.from_package(model, backend=backend, device=device, **options)]
    estimators = [first]
    try:
        for _ in range(workers - 1):
            estimators.append(
                DepthEstimator.from_package(model, backend=backend, device=device, **options)
            )
    except BaseException:
        for est in estimators:
            est.close()
        raise
    return estimators


def evaluate_bag(
    bag: str | os.PathLike[str],
    model: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    backend: str = "auto",
    device: str = "cpu",
    image_topic: str | None = None,
    info_topic: str | None = None,
    gt_topic: str | None = None,
    protocol: EvalProtocol | str = "auto",
    median_scaling: bool = False,
    detailed: bool = False,
    max_frames: int | None = None,
    estimator: Any = None,
    estimator_options: Mapping[str, Any] | None = None,
    inference_workers: int = 0,
    progress: bool = True,
    plots: bool = True,
) -> dict[str, Any]:
    """Evaluate ``model`` (a package path; None = the bundled default) on the bag; return the
    summary (and write the report folder when ``out_dir`` is given).

    ``protocol`` is an :class:`EvalProtocol` or a name of :data:`PROTOCOL_CHOICES` (with
    ``median_scaling``); ``detailed`` adds distance bands and the error-against-distance curve
    (:func:`score_frame`). ``estimator`` replaces loading ``model``: any object with the facade's
    ``predict``, or a list of them (one per inference worker); ``estimator_options`` go to
    ``DepthEstimator.from_package``. A bag that cannot be opened or lacks an image topic raises
    :class:`BagError` before the model is loaded and before any report exists; trouble after
    that (a truncated bag, frames without camera info, frames that fail) ends in a report marked
    ``partial`` with the reasons.

    Reading runs one thread ahead of the inference and each frame is scored while the next one
    is inferred. ``inference_workers`` models (when this function loads them; 0 = auto: two on
    a CPU with ONNX Runtime and 2+ cores, each on half the cores, else one) infer consecutive
    frames at once, as the ROS node does: on a CPU that is a fifth to a third more frames/s than
    one model on all cores, which pays for the reading and scoring
    (``benchmarks/bench_bag_eval.py``). Results are in frame order whatever the workers do.
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    from cloudypoints_core._optional import require
    from cloudypoints_core.bags.reader import FrameReader

    tqdm = require("tqdm", "progress bars").tqdm
    reader = FrameReader(bag, image_topic, info_topic, gt_topic, max_frames=max_frames)
    t_start = time.perf_counter()
    frames = _prefetch(iter(reader))
    # The first frame opens the bag and resolves its topics: a bad bag fails here, before the
    # model is loaded (BagError propagates: there is nothing to report yet).
    first: list[Any] = []
    first_error: str | None = None
    try:
        first.append(next(frames))
    except StopIteration:
        pass
    except BagError as exc:
        if reader.streams is None:
            frames.close()
            raise
        first_error = str(exc)
    if isinstance(protocol, str):
        source = reader.info.custom_data.get("cloudypoints.source") if reader.info else None
        protocol = make_protocol(protocol, source, median_scaling=median_scaling)
    report = EvalReport(kind="offline", bag=str(bag), protocol=protocol)
    if first_error:
        report.partial_reasons.append(first_error)
    owned: list[Any] = []
    if estimator is None:
        try:
            owned = _load_estimators(
                model, backend, device, dict(estimator_options or {}), inference_workers
            )
        except BaseException:
            frames.close()
            raise
        estimators = owned
    elif isinstance(estimator, (list, tuple)):
        estimators = list(estimator)
    else:
        estimators = [estimator]
    from cloudypoints_core.evaluation.evaluate import model_info

    report.info["model"] = model_info(estimators[0], model)
    report.info["inference_workers"] = len(estimators)
    n_total = reader.frame_count()
    example_at = set(np.linspace(0, max(n_total - 1, 0), N_EXAMPLES).round().astype(int).tolist())
    final_protocol = protocol
    idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
    for est in estimators:
        idle.put(est)
    # Frames in flight: one per model being run plus one being scored; more would only hold
    # images in memory.
    slots = threading.BoundedSemaphore(len(estimators) + 1)

    def work(frame: Any) -> _FrameOutcome:
        """Infer with whichever model is free, give it back, then score (so the next frame's
        inference overlaps this frame's scoring)."""
        try:
            est = idle.get()
            try:
                t0 = time.perf_counter()
                result = est.predict(
                    frame.rgb, frame.intrinsics, output_resolution="input", keep_unmasked=True
                )
                infer_s = time.perf_counter() - t0
            except CloudyPointsError as exc:
                failed = FrameScore("error", note=f"inference failed: {exc}")
                return _FrameOutcome(
                    frame.index, frame.stamp_ns, frame.read_s, failed, warning=f"{exc}"
                )
            finally:
                idle.put(est)
            t0 = time.perf_counter()
            # The unmasked prediction: the protocol clamps what the facade would mask to NaN.
            pred = scored_depth(result)
            frame_score = score_frame(frame.depth_gt_m, pred, final_protocol, detailed=detailed)
            metrics_s = time.perf_counter() - t0
            example = None
            if frame.index in example_at and frame.depth_gt_m is not None:
                example = {
                    "title": f"frame {frame.index} ({frame.stamp_ns} ns)",
                    "rgb": frame.rgb,
                    "gt": frame.depth_gt_m,
                    "pred": pred,
                }
            return _FrameOutcome(
                frame.index, frame.stamp_ns, frame.read_s, frame_score, infer_s, metrics_s, example
            )
        finally:
            slots.release()

    outcomes: list[Future[_FrameOutcome]] = []
    bar = tqdm(
        total=n_total or None,
        desc=f"evaluate {Path(bag).name}",
        unit="frame",
        disable=not progress,
    )
    pool = ThreadPoolExecutor(
        max_workers=len(estimators) + 1, thread_name_prefix="cloudypoints-infer"
    )
    try:
        stream = iter(first) if first_error else _chain(first, frames)
        while True:
            try:
                frame = next(stream)
            except StopIteration:
                break
            except BagError as exc:
                report.partial_reasons.append(str(exc))
                break
            slots.acquire()
            future = pool.submit(work, frame)
            future.add_done_callback(lambda _f: bar.update(1))
            outcomes.append(future)
    finally:
        frames.close()
        pool.shutdown(wait=True)
        bar.close()
        for est in owned:
            est.close()
    for future in outcomes:
        out = future.result()
        report.add_row(
            out.index,
            out.stamp_ns,
            out.score,
            read=out.read_s,
            inference=out.infer_s,
            metrics=out.metrics_s,
        )
        if out.warning:
            report.warnings.append(f"frame {out.index}: inference failed: {out.warning}")
        if out.example is not None:
            report.examples.append(out.example)
        note = out.score.note
        if "resampled" in note and not any("resampled" in w for w in report.warnings):
            report.warnings.append(f"ground truth and prediction sizes differ: {note}")
    report.wall_s = time.perf_counter() - t_start
    _finish_offline(report, reader)
    summary = (
        write_report(report, out_dir, plots=plots)
        if out_dir is not None
        else _json_safe(report.summary())
    )
    log.info(
        "evaluated %d frames of %s%s",
        report.counts()["ok"],
        bag,
        " (PARTIAL: " + "; ".join(summary["partial_reasons"]) + ")" if summary["partial"] else "",
    )
    return summary


def _finish_offline(report: EvalReport, reader: Any) -> None:
    from dataclasses import asdict

    stats = reader.stats
    if reader.info is not None:
        report.info["bag_info"] = reader.info.to_dict()
    report.info["read_stats"] = stats.to_dict()
    if reader.streams is not None:
        report.info["topics"] = asdict(reader.streams)
    report.warnings = list(stats.warnings) + report.warnings
    if stats.truncated:
        report.partial_reasons.append(stats.truncated)
    skipped = stats.skipped_no_camera_info + stats.skipped_bad_image
    if skipped:
        report.partial_reasons.append(
            f"{skipped} of {stats.images} images were skipped (no matching camera info or "
            "undecodable); see warnings"
        )
    if reader.streams is not None and reader.streams.depth_gt is None:
        report.partial_reasons.append("the bag has no ground-truth depth topic")
    failed = report.counts()["error"]
    if failed:
        report.partial_reasons.append(
            f"{failed} frames failed (inference or scoring); see the notes of per_image.csv"
        )
    if not any(r["status"] == "ok" for r in report.rows):
        report.examples.clear()


def _json_safe(value: Any) -> Any:
    """``value`` as results.json would hold it (NaN -> None, numpy -> Python), unwritten."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _chain(first: list[Any], rest: Iterator[Any]) -> Iterator[Any]:
    yield from first
    yield from rest
