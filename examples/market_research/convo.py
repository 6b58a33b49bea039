"""Reading an OpenAI-shaped conversation: which tools the model called, and what came back.

Used by the agents (to report what their loop did: the turns, the figures
and documents it used) and by the scripted model (to decide its next reply
from the conversation alone).  A leaf: the stdlib only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Exchange", "cited", "exchanges"]


@dataclass(frozen=True)
class Exchange:
    """One tool call of the conversation: the model's ``turn`` (1 for its first
    answer), the tool, its arguments, and the answer: ``result`` (JSON decoded
    when it is JSON) or ``error`` (``{"type", "message"}``)."""

    turn: int
    name: str
    args: dict[str, Any]
    result: Any = None
    error: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _decode(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def exchanges(messages: Iterable[dict[str, Any]]) -> list[Exchange]:
    """Every tool call of the assistant messages, in order, with its answer.

    A call not answered (yet) has neither result nor error; an answer of the
    shape ``{"error": {...}}`` (how agentrt tells a model a call failed) is
    its error.
    """
    messages = list(messages)
    answers = {m.get("tool_call_id"): m.get("content") for m in messages if m.get("role") == "tool"}
    out: list[Exchange] = []
    turn = 0
    for m in messages:
        if m.get("role") != "assistant":
            continue
        turn += 1
        for call in m.get("tool_calls") or []:
            fn = call.get("function") or {}
            args = _decode(fn.get("arguments") or "{}")
            answer = _decode(answers.get(call.get("id")))
            error = None
            if isinstance(answer, dict) and set(answer) == {"error"}:
                error, answer = answer["error"], None
            out.append(
                Exchange(
                    turn=turn,
                    name=str(fn.get("name", "")),
                    args=args if isinstance(args, dict) else {},
                    result=answer,
                    error=error,
                )
            )
    return out


def cited(text: str, known: Iterable[str]) -> list[str]:
    """The ``known`` ids that ``text`` mentions (as whole words), in order of first mention."""
    ids = sorted(set(known), key=len, reverse=True)  # longest first: "eu-size" before "eu"
    if not ids or not text:
        return []
    pattern = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, ids)) + r")(?![\w-])")
    return list(dict.fromkeys(pattern.findall(text)))
