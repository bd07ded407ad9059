"""The node's QoS profiles: sensor-data subscriptions (reliable on request), reliable publishers.

A best-effort subscription matches both best-effort and reliable publishers, so it is the safe
default for camera drivers; a reliable publisher is what RViz and ``ros2 topic echo`` expect with
their default settings (a best-effort publisher is silently invisible to a reliable subscriber,
the most common "my topic is empty" report).
"""

from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)

#: Images queued per subscription in the middleware: the newest and at most one older one, so
#: a brief stall of the executor (a busy machine) does not lose a frame, while under overload
#: the transport holds at most one stale frame. The callback only swaps the frame into a
#: one-slot mailbox, so a deeper queue would just hold frames that are about to be dropped,
#: and every queued frame adds its age to the latency.
IMAGE_QUEUE_DEPTH = 2
#: CameraInfo messages are tiny and paired with images by stamp: keep a few so a late image still
#: finds its own.
CAMERA_INFO_QUEUE_DEPTH = 10
#: Outputs: a short keep-last history bounds memory (a cloud is megabytes) and never blocks the
#: publisher on a slow subscriber.
OUTPUT_QUEUE_DEPTH = 2


def input_qos(reliable: bool = False, depth: int = IMAGE_QUEUE_DEPTH) -> QoSProfile:
    """Subscription QoS: keep last ``depth``, volatile, best effort unless ``reliable``."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )


def output_qos(depth: int = OUTPUT_QUEUE_DEPTH) -> QoSProfile:
    """Publisher QoS: reliable, volatile, keep last ``depth`` (matches RViz's defaults)."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )
