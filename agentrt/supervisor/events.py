"""Events: what happened in a supervisor, as a stream subscribers read.

:class:`RunEvent` is one thing that happened (a task queued, started or
finished; a replica ready, crashed or restarting; a subagent or tool call
started or finished).  :class:`EventHub` hands each to every subscriber's
bounded queue; a subscriber that stops reading loses events, never slows
the supervisor.  Nothing is built when nobody listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import msgspec

__all__ = ["EventHub", "RunEvent"]

#: events a subscriber may have unread before newer ones are dropped
QUEUE_SIZE = 10_000


class RunEvent(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One thing that happened: ``kind`` plus what it concerns."""

    kind: str
    time: float
    run_id: str | None = None
    task: str | None = None
    agent: str | None = None
    replica: int | None = None
    pid: int | None = None
    status: str | None = None
    reason: str | None = None
    attempt: int | None = None
    tasks: int | None = None
    items: int | None = None
    makespan: float | None = None
    call_id: int | None = None  # call_started / call_finished: a subagent or tool call
    parent: int | None = None  # ... and the call that made it
    target: str | None = None
    summary: str | None = None  # call_started: its arguments, short
    approval: str | None = None  # approval_requested / approval_decided: the request's id


class EventHub:
    """Fan-out of events to subscribers (:meth:`stream`); with ``history``, the
    last that many are kept too (for ``agentrt ctl tail``)."""

    def __init__(self, history: int = 0) -> None:
        self._subscribers: set[asyncio.Queue[RunEvent]] = set()
        self.history: deque[RunEvent] | None = deque(maxlen=history) if history else None

    @property
    def active(self) -> bool:
        """Someone listens (or history is kept): worth building an event."""
        return bool(self._subscribers) or self.history is not None

    @property
    def watched(self) -> bool:
        """Someone listens: worth building the many events of subagent and tool
        calls (the history keeps only the others)."""
        return bool(self._subscribers)

    def emit(self, kind: str, **fields: Any) -> None:
        """An event that happens now."""
        if self._subscribers or self.history is not None:
            self.emit_at(time.time(), kind, **fields)

    def emit_at(self, when: float, kind: str, **fields: Any) -> None:
        """An event that happened at ``when`` (epoch seconds)."""
        if not self._subscribers and self.history is None:
            return
        ev = RunEvent(kind=kind, time=when, **fields)
        if self.history is not None:
            self.history.append(ev)
        for q in self._subscribers:
            with contextlib.suppress(asyncio.QueueFull):  # a stalled reader loses events
                q.put_nowait(ev)

    async def stream(self) -> AsyncIterator[RunEvent]:
        """Every event from now on, in order (from its first iteration)."""
        sub = self.subscribe()
        try:
            async for ev in sub:
                yield ev
        finally:
            await sub.aclose()

    def subscribe(self) -> Subscription:
        """Every event from this moment on (not from a first iteration)."""
        return Subscription(self._subscribers)


class Subscription:
    """An async iterator of the events emitted since it was made; :meth:`aclose` ends it."""

    def __init__(self, subscribers: set[asyncio.Queue[RunEvent]]) -> None:
        self._queue: asyncio.Queue[RunEvent] = asyncio.Queue(maxsize=QUEUE_SIZE)
        subscribers.add(self._queue)
        # Dropped without aclose() (a loop left with break, a cancelled reader):
        # unsubscribed when collected, so nobody builds events for it any more.
        self._done = weakref.finalize(self, subscribers.discard, self._queue)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> RunEvent:
        return await self._queue.get()

    async def aclose(self) -> None:
        self._done()
