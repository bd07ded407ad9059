"""Run a live replay evaluation: the player, the depth node and the evaluator as ROS 2 processes.

The core never imports rclpy: each ROS piece runs as ``python -m`` in its own process with its
log in ``<out>/logs/``. Sequence: the evaluator (``cloudypoints_ros.replay_evaluator``)
subscribes; the node starts exactly as in production (``python -m cloudypoints_ros.depth_node``
with ``--ros-args`` parameters and topic remaps) and loads its model; once its ``depth/image``
publisher is visible the player (``cloudypoints_ros.player --no-restamp``, the demo's player)
publishes the bag's image, camera-info and ground-truth topics with their recorded timing; when
the player is done and the node has gone quiet (or every frame came back) the node and the
evaluator get SIGINT and the evaluator writes the report, to which this module adds the run's
bookkeeping.
Anything that goes wrong on the way (a node that dies, a timeout) still ends in a report, marked
partial with the reason.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cloudypoints_core.bags.evaluate import RESULTS_FILE, EvalReport, make_protocol, write_report
from cloudypoints_core.errors import BagError

log = logging.getLogger(__name__)

#: The node's output topic as the evaluator sees it (the node runs in the root namespace).
NODE_DEPTH_TOPIC = "/depth/image"


@dataclass
class ReplayOptions:
    """What ``cloudypoints bag replay-eval`` takes (see the CLI help for each option)."""

    bag: Path
    out_dir: Path
    model: str | None = None
    backend: str = "auto"
    device: str = "cpu"
    rate: float = 1.0
    image_topic: str | None = None
    info_topic: str | None = None
    gt_topic: str | None = None
    node_params: dict[str, str] = field(default_factory=dict)
    #: Evaluation protocol name (``auto``: from the bag's source) and median scaling.
    protocol: str = "auto"
    median_scaling: bool = False
    detailed: bool = False
    timeout_s: float | None = None
    #: Seconds allowed for the node to load its model and the processes to discover each other.
    startup_timeout_s: float = 120.0
    #: After the player ends, stop once no new depth arrived for this long.
    drain_idle_s: float = 3.0
    reliable: bool = False
    plots: bool = True
    python: str = sys.executable
    env: dict[str, str] | None = None


class _Process:
    """A child process with its output in a log file; stopped by its own pid only."""

    def __init__(self, name: str, cmd: list[str], log_dir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.cmd = cmd
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        log.debug("starting %s: %s", name, " ".join(cmd))
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGINT, then SIGTERM, then SIGKILL until it exits; returns the exit code."""
        for sig, wait in (
            (signal.SIGINT, timeout_s),
            (signal.SIGTERM, timeout_s / 2),
            (signal.SIGKILL, 5.0),
        ):
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(wait)
        code = self.proc.poll()
        self._log.close()
        return code

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def node_command(
    opts: ReplayOptions, image_topic: str, info_topic: str, compressed: bool
) -> list[str]:
    """``python -m cloudypoints_ros.depth_node --ros-args ...`` for this replay."""
    params = {
        "model_path": opts.model or "",
        "backend": opts.backend,
        "device": opts.device,
        # Scored against full-resolution ground truth, exactly like the offline path.
        "output_resolution": "input",
        "input_transport": "compressed" if compressed else "raw",
        "reliable_input": "true" if opts.reliable else "false",
        **opts.node_params,
    }
    base = image_topic.removesuffix("/compressed") if compressed else image_topic
    cmd = [opts.python, "-m", "cloudypoints_ros.depth_node", "--ros-args"]
    for key, value in params.items():
        cmd += ["-p", f"{key}:={value}"]
    cmd += [
        "-r",
        f"image:={base}",
        "-r",
        f"image/compressed:={base}/compressed",
        "-r",
        f"camera_info:={info_topic}",
    ]
    return cmd


def run_replay_eval(opts: ReplayOptions) -> dict[str, Any]:
    """Run the replay (module docstring) and return the summary written to results.json."""
    from cloudypoints_core.bags.reader import bag_info, open_bag, resolve_streams

    info = bag_info(opts.bag)
    with open_bag(opts.bag) as reader:
        streams = resolve_streams(
            reader, opts.image_topic, opts.info_topic, opts.gt_topic, path=opts.bag
        )
    if streams.camera_info is None:
        raise BagError(
            f"bag {opts.bag} has no CameraInfo topic: the node cannot run on it "
            f"(topics: {info.topic_list()})"
        )
    if not opts.rate > 0:
        raise BagError(f"rate must be positive, got {opts.rate}")
    out = Path(opts.out_dir)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    work = out / "replay"
    work.mkdir(exist_ok=True)
    status_file = work / "evaluator_status.json"
    for stale in (status_file, out / RESULTS_FILE):
        stale.unlink(missing_ok=True)
    env = dict(os.environ if opts.env is None else opts.env)
    py = opts.python
    bag_s = info.duration_ns / 1e9 / opts.rate
    timeout_s = opts.timeout_s or (opts.startup_timeout_s + 3 * bag_s + 60.0)
    deadline = time.monotonic() + timeout_s
    reasons: list[str] = []
    procs: dict[str, _Process] = {}
    image_count = sum(t.count for t in info.topics if t.name == streams.image)
    image_type = next(t.msgtype for t in info.topics if t.name == streams.image)
    # Resolved here (the bag's metadata says its source) so the evaluator gets a concrete name.
    protocol = make_protocol(
        opts.protocol,
        info.custom_data.get("cloudypoints.source"),
        median_scaling=opts.median_scaling,
    )

    evaluator_cmd = [
        py,
        "-m",
        "cloudypoints_ros.replay_evaluator",
        "--depth-topic",
        NODE_DEPTH_TOPIC,
        "--gt-topic",
        streams.depth_gt or "",
        "--out",
        str(out),
        "--bag",
        str(opts.bag),
        "--image-topic",
        streams.image,
        "--image-type",
        image_type,
        "--status",
        str(status_file),
        "--protocol",
        protocol.name,
    ]
    if opts.median_scaling:
        evaluator_cmd.append("--median-scaling")
    if opts.detailed:
        evaluator_cmd.append("--detailed")
    if not opts.plots:
        evaluator_cmd.append("--no-plots")
    topics = [t for t in (streams.image, streams.camera_info, streams.depth_gt) if t]
    # Recorded stamps kept (--no-restamp): the report's stamps are the bag's, as offline.
    player_cmd = [
        py,
        "-m",
        "cloudypoints_ros.player",
        str(opts.bag),
        "--rate",
        str(opts.rate),
        "--no-restamp",
        "--wait-timeout",
        str(max(5.0, opts.startup_timeout_s / 2)),
        # Discovery is per pair of processes: a moment for the evaluator to match the
        # node's publisher after the player saw their subscriptions.
        "--start-delay",
        "1.0",
        "--linger",
        "0.5",
    ]
    for topic in topics:
        player_cmd += ["--topic", topic, "--wait-for", topic]

    started = time.monotonic()
    try:
        procs["evaluator"] = _Process("evaluator", evaluator_cmd, logs, env)
        procs["node"] = _Process(
            "node",
            node_command(opts, streams.image, streams.camera_info, streams.compressed),
            logs,
            env,
        )
        # 1. The node is ready when its depth publisher exists (created after the model loads).
        while True:
            status = _read_json(status_file) or {}
            if status.get("depth_publishers", 0) >= 1:
                break
            if not procs["node"].alive():
                reasons.append(
                    f"the depth node exited during start-up (code "
                    f"{procs['node'].proc.returncode}): {procs['node'].tail(5)}"
                )
                break
            if not procs["evaluator"].alive():
                reasons.append(
                    f"the evaluator exited during start-up: {procs['evaluator'].tail(5)}"
                )
                break
            if time.monotonic() - started > opts.startup_timeout_s or time.monotonic() > deadline:
                reasons.append(f"the node was not ready after {opts.startup_timeout_s:.0f} s")
                break
            time.sleep(0.2)
        # 2. Play, then wait for the node to drain.
        if not reasons:
            procs["player"] = _Process("player", player_cmd, logs, env)
            last_count, last_change = -1, time.monotonic()
            while True:
                time.sleep(0.2)
                now = time.monotonic()
                status = _read_json(status_file) or {}
                count = int(status.get("depth_received", 0))
                if count != last_count:
                    last_count, last_change = count, now
                if now > deadline:
                    reasons.append(f"timed out after {timeout_s:.0f} s")
                    break
                if not procs["node"].alive():
                    reasons.append(
                        f"the depth node died (code {procs['node'].proc.returncode}):"
                        f" {procs['node'].tail(5)}"
                    )
                    break
                if not procs["evaluator"].alive():
                    reasons.append(f"the evaluator died: {procs['evaluator'].tail(5)}")
                    break
                if procs["player"].alive():
                    continue
                if count >= image_count or now - last_change > opts.drain_idle_s:
                    break
    finally:
        codes = {}
        # Player first (it may still be waiting), then the node, then the evaluator: it writes
        # the report on SIGINT, after the last depth image had its chance to arrive.
        for name in ("player", "node", "evaluator"):
            if name in procs:
                codes[name] = procs[name].stop(timeout_s=30.0 if name == "evaluator" else 10.0)
    summary = _read_json(out / RESULTS_FILE)
    if summary is None:
        # The evaluator left no report (it died or never started): write one that says why.
        reasons.append(
            "the evaluator wrote no report"
            + (f": {procs['evaluator'].tail(5)}" if "evaluator" in procs else "")
        )
        report = EvalReport(kind="live", bag=str(opts.bag), protocol=protocol)
        report.partial_reasons.extend(reasons)
        summary = write_report(report, out, plots=False)
    if codes.get("player") not in (0, None):
        reasons.append(f"the player failed (code {codes['player']}): {procs['player'].tail(5)}")
    summary["partial_reasons"] = list(summary.get("partial_reasons", [])) + [
        r for r in reasons if r not in summary.get("partial_reasons", [])
    ]
    summary["partial"] = bool(summary["partial_reasons"])
    summary["replay"] = {
        "rate": opts.rate,
        "images_in_bag": image_count,
        "images_seen_by_evaluator": summary.get("frames_published"),
        "player_completed": codes.get("player") == 0,
        "exit_codes": codes,
        "node_command": procs["node"].cmd if "node" in procs else None,
        "logs": {name: str(p.log_path) for name, p in procs.items()},
        "wall_s": time.monotonic() - started,
    }
    from cloudypoints_core.io import atomic_write_text

    atomic_write_text(out / RESULTS_FILE, json.dumps(summary, indent=2) + "\n")
    return summary
