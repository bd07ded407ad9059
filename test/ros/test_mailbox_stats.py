"""The node's hand-over primitives and health bookkeeping (no DDS needed)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from cloudypoints_ros.mailbox import LatestSlot, StampCache
from cloudypoints_ros.stats import NodeStats, ReasonThrottle, percentiles_ms


def test_latest_slot_keeps_only_the_newest_item() -> None:
    slot: LatestSlot[int] = LatestSlot()
    assert slot.put(1) is None
    assert slot.put(2) == 1  # 1 was dropped unprocessed
    assert slot.put(3) == 2
    assert slot.get(timeout=0) == 3
    assert slot.get(timeout=0.01) is None


def test_latest_slot_wakes_a_waiting_worker_on_put_and_on_close() -> None:
    slot: LatestSlot[str] = LatestSlot()
    got: list[str | None] = []
    worker = threading.Thread(target=lambda: got.append(slot.get(timeout=5.0)))
    worker.start()
    time.sleep(0.05)
    slot.put("frame")
    worker.join(timeout=2.0)
    assert got == ["frame"]
    worker = threading.Thread(target=lambda: got.append(slot.get(timeout=5.0)))
    worker.start()
    time.sleep(0.05)
    t0 = time.monotonic()
    slot.close()
    worker.join(timeout=2.0)
    assert got[-1] is None and time.monotonic() - t0 < 1.0
    slot.put("late")
    assert slot.get(timeout=0) is None and slot.closed


def test_stamp_cache_finds_exact_stamps_waits_for_late_ones_and_forgets_old_ones() -> None:
    cache: StampCache[str] = StampCache(capacity=3)
    assert cache.latest() is None and cache.lookup(1) is None
    for stamp in (10, 20, 30, 40):
        cache.add(stamp, f"info{stamp}")
    assert len(cache) == 3 and cache.lookup(10) is None  # evicted
    assert cache.lookup(20) == "info20" and cache.latest() == (40, "info40")
    threading.Timer(0.05, lambda: cache.add(50, "info50")).start()
    t0 = time.monotonic()
    assert cache.lookup(50, wait_s=2.0) == "info50"
    assert time.monotonic() - t0 < 1.0
    t0 = time.monotonic()
    assert cache.lookup(60, wait_s=0.05) is None
    assert 0.04 <= time.monotonic() - t0 < 0.5


def test_stats_count_rates_and_percentiles() -> None:
    now = [100.0]
    stats = NodeStats(window=4, clock=lambda: now[0])
    for latency in (0.010, 0.020, 0.030, 0.040, 0.050):
        stats.frame_in()
        stats.frame_out(latency, latency / 2)
    stats.frame_in()
    stats.frames_dropped()
    stats.frame_in()
    stats.error("short_data")
    stats.warning("camera_info_fallback")
    now[0] += 2.0
    snap = stats.snapshot()
    assert (snap.frames_in, snap.frames_out, snap.dropped, snap.errors_total) == (7, 5, 1, 1)
    assert snap.input_rate_hz == pytest.approx(3.5) and snap.output_rate_hz == pytest.approx(2.5)
    # The window keeps the last 4 samples: 20..50 ms.
    assert snap.latency_ms["p50"] == pytest.approx(np.percentile([20, 30, 40, 50], 50))
    assert snap.latency_ms["p99"] == pytest.approx(np.percentile([20, 30, 40, 50], 99))
    assert snap.processing_ms["p90"] == pytest.approx(np.percentile([10, 15, 20, 25], 90))
    assert snap.warnings == {"camera_info_fallback": 1}
    assert "short_data=1" in snap.summary()
    now[0] += 1.0
    later = stats.snapshot()  # a new period: nothing happened in it
    assert later.input_rate_hz == 0.0 and later.period_errors == 0 and later.frames_in == 7


def test_percentiles_of_no_samples_are_nan_and_unknown_latency_is_skipped() -> None:
    assert all(np.isnan(v) for v in percentiles_ms([]).values())
    stats = NodeStats()
    stats.frame_out(None, 0.01)
    snap = stats.snapshot()
    assert np.isnan(snap.latency_ms["p50"]) and snap.processing_ms["p50"] == pytest.approx(10.0)


def test_reason_throttle_reports_each_reason_once_per_period_and_counts_the_rest() -> None:
    now = [0.0]
    throttle = ReasonThrottle(period_s=5.0, clock=lambda: now[0])
    assert throttle.should_log("a") == (True, 0)
    assert throttle.should_log("a") == (False, 0)
    assert throttle.should_log("b") == (True, 0)  # another reason is not hidden
    assert throttle.should_log("a") == (False, 0)
    now[0] = 5.5
    assert throttle.should_log("a") == (True, 2)
