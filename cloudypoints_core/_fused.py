"""Compiled one-pass loops (numba, when installed): clouds and the depth resize's last pass.

An unorganised cloud keeps only the valid pixels, so numpy needs several passes over the image
(validity, counts, products into a scratch block, colour packing, then a masked copy of the
kept points): about 2.5 CPU ms at 1024x512 with colour. A compiled loop reads each pixel once
and writes each kept point once, in about 1 ms, with the very same bytes: each coordinate is
the same single float32 product and the colour the same 0x00RRGGBB word. numba is optional:
without it (or with ``CLOUDYPOINTS_NO_NUMBA=1``) :mod:`cloudypoints_core.pointcloud` uses its
numpy code. The NaN-aware depth resize of the facade finishes in one compiled pass too
(:func:`depth_from_pair`, about 1 ms fewer at 1080p, the same bits). Each variant compiles once
per process (about 0.3 s) on first use.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

#: Set to 1 to use the numpy code even where numba is installed (comparisons, debugging).
DISABLE_ENV = "CLOUDYPOINTS_NO_NUMBA"


def _numba() -> Any | None:
    """numba, or None when it is missing or disabled (then numpy is used)."""
    if os.environ.get(DISABLE_ENV, "").strip() not in ("", "0"):
        return None
    try:
        return importlib.import_module("numba")
    except ImportError:
        return None


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """Whether unorganised clouds are back-projected by the compiled kernels."""
    numba = _numba()
    if numba is None:
        return False
    try:  # compile and run the smallest case once: a numba too old or broken for this numpy
        probe = np.zeros((1, 4), dtype=np.float32)
        one = np.ones((1, 1), dtype=np.float32)
        _fill_kernel(False, True, False, True)(
            one,
            one,
            one,
            _NO_MASK,
            _NO_RGB,
            np.float32(0),
            np.float32(1),
            probe,
            probe.view(np.uint32),
        )
        # The depth resize's last pass, compiled now too (its arrays are always C-ordered).
        depth_from_pair(np.ones((1, 1, 2), dtype=np.float32), 0.5, np.empty((1, 1), np.float32))
    except Exception as exc:
        log.warning("numba %s unusable, clouds use numpy: %s", numba.__version__, exc)
        return False
    return True


# error_model="numpy" everywhere: a float division by zero gives inf as in numpy (numba's
# default raises ZeroDivisionError).
# The flags are closed over, so numba compiles them as constants: each variant has no branch
# on them in its loop (about 1.5x faster than testing them per pixel).
@functools.cache
def _keeps(lo_inclusive: bool, hi_inclusive: bool, use_rays: bool) -> Callable[..., bool]:
    """Whether pixel (i, j) gives a point: the same two comparisons as geometry._Views.valid
    (NaN fails both, +inf the upper one, zero or negative depth the lower one), and a ray."""
    numba = _numba()
    assert numba is not None  # only reached through available()

    @numba.njit(nogil=True, boundscheck=False, cache=False, error_model="numpy", inline="always")
    def keeps(z: Any, lo: Any, hi: Any, ray_ok: Any, i: int, j: int) -> bool:
        low_ok = z >= lo if lo_inclusive else z > lo
        high_ok = z <= hi if hi_inclusive else z < hi
        return low_ok and high_ok and (not use_rays or ray_ok[i, j])

    return keeps


@functools.cache
def _count_kernel(lo_inclusive: bool, hi_inclusive: bool, use_rays: bool) -> Callable[..., int]:
    numba = _numba()
    assert numba is not None
    keeps = _keeps(lo_inclusive, hi_inclusive, use_rays)

    @numba.njit(nogil=True, boundscheck=False, cache=False, error_model="numpy")
    def count(depth: Any, ray_ok: Any, lo: Any, hi: Any) -> int:
        height, width = depth.shape
        n = 0
        for i in range(height):
            for j in range(width):
                if keeps(depth[i, j], lo, hi, ray_ok, i, j):
                    n += 1
        return n

    return count


@functools.cache
def _fill_kernel(
    lo_inclusive: bool, hi_inclusive: bool, use_rays: bool, use_rgb: bool
) -> Callable[..., int]:
    numba = _numba()
    assert numba is not None
    keeps = _keeps(lo_inclusive, hi_inclusive, use_rays)

    @numba.njit(nogil=True, boundscheck=False, cache=False, error_model="numpy")
    def fill(
        depth: Any,
        rays_x: Any,
        rays_y: Any,
        ray_ok: Any,
        rgb: Any,
        lo: Any,
        hi: Any,
        out: Any,
        words: Any,
    ) -> int:
        height, width = depth.shape
        capacity = out.shape[0]
        n = 0
        for i in range(height):
            for j in range(width):
                z = depth[i, j]
                if not keeps(z, lo, hi, ray_ok, i, j):
                    continue
                if n == capacity:  # the caller counted fewer: report, never write past
                    return -1
                out[n, 0] = z * rays_x[i, j]
                out[n, 1] = z * rays_y[i, j]
                out[n, 2] = z
                if use_rgb:
                    words[n, 3] = (
                        (np.uint32(rgb[i, j, 0]) << np.uint32(16))
                        | (np.uint32(rgb[i, j, 1]) << np.uint32(8))
                        | np.uint32(rgb[i, j, 2])
                    )
                else:
                    words[n, 3] = np.uint32(0)
                n += 1
        return n

    return fill


_NO_MASK = np.ones((1, 1), dtype=np.bool_)
_NO_RGB = np.zeros((1, 1, 3), dtype=np.uint8)


def count_valid(
    depth: npt.NDArray[np.float32],
    ray_ok: npt.NDArray[np.bool_] | None,
    min_range_m: float,
    max_range_m: float,
) -> int:
    """Pixels the unorganised cloud keeps (the same test as ``geometry._Views.valid``)."""
    lo, lo_inclusive, hi, hi_inclusive = _bounds(min_range_m, max_range_m)
    kernel = _count_kernel(lo_inclusive, hi_inclusive, ray_ok is not None)
    return int(kernel(depth, _mask(ray_ok), lo, hi))


def fill_valid(
    depth: npt.NDArray[np.float32],
    rays_x: npt.NDArray[np.float32],
    rays_y: npt.NDArray[np.float32],
    ray_ok: npt.NDArray[np.bool_] | None,
    rgb: npt.NDArray[np.uint8] | None,
    min_range_m: float,
    max_range_m: float,
    out: npt.NDArray[np.float32],
) -> int:
    """Write the valid pixels' points (x, y, z, rgb or 0) into ``out`` ((n, 4) float32, C
    order) in row-major pixel order; returns how many were written (-1: more than ``out``
    holds, nothing past it written). Call only when :func:`available`."""
    lo, lo_inclusive, hi, hi_inclusive = _bounds(min_range_m, max_range_m)
    kernel = _fill_kernel(lo_inclusive, hi_inclusive, ray_ok is not None, rgb is not None)
    return int(
        kernel(
            depth,
            rays_x,
            rays_y,
            _mask(ray_ok),
            _NO_RGB if rgb is None else rgb,
            lo,
            hi,
            out,
            out.view(np.uint32),
        )
    )


def _mask(ray_ok: npt.NDArray[np.bool_] | None) -> npt.NDArray[np.bool_]:
    return _NO_MASK if ray_ok is None else ray_ok


def _bounds(min_range_m: float, max_range_m: float) -> tuple[np.float32, bool, np.float32, bool]:
    # float32 bounds: numpy compares float32 depth with a Python float in float32 (NEP 50), and
    # so must the kernel, or a bound that float32 rounds down would keep different pixels.
    lo_inclusive = min_range_m > 0
    hi_inclusive = bool(np.isfinite(max_range_m))
    with np.errstate(over="ignore"):
        lo = np.float32(min_range_m if lo_inclusive else 0.0)
        hi = np.float32(max_range_m if hi_inclusive else np.inf)
    return lo, lo_inclusive, hi, hi_inclusive


@functools.cache
def _depth_from_pair_kernel() -> Callable[..., None]:
    numba = _numba()
    assert numba is not None

    @numba.njit(nogil=True, boundscheck=False, cache=False, error_model="numpy")
    def depth_from_pair(pair: Any, full: Any, out: Any) -> None:
        height, width = out.shape
        nan = np.float32(np.nan)
        one = np.float32(1.0)
        for i in range(height):
            for j in range(width):
                out[i, j] = one / pair[i, j, 0] if pair[i, j, 1] >= full else nan

    return depth_from_pair


def depth_from_pair(
    pair: npt.NDArray[np.float32], full_weight: float, out: npt.NDArray[np.float32]
) -> None:
    """``out = 1 / pair[..., 0]`` where ``pair[..., 1] >= full_weight``, NaN elsewhere, in one
    pass: the float32 division and comparison of numpy's three passes, so the same bits. Call
    only when :func:`available`."""
    _depth_from_pair_kernel()(pair, np.float32(full_weight), out)
