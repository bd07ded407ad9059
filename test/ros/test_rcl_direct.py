"""rcl_direct: serialized messages published through rcl's C API (GIL released) arrive as
rclpy's own ``publish`` sends them, byte for byte, over real DDS."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.impl.implementation_singleton import rclpy_implementation  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from sensor_msgs.msg import Image, PointCloud2  # noqa: E402

from cloudypoints_ros import rcl_direct  # noqa: E402

InvalidHandle = rclpy_implementation.InvalidHandle


@pytest.fixture()
def graph(ros_domain: Any) -> Any:
    context = Context()
    rclpy.init(context=context, domain_id=ros_domain)
    node = Node("rcl_direct_test", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    try:
        yield node
    finally:
        executor.shutdown()
        spin.join(timeout=5.0)
        node.destroy_node()
        context.try_shutdown()


def _raw_receiver(node: Node, msg_type: Any, topic: str) -> tuple[Any, list[bytes], Any]:
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pub = node.create_publisher(msg_type, topic, qos)
    got: list[bytes] = []
    arrived = threading.Condition()

    def on_msg(data: bytes) -> None:
        with arrived:
            got.append(data)
            arrived.notify_all()

    node.create_subscription(msg_type, topic, on_msg, qos, raw=True)
    deadline = time.monotonic() + 10.0
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert pub.get_subscription_count() == 1
    return pub, got, arrived


def _wait(got: list[bytes], arrived: Any, n: int) -> None:
    with arrived:
        assert arrived.wait_for(lambda: len(got) >= n, timeout=10.0), f"{len(got)} of {n}"


def test_direct_publish_delivers_the_bytes_rclpy_would(graph: Node) -> None:
    direct = rcl_direct.direct_publisher()
    assert direct is not None, "librcl was not found in this process"
    pub, got, arrived = _raw_receiver(graph, PointCloud2, "direct_cloud")
    cloud = PointCloud2()
    cloud.header.frame_id = "cam"
    cloud.height, cloud.width, cloud.point_step = 1, 70_000, 16  # 1.1 MB: many fragments
    cloud.row_step = cloud.point_step * cloud.width
    cloud.data = np.random.default_rng(0).integers(0, 256, cloud.row_step, np.uint8).tobytes()
    blob = serialize_message(cloud)
    direct.publish(pub, blob)
    pub.publish(blob)  # rclpy's own way, for comparison
    _wait(got, arrived, 2)
    assert got[0] == got[1] == blob
    assert deserialize_message(got[0], PointCloud2) == cloud


def test_direct_publish_refuses_what_it_cannot_send(graph: Node) -> None:
    direct = rcl_direct.direct_publisher()
    assert direct is not None
    pub, got, arrived = _raw_receiver(graph, Image, "direct_image")
    with pytest.raises(TypeError, match="bytes"):
        direct.publish(pub, bytearray(serialize_message(Image())))  # type: ignore[arg-type]
    image = Image()
    image.height, image.width, image.encoding, image.step = 1, 2, "mono8", 2
    image.data = b"\x01\x02"
    direct.publish(pub, serialize_message(image))
    _wait(got, arrived, 1)
    assert deserialize_message(got[-1], Image) == image
    graph.destroy_publisher(pub)
    with pytest.raises(InvalidHandle):  # never a call on a freed publisher
        direct.publish(pub, serialize_message(image))


def test_direct_publishing_can_be_turned_off(monkeypatch: Any) -> None:
    monkeypatch.setenv("CLOUDYPOINTS_NO_DIRECT_PUBLISH", "1")
    assert rcl_direct.direct_publisher() is None
    monkeypatch.setenv("CLOUDYPOINTS_NO_DIRECT_PUBLISH", "0")
    assert rcl_direct.direct_publisher() is not None


def test_an_rcl_error_is_raised_with_the_topic_and_reset(graph: Node, monkeypatch: Any) -> None:
    """rcl reports failures by return code and a per-thread error state: the publish raises,
    names the topic and resets that state (rcl would otherwise complain on the next error)."""
    direct = rcl_direct.direct_publisher()
    assert direct is not None
    pub = graph.create_publisher(Image, "direct_failing", 1)
    resets: list[int] = []
    monkeypatch.setattr(direct, "_publish", lambda *_args: 1)  # RCL_RET_ERROR
    monkeypatch.setattr(direct, "_reset_error", lambda: resets.append(1))
    with pytest.raises(RuntimeError, match="direct_failing.*rcl_ret_t 1"):
        direct.publish(pub, serialize_message(Image()))
    assert resets == [1]


def test_serialized_taker_takes_what_rclpy_takes(ros_domain: Any) -> None:
    """The taker returns the published bytes and the message info the node reads (sequence
    number, publisher GID) equal to rclpy's own raw take."""
    context = Context()
    rclpy.init(context=context, domain_id=ros_domain)
    node = Node("rcl_take_test", context=context)  # never spun: the test takes by hand
    taker = rcl_direct.serialized_taker()
    assert taker is not None
    try:
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        pub = node.create_publisher(Image, "taken", qos)
        sub = node.create_subscription(Image, "taken", lambda _m: None, qos, raw=True)
        deadline = time.monotonic() + 10.0
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert taker.take(sub) is None  # nothing yet
        images = []
        for i in range(4):
            image = Image()
            image.height, image.width, image.encoding, image.step = 2, 3, "mono8", 3
            image.data = bytes(range(i, i + 6))
            image.header.frame_id = f"f{i}"
            images.append(image)
            pub.publish(image)
        taken: list[tuple[bytes, dict[str, Any]]] = []
        deadline = time.monotonic() + 10.0
        while len(taken) < 4 and time.monotonic() < deadline:
            got = taker.take(sub) if len(taken) % 2 == 0 else sub.handle.take_message(Image, True)
            if got is None:
                time.sleep(0.01)
            else:
                taken.append(got)
        # taker, rclpy, taker, rclpy (bytes compare only up to CDR padding, left uninitialised)
        assert [deserialize_message(blob, Image) for blob, _ in taken] == images
        seqs = [info["publication_sequence_number"] for _, info in taken]
        assert seqs == list(range(seqs[0], seqs[0] + 4))
        gids = {bytes(info["publisher_gid"]["data"][:16]) for _, info in taken}
        assert len(gids) == 1 and gids != {bytes(16)}
    finally:
        taker.close()
        node.destroy_node()
        context.try_shutdown()
    with pytest.raises(RuntimeError, match="after close"):
        taker.take(sub)
