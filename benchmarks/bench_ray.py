"""The ``ray`` backend beside the ``local`` one, measured in the same run.

1. **transport**: what one call costs.  A Ray actor method call that carries
   a frame's bytes and returns them (``await actor.echo.remote(b)``: the
   other way a replica's protocol could travel) against agentrt's call round
   trip on each backend (``sup.call("echo")`` one at a time: on ``ray`` the
   frames travel on a TCP stream between the supervisor and the replica's
   process).  Also ``Supervisor.map`` of 1,000 calls, per call.
2. **start-up**: ``sup.start`` of 50 replicas until each has sent Ready
   (on ``ray``: 50 actors placed, each starting the replica's process).
3. **swarm**: ``bench_swarm``'s coordinator and swarm (N workers x 13
   sequential 50 ms tool calls), on each backend: start-up, makespan and
   parallel efficiency.

Ray runs as a local instance on this machine (``address = "local"``):
the figures are Ray's own overheads, not a network's.

Usage::

    python benchmarks/bench_ray.py [--quick] [--json FILE|-]

``--quick``: fewer calls and N = 20 workers.  Needs ``agentrt[ray]``;
without Ray it says so and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import structlog
from bench_swarm import QUICK as SWARM_QUICK
from bench_swarm import swarm
from common import emit, get, machine, table

from agentrt import AgentSpec, Supervisor

BENCH_DIR = Path(__file__).resolve().parent


class Params(msgspec.Struct, frozen=True):
    calls: int
    map_calls: int
    replicas: int
    workers: int
    reps: int


QUICK = Params(calls=300, map_calls=1000, replicas=50, workers=20, reps=2)
FULL = Params(calls=2000, map_calls=1000, replicas=50, workers=50, reps=3)


def _progress(msg: str) -> None:
    print(f"[bench_ray] {msg}", file=sys.stderr, flush=True)


async def _round_trips(sup: Supervisor, n: int) -> float:
    """Seconds per call, one at a time."""
    for _ in range(20):
        await sup.call("echo", {"x": 1})
    t0 = time.perf_counter()
    for _ in range(n):
        await sup.call("echo", {"x": 1})
    return (time.perf_counter() - t0) / n


async def backend(name: str, p: Params) -> dict[str, Any]:
    out: dict[str, Any] = {}
    settings: dict[str, Any] = {"backend": name, "preload": ["swarm_agents"]}
    if name == "ray":
        settings["address"] = "local"
    t0 = time.perf_counter()
    async with Supervisor(base_dir=BENCH_DIR, **settings) as sup:
        out["open_s"] = time.perf_counter() - t0
        await sup.start(AgentSpec(name="echo", entry="swarm_agents:echo"))
        out["round_trip_us"] = [await _round_trips(sup, p.calls) * 1e6 for _ in range(p.reps)]
        t0 = time.perf_counter()
        await sup.map("echo", [{"i": i} for i in range(p.map_calls)])
        out["map_per_call_us"] = (time.perf_counter() - t0) / p.map_calls * 1e6
        _progress(f"{name}: round trip {statistics.median(out['round_trip_us']):.0f} us")
        starts = []
        for _ in range(p.reps):
            t0 = time.perf_counter()
            await sup.start(
                AgentSpec(
                    name="many",
                    entry="swarm_agents:echo",
                    replicas=p.replicas,
                    startup_timeout=300,
                )
            )
            starts.append(time.perf_counter() - t0)
            await sup.stop("many")
        out["start_s"] = starts
        _progress(f"{name}: {p.replicas} replicas ready in {statistics.median(starts):.2f} s")
        sw = msgspec.structs.replace(SWARM_QUICK, workers=p.workers, swarm_reps=p.reps)
        out["swarm"] = await swarm(sup, sw)
    return out


async def ray_method_floor(p: Params) -> dict[str, Any]:
    """A Ray actor method call carrying a frame's bytes, one at a time."""
    import ray

    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    try:

        @ray.remote(num_cpus=0)
        class Echo:
            def echo(self, b: bytes) -> bytes:
                return b

        actor = Echo.remote()
        frame = b"\x00" * 64
        for _ in range(20):
            await actor.echo.remote(frame)
        reps = []
        for _ in range(p.reps):
            t0 = time.perf_counter()
            for _ in range(p.calls):
                await actor.echo.remote(frame)
            reps.append((time.perf_counter() - t0) / p.calls * 1e6)
        return {"method_call_us": reps}
    finally:
        ray.shutdown()


def _med(xs: list[float] | None) -> float | None:
    return statistics.median(xs) if xs else None


def render(report: dict[str, Any]) -> str:
    r = report["results"]
    m = report["machine"]
    lines = [
        f"agentrt bench_ray: the ray backend beside local, one run "
        f"({m['cores']} cores, Python {m['python']}, Ray {r.get('ray_version', '?')})",
    ]
    rows: list[tuple[str, str, str, str]] = []
    floor = _med(get(r, "floor", "method_call_us"))
    loc, ray_ = r.get("local", {}), r.get("ray", {})

    def fmt(v: float | None, f: str) -> str:
        return "" if v is None else format(v, f)

    rt_l, rt_r = _med(loc.get("round_trip_us")), _med(ray_.get("round_trip_us"))
    rows.append(
        ("ray actor method call (bytes), round trip us", fmt(floor, ".0f"), "", "the other way")
    )
    rows.append(("call round trip, local us", fmt(rt_l, ".0f"), "", ""))
    note = f"{rt_r / floor:.2f}x the method call" if rt_r and floor else ""
    rows.append(("call round trip, ray (TCP stream) us", fmt(rt_r, ".0f"), "", note))
    rows.append(("map per call, local us", fmt(loc.get("map_per_call_us"), ".1f"), "", ""))
    rows.append(("map per call, ray us", fmt(ray_.get("map_per_call_us"), ".1f"), "", ""))
    st_l, st_r = _med(loc.get("start_s")), _med(ray_.get("start_s"))
    n = report["params"]["replicas"]
    rows.append((f"start {n} replicas, local s", fmt(st_l, ".2f"), "", ""))
    note = f"{st_r / st_l:.0f}x local" if st_r and st_l else ""
    rows.append((f"start {n} replicas, ray s", fmt(st_r, ".2f"), "", note))
    for name, d in (("local", loc), ("ray", ray_)):
        sw = d.get("swarm", {})
        if "efficiency" in sw:
            rows.append(
                (
                    f"swarm N={sw['workers']} efficiency warm / with start-up, {name}",
                    f"{sw['efficiency']:.2f}",
                    "",
                    f"{sw['efficiency_with_startup']:.2f} with start-up "
                    f"({sw['startup_s']:.2f} s start-up)",
                )
            )
    for name, d in r.items():
        if isinstance(d, dict) and "error" in d:
            rows.append((f"{name} FAILED", "", "", d["error"][:80]))
    return table(lines, rows, report["elapsed_s"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON ('-': stdout)")
    ap.add_argument("--quick", action="store_true", help="fewer calls, N = 20 workers")
    args = ap.parse_args(argv)
    try:
        import ray
    except ImportError:
        print("bench_ray: Ray is not installed (pip install 'agentrt[ray]'): skipped")
        return 0
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    p = QUICK if args.quick else FULL
    t0 = time.perf_counter()
    results: dict[str, Any] = {"ray_version": ray.__version__}
    for name, run in (
        ("floor", lambda: ray_method_floor(p)),
        ("local", lambda: backend("local", p)),
        ("ray", lambda: backend("ray", p)),
    ):
        try:
            results[name] = asyncio.run(run())
        except Exception as exc:
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            _progress(f"{name} FAILED: {type(exc).__name__}: {exc}")
    report = {
        "benchmark": "agentrt bench_ray",
        "quick": args.quick,
        "machine": machine(),
        "params": msgspec.to_builtins(p),
        "results": results,
        "elapsed_s": time.perf_counter() - t0,
    }
    emit(report, render, args.json)
    return 1 if any(isinstance(v, dict) and "error" in v for v in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
