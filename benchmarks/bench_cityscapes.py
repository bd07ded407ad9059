"""Benchmark: Cityscapes reading, analysis and protocol costs per full-size (2048x1024) frame.

The yardstick is decoding the frame's two PNGs with OpenCV (``cv2.imread`` of the 8-bit image and
the 16-bit disparity): a reader cannot be cheaper than that. Measured side by side in one run on
frames written in the real format (analytic scene, real calibration):

- the construction scan (two PNG headers per frame) against the decode: why the scan can run on
  every construction;
- a sample (decode + disparity-to-depth + hood mask + schema), native and resized to 512x256;
- the EDA statistics of one frame and the evaluation protocol of one frame (crop, range, clamp,
  metrics, bands, distance curve).

Goals: scan < 1 % of a decode; sample overhead over the decode < 30 %; statistics of a frame
below one decode; protocol and metrics below 1.5 decodes (the ground truth is decoded anyway).
Timings are medians of interleaved repeats.

    python benchmarks/bench_cityscapes.py [--frames 6] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "test" / "core" / "data"))

from cityscapes_fixture import write_full_size_frame  # noqa: E402

from cloudypoints_core.data.cityscapes import CityscapesDataset, read_png_header  # noqa: E402
from cloudypoints_core.evaluation.eda import DepthStats  # noqa: E402
from cloudypoints_core.evaluation.protocols import (  # noqa: E402
    CITYSCAPES_PROTOCOL,
    evaluate_image,
)


def interleaved_ms(stages: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time (ms) of each stage, the stages run in turn in every round.

    Interleaving keeps the ratios honest on a shared machine: a burst of load from another
    process hits every stage of a round alike instead of one stage's whole series.
    """
    for fn in stages.values():
        fn()  # warm-up: page cache, allocator
    times: dict[str, list[float]] = {name: [] for name in stages}
    for _ in range(repeats):
        for name, fn in stages.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(values) * 1e3 for name, values in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for seq in range(args.frames):
            write_full_size_frame(root, "test", "berlin", seq)
        native = CityscapesDataset(root, "test", hood="mask")
        small = CityscapesDataset(root, "test", size=(512, 256))
        frames = native.frames
        n = len(frames)

        def decode_all() -> None:
            for f in frames:
                cv2.imread(str(f.image_path), cv2.IMREAD_COLOR)
                cv2.imread(str(f.disparity_path), cv2.IMREAD_UNCHANGED)

        def headers_all() -> None:
            for f in frames:
                read_png_header(f.image_path)
                read_png_header(f.disparity_path)

        def samples(ds: CityscapesDataset) -> Callable[[], None]:
            return lambda: [ds[i] for i in range(n)]

        loaded = [native[i] for i in range(n)]
        rng = np.random.default_rng(0)
        preds = [
            s["depth_m"] * rng.uniform(0.8, 1.2, s["depth_m"].shape).astype(np.float32)
            for s in loaded
        ]

        def stats_all() -> None:
            acc = DepthStats()
            for s in loaded:
                acc.add(s["depth_m"], region_rows=768)

        def protocol_all() -> None:
            for s, p in zip(loaded, preds, strict=True):
                evaluate_image(CITYSCAPES_PROTOCOL, s["depth_m"], p)

        stages = {
            "decode image + disparity (yardstick)": decode_all,
            "scan: two PNG headers": headers_all,
            "sample, native 2048x1024": samples(native),
            "sample, resized to 512x256": samples(small),
            "EDA statistics of a frame": stats_all,
            "protocol + metrics of a frame": protocol_all,
        }
        rows = {name: ms / n for name, ms in interleaved_ms(stages, args.repeats).items()}
    base = rows["decode image + disparity (yardstick)"]
    print(f"Cityscapes frame costs at 2048x1024, median of {args.repeats} x {n} frames")
    print(f"{'step':40s} {'ms/frame':>10s} {'x decode':>10s}")
    for name, ms in rows.items():
        print(f"{name:40s} {ms:10.3f} {ms / base:10.4f}")
    scan = rows["scan: two PNG headers"]
    eda_min = 5000 * (rows["sample, native 2048x1024"] + rows["EDA statistics of a frame"]) / 6e4
    protocol_s = 1525 * rows["protocol + metrics of a frame"] / 1e3
    print(
        f"\nestimates for the real release (one core): scan of 5000 frames "
        f"{5000 * scan / 1e3:.2f} s; EDA of 5000 frames {eda_min:.1f} min; protocol on 1525 "
        f"test frames {protocol_s:.0f} s plus the model"
    )
    ok = (
        scan / base < 0.01
        and rows["sample, native 2048x1024"] / base < 1.3
        and rows["EDA statistics of a frame"] < base
        and rows["protocol + metrics of a frame"] < 1.5 * base
    )
    print("goals met" if ok else "goals NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
