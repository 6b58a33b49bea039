"""Durations and sizes: parsed once, held as float seconds and int bytes;
and the values a choice (a ``Literal``) takes, as a config writes them.

A config may write ``"200us"``, ``"500ms"``, ``"30s"``, ``"2m"``, ``"1h"`` or
``"512KiB"``, ``"256MiB"``, ``"1GB"``; the decoder (:func:`dec_hook`) turns
them into numbers, with sane maxima, the one time they are read.
"""

from __future__ import annotations

import math
import re
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Literal

__all__ = [
    "BRUTAL_KILL",
    "INFINITY",
    "MAX_ARGS_DEPTH",
    "MAX_BYTES",
    "MAX_FRAME",
    "MAX_SECONDS",
    "MIN_FRAME",
    "NAME_RE",
    "Bytes",
    "Grace",
    "Seconds",
    "choices",
    "dec_hook",
    "parse_duration",
    "parse_grace",
    "parse_size",
    "say_choices",
]

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_DURATION_UNITS = {"us": 1e-6, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}
#: the longest ``spin`` accepted (beyond it, polling costs more CPU than a wake-up)
_MAX_SPIN = 0.01
_NUM_UNIT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")
#: the longest duration accepted (about 31 years): a larger one is a mistake
MAX_SECONDS: Final = 1e9
#: the largest size accepted (1 PiB)
MAX_BYTES: Final = 2**50
#: frames: at least this (a Call with its arguments must fit), at most 1 GiB
MIN_FRAME: Final = 64 * 1024
MAX_FRAME: Final = 2**30
#: how deeply task arguments may nest
MAX_ARGS_DEPTH: Final = 64
#: agent and tool names become file and cgroup names: letters, digits, _ - .
NAME_RE: Final = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")


def parse_size(value: int | str) -> int:
    """``"256MiB"`` -> ``268435456``; an int is bytes already."""
    if isinstance(value, bool):
        raise ValueError('expected a size like "256MiB"')
    if isinstance(value, int):
        n = int(value)
    elif isinstance(value, str):
        m = _NUM_UNIT.match(value)
        unit = m.group(2).lower() if m else None
        if m is None or unit not in _SIZE_UNITS:
            raise ValueError(f'expected a size like "256MiB", got {value!r}')
        n = int(float(m.group(1)) * _SIZE_UNITS[unit])
    else:
        raise ValueError(f'expected a size like "256MiB", got a {type(value).__name__}')
    if n < 0:
        raise ValueError("a size cannot be negative")
    if n > MAX_BYTES:
        raise ValueError(f"a size must be at most 1PiB ({MAX_BYTES} bytes), got {n}")
    return n


def parse_duration(value: float | int | str) -> float:
    """``"500ms"`` -> ``0.5``; ``"2m"`` -> ``120.0``; a number is seconds."""
    if isinstance(value, bool):
        raise ValueError('expected a duration like "30s"')
    if isinstance(value, int | float):
        try:
            t = float(value)
        except OverflowError:  # an int too large for a float
            t = math.inf
    elif isinstance(value, str):
        m = _NUM_UNIT.match(value)
        unit = m.group(2).lower() if m else None
        if m is None or unit not in _DURATION_UNITS:
            raise ValueError(f'expected a duration like "500ms", "30s" or "2m", got {value!r}')
        t = float(m.group(1)) * _DURATION_UNITS[unit]
    else:
        raise ValueError(f'expected a duration like "30s", got a {type(value).__name__}')
    if math.isnan(t) or t < 0:
        raise ValueError("a duration cannot be negative")
    if t > MAX_SECONDS:
        raise ValueError(
            f"a duration must be at most {MAX_SECONDS:g}s (about 31 years), got {value}"
        )
    return t


#: ``shutdown_timeout = "brutal_kill"`` (or 0): SIGKILL at once, as OTP's ``brutal_kill``
BRUTAL_KILL: Final = 0.0
#: ``shutdown_timeout = "infinity"``: wait for the replica however long it takes
INFINITY: Final = math.inf


def parse_grace(value: float | int | str) -> float:
    """A ``shutdown_timeout``: a duration, ``"brutal_kill"`` (0.0) or ``"infinity"``."""
    if value == "brutal_kill":
        return BRUTAL_KILL
    if value == "infinity" or (isinstance(value, float) and value == INFINITY):
        return INFINITY
    try:
        return parse_duration(value)
    except ValueError:
        raise ValueError(
            f'expected a duration like "2s", "brutal_kill" or "infinity", got {value!r}'
        ) from None


# Static checkers see plain float / int.  At run time each name is a marker
# class that tells the decoder (_dec_hook) which parser a config value needs;
# _Spec turns the decoded marker back into a plain number.
if TYPE_CHECKING:
    Seconds = float
    Bytes = int
    Grace = float
else:

    class Seconds(float):
        """A duration: seconds, or ``"200us"``, ``"500ms"``, ``"30s"``, ``"2m"``, ``"1h"``."""

    class Bytes(int):
        """A size: bytes, or ``"512KiB"``, ``"256MiB"``, ``"1GB"``."""

    class Grace(float):
        """A ``shutdown_timeout``: a duration, ``"brutal_kill"`` or ``"infinity"``."""


_Parser = Callable[[Any], float | int]
_PARSERS: dict[type, _Parser] = {Seconds: parse_duration, Bytes: parse_size, Grace: parse_grace}


def dec_hook(tp: type, obj: Any) -> Any:
    """msgspec's decoding hook: a config's duration or size becomes its number."""
    parse = _PARSERS.get(tp)
    if parse is None:
        raise NotImplementedError(f"no decoder for {tp!r}")
    return tp(parse(obj))


def choices(tp: Any) -> tuple[Any, ...]:
    """The values a choice type takes: a ``Literal``'s, with ``True`` and
    ``False`` where it is in a union with ``bool`` and ``None`` where with
    ``None``; empty for a type that is not a choice."""
    if typing.get_origin(tp) is Literal:
        return typing.get_args(tp)
    args = typing.get_args(tp)
    if not any(typing.get_origin(a) is Literal for a in args):
        return ()
    out: list[Any] = []
    for a in args:
        if a is bool:
            out += [True, False]
        elif a is type(None):
            out.append(None)
        elif typing.get_origin(a) is Literal:
            out += typing.get_args(a)
        else:
            return ()  # (a choice or something else: not a choice alone)
    return tuple(out)


def say_choices(values: tuple[Any, ...]) -> str:
    """``true, false or "auto"``: the values as a config writes them."""
    shown = [
        "true" if v is True else "false" if v is False else f'"{v}"'
        for v in values
        if v is not None
    ]
    return f"{', '.join(shown[:-1])} or {shown[-1]}" if len(shown) > 1 else "".join(shown)
