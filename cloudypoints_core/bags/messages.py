"""``rosbags`` sensor_msgs messages (Image, CompressedImage, CameraInfo) built from numpy arrays.

Pure ``rosbags``: no rclpy. The messages carry the field names of ROS 2, so the core's duck-typed
readers (``cloudypoints_core.image``) decode them exactly as they decode the node's rclpy messages.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from cloudypoints_core.bags import DEFAULT_FRAME_ID
from cloudypoints_core.bags.typestore import (
    CAMERA_INFO_TYPE,
    COMPRESSED_IMAGE_TYPE,
    IMAGE_TYPE,
    get_typestore,
)
from cloudypoints_core.errors import EncodingError, InputError
from cloudypoints_core.geometry import Intrinsics

#: Image formats the writer knows: raw ``sensor_msgs/Image`` or a ``CompressedImage``.
IMAGE_FORMATS: tuple[str, ...] = ("raw", "png", "jpeg")

_NS_PER_S = 1_000_000_000


def _types() -> dict[str, Any]:
    return get_typestore().types


def stamp_message(stamp_ns: int) -> Any:
    """``builtin_interfaces/Time`` for a stamp in nanoseconds (non-negative)."""
    stamp_ns = int(stamp_ns)
    if stamp_ns < 0:
        raise InputError(f"stamp must be >= 0 ns, got {stamp_ns}")
    sec, nanosec = divmod(stamp_ns, _NS_PER_S)
    return _types()["builtin_interfaces/msg/Time"](sec=int(sec), nanosec=int(nanosec))


def stamp_to_ns(stamp: Any) -> int:
    """Nanoseconds of a ``builtin_interfaces/Time`` (rosbags or rclpy)."""
    return int(stamp.sec) * _NS_PER_S + int(stamp.nanosec)


def header_message(stamp_ns: int, frame_id: str = DEFAULT_FRAME_ID) -> Any:
    return _types()["std_msgs/msg/Header"](stamp=stamp_message(stamp_ns), frame_id=str(frame_id))


def _image_fields(array: npt.NDArray[Any], encoding: str) -> dict[str, Any]:
    from cloudypoints_core.image import numpy_to_image_fields

    fields = numpy_to_image_fields(np.asarray(array), encoding)
    # rosbags serialises uint8 sequences from numpy arrays; this views the bytes without a copy.
    fields["data"] = np.frombuffer(fields["data"], dtype=np.uint8)
    return fields


def image_message(
    array: npt.NDArray[Any], encoding: str, stamp_ns: int, frame_id: str = DEFAULT_FRAME_ID
) -> Any:
    """A ``sensor_msgs/Image`` holding ``array`` in ``encoding`` (any of ``image.ENCODINGS``)."""
    return _types()[IMAGE_TYPE](
        header=header_message(stamp_ns, frame_id), **_image_fields(array, encoding)
    )


def depth_message(
    depth_m: npt.NDArray[np.floating[Any]], stamp_ns: int, frame_id: str = DEFAULT_FRAME_ID
) -> Any:
    """A ``32FC1`` depth image in metres; non-finite and non-positive depths become NaN."""
    depth = np.asarray(depth_m, dtype=np.float32)
    if depth.ndim != 2:
        raise InputError(f"depth must be (H, W), got shape {depth.shape}")
    # SynthCity marks the sky with +inf and disparity 0 gives inf; DESIGN's invalid value is NaN.
    valid = np.isfinite(depth) & (depth > 0)
    depth = np.where(valid, depth, np.float32(np.nan)).astype(np.float32)
    return image_message(depth, "32FC1", stamp_ns, frame_id)


def compressed_image_message(
    rgb: npt.NDArray[np.uint8],
    image_format: str,
    stamp_ns: int,
    frame_id: str = DEFAULT_FRAME_ID,
    *,
    jpeg_quality: int = 95,
) -> Any:
    """A ``sensor_msgs/CompressedImage`` of an (H, W, 3) rgb8 array as PNG or JPEG.

    The ``format`` string follows compressed_image_transport (``"rgb8; png compressed bgr8"``):
    the source encoding, then the codec; decoding with OpenCV yields BGR.
    """
    cv2 = _cv2()
    fmt = image_format.lower()
    if fmt == "jpg":
        fmt = "jpeg"
    if fmt not in ("png", "jpeg"):
        raise EncodingError(f"compressed format must be 'png' or 'jpeg', got {image_format!r}")
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise InputError(
            f"compressed images need (H, W, 3) uint8 rgb, got {arr.shape} {arr.dtype}"
        )
    bgr = np.ascontiguousarray(arr[:, :, ::-1])
    params = [int(cv2.IMWRITE_JPEG_QUALITY), int(jpeg_quality)] if fmt == "jpeg" else []
    ok, buf = cv2.imencode(".png" if fmt == "png" else ".jpg", bgr, params)
    if not ok:
        raise EncodingError(f"OpenCV could not encode a {arr.shape} image as {fmt}")
    return _types()[COMPRESSED_IMAGE_TYPE](
        header=header_message(stamp_ns, frame_id),
        format=f"rgb8; {fmt} compressed bgr8",
        data=np.asarray(buf, dtype=np.uint8).reshape(-1),
    )


def camera_info_message(
    intrinsics: Intrinsics,
    stamp_ns: int,
    frame_id: str = DEFAULT_FRAME_ID,
    *,
    p: npt.ArrayLike | None = None,
) -> Any:
    """A ``sensor_msgs/CameraInfo`` for ``intrinsics``: K, D (plumb_bob, zeros when rectified),
    R identity and P (``[K | 0]`` unless given, e.g. a stereo right camera's ``Tx``)."""
    types = _types()
    p_arr = intrinsics.p_matrix() if p is None else np.asarray(p, dtype=np.float64)
    if p_arr.size != 12:
        raise InputError(f"P must have 12 values (3x4), got {p_arr.size}")
    roi = types["sensor_msgs/msg/RegionOfInterest"](
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
    )
    return types[CAMERA_INFO_TYPE](
        header=header_message(stamp_ns, frame_id),
        height=intrinsics.height,
        width=intrinsics.width,
        distortion_model=intrinsics.distortion_model or "plumb_bob",
        d=intrinsics.d_vector().astype(np.float64),
        k=intrinsics.k_matrix().reshape(-1),
        r=np.eye(3, dtype=np.float64).reshape(-1),
        p=p_arr.astype(np.float64).reshape(-1),
        binning_x=0,
        binning_y=0,
        roi=roi,
    )


def intrinsics_from_camera_info(msg: Any) -> Intrinsics:
    """Intrinsics of a CameraInfo message (the core's :meth:`Intrinsics.from_camera_info`)."""
    return Intrinsics.from_camera_info(msg)


def serialize(msg: Any) -> bytes:
    """CDR bytes of a rosbags message (what rosbag2 stores and DDS carries)."""
    return bytes(get_typestore().serialize_cdr(msg, msg.__msgtype__))


def deserialize(data: bytes | memoryview, msgtype: str) -> Any:
    """A rosbags message from CDR bytes."""
    return get_typestore().deserialize_cdr(bytes(data), msgtype)


def _cv2() -> Any:
    from cloudypoints_core._optional import require

    return require("cv2", "PNG/JPEG compressed images")
