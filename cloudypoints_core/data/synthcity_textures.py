"""Procedural textures for SynthCity: filtered noise lookups, hashes and anti-aliased patterns.

Every texture is sampled in world metres with a per-pixel footprint (metres per pixel on the
surface), so far surfaces get the blurred mip levels instead of aliasing into noise: the texture
gradient a depth network reads is then the physical one.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
#: Arguments may be any float array (parameters gathered per pixel) or a scalar.
FArg = float | npt.NDArray[np.floating[Any]]

#: Side of each square, periodic noise tile in texels (a power of two so ``& (N - 1)`` wraps);
#: 128 keeps all banks and levels (2 MB) cache-friendly for the random gathers.
NOISE_SIZE = 128
#: Mip levels per noise bank; level l is low-passed to a footprint of about 2**l texels.
NOISE_LEVELS = 7

#: Noise banks: fine grain, blotches, large stains, foliage clumps.
BANK_FINE, BANK_BLOTCH, BANK_LARGE, BANK_LEAVES = 0, 1, 2, 3


@functools.lru_cache(maxsize=1)
def noise_bank() -> F32:
    """Periodic noise tiles and their mip levels, shape (banks, levels, N, N), unit std at level 0.

    Built once per process from a fixed seed (scenes vary by offsets, scales and colours), in the
    frequency domain so the tiles wrap seamlessly and each level is an exact Gaussian low-pass.
    """
    n = NOISE_SIZE
    rng = np.random.default_rng(0x5C17C17)
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.rfftfreq(n)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    spectra = [
        f**-0.4,  # fine grain: close to white noise (asphalt chippings, plaster)
        f**-1.2,  # blotches
        f**-2.0 * (f > 2.0 / n),  # large stains and wear
        np.exp(-(((f - 0.09) / 0.05) ** 2)),  # clumps: band-pass at ~11 texels
    ]
    out = np.empty((len(spectra), NOISE_LEVELS, n, n), dtype=np.float32)
    for b, amp in enumerate(spectra):
        amp = amp.copy()
        amp[0, 0] = 0.0
        white = np.fft.rfft2(rng.standard_normal((n, n)))
        spec = white * amp
        std0 = 1.0
        for level in range(NOISE_LEVELS):
            # A box filter of 2**l texels has about the variance of a Gaussian of sigma 0.4 * 2**l.
            sigma = 0.0 if level == 0 else 0.4 * 2.0**level
            tile = np.fft.irfft2(spec * np.exp(-2.0 * np.pi**2 * sigma**2 * f**2), s=(n, n))
            if level == 0:
                std0 = float(tile.std()) or 1.0
            out[b, level] = tile / std0
    return out


def sample_noise(
    bank: int, u_m: F32, v_m: F32, scale_m: float, log2_fp: F32, offset: float = 0.0
) -> F32:
    """Noise of ``bank`` at world coordinates (u, v) with texels of ``scale_m`` metres.

    ``log2_fp`` is log2 of the pixel footprint in metres; the two mip levels around the footprint
    are blended (nearest texel within a level, which is fine because the tiles are smooth).
    """
    tex = noise_bank()
    n = NOISE_SIZE
    inv = np.float32(1.0 / scale_m)
    lev = np.clip(log2_fp - np.float32(np.log2(scale_m)), 0.0, NOISE_LEVELS - 1.001)
    l0f = np.floor(lev)
    frac = lev - l0f
    l0 = l0f.astype(np.intp)
    iu = np.floor(u_m * inv + np.float32(offset)).astype(np.intp) & (n - 1)
    iv = np.floor(v_m * inv + np.float32(offset * 0.37)).astype(np.intp) & (n - 1)
    flat = tex.reshape(-1)
    idx = ((bank * NOISE_LEVELS + l0) * n + iv) * n + iu
    a = flat[idx]
    b = flat[idx + n * n]
    return a + (b - a) * frac


def periodic_coverage(coord: F32, period: FArg, centre: FArg, half_width: FArg, fp: F32) -> F32:
    """Fraction of a pixel of footprint ``fp`` covered by stripes of ``2 * half_width`` repeating
    every ``period`` (stripe centres at ``centre + k * period``), box-filtered.

    Once the footprint exceeds half a period the result fades to the mean coverage, which is what
    a camera integrating many stripes in one pixel sees.
    """
    p = np.asarray(period, dtype=np.float32)
    q = coord - centre + 0.5 * p
    # np.mod on floats is slow (it fixes signs element by element); floor does the same here.
    d = np.abs(q - np.floor(q / p) * p - 0.5 * p)
    cov = line_coverage(d, half_width, fp)
    w = np.clip(2.0 * fp / p - 1.0, 0.0, 1.0)
    return cov + (np.float32(2.0) * half_width / p - cov) * w


def line_coverage(d: F32, half_width: FArg, fp: F32) -> F32:
    """Fraction of a pixel of footprint ``fp`` (centred at distance ``d`` >= 0 from the centre line
    of a stripe of ``2 * half_width``) that the stripe covers."""
    half = 0.5 * fp
    lo = np.maximum(d - half, -half_width)
    hi = np.minimum(d + half, half_width)
    return np.maximum(hi - lo, 0.0) / fp


def interval_coverage(coord: F32, lo: FArg, hi: FArg, fp: F32) -> F32:
    """Fraction of a pixel of footprint ``fp`` at ``coord`` lying inside [lo, hi]."""
    half = 0.5 * fp
    a = np.maximum(coord - half, lo)
    b = np.minimum(coord + half, hi)
    return np.maximum(b - a, 0.0) / fp


def cell_hash(ix: npt.NDArray[np.int64], iy: npt.NDArray[np.int64], salt: int) -> F32:
    """A uniform [0, 1) value per integer cell (window, tile), stable and cheap."""
    h = (
        (ix * np.int64(73856093))
        ^ (iy * np.int64(19349663))
        ^ np.int64(salt * 83492791 & 0x7FFFFFFF)
    )
    h = (h ^ (h >> 13)) * np.int64(1274126177)
    h = h ^ (h >> 16)
    return ((h & 0xFFFF).astype(np.float32)) * np.float32(1.0 / 65536.0)
