"""Decoding: a mapping of config values into a spec, errors with the key's path."""

from __future__ import annotations

import difflib
import re
import typing
from typing import Any

import msgspec

from agentrt.config.units import choices, dec_hook, say_choices
from agentrt.errors import ConfigError

__all__ = ["convert_spec"]

_T = typing.TypeVar("_T")


def _fields(tp: Any) -> tuple[str, ...]:
    return tuple(f.name for f in msgspec.structs.fields(tp))


def _convert_error(exc: msgspec.ValidationError, prefix: str, tp: Any) -> ConfigError:
    """A decoding error as a :class:`ConfigError` with the key's full dotted path.

    msgspec says where (`` - at `$.limits.memory` ``) in its message; what
    went wrong comes structured from a spec's own check (the ConfigError
    that is the error's cause) or from msgspec's message.
    """
    text = str(exc)
    path = ""
    m = re.search(r" - at `\$(.*)`$", text)
    if m:
        text = text[: m.start()]
        path = m.group(1)
    path = re.sub(r"\[(\d+)\]", r".\1", path).lstrip(".")
    cause = exc.__cause__
    if isinstance(cause, ConfigError):
        path = ".".join(p for p in (path, cause.path) if p)
        text = cause.message
    m3 = re.match(r"^Object contains unknown field `(.*)`$", text)
    if m3:
        key = m3.group(1)
        owner = _struct_at(tp, path)
        path = f"{path}.{key}" if path else key
        text = "unknown key"
        if owner is not None:
            close = difflib.get_close_matches(key, _fields(owner), n=1)
            if close:
                text += f"; did you mean {close[0]!r}?"
    m4 = re.match(r"^Object missing required field `(.*)`$", text)
    if m4:
        path = f"{path}.{m4.group(1)}" if path else m4.group(1)
        text = "required key is missing"
    if re.match(r"^Invalid enum value ", text) and path:
        parent, _, key = path.rpartition(".")
        owner = _struct_at(tp, parent)
        expected = _choices(owner, key) if owner is not None else ""
        if expected:
            text += f"; expected {expected}"
    full = ".".join(p for p in (prefix, path) if p)
    return ConfigError(full, text[:1].lower() + text[1:])


def _choices(owner: Any, key: str) -> str:
    """The values field ``key`` of struct ``owner`` takes, as a config writes
    them; empty where its type is not a choice."""
    hints = {f.name: f.type for f in msgspec.structs.fields(owner)}
    values = choices(hints.get(key))
    return say_choices(values) if values else ""


def _struct_at(tp: Any, path: str) -> Any:
    """The struct type found by following ``path`` from ``tp`` (for suggestions)."""
    for part in [p for p in path.split(".") if p]:
        if part.isdigit():
            continue
        hints = {f.name: f.type for f in msgspec.structs.fields(tp)}
        sub = hints.get(part)
        if sub is None:
            return None
        for cand in getattr(sub, "__args__", (sub,)):
            if isinstance(cand, type) and issubclass(cand, msgspec.Struct):
                sub = cand
                break
        else:
            return None
        tp = sub
    return tp


def _convert(obj: Any, tp: Any, prefix: str) -> Any:
    try:
        return msgspec.convert(obj, tp, dec_hook=dec_hook)
    except msgspec.ValidationError as exc:
        raise _convert_error(exc, prefix, tp) from None


def convert_spec(obj: Any, tp: type[_T], where: str = "") -> _T:
    """``obj`` (a mapping of config values, as TOML has them) as the spec ``tp``.

    Durations and sizes may be strings (``"30s"``, ``"256MiB"``); errors are
    :class:`ConfigError` naming the key under ``where``.
    """
    result: _T = _convert(obj, tp, where)
    return result
