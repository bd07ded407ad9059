"""Images from other processes into the depth node over real DDS: what the default launch
receives from a camera on Fast DDS's defaults, and what the node says when nothing arrives."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import PARAMS_FILE, REPO
from harness import Probe, camera_info, raw_image, stop_process
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

pytestmark = pytest.mark.ros

CAMERA = Path(__file__).resolve().parent / "camera_publisher.py"
PROFILE = REPO / "config" / "fastdds_shm_large.xml"


def _env(profile: Path | None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    if profile is not None:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    return env


def test_default_launch_receives_every_image_from_a_camera_on_fastdds_defaults(
    ros_env: Any, ros_domain: int, model_dir: Path
) -> None:
    """The node as depth.launch.py starts it (config/depth.yaml, the shipped Fast DDS profile
    in its environment) and a camera process on Fast DDS's defaults publishing 640x480 rgb8
    reliably, as image_transport does: every image arrives (frames_in in /diagnostics)."""
    ns = "/cp_delivery"
    frames = 15
    node = subprocess.Popen(
        [sys.executable, "-m", "cloudypoints_ros.depth_node", "--ros-args"]
        + ["--params-file", str(PARAMS_FILE), "-r", f"__ns:={ns}"]
        + ["-r", "image:=camera/image", "-r", "camera_info:=camera/camera_info"]
        + ["-p", f"model_path:={model_dir}", "-p", "stats_period_s:=0.5"],
        env=_env(PROFILE),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    probe = Probe(ros_env.context, ns, name="delivery_probe")
    ros_env.add_node(probe.node)
    try:
        probe.latest_status(timeout=60.0)  # the node is up
        camera = subprocess.run(
            [sys.executable, str(CAMERA), "640x480", str(frames), "5", "reliable"]
            + ["--ros-args", "-r", f"__ns:={ns}"],
            env=_env(None),
            capture_output=True,
            text=True,
            timeout=120.0,
        )
        assert camera.returncode == 0, camera.stderr
        # Every image arrived (the camera has already stopped sending, so the node may by now
        # rightly report input_not_arriving).
        probe.latest_status(lambda s: s["frames_in"] == str(frames), timeout=10.0)
    finally:
        stop_process(node)


def test_node_reports_images_that_cannot_arrive_in_diagnostics(
    ros_env: Any, model_dir: Path, frames: list[Any]
) -> None:
    """A best-effort camera and a node told to subscribe reliably never match: the node has
    publishers on its image topic but no image, and /diagnostics says why and what fixes it."""
    from cloudypoints_ros.depth_node import DepthNode

    ns = "/cp_incompatible"
    node = DepthNode(
        namespace=ns,
        context=ros_env.context,
        cli_args=["--ros-args", "--params-file", str(PARAMS_FILE)],
        parameter_overrides=[
            Parameter("model_path", value=str(model_dir)),
            Parameter("stats_period_s", value=0.3),
            Parameter("reliable_input", value=True),
        ],
    )
    ros_env.add_node(node)
    reader = Probe(ros_env.context, ns, name="incompatible_reader")
    # The reader's own image publisher would count as a (reliable) camera: remove it.
    reader.node.destroy_publisher(reader.image_pub)
    ros_env.add_node(reader.node)
    camera = Node("best_effort_camera", namespace=ns, context=ros_env.context)
    image_pub = camera.create_publisher(
        Image, "image", QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
    )
    info_pub = camera.create_publisher(
        type(camera_info(frames[0].intrinsics, 0)),
        "camera_info",
        QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT),
    )
    ros_env.add_node(camera)
    stop = threading.Event()

    def send() -> None:
        while not stop.is_set():
            stamp = time.time_ns()
            info_pub.publish(camera_info(frames[0].intrinsics, stamp))
            image_pub.publish(raw_image(frames[0].rgb, "rgb8", stamp))
            stop.wait(0.1)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        status = reader.latest_status(lambda s: s["input_problem"] != "none", timeout=20.0)
    finally:
        stop.set()
        sender.join(timeout=5.0)
    assert status["input_problem"] == "input_qos_incompatible"
    assert status["_level"] == "1"  # WARN
    assert "reliable_input:=false" in status["_message"]  # the fix is named
    assert status["frames_in"] == "0"
