"""The ``rosbags`` type store used to (de)serialise every bag message: ROS 2 Kilted when known."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from cloudypoints_core._optional import require

if TYPE_CHECKING:
    from rosbags.typesys.store import Typestore

#: Message type names as rosbag2 stores them.
IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"


def _store_name() -> str:
    typesys = require("rosbags.typesys", "rosbag2 support")
    names = [s.name for s in typesys.Stores]
    if "ROS2_KILTED" in names:
        return "ROS2_KILTED"
    # An older rosbags: the newest ROS 2 store it knows (names sort by distribution letter).
    ros2 = sorted(n for n in names if n.startswith("ROS2_"))
    return ros2[-1] if ros2 else "LATEST"


@functools.cache
def get_typestore() -> Typestore:
    """The shared type store (sensor_msgs definitions of ROS 2 Kilted, or the newest known)."""
    typesys = require("rosbags.typesys", "rosbag2 support")
    return typesys.get_typestore(typesys.Stores[_store_name()])


def typestore_name() -> str:
    """Name of the type store in use, e.g. ``ros2_kilted`` (written into bag metadata)."""
    return _store_name().lower()
