"""Evaluation protocols: which pixels count, how predictions are scaled and clamped, per image.

The Cityscapes protocol is the one the literature reports (ManyDepth's, on the 1525 test
images): ground truth from disparity; the top 75 % of the rows are kept (the rest is the
ego-vehicle's hood); metrics are taken on rows 256-767 and columns 192-1855 of the 2048x1024
frame; ground truth in (1e-3, 80) m; the prediction, at ground-truth resolution, optionally
median-scaled per image (scale-ambiguous models), then clamped to [1e-3, 80] m; metrics per image,
then averaged.

When the ground truth has another resolution (H, W), the crop window is the same fraction of the
frame: rows [round(H * 256/1024), round(H * 768/1024)), columns [round(W * 192/2048),
round(W * 1856/2048)); exact whole pixels whenever W and H divide 2048 and 1024 by a power of two.

SynthCity protocol: held-out seeds, exact rendered depth (sky, inf, excluded), the same range cap
(80 m), no hood and no crop.

No pixel with valid ground truth is ever left out because of its prediction: a prediction
outside the range is clamped, a missing one (NaN: the network's own, or what the node publishes
beyond the model's valid range) counts at the far edge, and ``coverage`` (the share predicted
inside the range) is reported beside the metrics, with a warning below
:data:`COVERAGE_WARNING_BELOW`. :func:`evaluate_image` is the one scoring function of every
path (``cloudypoints evaluate``, ``bag evaluate``, live replay, the demo, the trainer).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from cloudypoints_core.errors import ConfigError, InputError
from cloudypoints_core.evaluation.metrics import (
    DISTANCE_BANDS,
    ErrorSums,
    ErrorTerms,
    band_index,
    band_label,
    bin_index,
    binned_sums,
)

ModelInput = Literal["auto", "full", "above_hood"]

#: Bin edges (m) of the AbsRel-against-distance curve.
DISTANCE_CURVE_EDGES_M: tuple[float, ...] = tuple(float(x) for x in range(0, 81, 2))


@dataclass(frozen=True)
class EvalProtocol:
    """Which pixels are evaluated and how the prediction is treated.

    ``crop`` is (top, bottom, left, right) as fractions of the full frame (bottom and right
    exclusive); ``keep_top_fraction`` the share of rows kept above the hood (None: all rows).
    ``model_input`` says what the network sees: the full frame, or only the rows above the hood
    (with the intrinsics cropped to match), as ManyDepth's pipeline feeds it; ``auto`` picks the
    one whose aspect ratio is closer to the model's input size (see :meth:`resolve_model_input`).
    """

    name: str
    min_depth_m: float = 1e-3
    max_depth_m: float = 80.0
    keep_top_fraction: float | None = None
    crop: tuple[float, float, float, float] | None = None
    median_scaling: bool = False
    model_input: ModelInput = "full"
    bands: tuple[tuple[float, float], ...] = DISTANCE_BANDS
    description: str = ""

    def __post_init__(self) -> None:
        if not (0 < self.min_depth_m < self.max_depth_m and math.isfinite(self.max_depth_m)):
            raise ConfigError(
                f"protocol {self.name!r}: need 0 < min_depth_m < max_depth_m < inf, got "
                f"{self.min_depth_m!r}, {self.max_depth_m!r}"
            )
        if self.keep_top_fraction is not None and not 0 < self.keep_top_fraction <= 1:
            raise ConfigError(
                f"protocol {self.name!r}: keep_top_fraction must be in (0, 1], got "
                f"{self.keep_top_fraction!r}"
            )
        if self.crop is not None:
            top, bottom, left, right = self.crop
            if not (0 <= top < bottom <= 1 and 0 <= left < right <= 1):
                raise ConfigError(
                    f"protocol {self.name!r}: crop (top, bottom, left, right) must be fractions "
                    f"with top < bottom and left < right, got {self.crop!r}"
                )
        if self.model_input not in ("auto", "full", "above_hood"):
            raise ConfigError(
                f"protocol {self.name!r}: model_input must be 'auto', 'full' or 'above_hood', got "
                f"{self.model_input!r}"
            )
        if self.model_input == "above_hood" and self.keep_top_fraction is None:
            raise ConfigError(
                f"protocol {self.name!r}: model_input 'above_hood' needs keep_top_fraction"
            )

    def resolve_model_input(
        self, frame_width: int, frame_height: int, model_width: int, model_height: int
    ) -> ModelInput:
        """``full`` or ``above_hood`` for a frame and a model input size (``auto`` resolved).

        A network is fed the view whose aspect ratio is closer (in log ratio) to its input's, so
        that a model trained on hood-cropped 8:3 frames (ManyDepth's 512x192) sees those and a
        model trained on whole 2:1 frames sees whole frames; neither is stretched.
        """
        if self.model_input != "auto":
            return self.model_input
        if self.keep_top_fraction is None or self.keep_top_fraction >= 1:
            return "full"
        model_aspect = model_width / model_height
        full = abs(math.log(frame_width / frame_height / model_aspect))
        top = abs(math.log(frame_width / self.kept_rows(frame_height) / model_aspect))
        return "above_hood" if top < full else "full"

    def with_options(self, **changes: Any) -> EvalProtocol:
        """A copy with some fields changed (e.g. ``median_scaling=True``)."""
        return replace(self, **changes)

    def kept_rows(self, height: int) -> int:
        """Rows above the hood for an image ``height`` rows tall."""
        if self.keep_top_fraction is None:
            return height
        return int(round(self.keep_top_fraction * height))

    def crop_window(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(row0, row1, col0, col1), end exclusive, of the evaluated window at this resolution."""
        rows = self.kept_rows(height)
        if self.crop is None:
            return 0, rows, 0, width
        top, bottom, left, right = self.crop
        r0, r1 = int(round(top * height)), int(round(bottom * height))
        c0, c1 = int(round(left * width)), int(round(right * width))
        r1 = min(r1, rows)
        if r1 <= r0 or c1 <= c0:
            raise InputError(
                f"protocol {self.name!r}: empty crop window on a {width}x{height} image"
            )
        return r0, r1, c0, c1

    def summary(self) -> str:
        """One paragraph stating the protocol, median scaling included."""
        scaling = (
            "per-image median scaling ON (prediction multiplied by median(gt) / median(pred); "
            "metric scale is NOT tested)"
            if self.median_scaling
            else "no median scaling (metric depth evaluated as predicted)"
        )
        parts = [f"{self.name}: ground truth in ({self.min_depth_m:g}, {self.max_depth_m:g}) m"]
        if self.keep_top_fraction is not None:
            parts.append(f"top {self.keep_top_fraction:.0%} of the rows kept (hood removed)")
        if self.crop is not None:
            r0, r1, c0, c1 = self.crop_window(1024, 2048)
            parts.append(
                f"evaluated window rows {r0}-{r1 - 1} and columns {c0}-{c1 - 1} of a 2048x1024 "
                "frame (the same fractions of the frame at other resolutions)"
            )
        parts.append(
            f"every pixel with valid ground truth scored, the prediction clamped to "
            f"[{self.min_depth_m:g}, {self.max_depth_m:g}] m (a missing one, NaN, at "
            f"{self.max_depth_m:g} m)"
        )
        parts.append(scaling)
        views = {
            "above_hood": "rows above the hood",
            "full": "full frame",
            "auto": "full frame or rows above the hood, whichever fits the model's aspect",
        }
        parts.append(f"model input: {views[self.model_input]}")
        parts.append("metrics per image, then averaged over images")
        return "; ".join(parts) + "."

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["bands"] = [list(b) for b in self.bands]
        data["crop"] = list(self.crop) if self.crop is not None else None
        return data


#: ManyDepth's Cityscapes protocol (rows 256-767, columns 192-1855 of 2048x1024).
CITYSCAPES_PROTOCOL = EvalProtocol(
    name="cityscapes",
    keep_top_fraction=0.75,
    crop=(256 / 1024, 768 / 1024, 192 / 2048, 1856 / 2048),
    model_input="auto",
    description=(
        "ManyDepth's Cityscapes protocol: 1525 test images, ground truth from disparity, rows "
        "256-767 and columns 192-1855 of the 2048x1024 frame"
    ),
)

#: SynthCity: exact rendered depth on held-out seeds, 80 m cap, whole frame.
SYNTHCITY_PROTOCOL = EvalProtocol(
    name="synthcity",
    description="SynthCity held-out seeds, exact depth, sky excluded, whole frame, 80 m cap",
)

PROTOCOLS: Mapping[str, EvalProtocol] = {
    "cityscapes": CITYSCAPES_PROTOCOL,
    "synthcity": SYNTHCITY_PROTOCOL,
}


def get_protocol(name: str, **options: Any) -> EvalProtocol:
    """The named protocol, with ``options`` (e.g. median_scaling=True) applied."""
    try:
        protocol = PROTOCOLS[name]
    except KeyError as exc:
        raise ConfigError(
            f"unknown evaluation protocol {name!r}; known: {sorted(PROTOCOLS)}"
        ) from exc
    return protocol.with_options(**options) if options else protocol


#: Mean coverage below which a report warns that the prediction often fell outside the range.
COVERAGE_WARNING_BELOW = 0.99


def coverage_warning(coverage: float | None) -> str | None:
    """The report's warning for a mean ``coverage`` below :data:`COVERAGE_WARNING_BELOW`."""
    if coverage is None or not math.isfinite(coverage) or coverage >= COVERAGE_WARNING_BELOW:
        return None
    return (
        f"coverage {coverage:.4f} < {COVERAGE_WARNING_BELOW}: on {1 - coverage:.1%} of the pixels "
        "with valid ground truth the prediction was missing (NaN) or outside the protocol's "
        "range; those pixels are scored at the range edge, not left out"
    )


@dataclass
class ImageEvaluation:
    """One image under a protocol: its metrics and the bookkeeping the report needs.

    ``bands``, ``curve_sums``, ``curve_counts`` and ``abs_rel_map`` are filled only by a
    ``detailed`` evaluation (empty / None otherwise).
    """

    metrics: dict[str, float] | None
    bands: dict[str, dict[str, float] | None]
    #: Pixels with valid ground truth in the window: every one of them is scored.
    n_gt_valid: int
    n_evaluated: int
    #: Share of the scored pixels whose prediction was inside the protocol's range as predicted
    #: (neither missing nor clamped). Reported beside the metrics; it never removes a pixel.
    coverage: float
    scale_ratio: float
    curve_sums: npt.NDArray[np.float64] | None
    curve_counts: npt.NDArray[np.int64] | None
    #: (H, W) AbsRel per pixel inside the window (NaN elsewhere), for error maps.
    abs_rel_map: npt.NDArray[np.float32] | None
    #: Evaluated window (row0, row1, col0, col1), end exclusive.
    window: tuple[int, int, int, int] = (0, 0, 0, 0)


def clamp_prediction(
    pred_m: npt.NDArray[np.float64], min_depth_m: float, max_depth_m: float
) -> int:
    """Clamp predicted depths to [min_depth_m, max_depth_m] in place, as the protocol scores them.

    NaN (no depth: the network's own NaN, or what a node publishes for depth outside its valid
    range) is scored at the far edge ``max_depth_m``: a metric model's NaN almost always means
    "beyond the far limit", and the live replay, which only sees the published NaN, must score
    a frame as the offline path that sees the unmasked value does. +inf clamps to the far edge,
    zero, negative and -inf to the near edge. Returns how many values were inside the range as
    given (finite, neither clamped nor substituted): the numerator of the coverage.
    """
    with np.errstate(invalid="ignore"):
        inside = int(np.count_nonzero((pred_m >= min_depth_m) & (pred_m <= max_depth_m)))
    np.nan_to_num(pred_m, copy=False, nan=max_depth_m, posinf=max_depth_m, neginf=min_depth_m)
    np.clip(pred_m, min_depth_m, max_depth_m, out=pred_m)
    return inside


#: Pixels per block of the lean (not detailed) path: float32 inputs, masks and float64 copies of
#: one block stay in the CPU cache while every metric term is computed on them.
_SCORE_BLOCK_PX = 1 << 15


def evaluate_image(
    protocol: EvalProtocol,
    gt_depth_m: npt.NDArray[np.floating[Any]],
    pred_depth_m: npt.NDArray[np.floating[Any]],
    curve_edges_m: npt.ArrayLike = DISTANCE_CURVE_EDGES_M,
    *,
    detailed: bool = True,
) -> ImageEvaluation:
    """Score one image under ``protocol``: the one scoring function of every evaluation path.

    Both depths in metres at the same (H, W). Every pixel of the window whose ground truth is
    finite and strictly inside (min_depth_m, max_depth_m) is scored: the prediction is
    optionally median-scaled, then clamped to [min_depth_m, max_depth_m] with NaN at the far
    edge (:func:`clamp_prediction`), then monodepth2's metrics are taken. No pixel is left out
    because of its prediction; ``coverage`` says how many predictions needed no clamping.
    ``detailed`` adds distance bands, the AbsRel-by-distance sums and the per-pixel AbsRel map
    (the metrics are the same; the lean path runs block by block and is several times faster).
    """
    gt_full = np.asarray(gt_depth_m)
    pred_full = np.asarray(pred_depth_m)
    if gt_full.ndim != 2 or gt_full.shape != pred_full.shape:
        raise InputError(
            f"gt and prediction must be (H, W) arrays of one shape, got {gt_full.shape} and "
            f"{pred_full.shape}; resize the prediction to the ground truth first"
        )
    height, width = gt_full.shape
    window = protocol.crop_window(height, width)
    r0, r1, c0, c1 = window
    # Crop before any conversion: the window is a quarter of a Cityscapes frame.
    gt = gt_full[r0:r1, c0:c1]
    pred = pred_full[r0:r1, c0:c1]
    lo, hi = protocol.min_depth_m, protocol.max_depth_m
    if not detailed and not protocol.median_scaling:
        return _evaluate_lean(gt, pred, lo, hi, window)
    with np.errstate(invalid="ignore"):
        # NaN fails both comparisons and the range is finite: no isfinite pass needed.
        gt_valid = (gt > lo) & (gt < hi)
    n_gt = int(np.count_nonzero(gt_valid))
    edges = np.asarray(curve_edges_m, dtype=np.float64)
    if n_gt == 0:
        return ImageEvaluation(
            metrics=None,
            bands={},
            n_gt_valid=0,
            n_evaluated=0,
            coverage=float("nan"),
            scale_ratio=float("nan"),
            curve_sums=np.zeros(edges.size - 1) if detailed else None,
            curve_counts=np.zeros(edges.size - 1, dtype=np.int64) if detailed else None,
            abs_rel_map=np.full((height, width), np.nan, np.float32) if detailed else None,
            window=window,
        )
    gt_values = gt[gt_valid].astype(np.float64)
    pred_values = pred[gt_valid].astype(np.float64)
    ratio = 1.0
    if protocol.median_scaling:
        with np.errstate(invalid="ignore"):
            usable = (pred_values > 0) & (pred_values < np.inf)
        if usable.any():
            ratio = float(np.median(gt_values[usable]) / np.median(pred_values[usable]))
            pred_values *= ratio
        else:
            ratio = float("nan")  # nothing to scale: every pixel is scored at the range edge
    # Scale first, then clamp (the order the literature uses).
    inside = clamp_prediction(pred_values, lo, hi)
    if not detailed:
        sums = ErrorSums()
        sums.add(gt_values, pred_values)
        return ImageEvaluation(
            sums.metrics(), {}, n_gt, n_gt, inside / n_gt, ratio, None, None, None, window
        )
    # Per-pixel terms once; the image's metrics, its bands and the distance curve all reduce them.
    terms = ErrorTerms(gt_values, pred_values)
    metrics = terms.reduce()[0]
    bands = dict(
        zip(
            (band_label(b) for b in protocol.bands),
            terms.reduce(band_index(gt_values, protocol.bands), len(protocol.bands)),
            strict=True,
        )
    )
    sums_px, counts = binned_sums(bin_index(gt_values, edges), terms["abs_rel"], edges.size - 1)
    abs_rel_map = np.full((height, width), np.nan, dtype=np.float32)
    in_window = np.full(gt.shape, np.nan, dtype=np.float32)
    in_window[gt_valid] = terms["abs_rel"]
    abs_rel_map[r0:r1, c0:c1] = in_window
    return ImageEvaluation(
        metrics=metrics,
        bands=bands,
        n_gt_valid=n_gt,
        n_evaluated=n_gt,
        coverage=inside / n_gt,
        scale_ratio=ratio,
        curve_sums=sums_px,
        curve_counts=counts,
        abs_rel_map=abs_rel_map,
        window=window,
    )


def _evaluate_lean(
    gt: npt.NDArray[Any],
    pred: npt.NDArray[Any],
    lo: float,
    hi: float,
    window: tuple[int, int, int, int],
) -> ImageEvaluation:
    """:func:`evaluate_image` without median scaling or details, block by block (same rules)."""
    sums = ErrorSums()
    n_gt = inside = 0
    rows = max(1, _SCORE_BLOCK_PX // max(1, gt.shape[1]))
    for top in range(0, gt.shape[0], rows):
        gb, pb = gt[top : top + rows], pred[top : top + rows]
        with np.errstate(invalid="ignore"):
            gt_ok = gb > lo
            np.logical_and(gt_ok, gb < hi, out=gt_ok)
        g = gb[gt_ok].astype(np.float64)
        if g.size == 0:
            continue
        p = pb[gt_ok].astype(np.float64)
        inside += clamp_prediction(p, lo, hi)
        n_gt += g.size
        # Ground truth in (lo, hi), prediction in [lo, hi], 0 < lo < hi < inf (the protocol
        # checks it): valid by construction, so compute_errors' validation is not repeated.
        sums.add(g, p)
    if n_gt == 0:
        return ImageEvaluation(
            None, {}, 0, 0, float("nan"), float("nan"), None, None, None, window
        )
    return ImageEvaluation(
        sums.metrics(), {}, n_gt, n_gt, inside / n_gt, 1.0, None, None, None, window
    )


def scored_depth(result: Any) -> npt.NDArray[np.floating[Any]]:
    """The depth a prediction result is scored on: the facade's unmasked depth when it kept
    one (``predict(..., keep_unmasked=True)``), else ``depth_m`` (NaN then scores at the far
    edge, as for the node's published depth)."""
    unmasked = getattr(result, "depth_unmasked_m", None)
    return np.asarray(result.depth_m if unmasked is None else unmasked)


def resize_prediction(
    pred_depth_m: npt.NDArray[np.floating[Any]], height: int, width: int
) -> npt.NDArray[np.float32]:
    """Resize a depth prediction to the ground truth's (height, width).

    Interpolates inverse depth bilinearly (as monodepth2 resizes its disparity), normalised by the
    interpolated validity so that invalid pixels (NaN) neither spread nor pull values towards
    zero; output pixels with no valid source are NaN.
    """
    from cloudypoints_core._optional import require

    cv2 = require("cv2", "resizing predictions for evaluation")
    pred = np.asarray(pred_depth_m, dtype=np.float32)
    if pred.ndim != 2:
        raise InputError(f"prediction must be an (H, W) array, got shape {pred.shape}")
    if pred.shape == (height, width):
        return pred
    valid = np.isfinite(pred) & (pred > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(valid, 1.0 / pred, 0.0).astype(np.float32)
    inv = cv2.resize(inv, (width, height), interpolation=cv2.INTER_LINEAR)
    weight = cv2.resize(valid.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where((weight > 1e-6) & (inv > 0), weight / inv, np.nan)
    return out.astype(np.float32)
