"""The restart policy, table by table: Erlang/OTP's supervisor rules as pure functions.

Children are named ``agent#replica``; ``ORDER`` is their start order.
"""

from __future__ import annotations

import pytest

from agentrt.supervisor import policy

ORDER = ["a#0", "b#0", "b#1", "c#0", "d#0"]
TYPES = {"a#0": "permanent", "b#0": "permanent", "b#1": "permanent", "c#0": "temporary"}


def _type(child: str) -> policy.RestartType:
    return TYPES.get(child, "transient")  # type: ignore[return-value]


def _agent(child: str) -> str:
    return child.partition("#")[0]


# --- is a death normal? --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stopped", "exit_code", "plain_exit", "normal"),
    [
        (True, None, False, True),  # the supervisor asked it to stop (OTP: shutdown)
        (True, -9, True, True),  # ... however it then ended
        (False, 0, True, True),  # exit(0), sys.exit(), SystemExit(None)
        (False, 3, True, False),  # exit(3)
        (False, 1, True, False),  # sys.exit("message")
        (False, -9, True, False),  # SIGKILL
        (False, -11, True, False),  # SIGSEGV
        (False, 0, False, False),  # a limit, protocol violation or failed start: never normal
        (False, None, True, False),  # status unknown
    ],
)
def test_a_death_is_normal_only_when_asked_for_or_a_plain_exit_0(
    stopped: bool, exit_code: int | None, plain_exit: bool, normal: bool
) -> None:
    assert policy.is_normal_exit(stopped, exit_code, plain_exit) is normal


# --- restart types -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("restart", "normal", "by_strategy", "again"),
    [
        ("permanent", True, False, True),
        ("permanent", False, False, True),
        ("permanent", True, True, True),
        ("transient", False, False, True),  # its own abnormal exit
        ("transient", True, False, False),  # its own normal exit
        ("transient", True, True, True),  # terminated by a sibling's strategy
        ("temporary", False, False, False),  # never ...
        ("temporary", True, False, False),
        ("temporary", True, True, False),  # ... not even after a strategy terminated it
    ],
)
def test_restart_types_follow_otp(
    restart: policy.RestartType, normal: bool, by_strategy: bool, again: bool
) -> None:
    assert policy.restarts(restart, normal=normal, by_strategy=by_strategy) is again


# --- strategies ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "crashed", "terminate", "restart", "ended"),
    [
        ("one_for_one", "b#0", [], ["b#0"], []),
        ("one_for_one", "d#0", [], ["d#0"], []),
        # one_for_all: every other child, reverse start order; then all, start order
        (
            "one_for_all",
            "b#0",
            ["d#0", "c#0", "b#1", "a#0"],
            ["a#0", "b#0", "b#1", "d#0"],  # c#0 is temporary: terminated, not restarted
            ["c#0"],
        ),
        ("one_for_all", "a#0", ["d#0", "c#0", "b#1", "b#0"], ["a#0", "b#0", "b#1", "d#0"], ["c#0"]),
        ("one_for_all", "d#0", ["c#0", "b#1", "b#0", "a#0"], ["a#0", "b#0", "b#1", "d#0"], ["c#0"]),
        # rest_for_one: those started after it
        ("rest_for_one", "b#0", ["d#0", "c#0", "b#1"], ["b#0", "b#1", "d#0"], ["c#0"]),
        ("rest_for_one", "b#1", ["d#0", "c#0"], ["b#1", "d#0"], ["c#0"]),
        ("rest_for_one", "d#0", [], ["d#0"], []),
        (
            "rest_for_one",
            "a#0",
            ["d#0", "c#0", "b#1", "b#0"],
            ["a#0", "b#0", "b#1", "d#0"],
            ["c#0"],
        ),
    ],
)
def test_strategy_plans_terminate_in_reverse_then_restart_in_start_order(
    strategy: policy.Strategy,
    crashed: str,
    terminate: list[str],
    restart: list[str],
    ended: list[str],
) -> None:
    plan = policy.strategy_plan(strategy, ORDER, crashed, _type)
    assert list(plan.terminate) == terminate
    assert list(plan.restart) == restart
    assert list(plan.ended) == ended


def test_a_child_no_longer_in_the_order_restarts_alone() -> None:
    plan = policy.strategy_plan("one_for_all", ["a#0", "b#0"], "z#0", _type)
    assert (plan.terminate, plan.restart, plan.ended) == ((), ("z#0",), ())


@pytest.mark.parametrize(
    ("order", "batches"),
    [
        ([], []),
        (["a#0"], [["a#0"]]),
        (["a#0", "b#0", "b#1", "c#0"], [["a#0"], ["b#0", "b#1"], ["c#0"]]),
        (["d#0", "c#0", "b#1", "b#0", "a#0"], [["d#0"], ["c#0"], ["b#1", "b#0"], ["a#0"]]),
    ],
)
def test_an_agents_replicas_form_one_batch(order: list[str], batches: list[list[str]]) -> None:
    assert policy.batches(order, _agent) == batches


def test_shutdown_is_in_reverse_start_order() -> None:
    assert policy.shutdown_order(ORDER) == ["d#0", "c#0", "b#1", "b#0", "a#0"]


# --- intensity and backoff -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("period", "times", "counts"),
    [
        (10.0, [0.0, 1.0, 2.0], [1, 2, 3]),
        (10.0, [0.0, 5.0, 10.0, 11.0], [1, 2, 2, 3]),  # 0.0 has left the window at 10.0
        (1.0, [0.0, 2.0, 4.0], [1, 1, 1]),  # never two within a second
        (0.5, [0.0, 0.1, 0.2, 0.65], [1, 2, 3, 2]),  # 0.0 and 0.1 have left at 0.65
    ],
)
def test_window_counts_restarts_within_the_period(
    period: float, times: list[float], counts: list[int]
) -> None:
    w = policy.Window(period)
    assert [w.add(t) for t in times] == counts


@pytest.mark.parametrize(
    ("intensity", "restarts_within_period", "failed"),
    [
        (0, 1, True),  # intensity 0: the first restart is already one too many
        (1, 1, False),
        (1, 2, True),
        (5, 5, False),
        (5, 6, True),
    ],
)
def test_intensity_is_exceeded_by_one_restart_more_than_allowed(
    intensity: int, restarts_within_period: int, failed: bool
) -> None:
    w = policy.Window(10.0)
    counts = [w.add(float(i)) for i in range(restarts_within_period)]
    assert (counts[-1] > intensity) is failed


@pytest.mark.parametrize(
    ("recent", "base", "cap", "jitter", "delay"),
    [
        (1, 0.05, 5.0, 1.0, 0.0),  # the first restart in a period is immediate
        (2, 0.05, 5.0, 1.0, 0.05),
        (3, 0.05, 5.0, 1.0, 0.1),
        (4, 0.05, 5.0, 1.0, 0.2),
        (20, 0.05, 5.0, 1.0, 5.0),  # capped
        (3, 0.05, 5.0, 0.75, 0.075),  # jitter scales the delay
        (20, 0.05, 5.0, 1.25, 6.25),  # ... the capped one too
    ],
)
def test_backoff_is_exponential_from_the_second_restart_and_capped(
    recent: int, base: float, cap: float, jitter: float, delay: float
) -> None:
    assert policy.backoff_delay(recent, base, cap, jitter) == pytest.approx(delay)
