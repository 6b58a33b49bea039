"""In-process tools of the market research: search, read and figures over a local data set.

The data set ships with the example (``data/``): ``documents.json``, short
documents per market (market size, competitors, regulation, a consumer
survey, prices, sales channels), and ``metrics.csv``, figures per market,
each naming the document it comes from.  It is hand-written and
**illustrative**: plausible, invented figures, not real market data.

The data is loaded once, when the module is imported; with ``preload =
["tools"]`` in the config that happens in the zygote, and every replica
shares it.  The tools' signatures and docstrings are what a model is told
(``ctx.toolbox()`` turns them into JSON Schemas), so they are written for it.
"""

from __future__ import annotations

import csv
import difflib
import json
import re
from pathlib import Path
from typing import Any, Literal, get_args

from agentrt import tool

__all__ = [
    "ABOUT",
    "DOCUMENTS",
    "MARKETS",
    "METRICS",
    "Market",
    "Metric",
    "markets_named",
    "read",
    "search",
    "stats",
]

DATA = Path(__file__).resolve().parent / "data"

Market = Literal["EU", "Japan", "Brazil"]
Metric = Literal[
    "units_k",
    "market_size_eur_m",
    "growth_pct",
    "median_price_eur",
    "mid_price_share_pct",
    "competitors",
    "import_duty_pct",
    "purchase_intent_pct",
]


def _load() -> tuple[str, dict[str, Any], dict[str, dict[str, Any]], dict[tuple[str, str], Any]]:
    doc = json.loads((DATA / "documents.json").read_text(encoding="utf-8"))
    documents = {d["id"]: d for d in doc["documents"]}
    with (DATA / "metrics.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    metrics = {
        (r["market"], r["metric"]): {
            "market": r["market"],
            "metric": r["metric"],
            "value": float(r["value"]) if "." in r["value"] else int(r["value"]),
            "unit": r["unit"],
            "year": int(r["year"]),
            "source": r["source"],
        }
        for r in rows
    }
    return doc["about"], doc["markets"], documents, metrics


ABOUT, MARKETS, DOCUMENTS, METRICS = _load()

# The types the model is told (enums in the schemas) must be the data set's own.
if set(get_args(Market)) != set(MARKETS) or {m for _, m in METRICS} != set(get_args(Metric)):
    raise RuntimeError("tools.Market / tools.Metric do not match the data set in data/")
if any(f["source"] not in DOCUMENTS for f in METRICS.values()):
    raise RuntimeError("metrics.csv names a source that is not in documents.json")


def markets_named(text: str) -> list[str]:
    """The data set's markets that ``text`` names (by any alias), in the data set's order."""
    return [
        m
        for m, info in MARKETS.items()
        if any(re.search(rf"\b{re.escape(a)}\b", text, re.IGNORECASE) for a in info["aliases"])
    ]


# --- search: word overlap, with the words of each kind of document ------------------

_WORD = re.compile(r"[a-z]+")
_STOP = frozenset(
    re.findall(r"\w+", "the and for with what how which are its from into about this that")
)
#: words that point at a kind of document, so "rules" finds the regulation
_KIND_WORDS = {
    "size": "size sales market growth units volume revenue demand",
    "competitors": "competitors competition competitive brands share rivals landscape makers",
    "regulation": "regulation rules law legal duty duties import tariff certification standards",
    "survey": "survey consumers consumer intent purchase buyers customers attitudes",
    "prices": "prices price pricing cost discounts median band",
    "channels": "channels channel distribution dealers retail online shops leasing",
}


def _terms(text: str) -> set[str]:
    """Lower-case words of three letters or more, a plural ``s`` dropped."""
    words = (w for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in _STOP)
    return {w[:-1] if w.endswith("s") and len(w) > 3 else w for w in words}


_INDEX = {
    doc_id: (
        _terms(_KIND_WORDS[d["kind"]]),
        _terms(d["title"]),
        _terms(f"{d['summary']} {d['text']}"),
    )
    for doc_id, d in DOCUMENTS.items()
}


def _score(query: set[str], doc_id: str) -> int:
    kind, title, body = _INDEX[doc_id]
    return sum(3 * (t in kind) + 2 * (t in title) + (t in body) for t in query)


@tool
def search(query: str, market: Market | None = None, k: int = 3) -> list[dict[str, Any]]:
    """Search the market documents; the best matches first, without their text (use read).

    Args:
        query: words to look for, e.g. "market size growth" or "import duty rules"
        market: only this market's documents (all markets when not given)
        k: how many documents at most
    """
    q = _terms(query)
    scored = [
        (_score(q, doc_id), doc_id)
        for doc_id, d in DOCUMENTS.items()
        if market is None or d["market"] == market
    ]
    best = sorted((s for s in scored if s[0] > 0), key=lambda s: (-s[0], s[1]))[: max(k, 0)]
    return [
        {
            "doc_id": doc_id,
            "market": DOCUMENTS[doc_id]["market"],
            "kind": DOCUMENTS[doc_id]["kind"],
            "title": DOCUMENTS[doc_id]["title"],
            "score": score,
        }
        for score, doc_id in best
    ]


@tool
def read(doc_id: str) -> dict[str, Any]:
    """One document in full: title, publisher, year, summary and text; cite it by its doc_id.

    Args:
        doc_id: a doc_id from search, e.g. "eu-size"
    """
    doc = DOCUMENTS.get(doc_id)
    if doc is None:
        near = difflib.get_close_matches(doc_id, list(DOCUMENTS), n=3)
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise KeyError(f"no document {doc_id!r}{hint}")
    return {"doc_id": doc_id, **{k: v for k, v in doc.items() if k != "id"}}


@tool
def stats(market: Market, metric: Metric) -> dict[str, Any]:
    """One figure of one market (2024, EUR), with the doc_id of the document it comes from.

    Args:
        market: the market
        metric: units_k (e-bikes sold a year, thousands), market_size_eur_m (EUR m a year),
            growth_pct (a year), median_price_eur, mid_price_share_pct (share of units sold
            at EUR 1,500-3,000), competitors (brands with at least 1% share),
            import_duty_pct, purchase_intent_pct (adults considering a purchase)
    """
    return dict(METRICS[(market, metric)])
