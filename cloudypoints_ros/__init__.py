"""The ROS 2 layer of CloudyPoints: a thin rclpy depth node over ``cloudypoints_core``.

Importing this package does not import rclpy; the node (``depth_node``), the message conversions
(``conversions``) and the bag player/recorder used by the demo import it themselves.
"""

from __future__ import annotations

#: Name of the depth node (shared/DESIGN.md).
NODE_NAME = "cloudypoints_depth"
#: Camera optical frame the demo stamps on its messages and the RViz config uses as fixed frame.
DEMO_FRAME_ID = "camera_optical_frame"

__all__ = ["DEMO_FRAME_ID", "NODE_NAME"]
