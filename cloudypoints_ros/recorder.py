"""A small rosbag2 recorder for the demo and tests: serialized rclpy messages into ``rosbags``.

Subscriptions take the CDR bytes as they arrive (``raw=True``: no deserialisation), and the
bag's log time of each message is its time of receipt, so ``log time - header stamp`` is the
end-to-end latency of a message. The bag is written in a hidden staging folder and moved onto
its name when the recorder stops (Ctrl-C, ``--until``, ``--max-duration``), so a half-written
bag never appears under the final name.

    python -m cloudypoints_ros.recorder out.bag -t /camera/depth/image:sensor_msgs/msg/Image
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import rclpy
import rclpy.utilities
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from cloudypoints_core._optional import require
from cloudypoints_core.errors import BagError, CloudyPointsError
from cloudypoints_ros.player import message_class

log = logging.getLogger(__name__)

#: Subscription history: the callback only appends bytes to the bag, so it keeps up; the depth
#: covers short stalls of the disk without losing messages.
RECORDER_QUEUE_DEPTH = 50


def parse_topic(spec: str) -> tuple[str, str]:
    """``/topic:pkg/msg/Type`` -> (topic, type)."""
    topic, sep, msgtype = spec.partition(":")
    if not sep or not topic.startswith("/") or msgtype.count("/") != 2:
        raise BagError(f"topic spec {spec!r} must look like /topic:package/msg/Type")
    return topic, msgtype


class BagRecorder:
    """Records ``topics`` ({name: type}) into a new bag at ``path`` (see the module docstring)."""

    def __init__(
        self, node: Node, path: str | Path, topics: dict[str, str], storage: str = "mcap"
    ) -> None:
        rosbag2 = require("rosbags.rosbag2", "recording rosbag2 bags")
        from cloudypoints_core.bags.typestore import get_typestore

        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"{self.path} exists already")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._staging = self.path.parent / f".{self.path.name}.partial-{uuid.uuid4().hex[:8]}"
        self._staging.mkdir()
        plugins = {"mcap": rosbag2.StoragePlugin.MCAP, "sqlite3": rosbag2.StoragePlugin.SQLITE3}
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=RECORDER_QUEUE_DEPTH,
            reliability=ReliabilityPolicy.RELIABLE,
        )
        try:
            classes = {topic: message_class(msgtype) for topic, msgtype in topics.items()}
            self._writer = rosbag2.Writer(
                self._staging / self.path.name, version=9, storage_plugin=plugins[storage]
            )
            self._writer.open()
            store = get_typestore()
            conns = {
                t: self._writer.add_connection(t, ty, typestore=store) for t, ty in topics.items()
            }
        except Exception as exc:  # rosbags raises several types; none may leave the staging
            shutil.rmtree(self._staging, ignore_errors=True)
            if isinstance(exc, CloudyPointsError):
                raise
            raise BagError(f"cannot create bag {self.path}: {type(exc).__name__}: {exc}") from exc
        self._subs = [
            node.create_subscription(
                classes[topic],
                topic,
                lambda data, c=conns[topic], t=topic: self._write(c, t, data),
                qos,
                raw=True,
            )
            for topic in topics
        ]

    def _write(self, conn: Any, topic: str, data: bytes) -> None:
        now_ns = time.time_ns()
        with self._lock:
            if self._writer is None:
                return
            self._writer.write(conn, now_ns, bytes(data))
            self.counts[topic] += 1

    def close(self) -> Path:
        """Finish the bag and move it onto ``path``."""
        with self._lock:
            writer, self._writer = self._writer, None
        if writer is None:
            return self.path
        try:
            writer.close()
            os.replace(self._staging / self.path.name, self.path)
        finally:
            shutil.rmtree(self._staging, ignore_errors=True)
        return self.path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cloudypoints_ros.recorder", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("bag", type=Path, help="new rosbag2 folder")
    parser.add_argument(
        "-t",
        "--topic",
        action="append",
        required=True,
        metavar="TOPIC:TYPE",
        help="a topic and its type, e.g. /points:sensor_msgs/msg/PointCloud2",
    )
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument(
        "--until", default=None, metavar="TOPIC=N", help="stop after N messages on TOPIC"
    )
    parser.add_argument(
        "--max-duration",
        type=float,
        default=0.0,
        help="stop after this many seconds (0: until Ctrl-C)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Record until Ctrl-C (or a stop condition); 0 when the bag was written, 1 on errors."""
    raw = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(rclpy.utilities.remove_ros_args(raw))
    logging.basicConfig(level=logging.INFO, format="[recorder] %(message)s")
    until_topic, until_n = None, 0
    if args.until:
        until_topic, _, n = args.until.partition("=")
        until_n = int(n)
    rclpy.init(args=[sys.argv[0], *raw])
    node: Node | None = None
    recorder: BagRecorder | None = None
    try:
        topics = dict(parse_topic(t) for t in args.topic)
        node = Node("cloudypoints_recorder")
        recorder = BagRecorder(node, args.bag, topics, args.storage)
        log.info("recording %s into %s", ", ".join(topics), args.bag)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        start = time.monotonic()
        try:
            while rclpy.ok():
                executor.spin_once(timeout_sec=0.1)
                if until_topic and recorder.counts[until_topic] >= until_n:
                    break
                if args.max_duration and time.monotonic() - start > args.max_duration:
                    break
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            executor.shutdown()
        return 0
    except CloudyPointsError as exc:
        log.error("%s", exc)
        return 1
    finally:
        if recorder is not None:
            path = recorder.close()
            log.info(
                "wrote %s: %s",
                path,
                ", ".join(f"{t}: {n}" for t, n in sorted(recorder.counts.items())) or "empty",
            )
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
