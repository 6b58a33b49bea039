"""Model-driven agents: sequential (ReAct), parallel tool calls and a planned DAG, timed.

One task, "compare N items" (N independent ``lookup`` calls, a ``compare``
that needs all of them, a ``summarize`` that needs the comparison; see
``benchmarks/llm_script.py``), is solved by a scripted model
(:class:`agentrt.llm.ScriptedModel`: a local OpenAI-compatible HTTP server
that sleeps a fixed latency per model call, full: 300 ms) calling tools of a
fixed latency (full: 200 ms, ``asyncio.sleep``) three ways:

1. **sequential** (ReAct): one tool call per model turn: N + 2 tool turns and
   the final answer;
2. **parallel** tool calls: every independent call in one turn, then the
   dependent ones: 3 tool turns and the final answer;
3. **plan** (LLMCompiler style): one turn calls ``run_plan`` with the whole
   DAG (``${lookup_0.value}`` references), whose steps run as soon as their
   inputs exist; then the final answer: 2 model turns.

The model's dependent calls take their arguments from the tool answers in the
conversation and the final answer is checked against the expected one, so a
run that loses a result fails instead of looking fast.

Runtimes, all against the same server in the same run:

- ``agentrt``: a real agent (``llm_agents:solve``, embedded ``Supervisor``)
  running :func:`agentrt.llm.run_loop` with ``OpenAIChat``; the tools
  in-process (async, in the agent's event loop);
- ``agentrt isolated``: the same with the tools ``isolated = true``: each
  call in a sandboxed process of the tool's warm pool (``lookup`` has as
  many replicas as the largest N, so a turn's lookups each get a process;
  the pids the tools report are checked);
- ``openai-agents`` (OpenAI Agents SDK) and ``langgraph`` (prebuilt
  ``create_react_agent``, ``ChatOpenAI``), where installed (``pip install
  'agentrt[bench-llm]'``): sequential and parallel (they have no planner);
  their tools in-process and async; run in this process.

Reported per runtime and way: end-to-end latency (from the call to the final
answer; agentrt: ``sup.call`` around the agent), median and min-max over the
repetitions; model turns and tool calls as the server saw them (the last
request's conversation), tool functions run; the theoretical critical path
(model latency x turns + tool latency x dependent depth) and the measured
latency's excess over it (the runtime's and the clients' overhead); the
speed-up against the same runtime's sequential way, measured in the same run,
with the ideal one (ratio of the critical paths) beside it; and each peer's
latency against agentrt's for the same way.  Before the repetitions every
runtime and way runs once with no latency at all (warm-up: imports,
connections, the isolated tools' pools), untimed.  The repetitions
interleave the runtimes and ways, so that a drift of the machine touches all.

For reference, the LLMCompiler paper's own figure is printed beside ours:
Kim et al., "An LLM Compiler for Parallel Function Calling", ICML 2024
(arXiv:2312.04511): "latency speedup of up to 3.7x" over ReAct, measured
with real models on its benchmarks, not on this task.

Usage::

    python benchmarks/bench_llm.py [--quick] [--json FILE|-] [--reps N]

``--quick``: N = 4 only, 100 ms per model call and per tool, 3 repetitions
(full: N = 4 and 8, 300 ms and 200 ms, 5 repetitions).  With ``--json -``
the JSON goes to stdout and the table to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import llm_peers
import msgspec
import structlog
from common import emit, machine, min_max, spread
from llm_agents import ISOLATED, TOOLS
from llm_script import WAYS, Task, Way, reply

from agentrt import AgentSpec, Supervisor, ToolSpec
from agentrt.llm import ScriptedModel

BENCH_DIR = Path(__file__).resolve().parent
REF = "agentrt"
#: seconds one run may take before it counts as failed
RUN_TIMEOUT = 120.0
#: the LLMCompiler paper's own figures, quoted from its abstracts (ICML 2024; the
#: second only in arXiv v1's), measured with real models on its own benchmarks
PAPER = {
    "title": "An LLM Compiler for Parallel Function Calling",
    "authors": "Kim et al.",
    "venue": "ICML 2024",
    "arxiv": "2312.04511",
    "claim": "latency speedup of up to 3.7x compared to ReAct",
    "speedup_over_react_max": 3.7,
    "claim_vs_parallel": "up to 1.35x latency gain over OpenAI's parallel function calling "
    "(arXiv v1)",
    "speedup_over_parallel_max": 1.35,
}


def _progress(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


class Params(msgspec.Struct, kw_only=True, frozen=True):
    ns: tuple[int, ...]
    model_ms: float
    tool_ms: float
    reps: int


QUICK = Params(ns=(4,), model_ms=100.0, tool_ms=100.0, reps=3)
FULL = Params(ns=(4, 8), model_ms=300.0, tool_ms=200.0, reps=5)


# --- one run of the task -------------------------------------------------------------


class Run(msgspec.Struct, kw_only=True):
    """One run of the task by one runtime, one way."""

    wall_s: float
    turns: int
    tool_calls: int
    tool_runs: int
    ok: bool
    text: str
    #: agentrt: the loop's own time, in the agent's process
    loop_s: float | None = None
    #: agentrt: where the tools ran, ``in-agent`` or the number of other processes
    where: str = ""


class Outcome(msgspec.Struct, kw_only=True):
    """What a solver says of its run."""

    text: str
    tool_runs: int
    loop_s: float | None = None
    agent_pid: int | None = None
    tool_pids: list[int] = []


Solver = Callable[[Task], Awaitable[Outcome]]


def _calls_seen(model: ScriptedModel, since: int) -> int:
    """The tool calls of the run's conversation, as its last request carried it."""
    reqs = model.requests[since:]
    if not reqs:
        return 0
    return sum(
        len(m.get("tool_calls") or []) for m in reqs[-1].messages if m.get("role") == "assistant"
    )


async def run_once(model: ScriptedModel, solve: Solver, task: Task) -> Run:
    since = len(model.requests)
    t0 = time.perf_counter()
    async with asyncio.timeout(RUN_TIMEOUT):
        got = await solve(task)
    wall = time.perf_counter() - t0
    where = ""
    if got.agent_pid is not None:
        others = set(got.tool_pids) - {got.agent_pid}
        where = "the agent's process" if not others else f"{len(others)} other processes"
        if others and got.agent_pid in got.tool_pids:
            where += " and the agent's"
    return Run(
        wall_s=wall,
        turns=len(model.requests) - since,
        tool_calls=_calls_seen(model, since),
        tool_runs=got.tool_runs,
        ok=got.text == task.expected(),
        text=got.text[:200],
        loop_s=got.loop_s,
        where=where,
    )


def agentrt_solver(sup: Supervisor, model: ScriptedModel) -> Solver:
    async def solve(task: Task) -> Outcome:
        args = {
            "base_url": model.openai_base_url,
            "prompt": task.prompt(),
            "tools": [task.tool(t) for t in TOOLS],
            "planner": task.way == "plan",
            "max_turns": task.shape()["turns"] + 2,
        }
        out = await sup.call("solve", args, timeout=RUN_TIMEOUT)
        return msgspec.convert(out, Outcome, strict=False)

    return solve


def peer_solver(run: llm_peers.Runner, model: ScriptedModel) -> Solver:
    async def solve(task: Task) -> Outcome:
        before = llm_peers.RUNS["n"]
        text = await run(model.openai_base_url, task.prompt(), task.shape()["turns"] + 2)
        return Outcome(text=text, tool_runs=llm_peers.RUNS["n"] - before)

    return solve


# --- the run --------------------------------------------------------------------------


async def start_agentrt(sup: Supervisor, p: Params) -> None:
    for name in TOOLS:
        await sup.add_tool(ToolSpec(name=name, entry=f"llm_agents:{name}"))
        await sup.add_tool(
            ToolSpec(
                name=name + ISOLATED,
                entry=f"llm_agents:{name}",
                isolated=True,
                # a turn's lookups at once: one process each
                replicas=max(p.ns) if name == "lookup" else 1,
            )
        )
    await sup.start(AgentSpec(name="solve", entry="llm_agents:solve", timeout=RUN_TIMEOUT))


def plan_of(runtimes: dict[str, dict[str, Any]]) -> list[tuple[str, Way]]:
    """Every (runtime, way) that runs, in the order each repetition runs them."""
    out: list[tuple[str, Way]] = []
    for name, info in runtimes.items():
        if not info["available"]:
            continue
        ways = WAYS if name.startswith(REF) else tuple(w for w in WAYS if w != "plan")
        out += [(name, w) for w in ways]
    return out


def _task(name: str, way: Way, n: int, p: Params, warmup: bool = False) -> Task:
    return Task(way=way, n=n, tool_ms=p.tool_ms, isolated=name.endswith("isolated"), warmup=warmup)


async def bench_n(
    n: int,
    p: Params,
    model: ScriptedModel,
    solvers: dict[str, Solver],
    order: list[tuple[str, Way]],
) -> dict[str, Any]:
    runs: dict[tuple[str, Way], list[Run]] = {k: [] for k in order}
    errors: dict[tuple[str, Way], list[str]] = {k: [] for k in order}

    async def once(name: str, way: Way, warmup: bool) -> Run | None:
        task = _task(name, way, n, p, warmup)
        try:
            r = await run_once(model, solvers[name], task)
        except Exception as exc:
            errors[name, way].append(f"{type(exc).__name__}: {exc}"[:300])
            _progress(f"N={n} {name} {way} FAILED: {type(exc).__name__}: {exc}")
            traceback.print_exc(file=sys.stderr)
            return None
        want = task.shape()
        got = {"turns": r.turns, "tool_calls": r.tool_calls, "tool_runs": r.tool_runs}
        wrong: dict[str, Any] = {k: (v, want[k]) for k, v in got.items() if v != want[k]}
        if name.startswith(REF) and (r.where == "the agent's process") == task.isolated:
            wrong["where the tools ran"] = r.where
        if not r.ok or wrong:
            errors[name, way].append(
                f"{'warm-up' if warmup else 'run'}: answer {r.text!r} (expected "
                f"{task.expected()!r}); (got, expected) {wrong}"
            )
        return r

    for name, way in order:
        await once(name, way, warmup=True)
    _progress(f"N={n}: warm-up done")
    for rep in range(p.reps):
        for name, way in order:
            r = await once(name, way, warmup=False)
            if r is not None:
                runs[name, way].append(r)
        _progress(
            f"N={n} rep {rep + 1}/{p.reps}: "
            + ", ".join(
                f"{name}/{way} {runs[name, way][-1].wall_s * 1e3:.0f}ms"
                for name, way in order
                if runs[name, way]
            )
        )
    return summarize(n, p, runs, errors)


def summarize(
    n: int,
    p: Params,
    runs: dict[tuple[str, Way], list[Run]],
    errors: dict[tuple[str, Way], list[str]],
) -> dict[str, Any]:
    out: dict[str, dict[str, Any]] = {}
    for (name, way), rs in runs.items():
        shape = _task(name, way, n, p).shape()
        path_ms = shape["turns"] * p.model_ms + shape["depth"] * p.tool_ms
        e: dict[str, Any] = {**shape, "critical_path_ms": path_ms, "errors": errors[name, way]}
        if rs:
            wall = spread([r.wall_s * 1e3 for r in rs])
            e |= {
                "latency_ms": wall,
                "overhead_ms": wall["median"] - path_ms,
                # per step of the critical path: a model call or a level of tool calls
                "overhead_per_step_ms": (wall["median"] - path_ms)
                / (shape["turns"] + shape["depth"]),
                "seen": {
                    "turns": sorted({r.turns for r in rs}),
                    "tool_calls": sorted({r.tool_calls for r in rs}),
                    "tool_runs": sorted({r.tool_runs for r in rs}),
                },
                "runs_ok": sum(r.ok for r in rs),
                "tools_ran": sorted({r.where for r in rs if r.where}),
                "runs": [msgspec.to_builtins(r) for r in rs],
            }
            loops = [r.loop_s * 1e3 for r in rs if r.loop_s is not None]
            if loops:
                e["agent_loop_ms"] = spread(loops)
        out.setdefault(name, {})[way] = e
    # ratios, all against figures of this run
    for name, ways in out.items():
        seq = ways.get("sequential", {})
        for w, e in ways.items():
            if "latency_ms" in e and "latency_ms" in seq:
                e["speedup"] = seq["latency_ms"]["median"] / e["latency_ms"]["median"]
            e["ideal_speedup"] = seq.get("critical_path_ms", 0) / e["critical_path_ms"]
            ref = out.get(REF, {}).get(w, {})
            if name != REF and "latency_ms" in e and "latency_ms" in ref:
                e["x_agentrt"] = e["latency_ms"]["median"] / ref["latency_ms"]["median"]
    return out


async def run(
    p: Params, runtimes: dict[str, dict[str, Any]], runners: dict[str, llm_peers.Runner]
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    t0 = time.perf_counter()
    async with Supervisor(base_dir=BENCH_DIR, preload=["llm_agents"]) as sup:
        # the zygote forks before the scripted server's thread exists
        await sup.open()
        await start_agentrt(sup, p)
        results["open_s"] = time.perf_counter() - t0
        async with ScriptedModel(reply, latency=p.model_ms / 1000.0) as model:
            solvers: dict[str, Solver] = {
                REF: agentrt_solver(sup, model),
                f"{REF} isolated": agentrt_solver(sup, model),
            }
            solvers |= {name: peer_solver(r, model) for name, r in runners.items()}
            order = plan_of(runtimes)
            for n in p.ns:
                try:
                    results[str(n)] = await bench_n(n, p, model, solvers, order)
                except Exception as exc:
                    results[str(n)] = {"error": f"{type(exc).__name__}: {exc}"}
                    traceback.print_exc(file=sys.stderr)
            results["model_requests"] = len(model.requests)
    return results


def load_runtimes() -> tuple[dict[str, dict[str, Any]], dict[str, llm_peers.Runner]]:
    """What runs (with a note each, or why not) and the peers' runners."""
    runtimes: dict[str, dict[str, Any]] = {
        REF: {"available": True, "note": "tools in-process (async, the agent's event loop)"},
        f"{REF} isolated": {
            "available": True,
            "note": "tools isolated = true: each call in a sandboxed process of a warm pool",
        },
    }
    runners: dict[str, llm_peers.Runner] = {}
    for name in llm_peers.PEERS:
        note, runner = llm_peers.load(name)
        runtimes[name] = {"available": runner is not None, "note": note}
        if runner is None:
            _progress(f"skipping {name}: {note}")
        else:
            runners[name] = runner
    return runtimes, runners


# --- output ---------------------------------------------------------------------------


def _table(head: Sequence[str], rows: list[Sequence[str]]) -> list[str]:
    w = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{x}}}" if i < 2 else f"{{:>{x}}}" for i, x in enumerate(w))
    return [fmt.format(*head), "-" * (sum(w) + 2 * len(w) - 2)] + [
        fmt.format(*r).rstrip() for r in rows
    ]


def _x(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}x"


def render(report: dict[str, Any]) -> str:
    m, r, p = report["machine"], report["results"], report["params"]
    rts = report["runtimes"]
    lines = [
        f"agentrt model-driven agents: sequential vs parallel tool calls vs planned DAG "
        f"({'quick' if report['quick'] else 'full'})",
        f"machine: {m['cores']} cores, Python {m['python']}, kernel {m['kernel']}, {m['machine']}",
        f"scripted model: {p['model_ms']:g} ms per call; tools: {p['tool_ms']:g} ms each; "
        f"{p['reps']} repetitions after a warm-up; latency: median and min-max, ms",
        "critical path = model ms x turns + tool ms x dependent depth; overhead = median - "
        "path; speed-up: the runtime's sequential / this way (ideal: ratio of the paths); "
        "x agentrt: this / agentrt's, same way",
        "",
    ]
    head = (
        "runtime",
        "way",
        "turns",
        "calls",
        "runs",
        "median",
        "min-max",
        "path",
        "overhead",
        "speed-up",
        "ideal",
        "x agentrt",
    )
    failed: list[str] = []
    for n in p["ns"]:
        res = r.get(str(n), {})
        lines.append(f"N = {n}: {n} lookups, then compare, then summarize")
        if "error" in res:
            lines += [f"  ERROR: {res['error']}", ""]
            continue
        rows: list[Sequence[str]] = []
        for name, ways in res.items():
            for way, e in ways.items():
                failed += [f"N={n} {name} {way}: {x}" for x in e["errors"]]
                if "latency_ms" not in e:
                    rows.append((name, way, "", "", "", "ERROR", "", "", "", "", "", ""))
                    continue
                lat = e["latency_ms"]
                rows.append(
                    (
                        name,
                        way,
                        str(e["turns"]),
                        str(e["tool_calls"]),
                        str(e["tool_runs"]),
                        f"{lat['median']:.0f}",
                        min_max(lat, ".0f"),
                        f"{e['critical_path_ms']:.0f}",
                        f"{e['overhead_ms']:+.0f}",
                        _x(e.get("speedup")),
                        _x(e["ideal_speedup"]),
                        _x(e.get("x_agentrt")),
                    )
                )
        lines += _table(head, rows)
        for name, ways in res.items():
            where = [
                f"{w}: {' / '.join(e['tools_ran'])}" for w, e in ways.items() if e.get("tools_ran")
            ]
            if where:
                lines.append(f"  {name}, where the tools ran (their pids): {', '.join(where)}")
        lines.append("")
    lines.append(
        "turns: model calls; calls: tool calls the model made (plan: the one run_plan); "
        "runs: tool functions that ran"
    )
    ref = report["reference"]
    lines += [
        f'reference: {ref["authors"]}, "{ref["title"]}", {ref["venue"]} '
        f"(arXiv:{ref['arxiv']}), on its own benchmarks with real models, not this task:",
        f"  {ref['claim']}; {ref['claim_vs_parallel']}",
    ]
    for base in ("sequential", "parallel"):
        ours = [
            (n, got[base]["latency_ms"]["median"] / got["plan"]["latency_ms"]["median"])
            for n in p["ns"]
            for got in [r.get(str(n), {}).get(REF, {})]
            if "latency_ms" in got.get(base, {}) and "latency_ms" in got.get("plan", {})
        ]
        if ours:
            lines.append(
                f"  ours: agentrt plan vs agentrt {base} (in-process tools): "
                + ", ".join(f"{x:.2f}x at N={n}" for n, x in ours)
            )
    lines.append("")
    for name, info in rts.items():
        lines.append(f"{name}: {info['note'] if info['available'] else 'skipped, ' + info['note']}")
    if failed:
        lines += ["", "problems:", *(f"  {x}" for x in failed)]
    lines.append(f"(took {report['elapsed_s']:.1f} s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON ('-': stdout)")
    ap.add_argument("--quick", action="store_true", help="N = 4, 100 ms latencies, 3 reps")
    ap.add_argument("--reps", type=int, metavar="N", help="repetitions (quick: 3, full: 5)")
    args = ap.parse_args(argv)

    # Logging must not distort the figures: warnings and errors only.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    logging.basicConfig(level=logging.WARNING)
    p = QUICK if args.quick else FULL
    if args.reps:
        p = msgspec.structs.replace(p, reps=max(1, args.reps))
    t0 = time.perf_counter()
    runtimes, runners = load_runtimes()
    results = asyncio.run(run(p, runtimes, runners))
    report: dict[str, Any] = {
        "benchmark": "agentrt bench_llm",
        "quick": args.quick,
        "machine": machine(),
        "params": msgspec.to_builtins(p),
        "runtimes": runtimes,
        "reference": PAPER,
        "results": results,
        "elapsed_s": time.perf_counter() - t0,
    }
    emit(report, render, args.json)
    failed = any(
        "error" in v
        or any(
            e.get("errors") for ways in v.values() if isinstance(ways, dict) for e in ways.values()
        )
        for k, v in results.items()
        if k.isdigit() and isinstance(v, dict)
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
