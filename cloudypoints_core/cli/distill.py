"""``cloudypoints distill``: a real-time student for your camera from your bags and a big teacher.

    cloudypoints distill --teacher MODEL --bag BAG [--bag BAG ...] --out RUN \
        [--config FILE] [--camera-height-m 1.5 --camera-pitch-rad 0.03] [key=value ...]
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("cloudypoints.distill")


def run_distill(
    *,
    teacher: str | None,
    bags: Sequence[Path] = (),
    images: Sequence[Path] = (),
    out: Path,
    config: Path | str | None = None,
    overrides: Sequence[str] = (),
    command: str | None = None,
    **distill_options: Any,
) -> int:
    """Label, split, train and report; returns 0 when the student package has been written."""
    from cloudypoints_core.training.distill import distill, load_distill_config

    options = dict(distill_options)
    if teacher is not None:
        options["teacher"] = str(teacher)
    if bags:
        options["bags"] = [str(b) for b in bags]
    if images:
        options["image_folders"] = [str(p) for p in images]
    dcfg, tcfg = load_distill_config(config, overrides, **options)
    run_dir = distill(dcfg, tcfg, out, command=command)
    log.info("done: %s (card: %s)", run_dir / "package", run_dir / "package" / "MODEL_CARD.md")
    return 0


def _cmd(args: argparse.Namespace) -> int:
    command = shlex.join(["cloudypoints", *sys.argv[1:]]) if sys.argv else None
    return run_distill(
        teacher=args.teacher,
        bags=args.bag or (),
        images=args.images or (),
        out=args.out,
        config=args.config,
        overrides=args.overrides,
        command=command,
        camera_height_m=args.camera_height_m,
        camera_pitch_rad=args.camera_pitch_rad,
        fixed_scale=args.fixed_scale,
        teacher_backend=args.teacher_backend,
        image_topic=args.image_topic,
        info_topic=args.info_topic,
        depth_topic=args.depth_topic,
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "distill",
        help="distil a big model into a real-time student for your camera, from your bags",
        description=(
            "Label the frames of the bags once with the teacher (cached on disk, resumable), "
            "hold out time blocks for validation and test, and train a student network with "
            "the trainer; writes RUN/package (spec, ONNX, MODEL_CARD.md naming the teacher, "
            "the bags, the split and the scores) and RUN/distill_report.json. Re-running with "
            "the same --out resumes. Overrides such as train.epochs=5 distill.block_s=5 change "
            "single config values (defaults: cloudypoints_core/configs/distill_default.yaml)."
        ),
    )
    parser.add_argument("--teacher", help="teacher model package (default: the bundled model)")
    parser.add_argument(
        "--bag", type=Path, action="append", help="rosbag2 of your camera (repeatable)"
    )
    parser.add_argument(
        "--images",
        type=Path,
        action="append",
        help="image folder with camera.yaml/camera.json, frames in name order (repeatable)",
    )
    parser.add_argument("--out", type=Path, required=True, help="run folder")
    parser.add_argument("--config", help="YAML config (distill + trainer sections)")
    parser.add_argument(
        "--camera-height-m", type=float, help="relative teachers: camera height above the road"
    )
    parser.add_argument(
        "--camera-pitch-rad", type=float, help="relative teachers: camera pitch (down positive)"
    )
    parser.add_argument("--fixed-scale", type=float, help="relative teachers: a fixed scale")
    parser.add_argument(
        "--teacher-backend", help="auto, onnxruntime, torch or tensorrt (default: auto)"
    )
    parser.add_argument("--image-topic", help="image topic (default: found by type)")
    parser.add_argument("--info-topic", help="camera info topic (default: found by type)")
    parser.add_argument(
        "--depth-topic", help="depth topic to learn from (default: found; 'none': no topic)"
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    parser.set_defaults(func=_cmd)
