"""In-process tools of the literature review: search and read a real corpus.

The corpus is the language reference every Python ships with:
``pydoc_data.topics.topics``, about 80 topics (``"with"``, ``"exceptions"``,
``"context-managers"``, ...) mapped to their text.  The index is built once
when the module is imported; with ``preload = ["tools"]`` in the config that
happens in the zygote, and every forked replica shares it.

No external dependencies: a regex tokenizer, a crude suffix stemmer and
BM25 ranking with a boost for words of the topic's name and title.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pydoc_data.topics import topics as TOPICS

from agentrt import tool

__all__ = ["TOPICS", "read", "score_topics", "search", "terms", "title"]

STOPWORDS = frozenset(
    re.findall(
        r"\w+",
        """a about after all also an and any are as at be been before being between both but
    by can could do does did each for from had has have how however if in into is it its
    may more most must no not of on one only or other over same should so some such than
    that the their them then there these they this those through to under up use used
    uses using via was we were what when where whether which while who why will with
    within without would you your python""",
    )
)
_WORD = re.compile(r"[a-z]+")
_SUFFIX = ("ations", "ation", "ions", "ion", "ors", "or", "ers", "er", "ing", "ed", "es", "s", "e")


def stem(word: str) -> str:
    """``"managers"``, ``"managed"``, ``"manage"`` -> ``"manag"`` (crude, but consistent)."""
    for suffix in _SUFFIX:
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def terms(text: str) -> list[str]:
    """Lower-cased, stemmed words of ``text``, stopwords and short words removed."""
    return [stem(w) for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in STOPWORDS]


def title(topic: str) -> str:
    """The first line of a topic's text: ``'The "with" statement'``."""
    return TOPICS[topic].strip().splitlines()[0].strip()


# --- the index (built once, at import) ----------------------------------------

_TF: dict[str, Counter[str]] = {name: Counter(terms(text)) for name, text in TOPICS.items()}
_LEN: dict[str, int] = {name: sum(c.values()) for name, c in _TF.items()}
_AVG_LEN = sum(_LEN.values()) / len(_LEN)
_DF: Counter[str] = Counter(t for c in _TF.values() for t in c)
_HEAD: dict[str, set[str]] = {
    name: set(terms(name.replace("-", " ") + " " + title(name))) for name in TOPICS
}
_K1, _B, _HEAD_BOOST = 1.2, 0.75, 2.0


def _idf(term: str) -> float:
    n, df = len(TOPICS), _DF.get(term, 0)
    return math.log(1.0 + (n - df + 0.5) / (df + 0.5))


def score_topics(query: str) -> dict[str, float]:
    """BM25 score of every topic with some overlap with ``query`` (name/title boosted)."""
    q = set(terms(query))
    scores: dict[str, float] = {}
    for name, tf in _TF.items():
        s = 0.0
        for t in q:
            f = tf.get(t, 0)
            if f:
                norm = f * (_K1 + 1) / (f + _K1 * (1 - _B + _B * _LEN[name] / _AVG_LEN))
                s += _idf(t) * norm
            if t in _HEAD[name]:
                s += _HEAD_BOOST * _idf(t)
        if s > 0:
            scores[name] = round(s, 3)
    return scores


# --- the tools ------------------------------------------------------------------


@tool
def search(query: str, k: int = 5) -> list[str]:
    """The names of the ``k`` topics that best match ``query``, best first."""
    scores = score_topics(query)
    return sorted(scores, key=lambda n: (-scores[n], n))[:k]


@tool
def read(topic: str, query: str = "", size: int = 600) -> dict[str, str]:
    """An excerpt of ``topic``: its title and the paragraph that best matches ``query``."""
    if topic not in TOPICS:
        raise KeyError(f"no topic named {topic!r}")
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", TOPICS[topic]) if p.strip()]
    # (skip the title, grammar productions and tables)
    prose = [p for p in paragraphs[1:] if not ("::=" in p or "+--" in p or set(p) <= set("*=-"))]
    q = set(terms(query))
    best = max(prose or paragraphs, key=lambda p: len(q & set(terms(p))), default="")
    excerpt = " ".join(best.split())
    if len(excerpt) > size:
        excerpt = excerpt[:size].rsplit(" ", 1)[0] + " …"
    return {"topic": topic, "title": title(topic), "excerpt": excerpt}
