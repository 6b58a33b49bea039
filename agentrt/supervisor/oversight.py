"""Human oversight: approvals, and the audit log of every decision.

A call that needs approval (``approval = "required"`` on its task, agent or
tool, or a matching ``[approvals]`` rule) waits here while the rest of the
run goes on.  A person approves it (optionally with edited arguments) or
denies it, through ``agentrt ctl``, the live view or the embedding API; an
approver callback may answer first; nobody answering within the approval
timeout is a denial.  A request whose call ends meanwhile (its caller left,
its task was cancelled) is withdrawn.

Every decision, and every pause, resume, cancel, stop and refused control
client, is an :class:`AuditEntry`: kept for ``agentrt ctl audit`` and the
results file, and appended as a JSON line to the run's ``audit.jsonl`` (and
to ``[supervisor] audit_log`` when set).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from agentrt.config import AgentSpec, ApprovalsSpec, ToolSpec
from agentrt.errors import ApprovalDenied, ControlError
from agentrt.protocol import args_match, rule_text, summarize
from agentrt.supervisor.events import EventHub

__all__ = [
    "API",
    "Approvals",
    "Approver",
    "Audit",
    "AuditEntry",
    "Decision",
    "PendingApproval",
    "Who",
    "denied",
]

#: requests pending at once, in all and per agent: past them, a request is denied
MAX_PENDING = 10_000
MAX_PENDING_PER_AGENT = 1_000
#: audit entries kept in memory (the files keep every one)
MAX_AUDIT = 100_000


class Who(msgspec.Struct, kw_only=True, omit_defaults=True, frozen=True):
    """Who acted.  ``via``: ``ctl`` (a control client: its uid, pid and command
    line), ``live`` (the live view's keys), ``api`` (the embedding program),
    ``approver`` (the approver callback), ``timeout``, ``supervisor``."""

    via: str
    uid: int | None = None
    pid: int | None = None
    cmd: str | None = None

    def __str__(self) -> str:
        if self.uid is None and self.pid is None:
            return self.via
        who = f"{self.via}: uid {self.uid}, pid {self.pid}"
        return f"{who} ({self.cmd})" if self.cmd else who


#: the embedding program (a call of the Supervisor's methods)
API = Who(via="api")


class PendingApproval(msgspec.Struct, kw_only=True):
    """A call waiting for approval.

    ``kind``: ``task`` (a graph task's call), ``call`` (a call to an agent
    that needs approval: a subagent, ``Supervisor.call``) or ``tool``;
    ``agent`` is the agent called (``tool``: the agent calling).
    """

    id: str
    kind: str
    agent: str
    tool: str | None = None
    task: str | None = None
    args: dict[str, Any] = {}
    why: str = ""
    requested_at: float = 0.0
    #: seconds it has waited, when this snapshot was taken
    waited: float = 0.0
    #: seconds it may wait before it is denied
    timeout: float = 0.0


class Decision(msgspec.Struct, kw_only=True, frozen=True):
    """An answer to a request: ``args`` replace the call's arguments when given."""

    approved: bool
    reason: str = ""
    args: dict[str, Any] | None = None
    by: Who = API
    #: the request's id
    approval: str = ""


#: ``approver(request)``: a Decision, True/False, or None to leave it to a person
Approver = Callable[[PendingApproval], Awaitable["Decision | bool | None"]]


class AuditEntry(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One decision or action, as the audit log records it.

    ``action``: ``approval_requested``, ``approved``, ``denied``,
    ``approval_timeout``, ``approval_withdrawn``, ``pause``, ``resume``,
    ``cancel``, ``stop``, ``stop_now``, ``refused`` (a control client that
    may not connect).  ``target``: what it concerns (an approval id, an
    agent, ``agent#N``, a task, ``run``); ``args``: the arguments shown.
    """

    time: float
    action: str
    target: str
    by: Who
    reason: str | None = None
    args: dict[str, Any] | None = None
    approval: str | None = None
    agent: str | None = None
    tool: str | None = None
    task: str | None = None


class Audit:
    """The run's audit log: in memory (the last :data:`MAX_AUDIT`) and appended to
    files as JSON lines, one ``write`` per entry, flushed."""

    def __init__(self, log: Any) -> None:
        self.log = log
        self.entries: deque[AuditEntry] = deque(maxlen=MAX_AUDIT)
        #: called with each entry (a run's journal records them); never raise
        self.listeners: list[Callable[[AuditEntry], None]] = []
        self._files: list[Any] = []
        self._encoder = msgspec.json.Encoder()

    def open(self, *paths: str) -> None:
        """Append to each of ``paths`` from now on (created 0600)."""
        for path in paths:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
                self._files.append(os.fdopen(fd, "ab", buffering=0))
            except OSError as exc:
                self.log.error("audit_log_unwritable", path=path, error=str(exc))

    def close(self) -> None:
        for f in self._files:
            with contextlib.suppress(OSError):
                f.close()
        self._files.clear()

    def record(self, action: str, target: str, by: Who, **fields: Any) -> AuditEntry:
        entry = AuditEntry(time=time.time(), action=action, target=target, by=by, **fields)
        self.entries.append(entry)
        for listen in list(self.listeners):
            try:
                listen(entry)
            except Exception as exc:  # a listener's failure is logged, never the caller's
                self.log.error("audit_listener_failed", error=f"{type(exc).__name__}: {exc}")
        if self._files:
            try:
                line = self._encoder.encode(entry) + b"\n"
            except (TypeError, ValueError, OverflowError):
                # arguments JSON cannot hold: recorded shortened
                shown = summarize(entry.args or {}, 2000)
                entry = msgspec.structs.replace(entry, args={"summary": shown})
                line = self._encoder.encode(entry) + b"\n"
            for f in self._files:
                try:
                    f.write(line)
                except OSError as exc:
                    self.log.error("audit_log_write_failed", error=str(exc))
        self.log.info(
            "audit",
            action=action,
            target=target,
            by=str(by),
            **{k: v for k, v in fields.items() if k != "args" and v is not None},
        )
        return entry


@dataclass(eq=False, slots=True)
class _Request:
    info: PendingApproval
    since: float  # time.monotonic()
    future: asyncio.Future[Decision]
    timer: asyncio.TimerHandle | None = None
    asking: asyncio.Task[None] | None = None


class Approvals:
    """Which calls need approval, and the requests waiting for an answer."""

    def __init__(
        self,
        spec: ApprovalsSpec,
        audit: Audit,
        events: EventHub,
        log: Any,
        approver: Approver | None = None,
    ) -> None:
        self.spec = spec
        self.audit = audit
        self.events = events
        self.log = log
        self.approver = approver
        self.pending: dict[str, _Request] = {}
        self._ids = itertools.count(1)
        self._per_agent: dict[str, int] = {}

    # --- who needs one ---------------------------------------------------------

    def call_why(
        self, spec: AgentSpec, args: Mapping[str, Any] | None, flagged: bool
    ) -> str | None:
        """Why a call to agent ``spec`` needs approval (None: it does not).

        ``flagged``: its task says ``approval = "required"``.  An isolated
        tool's pool (``tool:<name>``) answers for the tool.
        """
        name = spec.name
        tool = name[5:] if name.startswith("tool:") else None
        if flagged:
            return "the task requires approval"
        if spec.approval == "required":
            return (
                f"tool {tool!r} requires approval" if tool else f"agent {name!r} requires approval"
            )
        if not self.spec.rules:
            return None
        args = args or {}
        for i, rule in enumerate(self.spec.rules):
            if tool is not None and rule.tool != tool:
                continue
            if tool is None and rule.agent != name:
                continue
            pats = rule.patterns()
            if args_match(pats, args):
                return f"[approvals] rule {i + 1}: {rule_text(tool or name, pats)}"
        return None

    def tool_rules(self, tools: Mapping[str, ToolSpec]) -> dict[str, list[dict[str, list[str]]]]:
        """What a replica's Boot carries: for each in-process tool that may need
        approval, its rules (``[{}]``: every call)."""
        out: dict[str, list[dict[str, list[str]]]] = {}
        for name, t in tools.items():
            if t.approval == "required" and not t.isolated:
                out[name] = [{}]
        for rule in self.spec.rules:
            if rule.tool is None:
                continue
            declared = tools.get(rule.tool)
            if declared is not None and declared.isolated:
                continue  # checked by the supervisor
            rules = out.setdefault(rule.tool, [])
            if {} not in rules:
                rules.append(rule.patterns())
        return out

    # --- requests --------------------------------------------------------------

    def request(
        self,
        kind: str,
        agent: str,
        args: Mapping[str, Any],
        why: str,
        *,
        tool: str | None = None,
        task: str | None = None,
        owner: asyncio.Future[Any] | None = None,
    ) -> asyncio.Future[Decision]:
        """Register a request; its future resolves with the decision.

        When ``owner`` (the call it is for) ends first, the request is
        withdrawn.  Past :data:`MAX_PENDING` requests (or
        :data:`MAX_PENDING_PER_AGENT` of one agent) it is denied at once.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Decision] = loop.create_future()
        if len(self.pending) >= MAX_PENDING or self._per_agent.get(agent, 0) >= (
            MAX_PENDING_PER_AGENT
        ):
            fut.set_result(
                Decision(
                    approved=False,
                    reason=f"too many approvals pending ({len(self.pending)})",
                    by=Who(via="supervisor"),
                )
            )
            return fut
        rid = f"a{next(self._ids)}"
        info = PendingApproval(
            id=rid,
            kind=kind,
            agent=agent,
            tool=tool,
            task=task,
            args=dict(args),
            why=why,
            requested_at=time.time(),
            timeout=self.spec.timeout,
        )
        req = _Request(info, time.monotonic(), fut)
        self.pending[rid] = req
        self._per_agent[agent] = self._per_agent.get(agent, 0) + 1
        req.timer = loop.call_later(self.spec.timeout, self._timed_out, rid)
        if owner is not None:
            owner.add_done_callback(functools.partial(self._owner_done, rid))
        self.audit.record(
            "approval_requested",
            rid,
            Who(via="supervisor"),
            reason=why,
            args=info.args,
            approval=rid,
            agent=agent,
            tool=tool,
            task=task,
        )
        self.events.emit(
            "approval_requested",
            approval=rid,
            agent=agent,
            task=task,
            target=f"tool:{tool}" if tool else agent,
            summary=summarize(info.args),
            reason=why,
        )
        self.log.warning(
            "approval_requested",
            id=rid,
            agent=agent,
            tool=tool,
            task=task,
            why=why,
            args=summarize(info.args),
            hint=f"agentrt ctl approve {rid}  |  agentrt ctl deny {rid}",
        )
        if self.approver is not None:
            req.asking = loop.create_task(self._ask(req))
        return fut

    async def _ask(self, req: _Request) -> None:
        assert self.approver is not None
        snap = self._snapshot(req, time.monotonic())
        try:
            answer = await self.approver(snap)
        except asyncio.CancelledError:
            return
        except Exception as exc:  # the application's callback: logged, left to a person
            self.log.error("approver_failed", id=req.info.id, error=f"{type(exc).__name__}: {exc}")
            return
        if answer is None or req.info.id not in self.pending:
            return
        if isinstance(answer, bool):
            answer = Decision(approved=answer, by=Who(via="approver"))
        elif not isinstance(answer, Decision):
            self.log.error("approver_failed", id=req.info.id, error=f"returned {answer!r}")
            return
        with contextlib.suppress(ControlError):
            self.decide(
                req.info.id,
                answer.approved,
                reason=answer.reason,
                args=answer.args,
                by=answer.by if answer.by is not API else Who(via="approver"),
            )

    def decide(
        self,
        rid: str,
        approved: bool,
        *,
        reason: str = "",
        args: Mapping[str, Any] | None = None,
        by: Who = API,
    ) -> PendingApproval:
        """Answer request ``rid``; :class:`ControlError` when none is pending."""
        req = self.pending.get(rid)
        if req is None:
            known = ", ".join(list(self.pending)[:20]) or "none"
            raise ControlError(f"no approval {rid!r} is pending (pending: {known})")
        new_args: dict[str, Any] | None = None
        if args is not None:
            if not approved:
                raise ControlError("arguments can be edited only when approving")
            if not isinstance(args, Mapping) or not all(isinstance(k, str) for k in args):
                raise ControlError("edited arguments must be a table of named values")
            try:
                msgspec.msgpack.encode(dict(args))
            except (TypeError, ValueError, OverflowError, RecursionError) as exc:
                raise ControlError(f"edited arguments cannot be sent: {exc}") from None
            new_args = dict(args)
        info = self._finish(rid)
        action = "approved" if approved else "denied"
        self.audit.record(
            action,
            rid,
            by,
            reason=reason or None,
            args=new_args if new_args is not None else info.args,
            approval=rid,
            agent=info.agent,
            tool=info.tool,
            task=info.task,
        )
        self.events.emit(
            "approval_decided",
            approval=rid,
            agent=info.agent,
            task=info.task,
            status=action,
            reason=reason or None,
        )
        if not req.future.done():
            req.future.set_result(
                Decision(approved=approved, reason=reason, args=new_args, by=by, approval=rid)
            )
        return info

    def _finish(self, rid: str) -> PendingApproval:
        req = self.pending.pop(rid)
        agent = req.info.agent
        n = self._per_agent.get(agent, 1) - 1
        if n > 0:
            self._per_agent[agent] = n
        else:
            self._per_agent.pop(agent, None)
        if req.timer is not None:
            req.timer.cancel()
        if req.asking is not None and not req.asking.done():
            req.asking.cancel()
        return req.info

    def _timed_out(self, rid: str) -> None:
        req = self.pending.get(rid)
        if req is None:
            return
        req.timer = None
        info = self._finish(rid)
        why = f"no answer within the approval timeout ({self.spec.timeout:g}s)"
        self.audit.record(
            "approval_timeout",
            rid,
            Who(via="timeout"),
            reason=why,
            approval=rid,
            agent=info.agent,
            tool=info.tool,
            task=info.task,
        )
        self.events.emit(
            "approval_decided", approval=rid, agent=info.agent, task=info.task, status="timeout"
        )
        if not req.future.done():
            req.future.set_result(
                Decision(approved=False, reason=why, by=Who(via="timeout"), approval=rid)
            )

    def _owner_done(self, rid: str, _owner: asyncio.Future[Any]) -> None:
        if rid not in self.pending:
            return
        req = self.pending[rid]
        info = self._finish(rid)
        self.audit.record(
            "approval_withdrawn",
            rid,
            Who(via="supervisor"),
            reason="the call it was for ended",
            approval=rid,
            agent=info.agent,
            tool=info.tool,
            task=info.task,
        )
        self.events.emit(
            "approval_decided", approval=rid, agent=info.agent, task=info.task, status="withdrawn"
        )
        if not req.future.done():
            req.future.cancel()

    def withdraw_all(self, why: str) -> None:
        """The supervisor is closing: nobody will answer."""
        for rid in list(self.pending):
            req = self.pending[rid]
            self._finish(rid)
            if not req.future.done():
                req.future.set_result(
                    Decision(approved=False, reason=why, by=Who(via="supervisor"), approval=rid)
                )

    # --- views -----------------------------------------------------------------

    def _snapshot(self, req: _Request, now: float) -> PendingApproval:
        return msgspec.structs.replace(req.info, waited=round(now - req.since, 3))

    def snapshot(self) -> list[PendingApproval]:
        """The requests pending now, oldest first."""
        now = time.monotonic()
        return [self._snapshot(r, now) for r in self.pending.values()]

    def for_task(self, task: str) -> bool:
        return any(r.info.task == task for r in self.pending.values())


def denied(decision: Decision, agent: str, what: str) -> ApprovalDenied:
    """The typed error a denied call fails with: ``what`` (``"call to 'x'"``)
    names the call."""
    why = f": {decision.reason}" if decision.reason else ""
    return ApprovalDenied(
        f"{what} was not approved (by {decision.by}){why}",
        approval=decision.approval,
        reason=decision.reason,
        by=str(decision.by),
        agent=agent,
    )
