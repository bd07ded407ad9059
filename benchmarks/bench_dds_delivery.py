"""Benchmark: camera images from another process into the depth node as launched by default.

For each image size, camera-side Fast DDS configuration (Fast DDS's defaults or
``config/fastdds_shm_large.xml``) and camera QoS (reliable or best effort), a camera process
sends ``--frames`` rgb8 images (and their CameraInfo) at ``--rate`` Hz to a depth node that runs
as ``launch/depth.launch.py`` starts it by default: ``config/depth.yaml`` and
``FASTDDS_DEFAULT_PROFILES_FILE`` set to the shipped profile. The node's ``frames_in`` counter
(read from /diagnostics) says how many images reached it: frames received out of frames sent.

    python benchmarks/bench_dds_delivery.py                       # the README table
    python benchmarks/bench_dds_delivery.py --sizes 640x480 --frames 60 --rate 30
    python benchmarks/bench_dds_delivery.py --node-profile none   # the node on Fast DDS defaults

The cases run one after the other in one DDS domain (``--domain``, default $ROS_DOMAIN_ID) and
stay on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROFILE = ROOT / "config" / "fastdds_shm_large.xml"
PARAMS = ROOT / "config" / "depth.yaml"


def camera(width: int, height: int, frames: int, rate: float, reliable: bool) -> int:
    """Subprocess entry: wait for the node, send the frames, print how many were published."""
    import numpy as np
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header

    from cloudypoints_core.data.synthcity import render_frame
    from cloudypoints_ros import conversions as conv

    rclpy.init()
    node = Node("bench_camera")
    qos = QoSProfile(
        depth=10,  # image_transport's and most drivers' default history
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
    )
    image_pub = node.create_publisher(Image, "/camera/image", qos)
    info_pub = node.create_publisher(CameraInfo, "/camera/camera_info", qos)
    frame = render_frame(seed=5, width=width, height=height)
    image = conv.image_msg(np.ascontiguousarray(frame.rgb), "rgb8", Header())
    info = conv.camera_info_msg(frame.intrinsics, Header())
    deadline = time.monotonic() + 60.0
    while image_pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2.0)  # discovery of every endpoint settles
    next_t = time.monotonic()
    for _ in range(frames):
        stamp = time.time_ns()
        image.header.stamp.sec, image.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        info.header.stamp = image.header.stamp
        info_pub.publish(info)
        image_pub.publish(image)
        next_t += 1.0 / rate
        time.sleep(max(0.0, next_t - time.monotonic()))
    time.sleep(3.0)  # reliable writers finish resending before the process goes
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


class DiagnosticsReader:
    """Reads the depth node's frames_in from /diagnostics in a domain of its own."""

    def __init__(self, domain: int) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node

        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = Node("bench_diag_reader", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.values: dict[str, str] = {}
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)

    def _on_diag(self, msg: object) -> None:
        for status in getattr(msg, "status", []):
            if "cloudypoints_depth" in status.name:
                self.values = {kv.key: kv.value for kv in status.values}

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.1)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


def run_case(
    args: argparse.Namespace, domain: int, size: tuple[int, int], camera_profile: bool, rel: bool
) -> tuple[int, int]:
    base = dict(
        os.environ,
        ROS_DOMAIN_ID=str(domain),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    base.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    node_env = dict(base)
    if args.node_profile != "none":
        node_env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(Path(args.node_profile).resolve())
    cam_env = dict(base)
    if camera_profile:
        cam_env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
    node_cmd = [
        sys.executable,
        "-m",
        "cloudypoints_ros.depth_node",
        "--ros-args",
        "--params-file",
        str(PARAMS),
        "-r",
        "image:=/camera/image",
        "-r",
        "camera_info:=/camera/camera_info",
        "-p",
        "stats_period_s:=1.0",
    ]
    node = subprocess.Popen(
        node_cmd, env=node_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    reader = DiagnosticsReader(domain)
    try:
        deadline = time.monotonic() + 60.0
        while not reader.values and time.monotonic() < deadline:
            reader.spin_for(0.5)
        cam_cmd = [sys.executable, str(Path(__file__).resolve()), "--camera"]
        cam_cmd += [f"{size[0]}x{size[1]}", str(args.frames), str(args.rate), str(int(rel))]
        cam = subprocess.Popen(cam_cmd, env=cam_env)
        while cam.poll() is None:
            reader.spin_for(0.5)
        reader.spin_for(2.5)  # two more reports after the last frame
        return int(reader.values.get("frames_in", "0")), args.frames
    finally:
        reader.close()
        node.send_signal(signal.SIGINT)
        try:
            node.wait(15)
        except subprocess.TimeoutExpired:
            node.kill()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--camera":
        w, h = (int(v) for v in sys.argv[2].split("x"))
        return camera(w, h, int(sys.argv[3]), float(sys.argv[4]), sys.argv[5] == "1")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="640x480,1024x512")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--rate", type=float, default=15.0, help="camera frames/s")
    parser.add_argument("--domain", type=int, default=int(os.environ.get("ROS_DOMAIN_ID", 0)))
    parser.add_argument(
        "--node-profile",
        default=str(PROFILE),
        help="FASTDDS_DEFAULT_PROFILES_FILE of the node ('none': Fast DDS's defaults)",
    )
    args = parser.parse_args()
    sizes = [(int(s.split("x")[0]), int(s.split("x")[1])) for s in args.sizes.split(",")]
    node_dds = "Fast DDS defaults" if args.node_profile == "none" else Path(args.node_profile).name
    print(
        f"depth node: config/depth.yaml, {node_dds}; camera: rgb8, {args.frames} frames at "
        f"{args.rate:g} Hz, another process\n"
    )
    print(f"{'image':>9s} {'camera DDS':>18s} {'camera QoS':>11s} {'received':>9s}")
    for size in sizes:
        for camera_profile in (False, True):
            for rel in (True, False):
                got, sent = run_case(args, args.domain, size, camera_profile, rel)
                cam_dds = "profile" if camera_profile else "Fast DDS defaults"
                qos = "reliable" if rel else "best effort"
                print(
                    f"{size[0]:>4d}x{size[1]:<4d} {cam_dds:>18s} {qos:>11s} {got:>4d}/{sent}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
