"""Core benchmark of agentrt: call latency, throughput, startup and memory.

Everything is measured in one run, on this machine, so that the ratios are
against a floor measured under the same conditions:

1. **floor**: a raw ping-pong between this process and a forked child over
   two pipes (``os.pipe``), framed exactly like agentrt (``FrameEncoder`` /
   ``FrameDecoder``: a 4-byte big-endian length and a msgspec MessagePack
   ``Call``/``Result``), with blocking reads and writes on both sides.  This
   is the least a round trip through a process boundary costs in Python.
   p50/p99 round trip in µs.  Beside it, the **asyncio floor**: the same
   child driven from this process's event loop (the answer read by a loop
   reader that resolves a future, as the supervisor reads a replica): the
   least an asyncio caller pays.  The call's aim is 1.5x of either.
2. **call**: ``await sup.call("ping")`` in sequence on one replica (tiny
   payload), p50/p99 in µs, and its ratio to the floor.  Floor and call run
   in short alternating blocks (50 x 100 round trips each) so that both see
   the same machine even when its speed drifts (virtual machines); the
   percentiles are over all round trips, the min-max is that of the blocks'
   p50.  The ratio judged against the aim is the median over the pairs of
   blocks of (call block p50 / floor block p50): pooled p50s of a bimodal
   machine can fall in different modes and swing the plain ratio.  A third
   block each time: the same agent with ``spin = 0`` (its replica sleeps at
   once after answering), what polling for the next call buys.
3. **bulk**: 10,000 tiny calls at once through ``Supervisor.map`` to an
   agent of two replicas: wall time per call in µs (aim: 10 µs).
4. **startup**: for N = 1, 50, 300, 1,000 replicas, each in a fresh Supervisor (its
   zygote already up), the time from the start of ``sup.start()`` until all
   N replicas have answered a ping (N concurrent calls: least-loaded
   dispatch gives each idle replica one; the answers carry the pid, so that
   N distinct replicas answering is checked).  The time ``start()`` alone
   took (all N sent ``Ready``) and the time to close are shown beside it.
   Its floors: the time this process takes to fork N bare children that each
   write a byte on a pipe (what a fork costs depends on the machine), and
   the same from a minimal interpreter (``python -S``, nothing imported):
   the aim is 1,000 ready within 6x the latter.
5. **pss**: proportional set size of each idle replica (``Pss:`` of
   ``/proc/PID/smaps_rollup``) once the largest N is up and has answered:
   mean and median MiB (USS and RSS beside it).
6. **payload**: echo of ``bytes`` payloads of 1 KiB, 64 KiB, 1 MiB and
   16 MiB, in MB/s (10^6 bytes; the payload is counted once although it
   travels both ways), for agentrt and for the floor's child.

Figures are medians over repetitions with the min-max beside them.  The
aims printed next to them: round trip within 1.5x the floor, 300 replicas
ready in under 0.5 s, PSS under 3 MiB per idle replica.

Usage::

    python benchmarks/bench_core.py [--quick] [--method zygote] [--json FILE|-]

``--quick`` runs fewer iterations and N up to 50 only.  With ``--json -``
the JSON goes to stdout and the table to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import math
import os
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import structlog
from common import emit, machine, met, min_max, spread, table

from agentrt import AgentSpec, Supervisor
from agentrt.protocol import (
    AgentMessage,
    Call,
    FrameDecoder,
    FrameEncoder,
    Result,
    SupervisorMessage,
)

BENCH_DIR = Path(__file__).resolve().parent

AIM_RTT_RATIO = 1.5
AIM_BULK_US = 10.0
AIM_READY_300_S = 0.5
#: 300 replicas from 300 spares waiting (issue aim: 300 ready in 0.3 s)
AIM_WARM_300_S = 0.3
#: 1,000 replicas ready within this many times the minimal interpreter's fork floor
AIM_MINIMAL_RATIO = 6.0
AIM_PSS_MIB = 3.0
STATUS_TIMEOUT_S = 20.0

_READ_SIZE = 1 << 18
_PIPE_SIZE = 1 << 20
_SIZES = [("1 KiB", 1 << 10), ("64 KiB", 1 << 16), ("1 MiB", 1 << 20), ("16 MiB", 1 << 24)]


def _progress(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# --- statistics ---------------------------------------------------------------


def pct(sorted_xs: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    n = len(sorted_xs)
    return sorted_xs[min(n - 1, max(0, math.ceil(q * n) - 1))]


def latency_summary(blocks: list[list[int]]) -> dict[str, Any]:
    """p50/p99 (µs) over all round trips (ns), and the spread of the blocks' p50."""
    pooled = sorted(x for b in blocks for x in b)
    block_p50 = [pct(sorted(b), 0.50) / 1e3 for b in blocks]
    return {
        "p50_us": pct(pooled, 0.50) / 1e3,
        "p99_us": pct(pooled, 0.99) / 1e3,
        "block_p50_us": spread(block_p50),
        "iterations": len(pooled),
        "blocks": len(blocks),
    }


# --- the floor: framed ping-pong with a forked child ---------------------------------


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _floor_child(rfd: int, wfd: int) -> None:
    enc = FrameEncoder()
    dec = FrameDecoder(SupervisorMessage)
    while True:
        chunk = os.read(rfd, _READ_SIZE)
        if not chunk:
            return
        for msg in dec.feed(chunk):
            _write_all(wfd, enc.encode(Result(msg.id, msg.args.get("x"))))


class Floor:
    """A forked child answering ``Call`` frames with ``Result`` frames, blocking I/O."""

    def __init__(self) -> None:
        child_r, parent_w = os.pipe()
        parent_r, child_w = os.pipe()
        # 1 MiB both ways, the best a pipe does here (agentrt enlarges only the
        # supervisor-to-replica pipe, once a frame over 64 KiB goes that way).
        for fd in (parent_w, child_w):
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.close(parent_w)
                os.close(parent_r)
                _floor_child(child_r, child_w)
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        os.close(child_r)
        os.close(child_w)
        self.pid, self.rfd, self.wfd = pid, parent_r, parent_w
        self.enc = FrameEncoder()
        self.dec = FrameDecoder(AgentMessage)
        self.next_id = 0

    def call(self, args: dict[str, Any]) -> Any:
        self.next_id += 1
        _write_all(self.wfd, self.enc.encode(Call(self.next_id, "", args, 0.0)))
        while True:
            chunk = os.read(self.rfd, _READ_SIZE)
            if not chunk:
                raise EOFError("floor child exited")
            msgs = self.dec.feed(chunk)
            if msgs:
                return msgs[0].value

    def round_trips(self, n: int) -> list[int]:
        out = [0] * n
        clock = time.perf_counter_ns
        call = self.call
        empty: dict[str, Any] = {}
        for i in range(n):
            t0 = clock()
            call(empty)
            out[i] = clock() - t0
        return out

    async def async_round_trips(self, n: int) -> list[int]:
        """The same round trips driven from this process's event loop, as agentrt's
        supervisor drives a replica: the answer is read by a loop reader that
        resolves a future (the asyncio pipe ping-pong floor)."""
        loop = asyncio.get_running_loop()
        waiting: list[asyncio.Future[Any]] = []

        def on_readable() -> None:
            chunk = os.read(self.rfd, _READ_SIZE)
            for msg in self.dec.feed(chunk):
                if waiting and not waiting[0].done():
                    waiting.pop().set_result(msg.value)

        out = [0] * n
        clock = time.perf_counter_ns
        empty: dict[str, Any] = {}
        loop.add_reader(self.rfd, on_readable)
        try:
            for i in range(n):
                t0 = clock()
                fut = loop.create_future()
                waiting.append(fut)
                self.next_id += 1
                _write_all(self.wfd, self.enc.encode(Call(self.next_id, "", empty, 0.0)))
                await fut
                out[i] = clock() - t0
        finally:
            loop.remove_reader(self.rfd)
        return out

    def close(self) -> None:
        os.close(self.wfd)
        os.close(self.rfd)
        os.waitpid(self.pid, 0)


def fork_floor(n: int) -> float:
    """Seconds for this process to fork ``n`` bare children that each report on a pipe.

    The children stay alive until all have reported (as replicas do), then
    exit on EOF of a second pipe and are reaped.  This process has imported
    agentrt, msgspec and structlog much as the zygote has, so it is the
    least that forking N replicas costs on this machine.
    """
    rd, wr = os.pipe()
    hold_r, hold_w = os.pipe()
    pids: list[int] = []
    t0 = time.perf_counter()
    try:
        for _ in range(n):
            pid = os.fork()
            if pid == 0:
                try:
                    os.close(hold_w)
                    os.close(rd)
                    os.write(wr, b"x")
                    os.read(hold_r, 1)
                finally:
                    os._exit(0)
            pids.append(pid)
        got = 0
        while got < n:
            got += len(os.read(rd, n - got))
        return time.perf_counter() - t0
    finally:
        os.close(hold_w)
        for fd in (rd, wr, hold_r):
            os.close(fd)
        for pid in pids:
            os.waitpid(pid, 0)


_MINIMAL_FORKS = """
import os, sys, time
n = int(sys.argv[1])
rd, wr = os.pipe()
hold_r, hold_w = os.pipe()
t0 = time.perf_counter()
pids = []
for _ in range(n):
    pid = os.fork()
    if pid == 0:
        os.close(hold_w)
        os.write(wr, b"x")
        os.read(hold_r, 1)
        os._exit(0)
    pids.append(pid)
got = 0
while got < n:
    got += len(os.read(rd, n - got))
print(time.perf_counter() - t0)
os.close(hold_w)
for pid in pids:
    os.waitpid(pid, 0)
"""


def minimal_fork_floor(n: int) -> float:
    """:func:`fork_floor` from a minimal interpreter (``python -S``, nothing
    imported): the least forking ``n`` processes costs on this machine."""
    out = subprocess.run(
        [sys.executable, "-S", "-c", _MINIMAL_FORKS, str(n)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout)


def fork_floor_series(ns: list[int], reps: dict[int, int]) -> dict[str, dict[str, float]]:
    """Per N: this process's fork floor, and the minimal interpreter's (``min:N``)."""
    out = {}
    for n in ns:
        out[str(n)] = spread([fork_floor(n) for _ in range(reps[n])])
        out[f"min:{n}"] = spread([minimal_fork_floor(n) for _ in range(reps[n])])
        _progress(
            f"fork floor N={n}: {out[str(n)]['median']:.3f}s "
            f"(minimal interpreter {out[f'min:{n}']['median']:.3f}s)"
        )
    return out


# --- agentrt measurements ---------------------------------------------------------


async def call_round_trips(sup: Supervisor, agent: str, n: int) -> list[int]:
    out = [0] * n
    clock = time.perf_counter_ns
    call = sup.call
    for i in range(n):
        t0 = clock()
        await call(agent)
        out[i] = clock() - t0
    return out


async def bulk_once(sup: Supervisor, agent: str, n: int) -> float:
    t0 = time.perf_counter()
    await sup.map(agent, [None] * n)
    return time.perf_counter() - t0


def _iterations(size: int, target: int, cap: int) -> int:
    return max(2, min(cap, target // size))


async def payload_throughput(
    sup: Supervisor, floor: Floor, agent: str, reps: int, target: int, cap: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, size in _SIZES:
        payload = os.urandom(size)
        args = {"x": payload}
        k = _iterations(size, target, cap)
        if await sup.call(agent, args) != payload:
            raise AssertionError(f"echo of {label} came back different")
        if floor.call(args) != payload:
            raise AssertionError(f"floor echo of {label} came back different")
        for _ in range(min(k, 10)):  # warm-up
            floor.call(args)
            await sup.call(agent, args)
        rt_rates, fl_rates = [], []
        for _ in range(reps):
            t0 = time.perf_counter()
            for _ in range(k):
                floor.call(args)
            fl_rates.append(size * k / (time.perf_counter() - t0) / 1e6)
            t0 = time.perf_counter()
            for _ in range(k):
                await sup.call(agent, args)
            rt_rates.append(size * k / (time.perf_counter() - t0) / 1e6)
        rt, fl = spread(rt_rates), spread(fl_rates)
        out[label] = {
            "bytes": size,
            "calls_per_rep": k,
            "repetitions": reps,
            "agentrt_MBps": rt,
            "floor_MBps": fl,
            "ratio_to_floor": rt["median"] / fl["median"],
        }
        _progress(f"payload {label}: {rt['median']:.1f} MB/s (floor {fl['median']:.1f})")
    return out


def read_smaps_rollup(pid: int) -> dict[str, int]:
    """Fields of /proc/PID/smaps_rollup, in kB."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1])
    return fields


def _zygote_pid() -> int | None:
    import psutil

    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if any("agentrt.zygote" in a for a in child.cmdline()):
                return child.pid
    return None


async def measure_pss(sup: Supervisor) -> dict[str, Any]:
    await asyncio.sleep(0.2)  # let the replicas go idle after their ping
    try:
        statuses = await asyncio.wait_for(sup.status(), STATUS_TIMEOUT_S)
    except TimeoutError:
        return {"error": f"Supervisor.status() did not return within {STATUS_TIMEOUT_S:g} s"}
    pids = [s.pid for s in statuses if s.pid is not None]
    rows: list[dict[str, int]] = []
    errors = 0
    for pid in pids:
        try:
            rows.append(read_smaps_rollup(pid))
        except OSError:
            errors += 1
    if not rows:
        return {"error": f"no smaps_rollup readable ({errors} failed)"}
    mib = 1024.0
    pss = [r.get("Pss", 0) / mib for r in rows]
    uss = [(r.get("Private_Clean", 0) + r.get("Private_Dirty", 0)) / mib for r in rows]
    rss = [r.get("Rss", 0) / mib for r in rows]
    out: dict[str, Any] = {
        "replicas": len(rows),
        "unreadable": errors,
        "pss_mib": {"mean": statistics.fmean(pss), **spread(pss)},
        "uss_mib": {"mean": statistics.fmean(uss), **spread(uss)},
        "rss_mib": {"mean": statistics.fmean(rss), **spread(rss)},
    }
    zpid = _zygote_pid() if sup.spec.start_method == "zygote" else None
    if zpid is not None:
        with contextlib.suppress(OSError):
            z = read_smaps_rollup(zpid)
            out["zygote_pss_mib"] = z.get("Pss", 0) / mib
            out["zygote_rss_mib"] = z.get("Rss", 0) / mib
    return out


async def startup_once(method: str, n: int, want_pss: bool) -> dict[str, Any]:
    # The agents' module is preloaded by the zygote, as a deployment would.
    sup = Supervisor(base_dir=BENCH_DIR, start_method=method, preload=["bench_agents"])
    t_open = time.perf_counter()
    await sup.open()
    t0 = time.perf_counter()
    rec: dict[str, Any] = {"open_s": t0 - t_open}
    try:
        await sup.start(
            AgentSpec(name="s", entry="bench_agents:whoami", replicas=n, startup_timeout=60)
        )
        t1 = time.perf_counter()
        pids = await asyncio.gather(*(sup.call("s") for _ in range(n)))
        t2 = time.perf_counter()
        rec.update(start_s=t1 - t0, ready_s=t2 - t0, distinct=len(set(pids)))
        if want_pss:
            rec["pss"] = await measure_pss(sup)
    finally:
        t3 = time.perf_counter()
        await sup.close()
        rec["close_s"] = time.perf_counter() - t3
    return rec


async def startup_warm_once(n: int) -> dict[str, Any]:
    """``n`` replicas ready (each answered) when ``n`` spares wait: a
    supervisor with ``spares = n`` starts ``n`` once (cold: its pool grows
    to ``n``), stops them, waits until ``n`` spares are forked and ready,
    then starts ``n`` more: the second start is timed, the first shown."""
    sup = Supervisor(base_dir=BENCH_DIR, preload=["bench_agents"], spares=n)
    await sup.open()
    try:
        t0 = time.perf_counter()
        await sup.start(AgentSpec(name="cold", entry="bench_agents:whoami", replicas=n))
        await asyncio.gather(*(sup.call("cold") for _ in range(n)))
        cold = time.perf_counter() - t0
        await sup.stop("cold")
        t1 = time.perf_counter()
        await asyncio.wait_for(sup._launcher.client.spares_forked(n), 120)  # type: ignore[union-attr]
        refill = time.perf_counter() - t1
        t2 = time.perf_counter()
        await sup.start(AgentSpec(name="warm", entry="bench_agents:whoami", replicas=n))
        pids = await asyncio.gather(*(sup.call("warm") for _ in range(n)))
        warm = time.perf_counter() - t2
    finally:
        await sup.close()
    return {"ready_s": warm, "cold_s": cold, "refill_s": refill, "distinct": len(set(pids))}


async def startup_warm(n: int, reps: int) -> dict[str, Any]:
    recs = [await startup_warm_once(n) for _ in range(reps)]
    out: dict[str, Any] = {"replicas": n, "spares": n, "repetitions": reps, "errors": []}
    for key in ("ready_s", "cold_s", "refill_s"):
        out[key] = spread([r[key] for r in recs])
    short = [r["distinct"] for r in recs if r["distinct"] != n]
    if short:
        out["errors"].append(f"only {min(short)} distinct replicas answered of {n}")
    _progress(
        f"startup from {n} waiting spares: ready {out['ready_s']['median']:.3f}s "
        f"(the same supervisor cold: {out['cold_s']['median']:.3f}s)"
    )
    return out


async def startup_series(
    method: str, ns: list[int], reps: dict[int, int], forks: dict[str, dict[str, float]]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pss_n = max(ns)
    for n in ns:
        recs: list[dict[str, Any]] = []
        errors: list[str] = []
        pss: dict[str, Any] | None = None
        for r in range(reps[n]):
            last = r == reps[n] - 1
            try:
                rec = await startup_once(method, n, want_pss=(n == pss_n and last))
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                _progress(f"startup N={n} rep {r + 1} FAILED: {type(exc).__name__}: {exc}")
                traceback.print_exc(file=sys.stderr)
                continue
            pss = rec.pop("pss", pss)
            recs.append(rec)
            if rec["distinct"] != n:
                errors.append(f"only {rec['distinct']} distinct replicas answered of {n}")
        entry: dict[str, Any] = {"replicas": n, "repetitions": len(recs), "errors": errors}
        if str(n) in forks:
            entry["fork_floor_s"] = forks[str(n)]
        if f"min:{n}" in forks:
            entry["minimal_fork_floor_s"] = forks[f"min:{n}"]
        if recs:
            for key in ("ready_s", "start_s", "close_s", "open_s"):
                entry[key] = spread([r[key] for r in recs])
            if "fork_floor_s" in entry:
                entry["ratio_to_fork_floor"] = (
                    entry["ready_s"]["median"] / entry["fork_floor_s"]["median"]
                )
            if "minimal_fork_floor_s" in entry:
                entry["ratio_to_minimal_fork_floor"] = (
                    entry["ready_s"]["median"] / entry["minimal_fork_floor_s"]["median"]
                )
            med = {k: entry[k]["median"] for k in ("ready_s", "start_s", "close_s")}
            _progress(
                f"startup N={n}: ready {med['ready_s']:.3f}s "
                f"(start {med['start_s']:.3f}s, close {med['close_s']:.3f}s)"
            )
        out[str(n)] = entry
        if pss is not None:
            out["pss"] = pss
    return out


# --- the run --------------------------------------------------------------------


class Params(msgspec.Struct, kw_only=True):
    rtt_iters: int
    rtt_blocks: int
    warmup: int
    bulk_calls: int
    bulk_reps: int
    startup_ns: list[int]
    startup_reps: dict[int, int]
    payload_reps: int
    payload_target: int
    payload_cap: int
    warm_n: int
    warm_reps: int


QUICK = Params(
    rtt_iters=50,
    rtt_blocks=20,
    warmup=200,
    bulk_calls=10_000,
    bulk_reps=2,
    startup_ns=[1, 50],
    startup_reps={1: 3, 50: 2},
    payload_reps=2,
    payload_target=8 << 20,
    payload_cap=300,
    warm_n=50,
    warm_reps=1,
)
FULL = Params(
    rtt_iters=100,
    rtt_blocks=50,
    warmup=500,
    bulk_calls=10_000,
    bulk_reps=5,
    startup_ns=[1, 50, 300, 1000],
    startup_reps={1: 5, 50: 3, 300: 3, 1000: 2},
    payload_reps=3,
    payload_target=64 << 20,
    payload_cap=2000,
    warm_n=300,
    warm_reps=3,
)


def _section(results: dict[str, Any], name: str) -> Callable[[BaseException], None]:
    def record(exc: BaseException) -> None:
        results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        _progress(f"{name} FAILED: {type(exc).__name__}: {exc}")
        traceback.print_exc(file=sys.stderr)

    return record


async def run(
    method: str, p: Params, floor: Floor, forks: dict[str, dict[str, float]]
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with Supervisor(base_dir=BENCH_DIR, start_method=method) as sup:
        await sup.start(AgentSpec(name="ping", entry="bench_agents:ping", replicas=1))
        # The same agent with spin = 0 (replicas sleep at once): what polling buys.
        await sup.start(AgentSpec(name="ping0", entry="bench_agents:ping", replicas=1, spin=0))
        await sup.start(AgentSpec(name="bulk", entry="bench_agents:ping", replicas=2))
        await sup.start(AgentSpec(name="echo", entry="bench_agents:echo", replicas=1))

        # 1 + 2: floor and call round trips, repetitions interleaved.
        try:
            floor.round_trips(p.warmup)
            await floor.async_round_trips(p.warmup)
            await call_round_trips(sup, "ping", p.warmup)
            await call_round_trips(sup, "ping0", p.warmup)
            fl_reps, afl_reps, rt_reps, rt0_reps = [], [], [], []
            for _ in range(p.rtt_blocks):
                fl_reps.append(floor.round_trips(p.rtt_iters))
                afl_reps.append(await floor.async_round_trips(p.rtt_iters))
                rt_reps.append(await call_round_trips(sup, "ping", p.rtt_iters))
                rt0_reps.append(await call_round_trips(sup, "ping0", p.rtt_iters))
            fl, rt = latency_summary(fl_reps), latency_summary(rt_reps)
            results["call_spin0"] = latency_summary(rt0_reps)
            afl = results["floor_asyncio"] = latency_summary(afl_reps)
            rt["block_ratio_asyncio_p50"] = spread(
                [
                    pct(sorted(r), 0.5) / pct(sorted(f), 0.5)
                    for f, r in zip(afl_reps, rt_reps, strict=True)
                ]
            )
            _progress(f"round trip: asyncio floor p50 {afl['p50_us']:.1f}us")
            rt["ratio_p50"] = rt["p50_us"] / fl["p50_us"]
            rt["ratio_p99"] = rt["p99_us"] / fl["p99_us"]
            # Each call block ran right after its floor block: their ratio is
            # the least disturbed by the machine's drift.
            rt["block_ratio_p50"] = spread(
                [
                    pct(sorted(r), 0.5) / pct(sorted(f), 0.5)
                    for f, r in zip(fl_reps, rt_reps, strict=True)
                ]
            )
            results["floor"], results["call"] = fl, rt
            _progress(
                f"round trip: floor p50 {fl['p50_us']:.1f}us, "
                f"call p50 {rt['p50_us']:.1f}us ({rt['block_ratio_p50']['median']:.2f}x)"
            )
        except Exception as exc:
            _section(results, "call")(exc)

        # 3: bulk.
        try:
            await bulk_once(sup, "bulk", min(1000, p.bulk_calls))
            per_call = [
                await bulk_once(sup, "bulk", p.bulk_calls) / p.bulk_calls * 1e6
                for _ in range(p.bulk_reps)
            ]
            results["bulk"] = {
                "calls": p.bulk_calls,
                "replicas": 2,
                "repetitions": p.bulk_reps,
                "us_per_call": spread(per_call),
                "calls_per_s": 1e6 / statistics.median(per_call),
            }
            _progress(f"bulk: {statistics.median(per_call):.1f}us per call")
        except Exception as exc:
            _section(results, "bulk")(exc)

        # 6: payloads.
        try:
            results["payload"] = await payload_throughput(
                sup, floor, "echo", p.payload_reps, p.payload_target, p.payload_cap
            )
        except Exception as exc:
            _section(results, "payload")(exc)

    # 4 + 5: startup, each N in fresh supervisors; PSS at the largest N.
    try:
        startup = await startup_series(method, p.startup_ns, p.startup_reps, forks)
        pss = startup.pop("pss", None)
        results["startup"] = startup
        if pss is not None:
            results["pss"] = pss
        else:
            results["pss"] = {"error": "no run of the largest N came up to measure PSS"}
    except Exception as exc:
        _section(results, "startup")(exc)
    if method == "zygote":  # (spares are the zygote's)
        try:
            results["startup_warm"] = await startup_warm(p.warm_n, p.warm_reps)
        except Exception as exc:
            _section(results, "startup_warm")(exc)
    return results


def aims(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ratio = results.get("call", {}).get("block_ratio_p50")
    out["rtt_within_1.5x_floor"] = None if ratio is None else ratio["median"] <= AIM_RTT_RATIO
    aratio = results.get("call", {}).get("block_ratio_asyncio_p50")
    out["rtt_within_1.5x_asyncio_floor"] = (
        None if aratio is None else aratio["median"] <= AIM_RTT_RATIO
    )
    bulk = results.get("bulk", {}).get("us_per_call")
    out["bulk_within_10us"] = None if bulk is None else bulk["median"] <= AIM_BULK_US
    s300 = results.get("startup", {}).get("300", {}).get("ready_s")
    out["300_ready_under_0.5s"] = None if s300 is None else s300["median"] < AIM_READY_300_S
    r1000 = results.get("startup", {}).get("1000", {}).get("ratio_to_minimal_fork_floor")
    out["1000_within_6x_minimal_fork"] = None if r1000 is None else r1000 <= AIM_MINIMAL_RATIO
    warm = results.get("startup_warm", {})
    out["300_from_waiting_spares_under_0.3s"] = (
        warm["ready_s"]["median"] < AIM_WARM_300_S
        if warm.get("replicas") == 300 and "ready_s" in warm
        else None
    )
    pss = results.get("pss", {}).get("pss_mib")
    out["pss_under_3MiB"] = None if pss is None else pss["mean"] < AIM_PSS_MIB
    return out


# --- output -----------------------------------------------------------------------


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    r = report["results"]
    a = report["aims"]
    lines = [
        f"agentrt core benchmark ({'quick' if report['quick'] else 'full'}, "
        f"start_method={report['method']})",
        f"machine: {m['cores']} cores, Python {m['python']}, kernel {m['kernel']}, {m['machine']}",
        "",
    ]
    rows: list[tuple[str, str, str, str]] = []

    def row(name: str, value: str, rng: str = "", aim: str = "") -> None:
        rows.append((name, value, rng, aim))

    fl, rt = r.get("floor"), r.get("call")
    if fl and rt and "error" not in rt:
        it = f"{fl['iterations']} in {fl['blocks']} blocks"
        row(
            f"floor round trip p50 ({it})",
            f"{fl['p50_us']:.1f} us",
            min_max(fl["block_p50_us"], ".1f"),
            "min-max: p50 of the blocks",
        )
        row("floor round trip p99", f"{fl['p99_us']:.1f} us")
        row(
            f"call round trip p50 ({it})",
            f"{rt['p50_us']:.1f} us",
            min_max(rt["block_p50_us"], ".1f"),
            "min-max: p50 of the blocks",
        )
        row("call round trip p99", f"{rt['p99_us']:.1f} us")
        rt0 = r.get("call_spin0")
        if rt0:
            row(
                "call round trip p50, spin = 0",
                f"{rt0['p50_us']:.1f} us",
                min_max(rt0["block_p50_us"], ".1f"),
                "replicas sleep at once (blocks interleaved with the above)",
            )
        br = rt["block_ratio_p50"]
        row(
            "call / floor, p50 of paired blocks",
            f"{br['median']:.2f}x",
            min_max(br, ".2f"),
            f"<= {AIM_RTT_RATIO}x: {met(a['rtt_within_1.5x_floor'])}",
        )
        afl = r.get("floor_asyncio")
        abr = rt.get("block_ratio_asyncio_p50")
        if afl and abr:
            row(
                "asyncio floor round trip p50",
                f"{afl['p50_us']:.1f} us",
                min_max(afl["block_p50_us"], ".1f"),
                "the floor's child driven from an event loop",
            )
            row(
                "call / asyncio floor, p50 of paired blocks",
                f"{abr['median']:.2f}x",
                min_max(abr, ".2f"),
                f"<= {AIM_RTT_RATIO}x: {met(a['rtt_within_1.5x_asyncio_floor'])}",
            )
        row("call / floor, p50 / p99 of all", f"{rt['ratio_p50']:.2f}x / {rt['ratio_p99']:.2f}x")
    elif rt:
        row("call round trip", "ERROR", rt.get("error", ""))
    b = r.get("bulk")
    if b and "error" not in b:
        row(
            f"bulk {b['calls']} calls, {b['replicas']} replicas",
            f"{b['us_per_call']['median']:.1f} us/call",
            min_max(b["us_per_call"], ".1f"),
            f"({b['calls_per_s']:,.0f} calls/s); <= {AIM_BULK_US:g} us: "
            f"{met(a['bulk_within_10us'])}",
        )
    elif b:
        row("bulk", "ERROR", b["error"])
    st = r.get("startup", {})
    if "error" in st:
        row("startup", "ERROR", st["error"])
    for key, e in st.items():
        if not isinstance(e, dict) or "replicas" not in e:
            continue
        n = e["replicas"]
        if "ready_s" in e:
            aim = ""
            if n == 300:
                aim = f"< {AIM_READY_300_S} s: {met(a['300_ready_under_0.5s'])}"
            row(
                f"startup N={n}: all answered ({e['repetitions']} reps)",
                f"{e['ready_s']['median']:.3f} s",
                min_max(e["ready_s"], ".3f"),
                aim,
            )
            if "fork_floor_s" in e:
                ff = e["fork_floor_s"]
                row(
                    f"  floor: fork {n} bare children",
                    f"{ff['median']:.3f} s",
                    min_max(ff, ".3f"),
                    f"agentrt = {e['ratio_to_fork_floor']:.2f}x",
                )
            if "minimal_fork_floor_s" in e:
                mf = e["minimal_fork_floor_s"]
                aim = f"agentrt = {e['ratio_to_minimal_fork_floor']:.1f}x"
                if n == 1000:
                    aim += f" (aim <= {AIM_MINIMAL_RATIO:g}x: "
                    aim += f"{met(a['1000_within_6x_minimal_fork'])})"
                row(
                    f"  floor: python -S forks {n} bare children",
                    f"{mf['median']:.3f} s",
                    min_max(mf, ".3f"),
                    aim,
                )
            row(
                f"  of which start() (all Ready), N={n}",
                f"{e['start_s']['median']:.3f} s",
                min_max(e["start_s"], ".3f"),
                f"then close: {e['close_s']['median']:.3f} s",
            )
        for err in e["errors"]:
            row(f"startup N={key} problem", "ERROR", err)
    w = r.get("startup_warm")
    if w and "ready_s" in w:
        aim = f"cold in the same supervisor {w['cold_s']['median']:.3f} s"
        if w["replicas"] == 300:
            aim += f"; < {AIM_WARM_300_S} s: {met(a['300_from_waiting_spares_under_0.3s'])}"
        row(
            f"startup N={w['replicas']} from as many waiting spares ({w['repetitions']} reps)",
            f"{w['ready_s']['median']:.3f} s",
            min_max(w["ready_s"], ".3f"),
            aim,
        )
        for err in w["errors"]:
            row("startup from waiting spares problem", "ERROR", err)
    elif w:
        row("startup from waiting spares", "ERROR", w.get("error", ""))
    pss = r.get("pss")
    if pss and "pss_mib" in pss:
        p = pss["pss_mib"]
        row(
            f"PSS per idle replica (N={pss['replicas']}), mean",
            f"{p['mean']:.2f} MiB",
            "",
            f"< {AIM_PSS_MIB} MiB: {met(a['pss_under_3MiB'])}",
        )
        row("PSS per idle replica, median", f"{p['median']:.2f} MiB", min_max(p, ".2f"))
        row(
            "USS / RSS per idle replica, median",
            f"{pss['uss_mib']['median']:.2f} / {pss['rss_mib']['median']:.2f} MiB",
        )
        if "zygote_pss_mib" in pss:
            row(
                "zygote PSS / RSS", f"{pss['zygote_pss_mib']:.2f} / {pss['zygote_rss_mib']:.2f} MiB"
            )
    elif pss:
        row("PSS", "ERROR", pss.get("error", ""))
    pl = r.get("payload", {})
    if "error" in pl:
        row("payload", "ERROR", pl["error"])
    for label, e in pl.items():
        if not isinstance(e, dict) or "agentrt_MBps" not in e:
            continue
        row(
            f"echo {label} ({e['calls_per_rep']}x{e['repetitions']})",
            f"{e['agentrt_MBps']['median']:.1f} MB/s",
            min_max(e["agentrt_MBps"], ".1f"),
            f"floor {e['floor_MBps']['median']:.1f} MB/s = {e['ratio_to_floor']:.2f}x",
        )

    return table(lines, rows, report["elapsed_s"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON ('-': stdout)")
    ap.add_argument("--quick", action="store_true", help="fewer iterations, N up to 50 only")
    ap.add_argument(
        "--method",
        default="zygote",
        choices=["zygote", "spawn", "forkserver", "fork"],
        help="start method (default: zygote)",
    )
    args = ap.parse_args(argv)

    # Logging must not distort the figures: warnings and errors only.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    params = QUICK if args.quick else FULL
    t0 = time.perf_counter()
    # Both floors fork before the event loop and its threads exist.
    forks = fork_floor_series(params.startup_ns, params.startup_reps)
    floor = Floor()
    try:
        results = asyncio.run(run(args.method, params, floor, forks))
    finally:
        floor.close()
    report: dict[str, Any] = {
        "benchmark": "agentrt bench_core",
        "quick": args.quick,
        "method": args.method,
        "machine": machine(),
        "params": msgspec.to_builtins(params),
        "results": results,
        "elapsed_s": time.perf_counter() - t0,
    }
    report["aims"] = aims(results)
    emit(report, render, args.json)
    failed = any(isinstance(v, dict) and "error" in v for v in results.values()) or any(
        e.get("errors") for e in results.get("startup", {}).values() if isinstance(e, dict)
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
