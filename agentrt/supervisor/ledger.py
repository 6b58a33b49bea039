"""The call ledger: every call, from submission to its one outcome.

A :class:`Call` is one request to an agent: arguments, deadline, retries,
the call that made it (a subagent's or tool's parent), the budget it is
charged to and the graph run it belongs to.  :meth:`Ledger.settle` is the
only way a call ends, whatever ends it (an answer, a failure, its deadline,
a cancellation, its caller leaving, its replica dying), and it does every
part of ending in one place:

* the first outcome wins (``finished_at`` marks a settled call); later
  answers or failures change nothing;
* the deadline timer is cleared and ``finished_at`` stamped;
* the future gets the value or the typed error (``call_id`` set);
* the :meth:`Supervisor.map <agentrt.supervisor.Supervisor.map>` batch it
  belongs to is told;
* a subagent or tool call emits ``call_finished`` (with its status), so its
  span ends in traces and the live view however it ended;
* the calls it started that still run are settled as cancelled, and so on
  down the tree;
* a call still running in a replica is withdrawn from it (the pool sends
  ``Cancel`` and, after ``cancel_grace``, kills the replica).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import msgspec

from agentrt.errors import BudgetExceeded, CallCancelled, CallError, CallTimeout
from agentrt.protocol import HEADER, summarize
from agentrt.protocol import Call as WireCall
from agentrt.supervisor.events import EventHub

__all__ = ["UNLIMITED", "Batch", "Budget", "Call", "Ledger", "PartSink", "Parts", "RunHost"]

#: where a call runs (the pool's replica slot); the ledger only asks whether it runs
S = TypeVar("S")
#: ``encode(call_id, agent, target, args, deadline, items)``: the call's frame
#: (a ``CallMany`` of ``items`` when they are given), or EncodeError
Encoder = Callable[
    [int, str, str, Mapping[str, Any], float | None, "list[dict[str, Any]] | None"],
    bytes | bytearray,
]


class RunHost(Protocol):
    """A graph run, as the supervisor sees it (:class:`agentrt.scheduler.Run`).

    Calls made for one of its tasks carry it, so that an agent's
    ``ctx.submit`` reaches the run.
    """

    @property
    def run_id(self) -> str: ...

    def add_submitted(self, task: Mapping[str, Any]) -> str:
        """Add a task an agent submitted (``ctx.submit``); its id."""
        ...

    def task_rows(self) -> list[dict[str, Any]]:
        """Each task, as ``agentrt ctl tasks`` lists it: ``id``, ``agent``,
        ``status`` (pending, ready, running, ok, failed...), and its times."""
        ...

    def cancel_task(self, task: str, reason: str) -> bool:
        """Cancel a task (and what its call started); False when it is not running
        or waiting.  Its dependents are skipped, naming it."""
        ...

    def cancel_run(self, reason: str) -> None:
        """Cancel the whole run: running tasks cancelled, the rest skipped."""
        ...

    def hold(self, paused: bool) -> None:
        """The whole supervisor is paused (or resumed): the run's deadline stands still."""
        ...


@dataclass(eq=False, slots=True)
class Budget:
    """What one run has spent: counted by the supervisor, not by trust."""

    max_tasks: int | None
    max_tool_calls: int | None
    tasks: int = 0
    tool_calls: int = 0

    def charge(self, what: str, agent: str) -> None:
        """Spend one task or tool call; :class:`BudgetExceeded` when none is left."""
        if what == "tasks":
            limit, used = self.max_tasks, self.tasks
        else:
            limit, used = self.max_tool_calls, self.tool_calls
        if limit is not None and used >= limit:
            raise BudgetExceeded(
                f"run budget max_{what}={limit} is spent",
                budget=f"max_{what}",
                limit=limit,
                agent=agent,
            )
        if what == "tasks":
            self.tasks += 1
        else:
            self.tool_calls += 1


#: the budget of calls with nothing to count against (one shared instance)
UNLIMITED = Budget(None, None)


@dataclass(eq=False, slots=True)
class Batch:
    """The calls of one ``Supervisor.map``: one waiter for all of them,
    instead of a callback per call."""

    left: int
    done: asyncio.Future[None]
    fail_fast: bool

    def settled(self, failed: bool) -> None:
        self.left -= 1
        if (self.left == 0 or (failed and self.fail_fast)) and not self.done.done():
            self.done.set_result(None)


class PartSink(Protocol):
    """Where the items of a many-item call are answered (a bulk map)."""

    def part(self, pos: int, value: Any) -> None: ...

    def part_failed(self, pos: int, error: CallError) -> None: ...


@dataclass(eq=False, slots=True)
class Parts:
    """The items one call carries (a ``CallMany`` frame), answered one by one.

    The replica runs them in order and answers each before the next starts,
    so ``answered`` is also the item that runs: the one to blame when the
    replica dies in the middle.
    """

    items: list[dict[str, Any]]
    #: the position of ``items[0]`` among the map's items
    start: int
    sink: PartSink
    answered: int = 0


@dataclass(eq=False, slots=True)
class Call(Generic[S]):
    """One call to an agent, from submission to its outcome."""

    id: int
    agent: str
    target: str
    #: its ``Call`` frame, encoded once when it is made (and sent as is, retries too)
    frame: bytes | bytearray
    timeout: float | None
    deadline: float | None  # time.monotonic()
    retries: int
    future: asyncio.Future[Any]
    budget: Budget
    attempts: int = 0
    #: the replica running it (None while queued, and once answered)
    slot: S | None = None
    #: the deadline timer; once withdrawn from a replica, its cancel_grace timer
    timer: asyncio.TimerHandle | None = None
    pid: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    parent: Call[S] | None = None
    children: list[Call[S]] | None = None  # subagent and tool calls it made
    depth: int = 0
    run: RunHost | None = None
    batch: Batch | None = None
    #: its arguments, short (made only when someone watches events)
    summary: str | None = None
    #: the graph task it serves (a task's call, and the calls made for it)
    task: str | None = None
    #: paused (its agent or replica is): since when its deadline stands still
    held_at: float | None = None
    #: the approval request it waits for, until answered (then it is queued)
    approval: str | None = None
    #: many items in one call (a bulk map's chunk): where each is answered
    parts: Parts | None = None

    def clear_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class Ledger(Generic[S]):
    """Makes calls and settles them, each exactly once (see the module doc).

    ``withdraw(call)`` is the pool's: called when a call is settled while a
    replica still runs it.
    """

    def __init__(
        self, events: EventHub, withdraw: Callable[[Call[S]], None], encode: Encoder
    ) -> None:
        self.events = events
        self._withdraw = withdraw
        self._encode = encode
        self._ids = itertools.count(1)

    def next_id(self) -> int:
        return next(self._ids)

    def new(
        self,
        agent: str,
        target: str,
        args: Mapping[str, Any] | None,
        timeout: float | None,
        retries: int,
        *,
        parent: Call[S] | None = None,
        budget: Budget = UNLIMITED,
        run: RunHost | None = None,
        batch: Batch | None = None,
        armed: bool = True,
        parts: Parts | None = None,
    ) -> Call[S]:
        """A new call; a child never outlives its parent's deadline.

        Its frame is encoded here, so arguments that cannot cross the process
        boundary raise :class:`EncodeError` to the caller, before anything
        is registered.  Not ``armed`` (it waits for approval), its timeout
        starts when :meth:`arm` is called.
        """
        loop = asyncio.get_running_loop()
        deadline, timeout = self._deadline(timeout, parent) if armed else (None, timeout)
        cid = next(self._ids)
        items = None if parts is None else parts.items
        frame = self._encode(cid, agent, target, args or {}, deadline, items)
        call: Call[S] = Call(
            cid,
            agent,
            target,
            frame,
            timeout,
            deadline,
            retries,
            loop.create_future(),
            budget,
        )
        if parent is not None:
            call.parent = parent
            call.depth = parent.depth + 1
            if self.events.watched:
                call.summary = summarize(args or {})
            call.budget = parent.budget
            call.run = parent.run
            call.task = parent.task
            if parent.children is None:
                parent.children = []
            parent.children.append(call)
        else:
            call.run = run
        if batch is not None:
            call.batch = batch
            batch.left += 1
        if parts is not None:
            call.parts = parts
        if deadline is not None:
            call.timer = loop.call_at(deadline, self._on_deadline, call)
        return call

    @staticmethod
    def _deadline(
        timeout: float | None, parent: Call[S] | None
    ) -> tuple[float | None, float | None]:
        """``(deadline, timeout)`` of a call starting now: its own, bounded by its parent's."""
        now = time.monotonic()
        deadline = None if timeout is None else now + timeout
        if (
            parent is not None
            and parent.deadline is not None
            and (deadline is None or parent.deadline < deadline)
        ):
            deadline = parent.deadline
            timeout = max(0.0, deadline - now)
        return deadline, timeout

    def arm(self, call: Call[S], args: Mapping[str, Any] | None = None) -> None:
        """An approved call starts its timeout now; ``args``: arguments a person
        edited (:class:`EncodeError` when they cannot be sent)."""
        call.deadline, call.timeout = self._deadline(call.timeout, call.parent)
        if args is not None and self.events.watched:
            call.summary = summarize(args)
        self.reframe(call, args)
        if call.deadline is not None:
            call.timer = asyncio.get_running_loop().call_at(call.deadline, self._on_deadline, call)

    def reframe(self, call: Call[S], args: Mapping[str, Any] | None = None) -> None:
        """Encode the call's frame again, with its deadline as it is now (and ``args``)."""
        parts = call.parts
        if parts is not None:
            call.frame = self._encode(
                call.id, call.agent, call.target, {}, call.deadline, parts.items
            )
            return
        if args is None:
            args = msgspec.msgpack.decode(memoryview(call.frame)[HEADER:], type=WireCall).args
        call.frame = self._encode(call.id, call.agent, call.target, args, call.deadline, None)

    def hold(self, call: Call[S], now: float) -> None:
        """Its agent or replica is paused: its deadline stands still from ``now``."""
        if call.held_at is None and call.finished_at is None:
            call.held_at = now
            call.clear_timer()  # its deadline's (a settled call's would be its cancel grace)

    def release(self, call: Call[S], now: float, reframe: bool) -> None:
        """Resumed: the deadline moves as much later as the pause lasted.

        ``reframe``: the call has not been sent yet, so its frame carries the
        new deadline (a replica that has it is told by a ``Held`` frame).
        """
        held, call.held_at = call.held_at, None
        if held is None or call.finished_at is not None:
            return
        if call.deadline is not None:
            call.deadline += now - held
            if reframe:
                self.reframe(call)
            call.clear_timer()
            call.timer = asyncio.get_running_loop().call_at(call.deadline, self._on_deadline, call)

    def settle(self, call: Call[S], value: Any = None, error: BaseException | None = None) -> None:
        """End ``call`` with ``value``, or with ``error`` when one is given.

        The first outcome wins; see the module docstring for what ending does.
        """
        if call.finished_at is not None:
            return  # settled already
        if call.timer is not None:
            call.timer.cancel()
            call.timer = None
        call.finished_at = time.time()
        failed = error is not None
        fut = call.future
        if fut.done():
            pass  # its waiter was cancelled, which cancels the future: the rest still applies
        elif error is not None:
            if isinstance(error, CallError):
                error.call_id = call.id
            fut.set_exception(error)
        else:
            fut.set_result(value)
        if call.batch is not None:
            call.batch.settled(failed)
        if call.parent is not None and call.started_at is not None and self.events.watched:
            status = getattr(error, "status", "failed") if error is not None else "ok"
            self.emit_call("call_finished", call, status, None if error is None else str(error))
        if call.children:
            self._cancel_children(call)
        if call.slot is not None:
            self._withdraw(call)

    def emit_call(
        self, kind: str, call: Call[S], status: str | None = None, reason: str | None = None
    ) -> None:
        """``call_started`` (with its arguments' summary) / ``call_finished`` (with its
        status, and the error's message) of a subagent or tool call."""
        assert call.parent is not None
        self.events.emit(
            kind,
            call_id=call.id,
            parent=call.parent.id,
            target=call.agent,
            agent=call.agent,
            pid=call.pid,
            status=status,
            reason=reason[:200] if reason else None,
            summary=call.summary if kind == "call_started" else None,
            task=call.task,
        )

    def _cancel_children(self, call: Call[S]) -> None:
        """A call ended: the subagent and tool calls it started that still run end too."""
        children, call.children = call.children or [], None
        for child in children:
            if child.finished_at is None:
                self.settle(
                    child,
                    error=CallCancelled(
                        f"cancelled: its parent call {call.id} ({call.agent!r}) ended",
                        agent=child.agent,
                        pid=child.pid,
                    ),
                )

    def _on_deadline(self, call: Call[S]) -> None:
        call.timer = None
        if call.future.done():
            return
        name = call.agent
        self.settle(
            call,
            error=CallTimeout(
                f"call to {name!r} timed out after {call.timeout or 0:g}s",
                timeout=call.timeout,
                agent=name,
                pid=call.pid,
            ),
        )

    def caller_gone(self, call: Call[S]) -> None:
        """The caller stopped waiting: cancel the call (and what it started)."""
        self.settle(call, error=CallCancelled("caller cancelled", agent=call.agent))
