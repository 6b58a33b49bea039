"""Logging set-up (structlog): console or JSON lines, configured once per process."""

from __future__ import annotations

import logging
import sys
from typing import Any, Protocol, TextIO, cast

import structlog

__all__ = ["LineStream", "configure_logging"]


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
