"""What ``standby = true`` buys a crashed replica's next call, on this machine.

One supervisor (``preload=["peer_tasks"]``, intensity 1,000); for each
repetition and each way of dying (``kill``: SIGKILL to itself, ``exit``:
``os._exit(3)``, ``segv``), with and without a standby alternately (which
goes first alternates too), as ``bench_peers.py``'s crash test does: a new
agent ``peer_tasks:die`` (one replica) is started, answers one call, is
left 20 ms (and until its standby, if any, is ready), then dies in a call, which
writes ``time.monotonic_ns()`` just before.  Reported, medians and min-max
over the repetitions, in ms: death to the caller's error, the caller's error
to the next call's answer (the replacement's), and death to that answer.

``--pool N`` starts an agent of N more replicas first (``peer_tasks:whoami``):
what a death costs with that many processes alive.

    python benchmarks/bench_standby.py [--reps 15] [--pool 0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(BENCH_DIR), os.environ.get("PYTHONPATH", "")) if p
)

from common import standby_ready  # noqa: E402

from agentrt import AgentSpec, Supervisor  # noqa: E402

MODES = ("kill", "exit", "segv")


async def crash_once(
    sup: Supervisor, name: str, mode: str, stamp: str, standby: bool
) -> tuple[float, float]:
    await sup.start(AgentSpec(name=name, entry="peer_tasks:die", standby=standby))
    try:
        await sup.call(name, {"mode": "ok"})
        # The same settling time either way (the zygote refills its spares
        # meanwhile), and the standby, if any, ready.
        await asyncio.sleep(0.02)
        if standby:
            await standby_ready(sup, name)
        try:
            await sup.call(name, {"mode": mode, "stamp": stamp}, timeout=5)
            raise RuntimeError(f"{mode}: the call returned")
        except Exception:
            t_err = time.monotonic_ns()
        await sup.call(name, {"mode": "ok"}, timeout=5)
        t_served = time.monotonic_ns()
    finally:
        await sup.stop(name)
    with open(stamp) as f:  # noqa: ASYNC230 (a few bytes, after the timed part)
        t_death = int(f.read())
    return (t_err - t_death) / 1e6, (t_served - t_err) / 1e6


def _fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs):5.2f} ({min(xs):.2f}-{max(xs):.2f})"


async def main(reps: int, pool: int) -> None:
    tmp = tempfile.mkdtemp()
    rows: dict[tuple[str, bool], list[tuple[float, float]]] = {}
    settings = {"intensity": 1000, "log_level": "error", "max_agents": pool + 100}
    async with Supervisor(preload=["peer_tasks"], **settings) as sup:
        if pool:
            await sup.start(
                AgentSpec(
                    name="pool", entry="peer_tasks:whoami", replicas=pool, startup_timeout=120
                )
            )
        for r in range(reps):
            for mode in MODES:
                order = (False, True) if r % 2 == 0 else (True, False)
                for standby in order:
                    name = f"die-{mode}-{r}-{int(standby)}"
                    stamp = os.path.join(tmp, name)
                    rows.setdefault((mode, standby), []).append(
                        await crash_once(sup, name, mode, stamp, standby)
                    )
    print(f"{reps} crashes per row, {pool} other replicas alive, ms: median (min-max)")
    heads = ("death->error", "error->served", "death->served")
    print(f"{'death':5s} {'standby':8s} " + " ".join(f"{h:>22s}" for h in heads))
    for (mode, standby), recs in rows.items():
        errs = [e for e, _ in recs]
        after = [a for _, a in recs]
        full = [e + a for e, a in recs]
        print(f"{mode:5s} {standby!s:8s} {_fmt(errs):>22s} {_fmt(after):>22s} {_fmt(full):>22s}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--pool", type=int, default=0, help="replicas of another agent alive")
    args = ap.parse_args()
    asyncio.run(main(args.reps, args.pool))
