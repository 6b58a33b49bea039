"""Module-level, picklable tasks shared by every runtime in benchmarks/bench_peers.py.

Kept trivial so that the runtime, not the task, is what gets timed.  The
same functions serve agentrt (``entry="peer_tasks:ping"``), the process and
thread pools, loky, pebble and Ray (by reference: ``benchmarks/`` is put on
``PYTHONPATH`` before any worker starts).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import time
from typing import Any


def ping() -> None:
    return None


def echo(x: Any = None) -> Any:
    return x


def whoami(hold: float = 0.0) -> int:
    """This worker's pid, after sleeping ``hold`` seconds (so that N tasks use N workers)."""
    if hold:
        time.sleep(hold)
    return os.getpid()


def die(mode: str = "kill", stamp: str = "") -> int:
    """Write ``time.monotonic_ns()`` to ``stamp``, then die as ``mode`` says.

    ``ok``: do not die, return this worker's pid (the call after a crash);
    ``kill``: SIGKILL to itself; ``exit``: ``os._exit(3)``; ``segv``: read
    address 0 (``ctypes.string_at(0)``).  CLOCK_MONOTONIC is system-wide on
    Linux, so the caller can time its error from the moment of death.
    """
    if mode == "ok":
        return os.getpid()
    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if stamp:
        fd = os.open(stamp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, str(time.monotonic_ns()).encode())
        os.close(fd)
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif mode == "exit":
        os._exit(3)
    elif mode == "segv":
        ctypes.string_at(0)
    time.sleep(60)  # a mode that did not kill: make the caller time out
    return os.getpid()


class Actor:
    """The same tasks as methods, for Ray actors."""

    def ping(self) -> None:
        return None

    def echo(self, x: Any = None) -> Any:
        return x

    def whoami(self, hold: float = 0.0) -> int:
        return whoami(hold)

    def die(self, mode: str = "kill", stamp: str = "") -> int:
        return die(mode, stamp)
