"""Evaluate a depth model on Cityscapes or SynthCity under a protocol and write the report.

The model is anything with the facade's ``predict(rgb, intrinsics, output_resolution="input",
camera_height_m=..., camera_pitch_rad=...)`` returning an object with ``depth_m`` (metres, NaN
invalid): normally :class:`~cloudypoints_core.inference.facade.DepthEstimator` on any backend.
Each image: predict (on the full frame or the rows above the hood, see
:meth:`EvalProtocol.resolve_model_input`), bring the prediction to the ground truth's resolution,
apply the protocol (:func:`~cloudypoints_core.evaluation.protocols.evaluate_image`), keep per-image
metrics; then average over images and write ``results.json``, ``per_image.csv``, ``report.md``
and plots.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from cloudypoints_core._optional import require
from cloudypoints_core.errors import DatasetError, InputError, ScaleError
from cloudypoints_core.evaluation import plots
from cloudypoints_core.evaluation.metrics import METRIC_NAMES, mean_errors
from cloudypoints_core.evaluation.protocols import (
    DISTANCE_CURVE_EDGES_M,
    EvalProtocol,
    coverage_warning,
    evaluate_image,
    resize_prediction,
    scored_depth,
)
from cloudypoints_core.evaluation.report import write_evaluation_report
from cloudypoints_core.geometry import Intrinsics

if TYPE_CHECKING:
    from cloudypoints_core.data.cityscapes import BadFilePolicy

log = logging.getLogger(__name__)

#: Held-out SynthCity seeds evaluated by default: seeds >= 1_000_000 are reserved for testing
#: (training refuses them, see cloudypoints_core.training.data.TEST_SEED_MIN).
SYNTHCITY_EVAL_SEEDS: tuple[int, ...] = tuple(range(1_000_000, 1_000_020))
#: Number of test images of the published Cityscapes protocol.
CITYSCAPES_TEST_IMAGES = 1525


class DepthPredictor(Protocol):
    """What the evaluation needs from a model (the facade's DepthEstimator fits)."""

    def predict(
        self,
        rgb: npt.NDArray[np.uint8],
        intrinsics: Intrinsics,
        output_resolution: str = "input",
        camera_height_m: float | None = None,
        camera_pitch_rad: float | None = None,
        keep_unmasked: bool = False,
    ) -> Any: ...


@dataclass
class EvalSource:
    """Frames with ground truth: count, getter and a description for the report."""

    name: str
    n_frames: int
    get_sample: Callable[[int], Mapping[str, Any]]
    description: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def cityscapes_source(
    root: str | os.PathLike[str],
    split: str = "test",
    split_file: str | os.PathLike[str] | None = "cityscapes_test_1525",
    *,
    sequence: bool = False,
    bad_files: BadFilePolicy = "raise",
    progress: bool = True,
) -> EvalSource:
    """Cityscapes ``split`` as ground truth (hood left in: the protocol removes it).

    The default split file pins the test folder and expects 1525 frames; with any other count
    (a partial download, a fixture) the run goes on and the report says so.
    """
    from cloudypoints_core.data.cityscapes import CityscapesDataset, read_split_file

    if split_file is not None and split != "test":
        spec = read_split_file(split_file)
        if spec.split not in (None, split):
            split_file = None  # the default test pin does not apply to other splits
    dataset = CityscapesDataset(
        root,
        split,
        sequence=sequence,
        split_file=split_file,
        hood="none",
        bad_files=bad_files,
        progress=progress,
    )
    notes = [str(b) for b in dataset.bad_files] + list(dataset.warnings)
    description = {
        "name": f"cityscapes {split}",
        "dataset": "cityscapes",
        "root": str(Path(root).resolve()),
        "split": split,
        "split_file": str(dataset.split_spec.path) if dataset.split_spec else None,
        "sequence": sequence,
        "frames": len(dataset),
        "cities": dataset.cities,
        "description": (
            f"Cityscapes {split} split{' (sequence frames)' if sequence else ''}, {len(dataset)} "
            f"frames from {len(dataset.cities)} cities, ground truth from disparity with each "
            f"frame's own calibration, under {Path(root).resolve()}"
        ),
    }
    return EvalSource(f"cityscapes {split}", len(dataset), dataset.__getitem__, description, notes)


def synthcity_source(
    seeds: Sequence[int] = SYNTHCITY_EVAL_SEEDS,
    width: int = 512,
    height: int = 256,
    frames_per_seed: int = 1,
) -> EvalSource:
    """SynthCity frames of held-out ``seeds`` rendered at ``width`` x ``height``."""
    from cloudypoints_core.data.synthcity import SynthCityDataset

    dataset = SynthCityDataset(list(seeds), width, height, frames_per_seed)
    seeds = list(seeds)
    description = {
        "name": "synthcity",
        "dataset": "synthcity",
        "seeds": seeds,
        "width": width,
        "height": height,
        "frames_per_seed": frames_per_seed,
        "frames": len(dataset),
        "description": (
            f"SynthCity, {len(seeds)} held-out seeds ({seeds[0]}..{seeds[-1]}), "
            f"{frames_per_seed} frame(s) each at {width}x{height}, exact rendered depth"
        ),
    }
    notes = []
    held_out = min(SYNTHCITY_EVAL_SEEDS)
    if min(seeds) < held_out:
        notes.append(
            f"seeds below {held_out} are not reserved for testing: a model may have been "
            "trained on these very frames"
        )
    return EvalSource("synthcity", len(dataset), dataset.__getitem__, description, notes)


def model_info(estimator: Any, path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """What the report says about the model (spec fields, backend, device, package path)."""
    spec = getattr(estimator, "spec", None)
    package = getattr(estimator, "package", None)
    info: dict[str, Any] = {
        "path": str(getattr(package, "root", None) or path or "?"),
        "backend": getattr(estimator, "backend_name", "?"),
        "device": getattr(estimator, "device", "?"),
    }
    if spec is not None:
        info.update(
            {
                "name": spec.name,
                "architecture": spec.architecture,
                "output_kind": spec.output_kind,
                "input_width": spec.input_width,
                "input_height": spec.input_height,
                "train_fx_px": spec.train_fx_px,
                "min_depth_m": spec.min_depth_m,
                "max_depth_m": spec.max_depth_m,
            }
        )
    else:
        info["name"] = type(estimator).__name__
    return info


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "numpy": np.__version__}
    for dist in ("cloudypoints_ros", "torch", "onnxruntime", "opencv-python-headless"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out


def sample_key(sample: Mapping[str, Any], fallback: str) -> str:
    """A sample's name: Cityscapes ``key``, SynthCity ``seed`` and frame ``index``, or fallback."""
    if "key" in sample:
        return str(sample["key"])
    if "seed" in sample:
        return f"seed{int(sample['seed'])}_{int(sample.get('index', 0)):04d}"
    return fallback


def sample_mounting(sample: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """(camera height m, pitch rad) of a sample when it carries them (Cityscapes, SynthCity)."""
    camera = sample.get("camera") or {}
    height = camera.get("height_m", sample.get("camera_height_m"))
    pitch = camera.get("pitch_rad", sample.get("pitch_rad"))
    return (None if height is None else float(height), None if pitch is None else float(pitch))


def _predict_full(
    estimator: DepthPredictor,
    protocol: EvalProtocol,
    sample: Mapping[str, Any],
    model_size: tuple[int, int] | None,
) -> tuple[npt.NDArray[np.float32], str, Any]:
    """Prediction at the ground truth's full (H, W) (NaN where the model did not look).

    The unmasked prediction (:func:`scored_depth`): depth outside the model's valid range is
    kept, for the protocol to clamp, instead of the NaN the facade publishes.
    """
    rgb = np.asarray(sample["rgb"])
    intrinsics: Intrinsics = sample["intrinsics"]
    height, width = np.asarray(sample["depth_m"]).shape
    if rgb.shape[:2] != (height, width) or intrinsics.shape != (height, width):
        raise InputError(
            f"sample {sample.get('key')}: rgb {rgb.shape[:2]}, depth {(height, width)} and "
            f"intrinsics {intrinsics.shape} must share one resolution"
        )
    view = "full"
    if model_size is not None:
        view = protocol.resolve_model_input(width, height, *model_size)
    elif protocol.model_input != "auto":
        view = protocol.model_input
    rows = protocol.kept_rows(height) if view == "above_hood" else height
    if rows < height:
        rgb = np.ascontiguousarray(rgb[:rows])
        intrinsics = intrinsics.cropped(0, 0, width, rows)
    # The mounting matters only to relative models (ground-plane scale recovery).
    camera_height_m, camera_pitch_rad = sample_mounting(sample)
    result = estimator.predict(
        rgb,
        intrinsics,
        output_resolution="input",
        camera_height_m=camera_height_m,
        camera_pitch_rad=camera_pitch_rad,
        keep_unmasked=True,
    )
    depth = np.asarray(scored_depth(result), dtype=np.float32)
    if depth.shape != (rows, width):
        depth = resize_prediction(depth, rows, width)
    full = np.full((height, width), np.nan, dtype=np.float32)
    full[:rows] = depth
    return full, view, result


def run_evaluation(
    estimator: DepthPredictor,
    source: EvalSource,
    protocol: EvalProtocol,
    out_dir: str | os.PathLike[str],
    *,
    model: Mapping[str, Any] | None = None,
    limit: int | None = None,
    n_examples: int = 4,
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Evaluate ``estimator`` on ``source`` under ``protocol``; write the report to ``out_dir``.

    ``limit`` evaluates at most that many frames, evenly spread (the report states it). Frames
    that fail to load are skipped and listed; a run where every frame fails raises
    :class:`DatasetError`. Returns the results dictionary (as in results.json).
    """
    tqdm = require("tqdm", "progress bars").tqdm
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = dict(model) if model is not None else model_info(estimator)
    size = getattr(estimator, "input_size", None)
    model_size = (int(size[0]), int(size[1])) if size is not None else None
    if source.n_frames == 0:
        raise DatasetError(f"{source.name}: no frames to evaluate")
    count = source.n_frames if limit is None else max(1, min(int(limit), source.n_frames))
    indices = np.unique(np.linspace(0, source.n_frames - 1, count).round().astype(int)).tolist()
    example_at = (
        set(
            np.asarray(indices)[
                np.unique(np.linspace(0, len(indices) - 1, max(n_examples, 0)).round().astype(int))
            ].tolist()
        )
        if n_examples > 0
        else set()
    )

    edges = np.asarray(DISTANCE_CURVE_EDGES_M)
    curve_sums = np.zeros(edges.size - 1)
    curve_counts = np.zeros(edges.size - 1, dtype=np.int64)
    per_image: list[dict[str, Any]] = []
    metric_rows: list[dict[str, float]] = []
    band_rows: dict[str, list[dict[str, float]]] = {}
    band_pixels: dict[str, int] = {}
    examples: list[dict[str, Any]] = []
    notes = list(source.notes)
    skipped: list[str] = []
    views: set[str] = set()
    windows: set[tuple[int, int, int, int]] = set()
    scale_methods: dict[str, int] = {}
    timings: list[float] = []
    started = time.perf_counter()

    for index in tqdm(indices, desc=f"evaluate {source.name}", unit="img", disable=not progress):
        try:
            sample = source.get_sample(index)
        except DatasetError as exc:
            log.warning("skipping frame %d: %s", index, exc)
            skipped.append(str(exc))
            continue
        key = sample_key(sample, f"{source.name}_{index:05d}")
        gt = np.asarray(sample["depth_m"], dtype=np.float32)
        t0 = time.perf_counter()
        try:
            pred, view, result = _predict_full(estimator, protocol, sample, model_size)
            method = str(getattr(result, "scale_method", "unknown"))
        except ScaleError as exc:
            # A relative model whose ground fit failed on this image has no metres: it is scored
            # as a failure (NaN -> the far edge, like any NaN prediction) and stated; unscaled
            # depth is never taken as metres.
            pred = np.full(gt.shape, np.nan, dtype=np.float32)
            view, method = "full", "no_metric_scale"
            notes.append(f"{key}: no metric scale ({exc})")
        timings.append((time.perf_counter() - t0) * 1e3)
        views.add(view)
        windows.add(protocol.crop_window(*gt.shape))
        scale_methods[method] = scale_methods.get(method, 0) + 1
        ev = evaluate_image(protocol, gt, pred, edges, detailed=True)
        row: dict[str, Any] = {
            "key": key,
            "n_gt_valid": ev.n_gt_valid,
            "n_evaluated": ev.n_evaluated,
            "coverage": ev.coverage,
            "median_scale_ratio": ev.scale_ratio if protocol.median_scaling else None,
            "model_scale_method": method,
            "model_input_view": view,
        }
        row.update({name: (ev.metrics or {}).get(name) for name in METRIC_NAMES})
        for label, band_metrics in ev.bands.items():
            row[f"abs_rel_{label}"] = band_metrics["abs_rel"] if band_metrics else None
            if band_metrics is not None:
                band_rows.setdefault(label, []).append(band_metrics)
        row["predict_ms"] = timings[-1]
        per_image.append(row)
        if ev.metrics is None:
            notes.append(f"{key}: no pixel to evaluate (no valid ground truth)")
            continue
        if ev.curve_sums is None or ev.curve_counts is None or ev.abs_rel_map is None:
            raise InputError("a detailed evaluation returned no distance curve")  # unreachable
        metric_rows.append(ev.metrics)
        curve_sums += ev.curve_sums
        curve_counts += ev.curve_counts
        _count_band_pixels(band_pixels, ev.abs_rel_map, gt, protocol)
        if index in example_at:
            # Copies of thumbnails: views would keep every full-resolution frame alive.
            examples.append(
                {
                    "title": key,
                    "rgb": plots.thumbnail(np.asarray(sample["rgb"])).copy(),
                    "gt": plots.thumbnail(gt).copy(),
                    "pred": plots.thumbnail(pred).copy(),
                    "abs_rel": plots.thumbnail(ev.abs_rel_map).copy(),
                }
            )
    if not metric_rows:
        raise DatasetError(
            f"{source.name}: none of the {len(indices)} frames could be evaluated"
            + (f"; first problems: {skipped[:3]}" if skipped else "")
        )
    if skipped:
        notes.append(f"{len(skipped)} frame(s) could not be read and were skipped: {skipped[:3]}")
    if limit is not None and len(indices) < source.n_frames:
        notes.append(f"limited to {len(indices)} of {source.n_frames} frames (evenly spread)")
    if protocol.name == "cityscapes" and len(metric_rows) != CITYSCAPES_TEST_IMAGES:
        notes.append(
            f"{len(metric_rows)} images evaluated; the published Cityscapes protocol uses "
            f"{CITYSCAPES_TEST_IMAGES}: numbers are not directly comparable with papers"
        )

    with np.errstate(invalid="ignore", divide="ignore"):
        curve = np.where(curve_counts > 0, curve_sums / np.maximum(curve_counts, 1), np.nan)
    coverage = [r["coverage"] for r in per_image if r["n_gt_valid"]]
    coverage_mean = float(np.mean(coverage)) if coverage else 0.0
    low_coverage = coverage_warning(coverage_mean)
    if low_coverage is not None:
        notes.insert(0, f"WARNING: {low_coverage}")
        log.warning("%s", low_coverage)
    ratios = [
        r["median_scale_ratio"]
        for r in per_image
        if r["median_scale_ratio"] is not None and np.isfinite(r["median_scale_ratio"])
    ]
    results: dict[str, Any] = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "model": model,
        "dataset": source.description,
        "protocol": {**protocol.to_dict(), "summary": protocol.summary()},
        "median_scaling": protocol.median_scaling,
        "model_input_views": sorted(views),
        # Evaluated windows actually used, (row0, row1, col0, col1) end-exclusive, per resolution.
        "windows_px": sorted(windows),
        "n_images": len(metric_rows),
        "n_images_requested": len(indices),
        "metrics": mean_errors(metric_rows),
        "metrics_std": {n: float(np.std([r[n] for r in metric_rows])) for n in METRIC_NAMES},
        "bands": {
            label: {
                "n_images": len(band_rows.get(label, [])),
                "n_pixels": band_pixels.get(label, 0),
                "metrics": mean_errors(band_rows[label]) if band_rows.get(label) else None,
            }
            for label in (f"{lo:g}-{hi:g}m" for lo, hi in protocol.bands)
        },
        "abs_rel_vs_distance": {
            "edges_m": edges.tolist(),
            "abs_rel": curve.tolist(),
            "pixels": curve_counts.tolist(),
        },
        "coverage_mean": coverage_mean,
        "coverage_warning": low_coverage,
        "scale_methods": scale_methods,
        "median_scale_ratio": (
            {
                "mean": float(np.mean(ratios)),
                "std": float(np.std(ratios)),
                "std_over_mean": float(np.std(ratios) / np.mean(ratios)),
            }
            if ratios
            else None
        ),
        "timing_ms": {"mean": float(np.mean(timings)), "median": float(np.median(timings))},
        "seconds": round(time.perf_counter() - started, 2),
        "notes": notes,
        "versions": _versions(),
    }
    results["plots"] = _write_plots(out, results, per_image, examples, protocol)
    write_evaluation_report(results, per_image, out)
    log.info(
        "AbsRel %.4f, RMSE %.3f m, delta<1.25 %.4f on %d images; report in %s",
        results["metrics"]["abs_rel"],
        results["metrics"]["rmse"],
        results["metrics"]["a1"],
        results["n_images"],
        out / "report.md",
    )
    return results


def _count_band_pixels(
    band_pixels: dict[str, int],
    abs_rel_map: npt.NDArray[np.float32],
    gt: npt.NDArray[np.float32],
    protocol: EvalProtocol,
) -> None:
    # The evaluated pixels are exactly those with a finite AbsRel in the map.
    values = gt[np.isfinite(abs_rel_map)]
    for lo, hi in protocol.bands:
        label = f"{lo:g}-{hi:g}m"
        inside = int(((values >= lo) & (values < hi)).sum())
        band_pixels[label] = band_pixels.get(label, 0) + inside


def _write_plots(
    out: Path,
    results: Mapping[str, Any],
    per_image: Sequence[Mapping[str, Any]],
    examples: Sequence[dict[str, Any]],
    protocol: EvalProtocol,
) -> dict[str, str]:
    written: dict[str, str] = {}
    if examples:
        written["examples"] = plots.plot_eval_examples(
            examples, out / "examples.png", protocol.max_depth_m
        ).name
    curve = results["abs_rel_vs_distance"]
    written["error_vs_distance"] = plots.plot_error_vs_distance(
        np.asarray(curve["edges_m"]),
        np.asarray(curve["abs_rel"], dtype=np.float64),
        np.asarray(curve["pixels"]),
        out / "error_vs_distance.png",
    ).name
    bands = {k: v["metrics"] for k, v in results["bands"].items()}
    if any(bands.values()):
        written["bands"] = plots.plot_band_errors(bands, out / "bands.png").name
    values = [float(r["abs_rel"]) for r in per_image if r.get("abs_rel") is not None]
    written["per_image_abs_rel"] = plots.plot_per_image_metric(
        values, out / "per_image_abs_rel.png"
    ).name
    return written
