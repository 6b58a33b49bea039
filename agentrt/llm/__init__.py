"""Model-driven agents: tool schemas, a model turn's parallel tool calls, plans and the loop.

- :func:`tool_def` / :class:`Toolbox`: JSON Schemas of tools and subagents
  from their signatures, in the OpenAI chat-completions, OpenAI Responses
  and Anthropic Messages shapes.
- ``ctx.run_tool_calls(calls)`` (:func:`run_tool_calls`): a turn's tool
  calls, all at once, answered in the calls' own shape, errors included.
- ``ctx.run_plan(plan)`` (:func:`run_plan`): a planned DAG of tool calls
  whose arguments reference earlier steps' results (``${step.field}``).
- :func:`run_loop`: model -> parallel tool calls -> answers -> model, with
  budgets, the call's deadline and trace spans.
- :class:`OpenAIChat`, :class:`AnthropicMessages` (``pip install
  'agentrt[llm]'``) and :class:`ScriptedModel`, a deterministic local
  stand-in for tests and offline demos.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentrt.llm.calls import run_tool_calls, run_tool_calls_sync, toolbox
from agentrt.llm.loop import LoopResult, run_loop
from agentrt.llm.plan import PlanError, PlanResult, Step, plan_tool, run_plan
from agentrt.llm.schema import ArgumentsError, Toolbox, ToolDef, tool_def
from agentrt.llm.shapes import Shape, ToolRequest, parse_calls

if TYPE_CHECKING:
    from agentrt.llm.clients import (
        AnthropicMessages,
        ModelClient,
        ModelTurn,
        OpenAIChat,
        Usage,
        client_from_config,
    )
    from agentrt.llm.errors import (
        ModelError,
        ModelHTTPError,
        ModelRateLimited,
        ModelResponseError,
        ModelTimeout,
    )
    from agentrt.llm.scripted import Reply, ScriptedCall, ScriptedModel

__all__ = [
    "AnthropicMessages",
    "ArgumentsError",
    "LoopResult",
    "ModelClient",
    "ModelError",
    "ModelHTTPError",
    "ModelRateLimited",
    "ModelResponseError",
    "ModelTimeout",
    "ModelTurn",
    "OpenAIChat",
    "PlanError",
    "PlanResult",
    "Reply",
    "ScriptedCall",
    "ScriptedModel",
    "Shape",
    "Step",
    "ToolDef",
    "ToolRequest",
    "Toolbox",
    "Usage",
    "client_from_config",
    "parse_calls",
    "plan_tool",
    "run_loop",
    "run_plan",
    "run_tool_calls",
    "run_tool_calls_sync",
    "tool_def",
    "toolbox",
]

#: names served lazily: the clients need httpx (the ``llm`` extra)
_LAZY = {
    "AnthropicMessages": "clients",
    "ModelClient": "clients",
    "ModelTurn": "clients",
    "OpenAIChat": "clients",
    "Usage": "clients",
    "client_from_config": "clients",
    "ModelError": "errors",
    "ModelHTTPError": "errors",
    "ModelRateLimited": "errors",
    "ModelResponseError": "errors",
    "ModelTimeout": "errors",
    "Reply": "scripted",
    "ScriptedCall": "scripted",
    "ScriptedModel": "scripted",
}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'agentrt.llm' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"agentrt.llm.{mod}"), name)
    globals()[name] = value
    return value
