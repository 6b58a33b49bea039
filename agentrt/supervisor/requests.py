"""Agents' ``ctx`` requests: subagents, isolated tools, messages, submissions, counts.

An agent asks through its pipe (``Spawn``, ``ToolCall``, ``Send``,
``Submit``, ``Count``), naming the call it is serving (``parent``); the
answer goes back as ``Reply`` or ``ReplyError``.  Nothing here raises into
the loop: a refused request is a typed error replied to the agent.

Each request is charged to the budget of the call it serves, and a child
call never outlives that call (its deadline, its cancellation).  Isolated
tools run in pools of their own (agents named ``tool:<name>``), started on
their first call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from agentrt.config import AgentSpec, SupervisorSpec, ToolSpec
from agentrt.errors import (
    AgentrtError,
    BudgetExceeded,
    CallCancelled,
    CallError,
    CallTimeout,
    ConfigError,
    MailboxFull,
    UnknownAgent,
    UnknownTool,
)
from agentrt.process import AgentProcess
from agentrt.protocol import (
    Approve,
    Count,
    Receive,
    Reply,
    ReplyError,
    Send,
    Spawn,
    Submit,
    ToolCall,
)
from agentrt.supervisor.ledger import UNLIMITED, Budget
from agentrt.supervisor.ledger import Call as LedgerCall
from agentrt.supervisor.oversight import Approvals, Decision, denied
from agentrt.supervisor.pool import Pool, Request, Slot

__all__ = ["Mailbox", "Requests", "new_budget"]

Call = LedgerCall[Slot]
#: ``submit(agent, args, method, timeout, parent, budget)``: a call queued to an agent
Submitter = Callable[[str, dict[str, Any], str, float | None, Call | None, Budget], Call]


def new_budget(spec: SupervisorSpec) -> Budget:
    """A fresh budget for a run (or a call made outside any run)."""
    if spec.max_tasks is None and spec.max_tool_calls is None:
        return UNLIMITED  # nothing to count against: one shared instance
    return Budget(spec.max_tasks, spec.max_tool_calls)


class Requests:
    """Routes the ``ctx`` requests of every replica; owns the tool table."""

    def __init__(
        self,
        spec: SupervisorSpec,
        pool: Pool,
        submit: Submitter,
        start: Callable[[AgentSpec], Awaitable[None]],
        approvals: Approvals,
    ) -> None:
        self.spec = spec
        self.pool = pool
        self._submit = submit
        self._start = start
        self.approvals = approvals
        self.tools: dict[str, ToolSpec] = {}
        self._tool_starts: dict[str, asyncio.Future[None]] = {}
        self._mailboxes: dict[str, Mailbox] = {}
        pool.on_request = self.handle
        pool.tools = self.tool_map
        pool.tool_timeouts = self.tool_timeouts
        pool.isolated_entries = self.isolated_entries
        pool.tool_approvals = functools.partial(approvals.tool_rules, self.tools)

    def add_tool(self, spec: ToolSpec) -> None:
        if not spec.name:
            raise ConfigError("tools", "a tool needs a name")
        self.tools[spec.name] = spec

    def tool_map(self) -> dict[str, str]:
        """What a replica's Boot says of each tool: its entry, or ``""`` if isolated."""
        return {n: ("" if t.isolated else t.entry) for n, t in self.tools.items()}

    def isolated_entries(self) -> dict[str, str]:
        """Each isolated tool's entry (an agent reads its signature for a model's schema)."""
        return {n: t.entry for n, t in self.tools.items() if t.isolated}

    def tool_timeouts(self) -> dict[str, float]:
        """Each in-process tool's own timeout (an isolated tool's is its pool's)."""
        return {
            n: t.timeout for n, t in self.tools.items() if t.timeout is not None and not t.isolated
        }

    def handle(self, slot: Slot, proc: AgentProcess, msg: Request) -> None:
        """An agent asked for a subagent, an isolated tool, a send, a submit or a count.

        Never raises: a refused request is a typed error replied to the agent.
        """
        parent = slot.inflight.get(msg.parent) if msg.parent else None
        try:
            # Every request is made for the call the replica serves, and is
            # charged to it (budget, depth, deadline): a replica serving
            # nothing, or naming a call it does not hold, gets nothing.
            if parent is None:
                raise CallError(
                    f"request for call {msg.parent}, which this replica is not serving: "
                    "requests are made from inside a call",
                    agent=slot.agent.name,
                )
            if parent.future.done():
                raise CallCancelled(
                    f"call {msg.parent} is over: no new work may start for it",
                    agent=slot.agent.name,
                )
            budget = parent.budget
            match msg:
                case Spawn(agent=agent, args=args, method=method, timeout=timeout):
                    self._check_depth(parent, agent)
                    budget.charge("tasks", agent)
                    child = self._submit(agent, args, method, timeout or None, parent, budget)
                    child.future.add_done_callback(functools.partial(_relay, proc, msg.req))
                case ToolCall(tool=name, args=args, timeout=timeout):
                    spec = self.tools.get(name)
                    if spec is None or not spec.isolated:
                        known = [n for n, t in self.tools.items() if t.isolated]
                        raise UnknownTool(name, known)
                    budget.charge("tool_calls", slot.agent.name)
                    self.pool.spawn(self._run_tool(proc, msg.req, spec, args, timeout, parent))
                case Send(to=to, body=body):
                    target = self.pool.agents.get(to)
                    if target is None:
                        raise UnknownAgent(
                            f"no agent named {to!r} (running: {', '.join(self.pool.agents)})"
                        )
                    if target.failed is not None:
                        raise target.failed
                    self._mailbox(to).put(slot.agent.name, body)
                    proc.send(Reply(msg.req, None))
                case Receive(timeout=timeout):
                    self._mailbox(slot.agent.name).take(proc, msg.req, parent, timeout)
                case Submit(task=task):
                    run = parent.run
                    if run is None:
                        raise CallError(
                            "ctx.submit() needs a task of a graph run", agent=slot.agent.name
                        )
                    budget.charge("tasks", slot.agent.name)
                    proc.send(Reply(msg.req, run.add_submitted(task)))
                case Count():
                    budget.charge("tool_calls", slot.agent.name)
                    proc.send(Reply(msg.req, None))
                case Approve(tool=tool, args=args, why=why):
                    agent = slot.agent.name
                    fut = self.approvals.request(
                        "tool",
                        agent,
                        args,
                        why or f"tool {tool!r} needs approval",
                        tool=tool,
                        task=parent.task,
                        owner=parent.future,
                    )
                    fut.add_done_callback(
                        functools.partial(_answer_approval, proc, msg.req, args, agent, tool)
                    )
        except AgentrtError as exc:
            proc.send(ReplyError(msg.req, exc.to_dict()))
        except (ValueError, TypeError, LookupError) as exc:
            proc.send(ReplyError(msg.req, {"type": "CallError", "message": str(exc)}))

    def _mailbox(self, agent: str) -> Mailbox:
        box = self._mailboxes.get(agent)
        if box is None:
            box = self._mailboxes[agent] = Mailbox(
                agent, self.spec.mailbox, self.spec.mailbox_bytes
            )
        return box

    def _check_depth(self, parent: Call | None, agent: str) -> None:
        limit = self.spec.max_depth
        depth = (parent.depth if parent else 0) + 1
        if limit is not None and depth > limit:
            raise BudgetExceeded(
                f"subagent depth {depth} exceeds max_depth={limit}",
                budget="max_depth",
                limit=limit,
                agent=agent,
            )

    async def _run_tool(
        self,
        proc: AgentProcess,
        req: int,
        spec: ToolSpec,
        args: dict[str, Any],
        timeout: float,
        parent: Call | None,
    ) -> None:
        agent = f"tool:{spec.name}"
        try:
            if agent not in self.pool.agents:
                starting = self._tool_starts.get(spec.name)
                if starting is None:
                    starting = self._tool_starts[spec.name] = asyncio.ensure_future(
                        self._start(
                            AgentSpec(
                                name=agent,
                                entry=spec.entry,
                                replicas=spec.replicas,
                                concurrency=spec.concurrency,
                                timeout=spec.timeout,
                                limits=spec.limits,
                                sandbox=spec.sandbox,
                                approval=spec.approval,
                            )
                        )
                    )
                await asyncio.shield(starting)
            if parent is not None and parent.future.done():
                raise CallCancelled("the calling task ended before the tool started")
            budget = parent.budget if parent is not None else UNLIMITED
            call = self._submit(agent, args, "", timeout or None, parent, budget)
            await asyncio.wait({call.future})
            _relay(proc, req, call.future)
        except AgentrtError as exc:
            proc.send(ReplyError(req, exc.to_dict()))


def _answer_approval(
    proc: AgentProcess,
    req: int,
    args: dict[str, Any],
    agent: str,
    tool: str,
    fut: asyncio.Future[Decision],
) -> None:
    """An in-process tool call's approval: the arguments to call it with, or a denial."""
    if fut.cancelled():  # withdrawn: the call it was for has ended
        proc.send(ReplyError(req, {"type": "CallCancelled", "message": "the call ended"}))
        return
    decision = fut.result()
    if decision.approved:
        try:
            proc.send(Reply(req, decision.args if decision.args is not None else args))
        except (TypeError, ValueError, OverflowError) as err:  # edited past max_frame
            proc.send(ReplyError(req, {"type": "CallError", "message": str(err)}))
    else:
        proc.send(ReplyError(req, denied(decision, agent, f"tool call {tool!r}").to_dict()))


def _relay(proc: AgentProcess, req: int, fut: asyncio.Future[Any]) -> None:
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
        proc.send(ReplyError(req, {"type": "CallError", "message": f"{type(exc).__name__}: {exc}"}))


@dataclass(eq=False, slots=True)
class _Taker:
    """A replica waiting in ``ctx.receive`` for the call ``call``."""

    proc: AgentProcess
    req: int
    call: Call
    timer: asyncio.TimerHandle | None = None

    def gone(self) -> bool:
        return self.call.future.done() or self.proc.dead.done()


class Mailbox:
    """One agent's messages, bounded in count and bytes; its replicas take from it.

    A message waits here until one of the agent's replicas calls
    ``ctx.receive`` (so sending to an agent whose replicas are all busy, or
    restarting, is fine); a full mailbox refuses with :class:`MailboxFull`.
    Bodies stay encoded (``Raw``): the supervisor counts their bytes and
    never decodes them.
    """

    def __init__(self, agent: str, limit: int, limit_bytes: int) -> None:
        self.agent = agent
        self.limit = limit
        self.limit_bytes = limit_bytes
        self.messages: deque[tuple[str, msgspec.Raw]] = deque()
        self.size = 0
        self.takers: deque[_Taker] = deque()

    def put(self, sender: str, body: msgspec.Raw) -> None:
        while self.takers:
            taker = self.takers.popleft()
            if taker.timer is not None:
                taker.timer.cancel()
            if not taker.gone():
                taker.proc.send(Reply(taker.req, [sender, body]))
                return
        n = len(body)
        if len(self.messages) >= self.limit:
            raise MailboxFull(
                f"the mailbox of {self.agent!r} holds {self.limit} messages (mailbox)",
                limit="mailbox",
                value=self.limit,
                agent=self.agent,
            )
        if self.size + n > self.limit_bytes:
            raise MailboxFull(
                f"the mailbox of {self.agent!r} would hold more than {self.limit_bytes} bytes "
                "(mailbox_bytes)",
                limit="mailbox_bytes",
                value=self.limit_bytes,
                agent=self.agent,
            )
        self.messages.append((sender, body))
        self.size += n

    def take(self, proc: AgentProcess, req: int, call: Call, timeout: float) -> None:
        """Reply to request ``req`` with the next message, now or when one comes;
        :class:`CallTimeout` after ``timeout`` seconds (0: the call's deadline)."""
        if self.messages:
            sender, body = self.messages.popleft()
            self.size -= len(body)
            proc.send(Reply(req, [sender, body]))
            return
        taker = _Taker(proc, req, call)
        self.takers = deque(t for t in self.takers if not t.gone())  # the dead wait no more
        self.takers.append(taker)
        if timeout > 0:
            taker.timer = asyncio.get_running_loop().call_later(
                timeout, self._timed_out, taker, timeout
            )

    def _timed_out(self, taker: _Taker, timeout: float) -> None:
        taker.timer = None
        with contextlib.suppress(ValueError):
            self.takers.remove(taker)
        err = CallTimeout(f"no message received within {timeout:g}s", timeout=timeout)
        taker.proc.send(ReplyError(taker.req, err.to_dict()))
