"""Health bookkeeping of the depth node: counters, rates, latency percentiles, throttled reasons.

Pure Python (no rclpy), thread-safe: the subscription callbacks, the inference worker and the
reporting timer run on different threads. Memory is bounded: latencies live in fixed-size rings.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

#: Latency samples kept for the percentiles (a few minutes at camera rates).
LATENCY_WINDOW = 1000
PERCENTILES = (50, 90, 99)


def percentiles_ms(samples_s: collections.deque[float] | list[float]) -> dict[str, float]:
    """{"p50": .., "p90": .., "p99": ..} in milliseconds; NaN when there are no samples."""
    if not samples_s:
        return {f"p{q}": float("nan") for q in PERCENTILES}
    values = np.percentile(np.asarray(samples_s, dtype=np.float64) * 1e3, PERCENTILES)
    return {f"p{q}": float(v) for q, v in zip(PERCENTILES, values, strict=True)}


@dataclass(frozen=True)
class StatsSnapshot:
    """Totals since start-up plus rates over the last reporting period."""

    frames_in: int
    frames_out: int
    dropped: int
    errors: Mapping[str, int]
    warnings: Mapping[str, int]
    input_rate_hz: float
    output_rate_hz: float
    period_frames_in: int
    period_frames_out: int
    period_errors: int
    #: Image header stamp to publish, milliseconds (meaningful when stamps use this clock).
    latency_ms: Mapping[str, float] = field(default_factory=dict)
    #: Receipt by the node to publish, milliseconds (always meaningful).
    processing_ms: Mapping[str, float] = field(default_factory=dict)
    #: Duration of each worker stage ("infer", "publish"), milliseconds percentiles.
    stages_ms: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    #: Images a publisher sent that the node never took: superseded in the DDS reader while
    #: every worker was busy (newest wins before any deserialisation), or lost on the way.
    skipped: int = 0

    @property
    def errors_total(self) -> int:
        return int(sum(self.errors.values()))

    def summary(self) -> str:
        """One log line."""
        lat = self.latency_ms
        errs = ", ".join(f"{k}={v}" for k, v in sorted(self.errors.items())) or "none"
        stages = "".join(
            f", {name} p50 {pcts.get('p50', float('nan')):.0f} ms"
            for name, pcts in sorted(self.stages_ms.items())
            if "." not in name  # the steps of a stage ("publish.cloud_build") go to diagnostics
        )
        return (
            f"in {self.input_rate_hz:.1f} Hz, out {self.output_rate_hz:.1f} Hz, "
            f"frames in/out/dropped {self.frames_in}/{self.frames_out}/{self.dropped}, "
            f"latency p50/p90/p99 {lat.get('p50', float('nan')):.0f}/"
            f"{lat.get('p90', float('nan')):.0f}/{lat.get('p99', float('nan')):.0f} ms, "
            f"errors: {errs}{stages}"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "dropped": self.dropped,
            "errors": dict(self.errors),
            "warnings": dict(self.warnings),
            "input_rate_hz": self.input_rate_hz,
            "output_rate_hz": self.output_rate_hz,
            "latency_ms": dict(self.latency_ms),
            "processing_ms": dict(self.processing_ms),
            "stages_ms": {k: dict(v) for k, v in self.stages_ms.items()},
        }


class NodeStats:
    """Counters of the node; ``snapshot()`` also closes the current rate period."""

    def __init__(
        self, window: int = LATENCY_WINDOW, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._frames_in = 0
        self._frames_out = 0
        self._dropped = 0
        self._skipped = 0
        self._errors: collections.Counter[str] = collections.Counter()
        self._warnings: collections.Counter[str] = collections.Counter()
        self._latency_s: collections.deque[float] = collections.deque(maxlen=window)
        self._processing_s: collections.deque[float] = collections.deque(maxlen=window)
        self._window = window
        self._stages_s: dict[str, collections.deque[float]] = {}
        self._period_start = clock()
        self._period_in0 = 0
        self._period_out0 = 0
        self._period_err0 = 0

    def frame_in(self) -> None:
        with self._lock:
            self._frames_in += 1

    def frames_dropped(self, count: int = 1) -> None:
        with self._lock:
            self._dropped += count

    def frames_skipped(self, count: int) -> None:
        with self._lock:
            self._skipped += count

    def frame_out(self, latency_s: float | None, processing_s: float) -> None:
        with self._lock:
            self._frames_out += 1
            if latency_s is not None:
                self._latency_s.append(latency_s)
            self._processing_s.append(processing_s)

    def stage(self, name: str, seconds: float) -> None:
        """Time spent in one worker stage for one frame (where the per-frame cost goes)."""
        with self._lock:
            ring = self._stages_s.get(name)
            if ring is None:
                ring = self._stages_s[name] = collections.deque(maxlen=self._window)
            ring.append(seconds)

    def error(self, reason: str) -> None:
        with self._lock:
            self._errors[reason] += 1

    def warning(self, reason: str) -> None:
        """A frame that was served in a degraded way (e.g. CameraInfo by fallback)."""
        with self._lock:
            self._warnings[reason] += 1

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            now = self._clock()
            dt = max(now - self._period_start, 1e-9)
            errors_total = sum(self._errors.values())
            snap = StatsSnapshot(
                frames_in=self._frames_in,
                frames_out=self._frames_out,
                dropped=self._dropped,
                errors=dict(self._errors),
                warnings=dict(self._warnings),
                input_rate_hz=(self._frames_in - self._period_in0) / dt,
                output_rate_hz=(self._frames_out - self._period_out0) / dt,
                period_frames_in=self._frames_in - self._period_in0,
                period_frames_out=self._frames_out - self._period_out0,
                period_errors=errors_total - self._period_err0,
                latency_ms=percentiles_ms(self._latency_s),
                processing_ms=percentiles_ms(self._processing_s),
                stages_ms={k: percentiles_ms(v) for k, v in self._stages_s.items()},
                skipped=self._skipped,
            )
            self._period_start = now
            self._period_in0 = self._frames_in
            self._period_out0 = self._frames_out
            self._period_err0 = errors_total
            return snap


class ReasonThrottle:
    """Decides whether a message for ``reason`` may be logged now (at most once per period each).

    Unlike a throttle keyed by call site, every reason gets its own budget, so a flood of one bad
    input cannot hide the first report of another; the count of suppressed reports is returned so
    the next line can say how many were skipped.
    """

    def __init__(self, period_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._period_s = period_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def should_log(self, reason: str) -> tuple[bool, int]:
        """(True, suppressed since the last report) when a report is due, else (False, 0)."""
        with self._lock:
            now = self._clock()
            last = self._last.get(reason)
            if last is not None and now - last < self._period_s:
                self._suppressed[reason] += 1
                return False, 0
            self._last[reason] = now
            return True, self._suppressed.pop(reason, 0)
