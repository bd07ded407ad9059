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
#: The camera process: a plain rclpy publisher, as a driver would be (shared with the tests).
CAMERA = ROOT / "test" / "ros" / "camera_publisher.py"


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
        cam_cmd = [sys.executable, str(CAMERA), f"{size[0]}x{size[1]}", str(args.frames)]
        cam_cmd += [str(args.rate), "reliable" if rel else "best_effort"]
        cam = subprocess.Popen(cam_cmd, env=cam_env, stdout=subprocess.DEVNULL)
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
