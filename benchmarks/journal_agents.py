"""Agents for benchmarks/bench_journal.py: a no-op task that counts its calls.

Preloaded by the zygote (``Supervisor(preload=["journal_agents"])``).  ``Tiny``
is a class, so each replica has one instance and its own count: with a pool
of one replica, ``sup.call("tiny", method="calls")`` is every call the agent
has served (that call not counted), which is how the benchmark checks that a
resumed run ran nothing again.
"""

from __future__ import annotations


class Tiny:
    """A task that does nothing; ``calls`` says how many tasks this replica ran."""

    def __init__(self) -> None:
        self.n = 0

    async def run(self, i: int = 0) -> int:
        """The task: counts itself, returns its argument."""
        self.n += 1
        return i

    async def calls(self) -> int:
        """How many ``run`` calls this replica has served."""
        return self.n
