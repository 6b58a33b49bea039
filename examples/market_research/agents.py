"""Agents of the market research: model-driven, each in its own process.

::

    coordinator  (model loop; tools: researcher, run_plan)
      │  turn 1: researcher(EU), researcher(Japan), researcher(Brazil): one turn, in parallel
      ├──> researcher x3  (model loop, a process each; tools: search, read, stats)
      │      turn 1: search x4 + stats x6 at once; turn 2: read x4 at once; turn 3: findings
      │  turn 2: the report, citing the documents the researchers cited
      └──> out/market_research.md

    model_server (class agent) which model they all talk to: an OpenAI-compatible
                 endpoint from the environment, else the scripted model it serves

Every model-driven agent asks ``model_server`` for its endpoint
(``ctx.spawn_method("model_server", "endpoint")``), so the choice is made in one
place and no URL or key passes through a model's tool arguments.  With
``OPENAI_BASE_URL`` or ``OPENAI_API_KEY`` set, that endpoint is used with
``OPENAI_MODEL``; otherwise the ``model_server`` agent serves the scripted model
(``script.py``: deterministic, offline, labelled as not a real model) on
127.0.0.1 from its own process, for as long as the run lasts.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import structlog
from convo import Exchange, cited, exchanges
from script import LABEL, reply
from tools import ABOUT, DOCUMENTS, Market

from agentrt import llm

log = structlog.get_logger()

#: the scripted model's name (its replies say ``scripted:market-analyst``) ...
SCRIPTED_NAME = "market-analyst"
#: ... and how long it takes over each reply, as a real model would (seconds)
SCRIPTED_LATENCY = 0.25

COORDINATOR_SYSTEM = (
    "You coordinate a market study. Call the researcher tool once for each market the question "
    "names, all in the same turn: they run in parallel, each in its own process. When their "
    "findings are in, write the report in Markdown: start with a one-paragraph summary that "
    "names the market you recommend, then compare the markets (a table is welcome) and give "
    "the findings by market. Cite the doc ids the researchers cite, in square brackets like "
    "[eu-size], for every figure and claim. Use only what the researchers found."
)
RESEARCHER_SYSTEM = (
    "You research one market with the tools search, read and stats over a local data set. "
    "Call several tools in the same turn whenever they do not depend on each other: they run "
    "in parallel. Look up the market's size and growth, competitors, regulation, a consumer "
    "survey and prices. Then answer with short findings, one per line, each citing the doc id "
    "it comes from in square brackets like [eu-size]."
)


# --- which model: the ``model_server`` agent -------------------------------------------


def configured_endpoint() -> dict[str, Any] | None:
    """The OpenAI-compatible endpoint the environment names, or None for the scripted model.

    ``OPENAI_BASE_URL`` (default ``https://api.openai.com/v1`` when only
    ``OPENAI_API_KEY`` is set) and ``OPENAI_MODEL``, which is then required.
    The key stays in the environment: each agent's client reads it there.
    """
    base_url = os.environ.get("OPENAI_BASE_URL")
    if not (base_url or os.environ.get("OPENAI_API_KEY")):
        return None
    model = os.environ.get("OPENAI_MODEL")
    if not model:
        raise ValueError("OPENAI_BASE_URL or OPENAI_API_KEY is set: set OPENAI_MODEL too")
    base_url = base_url or "https://api.openai.com/v1"
    return {
        "base_url": base_url,
        "model": model,
        "scripted": False,
        "label": f"{model} at {base_url}",
    }


class ModelServer:
    """The ``model_server`` agent: says which model to talk to, and serves the scripted one.

    A class agent: one instance per replica, made when the replica starts.
    Without a configured endpoint it starts the scripted model's server
    (a thread of this process, an ephemeral port on 127.0.0.1), so the
    replica is ready only once the server listens; the server ends with the
    process.
    """

    def __init__(self) -> None:
        self._scripted: dict[str, Any] | None = None
        #: the scripted model's server: held for the replica's life (its thread ends with it)
        self._server: llm.ScriptedModel | None = None
        self._announced = False
        if os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_KEY"):
            return  # a configured endpoint: checked when asked for, see endpoint()
        self._server = llm.ScriptedModel(reply, latency=SCRIPTED_LATENCY, name=SCRIPTED_NAME)
        self._server.start()
        self._scripted = {
            "base_url": self._server.openai_base_url,
            "model": f"scripted:{SCRIPTED_NAME}",
            "scripted": True,
            "label": f"{LABEL} (scripted:{SCRIPTED_NAME}, replies computed from the "
            "conversation by examples/market_research/script.py)",
        }

    def endpoint(self) -> dict[str, Any]:
        """``{"base_url", "model", "scripted", "label"}`` of the model to talk to."""
        if self._scripted is None:
            endpoint = configured_endpoint()
            assert endpoint is not None  # the environment named one when this replica started
            return endpoint
        if not self._announced:  # logged here: a replica may not log before it is ready
            self._announced = True
            log.info("scripted_model_serving", url=self._scripted["base_url"], model=LABEL)
        return self._scripted


async def model_endpoint(ctx: Any) -> dict[str, Any]:
    """Ask the ``model_server`` agent which model to talk to."""
    endpoint: dict[str, Any] = await ctx.spawn_method("model_server", "endpoint")
    return endpoint


def client(endpoint: dict[str, Any]) -> llm.OpenAIChat:
    """A chat-completions client of ``endpoint`` (the scripted model gets no API key)."""
    return llm.OpenAIChat(
        endpoint["model"],
        base_url=endpoint["base_url"],
        api_key="" if endpoint["scripted"] else None,  # None: OPENAI_API_KEY, if set
        timeout=120.0,
    )


def loop_summary(loop: llm.LoopResult, calls: list[Exchange]) -> dict[str, Any]:
    """What a model loop did: its turns, the tools each turn called, why it stopped, tokens."""
    return {
        "turns": loop.turns,
        "tool_calls": loop.tool_calls,
        "calls_per_turn": [
            [e.name for e in calls if e.turn == t] for t in range(1, loop.turns + 1)
        ],
        "stop": loop.stop,
        "input_tokens": loop.input_tokens,
        "output_tokens": loop.output_tokens,
    }


# --- researcher ------------------------------------------------------------------------


async def research(ctx: Any, market: Market, question: str) -> dict[str, Any]:
    """Research one market for the question in the local data set (size and growth,
    competitors, regulation, consumer survey, prices, channels); returns findings that
    cite doc ids, the figures used and the sources.

    Args:
        market: the market to research
        question: the question the research is for
    """
    # This docstring and signature are what the coordinator's model is told
    # about the researcher (ctx.toolbox(agents=...)).  The ``Market:`` line of
    # the prompt is how the scripted model finds the market.
    start = time.time()
    endpoint = await model_endpoint(ctx)
    box = ctx.toolbox().only(["search", "read", "stats"])
    async with client(endpoint) as model:
        loop = await llm.run_loop(
            ctx,
            model,
            f"Market: {market}\nQuestion: {question}",
            tools=box,
            system=RESEARCHER_SYSTEM,
            max_turns=6,
            max_tool_calls=30,
        )
    calls = exchanges(loop.messages)
    figures = {
        str(e.args.get("metric")): e.result
        for e in calls
        if e.name == "stats" and e.ok and isinstance(e.result, dict)
    }
    read = [str(e.args.get("doc_id")) for e in calls if e.name == "read" and e.ok]
    findings = loop.text or f"(no findings: the model loop stopped at {loop.stop})"
    sources = cited(findings, DOCUMENTS) or read
    summary = loop_summary(loop, calls)
    log.info("market_researched", market=market, sources=len(sources), **summary)
    return {
        "market": market,
        "findings": findings,
        "figures": figures,
        "sources": sources,
        "model": endpoint["label"],
        "loop": summary,
        "pid": os.getpid(),
        "start": start,
        "end": time.time(),
    }


# --- coordinator -----------------------------------------------------------------------


def launch_dir() -> Path:
    """The directory ``agentrt supervise`` was started in.

    Each replica runs in a private working directory, so a relative output
    path is resolved against ``AGENTRT_LAUNCH_DIR``, which agentrt sets in
    every agent to the supervisor's working directory.
    """
    return Path(os.environ.get("AGENTRT_LAUNCH_DIR") or os.getcwd())


def researched(calls: list[Exchange]) -> list[dict[str, Any]]:
    """The researchers' results: called directly, or as steps of a ``run_plan``."""
    out: list[dict[str, Any]] = []
    for e in calls:
        if e.name == "researcher" and e.ok and isinstance(e.result, dict):
            out.append(e.result)
        elif e.name == "run_plan" and e.ok and isinstance(e.result, dict):
            steps = {s.get("id"): s for s in e.args.get("steps", []) if isinstance(s, dict)}
            for sid, outcome in (e.result.get("steps") or {}).items():
                result = outcome.get("result") if isinstance(outcome, dict) else None
                if steps.get(sid, {}).get("tool") == "researcher" and isinstance(result, dict):
                    out.append(result)
    return out


def summary_of(text: str) -> str:
    """The report's first paragraph of prose (not a heading, list or table), cut short."""
    for para in text.split("\n\n"):
        para = para.strip()
        if para and not para.startswith(("#", "|", "- ", "* ", ">")):
            return para if len(para) <= 600 else para[:600].rsplit(" ", 1)[0] + " …"
    return ""


def render(
    question: str, endpoint: dict[str, Any], text: str, research: list[dict[str, Any]]
) -> tuple[str, list[str]]:
    """The Markdown report (header, the model's text, the sources) and the doc ids cited."""
    sources = cited(text, DOCUMENTS)
    if not sources:  # the model cited nothing: list what the researchers cited
        sources = [s for r in research for s in r.get("sources", []) if s in DOCUMENTS]
    order = list(DOCUMENTS)  # the data set's order: by market, then kind
    sources = sorted(set(sources), key=order.index)
    lines = [
        f"# Market research: {question}",
        "",
        f"> **Model:** {endpoint['label']}.  ",
        f"> **Data:** {ABOUT}",
        "",
        text.strip(),
        "",
        "## Sources",
        "",
    ]
    for doc_id in sources:
        d = DOCUMENTS.get(doc_id)
        if d is not None:
            lines.append(
                f"- [{doc_id}] {d['title']}. {d['publisher']}, {d['year']} "
                "(examples/market_research/data/documents.json)."
            )
    return "\n".join(lines) + "\n", sources


async def coordinate(
    ctx: Any, question: str, out: str = "out/market_research.md"
) -> dict[str, Any]:
    """Have a model research the markets the question names and write a report to ``out``."""
    endpoint = await model_endpoint(ctx)
    log.info("model_endpoint", model=endpoint["label"], base_url=endpoint["base_url"])
    # The model may call researcher subagents (each call a process of the pool),
    # directly or through a plan; nothing else.
    box = ctx.toolbox(agents={"researcher": research}).only(["researcher"])
    box.add(llm.plan_tool(box))
    async with client(endpoint) as model:
        loop = await llm.run_loop(
            ctx,
            model,
            question,
            tools=box,
            system=COORDINATOR_SYSTEM,
            max_turns=6,
            max_tool_calls=12,
        )
    calls = exchanges(loop.messages)
    found = researched(calls)
    text = loop.text or "\n\n".join(
        [f"(The coordinator's model loop stopped at {loop.stop} before writing a report.)"]
        + [f"### {r['market']}\n\n{r['findings']}" for r in found]
    )
    markdown, sources = render(question, endpoint, text, found)
    path = Path(out) if os.path.isabs(out) else launch_dir() / out
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown, encoding="utf-8")
    log.info("report_written", path=str(path), sources=len(sources), model=endpoint["label"])
    return {
        "report": str(path),
        "summary": summary_of(text),
        "question": question,
        "model": endpoint["label"],
        "scripted": endpoint["scripted"],
        "sources": sources,
        "loop": loop_summary(loop, calls),
        "research": [
            {k: r.get(k) for k in ("market", "pid", "start", "end", "sources", "loop")}
            for r in found
        ],
    }
