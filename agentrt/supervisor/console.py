"""What ``agentrt ctl`` talks to: control requests to the supervisor, and its views.

:class:`Console` is the control socket's handler (see :mod:`agentrt.control`):
each request becomes a call of the :class:`~agentrt.supervisor.Supervisor`'s
public methods (``pause``, ``approve``, ``cancel``, ``request_stop``...),
made in the name of the client (:class:`Who`: its uid, pid and command
line), and the views it shows (``status``, ``agents``, ``tasks``, ``audit``,
``tail``) are built here from the pool, the approvals and the runs.  Replies
are bounded to fit one control frame.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

import msgspec

from agentrt.control import Peer
from agentrt.errors import ControlError
from agentrt.protocol import (
    CtlAgents,
    CtlApprove,
    CtlAudit,
    CtlCancel,
    CtlDeny,
    CtlPause,
    CtlResume,
    CtlStatus,
    CtlStop,
    CtlTasks,
    summarize,
)
from agentrt.supervisor.events import EventHub
from agentrt.supervisor.holds import Holds
from agentrt.supervisor.ledger import RunHost
from agentrt.supervisor.oversight import Approvals, Audit, PendingApproval, Who
from agentrt.supervisor.pool import Agent, Pool, ReplicaStatus, standby_status

__all__ = ["Console"]

#: rows of a control reply's lists (tasks, calls, approvals)
_MAX_ROWS = 2000
#: encoded arguments of an approval shown whole in ``ctl tasks``; larger ones summarized
_MAX_SHOWN = 16 * 1024
#: what a control reply may hold (its frame is at most 1 MiB)
_MAX_REPLY = 900 * 1024


def _shown(p: PendingApproval) -> dict[str, Any]:
    d: dict[str, Any] = msgspec.to_builtins(p)
    try:
        big = len(msgspec.msgpack.encode(p.args)) > _MAX_SHOWN
    except (TypeError, ValueError, OverflowError):
        big = True
    if big:
        d["args"] = {"summary": summarize(p.args, 2000)}
    return d


def _fit(entries: list[Any]) -> list[Any]:
    """The last of ``entries`` that fit in a control reply."""
    out: list[Any] = []
    size = 0
    for e in reversed(entries):
        size += len(msgspec.msgpack.encode(e))
        if size > _MAX_REPLY:
            break
        out.append(e)
    out.reverse()
    return out


class Controlled(Protocol):
    """What the console needs of the supervisor (the facade's public API)."""

    run_id: str
    opened_at: float
    log: Any

    @property
    def launch_dir(self) -> str: ...
    @property
    def closing(self) -> bool: ...
    @property
    def control_path(self) -> str | None: ...
    async def status(self) -> list[ReplicaStatus]: ...
    async def pause(self, target: str = "", *, by: Who = ...) -> list[str]: ...
    async def resume(self, target: str = "", *, by: Who = ...) -> list[str]: ...
    async def cancel(
        self, target: str = "", *, scope: str = "task", reason: str = "", by: Who = ...
    ) -> list[str]: ...
    def approve(
        self,
        approval: str,
        *,
        reason: str = "",
        args: Any = None,
        by: Who = ...,
    ) -> PendingApproval: ...
    def deny(self, approval: str, *, reason: str = "", by: Who = ...) -> PendingApproval: ...
    def request_stop(self, now: bool = False, *, reason: str = "", by: Who = ...) -> None: ...


class Console:
    """The control socket's handler for one supervisor."""

    def __init__(
        self,
        sup: Controlled,
        pool: Pool,
        approvals: Approvals,
        holds: Holds,
        runs: dict[str, RunHost],
        audit: Audit,
        events: EventHub,
    ) -> None:
        self.sup = sup
        self.pool = pool
        self.approvals = approvals
        self.holds = holds
        self.runs = runs
        self.audit = audit
        self.events = events

    async def control(self, request: Any, peer: Peer) -> Any:
        """One ``agentrt ctl`` request (see :mod:`agentrt.control`)."""
        who = Who(via="ctl", uid=peer.uid, pid=peer.pid, cmd=peer.cmd)
        match request:
            case CtlStatus():
                return self._status_view()
            case CtlAgents():
                return await self._agents_view()
            case CtlTasks():
                return self.tasks()
            case CtlPause(target=target):
                return {"paused": await self.sup.pause(target, by=who)}
            case CtlResume(target=target):
                return {"resumed": await self.sup.resume(target, by=who)}
            case CtlCancel(target=target, scope=scope, reason=reason):
                return {
                    "cancelled": await self.sup.cancel(target, scope=scope, reason=reason, by=who)
                }
            case CtlApprove(id=rid, reason=reason, args=args):
                info = self.sup.approve(rid, reason=reason, args=args, by=who)
                return {"approved": rid, "task": info.task, "agent": info.agent, "tool": info.tool}
            case CtlDeny(id=rid, reason=reason):
                info = self.sup.deny(rid, reason=reason, by=who)
                return {"denied": rid, "task": info.task, "agent": info.agent, "tool": info.tool}
            case CtlStop(now=now, reason=reason):
                self.sup.request_stop(now, reason=reason, by=who)
                return {"stopping": True, "now": now}
            case CtlAudit():
                return _fit([msgspec.to_builtins(e) for e in self.audit.entries])
        raise ControlError(f"unknown request {type(request).__name__}")

    def control_tail(self, last: int) -> tuple[list[dict[str, Any]], AsyncIterator[dict[str, Any]]]:
        sub = self.events.subscribe()  # before the snapshot: nothing falls between
        past = list(self.events.history or ())[-last:] if last else []

        async def future() -> AsyncIterator[dict[str, Any]]:
            try:
                async for ev in sub:
                    yield msgspec.to_builtins(ev)
            finally:
                await sub.aclose()

        return [msgspec.to_builtins(e) for e in past], future()

    def control_refused(self, peer: Peer, why: str) -> None:
        self.sup.log.warning("control_refused", pid=peer.pid, uid=peer.uid, cmd=peer.cmd, why=why)
        self.audit.record(
            "refused",
            "control",
            Who(via="ctl", uid=peer.uid, pid=peer.pid, cmd=peer.cmd),
            reason=why,
        )

    def _status_view(self) -> dict[str, Any]:
        slots = [s for a in self.pool.agents.values() for s in a.slots]
        states: dict[str, int] = {}
        for s in slots:
            st = "paused" if s.paused and s.state in ("ready", "busy") else s.state
            states[st] = states.get(st, 0) + 1
        tasks: dict[str, int] = {}
        for rows in self._task_rows(self.approvals.snapshot()).values():
            for row in rows:
                tasks[row["status"]] = tasks.get(row["status"], 0) + 1
        paused = self.holds.paused()
        return {
            "run_id": self.sup.run_id,
            "pid": os.getpid(),
            "cwd": self.sup.launch_dir,
            "started": self.sup.opened_at,
            "uptime": round(time.time() - self.sup.opened_at, 3),
            "state": "stopping" if self.sup.closing else "paused" if "run" in paused else "running",
            "paused": paused,
            "agents": len(self.pool.agents),
            "replicas": states,
            "runs": list(self.runs),
            "tasks": tasks,
            "calls_in_flight": sum(len(s.inflight) for s in slots),
            "queued": sum(len(a.waiting) for a in self.pool.agents.values()),
            "approvals_pending": len(self.approvals.pending),
            "socket": self.sup.control_path,
        }

    async def _agents_view(self) -> list[dict[str, Any]]:
        replicas = await self.sup.status()
        out: list[dict[str, Any]] = []
        for ag in self.pool.agents.values():
            out.append(
                {
                    "name": ag.name,
                    "paused": ag.paused,
                    "failed": str(ag.failed) if ag.failed is not None else None,
                    "queued": len(ag.waiting),
                    "replicas": [msgspec.to_builtins(r) for r in replicas if r.agent == ag.name],
                    "standby": _standby_view(ag),
                }
            )
        return out

    def tasks(self) -> dict[str, Any]:
        """What ``agentrt ctl tasks`` shows: each graph run's tasks (with
        ``awaiting_approval`` and ``paused``), the calls in flight (``id``,
        ``agent``, ``replica``, ``task``, ``parent``, seconds ``running``) and
        the approvals pending."""
        pending = self.approvals.snapshot()
        runs = []
        for run_id, rows in self._task_rows(pending).items():
            runs.append(
                {"run_id": run_id, "tasks": rows[:_MAX_ROWS], "more": max(0, len(rows) - _MAX_ROWS)}
            )
        return {
            "runs": runs,
            "calls": self._calls_in_flight()[:_MAX_ROWS],
            "approvals": [_shown(p) for p in pending[:_MAX_ROWS]],
        }

    def _task_rows(self, pending: list[PendingApproval]) -> dict[str, list[dict[str, Any]]]:
        """Each run's tasks; a running one waiting for approval says
        ``awaiting_approval``, one whose call is held by a pause ``paused``."""
        awaiting = {p.task: p.id for p in pending if p.task is not None and p.kind == "task"}
        paused: set[str] = set()
        for ag in self.pool.agents.values():
            paused.update(c.task for c in ag.waiting if c.task and c.held_at is not None)
            for slot in ag.slots:
                if slot.paused:
                    paused.update(c.task for c in slot.inflight.values() if c.task)
        out: dict[str, list[dict[str, Any]]] = {}
        for run in self.runs.values():
            rows = run.task_rows()
            for row in rows:
                if row["status"] != "running":
                    continue
                if row["id"] in awaiting:
                    row["status"] = "awaiting_approval"
                    row["approval"] = awaiting[row["id"]]
                elif row["id"] in paused:
                    row["status"] = "paused"
            out[run.run_id] = rows
        return out

    def _calls_in_flight(self) -> list[dict[str, Any]]:
        now = time.time()
        calls: list[dict[str, Any]] = []
        for ag in self.pool.agents.values():
            for slot in ag.slots:
                for c in slot.inflight.values():
                    if c.finished_at is not None:
                        continue
                    calls.append(
                        {
                            "id": c.id,
                            "agent": ag.name,
                            "replica": slot.index,
                            "target": c.target or None,
                            "task": c.task,
                            "parent": c.parent.id if c.parent is not None else None,
                            "running": round(now - c.started_at, 3) if c.started_at else None,
                            "paused": slot.paused,
                        }
                    )
        return calls


def _standby_view(agent: Agent) -> dict[str, Any] | None:
    """The agent's standby (``standby = true``): its pid and ``starting``,
    ``ready`` or ``paused``; None when it has none now."""
    st = standby_status(agent)
    return None if st is None else {"pid": st.pid, "state": st.state}
