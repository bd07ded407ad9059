"""Standard monocular-depth error metrics (as monodepth2 defines them), pure numpy.

``compute_errors`` takes matched 1-D arrays of valid ground-truth and predicted depths (metres) and
returns AbsRel, SqRel, RMSE, RMSE log and the threshold accuracies delta < 1.25, 1.25^2, 1.25^3
(strict inequality). Protocols (crops, range caps, median scaling) live in ``protocols``;
metrics are computed per image and then averaged over images, as the literature reports them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import numpy.typing as npt

from cloudypoints_core.errors import InputError

METRIC_NAMES: tuple[str, ...] = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
#: Metrics for which lower is better (the others, the delta accuracies, are higher-is-better).
LOWER_IS_BETTER = frozenset({"abs_rel", "sq_rel", "rmse", "rmse_log"})


#: Values per block of :class:`ErrorSums`: four float64 work arrays of 256 KiB stay in cache.
_SUM_BLOCK = 1 << 15
_THRESHOLDS = (1.25, 1.25**2, 1.25**3)


class ErrorSums:
    """Running sums of the per-pixel error terms, so one image's metrics can be fed in pieces.

    :meth:`add` takes matched float64 ground-truth and predicted depths that are already valid
    (finite and positive; not re-checked, for speed); :meth:`metrics` returns what
    :func:`compute_errors` returns for all the values added. Work runs in blocks with reused
    buffers and one division per ratio: about 2.5x faster than the textbook expressions, with
    the same threshold decisions (the ratios are the same correctly rounded quotients) and sums
    equal to about 1e-15 relative.
    """

    def __init__(self) -> None:
        # abs_rel, sq_rel, squared error, squared log error; counts below 1.25, 1.25^2, 1.25^3.
        self._sums = [0.0, 0.0, 0.0, 0.0]
        self._below = [0, 0, 0]
        self.count = 0
        self._work: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None = None

    def _buffers(self, size: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        if self._work is None or self._work[0].size < size:
            self._work = (np.empty(size, np.float64), np.empty(size, np.float64))
        return self._work

    def add(self, gt_m: npt.NDArray[np.float64], pred_m: npt.NDArray[np.float64]) -> None:
        """Add matched valid depths (1-D float64 arrays of equal length)."""
        n = gt_m.size
        if pred_m.size != n:
            raise InputError(f"gt has {n} values but pred has {pred_m.size}; they must match")
        work_a, work_b = self._buffers(min(n, _SUM_BLOCK))
        sums, below = self._sums, self._below
        for start in range(0, n, _SUM_BLOCK):
            g, p = gt_m[start : start + _SUM_BLOCK], pred_m[start : start + _SUM_BLOCK]
            a, b = work_a[: g.size], work_b[: g.size]
            np.subtract(g, p, out=a)
            np.abs(a, out=a)  # |gt - pred|
            np.divide(a, g, out=b)  # |gt - pred| / gt
            sums[0] += float(b.sum())
            # Products in place, then numpy's pairwise sums. Not np.dot: OpenBLAS would wake
            # its worker threads, which then spin and steal the cores from the inference.
            np.multiply(b, a, out=b)  # (|d| / gt) |d| = d^2 / gt
            sums[1] += float(b.sum())
            np.square(a, out=a)
            sums[2] += float(a.sum())
            # max(gt / pred, pred / gt) from the two quotients themselves (not 1 / ratio), so a
            # ratio of exactly 1.25 is decided exactly as the definition reads.
            np.divide(g, p, out=a)
            np.divide(p, g, out=b)
            np.maximum(a, b, out=b)
            for k, threshold in enumerate(_THRESHOLDS):
                below[k] += int(np.count_nonzero(b < threshold))
            np.log(a, out=a)  # ln(gt / pred) = ln gt - ln pred, one logarithm per pixel
            np.square(a, out=a)
            sums[3] += float(a.sum())
        self.count += n

    def metrics(self) -> dict[str, float]:
        """The metrics of everything added so far (InputError when nothing was)."""
        n = self.count
        if n == 0:
            raise InputError("no valid pixels to evaluate")
        abs_rel, sq_rel, sq, log_sq = self._sums
        return {
            "abs_rel": abs_rel / n,
            "sq_rel": sq_rel / n,
            "rmse": math.sqrt(sq / n),
            "rmse_log": math.sqrt(log_sq / n),
            "a1": self._below[0] / n,
            "a2": self._below[1] / n,
            "a3": self._below[2] / n,
        }


def _all_positive_finite(values: npt.NDArray[np.float64]) -> bool:
    # Two reductions instead of isfinite and > 0 passes: NaN propagates through min and fails
    # the comparison, -inf fails the lower bound and +inf the upper one.
    return bool(values.min() > 0.0 and values.max() < np.inf)


def compute_errors(gt_m: npt.ArrayLike, pred_m: npt.ArrayLike) -> dict[str, float]:
    """Errors between matched ground-truth and predicted depths (metres, both > 0).

    Computed in float64 whatever the input dtype (see :class:`ErrorSums` for how).
    """
    gt = np.ascontiguousarray(gt_m, dtype=np.float64).reshape(-1)
    pred = np.ascontiguousarray(pred_m, dtype=np.float64).reshape(-1)
    if gt.shape != pred.shape:
        raise InputError(f"gt has {gt.size} values but pred has {pred.size}; they must match")
    if gt.size == 0:
        raise InputError("no valid pixels to evaluate")
    if not (_all_positive_finite(gt) and _all_positive_finite(pred)):
        raise InputError("gt and pred must be finite and positive; mask or clamp them first")
    sums = ErrorSums()
    sums.add(gt, pred)
    return sums.metrics()


def mean_errors(per_image: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Average per-image metric dictionaries (the literature's per-image-then-mean convention)."""
    rows = list(per_image)
    if not rows:
        raise InputError("no images to average")
    return {name: float(np.mean([row[name] for row in rows])) for name in METRIC_NAMES}


#: Distance bands (metres, [lo, hi)) for errors by range, as the Cityscapes reports use them.
DISTANCE_BANDS: tuple[tuple[float, float], ...] = (
    (0.0, 10.0),
    (10.0, 20.0),
    (20.0, 40.0),
    (40.0, 80.0),
)


def band_label(band: tuple[float, float]) -> str:
    """``"0-10m"`` for the band (0, 10)."""
    return f"{band[0]:g}-{band[1]:g}m"


#: Rows of :class:`ErrorTerms`: per-pixel quantities whose means give the metrics.
TERM_NAMES: tuple[str, ...] = ("abs_rel", "sq_rel", "sq", "log_sq", "a1", "a2", "a3")


class ErrorTerms:
    """Per-pixel error terms of matched depths, one row per name in :data:`TERM_NAMES`.

    ``abs_rel`` |gt - pred| / gt, ``sq_rel`` (gt - pred)^2 / gt, ``sq`` (gt - pred)^2,
    ``log_sq`` (ln(gt / pred))^2, ``a1``..``a3`` 1.0 where max(gt/pred, pred/gt) < 1.25^k. The
    metrics are means of the rows (square roots of the means for the RMSEs), so one image's
    metrics, its distance bands and a distance curve all come from one computation.
    """

    def __init__(self, gt_m: npt.ArrayLike, pred_m: npt.ArrayLike) -> None:
        gt = np.asarray(gt_m, dtype=np.float64).reshape(-1)
        pred = np.asarray(pred_m, dtype=np.float64).reshape(-1)
        if gt.shape != pred.shape:
            raise InputError(f"gt has {gt.size} values but pred has {pred.size}; they must match")
        # Inputs must already be valid (finite, positive): not re-checked here, for speed.
        self.values = np.empty((len(TERM_NAMES), gt.size), dtype=np.float64)
        v = self.values
        np.subtract(gt, pred, out=v[2])
        np.abs(v[2], out=v[0])
        v[0] /= gt
        np.square(v[2], out=v[2])
        np.divide(v[2], gt, out=v[1])
        ratio = gt / pred
        np.log(ratio, out=v[3])
        np.square(v[3], out=v[3])
        thresh = np.maximum(ratio, pred / gt, out=ratio)
        for row, power in ((4, 1), (5, 2), (6, 3)):
            np.less(thresh, 1.25**power, out=v[row], casting="unsafe")

    @property
    def size(self) -> int:
        return int(self.values.shape[1])

    def __getitem__(self, name: str) -> npt.NDArray[np.float64]:
        return self.values[TERM_NAMES.index(name)]

    def reduce(
        self, groups: npt.NDArray[np.integer] | None = None, n_groups: int = 1
    ) -> list[dict[str, float] | None]:
        """Metrics per group (ids in [0, n_groups), others ignored); None for an empty group."""
        if groups is None:
            sums = self.values.sum(axis=1)[:, None]
            counts = np.array([self.size])
        else:
            index = np.asarray(groups).reshape(-1)
            if index.size != self.size:
                raise InputError(f"groups has {index.size} entries for {self.size} pixels")
            # A one-hot matrix product sums every term for every group in one BLAS call
            # (np.bincount with weights is several times slower per term).
            onehot = (index[None, :] == np.arange(n_groups)[:, None]).astype(np.float64)
            sums = self.values @ onehot.T
            counts = onehot.sum(axis=1)
        out: list[dict[str, float] | None] = []
        for g in range(sums.shape[1]):
            c = counts[g]
            if c == 0:
                out.append(None)
                continue
            mean = sums[:, g] / c
            out.append(
                {
                    "abs_rel": float(mean[0]),
                    "sq_rel": float(mean[1]),
                    "rmse": float(np.sqrt(mean[2])),
                    "rmse_log": float(np.sqrt(mean[3])),
                    "a1": float(mean[4]),
                    "a2": float(mean[5]),
                    "a3": float(mean[6]),
                }
            )
        return out


def band_index(gt_m: npt.ArrayLike, bands: Iterable[tuple[float, float]]) -> npt.NDArray[np.intp]:
    """Index of the band [lo, hi) holding each ground-truth depth, -1 where none does."""
    gt = np.asarray(gt_m, dtype=np.float64).reshape(-1)
    index = np.full(gt.shape, -1, dtype=np.intp)
    for k, (lo, hi) in enumerate(bands):
        if not hi > lo:
            raise InputError(f"distance band {(lo, hi)!r} must have hi > lo")
        index[(gt >= lo) & (gt < hi) & (index < 0)] = k
    return index


def band_errors(
    gt_m: npt.ArrayLike,
    pred_m: npt.ArrayLike,
    bands: Iterable[tuple[float, float]] = DISTANCE_BANDS,
) -> dict[str, dict[str, float] | None]:
    """Metrics restricted to ground-truth depths in each band [lo, hi); None for an empty band.

    Inputs are matched valid depths as for :func:`compute_errors` (already masked, scaled and
    clamped by the protocol); the band is chosen by the ground truth, never by the prediction.
    """
    gt = np.asarray(gt_m, dtype=np.float64).reshape(-1)
    pred = np.asarray(pred_m, dtype=np.float64).reshape(-1)
    if gt.shape != pred.shape:
        raise InputError(f"gt has {gt.size} values but pred has {pred.size}; they must match")
    bands = list(bands)
    index = band_index(gt, bands)
    inside = index >= 0
    results = (
        ErrorTerms(gt[inside], pred[inside]).reduce(index[inside], len(bands))
        if inside.any()
        else [None] * len(bands)
    )
    return {band_label(b): r for b, r in zip(bands, results, strict=True)}


def bin_index(values: npt.ArrayLike, edges_m: npt.ArrayLike) -> npt.NDArray[np.intp]:
    """Bin of each value for ascending ``edges_m`` ([e_k, e_k+1)); -1 or len(edges)-1 outside."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    edges = np.asarray(edges_m, dtype=np.float64).reshape(-1)
    if edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise InputError(f"edges_m must be at least 2 strictly increasing values, got {edges!r}")
    steps = np.diff(edges)
    if np.allclose(steps, steps[0], rtol=1e-12, atol=0.0):
        # Uniform bins: arithmetic binning is several times faster than a binary search.
        index = np.floor((x - edges[0]) / steps[0])
        np.clip(index, -1, edges.size - 1, out=index)
        return index.astype(np.intp)
    return np.searchsorted(edges, x, side="right") - 1


def binned_sums(
    index: npt.NDArray[np.intp], weights: npt.ArrayLike, n_bins: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Sum of ``weights`` and count per bin ``index`` in [0, n_bins) (others ignored)."""
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    inside = (index >= 0) & (index < n_bins)
    if not inside.all():
        index, w = index[inside], w[inside]
    sums = np.bincount(index, weights=w, minlength=n_bins)[:n_bins].astype(np.float64, copy=False)
    counts = np.bincount(index, minlength=n_bins)[:n_bins].astype(np.int64)
    return sums, counts


def abs_rel_by_distance(
    gt_m: npt.ArrayLike, pred_m: npt.ArrayLike, edges_m: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Per distance bin (by ground truth, ``edges_m`` ascending): sum of |gt - pred| / gt, count.

    Sums and counts (not means) so that callers can accumulate over images and divide once: the
    curve of AbsRel against distance over a whole data set, pixel-weighted.
    """
    gt = np.asarray(gt_m, dtype=np.float64).reshape(-1)
    pred = np.asarray(pred_m, dtype=np.float64).reshape(-1)
    if gt.shape != pred.shape:
        raise InputError(f"gt has {gt.size} values but pred has {pred.size}; they must match")
    edges = np.asarray(edges_m, dtype=np.float64).reshape(-1)
    return binned_sums(bin_index(gt, edges), np.abs(gt - pred) / gt, edges.size - 1)
