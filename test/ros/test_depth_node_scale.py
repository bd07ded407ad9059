"""The depth node with an imported relative (affine inverse depth) model over real DDS: metric
depth from the camera height in the parameters, scale and shift in /diagnostics, refusal
without a scale source.

The model is the oracle network of the core tests (test/core/inference/oracle_net.py), exported
to a bare ONNX file and imported with the ``midas-v21-small`` preset as a user would import
MiDaS: it reads SynthCity's exact depth encoded in the image and answers ``A / z + B``, so the
truth is known.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from harness import Probe, camera_info, raw_image, set_header, stop_process

# The oracle lives with the core tests (pure torch/onnx); not through conftest, whose module name
# is shared by every test folder.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core" / "inference"))
from oracle_net import encode_depth, export_oracle_onnx  # noqa: E402

pytestmark = pytest.mark.ros

#: Image and network size: small (fast over DDS), 2:1, multiples of 32.
W, H = 192, 96
A, B = 2.0, 0.5  # B is about 25 % of the output range (A / 0.5 m = 4)


@pytest.fixture(scope="module")
def oracle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cloudypoints_core.inference.presets import import_model

    root = tmp_path_factory.mktemp("oracle")
    weights = export_oracle_onnx(root / "downloaded" / "oracle.onnx", W, H, a=A, b=B)
    return import_model("midas-v21-small", weights, root / "package")


@pytest.fixture(scope="module")
def drive() -> list[Any]:
    from cloudypoints_core.data.synthcity import render_frame

    return [render_frame(seed=11, width=W, height=H, index=i) for i in range(4)]


def _depth_of(msg: Any) -> np.ndarray:
    assert msg.encoding == "32FC1"
    arr = np.frombuffer(bytes(msg.data), dtype=">f4" if msg.is_bigendian else "<f4")
    return arr.reshape(msg.height, msg.width).astype(np.float32)


def _abs_rel_and_coverage(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    valid = np.isfinite(truth) & (truth > 0.5) & (truth < 80.0)
    scored = valid & np.isfinite(pred)
    p = np.clip(pred[scored], 0.5, 80.0)
    abs_rel = float(np.mean(np.abs(p - truth[scored]) / truth[scored]))
    return abs_rel, float(scored.sum() / valid.sum())


def test_relative_model_publishes_metric_depth_from_the_camera_height(
    ros_env: Any, oracle_dir: Path, drive: list[Any]
) -> None:
    first = drive[0]
    node, probe = ros_env.start_depth_node(
        "/cp_scale",
        oracle_dir,
        {
            "scale.camera_height_m": float(first.camera_height_m),
            "scale.camera_pitch_rad": float(first.pitch_rad),
        },
    )
    errors = []
    for frame in drive:
        stamp = time.time_ns()
        image = raw_image(encode_depth(frame.depth_m), "rgb8", stamp)
        got = probe.request(image, camera_info(frame.intrinsics, stamp))
        depth = _depth_of(got["depth/image"])
        assert depth.shape == (H, W)
        abs_rel, coverage = _abs_rel_and_coverage(depth, frame.depth_m)
        assert coverage > 0.9
        errors.append(abs_rel)
    assert max(errors) <= 0.10, errors
    assert float(np.mean(errors)) < 0.03, errors

    # /diagnostics: how the metres were obtained. depth = scale / (x + shift) = A / (x - B).
    status = probe.latest_status(lambda kv: int(kv.get("scale.fits", 0)) >= len(drive))
    assert status["scale.used"] == "ground_plane"
    assert status["output_kind"] == "affine_inverse_depth"
    assert status["scale.method"] == "auto"
    assert status["scale.fit"] == "affine_ransac" and status["scale.fit_ok"] == "true"
    assert float(status["scale.scale"]) == pytest.approx(A, rel=0.05)
    assert float(status["scale.shift"]) == pytest.approx(-B, rel=0.05)
    assert 0.5 < float(status["scale.inlier_ratio"]) <= 1.0
    assert status["scale.fit_failures"] == "0"


def test_height_cannot_be_unset_at_run_time_when_it_is_the_only_source(
    ros_env: Any, oracle_dir: Path
) -> None:
    node, probe = ros_env.start_depth_node(
        "/cp_scale_rt", oracle_dir, {"scale.camera_height_m": 1.3}
    )
    (refused,) = probe.set_parameters({"scale.camera_height_m": 0.0})
    assert not refused.successful and "only metric scale source" in refused.reason
    (changed,) = probe.set_parameters({"scale.camera_height_m": 1.25})
    assert changed.successful


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({}, "scale.camera_height_m"),
        ({"scale.method": "none"}, "would be published as metres"),
        ({"scale.method": "fixed"}, "scale.fixed is not set"),
        ({"scale.method": "ground_plane", "scale.fixed": 3.0}, "scale.camera_height_m"),
    ],
)
def test_relative_model_without_a_scale_source_is_refused(
    ros_env: Any, oracle_dir: Path, overrides: dict[str, Any], match: str
) -> None:
    from cloudypoints_core.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        ros_env.start_depth_node("/cp_scale_refused", oracle_dir, overrides)


def test_refusal_exits_with_the_bad_model_code(oracle_dir: Path, ros_domain: int) -> None:
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run(
        [sys.executable, "-m", "cloudypoints_ros.depth_node", "--ros-args"]
        + ["-p", f"model_path:={oracle_dir}"],
        capture_output=True,
        text=True,
        timeout=60.0,
        env=env,
        cwd=repo,
    )
    assert run.returncode == 1
    assert "cannot start" in run.stderr and "scale.camera_height_m" in run.stderr


def test_ground_frame_needs_tf2_ros(ros_env: Any, oracle_dir: Path) -> None:
    """Where tf2_ros is missing (pip-only ROS, as here) scale.ground_frame is refused with the
    way out; with tf2_ros the node starts (reading the mounting from TF: see
    test_camera_mounting_from_tf_through_the_documented_tf2_ros_api)."""
    import importlib.util

    from cloudypoints_core.errors import ConfigError

    overrides = {"scale.ground_frame": "base_footprint"}
    if importlib.util.find_spec("tf2_ros") is None:
        with pytest.raises(ConfigError, match="needs tf2_ros.*scale.camera_height_m"):
            ros_env.start_depth_node("/cp_scale_tf", oracle_dir, overrides)
    else:
        node, _ = ros_env.start_depth_node("/cp_scale_tf", oracle_dir, overrides)
        assert node.get_parameter("scale.ground_frame").value == "base_footprint"


# ------------------------------------------------------------------ camera mounting from TF
TF_STAND_IN = Path(__file__).resolve().parent / "tf2_stand_in"
#: Where the stand-in listener reads static transforms (tf2_stand_in/tf2_ros: TF_STATIC_TOPIC).
TF_STATIC = "/tf_static_stand_in"


def _camera_in_ground(height_m: float, pitch_rad: float) -> Any:
    """The TF a robot publishes for its camera: ground frame (REP 103: x forward, y left, z up,
    origin on the road) -> optical frame (x right, y down, z forward), the camera 1.4 m ahead
    of the origin, ``height_m`` above it and pitched ``pitch_rad`` down."""
    from geometry_msgs.msg import TransformStamped

    # A level optical frame's rotation, (-1, 1, -1, 1) / 2, turned down about the left (y) axis.
    c, s = math.cos(pitch_rad / 2), math.sin(pitch_rad / 2)
    x, y, z, w = -(c + s) / 2, (c + s) / 2, -(c - s) / 2, (c - s) / 2
    # The rotation is the intended one: its columns are the optical axes in the ground frame,
    # x to the right and z forward and down.
    rot = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
    np.testing.assert_allclose(rot[:, 0], [0.0, -1.0, 0.0], atol=1e-12)
    forward_down = [math.cos(pitch_rad), 0.0, -math.sin(pitch_rad)]
    np.testing.assert_allclose(rot[:, 2], forward_down, atol=1e-12)
    tf = TransformStamped()
    tf.header.frame_id, tf.child_frame_id = "base_footprint", "camera_optical_frame"
    tf.transform.translation.x, tf.transform.translation.z = 1.4, height_m
    r = tf.transform.rotation
    r.x, r.y, r.z, r.w = x, y, z, w
    return tf


def test_camera_mounting_from_tf_through_the_documented_tf2_ros_api(
    ros_env: Any, ros_domain: int, oracle_dir: Path, drive: list[Any], tmp_path: Path
) -> None:
    """``scale.ground_frame``: the node reads camera height and pitch from TF.

    tf2_ros is not installable from PyPI, so the node process gets a stand-in ``tf2_ros``
    (test/ros/tf2_stand_in) written from tf2_ros's documented Python API: ``Buffer()``,
    ``TransformListener(buffer, node)``, ``Buffer.lookup_transform(target, source, time,
    timeout)`` returning the geometry_msgs/TransformStamped that maps points from ``source``
    into ``target``, and LookupException / ConnectivityException / ExtrapolationException
    (TransformException subclasses) when it cannot. This test publishes the camera's pose in
    ``base_footprint`` as the robot would (parent base_footprint, child the optical frame) and
    checks over real DDS: metric depth and the TF height/pitch in /diagnostics; for an image
    whose frame has no transform, a warning (log and /diagnostics) and depth still in metres
    from the last good fit; with scale.camera_* set, those parameters as the fallback.
    """
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    first = drive[0]
    height, pitch = float(first.camera_height_m), float(first.pitch_rad)
    # The robot's static transform, latched for the node that starts later (as /tf_static).
    robot = ros_env.add_node(Node("robot_tf", context=ros_env.context))
    latched = QoSProfile(
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )
    tf_pub = robot.create_publisher(type(_camera_in_ground(height, pitch)), TF_STATIC, latched)
    tf_pub.publish(_camera_in_ground(height, pitch))

    ns = "/cp_scale_tf_live"
    repo = Path(__file__).resolve().parents[2]
    path = os.pathsep.join([str(TF_STAND_IN), str(repo), os.environ.get("PYTHONPATH", "")])
    log_path = tmp_path / "node.log"
    with log_path.open("w") as log:
        node = subprocess.Popen(
            [sys.executable, "-m", "cloudypoints_ros.depth_node", "--ros-args"]
            + ["--params-file", str(repo / "config" / "depth.yaml"), "-r", f"__ns:={ns}"]
            + ["-p", f"model_path:={oracle_dir}", "-p", "stats_period_s:=0.3"]
            + ["-p", "scale.ground_frame:=base_footprint"],
            env=dict(os.environ, PYTHONPATH=path),
            cwd=repo,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        probe = Probe(ros_env.context, ns, name="tf_probe")
        ros_env.add_node(probe.node)
        probe.latest_status(timeout=90.0)  # the node is up
        probe.wait_connected(timeout=30.0)

        def abs_rel_of(frame: Any, frame_id: str) -> float:
            stamp = time.time_ns()
            image = raw_image(encode_depth(frame.depth_m), "rgb8", stamp)
            set_header(image, stamp, frame_id)
            got = probe.request(image, camera_info(frame.intrinsics, stamp))
            abs_rel, coverage = _abs_rel_and_coverage(_depth_of(got["depth/image"]), frame.depth_m)
            assert coverage > 0.9
            return abs_rel

        # 1. The mounting from TF: metric depth, and the TF's height and pitch reported.
        errors = [abs_rel_of(frame, "camera_optical_frame") for frame in drive]
        assert max(errors) <= 0.10 and float(np.mean(errors)) < 0.03, errors
        status = probe.latest_status(lambda kv: int(kv.get("scale.fits", 0)) >= len(drive))
        assert status["scale.mounting"] == "tf base_footprint -> camera_optical_frame"
        assert float(status["scale.camera_height_m"]) == pytest.approx(height, abs=1e-4)
        assert float(status["scale.camera_pitch_rad"]) == pytest.approx(pitch, abs=1e-5)
        assert status["scale.used"] == "ground_plane" and status["scale.fit_ok"] == "true"
        assert float(status["scale.scale"]) == pytest.approx(A, rel=0.05)

        # 2. No transform for the image's frame (LookupException): a warning, and metres from
        # the last good fit (no height parameter to fall back to).
        assert abs_rel_of(drive[1], "camera_without_tf") <= 0.10
        status = probe.latest_status(
            lambda kv: (
                "warning.no_ground_transform" in kv and kv.get("scale.used") == "ground_plane_held"
            )
        )
        assert status["scale.mounting"] == "none"
        assert status["scale.camera_height_m"] == "none"
        assert int(status["warning.no_ground_transform"]) >= 1

        # 3. With scale.camera_* set, a failed lookup falls back to them.
        results = probe.set_parameters(
            {"scale.camera_height_m": height, "scale.camera_pitch_rad": pitch}
        )
        assert [r.successful for r in results] == [True, True], [r.reason for r in results]
        assert abs_rel_of(drive[2], "camera_without_tf") <= 0.10
        status = probe.latest_status(
            lambda kv: (
                kv.get("scale.mounting") == "parameters" and kv.get("scale.used") == "ground_plane"
            )
        )
        assert float(status["scale.camera_height_m"]) == pytest.approx(height, abs=1e-4)
        # ... and TF still wins where it has the frame.
        assert abs_rel_of(drive[3], "camera_optical_frame") <= 0.10
        probe.latest_status(lambda kv: kv.get("scale.mounting", "").startswith("tf "))
        assert node.poll() is None  # still serving
    finally:
        stop_process(node)
    warnings = [
        line
        for line in log_path.read_text().splitlines()
        if "WARN" in line and "no usable transform base_footprint -> camera_without_tf" in line
    ]
    assert warnings and "does not exist" in warnings[0]
