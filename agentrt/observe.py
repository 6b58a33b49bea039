"""Logging set-up (structlog): console or JSON lines, configured once per process."""

from __future__ import annotations

import logging
import sys
from typing import Any, Protocol, TextIO, cast

import structlog

__all__ = ["LineStream", "configure_logging", "library_logger"]


class LineStream(Protocol):
    """What logs are written to: a text stream (stderr, or a live view's console)."""

    def write(self, s: str, /) -> int: ...
    def flush(self) -> None: ...
    def isatty(self) -> bool: ...


_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(
    fmt: str = "console", level: str = "info", stream: LineStream | None = None
) -> None:
    """Route structlog events to ``stream`` (stderr) as console text or JSON lines.

    Events below ``level`` are dropped before any formatting work.  JSON is
    one object per line whatever the stream (a live view prints each line
    above its region, unwrapped).
    """
    if fmt not in ("console", "json"):
        raise ValueError(f"log format must be 'console' or 'json', got {fmt!r}")
    if level not in _LEVELS:
        raise ValueError(f"log level must be one of {', '.join(_LEVELS)}, got {level!r}")
    out: LineStream = stream if stream is not None else sys.stderr
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(cast(TextIO, out)),
        cache_logger_on_first_use=False,
    )


def library_logger(level: str | None = None, name: str = "agentrt") -> Any:
    """The logger agentrt logs through when embedded.

    An application that configured structlog gets agentrt's events through
    its own configuration.  One that did not is not taken over: agentrt then
    writes its events to stderr, at ``level`` and above (``"warning"`` by
    default), with a logger of its own, and configures nothing globally.
    """
    if structlog.is_configured():
        return structlog.get_logger(name)
    lvl = _LEVELS.get(level or "warning")
    if lvl is None:
        raise ValueError(f"log level must be one of {', '.join(_LEVELS)}, got {level!r}")
    return structlog.wrap_logger(
        structlog.PrintLogger(sys.stderr),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_name=name,
    )
