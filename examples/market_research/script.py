"""The scripted model's script: each reply a fixed function of the conversation.

This is not a model.  It stands in for one so that the example runs offline
and the same way every time, over the real wire (``agentrt.llm.ScriptedModel``
serves it as an OpenAI-compatible endpoint).  The coordinator and the three
researchers talk to one server at once, so a reply depends on the request
alone, never on the order requests arrive in:

- who asks: the tools offered say it (``researcher`` offered: the
  coordinator; ``search`` offered: a researcher);
- how far the conversation is: which tool answers it already holds.

coordinator
    1. no answers yet: ``researcher(market=...)`` for each market the question
       names, all in one turn (agentrt runs them in parallel);
    2. the researchers' answers are in: the report, ranking the markets by a
       fixed rule over their figures and citing their documents.

researcher (``Market: X`` in the prompt)
    1. ``search`` for four kinds of document and ``stats`` for six figures,
       all in one turn;
    2. ``read`` the best hit of each search, all in one turn;
    3. findings: one line per figure and per document, each citing its doc id.
"""

from __future__ import annotations

import re
from typing import Any

from convo import Exchange, exchanges
from tools import MARKETS, markets_named

from agentrt.llm.scripted import Reply, Request, ScriptedCall

__all__ = ["LABEL", "SEARCHES", "STATS", "reply"]

#: how the scripted model is named wherever it shows
LABEL = "scripted model — not a real model"

#: the researcher's first turn: a search per kind of document ...
SEARCHES = {
    "size": "e-bike market size sales growth",
    "competitors": "competitors brands market share",
    "regulation": "regulation rules import duty certification",
    "survey": "consumer survey purchase intent",
}
#: ... and these figures
STATS = [
    "market_size_eur_m",
    "growth_pct",
    "median_price_eur",
    "mid_price_share_pct",
    "competitors",
    "import_duty_pct",
]
_LABELS = {
    "units_k": "E-bikes sold",
    "market_size_eur_m": "Market size",
    "growth_pct": "Growth",
    "median_price_eur": "Median price",
    "mid_price_share_pct": "Mid-price share",
    "competitors": "Brands",
    "import_duty_pct": "Import duty",
    "purchase_intent_pct": "Purchase intent",
}


def reply(request: Request) -> Reply:
    """The scripted reply to ``request`` (the callable given to ``ScriptedModel``)."""
    offered = _offered(request)
    if "researcher" in offered:
        return _coordinator(request)
    if "search" in offered:
        return _researcher(request)
    return Reply(text=f"({LABEL}: it has no part to play with tools {sorted(offered)})")


def _offered(request: Request) -> set[str]:
    """The names of the tools offered (OpenAI ``function.name`` or Anthropic ``name``)."""
    names = set()
    for t in request.tools:
        fn = t.get("function")
        names.add(str((fn if isinstance(fn, dict) else t).get("name", "")))
    return names


# --- the coordinator -----------------------------------------------------------------


def _coordinator(request: Request) -> Reply:
    question = request.last_user_text()
    calls = [e for e in exchanges(request.messages) if e.name == "researcher"]
    if not calls:
        markets = markets_named(question) or list(MARKETS)
        return Reply(
            text=f"Researching {', '.join(markets)} at once, one researcher per market.",
            tool_calls=[
                ScriptedCall("researcher", {"market": m, "question": question}) for m in markets
            ],
        )
    return Reply(text=_report(calls))


def _score(figures: dict[str, Any]) -> float | None:
    """The fixed rule: mid-price sales within reach in three years, per competing brand
    (EUR m): size x mid-price share x (1 + growth)^3 / brands.  None if a figure is missing."""
    try:
        size = figures["market_size_eur_m"]["value"]
        share = figures["mid_price_share_pct"]["value"] / 100
        growth = figures["growth_pct"]["value"] / 100
        brands = max(figures["competitors"]["value"], 1)
    except (KeyError, TypeError):
        return None
    return float(size * share * (1 + growth) ** 3 / brands)


def _cell(figures: dict[str, Any], metric: str) -> str:
    f = figures.get(metric)
    return "n/a" if not f else f"{f['value']:,}"


def _report(calls: list[Exchange]) -> str:
    found = [e.result for e in calls if e.ok and isinstance(e.result, dict)]
    failed = [e for e in calls if not e.ok]
    scores = {r["market"]: _score(r.get("figures", {})) for r in found}
    ranked = sorted((s, m) for m, s in scores.items() if s is not None)[::-1]
    by_market = {r["market"]: r for r in found}
    lines = ["## Summary", ""]
    if ranked:
        best_score, best = ranked[0]
        figs = by_market[best]["figures"]
        used = ("market_size_eur_m", "mid_price_share_pct", "growth_pct", "competitors")
        src = " ".join(f"[{s}]" for s in dict.fromkeys(figs[k]["source"] for k in used))
        others = ", ".join(f"{m} {s:.0f}" for s, m in ranked[1:])
        lines.append(
            f"**Recommendation: {MARKETS[best]['name']} ({best}).** It scores highest on the "
            f"scripted model's fixed rule below: {best_score:.0f}"
            + (f", against {others}" if others else "")
            + f" {src}."
            + _extremes(found)
        )
    else:
        lines.append("No market could be ranked: the researchers returned no figures.")
    lines += [
        "",
        "## How the markets compare",
        "",
        "| Market | Size (EUR m/yr) | Growth (%/yr) | Median price (EUR) | Mid-price share (%) "
        "| Brands | Import duty (%) | Score | Sources |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in found:
        figs, score = r.get("figures", {}), scores[r["market"]]
        cells = [_cell(figs, m) for m in STATS]
        sources = ", ".join(sorted({f["source"] for f in figs.values()}))
        shown = "n/a" if score is None else f"{score:.0f}"
        lines.append(f"| {r['market']} | {' | '.join(cells)} | {shown} | {sources} |")
    lines += ["", "## Findings by market", ""]
    for r in found:
        lines += [f"### {r['market']}", "", r.get("findings", "").strip() or "(none)", ""]
    for e in failed:
        err = e.error or {}
        lines += [
            f"### {e.args.get('market', '?')}",
            "",
            f"The researcher failed: {err.get('type')}: {err.get('message')}",
            "",
        ]
    lines += [
        "## How this was decided",
        "",
        f"The ranking comes from the {LABEL}: a fixed rule, not a judgement. Score = "
        "market size x share of units sold at EUR 1,500-3,000 x (1 + growth)^3 / brands "
        "with at least 1 % share: the mid-price sales within reach in three years per "
        "competing brand, in EUR m. It weighs nothing else (prices, duties, regulation "
        "and the survey are reported above, not scored).",
    ]
    return "\n".join(lines)


def _extremes(found: list[dict[str, Any]]) -> str:
    """A sentence on the fastest-growing market and the one with the highest duty."""
    out = ""
    for metric, what in (
        ("growth_pct", "grows fastest"),
        ("import_duty_pct", "taxes imports most"),
    ):
        have = [
            (r["figures"][metric], r["market"]) for r in found if metric in r.get("figures", {})
        ]
        if len(have) > 1:
            f, m = max(have, key=lambda h: h[0]["value"])
            out += f" {m} {what} ({f['value']:,} {f['unit']}) [{f['source']}]."
    return out


# --- a researcher ----------------------------------------------------------------------

_MARKET_LINE = re.compile(r"^Market:\s*(\S+)", re.MULTILINE)


def _researcher(request: Request) -> Reply:
    m = _MARKET_LINE.search(request.last_user_text())
    market = m.group(1) if m else ""
    if market not in MARKETS:
        return Reply(text=f"({LABEL}: no known market in the prompt; known: {', '.join(MARKETS)})")
    calls = exchanges(request.messages)
    if not calls:
        return Reply(
            text=f"Looking up {market}: four searches and six figures at once.",
            tool_calls=[
                *(
                    ScriptedCall("search", {"query": q, "market": market})
                    for q in SEARCHES.values()
                ),
                *(ScriptedCall("stats", {"market": market, "metric": s}) for s in STATS),
            ],
        )
    if not any(e.name == "read" for e in calls):
        best = [
            e.result[0]["doc_id"]
            for e in calls
            if e.name == "search" and e.ok and isinstance(e.result, list) and e.result
        ]
        ids = list(dict.fromkeys(best))
        if ids:
            return Reply(
                text=f"Reading the best hit of each search: {', '.join(ids)}.",
                tool_calls=[ScriptedCall("read", {"doc_id": i}) for i in ids],
            )
    return Reply(text=_findings(market, calls))


def _findings(market: str, calls: list[Exchange]) -> str:
    figures = [e.result for e in calls if e.name == "stats" and e.ok]
    docs = [e.result for e in calls if e.name == "read" and e.ok]
    lines = [
        f"{MARKETS[market]['name']}: {len(figures)} figures and {len(docs)} documents "
        f"of the local data set ({LABEL}).",
        "",
    ]
    for f in figures:
        label = _LABELS.get(f["metric"], f["metric"])
        lines.append(f"- {label}: {f['value']:,} {f['unit']} ({f['year']}) [{f['source']}]")
    for d in docs:
        lines.append(f"- {d['title']}: {d['summary']} [{d['doc_id']}]")
    return "\n".join(lines)
