"""Tools and the model-driven agent of benchmarks/bench_llm.py.

The tools stand in for I/O-bound calls of known latency: each sleeps ``ms``
milliseconds (``asyncio.sleep``) and returns a small deterministic result (with the
``pid`` of the process it ran in), so
what gets timed is the way the calls are scheduled and the runtime around
them.  bench_llm.py declares them twice: in-process (they run in the agent's
own event loop) and ``isolated = true`` under the names ``<tool>_isolated``
(each call in a sandboxed process of the tool's warm pool).  The peers
(``llm_peers.py``) wrap the same three functions.

``solve`` is the agent: it runs :func:`agentrt.llm.run_loop` against an
OpenAI-compatible server with the tools it is told to offer, plus
``run_plan`` when ``planner`` is set.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import zlib
from typing import Any

from agentrt import llm

#: the tools of the task, in-process names (isolated: ``name + ISOLATED``)
TOOLS = ("lookup", "compare", "summarize")
ISOLATED = "_isolated"
SYSTEM = "You compare items with the tools you are given, then answer in one sentence."


def value_of(item: str) -> float:
    """The figure a lookup finds for ``item`` (deterministic, 0-99.9)."""
    return zlib.crc32(item.encode()) % 1000 / 10


async def lookup(item: str, ms: float = 0.0) -> dict[str, Any]:
    """Look an item up in the catalogue.

    Args:
        item: the item's name
        ms: how long the lookup takes, in milliseconds
    """
    await asyncio.sleep(ms / 1000.0)
    return {"item": item, "value": value_of(item), "pid": os.getpid()}


async def compare(items: list[str], values: list[float], ms: float = 0.0) -> dict[str, Any]:
    """Compare items by their looked-up values; the best one first.

    Args:
        items: the items' names
        values: each item's value, in the same order
        ms: how long the comparison takes, in milliseconds
    """
    await asyncio.sleep(ms / 1000.0)
    if len(items) != len(values) or not items:
        raise ValueError(f"{len(items)} items and {len(values)} values")
    ranking = sorted(zip(items, values, strict=True), key=lambda p: (-p[1], p[0]))
    best, value = ranking[0]
    return {"best": best, "value": value, "ranking": [r[0] for r in ranking], "pid": os.getpid()}


async def summarize(best: str, value: float, ms: float = 0.0) -> dict[str, Any]:
    """Write the one-sentence summary of a comparison.

    Args:
        best: the best item
        value: its value
        ms: how long writing takes, in milliseconds
    """
    await asyncio.sleep(ms / 1000.0)
    return {"summary": summary_text(best, value), "pid": os.getpid()}


def summary_text(best: str, value: float) -> str:
    """The answer the task should end with (bench_llm.py checks every run against it)."""
    return f"{best} comes out on top with {value:g}."


#: one model client per (replica, server): a long-lived agent keeps its connections
_clients: dict[str, llm.OpenAIChat] = {}


def _client(base_url: str) -> llm.OpenAIChat:
    client = _clients.get(base_url)
    if client is None:
        client = _clients[base_url] = llm.OpenAIChat(
            "model", base_url=base_url, api_key="", max_retries=0
        )
    return client


async def solve(
    ctx: Any,
    base_url: str,
    prompt: str,
    tools: list[str],
    planner: bool = False,
    max_turns: int = 32,
) -> dict[str, Any]:
    """Run the model loop on ``prompt`` offering ``tools`` (and ``run_plan``);
    says what it did and how long the loop took (this process's clock)."""
    box = ctx.toolbox().only(tools)
    if planner:
        box.add(llm.plan_tool(box))
    t0 = time.perf_counter()
    res = await llm.run_loop(
        ctx, _client(base_url), prompt, tools=box, system=SYSTEM, max_turns=max_turns
    )
    loop_s = time.perf_counter() - t0
    results = tool_results(res.messages)
    return {
        "text": res.text,
        "stop": res.stop,
        "turns": res.turns,
        "tool_calls": res.tool_calls,
        "tool_runs": len(results),
        # where the tools ran: this process (in-process tools) or others (isolated)
        "agent_pid": os.getpid(),
        "tool_pids": sorted({r["pid"] for r in results if isinstance(r, dict) and "pid" in r}),
        "tokens": res.tokens,
        "loop_s": loop_s,
    }


def tool_results(messages: list[dict[str, Any]]) -> list[Any]:
    """What each tool function that ran answered: each answer of a plain call,
    each step of a plan (a plan's answer is ``{"steps": {id: {"result": ...}}}``)."""
    plan_ids = {
        c.get("id")
        for m in messages
        if m.get("role") == "assistant"
        for c in m.get("tool_calls") or []
        if c.get("function", {}).get("name") == "run_plan"
    }
    out: list[Any] = []
    for m in messages:
        if m.get("role") != "tool":
            continue
        try:
            body = json.loads(m.get("content") or "null")
        except ValueError:
            body = m.get("content")
        if m.get("tool_call_id") not in plan_ids:
            out.append(body)
        elif isinstance(body, dict):
            steps = body.get("steps", {})
            out += [s.get("result", s.get("error")) for s in steps.values() if "skipped" not in s]
    return out
