"""``cloudypoints bag``: convert data sets to rosbag2, inspect bags, evaluate offline or by replay.

Each subcommand is a typed function returning an exit code (0 success, 1 a partial report or
nothing evaluated, 2 an error raised by the core, turned into one line by ``cli.main``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("cloudypoints.bag")


# ------------------------------------------------------------------------------ the functions
def run_convert(
    dataset: str,
    out: Path,
    *,
    storage: str = "mcap",
    image_format: str = "raw",
    root: Path | None = None,
    split: str = "val",
    city: str | None = None,
    sequence: int | None = None,
    seed: int = 0,
    frames: int | None = None,
    width: int | None = None,
    height: int | None = None,
    speed_mps: float | None = None,
    hood_fraction: float = 0.25,
    image_topic: str | None = None,
    info_topic: str | None = None,
    gt_topic: str | None = None,
    overwrite: bool = False,
    jpeg_quality: int = 95,
    progress: bool = True,
) -> int:
    """Convert a Cityscapes sequence or a SynthCity drive to a bag at ``out``."""
    from cloudypoints_core.bags.convert import convert_cityscapes, write_synthcity_bag
    from cloudypoints_core.bags.writer import BagTopics
    from cloudypoints_core.errors import InputError

    defaults = BagTopics()
    topics = BagTopics(
        image=image_topic or defaults.image,
        camera_info=info_topic or defaults.camera_info,
        depth_gt=gt_topic or defaults.depth_gt,
    )
    common: dict[str, Any] = dict(
        storage=storage,
        image_format=image_format,
        topics=topics,
        overwrite=overwrite,
        jpeg_quality=jpeg_quality,
        progress=progress,
    )
    if dataset == "cityscapes":
        if root is None or city is None or sequence is None:
            raise InputError("--dataset cityscapes needs --root, --city and --sequence")
        if (width is None) != (height is None):
            raise InputError("give both --width and --height (or neither for the native size)")
        size = (width, height) if width is not None and height is not None else None
        path = convert_cityscapes(
            root,
            split,
            city,
            sequence,
            out,
            size=size,
            max_frames=frames,
            hood_fraction=hood_fraction,
            **common,
        )
    elif dataset == "synthcity":
        path = write_synthcity_bag(
            out,
            seed=seed,
            n_frames=frames or 30,
            width=width or 640,
            height=height or 320,
            speed_mps=speed_mps,
            **common,
        )
    else:
        raise InputError(f"--dataset must be cityscapes or synthcity, got {dataset!r}")
    log.info("bag written: %s", path)
    return 0


def run_info(bag: Path, *, as_json: bool = False) -> int:
    """Print a bag's storage, duration and topics (and which topics evaluation would use)."""
    from cloudypoints_core.bags.reader import bag_info, open_bag, resolve_streams
    from cloudypoints_core.errors import BagError

    # One opening: a truncated bag is salvaged, and warned about, once.
    with open_bag(bag) as reader:
        info = bag_info(bag, reader)
        try:
            streams: dict[str, Any] | str = vars(resolve_streams(reader, path=bag))
        except BagError as exc:
            streams = f"not evaluable: {exc}"
    if as_json:
        sys.stdout.write(
            json.dumps({**info.to_dict(), "evaluation_topics": streams}, indent=2) + "\n"
        )
        return 0
    lines = [
        f"bag:       {info.path}",
        f"storage:   {info.storage}",
        f"duration:  {info.duration_ns / 1e9:.3f} s",
        f"start:     {info.start_ns} ns",
        f"messages:  {info.message_count}",
        "topics:",
        *[f"  {t.name:40s} {t.msgtype:34s} {t.count:8d}" for t in info.topics],
        f"evaluation topics: {streams}",
    ]
    if info.note:
        lines.append(f"note: {info.note}")
    if info.custom_data:
        lines.append("custom data:")
        lines += [f"  {k}: {v}" for k, v in info.custom_data.items()]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def run_evaluate(
    bag: Path,
    out: Path,
    *,
    model: str | None = None,
    backend: str = "auto",
    device: str = "cpu",
    image_topic: str | None = None,
    info_topic: str | None = None,
    gt_topic: str | None = None,
    max_frames: int | None = None,
    protocol: str = "auto",
    median_scaling: bool = False,
    detailed: bool = False,
    plots: bool = True,
    progress: bool = True,
) -> int:
    """Offline evaluation of a bag: report in ``out``; 1 when the report is partial."""
    from cloudypoints_core.bags.evaluate import evaluate_bag

    summary = evaluate_bag(
        bag,
        model,
        out,
        backend=backend,
        device=device,
        image_topic=image_topic,
        info_topic=info_topic,
        gt_topic=gt_topic,
        max_frames=max_frames,
        protocol=protocol,
        median_scaling=median_scaling,
        detailed=detailed,
        progress=progress,
        plots=plots,
    )
    _print_summary(summary, out)
    return 1 if summary["partial"] else 0


def run_replay_eval(
    bag: Path,
    out: Path,
    *,
    model: str | None = None,
    backend: str = "auto",
    device: str = "cpu",
    rate: float = 1.0,
    image_topic: str | None = None,
    info_topic: str | None = None,
    gt_topic: str | None = None,
    node_params: dict[str, str] | None = None,
    timeout_s: float | None = None,
    reliable: bool = False,
    protocol: str = "auto",
    median_scaling: bool = False,
    detailed: bool = False,
    plots: bool = True,
) -> int:
    """Replay the bag through the node over ROS 2 and report; 1 when the report is partial."""
    from cloudypoints_core.bags.replay import ReplayOptions
    from cloudypoints_core.bags.replay import run_replay_eval as run

    summary = run(
        ReplayOptions(
            bag=bag,
            out_dir=out,
            model=model,
            backend=backend,
            device=device,
            rate=rate,
            image_topic=image_topic,
            info_topic=info_topic,
            gt_topic=gt_topic,
            node_params=dict(node_params or {}),
            timeout_s=timeout_s,
            reliable=reliable,
            protocol=protocol,
            median_scaling=median_scaling,
            detailed=detailed,
            plots=plots,
        )
    )
    _print_summary(summary, out)
    return 1 if summary["partial"] else 0


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    metrics = summary.get("metrics") or {}
    frames = summary.get("frames", {})
    parts = [f"{k}={v:.4f}" for k, v in metrics.items()]
    text = (
        f"{summary.get('kind')} evaluation: {frames.get('ok', 0)}/{frames.get('total', 0)} frames "
        f"scored; {' '.join(parts) or 'no metrics'}"
    )
    if summary.get("dropped_frames") is not None:
        text += f"; dropped {summary['dropped_frames']}"
    if summary.get("partial"):
        text += f"\nPARTIAL: {'; '.join(summary.get('partial_reasons', []))}"
    sys.stdout.write(f"{text}\nreport: {out}\n")


# ------------------------------------------------------------------------------------ parsing
def _add_topic_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image-topic", help="image topic (default: found by type)")
    parser.add_argument("--info-topic", help="CameraInfo topic (default: found by type)")
    parser.add_argument("--gt-topic", help="ground-truth depth topic (default: found by type)")


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="model package (default: bundled model)")
    parser.add_argument("--backend", default="auto", help="auto, onnxruntime, torch, tensorrt")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")


def _add_protocol_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--protocol",
        default="auto",
        choices=("auto", "whole_frame", "cityscapes", "synthcity"),
        help="evaluation protocol (auto: from the bag's source, else whole_frame)",
    )
    parser.add_argument(
        "--median-scaling",
        action="store_true",
        help="per-image median scaling (scale-ambiguous models)",
    )
    parser.add_argument(
        "--detailed",
        action="store_true",
        help="also errors by distance band and against distance (slower)",
    )


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition(":=") if ":=" in text else text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return key, value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bag",
        help="rosbag2: convert, info, evaluate, replay-eval",
        description="rosbag2 tools: convert data sets to bags, inspect bags, evaluate a model "
        "on a bag offline or by replaying it through the ROS 2 node.",
    )
    sub = parser.add_subparsers(dest="bag_command", metavar="SUBCOMMAND")
    sub.required = True

    p = sub.add_parser("convert", help="Cityscapes sequence or SynthCity drive -> rosbag2")
    p.add_argument("--dataset", choices=("cityscapes", "synthcity"), required=True)
    p.add_argument("--out", type=Path, required=True, help="bag folder to create")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    p.add_argument(
        "--image-format",
        choices=("raw", "png", "jpeg"),
        default="raw",
        help="raw: sensor_msgs/Image rgb8; png/jpeg: CompressedImage on <topic>/compressed",
    )
    p.add_argument("--jpeg-quality", type=int, default=95)
    p.add_argument("--root", type=Path, help="Cityscapes root folder")
    p.add_argument("--split", default="val", help="Cityscapes split (train, val, test)")
    p.add_argument("--city", help="Cityscapes city, e.g. frankfurt")
    p.add_argument("--sequence", type=int, help="Cityscapes sequence number, e.g. 0")
    p.add_argument(
        "--frames", type=int, help="frames to write (SynthCity default 30; Cityscapes all)"
    )
    p.add_argument("--width", type=int, help="output width (Cityscapes: resize; SynthCity: 640)")
    p.add_argument("--height", type=int, help="output height (Cityscapes: resize; SynthCity: 320)")
    p.add_argument(
        "--hood-fraction",
        type=float,
        default=0.25,
        help="Cityscapes: bottom fraction of rows with NaN ground truth (ego hood)",
    )
    p.add_argument("--seed", type=int, default=0, help="SynthCity seed")
    p.add_argument("--speed", type=float, default=None, help="SynthCity speed (m/s)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bag")
    p.add_argument("--no-progress", action="store_true")
    _add_topic_options(p)
    p.set_defaults(
        func=lambda a: run_convert(
            a.dataset,
            a.out,
            storage=a.storage,
            image_format=a.image_format,
            root=a.root,
            split=a.split,
            city=a.city,
            sequence=a.sequence,
            seed=a.seed,
            frames=a.frames,
            width=a.width,
            height=a.height,
            speed_mps=a.speed,
            hood_fraction=a.hood_fraction,
            image_topic=a.image_topic,
            info_topic=a.info_topic,
            gt_topic=a.gt_topic,
            overwrite=a.overwrite,
            jpeg_quality=a.jpeg_quality,
            progress=not a.no_progress,
        )
    )

    p = sub.add_parser("info", help="storage, duration and topics of a bag")
    p.add_argument("bag", type=Path)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=lambda a: run_info(a.bag, as_json=a.json))

    p = sub.add_parser("evaluate", help="offline evaluation of a model on a bag (no ROS)")
    p.add_argument("--bag", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="report folder")
    _add_model_options(p)
    _add_topic_options(p)
    p.add_argument("--max-frames", type=int)
    _add_protocol_options(p)
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(
        func=lambda a: run_evaluate(
            a.bag,
            a.out,
            model=a.model,
            backend=a.backend,
            device=a.device,
            image_topic=a.image_topic,
            info_topic=a.info_topic,
            gt_topic=a.gt_topic,
            max_frames=a.max_frames,
            protocol=a.protocol,
            median_scaling=a.median_scaling,
            detailed=a.detailed,
            plots=not a.no_plots,
            progress=not a.no_progress,
        )
    )

    p = sub.add_parser(
        "replay-eval", help="replay a bag through the ROS 2 node and evaluate what it publishes"
    )
    p.add_argument("--bag", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="report folder")
    _add_model_options(p)
    _add_topic_options(p)
    p.add_argument("--rate", type=float, default=1.0, help="playback rate factor")
    p.add_argument(
        "--node-param",
        action="append",
        type=_key_value,
        default=[],
        metavar="NAME=VALUE",
        help="extra depth node parameter (repeatable)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="give up after this many seconds (default: scaled from the bag length)",
    )
    p.add_argument(
        "--reliable",
        action="store_true",
        help="reliable QoS for the node's input (default: sensor data, best effort)",
    )
    _add_protocol_options(p)
    p.add_argument("--no-plots", action="store_true")
    p.set_defaults(
        func=lambda a: run_replay_eval(
            a.bag,
            a.out,
            model=a.model,
            backend=a.backend,
            device=a.device,
            rate=a.rate,
            image_topic=a.image_topic,
            info_topic=a.info_topic,
            gt_topic=a.gt_topic,
            node_params=dict(a.node_param),
            timeout_s=a.timeout,
            reliable=a.reliable,
            protocol=a.protocol,
            median_scaling=a.median_scaling,
            detailed=a.detailed,
            plots=not a.no_plots,
        )
    )
