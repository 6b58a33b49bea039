"""Agents of the demo: each runs in its own process, under its own limits."""

from __future__ import annotations

import asyncio
import os
import re
from collections import Counter

import structlog

from agentrt import tool

log = structlog.get_logger()


def plan(question: str) -> dict[str, list[str]]:
    """Split a question into topics (a plain sync agent)."""
    words = [w for w in re.findall(r"[a-z]+", question.lower()) if len(w) > 3]
    return {"topics": words[:4]}


@tool
async def lookup(topic: str, delay: float = 0.1) -> str:
    """A slow remote tool, simulated: runs inside the calling agent's process."""
    await asyncio.sleep(delay)
    return f"{topic}: {len(topic)} letters"


async def research(ctx, topic: str) -> dict[str, object]:
    """A subagent per topic: several tool calls at once, in its own process."""
    notes = await ctx.gather(ctx.tool("lookup", topic=topic), ctx.tool("lookup", topic=topic[::-1]))
    return {"topic": topic, "notes": notes, "pid": os.getpid()}


def word_count(text: str) -> dict[str, int]:
    """Count words."""
    words = re.findall(r"[a-z']+", text.lower())
    return dict(Counter(words).most_common(5))


def write(findings: list[dict[str, object]], counts: dict[str, int]) -> str:
    """Aggregate the findings into a short report."""
    lines = [
        f"- {f['topic']}: {'; '.join(map(str, f['notes']))} (pid {f['pid']})" for f in findings
    ]
    return "\n".join(["# Findings", *lines, f"top words: {counts}"])


def flaky(job: str) -> str:
    """Crash on the first life of each replica; the supervisor restarts it and retries."""
    if os.environ.get("AGENTRT_GENERATION") == "0":
        log.warning("about_to_crash", job=job)
        os._exit(3)
    return f"{job} done on restart (pid {os.getpid()})"
