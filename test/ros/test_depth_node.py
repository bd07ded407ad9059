"""The depth node over real DDS: outputs against the facade and independent geometry, encodings,
bad inputs, run-time parameters, and start-up failures."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import HEIGHT, PARAMS_FILE, REPO, WIDTH
from harness import camera_info, compressed_png, raw_image

pytestmark = pytest.mark.ros

CLOUD_DTYPE = np.dtype(
    {
        "names": ["x", "y", "z", "rgb"],
        "formats": ["<f4", "<f4", "<f4", "<u4"],
        "offsets": [0, 4, 8, 12],
        "itemsize": 16,
    }
)


def _stamp() -> int:
    # Unique per request and close to the node's clock, so latencies are real.
    time.sleep(0.001)
    return time.time_ns()


def _depth_of(msg: Any) -> np.ndarray:
    assert msg.encoding == "32FC1"
    assert msg.step == msg.width * 4
    arr = np.frombuffer(bytes(msg.data), dtype=">f4" if msg.is_bigendian else "<f4")
    return arr.reshape(msg.height, msg.width).astype(np.float32)


def _cloud_points(msg: Any) -> np.ndarray:
    assert msg.point_step == 16 and msg.row_step == 16 * msg.width
    return np.frombuffer(bytes(msg.data), dtype=CLOUD_DTYPE).reshape(msg.height, msg.width)


@pytest.fixture(scope="module")
def main_node(ros_env: Any, model_dir: Path) -> Any:
    return ros_env.start_depth_node("/cp_main", model_dir)


@pytest.fixture()
def node(main_node: Any) -> Any:
    return main_node[0]


@pytest.fixture()
def probe(main_node: Any) -> Any:
    return main_node[1]


def test_params_file_sets_declared_parameters(node: Any) -> None:
    """Every key of config/depth.yaml is a declared parameter and reached the node."""
    data = yaml.safe_load(PARAMS_FILE.read_text())
    (key,) = data.keys()
    assert key.endswith("cloudypoints_depth")

    def leaves(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in tree.items():
            if isinstance(v, dict):
                out.update(leaves(v, f"{prefix}{k}."))
            else:
                out[prefix + k] = v
        return out

    from cloudypoints_ros.depth_node import PARAMETERS

    values = leaves(data[key]["ros__parameters"])
    assert set(values) == {p.name for p in PARAMETERS}
    for name, value in values.items():
        if name in ("model_path", "stats_period_s"):
            continue  # overridden by the fixture
        assert node.get_parameter(name).value == value, name
        described = node.describe_parameter(name)
        assert described.description


def test_depth_image_and_camera_info_match_the_facade(
    probe: Any, frames: list[Any], reference_estimator: Any
) -> None:
    frame = frames[0]
    stamp = _stamp()
    got = probe.request(
        raw_image(frame.rgb, "rgb8", stamp),
        camera_info(frame.intrinsics, stamp),
        topics=("depth/image", "depth/camera_info"),
    )
    depth_msg, info_msg = got["depth/image"], got["depth/camera_info"]
    assert depth_msg.header.frame_id == "camera_optical_frame"
    assert (depth_msg.header.stamp.sec, depth_msg.header.stamp.nanosec) == divmod(stamp, 10**9)
    assert (depth_msg.width, depth_msg.height) == (WIDTH, HEIGHT)
    depth = _depth_of(depth_msg)
    expected = reference_estimator.predict(frame.rgb, frame.intrinsics).depth_m
    np.testing.assert_allclose(depth, expected, rtol=1e-6, atol=0, equal_nan=True)
    # The tiny model's range leaves some pixels invalid: NaN (REP 118), never clamped.
    assert 0.0 < np.isnan(depth).mean() < 0.6
    assert np.nanmin(depth) >= 2.0 and np.nanmax(depth) <= 20.0
    intr = frame.intrinsics
    assert (info_msg.width, info_msg.height) == (WIDTH, HEIGHT)
    np.testing.assert_allclose(
        np.asarray(info_msg.k).reshape(3, 3),
        [[intr.fx_px, 0, intr.cx_px], [0, intr.fy_px, intr.cy_px], [0, 0, 1]],
    )
    assert info_msg.header.stamp == depth_msg.header.stamp


def test_point_cloud_is_the_back_projection_of_the_published_depth(
    probe: Any, frames: list[Any]
) -> None:
    frame = frames[1]
    stamp = _stamp()
    got = probe.request(
        raw_image(frame.rgb, "rgb8", stamp),
        camera_info(frame.intrinsics, stamp),
        topics=("depth/image", "points", "depth/camera_info"),
    )
    cloud = got["points"]
    assert [(f.name, f.offset, f.datatype, f.count) for f in cloud.fields] == [
        ("x", 0, 7, 1),
        ("y", 4, 7, 1),
        ("z", 8, 7, 1),
        ("rgb", 12, 7, 1),
    ]
    assert cloud.header.frame_id == "camera_optical_frame" and cloud.height == 1
    depth = _depth_of(got["depth/image"])
    k = np.asarray(got["depth/camera_info"].k).reshape(3, 3)
    valid = np.isfinite(depth) & (depth >= 0.0) & (depth <= 80.0)  # config/depth.yaml range
    v, u = np.nonzero(valid)  # row-major, the order of an unorganised cloud
    pts = _cloud_points(cloud)[0]
    assert pts.shape[0] == valid.sum() and cloud.is_dense
    z = depth[valid].astype(np.float64)
    np.testing.assert_allclose(pts["z"], z, rtol=1e-6)
    np.testing.assert_allclose(pts["x"], z * (u - k[0, 2]) / k[0, 0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pts["y"], z * (v - k[1, 2]) / k[1, 1], rtol=1e-5, atol=1e-5)
    rgb = frame.rgb[valid].astype(np.uint32)
    np.testing.assert_array_equal(pts["rgb"], (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2])


def test_message_objects_and_serialized_publishing_send_the_same_frames(
    ros_env: Any, model_dir: Path, node: Any, probe: Any, frames: list[Any], monkeypatch: Any
) -> None:
    """The node publishes bytes it serialized itself, straight through rcl with the GIL
    released (``rcl_direct``), else through rclpy's ``publish``; where the middleware would
    not read them back (``raw_publishing_works`` false) it publishes message objects. All three
    deliver the same depth, CameraInfo, cloud and colour map."""
    from cloudypoints_ros import conversions as conv
    from cloudypoints_ros import depth_node

    assert conv.raw_publishing_works()
    assert node._raw_out and node._direct is not None
    monkeypatch.setattr(depth_node, "direct_publisher", lambda: None)
    rclpy_node, rclpy_probe = ros_env.start_depth_node("/cp_rclpy_raw", model_dir)
    assert rclpy_node._raw_out and rclpy_node._direct is None
    monkeypatch.setattr(conv, "raw_publishing_works", lambda: False)
    objects_node, objects_probe = ros_env.start_depth_node("/cp_objects", model_dir)
    assert objects_node._raw_out is False
    # A publish thread reuses the message buffers.
    assert any(t.name.endswith("_publish") for t in objects_node._workers)
    frame = frames[2]
    topics = ("depth/image", "depth/camera_info", "points", "depth/colormap")
    got = []
    for p in (probe, rclpy_probe, objects_probe):
        stamp = _stamp()
        got.append(
            p.request(
                raw_image(frame.rgb, "rgb8", stamp),
                camera_info(frame.intrinsics, stamp),
                topics=topics,
            )
        )
    direct = got[0]
    for other in got[1:]:
        for topic in topics:
            a, b = direct[topic], other[topic]
            b.header.stamp = a.header.stamp  # each request had its own stamp
            assert a == b, topic
    assert len(direct["points"].data) > 0


def _encode(rgb: np.ndarray, encoding: str) -> tuple[np.ndarray, np.ndarray]:
    """(pixels in ``encoding``, the RGB the node must see)."""
    gray = rgb.mean(axis=2).astype(np.uint8)
    alpha = np.full(rgb.shape[:2] + (1,), 200, dtype=np.uint8)
    if encoding == "rgb8":
        return rgb, rgb
    if encoding == "bgr8":
        return rgb[..., ::-1], rgb
    if encoding == "rgba8":
        return np.concatenate([rgb, alpha], axis=2), rgb
    if encoding == "bgra8":
        return np.concatenate([rgb[..., ::-1], alpha], axis=2), rgb
    if encoding == "mono8":
        return gray, np.repeat(gray[..., None], 3, axis=2)
    if encoding == "mono16":
        # The high byte carries the grey level (0x1234 * 257 keeps it exactly).
        return gray.astype(np.uint16) * 257, np.repeat(gray[..., None], 3, axis=2)
    raise AssertionError(encoding)


@pytest.mark.parametrize(
    ("encoding", "pad", "big_endian"),
    [
        ("rgb8", 0, False),
        ("bgr8", 0, False),
        ("rgba8", 0, False),
        ("bgra8", 0, False),
        ("mono8", 0, False),
        ("mono16", 0, False),
        ("mono16", 6, True),
        ("rgb8", 13, False),
        ("bgra8", 32, False),
    ],
)
def test_every_encoding_and_padded_rows(
    probe: Any,
    frames: list[Any],
    reference_estimator: Any,
    encoding: str,
    pad: int,
    big_endian: bool,
) -> None:
    frame = frames[2]
    pixels, seen = _encode(frame.rgb, encoding)
    stamp = _stamp()
    msg = raw_image(pixels, encoding, stamp, pad=pad, big_endian=big_endian)
    assert msg.step == WIDTH * (pixels.size // (WIDTH * HEIGHT)) * pixels.itemsize + pad
    got = probe.request(msg, camera_info(frame.intrinsics, stamp))
    expected = reference_estimator.predict(seen, frame.intrinsics).depth_m
    np.testing.assert_allclose(_depth_of(got["depth/image"]), expected, rtol=1e-6, equal_nan=True)


def test_camera_info_is_paired_by_stamp(
    probe: Any, frames: list[Any], reference_estimator: Any
) -> None:
    """An image takes the CameraInfo with its own stamp, even when a newer one has arrived."""
    frame = frames[0]
    own = frame.intrinsics
    other = replace(own, fx_px=own.fx_px * 1.5, fy_px=own.fy_px * 1.5)  # same size
    stamp = _stamp()
    probe.info_pub.publish(camera_info(own, stamp))
    probe.info_pub.publish(camera_info(other, stamp + 1))
    time.sleep(0.1)
    got = probe.request(
        raw_image(frame.rgb, "rgb8", stamp), None, topics=("depth/image", "depth/camera_info")
    )
    assert got["depth/camera_info"].k[0] == pytest.approx(own.fx_px)
    expected = reference_estimator.predict(frame.rgb, own).depth_m
    np.testing.assert_allclose(_depth_of(got["depth/image"]), expected, rtol=1e-6, equal_nan=True)
    # A stamp no CameraInfo has: the latest one is used (with a warning counted).
    stamp2 = _stamp()
    got = probe.request(raw_image(frame.rgb, "rgb8", stamp2), None, topics=("depth/camera_info",))
    assert got["depth/camera_info"].k[0] == pytest.approx(other.fx_px)
    status = probe.latest_status(lambda s: int(s.get("warning.camera_info_stamp_mismatch", 0)) > 0)
    assert int(status["warning.camera_info_stamp_mismatch"]) >= 1


def test_a_camera_info_later_than_its_image_is_waited_for(
    ros_env: Any, model_dir: Path, frames: list[Any]
) -> None:
    """The worker that took the image takes the CameraInfo messages itself: one that arrives
    after its image (within camera_info_wait_s) is still the one used, not the latest."""
    node, probe = ros_env.start_depth_node("/cp_late_info", model_dir, {"camera_info_wait_s": 1.0})
    frame = frames[0]
    own = frame.intrinsics
    other = replace(own, fx_px=own.fx_px * 1.5, fy_px=own.fy_px * 1.5)
    first = _stamp()
    got = probe.request(
        raw_image(frame.rgb, "rgb8", first), camera_info(other, first), ("depth/camera_info",)
    )
    assert got["depth/camera_info"].k[0] == pytest.approx(other.fx_px)
    stamp = _stamp()
    probe.image_pub.publish(raw_image(frame.rgb, "rgb8", stamp))
    time.sleep(0.3)  # the worker has the image and waits for its CameraInfo
    assert probe.wait_for("depth/camera_info", stamp, timeout=0.01) is None
    probe.info_pub.publish(camera_info(own, stamp))
    late = probe.wait_for("depth/camera_info", stamp, timeout=10.0)
    assert late is not None and late.k[0] == pytest.approx(own.fx_px)
    assert node._stamps_match


def _bad_inputs(frame: Any) -> list[tuple[str, Any, Any]]:
    """(expected reason, image, camera info) of inputs the node must survive."""
    rgb, intr = frame.rgb, frame.intrinsics
    cases: list[tuple[str, Any, Any]] = []
    stamp = _stamp()
    cases.append(("bad_encoding", raw_image(rgb, "yuv422_yuy2", stamp), camera_info(intr, stamp)))
    stamp = _stamp()
    depth_like = raw_image(np.ones((HEIGHT, WIDTH), np.float32), "32FC1", stamp)
    cases.append(("bad_encoding", depth_like, camera_info(intr, stamp)))
    stamp = _stamp()
    short = raw_image(rgb, "rgb8", stamp)
    short.data = bytes(short.data)[: short.step * (HEIGHT - 1)]
    cases.append(("short_data", short, camera_info(intr, stamp)))
    stamp = _stamp()
    narrow_step = raw_image(rgb, "rgb8", stamp)
    narrow_step.step = WIDTH * 3 - 1
    cases.append(("short_data", narrow_step, camera_info(intr, stamp)))
    stamp = _stamp()
    empty = raw_image(rgb, "rgb8", stamp)
    empty.height, empty.width, empty.step, empty.data = 0, 0, 0, b""
    cases.append(("empty_image", empty, camera_info(intr, stamp)))
    for bad_k0 in (0.0, math.nan, math.inf, -100.0):
        stamp = _stamp()
        info = camera_info(intr, stamp)
        k = list(info.k)
        k[0] = bad_k0
        info.k = k
        info.p = [0.0] * 12  # so that K is what counts
        cases.append(("bad_camera_info", raw_image(rgb, "rgb8", stamp), info))
    stamp = _stamp()
    cases.append(
        (
            "camera_info_size_mismatch",
            raw_image(rgb, "rgb8", stamp),
            camera_info(intr.resized(WIDTH * 2, HEIGHT * 2), stamp),
        )
    )
    return cases


def test_bad_inputs_are_counted_and_the_node_keeps_serving(probe: Any, frames: list[Any]) -> None:
    frame = frames[0]
    expected: dict[str, int] = {}
    for reason, image, info in _bad_inputs(frame):
        stamp = int(image.header.stamp.sec) * 10**9 + image.header.stamp.nanosec
        probe.info_pub.publish(info)
        time.sleep(0.02)
        probe.image_pub.publish(image)
        assert probe.wait_for("depth/image", stamp, timeout=0.5) is None, reason
        expected[reason] = expected.get(reason, 0) + 1
        # ... and a good frame right after is served.
        good = _stamp()
        probe.request(raw_image(frame.rgb, "rgb8", good), camera_info(frame.intrinsics, good))

    def counted(status: dict[str, str]) -> bool:
        return all(int(status.get(f"error.{r}", 0)) >= n for r, n in expected.items())

    status = probe.latest_status(counted)
    assert int(status["errors"]) >= sum(expected.values())
    assert int(status["frames_out"]) >= len(expected)


def test_runtime_cloud_parameters_apply_on_the_next_frame(
    probe: Any, node: Any, frames: list[Any]
) -> None:
    frame = frames[1]
    change = {
        "cloud.stride": 2,
        "cloud.min_range_m": 6.0,
        "cloud.max_range_m": 15.0,
        "cloud.organized": True,
        "cloud.color": False,
    }
    results = probe.set_parameters(change)
    assert all(r.successful for r in results), [r.reason for r in results]
    try:
        stamp = _stamp()
        got = probe.request(
            raw_image(frame.rgb, "rgb8", stamp),
            camera_info(frame.intrinsics, stamp),
            topics=("depth/image", "points"),
        )
        cloud = got["points"]
        assert (cloud.height, cloud.width) == (HEIGHT // 2, WIDTH // 2)
        assert [f.name for f in cloud.fields] == ["x", "y", "z"] and not cloud.is_dense
        depth = _depth_of(got["depth/image"])[::2, ::2]
        keep = np.isfinite(depth) & (depth >= 6.0) & (depth <= 15.0)
        z = _cloud_points(cloud)["z"]
        np.testing.assert_array_equal(np.isfinite(z), keep)
        np.testing.assert_allclose(z[keep], depth[keep], rtol=1e-6)
        # Refused: an inverted range (the callback) and a stride out of its declared range.
        (bad,) = probe.set_parameters({"cloud.min_range_m": 50.0})
        assert not bad.successful and "max_range_m" in bad.reason
        (bad,) = probe.set_parameters({"cloud.stride": 0})
        assert not bad.successful
        (bad,) = probe.set_parameters({"output_resolution": "half"})
        assert not bad.successful and "output_resolution" in bad.reason
        assert node.get_parameter("cloud.stride").value == 2
    finally:
        probe.set_parameters(
            {
                "cloud.stride": 1,
                "cloud.min_range_m": 0.0,
                "cloud.max_range_m": 80.0,
                "cloud.organized": False,
                "cloud.color": True,
            }
        )


def test_output_resolution_model_publishes_model_sized_depth(
    probe: Any, frames: list[Any], reference_estimator: Any
) -> None:
    frame = frames[0]
    assert all(r.successful for r in probe.set_parameters({"output_resolution": "model"}))
    try:
        stamp = _stamp()
        got = probe.request(
            raw_image(frame.rgb, "rgb8", stamp),
            camera_info(frame.intrinsics, stamp),
            topics=("depth/image", "depth/camera_info", "points"),
        )
        expected = reference_estimator.predict(frame.rgb, frame.intrinsics, "model")
        depth = _depth_of(got["depth/image"])
        assert depth.shape == (32, 64)
        np.testing.assert_allclose(depth, expected.depth_m, rtol=1e-6, equal_nan=True)
        info = got["depth/camera_info"]
        assert (info.width, info.height) == (64, 32)
        assert info.k[0] == pytest.approx(expected.intrinsics.fx_px)
        assert info.k[2] == pytest.approx(expected.intrinsics.cx_px)
        assert got["points"].width == np.isfinite(depth).sum()
    finally:
        probe.set_parameters({"output_resolution": "input"})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("model_path", "/elsewhere/model"),
        ("backend", "torch"),
        ("device", "cuda"),
        ("input_transport", "compressed"),
    ],
)
def test_start_up_parameters_are_refused_at_run_time(
    probe: Any, node: Any, name: str, value: str
) -> None:
    before = node.get_parameter(name).value
    (result,) = probe.set_parameters({name: value})
    assert not result.successful
    assert "start-up only" in result.reason and "restart" in result.reason
    assert node.get_parameter(name).value == before


def test_diagnostics_report_backend_counts_and_latency(probe: Any, frames: list[Any]) -> None:
    frame = frames[0]
    stamp = _stamp()
    probe.request(raw_image(frame.rgb, "rgb8", stamp), camera_info(frame.intrinsics, stamp))
    status = probe.latest_status(lambda s: int(s.get("frames_out", 0)) > 0)
    assert status["backend"] == "onnxruntime" and status["device"] == "cpu"
    assert status["model"] == "ros_test_net"
    assert int(status["frames_in"]) >= int(status["frames_out"]) > 0
    p50, p99 = float(status["latency_p50_ms"]), float(status["latency_p99_ms"])
    assert 0.0 < p50 <= p99 < 5000.0


def test_colormap_is_published_as_rgb8(probe: Any, frames: list[Any]) -> None:
    frame = frames[0]
    stamp = _stamp()
    got = probe.request(
        raw_image(frame.rgb, "rgb8", stamp),
        camera_info(frame.intrinsics, stamp),
        topics=("depth/colormap", "depth/image"),
    )
    cmap = got["depth/colormap"]
    assert cmap.encoding == "rgb8" and (cmap.width, cmap.height) == (WIDTH, HEIGHT)
    pixels = np.frombuffer(bytes(cmap.data), np.uint8).reshape(HEIGHT, WIDTH, 3)
    invalid = np.isnan(_depth_of(got["depth/image"]))
    assert (pixels[invalid] == 0).all() and pixels[~invalid].any()


# ---------------------------------------------------------------------------- other nodes
def test_compressed_transport_and_corrupt_data(
    ros_env: Any, model_dir: Path, frames: list[Any], reference_estimator: Any
) -> None:
    _, probe = ros_env.start_depth_node(
        "/cp_compressed", model_dir, {"input_transport": "compressed"}
    )
    frame = frames[1]
    stamp = _stamp()
    got = probe.request(compressed_png(frame.rgb, stamp), camera_info(frame.intrinsics, stamp))
    expected = reference_estimator.predict(frame.rgb, frame.intrinsics).depth_m
    np.testing.assert_allclose(_depth_of(got["depth/image"]), expected, rtol=1e-6, equal_nan=True)
    for blob in (b"\x89PNG\r\n\x1a\nnot really", b""):
        stamp = _stamp()
        bad = compressed_png(frame.rgb, stamp)
        bad.data = blob
        probe.info_pub.publish(camera_info(frame.intrinsics, stamp))
        probe.compressed_pub.publish(bad)
        assert probe.wait_for("depth/image", stamp, timeout=0.5) is None
    stamp = _stamp()
    probe.request(compressed_png(frame.rgb, stamp), camera_info(frame.intrinsics, stamp))
    probe.latest_status(
        lambda s: (
            int(s.get("error.bad_compressed_data", 0)) >= 1
            and int(s.get("error.empty_image", 0)) >= 1
        )
    )


def test_fallback_intrinsics_when_no_camera_info(
    ros_env: Any, model_dir: Path, frames: list[Any], reference_estimator: Any
) -> None:
    _, probe = ros_env.start_depth_node("/cp_fallback", model_dir, {"fallback.timeout_s": 0.0})
    frame = frames[0]
    stamp = _stamp()
    probe.image_pub.publish(raw_image(frame.rgb, "rgb8", stamp))
    assert probe.wait_for("depth/image", stamp, timeout=0.5) is None
    probe.latest_status(lambda s: int(s.get("error.no_camera_info", 0)) >= 1)

    assert all(r.successful for r in probe.set_parameters({"fallback.fx": 150.0}))
    stamp = _stamp()
    got = probe.request(
        raw_image(frame.rgb, "rgb8", stamp), None, topics=("depth/image", "depth/camera_info")
    )
    from cloudypoints_core.geometry import Intrinsics

    intr = Intrinsics(150.0, 150.0, (WIDTH - 1) / 2, (HEIGHT - 1) / 2, WIDTH, HEIGHT)
    assert list(got["depth/camera_info"].k) == pytest.approx(list(intr.k_matrix().reshape(-1)))
    expected = reference_estimator.predict(frame.rgb, intr).depth_m
    np.testing.assert_allclose(_depth_of(got["depth/image"]), expected, rtol=1e-6, equal_nan=True)
    probe.latest_status(lambda s: int(s.get("warning.camera_info_fallback", 0)) >= 1)


class _SlowEstimator:
    """The real facade, slowed down so that a burst outruns it."""

    def __init__(self, inner: Any, delay_s: float) -> None:
        self._inner, self._delay_s = inner, delay_s
        self.spec = inner.spec
        self.backend_name, self.device = inner.backend_name, inner.device

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(self._delay_s)
        return self._inner.predict(*args, **kwargs)


def test_every_worker_runs_its_network_once_before_the_first_frame(
    ros_env: Any, model_dir: Path, monkeypatch: Any
) -> None:
    """Each inference worker's network has run once by the time the node is up (a runtime's
    first run is slow); a failing warm-up is a warning, not a refusal to start."""
    from cloudypoints_ros.depth_node import DepthNode

    warmed: list[tuple[int, int, int]] = []
    real = DepthNode._warm_up_network

    def spy(self: Any, estimator: Any) -> None:
        calls: list[tuple[int, ...]] = []
        infer = estimator.backend.infer
        estimator.backend.infer = lambda batch: calls.append(batch.shape) or infer(batch)
        real(self, estimator)
        estimator.backend.infer = infer
        warmed.extend(calls)

    monkeypatch.setattr(DepthNode, "_warm_up_network", spy)
    node, _ = ros_env.start_depth_node("/cp_warm", model_dir, {"inference_workers": 2})
    spec = node._estimator.spec
    assert warmed == [(1, 3, spec.input_height, spec.input_width)] * 2

    class Broken:
        spec = node._estimator.spec

        class backend:  # noqa: N801 - a stand-in attribute namespace
            @staticmethod
            def infer(batch: Any) -> Any:
                raise RuntimeError("no memory on the device")

    real(node, Broken())  # logs a warning, raises nothing


class _SkyEstimator:
    """The real facade with every pixel made invalid (a camera that sees only sky)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.spec = inner.spec
        self.backend_name, self.device = inner.backend_name, inner.device

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        result = self._inner.predict(*args, **kwargs)
        result.depth_m[:] = np.nan
        return result


def test_a_frame_without_valid_depth_still_gives_its_messages(
    ros_env: Any, model_dir: Path, frames: list[Any], reference_estimator: Any
) -> None:
    node, probe = ros_env.start_depth_node(
        "/cp_sky", model_dir, estimator=_SkyEstimator(reference_estimator)
    )
    frame = frames[0]
    stamp = _stamp()
    got = probe.request(
        raw_image(frame.rgb, "rgb8", stamp),
        camera_info(frame.intrinsics, stamp),
        topics=("depth/image", "points"),
    )
    assert np.isnan(_depth_of(got["depth/image"])).all()
    cloud = got["points"]
    assert (cloud.height, cloud.width, len(cloud.data), cloud.is_dense) == (1, 0, 0, True)
    assert node.stats.snapshot().errors_total == 0


def test_burst_reads_only_the_newest_frames_and_counts_the_rest(
    ros_env: Any, model_dir: Path, frames: list[Any], reference_estimator: Any
) -> None:
    node, probe = ros_env.start_depth_node(
        "/cp_burst",
        model_dir,
        {"reliable_input": True, "stats_period_s": 0.2},
        estimator=_SlowEstimator(reference_estimator, 0.3),
    )
    frame = frames[0]
    stamps = []
    for _ in range(10):  # 50 Hz against 3 Hz of processing
        stamp = _stamp()
        stamps.append(stamp)
        probe.info_pub.publish(camera_info(frame.intrinsics, stamp))
        probe.image_pub.publish(raw_image(frame.rgb, "rgb8", stamp))
        time.sleep(0.02)
    assert probe.wait_for("depth/image", stamps[-1], timeout=5.0) is not None
    time.sleep(0.4)
    served = [s for s in stamps if s in probe.received["depth/image"]]
    snap = node.stats.snapshot()
    # About 0.35 s of work for 10 frames in 0.2 s: the worker takes the first, and when it is
    # free again the newest two left in the DDS reader's keep-last queue (the older one only
    # to drop it); the images superseded in the reader meanwhile were never taken nor read,
    # and the publishers' sequence numbers account for them (a loaded machine may lose one
    # from the middleware's keep-last history of the sender).
    assert snap.frames_out == len(served) <= 3 and snap.errors_total == 0
    assert snap.frames_in <= 5 and snap.skipped >= 5
    assert 9 <= snap.frames_in + snap.skipped <= 10
    assert snap.dropped == snap.frames_in - snap.frames_out
    assert served[-1] == stamps[-1]
    # The same counts in /diagnostics.
    status = probe.latest_status(
        lambda s: s["frames_out"] == str(len(served)) and s["skipped"] == str(snap.skipped),
        timeout=5.0,
    )
    assert int(status["frames_in"]) + int(status["skipped"]) == snap.frames_in + snap.skipped


# ---------------------------------------------------------------------------- start-up
def _run_node(args: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "cloudypoints_ros.depth_node", "--ros-args", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )


def test_missing_or_corrupt_model_or_bad_arguments_exit_non_zero(
    tmp_path: Path, ros_domain: int
) -> None:
    missing = _run_node(["-p", f"model_path:={tmp_path / 'nowhere'}"])
    assert missing.returncode == 1
    assert "cannot start" in missing.stderr and "does not exist" in missing.stderr
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    from ros_fixtures import test_spec

    test_spec().save(corrupt / "spec.yaml")
    (corrupt / "model.onnx").write_bytes(b"\x00 definitely not protobuf")
    bad = _run_node(["-p", f"model_path:={corrupt}"])
    assert bad.returncode == 1 and "cannot start" in bad.stderr
    malformed = _run_node(["-p", "model_path:="])  # rcl refuses an override without a value
    assert malformed.returncode == 2 and "bad ROS arguments" in malformed.stderr


# ---------------------------------------------------------------------------- workers
def test_in_order_hand_over_never_lets_a_fast_worker_overtake() -> None:
    import threading

    from cloudypoints_ros.depth_node import _InOrder

    box: _InOrder[str] = _InOrder()
    for seq in (5, 6, 7):
        box.start(seq)
    box.finish(6, "six")
    box.finish(7, "seven")
    assert box.get(timeout=0.05) is None  # 5 is still being inferred
    assert not box.wait_for_room(timeout=0.05)  # two finished items wait: workers pause
    # The worker holding the oldest frame hands it over although the box is "full": the
    # situation that would deadlock if finish waited for room.
    box.finish(5, "five")
    assert [box.get(timeout=1.0) for _ in range(3)] == ["five", "six", "seven"]
    assert box.wait_for_room(timeout=0.05)
    box.start(8)
    box.start(9)
    box.finish(8, None)  # rejected: it must not hold back 9
    box.finish(9, "nine")
    assert box.get(timeout=1.0) == "nine"
    # Newest wins: a frame finished while the publisher is still busy supersedes the one
    # waiting, so the publisher never works through a backlog.
    box.start(10)
    assert box.finish(10, "ten") == 0
    assert not box.wait_for_room(timeout=0.0)
    box.start(11)
    assert box.finish(11, "eleven") == 1
    assert box.get(timeout=1.0) == "eleven" and box.get(timeout=0.05) is None
    waiter = threading.Thread(target=lambda: box.get(timeout=5.0))
    waiter.start()
    box.close()
    waiter.join(timeout=2.0)
    assert not waiter.is_alive() and not box.wait_for_room(timeout=0.0)


def test_worker_gate_pauses_extra_workers_that_only_compete_for_the_cores() -> None:
    from cloudypoints_ros.depth_node import _WorkerGate

    gate = _WorkerGate(max_slowdown=1.5, probe_s=3600.0)
    assert gate.may_start(1) and math.isnan(gate.slowdown)  # learning
    gate.end(0.010, gate.begin())  # alone: 10 ms
    first = gate.begin()
    second = gate.begin()
    gate.end(0.030, second)  # side by side: 30 ms each, three times slower
    gate.end(0.030, first)  # ended alone, but the other one started meanwhile: shared too
    assert gate.slowdown == pytest.approx(3.0)
    assert gate.may_start(0)
    assert gate.may_start(1)  # one probe ...
    assert not gate.may_start(1)  # ... then paused until the next probe
    fast = _WorkerGate(max_slowdown=1.5)
    fast.end(0.010, fast.begin())
    a, b = fast.begin(), fast.begin()
    fast.end(0.012, a)
    fast.end(0.012, b)
    assert fast.may_start(1) and fast.may_start(1)  # 1.2x slower: two workers pay


def test_two_workers_publish_a_burst_in_the_order_of_the_images(
    ros_env: Any, model_dir: Path, frames: list[Any]
) -> None:
    node, probe = ros_env.start_depth_node(
        "/cp_workers", model_dir, {"inference_workers": 2, "reliable_input": True}
    )
    assert len(node._estimators) == 2
    # Serialized publishing: the workers send, in order, and there is no publish thread.
    assert node._raw_out and len(node._workers) == 2
    stamps = []
    frame = frames[0]
    for _ in range(12):
        stamp = _stamp()
        stamps.append(stamp)
        probe.info_pub.publish(camera_info(frame.intrinsics, stamp))
        probe.image_pub.publish(raw_image(frame.rgb, "rgb8", stamp))
        time.sleep(0.004)  # faster than the model: some frames are dropped, newest wins
    assert probe.wait_for("depth/image", stamps[-1], timeout=10.0) is not None
    with probe._cond:
        arrival = list(probe.received["depth/image"])  # dict order = order of receipt
    got = [s for s in arrival if s in stamps]
    assert got == sorted(got) and got[-1] == stamps[-1]


def test_the_bundled_model_is_recognised_for_the_start_up_note(tmp_path: Path) -> None:
    from cloudypoints_core.inference.package import default_model_path
    from cloudypoints_ros.depth_node import BUNDLED_MODEL_NOTE, _is_bundled_model

    assert _is_bundled_model(None) and _is_bundled_model("default")
    assert _is_bundled_model(str(default_model_path()))
    assert _is_bundled_model(str(default_model_path() / "spec.yaml"))
    assert not _is_bundled_model(str(tmp_path))
    assert "Use a model that works on your camera" in BUNDLED_MODEL_NOTE
