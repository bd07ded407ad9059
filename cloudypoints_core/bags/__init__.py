"""rosbag2 tools built on ``rosbags`` (no ROS runtime): write, read, convert and evaluate bags.

Submodules are imported on demand so that ``import cloudypoints_core.bags`` stays cheap and does
not require ``rosbags`` until a bag is actually touched.
"""

from __future__ import annotations

#: Topic names the converter writes and the readers look for first (see ``writer.BagTopics``).
DEFAULT_IMAGE_TOPIC = "/camera/image"
DEFAULT_CAMERA_INFO_TOPIC = "/camera/camera_info"
DEFAULT_DEPTH_GT_TOPIC = "/camera/depth_gt"
#: Optical frame of the camera (REP 103: x right, y down, z forward) stamped on every message.
DEFAULT_FRAME_ID = "camera_optical_frame"

__all__ = [
    "DEFAULT_CAMERA_INFO_TOPIC",
    "DEFAULT_DEPTH_GT_TOPIC",
    "DEFAULT_FRAME_ID",
    "DEFAULT_IMAGE_TOPIC",
]
