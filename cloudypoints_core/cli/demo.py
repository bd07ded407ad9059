"""``cloudypoints demo``: render a SynthCity sequence and write its depth maps and point clouds.

This is the main job until the ROS node lands: it exercises the geometry, point-cloud and SynthCity
modules end to end and writes colourised depth PNGs, float32 depth .npy files and PLY clouds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from cloudypoints_core._optional import require


def run_demo(out: Path, seed: int = 7, n_frames: int = 8, width: int = 512, height: int = 256) -> int:
    cv2 = require("cv2", "writing demo images")
    tqdm = require("tqdm", "progress bars").tqdm
    from cloudypoints_core.data.synthcity import render_sequence
    from cloudypoints_core.geometry import backproject
    from cloudypoints_core.image import colorize_depth
    from cloudypoints_core.io import atomic_path, atomic_write_text
    from cloudypoints_core.pointcloud import write_ply

    out.mkdir(parents=True, exist_ok=True)
    frames = render_sequence(seed, n_frames, width, height)
    summary = []
    for frame in tqdm(frames, total=n_frames, desc="SynthCity demo", unit="frame"):
        depth = np.where(np.isfinite(frame.depth_m), frame.depth_m, np.nan).astype(np.float32)
        name = f"frame_{frame.index:04d}"
        with atomic_path(out / f"{name}_depth.png") as tmp:
            cv2.imwrite(str(tmp), cv2.cvtColor(colorize_depth(depth, 0.0, 80.0), cv2.COLOR_RGB2BGR))
        with atomic_path(out / f"{name}_rgb.png") as tmp:
            cv2.imwrite(str(tmp), cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR))
        points = backproject(depth, frame.intrinsics, max_range_m=80.0, organised=False, rgb=frame.rgb)
        write_ply(out / f"{name}.ply", points.xyz, points.rgb)
        summary.append({"frame": name, "points": int(points.xyz.shape[0]), "stamp_ns": frame.stamp_ns})
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("demo", help="render a SynthCity sequence to depth maps and clouds")
    parser.add_argument("--out", type=Path, default=Path("out/demo"))
    parser.add_argument("--frames", type=int, default=8)
    parser.set_defaults(func=lambda a: run_demo(a.out, n_frames=a.frames))
