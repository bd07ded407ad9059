"""A small rosbag2 player for the demo and tests: reads with ``rosbags``, publishes with rclpy.

``ros2 bag play`` is not installable from PyPI; this covers what the demo needs. Messages keep
their original timing (scaled by ``rate``) and, by default, their header stamps are shifted onto
the current clock by one common offset: stamps that were equal stay equal (image, CameraInfo and
ground truth still pair up) and the depth node's stamp-to-publish latency becomes meaningful.
Raw CDR bytes from the bag are turned into rclpy messages with ``rclpy.serialization``, so any
message type installed in the environment can be played.

    python -m cloudypoints_ros.player out/demo/input_bag --wait-for /camera/image
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rclpy
import rclpy.utilities
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message

from cloudypoints_core.errors import BagError, CloudyPointsError

log = logging.getLogger(__name__)

#: Publisher history: deep enough that a burst of small messages (CameraInfo) is not lost before
#: the middleware sends it, shallow enough to bound memory with large images.
PLAYER_QUEUE_DEPTH = 10


def message_class(msgtype: str) -> Any:
    """The rclpy message class for a rosbag2 type name such as ``sensor_msgs/msg/Image``."""
    try:
        package, kind, name = msgtype.split("/")
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ValueError, ImportError, AttributeError) as exc:
        raise BagError(
            f"message type {msgtype!r} is not installed for rclpy (pip install ros-<package>)"
        ) from exc


def _shift_stamp(msg: Any, offset_ns: int) -> None:
    header = getattr(msg, "header", None)
    if header is None:
        return
    stamp = int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec) + offset_ns
    header.stamp.sec, header.stamp.nanosec = divmod(max(stamp, 0), 1_000_000_000)


@dataclass(frozen=True)
class PlayResult:
    """What was published, per topic, and the stamp offset applied (ns; 0 without re-stamping)."""

    published: dict[str, int]
    offset_ns: int
    duration_s: float


class BagPlayer:
    """Publishes the messages of a bag in ``node``'s name; see the module docstring."""

    def __init__(self, node: Node, bag: str | Path, topics: Sequence[str] | None = None) -> None:
        from cloudypoints_core.bags.reader import open_bag

        self._node = node
        self._bag = Path(bag)
        self._open = open_bag
        with open_bag(self._bag) as reader:
            conns = [c for c in reader.connections if not topics or c.topic in topics]
        if not conns:
            raise BagError(f"{bag} has none of the topics {list(topics or [])}")
        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=PLAYER_QUEUE_DEPTH,
            reliability=ReliabilityPolicy.RELIABLE,
        )
        self._types: dict[str, Any] = {}
        self._pubs: dict[str, Any] = {}
        for conn in conns:
            if conn.topic not in self._pubs:
                self._types[conn.topic] = message_class(conn.msgtype)
                self._pubs[conn.topic] = node.create_publisher(
                    self._types[conn.topic], conn.topic, qos
                )

    @property
    def topics(self) -> list[str]:
        return sorted(self._pubs)

    def wait_for_subscribers(self, topics: Sequence[str], timeout_s: float) -> None:
        """Block until every topic in ``topics`` has a subscriber; BagError on timeout.

        ``TOPIC=N`` waits for N subscribers: a recorder of the input topic must not count as
        the node under test, which may still be loading its model.
        """
        wanted: dict[str, int] = {}
        for item in topics:
            name, _, count = item.partition("=")
            if count and not count.isdigit():
                raise BagError(f"--wait-for {item!r}: expected TOPIC or TOPIC=N")
            wanted[name] = int(count) if count else 1
        unknown = [t for t in wanted if t not in self._pubs]
        if unknown:
            raise BagError(f"cannot wait for {unknown}: not in the bag (topics: {self.topics})")
        deadline = time.monotonic() + timeout_s
        while True:
            missing = [t for t, n in wanted.items() if self._pubs[t].get_subscription_count() < n]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise BagError(f"no subscriber on {missing} within {timeout_s:.0f} s")
            time.sleep(0.05)

    def play(self, rate: float = 1.0, restamp: bool = True) -> PlayResult:
        """Publish every message at its recorded time divided by ``rate`` (0: at once)."""
        if rate < 0:
            raise BagError(f"rate must be >= 0, got {rate}")
        published: Counter[str] = Counter()
        offset_ns = 0
        t_start = time.monotonic()
        with self._open(self._bag) as reader:
            conns = [c for c in reader.connections if c.topic in self._pubs]
            first_ns: int | None = None
            for conn, t_ns, raw in reader.messages(connections=conns):
                if first_ns is None:
                    first_ns = int(t_ns)
                    # One offset for the whole bag: recorded times map onto "now", and the
                    # schedule starts at the same instant so that no message is published
                    # before its new stamp.
                    t_start = time.monotonic()
                    offset_ns = time.time_ns() - first_ns if restamp else 0
                if rate > 0:
                    due = t_start + (int(t_ns) - first_ns) / 1e9 / rate
                    delay = due - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                msg = deserialize_message(bytes(raw), self._types[conn.topic])
                if restamp:
                    _shift_stamp(msg, offset_ns)
                self._pubs[conn.topic].publish(msg)
                published[conn.topic] += 1
        return PlayResult(dict(published), offset_ns, time.monotonic() - t_start)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cloudypoints_ros.player", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("bag", type=Path, help="rosbag2 folder (MCAP or SQLite3)")
    parser.add_argument("--topic", action="append", default=[], help="play only these topics")
    parser.add_argument("--rate", type=float, default=1.0, help="speed factor (0: no waiting)")
    parser.add_argument(
        "--no-restamp", action="store_true", help="keep the recorded header stamps"
    )
    parser.add_argument(
        "--wait-for",
        action="append",
        default=[],
        metavar="TOPIC[=N]",
        help="wait until TOPIC has a subscriber (N subscribers) before playing (repeatable)",
    )
    parser.add_argument("--wait-timeout", type=float, default=60.0)
    parser.add_argument(
        "--start-delay",
        type=float,
        default=0.5,
        help="seconds to wait after the subscribers appeared (discovery of the reverse direction)",
    )
    parser.add_argument(
        "--loop",
        action="store_true",
        help="play the bag again and again until interrupted (each pass is "
        "re-stamped from its own start, so stamps keep increasing)",
    )
    parser.add_argument(
        "--linger",
        type=float,
        default=1.0,
        help="seconds to keep the publishers after the last message",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Play a bag; 0 on success, 1 on a bag or discovery error."""
    raw = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(rclpy.utilities.remove_ros_args(raw))
    logging.basicConfig(level=logging.INFO, format="[player] %(message)s")
    rclpy.init(args=[sys.argv[0], *raw])
    node: Node | None = None
    try:
        node = Node("cloudypoints_player")
        player = BagPlayer(node, args.bag, args.topic or None)
        if args.wait_for:
            log.info("waiting for subscribers on %s", ", ".join(args.wait_for))
            player.wait_for_subscribers(args.wait_for, args.wait_timeout)
            time.sleep(args.start_delay)
        log.info("playing %s (%s) at rate %g", args.bag, ", ".join(player.topics), args.rate)
        while True:
            result = player.play(rate=args.rate, restamp=not args.no_restamp)
            log.info(
                "published %s in %.1f s (stamp offset %d ns)",
                ", ".join(f"{t}: {n}" for t, n in sorted(result.published.items())),
                result.duration_s,
                result.offset_ns,
            )
            if not args.loop:
                break
        time.sleep(args.linger)
        return 0
    except CloudyPointsError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
