"""A camera in a process of its own for the delivery tests: rgb8 images and CameraInfo.

    python camera_publisher.py WIDTHxHEIGHT FRAMES RATE_HZ reliable|best_effort

Waits until something subscribes to ``camera/image``, sends FRAMES images at RATE_HZ with a QoS
history of 10 (image_transport's and most drivers' default), stays a few seconds so that a
reliable writer can finish resending, and prints the number sent. DDS settings come from the
environment (ROS_DOMAIN_ID, FASTDDS_DEFAULT_PROFILES_FILE or its absence).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image


def main(argv: list[str]) -> int:
    width, height = (int(v) for v in argv[0].split("x"))
    frames, rate, reliable = int(argv[1]), float(argv[2]), argv[3] == "reliable"
    rclpy.init()
    node = Node("test_camera")
    qos = QoSProfile(
        depth=10,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
    )
    image_pub = node.create_publisher(Image, "camera/image", qos)
    info_pub = node.create_publisher(CameraInfo, "camera/camera_info", qos)
    rng = np.random.default_rng(0)
    image = Image(height=height, width=width, encoding="rgb8", step=width * 3)
    image.header.frame_id = "camera_optical_frame"
    image.data = rng.integers(0, 256, size=height * width * 3, dtype=np.uint8).tobytes()
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    info.header.frame_id = image.header.frame_id
    f, cx, cy = 0.8 * width, (width - 1) / 2.0, (height - 1) / 2.0
    info.d = [0.0] * 5
    info.k = [f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [f, 0.0, cx, 0.0, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    deadline = time.monotonic() + 60.0
    while image_pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2.0)  # the subscriber's side of discovery settles too
    next_t = time.monotonic()
    for _ in range(frames):
        stamp = time.time_ns()
        image.header.stamp.sec, image.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        info.header.stamp = image.header.stamp
        info_pub.publish(info)
        image_pub.publish(image)
        next_t += 1.0 / rate
        time.sleep(max(0.0, next_t - time.monotonic()))
    time.sleep(3.0)
    print(frames, flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
