"""Helpers of the bag tests: bags with exactly the messages a test needs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer

from cloudypoints_core.bags import messages as m
from cloudypoints_core.bags.typestore import get_typestore
from cloudypoints_core.bags.writer import FrameRecord, write_frames_bag
from cloudypoints_core.geometry import Intrinsics

#: Small frames keep every bag test fast; the code paths are the same at any size.
SYNTH_W, SYNTH_H, SYNTH_FRAMES, SYNTH_SEED = 96, 48, 5, 7

INTR = Intrinsics(40.0, 40.0, 15.5, 7.5, 32, 16)
T0 = 1_600_000_000 * 10**9
DT = 58_823_529


def write_bag(path: Path, topics: dict[str, list[tuple[int, object]]]) -> Path:
    """A bag with exactly the given messages (topic -> [(stamp, rosbags message)])."""
    store = get_typestore()
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {
            t: writer.add_connection(t, msgs[0][1].__msgtype__, typestore=store)
            for t, msgs in topics.items()
        }
        events = sorted((s, t, msg) for t, msgs in topics.items() for s, msg in msgs)
        for stamp, topic, msg in events:
            writer.write(conns[topic], stamp, m.serialize(msg))
    return path


def rgb_msgs(n: int, rng: np.random.Generator, topic_shape=(16, 32)) -> list:
    return [
        (
            T0 + i * DT,
            m.image_message(
                rng.integers(0, 256, (*topic_shape, 3), np.uint8), "rgb8", T0 + i * DT
            ),
        )
        for i in range(n)
    ]


def info_msgs(n: int, intr: Intrinsics = INTR, offset: int = 0) -> list:
    return [
        (T0 + i * DT + offset, m.camera_info_message(intr, T0 + i * DT + offset)) for i in range(n)
    ]


def depth_msgs(n: int, value: float = 5.0, stamps: list[int] | None = None) -> list:
    stamps = stamps if stamps is not None else [T0 + i * DT for i in range(n)]
    return [(s, m.depth_message(np.full((16, 32), value, np.float32), s)) for s in stamps]


def big_bag(path: Path, n: int = 10) -> tuple[Path, list[FrameRecord]]:
    # About 0.45 MB per frame, so the 1 MiB MCAP chunks hold 2-3 frames each.
    rng = np.random.default_rng(3)
    intr = Intrinsics(200.0, 200.0, 127.5, 127.5, 256, 256)
    frames = [
        FrameRecord(
            rng.integers(0, 256, (256, 256, 3), np.uint8),
            intr,
            T0 + i * DT,
            rng.uniform(1, 50, (256, 256)).astype(np.float32),
        )
        for i in range(n)
    ]
    return write_frames_bag(path, frames, progress=False), frames
