"""Agents for benchmarks/bench_swarm.py: a coordinator, its swarm of workers, a DAG task.

Preloaded by the zygote (``Supervisor(preload=["swarm_agents"])``), so the
``io`` tool below is registered in every replica before it is forked.  The
agents only sleep: what gets timed is the runtime around them.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from agentrt import Context, tool


@tool(name="io")
async def io_tool(ms: float = 50.0) -> int:
    """A stand-in for an I/O-bound tool call (an HTTP request, a model call)."""
    await asyncio.sleep(ms / 1000.0)
    return 1


async def worker(ctx: Context, i: int, calls: int = 13, ms: float = 50.0) -> dict[str, Any]:
    """One subagent: ``calls`` sequential tool calls; says when it ran and where."""
    t0 = time.time()
    done = 0
    for _ in range(calls):
        done += await ctx.tool("io", ms=ms)
    return {"i": i, "calls": done, "pid": os.getpid(), "t0": t0, "t1": time.time()}


async def coordinator(ctx: Context, n: int, calls: int = 13, ms: float = 50.0) -> dict[str, Any]:
    """Spawns ``n`` workers at once and aggregates what they did."""
    t0 = time.time()
    rows = await ctx.gather(*(ctx.spawn("worker", i=i, calls=calls, ms=ms) for i in range(n)))
    t1 = time.time()
    return {
        "workers": len(rows),
        "calls": sum(r["calls"] for r in rows),
        "distinct_pids": len({r["pid"] for r in rows}),
        "in_order": [r["i"] for r in rows] == list(range(n)),
        "t0": t0,
        "t1": t1,
        # when each worker began and ended its own work (this machine's wall clock)
        "worker_t0": [r["t0"] for r in rows],
        "worker_t1": [r["t1"] for r in rows],
    }


async def sim(ms: float) -> float:
    """A DAG task of known latency."""
    await asyncio.sleep(ms / 1000.0)
    return ms


def echo(**kwargs: Any) -> dict[str, Any]:
    """A call that does nothing: what a round trip costs (``bench_ray``)."""
    return kwargs
