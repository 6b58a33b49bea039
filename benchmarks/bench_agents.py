"""Tiny agents for benchmarks/bench_core.py (kept trivial so the runtime is what gets timed)."""

from __future__ import annotations

import os
from typing import Any


def ping() -> None:
    return None


def echo(x: Any = None) -> Any:
    return x


def whoami() -> int:
    return os.getpid()
