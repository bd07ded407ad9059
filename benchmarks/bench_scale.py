"""Benchmark: cost of the metric-scale fits of relative models per frame, side by side.

For network output grids of the relative presets (MiDaS small 256x256, Depth Anything V2 at
518x518 and at 1722x518, its lower-bound fit of a 1242x375 camera) a SynthCity frame's exact
depth becomes affine inverse depth (shift 30 % of the output range); then, interleaved in one
loop: the scale-and-shift fit (``fit_affine_ground``), the scale-only plane fit
(``fit_scale_ground``, what relative models had before) and the conversion to metres
(``affine_to_depth``). Printed: median milliseconds of each, the affine fit over the plane fit,
and the depth error of both fits (the plane fit cannot handle the shift).

    python benchmarks/bench_scale.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from tqdm import tqdm

from cloudypoints_core.data.synthcity import render_frame
from cloudypoints_core.inference.scale import affine_to_depth, fit_affine_ground, fit_scale_ground

GRIDS = [(256, 256), (518, 518), (1722, 518)]


def _abs_rel(pred: np.ndarray, truth: np.ndarray) -> float:
    ok = np.isfinite(truth) & (truth < 80.0)
    p = np.clip(np.nan_to_num(pred[ok], nan=80.0), 1e-3, 80.0)
    return float(np.mean(np.abs(p - truth[ok]) / truth[ok]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    print(
        f"{'grid':>9}  {'affine fit':>10}  {'plane fit':>9}  {'to metres':>9}  "
        f"{'affine/plane':>12}  {'AbsRel affine':>13}  {'AbsRel plane':>12}"
    )
    for width, height in GRIDS:
        frame = render_frame(3, width, height)
        inverse = np.where(np.isfinite(frame.depth_m), 1.0 / frame.depth_m, 0.0)
        x = (inverse + 0.3 * inverse.max()).astype(np.float32)
        mount = (frame.intrinsics, frame.camera_height_m, frame.pitch_rad)
        jobs: dict[str, Callable[[], Any]] = {
            "affine": functools.partial(fit_affine_ground, x, *mount),
            "plane": functools.partial(fit_scale_ground, x, *mount),
        }
        affine, plane = jobs["affine"](), jobs["plane"]()  # warm-up (ray grid cache)
        jobs["to_metres"] = functools.partial(
            affine_to_depth, x, affine.scale or 1.0, affine.shift
        )
        times: dict[str, list[float]] = {k: [] for k in jobs}
        for _ in tqdm(range(args.repeats), desc=f"{width}x{height}", leave=False):
            for name, job in jobs.items():
                t0 = time.perf_counter()
                job()
                times[name].append((time.perf_counter() - t0) * 1e3)
        ms = {k: statistics.median(v) for k, v in times.items()}
        err_affine = _abs_rel(affine_to_depth(x, affine.scale or 1.0, affine.shift), frame.depth_m)
        err_plane = _abs_rel(affine_to_depth(x, plane.scale or 1.0, 0.0), frame.depth_m)
        print(
            f"{width:>4}x{height:<4}  {ms['affine']:>8.2f}ms  {ms['plane']:>7.2f}ms  "
            f"{ms['to_metres']:>7.2f}ms  {ms['affine'] / ms['plane']:>12.2f}  "
            f"{err_affine:>13.4f}  {err_plane:>12.4f}"
        )


if __name__ == "__main__":
    main()
