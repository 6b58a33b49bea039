"""What every benchmark script shares: the machine description, summaries and the output."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO


def machine() -> dict[str, Any]:
    """Printed beside every figure: cores, Python, kernel, architecture."""
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "machine": platform.machine(),
    }


def emit(
    report: dict[str, Any], render: Callable[[dict[str, Any]], str], json_to: str | None
) -> None:
    """Print the table (to stderr when the JSON goes to stdout) and write the JSON."""
    table_out: TextIO = sys.stderr if json_to == "-" else sys.stdout
    print(render(report), file=table_out)
    if json_to:
        text = json.dumps(report, indent=2, sort_keys=False)
        if json_to == "-":
            print(text)
        else:
            Path(json_to).parent.mkdir(parents=True, exist_ok=True)
            Path(json_to).write_text(text + "\n")


def table(lines: list[str], rows: list[tuple[str, str, str, str]], elapsed: float) -> str:
    """``lines`` (the heading) then the aligned measure/median/min-max/aim rows."""
    head = ("measure", "median", "min-max", "aim / note")
    w = [max([len(h)] + [len(x[i]) for x in rows]) for i, h in enumerate(head)]
    fmt = f"{{:<{w[0]}}}  {{:>{w[1]}}}  {{:<{w[2]}}}  {{}}"
    lines = [*lines, fmt.format(*head).rstrip(), "-" * (sum(w) + 6 + 10)]
    lines.extend(fmt.format(*x).rstrip() for x in rows)
    lines.append(f"(took {elapsed:.1f} s)")
    return "\n".join(lines)


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median and min-max of per-repetition figures."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def get(d: Any, *keys: str) -> Any:
    """``d[k1][k2]...``, or None where a key is missing (a section that did not run)."""
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def min_max(d: dict[str, float] | None, fmt: str) -> str:
    """A spread's "min-max" for a table cell; empty when there is only one value."""
    if not d or d["min"] == d["max"]:
        return ""
    return f"{format(d['min'], fmt)}-{format(d['max'], fmt)}"


def met(flag: bool | None) -> str:
    """An aim's verdict for a table cell."""
    return {True: "yes", False: "NO", None: "n/a"}[flag]


async def standby_ready(sup: Any, name: str, within: float = 5.0) -> None:
    """Wait until agent ``name``'s standby is ready (it is made in the
    background after the agent's start): a bounded poll of the pool's state."""
    agent = sup._pool.agents[name]
    deadline = time.monotonic() + within
    while agent.standby is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name}: no standby within {within:g}s")
        await asyncio.sleep(0.002)
