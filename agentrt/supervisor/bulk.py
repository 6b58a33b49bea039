"""A bulk map: many small calls to one agent, many items to a frame.

``Supervisor.map`` over an agent on this machine sends its items in
chunks: one ``CallMany`` frame carries several items, the replica runs them
in order and answers each with a ``Part`` frame before the next
starts.  The supervisor keeps one ledger call per chunk, not per item, which
is what bounds a map of tiny calls: the supervisor's own work per call.

What a caller sees is still one call per item:

* each item's value or error lands in its place; an error of one item does
  not stop the others of its chunk;
* every item has the map's deadline (all were submitted at once);
* a replica that dies while running an item blames that item alone (its
  retries apply to it); the items after it never ran and are sent again,
  without using a retry;
* an item that hits a limit of its replica fails with ``LimitExceeded``;
  the replica is replaced and the rest of its chunk is sent again.

How many items go in a chunk is measured, not guessed: each chunk's replica
reports the seconds its items took, and the next chunks carry about
``_CHUNK_SECONDS`` of work (at most ``_MAX_ITEMS`` items).  A map of long
calls (a model, a tool) sends one item per chunk, so no replica holds work
another one is free for; a map of tiny ones pays the supervisor's cost once
per chunk.  At most as many chunks are out as the replicas have room for
(``concurrency + queue`` each), so each new chunk is sized from what the
last ones measured.  The time is kept per agent and method.

A replica that runs calls side by side (``concurrency > 1``, async) runs a
chunk in one of its slots, its items one after another.  So that items
which wait (on a tool, a model, a file) still overlap as calls of their
own would, an item that took longer than 2 ms ends its chunk (``Rest``):
the items after it come back here and go out again in chunks sized from
the new measure (one item each, for items that wait).
"""

from __future__ import annotations

import asyncio
import copy
import functools
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from agentrt.errors import (
    AgentDied,
    AgentrtError,
    CallCancelled,
    CallError,
    CallTimeout,
    EncodeError,
)
from agentrt.supervisor.ledger import Call, Parts
from agentrt.supervisor.pool import Agent

__all__ = ["BulkMap"]

#: the work one chunk carries (seconds of its replica's time)
_CHUNK_SECONDS = 0.0005
#: the most items in one chunk
_MAX_ITEMS = 64
#: weight of the latest chunk in an agent's item time
_SMOOTH = 0.3
#: a reported time beyond this is not believed (a replica's report is input)
_MAX_REPORT = 3600.0

#: ``submit(parts, timeout)``: the ledger call of one chunk (raises as
#: ``Supervisor.call`` does when it cannot be made)
Submit = Callable[[Parts, float | None], Call[Any]]

_UNANSWERED = object()


class BulkMap:
    """One ``map``: its items, their answers, the chunks out."""

    def __init__(
        self,
        agent: Agent,
        method: str,
        items: list[dict[str, Any]],
        submit: Submit,
        settle: Callable[[Call[Any], BaseException], None],
        timeout: float | None,
        retries: int,
        fail_fast: bool,
    ) -> None:
        self._agent = agent
        self._method = method
        self._items = items
        self._submit = submit
        self._settle = settle
        self._deadline = None if timeout is None else time.monotonic() + timeout
        #: its agent's paused seconds when it began: a pause of the agent moves
        #: the items not sent yet as it moves the deadlines of waiting calls
        self._held0 = agent.held_now()
        self._timeout = timeout
        self._retries = retries
        self._fail_fast = fail_fast
        self.out: list[Any] = [_UNANSWERED] * len(items)
        self.errors: dict[int, BaseException] = {}
        self._left = len(items)
        #: ranges of items still to send, in order
        self._todo: deque[tuple[int, int]] = deque([(0, len(items))]) if items else deque()
        self._out: set[Call[Any]] = set()
        #: deaths each blamed item has been through (only items that died)
        self._deaths: dict[int, int] = {}
        self._wake: asyncio.Future[None] | None = None
        self._sent = False  # a chunk has gone out
        #: every call of its agent was cancelled: items that come back fail with it
        self._cancelled: CallError | None = None

    # --- answers (from the pool, as frames arrive) --------------------------

    def part(self, pos: int, value: Any) -> None:
        if self.out[pos] is not _UNANSWERED or pos in self.errors:
            return  # each item has one outcome, the first
        self.out[pos] = value
        self._left -= 1
        if not self._left:
            self._poke()

    def part_failed(self, pos: int, error: CallError) -> None:
        self._fail(pos, error)

    def _fail(self, pos: int, error: BaseException) -> None:
        if self.out[pos] is not _UNANSWERED or pos in self.errors:
            return
        self.errors[pos] = error
        self._left -= 1
        if not self._left or self._fail_fast:
            self._poke()

    def cancel(self, error: CallError) -> None:
        """Every call of its agent is cancelled: so are the items not sent yet
        (those sent end with the calls that carry them, and those a chunk
        ended early gives back later)."""
        self._cancelled = error
        while self._todo:
            start, stop = self._todo.popleft()
            for pos in range(start, stop):
                self._fail(pos, copy.copy(error))
        self._poke()

    def _again(self, start: int, stop: int) -> None:
        """Items ``start`` to ``stop`` (not run) are to be sent again, first."""
        if self._cancelled is None:
            self._todo.appendleft((start, stop))
            return
        for pos in range(start, stop):
            self._fail(pos, copy.copy(self._cancelled))

    def _poke(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    # --- the map -------------------------------------------------------------

    async def run(self) -> list[Any]:
        """Every item's value (errors in place when not failing fast)."""
        loop = asyncio.get_running_loop()
        self._agent.maps.add(self)
        try:
            while True:
                self._send()
                if not self._left or (self._fail_fast and self.errors):
                    break
                self._wake = loop.create_future()
                await self._wake
        finally:
            self._agent.maps.discard(self)
            # The map ended: what still runs is cancelled (not a chunk whose
            # items are all answered: only its own answer is still to come).
            for call in list(self._out):
                parts = call.parts
                if parts is not None and parts.answered < len(parts.items):
                    self._settle(call, CallCancelled("map ended", agent=self._agent.name))
        if self.errors:
            if self._fail_fast:
                raise self.errors[min(self.errors)]
            for pos, err in self.errors.items():
                self.out[pos] = err
        return self.out

    def _chunk_size(self) -> int:
        t = self._agent.item_times.get(self._method)
        if t is None:
            return 1
        return max(1, min(_MAX_ITEMS, int(_CHUNK_SECONDS / max(t, 1e-7))))

    def _send(self) -> None:
        """Chunks out, while the replicas have room for them."""
        ag = self._agent
        room = max(1, ag.capacity * len(ag.slots))  # as many as single calls
        todo = self._todo
        while todo and len(self._out) < room:
            if self._fail_fast and self.errors:
                return
            start, end = todo.popleft()
            if self._time_left() == 0.0:
                self._time_out(start, end)
                continue
            stop = min(end, start + self._chunk_size())
            if stop < end:
                todo.appendleft((stop, end))
            self._send_chunk(start, stop)

    def _send_chunk(self, start: int, stop: int) -> None:
        parts = Parts(self._items[start:stop], start, self)
        try:
            call = self._submit(parts, self._time_left())
        except EncodeError as exc:
            if stop - start > 1:
                # One of them cannot be sent, or together they are too big for
                # one frame: halves, down to the items that are the problem.
                mid = (start + stop) // 2
                self._todo.appendleft((mid, stop))
                self._todo.appendleft((start, mid))
                return
            if self._fail_fast:
                raise
            self._fail(start, exc)
            return
        except AgentrtError as exc:
            # Closed, or the agent failed for good: as a call would raise it
            # (the first time), else in place of each item it stops.
            if self._fail_fast or not self._sent:
                raise
            for pos in range(start, stop):
                self._fail(pos, copy.copy(exc))
            return
        self._sent = True
        self._out.add(call)
        call.future.add_done_callback(functools.partial(self._chunk_done, call))

    def _time_left(self) -> float | None:
        """Seconds to the map's deadline (None: none), its agent's pauses counted."""
        if self._deadline is None:
            return None
        held = self._agent.held_now() - self._held0
        return max(0.0, self._deadline + held - time.monotonic())

    def _time_out(self, start: int, stop: int) -> None:
        for pos in range(start, stop):
            self._fail(
                pos,
                CallTimeout(
                    f"call to {self._agent.name!r} timed out after {self._timeout or 0:g}s",
                    timeout=self._timeout,
                    agent=self._agent.name,
                ),
            )

    def _chunk_done(self, call: Call[Any], fut: asyncio.Future[Any]) -> None:
        self._out.discard(call)
        parts = call.parts
        assert parts is not None
        n = len(parts.items)
        first = parts.start + parts.answered  # the first item not answered
        end = parts.start + n
        exc = CallCancelled("cancelled", agent=call.agent) if fut.cancelled() else fut.exception()
        if exc is None:
            took = fut.result()
            if first == end:
                if type(took) is float and 0.0 <= took < _MAX_REPORT:
                    self._measured(took / n)
            else:  # it ended early, blaming no item (a long item, a neighbour's limit)
                if type(took) is float and 0.0 <= took < _MAX_REPORT and parts.answered:
                    self._measured(took / parts.answered)  # (a long item: smaller chunks)
                self._again(first, end)  # the rest again
        elif isinstance(exc, AgentDied) and first < end:
            # The replica died running item ``first``: it alone is to blame.
            deaths = self._deaths.get(first, 0) + 1
            if deaths <= self._retries:
                self._deaths[first] = deaths
                self._again(first, end)
            else:
                self._fail(first, exc)
                if first + 1 < end:
                    self._again(first + 1, end)
        elif isinstance(exc, CallTimeout):
            self._time_out(first, end)  # with the map's timeout, not the chunk's rest
        else:
            # A cancellation, the supervisor closing: every item not answered
            # ends with it.
            for pos in range(first, end):
                self._fail(pos, exc if pos == first else copy.copy(exc))
        self._poke()

    def _measured(self, seconds: float) -> None:
        if not math.isfinite(seconds):
            return
        times = self._agent.item_times
        t = times.get(self._method)
        times[self._method] = seconds if t is None else t + _SMOOTH * (seconds - t)
