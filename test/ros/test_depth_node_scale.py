"""The depth node with an imported relative (affine inverse depth) model over real DDS: metric
depth from the camera height in the parameters, scale and shift in /diagnostics, refusal
without a scale source.

The model is the oracle network of the core tests (test/core/inference/oracle_net.py), exported
to a bare ONNX file and imported with the ``midas-v21-small`` preset as a user would import
MiDaS: it reads SynthCity's exact depth encoded in the image and answers ``A / z + B``, so the
truth is known.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from harness import camera_info, raw_image

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
    way out; with tf2_ros the node starts and reads the mounting from TF (not exercised here)."""
    import importlib.util

    from cloudypoints_core.errors import ConfigError

    overrides = {"scale.ground_frame": "base_footprint"}
    if importlib.util.find_spec("tf2_ros") is None:
        with pytest.raises(ConfigError, match="needs tf2_ros.*scale.camera_height_m"):
            ros_env.start_depth_node("/cp_scale_tf", oracle_dir, overrides)
    else:
        node, _ = ros_env.start_depth_node("/cp_scale_tf", oracle_dir, overrides)
        assert node.get_parameter("scale.ground_frame").value == "base_footprint"
