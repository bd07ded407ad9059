"""Bags written from SynthCity, read back message by message with plain ``rosbags``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from bag_helpers import SYNTH_FRAMES, SYNTH_H, SYNTH_W
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

from cloudypoints_core.bags.writer import BagTopics, BagWriter, write_synthcity_bag
from cloudypoints_core.errors import BagError, InputError
from cloudypoints_core.geometry import Intrinsics
from cloudypoints_core.image import compressed_to_rgb, image_msg_to_numpy

STORE = get_typestore(Stores.ROS2_KILTED)
PERIOD_NS = round(1e9 / 17.0)


def _messages(bag: Path) -> dict[str, list[tuple[int, object]]]:
    out: dict[str, list[tuple[int, object]]] = {}
    with AnyReader([bag], default_typestore=STORE) as reader:
        for conn, t, raw in reader.messages():
            out.setdefault(conn.topic, []).append((t, reader.deserialize(raw, conn.msgtype)))
    return out


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("fmt", ["raw", "png", "jpeg"])
def test_every_message_matches_synthcity(synth_bags, synth_frames, storage: str, fmt: str) -> None:
    bag = synth_bags[(storage, fmt)]
    msgs = _messages(bag)
    image_topic = "/camera/image" if fmt == "raw" else "/camera/image/compressed"
    assert set(msgs) == {image_topic, "/camera/camera_info", "/camera/depth_gt"}
    for topic in msgs:
        assert len(msgs[topic]) == SYNTH_FRAMES
    for i, frame in enumerate(synth_frames):
        stamp = frame.stamp_ns
        if i:
            # 17 Hz, within the 1 ns rounding of the renderer's stamps.
            assert abs(stamp - synth_frames[i - 1].stamp_ns - PERIOD_NS) <= 1
        for topic in msgs:
            log_time, msg = msgs[topic][i]
            assert log_time == stamp  # recorded at the header stamp: playback keeps the timing
            assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == stamp
            assert msg.header.frame_id == "camera_optical_frame"
        _, img = msgs[image_topic][i]
        if fmt == "raw":
            assert (img.encoding, img.height, img.width, img.step) == (
                "rgb8",
                SYNTH_H,
                SYNTH_W,
                SYNTH_W * 3,
            )
            np.testing.assert_array_equal(img.data.reshape(SYNTH_H, SYNTH_W, 3), frame.rgb)
        elif fmt == "png":
            np.testing.assert_array_equal(compressed_to_rgb(img), frame.rgb)
        else:
            assert img.format == "rgb8; jpeg compressed bgr8"
            err = np.abs(compressed_to_rgb(img).astype(int) - frame.rgb.astype(int))
            assert err.mean() < 6.0
        _, info = msgs["/camera/camera_info"][i]
        intr: Intrinsics = frame.intrinsics
        assert (info.width, info.height) == (SYNTH_W, SYNTH_H)
        np.testing.assert_allclose(
            info.k, [intr.fx_px, 0, intr.cx_px, 0, intr.fy_px, intr.cy_px, 0, 0, 1]
        )
        np.testing.assert_allclose(
            info.p[[0, 2, 5, 6, 10]], [intr.fx_px, intr.cx_px, intr.fy_px, intr.cy_px, 1]
        )
        assert info.distortion_model == "plumb_bob" and not np.any(info.d)
        _, gt = msgs["/camera/depth_gt"][i]
        assert gt.encoding == "32FC1"
        depth = image_msg_to_numpy(gt)
        expected = np.where(np.isfinite(frame.depth_m), frame.depth_m, np.nan)
        assert np.isinf(frame.depth_m).any()  # the sky, which must become NaN
        np.testing.assert_array_equal(depth, expected.astype(np.float32))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_metadata_is_what_ros2_bag_expects(synth_bags, storage: str) -> None:
    bag = synth_bags[(storage, "raw")]
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == 9
    assert meta["storage_identifier"] == storage
    suffix = ".mcap" if storage == "mcap" else ".db3"
    # Named after the final folder although it was written under a staging name.
    assert meta["relative_file_paths"] == [f"{bag.name}{suffix}"]
    assert (bag / f"{bag.name}{suffix}").is_file()
    assert meta["message_count"] == 3 * SYNTH_FRAMES
    types = {
        t["topic_metadata"]["name"]: t["topic_metadata"]["type"]
        for t in meta["topics_with_message_count"]
    }
    assert types == {
        "/camera/image": "sensor_msgs/msg/Image",
        "/camera/camera_info": "sensor_msgs/msg/CameraInfo",
        "/camera/depth_gt": "sensor_msgs/msg/Image",
    }
    assert meta["duration"]["nanoseconds"] == pytest.approx((SYNTH_FRAMES - 1) * PERIOD_NS, abs=5)
    assert meta["custom_data"]["cloudypoints.source"] == "synthcity"


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    intr = Intrinsics(50.0, 50.0, 15.5, 7.5, 32, 16)
    target = tmp_path / "bag"
    with pytest.raises(RuntimeError, match="boom"), BagWriter(target) as w:
        w.write_frame(np.zeros((16, 32, 3), np.uint8), intr, 1000)
        raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []  # no staging folder left behind


def test_bad_frames_are_refused_and_nothing_is_left(tmp_path: Path) -> None:
    intr = Intrinsics(50.0, 50.0, 15.5, 7.5, 32, 16)
    target = tmp_path / "bag"
    with pytest.raises(InputError, match="increase"), BagWriter(target) as w:
        w.write_frame(np.zeros((16, 32, 3), np.uint8), intr, 1000)
        w.write_frame(np.zeros((16, 32, 3), np.uint8), intr, 1000)
    with pytest.raises(InputError, match="64x16"), BagWriter(target) as w:
        w.write_frame(np.zeros((16, 64, 3), np.uint8), intr, 1000)
    assert list(tmp_path.iterdir()) == []


def test_existing_bag_is_kept_unless_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "bag"
    write_synthcity_bag(target, seed=1, n_frames=2, width=32, height=16, progress=False)
    with pytest.raises(BagError, match="exists"):
        write_synthcity_bag(target, seed=1, n_frames=2, width=32, height=16, progress=False)
    write_synthcity_bag(
        target,
        seed=2,
        n_frames=3,
        width=32,
        height=16,
        progress=False,
        overwrite=True,
        storage="sqlite3",
    )
    meta = yaml.safe_load((target / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["message_count"] == 9 and meta["storage_identifier"] == "sqlite3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag"]


def test_custom_topics_and_no_ground_truth(tmp_path: Path) -> None:
    topics = BagTopics(image="/cam/rgb", camera_info="/cam/info", depth_gt=None)
    bag = write_synthcity_bag(
        tmp_path / "b",
        seed=0,
        n_frames=2,
        width=32,
        height=16,
        image_format="png",
        topics=topics,
        progress=False,
    )
    assert set(_messages(bag)) == {"/cam/rgb/compressed", "/cam/info"}


def test_bad_options_are_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="rosbag1"):
        BagWriter(tmp_path / "x", storage="rosbag1")
    with pytest.raises(InputError, match="webp"):
        BagWriter(tmp_path / "x", image_format="webp")
