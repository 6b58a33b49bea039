"""When the zygote forks spares again after replicas were started: not while
the replicas it just started still need the cores for their first answer."""

from __future__ import annotations

from agentrt.zygote import _REFILL_AFTER_MS, _REFILL_MAX_MS, _START_CPU_MS, refill_hold_ms


def test_one_start_waits_the_usual_moment() -> None:
    # (a death is usually followed by its replacement's request: 5 ms)
    assert refill_hold_ms(_REFILL_AFTER_MS, 0) == _REFILL_AFTER_MS
    assert refill_hold_ms(_REFILL_AFTER_MS, 1) == _REFILL_AFTER_MS


def test_a_burst_of_starts_holds_the_refill_for_their_cores_time_up_to_the_max() -> None:
    assert refill_hold_ms(_REFILL_AFTER_MS, 300) == 300 * _START_CPU_MS
    assert refill_hold_ms(_REFILL_AFTER_MS, 10_000) == _REFILL_MAX_MS


def test_after_spares_failed_the_longer_wait_wins() -> None:
    assert refill_hold_ms(640.0, 3) == 640.0
    assert refill_hold_ms(640.0, 400) == 800.0
