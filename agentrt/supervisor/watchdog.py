"""The limits watchdog: a replica's whole tree held to its memory and CPU time limits.

The kernel enforces what it can per process (RLIMIT_AS, RLIMIT_CPU) and, in
a replica's cgroup, for the tree (memory, processes).  What it cannot do,
this does every ``INTERVAL`` seconds, off the event loop: a replica whose
group saw the OOM killer act (on it or on anything it started), whose tree
used more CPU time than ``cpu_time``, or whose resident memory passes
``memory`` (summed over its tree where it has no cgroup) is killed with a
:class:`LimitExceeded` naming the limit.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from agentrt.errors import LimitExceeded
from agentrt.process import AgentProcess
from agentrt.sandbox import Cgroups

__all__ = ["INTERVAL", "Reading", "check", "read"]

#: seconds between two looks
INTERVAL = 0.2


@dataclass(frozen=True, slots=True)
class Reading:
    """What one look found for one replica."""

    rss: int | None  # bytes: the replica's own with a cgroup, its tree's without
    cpu: float | None  # seconds: its tree's
    oom_kills: int  # in its group


def read(proc: AgentProcess) -> Reading:
    """One replica's reading (blocking: /proc and cgroup files)."""
    groups = list(proc.boot.cgroups)
    if groups:
        return Reading(proc.rss(), Cgroups.cpu_usage(groups), Cgroups.oom_kills(groups))
    return Reading(*_tree_usage(proc.pid), 0)


def check(proc: AgentProcess, reading: Reading) -> LimitExceeded | None:
    """The limit ``reading`` shows the replica passed, if any."""
    boot = proc.boot
    kw = {"agent": boot.agent, "pid": proc.pid}
    if reading.oom_kills and boot.memory is not None:
        return LimitExceeded(
            f"its process tree passed the memory limit of {boot.memory} bytes "
            f"(the OOM killer acted {reading.oom_kills} time(s) in its group)",
            limit="memory",
            value=boot.memory,
            **kw,
        )
    if boot.memory is not None and reading.rss is not None and reading.rss > boot.memory:
        whose = "RSS" if boot.cgroups else "RSS of its process tree"
        return LimitExceeded(
            f"{whose} of {reading.rss} bytes exceeds the memory limit of {boot.memory} bytes",
            limit="memory",
            value=boot.memory,
            **kw,
        )
    if boot.cpu_time is not None and reading.cpu is not None and reading.cpu > boot.cpu_time:
        return LimitExceeded(
            f"its process tree used {reading.cpu:.2f}s of CPU, past the limit of "
            f"{boot.cpu_time:g}s",
            limit="cpu_time",
            value=boot.cpu_time,
            **kw,
        )
    return None


async def watch(procs: list[AgentProcess]) -> None:
    """One look at ``procs``: kill each that passed a limit."""
    readings = await asyncio.to_thread(lambda: [read(p) for p in procs])
    for proc, reading in zip(procs, readings, strict=True):
        err = check(proc, reading) if proc.alive else None
        if err is not None:
            proc.kill(err)


def _tree_usage(root: int) -> tuple[int | None, float | None]:
    """(RSS bytes, CPU seconds) of ``root`` and its live descendants; ``root``'s
    CPU includes its children that it reaped."""
    import psutil

    try:
        top = psutil.Process(root)
        procs = [top, *top.children(recursive=True)]
    except psutil.Error:
        return None, None
    rss = 0
    cpu = 0.0
    for p in procs:
        try:
            rss += p.memory_info().rss
            t = p.cpu_times()
            cpu += t.user + t.system
            if p is top:
                cpu += t.children_user + t.children_system
        except psutil.Error:
            continue
    return rss, cpu
