"""Benchmark: back-projection + PointCloud2 packing of a depth frame versus a plain memory copy.

The yardstick is ``np.copyto`` of as many bytes as the packed cloud holds (16 per pixel) into a
preallocated buffer: no conversion can be cheaper than writing its output once. Goal: the one-pass
``backproject_packed`` costs at most 3x that copy at 1024x512. Timings are medians of repeats,
measured side by side in one run. ``np.copy`` (a fresh buffer) shows what allocating the output
costs by itself: above glibc's 32 MiB mmap threshold every fresh buffer is new pages, so the
2048x1024 cloud (33.6 MB) pays page faults unless an ``out=`` buffer is reused.

    python benchmarks/bench_geometry.py [--repeats 50] [--sizes 1024x512 2048x1024]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from cloudypoints_core.geometry import Intrinsics, backproject, ray_grid
from cloudypoints_core.pointcloud import backproject_packed, pack_points

GOAL_RATIO = 3.0


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: caches, allocator, page faults of first use
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def bench_size(width: int, height: int, repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    intr = Intrinsics(0.8 * width, 0.8 * width, width / 2 - 0.3, height / 2 + 0.2, width, height)
    depth = rng.uniform(0.5, 80.0, size=(height, width)).astype(np.float32)
    holes = depth.copy()
    holes[rng.random(depth.shape) < 0.05] = np.nan
    rgb = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    ray_grid(intr)  # once per camera, not per frame

    src = np.empty(height * width * 16, np.uint8)
    src[:] = 1
    dst = np.empty_like(src)
    out = np.empty_like(src)
    cases: dict[str, Callable[[], object]] = {
        "np.copyto (same bytes)": lambda: np.copyto(dst, src),
        "np.copy (new buffer + copy)": lambda: src.copy(),
        "backproject_packed": lambda: backproject_packed(depth, intr),
        "backproject_packed +rgb": lambda: backproject_packed(depth, intr, rgb),
        "backproject_packed out=": lambda: backproject_packed(depth, intr, out=out),
        "backproject_packed +rgb out=": lambda: backproject_packed(depth, intr, rgb, out=out),
        "backproject_packed 5% NaN": lambda: backproject_packed(holes, intr),
        "backproject_packed +rgb 5% NaN": lambda: backproject_packed(holes, intr, rgb),
        "backproject (H, W, 3) only": lambda: backproject(depth, intr),
        "backproject + pack_points": lambda: pack_points(backproject(depth, intr).xyz),
        "backproject + pack_points +rgb": lambda: pack_points(backproject(depth, intr).xyz, rgb),
        "backproject_packed unorganised 5% NaN": lambda: backproject_packed(
            holes, intr, organised=False
        ),
        "backproject_packed +rgb unorganised 5% NaN": lambda: backproject_packed(
            holes, intr, rgb, organised=False
        ),
    }
    return {name: median_ms(fn, repeats) for name, fn in cases.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--sizes", nargs="+", default=["1024x512", "2048x1024"])
    args = parser.parse_args()
    verdicts = []
    for size in args.sizes:
        width, height = (int(v) for v in size.lower().split("x"))
        results = bench_size(width, height, args.repeats)
        base = results["np.copyto (same bytes)"]
        mb = width * height * 16 / 1e6
        print(f"\n{width}x{height}: {mb:.1f} MB of PointCloud2 data, median of {args.repeats}")
        print(f"{'case':44s} {'ms':>8s} {'x copy':>8s}")
        for name, ms in results.items():
            print(f"{name:44s} {ms:8.3f} {ms / base:8.2f}")
        verdicts.append(
            (
                size,
                {
                    k: results[k] / base
                    for k in (
                        "backproject_packed",
                        "backproject_packed +rgb",
                        "backproject_packed out=",
                        "backproject_packed +rgb out=",
                    )
                },
            )
        )
    print(f"\nGoal: backproject_packed <= {GOAL_RATIO:.0f}x np.copyto of the same bytes")
    for size, ratios in verdicts:
        fresh, reused = ratios["backproject_packed"], ratios["backproject_packed out="]
        print(
            f"{size}: {fresh:.2f}x ({'meets' if fresh <= GOAL_RATIO else 'misses'}), "
            f"+rgb {ratios['backproject_packed +rgb']:.2f}x; with a reused out= buffer "
            f"{reused:.2f}x ({'meets' if reused <= GOAL_RATIO else 'misses'}), "
            f"+rgb {ratios['backproject_packed +rgb out=']:.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
