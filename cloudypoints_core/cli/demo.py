"""``cloudypoints demo``: the real depth node over DDS on a SynthCity drive, with a report.

Steps: render a SynthCity drive into a rosbag2 (MCAP); start a recorder, the depth node (bundled
default model unless ``--model``) and a bag player as subprocesses (``python -m
cloudypoints_ros.recorder|depth_node|player``); play the bag with its original timing; stop the
node and the recorder; then, without ROS, read the recorded bag and write colourised depth PNGs,
a few PLY clouds, a top and side view of one cloud, and ``summary.json``/``summary.md`` (frames in
and out, drops, latency, depth error against the exact SynthCity ground truth).

The core never imports rclpy: the ROS side runs only in those subprocesses, and this module
talks to it through the bag files and the subprocesses' exit codes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from cloudypoints_core._optional import require
from cloudypoints_core.errors import BagError, CloudyPointsError, ConfigError, DependencyError
from cloudypoints_core.evaluation.protocols import EvalProtocol
from cloudypoints_core.io import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

#: Namespace of the node in the demo: its relative topics then meet the bag's /camera/* topics.
NAMESPACE = "/camera"
IMAGE_TOPIC = f"{NAMESPACE}/image"
DEPTH_GT_TOPIC = f"{NAMESPACE}/depth_gt"
DEPTH_TOPIC = f"{NAMESPACE}/depth/image"
DEPTH_INFO_TOPIC = f"{NAMESPACE}/depth/camera_info"
POINTS_TOPIC = f"{NAMESPACE}/points"
DIAGNOSTICS_TOPIC = "/diagnostics"
RECORDED_TOPICS = {
    IMAGE_TOPIC: "sensor_msgs/msg/Image",
    DEPTH_GT_TOPIC: "sensor_msgs/msg/Image",
    DEPTH_TOPIC: "sensor_msgs/msg/Image",
    DEPTH_INFO_TOPIC: "sensor_msgs/msg/CameraInfo",
    POINTS_TOPIC: "sensor_msgs/msg/PointCloud2",
    DIAGNOSTICS_TOPIC: "diagnostic_msgs/msg/DiagnosticArray",
}
#: Depth range of the colour maps and of the evaluation (metres; the Cityscapes convention).
EVAL_MAX_DEPTH_M = 80.0
_DEFAULT_DOMAIN_ID = 77


@dataclass(frozen=True)
class DemoConfig:
    """Options of one demo run (see ``cloudypoints demo --help``)."""

    out: Path = Path("out/demo")
    model: str | None = None
    backend: str = "auto"
    device: str = "cpu"
    seed: int = 7
    frames: int = 34
    width: int = 512
    height: int = 256
    rate_hz: float = 17.0
    n_ply: int = 3
    domain_id: int | None = None
    timeout_s: float = 120.0
    drain_s: float = 2.0
    #: Reliable subscriptions in the node: a bag replay should deliver every frame; with the
    #: node's default (sensor-data QoS, best effort) the middleware may drop frames under load.
    reliable_input: bool = True

    def __post_init__(self) -> None:
        problems = []
        if self.frames < 1:
            problems.append(f"frames must be >= 1, got {self.frames}")
        if self.width < 32 or self.height < 16:
            problems.append(f"image size must be at least 32x16, got {self.width}x{self.height}")
        if not (math.isfinite(self.rate_hz) and self.rate_hz > 0):
            problems.append(f"rate_hz must be positive, got {self.rate_hz}")
        if self.domain_id is not None and not 0 <= self.domain_id <= 232:
            problems.append(f"domain_id must be in 0..232, got {self.domain_id}")
        if self.timeout_s <= 0 or self.drain_s < 0:
            problems.append("timeout_s must be positive and drain_s non-negative")
        if problems:
            raise ConfigError("invalid demo options: " + "; ".join(problems))


@dataclass
class _Child:
    """A ROS subprocess with its log file (written under a temporary name, moved at the end)."""

    name: str
    proc: subprocess.Popen[bytes]
    log_tmp: Path
    log_path: Path
    handle: IO[bytes]
    returncode: int | None = None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 10.0) -> int:
        """SIGINT (ROS's clean shutdown), then SIGKILL after ``timeout_s``; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.returncode = self.proc.returncode
        return int(self.returncode)

    def close_log(self) -> None:
        if not self.handle.closed:
            self.handle.close()
            os.replace(self.log_tmp, self.log_path)

    def tail(self, lines: int = 15) -> str:
        self.handle.flush()
        path = self.log_tmp if self.log_tmp.exists() else self.log_path
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class _Run:
    """Everything the report needs."""

    config: DemoConfig
    model: str
    started: float = field(default_factory=time.monotonic)
    children: dict[str, _Child] = field(default_factory=dict)


# ------------------------------------------------------------------------------ subprocesses
def _ros_environment(config: DemoConfig) -> dict[str, str]:
    env = dict(os.environ)
    domain = config.domain_id
    if domain is None:
        domain = int(env.get("ROS_DOMAIN_ID", _DEFAULT_DOMAIN_ID) or _DEFAULT_DOMAIN_ID)
    env["ROS_DOMAIN_ID"] = str(domain)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env["PYTHONUNBUFFERED"] = "1"
    env["RCUTILS_COLORIZED_OUTPUT"] = "0"
    # The subprocesses import cloudypoints_ros from wherever this core was imported from.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH", "")]))
    return env


def _start(run: _Run, name: str, module: str, args: Sequence[str], env: Mapping[str, str]) -> None:
    logs = run.config.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    log_tmp = logs / f".{name}.log.tmp"
    handle = open(log_tmp, "wb")  # noqa: SIM115 - closed by _Child.close_log
    cmd = [sys.executable, "-m", module, *args]
    log.debug("starting %s: %s", name, " ".join(cmd))
    proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=dict(env))
    run.children[name] = _Child(name, proc, log_tmp, log_path, handle)


def _check_ros_available() -> None:
    for module in ("rclpy", "cloudypoints_ros"):
        if importlib.util.find_spec(module) is None:
            raise DependencyError(
                f"the demo runs the ROS 2 node and needs the Python module '{module}' "
                "(scripts/setup_env.sh installs rclpy from PyPI; or source a ROS 2 install)"
            )


def _play(run: _Run, input_bag: Path, output_bag: Path) -> None:
    """Recorder, node and player; returns when the player is done and the node has drained."""
    cfg = run.config
    env = _ros_environment(cfg)
    topics = [arg for t, ty in RECORDED_TOPICS.items() for arg in ("-t", f"{t}:{ty}")]
    _start(run, "recorder", "cloudypoints_ros.recorder", [str(output_bag), *topics], env)
    node_args = [
        "--ros-args",
        "-r",
        f"__ns:={NAMESPACE}",
        "-p",
        f"model_path:={run.model}",
        "-p",
        f"backend:={cfg.backend}",
        "-p",
        f"device:={cfg.device}",
        "-p",
        "stats_period_s:=0.5",
        "-p",
        f"reliable_input:={'true' if cfg.reliable_input else 'false'}",
    ]
    _start(run, "node", "cloudypoints_ros.depth_node", node_args, env)
    _start(
        run,
        "player",
        "cloudypoints_ros.player",
        [
            str(input_bag),
            "--wait-for",
            # The recorder and the node: the node may still be loading a large model.
            f"{IMAGE_TOPIC}=2",
            "--wait-for",
            DEPTH_GT_TOPIC,
            "--wait-timeout",
            str(cfg.timeout_s),
            "--start-delay",
            "1.0",
            "--linger",
            "0.5",
        ],
        env,
    )
    deadline = run.started + cfg.timeout_s
    player, node, recorder = (run.children[n] for n in ("player", "node", "recorder"))
    log.info(
        "node, recorder and player started (ROS_DOMAIN_ID=%s); waiting for the drive to play",
        env["ROS_DOMAIN_ID"],
    )
    while player.alive():
        for child in (node, recorder):
            if not child.alive():
                raise CloudyPointsError(
                    f"the {child.name} exited early with code {child.proc.returncode}:\n"
                    f"{child.tail()}"
                )
        if time.monotonic() > deadline:
            raise CloudyPointsError(f"the demo did not finish within {cfg.timeout_s:.0f} s")
        time.sleep(0.1)
    if player.stop() != 0:
        raise CloudyPointsError(f"the player failed (code {player.returncode}):\n{player.tail()}")
    # Frames still in the node's hands come out within an inference time or two.
    time.sleep(cfg.drain_s)
    node_rc, recorder_rc = node.stop(), recorder.stop()
    if node_rc != 0:
        raise CloudyPointsError(f"the depth node ended with code {node_rc}:\n{node.tail()}")
    if recorder_rc != 0 or not output_bag.exists():
        raise BagError(f"the recorder failed (code {recorder_rc}):\n{recorder.tail()}")


# ------------------------------------------------------------------------------ analysis
@dataclass
class _Recorded:
    rgb: dict[int, npt.NDArray[np.uint8]] = field(default_factory=dict)
    gt: dict[int, npt.NDArray[np.float32]] = field(default_factory=dict)
    depth: dict[int, npt.NDArray[np.float32]] = field(default_factory=dict)
    latency_s: list[float] = field(default_factory=list)
    clouds: dict[int, Any] = field(default_factory=dict)
    diagnostics: dict[str, str] = field(default_factory=dict)


def _stamp_ns(msg: Any) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def _read_outputs(bag: Path, n_clouds: int) -> _Recorded:
    """Decode the recorded bag; keeps ``n_clouds`` clouds spread evenly over the drive."""
    from cloudypoints_core.bags.reader import open_bag
    from cloudypoints_core.image import image_msg_to_numpy, image_msg_to_rgb
    from cloudypoints_core.pointcloud import PackedCloud, PointFieldSpec

    out = _Recorded()
    with open_bag(bag) as reader:
        n_points = sum(c.msgcount for c in reader.connections if c.topic == POINTS_TOPIC)
        keep = set()
        if n_points and n_clouds > 0:
            keep = set(np.linspace(0, n_points - 1, min(n_clouds, n_points)).round().astype(int))
        cloud_index = -1
        for conn, log_ns, raw in reader.messages():
            if conn.topic == POINTS_TOPIC:
                cloud_index += 1
                if cloud_index not in keep:
                    continue  # clouds are megabytes each: decode only the kept ones
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.topic == IMAGE_TOPIC:
                out.rgb[_stamp_ns(msg)] = image_msg_to_rgb(msg)
            elif conn.topic == DEPTH_GT_TOPIC:
                out.gt[_stamp_ns(msg)] = np.array(image_msg_to_numpy(msg), dtype=np.float32)
            elif conn.topic == DEPTH_TOPIC:
                stamp = _stamp_ns(msg)
                out.depth[stamp] = np.array(image_msg_to_numpy(msg), dtype=np.float32)
                out.latency_s.append((int(log_ns) - stamp) / 1e9)
            elif conn.topic == POINTS_TOPIC:
                out.clouds[_stamp_ns(msg)] = PackedCloud(
                    fields=tuple(
                        PointFieldSpec(f.name, f.offset, f.datatype, f.count) for f in msg.fields
                    ),
                    data=np.array(msg.data, dtype=np.uint8).reshape(-1),
                    height=int(msg.height),
                    width=int(msg.width),
                    point_step=int(msg.point_step),
                    row_step=int(msg.row_step),
                    is_dense=bool(msg.is_dense),
                    is_bigendian=bool(msg.is_bigendian),
                )
            elif conn.topic == DIAGNOSTICS_TOPIC:
                for status in msg.status:
                    if status.name.startswith(f"{NAMESPACE}/cloudypoints_depth"):
                        out.diagnostics = {kv.key: kv.value for kv in status.values}
    return out


def _write_png(path: Path, rgb: npt.NDArray[np.uint8]) -> None:
    cv2 = require("cv2", "writing PNG files")
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(rgb[..., ::-1])):
            raise CloudyPointsError(f"OpenCV could not write {path}")


def _depth_panel(
    rgb: npt.NDArray[np.uint8] | None,
    pred: npt.NDArray[np.float32],
    gt: npt.NDArray[np.float32] | None,
    max_m: float,
) -> npt.NDArray[np.uint8]:
    """Camera image | predicted depth | ground truth, side by side (missing panels black)."""
    from cloudypoints_core.image import colorize_depth

    h, w = pred.shape
    panels = [
        rgb if rgb is not None and rgb.shape[:2] == (h, w) else np.zeros((h, w, 3), np.uint8),
        colorize_depth(pred, 0.0, max_m),
        colorize_depth(gt, 0.0, max_m)
        if gt is not None and gt.shape == (h, w)
        else np.zeros((h, w, 3), np.uint8),
    ]
    gap = np.full((h, 4, 3), 255, np.uint8)
    return np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)


def _cloud_views(
    path: Path, xyz: npt.NDArray[np.float32], rgb: npt.NDArray[np.uint8] | None, title: str
) -> None:
    """One cloud seen from above (x right, z forward) and from the side (z forward, up = -y)."""
    from cloudypoints_core.evaluation.plots import new_figure, save_figure

    pts = xyz.reshape(-1, 3)
    colours = None if rgb is None else rgb.reshape(-1, 3)
    keep = np.isfinite(pts).all(axis=1)
    pts = pts[keep]
    colours = None if colours is None else colours[keep]
    if pts.shape[0] > 60_000:  # a scatter of more points only costs time
        idx = np.random.default_rng(0).choice(pts.shape[0], 60_000, replace=False)
        pts, colours = pts[idx], None if colours is None else colours[idx]
    c = "tab:blue" if colours is None else colours.astype(np.float32) / 255.0
    fig = new_figure(12.0, 5.5)
    top, side = fig.subplots(1, 2)
    top.scatter(pts[:, 0], pts[:, 2], s=1.0, c=c, linewidths=0)
    top.set(xlabel="x right (m)", ylabel="z forward (m)", title="from above", aspect="equal")
    side.scatter(pts[:, 2], -pts[:, 1], s=1.0, c=c, linewidths=0)
    side.set(xlabel="z forward (m)", ylabel="up (m) = -y", title="from the side", aspect="equal")
    if pts.shape[0]:
        # Robust limits (a few stray far points would squash the picture), with a margin.
        z_hi = 1.05 * float(np.percentile(pts[:, 2], 99)) + 0.1
        x_lim = 1.05 * float(np.percentile(np.abs(pts[:, 0]), 99)) + 0.1
        top.set_xlim(-x_lim, x_lim)
        top.set_ylim(0.0, z_hi)
        side.set_xlim(0.0, z_hi)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def _latency_ms(values_s: Sequence[float]) -> dict[str, float] | None:
    """Count and percentiles (ms) of durations in seconds; None without samples."""
    if not values_s:
        return None
    ms = np.asarray(values_s, dtype=np.float64) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {
        "n": int(ms.size),
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "max_ms": float(ms.max()),
    }


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"
    return "n/a" if value is None else str(value)


def _summary_markdown(summary: Mapping[str, Any]) -> str:
    frames, lat = summary["frames"], summary["latency_ms"]
    metrics = summary.get("depth_error") or {}
    node_lat = lat.get("node_stamp_to_publish") or {}
    e2e = lat.get("end_to_end") or {}
    lines = [
        "# CloudyPoints demo",
        "",
        f"Model `{summary['model']['path']}` on {summary['model']['backend']} "
        f"({summary['model']['device']}); SynthCity seed {summary['input']['seed']}, "
        f"{summary['input']['frames']} frames of {summary['input']['width']}x"
        f"{summary['input']['height']} at {summary['input']['rate_hz']:g} Hz, played over DDS.",
        "",
        "| frames | count |",
        "| --- | --- |",
        f"| published by the player | {frames['published']} |",
        f"| received by the node ({summary['input']['qos']} subscription) | "
        f"{_fmt(frames['node_in'])} |",
        f"| lost by the middleware before the node | {_fmt(frames['lost_in_transport'])} |",
        f"| depth images out | {frames['out']} |",
        f"| dropped by the node (newest wins) | {_fmt(frames['node_dropped'])} |",
        f"| rejected (errors) | {_fmt(frames['node_errors'])} |",
        "",
        "| latency (ms) | p50 | p90 | p99 |",
        "| --- | --- | --- | --- |",
        f"| node: image stamp to publish | {_fmt(node_lat.get('p50'), 1)} | "
        f"{_fmt(node_lat.get('p90'), 1)} | {_fmt(node_lat.get('p99'), 1)} |",
        f"| end to end: player publish to recorder receipt | {_fmt(e2e.get('p50_ms'), 1)} | "
        f"{_fmt(e2e.get('p90_ms'), 1)} | {_fmt(e2e.get('p99_ms'), 1)} |",
        "",
        f"Depth error against the exact ground truth ({summary['evaluation']['frames_scored']} "
        f"frames; every pixel with valid ground truth is scored, the published depth clamped to "
        f"the range and NaN counted at its far edge; coverage, the share predicted inside the "
        f"range: {_fmt(summary['evaluation']['mean_coverage'], 3)}):",
        "",
        f"Protocol: {summary['evaluation']['protocol']}",
        "",
        *(
            [f"**Warning**: {summary['evaluation']['coverage_warning']}", ""]
            if summary["evaluation"].get("coverage_warning")
            else []
        ),
        "| AbsRel | SqRel | RMSE | RMSE log | a1 | a2 | a3 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        "| "
        + " | ".join(
            _fmt(metrics.get(k))
            for k in ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
        )
        + " |",
        "",
        "Files: `depth/` (camera | predicted depth | ground truth, 0-"
        f"{EVAL_MAX_DEPTH_M:g} m), `clouds/*.ply`, `cloud_views.png`, `input_bag/`, "
        "`output_bag/` (replay it with RViz), `logs/`.",
        "",
    ]
    return "\n".join(lines)


def score_recording(
    depth: Mapping[int, npt.NDArray[np.float32]],
    gt: Mapping[int, npt.NDArray[np.float32]],
    protocol: EvalProtocol,
) -> tuple[list[dict[str, float]], list[float]]:
    """(metrics, coverage) of each recorded depth image that has its ground truth (by stamp).

    The depth is what the node published: NaN where the model's depth is outside its valid
    range, which the evaluation's one scoring function counts at the protocol's far edge.
    """
    from cloudypoints_core.evaluation.protocols import evaluate_image

    rows: list[dict[str, float]] = []
    coverage: list[float] = []
    for stamp in sorted(depth):
        pred, truth = depth[stamp], gt.get(stamp)
        if truth is None or truth.shape != pred.shape:
            continue
        scored = evaluate_image(protocol, truth, pred, detailed=False)
        if scored.metrics is not None:
            rows.append(scored.metrics)
            coverage.append(scored.coverage)
    return rows, coverage


def _analyse(run: _Run, output_bag: Path, wall_s: float) -> dict[str, Any]:
    from cloudypoints_core.evaluation.metrics import mean_errors
    from cloudypoints_core.evaluation.protocols import coverage_warning, get_protocol
    from cloudypoints_core.pointcloud import unpack_points, write_ply

    cfg = run.config
    rec = _read_outputs(output_bag, cfg.n_ply)
    protocol = get_protocol("synthcity", max_depth_m=EVAL_MAX_DEPTH_M)
    tqdm = require("tqdm", "progress bars").tqdm
    rows, coverage = score_recording(rec.depth, rec.gt, protocol)
    for i, stamp in enumerate(tqdm(sorted(rec.depth), desc="writing depth PNGs", unit="frame")):
        pred, gt = rec.depth[stamp], rec.gt.get(stamp)
        _write_png(
            cfg.out / "depth" / f"frame_{i:04d}.png",
            _depth_panel(rec.rgb.get(stamp), pred, gt, EVAL_MAX_DEPTH_M),
        )
    order = {stamp: k for k, stamp in enumerate(sorted(rec.depth))}
    for i, (stamp, packed) in enumerate(sorted(rec.clouds.items())):
        xyz, rgb = unpack_points(packed)
        frame = order.get(stamp, -1)
        write_ply(cfg.out / "clouds" / f"cloud_frame_{frame:04d}.ply", xyz, rgb)
        if i == len(rec.clouds) // 2:
            n_points = int(np.isfinite(xyz).all(axis=-1).sum())
            _cloud_views(
                cfg.out / "cloud_views.png",
                xyz,
                rgb,
                f"point cloud of output frame {frame} ({n_points} points, coloured "
                "by the camera image)",
            )
    diag = rec.diagnostics

    def diag_int(key: str) -> int | None:
        return int(diag[key]) if key in diag else None

    def diag_float(key: str) -> float | None:
        value = float(diag.get(key, "nan"))
        return value if math.isfinite(value) else None

    return {
        "model": {
            "path": run.model,
            "backend": diag.get("backend"),
            "device": diag.get("device"),
            "name": diag.get("model"),
        },
        "input": {
            "seed": cfg.seed,
            "frames": cfg.frames,
            "width": cfg.width,
            "height": cfg.height,
            "rate_hz": cfg.rate_hz,
            "qos": "reliable" if cfg.reliable_input else "best-effort",
        },
        "frames": {
            "published": cfg.frames,
            "node_in": diag_int("frames_in"),
            "out": len(rec.depth),
            "node_out": diag_int("frames_out"),
            "node_dropped": diag_int("dropped"),
            "node_errors": diag_int("errors"),
            "lost_in_transport": None
            if diag_int("frames_in") is None
            else cfg.frames - int(diag["frames_in"]),
        },
        "latency_ms": {
            "node_stamp_to_publish": {
                q: diag_float(f"latency_{q}_ms") for q in ("p50", "p90", "p99")
            },
            "node_processing": {
                q: diag_float(f"processing_{q}_ms") for q in ("p50", "p90", "p99")
            },
            "end_to_end": _latency_ms(rec.latency_s),
        },
        "evaluation": {
            "frames_scored": len(rows),
            "protocol": protocol.summary(),
            "mean_coverage": float(np.mean(coverage)) if coverage else None,
            "coverage_warning": coverage_warning(float(np.mean(coverage)) if coverage else None),
        },
        "depth_error": mean_errors(rows) if rows else None,
        "outputs": {"depth_pngs": len(rec.depth), "ply_clouds": len(rec.clouds)},
        "wall_time_s": wall_s,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
    }


# ------------------------------------------------------------------------------ entry points
def run_demo(config: DemoConfig) -> int:
    """Run the demo (module docstring); 0 when depth came out of the node, else 1."""
    from cloudypoints_core.bags.writer import write_synthcity_bag
    from cloudypoints_core.inference.package import default_model_path, load_model_package

    _check_ros_available()
    model = config.model or str(default_model_path())
    try:
        load_model_package(model)  # fail here, with the reason, rather than in a subprocess
    except CloudyPointsError as exc:
        hint = "" if config.model else " (the bundled default; pass --model PATH to use another)"
        raise CloudyPointsError(f"cannot use model {model}{hint}: {exc}") from exc
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    input_bag, output_bag = out / "input_bag", out / "output_bag"
    for old in (output_bag, out / "depth", out / "clouds"):
        if old.exists():
            shutil.rmtree(old)
    log.info(
        "writing the SynthCity drive (seed %d, %d frames %dx%d) to %s",
        config.seed,
        config.frames,
        config.width,
        config.height,
        input_bag,
    )
    write_synthcity_bag(
        input_bag,
        seed=config.seed,
        n_frames=config.frames,
        width=config.width,
        height=config.height,
        rate_hz=config.rate_hz,
        overwrite=True,
    )
    run = _Run(config, model)
    try:
        _play(run, input_bag, output_bag)
    finally:
        for child in run.children.values():
            child.stop(timeout_s=5.0)
            child.close_log()
    wall_s = time.monotonic() - run.started
    summary = _analyse(run, output_bag, wall_s)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    atomic_write_text(out / "summary.md", _summary_markdown(summary))
    frames = summary["frames"]
    metrics = summary["depth_error"] or {}
    log.info(
        "frames: %d published, %s received by the node, %d depth images out, %s dropped; "
        "AbsRel %s, a1 %s; report in %s",
        frames["published"],
        frames["node_in"],
        frames["out"],
        frames["node_dropped"],
        _fmt(metrics.get("abs_rel")),
        _fmt(metrics.get("a1")),
        out / "summary.md",
    )
    if frames["out"] == 0:
        log.error("the node published no depth; see %s", out / "logs" / "node.log")
        return 1
    return 0


def register(subparsers: Any) -> None:
    defaults = DemoConfig()
    p = subparsers.add_parser(
        "demo",
        help="run the depth node over DDS on a SynthCity drive and report (the main job)",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--out", type=Path, default=defaults.out, help="output folder")
    p.add_argument(
        "--model", default=None, help="model package (folder or .onnx); default: the bundled model"
    )
    p.add_argument(
        "--backend", default=defaults.backend, choices=("auto", "onnxruntime", "torch", "tensorrt")
    )
    p.add_argument("--device", default=defaults.device, help="cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=defaults.seed, help="SynthCity street")
    p.add_argument("--frames", type=int, default=defaults.frames)
    p.add_argument("--width", type=int, default=defaults.width)
    p.add_argument("--height", type=int, default=defaults.height)
    p.add_argument("--rate", type=float, default=defaults.rate_hz, help="frames per second")
    p.add_argument("--ply", type=int, default=defaults.n_ply, help="PLY clouds to write")
    p.add_argument(
        "--domain-id",
        type=int,
        default=None,
        help="ROS_DOMAIN_ID of the node (default: $ROS_DOMAIN_ID or 77)",
    )
    p.add_argument(
        "--timeout", type=float, default=defaults.timeout_s, help="give up after this many seconds"
    )
    p.add_argument(
        "--best-effort",
        action="store_true",
        help="subscribe with the node's default sensor-data QoS (best effort) instead "
        "of reliable; frames the middleware drops are then reported as lost",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    config = DemoConfig(
        out=args.out,
        model=args.model,
        backend=args.backend,
        device=args.device,
        seed=args.seed,
        frames=args.frames,
        width=args.width,
        height=args.height,
        rate_hz=args.rate,
        n_ply=args.ply,
        domain_id=args.domain_id,
        timeout_s=args.timeout,
        reliable_input=not args.best_effort,
    )
    return run_demo(config)
