"""A probe node for the ROS tests: publishes camera messages, collects the depth node's outputs.

Input messages are built here by hand (bytes of numpy arrays), not with ``conversions``, so the
tests check the node's decoding against an independent encoder.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.context import Context
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from cloudypoints_core.geometry import Intrinsics

OUTPUT_TOPICS = {
    "depth/image": Image,
    "depth/camera_info": CameraInfo,
    "points": PointCloud2,
    "depth/colormap": Image,
}


def stamp_ns_of(msg: Any) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def set_header(msg: Any, stamp_ns: int, frame_id: str = "camera_optical_frame") -> None:
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
    msg.header.frame_id = frame_id


def stop_process(proc: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    """Stop a node process the way ``ros2 launch`` does (SIGTERM), killing it if it hangs."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5.0)


def raw_image(
    pixels: npt.NDArray[Any],
    encoding: str,
    stamp_ns: int,
    *,
    pad: int = 0,
    big_endian: bool = False,
) -> Image:
    """An Image of ``pixels`` ((H, W) or (H, W, C)) with ``pad`` extra bytes after every row."""
    arr = np.ascontiguousarray(pixels)
    if arr.dtype.itemsize > 1:
        arr = arr.astype(arr.dtype.newbyteorder(">" if big_endian else "<"))
    h, w = arr.shape[:2]
    row = arr.reshape(h, -1).view(np.uint8).reshape(h, -1)
    padded = np.zeros((h, row.shape[1] + pad), dtype=np.uint8)
    padded[:, : row.shape[1]] = row
    padded[:, row.shape[1] :] = 0xAB  # garbage the decoder must skip
    msg = Image()
    set_header(msg, stamp_ns)
    msg.height, msg.width, msg.encoding = h, w, encoding
    msg.is_bigendian = int(big_endian)
    msg.step = padded.shape[1]
    msg.data = padded.tobytes()
    return msg


def camera_info(intr: Intrinsics, stamp_ns: int, **override: Any) -> CameraInfo:
    msg = CameraInfo()
    set_header(msg, stamp_ns)
    msg.width, msg.height = intr.width, intr.height
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    k = [intr.fx_px, 0.0, intr.cx_px, 0.0, intr.fy_px, intr.cy_px, 0.0, 0.0, 1.0]
    msg.k = k
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = k[:3] + [0.0] + k[3:6] + [0.0] + k[6:] + [0.0]
    for name, value in override.items():
        setattr(msg, name, value)
    return msg


def compressed_png(rgb: npt.NDArray[np.uint8], stamp_ns: int) -> CompressedImage:
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    msg = CompressedImage()
    set_header(msg, stamp_ns)
    msg.format = "rgb8; png compressed bgr8"
    msg.data = buf.tobytes()
    return msg


class Probe:
    """Publishes on the node's inputs in ``namespace`` and records its outputs by stamp."""

    def __init__(self, context: Context, namespace: str, name: str = "cloudypoints_probe") -> None:
        self.node = Node(name, namespace=namespace, context=context)
        self.namespace = namespace
        reliable = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = self.node.create_publisher(Image, "image", reliable)
        self.compressed_pub = self.node.create_publisher(
            CompressedImage, "image/compressed", reliable
        )
        self.info_pub = self.node.create_publisher(CameraInfo, "camera_info", reliable)
        self._cond = threading.Condition()
        self.received: dict[str, dict[int, Any]] = {t: {} for t in OUTPUT_TOPICS}
        self.diagnostics: list[DiagnosticArray] = []
        for topic, msg_type in OUTPUT_TOPICS.items():
            self.node.create_subscription(
                msg_type, topic, lambda m, t=topic: self._store(t, m), reliable
            )
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._store_diag, reliable)
        self._param_client = self.node.create_client(
            SetParameters, f"{namespace.rstrip('/')}/cloudypoints_depth/set_parameters"
        )

    def _store(self, topic: str, msg: Any) -> None:
        with self._cond:
            self.received[topic][stamp_ns_of(msg)] = msg
            self._cond.notify_all()

    def _store_diag(self, msg: DiagnosticArray) -> None:
        with self._cond:
            self.diagnostics.append(msg)
            del self.diagnostics[:-20]
            self._cond.notify_all()

    # ----------------------------------------------------------------------------- waiting
    def wait_connected(self, timeout: float = 10.0) -> None:
        """Until the node's subscriptions and publishers are matched with ours."""
        pubs = (self.image_pub, self.compressed_pub, self.info_pub)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            subs_ok = all(p.get_subscription_count() > 0 for p in (self.info_pub,))
            image_ok = any(p.get_subscription_count() > 0 for p in pubs[:2])
            outs_ok = all(
                self.node.count_publishers(f"{self.namespace.rstrip('/')}/{t}") > 0
                for t in OUTPUT_TOPICS
            )
            if subs_ok and image_ok and outs_ok:
                time.sleep(0.3)  # let the reverse direction (node -> probe) match as well
                return
            time.sleep(0.05)
        raise TimeoutError(f"depth node in {self.namespace} not connected within {timeout} s")

    def wait_for(self, topic: str, stamp_ns: int, timeout: float = 5.0) -> Any | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while stamp_ns not in self.received[topic]:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return self.received[topic][stamp_ns]

    def request(
        self,
        image: Image | CompressedImage,
        info: CameraInfo | None,
        topics: Iterable[str] = ("depth/image",),
        timeout: float = 4.0,
        attempts: int = 3,
    ) -> dict[str, Any]:
        """Publish ``info`` then ``image``; return the outputs with the image's stamp.

        Retries (re-publishing the same messages) because the node subscribes best effort.
        Raises TimeoutError when an output never arrives.
        """
        stamp = stamp_ns_of(image)
        topics = tuple(topics)
        for _ in range(attempts):
            if info is not None:
                self.info_pub.publish(info)
            pub = self.compressed_pub if isinstance(image, CompressedImage) else self.image_pub
            pub.publish(image)
            got = {t: self.wait_for(t, stamp, timeout) for t in topics}
            if all(v is not None for v in got.values()):
                return got
        raise TimeoutError(f"no {topics} for stamp {stamp} in {self.namespace}")

    def latest_status(self, predicate: Any = None, timeout: float = 5.0) -> dict[str, str]:
        """Key/values of the newest diagnostics status of our node that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        prefix = f"{self.namespace.rstrip('/')}/cloudypoints_depth"
        last: dict[str, str] = {}
        with self._cond:
            while True:
                for array in reversed(self.diagnostics):
                    for status in array.status:
                        if status.name.startswith(prefix):
                            last = {kv.key: kv.value for kv in status.values}
                            last["_level"] = str(int.from_bytes(status.level, "little"))
                            last["_message"] = status.message
                            if predicate is None or predicate(last):
                                return last
                            break
                    else:
                        continue
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no matching diagnostics from {prefix}; last: {last}")
                self._cond.wait(remaining)

    # ----------------------------------------------------------------------------- parameters
    def set_parameters(self, values: dict[str, Any], timeout: float = 5.0) -> Sequence[Any]:
        """Set parameters through the node's set_parameters service (as ``ros2 param set``)."""
        if not self._param_client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError("set_parameters service not available")
        request = SetParameters.Request()
        request.parameters = [_parameter_msg(k, v) for k, v in values.items()]
        future = self._param_client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise TimeoutError("set_parameters did not answer")
            time.sleep(0.01)
        return future.result().results

    def destroy(self) -> None:
        self.node.destroy_node()


def _parameter_msg(name: str, value: Any) -> ParameterMsg:
    v = ParameterValue()
    if isinstance(value, bool):
        v.type, v.bool_value = ParameterType.PARAMETER_BOOL, value
    elif isinstance(value, int):
        v.type, v.integer_value = ParameterType.PARAMETER_INTEGER, value
    elif isinstance(value, float):
        v.type, v.double_value = ParameterType.PARAMETER_DOUBLE, value
    else:
        v.type, v.string_value = ParameterType.PARAMETER_STRING, str(value)
    return ParameterMsg(name=name, value=v)
