"""Message <-> core conversions of the node: fast-path data, layouts, round trips (no DDS)."""

from __future__ import annotations

import array
import math

import numpy as np
import pytest

pytest.importorskip("sensor_msgs", reason="needs the ROS message packages")

from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from cloudypoints_core.errors import EncodingError, InputError, IntrinsicsError  # noqa: E402
from cloudypoints_core.geometry import Intrinsics  # noqa: E402
from cloudypoints_core.pointcloud import pack_points, unpack_points  # noqa: E402
from cloudypoints_ros import conversions as conv  # noqa: E402


def _header(stamp_ns: int = 1_700_000_000_123_456_789) -> Header:
    h = Header()
    h.stamp.sec, h.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    h.frame_id = "camera_optical_frame"
    return h


def test_to_byte_array_is_one_copy_of_the_bytes() -> None:
    depth = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = conv.to_byte_array(depth)
    assert isinstance(out, array.array) and out.typecode == "B"
    assert bytes(out) == depth.tobytes()
    assert (
        conv.to_byte_array(depth[:, ::2]).tobytes()
        == np.ascontiguousarray(depth[:, ::2]).tobytes()
    )
    same = array.array("B", b"abc")
    assert conv.to_byte_array(same) is same


def test_depth_image_message_uses_the_fast_path_and_round_trips() -> None:
    depth = np.array([[1.5, np.nan, 3.0], [4.0, 5.25, np.nan]], dtype=np.float32)
    msg = conv.depth_image_msg(depth, _header())
    assert isinstance(msg.data, array.array)  # stored as is, never rebuilt element by element
    assert (msg.height, msg.width, msg.encoding, msg.step) == (2, 3, "32FC1", 12)
    assert msg.header.frame_id == "camera_optical_frame"
    np.testing.assert_array_equal(conv.image_msg_to_depth(msg), depth)
    with pytest.raises(InputError, match="float32"):
        conv.depth_image_msg(depth.astype(np.float64), _header())


def test_millimetre_depth_images_become_metres_with_nan_for_zero() -> None:
    mm = np.array([[0, 1500], [65535, 20]], dtype=np.uint16)
    msg = Image(height=2, width=2, encoding="16UC1", step=4, is_bigendian=0, data=mm.tobytes())
    np.testing.assert_allclose(
        conv.image_msg_to_depth(msg), [[np.nan, 1.5], [65.535, 0.02]], rtol=1e-6
    )
    with pytest.raises(EncodingError):
        conv.image_msg_to_depth(Image(height=1, width=1, encoding="rgb8", step=3, data=b"abc"))


def test_camera_info_round_trip_and_refusals() -> None:
    intr = Intrinsics(500.0, 510.0, 320.5, 240.25, 640, 480)
    msg = conv.camera_info_msg(intr, _header())
    assert list(msg.p) == [500.0, 0.0, 320.5, 0.0, 0.0, 510.0, 240.25, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert conv.camera_info_to_intrinsics(msg) == intr
    for k0 in (0.0, math.nan, math.inf):
        bad = conv.camera_info_msg(intr, _header())
        k = list(bad.k)
        k[0] = k0
        bad.k, bad.p = k, [0.0] * 12
        with pytest.raises(IntrinsicsError):
            conv.camera_info_to_intrinsics(bad)
    empty = CameraInfo()
    with pytest.raises(IntrinsicsError, match="size"):
        conv.camera_info_to_intrinsics(empty)


def test_camera_info_binning_and_roi_of_a_real_message() -> None:
    # REP 104 on the rclpy message itself: the ROI crops, binning 2 halves, K stays full-size.
    full = Intrinsics(500.0, 510.0, 320.5, 240.25, 640, 480)
    msg = conv.camera_info_msg(full, _header())
    msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height = 100, 40, 400, 300
    msg.binning_x = msg.binning_y = 2
    sent = conv.camera_info_to_intrinsics(msg)
    assert sent == full.cropped(100, 40, 400, 300).resized(200, 150)
    assert (sent.fx_px, sent.cx_px) == (250.0, (320.5 - 100 + 0.5) / 2 - 0.5)


def test_cloud_message_carries_the_packed_layout_and_reads_back() -> None:
    rng = np.random.default_rng(1)
    xyz = rng.normal(size=(4, 5, 3)).astype(np.float32)
    xyz[1, 2] = np.nan
    rgb = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    packed = pack_points(xyz, rgb)
    msg = conv.cloud_msg(packed, _header())
    assert isinstance(msg.data, array.array) and len(msg.data) == 4 * 5 * 16
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (4, 5, 16, 80)
    assert [(f.name, f.offset) for f in msg.fields] == [("x", 0), ("y", 4), ("z", 8), ("rgb", 12)]
    assert not msg.is_dense
    back_xyz, back_rgb = unpack_points(conv.packed_cloud_from_msg(msg))
    np.testing.assert_array_equal(back_xyz, xyz)
    np.testing.assert_array_equal(back_rgb[~np.isnan(xyz).any(-1)], rgb[~np.isnan(xyz).any(-1)])


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: Image(height=0, width=0, encoding="rgb8", step=0), "empty_image"),
        (
            lambda: Image(height=2, width=2, encoding="nv12", step=6, data=b"x" * 12),
            "bad_encoding",
        ),
        (lambda: Image(height=2, width=2, encoding="rgb8", step=6, data=b"x" * 11), "short_data"),
        (lambda: Image(height=2, width=2, encoding="rgb8", step=5, data=b"x" * 12), "short_data"),
        (lambda: CompressedImage(format="jpeg", data=b""), "empty_image"),
        (lambda: CompressedImage(format="jpeg", data=b"\xff\xd8junk"), "bad_compressed_data"),
    ],
)
def test_bad_images_are_refused_and_classified(make: object, reason: str) -> None:
    msg = make()  # type: ignore[operator]
    with pytest.raises(InputError) as info:
        conv.msg_to_rgb(msg)
    assert conv.classify_image_error(msg, info.value) == reason


def test_header_copy_is_a_new_object_with_the_same_stamp_and_frame() -> None:
    h = _header()
    c = conv.copy_header(h)
    assert c is not h and c == h
    assert conv.stamp_to_ns(c.stamp) == 1_700_000_000_123_456_789


# ---------------------------------------------------------------------------- raw images
@pytest.mark.parametrize(
    ("encoding", "pixels"),
    [
        ("rgb8", np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)),
        ("mono16", np.arange(3 * 5, dtype=np.uint16).reshape(3, 5) * 1000),
        ("bgra8", np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)),
    ],
)
def test_image_from_cdr_reads_what_rclpy_serialized(encoding: str, pixels: np.ndarray) -> None:
    from rclpy.serialization import serialize_message

    msg = conv.image_msg(pixels, encoding, _header())
    msg.header.frame_id = "cam_é"  # UTF-8 and an odd length: the next fields realign
    raw = serialize_message(msg)
    got = conv.image_from_cdr(raw)
    assert isinstance(got, conv.RawImage)
    assert (got.height, got.width, got.encoding, got.step, got.is_bigendian) == (
        msg.height,
        msg.width,
        msg.encoding,
        msg.step,
        msg.is_bigendian,
    )
    assert conv.stamp_to_ns(got.header.stamp) == conv.stamp_to_ns(msg.header.stamp)
    assert got.header.frame_id == "cam_é"
    assert np.shares_memory(got.data, np.frombuffer(raw, np.uint8))  # no copy of the pixels
    assert got.data.tobytes() == bytes(msg.data)
    if encoding != "mono16":
        np.testing.assert_array_equal(conv.msg_to_rgb(got), conv.msg_to_rgb(msg))


def _cdr_be_image(height: int, width: int, encoding: str, frame: str, data: bytes) -> bytes:
    """A big-endian XCDR1 sensor_msgs/Image written by hand (rclpy writes little-endian)."""
    import struct

    out = bytearray(b"\x00\x00\x00\x00")

    def pad() -> None:
        out.extend(b"\x00" * (-(len(out) - 4) % 4))

    def string(text: str) -> None:
        raw = text.encode() + b"\x00"
        pad()
        out.extend(struct.pack(">I", len(raw)) + raw)

    out.extend(struct.pack(">iI", 7, 9))
    string(frame)
    pad()
    out.extend(struct.pack(">II", height, width))
    string(encoding)
    out.extend(b"\x01")  # is_bigendian
    pad()
    out.extend(struct.pack(">I", width * 2))
    pad()
    out.extend(struct.pack(">I", len(data)) + data)
    return bytes(out)


def test_image_from_cdr_big_endian_and_fallbacks() -> None:
    from rclpy.serialization import serialize_message

    values = np.array([[1, 258], [65535, 4096]], dtype=">u2")
    got = conv.image_from_cdr(_cdr_be_image(2, 2, "mono16", "ab", values.tobytes()))
    assert isinstance(got, conv.RawImage)
    assert conv.stamp_to_ns(got.header.stamp) == 7 * 1_000_000_000 + 9
    assert (got.header.frame_id, got.encoding, got.is_bigendian, got.step) == (
        "ab",
        "mono16",
        1,
        4,
    )
    from cloudypoints_core.image import image_msg_to_numpy

    np.testing.assert_array_equal(image_msg_to_numpy(got), values.astype(np.uint16))
    # An encapsulation this reader does not parse goes through rclpy instead.
    msg = conv.image_msg(np.zeros((2, 3, 3), np.uint8), "rgb8", _header())
    raw = bytearray(serialize_message(msg))
    assert isinstance(conv.image_from_cdr(bytes(raw)), conv.RawImage)
    raw[1] = 0x03  # PL_CDR_LE: parameter lists, not plain
    fallback = conv.image_from_cdr(bytes(raw))
    assert isinstance(fallback, Image)  # what rclpy makes of it, whatever that is


def test_messages_keep_the_array_without_a_second_copy() -> None:
    arr = conv.to_byte_array(np.zeros(12, np.uint8))
    for msg_type, kw in ((Image, conv._IMAGE_KW), (conv.PointCloud2, conv._CLOUD_KW)):
        msg = msg_type(**kw)
        msg.data = arr
        assert msg.data is arr


# ------------------------------------------------------------------------------ serialized output
def _serialize(msg: object) -> bytes:
    from rclpy.serialization import serialize_message

    return bytes(serialize_message(msg))


def _pad_free(blob: bytes, msg_type: type) -> object:
    from rclpy.serialization import deserialize_message

    return deserialize_message(blob, msg_type)


@pytest.mark.parametrize(
    ("encoding", "pixels"),
    [
        ("32FC1", np.array([[1.5, np.nan, 3.25], [0.5, np.inf, 80.0]], dtype=np.float32)),
        ("rgb8", np.arange(2 * 5 * 3, dtype=np.uint8).reshape(2, 5, 3)),
        ("mono16", np.array([[1, 65535, 7]], dtype=np.uint16)),
    ],
)
def test_serialized_images_read_back_as_the_messages_they_stand_for(
    encoding: str, pixels: np.ndarray
) -> None:
    header = _header()
    header.frame_id = "cam_é/optical"  # UTF-8 and an odd length: padding after the string
    blob = conv.serialized_image_msg(pixels, encoding, header)
    assert isinstance(blob, bytes)
    expected = conv.image_msg(pixels, encoding, header)
    got = _pad_free(blob, Image)
    assert got == expected
    # Same size as rclpy's own serialisation (padding bytes may differ: rclpy leaves them
    # uninitialised), and the same bytes wherever rclpy's are defined.
    reference = _serialize(expected)
    assert len(blob) == len(reference)
    assert blob[-pixels.nbytes :] == pixels.tobytes()
    if encoding == "32FC1":
        assert conv.serialized_depth_image(pixels, header) == blob


def test_serialized_depth_image_refuses_what_depth_image_msg_refuses() -> None:
    with pytest.raises(InputError, match="float32"):
        conv.serialized_depth_image(np.zeros((2, 2), dtype=np.float64), _header())
    with pytest.raises(InputError):
        conv.serialized_image_msg(np.zeros((0, 3), dtype=np.float32), "32FC1", _header())


@pytest.mark.parametrize("organised", [True, False])
@pytest.mark.parametrize("coloured", [True, False])
def test_cloud_writer_gives_the_bytes_of_the_cloud_message(
    organised: bool, coloured: bool
) -> None:
    from sensor_msgs.msg import PointCloud2

    from cloudypoints_core.pointcloud import XYZ_FIELDS, XYZRGB_FIELDS, backproject_packed

    intr = Intrinsics(fx_px=4.0, fy_px=4.0, cx_px=2.5, cy_px=1.5, width=6, height=4)
    depth = np.linspace(1.0, 9.0, 24, dtype=np.float32).reshape(4, 6)
    depth[0, 1] = np.nan
    depth[2, 3] = 90.0  # beyond max_range_m
    rgb = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3) if coloured else None
    header = _header()
    writer = conv.CloudWriter(header, XYZRGB_FIELDS if coloured else XYZ_FIELDS)
    kwargs = {"max_range_m": 80.0, "organised": organised}
    packed = backproject_packed(depth, intr, rgb, out=writer.allocate, **kwargs)
    blob = writer.finish(packed)
    reference = conv.cloud_msg(backproject_packed(depth, intr, rgb, **kwargs), header)
    got = _pad_free(blob, PointCloud2)
    assert got.header == reference.header
    for name in ("height", "width", "point_step", "row_step", "is_dense", "is_bigendian"):
        assert getattr(got, name) == getattr(reference, name), name
    assert [(f.name, f.offset, f.datatype, f.count) for f in got.fields] == [
        (f.name, f.offset, f.datatype, f.count) for f in reference.fields
    ]
    # NaN points compare by bytes: the packed data must be identical.
    assert bytes(got.data) == bytes(reference.data)
    assert got.width * got.height == (24 if organised else 22)
    assert len(blob) == len(_serialize(reference))


@pytest.mark.parametrize("organised", [True, False])
def test_cloud_writer_with_no_valid_point(organised: bool) -> None:
    """A frame whose depth is all invalid (all sky) still gives a message: empty when
    unorganised, all NaN points when organised."""
    from sensor_msgs.msg import PointCloud2

    from cloudypoints_core.pointcloud import XYZRGB_FIELDS, backproject_packed

    intr = Intrinsics(fx_px=4.0, fy_px=4.0, cx_px=1.5, cy_px=1.5, width=4, height=4)
    depth = np.full((4, 4), np.nan, dtype=np.float32)
    writer = conv.CloudWriter(_header(), XYZRGB_FIELDS)
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    packed = backproject_packed(depth, intr, rgb, organised=organised, out=writer.allocate)
    got = _pad_free(writer.finish(packed), PointCloud2)
    assert got.width * got.height == (16 if organised else 0)
    assert len(got.data) == 16 * got.width * got.height
    assert got.is_dense == (not organised)


def test_cloud_writer_refuses_misuse() -> None:
    from cloudypoints_core.pointcloud import XYZ_FIELDS, XYZRGB_FIELDS, pack_points

    xyz = np.ones((3, 3), dtype=np.float32)
    with pytest.raises(InputError, match="before allocate"):
        conv.CloudWriter(_header(), XYZ_FIELDS).finish(pack_points(xyz))
    writer = conv.CloudWriter(_header(), XYZ_FIELDS)
    writer.allocate(48)
    with pytest.raises(InputError, match="twice"):
        writer.allocate(48)
    with pytest.raises(InputError, match="not written into"):
        writer.finish(pack_points(xyz))  # a cloud in a buffer of its own
    writer = conv.CloudWriter(_header(), XYZ_FIELDS)
    packed = pack_points(xyz, out=writer.allocate)
    other = conv.CloudWriter(_header(), XYZRGB_FIELDS)
    other.allocate(48)
    with pytest.raises(InputError, match="fields differ"):
        other.finish(packed)


def test_serialized_bytes_stay_valid_after_the_views_are_gone() -> None:
    import gc

    pixels = np.arange(6, dtype=np.float32).reshape(2, 3)
    blob, data = conv.serialized_image(_header(), 2, 3, "32FC1", 12)
    data[:] = pixels.reshape(-1).view(np.uint8)
    del data
    gc.collect()
    assert _pad_free(blob, Image) == conv.image_msg(pixels, "32FC1", _header())
    # The view alone keeps its bytes alive.
    blob, data = conv.serialized_image(_header(), 2, 3, "32FC1", 12)
    address = id(blob)
    del blob
    gc.collect()
    data[:] = 7
    assert bytes(data) == b"\x07" * 24 and address != 0


def test_raw_publishing_is_checked_against_this_middleware() -> None:
    assert conv.raw_publishing_works() is True
