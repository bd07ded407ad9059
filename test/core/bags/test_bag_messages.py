"""rosbags sensor_msgs built from numpy: fields, CDR round trips, CameraInfo matrices."""

from __future__ import annotations

import numpy as np
import pytest

from cloudypoints_core.bags import messages as m
from cloudypoints_core.bags.typestore import get_typestore, typestore_name
from cloudypoints_core.errors import EncodingError, InputError
from cloudypoints_core.geometry import Intrinsics
from cloudypoints_core.image import compressed_to_rgb, image_msg_to_numpy, image_msg_to_rgb

INTR = Intrinsics(120.0, 118.0, 40.25, 19.75, 80, 40)


def test_typestore_is_kilted() -> None:
    assert typestore_name() == "ros2_kilted"
    assert "sensor_msgs/msg/CameraInfo" in get_typestore().types


@pytest.mark.parametrize("stamp_ns", [0, 1, 999_999_999, 1_000_000_000, 1_471_808_610_058_823_529])
def test_stamp_round_trip(stamp_ns: int) -> None:
    t = m.stamp_message(stamp_ns)
    assert t.sec == stamp_ns // 10**9 and t.nanosec == stamp_ns % 10**9
    assert m.stamp_to_ns(t) == stamp_ns


def test_negative_stamp_is_refused() -> None:
    with pytest.raises(InputError, match="-5"):
        m.stamp_message(-5)


def test_rgb_image_survives_cdr(rng: np.random.Generator) -> None:
    rgb = rng.integers(0, 256, (40, 80, 3), dtype=np.uint8)
    msg = m.image_message(rgb, "rgb8", 123_456_789_012, "cam")
    back = m.deserialize(m.serialize(msg), "sensor_msgs/msg/Image")
    assert (back.height, back.width, back.encoding, back.step) == (40, 80, "rgb8", 240)
    assert back.header.frame_id == "cam"
    assert m.stamp_to_ns(back.header.stamp) == 123_456_789_012
    np.testing.assert_array_equal(image_msg_to_rgb(back), rgb)


def test_depth_message_marks_invalid_as_nan() -> None:
    depth = np.array([[1.5, np.inf, -1.0], [0.0, np.nan, 80.25]], dtype=np.float32)
    back = m.deserialize(m.serialize(m.depth_message(depth, 5)), "sensor_msgs/msg/Image")
    assert back.encoding == "32FC1" and back.step == 12 and back.is_bigendian == 0
    got = image_msg_to_numpy(back)
    expected = np.array([[1.5, np.nan, np.nan], [np.nan, np.nan, 80.25]], dtype=np.float32)
    np.testing.assert_array_equal(got, expected)  # NaN positions must match too


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_compressed_image(fmt: str, rng: np.random.Generator) -> None:
    # Smooth content so JPEG's error stays small and the comparison means something.
    yy, xx = np.mgrid[0:40, 0:80]
    rgb = np.stack([xx * 3, yy * 6, (xx + yy) * 2], axis=-1).astype(np.uint8)
    msg = m.compressed_image_message(rgb, fmt, 7)
    assert msg.format == f"rgb8; {fmt} compressed bgr8"
    back = m.deserialize(m.serialize(msg), "sensor_msgs/msg/CompressedImage")
    decoded = compressed_to_rgb(back)
    if fmt == "png":
        np.testing.assert_array_equal(decoded, rgb)
    else:
        assert np.abs(decoded.astype(int) - rgb).mean() < 3.0


def test_compressed_refuses_unknown_format() -> None:
    with pytest.raises(EncodingError, match="tiff"):
        m.compressed_image_message(np.zeros((2, 2, 3), np.uint8), "tiff", 0)


def test_camera_info_matrices() -> None:
    msg = m.camera_info_message(INTR, 42, "cam")
    back = m.deserialize(m.serialize(msg), "sensor_msgs/msg/CameraInfo")
    assert (back.width, back.height, back.distortion_model) == (80, 40, "plumb_bob")
    np.testing.assert_array_equal(back.k, [120.0, 0, 40.25, 0, 118.0, 19.75, 0, 0, 1])
    np.testing.assert_array_equal(back.p, [120.0, 0, 40.25, 0, 0, 118.0, 19.75, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(back.r, np.eye(3).ravel())
    np.testing.assert_array_equal(back.d, np.zeros(5))
    assert m.intrinsics_from_camera_info(back) == INTR


def test_camera_info_takes_an_explicit_p() -> None:
    p = np.array([[120.0, 0, 40.25, -25.1], [0, 118.0, 19.75, 0], [0, 0, 1, 0]])
    back = m.deserialize(
        m.serialize(m.camera_info_message(INTR, 0, p=p)), "sensor_msgs/msg/CameraInfo"
    )
    np.testing.assert_array_equal(back.p, p.ravel())
    with pytest.raises(InputError, match="12"):
        m.camera_info_message(INTR, 0, p=np.zeros(9))
