"""The :class:`Supervisor`: the public API over the pool, the tree and the ledger.

It holds no mechanism of its own: starting and stopping agents goes to the
:class:`~agentrt.supervisor.pool.Pool` and the
:class:`~agentrt.supervisor.tree.Tree`, calls are made and settled by the
:class:`~agentrt.supervisor.ledger.Ledger`, ``ctx`` requests are routed by
:class:`~agentrt.supervisor.requests.Requests`, and events are the
:class:`~agentrt.supervisor.events.EventHub`'s.  A graph run reaches the
supervisor through :meth:`Supervisor.link_run` (a :class:`RunLink`), never
through private attributes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgspec

from agentrt import _linux
from agentrt.backends.local import ZygoteLauncher, allowlist_key, make_launcher
from agentrt.config import (
    AgentSpec,
    ApprovalsSpec,
    ModelSpec,
    SupervisorSpec,
    ToolSpec,
    convert_spec,
)
from agentrt.control import SOCKET_NAME, ControlServer, RunInfo, write_run_info
from agentrt.errors import (
    AgentCrashed,
    AgentFailed,
    AgentrtError,
    BudgetExceeded,
    CallCancelled,
    ConfigError,
    ControlError,
    EncodeError,
    SupervisorClosed,
    UnknownAgent,
)
from agentrt.observe import library_logger
from agentrt.process import Launcher
from agentrt.protocol import Call as WireCall
from agentrt.protocol import (
    CallMany,
    FrameEncoder,
    describe_unencodable,
)
from agentrt.supervisor import policy
from agentrt.supervisor.boot import BootPlanner
from agentrt.supervisor.bulk import BulkMap
from agentrt.supervisor.console import Console
from agentrt.supervisor.events import EventHub, Subscription
from agentrt.supervisor.holds import Holds
from agentrt.supervisor.ledger import UNLIMITED, Batch, Budget, Ledger, Parts, RunHost
from agentrt.supervisor.ledger import Call as LedgerCall
from agentrt.supervisor.oversight import (
    API,
    Approvals,
    Approver,
    Audit,
    AuditEntry,
    Decision,
    PendingApproval,
    Who,
    denied,
)
from agentrt.supervisor.pool import Agent, Pool, ReplicaStatus, Slot, StandbyStatus
from agentrt.supervisor.requests import Requests, new_budget
from agentrt.supervisor.tree import Tree

__all__ = ["CallReport", "RunLink", "Supervisor"]

_UNSET: Any = object()
Call = LedgerCall[Slot]


#: memory counted per live replica for the default ``max_agents`` (PSS, page
#: tables, pipe buffers, with room to spare)
_BYTES_PER_AGENT = 8 * 2**20


def default_max_agents() -> int:
    """``max_agents`` when the config sets none: one replica per 8 MiB of this
    machine's memory, between 64 and 4,096 (3,072 with 24 GiB)."""
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 1024
    return max(64, min(4096, memory // _BYTES_PER_AGENT))


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


class Supervisor:
    """Runs agents in isolated processes and routes calls to them.

    Use it as ``async with Supervisor() as sup:``; leaving the block stops
    every agent (in reverse start order) and leaves no process behind.
    Settings are those of ``[supervisor]`` in config.toml, given as a
    :class:`SupervisorSpec` or as keyword arguments
    (``Supervisor(strategy="one_for_all", period="30s")``).
    """

    def __init__(
        self,
        spec: SupervisorSpec | None = None,
        *,
        base_dir: str | os.PathLike[str] | None = None,
        log_level: str | None = None,
        approvals: ApprovalsSpec | Mapping[str, Any] | None = None,
        approver: Approver | None = None,
        run_id: str | None = None,
        models: Mapping[str, ModelSpec | Mapping[str, Any]] | None = None,
        **settings: Any,
    ) -> None:
        if spec is None:
            spec = convert_spec(settings, SupervisorSpec, "supervisor")
        elif settings:
            spec = convert_spec(
                {**msgspec.structs.asdict(spec), **settings}, SupervisorSpec, "supervisor"
            )
        self.spec = spec
        self.base_dir = os.fspath(base_dir) if base_dir is not None else None
        #: structlog's, configured by the application; else stderr, ``log_level``
        #: (default warning) and above: a library does not take over stdout
        self.log = library_logger(log_level)
        self._script_paths = _script_paths() if base_dir is None else []
        #: this run's id (``agentrt ctl --run ID``; the run directory and journal use it)
        self.run_id = run_id or f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        self._events = EventHub(history=_HISTORY if spec.control else 0)
        self._boots = BootPlanner(spec, self.base_dir, self.sys_path, self.log)
        for name, m in (models or {}).items():
            if not isinstance(m, ModelSpec):
                m = convert_spec({**m, "name": name}, ModelSpec, f"models.{name}")
            self._boots.models[name] = m.client_config()
        self._encoder = FrameEncoder(spec.max_frame)
        self._ledger: Ledger[Slot] = Ledger(self._events, self._withdraw, self._encode_call)
        self._pool = Pool(self._ledger, self._events, self._boots, self.log)
        self._tree = Tree(self._pool, spec, self._events, self._agent_failed)
        self._audit = Audit(self.log)
        if not isinstance(approvals, ApprovalsSpec):
            approvals = convert_spec(dict(approvals or {}), ApprovalsSpec, "approvals")
        self._approvals = Approvals(approvals, self._audit, self._events, self.log, approver)
        self._holds = Holds(self._pool, self._ledger, self._events, self.log)
        self._requests = Requests(spec, self._pool, self._submit_child, self.start, self._approvals)
        #: graph runs going on (``agentrt ctl tasks``, cancel, pause)
        self._runs: dict[str, RunHost] = {}
        #: calls waiting for approval, by id
        self._awaiting: dict[int, Call] = {}
        self._control: ControlServer | None = None
        #: when it was made (epoch seconds)
        self.opened_at = time.time()
        self._console = Console(
            self,
            self._pool,
            self._approvals,
            self._holds,
            self._runs,
            self._audit,
            self._events,
        )
        self._launcher: Launcher | None = None
        #: the open in progress or done (every caller of open() awaits this one)
        self._opening: asyncio.Task[None] | None = None
        #: the env allowlists of the agents open() was told of
        self._expected: set[tuple[str, ...]] = set()
        #: callers of open() waiting for it
        self._open_waiters = 0
        self._closing = False
        self._closer: asyncio.Task[None] | None = None
        self._closed_event = asyncio.Event()
        #: the agent whose failure stopped the supervisor (on_agent_failure = "stop")
        self.failure: AgentFailed | None = None
        #: no budget to count calls against (the common case: one shared instance)
        self._unlimited = spec.max_tasks is None and spec.max_tool_calls is None
        self._failed: dict[str, AgentFailed] = {}
        self._zygote_deaths = policy.Window(spec.period)

    # --- lifecycle ---------------------------------------------------------

    async def __aenter__(self) -> Supervisor:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def sys_path(self) -> list[str]:
        """Where agents import their entries from: ``base_dir`` (a config's
        directory), ``sys_path``, and, when embedded without a ``base_dir``,
        the program's own directory (``sys.path[0]``) and working directory,
        as with multiprocessing."""
        paths = list(self.spec.sys_path)
        if self.base_dir is not None:
            paths.insert(0, os.path.abspath(self.base_dir))
        for p in self._script_paths:
            if p not in paths:
                paths.append(p)
        return paths

    async def open(self, agents: Iterable[AgentSpec] = ()) -> None:
        """Start the launcher (the zygote, by default).

        ``agents``: those about to be started, if known: what they need
        besides the main zygote (a zygote per ``env`` allowlist) starts
        beside it, not at their start.  Idempotent, and safe to call
        concurrently (``start`` calls it too): every caller waits for the
        same open; one that failed is tried again by the next call.
        Closing (or closed), it raises :class:`SupervisorClosed`."""
        if self._closing:
            raise self._closed_error()
        zygote = self.spec.backend == "local" and self.spec.start_method == "zygote"
        allowlists = self._boots.env_allowlists(agents) if zygote else []
        expected = {k for a in allowlists if (k := allowlist_key(a)) is not None}
        self._expected |= expected
        opening = self._opening
        if opening is None or (opening.done() and (opening.cancelled() or opening.exception())):
            opening = self._opening = asyncio.get_running_loop().create_task(self._open())
            # (retrieved here: its callers may all have been cancelled)
            opening.add_done_callback(lambda t: t.cancelled() or t.exception())
        if not opening.done():
            self._open_waiters += 1
            try:
                await asyncio.shield(opening)
            except asyncio.CancelledError:
                # the last caller cancelled: the open is too (it undoes what it
                # started); one cancelled among others leaves it to them
                if self._open_waiters == 1 and not opening.done():
                    opening.cancel()
                    with contextlib.suppress(BaseException):  # (undone before we go on)
                        await asyncio.wait({opening})
                raise
            finally:
                self._open_waiters -= 1
        if self._closing:  # (closed while it opened)
            raise self._closed_error()
        if expected and isinstance(self._launcher, ZygoteLauncher):
            self._launcher.expect(expected)  # (those the open started are not started again)

    async def _open(self) -> None:
        if self._closing:
            raise self._closed_error()
        _linux.raise_nofile_limit()
        launcher: Launcher | None = None
        # (whatever fails or is cancelled below undoes all of it: a later
        # open() starts afresh)
        try:
            self._boots.open()
            if self.spec.backend == "ray":
                from agentrt.backends.ray import RayLauncher

                launcher = RayLauncher(self.spec, self.log)
            else:
                launcher = make_launcher(
                    self.spec.start_method,
                    list(self.spec.preload),
                    self.sys_path,
                    self._boots.rundir,
                    self._zygote_may_restart,
                    self.spec.spares,
                    self._boots.spare_cgroups(),
                    self.spec.spares_min,
                )
            rundir = self._boots.rundir
            audit = [os.path.join(rundir, "audit.jsonl")]
            if self.spec.audit_log:
                audit.append(os.path.join(self._boots.launch_dir, self.spec.audit_log))
            self._audit.open(*audit)
            starting = asyncio.ensure_future(launcher.start())
            try:
                await asyncio.sleep(0)  # (it starts the zygote, and waits for it)
                if isinstance(launcher, ZygoteLauncher):
                    launcher.expect(self._expected)
                self._boots.warm()  # meanwhile, on this core
            finally:
                await starting
            # The loop's default executor starts its first thread now, not on
            # a replica's first death (sweeps and clean-ups run there).
            await asyncio.to_thread(int)
            if self.spec.control:
                await self._open_control(rundir)
        except BaseException:
            if self._control is not None:
                with contextlib.suppress(Exception):
                    await self._control.close()
                self._control = None
            if launcher is not None:
                with contextlib.suppress(Exception):
                    await launcher.close()
            self._audit.close()
            await self._boots.close()
            raise
        self._launcher = self._pool.launcher = launcher
        self.log.info(
            "supervisor_started",
            run_id=self.run_id,
            start_method=launcher.name,
            pid=os.getpid(),
            rundir=rundir,
        )

    async def _open_control(self, rundir: str) -> None:
        path = os.path.join(rundir, SOCKET_NAME)
        server = ControlServer(path, self._console, self.log)
        await server.start()
        self._control = server
        write_run_info(
            rundir,
            RunInfo(
                id=self.run_id,
                pid=os.getpid(),
                identity=_linux.process_identity(os.getpid()) or "",
                cwd=self._boots.launch_dir,
                started=self.opened_at,
                socket=path,
            ),
        )

    @property
    def launch_dir(self) -> str:
        """The working directory it was started from (``agentrt ctl`` looks for runs by it)."""
        return self._boots.launch_dir

    @property
    def closing(self) -> bool:
        """It is stopping (or stopped): no new work is accepted."""
        return self._closing

    @property
    def control_path(self) -> str | None:
        """The control socket (``agentrt ctl`` finds it; None when ``control = false``)."""
        return self._control.path if self._control is not None else None

    async def close(self) -> None:
        """Stop every agent (in reverse start order; graceful, then forced) and the launcher."""
        if not self._closing:
            self._begin_close(SupervisorClosed("supervisor is closing"))
        assert self._closer is not None
        await asyncio.shield(self._closer)

    async def wait_closed(self) -> None:
        """Wait until the supervisor has stopped: :meth:`close`, or an agent's
        failure under ``on_agent_failure = "stop"`` (then :attr:`failure` says which)."""
        await self._closed_event.wait()

    @property
    def failed_agents(self) -> dict[str, AgentFailed]:
        """Agents that exceeded their restart intensity, with why (``last``: the last death)."""
        return dict(self._failed)

    def _begin_close(self, err: SupervisorClosed) -> None:
        self._closing = self._pool.closing = True
        self._pool.close_error = err
        self._closer = asyncio.get_running_loop().create_task(self._close(err))

    async def _close(self, err: SupervisorClosed) -> None:
        pool = self._pool
        try:
            self._approvals.withdraw_all(f"the supervisor is stopping: {err}")
            self._holds.release_all()  # a stop overrides a pause
            agents = list(pool.agents.values())
            for agent in agents:
                pool.fail_waiting(agent, err)
            await self._tree.shutdown(agents, err)
            for agent in agents:  # calls a dying replica gave back meanwhile
                pool.fail_waiting(agent, err)
        finally:
            # Whatever happened above, the launcher and the run directory go
            # (once an open under way has finished: what it started is closed).
            if self._opening is not None and not self._opening.done():
                with contextlib.suppress(BaseException):
                    await asyncio.shield(self._opening)
            if self._control is not None:
                await self._control.close()
            await pool.close()
            if self._launcher is not None:
                await self._launcher.close()
            self._audit.close()
            await self._boots.close()
            self.log.info("supervisor_stopped")
            self._closed_event.set()

    def _zygote_may_restart(self, why: str) -> bool:
        """The zygote died: start another, unless it dies more than ``intensity``
        times within ``period`` (then the supervisor stops: nothing could start)."""
        n = self._zygote_deaths.add(time.monotonic())
        if n <= self.spec.intensity and not self._closing:
            self.log.warning("zygote_restarting", why=why, restarts=n)
            self._events.emit("zygote_restarting", reason=why)
            return True
        failed = AgentFailed(
            "zygote",
            f"more than {self.spec.intensity} restarts within {self.spec.period:g}s; last: {why}",
        )
        self._failed["zygote"] = failed
        if not self._closing:
            self.failure = failed
            self.log.error("supervisor_stopping", agent="zygote", reason=failed.reason)
            self._begin_close(SupervisorClosed(f"supervisor stopped: {failed}"))
        return False

    def _agent_failed(self, agent: Agent) -> None:
        """An agent exceeded its restart intensity; under ``on_agent_failure =
        "stop"`` (OTP's behaviour) every agent stops and so does the supervisor."""
        assert agent.failed is not None
        self._failed[agent.name] = agent.failed
        if self.spec.on_agent_failure != "stop" or self._closing or agent.is_tool:
            return  # (an isolated tool that failed fails the calls made to it, no more)
        self.failure = agent.failed
        self.log.error("supervisor_stopping", agent=agent.name, reason=agent.failed.reason)
        self._events.emit("supervisor_stopping", agent=agent.name, reason=str(agent.failed))
        self._begin_close(SupervisorClosed(f"supervisor stopped: {agent.failed}"))

    def _closed_error(self) -> SupervisorClosed:
        if self.failure is not None:
            return SupervisorClosed(f"supervisor stopped: {self.failure}")
        return SupervisorClosed("supervisor is closing")

    # --- agents ------------------------------------------------------------

    async def start(self, spec: AgentSpec) -> None:
        """Start an agent's replicas and wait until each has sent ``Ready``.

        Raises :class:`StartupError` (and stops the agent) when a replica
        cannot start.
        """
        if self._closing:
            raise self._closed_error()
        if not spec.name:
            raise ConfigError("name", "an agent needs a name")
        await self.open()
        # (from here to pool.add nothing awaits: starts made side by side are
        # checked one after another, each seeing the agents added before it)
        pool = self._pool
        if spec.name in pool.agents:
            raise ConfigError(f"agents.{spec.name}", "an agent of that name is already running")
        limit = self.spec.max_agents if self.spec.max_agents is not None else default_max_agents()
        # (a standby is one more process of its agent, on this machine; one of
        # "auto" is counted from the start, as it may be made at any death)
        local = self.spec.backend == "local"
        live = sum(
            len(a.slots) + (local and bool(a.spec.standby) and not a.standby_off)
            for a in pool.agents.values()
            if a.failed is None
        )
        wanted = spec.replicas + (local and bool(spec.standby))
        if live + wanted > limit:
            raise BudgetExceeded(
                f"starting {spec.replicas} replica(s) of {spec.name!r}"
                f"{' and its standby' if spec.standby else ''} would make "
                f"{live + wanted} live agent processes (max_agents={limit})",
                budget="max_agents",
                limit=limit,
                agent=spec.name,
            )
        spec = self._boots.plan(spec)
        agent = pool.add(spec, self._tree.period(spec))
        self._holds.adopt(agent)
        results = await asyncio.gather(
            *(asyncio.shield(s.first_start) for s in agent.slots if s.first_start),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            err = errors[0]
            await pool.stop_slots(
                agent.slots, SupervisorClosed(f"agent {spec.name!r} failed to start")
            )
            pool.fail_waiting(agent, err)  # calls made while it was starting
            del pool.agents[spec.name]
            self._boots.forget(spec.name)
            raise err
        self.log.info("agent_started", agent=spec.name, replicas=spec.replicas)
        pool.keep_standby(agent)

    async def stop(self, name: str) -> None:
        """Stop one agent's replicas; its waiting calls fail with :class:`CallCancelled`."""
        agent = self._agent(name)
        err = CallCancelled(f"agent {name!r} was stopped", agent=name)
        self._pool.fail_waiting(agent, err)
        await self._pool.stop_slots(agent.slots, err)
        self._pool.fail_waiting(agent, err)  # calls a dying replica gave back meanwhile
        del self._pool.agents[name]
        self._boots.forget(name)
        self.log.info("agent_stopped", agent=name)

    @property
    def agents(self) -> list[str]:
        """Running agents, in start order."""
        return list(self._pool.agents)

    def _agent(self, name: str) -> Agent:
        try:
            return self._pool.agents[name]
        except KeyError:
            raise UnknownAgent(
                f"no agent named {name!r} (running: {', '.join(self._pool.agents) or 'none'})"
            ) from None

    async def add_tool(self, spec: ToolSpec) -> None:
        """Declare a tool; agents started (or restarted) afterwards can call it.

        An isolated tool's warm pool is started on its first call.
        """
        self._requests.add_tool(spec)

    # --- calls ---------------------------------------------------------------

    def submit(
        self,
        agent: str,
        args: Mapping[str, Any] | None = None,
        *,
        method: str = "",
        timeout: float | None = _UNSET,
        retries: int | None = None,
        approval: bool = False,
    ) -> asyncio.Future[Any]:
        """Queue a call and return a future of its result (or typed failure).

        ``args`` are the keyword arguments of the agent's entry (or of
        ``method`` for a class agent).  ``timeout`` defaults to the agent's;
        ``retries`` (default: the agent's) re-runs the call on a fresh
        replica when the one serving it dies.  ``approval``: the call waits
        for a person's (or the approver's) yes, as an agent or task with
        ``approval = "required"`` does; its timeout starts once approved.
        """
        call = self._submit(agent, args, method, timeout, retries, approval=approval)
        # cancelling the future is leaving: the call is cancelled in its replica too
        call.future.add_done_callback(functools.partial(self._future_done, call))
        return call.future

    def _future_done(self, call: Call, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            self._ledger.caller_gone(call)

    def _submit(
        self,
        agent: str,
        args: Mapping[str, Any] | None,
        method: str,
        timeout: float | None,
        retries: int | None,
        parent: Call | None = None,
        budget: Budget | None = None,
        run: RunHost | None = None,
        batch: Batch | None = None,
        task: str | None = None,
        approval: bool = False,
        parts: Parts | None = None,
    ) -> Call:
        if self._closing:
            raise self._closed_error()
        ag = self._agent(agent)
        if ag.failed is not None:
            raise ag.failed
        if ag.all_gone:
            raise ag.no_replica()
        spec = ag.spec
        if budget is None:
            budget = UNLIMITED if self._unlimited else new_budget(self.spec)
        why = (
            self._approvals.call_why(spec, args, approval)
            if approval or spec.approval == "required" or self._approvals.spec.rules
            else None
        )
        call = self._ledger.new(
            agent,
            method,
            args,
            spec.timeout if timeout is _UNSET else timeout,
            spec.retries if retries is None else retries,
            parent=parent,
            budget=budget,
            run=run,
            batch=batch,
            armed=why is None,
            parts=parts,
        )
        if task is not None:
            call.task = task
        if why is not None:
            self._ask_approval(call, ag, args or {}, why)
            return call
        ag.waiting.append(call)
        if ag.paused:
            self._ledger.hold(call, time.monotonic())
        self._pool.dispatch(ag)
        return call

    def _ask_approval(self, call: Call, ag: Agent, args: Mapping[str, Any], why: str) -> None:
        """``call`` waits for a yes before it is queued; the rest goes on meanwhile."""
        if ag.is_tool:
            kind, tool = "tool", ag.name[5:]
            asker = call.parent.agent if call.parent is not None else ag.name
        else:
            kind = "task" if call.task is not None and call.parent is None else "call"
            tool, asker = None, ag.name
        fut = self._approvals.request(
            kind, asker, args, why, tool=tool, task=call.task, owner=call.future
        )
        self._awaiting[call.id] = call
        fut.add_done_callback(functools.partial(self._approval_answered, call))

    def _approval_answered(self, call: Call, fut: asyncio.Future[Decision]) -> None:
        self._awaiting.pop(call.id, None)
        if call.finished_at is not None or fut.cancelled():
            return  # the call ended first (its request was withdrawn)
        decision = fut.result()
        what = f"call to {call.agent!r}" + (f" (task {call.task!r})" if call.task else "")
        if not decision.approved:
            self._ledger.settle(call, error=denied(decision, call.agent, what))
            return
        ag = self._pool.agents.get(call.agent)
        try:
            if ag is None or ag.failed is not None:
                raise (
                    ag.failed
                    if ag is not None and ag.failed
                    else UnknownAgent(f"agent {call.agent!r} is not running any more")
                )
            self._ledger.arm(call, decision.args)
        except AgentrtError as exc:
            self._ledger.settle(call, error=exc)
            return
        ag.waiting.append(call)
        if ag.paused:
            self._ledger.hold(call, time.monotonic())
        self._pool.dispatch(ag)

    def _submit_child(
        self,
        agent: str,
        args: dict[str, Any],
        method: str,
        timeout: float | None,
        parent: Call | None,
        budget: Budget,
    ) -> Call:
        """A subagent or tool call an agent asked for (``timeout=None``: the agent's)."""
        return self._submit(
            agent, args, method, _UNSET if timeout is None else timeout, None, parent, budget
        )

    def _encode_call(
        self,
        call_id: int,
        agent: str,
        target: str,
        args: Mapping[str, Any],
        deadline: float | None,
        items: list[dict[str, Any]] | None = None,
    ) -> bytearray:
        """A call's frame, encoded where the call is made: arguments that cannot
        cross the process boundary are the caller's :class:`EncodeError`.
        With ``items``, one ``CallMany`` frame for all of them."""
        try:
            if items is not None:
                return self._encoder.encode(CallMany(call_id, target, items, deadline or 0.0))
            return self._encoder.encode(WireCall(call_id, target, dict(args), deadline or 0.0))
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            if isinstance(exc, RecursionError):
                where = f"args: nested too deeply to encode ({exc})"
            else:
                where = describe_unencodable(args, "args") or f"args: {exc}"
            what = f"{agent}.{target}" if target else agent
            raise EncodeError(f"call to {what!r} cannot be sent: {where}") from None

    def _withdraw(self, call: Call) -> None:
        self._pool.withdraw(call)

    async def call(
        self,
        agent: str,
        args: Mapping[str, Any] | None = None,
        *,
        method: str = "",
        timeout: float | None = _UNSET,
        retries: int | None = None,
        approval: bool = False,
    ) -> Any:
        """Run one call and return its result; raises a :class:`CallError` subclass
        (:class:`ApprovalDenied` when it needed approval and was denied)."""
        call = self._submit(agent, args, method, timeout, retries, approval=approval)
        try:
            return await call.future
        except asyncio.CancelledError:
            self._ledger.caller_gone(call)
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

        The agent gets its items many to a frame, as many as take about half
        a millisecond by what its replicas measure (see
        :mod:`agentrt.supervisor.bulk`); each item is still a call of its own
        to the caller.
        """
        if not isinstance(items, list | tuple):
            items = list(items)
        if len(items) > 1 and all(a is None or type(a) is dict for a in items):
            ag = self._agent(agent)
            if self._bulk_ok(ag):
                bulk = BulkMap(
                    ag,
                    method,
                    [{} if a is None else dict(a) for a in items],
                    functools.partial(self._submit_parts, agent, method),
                    self._cancel_parts,
                    ag.spec.timeout if timeout is _UNSET else timeout,
                    ag.spec.retries if retries is None else retries,
                    not return_exceptions,
                )
                return await bulk.run()
        return await self._map_calls(agent, items, method, timeout, retries, return_exceptions)

    def _bulk_ok(self, ag: Agent) -> bool:
        """Whether a map to ``ag`` may send many items to a frame: on this
        machine, nothing counted or approved per call."""
        spec = ag.spec
        return (
            not ag.is_tool
            and self._unlimited
            and spec.approval != "required"
            and not self._approvals.spec.rules
            and self.spec.backend == "local"
        )

    def _submit_parts(self, agent: str, method: str, parts: Parts, timeout: float | None) -> Call:
        return self._submit(agent, None, method, timeout, 0, parts=parts)

    def _cancel_parts(self, call: Call, error: BaseException) -> None:
        self._ledger.settle(call, error=error)

    async def _map_calls(
        self,
        agent: str,
        items: Iterable[Mapping[str, Any] | None],
        method: str,
        timeout: float | None,
        retries: int | None,
        return_exceptions: bool,
    ) -> list[Any]:
        """``map`` with one frame per call."""
        loop = asyncio.get_running_loop()
        calls: list[Call] = []
        unsent: dict[int, EncodeError] = {}  # position -> why it could not be sent
        ledger = self._ledger
        # left starts at 1 for the submission itself: calls that fail while
        # the rest are still being queued cannot end the wait too early.
        batch = Batch(1, loop.create_future(), not return_exceptions)
        try:
            for i, args in enumerate(items):
                try:
                    call = self._submit(agent, args, method, timeout, retries, batch=batch)
                except EncodeError as exc:
                    if not return_exceptions:
                        raise
                    unsent[i] = exc
                    continue
                calls.append(call)
                if batch.done.done():  # one failed already
                    break
            batch.settled(False)
            await batch.done
        except BaseException:
            for c in calls:
                if not c.future.done():
                    ledger.caller_gone(c)
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
                        ledger.settle(
                            c,
                            error=CallCancelled("map ended: an earlier call failed", agent=agent),
                        )
                        c.future.exception()  # retrieved: the caller gets the first error
                raise first
        out: list[Any] = [c.future.exception() or c.future.result() for c in calls]
        for i in sorted(unsent):
            out.insert(i, unsent[i])
        return out

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
        return await self._report(agent, args, method, timeout, retries)

    async def _report(
        self,
        agent: str,
        args: Mapping[str, Any] | None,
        method: str,
        timeout: float | None,
        retries: int | None,
        run: RunHost | None = None,
        budget: Budget | None = None,
        task: str | None = None,
        approval: bool = False,
    ) -> CallReport:
        try:
            call = self._submit(
                agent,
                args,
                method,
                timeout,
                retries,
                None,
                budget,
                run,
                task=task,
                approval=approval,
            )
        except AgentrtError as exc:
            return CallReport(status=exc.status, error=exc.to_dict(), agent=agent)
        error: dict[str, Any] | None
        try:
            value = await call.future
        except asyncio.CancelledError:
            self._ledger.caller_gone(call)
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

    def link_run(self, host: RunHost) -> RunLink:
        """The handle a graph run (``host``) uses: its calls, budget and events."""
        return RunLink(self, host)

    # --- user control: approvals, pause, resume, cancel, stop, audit ------------

    def approvals(self) -> list[PendingApproval]:
        """The calls waiting for approval now, oldest first."""
        return self._approvals.snapshot()

    def approve(
        self,
        approval: str,
        *,
        reason: str = "",
        args: Mapping[str, Any] | None = None,
        by: Who = API,
    ) -> PendingApproval:
        """Approve pending request ``approval`` (``args``: call it with these
        instead); :class:`ControlError` when it is not pending."""
        return self._approvals.decide(approval, True, reason=reason, args=args, by=by)

    def deny(self, approval: str, *, reason: str = "", by: Who = API) -> PendingApproval:
        """Deny pending request ``approval``: its caller gets :class:`ApprovalDenied`."""
        return self._approvals.decide(approval, False, reason=reason, by=by)

    async def pause(self, target: str = "", *, by: Who = API) -> list[str]:
        """Pause the run (``""``), an agent (``NAME``) or one replica (``NAME#N``):
        its processes are stopped, nothing is dispatched to it, and its calls'
        deadlines stand still until :meth:`resume`.  The replicas paused."""
        self._check_open()
        done = await self._holds.pause(target)
        if not target:
            for run in list(self._runs.values()):
                run.hold(True)
        self._audit.record("pause", target or "run", by, reason=_replicas(done))
        return done

    async def resume(self, target: str = "", *, by: Who = API) -> list[str]:
        """Resume what :meth:`pause` paused; the replicas resumed."""
        self._check_open()
        done = await self._holds.resume(target)
        if not target:
            for run in list(self._runs.values()):
                run.hold(False)
        self._audit.record("resume", target or "run", by, reason=_replicas(done))
        return done

    def paused(self) -> list[str]:
        """What is paused: ``run``, agent names, ``agent#N`` replicas."""
        return self._holds.paused()

    async def cancel(
        self, target: str = "", *, scope: str = "task", reason: str = "", by: Who = API
    ) -> list[str]:
        """Cancel a task (``scope="task"``: a graph task's id, or a call's number)
        and everything it started; every call of an agent, waiting or running
        (``"agent"``); or the graph run (``"run"``).  What was cancelled."""
        self._check_open()
        why = f"cancelled by {by}" + (f": {reason}" if reason else "")
        done: list[str] = []
        if scope == "run":
            runs = list(self._runs.values())
            if target:
                runs = [r for r in runs if r.run_id == target or target == self.run_id]
            if not runs:
                raise ControlError(
                    "no graph run is going on" + (f" as {target!r}" if target else "")
                )
            for run in runs:
                run.cancel_run(why)
                done.append(run.run_id)
        elif scope == "agent":
            ag = self._pool.agents.get(target)
            if ag is None:
                raise ControlError(f"no agent named {target!r} (running: {', '.join(self.agents)})")
            # A replica's calls newest first: its Cancel frames then reach a sync
            # replica before that of the call it is running, so none of those
            # still queued in it starts once the running one has ended.
            for bulk in list(ag.maps):  # items not sent yet are its calls too
                bulk.cancel(CallCancelled(why, agent=target))
            calls = [
                *ag.waiting,
                *(c for s in ag.slots for c in reversed(list(s.inflight.values()))),
                *(c for c in self._awaiting.values() if c.agent == target),
            ]
            for c in calls:
                if c.finished_at is None:
                    self._ledger.settle(c, error=CallCancelled(why, agent=c.agent, pid=c.pid))
                    done.append(str(c.id))
        elif scope == "task":
            for run in list(self._runs.values()):
                if run.cancel_task(target, why):
                    done.append(target)
            if not done and target.isdigit():
                call = self._find_call(int(target))
                if call is not None:
                    self._ledger.settle(
                        call, error=CallCancelled(why, agent=call.agent, pid=call.pid)
                    )
                    done.append(target)
            if not done:
                raise ControlError(f"no running task or call {target!r} (see agentrt ctl tasks)")
        else:
            raise ControlError(f"scope must be task, agent or run, not {scope!r}")
        self._audit.record("cancel", f"{scope} {target}".strip(), by, reason=reason or None)
        return done

    def _find_call(self, cid: int) -> Call | None:
        if cid in self._awaiting:
            return self._awaiting[cid]
        for ag in self._pool.agents.values():
            for c in ag.waiting:
                if c.id == cid:
                    return c
            for slot in ag.slots:
                running = slot.inflight.get(cid)
                if running is not None and running.finished_at is None:
                    return running
        return None

    def request_stop(self, now: bool = False, *, reason: str = "", by: Who = API) -> None:
        """Stop the run: gracefully (as :meth:`close`), or ``now``: every agent
        process is killed at once (the kill switch), then the supervisor closes."""
        self._audit.record("stop_now" if now else "stop", "run", by, reason=reason or None)
        if self._closing and not now:
            return
        why = f"stopped by {by}" + (f": {reason}" if reason else "")
        if not self._closing:
            self._begin_close(SupervisorClosed(why))
        if now:
            self._kill_all(why)

    def _kill_all(self, why: str) -> None:
        """SIGKILL every replica's group and cgroup at once (frozen ones thawed)."""
        killed = 0
        for ag in self._pool.agents.values():
            for slot in ag.slots:
                proc = slot.proc
                if proc is None or not proc.alive:
                    continue
                proc.kill(AgentCrashed(f"killed: {why}", agent=ag.name, pid=proc.pid))
                for pid in _linux.cgroup_members(proc.boot.cgroups[0]) if proc.boot.cgroups else []:
                    with contextlib.suppress(OSError):
                        os.kill(pid, 9)
                killed += 1
        self.log.warning("killed_all", replicas=killed, why=why)

    def audit(self) -> list[AuditEntry]:
        """The audit log: every approval, denial, pause, resume, cancel and stop."""
        return list(self._audit.entries)

    def _check_open(self) -> None:
        if self._closing:
            raise ControlError(f"the supervisor is stopping: {self._closed_error()}")

    def tasks(self) -> dict[str, Any]:
        """What ``agentrt ctl tasks`` shows: each graph run's tasks (with
        ``awaiting_approval`` and ``paused``), the calls in flight (``id``,
        ``agent``, ``replica``, ``task``, ``parent``, seconds ``running``) and
        the approvals pending."""
        return self._console.tasks()

    # --- observation -----------------------------------------------------------

    def events(self) -> Subscription:
        """Every run and replica event from this call on (task queued/started/
        finished, replica ready/crashed/restarting, agent failed, and, while
        someone listens, each subagent and tool call), as an async stream;
        ``aclose()`` it when done."""
        return self._events.subscribe()

    async def status(self) -> list[ReplicaStatus]:
        """A snapshot per replica: state, pid, restarts, in-flight, RSS and CPU %."""
        return await self._pool.status()

    def standbys(self) -> list[StandbyStatus]:
        """Each agent's standby (``standby = true``), of those that have one
        now: its pid and ``starting``, ``ready`` or ``paused``.  A standby is
        not a replica: :meth:`status` does not list it."""
        return self._pool.standbys()


#: events ``agentrt ctl tail`` can show from before it connected
_HISTORY = 500


def _replicas(names: list[str]) -> str | None:
    return f"replicas: {', '.join(names)}" if names else None


def _script_paths() -> list[str]:
    """The embedding program's directory (``sys.path[0]``; the working directory
    when it is empty, as in an interactive session) and its working directory."""
    cwd = os.getcwd()
    first = sys.path[0] if sys.path else ""
    out = [os.path.abspath(first) if first else cwd]
    if cwd not in out:
        out.append(cwd)
    return out


class RunLink:
    """A graph run's handle on its supervisor (:meth:`Supervisor.link_run`).

    Its calls share one budget (``max_tasks``, ``max_tool_calls``) and carry
    the run, so that an agent's ``ctx.submit`` reaches it; its events go to
    the supervisor's stream with the run's id.
    """

    def __init__(self, sup: Supervisor, host: RunHost) -> None:
        self._sup = sup
        self.host = host
        self.budget = new_budget(sup.spec)
        self._listening: list[Callable[[AuditEntry], None]] = []
        sup._runs[host.run_id] = host
        if sup._holds.all:
            host.hold(True)

    def close(self) -> None:
        """The run has ended."""
        self._sup._runs.pop(self.host.run_id, None)
        for listen in self._listening:
            with contextlib.suppress(ValueError):
                self._sup._audit.listeners.remove(listen)
        self._listening.clear()

    def on_audit(self, listen: Callable[[AuditEntry], None]) -> None:
        """Call ``listen`` with each audit entry (a person's decision) until the run ends."""
        self._sup._audit.listeners.append(listen)
        self._listening.append(listen)

    async def call(
        self,
        agent: str,
        args: Mapping[str, Any],
        method: str = "",
        timeout: float | None = None,
        task: str | None = None,
        approval: bool = False,
    ) -> CallReport:
        """Task ``task``'s call (``timeout=None``: the agent's), described, never
        raised; the calls it makes name the task in their events.  ``approval``:
        the task requires it."""
        try:
            self.budget.charge("tasks", agent)
        except BudgetExceeded as exc:
            return CallReport(status=exc.status, error=exc.to_dict(), agent=agent)
        return await self._sup._report(
            agent,
            args,
            method,
            _UNSET if timeout is None else timeout,
            None,
            self.host,
            self.budget,
            task,
            approval,
        )

    def emit(self, kind: str, task: str | None = None, **fields: Any) -> None:
        """An event of the run (``run_id`` and ``task`` added)."""
        self._sup._events.emit(kind, run_id=self.host.run_id, task=task, **fields)
