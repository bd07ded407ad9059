"""Publishing serialized messages through rcl's C API, with the GIL released.

rclpy's ``Publisher.publish(bytes)`` (``publish_raw``) first copies the bytes into a
``std::string`` and then holds the GIL for the whole of ``rcl_publish_serialized_message``,
where the middleware copies the message again into its own buffers. For the node's 8 MB
coloured cloud that is 1.8-2.0 ms per message, during which no other thread of the node runs
Python: the inference workers wait for the GIL at every step between two native calls, and a
core stays idle. :class:`DirectPublisher` calls the same rcl function through :mod:`ctypes`,
which passes the bytes' own buffer and releases the GIL for the call: 1.2 ms for that cloud,
and the other threads keep running (``benchmarks/bench_node.py`` part 1 compares the two).

It needs nothing but the librcl that rclpy itself has loaded, and only rcl's stable C API:
``rcl_publish_serialized_message(publisher, serialized_message, allocation)``, with the
publisher pointer rclpy exposes (``Publisher.handle.pointer``) held in use for the call, like
rclpy does. Where that library cannot be found, :func:`direct_publisher` returns None and the
caller publishes through rclpy. ``CLOUDYPOINTS_NO_DIRECT_PUBLISH=1`` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path
from typing import Any

__all__ = ["DirectPublisher", "direct_publisher"]

#: rcl_ret_t of success.
_RCL_RET_OK = 0


class _Allocator(ctypes.Structure):
    """rcutils_allocator_t: unused when publishing (rclpy passes a zero one too)."""

    _fields_ = [
        ("allocate", ctypes.c_void_p),
        ("deallocate", ctypes.c_void_p),
        ("reallocate", ctypes.c_void_p),
        ("zero_allocate", ctypes.c_void_p),
        ("state", ctypes.c_void_p),
    ]


class _SerializedMessage(ctypes.Structure):
    """rcl_serialized_message_t (= rcutils_uint8_array_t)."""

    _fields_ = [
        ("buffer", ctypes.c_void_p),
        ("buffer_length", ctypes.c_size_t),
        ("buffer_capacity", ctypes.c_size_t),
        ("allocator", _Allocator),
    ]


def _loaded_library(name: str) -> str | None:
    """Path of the shared library ``name`` (e.g. ``librcl.so``) as this process loaded it: the
    one rclpy uses, wherever the ROS installation keeps it."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rsplit(" ", 1)[-1].strip()
                if path.startswith("/") and Path(path).name == name:
                    return path
    except OSError:
        pass
    return ctypes.util.find_library(name.removeprefix("lib").removesuffix(".so"))


class DirectPublisher:
    """``publish(publisher, blob)``: the serialized message ``blob`` (bytes) on ``publisher``
    (an rclpy Publisher of the message's type), through rcl with the GIL released."""

    def __init__(self, rcl: ctypes.CDLL, rcutils: ctypes.CDLL | None) -> None:
        fn = rcl.rcl_publish_serialized_message
        fn.argtypes = [ctypes.c_void_p, ctypes.POINTER(_SerializedMessage), ctypes.c_void_p]
        fn.restype = ctypes.c_int
        self._publish = fn
        self._reset_error = getattr(rcutils, "rcutils_reset_error", None) if rcutils else None

    def publish(self, publisher: Any, blob: bytes) -> None:
        """Publish ``blob``; raises RuntimeError (with rcl's return code) if rcl refuses it,
        rclpy's InvalidHandle if the publisher was destroyed."""
        if not isinstance(blob, bytes):
            raise TypeError(f"a serialized message is bytes, got {type(blob).__name__}")
        # The bytes' own buffer: rcl only reads it, and `blob` outlives the call.
        address = ctypes.cast(ctypes.c_char_p(blob), ctypes.c_void_p).value
        message = _SerializedMessage(address, len(blob), len(blob))
        handle = publisher.handle
        with handle:  # in use: rclpy defers a concurrent destroy until the call returns
            ret = self._publish(handle.pointer, ctypes.byref(message), None)
        if ret != _RCL_RET_OK:
            if self._reset_error is not None:
                self._reset_error()  # rcl keeps the error per thread until reset
            raise RuntimeError(
                f"rcl_publish_serialized_message failed on {publisher.topic_name} "
                f"(rcl_ret_t {ret})"
            )


_CACHED: list[DirectPublisher | None] = []


def direct_publisher() -> DirectPublisher | None:
    """The process's :class:`DirectPublisher`, or None where rcl cannot be called directly
    (no librcl found, a symbol missing, or ``CLOUDYPOINTS_NO_DIRECT_PUBLISH=1``). Call it
    after rclpy is imported (so that librcl is loaded)."""
    if os.environ.get("CLOUDYPOINTS_NO_DIRECT_PUBLISH", "") not in ("", "0"):
        return None
    if not _CACHED:
        found: DirectPublisher | None = None
        rcl_path = _loaded_library("librcl.so")
        if rcl_path:
            try:
                rcutils_path = _loaded_library("librcutils.so")
                found = DirectPublisher(
                    ctypes.CDLL(rcl_path), ctypes.CDLL(rcutils_path) if rcutils_path else None
                )
            except (OSError, AttributeError):
                found = None
        _CACHED.append(found)
    return _CACHED[0]
