"""Running a model turn's tool calls: all at once, answered in the model API's shape.

``await ctx.run_tool_calls(calls)`` (or :func:`run_tool_calls`) looks each
call up in the toolbox, checks its arguments against the tool's schema, runs
every valid call concurrently through ``ctx.tool`` / ``ctx.spawn`` (so
isolated tools run in their sandboxes, each with its timeout, and approvals
apply), and returns one answer per call, in the order of the calls.

Whatever goes wrong with one call becomes that call's error answer, which the
model can read: ``{"error": {"type": "CallTimeout", "message": "tool 'fetch'
timed out after 2s"}}`` (an Anthropic ``tool_result`` also has ``is_error``).
That covers a tool the model made up, arguments that are not JSON or do not fit
the schema, a crash, a timeout, a limit, a denied approval and a spent budget.
With ``raise_errors=True`` the first failure (in call order) is raised instead,
once every call has ended.  Cancelling the caller cancels the calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from agentrt.errors import RemoteError, UnknownTool
from agentrt.llm.schema import ArgumentsError, Toolbox, ToolDef, tool_def
from agentrt.llm.shapes import ToolRequest, answer, encode_content, error_content, parse_calls

if TYPE_CHECKING:
    from agentrt.context import Context, SyncContext

__all__ = ["Outcome", "error_of", "prepare", "run_tool_calls", "run_tool_calls_sync", "toolbox"]

#: the most calls one turn may hold
MAX_CALLS = 1_000


def toolbox(ctx: Context | SyncContext, agents: dict[str, Any] | None = None) -> Toolbox:
    """Every tool ``ctx``'s agent may call, with its schema (built once per replica),
    plus ``agents``: subagents offered as tools (name -> agent function or ToolDef)."""
    io = ctx._io
    if io.toolbox is None:
        box = Toolbox()
        for name in io.tool_names():
            try:
                fn = io.tool_function(name)
            except Exception as exc:  # its module does not import here
                raise ValueError(
                    f"tool {name!r}: cannot read its signature: {type(exc).__name__}: {exc}"
                ) from exc
            box.add(tool_def(fn, name=name))
        io.toolbox = box
    base: Toolbox = io.toolbox
    if not agents:
        return base
    box = Toolbox(base.values())
    for name, a in agents.items():
        box.add(a if isinstance(a, ToolDef) else tool_def(a, name=name, kind="agent"))
    return box


def error_of(exc: BaseException) -> tuple[str, str]:
    """The type and message a model is told for ``exc`` (a remote error's own type)."""
    if isinstance(exc, RemoteError):
        return exc.type_name, exc.remote_message
    if isinstance(exc, asyncio.CancelledError):
        return "CallCancelled", "the call was cancelled"
    return type(exc).__name__, str(exc)


class Outcome:
    """One call of a turn: its request, then its result or error."""

    __slots__ = ("args", "error", "request", "result", "tool")

    def __init__(self, request: ToolRequest) -> None:
        self.request = request
        self.tool: ToolDef | None = None
        self.args: dict[str, Any] = {}
        self.result: Any = None
        self.error: BaseException | None = None

    def answer(self, max_chars: int | None = None) -> dict[str, Any]:
        if self.error is not None:
            kind, message = error_of(self.error)
            return answer(self.request, error_content(kind, message), is_error=True)
        return answer(self.request, encode_content(self.result, max_chars))


def prepare(calls: Any, box: Toolbox) -> list[Outcome]:
    """The turn's calls, each looked up and its arguments checked (errors kept, not raised)."""
    requests = parse_calls(calls)
    if len(requests) > MAX_CALLS:
        raise ValueError(f"{len(requests)} tool calls in one turn: at most {MAX_CALLS}")
    out: list[Outcome] = []
    for req in requests:
        o = Outcome(req)
        out.append(o)
        d = box.get(req.name)
        if d is None:
            o.error = UnknownTool(req.name, list(box))
            continue
        try:
            o.args = d.validate(req.arguments)
        except ArgumentsError as exc:
            o.error = exc
            continue
        o.tool = d
    return out


def _finish(
    outcomes: list[Outcome], raise_errors: bool, max_chars: int | None
) -> list[dict[str, Any]]:
    if raise_errors:
        for o in outcomes:
            if o.error is not None:
                raise o.error
    return [o.answer(max_chars) for o in outcomes]


async def run_tool_calls(
    ctx: Context,
    calls: Any,
    *,
    tools: Toolbox | None = None,
    raise_errors: bool = False,
    max_answer_chars: int | None = None,
    on_call: Callable[[Outcome], Awaitable[None] | None] | None = None,
) -> list[dict[str, Any]]:
    """Run a model turn's tool calls concurrently; their answers, in the calls' order.

    ``calls``: OpenAI ``tool_calls``, Responses ``function_call`` items or
    Anthropic ``tool_use`` blocks (or the message/turn holding them).
    ``tools`` limits what the model may call (default: every tool the agent
    may call, :func:`toolbox`).  ``max_answer_chars`` cuts long answers.
    """
    box = tools if tools is not None else toolbox(ctx)
    outcomes = prepare(calls, box)

    async def one(o: Outcome) -> None:
        d = o.tool
        assert d is not None
        try:
            if d.runner is not None:
                o.result = await d.runner(ctx, o.args, box)
            elif d.kind == "agent":
                if d.method:
                    o.result = await ctx.spawn_method(d.name, d.method, o.args)
                else:
                    o.result = await ctx.spawn(d.name, **o.args)
            else:
                o.result = await ctx.tool(d.name, **o.args)
        except Exception as exc:  # every failure is the model's to read
            o.error = exc
        if on_call is not None:
            done = on_call(o)
            if done is not None:
                await done

    await asyncio.gather(*(one(o) for o in outcomes if o.error is None))
    return _finish(outcomes, raise_errors, max_answer_chars)


def run_tool_calls_sync(
    ctx: SyncContext,
    calls: Any,
    *,
    tools: Toolbox | None = None,
    raise_errors: bool = False,
    max_answer_chars: int | None = None,
) -> list[dict[str, Any]]:
    """:func:`run_tool_calls` for a sync agent: every isolated tool and subagent
    call goes out before any answer is awaited; in-process tools run one by one."""
    from agentrt.context import Op

    outcomes = prepare(calls, tools if tools is not None else toolbox(ctx))
    todo = [o for o in outcomes if o.error is None]
    ops: list[Op] = []
    for o in list(todo):
        d = o.tool
        assert d is not None
        if d.runner is not None:
            o.error = TypeError(f"{d.name!r} runs in async agents only")
            todo.remove(o)
            continue
        ops.append(Op("spawn" if d.kind == "agent" else "tool", d.name, o.args, d.method))
    results = ctx.gather(*ops, return_exceptions=True) if ops else []
    for o, r in zip(todo, results, strict=True):
        if isinstance(r, BaseException):
            o.error = r
        else:
            o.result = r
    return _finish(outcomes, raise_errors, max_answer_chars)
