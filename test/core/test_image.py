"""Tests of cloudypoints_core.image: encodings, row padding, endianness, buffers, colouring."""

from __future__ import annotations

import array
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import pytest

from cloudypoints_core.errors import EncodingError, InputError
from cloudypoints_core.image import (
    ENCODINGS,
    colorize_depth,
    compressed_to_rgb,
    depth_colormap_lut,
    image_msg_to_numpy,
    image_msg_to_rgb,
    numpy_to_image_fields,
)


@dataclass
class FakeImage:
    """Duck-typed stand-in for sensor_msgs/Image (rclpy or rosbags)."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: Any


@dataclass
class FakeCompressed:
    format: str
    data: Any


def to_buffer(raw: bytes, kind: str) -> Any:
    if kind == "bytes":
        return raw
    if kind == "bytearray":
        return bytearray(raw)
    if kind == "memoryview":
        return memoryview(bytearray(raw))
    if kind == "array":
        return array.array("B", raw)  # what rclpy gives
    if kind == "numpy":
        return np.frombuffer(raw, np.uint8).copy()  # what rosbags gives
    raise AssertionError(kind)


def encode(pixels: np.ndarray, encoding: str, pad: int, big_endian: bool, kind: str) -> FakeImage:
    """Lay out ``pixels`` as an Image message would, independently of the code under test."""
    info = ENCODINGS[encoding]
    h, w = pixels.shape[:2]
    order = ">" if big_endian else "<"
    row = pixels.astype(np.dtype(info.dtype).newbyteorder(order)).reshape(h, -1)
    row_bytes = row.view(np.uint8).reshape(h, -1)
    assert row_bytes.shape[1] == w * info.pixel_bytes
    padded = np.full((h, row_bytes.shape[1] + pad), 0xAB, np.uint8)  # junk in the padding
    padded[:, : row_bytes.shape[1]] = row_bytes
    return FakeImage(
        h, w, encoding, int(big_endian), padded.shape[1], to_buffer(padded.tobytes(), kind)
    )


def random_pixels(rng, encoding: str, h: int = 5, w: int = 7) -> np.ndarray:
    info = ENCODINGS[encoding]
    shape = (h, w) if info.channels == 1 else (h, w, info.channels)
    if info.dtype == "f4":
        return rng.normal(scale=10.0, size=shape).astype(np.float32)
    top = np.iinfo(np.dtype(info.dtype)).max
    return rng.integers(0, top, size=shape, endpoint=True).astype(info.dtype)


BUFFERS = ["bytes", "bytearray", "memoryview", "array", "numpy"]


class TestImageToNumpy:
    @pytest.mark.parametrize("encoding", sorted(ENCODINGS))
    @pytest.mark.parametrize("pad", [0, 1, 8])
    @pytest.mark.parametrize("kind", BUFFERS)
    def test_every_encoding_padding_and_buffer(self, encoding, pad, kind, rng) -> None:
        pixels = random_pixels(rng, encoding)
        got = image_msg_to_numpy(encode(pixels, encoding, pad, False, kind))
        assert got.shape == pixels.shape and got.dtype == pixels.dtype
        np.testing.assert_array_equal(got, pixels)

    @pytest.mark.parametrize("encoding", ["mono16", "16UC1", "32FC1"])
    @pytest.mark.parametrize("pad", [0, 2])
    def test_big_endian(self, encoding, pad, rng) -> None:
        pixels = random_pixels(rng, encoding)
        msg = encode(pixels, encoding, pad, True, "bytes")
        got = image_msg_to_numpy(msg)
        assert got.dtype.isnative
        np.testing.assert_array_equal(got, pixels)
        # Reading the same bytes as little-endian gives different numbers: the flag matters.
        msg.is_bigendian = 0
        assert not np.array_equal(image_msg_to_numpy(msg), pixels)

    def test_is_bigendian_ignored_for_bytes(self, rng) -> None:
        pixels = random_pixels(rng, "rgb8")
        msg = encode(pixels, "rgb8", 0, False, "bytes")
        msg.is_bigendian = 1
        np.testing.assert_array_equal(image_msg_to_numpy(msg), pixels)

    @pytest.mark.parametrize("kind", ["bytearray", "numpy", "array"])
    @pytest.mark.parametrize("encoding", ["rgb8", "32FC1"])
    def test_zero_copy(self, kind, encoding, rng) -> None:
        msg = encode(random_pixels(rng, encoding), encoding, 4, False, kind)
        got = image_msg_to_numpy(msg)
        base = np.frombuffer(msg.data, np.uint8)
        assert np.shares_memory(got, base)
        assert got.strides[0] == msg.step

    def test_odd_step_for_two_byte_pixels(self, rng) -> None:
        # Rows of mono16 starting at odd addresses: unaligned but still decodable.
        pixels = random_pixels(rng, "mono16")
        np.testing.assert_array_equal(
            image_msg_to_numpy(encode(pixels, "mono16", 1, False, "bytes")), pixels
        )

    def test_longer_data_is_fine(self, rng) -> None:
        pixels = random_pixels(rng, "mono8")
        msg = encode(pixels, "mono8", 0, False, "bytes")
        msg.data = msg.data + b"\0" * 10
        np.testing.assert_array_equal(image_msg_to_numpy(msg), pixels)

    def test_list_data(self) -> None:
        msg = FakeImage(1, 3, "mono8", 0, 3, [1, 2, 3])
        np.testing.assert_array_equal(image_msg_to_numpy(msg), [[1, 2, 3]])

    @pytest.mark.parametrize(
        ("change", "error", "match"),
        [
            ({"encoding": "yuv422"}, EncodingError, "not supported"),
            ({"encoding": None}, EncodingError, "not supported"),
            ({"step": 20}, EncodingError, "smaller than width"),
            ({"data": b"\0" * (24 * 5 - 1)}, InputError, "step \\* height"),
            ({"width": 0}, InputError, "width"),
            ({"height": 0, "data": b""}, InputError, "height"),
            ({"step": -24}, InputError, "step"),
            ({"data": 3.5}, InputError, "bytes"),
            ({"data": [300] * 120}, InputError, "0..255"),
        ],
    )
    def test_errors(self, change, error, match) -> None:
        msg = FakeImage(5, 7, "rgb8", 0, 24, b"\0" * (24 * 5))
        for key, value in change.items():
            setattr(msg, key, value)
        with pytest.raises(error, match=match):
            image_msg_to_numpy(msg)

    def test_not_a_message(self) -> None:
        with pytest.raises(InputError, match="no field"):
            image_msg_to_numpy(object())  # type: ignore[arg-type]

    def test_encoding_case_tolerated(self, rng) -> None:
        pixels = random_pixels(rng, "16UC1")
        msg = encode(pixels, "16UC1", 0, False, "bytes")
        msg.encoding = "16uc1"
        np.testing.assert_array_equal(image_msg_to_numpy(msg), pixels)


class TestImageToRgb:
    @pytest.mark.parametrize("pad", [0, 5])
    @pytest.mark.parametrize(
        "encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "8UC1", "8UC3", "8UC4"]
    )
    def test_conversions(self, encoding, pad, rng) -> None:
        pixels = random_pixels(rng, encoding)
        got = image_msg_to_rgb(encode(pixels, encoding, pad, encoding == "mono16", "array"))
        assert got.shape == (5, 7, 3) and got.dtype == np.uint8 and got.flags.c_contiguous
        if encoding == "rgb8":
            expected = pixels
        elif encoding in ("bgr8", "8UC3"):
            expected = pixels[..., ::-1]
        elif encoding == "rgba8":
            expected = pixels[..., :3]
        elif encoding in ("bgra8", "8UC4"):
            expected = pixels[..., [2, 1, 0]]
        elif encoding == "mono16":
            expected = np.stack([(pixels // 256).astype(np.uint8)] * 3, -1)
        else:
            expected = np.stack([pixels] * 3, -1)
        np.testing.assert_array_equal(got, expected)

    @pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
    def test_depth_encodings_refused(self, encoding, rng) -> None:
        with pytest.raises(EncodingError, match="colorize_depth"):
            image_msg_to_rgb(encode(random_pixels(rng, encoding), encoding, 0, False, "bytes"))


class TestCompressed:
    @pytest.fixture
    def picture(self) -> np.ndarray:
        # Smooth content so JPEG stays close; distinct channels catch an RGB/BGR swap.
        u, v = np.meshgrid(np.arange(64), np.arange(48))
        return np.stack([u * 4, v * 5, 255 - u * 3], -1).astype(np.uint8)

    @pytest.mark.parametrize("kind", ["bytes", "array", "numpy"])
    def test_png_exact(self, picture, kind) -> None:
        ok, enc = cv2.imencode(".png", picture[..., ::-1])
        assert ok
        msg = FakeCompressed("rgb8; png compressed bgr8", to_buffer(enc.tobytes(), kind))
        np.testing.assert_array_equal(compressed_to_rgb(msg), picture)

    def test_jpeg_close(self, picture) -> None:
        ok, enc = cv2.imencode(".jpg", picture[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        got = compressed_to_rgb(FakeCompressed("jpeg", enc.tobytes()))
        assert got.shape == picture.shape and got.dtype == np.uint8
        assert np.abs(got.astype(int) - picture).mean() < 3.0

    def test_grey_png(self) -> None:
        grey = np.arange(48 * 64, dtype=np.uint8).reshape(48, 64)
        ok, enc = cv2.imencode(".png", grey)
        got = compressed_to_rgb(FakeCompressed("png", enc.tobytes()))
        np.testing.assert_array_equal(got, np.stack([grey] * 3, -1))

    @pytest.mark.parametrize(
        ("msg", "error"),
        [
            (FakeCompressed("jpeg", b"\xff\xd8 this is not a jpeg"), EncodingError),
            (FakeCompressed("png", b""), InputError),
            (FakeCompressed("16UC1; compressedDepth png", b"\0" * 64), EncodingError),
            (FakeCompressed("jpeg", 12), InputError),
        ],
    )
    def test_errors(self, msg, error) -> None:
        with pytest.raises(error):
            compressed_to_rgb(msg)


class TestNumpyToImageFields:
    @pytest.mark.parametrize("encoding", sorted(ENCODINGS))
    def test_round_trip(self, encoding, rng) -> None:
        pixels = random_pixels(rng, encoding)
        fields = numpy_to_image_fields(pixels, encoding)
        info = ENCODINGS[encoding]
        assert fields["height"] == 5 and fields["width"] == 7 and fields["encoding"] == encoding
        assert fields["step"] == 7 * info.pixel_bytes and fields["is_bigendian"] == 0
        assert isinstance(fields["data"], array.array) and fields["data"].typecode == "B"
        assert len(fields["data"]) == fields["step"] * 5
        np.testing.assert_array_equal(image_msg_to_numpy(FakeImage(**fields)), pixels)

    def test_non_contiguous_and_foreign_byte_order(self, rng) -> None:
        depth = rng.uniform(0, 10, size=(6, 16)).astype(">f4")[:, ::2]
        fields = numpy_to_image_fields(depth, "32FC1")
        assert fields["step"] == 8 * 4
        np.testing.assert_array_equal(image_msg_to_numpy(FakeImage(**fields)), depth)

    def test_single_channel_axis_accepted(self) -> None:
        fields = numpy_to_image_fields(np.zeros((2, 3, 1), np.uint8), "mono8")
        assert (fields["height"], fields["width"], fields["step"]) == (2, 3, 3)

    @pytest.mark.parametrize(
        ("arr", "encoding"),
        [
            (np.zeros((4, 4), np.float64), "32FC1"),
            (np.zeros((4, 4), np.int16), "16UC1"),
            (np.zeros((4, 4, 3), np.uint8), "mono8"),
            (np.zeros((4, 4), np.uint8), "rgb8"),
            (np.zeros((4, 4, 4), np.uint8), "rgb8"),
            (np.zeros((0, 4, 3), np.uint8), "rgb8"),
            ([[1, 2]], "mono8"),
        ],
    )
    def test_errors(self, arr, encoding) -> None:
        with pytest.raises(InputError):
            numpy_to_image_fields(arr, encoding)

    def test_unknown_encoding(self) -> None:
        with pytest.raises(EncodingError):
            numpy_to_image_fields(np.zeros((2, 2), np.uint8), "jpeg")

    def test_into_rclpy_message(self, rng) -> None:
        msg_mod = pytest.importorskip("sensor_msgs.msg", reason="sensor_msgs not installed")
        pixels = random_pixels(rng, "32FC1")
        msg = msg_mod.Image(**numpy_to_image_fields(pixels, "32FC1"))
        np.testing.assert_array_equal(image_msg_to_numpy(msg), pixels)

    def test_rosbags_message(self, rng) -> None:
        typesys = pytest.importorskip("rosbags.typesys", reason="rosbags not installed")
        store = typesys.get_typestore(typesys.Stores.ROS2_HUMBLE)
        image_cls = store.types["sensor_msgs/msg/Image"]
        header = store.types["std_msgs/msg/Header"](
            stamp=store.types["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id="cam"
        )
        pixels = random_pixels(rng, "bgr8")
        fields = numpy_to_image_fields(pixels, "bgr8")
        fields["data"] = np.frombuffer(fields["data"], np.uint8)
        msg = image_cls(header=header, **fields)
        np.testing.assert_array_equal(image_msg_to_rgb(msg), pixels[..., ::-1])


class TestColorizeDepth:
    def test_lut_is_perceptually_ordered(self) -> None:
        lut = depth_colormap_lut()
        assert lut.shape == (256, 3) and lut.dtype == np.uint8 and not lut.flags.writeable
        srgb = lut / 255.0
        linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
        luminance = linear @ [0.2126, 0.7152, 0.0722]
        assert np.all(np.diff(luminance) < 0)  # near is bright, far is dark
        assert lut[0, 0] > lut[0, 2] and lut[-1, 2] > lut[-1, 1]  # warm near, violet far
        assert luminance[-1] > 0.01  # the far end is not black (black means invalid)

    def test_mapping_and_invalid(self) -> None:
        depth = np.array([[1.0, 2.0, 3.0], [np.nan, 0.0, -1.0], [np.inf, 0.5, 10.0]], np.float32)
        out = colorize_depth(depth, 1.0, 3.0)
        lut = depth_colormap_lut()
        assert out.shape == (3, 3, 3) and out.dtype == np.uint8
        np.testing.assert_array_equal(out[0, 0], lut[0])
        np.testing.assert_array_equal(out[0, 1], lut[128])
        np.testing.assert_array_equal(out[0, 2], lut[255])
        np.testing.assert_array_equal(out[1], 0)
        np.testing.assert_array_equal(out[2, 0], [0, 0, 0])
        np.testing.assert_array_equal(out[2, 1], lut[0])  # clipped below min
        np.testing.assert_array_equal(out[2, 2], lut[255])  # clipped above max

    def test_default_range_uses_valid_extremes(self) -> None:
        depth = np.array([[np.nan, 2.0, 4.0, 6.0]], np.float64)
        out = colorize_depth(depth)
        lut = depth_colormap_lut()
        np.testing.assert_array_equal(out[0, 1:], lut[[0, 128, 255]])
        # One-sided defaults take the other end from the data.
        np.testing.assert_array_equal(colorize_depth(depth, max_m=10.0)[0, 1], lut[0])

    @pytest.mark.parametrize("value", [np.nan, 5.0])
    def test_degenerate(self, value: float) -> None:
        out = colorize_depth(np.full((4, 5), value, np.float32))
        assert out.shape == (4, 5, 3)
        if np.isnan(value):
            assert not out.any()

    @pytest.mark.parametrize(
        ("depth", "kwargs"),
        [
            (np.zeros((2, 2, 1), np.float32), {}),
            (np.zeros((2, 2), np.uint16), {}),
            ([[1.0]], {}),
            (np.ones((2, 2), np.float32), {"min_m": 0.0, "max_m": np.inf}),
        ],
    )
    def test_errors(self, depth, kwargs) -> None:
        with pytest.raises(InputError):
            colorize_depth(depth, **kwargs)
