"""The replica pool: each agent's slots, their run loop, dispatch and requeue.

An :class:`Agent` is a pool of :class:`Slot`\\ s, one per replica position.
Each slot is driven by one task (:meth:`Pool.run_slot`) that starts a
process, serves until it dies, and asks the restart policy
(:class:`Restarts`, the supervision tree) whether to start it again.
States and their transitions (each one logged as ``replica_state``)::

    starting ──Ready──▶ ready ◀──idle── busy
       │                  │ ──call──▶    │
       │ startup error    └──────┬───────┘
       ▼                         ▼ died                 close/stop/strategy
    crashed ◀───────────────── crashed / exited ◀────── stopping
       │ restart (policy), intensity not exceeded
       ▼
    backoff ──delay──▶ starting            intensity exceeded ─▶ failed

Calls wait in the agent's queue until a replica has room (``concurrency``
running plus ``queue`` waiting in the replica); the least-loaded replica gets
the next call.  Answers settle calls through the :class:`Ledger`; a dead
replica's calls are retried, requeued or failed by :meth:`Pool.requeue_or_fail`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import msgspec

from agentrt import _linux
from agentrt.config import AgentSpec
from agentrt.errors import (
    AgentCrashed,
    AgentDied,
    AgentFailed,
    CallCancelled,
    CallError,
    CallTimeout,
    LimitExceeded,
    RemoteError,
    StartupError,
    SupervisorClosed,
    from_dict,
)
from agentrt.process import AgentProcess, Launcher, log_from_agent
from agentrt.protocol import (
    Approve,
    Become,
    Boot,
    Cancel,
    Count,
    Failure,
    Heartbeat,
    Log,
    Part,
    Receive,
    Rest,
    Result,
    Send,
    Spawn,
    Submit,
    ToolCall,
    ToolSpan,
)
from agentrt.supervisor import policy, watchdog
from agentrt.supervisor.boot import BootPlanner
from agentrt.supervisor.events import EventHub
from agentrt.supervisor.ledger import Call as LedgerCall
from agentrt.supervisor.ledger import Ledger, Parts

__all__ = ["Agent", "Pool", "ReplicaStatus", "Request", "Restarts", "Slot"]

T = TypeVar("T")

#: Failure kinds that are a limit of the replica, and the Boot field that holds it
_LIMIT_KINDS = {"memory": "memory", "open_files": "open_files", "file_size": "file_size"}
_LIMIT_UNITS = {"memory": "bytes", "open_files": "files", "file_size": "bytes"}
#: a replacement takes a call before its Ready only where the slot's last start
#: took at most this long (s) once launched: a slow start (an agent that loads
#: something first) must not hold a call another replica may be free for sooner
_EARLY_WITHIN = 0.05

#: an agent's ``ctx`` request (routed by the supervisor's request handler)
Request = Spawn | ToolCall | Send | Receive | Submit | Count | Approve


class ReplicaStatus(msgspec.Struct, kw_only=True):
    """A snapshot of one replica."""

    agent: str
    replica: int
    state: str
    pid: int | None
    restarts: int
    inflight: int
    rss: int | None = None
    cpu_percent: float | None = None
    uptime: float | None = None
    #: where it runs, on a cluster backend (``ray``): the node
    node: str | None = None


class StandbyStatus(msgspec.Struct, kw_only=True):
    """An agent's standby (``standby = true``): ``starting`` (its pid None
    until launched), ``ready`` or ``paused``."""

    agent: str
    pid: int | None
    state: str


@dataclass(eq=False, slots=True)
class Slot:
    """One replica position of an agent: the process in it changes, the slot stays."""

    agent: Agent
    index: int
    state: str = "starting"
    proc: AgentProcess | None = None
    inflight: dict[int, LedgerCall[Slot]] = field(default_factory=dict)
    restarts: int = 0
    generation: int = 0
    #: its own recent restarts, for the backoff (the agent's period)
    window: policy.Window = field(default_factory=lambda: policy.Window(10.0))
    task: asyncio.Task[None] | None = None
    first_start: asyncio.Future[None] | None = None
    #: resolved when the start in progress ends (ready or failed); set by a group restart
    started: asyncio.Future[None] | None = None
    stop_requested: bool = False
    #: claimed by a group restart: resolves to whether it starts again
    hold: asyncio.Future[bool] | None = None
    gone: bool = False  # its task ended: this slot will not serve again
    psutil_proc: Any = None
    reaping: asyncio.Task[None] | None = None  # sweep + cgroup removal of the last process
    #: dead processes, with their Boots, whose leftovers are still to remove
    #: (see :meth:`Pool.remove_leftovers`)
    leftovers: list[tuple[AgentProcess, Boot]] = field(default_factory=list)
    dead_proc: AgentProcess | None = None  # the last process whose death was answered
    dead_cause: AgentDied | None = None  # and why it died (None: asked to stop)
    #: the supervisor is killing its process for one call's sake: the others are requeued
    innocent: bool = False
    #: paused (see ``holds.py``): nothing is dispatched to it, its process is frozen
    paused: bool = False
    #: a replacement starting, its pipes up: it takes one waiting call before
    #: its ``Ready`` (see :meth:`Pool._serving`)
    early: bool = False
    #: when its process was launched (pipes up), and how long its last start
    #: took from then to its ``Ready`` (s)
    launched_at: float = 0.0
    start_took: float = 0.0
    #: since when (``time.monotonic()``)
    paused_at: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.agent.name}#{self.index}"


class BulkRun(Protocol):
    """A bulk map going on (:class:`agentrt.supervisor.bulk.BulkMap`)."""

    def cancel(self, error: CallError) -> None: ...


@dataclass(eq=False, slots=True)
class Agent:
    """An agent's pool: its spec, slots (replicas), queue and restart window."""

    spec: AgentSpec
    slots: list[Slot] = field(default_factory=list)
    waiting: deque[LedgerCall[Slot]] = field(default_factory=deque)
    #: restarts within its period (restart intensity)
    window: policy.Window = field(default_factory=lambda: policy.Window(10.0))
    failed: AgentFailed | None = None
    all_gone: bool = False  # every slot has ended for good: nothing will serve
    #: the last death of one of its replicas, for reports
    last_cause: AgentDied | None = None
    #: paused as a whole: its queue's deadlines stand still, new replicas start paused
    paused: bool = False
    #: no slot before this index is idle (a hint for dispatch: lowered whenever
    #: a slot may have become idle; a wrong hint costs a full scan, never a call)
    idle_hint: int = 0
    #: seconds one item of a bulk map takes in a replica, by method (a moving
    #: average of what its replicas report; a method is there once measured)
    item_times: dict[str, float] = field(default_factory=dict)
    #: the bulk maps going on to it (cancelled with its calls)
    maps: set[BulkRun] = field(default_factory=set)
    #: paused as a whole since (time.monotonic()), and the seconds of its
    #: earlier pauses: what its waiting calls' deadlines stood still for
    paused_at: float = 0.0
    held_for: float = 0.0
    #: ``standby = true``: a replica confined and its entry imported, waiting
    #: to take a dead one's place (see :meth:`Pool.keep_standby`); the task
    #: making the next; the Boot inputs it was made with; how many were made
    standby: AgentProcess | None = None
    standby_task: asyncio.Task[None] | None = None
    standby_inputs: tuple[Any, ...] = ()
    standbys: int = 0
    #: every standby process not yet a replica, until reaped (stopped with the
    #: agent), and the removals of their leftovers going on
    standby_procs: set[AgentProcess] = field(default_factory=set)
    standby_reaping: set[asyncio.Task[None]] = field(default_factory=set)
    #: no more standbys: one failed, or the agent is stopping
    standby_off: bool = False
    #: ``standby = "auto"``: one of its replicas died, so it keeps one now
    standby_due: bool = False

    @property
    def wants_standby(self) -> bool:
        """Whether it keeps a standby now (``standby = true``, or ``"auto"``
        once one of its own replicas died)."""
        want = self.spec.standby
        return want is True or (want == "auto" and self.standby_due)

    def held_now(self) -> float:
        """Seconds its queue has stood still so far, the pause going on counted."""
        if self.paused:
            return self.held_for + time.monotonic() - self.paused_at
        return self.held_for

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def capacity(self) -> int:
        return self.spec.concurrency + self.spec.queue

    @property
    def is_tool(self) -> bool:
        """The pool of an isolated tool (started on its first call)."""
        return self.spec.name.startswith("tool:")

    def slot_gone(self, slot: Slot) -> None:
        slot.gone = True
        self.all_gone = all(s.gone for s in self.slots)

    def no_replica(self) -> AgentFailed:
        return AgentFailed(
            self.name,
            f"no replica left ({self.spec.restart} replicas that ended are not restarted)",
        )


class Restarts(Protocol):
    """The supervision tree's decision after a replica died (see ``tree.py``)."""

    async def after_death(self, slot: Slot, cause: AgentDied | None) -> bool:
        """Whether ``slot`` starts again (after any delay or group restart)."""
        ...


RequestHandler = Callable[[Slot, AgentProcess, Request], None]


class Pool:
    """Every agent's replicas: start, serve, die, dispatch, requeue, stop."""

    def __init__(
        self,
        ledger: Ledger[Slot],
        events: EventHub,
        boots: BootPlanner,
        log: Any,
    ) -> None:
        self.ledger = ledger
        self.events = events
        self.boots = boots
        self.log = log
        #: agents in start order (OTP's start order: declaration order)
        self.agents: dict[str, Agent] = {}
        self.launcher: Launcher | None = None
        self.restarts: Restarts | None = None
        self.on_request: RequestHandler | None = None
        self.tools: Callable[[], dict[str, str]] = dict
        self.tool_timeouts: Callable[[], dict[str, float]] = dict
        self.isolated_entries: Callable[[], dict[str, str]] = dict
        #: in-process tools whose calls may need approval, and their rules
        self.tool_approvals: Callable[[], dict[str, list[dict[str, list[str]]]]] = dict
        self.closing = False
        #: why the supervisor is closing: what the calls its replicas held fail with
        self.close_error: CallError | SupervisorClosed | None = None
        #: a replica became ready (the pause module freezes one in a paused slot)
        self.on_ready: Callable[[Slot], None] | None = None
        #: a standby became ready (the pause module freezes one of a paused agent)
        self.on_standby: Callable[[Agent, AgentProcess], None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.Task[None] | None = None

    # --- slots in start order ------------------------------------------------------

    def order(self) -> list[Slot]:
        """The children a restart strategy applies to, in start order: every slot
        whose loop runs and that may still serve.  Not among them: an agent still
        on its first start, and isolated tools' pools (``tool:<name>``), which
        restart on their own and whose failure fails only their calls."""
        return [
            s
            for a in self.agents.values()
            if a.failed is None and not a.is_tool
            for s in a.slots
            if not s.gone
            and not s.stop_requested
            and s.task is not None
            and not s.task.done()
            and (s.first_start is None or s.first_start.done())
        ]

    # --- states --------------------------------------------------------------------

    def set_state(self, slot: Slot, state: str) -> None:
        if slot.state != state:
            pid = slot.proc.pid if slot.proc is not None else None
            self.log.debug(
                "replica_state",
                agent=slot.agent.name,
                replica=slot.index,
                from_state=slot.state,
                to_state=state,
                pid=pid,
            )
            slot.state = state

    # --- the replica loop ----------------------------------------------------------

    def add(self, spec: AgentSpec, period: float) -> Agent:
        """A new agent's pool with one task per slot; they start at once."""
        agent = Agent(spec, window=policy.Window(period))
        self.agents[spec.name] = agent
        loop = asyncio.get_running_loop()
        for i in range(spec.replicas):
            slot = Slot(agent, i, window=policy.Window(period))
            slot.first_start = loop.create_future()
            agent.slots.append(slot)
            slot.task = loop.create_task(self.run_slot(slot), name=f"slot-{spec.name}#{i}")
        limited = spec.limits.memory is not None or spec.limits.cpu_time is not None
        if limited and self._watchdog is None:
            self._watchdog = loop.create_task(self._limits_watchdog(), name="limits-watchdog")
        return agent

    async def run_slot(self, slot: Slot) -> None:
        """Start, serve, die, ask the tree whether to start again; until told to stop."""
        try:
            await self._serve(slot)
        except Exception as exc:  # a bug, or the machine refusing pipes: logged, not lost
            self.log.exception("replica_loop_failed", agent=slot.agent.name, replica=slot.index)
            if slot.first_start is not None and not slot.first_start.done():
                slot.first_start.set_exception(
                    StartupError(f"could not start: {exc}", agent=slot.agent.name)
                )
        finally:
            _resolve(slot.started)  # a group restart waiting for this start goes on
            if slot.hold is not None and not slot.hold.done():
                slot.hold.set_result(False)

    async def _serve(self, slot: Slot) -> None:
        agent = slot.agent
        spec = agent.spec
        log = self.log.bind(agent=spec.name, replica=slot.index)
        assert self.launcher is not None and self.restarts is not None
        try:
            while True:
                started = slot.started  # this start's, if a group restart waits for it
                cause: AgentDied | None
                failed: StartupError | None = None
                standby = self._take_standby(slot, log)
                if standby is not None:
                    proc, boot = standby, standby.boot
                    # (once it has served its first calls: see remove_leftovers)
                    asyncio.get_running_loop().call_later(
                        _STANDBY_AFTER, self.remove_leftovers, slot
                    )
                else:
                    boot = self.boots.boot(spec, slot.index, slot.generation, *self._boot_inputs())
                    proc = AgentProcess(boot, self._handler(slot), log)
                    failed = await self._launch(slot, proc)
                if failed is not None:
                    slot.start_took = math.inf  # a failed start is not a quick one
                    cause = self._replica_dead(slot, boot, proc, failed)
                else:
                    slot.start_took = time.monotonic() - slot.launched_at
                    if _serves(slot, proc):
                        self.set_state(slot, "busy" if slot.inflight else "ready")
                        for call in slot.inflight.values():
                            if call.future.done() and call.timer is None and not slot.paused:
                                self.arm_grace(call, proc)  # withdrawn before Ready: see withdraw
                    elif slot.state in ("ready", "busy") and slot.hold is None:
                        # ready as its Ready was read (_said_ready), gone since: no
                        # call is to go to it (its death is handled below)
                        self.set_state(slot, "starting")
                    log.info(
                        "replica_ready",
                        pid=proc.pid,
                        generation=slot.generation,
                        standby=standby is not None,
                    )
                    self.events.emit(
                        "replica_ready", agent=spec.name, replica=slot.index, pid=proc.pid
                    )
                    _resolve(slot.first_start)
                    _resolve(started)
                    if slot.paused and self.on_ready is not None:
                        self.on_ready(slot)
                    self.dispatch(agent, rescan=True)
                    if standby is not None:
                        proc.flush()  # its Become and first calls, now, in one write
                    elif agent.standby_due and agent.standby is None:
                        # ("auto": the first standby once this replacement has
                        # served its first calls, as after a standby's hand-over)
                        asyncio.get_running_loop().call_later(
                            _STANDBY_AFTER, self.keep_standby, agent
                        )
                    # Its callers are answered from a callback on ``dead``, not
                    # after this task wakes up: two loop turns and the restart's
                    # first steps sooner.
                    proc.dead.add_done_callback(functools.partial(self._on_exit, slot, boot, proc))
                    cause = self._replica_dead(slot, boot, proc, await asyncio.shield(proc.dead))
                slot.leftovers.append((proc, boot))
                if cause is not None:
                    agent.last_cause = cause
                if slot.first_start is not None and not slot.first_start.done():
                    assert cause is not None
                    slot.first_start.set_exception(cause)
                    self.set_state(slot, "crashed")
                    return
                _resolve(started)
                if cause is not None:
                    self.log_death(slot, proc, cause)
                if slot.stop_requested or self.closing:
                    return
                if not await self.restarts.after_death(slot, cause):
                    return
                if slot.stop_requested or self.closing:
                    self.set_state(slot, "exited")
                    return
                # After the death's line, and off the restart's path (see log_death).
                asyncio.get_running_loop().call_soon(
                    functools.partial(log.info, "replica_restarting", restarts=slot.restarts)
                )
                self.events.emit("replica_restarting", agent=spec.name, replica=slot.index)
        finally:
            self.remove_leftovers(slot)

    async def _launch(self, slot: Slot, proc: AgentProcess) -> StartupError | None:
        """Start ``proc`` as the slot's replica and wait for its Ready; the
        StartupError if it never became ready."""
        assert self.launcher is not None
        proc.on_ready = functools.partial(self._said_ready, slot, proc)
        slot.proc = proc
        slot.psutil_proc = None
        self.set_state(slot, "starting")
        try:
            await proc.start(
                self.launcher,
                slot.agent.spec.startup_timeout,
                functools.partial(self._serving, slot),
            )
        except StartupError as exc:
            return exc
        finally:
            slot.early = False  # ready or not, it takes no more calls early
            self.remove_leftovers(slot)
        return None

    def remove_leftovers(self, slot: Slot) -> None:
        """Remove the working directories and cgroups of the slot's dead processes.

        Once the replacement has started (or the slot waits, or is done):
        the threads that remove them would otherwise compete with the
        replacement's start for the cores, half a millisecond of it here.
        """
        if not slot.leftovers:
            return
        gone, slot.leftovers = slot.leftovers, []
        for _proc, boot in gone:
            self.spawn(self.boots.remove_workdir(boot))
        slot.reaping = self.spawn(self._reap_all(gone, slot.reaping))

    async def _reap_all(
        self, gone: list[tuple[AgentProcess, Boot]], earlier: asyncio.Task[None] | None
    ) -> None:
        """Reap ``gone``; return once the earlier removal is done too (what a
        stop waits for: ``slot.reaping``)."""
        results = await asyncio.gather(
            *(self._reap(proc, boot) for proc, boot in gone), return_exceptions=True
        )
        for r in results:
            if isinstance(r, Exception):
                self.log.error("replica_cleanup_failed", error=repr(r))
        if earlier is not None:
            await asyncio.wait({earlier})

    # --- standbys ------------------------------------------------------------------

    def _boot_inputs(
        self,
    ) -> tuple[
        dict[str, str],
        dict[str, float],
        dict[str, list[dict[str, list[str]]]],
        dict[str, str],
    ]:
        """What a replica's Boot is made of besides its agent's spec (tools, ...)."""
        return self.tools(), self.tool_timeouts(), self.tool_approvals(), self.isolated_entries()

    def keep_standby(self, agent: Agent) -> None:
        """Start the agent's standby in the background, where it keeps one
        (``standby = true``, or ``"auto"`` once one of its replicas died;
        local replicas) and has none.

        A standby is a replica of the agent made ahead of need: launched,
        confined, limited and its entry imported as any, it says Ready and
        then waits.  When one of the agent's replicas dies and is restarted,
        the standby takes its place (``Become``: its replica number and
        generation) instead of a new process being started, and serves the
        next call at once; another standby is then made.  The restart is the
        same restart for the supervision tree (its restart type, intensity,
        backoff and strategy decide first).  A standby that fails to start
        or dies while it waits is not made again (the agent's replicas then
        restart as without one), unless its zygote's death took it.
        """
        if (
            not agent.wants_standby
            or agent.standby is not None
            or agent.standby_task is not None
            or agent.standby_off
            or agent.failed is not None
            or agent.all_gone
            or agent.paused  # (its import is the agent's code: made on resume)
            or self.closing
            or self.launcher is None
            or self.launcher.remote
        ):
            return
        agent.standby_task = self.spawn(self._start_standby(agent))

    async def _start_standby(self, agent: Agent) -> None:
        assert self.launcher is not None
        spec = agent.spec
        if agent.paused:  # paused since it was asked for: made on resume
            agent.standby_task = None
            return
        agent.standbys += 1
        log = self.log.bind(agent=spec.name, standby=agent.standbys)
        try:
            inputs = self._boot_inputs()
            # (replica -1: its cgroup and directory are named "<agent>.-1.<n>")
            boot = self.boots.boot(spec, -1, agent.standbys, *inputs)
        except Exception as exc:  # e.g. no dynamic uid left
            agent.standby_task = None
            agent.standby_off = True
            log.warning("standby_not_made", reason=f"{type(exc).__name__}: {exc}")
            return
        boot = msgspec.structs.replace(boot, standby=True)
        proc = AgentProcess(boot, _standby_frame, log)
        agent.standby_procs.add(proc)
        proc.dead.add_done_callback(functools.partial(self._standby_gone, agent, proc))
        try:
            await proc.start(self.launcher, spec.startup_timeout)
        except StartupError:
            return  # (said by _standby_gone)
        finally:
            agent.standby_task = None
        if agent.standby_off or self.closing or agent.failed is not None or agent.all_gone:
            await proc.stop(spec.shutdown_timeout)
            return
        agent.standby, agent.standby_inputs = proc, inputs
        log.info("standby_ready", pid=proc.pid)
        if agent.paused and self.on_standby is not None:  # paused while it started
            self.on_standby(agent, proc)

    def _standby_gone(
        self, agent: Agent, proc: AgentProcess, dead: asyncio.Future[AgentDied | None]
    ) -> None:
        if proc not in agent.standby_procs:
            return  # it became a replica: its slot saw to its death
        if agent.standby is proc:
            agent.standby = None
        orphaned = proc.orphaned()  # its zygote died and took it along
        if not proc.stopping and not self.closing and not agent.standby_off and not orphaned:
            cause = dead.result()
            agent.standby_off = True
            self.log.warning(
                "standby_died",
                agent=agent.name,
                pid=proc.pid,
                reason=str(cause) if cause is not None else "exited",
                limit=getattr(cause, "limit", None),
                note="the agent's replicas restart without a standby from now on",
            )
        task = self.spawn(self._reap_standby(agent, proc, again=orphaned))
        agent.standby_reaping.add(task)
        task.add_done_callback(agent.standby_reaping.discard)

    async def _reap_standby(self, agent: Agent, proc: AgentProcess, again: bool) -> None:
        try:
            await self.boots.remove_workdir(proc.boot)
            await self._reap(proc, proc.boot)
        finally:
            agent.standby_procs.discard(proc)
        if again:
            self.keep_standby(agent)  # (from the new zygote)

    def _take_standby(self, slot: Slot, log: Any) -> AgentProcess | None:
        """The agent's standby, now replica ``slot`` (``Become`` sent); None if
        it has none fit to (a first start takes none; nor does a standby made
        before the agent's tools changed: it is stopped, and another made)."""
        agent = slot.agent
        proc = agent.standby
        if proc is None or slot.first_start is None or not slot.first_start.done():
            return None
        if slot.stop_requested:
            return None
        agent.standby = None
        loop = asyncio.get_running_loop()
        if not proc.alive or proc.reason is not None or proc.exiting():
            # Gone, or going (its exit not handled yet: its zygote's death
            # took it too, say): calls sent to it would fail as if begun.
            # Its death is _standby_gone's to judge (a new one, or none).
            proc.kill()
            return None
        if agent.standby_inputs != self._boot_inputs():
            self.spawn(proc.stop(agent.spec.shutdown_timeout))
            loop.call_later(_STANDBY_AFTER, self.keep_standby, agent)
            return None
        agent.standby_procs.discard(proc)
        proc.boot = msgspec.structs.replace(
            proc.boot, replica=slot.index, generation=slot.generation, standby=False
        )
        proc.handler = self._handler(slot)
        proc.log = log.bind(pid=proc.pid)
        proc.send_soon(Become(slot.index, slot.generation))  # (the first calls with it)
        if proc.thaw is not None and not slot.paused:
            proc.thaw()  # frozen with its agent, now a replica of a slot resumed alone
        proc.ready_at = slot.launched_at = time.monotonic()
        slot.proc = proc
        slot.psutil_proc = None
        # The next standby once this one has served its first calls: made now,
        # it would compete with them for the cores.
        loop.call_later(_STANDBY_AFTER, self.keep_standby, agent)
        return proc

    async def drop_standby(self, agent: Agent) -> None:
        """Stop the agent's standbys (the one waiting, one starting, stale ones
        being stopped) and wait until they and their leftovers are gone; none
        is made again."""
        agent.standby_off = True
        task = agent.standby_task
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        agent.standby = None
        procs = list(agent.standby_procs)
        await asyncio.gather(
            *(p.stop(agent.spec.shutdown_timeout) for p in procs), return_exceptions=True
        )
        await asyncio.gather(*(p.wait_closed() for p in procs))
        while agent.standby_reaping:
            await asyncio.wait(set(agent.standby_reaping))

    async def _reap(self, proc: AgentProcess, boot: Boot) -> None:
        """Wait until the replica and its leftovers are gone, then remove its cgroups."""
        await proc.wait_closed()
        await self.boots.remove_cgroups(boot)
        self.boots.release(boot)

    def log_death(self, slot: Slot, proc: AgentProcess, cause: AgentDied) -> None:
        """The death's event now; its log line on the next loop turn.

        Rendering a warning takes a quarter of a millisecond here: written
        once the restart has sent its Boot and waits, it no longer holds the
        replacement back.
        """
        self.events.emit(
            "replica_crashed",
            agent=slot.agent.name,
            replica=slot.index,
            pid=proc.pid,
            status=cause.status,
            reason=str(cause),
        )
        asyncio.get_running_loop().call_soon(
            functools.partial(
                self.log.warning,
                "replica_died",
                agent=slot.agent.name,
                replica=slot.index,
                pid=proc.pid,
                cause=type(cause).__name__,
                reason=str(cause),
                exit_code=cause.exit_code,
                limit=getattr(cause, "limit", None),
            )
        )

    def _on_exit(
        self, slot: Slot, boot: Boot, proc: AgentProcess, dead: asyncio.Future[AgentDied | None]
    ) -> None:
        self._replica_dead(slot, boot, proc, dead.result())

    def _replica_dead(
        self, slot: Slot, boot: Boot, proc: AgentProcess, died: AgentDied | None
    ) -> AgentDied | None:
        """A replica is gone (or never became ready): answer or requeue its calls.

        Once per process: for a ready replica, a callback on ``proc.dead``
        answers its callers before :meth:`run_slot` wakes up and gets the
        cause back from here; logging and the restart stay there.
        """
        if slot.dead_proc is proc:
            return slot.dead_cause
        cause = self.boots.death_cause(boot, proc.pid, died)
        slot.dead_proc, slot.dead_cause = proc, cause
        name = slot.agent.name
        if slot.stop_requested or self.closing or slot.hold is not None:
            self.log.debug(
                "replica_stopped",
                agent=name,
                replica=slot.index,
                pid=proc.pid,
                exit_code=proc.exit.exit_code if proc.exit is not None else None,
            )
            self.set_state(slot, "exited")
            why = "replica stopped"
            if self.closing and self.close_error is not None:
                why = f"replica stopped: {self.close_error}"  # who stopped the run, and why
            err = cause
            if isinstance(err, StartupError) and not proc.said_ready:
                err = None  # stopped while starting: its calls were stopped, not failed
            self.requeue_or_fail(slot, err or CallCancelled(why, agent=name))
        else:
            self.set_state(slot, "exited" if normal_end(cause) else "crashed")
            self.requeue_or_fail(
                slot, cause or AgentCrashed("replica exited", agent=name, exit_code=0)
            )
            if slot.agent.spec.standby == "auto" and not proc.orphaned():
                # One of its own replicas ended (not a group restart, not its
                # zygote's death): it keeps a standby from now on (see _serve).
                slot.agent.standby_due = True
        return cause

    def _said_ready(self, slot: Slot, proc: AgentProcess) -> None:
        """Its Ready read: the slot is ready (or busy) before the answers that
        follow it in the stream are handled, not once its task wakes up."""
        if _serves(slot, proc):
            self.set_state(slot, "busy" if slot.inflight else "ready")

    def _serving(self, slot: Slot) -> None:
        """A replica's pipes are up; its ``Ready`` is still to come.

        A replacement (its slot has started before, within ``_EARLY_WITHIN``
        the last time) takes a waiting call now: the call is in its pipe when
        it becomes ready, and is answered without a round trip through the
        supervisor first.  A first start does not: the start waits for every
        replica's ``Ready`` anyway.
        """
        slot.launched_at = time.monotonic()
        replacing = slot.first_start is None or slot.first_start.done()
        # Not on a cluster: whether a remote replica said Ready before its
        # death is known only from a stream that may still be in transit.
        local = slot.proc is not None and slot.proc.remote is None
        if replacing and local and slot.start_took <= _EARLY_WITHIN and not slot.stop_requested:
            slot.early = True
            if slot.agent.waiting:
                self.dispatch(slot.agent)

    # --- calls ---------------------------------------------------------------------

    def dispatch(self, agent: Agent, rescan: bool = False) -> None:
        """Send waiting calls to the agent's replicas: an idle one (the lowest
        first), else the least loaded with room, a replacement still starting
        counting as one with room for one call (``Slot.early``)."""
        waiting = agent.waiting
        if rescan:
            agent.idle_hint = 0
        cap = agent.capacity
        slots = agent.slots
        count = len(slots)
        while waiting:
            best: Slot | None = None
            # Idle slots from the hint on: a burst of calls to many replicas
            # finds each next idle one at once, not after scanning the busy.
            i = agent.idle_hint
            while i < count:
                s = slots[i]
                if not s.inflight and (s.state == "ready" or s.state == "busy") and not s.paused:
                    best = s
                    break
                i += 1
            agent.idle_hint = i + 1 if best is not None else count
            if best is None:
                load = cap
                for s in slots:
                    n = len(s.inflight)
                    if n < load and not s.paused:
                        st = s.state
                        early = s.early and st == "starting" and not n
                        if st == "ready" or st == "busy" or early:
                            best, load = s, n
                            if n == 0:
                                break
            if best is None:
                return
            call = waiting.popleft()
            if call.future.done():
                continue
            self._send(best, call)

    def _send(self, slot: Slot, call: LedgerCall[Slot]) -> None:
        proc = slot.proc
        assert proc is not None
        call.attempts += 1
        call.slot = slot
        call.pid = proc.pid
        call.started_at = time.time()
        if call.parent is not None and self.events.watched:
            self.ledger.emit_call("call_started", call)
        slot.inflight[call.id] = call
        if slot.state == "ready":
            slot.state = "busy"
        proc.send_bytes(call.frame)

    def _handler(self, slot: Slot) -> Callable[[AgentProcess, Any], None]:
        settle = self.ledger.settle

        def answered(cid: int, call: LedgerCall[Slot], value: Any) -> None:
            del slot.inflight[cid]
            call.slot = None
            if call.timer is not None:  # its deadline, or a withdrawn call's grace
                call.timer.cancel()
                call.timer = None
            settle(call, value)
            self._after_answer(slot)

        def handle(proc: AgentProcess, msg: Any) -> None:
            match msg:
                case Result(id=cid, value=value):
                    # (a violation leaves the call where it was among the slot's
                    # calls: the ones that started are told apart by their order)
                    call = slot.inflight.get(cid)
                    if call is not None:
                        if call.parts is not None and call.parts.answered < len(call.parts.items):
                            raise ValueError(  # killed for it, as a violation
                                f"call {cid} answered after {call.parts.answered} "
                                f"of its {len(call.parts.items)} items"
                            )
                        answered(cid, call, value)
                case Rest(id=cid, seconds=seconds):
                    call = slot.inflight.get(cid)
                    if call is not None:
                        _check_rest(call, slot.agent.spec.concurrency)
                        answered(cid, call, seconds)  # (its map sends the rest again)
                case Part(id=cid, index=index, value=value):
                    call = slot.inflight.get(cid)
                    if call is not None:
                        parts = self._next_part(call, index)
                        if call.finished_at is None:  # else its map has ended it
                            parts.sink.part(parts.start + index, value)
                case Failure(part=index) if index >= 0:
                    call = slot.inflight.get(msg.id)
                    if call is not None:
                        parts = self._next_part(call, index)
                        err = self._failure_error(slot, proc, call, msg)
                        if call.finished_at is None:
                            parts.sink.part_failed(parts.start + index, err)
                        if isinstance(err, LimitExceeded):
                            # The rest of its items did not run: back to its map.
                            del slot.inflight[msg.id]
                            call.slot = None
                            settle(call, None)
                            self.recycle(slot, proc, err, call.id)
                case Failure():
                    call = slot.inflight.pop(msg.id, None)
                    if call is not None:
                        call.slot = None
                        call.clear_timer()
                        err = self._failure_error(slot, proc, call, msg)
                        settle(call, error=err)
                        if isinstance(err, LimitExceeded):
                            self.recycle(slot, proc, err, call.id)
                        else:
                            self._after_answer(slot)
                case Spawn() | ToolCall() | Send() | Receive() | Submit() | Count() | Approve():
                    assert self.on_request is not None
                    self.on_request(slot, proc, msg)
                case ToolSpan(parent=parent, tool=tool, start=start, end=end, status=status):
                    if self.events.watched:
                        cid = -self.ledger.next_id()  # a span of its own, not a supervisor call
                        caller = slot.inflight.get(parent)
                        fields = {
                            "call_id": cid,
                            "parent": parent,
                            "target": f"{msg.kind}:{tool}",
                            "agent": slot.agent.name,
                            "pid": proc.pid,
                            "task": caller.task if caller is not None else None,
                        }
                        self.events.emit_at(
                            start, "call_started", summary=msg.summary or None, **fields
                        )
                        self.events.emit_at(
                            end,
                            "call_finished",
                            status=status,
                            reason=msg.error[:200] or None,
                            **fields,
                        )
                case Log():
                    log_from_agent(proc.log, msg)
                case Heartbeat():
                    pass

        return handle

    @staticmethod
    def _next_part(call: LedgerCall[Slot], index: int) -> Parts:
        """The items of ``call``, checked to have ``index`` as the next to answer
        (a replica answers them in order, each once)."""
        parts = call.parts
        if parts is None or index != parts.answered or index >= len(parts.items):
            raise ValueError(
                f"item {index} of call {call.id} answered out of turn"
                + ("" if parts is None else f" (next: {parts.answered} of {len(parts.items)})")
            )
        parts.answered = index + 1
        return parts

    def _after_answer(self, slot: Slot) -> None:
        if not slot.inflight:
            if slot.state == "busy":
                slot.state = "ready"
            agent = slot.agent
            if slot.index < agent.idle_hint:
                agent.idle_hint = slot.index
        if slot.agent.waiting:
            self.dispatch(slot.agent)

    @staticmethod
    def _failure_error(
        slot: Slot, proc: AgentProcess, call: LedgerCall[Slot], msg: Failure
    ) -> CallError:
        kw: dict[str, Any] = {"agent": slot.agent.name, "call_id": call.id, "pid": proc.pid}
        if msg.kind == "timeout":
            return CallTimeout(
                f"call to {slot.agent.name!r} timed out after {call.timeout:g}s"
                if call.timeout
                else "call deadline passed",
                timeout=call.timeout,
                **kw,
            )
        if msg.kind == "cancelled":
            return CallCancelled(f"call to {slot.agent.name!r} was cancelled", **kw)
        limit = _LIMIT_KINDS.get(msg.kind)
        if limit is not None:
            value = getattr(proc.boot, limit)
            return LimitExceeded(
                f"{msg.kind} limit of {value} {_LIMIT_UNITS[msg.kind]} exceeded: "
                f"{msg.type}: {msg.message}",
                limit=msg.kind,
                value=value,
                **kw,
            )
        if msg.error is not None:
            # A typed failure the agent did not handle (its subagent's or
            # tool's): the caller sees the root cause, not a wrapper.
            err = from_dict(msg.error)
            if isinstance(err, CallError):
                err.__notes__ = [f"raised through {slot.agent.name!r} (pid {proc.pid})"]
                return err
        return RemoteError(msg.type, msg.message, msg.traceback, **kw)

    def recycle(self, slot: Slot, proc: AgentProcess, err: LimitExceeded, culprit: int) -> None:
        """Call ``culprit`` hit a limit in this replica: replace the replica.

        The others it holds did nothing wrong: they go back to the queue, for
        the fresh replica, without using an attempt.
        """
        self.set_state(slot, "stopping")  # no further call is sent to it
        slot.innocent = True
        proc.kill(
            LimitExceeded(
                f"replica recycled: call {culprit} hit its {err.limit} limit",
                limit=err.limit,
                value=err.value,
                agent=slot.agent.name,
                pid=proc.pid,
            )
        )

    def withdraw(self, call: LedgerCall[Slot]) -> None:
        """The ledger settled a call a replica still runs: ``Cancel`` it there, and
        kill the replica's group if it has not answered within ``cancel_grace``."""
        slot = call.slot
        if slot is None or slot.proc is None or call.id not in slot.inflight:
            return
        proc = slot.proc
        proc.send(Cancel(call.id))
        # Else once resumed (a frozen replica cannot answer), or once ready (a
        # replacement reads its calls only then: the start has its own timeout).
        if not slot.paused and proc.said_ready:
            self.arm_grace(call, proc)

    def arm_grace(self, call: LedgerCall[Slot], proc: AgentProcess) -> None:
        """Kill ``proc`` unless it answers withdrawn ``call`` within ``cancel_grace``."""
        assert call.slot is not None
        grace = call.slot.agent.spec.cancel_grace
        call.timer = asyncio.get_running_loop().call_later(grace, self._on_cancel_grace, call, proc)

    def _on_cancel_grace(self, call: LedgerCall[Slot], proc: AgentProcess) -> None:
        call.timer = None
        slot = call.slot
        if slot is None or slot.proc is not proc or call.id not in slot.inflight:
            return
        slot.innocent = True  # the call that ignored its Cancel is settled already
        self.log.warning(
            "replica_killed_for_deadline",
            agent=slot.agent.name,
            replica=slot.index,
            pid=proc.pid,
            call_id=call.id,
        )
        proc.kill(
            LimitExceeded(
                f"call {call.id} ran past its deadline and ignored cancellation",
                limit="wall",
                value=call.timeout,
                agent=slot.agent.name,
                pid=proc.pid,
            )
        )

    def requeue_or_fail(self, slot: Slot, cause: AgentDied | CallError | SupervisorClosed) -> None:
        """A replica is gone: each call it held is retried, requeued or failed.

        Calls past the first ``concurrency`` in arrival order had not started
        (the replica starts them in order), nor had any call of a replica that
        never said ``Ready``: they go back to the queue without using an attempt.
        """
        agent = slot.agent
        calls = list(slot.inflight.values())
        slot.inflight.clear()
        innocent, slot.innocent = slot.innocent, False
        if not calls:
            return
        # Killed on purpose for one call (settled already), or before it could
        # run any: none of these is to blame.
        began = slot.proc is not None and slot.proc.said_ready
        conc = agent.spec.concurrency if began and not innocent else 0
        requeue: list[LedgerCall[Slot]] = []
        for i, call in enumerate(calls):
            call.slot = None
            if call.future.done():
                call.clear_timer()  # settled already: its cancel_grace is moot
                self.ledger.settle(call, error=copy.copy(cause))  # no-op once settled
                continue
            if i >= conc:
                if call.parts is not None and call.parts.answered:
                    # Its first items are answered, the rest never ran (the
                    # replica was recycled for another call): they go back
                    # to its map, which sends them again; nothing to blame.
                    self.ledger.settle(call, None)
                    continue
                call.attempts -= 1
                requeue.append(call)
            elif call.attempts <= call.retries and not self.closing and not slot.stop_requested:
                self.log.info(
                    "call_retry", agent=agent.name, call_id=call.id, attempt=call.attempts + 1
                )
                requeue.append(call)
            else:
                self.ledger.settle(call, error=copy.copy(cause))
        if self.closing or slot.stop_requested:
            # the agent is being stopped: nothing will serve them
            for call in requeue:
                self.ledger.settle(call, error=copy.copy(cause))
            return
        now = time.monotonic()
        for call in reversed(requeue):
            if call.held_at is not None and not agent.paused:
                self.ledger.release(call, now, reframe=True)  # its replica was paused
            agent.waiting.appendleft(call)
        if agent.failed is not None:
            self.fail_waiting(agent, agent.failed)
        else:
            self.dispatch(agent, rescan=True)

    def fail_waiting(self, agent: Agent, err: BaseException) -> None:
        while agent.waiting:
            self.ledger.settle(agent.waiting.popleft(), error=copy.copy(err))

    # --- stopping --------------------------------------------------------------------

    async def stop_slots(
        self, slots: Sequence[Slot], err: CallError | SupervisorClosed, *, sweep: bool = True
    ) -> None:
        """Stop replicas together, each with its own shutdown sequence.

        Returns once each is dead, reaped and its cgroups removed.  With
        ``sweep``, what they left behind is swept in one pass at the end;
        without, the caller sweeps (:func:`sweep_leftovers`).
        """
        procs: list[AgentProcess] = []
        for slot in slots:
            slot.stop_requested = True
            if slot.proc is not None and not slot.proc.dead.done():
                slot.proc.sweep = False
                procs.append(slot.proc)
        leaders = [p.pid for p in procs if p.pid and p.local] if sweep else []
        left = await asyncio.to_thread(_linux.descendants, leaders) if leaders else []
        chosen = set(map(id, slots))
        whole = {id(s.agent): s.agent for s in slots if all(id(o) in chosen for o in s.agent.slots)}

        async def stop_slot(slot: Slot) -> None:
            proc = slot.proc
            if proc is not None and not proc.dead.done():
                self.set_state(slot, "stopping")
                await proc.stop(slot.agent.spec.shutdown_timeout)
            if proc is not None:
                await proc.wait_closed(now=True)
            if slot.task is not None:
                slot.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await slot.task
            if slot.reaping is not None:
                # stop() returns once the replica's leftovers and cgroups are gone
                await asyncio.wait({slot.reaping})
            for call in list(slot.inflight.values()):
                call.slot = None
                call.clear_timer()
                self.ledger.settle(call, error=copy.copy(err))
            slot.inflight.clear()
            if slot.hold is not None and not slot.hold.done():
                slot.hold.set_result(False)

        results = await asyncio.gather(
            *(stop_slot(s) for s in slots),
            *(self.drop_standby(a) for a in whole.values()),
            return_exceptions=True,
        )
        for r in results:
            if isinstance(r, Exception):
                self.log.error("replica_stop_failed", error=repr(r))
        if leaders:
            await asyncio.to_thread(_linux.kill_tree, leaders, left)

    async def close(self) -> None:
        """Cancel the pool's own tasks (watchdog, clean-ups) once every agent stopped."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.wait({self._watchdog})
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    # --- observation -----------------------------------------------------------------

    async def status(self) -> list[ReplicaStatus]:
        slots = [s for a in self.agents.values() for s in a.slots]
        return await asyncio.to_thread(_status_sync, slots)

    def standbys(self) -> list[StandbyStatus]:
        """Each agent's standby, of those that have one now."""
        return [st for a in self.agents.values() if (st := standby_status(a)) is not None]

    async def _limits_watchdog(self) -> None:
        """Hold each replica's tree to its memory and CPU time limits (see
        ``watchdog``), and each standby's: a standby has run the agent's import,
        and what that started counts as a replica's would."""
        while True:
            await asyncio.sleep(watchdog.INTERVAL)
            procs = [
                p
                for a in self.agents.values()
                if a.spec.limits.memory is not None or a.spec.limits.cpu_time is not None
                for p in itertools.chain((s.proc for s in a.slots), a.standby_procs)
                # a remote replica's limits are its rlimits (its /proc is not ours)
                if p is not None and p.alive and p.local
            ]
            if procs:
                await watchdog.watch(procs)

    # --- helpers -----------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """A background task of the pool's (cancelled by :meth:`close`)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def standby_status(agent: Agent) -> StandbyStatus | None:
    """The agent's standby now; None when it has none."""
    proc = agent.standby
    if proc is not None and proc.alive:
        state = "paused" if proc.thaw is not None else "ready"
        return StandbyStatus(agent=agent.name, pid=proc.pid, state=state)
    if agent.standby_task is not None:
        starting = [p for p in agent.standby_procs if p.alive and not p.said_ready]
        pid = starting[0].pid if starting else None
        return StandbyStatus(agent=agent.name, pid=pid, state="starting")
    return None


#: seconds after a standby took a replica's place before the next is made
_STANDBY_AFTER = 0.005


def _serves(slot: Slot, proc: AgentProcess) -> bool:
    """Whether ``proc``, ready, is the slot's replica to send calls to: alive,
    not being stopped or killed, the slot not claimed by a group restart."""
    return (
        slot.proc is proc
        and proc.alive
        and proc.reason is None
        and not slot.stop_requested
        and slot.hold is None
    )


def _check_rest(call: LedgerCall[Slot], concurrency: int) -> None:
    """Raises (a protocol violation) where a ``Rest`` may not end ``call``."""
    parts = call.parts
    if parts is None:
        why = "it is not a chunk of items"
    elif concurrency == 1:
        why = "its replica runs one call at a time"
    elif not 0 < parts.answered < len(parts.items):
        why = f"it had answered {parts.answered} of its {len(parts.items)} items"
    else:
        return
    raise ValueError(f"call {call.id} ended its items early, but {why}")


def _standby_frame(proc: AgentProcess, msg: Any) -> None:
    """What a standby may send while it waits: its log events, nothing else."""
    if isinstance(msg, Log):
        log_from_agent(proc.log, msg)
        return
    raise ValueError(f"a standby sent {type(msg).__name__} before it became a replica")


def normal_end(cause: AgentDied | None) -> bool:
    """OTP's *normal*: a stop asked for (no cause), or a plain exit with status 0."""
    return policy.is_normal_exit(
        cause is None,
        cause.exit_code if cause is not None else None,
        type(cause) is AgentCrashed,
    )


def _resolve(fut: asyncio.Future[None] | None) -> None:
    if fut is not None and not fut.done():
        fut.set_result(None)


def _status_sync(slots: list[Slot]) -> list[ReplicaStatus]:
    import psutil

    out: list[ReplicaStatus] = []
    now = time.monotonic()
    for s in slots:
        proc = s.proc
        pid = proc.pid if proc is not None and proc.alive else None
        rss = cpu = None
        if pid is not None and proc is not None and proc.local:
            try:
                if s.psutil_proc is None or s.psutil_proc.pid != pid:
                    s.psutil_proc = psutil.Process(pid)
                    s.psutil_proc.cpu_percent(None)
                rss = s.psutil_proc.memory_info().rss
                cpu = s.psutil_proc.cpu_percent(None)
            except psutil.Error:
                pass
        out.append(
            ReplicaStatus(
                agent=s.agent.name,
                replica=s.index,
                state="paused" if s.paused and s.state in ("ready", "busy") else s.state,
                pid=pid,
                restarts=s.restarts,
                inflight=len(s.inflight),
                rss=rss,
                cpu_percent=cpu,
                uptime=(now - proc.ready_at) if pid and proc and proc.ready_at else None,
                node=proc.remote.where if proc is not None and proc.remote is not None else None,
            )
        )
    return out
