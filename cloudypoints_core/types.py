"""Protocols for message-like inputs and small value types shared across the core.

The Protocols are read by duck typing, so one function serves rclpy messages (in the node) and
rosbags messages (in bag tools) without importing either.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class ImageLike(Protocol):
    """What sensor_msgs/Image offers: raw pixel rows of ``step`` bytes each."""

    height: int
    width: int
    encoding: str
    is_bigendian: int | bool
    step: int
    data: Any  # bytes, bytearray, array.array, memoryview or a uint8 numpy array


@runtime_checkable
class CompressedImageLike(Protocol):
    """What sensor_msgs/CompressedImage offers: a format string and encoded bytes."""

    format: str
    data: Any


@runtime_checkable
class CameraInfoLike(Protocol):
    """What sensor_msgs/CameraInfo offers (ROS 2 lower-case field names)."""

    height: int
    width: int
    distortion_model: str
    d: Sequence[float]
    k: Sequence[float]
    p: Sequence[float]
