"""Protocols for message-like inputs and small value types shared across the core.

Members are read-only properties (the core never writes a message), so mutable messages and
frozen value types both fit. The Protocols are read by duck typing, so one function serves rclpy
messages (in the node) and rosbags messages (in bag tools) without importing either.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class ImageLike(Protocol):
    """What sensor_msgs/Image offers: raw pixel rows of ``step`` bytes each."""

    @property
    def height(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def encoding(self) -> str: ...
    @property
    def is_bigendian(self) -> int | bool: ...
    @property
    def step(self) -> int: ...
    @property
    def data(self) -> Any: ...  # bytes, bytearray, array.array, memoryview or a uint8 numpy array


@runtime_checkable
class CompressedImageLike(Protocol):
    """What sensor_msgs/CompressedImage offers: a format string and encoded bytes."""

    @property
    def format(self) -> str: ...
    @property
    def data(self) -> Any: ...


@runtime_checkable
class CameraInfoLike(Protocol):
    """What sensor_msgs/CameraInfo offers (ROS 2 lower-case field names)."""

    @property
    def height(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def distortion_model(self) -> str: ...
    @property
    def d(self) -> Sequence[float]: ...
    @property
    def k(self) -> Sequence[float]: ...
    @property
    def p(self) -> Sequence[float]: ...
