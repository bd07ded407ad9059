"""The demo's bag player and recorder over real DDS: timing, re-stamping, byte-exact content."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rclpy.node import Node

from cloudypoints_core.bags.reader import open_bag
from cloudypoints_core.bags.writer import write_synthcity_bag
from cloudypoints_core.errors import BagError
from cloudypoints_ros.player import BagPlayer, message_class
from cloudypoints_ros.recorder import BagRecorder, parse_topic

pytestmark = pytest.mark.ros

TOPICS = {
    "/camera/image": "sensor_msgs/msg/Image",
    "/camera/camera_info": "sensor_msgs/msg/CameraInfo",
    "/camera/depth_gt": "sensor_msgs/msg/Image",
}
N_FRAMES = 4
RATE_HZ = 17.0


def _messages(bag: Path) -> dict[str, list[tuple[int, Any]]]:
    out: dict[str, list[tuple[int, Any]]] = {}
    with open_bag(bag) as reader:
        for conn, log_ns, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            out.setdefault(conn.topic, []).append((int(log_ns), msg))
    return out


def _stamp(msg: Any) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def test_played_bag_is_recorded_with_timing_and_shifted_stamps(
    ros_env: Any, tmp_path: Path
) -> None:
    source = write_synthcity_bag(
        tmp_path / "in",
        seed=2,
        n_frames=N_FRAMES,
        width=64,
        height=32,
        rate_hz=RATE_HZ,
        progress=False,
    )
    recorder = BagRecorder(
        ros_env.add_node(Node("test_recorder", context=ros_env.context)), tmp_path / "out", TOPICS
    )
    player = BagPlayer(ros_env.add_node(Node("test_player", context=ros_env.context)), source)
    assert player.topics == sorted(TOPICS)
    player.wait_for_subscribers(list(TOPICS), timeout_s=10.0)
    time.sleep(0.3)
    result = player.play(rate=1.0)
    assert result.published == {t: N_FRAMES for t in TOPICS}
    # Original timing: the last frame goes out (N - 1) / rate after the first.
    assert (N_FRAMES - 1) / RATE_HZ - 0.01 <= result.duration_s < (N_FRAMES - 1) / RATE_HZ + 0.5
    deadline = time.monotonic() + 5.0
    while any(recorder.counts[t] < N_FRAMES for t in TOPICS) and time.monotonic() < deadline:
        time.sleep(0.05)
    bag = recorder.close()
    assert not list(tmp_path.glob(".out.partial-*"))

    original, recorded = _messages(source), _messages(bag)
    for topic in TOPICS:
        assert len(recorded[topic]) == N_FRAMES, topic
        for (_, a), (log_ns, b) in zip(original[topic], recorded[topic], strict=True):
            # One offset for every message: pairs that shared a stamp still do.
            assert _stamp(b) - _stamp(a) == result.offset_ns
            assert 0 <= log_ns - _stamp(b) < 1_000_000_000  # received after its (new) stamp
            if hasattr(a, "data"):
                np.testing.assert_array_equal(np.asarray(a.data), np.asarray(b.data))
            else:
                np.testing.assert_array_equal(a.k, b.k)


def test_player_and_recorder_refuse_bad_arguments(ros_env: Any, tmp_path: Path) -> None:
    with pytest.raises(BagError, match="not installed"):
        message_class("no_such_msgs/msg/Thing")
    with pytest.raises(BagError, match="/topic:package/msg/Type"):
        parse_topic("camera/image")
    with pytest.raises(BagError, match="does not exist"):
        BagPlayer(
            ros_env.add_node(Node("test_player_bad", context=ros_env.context)),
            tmp_path / "missing",
        )
    existing = tmp_path / "exists"
    existing.mkdir()
    with pytest.raises(BagError, match="exists already"):
        BagRecorder(
            ros_env.add_node(Node("test_recorder_bad", context=ros_env.context)), existing, TOPICS
        )
