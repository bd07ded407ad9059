"""Cityscapes-layout sequences to rosbag2, checked against the fixture's own files."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from cityscapes_fixture import expected_depth
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

from cloudypoints_core.bags.convert import (
    SYNTHETIC_EPOCH_NS,
    cityscapes_sequence_frames,
    cityscapes_sequences,
    convert,
    convert_cityscapes,
)
from cloudypoints_core.errors import DatasetError, InputError
from cloudypoints_core.image import image_msg_to_numpy, image_msg_to_rgb

STORE = get_typestore(Stores.ROS2_KILTED)


def _by_topic(bag: Path) -> dict[str, list]:
    out: dict[str, list] = {}
    with AnyReader([bag], default_typestore=STORE) as reader:
        for conn, t, raw in reader.messages():
            out.setdefault(conn.topic, []).append((t, reader.deserialize(raw, conn.msgtype)))
    return out


def _files(tree, city: str, seq: int, frame: int) -> tuple[np.ndarray, np.ndarray, int]:
    stem = f"{city}_{seq:06d}_{frame:06d}"
    rgb = cv2.imread(
        str(tree.root / "leftImg8bit_sequence" / "val" / city / f"{stem}_leftImg8bit.png")
    )[:, :, ::-1]
    disp = cv2.imread(
        str(tree.root / "disparity_sequence" / "val" / city / f"{stem}_disparity.png"),
        cv2.IMREAD_UNCHANGED,
    )
    stamp = int(
        (tree.root / "timestamp_sequence" / "val" / city / f"{stem}_timestamp.txt").read_text()
    )
    return rgb, disp, stamp


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_sequence_messages_match_the_files(cityscapes_tree, tmp_path: Path, storage: str) -> None:
    bag = convert_cityscapes(
        cityscapes_tree.root, "val", "lindau", 1, tmp_path / "bag", storage=storage, progress=False
    )
    msgs = _by_topic(bag)
    assert {k: len(v) for k, v in msgs.items()} == {
        "/camera/image": 6,
        "/camera/camera_info": 6,
        "/camera/depth_gt": 6,
    }
    cal = cityscapes_tree.calibration["lindau_000001_000000"]
    for frame in range(6):
        rgb, disp, stamp = _files(cityscapes_tree, "lindau", 1, frame)
        t_img, img = msgs["/camera/image"][frame]
        assert t_img == stamp and img.header.stamp.sec * 10**9 + img.header.stamp.nanosec == stamp
        np.testing.assert_array_equal(image_msg_to_rgb(img), rgb)
        _, info = msgs["/camera/camera_info"][frame]
        np.testing.assert_allclose(
            info.k, [cal["fx"], 0, cal["u0"], 0, cal["fy"], cal["v0"], 0, 0, 1]
        )
        np.testing.assert_allclose(
            info.p, [cal["fx"], 0, cal["u0"], 0, 0, cal["fy"], cal["v0"], 0, 0, 0, 1, 0]
        )
        assert (info.width, info.height, info.header.frame_id) == (128, 64, "camera_optical_frame")
        assert info.distortion_model == "plumb_bob" and not np.any(info.d)
        _, gt = msgs["/camera/depth_gt"][frame]
        depth = image_msg_to_numpy(gt)
        want = expected_depth(disp, cal["baseline"], cal["fx"]).astype(np.float32)
        want[48:] = np.nan  # the bottom quarter is the ego-vehicle's hood
        np.testing.assert_allclose(depth, want, rtol=1e-6)
        assert np.array_equal(np.isnan(depth), np.isnan(want))
        assert 0.5 < np.isfinite(depth[:48]).mean() < 1.0  # holes (p = 0 and p = 1) stay NaN


def test_resize_and_compressed(cityscapes_tree, tmp_path: Path) -> None:
    bag = convert_cityscapes(
        cityscapes_tree.root,
        "val",
        "frankfurt",
        0,
        tmp_path / "bag",
        image_format="png",
        size=(64, 32),
        max_frames=2,
        hood_fraction=0.0,
        progress=False,
    )
    msgs = _by_topic(bag)
    assert {k: len(v) for k, v in msgs.items()} == {
        "/camera/image/compressed": 2,
        "/camera/camera_info": 2,
        "/camera/depth_gt": 2,
    }
    cal = cityscapes_tree.calibration["frankfurt_000000_000000"]
    _, info = msgs["/camera/camera_info"][0]
    assert (info.width, info.height) == (64, 32)
    # Halving maps fx -> fx / 2 and cx -> (cx + 0.5) / 2 - 0.5.
    np.testing.assert_allclose(
        info.k[[0, 2, 4, 5]],
        [cal["fx"] / 2, (cal["u0"] + 0.5) / 2 - 0.5, cal["fy"] / 2, (cal["v0"] + 0.5) / 2 - 0.5],
    )
    _, disp, _ = _files(cityscapes_tree, "frankfurt", 0, 0)
    full = expected_depth(disp, cal["baseline"], cal["fx"]).astype(np.float32)
    gt = image_msg_to_numpy(msgs["/camera/depth_gt"][0][1])
    # Nearest sampling with centred pixels picks source pixel 2 * i + 1.
    np.testing.assert_allclose(gt, full[1::2, 1::2], rtol=1e-6)


def test_missing_timestamps_and_disparity(cityscapes_tree, tmp_path: Path) -> None:
    root = tmp_path / "cs"
    shutil.copytree(cityscapes_tree.root, root)
    shutil.rmtree(root / "timestamp_sequence")
    (root / "disparity_sequence/val/frankfurt/frankfurt_000000_000003_disparity.png").unlink()
    bag = convert_cityscapes(root, "val", "frankfurt", 0, tmp_path / "bag", progress=False)
    msgs = _by_topic(bag)
    stamps = [t for t, _ in msgs["/camera/image"]]
    assert stamps == [SYNTHETIC_EPOCH_NS + round(i * 1e9 / 17.0) for i in range(6)]
    gt_stamps = [t for t, _ in msgs["/camera/depth_gt"]]
    assert gt_stamps == [s for i, s in enumerate(stamps) if i != 3]


def test_relative_and_implausible_timestamps(cityscapes_tree, tmp_path: Path) -> None:
    root = tmp_path / "cs"
    shutil.copytree(cityscapes_tree.root, root)
    folder = root / "timestamp_sequence" / "val" / "frankfurt"
    for frame in range(6):  # relative to the first frame, in ns
        name = f"frankfurt_000000_{frame:06d}_timestamp.txt"
        (folder / name).write_text(f"{frame * 58_800_000}")
    bag = convert_cityscapes(root, "val", "frankfurt", 0, tmp_path / "rel", progress=False)
    stamps = [t for t, _ in _by_topic(bag)["/camera/image"]]
    assert stamps == [SYNTHETIC_EPOCH_NS + i * 58_800_000 for i in range(6)]
    for frame in range(6):  # microseconds: steps of 58 "ns" are no camera rate
        (folder / f"frankfurt_000000_{frame:06d}_timestamp.txt").write_text(f"{frame * 58}")
    bag = convert_cityscapes(root, "val", "frankfurt", 0, tmp_path / "us", progress=False)
    stamps = [t for t, _ in _by_topic(bag)["/camera/image"]]
    assert stamps == [SYNTHETIC_EPOCH_NS + round(i * 1e9 / 17.0) for i in range(6)]


def test_enumeration_and_errors(cityscapes_tree, tmp_path: Path) -> None:
    assert cityscapes_sequences(cityscapes_tree.root, "val", "frankfurt") == [0, 1]
    frames = cityscapes_sequence_frames(cityscapes_tree.root, "val", "frankfurt", 1)
    assert [f.frame for f in frames] == list(range(6))
    assert all(f.camera_path.name == "frankfurt_000001_000019_camera.json" for f in frames)
    with pytest.raises(DatasetError, match="lindau"):
        cityscapes_sequence_frames(cityscapes_tree.root, "val", "paris", 0)
    with pytest.raises(DatasetError, match=r"sequences there: \[0, 1\]"):
        cityscapes_sequence_frames(cityscapes_tree.root, "val", "frankfurt", 9)
    with pytest.raises(InputError, match="dataset"):
        convert("kitti", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_synthcity_through_convert(tmp_path: Path) -> None:
    bag = convert(
        "synthcity", tmp_path / "s", seed=3, n_frames=2, width=32, height=16, progress=False
    )
    assert {k: len(v) for k, v in _by_topic(bag).items()} == {
        "/camera/image": 2,
        "/camera/camera_info": 2,
        "/camera/depth_gt": 2,
    }


def test_cli_convert_cityscapes(cityscapes_tree, tmp_path: Path) -> None:
    from cloudypoints_core.cli.main import main

    out = tmp_path / "bag"
    code = main(
        [
            "bag",
            "convert",
            "--dataset",
            "cityscapes",
            "--root",
            str(cityscapes_tree.root),
            "--split",
            "val",
            "--city",
            "lindau",
            "--sequence",
            "0",
            "--out",
            str(out),
            "--storage",
            "sqlite3",
            "--image-format",
            "png",
            "--width",
            "64",
            "--height",
            "32",
            "--frames",
            "3",
            "--no-progress",
        ]
    )
    assert code == 0
    msgs = _by_topic(out)
    assert {k: len(v) for k, v in msgs.items()} == {
        "/camera/image/compressed": 3,
        "/camera/camera_info": 3,
        "/camera/depth_gt": 3,
    }
    assert msgs["/camera/camera_info"][0][1].width == 64
    # Missing options are one clear line and exit code 2, not a traceback.
    assert main(["bag", "convert", "--dataset", "cityscapes", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()
