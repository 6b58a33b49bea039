"""The ``agentrt`` command (the only package that prints and exits).

Commands::

    agentrt supervise CONFIG [-o results.json] [--trace run.trace.json] [--live|--no-live]
                             [--log-format console|json] [--log-level info]
    agentrt ctl [--run ID] [--json] status | agents | tasks | audit
    agentrt ctl pause [TARGET] | resume [TARGET]
    agentrt ctl cancel TASK | --agent NAME | --run [ID]   [--reason TEXT]
    agentrt ctl approve ID [--reason TEXT] [--args JSON] | deny ID [--reason TEXT]
    agentrt ctl stop [--now] [--reason TEXT] | tail [-n N] [--no-follow]
    agentrt runs [CONFIG] [--journal FILE] [--json] [-n N]
    agentrt show RUN_ID|last [CONFIG] [--journal FILE] [--json]
    agentrt validate CONFIG
    agentrt doctor
    agentrt trace TRACE [--png out.png] [--width PX] [--height PX]
    agentrt bench [--quick] [--only NAMES] [--json DIR] [--png FILE]

Exit codes: 0 every task succeeded (or a clean stop; a valid config; a
report written; a control request done), 1 a task or agent failed (or the
supervisor refused a control request), 2 the configuration, the trace file
or the command line is invalid (or no live run is reachable; or the journal
or the run named is missing or unreadable), 130 interrupted.  ``runs`` and
``show`` exit 0 whenever they could show what was asked, whatever the run's
own status.

Rooms: one module per command (``supervise``, ``ctl``, ``runs`` -- also
``show`` --, ``validate``, ``doctor``, ``trace``, ``bench``), each with its
``add_parser`` and ``command``; ``common`` holds the exit statuses. This module
assembles the parser and dispatches.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import sys
import threading
from collections.abc import Callable
from typing import NoReturn

from agentrt import __version__
from agentrt.cli import bench, ctl, doctor, runs, supervise, trace, validate
from agentrt.cli.common import EXIT_CONFIG as EXIT_CONFIG
from agentrt.cli.common import EXIT_FAILED as EXIT_FAILED
from agentrt.cli.common import EXIT_HELP
from agentrt.cli.common import EXIT_INTERRUPTED as EXIT_INTERRUPTED
from agentrt.cli.common import EXIT_OK as EXIT_OK
from agentrt.cli.validate import validate_config as validate_config

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="agentrt",
        description="A process-isolated runtime for parallel AI agents.",
        epilog=EXIT_HELP,
    )
    p.add_argument("--version", action="version", version=f"agentrt {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # in this order in --help
    supervise.add_parser(sub)
    ctl.add_parser(sub)
    runs.add_parser(sub)
    validate.add_parser(sub)
    doctor.add_parser(sub)
    trace.add_parser(sub)
    bench.add_parser(sub)
    return p


def run() -> NoReturn:
    """The ``agentrt`` command: :func:`main`, then out without the interpreter's
    teardown.

    Once a command is done, what a normal exit has left to do is free every
    object of every module imported (60-110 ms here: ``agentrt validate``
    took 545 ms with it, 437 without), which the kernel does anyway when
    the process ends.  The
    exit handlers run and the standard streams are flushed first, as on a
    normal exit; an exception, or a thread still running that is not a
    daemon, takes the normal way out.
    """
    code = main()
    main_thread = threading.main_thread()
    if any(t is not main_thread and not t.daemon for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # (a closed pipe: what is lost is lost)
            stream.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """The ``agentrt`` command's work (in process: the exit status is returned)."""
    args = _parser().parse_args(argv)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "supervise": supervise.command,
        "ctl": ctl.command,
        "runs": runs.command,
        "show": runs.show_command,
        "validate": validate.command,
        "doctor": doctor.command,
        "trace": trace.command,
        "bench": bench.command,
    }
    cmd = commands.get(args.command)
    return cmd(args) if cmd is not None else EXIT_CONFIG
