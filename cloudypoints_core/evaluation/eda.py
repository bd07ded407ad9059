"""Exploratory data analysis of a depth data set: counts, validity, depth statistics, calibration.

Statistics are streamed (fixed-size histograms and per-row sums), so memory does not grow with the
data set; percentiles come from a log-spaced histogram with 100 bins per decade (each percentile
is within 2.3 % of the exact value). Output: ``report.md``, ``summary.json`` and PNG plots in one
folder, every file written atomically.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cloudypoints_core._optional import require
from cloudypoints_core.errors import DatasetError
from cloudypoints_core.evaluation import plots
from cloudypoints_core.evaluation.evaluate import sample_key
from cloudypoints_core.evaluation.report import json_safe, markdown_table
from cloudypoints_core.io import atomic_write_text

log = logging.getLogger(__name__)

#: Depth histogram range (m) and resolution.
HIST_MIN_M = 0.1
HIST_MAX_M = 10_000.0
BINS_PER_DECADE = 100
#: Image rows are pooled into this many bins of normalised height (images may differ in size).
ROW_BINS = 128
PERCENTILES: tuple[float, ...] = (1.0, 5.0, 25.0, 50.0, 75.0, 95.0, 99.0)


def log_edges(
    lo_m: float = HIST_MIN_M, hi_m: float = HIST_MAX_M, per_decade: int = BINS_PER_DECADE
) -> npt.NDArray[np.float64]:
    """Log-spaced histogram edges from ``lo_m`` to ``hi_m``."""
    n = int(round(math.log10(hi_m / lo_m) * per_decade))
    return np.logspace(math.log10(lo_m), math.log10(hi_m), n + 1)


def percentiles_from_histogram(
    edges: npt.NDArray[np.float64], counts: npt.NDArray[np.int64], qs: Sequence[float]
) -> list[float]:
    """Percentiles (0-100) of the values behind a histogram, log-interpolated inside a bin."""
    total = int(counts.sum())
    if total == 0:
        return [float("nan")] * len(qs)
    cumulative = np.concatenate([[0], np.cumsum(counts)]).astype(np.float64)
    out = []
    for q in qs:
        target = q / 100.0 * total
        i = int(np.clip(np.searchsorted(cumulative, target, side="left") - 1, 0, counts.size - 1))
        inside = counts[i]
        frac = (target - cumulative[i]) / inside if inside else 0.0
        lo, hi = math.log(edges[i]), math.log(edges[i + 1])
        out.append(float(math.exp(lo + min(max(frac, 0.0), 1.0) * (hi - lo))))
    return out


@dataclass
class DepthStats:
    """Streaming depth statistics of one split."""

    edges: npt.NDArray[np.float64] = field(default_factory=log_edges)
    hist: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    below: int = 0
    above: int = 0
    n_images: int = 0
    n_pixels: int = 0
    n_valid: int = 0
    n_region_pixels: int = 0
    n_region_valid: int = 0
    n_infinite: int = 0
    n_beyond_cap: int = 0
    depth_sum: float = 0.0
    depth_min: float = math.inf
    depth_max: float = 0.0
    row_sum: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(ROW_BINS))
    row_valid: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(ROW_BINS))
    row_pixels: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(ROW_BINS))
    image_valid_ratio: list[float] = field(default_factory=list)
    cap_m: float = 80.0

    def __post_init__(self) -> None:
        if self.hist.size == 0:
            self.hist = np.zeros(self.edges.size - 1, dtype=np.int64)

    def add(self, depth_m: npt.NDArray[np.floating[Any]], region_rows: int | None = None) -> None:
        """Add one depth image (NaN/inf/<=0 invalid); statistics use rows [0, region_rows).

        Row profiles and the whole-image valid ratio use every row (to show the hood too).
        """
        depth = np.asarray(depth_m, dtype=np.float32)
        height, width = depth.shape
        rows = height if region_rows is None else int(region_rows)
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(depth) & (depth > 0)
        self.n_images += 1
        self.n_pixels += depth.size
        self.n_valid += int(valid.sum())
        self.n_infinite += int(np.isposinf(depth).sum())
        region = depth[:rows][valid[:rows]].astype(np.float64)
        self.n_region_pixels += rows * width
        self.n_region_valid += region.size
        self.image_valid_ratio.append(region.size / max(rows * width, 1))
        if region.size:
            self.depth_sum += float(region.sum())
            self.depth_min = min(self.depth_min, float(region.min()))
            self.depth_max = max(self.depth_max, float(region.max()))
            self.n_beyond_cap += int((region >= self.cap_m).sum())
            lo = math.log10(self.edges[0])
            step = (math.log10(self.edges[-1]) - lo) / (self.edges.size - 1)
            index = np.floor((np.log10(region) - lo) / step).astype(np.int64)
            self.below += int((index < 0).sum())
            self.above += int((index >= self.hist.size).sum())
            inside = index[(index >= 0) & (index < self.hist.size)]
            self.hist += np.bincount(inside, minlength=self.hist.size)
        # Per-row sums pooled into ROW_BINS bins of normalised height.
        bins = (np.arange(height) * ROW_BINS) // height
        row_sum = np.where(valid, depth, 0.0).sum(axis=1, dtype=np.float64)
        self.row_sum += np.bincount(bins, weights=row_sum, minlength=ROW_BINS)
        self.row_valid += np.bincount(bins, weights=valid.sum(axis=1), minlength=ROW_BINS)
        self.row_pixels += np.bincount(bins, minlength=ROW_BINS) * width

    def summary(self) -> dict[str, Any]:
        pct = percentiles_from_histogram(self.edges, self.hist, PERCENTILES)
        ratios = np.asarray(self.image_valid_ratio) if self.image_valid_ratio else np.zeros(1)
        region_valid = max(self.n_region_valid, 1)
        return {
            "images": self.n_images,
            "pixels": self.n_pixels,
            "valid_ratio_all_rows": self.n_valid / self.n_pixels if self.n_pixels else 0.0,
            "valid_ratio": self.n_region_valid / max(self.n_region_pixels, 1),
            "valid_ratio_per_image_min": float(ratios.min()),
            "valid_ratio_per_image_median": float(np.median(ratios)),
            "valid_ratio_per_image_max": float(ratios.max()),
            "infinite_ratio": self.n_infinite / self.n_pixels if self.n_pixels else 0.0,
            "depth_mean_m": self.depth_sum / region_valid if self.n_region_valid else None,
            "depth_min_m": self.depth_min if self.n_region_valid else None,
            "depth_max_m": self.depth_max if self.n_region_valid else None,
            "beyond_cap_ratio": self.n_beyond_cap / region_valid,
            "percentiles_m": {f"p{q:g}": v for q, v in zip(PERCENTILES, pct, strict=True)},
            "histogram_underflow": self.below,
            "histogram_overflow": self.above,
        }

    def row_profile(
        self,
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(row fraction centres, mean valid depth per row bin, valid ratio per row bin)."""
        centres = (np.arange(ROW_BINS) + 0.5) / ROW_BINS
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(self.row_valid > 0, self.row_sum / self.row_valid, np.nan)
            ratio = np.where(self.row_pixels > 0, self.row_valid / self.row_pixels, np.nan)
        return centres, mean, ratio


@dataclass
class EdaSource:
    """One split to analyse: frame count, a sample getter and index-level facts."""

    name: str
    n_frames: int
    get_sample: Callable[[int], Mapping[str, Any]]
    #: Frames per city (or per group such as a seed), known without reading images.
    groups: Mapping[str, int]
    #: Calibration values per frame (fx_px, baseline_m, height_m, pitch_rad, ...).
    calibration: dict[str, list[float]]
    #: Rows at the bottom excluded from the depth statistics (the hood), as a fraction.
    hood_fraction: float = 0.0
    notes: list[str] = field(default_factory=list)
    #: Calibration values of a sample, for sources where they cost a read (added per read frame).
    sample_calibration: Callable[[Mapping[str, Any]], Mapping[str, float]] | None = None


def _spread(values: Sequence[float]) -> dict[str, float]:
    data = np.asarray(values, dtype=np.float64)
    return {
        "min": float(data.min()),
        "median": float(np.median(data)),
        "max": float(data.max()),
        "std": float(data.std()),
        "distinct": int(np.unique(np.round(data, 9)).size),
    }


def run_eda(
    sources: Sequence[EdaSource],
    out_dir: str | os.PathLike[str],
    *,
    title: str,
    limit: int | None = None,
    n_examples: int = 4,
    cap_m: float = 80.0,
    progress: bool = True,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """Analyse ``sources`` and write ``report.md``, ``summary.json`` and plots into ``out_dir``.

    ``limit`` caps the images read per split (evenly spaced); counts and calibration spread always
    cover every frame. Returns the summary dictionary.
    """
    tqdm = require("tqdm", "progress bars").tqdm
    if not sources:
        raise DatasetError("nothing to analyse: no splits/sources given")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    stats: dict[str, DepthStats] = {}
    examples: list[tuple[str, npt.NDArray[np.uint8], npt.NDArray[np.float32]]] = []
    # Spread the examples over the splits: quotas n // k, the first n % k splits one more.
    quotas = [
        n_examples // len(sources) + (i < n_examples % len(sources)) for i in range(len(sources))
    ]
    skipped: list[str] = []
    for source, quota in zip(sources, quotas, strict=True):
        count = source.n_frames if limit is None else min(limit, source.n_frames)
        indices = np.unique(np.linspace(0, source.n_frames - 1, count).round().astype(int))
        picks = np.unique(np.linspace(0, indices.size - 1, quota).round().astype(int))
        example_at = set(indices[picks].tolist()) if quota else set()
        acc = DepthStats(cap_m=cap_m)
        for index in tqdm(
            indices.tolist(), desc=f"eda {source.name}", unit="img", disable=not progress
        ):
            try:
                sample = source.get_sample(index)
            except DatasetError as exc:
                # One unreadable frame must not end an hour-long analysis: record and go on.
                log.warning("skipping frame %d of %s: %s", index, source.name, exc)
                skipped.append(f"{source.name}[{index}]: {exc}")
                continue
            depth = np.asarray(sample["depth_m"], dtype=np.float32)
            rows = depth.shape[0] - int(round(source.hood_fraction * depth.shape[0]))
            if source.sample_calibration is not None:
                for key, value in source.sample_calibration(sample).items():
                    source.calibration.setdefault(key, []).append(float(value))
            acc.add(depth, region_rows=rows)
            if index in example_at:
                label = f"{source.name}: {sample_key(sample, str(index))}"
                # Copies: a view would keep the whole full-resolution frame alive.
                examples.append(
                    (
                        label,
                        plots.thumbnail(np.asarray(sample["rgb"])).copy(),
                        plots.thumbnail(depth).copy(),
                    )
                )
        stats[source.name] = acc

    written = _write_plots(sources, stats, examples, out, cap_m)
    summary = _summary(
        sources, stats, title, limit, cap_m, skipped, notes, time.perf_counter() - started, written
    )
    text = json.dumps(json_safe(summary), indent=2, default=_json_default)
    atomic_write_text(out / "summary.json", text + "\n")
    atomic_write_text(out / "report.md", _report_markdown(summary))
    log.info("EDA report written to %s", out / "report.md")
    return summary


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _write_plots(
    sources: Sequence[EdaSource],
    stats: Mapping[str, DepthStats],
    examples: Sequence[tuple[str, npt.NDArray[np.uint8], npt.NDArray[np.float32]]],
    out: Path,
    cap_m: float,
) -> dict[str, str]:
    written = {
        "counts": plots.plot_counts(
            {s.name: dict(s.groups) for s in sources}, out / "counts.png"
        ).name,
        "depth_histogram": plots.plot_depth_histograms(
            next(iter(stats.values())).edges,
            {n: s.hist for n, s in stats.items()},
            out / "depth_histogram.png",
            cap_m,
        ).name,
        "row_profile": plots.plot_row_profiles(
            {n: s.row_profile() for n, s in stats.items()},
            out / "row_profile.png",
            hood_fraction=max(s.hood_fraction for s in sources) or None,
        ).name,
    }
    calibration: dict[str, list[float]] = {}
    for source in sources:
        for name, values in source.calibration.items():
            calibration.setdefault(name, []).extend(float(v) for v in values)
    if calibration:
        written["calibration"] = plots.plot_value_spread(calibration, out / "calibration.png").name
    if examples:
        written["examples"] = plots.plot_rgb_depth_pairs(
            examples, out / "examples.png", cap_m
        ).name
    return written


def _summary(
    sources: Sequence[EdaSource],
    stats: Mapping[str, DepthStats],
    title: str,
    limit: int | None,
    cap_m: float,
    skipped: Sequence[str],
    notes: Sequence[str],
    seconds: float,
    written: Mapping[str, str],
) -> dict[str, Any]:
    splits: dict[str, Any] = {}
    for source in sources:
        entry = {
            "frames": source.n_frames,
            "groups": dict(source.groups),
            "hood_fraction": source.hood_fraction,
            "depth": stats[source.name].summary(),
            "calibration": {k: _spread(v) for k, v in source.calibration.items() if len(v)},
            "notes": list(source.notes),
        }
        splits[source.name] = entry
    return {
        "title": title,
        "limit_per_split": limit,
        "cap_m": cap_m,
        "splits": splits,
        "skipped_frames": list(skipped),
        "notes": list(notes),
        "plots": dict(written),
        "seconds": round(seconds, 2),
    }


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        return f"{value:.{digits}f}" if abs(value) < 1e4 else f"{value:.3g}"
    return str(value)


def _report_markdown(summary: Mapping[str, Any]) -> str:
    splits: Mapping[str, Any] = summary["splits"]
    lines = [f"# Data analysis: {summary['title']}", ""]
    limit = summary["limit_per_split"]
    read = "all frames" if limit is None else f"at most {limit} frames per split"
    lines.append(
        f"Depth statistics from {read}; counts and calibration from every frame (SynthCity: "
        f"from the frames read). Generated in {summary['seconds']} s."
    )
    lines.append("")
    for note in summary["notes"]:
        lines.append(f"- {note}")
    if summary["notes"]:
        lines.append("")
    lines += ["## Frames", ""]
    rows = [
        [
            name,
            entry["frames"],
            len(entry["groups"]),
            ", ".join(f"{g} ({n})" for g, n in sorted(entry["groups"].items())),
        ]
        for name, entry in splits.items()
    ]
    lines.append(markdown_table(["split", "frames", "groups", "per group"], rows))
    lines += ["", f"![frames per group]({summary['plots']['counts']})", ""]

    lines += ["## Depth", ""]
    lines.append(
        "Valid = finite and positive. Statistics exclude the bottom hood rows where a split has "
        f"them; 'beyond cap' is the share of valid depth at or past the {summary['cap_m']:g} m "
        "evaluation cap. Percentiles from a log histogram (within 2.3 %)."
    )
    lines.append("")
    header = [
        "split",
        "images read",
        "valid (region)",
        "valid (all rows)",
        "valid/image min-med-max",
        "sky/inf",
        "mean m",
        "p5 m",
        "p50 m",
        "p95 m",
        "max m",
        "beyond cap",
    ]
    rows = []
    for name, entry in splits.items():
        d = entry["depth"]
        p = d["percentiles_m"]
        rows.append(
            [
                name,
                d["images"],
                _fmt(d["valid_ratio"]),
                _fmt(d["valid_ratio_all_rows"]),
                "-".join(
                    _fmt(d[f"valid_ratio_per_image_{k}"], 2) for k in ("min", "median", "max")
                ),
                _fmt(d["infinite_ratio"]),
                _fmt(d["depth_mean_m"], 2),
                _fmt(p["p5"], 2),
                _fmt(p["p50"], 2),
                _fmt(p["p95"], 2),
                _fmt(d["depth_max_m"], 1),
                _fmt(d["beyond_cap_ratio"]),
            ]
        )
    lines.append(markdown_table(header, rows))
    lines += ["", "Percentiles (m):", ""]
    qs = list(next(iter(splits.values()))["depth"]["percentiles_m"])
    lines.append(
        markdown_table(
            ["split", *qs],
            [
                [name, *(_fmt(entry["depth"]["percentiles_m"][q], 2) for q in qs)]
                for name, entry in splits.items()
            ],
        )
    )
    hood = any(entry["hood_fraction"] for entry in splits.values())
    lines += [
        "",
        f"![depth histogram]({summary['plots']['depth_histogram']})",
        "",
        "Mean depth and valid ratio per image row"
        + (" (dashed: hood boundary):" if hood else ":"),
        "",
        f"![per-row depth]({summary['plots']['row_profile']})",
        "",
    ]

    if "calibration" in summary["plots"]:
        lines += ["## Calibration spread", ""]
        rows = []
        for name, entry in splits.items():
            for key, spread in entry["calibration"].items():
                rows.append(
                    [
                        name,
                        key,
                        _fmt(spread["min"], 4),
                        _fmt(spread["median"], 4),
                        _fmt(spread["max"], 4),
                        _fmt(spread["std"], 4),
                        spread["distinct"],
                    ]
                )
        header = ["split", "quantity", "min", "median", "max", "std", "distinct"]
        lines.append(markdown_table(header, rows))
        lines += ["", f"![calibration]({summary['plots']['calibration']})", ""]
    if "examples" in summary["plots"]:
        lines += ["## Examples", "", f"![examples]({summary['plots']['examples']})", ""]
    problems = list(summary["skipped_frames"])
    for name, entry in splits.items():
        problems += [f"{name}: {n}" for n in entry["notes"]]
    if problems:
        lines += ["## Problems found", ""]
        lines += [f"- {p}" for p in problems[:50]]
        if len(problems) > 50:
            lines.append(f"- ... and {len(problems) - 50} more (see summary.json)")
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ data sources
def cityscapes_sources(
    root: str | os.PathLike[str],
    splits: Sequence[str] | None = None,
    *,
    sequence: bool = False,
    progress: bool = True,
) -> list[EdaSource]:
    """One source per Cityscapes split present under ``root`` (bad frames reported, skipped)."""
    from cloudypoints_core.data.cityscapes import CityscapesDataset, available_splits

    present = available_splits(root, sequence=sequence)
    wanted = list(splits) if splits else present
    if not wanted:
        # Let the data set produce its detailed "expected ... found ..." message.
        CityscapesDataset(root, "train", sequence=sequence)
    sources = []
    for split in wanted:
        dataset = CityscapesDataset(
            root, split, sequence=sequence, hood="none", bad_files="skip", progress=progress
        )
        groups: dict[str, int] = {}
        for frame in dataset.frames:
            groups[frame.city] = groups.get(frame.city, 0) + 1
        cameras = [dataset.camera(i) for i in range(len(dataset))]
        calibration = {
            "fx_px": [c.fx_px for c in cameras],
            "fy_px": [c.fy_px for c in cameras],
            "u0_px": [c.u0_px for c in cameras],
            "v0_px": [c.v0_px for c in cameras],
            "baseline_m": [c.baseline_m for c in cameras],
            "height_m": [c.height_m for c in cameras],
            "pitch_rad": [c.pitch_rad for c in cameras],
        }
        sources.append(
            EdaSource(
                name=f"{split}{' (sequence)' if sequence else ''}",
                n_frames=len(dataset),
                get_sample=dataset.__getitem__,
                groups=groups,
                calibration=calibration,
                hood_fraction=dataset.hood_fraction,
                notes=[str(b) for b in dataset.bad_files] + list(dataset.warnings),
            )
        )
    return sources


def synthcity_sources(
    seeds: Sequence[int], width: int, height: int, frames_per_seed: int = 1, name: str = ""
) -> list[EdaSource]:
    """One source for SynthCity frames of ``seeds`` (rendered on demand, never all held)."""
    from cloudypoints_core.data.synthcity import SynthCityDataset

    dataset = SynthCityDataset(list(seeds), width, height, frames_per_seed)
    groups = {f"seed {s}": frames_per_seed for s in seeds}

    def calibration_of(sample: Mapping[str, Any]) -> dict[str, float]:
        # Rendering is the expensive part, so the spread covers the frames the analysis reads.
        intr = sample["intrinsics"]
        values = {
            "fx_px": intr.fx_px,
            "fy_px": intr.fy_px,
            "cx_px": intr.cx_px,
            "cy_px": intr.cy_px,
        }
        if sample.get("camera_height_m") is not None:
            values["height_m"] = float(sample["camera_height_m"])
        return values

    label = name or f"synthcity seeds {_seed_label(seeds)}"
    return [
        EdaSource(
            label,
            len(dataset),
            dataset.__getitem__,
            groups,
            {},
            hood_fraction=0.0,
            sample_calibration=calibration_of,
        )
    ]


def _seed_label(seeds: Sequence[int]) -> str:
    seeds = list(seeds)
    if seeds and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])
    return ",".join(str(s) for s in seeds[:8]) + ("..." if len(seeds) > 8 else "")
