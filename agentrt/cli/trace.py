"""``agentrt trace``: summarise a trace file written by ``supervise --trace``, draw it as a
Gantt PNG (reading and drawing live in :mod:`agentrt.trace`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agentrt.cli.common import EXIT_CONFIG, EXIT_OK, Subparsers

__all__ = ["add_parser", "command"]


def add_parser(sub: Subparsers) -> None:
    """The ``trace`` subcommand."""
    tp = sub.add_parser(
        "trace",
        help="summarise a trace file written by supervise --trace; render it as a Gantt PNG",
        description="Summarise TRACE (from `supervise --trace`) and optionally draw it.",
        epilog="exit status: 0 ok, 2 not a readable trace",
    )
    tp.add_argument("trace", type=Path, help="trace file (Chrome Trace Event JSON)")
    tp.add_argument("--png", type=Path, metavar="OUT", help="write a Gantt chart here")
    tp.add_argument("--width", type=int, default=1200, help="image width in pixels")
    tp.add_argument("--height", type=int, help="image height in pixels (default: by rows)")


def command(args: argparse.Namespace) -> int:
    """``agentrt trace``: summarise TRACE; with ``--png``, draw it."""
    import importlib.util

    from agentrt.trace import load_trace, render_png

    # matplotlib is the `png` extra: checked before anything is printed
    extra = "pip install 'agentrt[png]' (or leave out --png for the summary alone)"
    if args.png is not None and importlib.util.find_spec("matplotlib") is None:
        print(f"agentrt: trace --png needs matplotlib, not installed: {extra}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        doc = load_trace(args.trace)
    except ValueError as exc:
        print(f"agentrt: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    events = doc["traceEvents"]
    other = doc.get("otherData") or {}
    spans = [e for e in events if isinstance(e, dict) and e.get("ph") == "X"]
    instants = [e for e in events if isinstance(e, dict) and e.get("ph") == "i"]
    print(f"{args.trace}: {len(spans)} spans, {len(instants)} instant events")
    if other.get("run_id"):
        print(f"  run {other['run_id']}: {other.get('status')}")
    if other.get("makespan") is not None:
        print(f"  makespan {float(other['makespan']):.4f}s")
    if other.get("critical_path"):
        print(f"  critical path {' -> '.join(other['critical_path'])}")
    if args.png is not None:
        try:
            out = render_png(doc, args.png, width=args.width, height=args.height)
        except ImportError as exc:  # a matplotlib that is there but broken
            print(
                f"agentrt: trace --png: cannot import matplotlib ({exc}): {extra}", file=sys.stderr
            )
            return EXIT_CONFIG
        except (KeyError, TypeError, ValueError) as exc:
            print(f"agentrt: cannot draw {args.trace}: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        print(f"  wrote {out}")
    return EXIT_OK
