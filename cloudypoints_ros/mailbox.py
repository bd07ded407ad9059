"""Hand-over between the subscription callbacks and the inference worker (no rclpy needed).

``LatestSlot`` is a one-slot mailbox, newest wins: the image callback never waits, ``put`` replaces
a frame the worker has not taken yet and returns it so the caller can count the drop. Memory and
latency are therefore bounded by one pending frame plus the one being processed, whatever the
input rate. ``StampCache`` keeps the last few CameraInfo messages by stamp so the worker can pair
each image with its own calibration.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """Holds at most one item; ``put`` overwrites, ``get`` blocks until an item or ``close``."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._closed = False

    def put(self, item: T) -> T | None:
        """Store ``item``; return the item it replaced (dropped unprocessed), if any."""
        with self._cond:
            replaced = self._item
            self._item = item
            self._cond.notify()
            return replaced

    def get(self, timeout: float | None = None) -> T | None:
        """Take the pending item, waiting up to ``timeout`` s; None on timeout or when closed."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return None if self._closed else item

    def close(self) -> None:
        """Wake the worker for good; later ``get`` calls return None at once."""
        with self._cond:
            self._closed = True
            self._item = None
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


class StampCache(Generic[T]):
    """The ``capacity`` most recent items by integer stamp, plus the latest one received.

    ``lookup`` can wait a little for an exact stamp: camera drivers usually publish the image
    and its CameraInfo back to back, and either may be delivered first.
    """

    def __init__(self, capacity: int = 32) -> None:
        self._cond = threading.Condition()
        self._items: collections.OrderedDict[int, T] = collections.OrderedDict()
        self._capacity = capacity
        self._latest: T | None = None
        self._latest_stamp: int | None = None

    def add(self, stamp: int, item: T) -> None:
        with self._cond:
            self._items[stamp] = item
            self._items.move_to_end(stamp)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)
            self._latest, self._latest_stamp = item, stamp
            self._cond.notify_all()

    def lookup(self, stamp: int, wait_s: float = 0.0) -> T | None:
        """The item with exactly ``stamp``, waiting up to ``wait_s`` for it; else None."""
        deadline = time.monotonic() + wait_s
        with self._cond:
            while True:
                item = self._items.get(stamp)
                remaining = deadline - time.monotonic()
                if item is not None or remaining <= 0:
                    return item
                self._cond.wait(remaining)

    def latest(self) -> tuple[int, T] | None:
        """(stamp, item) of the most recently added item, or None before the first."""
        with self._cond:
            if self._latest is None or self._latest_stamp is None:
                return None
            return self._latest_stamp, self._latest

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class Handoff(Generic[T]):
    """One item at a time from a producer thread to a consumer thread, with back-pressure.

    ``put`` waits until the consumer has called ``done`` for the previous item, so at most one
    item is being consumed while the producer works on the next: a two-stage pipeline (the
    node infers frame k + 1 while it publishes frame k) without a queue that could grow.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._busy = False
        self._closed = False

    def put(self, item: T, timeout: float | None = None) -> bool:
        """Hand ``item`` over; False when closed or when the consumer stayed busy ``timeout`` s."""
        with self._cond:
            ready = self._cond.wait_for(lambda: self._closed or not self._busy, timeout)
            if self._closed or not ready:
                return False
            self._item, self._busy = item, True
            self._cond.notify_all()
            return True

    def get(self, timeout: float | None = None) -> T | None:
        """The next item (the caller must call ``done`` when finished); None on timeout/close."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._item is not None, timeout)
            if self._closed:
                return None
            item, self._item = self._item, None
            return item

    def done(self) -> None:
        """The consumer finished the item it took; the producer may hand over the next."""
        with self._cond:
            self._busy = False
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._item = None
            self._cond.notify_all()
