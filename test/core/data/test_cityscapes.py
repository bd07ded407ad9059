"""Cityscapes reader on a fixture tree written in the real layout, names and formats."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from cityscapes_fixture import (
    ANNOTATED_FRAME,
    LAYOUT,
    NATIVE_CALIBRATIONS,
    FixtureTree,
    expected_depth,
    write_cityscapes_fixture,
)

from cloudypoints_core.data.cityscapes import (
    OFFICIAL_COUNTS,
    CityscapesCamera,
    CityscapesDataset,
    available_splits,
    disparity_to_depth,
    read_png_header,
    read_split_file,
    write_split_file,
)
from cloudypoints_core.errors import DatasetError
from cloudypoints_core.geometry import Intrinsics

REAL_CAMERA = {
    "extrinsic": {
        "baseline": 0.209313,
        "pitch": 0.038,
        "roll": 0.0,
        "x": 1.7,
        "y": 0.1,
        "yaw": -0.0195,
        "z": 1.22,
    },
    "intrinsic": {"fx": 2262.52, "fy": 2265.3017905988554, "u0": 1096.98, "v0": 513.137},
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> FixtureTree:
    """Read-only fixture tree shared by the module (tests that break files copy it first)."""
    return write_cityscapes_fixture(tmp_path_factory.mktemp("cityscapes"))


@pytest.fixture()
def tree_copy(tree: FixtureTree, tmp_path: Path) -> FixtureTree:
    root = tmp_path / "cs"
    shutil.copytree(tree.root, root)
    return FixtureTree(
        root, tree.width, tree.height, tree.keys, tree.sequence_keys, tree.calibration
    )


def _disparity_path(root: Path, split: str, key: str, sequence: bool = False) -> Path:
    city = key.split("_")[0]
    folder = "disparity_sequence" if sequence else "disparity"
    return root / folder / split / city / f"{key}_disparity.png"


# ------------------------------------------------------------------------------ pure parts
def test_disparity_to_depth_hand_values() -> None:
    # p = 0 and p = 1 invalid; p = 257 -> d = 1 px; p = 513 -> d = 2 px; p = 2 -> d = 1/256 px.
    p = np.array([[0, 1, 257], [513, 2, 65535]], dtype=np.uint16)
    depth = disparity_to_depth(p, baseline_m=0.2, fx_px=1000.0)
    assert depth.dtype == np.float32
    assert np.isnan(depth[0, 0]) and np.isnan(depth[0, 1])
    assert depth[0, 2] == pytest.approx(200.0)
    assert depth[1, 0] == pytest.approx(100.0)
    assert depth[1, 1] == pytest.approx(200.0 * 256.0)
    assert depth[1, 2] == pytest.approx(200.0 / (65534 / 256.0), rel=1e-6)


@pytest.mark.parametrize("bad", [np.zeros((2, 2, 3), np.uint16), np.zeros((2, 2), np.float32)])
def test_disparity_to_depth_rejects_non_integer_or_colour(bad: np.ndarray) -> None:
    with pytest.raises(DatasetError, match="2-D integer"):
        disparity_to_depth(bad, 0.2, 1000.0)


def test_camera_from_real_json(tmp_path: Path) -> None:
    path = tmp_path / "x_camera.json"
    path.write_text(json.dumps(REAL_CAMERA))
    cam = CityscapesCamera.from_json(path)
    assert (cam.fx_px, cam.fy_px, cam.u0_px, cam.v0_px) == (
        2262.52,
        2265.3017905988554,
        1096.98,
        513.137,
    )
    assert (cam.baseline_m, cam.height_m, cam.pitch_rad, cam.yaw_rad) == (
        0.209313,
        1.22,
        0.038,
        -0.0195,
    )
    assert cam.intrinsics(2048, 1024) == Intrinsics(
        2262.52, 2265.3017905988554, 1096.98, 513.137, 2048, 1024
    )
    # JSON values for 2048x1024 applied to a half-size copy: exactly Intrinsics.resized.
    half = cam.intrinsics(1024, 512, calibration_size=(2048, 1024))
    assert half == Intrinsics(2262.52, 2265.3017905988554, 1096.98, 513.137, 2048, 1024).resized(
        1024, 512
    )
    assert CityscapesCamera.from_json(cam.to_json_dict()) == cam


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["intrinsic"].pop("fx"), r"missing calibration fields \['intrinsic.fx'\]"),
        (lambda d: d["extrinsic"].update(baseline=0.0), "baseline_m=0.0"),
        (lambda d: d["intrinsic"].update(fy="wide"), "must be numbers"),
        (lambda d: d.pop("extrinsic"), "expected objects 'intrinsic'"),
    ],
)
def test_camera_json_errors_name_the_problem(tmp_path: Path, mutate, message: str) -> None:
    data = json.loads(json.dumps(REAL_CAMERA))
    mutate(data)
    path = tmp_path / "bad_camera.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=message) as info:
        CityscapesCamera.from_json(path)
    assert str(path) in str(info.value)


def test_camera_json_not_json(tmp_path: Path) -> None:
    path = tmp_path / "broken_camera.json"
    path.write_text("{not json")
    with pytest.raises(DatasetError, match="not readable JSON"):
        CityscapesCamera.from_json(path)


# ------------------------------------------------------------------------------ the reader
def test_counts_cities_and_keys(tree: FixtureTree) -> None:
    assert available_splits(tree.root) == ["train", "val", "test"]
    assert available_splits(tree.root, sequence=True) == ["train"]
    for split, cities in LAYOUT.items():
        ds = CityscapesDataset(tree.root, split)
        assert len(ds) == 4
        assert ds.cities == sorted(cities)
        assert ds.keys == sorted(tree.keys[split])
        assert all(k.endswith(f"_{ANNOTATED_FRAME:06d}") for k in ds.keys)


def test_sample_schema_and_depth_from_own_calibration(tree: FixtureTree) -> None:
    ds = CityscapesDataset(tree.root, "train")
    seen_fx = set()
    for index in range(len(ds)):
        sample = ds[index]
        key = sample["key"]
        cal = tree.calibration[key]
        seen_fx.add(round(cal["fx"], 6))
        assert sample["rgb"].dtype == np.uint8 and sample["rgb"].shape == (128, 256, 3)
        assert sample["depth_m"].dtype == np.float32 and sample["depth_m"].shape == (128, 256)
        assert sample["valid_mask"].dtype == bool
        np.testing.assert_array_equal(sample["valid_mask"], np.isfinite(sample["depth_m"]))
        assert sample["intrinsics"] == Intrinsics(
            cal["fx"], cal["fy"], cal["u0"], cal["v0"], 256, 128
        )
        assert sample["camera"]["baseline_m"] == cal["baseline"]
        assert sample["camera"]["height_m"] == cal["z"]
        assert sample["camera"]["pitch_rad"] == cal["pitch"]
        assert sample["split"] == "train" and sample["snippet_index"] == ANNOTATED_FRAME
        assert "speed" in sample["vehicle"]
        # Independent decoding of the stored PNG with this frame's own baseline and fx.
        raw = cv2.imread(str(_disparity_path(tree.root, "train", key)), cv2.IMREAD_UNCHANGED)
        want = expected_depth(raw, cal["baseline"], cal["fx"])
        want[96:] = np.nan  # hood: bottom quarter of 128 rows
        np.testing.assert_allclose(sample["depth_m"], want, rtol=2e-6, equal_nan=True)
        assert np.isnan(sample["depth_m"][96:]).all()
        # Both kinds of holes (p = 0 and p = 1) are invalid.
        top = raw[:96]
        assert (top <= 1).any() and not sample["valid_mask"][:96][top <= 1].any()
        assert sample["valid_mask"][:96][top > 1].all()
        # The RGB is the stored image, in RGB order.
        bgr = cv2.imread(
            str(tree.root / "leftImg8bit" / "train" / sample["city"] / f"{key}_leftImg8bit.png")
        )
        np.testing.assert_array_equal(sample["rgb"], bgr[:, :, ::-1])
    assert len(seen_fx) == 2  # two cities, two calibrations


def test_hood_none_and_crop(tree: FixtureTree) -> None:
    masked = CityscapesDataset(tree.root, "val")[0]
    full = CityscapesDataset(tree.root, "val", hood="none")[0]
    cropped = CityscapesDataset(tree.root, "val", hood="crop")[0]
    assert np.isfinite(full["depth_m"][96:]).any()
    np.testing.assert_array_equal(full["depth_m"][:96], masked["depth_m"][:96])
    assert cropped["depth_m"].shape == (96, 256) and cropped["rgb"].shape == (96, 256, 3)
    np.testing.assert_array_equal(cropped["depth_m"], full["depth_m"][:96])
    assert cropped["intrinsics"] == full["intrinsics"].cropped(0, 0, 256, 96)


def test_resize_keeps_validity_exact_and_intrinsics(tree: FixtureTree) -> None:
    native = CityscapesDataset(tree.root, "test")[1]
    small = CityscapesDataset(tree.root, "test", size=(128, 64))[1]
    assert small["rgb"].shape == (64, 128, 3) and small["depth_m"].shape == (64, 128)
    assert small["intrinsics"] == native["intrinsics"].resized(128, 64)
    # Nearest with centred pixels: output (r, c) is source (2r + 1, 2c + 1) for a factor of 2.
    want = native["depth_m"][1::2, 1::2]
    np.testing.assert_array_equal(small["depth_m"], want)
    np.testing.assert_array_equal(small["valid_mask"], np.isfinite(want))
    enlarged = CityscapesDataset(tree.root, "test", size=(512, 256))[1]
    np.testing.assert_array_equal(enlarged["depth_m"][::2, ::2], native["depth_m"])


def test_max_depth_marks_far_pixels_invalid(tree: FixtureTree) -> None:
    capped = CityscapesDataset(tree.root, "train", max_depth_m=20.0)[0]
    free = CityscapesDataset(tree.root, "train")[0]
    assert np.nanmax(free["depth_m"]) > 20.0
    assert np.nanmax(capped["depth_m"]) <= 20.0
    far = free["depth_m"] > 20.0
    assert not capped["valid_mask"][far].any()


def test_sequence_frames(tree: FixtureTree) -> None:
    ds = CityscapesDataset(tree.root, "train", sequence=True)
    assert len(ds) == 4 * 30
    assert ds.keys == sorted(tree.sequence_keys["train"])
    first, annotated = ds[0], ds[19]
    assert first["snippet_index"] == 0 and annotated["snippet_index"] == 19
    assert annotated["key"] == "aachen_000000_000019"
    # Calibration of a snippet comes from its annotated frame's camera file.
    cal = tree.calibration["aachen_000000_000019"]
    assert first["intrinsics"].fx_px == pytest.approx(cal["fx"])
    assert ds.frames[0].camera_path.name == "aachen_000000_000019_camera.json"
    # 17 Hz timestamps from timestamp_sequence/.
    assert (ds[1]["stamp_ns"] - first["stamp_ns"]) == pytest.approx(1e9 / 17.0, abs=1)
    # Real sequences hold many annotated frames (e.g. frankfurt_000000_000294, ..._000576):
    # a snippet frame belongs to the nearest one, index 19 being the annotated frame.
    assert ds._camera_frame_for(275, [294, 576]) == (294, 0)
    assert ds._camera_frame_for(304, [294, 576]) == (294, 29)
    assert ds._camera_frame_for(557, [294, 576]) == (576, 0)
    assert ds._camera_frame_for(400, [294, 576]) == (294, None)
    raw = cv2.imread(
        str(_disparity_path(tree.root, "train", first["key"], sequence=True)), cv2.IMREAD_UNCHANGED
    )
    want = expected_depth(raw, cal["baseline"], cal["fx"])
    want[96:] = np.nan
    np.testing.assert_allclose(first["depth_m"], want, rtol=2e-6, equal_nan=True)


def test_out_of_range_index(tree: FixtureTree) -> None:
    ds = CityscapesDataset(tree.root, "val")
    assert ds[-1]["key"] == ds.keys[-1]
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_limit_spreads_frames(tree: FixtureTree) -> None:
    ds = CityscapesDataset(tree.root, "train", sequence=True, limit=4)
    assert len(ds) == 4
    assert ds.keys[0] == "aachen_000000_000000" and ds.keys[-1] == "bochum_000001_000029"


# --------------------------------------------------------------------------------- errors
def test_wrong_root_says_what_was_expected_and_found(tree: FixtureTree, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist") as info:
        CityscapesDataset(tmp_path / "nowhere", "train")
    assert "leftImg8bit_trainvaltest.zip" in str(info.value)
    (tmp_path / "stuff").mkdir()
    (tmp_path / "README").write_text("x")
    with pytest.raises(DatasetError) as info:
        CityscapesDataset(tmp_path, "train")
    text = str(info.value)
    assert "leftImg8bit/train" in text and "disparity/train" in text
    assert "README" in text and "stuff" in text  # what exists
    with pytest.raises(DatasetError, match="pass its parent"):
        CityscapesDataset(tree.root / "leftImg8bit", "train")
    with pytest.raises(DatasetError, match="sequence"):
        CityscapesDataset(tree.root, "val", sequence=True)
    with pytest.raises(DatasetError, match="split must be one of"):
        CityscapesDataset(tree.root, "training")


def test_missing_pairs_fail_early_with_list_or_skip(tree_copy: FixtureTree) -> None:
    root = tree_copy.root
    gone = [_disparity_path(root, "train", k) for k in tree_copy.keys["train"][:2]]
    for path in gone:
        path.unlink()
    (root / "camera" / "train" / "bochum" / "bochum_000001_000019_camera.json").unlink()
    with pytest.raises(DatasetError) as info:
        CityscapesDataset(root, "train")
    text = str(info.value)
    assert "3 bad frame(s)" in text and "bad_files='skip'" in text
    assert all(str(path) in text for path in gone)
    assert "bochum_000001_000019_camera.json" in text
    ds = CityscapesDataset(root, "train", bad_files="skip")
    assert ds.keys == ["bochum_000000_000019"]
    assert len(ds.bad_files) == 3
    assert ds[0]["key"] == "bochum_000000_000019"


def test_unreadable_files_found_by_scan(tree_copy: FixtureTree) -> None:
    root = tree_copy.root
    keys = tree_copy.keys["val"]
    _disparity_path(root, "val", keys[0]).write_bytes(b"")  # empty file
    image = root / "leftImg8bit" / "val" / "frankfurt" / f"{keys[1]}_leftImg8bit.png"
    image.write_bytes(b"GIF89a not a png at all, but long enough to have a header....")
    # An 8-bit disparity is the wrong format (Cityscapes disparity is 16-bit).
    cv2.imwrite(str(_disparity_path(root, "val", keys[2])), np.zeros((128, 256), np.uint8))
    (root / "camera" / "val" / "lindau" / f"{keys[3]}_camera.json").write_text("{")
    with pytest.raises(DatasetError) as info:
        CityscapesDataset(root, "val")
    text = str(info.value)
    assert "4 bad frame(s)" in text
    assert "not a PNG" in text and "16-bit grayscale" in text and "not readable JSON" in text
    # scan="names" only pairs files: the bad PNGs are then caught when read, naming the file.
    ds = CityscapesDataset(root, "val", scan="names", bad_files="skip")
    assert len(ds) == 3 and len(ds.bad_files) == 1
    with pytest.raises(DatasetError, match=str(_disparity_path(root, "val", keys[0]))):
        ds[ds.keys.index(keys[0])]
    assert {b.path for b in ds.check()} == {
        _disparity_path(root, "val", keys[0]),
        image,
        _disparity_path(root, "val", keys[2]),
    }


def test_truncated_png_body_raises_named_error_and_check_finds_it(tree_copy: FixtureTree) -> None:
    root = tree_copy.root
    key = tree_copy.keys["test"][0]
    path = _disparity_path(root, "test", key)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # header intact, body cut
    ds = CityscapesDataset(root, "test")  # the header scan cannot see it
    assert read_png_header(path)[:2] == (256, 128)
    with pytest.raises(DatasetError, match=key):
        ds[ds.keys.index(key)]
    assert [b.key for b in ds.check()] == [key]
    ds[(ds.keys.index(key) + 1) % len(ds)]  # the other frames still load


def test_calibration_for_other_resolution_is_caught(tree_copy: FixtureTree) -> None:
    root = tree_copy.root
    path = root / "camera" / "test" / "berlin" / "berlin_000000_000019_camera.json"
    path.write_text(json.dumps(REAL_CAMERA))  # 2048x1024 values beside 256x128 images
    with pytest.raises(DatasetError, match="principal point") as info:
        CityscapesDataset(root, "test")
    assert str(path) in str(info.value) and "calibration_size" in str(info.value)


def test_calibration_size_scales_native_json(tmp_path: Path) -> None:
    root = tmp_path / "cs"
    write_cityscapes_fixture(root, layout={"test": ("berlin",)}, sequences=(0,))
    cam = root / "camera" / "test" / "berlin" / "berlin_000000_000019_camera.json"
    native = NATIVE_CALIBRATIONS["berlin"]
    cam.write_text(
        json.dumps(
            {
                "extrinsic": {"baseline": native["baseline"], "pitch": 0.0, "z": 1.3},
                "intrinsic": {k: native[k] for k in ("fx", "fy", "u0", "v0")},
            }
        )
    )
    ds = CityscapesDataset(root, "test", calibration_size=(2048, 1024))
    want = Intrinsics(native["fx"], native["fy"], native["u0"], native["v0"], 2048, 1024).resized(
        256, 128
    )
    assert ds[0]["intrinsics"] == want


# ------------------------------------------------------------------------------ split files
def test_bundled_test_split_pins_the_folder_and_count() -> None:
    spec = read_split_file("cityscapes_test_1525")
    assert spec.split == "test" and spec.expect_count == OFFICIAL_COUNTS["test"] == 1525
    assert spec.keys == ()


def test_split_file_pins_a_subset(tree: FixtureTree, tmp_path: Path) -> None:
    keys = tree.keys["train"][1:3]
    path = write_split_file(
        tmp_path / "mine.txt", keys, split="train", expect_count=2, comment="two frames"
    )
    ds = CityscapesDataset(tree.root, "train", split_file=path)
    assert ds.keys == sorted(keys) and not ds.warnings
    # A count that does not match is reported, not fatal.
    full = CityscapesDataset(tree.root, "test", split_file="cityscapes_test_1525")
    assert len(full) == 4 and "expects 1525 frames but 4" in full.warnings[0]
    with pytest.raises(DatasetError, match="for split 'test'"):
        CityscapesDataset(tree.root, "train", split_file="cityscapes_test_1525")
    missing = tmp_path / "missing.txt"
    missing.write_text("split: train\naachen_000000_000019\naachen_000042_000019\n")
    with pytest.raises(DatasetError, match="aachen_000042_000019"):
        CityscapesDataset(tree.root, "train", split_file=missing)
    bad = tmp_path / "bad.txt"
    bad.write_text("colour: blue\n")
    with pytest.raises(DatasetError, match="unknown directive 'colour'"):
        read_split_file(bad)
    with pytest.raises(DatasetError, match="bundled"):
        read_split_file(tmp_path / "nope.txt")


# ------------------------------------------------------------------- trainer registry factory
class _Data:
    """The DataConfig fields the factory reads."""

    input_width = 64
    input_height = 32


def test_training_factory_options_and_errors(
    tree: FixtureTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cloudypoints_core.data.cityscapes import SkipUnreadable, training_dataset
    from cloudypoints_core.errors import ConfigError

    ds = training_dataset({"root": str(tree.root)}, split="val", data=_Data(), cache_dir=tmp_path)
    assert isinstance(ds, SkipUnreadable) and len(ds) == 4
    sample = ds[0]
    assert sample["key"] == "frankfurt_000000_000019" and sample["depth_m"].shape == (128, 256)
    sized = training_dataset(
        {"root": str(tree.root), "folder": "test", "size": [128, 64], "hood": "crop"},
        split="val",
        data=_Data(),
        cache_dir=tmp_path,
    )
    assert sized[0]["split"] == "test" and sized[0]["depth_m"].shape == (64, 128)
    with pytest.raises(ConfigError, match="unknown Cityscapes options"):
        training_dataset(
            {"root": str(tree.root), "colour": 1}, split="train", data=_Data(), cache_dir=tmp_path
        )
    monkeypatch.delenv("CITYSCAPES_DATASET", raising=False)
    with pytest.raises(ConfigError, match="CITYSCAPES_DATASET"):
        training_dataset({}, split="train", data=_Data(), cache_dir=tmp_path)
    monkeypatch.setenv("CITYSCAPES_DATASET", str(tree.root))
    assert len(training_dataset({}, split="train", data=_Data(), cache_dir=tmp_path)) == 4


def test_training_factory_cache_equals_direct_read(tree: FixtureTree, tmp_path: Path) -> None:
    from cloudypoints_core.data.cityscapes import training_dataset

    cached = training_dataset(
        {"root": str(tree.root), "cache": True}, split="train", data=_Data(), cache_dir=tmp_path
    )
    direct = CityscapesDataset(tree.root, "train", size=(64, 32))
    assert len(cached) == len(direct) == 4
    for k in range(4):
        a, b = cached[k], direct[k]
        np.testing.assert_array_equal(a["rgb"], b["rgb"])
        np.testing.assert_array_equal(a["depth_m"], b["depth_m"])
        assert a["intrinsics"] == b["intrinsics"]
    assert len(list((tmp_path / "cityscapes").iterdir())) == 1


def test_skip_unreadable_serves_the_next_frame(tree_copy: FixtureTree) -> None:
    from cloudypoints_core.data.cityscapes import SkipUnreadable

    key = tree_copy.keys["train"][1]
    path = _disparity_path(tree_copy.root, "train", key)
    path.write_bytes(path.read_bytes()[:200])
    view = SkipUnreadable(CityscapesDataset(tree_copy.root, "train"))
    bad = view.dataset.keys.index(key)
    assert view[bad]["key"] == view.dataset.keys[bad + 1]
    assert list(view.unreadable) == [bad]
    for other in range(len(view)):
        path = _disparity_path(tree_copy.root, "train", view.dataset.keys[other])
        path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DatasetError, match="consecutive frames"):
        view[0]


def test_registered_in_the_trainer(tree: FixtureTree, tmp_path: Path) -> None:
    from cloudypoints_core.training import config, data

    assert "cityscapes" in data.list_datasets()
    options = {"root": str(tree.root), "limit": 2}
    cfg = config.DataConfig(
        dataset="cityscapes", input_width=64, input_height=32, train=options, val=options
    )
    ds = data.create_dataset("cityscapes", options, split="val", data=cfg, cache_dir=tmp_path)
    assert len(ds) == 2 and ds[0]["depth_m"].dtype == np.float32
