"""PNG plots for the data-analysis and evaluation reports (matplotlib, Agg, written atomically).

Figures are built with ``matplotlib.figure.Figure`` and the Agg canvas directly, never pyplot, so
no global backend state is touched and nothing needs a display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cloudypoints_core._optional import require
from cloudypoints_core.image import colorize_depth
from cloudypoints_core.io import atomic_path

#: Longest side (px) of images drawn into figures; bigger ones are subsampled first.
_THUMB_MAX_SIDE = 640


def new_figure(width_in: float, height_in: float, layout: str | None = "constrained") -> Any:
    """A matplotlib Figure on an Agg canvas (no pyplot).

    Image grids pass ``layout=None`` and place their axes with ``subplots_adjust``: the
    constrained layout measures every axis and costs a second per grid for nothing there.
    """
    figure_mod = require("matplotlib.figure", "report plots")
    agg = require("matplotlib.backends.backend_agg", "report plots")
    fig = figure_mod.Figure(figsize=(width_in, height_in), dpi=100, layout=layout)
    agg.FigureCanvasAgg(fig)
    return fig


def _grid_figure(columns: int, rows: int, width_in: float) -> Any:
    """A figure for a ``rows`` x ``columns`` grid of 2:1 images with a title over each."""
    height_in = rows * (width_in / columns * 0.5 + 0.3) + 0.2
    fig = new_figure(width_in, height_in, layout=None)
    fig.subplots_adjust(
        left=0.005,
        right=0.995,
        bottom=0.005,
        top=1 - 0.3 / height_in,
        wspace=0.03,
        hspace=0.3 / (width_in / columns * 0.5),
    )
    return fig


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically and return the path."""
    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png")
    return target


def thumbnail(image: npt.NDArray[Any], max_side: int = _THUMB_MAX_SIDE) -> npt.NDArray[Any]:
    """Subsample (strided, no interpolation: depth stays exact) to at most ``max_side`` pixels."""
    step = max(1, int(np.ceil(max(image.shape[:2]) / max_side)))
    return image[::step, ::step]


def _imshow(ax: Any, image: npt.NDArray[Any], title: str) -> None:
    ax.imshow(thumbnail(image), interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()


# -------------------------------------------------------------------------------------- EDA
def plot_counts(counts: Mapping[str, Mapping[str, int]], path: str | Path) -> Path:
    """Frames per city, one bar group per split."""
    labels = [(split, city) for split, cities in counts.items() for city in sorted(cities)]
    fig = new_figure(max(4.0, 0.35 * len(labels) + 2), 3.2)
    ax = fig.add_subplot(1, 1, 1)
    colours = {split: f"C{i}" for i, split in enumerate(counts)}
    ax.bar(
        range(len(labels)),
        [counts[s][c] for s, c in labels],
        color=[colours[s] for s, _ in labels],
    )
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels([f"{c}\n({s})" for s, c in labels], rotation=60, fontsize=7, ha="right")
    ax.set_ylabel("frames")
    ax.set_title("frames per split and city")
    return save_figure(fig, path)


def plot_depth_histograms(
    edges_m: npt.NDArray[np.float64],
    histograms: Mapping[str, npt.NDArray[np.int64]],
    path: str | Path,
    cap_m: float | None = 80.0,
) -> Path:
    """Share of valid pixels per depth bin (log-spaced bins, density per log-metre), per split."""
    fig = new_figure(6.4, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    centres = np.sqrt(edges_m[:-1] * edges_m[1:])
    widths = np.diff(np.log10(edges_m))
    for name, hist in histograms.items():
        total = max(int(hist.sum()), 1)
        ax.plot(centres, hist / total / widths, label=f"{name} ({total:,} px)")
    if cap_m is not None:
        ax.axvline(cap_m, color="k", linestyle="--", linewidth=0.8, label=f"{cap_m:g} m cap")
    ax.set_xscale("log")
    ax.set_xlabel("depth (m)")
    ax.set_ylabel("density per decade")
    ax.set_title("valid depth distribution")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_row_profiles(
    profiles: Mapping[
        str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]
    ],
    path: str | Path,
    hood_fraction: float | None = None,
) -> Path:
    """Mean valid depth and valid-pixel ratio against normalised image row, per split."""
    fig = new_figure(7.2, 3.4)
    ax_depth = fig.add_subplot(1, 2, 1)
    ax_valid = fig.add_subplot(1, 2, 2)
    for name, (row_frac, mean_depth, valid_ratio) in profiles.items():
        ax_depth.plot(mean_depth, row_frac, label=name)
        ax_valid.plot(valid_ratio, row_frac, label=name)
    for ax in (ax_depth, ax_valid):
        ax.set_ylim(1.0, 0.0)  # image row 0 at the top
        ax.set_ylabel("row / height")
        if hood_fraction:
            ax.axhline(1.0 - hood_fraction, color="k", linestyle="--", linewidth=0.8)
    ax_depth.set_xscale("log")
    ax_depth.set_xlabel("mean valid depth (m)")
    ax_depth.set_title("depth per row", fontsize=9)
    ax_valid.set_xlabel("valid pixels")
    ax_valid.set_xlim(0, 1)
    ax_valid.set_title("valid ratio per row", fontsize=9)
    ax_depth.legend(fontsize=7)
    return save_figure(fig, path)


def plot_value_spread(
    values: Mapping[str, Sequence[float]],
    path: str | Path,
    title: str = "intrinsics and mounting spread",
) -> Path:
    """One small histogram per quantity (focal length, baseline, height, pitch, ...)."""
    names = [n for n, v in values.items() if len(v)]
    cols = min(3, max(1, len(names)))
    rows = max(1, int(np.ceil(len(names) / cols)))
    fig = new_figure(3.0 * cols, 2.3 * rows)
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        data = np.asarray(values[name], dtype=np.float64)
        ax.hist(data, bins=min(30, max(5, len(np.unique(data)))), color="C0")
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def plot_rgb_depth_pairs(
    pairs: Sequence[tuple[str, npt.NDArray[np.uint8], npt.NDArray[np.floating[Any]]]],
    path: str | Path,
    max_depth_m: float = 80.0,
) -> Path:
    """RGB beside its colourised depth (black = invalid), one row per example."""
    n = max(1, len(pairs))
    fig = _grid_figure(2, n, 7.0)
    for i, (title, rgb, depth) in enumerate(pairs):
        _imshow(fig.add_subplot(n, 2, 2 * i + 1), rgb, title)
        _imshow(
            fig.add_subplot(n, 2, 2 * i + 2),
            colorize_depth(np.asarray(depth, dtype=np.float32), 0.0, max_depth_m),
            f"depth 0-{max_depth_m:g} m",
        )
    return save_figure(fig, path)


# ------------------------------------------------------------------------------- evaluation
def plot_eval_examples(
    examples: Sequence[dict[str, Any]],
    path: str | Path,
    max_depth_m: float = 80.0,
    max_abs_rel: float = 0.5,
) -> Path:
    """Per example: RGB, ground truth, prediction (same colour scale) and the AbsRel error map.

    Each example is a dict with ``title``, ``rgb``, ``gt`` and ``pred`` (m) and ``abs_rel``
    (per-pixel AbsRel inside the evaluated window, NaN elsewhere).
    """
    cmap = require("matplotlib", "report plots").colormaps["magma"]
    n = max(1, len(examples))
    fig = _grid_figure(4, n, 11.0)
    for i, ex in enumerate(examples):
        _imshow(fig.add_subplot(n, 4, 4 * i + 1), ex["rgb"], ex["title"])
        _imshow(
            fig.add_subplot(n, 4, 4 * i + 2),
            colorize_depth(np.asarray(ex["gt"], dtype=np.float32), 0.0, max_depth_m),
            "ground truth",
        )
        _imshow(
            fig.add_subplot(n, 4, 4 * i + 3),
            colorize_depth(np.asarray(ex["pred"], dtype=np.float32), 0.0, max_depth_m),
            f"prediction (0-{max_depth_m:g} m)",
        )
        err = thumbnail(np.asarray(ex["abs_rel"], dtype=np.float32))
        rgba = cmap(np.clip(np.nan_to_num(err, nan=0.0) / max_abs_rel, 0.0, 1.0))
        rgba[~np.isfinite(err)] = (0.5, 0.5, 0.5, 1.0)  # grey: not evaluated
        ax = fig.add_subplot(n, 4, 4 * i + 4)
        ax.imshow(rgba, interpolation="nearest")
        ax.set_title(f"AbsRel 0-{max_abs_rel:g} (grey: not evaluated)", fontsize=8)
        ax.set_axis_off()
    return save_figure(fig, path)


def plot_error_vs_distance(
    edges_m: npt.NDArray[np.float64],
    abs_rel: npt.NDArray[np.float64],
    counts: npt.NDArray[np.int64],
    path: str | Path,
) -> Path:
    """Pixel-weighted AbsRel per ground-truth distance bin, with the pixel count behind it."""
    fig = new_figure(6.4, 3.4)
    ax = fig.add_subplot(1, 1, 1)
    centres = 0.5 * (edges_m[:-1] + edges_m[1:])
    has = counts > 0
    ax.plot(centres[has], abs_rel[has], marker="o", markersize=3, color="C3")
    ax.set_xlabel("ground-truth depth (m)")
    ax.set_ylabel("AbsRel", color="C3")
    ax.set_ylim(bottom=0)
    twin = ax.twinx()
    twin.bar(centres, counts, width=np.diff(edges_m) * 0.9, alpha=0.25, color="C0")
    twin.set_ylabel("pixels", color="C0")
    ax.set_title("error against distance")
    return save_figure(fig, path)


def plot_band_errors(bands: Mapping[str, Mapping[str, float] | None], path: str | Path) -> Path:
    """AbsRel and delta < 1.25 per distance band."""
    present = {k: v for k, v in bands.items() if v is not None}
    labels = list(present)
    fig = new_figure(6.0, 3.0)
    ax = fig.add_subplot(1, 2, 1)
    ax.bar(labels, [present[k]["abs_rel"] for k in labels], color="C3")
    ax.set_title("AbsRel by distance band", fontsize=9)
    ax.tick_params(labelsize=7)
    ax2 = fig.add_subplot(1, 2, 2)
    ax2.bar(labels, [present[k]["a1"] for k in labels], color="C2")
    ax2.set_ylim(0, 1)
    ax2.set_title("delta < 1.25 by distance band", fontsize=9)
    ax2.tick_params(labelsize=7)
    return save_figure(fig, path)


def plot_per_image_metric(values: Sequence[float], path: str | Path, name: str = "AbsRel") -> Path:
    """Histogram of a per-image metric (spread behind the mean)."""
    fig = new_figure(5.0, 3.0)
    ax = fig.add_subplot(1, 1, 1)
    data = np.asarray(values, dtype=np.float64)
    ax.hist(data[np.isfinite(data)], bins=min(40, max(5, data.size)), color="C0")
    ax.set_xlabel(f"per-image {name}")
    ax.set_ylabel("images")
    ax.set_title(f"{name} per image (mean {np.nanmean(data):.4f})" if data.size else name)
    return save_figure(fig, path)
