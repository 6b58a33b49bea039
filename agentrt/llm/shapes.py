"""The model APIs' tool-call and tool-answer shapes: parsed in, formatted out.

Three shapes, as the APIs define them:

- ``"openai"`` (chat completions): an assistant message's ``tool_calls``
  items ``{"id", "type": "function", "function": {"name", "arguments"}}``,
  answered by ``{"role": "tool", "tool_call_id", "content"}`` messages;
- ``"responses"`` (OpenAI Responses): ``{"type": "function_call", "call_id",
  "name", "arguments"}`` output items, answered by ``{"type":
  "function_call_output", "call_id", "output"}`` items;
- ``"anthropic"`` (Messages): ``{"type": "tool_use", "id", "name", "input"}``
  content blocks, answered by ``{"type": "tool_result", "tool_use_id",
  "content", "is_error"}`` blocks.

Calls may be dicts, the vendors' SDK objects (anything with
``model_dump()``), msgspec Structs or dataclasses; a whole assistant message,
a Responses ``output`` list or an Anthropic ``content`` list is accepted too
(the parts that are not tool calls are left out).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Final, Literal

import msgspec

__all__ = ["Shape", "ToolRequest", "answer", "encode_content", "error_content", "parse_calls"]

Shape = Literal["openai", "responses", "anthropic"]

#: items that are parts of a model's output but not tool calls
_NOT_CALLS: Final = frozenset(
    {"text", "message", "reasoning", "thinking", "redacted_thinking", "output_text"}
)
_MAX_ID: Final = 256
_MAX_NAME: Final = 256


class ToolRequest(msgspec.Struct, frozen=True):
    """One tool call of a model's turn, whatever its shape.

    ``arguments`` is as the model gave it: JSON text (OpenAI shapes) or an
    object (Anthropic); it is validated later, against the tool's schema.
    """

    id: str
    name: str
    arguments: Any
    shape: Shape


def _as_dict(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return obj
    dump = getattr(obj, "model_dump", None)
    if callable(dump):  # the vendors' SDK types (pydantic)
        return dump()
    if isinstance(obj, msgspec.Struct):
        return msgspec.structs.asdict(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return obj


def _text(value: Any, what: str, limit: int) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what}: expected a string, got {type(value).__name__}")
    if len(value) > limit:
        raise ValueError(f"{what}: longer than {limit} characters")
    return value


def _one(item: Any, where: str) -> ToolRequest | None:
    d = _as_dict(item)
    if not isinstance(d, Mapping):
        raise ValueError(f"{where}: expected a tool call, got {type(item).__name__}")
    kind = d.get("type")
    if kind == "tool_use":
        return ToolRequest(
            _text(d.get("id"), f"{where}.id", _MAX_ID),
            _text(d.get("name"), f"{where}.name", _MAX_NAME),
            d.get("input"),
            "anthropic",
        )
    if kind == "function_call":
        return ToolRequest(
            _text(d.get("call_id"), f"{where}.call_id", _MAX_ID),
            _text(d.get("name"), f"{where}.name", _MAX_NAME),
            d.get("arguments"),
            "responses",
        )
    fn = _as_dict(d.get("function"))
    if isinstance(fn, Mapping) and kind in (None, "function"):
        return ToolRequest(
            _text(d.get("id"), f"{where}.id", _MAX_ID),
            _text(fn.get("name"), f"{where}.function.name", _MAX_NAME),
            fn.get("arguments"),
            "openai",
        )
    if kind in _NOT_CALLS or ("role" in d and kind is None):
        return None
    raise ValueError(
        f"{where}: not a tool call of a known shape (an OpenAI tool_calls item, a "
        f"Responses function_call item or an Anthropic tool_use block); type={kind!r}"
    )


def parse_calls(calls: Any) -> list[ToolRequest]:
    """The tool calls in ``calls``, in order; ValueError if they are not one known shape.

    ``calls``: a list of calls (or of output items/content blocks), an
    assistant message (``tool_calls`` or ``content``), or an object with a
    ``tool_calls`` attribute (a :class:`~agentrt.llm.ModelTurn`).
    """
    items: Any = calls
    turn_calls = getattr(calls, "tool_calls", None)
    if not isinstance(calls, Mapping | list | tuple) and isinstance(turn_calls, list):
        items = turn_calls
    else:
        d = _as_dict(calls)
        if isinstance(d, Mapping):
            if "tool_calls" in d:
                items = d.get("tool_calls") or []
            elif isinstance(d.get("content"), list):
                items = d["content"]
            elif isinstance(d.get("output"), list):
                items = d["output"]
            else:
                items = [d]
    if not isinstance(items, list | tuple):
        raise ValueError(f"expected a list of tool calls, got {type(items).__name__}")
    out = [r for i, c in enumerate(items) if (r := _one(c, f"calls[{i}]")) is not None]
    shapes = {r.shape for r in out}
    if len(shapes) > 1:
        raise ValueError(f"tool calls of different shapes in one turn: {sorted(shapes)}")
    return out


def encode_content(value: Any, max_chars: int | None = None) -> str:
    """A tool's result as the text a model reads: a string as is, anything else as JSON."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = msgspec.json.encode(value, order="deterministic").decode()
        except (TypeError, msgspec.EncodeError):
            text = repr(value)
    if max_chars is not None and len(text) > max_chars:
        text = f"{text[:max_chars]}… [{len(text) - max_chars} more characters cut]"
    return text


def error_content(type_name: str, message: str) -> str:
    """An error answer's text: ``{"error": {"type": ..., "message": ...}}``."""
    return msgspec.json.encode({"error": {"type": type_name, "message": message}}).decode()


def answer(req: ToolRequest, content: str, *, is_error: bool = False) -> dict[str, Any]:
    """The answer to ``req`` in its own shape."""
    if req.shape == "openai":
        return {"role": "tool", "tool_call_id": req.id, "content": content}
    if req.shape == "responses":
        return {"type": "function_call_output", "call_id": req.id, "output": content}
    return {"type": "tool_result", "tool_use_id": req.id, "content": content, "is_error": is_error}
