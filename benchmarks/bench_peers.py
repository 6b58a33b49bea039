"""agentrt against its peers: the same workloads, side by side, in one run.

Every runtime runs the same module-level tasks (``benchmarks/peer_tasks.py``)
on this machine in the same run, so that each peer's figure can be shown as
a ratio to agentrt's (start method ``zygote``).  Runtimes: agentrt
``zygote`` and ``spawn``; in-process asyncio (worker tasks fed by an
``asyncio.Queue``); ``ThreadPoolExecutor``; ``ProcessPoolExecutor``;
``multiprocessing.Pool``; loky; pebble ``ProcessPool``; Ray local (tasks,
and actors; ``ray.init(num_cpus=2, include_dashboard=False)``, shut down at
the end).  Floors: ``floor-pipe``, a ping-pong over two ``os.pipe`` with a
forked child framed exactly like agentrt (msgspec MessagePack, blocking I/O;
the approach of bench_core.py), ``floor-fork``, forking N bare children
that each write a byte on a pipe, and ``floor-minimal``, the same from a
minimal interpreter (``python -S``, nothing imported).  A runtime that is not installed is
skipped with a note.

Workloads (every figure a median over repetitions, with the min-max):

1. **rtt**: round trip of a tiny call (``ping()``) to a warm worker, in
   sequence: ``await sup.call(...)``; ``submit(...).result()`` for pools;
   ``ray.get(f.remote())``.  p50/p99 µs over all round trips, in blocks of
   100 alternating with blocks of the pipe floor (min-max: the blocks' p50;
   "x floor": median over the pairs of blocks of runtime p50 / floor p50,
   which holds when the machine's speed drifts; the floor's own row pools
   all its blocks).  ``floor-asyncio``: the same child driven from the event
   loop (a loop reader resolves a future), in blocks beside the others:
   "x async floor" is the ratio to it, the least an asyncio caller pays.
   The Ray actor aim compares the two raw p50s of the run.
2. **tasks**: 10,000 tiny tasks on 2 workers, submitted one by one (awaiting
   each) and in bulk (agentrt: ``sup.map``, also shown as submit all then
   ``asyncio.gather``; the others: submit all, then gather, which is what
   ``Executor.map`` does): µs per task.  Ray tasks and
   actors run 1,000 (shown beside the name).
3. **payload**: ``echo(bytes)`` of 1 KiB, 64 KiB, 1 MiB, 16 MiB in sequence,
   MB/s (10^6 bytes, the payload counted once although it travels both
   ways).  The in-process runtimes pass a reference (no copy at all).
4. **startup**: N = 1, 50, 300 (and 1,000 for agentrt-zygote and the fork
   floors) isolated workers, each in a fresh pool, from
   creating the pool (agentrt: ``sup.start()``, its zygote already up) until
   N distinct workers have answered.  agentrt: N concurrent ``whoami()``
   calls (least-loaded dispatch gives each idle replica one).  Pools: N
   tasks ``whoami(hold)`` submitted at once, each sleeping ``hold`` (0.1 s,
   0.25 s at N=300; pebble 0.01 s x N and loky 0.5 + 0.08 s x N, as their
   workers come up one by one) so that N workers get used, the hold
   subtracted from the time; the number of distinct pids is checked (shown
   when short).  Ray: N actors (``num_cpus=0``), a ``whoami`` on each.
   Spawn-based runtimes (agentrt spawn, loky) and Ray stop at N = 50 (each worker imports its
   interpreter afresh: minutes at 300 on 2 cores) and run N = 50 once;
   ``--quick`` stops at 50 everywhere, and at 10 for those.  **pss**:
   proportional set size per idle worker (``Pss:`` of
   ``/proc/PID/smaps_rollup``) at the largest N, before close.
5. **crash**: a worker dies mid-call, by SIGKILL (to itself), ``os._exit(3)``
   or a segfault (``ctypes.string_at(0)``); the task writes
   ``time.monotonic_ns()`` (system-wide) to a file first.  Reported: time from
   death until the caller gets an error (and the error's type), and until the
   next call is served by a replacement.  Pools get one worker for this, so
   that the next call needs a replacement (Ray tasks: any pooled worker may
   serve it); a pool that breaks (``BrokenProcessPool``) is replaced by a
   new pool, counted in the time.  ``multiprocessing.Pool`` never reports a
   lost task: after a timeout it is recorded as "never (hangs)", and its next
   call is submitted right after the fatal one.  In-process runtimes are not
   isolated: a crash takes the whole process down (n/a).  agentrt-zygote+standby:
   the same test on agentrt-zygote's supervisor with ``standby = true``; each
   agent's warm call waits until its standby is ready (the zygote may still
   be refilling its spares when it dies: ``bench_standby.py`` lets both
   variants settle alike).

The aims printed next to agentrt's figures: round trip within 1.5x the pipe
floor and at least 8x faster than a Ray actor call; 300 agents ready in
under 0.3 s; under 2 MiB PSS per idle agent; crash to typed error under 2 ms
and to a served replacement under 5 ms; per-task overhead in bulk under
10 µs, and one by one at most a fifth of ``ProcessPoolExecutor``'s.

Usage::

    python benchmarks/bench_peers.py [--quick] [--json FILE|-] [--only NAME[,NAME]] [--crash-reps N]

Names: agentrt-zygote, agentrt-spawn, asyncio, threads, process-pool,
mp-pool, loky, pebble, ray-tasks, ray-actors, floor-pipe, floor-fork, floor-minimal.
agentrt-zygote and floor-pipe always run (every ratio needs them).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import importlib.util
import logging
import multiprocessing
import multiprocessing.pool
import os
import resource
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))
# Workers started afresh (spawn, loky, Ray) must import peer_tasks by name.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(BENCH_DIR), os.environ.get("PYTHONPATH", "")) if p
)

import msgspec  # noqa: E402
import peer_tasks  # noqa: E402
import structlog  # noqa: E402
from bench_core import (  # noqa: E402
    Floor,
    fork_floor,
    latency_summary,
    minimal_fork_floor,
    pct,
    read_smaps_rollup,
)
from common import emit, get, machine, min_max, spread, standby_ready  # noqa: E402

from agentrt import AgentSpec, Supervisor  # noqa: E402

AIM_RTT_FLOOR = 1.5
AIM_RAY_ACTOR_X = 8.0
AIM_READY_300_S = 0.3
AIM_PSS_MIB = 2.0
AIM_CRASH_ERROR_MS = 2.0
AIM_CRASH_REPLACED_MS = 5.0
AIM_CRASH_AFTER_ERROR_MS = 2.0
AIM_BULK_US = 10.0
AIM_ONE_BY_ONE_FRACTION = 0.2

REF = "agentrt-zygote"
#: agentrt-zygote's agents with ``standby = true``: crash figures only, taken
#: right after agentrt-zygote's, on its supervisor
STANDBY = "agentrt-zygote+standby"
FLOOR = "floor-pipe"
ASYNC_FLOOR = "floor-asyncio"
ALL = [
    "floor-pipe",
    "floor-fork",
    "floor-minimal",
    "agentrt-zygote",
    "agentrt-zygote+standby",
    "agentrt-spawn",
    "asyncio",
    "threads",
    "process-pool",
    "mp-pool",
    "loky",
    "pebble",
    "ray-tasks",
    "ray-actors",
]
SIZES = [("1 KiB", 1 << 10), ("64 KiB", 1 << 16), ("1 MiB", 1 << 20), ("16 MiB", 1 << 24)]
MODES = ["kill", "exit", "segv"]


def _progress(msg: str) -> None:
    print(f"[peers] {msg}", file=sys.stderr, flush=True)


class Params(msgspec.Struct, kw_only=True):
    rtt_iters: int
    rtt_blocks: int
    warmup: int
    tasks: int
    ray_tasks: int
    task_reps: int
    payload_reps: int
    payload_target: int
    payload_cap: int
    startup_ns: list[int]
    startup_reps: dict[int, int]
    slow_cap: int
    crash_reps: int
    crash_timeout: float
    hang_timeout: float


QUICK = Params(
    rtt_iters=100,
    rtt_blocks=6,
    warmup=100,
    tasks=2_000,
    ray_tasks=500,
    task_reps=1,
    payload_reps=1,
    payload_target=4 << 20,
    payload_cap=100,
    startup_ns=[1, 50],
    startup_reps={1: 2, 50: 1},
    slow_cap=10,
    crash_reps=2,
    crash_timeout=5.0,
    hang_timeout=0.5,
)
FULL = Params(
    rtt_iters=100,
    rtt_blocks=15,
    warmup=200,
    tasks=10_000,
    ray_tasks=1_000,
    task_reps=2,
    payload_reps=2,
    payload_target=16 << 20,
    payload_cap=400,
    startup_ns=[1, 50, 300, 1000],
    startup_reps={1: 3, 50: 2, 300: 2, 1000: 1},
    slow_cap=50,
    crash_reps=5,
    crash_timeout=10.0,
    hang_timeout=1.0,
)


# --- runtimes -----------------------------------------------------------------------


class Runtime:
    """One runtime under test: a warm pool of two workers, plus fresh pools of N."""

    name = ""
    isolated = True
    #: the largest N started (the full run; --quick caps it further)
    max_n = 300
    #: each worker a fresh interpreter: one repetition at N >= 50
    slow = False
    note = ""

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def submit(self, fn: str, *args: Any) -> Any:
        raise NotImplementedError

    async def wait(self, handle: Any) -> Any:
        raise NotImplementedError

    async def gather(self, handles: list[Any]) -> list[Any]:
        return [await self.wait(h) for h in handles]

    async def bulk(self, fn: str, n: int) -> list[Any]:
        """N calls of ``fn`` at once, by the runtime's bulk API (default: submit all, gather)."""
        return await self.gather([self.submit(fn) for _ in range(n)])

    async def call(self, fn: str, *args: Any) -> Any:
        return await self.wait(self.submit(fn, *args))

    async def start_n(self, n: int) -> tuple[float, list[int], Callable[[], Any]]:
        """Seconds until N distinct workers answered, their pids, and a closer."""
        raise NotImplementedError

    async def crash(self, mode: str, stamp: str, p: Params) -> dict[str, Any]:
        raise NotImplementedError


def _hold(n: int) -> float:
    return 0.25 if n >= 300 else 0.1 if n > 1 else 0.0


def _stamp_ns(stamp: str) -> int:
    return int(Path(stamp).read_text())


class AgentrtRuntime(Runtime):
    def __init__(self, method: str) -> None:
        self.method = method
        self.name = f"agentrt-{method}"
        #: the crash test's agents keep a standby (see STANDBY)
        self.standby = False
        if method == "spawn":
            self.max_n, self.slow = 50, True
        else:
            self.max_n = 1000
        self.sup: Supervisor | None = None

    def _sup(self) -> Supervisor:
        kw: dict[str, Any] = {"start_method": self.method, "intensity": 1000}
        if self.method == "zygote":
            kw["preload"] = ["peer_tasks"]
        return Supervisor(base_dir=BENCH_DIR, **kw)

    async def open(self) -> None:
        self.sup = self._sup()
        await self.sup.open()
        for fn in ("ping", "echo"):
            await self.sup.start(AgentSpec(name=fn, entry=f"peer_tasks:{fn}", replicas=2))

    async def close(self) -> None:
        if self.sup is not None:
            await self.sup.close()
            self.sup = None

    def submit(self, fn: str, *args: Any) -> Any:
        assert self.sup is not None
        return self.sup.submit(fn, {"x": args[0]} if args else None)

    async def wait(self, handle: Any) -> Any:
        return await handle

    async def gather(self, handles: list[Any]) -> list[Any]:
        return list(await asyncio.gather(*handles))

    async def bulk(self, fn: str, n: int) -> list[Any]:
        assert self.sup is not None
        return await self.sup.map(fn, [None] * n)

    async def start_n(self, n: int) -> tuple[float, list[int], Callable[[], Any]]:
        sup = self._sup()
        await sup.open()
        t0 = time.perf_counter()
        await sup.start(
            AgentSpec(name="s", entry="peer_tasks:whoami", replicas=n, startup_timeout=120)
        )
        pids = await asyncio.gather(*(sup.call("s") for _ in range(n)))
        return time.perf_counter() - t0, list(pids), sup.close

    async def crash(self, mode: str, stamp: str, p: Params) -> dict[str, Any]:
        sup = self.sup
        assert sup is not None
        name = f"die-{mode}-{os.path.basename(stamp)}"
        await sup.start(
            AgentSpec(name=name, entry="peer_tasks:die", replicas=1, standby=self.standby)
        )
        await sup.call(name, {"mode": "ok"})  # warm
        if self.standby:
            await standby_ready(sup, name)
        rec: dict[str, Any] = {}
        try:
            await sup.call(name, {"mode": mode, "stamp": stamp}, timeout=p.crash_timeout)
            rec["error_type"] = "none (returned)"
        except Exception as exc:
            t_err = time.monotonic_ns()
            rec["error_type"] = type(exc).__name__
            rec["error_ms"] = (t_err - _stamp_ns(stamp)) / 1e6
        await sup.call(name, {"mode": "ok"}, timeout=p.crash_timeout)
        rec["replaced_ms"] = (time.monotonic_ns() - _stamp_ns(stamp)) / 1e6
        await sup.stop(name)
        return rec


class AsyncioRuntime(Runtime):
    name = "asyncio"
    isolated = False
    note = "in-process: not isolated (no startup, PSS or crash figures)"

    async def open(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.workers = [asyncio.create_task(self._worker()) for _ in range(2)]

    async def _worker(self) -> None:
        while True:
            fn, args, fut = await self.queue.get()
            try:
                fut.set_result(fn(*args))
            except Exception as exc:
                fut.set_exception(exc)

    async def close(self) -> None:
        for w in self.workers:
            w.cancel()
        await asyncio.gather(*self.workers, return_exceptions=True)

    def submit(self, fn: str, *args: Any) -> Any:
        fut = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((getattr(peer_tasks, fn), args, fut))
        return fut

    async def wait(self, handle: Any) -> Any:
        return await handle


class PoolRuntime(Runtime):
    """Anything with ``submit(fn, *args) -> concurrent.futures.Future``."""

    #: a lost task is never reported (multiprocessing.Pool)
    hangs = False

    def make(self, n: int) -> Any:
        raise NotImplementedError

    def hold(self, n: int) -> float:
        """How long each of N startup tasks sleeps, so that N workers answer."""
        return _hold(n)

    def submit_to(self, pool: Any, fn: str, args: tuple[Any, ...]) -> Any:
        return pool.submit(getattr(peer_tasks, fn), *args)

    def result(self, handle: Any, timeout: float | None = None) -> Any:
        return handle.result(timeout)

    def shutdown(self, pool: Any) -> None:
        pool.shutdown(wait=True)

    async def open(self) -> None:
        self.pool = self.make(2)
        await self.gather([self.submit("whoami", 0.05) for _ in range(2)])

    async def close(self) -> None:
        self.shutdown(self.pool)

    def submit(self, fn: str, *args: Any) -> Any:
        return self.submit_to(self.pool, fn, args)

    async def wait(self, handle: Any) -> Any:
        return self.result(handle)

    async def start_n(self, n: int) -> tuple[float, list[int], Callable[[], Any]]:
        hold = self.hold(n)
        t0 = time.perf_counter()
        pool = self.make(n)
        hs = [self.submit_to(pool, "whoami", (hold,)) for _ in range(n)]
        pids = [self.result(h) for h in hs]
        return time.perf_counter() - t0 - hold, pids, lambda: self.shutdown(pool)

    async def crash(self, mode: str, stamp: str, p: Params) -> dict[str, Any]:
        pool = self.make(1)
        rec: dict[str, Any] = {}
        try:
            self.result(self.submit_to(pool, "ping", ()))  # warm: the worker exists
            h = self.submit_to(pool, "die", (mode, stamp))
            if self.hangs:  # queued behind the fatal call: served by the replacement
                self.result(self.submit_to(pool, "ping", ()), p.crash_timeout)
                rec["replaced_ms"] = (time.monotonic_ns() - _stamp_ns(stamp)) / 1e6
            try:
                self.result(h, p.hang_timeout if self.hangs else p.crash_timeout)
                rec["error_type"] = "none (returned)"
            except (TimeoutError, concurrent.futures.TimeoutError, multiprocessing.TimeoutError):
                rec["error_type"] = "never (hangs)"
            except Exception as exc:
                t_err = time.monotonic_ns()
                rec["error_type"] = type(exc).__name__
                rec["error_ms"] = (t_err - _stamp_ns(stamp)) / 1e6
            if not self.hangs:
                try:
                    self.result(self.submit_to(pool, "ping", ()), p.crash_timeout)
                except Exception as exc:  # a broken pool: a new one replaces it
                    rec["replacement"] = f"new pool ({type(exc).__name__})"
                    with contextlib.suppress(Exception):
                        self.shutdown_nowait(pool)
                    pool = self.make(1)
                    self.result(self.submit_to(pool, "ping", ()), p.crash_timeout)
                rec["replaced_ms"] = (time.monotonic_ns() - _stamp_ns(stamp)) / 1e6
        finally:
            with contextlib.suppress(Exception):
                self.shutdown_nowait(pool)
        return rec

    def shutdown_nowait(self, pool: Any) -> None:
        pool.shutdown(wait=False, cancel_futures=True)


class ThreadsRuntime(PoolRuntime):
    name = "threads"
    isolated = False
    note = "in-process: not isolated (no startup, PSS or crash figures)"

    def make(self, n: int) -> Any:
        return concurrent.futures.ThreadPoolExecutor(n)


class ProcessPoolRuntime(PoolRuntime):
    name = "process-pool"

    def __init__(self) -> None:
        method = multiprocessing.get_start_method()
        self.note = f"concurrent.futures.ProcessPoolExecutor, start method {method}"

    def make(self, n: int) -> Any:
        return concurrent.futures.ProcessPoolExecutor(n)


class MpPoolRuntime(PoolRuntime):
    name = "mp-pool"
    hangs = True

    def __init__(self) -> None:
        method = multiprocessing.get_start_method()
        self.note = f"multiprocessing.Pool, start method {method}"

    def make(self, n: int) -> Any:
        return multiprocessing.Pool(n)

    def submit_to(self, pool: Any, fn: str, args: tuple[Any, ...]) -> Any:
        return pool.apply_async(getattr(peer_tasks, fn), args)

    def result(self, handle: Any, timeout: float | None = None) -> Any:
        return handle.get(timeout)

    def shutdown(self, pool: Any) -> None:
        pool.close()
        pool.join()

    def shutdown_nowait(self, pool: Any) -> None:
        pool.terminate()
        pool.join()


class LokyRuntime(PoolRuntime):
    name = "loky"
    max_n = 50
    slow = True
    note = "loky.ProcessPoolExecutor (loky start method: spawn-like)"

    def hold(self, n: int) -> float:
        return 0.0 if n == 1 else 0.5 + 0.08 * n  # its workers come up one by one, slowly

    def make(self, n: int) -> Any:
        import loky  # type: ignore[import-untyped]

        return loky.ProcessPoolExecutor(n)

    def shutdown_nowait(self, pool: Any) -> None:
        pool.shutdown(wait=False, kill_workers=True)


class PebbleRuntime(PoolRuntime):
    name = "pebble"
    note = "pebble.ProcessPool (multiprocessing's default context)"

    def hold(self, n: int) -> float:
        return 0.0 if n == 1 else 0.01 * n  # its workers come up one by one

    def make(self, n: int) -> Any:
        import pebble

        return pebble.ProcessPool(max_workers=n)

    def submit_to(self, pool: Any, fn: str, args: tuple[Any, ...]) -> Any:
        return pool.schedule(getattr(peer_tasks, fn), args=args)

    def shutdown(self, pool: Any) -> None:
        pool.close()
        pool.join()

    def shutdown_nowait(self, pool: Any) -> None:
        pool.stop()
        pool.join()


class RayRuntime(Runtime):
    """Ray local; ``ray.init`` once for both flavours, ``ray.shutdown`` at the end."""

    max_n = 50
    slow = True
    started = False

    def __init__(self, actors: bool) -> None:
        self.actors = actors
        self.name = "ray-actors" if actors else "ray-tasks"
        self.note = "ray.init(num_cpus=2, include_dashboard=False); " + (
            "2 actors (num_cpus=0), calls alternate" if actors else "remote functions"
        )

    @classmethod
    def init(cls) -> Any:
        import ray

        if not cls.started:
            ray.init(
                num_cpus=2,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
            )
            cls.started = True
        return ray

    @classmethod
    def shutdown_ray(cls) -> None:
        if cls.started:
            import ray

            ray.shutdown()
            cls.started = False

    async def open(self) -> None:
        ray = self.init()
        self.ray = ray
        if self.actors:
            cls = ray.remote(num_cpus=0)(peer_tasks.Actor)
            self.handles = [cls.remote() for _ in range(2)]
            ray.get([a.ping.remote() for a in self.handles])
            self.turn = 0
        else:
            self.fns = {
                fn: ray.remote(max_retries=0)(getattr(peer_tasks, fn))
                for fn in ("ping", "echo", "whoami", "die")
            }
            ray.get([self.fns["whoami"].remote(0.05) for _ in range(2)])

    async def close(self) -> None:
        if self.actors:
            for a in self.handles:
                self.ray.kill(a)

    def submit(self, fn: str, *args: Any) -> Any:
        if self.actors:
            self.turn ^= 1
            return getattr(self.handles[self.turn], fn).remote(*args)
        return self.fns[fn].remote(*args)

    async def wait(self, handle: Any) -> Any:
        return self.ray.get(handle)

    async def gather(self, handles: list[Any]) -> list[Any]:
        return list(self.ray.get(handles))

    async def call(self, fn: str, *args: Any) -> Any:
        if self.actors:  # a round trip to one warm actor
            return self.ray.get(getattr(self.handles[0], fn).remote(*args))
        return self.ray.get(self.fns[fn].remote(*args))

    async def start_n(self, n: int) -> tuple[float, list[int], Callable[[], Any]]:
        if not self.actors:
            raise NotImplementedError
        ray = self.ray
        t0 = time.perf_counter()
        cls = ray.remote(num_cpus=0)(peer_tasks.Actor)
        actors = [cls.remote() for _ in range(n)]
        pids = ray.get([a.whoami.remote() for a in actors])
        elapsed = time.perf_counter() - t0

        def close() -> None:
            for a in actors:
                ray.kill(a)

        return elapsed, list(pids), close

    async def crash(self, mode: str, stamp: str, p: Params) -> dict[str, Any]:
        ray = self.ray
        rec: dict[str, Any] = {}
        if self.actors:
            cls = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)(peer_tasks.Actor)
            actor = cls.remote()
            ray.get(actor.ping.remote())

            def target(fn: str) -> Any:
                return getattr(actor, fn)
        else:
            actor = None

            def target(fn: str) -> Any:
                return self.fns[fn]

        try:
            try:
                ray.get(target("die").remote(mode, stamp), timeout=p.crash_timeout)
                rec["error_type"] = "none (returned)"
            except Exception as exc:
                t_err = time.monotonic_ns()
                rec["error_type"] = type(exc).__name__
                rec["error_ms"] = (t_err - _stamp_ns(stamp)) / 1e6
            deadline = time.monotonic() + p.crash_timeout
            while True:
                try:
                    ray.get(target("ping").remote(), timeout=p.crash_timeout)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.001)
            rec["replaced_ms"] = (time.monotonic_ns() - _stamp_ns(stamp)) / 1e6
        finally:
            if actor is not None:
                ray.kill(actor)
        return rec


def available(name: str) -> str | None:
    """None when the runtime can run here, else why not."""
    mod = {"loky": "loky", "pebble": "pebble", "ray-tasks": "ray", "ray-actors": "ray"}.get(name)
    if mod and importlib.util.find_spec(mod) is None:
        return f"{mod} is not installed (pip install {mod})"
    return None


def make_runtime(name: str) -> Runtime:
    makers: dict[str, Callable[[], Runtime]] = {
        "agentrt-zygote": lambda: AgentrtRuntime("zygote"),
        STANDBY: lambda: AgentrtRuntime("zygote"),
        "agentrt-spawn": lambda: AgentrtRuntime("spawn"),
        "asyncio": AsyncioRuntime,
        "threads": ThreadsRuntime,
        "process-pool": ProcessPoolRuntime,
        "mp-pool": MpPoolRuntime,
        "loky": LokyRuntime,
        "pebble": PebbleRuntime,
        "ray-tasks": lambda: RayRuntime(actors=False),
        "ray-actors": lambda: RayRuntime(actors=True),
    }
    return makers[name]()


# --- workloads ----------------------------------------------------------------------


#: every block of floor round trips, from all the runtimes' pairs: the floor's figure
FLOOR_BLOCKS: list[list[int]] = []
#: the asyncio floor's blocks (the floor's child driven from the event loop)
ASYNC_FLOOR_BLOCKS: list[list[int]] = []


async def rtt(rt: Runtime, floor: Floor, p: Params) -> dict[str, Any]:
    clock = time.perf_counter_ns
    iters = p.rtt_iters if not rt.name.startswith("ray") else max(20, p.rtt_iters // 2)
    for _ in range(p.warmup):
        await rt.call("ping")
    blocks: list[list[int]] = []
    fblocks: list[list[int]] = []
    afblocks: list[list[int]] = []
    for _ in range(p.rtt_blocks):
        fblocks.append(floor.round_trips(iters))
        FLOOR_BLOCKS.append(fblocks[-1])
        afblocks.append(await floor.async_round_trips(iters))
        ASYNC_FLOOR_BLOCKS.append(afblocks[-1])
        out = [0] * iters
        for i in range(iters):
            t0 = clock()
            await rt.call("ping")
            out[i] = clock() - t0
        blocks.append(out)
    s = latency_summary(blocks)
    s["floor_block_ratio_p50"] = spread(
        [pct(sorted(r), 0.5) / pct(sorted(f), 0.5) for f, r in zip(fblocks, blocks, strict=True)]
    )
    s["async_floor_block_ratio_p50"] = spread(
        [pct(sorted(r), 0.5) / pct(sorted(f), 0.5) for f, r in zip(afblocks, blocks, strict=True)]
    )
    return s


async def tasks(rt: Runtime, p: Params) -> dict[str, Any]:
    n = p.ray_tasks if rt.name.startswith("ray") else p.tasks
    one, bulk, gathered = [], [], []
    await rt.gather([rt.submit("ping") for _ in range(min(n, 500))])  # warm
    native = type(rt).bulk is not Runtime.bulk
    for _ in range(p.task_reps):
        t0 = time.perf_counter()
        for _ in range(n):
            await rt.wait(rt.submit("ping"))
        one.append((time.perf_counter() - t0) / n * 1e6)
        t0 = time.perf_counter()
        await rt.bulk("ping", n)
        bulk.append((time.perf_counter() - t0) / n * 1e6)
        if native:  # also the generic form, submit all then gather
            t0 = time.perf_counter()
            await rt.gather([rt.submit("ping") for _ in range(n)])
            gathered.append((time.perf_counter() - t0) / n * 1e6)
    out = {"tasks": n, "workers": 2, "one_by_one_us": spread(one), "bulk_us": spread(bulk)}
    if gathered:
        out["submit_gather_us"] = spread(gathered)
    return out


def _payload_iters(size: int, p: Params) -> int:
    return max(2, min(p.payload_cap, p.payload_target // size))


async def payload(rt: Runtime | None, floor: Floor, p: Params) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, size in SIZES:
        data = os.urandom(size)
        k = _payload_iters(size, p)
        if rt is None:
            got = floor.call({"x": data})
        else:
            got = await rt.call("echo", data)
        if got != data:
            raise AssertionError(f"echo of {label} came back different")
        rates = []
        for _ in range(p.payload_reps):
            t0 = time.perf_counter()
            for _ in range(k):
                if rt is None:
                    floor.call({"x": data})
                else:
                    await rt.call("echo", data)
            rates.append(size * k / (time.perf_counter() - t0) / 1e6)
        out[label] = {"bytes": size, "calls": k, "MBps": spread(rates)}
    return out


def pss_of(pids: Sequence[int]) -> dict[str, Any]:
    rows = []
    for pid in set(pids):
        with contextlib.suppress(OSError):
            rows.append(read_smaps_rollup(pid))
    if not rows:
        return {"error": "no smaps_rollup readable"}
    pss = [r.get("Pss", 0) / 1024 for r in rows]
    rss = [r.get("Rss", 0) / 1024 for r in rows]
    return {
        "workers": len(rows),
        "pss_mib": {"mean": statistics.fmean(pss), **spread(pss)},
        "rss_mib": {"mean": statistics.fmean(rss), **spread(rss)},
    }


async def startup(rt: Runtime, p: Params, quick: bool) -> dict[str, Any]:
    cap = min(rt.max_n, 50) if quick else rt.max_n
    if rt.name.startswith("ray") or rt.name == "loky" or rt.name == "agentrt-spawn":
        cap = min(cap, p.slow_cap) if quick else cap
    ns = [n for n in p.startup_ns if n <= cap]
    out: dict[str, Any] = {"cap": cap}
    for n in ns:
        times, distinct, errors = [], [], []
        for r in range(1 if rt.slow and n >= 50 else p.startup_reps[n]):
            try:
                t, pids, closer = await startup_once(rt, n)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            try:
                times.append(t)
                distinct.append(len(set(pids)))
                if n == ns[-1] and r == 0:
                    await asyncio.sleep(0.2)  # idle
                    out["pss"] = pss_of(pids)
            finally:
                res = closer()
                if asyncio.iscoroutine(res):
                    await res
        e: dict[str, Any] = {"n": n, "repetitions": len(times), "errors": errors}
        if times:
            e["ready_s"] = spread(times)
            e["distinct_min"] = min(distinct)
            _progress(f"{rt.name} startup N={n}: {e['ready_s']['median']:.3f}s")
        out[str(n)] = e
    return out


async def startup_once(rt: Runtime, n: int) -> tuple[float, list[int], Callable[[], Any]]:
    return await rt.start_n(n)


async def crash(rt: Runtime, p: Params, tmp: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in MODES:
        recs: list[dict[str, Any]] = []
        errors: list[str] = []
        # A Ray actor takes seconds to come back: two repetitions only.
        reps = min(p.crash_reps, 2) if rt.name == "ray-actors" else p.crash_reps
        for r in range(reps):
            stamp = os.path.join(tmp, f"{rt.name}-{mode}-{r}")
            try:
                recs.append(await rt.crash(mode, stamp, p))
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                traceback.print_exc(file=sys.stderr)
            if recs and recs[-1].get("error_type") == "never (hangs)":
                break  # every repetition would wait out the timeout again
        e: dict[str, Any] = {"repetitions": len(recs), "errors": errors}
        types = sorted({rec["error_type"] for rec in recs})
        e["error_type"] = "/".join(types)
        errs = [rec["error_ms"] for rec in recs if "error_ms" in rec]
        if errs:
            e["error_ms"] = spread(errs)
        served = [rec["replaced_ms"] for rec in recs if "replaced_ms" in rec]
        if served:
            e["replaced_ms"] = spread(served)
        # from the caller's error (the death noticed) to the replacement's answer
        after = [
            rec["replaced_ms"] - rec["error_ms"]
            for rec in recs
            if "replaced_ms" in rec and "error_ms" in rec
        ]
        if after:
            e["after_error_ms"] = spread(after)
        notes = sorted({rec["replacement"] for rec in recs if "replacement" in rec})
        if notes:
            e["replacement"] = "; ".join(notes)
        out[mode] = e
        err = f"{e['error_ms']['median']:.2f}ms" if "error_ms" in e else e["error_type"]
        rep = f"{e['replaced_ms']['median']:.2f}ms" if "replaced_ms" in e else "-"
        _progress(f"{rt.name} crash {mode}: error {err}, replaced {rep}")
    return out


# --- the run --------------------------------------------------------------------------


def _record_error(results: dict[str, Any], section: str, name: str, exc: BaseException) -> None:
    results.setdefault(section, {})[name] = {"error": f"{type(exc).__name__}: {exc}"}
    _progress(f"{name} {section} FAILED: {type(exc).__name__}: {exc}")
    traceback.print_exc(file=sys.stderr)


async def run_runtime(
    rt: Runtime,
    floor: Floor,
    p: Params,
    quick: bool,
    results: dict[str, Any],
    tmp: str,
    standby: bool = False,
) -> None:
    t0 = time.perf_counter()
    try:
        await rt.open()
    except Exception as exc:
        _record_error(results, "rtt", rt.name, exc)
        return
    try:
        sections: list[tuple[str, Callable[[], Awaitable[dict[str, Any]]]]] = [
            ("rtt", lambda: rtt(rt, floor, p)),
            ("tasks", lambda: tasks(rt, p)),
            ("payload", lambda: payload(rt, floor, p)),
        ]
        for section, coro in sections:
            try:
                results.setdefault(section, {})[rt.name] = await coro()
            except Exception as exc:
                _record_error(results, section, rt.name, exc)
        r = results["rtt"].get(rt.name, {})
        t = results["tasks"].get(rt.name, {})
        if "p50_us" in r and "bulk_us" in t:
            _progress(
                f"{rt.name}: rtt p50 {r['p50_us']:.1f}us, one-by-one "
                f"{t['one_by_one_us']['median']:.1f}us, bulk {t['bulk_us']['median']:.1f}us"
                + (
                    f" (submit+gather {t['submit_gather_us']['median']:.1f}us)"
                    if "submit_gather_us" in t
                    else ""
                )
            )
        if rt.isolated:
            try:
                results["crash"][rt.name] = await crash(rt, p, tmp)
            except Exception as exc:
                _record_error(results, "crash", rt.name, exc)
        if standby and isinstance(rt, AgentrtRuntime):
            rt.standby = True
            try:
                results["crash"][STANDBY] = await crash(rt, p, tmp)
            except Exception as exc:
                _record_error(results, "crash", STANDBY, exc)
            finally:
                rt.standby = False
    finally:
        await rt.close()
    if rt.isolated and rt.name != "ray-tasks":
        try:
            st = await startup(rt, p, quick)
            pss = st.pop("pss", None)
            results["startup"][rt.name] = st
            if pss is not None:
                results["pss"][rt.name] = pss
        except Exception as exc:
            _record_error(results, "startup", rt.name, exc)
    _progress(f"{rt.name} done in {time.perf_counter() - t0:.1f}s")


async def run(names: list[str], p: Params, quick: bool, floor: Floor) -> dict[str, Any]:
    results: dict[str, Any] = {
        k: {} for k in ("rtt", "tasks", "payload", "startup", "pss", "crash")
    }
    floor.round_trips(p.warmup)
    results["payload"][FLOOR] = await payload(None, floor, p)
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        try:
            for name in names:
                if name in (FLOOR, "floor-fork", "floor-minimal", STANDBY):
                    continue
                also = name == REF and STANDBY in names
                await run_runtime(make_runtime(name), floor, p, quick, results, tmp, also)
        finally:
            RayRuntime.shutdown_ray()
    # The floor's own figure: all its blocks, each run right before a runtime's.
    if FLOOR_BLOCKS:
        results["rtt"][FLOOR] = latency_summary(FLOOR_BLOCKS)
    if ASYNC_FLOOR_BLOCKS:
        results["rtt"][ASYNC_FLOOR] = latency_summary(ASYNC_FLOOR_BLOCKS)
    return results


def fork_series(p: Params, quick: bool, floor: Callable[[int], float]) -> dict[str, Any]:
    ns = [n for n in p.startup_ns if not quick or n <= 50]
    out: dict[str, Any] = {"cap": max(ns)}
    for n in ns:
        reps = p.startup_reps[n]
        times = [floor(n) for _ in range(reps)]
        out[str(n)] = {"n": n, "repetitions": reps, "errors": [], "ready_s": spread(times)}
    return out


# --- aims -----------------------------------------------------------------------------


def aims(res: dict[str, Any]) -> dict[str, Any]:
    """Each aim: the figure, the bound, and whether it is met (None: not measured)."""
    out: dict[str, Any] = {}

    def aim(key: str, value: float | None, bound: float, le: bool = True) -> None:
        met = None if value is None else (value <= bound if le else value >= bound)
        out[key] = {"value": value, "bound": bound, "met": met}

    aim("rtt_x_floor", get(res, "rtt", REF, "floor_block_ratio_p50", "median"), AIM_RTT_FLOOR)
    aim(
        "rtt_x_async_floor",
        get(res, "rtt", REF, "async_floor_block_ratio_p50", "median"),
        AIM_RTT_FLOOR,
    )
    # The raw p50s of the same run: the pipe floor swings several-fold with
    # the vCPUs' wake-up state on a VM, more than the machine drifts between
    # the two runtimes' turns, so a ratio of floor ratios is not steadier.
    ray = get(res, "rtt", "ray-actors", "p50_us")
    ours = get(res, "rtt", REF, "p50_us")
    aim("ray_actor_x", None if ray is None or not ours else ray / ours, AIM_RAY_ACTOR_X, le=False)
    aim("ready_300_s", get(res, "startup", REF, "300", "ready_s", "median"), AIM_READY_300_S)
    aim("pss_mib", get(res, "pss", REF, "pss_mib", "mean"), AIM_PSS_MIB)
    crash = get(res, "crash", REF) or {}
    errs = [get(crash, m, "error_ms", "median") for m in MODES]
    reps = [get(crash, m, "replaced_ms", "median") for m in MODES]
    aim(
        "crash_error_ms",
        None if None in errs or not errs else max(errs),
        AIM_CRASH_ERROR_MS,
    )
    aim(
        "crash_replaced_ms",
        None if None in reps or not reps else max(reps),
        AIM_CRASH_REPLACED_MS,
    )
    after = [get(crash, m, "after_error_ms", "median") for m in MODES]
    aim(
        "crash_after_error_ms",
        None if None in after or not after else max(after),
        AIM_CRASH_AFTER_ERROR_MS,
    )
    warm = get(res, "crash", STANDBY) or {}
    after = [get(warm, m, "after_error_ms", "median") for m in MODES]
    aim(
        "crash_after_error_standby_ms",
        None if None in after or not after else max(after),
        AIM_CRASH_AFTER_ERROR_MS,
    )
    aim("bulk_us", get(res, "tasks", REF, "bulk_us", "median"), AIM_BULK_US)
    one = get(res, "tasks", REF, "one_by_one_us", "median")
    ppe = get(res, "tasks", "process-pool", "one_by_one_us", "median")
    aim(
        "one_by_one_x_process_pool",
        None if one is None or not ppe else one / ppe,
        AIM_ONE_BY_ONE_FRACTION,
    )
    return out


AIM_TEXT = {
    "rtt_x_floor": "round trip / pipe floor <= {b}x",
    "rtt_x_async_floor": "round trip / asyncio pipe floor <= {b}x",
    "ray_actor_x": "Ray actor call / agentrt call >= {b}x (p50s)",
    "ready_300_s": "300 agents ready < {b} s",
    "pss_mib": "PSS per idle agent < {b} MiB",
    "crash_error_ms": "crash to typed error < {b} ms (worst mode)",
    "crash_replaced_ms": "crash to served replacement < {b} ms (worst mode)",
    "crash_after_error_ms": "caller's error to served replacement <= {b} ms (worst mode)",
    "crash_after_error_standby_ms": "... with standby = true <= {b} ms (worst mode)",
    "bulk_us": "bulk per-task overhead < {b} us",
    "one_by_one_x_process_pool": "one by one / ProcessPoolExecutor's <= {b}",
}


# --- output ---------------------------------------------------------------------------


def _ratio(v: float | None, ref: float | None) -> str:
    if v is None or not ref:
        return ""
    return f"{v / ref:.2f}x"


def table(head: Sequence[str], rows: list[Sequence[str]]) -> list[str]:
    w = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{x}}}" if i == 0 else f"{{:>{x}}}" for i, x in enumerate(w))
    return [fmt.format(*head), "-" * (sum(w) + 2 * len(w) - 2)] + [
        fmt.format(*r).rstrip() for r in rows
    ]


def render(report: dict[str, Any]) -> str:
    m, r, names = report["machine"], report["results"], report["runtimes"]
    lines = [
        f"agentrt vs peers ({'quick' if report['quick'] else 'full'})",
        f"machine: {m['cores']} cores, Python {m['python']}, kernel {m['kernel']}, {m['machine']}",
        "ratios: the runtime's figure / agentrt-zygote's",
        "",
    ]
    order = [n for n in ALL if n in names]

    def section(title: str, head: Sequence[str], rows: list[Sequence[str]]) -> None:
        lines.append(title)
        lines.extend(table(head, rows) if rows else ["(nothing measured)"])
        lines.append("")

    rows: list[Sequence[str]] = []
    ref = get(r, "rtt", REF, "p50_us")
    for n in [order[0], ASYNC_FLOOR, *order[1:]] if order else []:
        e = r["rtt"].get(n)
        if not e:
            continue
        if "error" in e:
            rows.append((n, "ERROR", e["error"][:60], "", "", "", ""))
            continue
        fr = e.get("floor_block_ratio_p50")
        afr = e.get("async_floor_block_ratio_p50")
        rows.append(
            (
                n,
                f"{e['p50_us']:.1f}",
                min_max(e["block_p50_us"], ".1f"),
                f"{e['p99_us']:.1f}",
                f"{fr['median']:.2f}x" if fr else "",
                f"{afr['median']:.2f}x" if afr else "",
                _ratio(e["p50_us"], ref),
            )
        )
    section(
        "1. round trip of a tiny call to a warm worker (us)",
        ("runtime", "p50", "min-max", "p99", "x floor", "x async floor", "x agentrt"),
        rows,
    )

    rows = []
    ref1 = get(r, "tasks", REF, "one_by_one_us", "median")
    refb = get(r, "tasks", REF, "bulk_us", "median")
    for n in order:
        e = r["tasks"].get(n)
        if not e:
            continue
        if "error" in e:
            rows.append((n, "ERROR", e["error"][:60], "", "", "", ""))
            continue
        o, b = e["one_by_one_us"], e["bulk_us"]
        rows.append(
            (
                f"{n} ({e['tasks']})",
                f"{o['median']:.1f}",
                min_max(o, ".1f"),
                _ratio(o["median"], ref1),
                f"{b['median']:.1f}",
                min_max(b, ".1f"),
                _ratio(b["median"], refb),
            )
        )
    section(
        "2. tiny tasks on 2 workers, us per task (one by one / bulk)",
        ("runtime (tasks)", "1-by-1", "min-max", "x agentrt", "bulk", "min-max", "x agentrt"),
        rows,
    )

    rows = []
    for n in order:
        e = r["payload"].get(n)
        if not e:
            continue
        if "error" in e:
            rows.append((n, "ERROR", e["error"][:60], "", ""))
            continue
        cells = [n]
        for label, _ in SIZES:
            v = e[label]["MBps"]["median"]
            refv = get(r, "payload", REF, label, "MBps", "median")
            cells.append(f"{v:,.0f} ({_ratio(v, refv)})")
        rows.append(cells)
    section(
        "3. echo payload, MB/s (x agentrt; higher is better; in-process runtimes do not copy)",
        ("runtime", *[lab for lab, _ in SIZES]),
        rows,
    )

    rows = []
    for n in order:
        e = r["startup"].get(n)
        if not e:
            continue
        if "error" in e:
            rows.append((n, "ERROR", e["error"][:60], "", "", "", ""))
            continue
        cells = [f"{n} (cap {e['cap']})"]
        for k in ("1", "50", "300", "1000"):
            x = e.get(k)
            if not x or "ready_s" not in x:
                cells.append("ERROR" if x and x["errors"] else "-")
                continue
            refv = get(r, "startup", REF, k, "ready_s", "median")
            got = x.get("distinct_min", x["n"])
            short = "" if got == x["n"] else f" {got}/{x['n']} pids"
            cells.append(f"{x['ready_s']['median']:.3f} ({_ratio(x['ready_s']['median'], refv)})")
            cells[-1] += short
        pss = r["pss"].get(n, {}).get("pss_mib")
        refp = get(r, "pss", REF, "pss_mib", "mean")
        cells.append(f"{pss['mean']:.2f} ({_ratio(pss['mean'], refp)})" if pss else "-")
        rows.append(cells)
    section(
        "4. start N isolated workers until each answered, s (x agentrt); PSS per idle worker, MiB",
        ("runtime", "N=1", "N=50", "N=300", "N=1000", "PSS"),
        rows,
    )

    rows = []
    for n in order:
        e = r["crash"].get(n)
        if not e:
            continue
        if "error" in e:
            rows.append((n, "ERROR", e["error"][:60], "", ""))
            continue
        for mode in MODES:
            x = e.get(mode, {})
            err = x.get("error_ms")
            rep = x.get("replaced_ms")
            rows.append(
                (
                    f"{n} {mode}",
                    x.get("error_type", "") or ("ERROR: " + "; ".join(x.get("errors", []))[:50]),
                    f"{err['median']:.2f} {min_max(err, '.2f')}".rstrip() if err else "-",
                    f"{rep['median']:.2f} {min_max(rep, '.2f')}".rstrip() if rep else "-",
                    x.get("replacement", ""),
                )
            )
    section(
        "5. worker dies mid-call: ms until the caller gets an error, until a replacement serves",
        ("runtime mode", "error type", "to error", "to replaced", "note"),
        rows,
    )

    lines.append("aims (agentrt-zygote)")
    for key, a in report["aims"].items():
        met = {True: "yes", False: "NO", None: "n/a"}[a["met"]]
        v = "-" if a["value"] is None else f"{a['value']:.3g}"
        lines.append(f"  {AIM_TEXT[key].format(b=a['bound']):<60} {v:>8}  {met}")
    lines.append("")
    for n in order:
        if names[n]["note"]:
            lines.append(f"{n}: {names[n]['note']}")
    lines.append(f"(took {report['elapsed_s']:.1f} s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON ('-': stdout)")
    ap.add_argument("--quick", action="store_true", help="fewer iterations, N up to 50 only")
    ap.add_argument("--only", metavar="NAME[,NAME]", help="these runtimes (and the references)")
    ap.add_argument(
        "--crash-reps", type=int, metavar="N", help="deaths per mode (quick: 2, full: 5)"
    )
    args = ap.parse_args(argv)
    # Logging must not distort the figures (and crashes are expected here).
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # segfaults: no core files
    names = list(ALL)
    if args.only:
        wanted = {x.strip() for x in args.only.split(",") if x.strip()}
        unknown = wanted - set(ALL)
        if unknown:
            ap.error(f"unknown runtime(s): {', '.join(sorted(unknown))}; known: {', '.join(ALL)}")
        names = [n for n in ALL if n in wanted | {REF, FLOOR}]
    p = QUICK if args.quick else FULL
    if args.crash_reps:
        p = msgspec.structs.replace(p, crash_reps=max(1, args.crash_reps))
    t0 = time.perf_counter()
    runtimes: dict[str, dict[str, Any]] = {}
    run_names = []
    for n in names:
        why = available(n)
        note = why or ""
        if not why and n not in (FLOOR, "floor-fork", "floor-minimal"):
            note = make_runtime(n).note
        if n == "ray-actors" and not why:
            note += "; startup capped at N=50 (each actor is a fresh Python process)"
        if n == "ray-tasks" and not why:
            note += "; no startup figure (tasks share Ray's worker pool)"
        if n == STANDBY:
            note = "agentrt-zygote with standby = true: crash figures only, on its supervisor"
        if n in ("loky", "agentrt-spawn"):
            note = (note + "; " if note else "") + "startup capped at N=50 (spawn: slow here)"
        runtimes[n] = {"available": why is None, "note": note}
        if why is None:
            run_names.append(n)
        else:
            _progress(f"skipping {n}: {why}")
    # Forks happen before any event loop or thread exists.
    forks = fork_series(p, args.quick, fork_floor) if "floor-fork" in run_names else None
    minimal = (
        fork_series(p, args.quick, minimal_fork_floor) if "floor-minimal" in run_names else None
    )
    floor = Floor()
    try:
        results = asyncio.run(run(run_names, p, args.quick, floor))
    finally:
        floor.close()
    if forks is not None:
        results["startup"]["floor-fork"] = forks
    if minimal is not None:
        results["startup"]["floor-minimal"] = minimal
    report: dict[str, Any] = {
        "benchmark": "agentrt bench_peers",
        "quick": args.quick,
        "machine": machine(),
        "params": msgspec.to_builtins(p),
        "runtimes": runtimes,
        "results": results,
        "elapsed_s": time.perf_counter() - t0,
    }
    report["aims"] = aims(results)
    emit(report, render, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
