"""Distillation costs on this machine: teacher labelling frames/s and student training steps/s.

    python benchmarks/bench_distill.py [--frames 60] [--size 512x256] [--steps 30] [--threads 2]

1. Writes a SynthCity bag (``--frames`` at ``--size``, 17 Hz, with its depth topic).
2. Labels it with the bundled model as the teacher into a fresh cache (bag read + teacher +
   resize + atomic write per frame) and again with the cache full; prints frames/s of both, the
   teacher's own share, and the ratio between the passes (what a resumed or repeated run saves).
3. Trains two students for ``--steps`` optimiser steps each on those labels through the trainer
   (the default ``resnet_unet`` slim and ``mobile_unet`` w0.5, 384x192, batch 8) and prints
   steps/s, plus the ratio of a step with the teacher in the loop (8 teacher frames + 1 step) to
   a step from the cache: the speed-up caching buys every epoch.
Numbers are measured side by side in one run; absolute values drift on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60, help="frames in the bag")
    parser.add_argument("--size", default="512x256", help="bag image size WxH")
    parser.add_argument("--steps", type=int, default=30, help="training steps per student")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    logging.basicConfig(level=logging.WARNING)

    from cloudypoints_core.bags.writer import write_synthcity_bag
    from cloudypoints_core.training.distill import distill, label_sources, load_distill_config

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        bag = write_synthcity_bag(
            tmp / "bag", seed=21, n_frames=args.frames, width=width, height=height, progress=False
        )
        base = [
            f"distill.label_cache={tmp / 'labels'}",
            "distill.block_s=0.5",
            "distill.gap_s=0",
            "distill.val_fraction=0.15",
            "distill.test_fraction=0.15",
            "distill.progress=false",
            "data.num_workers=0",
            f"train.threads={args.threads}",
            "train.epochs=1",
            f"train.max_steps={args.steps}",
            "train.checkpoint_every_steps=0",
        ]
        dcfg, tcfg = load_distill_config(None, base, bags=[str(bag)])
        size = (tcfg.data.input_width, tcfg.data.input_height)

        t0 = time.perf_counter()
        _, first, _ = label_sources(dcfg, size, tmp / "labels")
        label_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        _, again, _ = label_sources(dcfg, size, tmp / "labels")
        cached_s = time.perf_counter() - t0
        teacher_fps = first.teacher_calls / first.teacher_s
        print(f"bag: {args.frames} frames at {width}x{height}; labels at {size[0]}x{size[1]}")
        print(
            f"labelling (bag read + teacher + write): {first.frames / label_s:7.1f} frames/s "
            f"(teacher alone {teacher_fps:.1f} frames/s, {first.teacher_s / label_s:.0%} of "
            "the time)"
        )
        print(
            f"second pass, every label cached:        {again.frames / cached_s:7.1f} frames/s "
            f"({label_s / cached_s:.0f}x faster, {again.teacher_calls} teacher calls)"
        )

        students = {
            "resnet_unet slim (default student)": [],
            "mobile_unet w0.5": [
                "model.architecture=mobile_unet",
                "model.arch_config={width_mult: 0.5, min_depth_m: 0.5, max_depth_m: 100.0}",
            ],
        }
        for name, extra in students.items():
            dcfg, tcfg = load_distill_config(None, [*base, *extra], bags=[str(bag)])
            run = distill(dcfg, tcfg, tmp / name.split()[0])
            summary = json.loads((run / "summary.json").read_text())
            steps_per_s = summary["steps"] / summary["train_time_s"]
            batch = tcfg.train.batch_size
            step_s = 1.0 / steps_per_s
            with_teacher_s = step_s + batch / teacher_fps
            print(
                f"{name:36s} {steps_per_s:6.2f} steps/s at {tcfg.data.input_width}x"
                f"{tcfg.data.input_height}, batch {batch} ({steps_per_s * batch:.1f} frames/s); "
                f"teacher in the loop would make a step {with_teacher_s / step_s:.2f}x slower"
            )


if __name__ == "__main__":
    main()
