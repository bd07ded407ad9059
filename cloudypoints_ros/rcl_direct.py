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

Taking is the same story in reverse: rclpy's ``take_message(raw=True)`` holds the GIL while the
middleware copies the serialized image out and while it copies it once more into ``bytes``.
:class:`SerializedTaker` takes into a buffer it keeps from frame to frame and copies the message
into ``bytes`` with the GIL released. It reads the publisher's sequence number and GID from
``rmw_message_info_t`` (rmw/types.h: two timestamps, the publication and reception sequence
numbers, then the GID), so the node still counts skipped images.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path
from typing import Any

__all__ = ["DirectPublisher", "SerializedTaker", "direct_publisher", "serialized_taker"]

#: rcl_ret_t of success, and of a take that found no message.
_RCL_RET_OK = 0
_RCL_RET_SUBSCRIPTION_TAKE_FAILED = 401
#: rmw's GID bytes (RMW_GID_STORAGE_SIZE since Iron; Humble's were 24, and the spare bytes of
#: _MessageInfo keep such a layout inside the struct).
_GID_SIZE = 16


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


class _Gid(ctypes.Structure):
    """rmw_gid_t."""

    _fields_ = [
        ("implementation_identifier", ctypes.c_void_p),
        ("data", ctypes.c_uint8 * _GID_SIZE),
    ]


class _MessageInfo(ctypes.Structure):
    """rmw_message_info_t (rmw/types.h), with spare room after it."""

    _fields_ = [
        ("source_timestamp", ctypes.c_int64),
        ("received_timestamp", ctypes.c_int64),
        ("publication_sequence_number", ctypes.c_uint64),
        ("reception_sequence_number", ctypes.c_uint64),
        ("publisher_gid", _Gid),
        ("from_intra_process", ctypes.c_bool),
        ("_spare", ctypes.c_uint8 * 64),
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


class _Libraries:
    """librcl and librcutils as rclpy loaded them, with the signatures used here."""

    def __init__(self, rcl: ctypes.CDLL, rcutils: ctypes.CDLL) -> None:
        publish = rcl.rcl_publish_serialized_message
        publish.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(_SerializedMessage),
            ctypes.c_void_p,
        ]
        publish.restype = ctypes.c_int
        self.publish = publish
        take = rcl.rcl_take_serialized_message
        take.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(_SerializedMessage),
            ctypes.POINTER(_MessageInfo),
            ctypes.c_void_p,
        ]
        take.restype = ctypes.c_int
        self.take = take
        allocator = rcutils.rcutils_get_default_allocator
        allocator.argtypes, allocator.restype = [], _Allocator
        self.default_allocator = allocator
        init = rcutils.rcutils_uint8_array_init
        init.argtypes = [
            ctypes.POINTER(_SerializedMessage),
            ctypes.c_size_t,
            ctypes.POINTER(_Allocator),
        ]
        init.restype = ctypes.c_int
        self.array_init = init
        fini = rcutils.rcutils_uint8_array_fini
        fini.argtypes, fini.restype = [ctypes.POINTER(_SerializedMessage)], ctypes.c_int
        self.array_fini = fini
        self.reset_error = rcutils.rcutils_reset_error


class DirectPublisher:
    """``publish(publisher, blob)``: the serialized message ``blob`` (bytes) on ``publisher``
    (an rclpy Publisher of the message's type), through rcl with the GIL released."""

    def __init__(self, libs: _Libraries) -> None:
        self._publish = libs.publish
        self._reset_error = libs.reset_error

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
            self._reset_error()  # rcl keeps the error per thread until reset
            raise RuntimeError(
                f"rcl_publish_serialized_message failed on {publisher.topic_name} "
                f"(rcl_ret_t {ret})"
            )


class SerializedTaker:
    """``take(subscription)``: the next serialized message of ``subscription`` (an rclpy
    Subscription) as ``bytes`` with its message info (the keys rclpy's raw take gives that the
    node reads), or None when there is none; through rcl, with the GIL released for both
    copies. One per thread: the buffer is reused from take to take. ``close`` frees it."""

    def __init__(self, libs: _Libraries, capacity: int = 1 << 20) -> None:
        from cloudypoints_ros.conversions import _new_bytes

        self._open = False  # until the buffer exists (close and __del__ check it)
        self._libs = libs
        self._new_bytes = _new_bytes
        self._message = _SerializedMessage()
        self._info = _MessageInfo()
        allocator = libs.default_allocator()
        if libs.array_init(ctypes.byref(self._message), capacity, ctypes.byref(allocator)) != 0:
            libs.reset_error()
            raise MemoryError(f"could not allocate a {capacity}-byte take buffer")
        self._open = True

    def take(self, subscription: Any) -> tuple[bytes, dict[str, Any]] | None:
        if not self._open:
            raise RuntimeError("SerializedTaker.take after close")
        handle = subscription.handle
        with handle:  # in use: rclpy defers a concurrent destroy until the call returns
            ret = self._libs.take(
                handle.pointer, ctypes.byref(self._message), ctypes.byref(self._info), None
            )
        if ret == _RCL_RET_SUBSCRIPTION_TAKE_FAILED:
            self._libs.reset_error()
            return None
        if ret != _RCL_RET_OK:
            self._libs.reset_error()
            raise RuntimeError(
                f"rcl_take_serialized_message failed on {subscription.topic_name} "
                f"(rcl_ret_t {ret})"
            )
        size = int(self._message.buffer_length)
        if size < 4:  # not even CDR's encapsulation header
            raise RuntimeError(f"{subscription.topic_name}: took a {size}-byte message")
        blob, view = self._new_bytes(size)
        ctypes.memmove(view.ctypes.data, self._message.buffer, size)  # GIL released
        del view
        info = self._info
        return blob, {
            "publication_sequence_number": int(info.publication_sequence_number),
            "reception_sequence_number": int(info.reception_sequence_number),
            "publisher_gid": {"data": bytes(info.publisher_gid.data)},
        }

    def close(self) -> None:
        if self._open:
            self._open = False
            self._libs.array_fini(ctypes.byref(self._message))

    def __del__(self) -> None:
        self.close()


_CACHED: list[_Libraries | None] = []


def _libraries() -> _Libraries | None:
    """rcl's libraries (None where they cannot be called directly, or with
    ``CLOUDYPOINTS_NO_DIRECT_PUBLISH=1``). After rclpy is imported (it loads them)."""
    if os.environ.get("CLOUDYPOINTS_NO_DIRECT_PUBLISH", "") not in ("", "0"):
        return None
    if not _CACHED:
        found: _Libraries | None = None
        rcl_path, rcutils_path = _loaded_library("librcl.so"), _loaded_library("librcutils.so")
        if rcl_path and rcutils_path:
            try:
                found = _Libraries(ctypes.CDLL(rcl_path), ctypes.CDLL(rcutils_path))
            except (OSError, AttributeError):
                found = None
        _CACHED.append(found)
    return _CACHED[0]


def direct_publisher() -> DirectPublisher | None:
    """A :class:`DirectPublisher`, or None where rcl cannot be called directly (no librcl
    found, a symbol missing, or ``CLOUDYPOINTS_NO_DIRECT_PUBLISH=1``)."""
    libs = _libraries()
    return None if libs is None else DirectPublisher(libs)


def serialized_taker() -> SerializedTaker | None:
    """A new :class:`SerializedTaker` (one per thread), or None as for
    :func:`direct_publisher`."""
    libs = _libraries()
    return None if libs is None else SerializedTaker(libs)
