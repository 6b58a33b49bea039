"""Runs a task graph on a Supervisor: dispatch on readiness, retries, deadlines, results.

A :class:`Run` drives a :class:`~agentrt.graph.GraphState`: a task starts the
moment its inputs exist (no superstep barrier), bounded by ``max_concurrency``
(global) and ``agent_concurrency`` (per agent).  Arguments are resolved from
upstream results just before the call.  A failed task is retried with
exponential backoff when it allows retries; then, by its ``on_error``, either
the run stops (``fail_fast``: everything in flight is cancelled, typed) or
only its dependents are skipped, naming it (``continue``).  A run deadline
bounds the whole.  Agents may add tasks while the run goes on
(``ctx.submit``).

The result names, per task, its status, value or typed error, attempts, the
replica's pid and its queued/started/finished times, plus the run's critical
path and makespan.  Every transition is also an event on
:meth:`Supervisor.events <agentrt.supervisor.Supervisor.events>`.

Usage: ``result = await Run(sup, graph, RunSpec(on_error="continue")).wait()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from agentrt.config import RunSpec
from agentrt.errors import CallCancelled
from agentrt.graph import Graph, GraphError, GraphState, Node, critical_path, resolve
from agentrt.journal import Journal, JournalError, Resumed, tasks_diff, tasks_digest

if TYPE_CHECKING:
    from agentrt.supervisor import CallReport, Supervisor

__all__ = ["Run", "RunResult", "TaskResult"]


class TaskResult(msgspec.Struct, kw_only=True):
    """The outcome of one task.

    ``status``: ok, failed, timeout, crashed, limit, cancelled or skipped
    (``reason`` says why).  Times are wall-clock seconds since the epoch.
    """

    id: str
    status: str
    result: Any = None
    error: dict[str, Any] | None = None
    reason: str | None = None
    attempts: int = 0
    agent: str = ""
    pid: int | None = None
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None


class RunResult(msgspec.Struct, kw_only=True):
    """A whole run: per-task results, critical path and makespan (seconds).

    ``failed_agents``: each agent that exceeded its restart intensity during
    the run, as :class:`~agentrt.errors.AgentFailed`'s ``to_dict()``
    (``reason``, and the ``last_cause`` of death); any makes the run ``failed``.
    ``audit``: what people decided during the run (``agentrt supervise`` fills it).
    """

    run_id: str
    status: str
    tasks: dict[str, TaskResult]
    critical_path: list[str]
    makespan: float
    started_at: float
    finished_at: float
    failed_agents: dict[str, dict[str, Any]] = {}
    #: the run's audit log (approvals, pauses, cancellations, stops), when there is one
    audit: list[dict[str, Any]] = []
    #: tasks whose result came from the journal (a resumed run), not run again
    restored: list[str] = []
    #: why the journal could not record the run, when it could not
    journal_error: str | None = None


def node_spec(node: Node) -> dict[str, Any]:
    """A task's spec as the journal keeps it (its Node's fields)."""
    return msgspec.to_builtins(node)  # type: ignore[no-any-return]


class Run:
    """One execution of a graph on a supervisor: ``await Run(sup, graph).wait()``.

    With a ``journal`` (a :class:`~agentrt.journal.Journal`), the run, its
    tasks, every attempt and every result are recorded as they happen, and a
    run whose supervisor died can go on with :meth:`resume`.
    """

    def __init__(
        self,
        sup: Supervisor,
        graph: Graph,
        spec: RunSpec | None = None,
        run_id: str | None = None,
        *,
        journal: Journal | None = None,
        argv: str = "",
        config: str = "",
        _resumed: Resumed | None = None,
    ) -> None:
        self.sup = sup
        self.graph = graph
        self.spec = spec or RunSpec(on_error=graph.on_error)
        graph.on_error = self.spec.on_error
        self.run_id = run_id or uuid.uuid4().hex
        graph.validate()
        self.journal = journal
        self._argv = argv
        self._config = config
        self._resumed = _resumed
        #: results the journal had (a resumed run): used instead of running again
        self._restore: dict[str, TaskResult] = {}
        #: attempts the journal had per task (a resumed task's next one is one more)
        self._attempt_base: dict[str, int] = {}
        if _resumed is not None:
            self._restore = {t: msgspec.convert(r, TaskResult) for t, r in _resumed.done.items()}
            self._attempt_base = dict(_resumed.attempts)
        if journal is not None:
            journal.lock(self.run_id)  # RunLocked: another supervisor has it
        self.state = GraphState(graph)
        #: this run's calls, budget and events on the supervisor
        self.link = sup.link_run(self)
        self._failed_before = set(sup.failed_agents)  # agents that fail during the run count
        self.values: dict[str, Any] = {}
        self.results: dict[str, TaskResult] = {}
        self._queued: dict[str, float] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._per_agent: dict[str, int] = {}
        #: tasks cancelled while running (stragglers of a fan-out that no longer
        #: needs them, or a person's cancel): (reason, message)
        self._cancelled: dict[str, tuple[str, str]] = {}
        self._started: dict[str, float] = {}
        #: the run deadline's timeout, when is it due, and since when it is held
        self._deadline_cm: asyncio.Timeout | None = None
        self._deadline_at: float | None = None
        self._held_at: float | None = None
        self._wake = asyncio.Event()
        self._ids = itertools.count(1)
        self._main: asyncio.Task[RunResult] | None = None
        self._status = "ok"
        self._stop_reason = ""
        self.started_at = time.time()
        #: the result, once the run has ended (also after a cancel)
        self.result: RunResult | None = None
        self._restored: list[str] = []
        self._seq = len(graph)
        #: a journaled run's tasks whose call is in flight, since when
        self._launched: dict[str, float] = {}

    @property
    def restorable(self) -> int:
        """Tasks whose results the journal holds and that will not run again (a
        resumed run; a fan-out's items count, the fan-out itself is expanded)."""
        graph = self.graph
        return sum(1 for t in self._restore if t not in graph or graph[t].for_each is None)

    @classmethod
    def resume(
        cls,
        sup: Supervisor,
        journal: Journal,
        run_id: str,
        graph: Graph | None = None,
        spec: RunSpec | None = None,
        *,
        force: bool = False,
        argv: str = "",
        config: str = "",
    ) -> Run:
        """Go on with run ``run_id`` of ``journal`` (``"last"``: the latest run).

        Tasks that finished ok are not run again: their recorded results feed
        their dependents.  The others, those in flight when the supervisor
        died included, run (again).  ``graph``: the graph as configured now; a
        graph whose tasks differ from the run's is refused, with the
        differences, unless ``force`` (then tasks whose spec changed run
        again).  Without ``graph``, the run's own tasks.
        """
        run_id = journal.run_id(run_id)
        resumed = journal.load(run_id)
        if graph is None:
            graph = Graph.from_specs(resumed.initial, on_error=(spec or RunSpec()).on_error)
        else:
            added = {str(d["id"]) for d in resumed.dynamic}  # the graph may hold them already
            now = [node_spec(n) for n in graph.nodes if n.id not in added]
            if tasks_digest(now) != resumed.tasks_hash:
                diff = tasks_diff(resumed.initial, now)
                if not force:
                    raise JournalError(
                        journal.path,
                        f"run {run_id}'s tasks changed since it started (use --force to run "
                        "the changed ones again):\n  " + "\n  ".join(diff or ["(order)"]),
                    )
                before = {str(t["id"]): t for t in resumed.initial}
                for n in graph.nodes:
                    if before.get(n.id) != node_spec(n):
                        resumed.done.pop(n.id, None)
        graph.validate()
        for d in resumed.dynamic:
            if d["id"] not in graph:
                graph.add_node(msgspec.convert(d, Node))
        # a task whose dependency will run again runs again too: its inputs may change
        # (in dependency order, so one pass over one shrinking set settles it)
        keep = set(resumed.done) & set(graph)
        for tid in graph.order:
            if tid in keep and not graph.deps(tid) <= keep:
                keep.discard(tid)
                resumed.done.pop(tid)
        return cls(
            sup,
            graph,
            spec,
            run_id,
            journal=journal,
            argv=argv,
            config=config,
            _resumed=resumed,
        )

    # --- public --------------------------------------------------------------

    def start(self) -> Run:
        if self._main is None:
            self._main = asyncio.ensure_future(self._drive())
        return self

    async def wait(self) -> RunResult:
        """Run to the end (or the deadline) and return the results."""
        self.start()
        assert self._main is not None
        return await self._main

    def cancel(self) -> None:
        """Stop the run: running tasks are cancelled, the rest skipped."""
        if self._main is not None:
            self._main.cancel()

    # --- user control (through the supervisor: agentrt ctl, the live view) ---------

    def task_rows(self) -> list[dict[str, Any]]:
        """Each task: ``id``, ``agent``, ``status`` (pending, ready, running, then
        its result's), ``attempts`` and its times."""
        state = self.state
        ready = set(state.ready()) if self.result is None else set()
        rows: list[dict[str, Any]] = []
        ids = [*self.graph, *(t for t in self.results if t not in self.graph)]
        for tid in dict.fromkeys([*ids, *self._running]):
            r = self.results.get(tid)
            if r is not None:
                rows.append(
                    {
                        "id": tid,
                        "agent": r.agent,
                        "status": r.status,
                        "attempts": r.attempts,
                        "reason": r.reason
                        or (
                            f"{r.error.get('type')}: {r.error.get('message')}" if r.error else None
                        ),
                        "started_at": r.started_at,
                        "finished_at": r.finished_at,
                    }
                )
                continue
            status = "running" if tid in self._running else "ready" if tid in ready else "pending"
            rows.append(
                {
                    "id": tid,
                    "agent": state.node(tid).agent,
                    "status": status,
                    "started_at": self._started.get(tid),
                }
            )
        return rows

    def cancel_task(self, task: str, reason: str) -> bool:
        """Cancel running task ``task`` (its call, and what that call started); its
        dependents are skipped.  False when it is not running."""
        t = self._running.get(task)
        if t is None or t.done():
            return False
        self._cancelled[task] = (reason, f"task cancelled: {reason}")
        t.cancel()
        return True

    def cancel_run(self, reason: str) -> None:
        """Cancel the run for ``reason``: :meth:`wait` returns its result (status
        ``cancelled``) rather than raising."""
        self._stop_reason = reason
        self.cancel()

    def hold(self, paused: bool) -> None:
        """While the whole supervisor is paused, the run's deadline stands still."""
        cm = self._deadline_cm
        now = time.monotonic()
        if paused and self._held_at is None:
            self._held_at = now
            if cm is not None and self._deadline_at is not None:
                cm.reschedule(None)
        elif not paused and self._held_at is not None:
            shift, self._held_at = now - self._held_at, None
            if cm is not None and self._deadline_at is not None:
                self._deadline_at += shift
                cm.reschedule(self._deadline_at)

    def add(self, id: str | None = None, agent: str = "", **fields: Any) -> str:
        """Add a task while the run goes on; it starts once its inputs exist."""
        tid = id or f"{agent}-{next(self._ids)}"
        while id is None and tid in self.graph:  # a resumed run has ids of its own already
            tid = f"{agent}-{next(self._ids)}"
        if tid in self.graph and self._resumed is not None:
            # submitted again by a task that runs again after a resume: the same
            # task (same spec) is the one already in the graph
            probe = Graph()
            probe.add(tid, agent, **fields)
            if node_spec(probe[tid]) == node_spec(self.graph[tid]):
                return tid
        node = self.graph.add(tid, agent, **fields)
        if self.journal is not None:
            self._seq += 1
            self.journal.add_task(self.run_id, node_spec(node), seq=self._seq, kind="submitted")
        self._emit("task_added", tid, agent=agent)
        self._wake.set()
        return tid

    def add_submitted(self, task: Mapping[str, Any]) -> str:
        """``ctx.submit`` of a task of this run (called by the supervisor)."""
        task = dict(task)
        agent = str(task.pop("agent", ""))
        if "timeout" in task and task["timeout"] is not None:
            task["timeout"] = float(task["timeout"])
        try:
            return self.add(task.pop("id", None), agent, **task)
        except TypeError as exc:
            raise GraphError("tasks", f"bad task from ctx.submit: {exc}") from None

    # --- the driver ------------------------------------------------------------

    def _emit(self, kind: str, task: str | None = None, **fields: Any) -> None:
        self.link.emit(kind, task, **fields)

    def _journal_start(self) -> None:
        j = self.journal
        if j is None:
            return
        if self._resumed is None:
            j.begin_run(
                self.run_id,
                [node_spec(n) for n in self.graph.nodes],
                argv=self._argv,
                config=self._config,
                started=self.started_at,
            )
        else:
            j.resume_run(self.run_id, argv=self._argv)
        run_id = self.run_id

        def audited(entry: Any) -> None:  # a person's decision during the run
            j.event(run_id, "audit", msgspec.to_builtins(entry))

        self.link.on_audit(audited)

    async def _journal_end(self, result: RunResult) -> RunResult:
        j = self.journal
        if j is None:
            return result
        try:
            j.end_run(self.run_id, result.status, ended=result.finished_at)
            await j.flush()
        except JournalError as exc:
            result.journal_error = str(exc)
        finally:
            j.unlock(self.run_id)
        return result

    async def _drive(self) -> RunResult:
        deadline = self.spec.deadline
        self._journal_start()
        self._emit("run_started", tasks=len(self.graph))
        try:
            async with asyncio.timeout(deadline) as cm:
                self._deadline_cm = cm
                self._deadline_at = cm.when()
                if self._held_at is not None and deadline is not None:
                    cm.reschedule(None)  # started while the supervisor is paused
                await self._loop()
        except TimeoutError:
            self._status = "timeout"
            await self._stop_all("timeout", "run deadline passed")
        except asyncio.CancelledError:
            self._status = "cancelled"
            await self._stop_all("cancelled", self._stop_reason or "run was cancelled")
            if not self._stop_reason:
                raise  # its caller cancelled it
            # cancelled by a person (agentrt ctl cancel --run): the result says so
        finally:
            self._deadline_cm = None
            result = self.result = await self._journal_end(self._result())
            self._emit("run_finished", status=result.status, makespan=result.makespan)
            self.link.close()
        return result

    async def _loop(self) -> None:
        state = self.state
        while True:
            self._wake.clear()
            expanded = False
            for tid in state.ready():
                if tid in self._restore and (
                    state.parent(tid) is not None or state.node(tid).for_each is None
                ):
                    self._restore_task(tid)
                    continue
                if tid in self._running or not self._room(tid):
                    continue
                self._queued.setdefault(tid, time.time())
                node = state.node(tid)
                if node.for_each is not None and state.parent(tid) is None:
                    self._expand(tid)
                    expanded = True  # its children are ready now: look again
                    continue
                self._launch(tid)
            if state.done:
                return
            if expanded:
                continue
            if not self._running and not state.ready():
                return  # nothing can move (cannot happen with a valid graph)
            waiter = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait(
                    {waiter, *self._running.values()}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                waiter.cancel()

    def _restore_task(self, tid: str) -> None:
        """A task the journal says finished ok: its result, not a new run."""
        res = self._restore.pop(tid)
        self.state.start(tid)
        self.results[tid] = res
        self.values[tid] = res.result
        self._restored.append(tid)
        self._emit("task_restored", tid, agent=res.agent)
        parent = self.state.parent(tid)
        if parent is not None:
            prog = self.state.finish_child(tid, True)
            if prog.completed:
                self._settle_parent(parent)
            self._skipped(prog.skipped)
        else:
            self._skipped(self.state.finish(tid, True))
        self._wake.set()

    def _room(self, tid: str) -> bool:
        cap = self.spec.max_concurrency
        if cap is not None and len(self._running) >= cap:
            return False
        agent = self.state.node(tid).agent
        per = self.spec.agent_concurrency.get(agent)
        return per is None or self._per_agent.get(agent, 0) < per

    def _expand(self, tid: str) -> None:
        node = self.state.node(tid)
        assert node.for_each is not None
        self._queued.setdefault(tid, time.time())
        try:
            items = resolve(node.for_each, self.values, where=f"tasks.{tid}.for_each")
            if not isinstance(items, list):
                raise GraphError(
                    f"tasks.{tid}.for_each",
                    f"{node.for_each} is a {type(items).__name__}, not a list",
                )
        except GraphError as exc:
            self.state.start(tid)
            self._record(tid, "failed", error=exc.to_dict(), agent=node.agent)
            self._skipped(self.state.finish(tid, ok=False))
            return
        children = self.state.expand(tid, items)
        if self.journal is not None:
            for i, c in enumerate(children):
                self._seq += 1
                spec = {"id": c, "agent": node.agent, "parent": tid, "index": i}
                self.journal.add_task(self.run_id, spec, seq=self._seq, kind="item")
        self._emit("fanout", tid, items=len(items))
        for c in children:
            self._queued[c] = time.time()
        if not children:
            self._settle_parent(tid)

    def _launch(self, tid: str) -> None:
        self.state.start(tid)
        agent = self.state.node(tid).agent
        self._per_agent[agent] = self._per_agent.get(agent, 0) + 1
        self._started[tid] = time.time()
        self._emit("task_started", tid, agent=agent)
        self._running[tid] = asyncio.ensure_future(self._exec(tid))

    async def _exec(self, tid: str) -> None:
        try:
            await self._run_task(tid)
        except Exception as exc:
            # a bug of the runtime, not of the task: the task fails, saying so, and
            # the run goes on (it never waits for a task that is gone)
            if tid in self._running:
                self._record(
                    tid,
                    "failed",
                    error={"type": "InternalError", "message": f"{type(exc).__name__}: {exc}"},
                    agent=self.state.node(tid).agent,
                )
                self._done(tid, ok=False)

    async def _run_task(self, tid: str) -> None:
        state = self.state
        node = state.node(tid)
        parent = state.parent(tid)
        report: CallReport | None = None
        attempts = 0
        try:
            item: dict[str, Any] = {"item": state.item(tid)} if parent is not None else {}
            args = resolve(node.args, self.values, where=f"tasks.{tid}.args", **item)
            j = self.journal
            if j is not None and (parent is not None or args != node.args):
                # resolved arguments (the spec row holds those written without references)
                j.task_started(self.run_id, tid, args)
            retries = node.retries or 0
            backoff = self.spec.retry_backoff
            for attempt in range(retries + 1):
                if j is not None:
                    self._launched[tid] = time.time()
                report = await self.link.call(
                    node.agent,
                    args,
                    node.method,
                    node.timeout,
                    tid,
                    approval=node.approval == "required",
                )
                attempts += report.attempts
                if j is not None:
                    self._launched.pop(tid, None)
                    self._journal_attempt(
                        tid,
                        report.status,
                        report.pid,
                        report.started_at,
                        report.finished_at,
                        report.error,
                    )
                if report.status == "ok" or attempt == retries:
                    break
                delay = min(self.spec.retry_backoff_max, backoff * 2**attempt)
                self._emit("task_retry", tid, attempt=attempt + 2, status=report.status)
                await asyncio.sleep(delay * random.uniform(0.75, 1.25))
        except GraphError as exc:
            self._record(tid, "failed", error=exc.to_dict(), agent=node.agent)
            self._done(tid, ok=False)
            return
        except asyncio.CancelledError:
            if tid in self._launched:
                # the attempt in flight ends here (its call was cancelled)
                started = self._launched.pop(tid)
                self._journal_attempt(tid, "cancelled", None, started, time.time(), None)
            why: str | None = None
            message = "task cancelled: the run stopped"
            if tid in self._cancelled:
                why, message = self._cancelled.pop(tid)
            if tid not in self.results:
                self._record(
                    tid,
                    "cancelled",
                    error=CallCancelled(message).to_dict(),
                    reason=why,
                    agent=node.agent,
                    attempts=attempts,
                )
            self._done(tid, ok=False)
            if why is not None and self._main is not None and not self._main.cancelling():
                return  # this task alone was cancelled: the run goes on
            raise
        assert report is not None  # retries >= 0: at least one attempt ran
        self._record(
            tid,
            report.status,
            result=report.result,
            error=report.error,
            attempts=attempts,
            agent=node.agent,
            pid=report.pid,
            started_at=report.started_at,
            finished_at=report.finished_at,
        )
        if report.status == "ok":
            self.values[tid] = report.result
        self._done(tid, ok=report.status == "ok")

    def _journal_attempt(
        self,
        tid: str,
        status: str,
        pid: int | None,
        started: float | None,
        ended: float | None,
        error: dict[str, Any] | None,
    ) -> None:
        """Record ``tid``'s next attempt (numbered on from those the journal had)."""
        assert self.journal is not None
        n = self._attempt_base[tid] = self._attempt_base.get(tid, 0) + 1
        self.journal.attempt(
            self.run_id, tid, n, status=status, pid=pid, started=started, ended=ended, error=error
        )

    def _done(self, tid: str, ok: bool) -> None:
        """Tell the state; apply what follows (skips, fan-out completion, fail_fast)."""
        state = self.state
        self._running.pop(tid, None)
        agent = state.node(tid).agent
        self._per_agent[agent] = self._per_agent.get(agent, 1) - 1
        parent = state.parent(tid)
        if parent is not None:
            prog = state.finish_child(tid, ok)
            if prog.completed:
                self._settle_parent(parent)
            reached = state.status(parent) == "ok"
            for c in prog.cancel:
                t = self._running.get(c)
                if t is not None:
                    # a straggler of a fan-out that no longer needs it
                    why = "quorum reached" if reached else "quorum out of reach"
                    self._cancelled[c] = (why, f"not needed: {why}")
                    t.cancel()
            self._skipped(prog.skipped)
        else:
            self._skipped(state.finish(tid, ok))
        if state.stopped is not None and self._status == "ok":
            self._status = "failed"
            for other, t in list(self._running.items()):
                if other != tid:
                    t.cancel()
        self._wake.set()

    def _settle_parent(self, parent: str) -> None:
        state = self.state
        kids = state.children(parent)
        ok = state.status(parent) == "ok"
        spans = [self.results[c] for c in kids if c in self.results]
        value = state.fanout_result(parent, self.values) if ok else None
        if ok:
            self.values[parent] = value
        self._record(
            parent,
            "ok" if ok else "failed",
            result=value,
            error=None if ok else {"type": "FanoutFailed", "message": state.reason(parent) or ""},
            attempts=1,  # its own: it was expanded once (its items count theirs)
            agent=state.node(parent).agent,
            started_at=min((r.started_at for r in spans if r.started_at), default=None),
            finished_at=max((r.finished_at for r in spans if r.finished_at), default=time.time()),
        )

    def _skipped(self, ids: list[str]) -> None:
        for x in ids:
            if x not in self.results:
                self._record(
                    x, "skipped", reason=self.state.reason(x), agent=self.state.node(x).agent
                )

    def _record(self, tid: str, status: str, **fields: Any) -> None:
        fields.setdefault("finished_at", time.time())
        res = TaskResult(id=tid, status=status, queued_at=self._queued.get(tid), **fields)
        self.results[tid] = res
        if self.journal is not None:
            self.journal.task_finished(self.run_id, tid, status, res)
        if status != "skipped":
            err = res.error or {}
            why = f"{err.get('type', 'Error')}: {err.get('message', '')}" if err else res.reason
            self._emit(
                "task_finished", tid, status=status, agent=res.agent, pid=res.pid, reason=why
            )
        else:
            self._emit("task_skipped", tid, reason=res.reason)

    async def _stop_all(self, status: str, why: str) -> None:
        running = list(self._running.items())
        for _tid, t in running:
            t.cancel()
        for tid, t in running:
            with contextlib.suppress(asyncio.CancelledError):
                await t
            r = self.results.get(tid)
            if r is not None and r.status == "cancelled":
                self.results[tid] = msgspec.structs.replace(
                    r, status=status, error={"type": "RunStopped", "message": why}
                )
        for tid in self.graph:
            if tid not in self.results:
                self._record(tid, "skipped", reason=why, agent=self.graph[tid].agent)

    def _result(self) -> RunResult:
        timings: dict[str, tuple[float, float]] = {}
        for tid, r in self.results.items():
            if self.state.parent(tid) is None and r.started_at and r.finished_at:
                timings[tid] = (r.started_at, r.finished_at)
        deps = {tid: self.graph.deps(tid) for tid in timings}
        path, makespan = critical_path(timings, deps) if timings else ([], 0.0)
        status = self._status
        if status == "ok" and any(
            r.status != "ok" for t, r in self.results.items() if self.state.parent(t) is None
        ):
            status = "failed"
        failed_agents = {
            n: e.to_dict()
            for n, e in self.sup.failed_agents.items()
            if n not in self._failed_before
        }
        if failed_agents:
            status = "failed"
        ordered = {t: self.results[t] for t in self.graph if t in self.results}
        for t, r in self.results.items():
            ordered.setdefault(t, r)
        return RunResult(
            run_id=self.run_id,
            status=status,
            tasks=ordered,
            critical_path=path,
            makespan=makespan,
            started_at=self.started_at,
            finished_at=time.time(),
            failed_agents=failed_agents,
            restored=list(self._restored),
        )
