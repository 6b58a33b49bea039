"""When the zygote forks spares again after replicas were started: not while
the replicas it just started still need the cores for their first answer."""

from __future__ import annotations

import pytest

from agentrt.zygote import _REFILL_MAX_MS, _START_CPU_MS, busy_after_start

STEP = _START_CPU_MS / 1e3


def test_one_start_keeps_the_cores_busy_for_one_replicas_time() -> None:
    assert busy_after_start(0.0, 100.0) == pytest.approx(100.0 + STEP)


def test_a_burst_queues_its_replicas_time_up_to_the_max() -> None:
    busy = 0.0
    for _ in range(300):  # all at once
        busy = busy_after_start(busy, 100.0)
    assert busy == pytest.approx(100.0 + 300 * STEP)
    for _ in range(10_000):
        busy = busy_after_start(busy, 100.0)
    assert busy == pytest.approx(100.0 + _REFILL_MAX_MS / 1e3)


def test_starts_long_past_no_longer_count() -> None:
    # (a burst, then one start now and then: the refill is not held off for good)
    busy = 0.0
    for _ in range(1_000):
        busy = busy_after_start(busy, 100.0)
    assert busy_after_start(busy, 105.0) == pytest.approx(105.0 + STEP)
    # (still within the burst's time: queued after it, a second ahead at most)
    assert busy_after_start(busy, 100.5) == pytest.approx(100.0 + _REFILL_MAX_MS / 1e3 + STEP)
