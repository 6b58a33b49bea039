"""The restart policy, pure: Erlang/OTP's supervisor rules as functions of data.

No I/O, no clock, no randomness of its own (leaf module: stdlib only).  Given
what happened, these say which children restart, which are terminated first,
in what order, and after what delay.  A *child* is one replica; the start
order is the agents' declaration (start) order, replicas by index.

OTP rules and how agentrt applies them (each has a table-driven unit test):

* restart types: ``permanent`` is always restarted; ``transient`` only
  after an abnormal exit (anything but exit status 0 or a stop the
  supervisor asked for) or when a strategy terminated it; ``temporary``
  never, not even when a strategy terminated it (:func:`restarts`).
* strategies: ``one_for_one`` restarts the child alone; ``one_for_all``
  terminates every other child, ``rest_for_one`` those started after it,
  in reverse start order, and then restarts the affected children in start
  order (:func:`strategy_plan`).  A child that is not restarted (temporary,
  or transient after a normal exit) triggers no strategy.
* restart intensity: more than ``intensity`` restarts within ``period``
  seconds and the agent has failed (:class:`Window`).  agentrt counts per
  agent (a pool of replicas is one agent) rather than per supervisor.
* shutdown: children stop in reverse start order (:func:`shutdown_order`);
  the replicas of one agent stop together.
* backoff (agentrt's addition): the first restart within a period is
  immediate, then ``backoff * 2**(n-2)``, capped, times a jitter factor
  (:func:`backoff_delay`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

__all__ = [
    "StrategyPlan",
    "Window",
    "backoff_delay",
    "batches",
    "is_normal_exit",
    "restarts",
    "shutdown_order",
    "strategy_plan",
]

RestartType = Literal["permanent", "transient", "temporary"]
Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]

K = TypeVar("K", bound=Hashable)


def is_normal_exit(stopped: bool, exit_code: int | None, plain_exit: bool) -> bool:
    """Whether a child's end is *normal* in OTP's sense.

    ``stopped``: the supervisor asked it to stop (OTP's ``shutdown``).
    Otherwise only a plain exit (not a limit, a protocol violation or a
    failed start: ``plain_exit``) with status 0 is normal; a signal death
    is reported as a negative status.
    """
    return stopped or (plain_exit and exit_code == 0)


def restarts(restart: RestartType, *, normal: bool, by_strategy: bool) -> bool:
    """Whether a child that ended is started again.

    ``normal``: its own end was normal (:func:`is_normal_exit`);
    ``by_strategy``: a sibling's restart strategy terminated it.
    """
    if restart == "permanent":
        return True
    if restart == "transient":
        return by_strategy or not normal
    return False


@dataclass(frozen=True, slots=True)
class StrategyPlan(Generic[K]):
    """What a strategy does when ``crashed`` is to be restarted.

    ``terminate``: the other affected children, in the order they are
    stopped (reverse start order).  ``restart``: the children started again,
    in start order, ``crashed`` included; temporary children terminated by
    the strategy are left out.  ``ended``: those terminated and not started
    again.
    """

    terminate: tuple[K, ...]
    restart: tuple[K, ...]
    ended: tuple[K, ...]


def strategy_plan(
    strategy: Strategy,
    order: Sequence[K],
    crashed: K,
    restart_type: Callable[[K], RestartType],
) -> StrategyPlan[K]:
    """The children ``strategy`` touches when ``crashed`` restarts.

    ``order`` is every live child in start order (``crashed`` among them);
    ``restart_type`` gives each child's restart type.
    """
    if strategy == "one_for_one" or crashed not in order:
        return StrategyPlan((), (crashed,), ())
    at = order.index(crashed)
    affected = list(order) if strategy == "one_for_all" else list(order[at:])
    others = [k for k in affected if k != crashed]
    ended = tuple(k for k in others if restart_type(k) == "temporary")
    again = tuple(k for k in affected if k == crashed or k not in ended)
    return StrategyPlan(tuple(reversed(others)), again, ended)


def shutdown_order(order: Sequence[K]) -> list[K]:
    """Children in the order they are stopped: reverse start order."""
    return list(reversed(order))


def batches(order: Sequence[K], group: Callable[[K], Hashable]) -> list[list[K]]:
    """``order`` cut into runs of consecutive children of the same ``group``.

    The replicas of one agent start (and stop) together, agents one after
    another: ``batches(plan.restart, agent_of)`` is the start sequence.
    """
    out: list[list[K]] = []
    last: Hashable = object()
    for k in order:
        g = group(k)
        if not out or g != last:
            out.append([])
            last = g
        out[-1].append(k)
    return out


@dataclass(slots=True)
class Window:
    """Restarts within the last ``period`` seconds.

    Restart intensity (OTP's MaxR within MaxT) is ``window.add(now) >
    intensity``; the backoff of a child counts its own window the same way.
    """

    period: float
    times: deque[float] = field(default_factory=deque)

    def add(self, now: float) -> int:
        """Count a restart at ``now``; how many fall within the period, this one included."""
        times = self.times
        times.append(now)
        while times and times[0] <= now - self.period:
            times.popleft()
        return len(times)


def backoff_delay(recent: int, base: float, cap: float, jitter: float = 1.0) -> float:
    """Delay before a restart, given ``recent`` restarts of the child within
    its period (this one included): none for the first, then exponential.

    ``jitter`` is a factor the caller draws (agentrt: uniform in 0.75..1.25).
    """
    if recent <= 1:
        return 0.0
    return min(cap, base * 2.0 ** (recent - 2)) * jitter
