"""Reading frames from bags: topics by type, stamp matching, and every kind of bad bag."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from bag_helpers import (
    DT,
    INTR,
    SYNTH_FRAMES,
    T0,
    big_bag,
    depth_msgs,
    info_msgs,
    rgb_msgs,
    write_bag,
)

from cloudypoints_core.bags import messages as m
from cloudypoints_core.bags.reader import (
    FrameReader,
    bag_info,
    open_bag,
    read_frames,
    resolve_streams,
)
from cloudypoints_core.errors import BagError
from cloudypoints_core.geometry import Intrinsics


# ------------------------------------------------------------------------------ good bags
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("fmt", ["raw", "png"])
def test_frames_of_a_synthcity_bag(synth_bags, synth_frames, storage: str, fmt: str) -> None:
    reader = FrameReader(synth_bags[(storage, fmt)])
    frames = list(reader)
    assert reader.streams is not None and reader.streams.compressed == (fmt != "raw")
    assert reader.streams.depth_gt == "/camera/depth_gt"
    assert [f.index for f in frames] == list(range(SYNTH_FRAMES))
    for frame, truth in zip(frames, synth_frames, strict=True):
        assert frame.stamp_ns == truth.stamp_ns
        np.testing.assert_array_equal(frame.rgb, truth.rgb)
        assert frame.intrinsics == truth.intrinsics
        want = np.where(np.isfinite(truth.depth_m), truth.depth_m, np.nan)
        np.testing.assert_array_equal(frame.depth_gt_m, want)
        assert frame.read_s >= 0
    assert reader.stats.frames == SYNTH_FRAMES and reader.stats.warnings == []


def test_bag_info(synth_bags) -> None:
    info = bag_info(synth_bags[("sqlite3", "jpeg")])
    assert info.storage == "sqlite3"
    assert info.message_count == 3 * SYNTH_FRAMES
    assert {t.name: t.count for t in info.topics} == {
        "/camera/image/compressed": SYNTH_FRAMES,
        "/camera/camera_info": SYNTH_FRAMES,
        "/camera/depth_gt": SYNTH_FRAMES,
    }
    assert info.custom_data["cloudypoints.source"] == "synthcity"
    assert info.duration_ns > 0 and info.note == ""


def test_topics_by_type_with_other_names(tmp_path: Path, rng: np.random.Generator) -> None:
    bag = write_bag(
        tmp_path / "b",
        {
            "/front/rgb": rgb_msgs(3, rng),
            "/front/info": info_msgs(3),
            "/lidar/depth_projected": depth_msgs(3),
        },
    )
    frames = list(read_frames(bag))
    assert len(frames) == 3 and all(f.depth_gt_m is not None for f in frames)
    np.testing.assert_array_equal(frames[1].depth_gt_m, np.full((16, 32), 5.0, np.float32))


def test_raw_preferred_over_compressed_and_explicit_topics(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    raw = rgb_msgs(2, rng)
    png = [
        (s, m.compressed_image_message(np.zeros((16, 32, 3), np.uint8), "png", s)) for s, _ in raw
    ]
    bag = write_bag(
        tmp_path / "b",
        {"/cam/image": raw, "/cam/image/compressed": png, "/cam/camera_info": info_msgs(2)},
    )
    with open_bag(bag) as reader:
        streams = resolve_streams(reader)
        assert (streams.image, streams.compressed, streams.depth_gt) == ("/cam/image", False, None)
        chosen = resolve_streams(reader, image_topic="/cam/image/compressed")
        assert chosen.compressed
    frames = list(read_frames(bag, image_topic="/cam/image/compressed"))
    assert all(not f.rgb.any() for f in frames)


# ------------------------------------------------------------------------------- bad bags
def test_missing_bag_and_not_a_bag(tmp_path: Path) -> None:
    with pytest.raises(BagError, match="does not exist"):
        bag_info(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match="no metadata.yaml"):
        list(read_frames(tmp_path / "empty"))
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(BagError, match="not a rosbag2"):
        bag_info(tmp_path / "x.txt")


def test_bag_without_image_topic_lists_what_it_has(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "b", {"/cam/camera_info": info_msgs(2), "/depth": depth_msgs(2)})
    with pytest.raises(
        BagError,
        match=r"no colour image topic.*/cam/camera_info \(sensor_msgs/msg"
        r"/CameraInfo, 2 msgs\).*/depth",
    ):
        list(read_frames(bag))


def test_wrong_or_ambiguous_topics(tmp_path: Path, rng: np.random.Generator) -> None:
    bag = write_bag(
        tmp_path / "b",
        {
            "/a/image": rgb_msgs(2, rng),
            "/b/image": rgb_msgs(2, rng),
            "/a/camera_info": info_msgs(2),
        },
    )
    with pytest.raises(BagError, match="several image topics.*--image-topic"):
        list(read_frames(bag))
    with pytest.raises(BagError, match="no image topic '/c/image'.*/a/image"):
        list(read_frames(bag, image_topic="/c/image"))
    with pytest.raises(BagError, match="has type sensor_msgs/msg/CameraInfo"):
        list(read_frames(bag, image_topic="/a/camera_info"))
    assert len(list(read_frames(bag, image_topic="/b/image"))) == 2


def test_camera_info_with_other_stamps_falls_back_to_latest(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    bag = write_bag(
        tmp_path / "b",
        {"/cam/image": rgb_msgs(4, rng), "/cam/camera_info": info_msgs(1, offset=-1000)},
    )
    reader = FrameReader(bag)
    frames = list(reader)
    assert len(frames) == 4 and all(f.intrinsics == INTR for f in frames)
    assert reader.stats.camera_info_fallback == 4
    assert any("latest camera info" in w for w in reader.stats.warnings)


def test_images_without_camera_info_are_skipped_and_counted(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    bag = write_bag(tmp_path / "b", {"/cam/image": rgb_msgs(3, rng)})
    reader = FrameReader(bag)
    assert list(reader) == []
    assert reader.stats.skipped_no_camera_info == 3
    assert any("no sensor_msgs/msg/CameraInfo topic" in w for w in reader.stats.warnings)
    # Camera info for another image size: skipped with both sizes named.
    other = Intrinsics(40.0, 40.0, 31.5, 15.5, 64, 32)
    bag2 = write_bag(
        tmp_path / "c", {"/cam/image": rgb_msgs(2, rng), "/cam/camera_info": info_msgs(2, other)}
    )
    reader = FrameReader(bag2)
    assert list(reader) == []
    assert reader.stats.skipped_no_camera_info == 2
    assert any("32x16 but its camera info is 64x32" in w for w in reader.stats.warnings)


def test_missing_and_16bit_ground_truth(tmp_path: Path, rng: np.random.Generator) -> None:
    mm = np.full((16, 32), 2500, np.uint16)
    mm[0, 0] = 0
    gt = [
        (T0, m.image_message(mm, "16UC1", T0)),
        (T0 + 2 * DT, m.image_message(mm, "16UC1", T0 + 2 * DT)),
    ]
    bag = write_bag(
        tmp_path / "b",
        {"/cam/image": rgb_msgs(3, rng), "/cam/camera_info": info_msgs(3), "/cam/depth": gt},
    )
    reader = FrameReader(bag)
    frames = list(reader)
    assert [f.depth_gt_m is None for f in frames] == [False, True, False]
    assert np.isnan(frames[0].depth_gt_m[0, 0]) and frames[0].depth_gt_m[1, 1] == 2.5
    assert reader.stats.missing_gt == 1


def test_folder_without_metadata_is_read_with_a_warning(
    synth_bags, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bag = shutil.copytree(synth_bags[("mcap", "raw")], tmp_path / "b")
    (bag / "metadata.yaml").unlink()
    with caplog.at_level(logging.WARNING):
        assert len(list(read_frames(bag))) == SYNTH_FRAMES
    assert "no metadata.yaml" in caplog.text


def test_truncated_mcap_yields_its_complete_part(tmp_path: Path) -> None:
    bag, written = big_bag(tmp_path / "b")
    data = bag / "b.mcap"
    os.truncate(data, int(data.stat().st_size * 0.7))  # a recorder killed mid-write
    (bag / "metadata.yaml").unlink()
    info = bag_info(bag)
    assert "truncated" in info.note
    reader = FrameReader(bag)
    frames = list(reader)
    assert 2 <= len(frames) < len(written)
    for frame, truth in zip(frames, written, strict=False):
        assert frame.stamp_ns == truth.stamp_ns
        np.testing.assert_array_equal(frame.rgb, truth.rgb)
        np.testing.assert_array_equal(frame.depth_gt_m, truth.depth_m)
    assert reader.stats.truncated and "truncated" in reader.stats.truncated


def test_bag_info_on_a_truncated_bag_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    from cloudypoints_core.cli.main import main

    bag, _ = big_bag(tmp_path / "b")
    data = bag / "b.mcap"
    os.truncate(data, int(data.stat().st_size * 0.7))
    with caplog.at_level(logging.WARNING):
        assert main(["bag", "info", str(bag)]) == 0
    warned = [r for r in caplog.records if "is truncated" in r.getMessage()]
    assert len(warned) == 1, [r.getMessage() for r in warned]
    assert "evaluation topics: {" in capsys.readouterr().out


def test_truncated_sqlite_is_a_clear_error(synth_bags, tmp_path: Path) -> None:
    bag = shutil.copytree(synth_bags[("sqlite3", "raw")], tmp_path / "b")
    db = next(bag.glob("*.db3"))
    os.truncate(db, db.stat().st_size // 3)
    with pytest.raises(BagError, match=f"cannot open bag {bag}"):
        list(read_frames(bag))


def test_corrupt_message_is_skipped_not_fatal(synth_bags, tmp_path: Path) -> None:
    bag = shutil.copytree(synth_bags[("sqlite3", "raw")], tmp_path / "b")
    db = next(bag.glob("*.db3"))
    with sqlite3.connect(db) as con:
        topic_id = con.execute("SELECT id FROM topics WHERE name='/camera/image'").fetchone()[0]
        row = con.execute(
            "SELECT id FROM messages WHERE topic_id=? ORDER BY timestamp LIMIT 1 OFFSET 2",
            (topic_id,),
        ).fetchone()[0]
        con.execute("UPDATE messages SET data=X'00010000' WHERE id=?", (row,))
    reader = FrameReader(bag)
    frames = list(reader)
    assert len(frames) == SYNTH_FRAMES - 1
    assert any("undecodable message on /camera/image" in w for w in reader.stats.warnings)
