"""The task of benchmarks/bench_llm.py run by other agent frameworks, where installed.

- ``openai-agents``: the OpenAI Agents SDK, an ``Agent`` with
  ``@function_tool`` tools and ``OpenAIChatCompletionsModel`` over an
  ``AsyncOpenAI`` client pointed at the scripted server, ``Runner.run``
  (tracing off: nothing leaves the machine).
- ``langgraph``: LangGraph's prebuilt ``create_react_agent`` (a model node
  and a ``ToolNode``) with langchain-openai's ``ChatOpenAI(base_url=...)``.

Both run in the benchmark's own process and event loop, their tools
in-process and async: the same three functions as agentrt's
(``llm_agents.py``), each answer JSON text.  Both run a turn's tool calls
concurrently.  ``pip install 'agentrt[bench-llm]'`` installs them; one that
is missing or fails to import is skipped with the reason.
"""

from __future__ import annotations

import importlib.metadata
import json
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import llm_agents
from llm_agents import SYSTEM

#: tool functions that ran, all peers together (bench_llm.py reads the difference)
RUNS = {"n": 0}


async def lookup(item: str, ms: float = 0.0) -> str:
    """Look an item up in the catalogue.

    Args:
        item: the item's name
        ms: how long the lookup takes, in milliseconds
    """
    RUNS["n"] += 1
    return json.dumps(await llm_agents.lookup(item, ms))


async def compare(items: list[str], values: list[float], ms: float = 0.0) -> str:
    """Compare items by their looked-up values; the best one first.

    Args:
        items: the items' names
        values: each item's value, in the same order
        ms: how long the comparison takes, in milliseconds
    """
    RUNS["n"] += 1
    return json.dumps(await llm_agents.compare(items, values, ms))


async def summarize(best: str, value: float, ms: float = 0.0) -> str:
    """Write the one-sentence summary of a comparison.

    Args:
        best: the best item
        value: its value
        ms: how long writing takes, in milliseconds
    """
    RUNS["n"] += 1
    return json.dumps(await llm_agents.summarize(best, value, ms))


FUNCTIONS = (lookup, compare, summarize)

#: run(base_url, prompt, max_turns) -> the final answer's text
Runner = Callable[[str, str, int], Awaitable[str]]


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _openai_agents() -> tuple[str, Runner]:
    from agents import (
        Agent,
        OpenAIChatCompletionsModel,
        function_tool,
        set_tracing_disabled,
    )
    from agents import Runner as SDKRunner
    from openai import AsyncOpenAI

    set_tracing_disabled(True)
    tools: list[Any] = [function_tool(f) for f in FUNCTIONS]
    agents_by_url: dict[str, Any] = {}

    def agent(base_url: str) -> Any:
        # one client per server, kept: a long-lived agent keeps its connections
        if base_url not in agents_by_url:
            client = AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
            model = OpenAIChatCompletionsModel(model="model", openai_client=client)
            agents_by_url[base_url] = Agent(
                name="solver", instructions=SYSTEM, tools=tools, model=model
            )
        return agents_by_url[base_url]

    async def run(base_url: str, prompt: str, max_turns: int) -> str:
        result = await SDKRunner.run(agent(base_url), prompt, max_turns=max_turns)
        return str(result.final_output)

    return (
        f"openai-agents {_version('openai-agents')}, openai {_version('openai')}: Agent, "
        "@function_tool tools, OpenAIChatCompletionsModel, Runner.run; tools in-process (async)",
        run,
    )


def _langgraph() -> tuple[str, Runner]:
    from langchain_core.tools import StructuredTool
    from langchain_openai import ChatOpenAI
    from pydantic import SecretStr

    with warnings.catch_warnings():
        # langgraph 1.x points at langchain.agents.create_agent; this one stays
        warnings.simplefilter("ignore")
        from langgraph.prebuilt import create_react_agent

    tools = [StructuredTool.from_function(coroutine=f, name=f.__name__) for f in FUNCTIONS]
    graphs: dict[str, Any] = {}

    def graph(base_url: str) -> Any:
        if base_url not in graphs:
            model = ChatOpenAI(
                model="model", base_url=base_url, api_key=SecretStr("unused"), max_retries=0
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                graphs[base_url] = create_react_agent(model, tools)
        return graphs[base_url]

    async def run(base_url: str, prompt: str, max_turns: int) -> str:
        # a model call and a tool call are a step each; the limit is generous
        config = {"recursion_limit": 4 * max_turns + 4}
        # the system prompt as the first message: the same on every langgraph version
        messages = [("system", SYSTEM), ("user", prompt)]
        out = await graph(base_url).ainvoke({"messages": messages}, config=config)
        content = out["messages"][-1].content
        return content if isinstance(content, str) else json.dumps(content)

    versions = ", ".join(
        f"{d} {_version(d)}" for d in ("langgraph", "langchain-openai", "langchain-core")
    )
    return f"{versions}: create_react_agent, ChatOpenAI; tools in-process (async)", run


PEERS: dict[str, tuple[tuple[str, ...], Callable[[], tuple[str, Runner]]]] = {
    "openai-agents": (("openai-agents", "openai"), _openai_agents),
    "langgraph": (("langgraph", "langchain-openai"), _langgraph),
}


def load(name: str) -> tuple[str, Runner | None]:
    """``(versions and how it is used, run)`` of a peer, or ``(why not, None)``."""
    dists, make = PEERS[name]
    missing = [d for d in dists if _version(d) is None]
    if missing:
        return f"{', '.join(missing)} not installed (pip install 'agentrt[bench-llm]')", None
    try:
        return make()
    except Exception as exc:  # an import that breaks: skip it, saying why
        return f"failed to load: {type(exc).__name__}: {exc}"[:200], None
