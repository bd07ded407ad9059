"""A stand-in for ROS 2's ``tf2_ros`` that the ROS tests put on the depth node's PYTHONPATH.

tf2_ros comes with a full ROS 2 install and cannot be installed from PyPI, so without this the
node's ``scale.ground_frame`` path could not run here. It is written from tf2_ros's documented
Python API (reference only, nothing copied), the part the node uses:

- ``Buffer()`` with ``set_transform(transform, authority)`` and
  ``set_transform_static(transform, authority)`` (as in ``tf2.BufferCore``) and
  ``lookup_transform(target_frame, source_frame, time, timeout=Duration())``, which returns a
  ``geometry_msgs/TransformStamped`` that maps points from ``source_frame`` into
  ``target_frame`` (header.frame_id = target, child_frame_id = source), waiting up to
  ``timeout`` for it; time 0 means the latest transform.
- ``TransformListener(buffer, node)``, which subscribes on ``node`` and fills the buffer.
- ``TransformException`` and its subclasses ``LookupException`` (a frame is not in the graph),
  ``ConnectivityException`` (both frames are, but not connected), ``ExtrapolationException``
  (a time outside what the buffer holds), ``InvalidArgumentException``.

What it leaves out, on purpose: transforms compose over one edge only (set directly, looked up
in either direction; the inverse is computed), a dynamic transform keeps its latest sample
only, and the listener reads ``geometry_msgs/TransformStamped`` on ``TF_TOPIC`` and
``TF_STATIC_TOPIC`` (the real one reads ``tf2_msgs/TFMessage`` on ``/tf`` and ``/tf_static``;
tf2_msgs is not installable from PyPI either).
"""

from __future__ import annotations

import threading
import time as _time
from typing import Any

from geometry_msgs.msg import TransformStamped
from rclpy.duration import Duration
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time

__all__ = [
    "TF_STATIC_TOPIC",
    "TF_TOPIC",
    "Buffer",
    "ConnectivityException",
    "ExtrapolationException",
    "InvalidArgumentException",
    "LookupException",
    "TransformException",
    "TransformListener",
]

TF_TOPIC = "/tf_stand_in"
TF_STATIC_TOPIC = "/tf_static_stand_in"


class TransformException(Exception):
    """Base class of the tf2 exceptions: catching it catches every failed lookup."""


class LookupException(TransformException):
    """A frame named in a lookup is not in the graph."""


class ConnectivityException(TransformException):
    """Both frames are in the graph but no transform connects them."""


class ExtrapolationException(TransformException):
    """The lookup time lies outside the times the buffer holds."""


class InvalidArgumentException(TransformException):
    """A malformed argument (an empty frame name, a non-finite transform)."""


def _quat_mul(
    a: tuple[float, float, float, float], b: tuple[float, float, float, float]
) -> tuple[float, float, float, float]:
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return (
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    )


def _inverse(tf: TransformStamped) -> TransformStamped:
    """The transform mapping points the other way: rotation q* and translation -(q* t q)."""
    t, r = tf.transform.translation, tf.transform.rotation
    conj = (-r.x, -r.y, -r.z, r.w)
    rx, ry, rz, _ = _quat_mul(_quat_mul(conj, (t.x, t.y, t.z, 0.0)), (r.x, r.y, r.z, r.w))
    out = TransformStamped()
    out.header.stamp = tf.header.stamp
    out.header.frame_id, out.child_frame_id = tf.child_frame_id, tf.header.frame_id
    out.transform.translation.x, out.transform.translation.y = -rx, -ry
    out.transform.translation.z = -rz
    q = out.transform.rotation
    q.x, q.y, q.z, q.w = conj
    return out


class Buffer:
    """Transforms by (parent, child) edge, for lookups from any thread."""

    def __init__(self, cache_time: Duration | None = None, node: Any = None) -> None:
        self._cond = threading.Condition()
        # (parent, child) -> (transform, static)
        self._edges: dict[tuple[str, str], tuple[TransformStamped, bool]] = {}

    def set_transform(self, transform: TransformStamped, authority: str) -> bool:
        return self._set(transform, static=False)

    def set_transform_static(self, transform: TransformStamped, authority: str) -> bool:
        return self._set(transform, static=True)

    def _set(self, transform: TransformStamped, static: bool) -> bool:
        parent, child = transform.header.frame_id, transform.child_frame_id
        if not parent or not child or parent == child:
            raise InvalidArgumentException(
                f"a transform needs two different frame names, got {parent!r} -> {child!r}"
            )
        with self._cond:
            self._edges[(parent, child)] = (transform, static)
            self._cond.notify_all()
        return True

    def lookup_transform(
        self,
        target_frame: str,
        source_frame: str,
        time: Time,
        timeout: Duration | None = None,
    ) -> TransformStamped:
        """The transform from ``source_frame`` into ``target_frame`` at ``time`` (0: latest)."""
        wait_s = 0.0 if timeout is None else timeout.nanoseconds / 1e9
        deadline = _time.monotonic() + wait_s
        with self._cond:
            while True:
                try:
                    return self._lookup(target_frame, source_frame, time.nanoseconds)
                except TransformException:
                    remaining = deadline - _time.monotonic()
                    if remaining <= 0:
                        raise
                    self._cond.wait(remaining)

    def can_transform(
        self,
        target_frame: str,
        source_frame: str,
        time: Time,
        timeout: Duration | None = None,
    ) -> bool:
        try:
            self.lookup_transform(target_frame, source_frame, time, timeout)
        except TransformException:
            return False
        return True

    def _lookup(self, target: str, source: str, time_ns: int) -> TransformStamped:
        frames = {name for edge in self._edges for name in edge}
        for role, name in (("target_frame", target), ("source_frame", source)):
            if name not in frames:
                raise LookupException(
                    f'"{name}" passed to lookup_transform argument {role} does not exist.'
                )
        if (target, source) in self._edges:
            found, static = self._edges[(target, source)]
        elif (source, target) in self._edges:
            stored, static = self._edges[(source, target)]
            found = _inverse(stored)
        else:
            raise ConnectivityException(
                f"could not find a connection between '{target}' and '{source}' (this "
                "stand-in composes no chains of transforms)"
            )
        stamp_ns = Time.from_msg(found.header.stamp).nanoseconds
        if not static and time_ns != 0 and time_ns != stamp_ns:
            raise ExtrapolationException(
                f"lookup at {time_ns} ns would require extrapolation: the buffer holds "
                f"{target} <- {source} at {stamp_ns} ns only"
            )
        return found


class TransformListener:
    """Fills ``buffer`` from the transforms published on ``TF_TOPIC`` / ``TF_STATIC_TOPIC``."""

    def __init__(self, buffer: Buffer, node: Any, *, spin_thread: bool = False) -> None:
        self.buffer = buffer
        dynamic = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        static = QoSProfile(
            depth=100,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self._subs = [
            node.create_subscription(
                TransformStamped,
                TF_TOPIC,
                lambda m: buffer.set_transform(m, "stand_in_listener"),
                dynamic,
            ),
            node.create_subscription(
                TransformStamped,
                TF_STATIC_TOPIC,
                lambda m: buffer.set_transform_static(m, "stand_in_listener"),
                static,
            ),
        ]
