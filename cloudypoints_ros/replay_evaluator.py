"""Score what the depth node publishes during a bag replay against the bag's ground truth.

Subscribes to the node's ``depth/image``, to the ground-truth depth topic and to the input image
topic (published by ``cloudypoints_ros.player --no-restamp`` or ``ros2 bag play``), pairs depth
and ground truth by header stamp and scores each pair with the offline evaluator's own
:func:`cloudypoints_core.bags.evaluate.score_frame`, then writes the same report
(``results.json``, ``frames.csv``, plots) plus end-to-end latency (arrival of the depth image
minus arrival of its input image here, both on this process's clock) and dropped frames (input
images that never came back as depth).

How live scoring clamps: the node publishes NaN where the model's depth is outside its valid
range, so the live path never sees the value the offline path (the facade's unmasked depth)
clamps. ``score_frame`` scores every pixel with valid ground truth either way and counts a NaN
at the protocol's far edge (``max_depth_m``), where a metric model's out-of-range depth almost
always lies: offline and live then agree on every frame both scored whenever the model's valid
range ends at the protocol's far edge and nothing falls below the model's near limit (the
bundled model: [0.5, 80] m against (0.001, 80) m; tested). A NaN in the published depth lowers
``coverage`` exactly as a clamped value does offline.

    python -m cloudypoints_ros.replay_evaluator --depth-topic /depth/image
        --gt-topic /camera/depth_gt --image-topic /camera/image --out report/
        [--idle-timeout 5] [--status status.json]

It stops on SIGINT/SIGTERM, after ``--expect N`` scored frames, or ``--idle-timeout`` seconds
without a depth image once one has arrived, and always writes its report before exiting.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cloudypoints_core.bags.evaluate import (
    N_EXAMPLES,
    EvalReport,
    FrameScore,
    make_protocol,
    score_frame,
)
from cloudypoints_core.evaluation.protocols import EvalProtocol

log = logging.getLogger("cloudypoints.replay_evaluator")

EVALUATOR_NODE_NAME = "cloudypoints_replay_evaluator"
#: Deep queues: the evaluator must see every depth image the node manages to publish.
EVAL_QUEUE_DEPTH = 50


@dataclass
class _Scored:
    stamp_ns: int
    score: FrameScore
    depth_wall_ns: int | None


class ReplayEvaluator:
    """The subscriptions and the bookkeeping; ``report()`` builds the :class:`EvalReport`."""

    def __init__(
        self,
        node: Any,
        depth_topic: str,
        gt_topic: str | None,
        image_topic: str | None = None,
        *,
        protocol: EvalProtocol | None = None,
        detailed: bool = False,
        image_msgtype: str = "sensor_msgs/msg/Image",
        reliable: bool = True,
    ) -> None:
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from cloudypoints_ros.conversions import header_stamp_ns
        from cloudypoints_ros.player import message_class

        self._stamp_of = header_stamp_ns
        self.node = node
        self.protocol = protocol or make_protocol("whole_frame")
        self.detailed = detailed
        self.depth_topic = depth_topic
        self.gt_topic = gt_topic
        self.image_topic = image_topic
        self._lock = threading.Lock()
        self._gt: dict[int, Any] = {}
        self._pred: dict[int, tuple[Any, int]] = {}
        self.scored: dict[int, _Scored] = {}
        self.image_arrivals: dict[int, int] = {}
        self.depth_count = 0
        self.gt_count = 0
        self.last_depth_monotonic: float | None = None
        self.examples: list[dict[str, Any]] = []
        self._n_ok = 0
        self.errors: list[str] = []
        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=EVAL_QUEUE_DEPTH,
            reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
            durability=DurabilityPolicy.VOLATILE,
        )
        node.create_subscription(Image, depth_topic, self._on_depth, qos)
        if gt_topic:
            node.create_subscription(Image, gt_topic, self._on_gt, qos)
        if image_topic:
            # Raw bytes: only the header stamp is needed, not a decoded multi-megabyte image.
            node.create_subscription(
                message_class(image_msgtype), image_topic, self._on_image, qos, raw=True
            )

    # ------------------------------------------------------------------------------ callbacks
    def _decode(self, msg: Any, what: str) -> Any | None:
        from cloudypoints_core.bags.reader import decode_depth
        from cloudypoints_core.errors import CloudyPointsError

        try:
            return decode_depth(msg)
        except CloudyPointsError as exc:
            if len(self.errors) < 20:
                self.errors.append(f"{what} at {self._stamp(msg)} ns undecodable: {exc}")
            log.warning("%s undecodable: %s", what, exc)
            return None

    @staticmethod
    def _stamp(msg: Any) -> int:
        return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)

    def _on_depth(self, msg: Any) -> None:
        wall = time.time_ns()
        stamp = self._stamp(msg)
        depth = self._decode(msg, "depth image")
        with self._lock:
            self.depth_count += 1
            self.last_depth_monotonic = time.monotonic()
            if depth is None:
                self.scored[stamp] = _Scored(
                    stamp, FrameScore("error", note="undecodable depth"), wall
                )
                return
            self._pred[stamp] = (np.array(depth, copy=True), wall)
            self._match(stamp)

    def _on_gt(self, msg: Any) -> None:
        stamp = self._stamp(msg)
        gt = self._decode(msg, "ground truth")
        with self._lock:
            self.gt_count += 1
            if gt is not None:
                self._gt[stamp] = np.array(gt, copy=True)
                self._match(stamp)

    def _on_image(self, raw: bytes) -> None:
        stamp = self._stamp_of(raw)
        if stamp is not None:
            with self._lock:
                self.image_arrivals.setdefault(stamp, time.time_ns())

    def _match(self, stamp: int) -> None:
        if stamp in self._pred and stamp in self._gt:
            pred, wall = self._pred.pop(stamp)
            gt = self._gt.pop(stamp)
            self.scored[stamp] = _Scored(
                stamp, score_frame(gt, pred, self.protocol, detailed=self.detailed), wall
            )
            if self.scored[stamp].score.status != "ok":
                return
            self._n_ok += 1
            # Every fourth scored frame from the first, a few in all (the image is not kept).
            if (self._n_ok - 1) % 4 == 0 and len(self.examples) < N_EXAMPLES:
                self.examples.append(
                    {"title": f"stamp {stamp} ns", "rgb": None, "gt": gt, "pred": pred}
                )

    # --------------------------------------------------------------------------------- report
    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "depth_received": self.depth_count,
                "gt_received": self.gt_count,
                "images_seen": len(self.image_arrivals),
                "scored": sum(s.score.status == "ok" for s in self.scored.values()),
                "depth_publishers": self.node.count_publishers(self.depth_topic),
                "wall_ns": time.time_ns(),
            }

    def report(self, bag: str = "") -> EvalReport:
        """Everything received so far as a live :class:`EvalReport` (frames by stamp order)."""
        with self._lock:
            scored = dict(self.scored)
            # Depth images whose ground truth never came: counted, not scored.
            for stamp, (_, wall) in self._pred.items():
                scored.setdefault(
                    stamp,
                    _Scored(stamp, FrameScore("no_gt", note="no ground truth received"), wall),
                )
            pending_gt = set(self._gt)
            arrivals = dict(self.image_arrivals)
        report = EvalReport(kind="live", bag=bag, protocol=self.protocol)
        published = arrivals
        inputs = sorted(set(published) | set(scored) | pending_gt)
        order = {stamp: i for i, stamp in enumerate(inputs)}
        for stamp in sorted(scored):
            item = scored[stamp]
            e2e = None
            if item.depth_wall_ns is not None and stamp in published:
                e2e = (item.depth_wall_ns - published[stamp]) / 1e9
            report.add_row(order[stamp], stamp, item.score, end_to_end=e2e)
        expected = set(published) if published else (set(scored) | pending_gt)
        dropped = sorted(expected - set(scored))
        report.info.update(
            {
                "frames_published": len(expected),
                "frames_published_source": "input images seen"
                if published
                else "ground truth stamps (no --image-topic)",
                "depth_received": self.depth_count,
                "gt_received": self.gt_count,
                "dropped_frames": len(dropped),
                "dropped_stamps_ns": dropped[:200],
                "drop_rate": (len(dropped) / len(expected)) if expected else None,
                "topics": {
                    "depth": self.depth_topic,
                    "gt": self.gt_topic,
                    "image": self.image_topic,
                },
            }
        )
        report.warnings.extend(self.errors)
        if self.depth_count == 0:
            report.partial_reasons.append(f"no depth image received on {self.depth_topic}")
        if self.gt_topic and self.gt_count == 0:
            report.partial_reasons.append(f"no ground truth received on {self.gt_topic}")
        report.examples = list(self.examples)
        return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cloudypoints_ros.replay_evaluator", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--depth-topic", default="/depth/image")
    parser.add_argument("--gt-topic", default="/camera/depth_gt")
    parser.add_argument(
        "--image-topic",
        default=None,
        help="input image topic: arrivals time the latency and count drops",
    )
    parser.add_argument(
        "--image-type",
        default="sensor_msgs/msg/Image",
        help="message type of --image-topic (or sensor_msgs/msg/CompressedImage)",
    )
    parser.add_argument("--out", type=Path, required=True, help="report folder")
    parser.add_argument("--bag", default="", help="bag name for the report")
    parser.add_argument("--status", type=Path, help="write progress JSON here twice a second")
    parser.add_argument("--expect", type=int, default=0, help="stop after N scored frames")
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=0.0,
        help="stop after this many seconds without depth (once one arrived)",
    )
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this many s")
    parser.add_argument("--best-effort", action="store_true", help="best-effort subscriptions")
    parser.add_argument(
        "--protocol", default="whole_frame", choices=("whole_frame", "cityscapes", "synthcity")
    )
    parser.add_argument("--median-scaling", action="store_true")
    parser.add_argument("--detailed", action="store_true", help="distance bands and curve")
    parser.add_argument("--min-depth", type=float, default=None, help="override the protocol's")
    parser.add_argument("--max-depth", type=float, default=None, help="override the protocol's")
    parser.add_argument("--no-plots", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions
    from rclpy.utilities import remove_ros_args

    from cloudypoints_core.bags.evaluate import write_report
    from cloudypoints_core.io import atomic_write_text

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(remove_ros_args(["evaluator", *argv])[1:])
    protocol = make_protocol(
        args.protocol,
        median_scaling=args.median_scaling,
        min_depth_m=args.min_depth,
        max_depth_m=args.max_depth,
    )
    stop = threading.Event()
    # rclpy's own SIGINT handling would end spinning without our report; take both signals.
    rclpy.init(args=["evaluator", *argv], signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    node = rclpy.create_node(EVALUATOR_NODE_NAME)
    evaluator = ReplayEvaluator(
        node,
        args.depth_topic,
        args.gt_topic or None,
        args.image_topic,
        protocol=protocol,
        detailed=args.detailed,
        image_msgtype=args.image_type,
        reliable=not args.best_effort,
    )
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    started = time.monotonic()
    next_status = 0.0
    try:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.1)
            now = time.monotonic()
            if args.status and now >= next_status:
                atomic_write_text(args.status, json.dumps(evaluator.status()), fsync=False)
                next_status = now + 0.5
            scored = len(evaluator.scored)
            if args.expect and scored >= args.expect:
                break
            last = evaluator.last_depth_monotonic
            if args.idle_timeout and last is not None and now - last > args.idle_timeout:
                break
            if args.duration and now - started > args.duration:
                break
    finally:
        report = evaluator.report(bag=args.bag)
        report.wall_s = time.monotonic() - started
        result = write_report(report, args.out, plots=not args.no_plots)
        if args.status:
            atomic_write_text(
                args.status, json.dumps({**evaluator.status(), "done": True}), fsync=False
            )
        log.info(
            "live evaluation: %s scored, %s dropped%s",
            result["frames"]["ok"],
            result.get("dropped_frames"),
            " (PARTIAL)" if result["partial"] else "",
        )
        executor.shutdown()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 1 if result["partial"] else 0


if __name__ == "__main__":
    sys.exit(main())
