"""The model loop: model -> a turn's tool calls, all at once -> answers -> model, until done.

:func:`run_loop` drives any :class:`~agentrt.llm.clients.ModelClient` (an
OpenAI-compatible server, Anthropic, the scripted model) from inside an
agent.  Each turn's tool calls run concurrently through
:func:`~agentrt.llm.calls.run_tool_calls` (isolated tools in their
sandboxes, timeouts, approvals; failures become answers the model reads).
The loop ends with the model's final answer, or when a budget is spent:
``max_turns`` model calls, ``max_tool_calls`` tool calls, ``max_tokens``
tokens (input + output, as the server counts them), or the agent call's
deadline (less a reserve, so that the loop can still return what it has).
Every model call is bounded by what is left of the deadline;
cancelling the agent's call cancels the model call and the tool calls in
flight.  With ``--trace`` each model call is a span (``model:<name>``) beside
the tool calls.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from agentrt.llm.calls import error_of, run_tool_calls, toolbox
from agentrt.llm.schema import Toolbox
from agentrt.llm.shapes import ToolRequest, answer, error_content, parse_calls
from agentrt.protocol import ToolSpan

if TYPE_CHECKING:
    from agentrt.context import Context
    from agentrt.llm.clients import ModelClient

__all__ = ["LoopResult", "Stop", "run_loop"]

Stop = Literal["final", "max_turns", "max_tool_calls", "max_tokens", "deadline"]


class LoopResult(msgspec.Struct, kw_only=True):
    """How a loop ended: the final ``text`` (``""`` if a budget ended it first),
    why it stopped, the whole conversation and what it spent."""

    text: str
    stop: Stop
    messages: list[dict[str, Any]]
    turns: int = 0
    tool_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    #: the tools each turn called, by turn (``[]``: the turn that answered); a
    #: plan's steps count in ``tool_calls`` (and against ``max_tool_calls``)
    calls: list[list[str]] = []

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def _cost(req: ToolRequest, box: Toolbox) -> int:
    """Tool calls ``req`` makes: one, or a plan's steps."""
    d = box.get(req.name)
    if d is None or d.kind != "plan":
        return 1
    args = req.arguments
    try:
        if isinstance(args, str | bytes):
            args = msgspec.json.decode(args)
    except msgspec.DecodeError:
        return 1
    steps = args.get("steps") if isinstance(args, dict) else None
    return max(1, len(steps)) if isinstance(steps, list) else 1


def _span(ctx: Context, model: str, start: float, status: str, error: str) -> None:
    io = ctx._io
    if io.trace_tools:
        io.write(ToolSpan(ctx.call_id, model, start, time.time(), status, "", error, "model"))


async def run_loop(
    ctx: Context,
    model: ModelClient,
    messages: str | list[dict[str, Any]],
    *,
    tools: Toolbox | None = None,
    system: str | None = None,
    max_turns: int = 20,
    max_tool_calls: int | None = None,
    max_tokens: int | None = None,
    max_answer_chars: int | None = None,
    raise_errors: bool = False,
    deadline_reserve: float = 0.5,
) -> LoopResult:
    """Run ``model`` with ``tools`` until it answers without calling any, or a budget ends it.

    ``messages``: the conversation so far in the model's shape, or a user
    prompt.  ``tools``: what the model may call (default: every tool this
    agent may call; add subagents with ``ctx.toolbox(agents=...)`` and a
    planner with :func:`~agentrt.llm.plan_tool`).  The conversation is left
    complete: every tool call has its answer, also when a budget stopped the
    loop.  A model error (after the client's retries) is raised.

    The loop stops ``deadline_reserve`` seconds before the agent call's
    deadline (model calls are bounded to end by then), so that it returns
    what it has rather than be cut off.
    """
    if max_turns < 1:
        raise ValueError(f"max_turns must be at least 1, got {max_turns}")
    convo: list[dict[str, Any]] = (
        [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages)
    )
    box = tools if tools is not None else toolbox(ctx)
    offered = box.for_shape(model.shape) or None
    out = LoopResult(text="", stop="max_turns", messages=convo)

    def ended(stop: Stop) -> LoopResult:
        out.stop = stop
        return out

    while True:
        if out.turns >= max_turns:
            return ended("max_turns")
        if max_tokens is not None and out.tokens >= max_tokens:
            return ended("max_tokens")
        left = ctx.remaining()
        if left is not None:
            left -= deadline_reserve
            if left <= 0:
                return ended("deadline")
        start = time.time()
        try:
            turn = await model.complete(convo, tools=offered, system=system, timeout=left)
        except BaseException as exc:
            kind, message = error_of(exc)
            _span(ctx, model.model, start, "failed", f"{kind}: {message}"[:500])
            left = ctx.remaining()
            if isinstance(exc, TimeoutError) and left is not None and left <= deadline_reserve:
                return ended("deadline")
            raise
        _span(ctx, model.model, start, "ok", "")
        out.turns += 1
        out.input_tokens += turn.usage.input_tokens
        out.output_tokens += turn.usage.output_tokens
        convo.append(turn.message)
        requests = parse_calls(turn)
        out.calls.append([r.name for r in requests])
        if not requests:
            out.text = turn.text
            return ended("final")
        n = sum(_cost(r, box) for r in requests)
        if max_tool_calls is not None and out.tool_calls + n > max_tool_calls:
            refused = error_content(
                "BudgetExceeded",
                f"the loop's budget of {max_tool_calls} tool calls would be passed "
                f"({out.tool_calls} made, {n} asked): answer with what you have",
            )
            answers = [answer(r, refused, is_error=True) for r in requests]
            convo.extend(model.answers_messages(answers))
            return ended("max_tool_calls")
        answers = await run_tool_calls(
            ctx, turn, tools=box, raise_errors=raise_errors, max_answer_chars=max_answer_chars
        )
        out.tool_calls += n
        convo.extend(model.answers_messages(answers))
