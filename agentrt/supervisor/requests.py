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
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from agentrt.config import AgentSpec, SupervisorSpec, ToolSpec
from agentrt.errors import (
    AgentrtError,
    BudgetExceeded,
    CallCancelled,
    CallError,
    ConfigError,
    UnknownAgent,
)
from agentrt.process import AgentProcess
from agentrt.protocol import Count, Message, Reply, ReplyError, Send, Spawn, Submit, ToolCall
from agentrt.supervisor.ledger import UNLIMITED, Budget
from agentrt.supervisor.ledger import Call as LedgerCall
from agentrt.supervisor.pool import Pool, Request, Slot

__all__ = ["Requests", "new_budget"]

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
    ) -> None:
        self.spec = spec
        self.pool = pool
        self._submit = submit
        self._start = start
        self.tools: dict[str, ToolSpec] = {}
        self._tool_starts: dict[str, asyncio.Future[None]] = {}
        pool.on_request = self.handle
        pool.tools = self.tool_map

    def add_tool(self, spec: ToolSpec) -> None:
        if not spec.name:
            raise ConfigError("tools", "a tool needs a name")
        self.tools[spec.name] = spec

    def tool_map(self) -> dict[str, str]:
        """What a replica's Boot says of each tool: its entry, or ``""`` if isolated."""
        return {n: ("" if t.isolated else t.entry) for n, t in self.tools.items()}

    def handle(self, slot: Slot, proc: AgentProcess, msg: Request) -> None:
        """An agent asked for a subagent, an isolated tool, a send, a submit or a count.

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
            budget = parent.budget if parent is not None else new_budget(self.spec)
            match msg:
                case Spawn(agent=agent, args=args, method=method, timeout=timeout):
                    self._check_depth(parent, agent)
                    budget.charge("tasks", agent)
                    child = self._submit(agent, args, method, timeout or None, parent, budget)
                    child.future.add_done_callback(functools.partial(_relay, proc, msg.req))
                case ToolCall(tool=name, args=args, timeout=timeout):
                    spec = self.tools.get(name)
                    if spec is None or not spec.isolated:
                        raise UnknownAgent(f"no isolated tool named {name!r}")
                    budget.charge("tool_calls", slot.agent.name)
                    self.pool.spawn(self._run_tool(proc, msg.req, spec, args, timeout, parent))
                case Send(to=to, body=body):
                    target = self.pool.agents.get(to)
                    if target is None:
                        raise UnknownAgent(f"no agent named {to!r}")
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
                    run = parent.run if parent is not None else None
                    if parent is None or run is None:
                        raise CallError(
                            "ctx.submit() needs a task of a graph run", agent=slot.agent.name
                        )
                    budget.charge("tasks", slot.agent.name)
                    proc.send(Reply(msg.req, run.add_submitted(task)))
                case Count():
                    if parent is not None:
                        budget.charge("tool_calls", slot.agent.name)
                    proc.send(Reply(msg.req, None))
        except AgentrtError as exc:
            proc.send(ReplyError(msg.req, exc.to_dict()))
        except (ValueError, TypeError, LookupError) as exc:
            proc.send(ReplyError(msg.req, {"type": "CallError", "message": str(exc)}))

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
                                timeout=spec.timeout,
                                limits=spec.limits,
                                sandbox=spec.sandbox,
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
