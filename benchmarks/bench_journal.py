"""Run journal benchmark of agentrt: what recording a run costs, and how fast a run resumes.

Everything is measured in one run, on this machine, on one Supervisor
(opened once; each pool started, and each workload run once with and once
without a journal, before anything is timed):

1. **overhead**: the same graph run with and without a journal
   (``Run(sup, graph, RunSpec(), journal=Journal(path))``; one journal file
   per workload, in a temporary directory), the two alternating (with first
   in every other pair), for three workloads:

   - **swarm**: ``bench_swarm.py``'s swarm as a graph: N = 300 tasks
     (``--quick``: 50) of the agent ``worker`` (a pool of N replicas of
     concurrency 1), each making 13 sequential calls to the in-process tool
     ``io`` that sleeps 50 ms;
   - **dag**: ``bench_swarm.py``'s DAG (its own builder, same seed): 200
     tasks on 0-3 earlier ones, each calling ``sim`` that sleeps 10-100 ms
     (a pool of 8 replicas of concurrency 64);
   - **tiny**: 2,000 independent no-op tasks (``journal_agents:Tiny``, one
     replica of concurrency 64), ``RunSpec()``'s default ``max_concurrency``
     (none): the journal's cost per task with nothing to hide it.

   Reported: the wall time of ``Run(...).wait()`` (which includes writing
   the run's tasks when it starts and the journal's last commit before the
   result is returned) and the run's own ``RunResult.makespan`` (first task
   start to last task end), median and min-max over the repetitions, and
   the ratio with / without (of the medians; the range of the ratios of
   each adjacent pair beside it).  For the tiny tasks: microseconds per
   task, with and without, and their difference.  Every journaled run is
   checked in the journal afterwards (``Journal.runs()``: status ok, every
   task ok).
2. **resume**: a graph of 10,000 no-op tasks (``--quick``: 2,000) in chains
   of 10 is run once without and once with a journal (a fresh file: only
   that run in it), timed; the journal file's size is taken then (database
   plus its write-ahead log, the journal open) and after ``Journal.close()``
   (checkpointed).  Then, repeatedly, as a new supervisor would: open the
   file (``Journal(path)``, which checks it), ``Journal.load(run_id)`` alone,
   then ``Run.resume(sup, journal, run_id, graph)`` and ``.wait()`` on the
   fresh ``Run``, each timed.  Nothing may run again: ``RunResult.restored``
   must name every task, and the agent's own count of the calls it served
   (``Tiny.calls``, one replica) must not move.

Figures are medians over repetitions with the min-max beside them; every
ratio is against a baseline measured in the same run.  Nothing here is an aim:
the figures say what the journal costs.

Usage::

    python benchmarks/bench_journal.py [--quick] [--json FILE|-]

``--quick`` uses 50 swarm workers, 2,000 tasks to resume and fewer
repetitions.  With ``--json -`` the JSON goes to stdout and the table to
stderr.  The temporary journals are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sqlite3
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import structlog
from bench_swarm import QUICK as SWARM_PARAMS
from bench_swarm import Dag
from common import emit, machine, min_max, spread, table

from agentrt import AgentSpec, RunSpec, Supervisor
from agentrt.graph import Graph
from agentrt.journal import Journal
from agentrt.scheduler import Run, RunResult

BENCH_DIR = Path(__file__).resolve().parent


def _progress(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


class Params(msgspec.Struct, kw_only=True):
    workers: int
    tool_calls: int
    tool_ms: float
    swarm_pairs: int
    dag_pairs: int
    tiny_tasks: int
    tiny_pairs: int
    tiny_concurrency: int
    resume_tasks: int
    resume_chain: int
    resume_reps: int


QUICK = Params(
    workers=50,
    tool_calls=13,
    tool_ms=50.0,
    swarm_pairs=3,
    dag_pairs=3,
    tiny_tasks=2_000,
    tiny_pairs=7,
    tiny_concurrency=64,
    resume_tasks=2_000,
    resume_chain=10,
    resume_reps=3,
)
FULL = msgspec.structs.replace(
    QUICK, workers=300, swarm_pairs=7, dag_pairs=7, tiny_pairs=21, resume_tasks=10_000
)


# --- graphs ----------------------------------------------------------------------------


def swarm_graph(p: Params) -> Graph:
    g = Graph()
    for i in range(p.workers):
        g.add(f"w{i}", "worker", args={"i": i, "calls": p.tool_calls, "ms": p.tool_ms})
    return g


def tiny_graph(n: int, chain: int = 1) -> Graph:
    """``n`` no-op tasks; with ``chain`` > 1, in chains of that length."""
    g = Graph()
    for i in range(n):
        after = [f"t{i - 1}"] if chain > 1 and i % chain else []
        g.add(f"t{i}", "tiny", args={"i": i}, after=after)
    return g


async def tiny_calls(sup: Supervisor) -> int:
    """How many tasks the (one) ``tiny`` replica has run so far."""
    return int(await sup.call("tiny", method="calls"))


# --- 1: overhead ------------------------------------------------------------------------


async def _timed(sup: Supervisor, graph: Graph, journal: Journal | None) -> tuple[float, RunResult]:
    t0 = time.perf_counter()
    rr = await Run(sup, graph, RunSpec(), journal=journal).wait()
    return time.perf_counter() - t0, rr


def _problems(rr: RunResult, n: int) -> list[str]:
    errors: list[str] = []
    if rr.status != "ok":
        bad = sorted(k for k, t in rr.tasks.items() if t.status != "ok")
        errors.append(f"run {rr.status}, tasks not ok: {bad[:10]}")
    if len(rr.tasks) != n:
        errors.append(f"{len(rr.tasks)} task results, expected {n}")
    if rr.journal_error:
        errors.append(f"journal: {rr.journal_error}")
    return errors


def _journal_check(journal: Journal, run_ids: list[str], n: int) -> list[str]:
    """Every journaled run is in the journal, ended ok, all ``n`` tasks ok."""
    rows = {r.run_id: r for r in journal.runs()}
    errors: list[str] = []
    for rid in run_ids:
        r = rows.get(rid)
        if r is None:
            errors.append(f"run {rid} is not in the journal")
        elif r.status != "ok" or r.tasks != n or r.ok != n:
            errors.append(f"run {rid} in the journal: {r.status}, {r.ok}/{r.tasks} ok of {n}")
    return errors


async def paired(
    sup: Supervisor,
    name: str,
    make: Callable[[], Graph],
    journal: Journal,
    pairs: int,
    check: Callable[[RunResult], list[str]] | None = None,
) -> dict[str, Any]:
    """``pairs`` runs of ``make()`` without and with ``journal``, alternating."""
    n = len(make())
    errors: list[str] = []
    for j in (None, journal):  # warm-up, not counted
        _, rr = await _timed(sup, make(), j)
        errors.extend(f"warm-up: {e}" for e in _problems(rr, n))
    runs: dict[str, list[dict[str, float]]] = {"without": [], "with": []}
    journaled: list[str] = []
    for r in range(pairs):
        order = (None, journal) if r % 2 == 0 else (journal, None)
        for j in order:
            graph = make()
            wall, rr = await _timed(sup, graph, j)
            key = "without" if j is None else "with"
            runs[key].append({"wall_s": wall, "makespan_s": rr.makespan})
            errs = _problems(rr, n) + (check(rr) if check else [])
            errors.extend(f"pair {r + 1}, {key} journal: {e}" for e in errs)
            if j is not None:
                journaled.append(rr.run_id)
        a, b = runs["without"][-1]["wall_s"], runs["with"][-1]["wall_s"]
        _progress(f"{name} pair {r + 1}: without {a:.3f}s, with {b:.3f}s ({b / a:.3f}x)")
    errors.extend(_journal_check(journal, journaled, n))
    out: dict[str, Any] = {"tasks": n, "pairs": pairs}
    for what in ("wall_s", "makespan_s"):
        wo = [x[what] for x in runs["without"]]
        wi = [x[what] for x in runs["with"]]
        out[what] = {"without": spread(wo), "with": spread(wi)}
        out[f"ratio_{what[:-2]}"] = statistics.median(wi) / statistics.median(wo)
        out[f"pair_ratios_{what[:-2]}"] = spread([b / a for a, b in zip(wo, wi, strict=True)])
    per_task = {k: [x["wall_s"] / n * 1e6 for x in v] for k, v in runs.items()}
    out["us_per_task"] = {k: spread(v) for k, v in per_task.items()}
    out["added_us_per_task"] = statistics.median(per_task["with"]) - statistics.median(
        per_task["without"]
    )
    out["errors"] = errors
    return out


async def swarm(sup: Supervisor, p: Params, tmp: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    await sup.start(
        AgentSpec(
            name="worker",
            entry="swarm_agents:worker",
            replicas=p.workers,
            concurrency=1,
            startup_timeout=120,
        )
    )
    _progress(f"swarm: {p.workers} workers started in {time.perf_counter() - t0:.3f}s")
    want = p.workers * p.tool_calls

    def check(rr: RunResult) -> list[str]:
        done = [t.result for t in rr.tasks.values() if t.status == "ok"]
        calls = sum(x["calls"] for x in done)
        pids = {x["pid"] for x in done}
        errors: list[str] = []
        if calls != want:
            errors.append(f"{calls} tool calls counted, expected {want}")
        if len(pids) != p.workers:
            errors.append(f"{len(pids)} distinct worker processes, expected {p.workers}")
        return errors

    with Journal(tmp / "swarm.db") as journal:
        out = await paired(sup, "swarm", lambda: swarm_graph(p), journal, p.swarm_pairs, check)
    out["workers"] = p.workers
    out["tool_calls"] = p.workers * p.tool_calls
    out["ideal_s"] = p.tool_calls * p.tool_ms / 1000.0
    await sup.stop("worker")
    return out


async def dag(sup: Supervisor, p: Params, tmp: Path) -> dict[str, Any]:
    sp = SWARM_PARAMS
    d = Dag.random(sp)
    await sup.start(
        AgentSpec(
            name="sim",
            entry="swarm_agents:sim",
            replicas=sp.dag_replicas,
            concurrency=sp.dag_concurrency,
        )
    )
    _, cp_ms = d.critical_path()
    _progress(f"dag: {sp.dag_tasks} tasks, depth {d.depth()}, critical path {cp_ms:.0f} ms")
    with Journal(tmp / "dag.db") as journal:
        out = await paired(sup, "dag", d.graph, journal, p.dag_pairs)
    out.update(
        edges=sum(len(x) for x in d.deps),
        depth=d.depth(),
        seed=sp.dag_seed,
        critical_path_s=cp_ms / 1000.0,
        replicas=sp.dag_replicas,
        concurrency=sp.dag_concurrency,
    )
    await sup.stop("sim")
    return out


async def tiny(sup: Supervisor, p: Params, tmp: Path) -> dict[str, Any]:
    with Journal(tmp / "tiny.db") as journal:
        out = await paired(sup, "tiny", lambda: tiny_graph(p.tiny_tasks), journal, p.tiny_pairs)
    out["replica_concurrency"] = p.tiny_concurrency
    return out


# --- 2 and 3: resume, file size ----------------------------------------------------------


def _size(path: Path) -> dict[str, int]:
    """The database and its -wal and -shm files, bytes (0 for one that is not there)."""
    out = {}
    for suffix in ("", "-wal", "-shm"):
        f = path.with_name(path.name + suffix)
        out[suffix.lstrip("-") or "db"] = f.stat().st_size if f.exists() else 0
    return out


async def resume(sup: Supervisor, p: Params, tmp: Path) -> dict[str, Any]:
    n, chain = p.resume_tasks, p.resume_chain
    path = tmp / "resume.db"
    run_id = "bench-resume"
    errors: list[str] = []
    out: dict[str, Any] = {"tasks": n, "chain": chain}

    graph = tiny_graph(n, chain)
    c0 = await tiny_calls(sup)
    wall, rr = await _timed(sup, graph, None)
    out["without_journal_s"] = wall
    errors.extend(f"run without journal: {e}" for e in _problems(rr, n))

    graph = tiny_graph(n, chain)
    c1 = await tiny_calls(sup)
    journal = Journal(path)
    try:
        t0 = time.perf_counter()
        rr = await Run(sup, graph, RunSpec(), run_id, journal=journal).wait()
        out["first_run_s"] = time.perf_counter() - t0
        errors.extend(f"first run: {e}" for e in _problems(rr, n))
        out["size_open"] = _size(path)
    finally:
        journal.close()
    c2 = await tiny_calls(sup)
    out["size_closed"] = _size(path)
    out["calls_first_runs"] = [c1 - c0, c2 - c1]
    if [c1 - c0, c2 - c1] != [n, n]:
        errors.append(f"the agent served {c1 - c0} and {c2 - c1} calls, expected {n} each")
    _progress(
        f"resume: {n} tasks (chains of {chain}) without journal {out['without_journal_s']:.3f}s, "
        f"with {out['first_run_s']:.3f}s; file {sum(out['size_open'].values()) / 1e6:.1f} MB "
        f"open, {sum(out['size_closed'].values()) / 1e6:.1f} MB closed"
    )

    reps: list[dict[str, Any]] = []
    for r in range(p.resume_reps):
        graph = tiny_graph(n, chain)
        before = await tiny_calls(sup)
        t0 = time.perf_counter()
        journal = Journal(path)
        t1 = time.perf_counter()
        try:
            loaded = journal.load(run_id)
            t2 = time.perf_counter()
            run = Run.resume(sup, journal, run_id, graph)
            t3 = time.perf_counter()
            rr = await run.wait()
            t4 = time.perf_counter()
        finally:
            journal.close()
        ran = await tiny_calls(sup) - before
        rep = {
            "open_s": t1 - t0,
            "load_s": t2 - t1,
            "resume_s": t3 - t2,
            "wait_s": t4 - t3,
            "resume_wait_s": t4 - t2,
            "loaded_done": len(loaded.done),
            "restored": len(rr.restored),
            "calls": ran,
        }
        reps.append(rep)
        errs = _problems(rr, n)
        if len(loaded.done) != n:
            errs.append(f"Journal.load found {len(loaded.done)} tasks done, expected {n}")
        if set(rr.restored) != set(graph):
            errs.append(f"{len(rr.restored)} tasks restored, expected {n}")
        if ran:
            errs.append(f"the agent served {ran} calls: tasks ran again")
        errors.extend(f"resume {r + 1}: {e}" for e in errs)
        _progress(
            f"resume {r + 1}: open {rep['open_s'] * 1e3:.1f} ms, load {rep['load_s'] * 1e3:.1f} "
            f"ms, Run.resume {rep['resume_s']:.3f}s, wait {rep['wait_s']:.3f}s; "
            f"restored {rep['restored']}, calls {ran}"
        )
    for key in ("open_s", "load_s", "resume_s", "wait_s", "resume_wait_s"):
        out[key] = spread([x[key] for x in reps])
    out["repetitions"] = reps
    out["errors"] = errors
    return out


# --- the run -----------------------------------------------------------------------------


async def run(p: Params) -> dict[str, Any]:
    results: dict[str, Any] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-journal-") as tmpdir:
        tmp = Path(tmpdir)
        async with Supervisor(
            base_dir=BENCH_DIR, preload=["swarm_agents", "journal_agents"]
        ) as sup:
            await sup.open()
            await sup.start(
                AgentSpec(
                    name="tiny",
                    entry="journal_agents:Tiny",
                    concurrency=p.tiny_concurrency,
                    queue=p.tiny_concurrency,
                )
            )
            results["open_s"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            Journal(tmp / "empty.db").close()
            results["journal_create_s"] = time.perf_counter() - t1
            for name, fn in (("swarm", swarm), ("dag", dag), ("tiny", tiny), ("resume", resume)):
                try:
                    results[name] = await fn(sup, p, tmp)
                except Exception as exc:
                    results[name] = {"error": f"{type(exc).__name__}: {exc}"}
                    _progress(f"{name} FAILED: {type(exc).__name__}: {exc}")
                    traceback.print_exc(file=sys.stderr)
    return results


# --- output ---------------------------------------------------------------------------


def _s(x: float) -> str:
    return f"{x:.3f} s"


def _ms(x: float) -> str:
    return f"{x * 1e3:.1f} ms"


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    r = report["results"]
    lines = [
        f"agentrt journal benchmark ({'quick' if report['quick'] else 'full'})",
        f"machine: {m['cores']} cores, Python {m['python']}, kernel {m['kernel']}, "
        f"{m['machine']}, SQLite {m['sqlite']}",
        "with / without journal alternate on one warmed-up Supervisor; ratios are of medians, "
        "pairs: the range of each adjacent pair's ratio",
        "",
    ]
    rows: list[tuple[str, str, str, str]] = []

    def row(name: str, value: str, rng: str = "", note: str = "") -> None:
        rows.append((name, value, rng, note))

    def overhead(x: dict[str, Any], what: str) -> None:
        w = x["wall_s"]
        mk = x["makespan_s"]
        row(
            f"{what}: wall of Run.wait(), no journal",
            _s(w["without"]["median"]),
            min_max(w["without"], ".3f"),
            f"{x['pairs']} reps; makespan {_s(mk['without']['median'])}",
        )
        pr = x["pair_ratios_wall"]
        row(
            "  with journal",
            _s(w["with"]["median"]),
            min_max(w["with"], ".3f"),
            f"{x['ratio_wall']:.3f}x (pairs {pr['min']:.3f}-{pr['max']:.3f}); "
            f"makespan {_s(mk['with']['median'])}, {x['ratio_makespan']:.3f}x",
        )

    for name in ("swarm", "dag", "tiny", "resume"):
        x = r.get(name, {})
        if "error" in x:
            row(name, "ERROR", x["error"])
            continue
        if not x:
            continue
        if name == "swarm":
            overhead(
                x, f"swarm: {x['workers']} tasks x {report['params']['tool_calls']} tool calls"
            )
        elif name == "dag":
            overhead(x, f"dag: {x['tasks']} tasks, depth {x['depth']}")
        elif name == "tiny":
            u = x["us_per_task"]
            row(
                f"tiny: {x['tasks']} no-op tasks, no journal",
                f"{u['without']['median']:.1f} us/task",
                min_max(u["without"], ".1f"),
                f"{x['pairs']} reps; {_ms(x['wall_s']['without']['median'])} a run",
            )
            pr = x["pair_ratios_wall"]
            row(
                "  with journal",
                f"{u['with']['median']:.1f} us/task",
                min_max(u["with"], ".1f"),
                f"{x['ratio_wall']:.3f}x (pairs {pr['min']:.3f}-{pr['max']:.3f}); "
                f"+{x['added_us_per_task']:.1f} us a task",
            )
        else:
            n = x["tasks"]
            row(
                f"resume: {n} no-op tasks in chains of {x['chain']}, run without journal",
                _s(x["without_journal_s"]),
                "",
                f"{x['without_journal_s'] / n * 1e6:.1f} us/task",
            )
            row(
                "  the same, run with journal (the run resumed below)",
                _s(x["first_run_s"]),
                "",
                f"{x['first_run_s'] / n * 1e6:.1f} us/task; "
                f"{x['first_run_s'] / x['without_journal_s']:.3f}x",
            )
            so, sc = x["size_open"], x["size_closed"]
            row(
                "  journal file after it (db + wal, open)",
                _mb(so["db"] + so["wal"]),
                "",
                f"{(so['db'] + so['wal']) / n:.0f} B a task (db {_mb(so['db'])}, "
                f"wal {_mb(so['wal'])}, shm {_mb(so['shm'])})",
            )
            row(
                "  journal file after close (checkpointed)",
                _mb(sc["db"] + sc["wal"]),
                "",
                f"{(sc['db'] + sc['wal']) / n:.0f} B a task",
            )
            reps = len(x["repetitions"])
            row(
                "  Journal(path): open and check the file",
                _ms(x["open_s"]["median"]),
                min_max({k: v * 1e3 for k, v in x["open_s"].items()}, ".1f"),
                f"{reps} reps",
            )
            row(
                "  Journal.load(run_id) alone",
                _ms(x["load_s"]["median"]),
                min_max({k: v * 1e3 for k, v in x["load_s"].items()}, ".1f"),
                f"{x['load_s']['median'] / n * 1e6:.1f} us/task",
            )
            row(
                "  Run.resume(sup, journal, run_id, graph)",
                _s(x["resume_s"]["median"]),
                min_max(x["resume_s"], ".3f"),
                f"{x['resume_s']['median'] / n * 1e6:.1f} us/task",
            )
            row(
                "  .wait() of the resumed run",
                _s(x["wait_s"]["median"]),
                min_max(x["wait_s"], ".3f"),
                f"{x['wait_s']['median'] / n * 1e6:.1f} us/task",
            )
            last = x["repetitions"][-1]
            row(
                "  resume + wait",
                _s(x["resume_wait_s"]["median"]),
                min_max(x["resume_wait_s"], ".3f"),
                f"{x['resume_wait_s']['median'] / n * 1e6:.1f} us/task; restored "
                f"{last['restored']}/{n}, calls made {last['calls']}",
            )
        for err in x.get("errors", []):
            row(f"{name} problem", "ERROR", err)
    if "journal_create_s" in r:
        row("a new journal file: create", _ms(r["journal_create_s"]))
    return table(lines, rows, report["elapsed_s"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON ('-': stdout)")
    ap.add_argument(
        "--quick", action="store_true", help="50 swarm workers, 2,000 tasks to resume, fewer reps"
    )
    args = ap.parse_args(argv)

    # Logging must not distort the figures: warnings and errors only.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    params = QUICK if args.quick else FULL
    t0 = time.perf_counter()
    results = asyncio.run(run(params))
    report: dict[str, Any] = {
        "benchmark": "agentrt bench_journal",
        "quick": args.quick,
        "machine": {**machine(), "sqlite": sqlite3.sqlite_version},
        "params": msgspec.to_builtins(params),
        "results": results,
        "elapsed_s": time.perf_counter() - t0,
    }
    emit(report, render, args.json)
    failed = any(
        isinstance(v, dict) and ("error" in v or v.get("errors")) for v in results.values()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
