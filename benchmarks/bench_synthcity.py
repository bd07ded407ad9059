"""Frames per second of the SynthCity generator on one core, at several resolutions.

Two access patterns are timed: a drive (one scene, consecutive frames: what ``render_sequence``
and ``write_sequence`` do) and a fresh seed per frame (what ``SynthCityDataset`` with
``frames_per_seed=1`` does, scene generation included). CPU time of this process is reported
next to wall time (on a shared machine the CPU figure is the fairer one), first with glibc's
default allocator settings, then after ``tune_allocator()``.

    python benchmarks/bench_synthcity.py [--frames 12]
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from collections.abc import Callable

# One core, as the target says (set before numpy loads its BLAS).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from cloudypoints_core.data.synthcity import (  # noqa: E402
    SynthCityConfig,
    render_frame,
    render_sequence,
    tune_allocator,
)
from cloudypoints_core.data.synthcity_scene import build_scene  # noqa: E402


def _time(fn: Callable[[], object], n: int) -> tuple[float, float]:
    wall0, cpu0 = time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - wall0) / n, (time.process_time() - cpu0) / n


def _build(n: int, cfg: SynthCityConfig) -> None:
    for s in range(n):
        build_scene(s, cfg)


def _drive(frames: int, w: int, h: int) -> None:
    for _ in render_sequence(1000, frames, w, h):
        pass


def _new_seeds(frames: int, w: int, h: int) -> None:
    for s in range(frames):
        render_frame(2000 + s, w, h)


def _table(n: int, label: str) -> dict[str, float]:
    print(f"--- {label}")
    cfg = SynthCityConfig()
    wall, cpu = _time(functools.partial(_build, n, cfg), n)
    print(f"scene generation: {wall * 1e3:7.1f} ms wall, {cpu * 1e3:7.1f} ms CPU per seed")
    print(f"{'resolution':>11} {'pattern':>10} {'ms/frame':>9} {'frames/s':>9} {'CPU fps':>8}")
    out: dict[str, float] = {}
    for w, h, frames in ((512, 256, n), (1024, 512, max(2, n // 3)), (2048, 1024, 1)):
        patterns: dict[str, Callable[[], object]] = {
            "drive": functools.partial(_drive, frames, w, h),
            "new seed": functools.partial(_new_seeds, frames, w, h),
        }
        if frames == 1:
            patterns = {"single": functools.partial(render_frame, 3000, w, h)}
        for name, fn in patterns.items():
            wall, cpu = _time(fn, frames)
            out[f"{w}x{h} {name}"] = cpu
            print(f"{w:>5}x{h:<5} {name:>10} {wall * 1e3:9.1f} {1 / wall:9.1f} {1 / cpu:8.1f}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=12, help="frames per measurement")
    args = parser.parse_args()
    render_frame(0, 64, 32)  # warm caches (noise tiles)
    default = _table(args.frames, "glibc malloc defaults")
    tuned_ok = tune_allocator()
    tuned = _table(args.frames, f"after tune_allocator() (applied: {tuned_ok})")
    print("--- CPU time ratio default / tuned")
    for key, value in default.items():
        print(f"{key:>22}: {value / tuned[key]:5.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
