"""``cloudypoints import-model``: a depth network downloaded or exported elsewhere -> a package.

    cloudypoints import-model --preset depth-anything-v2-metric --weights da2_metric.onnx \\
        --out models/da2_metric --max-depth 80 [--input-size 924x518 | --camera-size 1920x1080]
    cloudypoints import-model --list

The preset (``cloudypoints_core.inference.presets``) says how the family is fed and read; the
graph's own names and shapes are checked against it, and the package is run once to prove it
loads (``--no-check`` skips that).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cloudypoints_core.errors import ConfigError

log = logging.getLogger("cloudypoints.import_model")


def parse_size(text: str) -> tuple[int, int]:
    """``"WxH"`` -> (W, H); ConfigError otherwise."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ConfigError(f"sizes must look like 518x518 (width x height), got {text!r}")
    width, height = (int(p) for p in parts)
    if width <= 0 or height <= 0:
        raise ConfigError(f"sizes must be positive, got {text!r}")
    return width, height


def preset_table() -> str:
    """One line per preset: name, default input size, summary, licence."""
    from cloudypoints_core.inference.presets import PRESETS

    rows = []
    col = max(28, *(len(name) for name in PRESETS))
    for name in sorted(PRESETS):
        p = PRESETS[name]
        w, h = p.default_input_size
        rows.append(
            f"{name:{col}s} {w}x{h:<5d} {'/'.join(p.weights_kinds):6s} {p.summary}\n"
            f"{'':{col}s} licence: {p.card.licence}"
        )
    return "\n".join(rows)


def run_import(
    preset: str,
    weights: Path,
    out: Path,
    *,
    input_size: tuple[int, int] | None = None,
    max_depth_m: float | None = None,
    name: str | None = None,
    check: bool = True,
    camera_size: tuple[int, int] | None = None,
) -> int:
    """Import ``weights`` with ``preset`` into the package folder ``out``; 0 on success."""
    from cloudypoints_core.inference.presets import ImportOptions, import_model

    options = ImportOptions(
        input_size=input_size,
        max_depth_m=max_depth_m,
        name=name,
        check=check,
        camera_size=camera_size,
    )
    folder = import_model(preset, weights, out, options)
    log.info(
        "model package written to %s; run it with: ros2 launch cloudypoints_ros "
        "depth.launch.py model:=%s",
        folder,
        folder.resolve(),
    )
    return 0


def _cmd(args: argparse.Namespace) -> int:
    if args.list:
        print(preset_table())  # noqa: T201 - the command's output
        return 0
    missing = [
        flag
        for flag, value in (
            ("--preset", args.preset),
            ("--weights", args.weights),
            ("--out", args.out),
        )
        if value is None
    ]
    if missing:
        raise ConfigError(f"import-model needs {', '.join(missing)} (or --list)")
    return run_import(
        args.preset,
        args.weights,
        args.out,
        input_size=None if args.input_size is None else parse_size(args.input_size),
        max_depth_m=args.max_depth,
        name=args.name,
        check=not args.no_check,
        camera_size=None if args.camera_size is None else parse_size(args.camera_size),
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "import-model",
        help="make a model package from a depth network exported elsewhere (presets)",
        description="Check an ONNX depth network against a preset and write a model package "
        "(spec.yaml, model.onnx with the spec in its metadata, MODEL_CARD.md).",
    )
    parser.add_argument("--preset", help="network family (see --list)")
    parser.add_argument("--weights", type=Path, help="the weights file (.onnx)")
    parser.add_argument("--out", type=Path, help="package folder to write (new or empty)")
    parser.add_argument(
        "--input-size",
        help="WxH for a graph with a dynamic input size (default: the preset's)",
    )
    parser.add_argument(
        "--camera-size",
        help="WxH of your camera: a dynamic graph of a cropping preset (Depth Anything) gets the "
        "input size that shows the whole image (e.g. 1242x375 -> 1722x518)",
    )
    parser.add_argument(
        "--max-depth",
        type=float,
        help="metres: the metric head's maximum (Depth Anything V2 metric: 80 outdoor, 20 "
        "indoor); also the valid range's upper end",
    )
    parser.add_argument("--name", help="package name (default: preset and input size)")
    parser.add_argument("--no-check", action="store_true", help="do not run the network once")
    parser.add_argument("--list", action="store_true", help="list the presets and exit")
    parser.set_defaults(func=_cmd)
