"""The Supervisor: agent pools, dispatch, restart policy, deadlines, teardown.

Each replica position ("slot") of an agent is driven by one task that
starts a process, serves until it dies, and decides on a restart.  States
and their transitions (each one logged as ``replica_state``)::

    starting ──Ready──▶ ready ◀──idle── busy
       │                  │ ──call──▶    │
       │ startup error    └──────┬───────┘
       ▼                         ▼ died                 closing/stop
    crashed ◀───────────────── crashed / exited ──────▶ stopping ─▶ exited
       │ restart allowed and intensity not exceeded
       ▼
    backoff ──delay──▶ starting            intensity exceeded ─▶ failed

Calls wait in the agent's queue until a replica has room (``concurrency``
running plus ``queue`` waiting in the replica); the least-loaded replica
gets the next call.  A call's result is delivered exactly once: late or
duplicate answers are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import itertools
import os
import random
import shutil
import signal
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog

from agentrt import _linux, sandbox
from agentrt.backends.local import make_launcher
from agentrt.config import AgentSpec, SupervisorSpec, ToolSpec, load_sandbox
from agentrt.errors import (
    AgentCrashed,
    AgentDied,
    AgentFailed,
    AgentrtError,
    BudgetExceeded,
    CallCancelled,
    CallError,
    CallTimeout,
    ConfigError,
    LimitExceeded,
    RemoteError,
    StartupError,
    SupervisorClosed,
    UnknownAgent,
    from_dict,
)
from agentrt.process import AgentProcess, Launcher
from agentrt.protocol import (
    Boot,
    Call,
    Cancel,
    Count,
    Failure,
    Heartbeat,
    Log,
    Message,
    Reply,
    ReplyError,
    Result,
    Send,
    Spawn,
    Submit,
    ToolCall,
    ToolSpan,
    describe_unencodable,
)

__all__ = ["CallReport", "ReplicaStatus", "RunEvent", "Supervisor"]

_UNSET: Any = object()
_WATCHDOG_INTERVAL = 0.2


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


class CallReport(msgspec.Struct, kw_only=True):
    """The outcome of one call, as a results file records it.

    ``status`` is ``ok``, ``failed``, ``timeout``, ``crashed``, ``limit`` or
    ``cancelled``; ``error`` is the typed error's :meth:`to_dict`.
    """

    status: str
    result: Any = None
    error: dict[str, Any] | None = None
    attempts: int = 0
    agent: str = ""
    pid: int | None = None
    started_at: float | None = None
    finished_at: float | None = None


@dataclass(eq=False, slots=True)
class _Call:
    id: int
    agent: _Agent
    target: str
    args: dict[str, Any]
    timeout: float | None
    deadline: float | None
    retries: int
    future: asyncio.Future[Any]
    attempts: int = 0
    slot: _Slot | None = None
    timer: asyncio.TimerHandle | None = None
    pid: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    parent: _Call | None = None
    children: list[_Call] | None = None  # subagent calls it started (made on the first)
    depth: int = 0
    budget: _Budget | None = None
    run: Any = None  # the graph run the call belongs to, if any
    batch: _Batch | None = None  # the Supervisor.map it belongs to, if any


@dataclass(eq=False, slots=True)
class _Batch:
    """The calls of one :meth:`Supervisor.map`: one waiter for all of them,
    instead of a callback per call."""

    left: int
    done: asyncio.Future[None]
    fail_fast: bool

    def settled(self, failed: bool) -> None:
        self.left -= 1
        if (self.left == 0 or (failed and self.fail_fast)) and not self.done.done():
            self.done.set_result(None)


@dataclass(eq=False, slots=True)
class _Budget:
    """What one run has spent: counted by the supervisor, not by trust."""

    max_tasks: int | None
    max_tool_calls: int | None
    tasks: int = 0
    tool_calls: int = 0

    def charge(self, what: str, agent: str) -> None:
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


_UNLIMITED = _Budget(None, None)


def _abnormal(cause: AgentDied | None) -> bool:
    """A death worth a transient restart: anything but a clean exit or a stop."""
    return cause is not None and not (isinstance(cause, AgentCrashed) and cause.exit_code == 0)


@dataclass(eq=False, slots=True)
class _Slot:
    agent: _Agent
    index: int
    state: str = "starting"
    proc: AgentProcess | None = None
    inflight: dict[int, _Call] = field(default_factory=dict)
    restarts: int = 0
    generation: int = 0
    recent: deque[float] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    first_start: asyncio.Future[None] | None = None
    stop_requested: bool = False
    sibling_restart: bool = False
    gone: bool = False  # its task ended: this slot will not serve again
    psutil_proc: Any = None
    reaping: asyncio.Task[None] | None = None  # sweep + cgroup removal of the last process
    dead_proc: AgentProcess | None = None  # the last process whose death was answered
    dead_cause: AgentDied | None = None  # and why it died (None: asked to stop)


@dataclass(eq=False, slots=True)
class _Agent:
    spec: AgentSpec
    order: int
    slots: list[_Slot] = field(default_factory=list)
    waiting: deque[_Call] = field(default_factory=deque)
    restart_times: deque[float] = field(default_factory=deque)
    failed: AgentFailed | None = None
    all_gone: bool = False  # every slot has ended for good: nothing will serve

    def slot_gone(self, slot: _Slot) -> None:
        slot.gone = True
        self.all_gone = all(s.gone for s in self.slots)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def capacity(self) -> int:
        return self.spec.concurrency + self.spec.queue


class Supervisor:
    """Runs agents in isolated processes and routes calls to them.

    Use it as ``async with Supervisor() as sup:``; leaving the block stops
    every agent and leaves no process behind.  Settings are those of
    ``[supervisor]`` in config.toml, given as a :class:`SupervisorSpec` or as
    keyword arguments (``Supervisor(start_method="spawn")``).
    """

    def __init__(
        self,
        spec: SupervisorSpec | None = None,
        *,
        base_dir: str | os.PathLike[str] | None = None,
        **settings: Any,
    ) -> None:
        if spec is None:
            try:
                spec = msgspec.convert(settings, SupervisorSpec)
            except msgspec.ValidationError as exc:
                raise ConfigError("supervisor", str(exc)) from None
        elif settings:
            spec = msgspec.structs.replace(spec, **settings)
        self.spec = spec
        self.base_dir = os.fspath(base_dir) if base_dir is not None else None
        self.log = structlog.get_logger("agentrt")
        self._agents: dict[str, _Agent] = {}
        self._ids = itertools.count(1)
        self._launcher: Launcher | None = None
        self._rundir = ""
        self._closing = False
        self._closed = False
        self._closed_event = asyncio.Event()
        self._launch_dir = os.getcwd()
        self._started = False
        self._watchdog: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._tools: dict[str, ToolSpec] = {}
        self._subscribers: set[asyncio.Queue[RunEvent]] = set()
        self._tool_starts: dict[str, asyncio.Future[None]] = {}
        #: each running agent's sandbox plan (profile resolved, limits merged)
        self._plans: dict[str, sandbox.Plan] = {}
        #: per-replica cgroups, created on the first agent whose profile asks
        self._cgroups: sandbox.Cgroups | None = None

    # --- lifecycle ---------------------------------------------------------

    async def __aenter__(self) -> Supervisor:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def sys_path(self) -> list[str]:
        paths = list(self.spec.sys_path)
        if self.base_dir is not None:
            paths.insert(0, os.path.abspath(self.base_dir))
        return paths

    async def open(self) -> None:
        """Start the launcher (the zygote, by default)."""
        if self._started:
            return
        self._started = True
        _linux.raise_nofile_limit()
        self._rundir = tempfile.mkdtemp(prefix="agentrt-")
        launcher: Launcher = make_launcher(
            self.spec.start_method, list(self.spec.preload), self.sys_path
        )
        try:
            await launcher.start()
            # The loop's default executor starts its first thread now, not on
            # a replica's first death (sweeps and clean-ups run there).
            await asyncio.to_thread(int)
        except BaseException:
            shutil.rmtree(self._rundir, ignore_errors=True)
            raise
        self._launcher = launcher
        self.log.info(
            "supervisor_started", start_method=launcher.name, pid=os.getpid(), rundir=self._rundir
        )

    async def close(self) -> None:
        """Stop every agent (graceful, then forced) and the launcher."""
        if self._closed:
            return
        if self._closing:
            await self._closed_event.wait()
            return
        self._closing = True
        try:
            await asyncio.shield(self._close())
        finally:
            self._closed = True
            self._closed_event.set()

    async def _close(self) -> None:
        closed = SupervisorClosed("supervisor is closing")
        try:
            for agent in self._agents.values():
                self._fail_waiting(agent, closed)
            await self._stop_agents(list(self._agents.values()), closed)
        finally:
            # Whatever happened above, the launcher and the run directory go.
            if self._watchdog is not None:
                self._watchdog.cancel()
                await asyncio.wait({self._watchdog})
            for t in list(self._tasks):
                t.cancel()
            if self._tasks:
                await asyncio.wait(set(self._tasks))
            if self._launcher is not None:
                await self._launcher.close()
            if self._rundir:
                await asyncio.to_thread(shutil.rmtree, self._rundir, True)
            if self._cgroups is not None:
                await asyncio.to_thread(self._cgroups.close)
                self._cgroups = None
            self.log.info("supervisor_stopped")

    # --- agents ------------------------------------------------------------

    async def start(self, spec: AgentSpec) -> None:
        """Start an agent's replicas and wait until each has sent ``Ready``.

        Raises :class:`StartupError` (and stops the agent) when a replica
        cannot start.
        """
        if self._closing:
            raise SupervisorClosed("supervisor is closing")
        if not spec.name:
            raise ConfigError("name", "an agent needs a name")
        if spec.name in self._agents:
            raise ConfigError(f"agents.{spec.name}", "an agent of that name is already running")
        limit = self.spec.max_agents
        if limit is not None:
            live = sum(len(a.slots) for a in self._agents.values() if a.failed is None)
            if live + spec.replicas > limit:
                raise BudgetExceeded(
                    f"starting {spec.replicas} replica(s) of {spec.name!r} would make "
                    f"{live + spec.replicas} live agent processes (max_agents={limit})",
                    budget="max_agents",
                    limit=limit,
                    agent=spec.name,
                )
        await self.open()
        spec, plan = self._sandbox_plan(spec)
        agent = _Agent(spec, len(self._agents))
        self._plans[spec.name] = plan
        self._agents[spec.name] = agent
        loop = asyncio.get_running_loop()
        for i in range(spec.replicas):
            slot = _Slot(agent, i)
            slot.first_start = loop.create_future()
            agent.slots.append(slot)
            slot.task = loop.create_task(self._run_slot(slot), name=f"slot-{spec.name}#{i}")
        results = await asyncio.gather(
            *(asyncio.shield(s.first_start) for s in agent.slots if s.first_start),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self._stop_agent(agent, SupervisorClosed(f"agent {spec.name!r} failed to start"))
            del self._agents[spec.name]
            self._plans.pop(spec.name, None)
            raise errors[0]
        if spec.limits.memory is not None and self._watchdog is None:
            self._watchdog = loop.create_task(self._memory_watchdog(), name="memory-watchdog")
        self.log.info("agent_started", agent=spec.name, replicas=spec.replicas)

    async def stop(self, name: str) -> None:
        """Stop one agent's replicas; its waiting calls fail with :class:`CallCancelled`."""
        agent = self._agent(name)
        err = CallCancelled(f"agent {name!r} was stopped", agent=name)
        self._fail_waiting(agent, err)
        await self._stop_agent(agent, err)
        del self._agents[name]
        self._plans.pop(name, None)
        self.log.info("agent_stopped", agent=name)

    def _sandbox_plan(self, spec: AgentSpec) -> tuple[AgentSpec, sandbox.Plan]:
        """Resolve the agent's sandbox profile; refuse or warn about what is unenforced.

        Returns the spec with its limits merged (memory left to the cgroup
        when one limits it) and the plan the replicas boot with.
        """
        prof = spec.sandbox
        if isinstance(prof, str):
            dirs = [self.base_dir] if self.base_dir is not None else []
            prof, _shipped = load_sandbox(prof, dirs=dirs, where=f"agents.{spec.name}.sandbox")
        plan = sandbox.plan(prof, spec.limits)
        unenforced = plan.unenforced
        if unenforced and prof.enforce == "strict":
            setting, why = unenforced[0]
            raise StartupError(
                f"sandbox {prof.name or '(inline)'!r} of agent {spec.name!r}: "
                f"{setting} cannot be enforced on this machine: {why}",
                agent=spec.name,
            )
        for setting, why in unenforced:
            self.log.warning(
                "sandbox_unenforced",
                agent=spec.name,
                profile=prof.name,
                setting=setting,
                why=why.removeprefix("NOT enforced: "),
            )
        if plan.run_uid is not None and self._rundir:
            # the replica enters its workdir after dropping to run_as
            os.chmod(self._rundir, 0o711)
        if plan.cgroup and self._cgroups is None:
            self._cgroups = sandbox.Cgroups()
        return msgspec.structs.replace(spec, limits=plan.core_limits()), plan

    def _replica_cgroups(self, slot: _Slot, plan: sandbox.Plan) -> list[str]:
        if not plan.cgroup or self._cgroups is None:
            return []
        spec = slot.agent.spec
        leaf = f"{spec.name}.{slot.index}.{slot.generation}".replace("/", "_")
        try:
            return self._cgroups.create(
                leaf, plan.cgroup, plan.cgroup_memory, plan.cpu, plan.limits.processes
            )
        except OSError as exc:
            if plan.profile.enforce == "strict":
                # the child fails to join it: the replica does not start
                return [os.path.join("/nonexistent-cgroup", leaf)]
            self.log.warning(
                "sandbox_unenforced",
                agent=spec.name,
                profile=plan.profile.name,
                setting="cgroup",
                why=f"cannot create the replica's cgroup: {exc}",
            )
            return []

    async def _reap(self, proc: AgentProcess, cgroups: list[str]) -> None:
        """Wait until the replica and its leftovers are gone, then remove its cgroups."""
        await proc.wait_closed()
        if cgroups:
            await asyncio.to_thread(sandbox.Cgroups.remove, cgroups)

    @property
    def agents(self) -> list[str]:
        return list(self._agents)

    def _agent(self, name: str) -> _Agent:
        try:
            return self._agents[name]
        except KeyError:
            raise UnknownAgent(
                f"no agent named {name!r} (running: {', '.join(self._agents) or 'none'})"
            ) from None

    async def _stop_agent(self, agent: _Agent, err: CallError | SupervisorClosed) -> None:
        await self._stop_agents([agent], err)

    async def _stop_agents(self, agents: list[_Agent], err: CallError | SupervisorClosed) -> None:
        """Stop replicas concurrently, then sweep all their leftovers in one pass."""
        slots = [s for a in agents for s in a.slots]
        procs: list[AgentProcess] = []
        for slot in slots:
            slot.stop_requested = True
            if slot.proc is not None and not slot.proc.dead.done():
                slot.proc.sweep = False
                procs.append(slot.proc)
        leaders = [p.pid for p in procs if p.pid]
        left = await asyncio.to_thread(_linux.descendants, leaders) if leaders else []

        async def stop_slot(slot: _Slot) -> None:
            proc = slot.proc
            if proc is not None and not proc.dead.done():
                self._set_state(slot, "stopping")
                await proc.stop(float(slot.agent.spec.shutdown_timeout))
            if proc is not None:
                await proc.wait_closed()
            if slot.task is not None:
                slot.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await slot.task
            if slot.reaping is not None:
                # stop() returns once the replica's leftovers and cgroups are gone
                await asyncio.wait({slot.reaping})
            for call in list(slot.inflight.values()):
                self._fail(call, err)
            slot.inflight.clear()

        results = await asyncio.gather(*(stop_slot(s) for s in slots), return_exceptions=True)
        for r in results:
            if isinstance(r, Exception):
                self.log.error("replica_stop_failed", error=repr(r))
        if leaders:
            await asyncio.to_thread(_linux.kill_tree, leaders, left)

    # --- the replica loop ----------------------------------------------------

    def _set_state(self, slot: _Slot, state: str) -> None:
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

    def _boot(self, slot: _Slot) -> Boot:
        spec = slot.agent.spec
        lim = spec.limits
        plan = self._plans.get(spec.name)
        sb: dict[str, Any] = {}
        if plan is not None:
            prof = plan.profile
            cgroups = self._replica_cgroups(slot, plan)
            sb = {
                "cgroups": cgroups,
                "memory_rlimit": not (cgroups and plan.cgroup_memory is not None),
                "network": prof.network,
                "fs_read": list(prof.filesystem.read) if prof.filesystem is not None else None,
                "fs_write": list(prof.filesystem.write) if prof.filesystem is not None else [],
                "env_allow": list(prof.env) if prof.env is not None else None,
                "run_uid": plan.run_uid,
                "run_gid": plan.run_gid,
                "no_new_privs": prof.no_new_privs,
            }
        return Boot(
            agent=spec.name,
            replica=slot.index,
            generation=slot.generation,
            entry=spec.entry,
            workdir=os.path.join(self._rundir, f"{spec.name}.{slot.index}.{slot.generation}"),
            sys_path=self.sys_path,
            env=dict(spec.env),
            memory=lim.memory_bytes,
            cpu_time=lim.cpu_seconds,
            open_files=lim.open_files,
            processes=lim.processes,
            file_size=lim.file_size_bytes,
            max_frame=int(self.spec.max_frame),
            concurrency=spec.concurrency,
            spin=float(spec.spin),
            supervisor_pid=os.getpid(),
            launch_dir=self._launch_dir,
            tools=self._tool_map(),
            count_tools=self.spec.max_tool_calls is not None,
            trace_tools=self.spec.trace_tools,
            **sb,
        )

    async def _run_slot(self, slot: _Slot) -> None:
        agent = slot.agent
        spec = agent.spec
        log = self.log.bind(agent=spec.name, replica=slot.index)
        assert self._launcher is not None
        while True:
            boot = self._boot(slot)
            proc = AgentProcess(boot, self._make_handler(slot), log)
            slot.proc = slot_proc = proc
            slot.psutil_proc = None
            self._set_state(slot, "starting")
            cause: AgentDied | None
            try:
                await proc.start(self._launcher, float(spec.startup_timeout))
            except StartupError as exc:
                cause = self._replica_dead(slot, boot, proc, exc)
            else:
                if not slot.stop_requested:
                    self._set_state(slot, "ready")
                log.info("replica_ready", pid=proc.pid, generation=slot.generation)
                self._emit("replica_ready", agent=spec.name, replica=slot.index, pid=proc.pid)
                if slot.first_start is not None and not slot.first_start.done():
                    slot.first_start.set_result(None)
                self._dispatch(agent)
                # Its callers are answered from a callback on ``dead``, not
                # after this task wakes up: two loop turns and the restart's
                # first steps sooner.
                proc.dead.add_done_callback(functools.partial(self._on_exit, slot, boot, proc))
                cause = self._replica_dead(slot, boot, proc, await asyncio.shield(proc.dead))

            def clean_up(boot: Boot = boot, proc: AgentProcess = proc) -> None:
                # After the callers have their answers: the threads these
                # start would otherwise delay the wake-up of the first.
                self._spawn(self._remove_workdir(boot.workdir))
                slot.reaping = self._spawn(self._reap(proc, list(boot.cgroups)))

            if slot.first_start is not None and not slot.first_start.done():
                assert cause is not None
                slot.first_start.set_exception(cause)
                self._set_state(slot, "crashed")
                clean_up()
                return
            if slot.stop_requested or self._closing:
                clean_up()
                if cause is not None:  # it died of something, not of the stop
                    self._log_death(slot, slot_proc, cause, log)
                return
            sibling = slot.sibling_restart
            slot.sibling_restart = False
            abnormal = _abnormal(cause)
            clean_up()
            if cause is not None:
                self._log_death(slot, slot_proc, cause, log)
            restart = spec.restart == "permanent" or (spec.restart == "transient" and abnormal)
            if not restart and not sibling:
                log.info("replica_not_restarted", restart=spec.restart)
                agent.slot_gone(slot)
                self._check_agent_alive(agent)
                return
            if not sibling:
                if self._exceeds_intensity(agent):
                    self._give_up(agent, cause)
                    return
                self._apply_strategy(slot)
            delay = 0.0 if sibling else self._backoff(slot)
            slot.restarts += 1
            slot.generation += 1
            if delay > 0:
                self._set_state(slot, "backoff")
                log.info("replica_backoff", delay=round(delay, 4))
                await asyncio.sleep(delay)
            if slot.stop_requested or self._closing:
                self._set_state(slot, "exited")
                return
            log.info("replica_restarting", restarts=slot.restarts)
            self._emit("replica_restarting", agent=spec.name, replica=slot.index)

    def _log_death(self, slot: _Slot, proc: AgentProcess, cause: AgentDied, log: Any) -> None:
        self._emit(
            "replica_crashed",
            agent=slot.agent.name,
            replica=slot.index,
            pid=proc.pid,
            status=cause.status,
            reason=str(cause),
        )
        log.warning(
            "replica_died",
            pid=proc.pid,
            cause=type(cause).__name__,
            reason=str(cause),
            exit_code=cause.exit_code,
            limit=getattr(cause, "limit", None),
        )

    def _on_exit(
        self, slot: _Slot, boot: Boot, proc: AgentProcess, dead: asyncio.Future[AgentDied | None]
    ) -> None:
        self._replica_dead(slot, boot, proc, dead.result())

    def _replica_dead(
        self, slot: _Slot, boot: Boot, proc: AgentProcess, died: AgentDied | None
    ) -> AgentDied | None:
        """A replica is gone (or never became ready): answer or re-queue its calls.

        Once per process: for a ready replica, a callback on ``proc.dead``
        answers its callers before :meth:`_run_slot` wakes up and gets the
        cause back from here; logging and the restart stay there.
        """
        if slot.dead_proc is proc:
            return slot.dead_cause
        cause = self._oom_cause(boot, proc, died)
        slot.dead_proc, slot.dead_cause = proc, cause
        name = slot.agent.name
        if slot.stop_requested or self._closing:
            self._set_state(slot, "exited")
            self._requeue_or_fail(slot, cause or CallCancelled("replica stopped", agent=name))
        else:
            self._set_state(slot, "crashed" if _abnormal(cause) else "exited")
            self._requeue_or_fail(
                slot, cause or AgentCrashed("replica exited", agent=name, exit_code=0)
            )
        return cause

    def _oom_cause(
        self, boot: Boot, proc: AgentProcess, cause: AgentDied | None
    ) -> AgentDied | None:
        """A SIGKILL in a memory-limited cgroup whose OOM killer acted is the memory limit."""
        plan = self._plans.get(boot.agent)
        mem = plan.cgroup_memory if plan is not None else None
        if (
            mem is None
            or not boot.cgroups
            or boot.memory_rlimit
            or not isinstance(cause, AgentCrashed)
            or cause.signal != signal.SIGKILL
            or not sandbox.Cgroups.oom_killed(list(boot.cgroups))
        ):
            return cause
        return LimitExceeded(
            f"cgroup memory limit of {mem} bytes exceeded (killed by the OOM killer)",
            limit="memory",
            value=mem,
            agent=boot.agent,
            pid=proc.pid,
            exit_code=cause.exit_code,
            signal=cause.signal,
        )

    def _exceeds_intensity(self, agent: _Agent) -> bool:
        spec = agent.spec
        intensity = spec.intensity if spec.intensity is not None else self.spec.intensity
        period = float(spec.period if spec.period is not None else self.spec.period)
        now = time.monotonic()
        times = agent.restart_times
        times.append(now)
        while times and times[0] < now - period:
            times.popleft()
        return len(times) > intensity

    def _backoff(self, slot: _Slot) -> float:
        """No delay for the first restart in a period, then exponential with jitter."""
        period = float(self.spec.period)
        now = time.monotonic()
        slot.recent.append(now)
        while slot.recent and slot.recent[0] < now - period:
            slot.recent.popleft()
        n = len(slot.recent)
        if n <= 1:
            return 0.0
        base: float = min(float(self.spec.backoff_max), float(self.spec.backoff) * 2.0 ** (n - 2))
        return base * random.uniform(0.75, 1.25)

    def _apply_strategy(self, crashed: _Slot) -> None:
        strategy = self.spec.strategy
        if strategy == "one_for_one":
            return
        order = [s for a in self._agents.values() for s in a.slots]
        if strategy == "one_for_all":
            victims = [s for s in order if s is not crashed]
        else:  # rest_for_one: the slots declared after the crashed one
            victims = order[order.index(crashed) + 1 :]
        for s in victims:
            proc = s.proc
            if proc is None or proc.dead.done() or s.stop_requested or s.agent.failed:
                continue
            s.sibling_restart = True
            self.log.info(
                "replica_restart_by_strategy",
                agent=s.agent.name,
                replica=s.index,
                strategy=strategy,
                because=f"{crashed.agent.name}#{crashed.index}",
            )
            proc.reason = AgentCrashed(
                f"restarted by {strategy} because {crashed.agent.name}#{crashed.index} crashed",
                agent=s.agent.name,
                pid=proc.pid,
            )
            self._spawn(proc.stop(float(s.agent.spec.shutdown_timeout)))

    def _give_up(self, agent: _Agent, cause: AgentDied | None) -> None:
        spec = agent.spec
        intensity = spec.intensity if spec.intensity is not None else self.spec.intensity
        period = spec.period if spec.period is not None else self.spec.period
        reason = f"more than {intensity} restarts within {float(period):g}s"
        if cause is not None:
            reason += f"; last: {cause}"
        agent.failed = AgentFailed(agent.name, reason)
        self.log.error("agent_failed", agent=agent.name, reason=reason)
        for s in agent.slots:
            s.stop_requested = True
            self._set_state(s, "failed")
            if s.proc is not None and not s.proc.dead.done():
                self._spawn(s.proc.stop(float(spec.shutdown_timeout)))
        self._fail_waiting(agent, agent.failed)

    def _check_agent_alive(self, agent: _Agent) -> None:
        if agent.all_gone:
            self._fail_waiting(agent, self._no_replica(agent))

    @staticmethod
    def _no_replica(agent: _Agent) -> AgentFailed:
        return AgentFailed(
            agent.name,
            f"no replica left ({agent.spec.restart} replicas that ended are not restarted)",
        )

    # --- calls ---------------------------------------------------------------

    def submit(
        self,
        agent: str,
        args: Mapping[str, Any] | None = None,
        *,
        method: str = "",
        timeout: float | None = _UNSET,
        retries: int | None = None,
    ) -> asyncio.Future[Any]:
        """Queue a call and return a future of its result (or typed failure).

        ``args`` are the keyword arguments of the agent's entry (or of
        ``method`` for a class agent).  ``timeout`` defaults to the agent's;
        ``retries`` (default: the agent's) re-runs the call on a fresh
        replica when the one serving it dies.
        """
        return self._submit(agent, args, method, timeout, retries).future

    def _submit(
        self,
        agent: str,
        args: Mapping[str, Any] | None,
        method: str,
        timeout: float | None,
        retries: int | None,
        parent: _Call | None = None,
        budget: _Budget | None = None,
        run: Any = None,
        batch: _Batch | None = None,
    ) -> _Call:
        if self._closing:
            raise SupervisorClosed("supervisor is closing")
        ag = self._agent(agent)
        if ag.failed is not None:
            raise ag.failed
        if ag.all_gone:
            raise self._no_replica(ag)
        spec = ag.spec
        loop = asyncio.get_running_loop()
        to = spec.timeout_s if timeout is _UNSET else timeout
        now = time.monotonic()
        deadline = None if to is None else now + to
        # A child never outlives its parent's deadline.
        if (
            parent is not None
            and parent.deadline is not None
            and (deadline is None or parent.deadline < deadline)
        ):
            deadline = parent.deadline
            to = max(0.0, deadline - now)
        call = _Call(
            next(self._ids),
            ag,
            method,
            dict(args) if args else {},
            to,
            deadline,
            spec.retries if retries is None else retries,
            loop.create_future(),
        )
        if parent is not None:
            call.parent = parent
            call.depth = parent.depth + 1
            call.budget = parent.budget
            call.run = parent.run
            if parent.children is None:
                parent.children = []
            parent.children.append(call)
        else:
            call.budget = budget or self._new_budget()
            call.run = run
        if batch is not None:
            call.batch = batch
            batch.left += 1
        if deadline is not None:
            call.timer = loop.call_at(deadline, self._on_deadline, call)
        ag.waiting.append(call)
        self._dispatch(ag)
        return call

    async def call(
        self,
        agent: str,
        args: Mapping[str, Any] | None = None,
        *,
        method: str = "",
        timeout: float | None = _UNSET,
        retries: int | None = None,
    ) -> Any:
        """Run one call and return its result; raises a :class:`CallError` subclass."""
        call = self._submit(agent, args, method, timeout, retries)
        try:
            return await call.future
        except asyncio.CancelledError:
            self._caller_gone(call)
            raise

    async def map(
        self,
        agent: str,
        items: Iterable[Mapping[str, Any] | None],
        *,
        method: str = "",
        timeout: float | None = _UNSET,
        retries: int | None = None,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """One call per item (its keyword arguments); the results, in order.

        The bulk form of :meth:`call`: every call is queued at once and
        spread over the replicas as they have room, without a task or a
        callback per call.  A failed call raises its error (the calls still
        running are cancelled), unless ``return_exceptions`` puts the error
        in its place in the list.
        """
        loop = asyncio.get_running_loop()
        calls: list[_Call] = []
        # left starts at 1 for the submission itself: calls that fail while
        # the rest are still being queued cannot end the wait too early.
        batch = _Batch(1, loop.create_future(), not return_exceptions)
        try:
            for args in items:
                call = self._submit(agent, args, method, timeout, retries, batch=batch)
                calls.append(call)
                if batch.done.done():  # failed already (e.g. arguments msgpack cannot encode)
                    break
            batch.settled(False)
            await batch.done
        except BaseException:
            for c in calls:
                if not c.future.done():
                    self._caller_gone(c)
            for c in calls:
                if c.future.done() and not c.future.cancelled():
                    c.future.exception()  # retrieved: the caller gets the first error
            raise
        if not return_exceptions:
            errors = [c.future.exception() for c in calls if c.future.done()]
            first = next((e for e in errors if e is not None), None)
            if first is not None:
                for c in calls:
                    if not c.future.done():
                        self._abandon(
                            c, CallCancelled("map ended: an earlier call failed", agent=agent)
                        )
                        c.future.exception()  # retrieved: the caller gets the first error
                raise first
        return [c.future.exception() or c.future.result() for c in calls]

    async def call_report(
        self,
        agent: str,
        args: Mapping[str, Any] | None = None,
        *,
        method: str = "",
        timeout: float | None = _UNSET,
        retries: int | None = None,
    ) -> CallReport:
        """Run one call and describe its outcome instead of raising."""
        return await self._report(agent, args, method, timeout, retries, None)

    async def _call_report_in_run(
        self, agent: str, args: Mapping[str, Any], method: str, timeout: float | None, run: Any
    ) -> CallReport:
        """A task of a graph run: shares the run's budget; ``ctx.submit`` reaches the run."""
        run.budget.charge("tasks", agent)
        return await self._report(
            agent, args, method, _UNSET if timeout is None else timeout, None, run
        )

    async def _report(
        self,
        agent: str,
        args: Mapping[str, Any] | None,
        method: str,
        timeout: float | None,
        retries: int | None,
        run: Any,
    ) -> CallReport:
        try:
            call = self._submit(
                agent,
                args,
                method,
                timeout,
                retries,
                None,
                run.budget if run is not None else None,
                run,
            )
        except AgentrtError as exc:
            return CallReport(status=exc.status, error=exc.to_dict(), agent=agent)
        error: dict[str, Any] | None
        try:
            value = await call.future
        except asyncio.CancelledError:
            self._caller_gone(call)
            raise
        except AgentrtError as exc:
            status, value, error = exc.status, None, exc.to_dict()
        except Exception as exc:  # e.g. arguments msgpack cannot encode
            status, value, error = "failed", None, {"type": type(exc).__name__, "message": str(exc)}
        else:
            status, error = "ok", None
        return CallReport(
            status=status,
            result=value,
            error=error,
            attempts=call.attempts,
            agent=agent,
            pid=call.pid,
            started_at=call.started_at,
            finished_at=call.finished_at,
        )

    # --- events -------------------------------------------------------------------

    async def events(self) -> AsyncIterator[RunEvent]:
        """Every run and replica event from now on (task queued/started/finished,
        replica ready/crashed/restarting), as an async stream."""
        queue: asyncio.Queue[RunEvent] = asyncio.Queue(maxsize=10_000)
        self._subscribers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.discard(queue)

    def _emit_call(self, kind: str, call: _Call, status: str | None = None) -> None:
        assert call.parent is not None
        self._emit(
            kind,
            call_id=call.id,
            parent=call.parent.id,
            target=call.agent.name,
            agent=call.agent.name,
            pid=call.pid,
            status=status,
        )

    def _emit(self, kind: str, **fields: Any) -> None:
        self._emit_at(time.time(), kind, **fields)

    def _emit_at(self, when: float, kind: str, **fields: Any) -> None:
        if not self._subscribers:
            return
        ev = RunEvent(kind=kind, time=when, **fields)
        for q in self._subscribers:
            with contextlib.suppress(asyncio.QueueFull):  # a stalled reader loses events
                q.put_nowait(ev)

    def _caller_gone(self, call: _Call) -> None:
        """The caller stopped waiting: cancel the call (and what it started)."""
        self._abandon(call, CallCancelled("caller cancelled", agent=call.agent.name))

    def _dispatch(self, agent: _Agent) -> None:
        waiting = agent.waiting
        cap = agent.capacity
        slots = agent.slots
        while waiting:
            best: _Slot | None = None
            load = cap
            for s in slots:
                n = len(s.inflight)
                if n < load and (s.state == "ready" or s.state == "busy"):
                    best, load = s, n
                    if n == 0:
                        break
            if best is None:
                return
            call = waiting.popleft()
            if call.future.done():
                continue
            self._send(best, call)

    def _send(self, slot: _Slot, call: _Call) -> None:
        proc = slot.proc
        assert proc is not None
        try:
            data = proc.encode(Call(call.id, call.target, call.args, call.deadline or 0.0))
        except (TypeError, ValueError, OverflowError) as exc:
            where = describe_unencodable(call.args, "args") or str(exc)
            self._fail(call, TypeError(f"call to {slot.agent.name!r}: {where}"))
            return
        call.attempts += 1
        call.slot = slot
        call.pid = proc.pid
        call.started_at = time.time()
        if call.parent is not None and self._subscribers:
            self._emit_call("call_started", call)
        slot.inflight[call.id] = call
        if slot.state == "ready":
            slot.state = "busy"
        proc.send_bytes(data)

    def _make_handler(self, slot: _Slot) -> Any:
        def handle(proc: AgentProcess, msg: Any) -> None:
            match msg:
                case Result(id=cid, value=value):
                    call = slot.inflight.pop(cid, None)
                    if call is not None:
                        self._finish(call, value)
                        self._after_answer(slot)
                case Failure():
                    call = slot.inflight.pop(msg.id, None)
                    if call is not None:
                        self._fail(call, self._failure_error(slot, proc, call, msg))
                        self._after_answer(slot)
                        if msg.kind == "memory":
                            proc.kill(
                                LimitExceeded(
                                    "MemoryError under the memory limit: replica recycled",
                                    limit="memory",
                                    value=proc.boot.memory,
                                    agent=proc.boot.agent,
                                    pid=proc.pid,
                                )
                            )
                case Spawn() | ToolCall() | Send() | Submit() | Count():
                    self._on_request(slot, proc, msg)
                case ToolSpan(parent=parent, tool=tool, start=start, end=end, status=status):
                    if self._subscribers:
                        cid = -next(self._ids)  # a span of its own, not a supervisor call
                        fields = {
                            "call_id": cid,
                            "parent": parent,
                            "target": f"tool:{tool}",
                            "agent": slot.agent.name,
                            "pid": proc.pid,
                        }
                        self._emit_at(start, "call_started", **fields)
                        self._emit_at(end, "call_finished", status=status, **fields)
                case Log(level=level, event=event, fields=fields):
                    meth = getattr(proc.log, level, proc.log.info)
                    meth(event, source="agent", **{k: v for k, v in fields.items() if k != "pid"})
                case Heartbeat():
                    pass

        return handle

    # --- requests from agents (ctx) ---------------------------------------------

    def _new_budget(self) -> _Budget:
        if self.spec.max_tasks is None and self.spec.max_tool_calls is None:
            return _UNLIMITED  # nothing to count against: one shared instance
        return _Budget(self.spec.max_tasks, self.spec.max_tool_calls)

    def _on_request(self, slot: _Slot, proc: AgentProcess, msg: Any) -> None:
        """An agent asked for a subagent, an isolated tool, a send or a submit.

        Never raises: a refused request is a typed error replied to the agent.
        """
        parent = slot.inflight.get(msg.parent) if msg.parent else None
        if parent is not None and parent.future.done():
            parent = None  # answered already (timed out): nothing more may start
        try:
            if msg.parent and parent is None:
                raise CallCancelled(
                    f"call {msg.parent} is over: no new work may start for it",
                    agent=slot.agent.name,
                )
            match msg:
                case Spawn(agent=agent, args=args, method=method, timeout=timeout):
                    self._check_depth(parent, agent)
                    budget = parent.budget if parent else self._new_budget()
                    assert budget is not None
                    budget.charge("tasks", agent)
                    child = self._submit(
                        agent, args, method, timeout or _UNSET, None, parent, budget
                    )
                    child.future.add_done_callback(functools.partial(self._relay, proc, msg.req))
                case ToolCall(tool=name, args=args, timeout=timeout):
                    spec = self._tools.get(name)
                    if spec is None or not spec.isolated:
                        raise UnknownAgent(f"no isolated tool named {name!r}")
                    budget = parent.budget if parent else self._new_budget()
                    assert budget is not None
                    budget.charge("tool_calls", slot.agent.name)
                    self._spawn(self._run_tool(proc, msg.req, name, args, timeout, parent))
                case Send(to=to, body=body):
                    target = self._agent(to)
                    live = [
                        s
                        for s in target.slots
                        if s.proc is not None and s.state in ("ready", "busy")
                    ]
                    if not live:
                        raise UnknownAgent(f"agent {to!r} has no live replica to receive")
                    dest = min(live, key=lambda s: len(s.inflight))
                    assert dest.proc is not None
                    dest.proc.send(Message(slot.agent.name, body))
                    proc.send(Reply(msg.req, None))
                case Submit(task=task):
                    run = parent.run if parent else None
                    if run is None:
                        raise CallError(
                            "ctx.submit() needs a task of a graph run", agent=slot.agent.name
                        )
                    assert parent is not None and parent.budget is not None
                    parent.budget.charge("tasks", slot.agent.name)
                    proc.send(Reply(msg.req, run.submit_from(parent, task)))
                case Count():
                    budget = parent.budget if parent else None
                    if budget is not None:
                        budget.charge("tool_calls", slot.agent.name)
                    proc.send(Reply(msg.req, None))
        except AgentrtError as exc:
            proc.send(ReplyError(msg.req, exc.to_dict()))
        except (ValueError, TypeError, LookupError) as exc:
            proc.send(ReplyError(msg.req, {"type": "CallError", "message": str(exc)}))

    def _check_depth(self, parent: _Call | None, agent: str) -> None:
        limit = self.spec.max_depth
        depth = (parent.depth if parent else 0) + 1
        if limit is not None and depth > limit:
            raise BudgetExceeded(
                f"subagent depth {depth} exceeds max_depth={limit}",
                budget="max_depth",
                limit=limit,
                agent=agent,
            )

    def _relay(self, proc: AgentProcess, req: int, fut: asyncio.Future[Any]) -> None:
        """Send a request's outcome back to the agent that made it."""
        if fut.cancelled():
            proc.send(ReplyError(req, {"type": "CallCancelled", "message": "cancelled"}))
            return
        exc = fut.exception()
        if exc is None:
            try:
                proc.send(Reply(req, fut.result()))
            except (TypeError, ValueError, OverflowError) as err:
                proc.send(ReplyError(req, {"type": "CallError", "message": str(err)}))
        elif isinstance(exc, AgentrtError):
            proc.send(ReplyError(req, exc.to_dict()))
        else:
            proc.send(
                ReplyError(req, {"type": "CallError", "message": f"{type(exc).__name__}: {exc}"})
            )

    async def add_tool(self, spec: ToolSpec) -> None:
        """Declare a tool; agents started (or restarted) afterwards can call it.

        An isolated tool's warm pool is started on its first call.
        """
        if not spec.name:
            raise ConfigError("tools", "a tool needs a name")
        self._tools[spec.name] = spec

    def _tool_map(self) -> dict[str, str]:
        return {n: ("" if t.isolated else t.entry) for n, t in self._tools.items()}

    async def _run_tool(
        self,
        proc: AgentProcess,
        req: int,
        name: str,
        args: dict[str, Any],
        timeout: float,
        parent: _Call | None,
    ) -> None:
        agent = f"tool:{name}"
        try:
            if agent not in self._agents:
                starting = self._tool_starts.get(name)
                if starting is None:
                    spec = self._tools[name]
                    starting = self._tool_starts[name] = asyncio.ensure_future(
                        self.start(
                            AgentSpec(
                                name=agent,
                                entry=spec.entry,
                                replicas=spec.replicas,
                                timeout=spec.timeout,
                                limits=spec.limits,
                                sandbox=spec.sandbox,
                            )
                        )
                    )
                await asyncio.shield(starting)
            if parent is not None and parent.future.done():
                raise CallCancelled("the calling task ended before the tool started")
            call = self._submit(
                agent, args, "", timeout or _UNSET, None, parent, parent.budget if parent else None
            )
            await asyncio.wait({call.future})
            self._relay(proc, req, call.future)
        except AgentrtError as exc:
            proc.send(ReplyError(req, exc.to_dict()))

    def _after_answer(self, slot: _Slot) -> None:
        if not slot.inflight and slot.state == "busy":
            slot.state = "ready"
        if slot.agent.waiting:
            self._dispatch(slot.agent)

    def _failure_error(
        self, slot: _Slot, proc: AgentProcess, call: _Call, msg: Failure
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
        if msg.kind == "memory":
            return LimitExceeded(
                f"memory limit of {proc.boot.memory} bytes exceeded: {msg.type}: {msg.message}",
                limit="memory",
                value=proc.boot.memory,
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

    def _finish(self, call: _Call, value: Any) -> None:
        if call.timer is not None:
            call.timer.cancel()
            call.timer = None
        call.finished_at = time.time()
        if not call.future.done():
            call.future.set_result(value)
            if call.batch is not None:
                call.batch.settled(False)
            if call.parent is not None and self._subscribers:
                self._emit_call("call_finished", call, "ok")
        if call.children:
            self._cancel_children(call)

    def _fail(self, call: _Call, err: BaseException) -> None:
        if call.timer is not None:
            call.timer.cancel()
            call.timer = None
        call.finished_at = time.time()
        if not call.future.done():
            if isinstance(err, CallError):
                err.call_id = call.id
            call.future.set_exception(err)
            if call.batch is not None:
                call.batch.settled(True)
            if call.parent is not None and self._subscribers:
                self._emit_call("call_finished", call, getattr(err, "status", "failed"))
        if call.children:
            self._cancel_children(call)

    def _cancel_children(self, call: _Call) -> None:
        """A call ended: the subagent calls it started and that still run end too."""
        children, call.children = call.children or [], None
        for child in children:
            if not child.future.done():
                self._abandon(
                    child,
                    CallCancelled(
                        f"cancelled: its parent call {call.id} ({call.agent.name!r}) ended",
                        agent=child.agent.name,
                        pid=child.pid,
                    ),
                )

    def _abandon(self, call: _Call, err: CallError) -> None:
        """Answer a call with ``err`` now; a replica running it gets ``Cancel``
        and ``cancel_grace`` to stop, after which its process group is killed."""
        slot = call.slot
        if slot is None or call.id not in slot.inflight:
            self._fail(call, err)  # still queued: dropped when dispatch reaches it
            return
        if call.timer is not None:
            call.timer.cancel()
        call.finished_at = time.time()
        err.call_id = call.id
        if not call.future.done():
            call.future.set_exception(err)
            if call.batch is not None:
                call.batch.settled(True)
        if call.children:
            self._cancel_children(call)
        proc = slot.proc
        if proc is None:
            return
        proc.send(Cancel(call.id))
        grace = float(call.agent.spec.cancel_grace)
        call.timer = asyncio.get_running_loop().call_later(grace, self._on_cancel_grace, call, proc)

    def _fail_waiting(self, agent: _Agent, err: BaseException) -> None:
        while agent.waiting:
            self._fail(agent.waiting.popleft(), copy.copy(err))

    def _on_deadline(self, call: _Call) -> None:
        call.timer = None
        if call.future.done():
            return
        name = call.agent.name
        err = CallTimeout(
            f"call to {name!r} timed out after {call.timeout or 0:g}s",
            timeout=call.timeout,
            agent=name,
            pid=call.pid,
        )
        self._abandon(call, err)

    def _on_cancel_grace(self, call: _Call, proc: AgentProcess) -> None:
        call.timer = None
        slot = call.slot
        if slot is None or slot.proc is not proc or call.id not in slot.inflight:
            return
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

    def _requeue_or_fail(self, slot: _Slot, cause: AgentDied | CallError) -> None:
        """A replica is gone: each call it held is retried, re-queued or failed.

        Calls past the first ``concurrency`` in arrival order had not started
        (the replica starts them in order), so they go back to the queue
        without using an attempt.
        """
        agent = slot.agent
        calls = list(slot.inflight.values())
        slot.inflight.clear()
        if not calls:
            return
        conc = agent.spec.concurrency
        started, unstarted = calls[:conc], calls[conc:]
        requeue: list[_Call] = []
        for call in started:
            if call.future.done():
                if call.timer is not None:
                    call.timer.cancel()
                    call.timer = None
                continue
            if call.attempts <= call.retries and not self._closing and not slot.stop_requested:
                self.log.info(
                    "call_retry", agent=agent.name, call_id=call.id, attempt=call.attempts + 1
                )
                requeue.append(call)
            else:
                self._fail(call, copy.copy(cause))
        for call in unstarted:
            call.attempts -= 1
            requeue.append(call)
        for call in reversed(requeue):
            call.slot = None
            if not call.future.done():
                agent.waiting.appendleft(call)
        if agent.failed is not None:
            self._fail_waiting(agent, agent.failed)
        else:
            self._dispatch(agent)

    # --- observation -----------------------------------------------------------

    async def status(self) -> list[ReplicaStatus]:
        """A snapshot per replica: state, pid, restarts, in-flight, RSS and CPU %."""
        slots = [s for a in self._agents.values() for s in a.slots]
        return await asyncio.to_thread(self._status_sync, slots)

    def _status_sync(self, slots: list[_Slot]) -> list[ReplicaStatus]:
        import psutil

        out: list[ReplicaStatus] = []
        now = time.monotonic()
        for s in slots:
            proc = s.proc
            pid = proc.pid if proc is not None and proc.alive else None
            rss = cpu = None
            if pid is not None:
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
                    state=s.state,
                    pid=pid,
                    restarts=s.restarts,
                    inflight=len(s.inflight),
                    rss=rss,
                    cpu_percent=cpu,
                    uptime=(now - proc.ready_at) if pid and proc and proc.ready_at else None,
                )
            )
        return out

    async def _memory_watchdog(self) -> None:
        """Kill replicas whose RSS passes their memory limit (RLIMIT_AS is not RSS)."""
        while True:
            await asyncio.sleep(_WATCHDOG_INTERVAL)
            watched = [
                (s.proc, s.agent.spec.limits.memory_bytes)
                for a in self._agents.values()
                if a.spec.limits.memory is not None
                for s in a.slots
                if s.proc is not None and s.proc.alive
            ]
            if not watched:
                continue
            sizes = await asyncio.to_thread(_rss_all, [p for p, _ in watched])
            for (proc, limit), rss in zip(watched, sizes, strict=True):
                if rss is not None and limit is not None and rss > limit and proc.alive:
                    proc.kill(
                        LimitExceeded(
                            f"RSS of {rss} bytes exceeds the memory limit of {limit} bytes",
                            limit="memory",
                            value=limit,
                            agent=proc.boot.agent,
                            pid=proc.pid,
                        )
                    )

    # --- helpers ---------------------------------------------------------------

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _remove_workdir(self, path: str) -> None:
        await asyncio.to_thread(shutil.rmtree, path, True)


def _rss_all(procs: list[AgentProcess]) -> list[int | None]:
    return [p.rss() for p in procs]
