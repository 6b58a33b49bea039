"""Agents of the literature review: each runs in its own process, under its own limits.

planner -> researcher x N (fan-out, parallel tool calls) -> writer, beside a
``flaky`` agent that crashes once and is restarted, and a ``monitor`` that
spawns a ``hog`` which runs into its memory limit.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import structlog
from tools import TOPICS, score_topics, terms, title

from agentrt import LimitExceeded

log = structlog.get_logger()

_SPLIT = re.compile(r",|;|\band\b|\bwith\b|\bor\b|\bfor\b|\bvia\b", re.IGNORECASE)
_LEAD = re.compile(r"^(how|what|why|when|where|which|who)\s+(does|do|is|are|can|did)\s+", re.I)


# --- planner ----------------------------------------------------------------------


def plan(question: str, min_subquestions: int = 4, max_subquestions: int = 6) -> dict[str, Any]:
    """Split ``question`` into sub-questions, each with a query (a plain sync agent).

    The facets of the question (the phrases between commas, "and", "with", ...)
    that overlap some topic become sub-questions; if there are too few, the
    topics that score best against the whole question add more.
    """
    scores = score_topics(question)
    ranked = sorted(scores, key=lambda n: (-scores[n], n))
    subs: list[dict[str, Any]] = []
    seen_terms: set[frozenset[str]] = set()
    for raw in _SPLIT.split(question.rstrip("?. ")):
        words = [w for w in re.findall(r"[A-Za-z]+", _LEAD.sub("", raw.strip())) if w]
        key = frozenset(terms(" ".join(words)))
        if not key or key in seen_terms:
            continue
        facet_scores = score_topics(" ".join(words))
        if not facet_scores:
            continue
        seen_terms.add(key)
        phrase = " ".join(w for w in words if w.lower() not in {"the", "a", "an", "python"})
        best = max(facet_scores, key=lambda n: facet_scores[n])
        asked = _LEAD.match(raw.strip())  # a clause that is a question already
        subs.append(
            {
                "question": f"{raw.strip()}?"
                if asked
                else f"What does the language reference say about {phrase}?",
                "query": phrase,
                "seed_topic": best,
            }
        )
    covered = {s["seed_topic"] for s in subs}
    for name in ranked:
        if len(subs) >= min_subquestions:
            break
        if name not in covered:
            covered.add(name)
            subs.append(
                {
                    "question": f"How does {title(name)} bear on the question?",
                    "query": f"{name.replace('-', ' ')} {' '.join(terms(question))}",
                    "seed_topic": name,
                }
            )
    subs = subs[:max_subquestions]
    log.info("planned", subquestions=len(subs), top_topics=ranked[:5])
    return {
        "question": question,
        "subquestions": subs,
        "topic_scores": {n: scores[n] for n in ranked[:10]},
    }


# --- researcher (one subagent per sub-question) ------------------------------------------


async def research(ctx: Any, subquestion: dict[str, Any], reads: int = 3) -> dict[str, Any]:
    """Search and read the planner's seed topic at once, then read the top hits at once.

    Every ``ctx.tool`` call runs in this agent's process (in-process tools);
    ``ctx.gather`` runs them concurrently.
    """
    query, seed = subquestion["query"], subquestion["seed_topic"]
    hits, first = await ctx.gather(
        ctx.tool("search", query=query, k=reads + 2),
        ctx.tool("read", topic=seed, query=query),
    )
    more = [t for t in hits if t != seed][: reads - 1]
    rest = await ctx.gather(*(ctx.tool("read", topic=t, query=query) for t in more))
    return {
        "question": subquestion["question"],
        "query": query,
        "topics": [seed, *more],
        "findings": [first, *rest],
        "tool_calls": 2 + len(more),
        "pid": os.getpid(),
    }


# --- writer ---------------------------------------------------------------------------


def launch_dir() -> Path:
    """The directory ``agentrt supervise`` was started in.

    Each replica runs in a private working directory, so a relative output
    path is resolved against ``AGENTRT_LAUNCH_DIR``, which agentrt sets in
    every agent to the supervisor's working directory.
    """
    return Path(os.environ.get("AGENTRT_LAUNCH_DIR") or os.getcwd())


def write(
    question: str,
    findings: list[dict[str, Any]],
    corpus: dict[str, Any],
    health: dict[str, Any],
    out: str = "out/literature_review.md",
) -> dict[str, Any]:
    """Aggregate the findings into a Markdown report with citations; write it to ``out``."""
    lines = [
        "# Literature review",
        "",
        f"**Question.** {question}",
        "",
        f"Corpus: the Python {corpus['python']} language reference "
        f"(`pydoc_data.topics`, {corpus['topics']} topics, {corpus['words']:,} words).",
        "",
    ]
    cited: dict[str, str] = {}
    for i, f in enumerate(findings, 1):
        lines += [f"## {i}. {f['question']}", "", f"_Query:_ `{f['query']}`", ""]
        for e in f["findings"]:
            lines.append(f"- **{e['title']}.** {e['excerpt']} [topic: {e['topic']}]")
            cited.setdefault(e["topic"], e["title"])
        lines.append("")
    lines += ["## References", ""]
    lines += [f"- [topic: {name}] {t}" for name, t in sorted(cited.items())]
    lines += ["", "## Run notes", "", f"- {corpus['note']}", f"- {health['note']}", ""]
    text = "\n".join(lines)
    path = Path(out) if os.path.isabs(out) else launch_dir() / out
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    log.info("report_written", path=str(path), references=len(cited))
    return {"path": str(path), "references": sorted(cited), "markdown": text}


# --- misbehaving agents -----------------------------------------------------------------


def corpus_stats() -> dict[str, Any]:
    """Corpus statistics; crashes on the first life of each replica.

    The supervisor restarts the replica (``AGENTRT_GENERATION`` becomes 1) and,
    with ``retries = 1``, runs the call again there: the task succeeds on
    its second attempt.
    """
    generation = os.environ.get("AGENTRT_GENERATION")
    if generation == "0":
        log.warning("about_to_crash", generation=generation)
        os._exit(3)
    import sys

    words = sum(len(text.split()) for text in TOPICS.values())
    return {
        "python": sys.version.split()[0],
        "topics": len(TOPICS),
        "words": words,
        "note": f"corpus_stats crashed on its first replica and succeeded on restart "
        f"(generation {generation}, pid {os.getpid()}).",
    }


def hog(megabytes: int = 1024, chunk: int = 32) -> str:
    """Allocate ``megabytes`` in ``chunk``-MiB pieces: far beyond its 256MiB limit.

    Every page is written (not ``bytes(n)``, whose zero pages may never be
    touched), so the limit is hit however it is enforced: RLIMIT_AS
    (``MemoryError``), the supervisor's RSS watchdog or a cgroup.
    """
    held = [b"\x01" * (chunk << 20) for _ in range(megabytes // chunk)]
    return f"allocated {sum(map(len, held)) >> 20} MiB (no limit hit)"


async def monitor(ctx: Any, megabytes: int = 1024) -> dict[str, Any]:
    """Spawn the ``hog`` and expect it to hit its memory limit.

    The typed error comes back here (the hog's replica is ended, then
    restarted by its supervisor); catching it keeps this task, and so the
    run, successful, while the limit still shows in the logs.
    """
    try:
        result = await ctx.spawn("hog", megabytes=megabytes)
    except LimitExceeded as exc:
        error = str(exc).rstrip(": ")  # a bare MemoryError adds an empty message
        log.info("memory_limit_hit_as_expected", limit=exc.limit, error=error)
        return {
            "hog": "limit",
            "limit": exc.limit,
            "error": error,
            "note": f"hog hit its {exc.limit} limit as expected and was stopped: {error}",
        }
    return {"hog": "ok", "limit": None, "error": None, "note": f"hog: {result}"}
