"""Agents of the demo: each runs in its own process, under its own limits."""

from __future__ import annotations

import asyncio
import os
import re
from collections import Counter

import structlog

log = structlog.get_logger()


def word_count(text: str) -> dict[str, int]:
    """Count words (a plain sync agent)."""
    words = re.findall(r"[a-z']+", text.lower())
    return dict(Counter(words).most_common(5))


async def fetch(topic: str, delay: float = 0.2) -> dict[str, str]:
    """Pretend to call a slow remote tool (an async agent)."""
    await asyncio.sleep(delay)
    return {
        "topic": topic,
        "summary": f"{topic}: {len(topic)} letters, fetched by pid {os.getpid()}",
    }


def flaky(job: str) -> str:
    """Crash on the first life of each replica; the supervisor restarts it and retries."""
    if os.environ.get("AGENTRT_GENERATION") == "0":
        log.warning("about_to_crash", job=job)
        os._exit(3)
    return f"{job} done on restart (pid {os.getpid()})"
