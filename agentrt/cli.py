"""The ``agentrt`` command (the only module that prints and exits).

Commands::

    agentrt supervise CONFIG [-o results.json] [--trace run.trace.json] [--live|--no-live]
                             [--log-format console|json] [--log-level info]
    agentrt validate CONFIG
    agentrt doctor
    agentrt trace TRACE [--png out.png] [--width PX] [--height PX]

Exit codes: 0 every task succeeded (or a clean stop; a valid config; a
report written), 1 a task or agent failed, 2 the configuration, the trace
file or the command line is invalid, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import os
import re
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import structlog

from agentrt import __version__
from agentrt.config import (
    AgentSpec,
    Config,
    Limits,
    RunSpec,
    SupervisorSpec,
    TaskSpec,
    ToolSpec,
    check_entries,
    load_config,
    parse_config,
    read_toml,
)
from agentrt.errors import AgentFailed, AgentrtError, ConfigError
from agentrt.graph import Graph
from agentrt.observe import LineStream, configure_logging
from agentrt.scheduler import Run, RunResult, TaskResult
from agentrt.supervisor import RunEvent, Supervisor

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_INTERRUPTED = 0, 1, 2, 130

_EXIT_HELP = (
    "exit status: 0 all tasks ok (or a clean stop), 1 a task or agent failed, "
    "2 invalid config or command line, 130 interrupted"
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="agentrt",
        description="A process-isolated runtime for parallel AI agents.",
        epilog=_EXIT_HELP,
    )
    p.add_argument("--version", action="version", version=f"agentrt {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sp = sub.add_parser(
        "supervise",
        help="start the agents of a config file and run its tasks",
        description=(
            "Start the agents of CONFIG, run its [[tasks]] concurrently and write the results. "
            "With no tasks, supervise the agents until SIGINT or SIGTERM."
        ),
        epilog=_EXIT_HELP,
    )
    sp.add_argument("config", type=Path, help="path to config.toml")
    sp.add_argument("--output", "-o", type=Path, help="write the results file (JSON) here")
    sp.add_argument(
        "--trace",
        type=Path,
        metavar="FILE",
        help="write the run as a Chrome Trace Event file (open it in Perfetto / chrome://tracing)",
    )
    sp.add_argument(
        "--live",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="live view of agents, replicas and tasks (default: on when stderr is a terminal)",
    )
    sp.add_argument(
        "--log-format",
        choices=("console", "json"),
        default="console",
        help="console: one readable line per event (default); json: one JSON object per line",
    )
    sp.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="the least important events shown (default info; debug adds every replica "
        "state change)",
    )

    vp = sub.add_parser(
        "validate",
        help="check a config file and report every error at once",
        description=(
            "Check CONFIG without starting anything: every error, each with its key path and a "
            "hint, and the task graph (dangling references, cycles)."
        ),
        epilog="exit status: 0 valid, 2 invalid",
    )
    vp.add_argument("config", type=Path, help="path to config.toml")

    sub.add_parser(
        "doctor",
        help="show which isolation features this machine offers",
        description=(
            "Probe pidfd, namespaces, Landlock, cgroups and rlimits, and say what each "
            "sandbox profile would enforce on this machine."
        ),
        epilog="exit status: 0",
    )

    tp = sub.add_parser(
        "trace",
        help="summarise a trace file written by supervise --trace; render it as a Gantt PNG",
        description="Summarise TRACE (from `supervise --trace`) and optionally draw it.",
        epilog="exit status: 0 ok, 2 not a readable trace",
    )
    tp.add_argument("trace", type=Path, help="trace file (Chrome Trace Event JSON)")
    tp.add_argument("--png", type=Path, metavar="OUT", help="write a Gantt chart here")
    tp.add_argument("--width", type=int, default=1200, help="image width in pixels")
    tp.add_argument("--height", type=int, help="image height in pixels (default: by rows)")

    bp = sub.add_parser(
        "bench",
        help="measure what isolation costs, against the runtimes you would pick instead",
        description=(
            "Run the benchmarks of a source checkout (benchmarks/: core, swarm, peers) in one "
            "go; peers that are not installed (pip install 'agentrt[bench]') are skipped with "
            "a note. Each figure is a median with min-max, peers as ratios to agentrt."
        ),
        epilog="exit status: 0 all benchmarks ran, 1 one failed, 2 no benchmarks/ here",
    )
    bp.add_argument("--quick", action="store_true", help="fewer repetitions, smaller N")
    bp.add_argument("--only", metavar="NAME", help="comma-separated subset: core, swarm, peers")
    bp.add_argument(
        "--json",
        type=Path,
        metavar="DIR",
        default=Path("out"),
        help="directory for the JSON results (default: out)",
    )
    bp.add_argument("--png", type=Path, metavar="FILE", help="also draw the headline ratios here")
    return p


_BENCHES = ("core", "swarm", "peers")


def _cmd_bench(args: argparse.Namespace) -> int:
    import subprocess

    # the benchmarks are scripts of the source tree, not part of the installed package
    bench_dir = Path(__file__).resolve().parent.parent / "benchmarks"
    if not bench_dir.is_dir():
        print(
            "agentrt: bench: needs a source checkout: the benchmarks (benchmarks/) are not "
            "part of the installed package. In a checkout of agentrt, run `make bench` "
            "(or `pip install -e '.[bench]'`, then `agentrt bench`).",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    names = _BENCHES if not args.only else tuple(n.strip() for n in args.only.split(","))
    unknown = [n for n in names if n not in _BENCHES]
    if unknown:
        print(
            f"agentrt: bench: --only: unknown {', '.join(unknown)} "
            f"(choose from {', '.join(_BENCHES)})",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    if args.json.exists() and not args.json.is_dir():
        print(
            f"agentrt: bench: --json: {args.json} is a file: give a directory "
            "(the results are written there as bench_<name>.json)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    try:
        args.json.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(
            f"agentrt: bench: --json: cannot create the directory {args.json}: "
            f"{exc.strerror or exc}",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    code = EXIT_OK
    for name in names:
        script = bench_dir / f"bench_{name}.py"
        if not script.exists():
            print(f"agentrt: bench: {script.name} is missing, skipped", file=sys.stderr)
            continue
        cmd = [sys.executable, str(script), "--json", str(args.json / f"bench_{name}.json")]
        if args.quick:
            cmd.append("--quick")
        if subprocess.run(cmd, check=False).returncode != 0:
            code = EXIT_FAILED
    report = bench_dir / "report.py"
    if args.png is not None and report.exists():
        # report.py draws <dir>/bench.png (and the Markdown table) from the JSON files
        cmd = [sys.executable, str(report), "--out", str(args.json)]
        if subprocess.run(cmd, check=False).returncode != 0:
            code = EXIT_FAILED
        else:
            drawn = args.json / "bench.png"
            if drawn.resolve() != args.png.resolve():
                import shutil

                shutil.copyfile(drawn, args.png)
    return code


# --- supervise --------------------------------------------------------------------------


async def _pump(sup: Supervisor, sinks: list[Callable[[RunEvent], None]]) -> None:
    """Hand every supervisor event to the sinks (none of which blocks)."""
    async for ev in sup.events():
        for sink in sinks:
            sink(ev)


#: how loud each task outcome is in the log
_LOUDNESS = {
    "ok": "info",
    "failed": "error",
    "crashed": "error",
    "limit": "error",
    "timeout": "error",
    "cancelled": "warning",
    "skipped": "warning",
}


def _log_sink(log: Any) -> Callable[[RunEvent], None]:
    """Task outcomes into the log: failures at error, skips and cancellations at
    warning, each with its error's type and message (``reason``)."""

    def sink(ev: RunEvent) -> None:
        if ev.kind in ("task_finished", "task_skipped", "task_retry", "fanout"):
            fields = {k: v for k, v in msgspec.to_builtins(ev).items() if k not in ("kind", "time")}
            status = "skipped" if ev.kind == "task_skipped" else (ev.status or "ok")
            level = "info" if ev.kind in ("task_retry", "fanout") else _LOUDNESS.get(status, "info")
            getattr(log, level)(ev.kind, **fields)

    return sink


#: lines of the closing summary before "... and N more"
_SUMMARY_LINES = 15


def _summary(result: RunResult) -> list[str]:
    """What failed and why, on one screen (empty when nothing did)."""
    bad = [r for r in result.tasks.values() if r.status != "ok"]
    if not bad and not result.failed_agents:
        return []
    counts: dict[str, int] = {}
    for r in result.tasks.values():
        counts[r.status] = counts.get(r.status, 0) + 1
    total = len(result.tasks)
    parts = [f"{n} {status}" for status, n in sorted(counts.items()) if status != "ok"]
    head = f"agentrt: run {result.run_id or ''}".rstrip() + f": {result.status}"
    if total:
        head += f" ({counts.get('ok', 0)} of {total} tasks ok; {', '.join(parts)})"
    lines = [head]
    width = max((len(r.id) for r in bad), default=0)
    for r in bad:
        err = r.error or {}
        why = f"{err.get('type')}: {err.get('message')}" if err else (r.reason or "")
        lines.append(f"  {r.id.ljust(width)}  {r.status:<9} {why}"[:160])
    for name, err in result.failed_agents.items():
        lines.append(f"  agent {name} failed: {err.get('reason') or err.get('message')}"[:160])
    if len(lines) > _SUMMARY_LINES + 1:
        more = len(lines) - _SUMMARY_LINES - 1
        lines = [*lines[: _SUMMARY_LINES + 1], f"  ... and {more} more (see the results file)"]
    return lines


async def _supervise(
    cfg: Config,
    graph: Graph,
    output: Path | None,
    *,
    trace: Path | None = None,
    live: Any = None,
    json_logs: bool = False,
) -> int:
    from agentrt.trace import TraceRecorder

    log = structlog.get_logger("agentrt.cli")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals: list[int] = []

    def on_signal(signum: int) -> None:
        signals.append(signum)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    outcome = _Outcome()
    failed: dict[str, AgentFailed] = {}
    recorder = TraceRecorder() if trace is not None else None
    sinks: list[Callable[[RunEvent], None]] = [_log_sink(log)]
    if recorder is not None:
        sinks.append(recorder.on_event)
    if live is not None:
        live.total = len(graph)
        sinks.append(live.on_event)
    try:
        spec = cfg.supervisor
        if trace is not None and not spec.trace_tools:
            # the timeline shows each in-process tool call too
            spec = msgspec.structs.replace(spec, trace_tools=True)
        async with Supervisor(spec, base_dir=cfg.base_dir) as sup:
            pump = asyncio.ensure_future(_pump(sup, sinks))
            await asyncio.sleep(0)  # the pump subscribes before anything is emitted
            view = live.attached(sup) if live is not None else contextlib.nullcontext()
            try:
                async with view:
                    outcome = await _run_tasks(sup, cfg, graph, stop, log)
                    await asyncio.sleep(0)  # the pump drains what the run emitted last
            finally:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
            failed = sup.failed_agents
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        result = outcome.result = _json_safe(outcome.result, log)
        if recorder is not None and trace is not None:
            recorder.write(trace, result)
            log.info("trace_written", path=str(trace), events=len(recorder.events))
    if result is None:
        # no run: supervised with no tasks, or an agent could not start
        result = RunResult(
            run_id="",
            status="failed" if failed or outcome.start_error else "ok",
            tasks=_skipped_all(cfg, outcome),
            critical_path=[],
            makespan=0.0,
            started_at=0.0,
            finished_at=0.0,
            failed_agents={n: e.to_dict() for n, e in failed.items()},
        )
        if outcome.start_error is not None:
            result.failed_agents[outcome.start_agent] = outcome.start_error.to_dict()
    else:
        counts: dict[str, int] = {}
        for r in result.tasks.values():
            counts[r.status] = counts.get(r.status, 0) + 1
        log.info(
            "run_finished",
            run_id=result.run_id,
            status=result.status,
            makespan=round(result.makespan, 4),
            critical_path=" -> ".join(result.critical_path),
            **counts,
        )
    if output is not None:
        _write_results(output, msgspec.json.format(msgspec.json.encode(result)) + b"\n")
    summary = _summary(result)
    if summary and live is None and json_logs:
        log.error("run_summary", lines=summary)
    elif summary:
        print("\n".join(summary), file=sys.stderr)
    if signals and cfg.tasks and outcome.interrupted:
        return 128 + signals[0]  # 130 for SIGINT: the run was cut short
    return EXIT_OK if result.status == "ok" and not failed else EXIT_FAILED


class _Outcome:
    """What ``_run_tasks`` ended with."""

    def __init__(self) -> None:
        self.result: RunResult | None = None
        self.start_error: AgentrtError | None = None
        self.start_agent = ""
        self.interrupted = False


def _skipped_all(cfg: Config, outcome: _Outcome) -> dict[str, TaskResult]:
    """Every task, skipped because an agent could not start (none ran)."""
    if outcome.start_error is None:
        return {}
    why = f"agent {outcome.start_agent!r} failed to start: {outcome.start_error}"
    return {
        t.id: TaskResult(id=t.id, status="skipped", reason=why, agent=t.agent) for t in cfg.tasks
    }


def _json_safe(result: RunResult | None, log: Any) -> RunResult | None:
    """``result`` with each task result JSON cannot hold (say, a dict with tuple
    keys) replaced by that task's recorded error: the rest is still written."""
    if result is None:
        return None
    try:
        msgspec.json.encode(result)
        return result
    except (TypeError, ValueError, OverflowError, RecursionError):
        pass
    tasks: dict[str, TaskResult] = {}
    for tid, r in result.tasks.items():
        try:
            msgspec.json.encode(r)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            log.error("result_not_json", task=tid, error=str(exc))
            r = msgspec.structs.replace(
                r,
                status="failed",
                result=None,
                error={
                    "type": "ResultNotJSON",
                    "message": f"the task's result cannot be written as JSON: {exc}",
                },
            )
        tasks[tid] = r
    status = "failed" if any(r.status != "ok" for r in tasks.values()) else result.status
    return msgspec.structs.replace(result, tasks=tasks, status=status)


async def _run_tasks(
    sup: Supervisor, cfg: Config, graph: Graph, stop: asyncio.Event, log: Any
) -> _Outcome:
    """Start the agents and run the graph (or, with no tasks, supervise until a signal).

    The run ends early on SIGINT/SIGTERM and when the supervisor stops
    because an agent failed (``on_agent_failure = "stop"``).
    """
    outcome = _Outcome()
    try:
        for tool in cfg.tools.values():
            await sup.add_tool(tool)
        for spec in cfg.agents.values():
            outcome.start_agent = spec.name
            await sup.start(spec)
    except AgentrtError as exc:
        log.error(
            "agent_start_failed", agent=outcome.start_agent, error=str(exc), type=type(exc).__name__
        )
        outcome.start_error = exc
        return outcome
    closed = asyncio.ensure_future(sup.wait_closed())
    stopper = asyncio.ensure_future(stop.wait())
    try:
        if not cfg.tasks:
            log.info("supervising", agents=list(cfg.agents), hint="stop with Ctrl-C")
            await asyncio.wait([stopper, closed], return_when=asyncio.FIRST_COMPLETED)
            return outcome
        run = Run(sup, graph, cfg.run).start()
        waiter = asyncio.ensure_future(run.wait())
        await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            log.warning("run_interrupted")
            outcome.interrupted = True
            run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
        outcome.result = run.result
        return outcome
    finally:
        stopper.cancel()
        closed.cancel()


def _write_results(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _writable(path: Path) -> str | None:
    """Why ``path`` cannot be written as a file, or None (checked before anything runs)."""
    if path.is_dir():
        return "is a directory"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab"):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _cmd_supervise(args: argparse.Namespace) -> int:
    live_on = sys.stderr.isatty() if args.live is None else bool(args.live)
    view: Any = None
    stream: LineStream | None = None
    if live_on:
        from rich.console import Console

        from agentrt.live import LiveView, console_stream

        console = Console(file=sys.stderr, force_terminal=True if args.live else None)
        view = LiveView(console)
        stream = console_stream(console)
    configure_logging(args.log_format, args.log_level, stream)
    try:
        for flag, path in (("--output", args.output), ("--trace", args.trace)):
            why = _writable(path) if path is not None else None
            if why is not None:
                raise ConfigError(flag, f"cannot write {path}: {why}")
        cfg = load_config(args.config)
        graph = Graph.from_specs(cfg.tasks, on_error=cfg.run.on_error)
        graph.validate()  # dangling references and cycles: refused before anything starts
        entry_errors = check_entries(cfg)
        if entry_errors:
            raise entry_errors[0]
    except ConfigError as exc:
        if args.log_format == "json":
            structlog.get_logger("agentrt.cli").error(
                "config_error", error=str(exc), path=exc.path, message=exc.message
            )
        else:
            print(f"agentrt: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return asyncio.run(
            _supervise(
                cfg,
                graph,
                args.output,
                trace=args.trace,
                live=view,
                json_logs=args.log_format == "json",
            )
        )
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


# --- validate ---------------------------------------------------------------------------

_SECTIONS = ("supervisor", "agents", "tools", "run", "tasks")


def _drop_key(doc: dict[str, Any], path: str) -> bool:
    """Remove the key ``path`` names from ``doc`` (so the rest can be checked)."""
    parts = path.split(".")
    cur: Any = doc
    for part in parts[:-1]:
        if isinstance(cur, list):
            if len(cur) == 1:
                cur = cur[0]
            elif part.isdigit() and int(part) < len(cur):
                cur = cur[int(part)]
            else:
                return False
        elif isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            return False
    if isinstance(cur, dict) and parts[-1] in cur:
        del cur[parts[-1]]
        return True
    return False


def _collect(
    doc: dict[str, Any], base: Path, limit: int = 50
) -> tuple[list[ConfigError], Config | None]:
    """Every error of one small document, by dropping each offending key and retrying."""
    doc = copy.deepcopy(doc)
    errors: list[ConfigError] = []
    for _ in range(limit):
        try:
            cfg = parse_config(doc, base)
        except ConfigError as exc:
            if exc.message == "required key is missing" and any(e.path == exc.path for e in errors):
                return errors, None  # the key's bad value was dropped and reported already
            errors.append(exc)
            if not _drop_key(doc, exc.path):
                return errors, None
        else:
            return errors, (cfg if not errors else None)
    return errors, None


def validate_config(path: Path) -> tuple[list[ConfigError], Config | None]:
    """All errors of a config file (each section, agent, tool and task on its own)."""
    try:
        data = read_toml(path)
    except ConfigError as exc:
        return [exc], None
    base = path.parent
    errors: list[ConfigError] = []
    context: dict[str, Any] = {}  # valid sections other docs may refer to (sandboxes, ...)
    for key in data:
        if key not in ("agents", "tools", "tasks"):
            errs = _collect({key: data[key]}, base)[0]
            errors += errs
            if not errs:
                context[key] = data[key]
    agent_names: list[str] = []
    for key in ("agents", "tools"):
        raw = data.get(key, {})
        if not isinstance(raw, dict):
            errors += _collect({key: raw}, base)[0]
            continue
        if key == "agents":
            agent_names = list(raw)
        for name, item in raw.items():
            errors += _collect({**context, key: {name: item}}, base)[0]
    raw_tasks = data.get("tasks", [])
    specs: list[TaskSpec] = []
    tasks_ok = True
    if not isinstance(raw_tasks, list):
        errors += _collect({"tasks": raw_tasks}, base)[0]
        tasks_ok = False
        raw_tasks = []
    stub = {n: {"entry": "stub:stub"} for n in agent_names}
    seen: set[str] = set()
    for i, raw in enumerate(raw_tasks):
        errs, cfg = _collect({**context, "agents": stub, "tasks": [raw]}, base)
        if not (isinstance(raw, dict) and "id" in raw):
            errs = [ConfigError(_reindex(e.path, i), e.message) for e in errs]
        errors += errs
        if cfg is not None:
            spec = cfg.tasks[0]
        elif isinstance(raw, dict) and isinstance(raw.get("id"), str):
            # invalid, but other tasks may refer to it: keep its id in the graph check
            spec = TaskSpec(id=raw["id"], agent=str(raw.get("agent", "")))
        else:
            tasks_ok = False
            continue
        if spec.id in seen:
            if cfg is not None:
                errors.append(ConfigError(f"tasks.{spec.id}.id", f"duplicate task id {spec.id!r}"))
            continue
        seen.add(spec.id)
        specs.append(spec)
    if tasks_ok and specs:
        on_error = data.get("run", {}).get("on_error", "fail_fast")
        try:
            Graph.from_specs(specs, on_error=on_error).validate()
        except ConfigError as exc:
            errors.append(exc)
        except (TypeError, ValueError) as exc:
            errors.append(ConfigError("tasks", str(exc)))
    if errors:
        return errors, None
    try:
        cfg = parse_config(data, path.parent)
    except ConfigError as exc:  # a check above missed it: still report it
        return [exc], None
    errors = check_entries(cfg)
    return errors, (None if errors else cfg)


def _reindex(path: str, i: int) -> str:
    parts = path.split(".")
    if len(parts) >= 2 and parts[0] == "tasks" and parts[1] == "0":
        parts[1] = str(i)
    return ".".join(parts)


def _struct_for(path: str) -> Any:
    parts = path.split(".")[:-1]
    if not parts:
        return _SECTIONS
    head = parts[0]
    if head == "supervisor" and len(parts) == 1:
        return SupervisorSpec
    if head == "run" and len(parts) == 1:
        return RunSpec
    if head in ("agents", "tools") and len(parts) == 2:
        return AgentSpec if head == "agents" else ToolSpec
    if head in ("agents", "tools") and len(parts) == 3 and parts[2] == "limits":
        return Limits
    if head == "tasks" and len(parts) == 2:
        return TaskSpec
    return None


#: msgspec's type names, in words
_TYPE_WORDS = {
    "int": "a whole number",
    "float": "a number",
    "str": 'a string ("in quotes")',
    "bool": "true or false",
    "array": "a list ([...])",
    "object": "a table ({...} or [section])",
    "null": "nothing",
}


def _hint(err: ConfigError, agents: list[str]) -> str | None:
    msg, path = err.message, err.path
    last = path.rsplit(".", 1)[-1]
    if msg.startswith("unknown key"):
        owner = _struct_for(path)
        if owner is None:
            return None
        keys = (
            list(owner)
            if isinstance(owner, tuple)
            else [f.name for f in msgspec.structs.fields(owner) if f.name != "name"]
        )
        return "allowed keys here: " + ", ".join(keys)
    if "expected a size" in msg:
        return 'write a size such as "512MiB", "2GiB" or a number of bytes'
    if "expected a duration" in msg:
        return 'write a duration such as "500ms", "30s", "2m" or a number of seconds'
    if msg == "required key is missing":
        parent = path.rsplit(".", 1)[0] if "." in path else "the top level"
        return f"add `{last} = ...` under [{parent}]"
    if msg.startswith("no agent named"):
        return "declare it as [agents.<name>]" + (
            f" or use one of: {', '.join(agents)}" if agents else ""
        )
    if msg.startswith("duplicate task id"):
        return "give every [[tasks]] table its own id"
    if "cycle" in msg:
        return "remove one dependency of the cycle (an `after` entry or a ${...} reference)"
    if "depends on unknown task" in msg:
        return "refer only to task ids defined in this file"
    if "module:attr" in msg:
        return 'entry is "package.module:function" (or a class)'
    if "invalid TOML" in msg:
        return "fix the TOML syntax at the line and column shown"
    m = re.match(r"[Ee]xpected `([^`]+)`, got `([^`]+)`", msg)
    if m:
        want = " or ".join(_TYPE_WORDS.get(t.strip(), t.strip()) for t in m[1].split("|"))
        return f"write {want} here (this is {_TYPE_WORDS.get(m[2], m[2])})"
    if msg.startswith("must be at least"):
        return f"raise {last}"
    return None


def _cmd_validate(args: argparse.Namespace) -> int:
    path: Path = args.config
    errors, cfg = validate_config(path)
    if cfg is not None:
        print(
            f"{path}: ok ({len(cfg.agents)} agents, {len(cfg.tools)} tools, {len(cfg.tasks)} tasks)"
        )
        return EXIT_OK
    agents: list[str] = []
    with contextlib.suppress(ConfigError):
        raw = read_toml(path).get("agents", {})
        agents = list(raw) if isinstance(raw, dict) else []
    n = len(errors)
    print(f"{path}: {n} error{'s' if n != 1 else ''}")
    for err in errors:
        print(f"  {err}")
        hint = _hint(err, agents)
        if hint:
            print(f"    hint: {hint}")
    return EXIT_CONFIG


# --- doctor ---------------------------------------------------------------------------

_RLIMITS = {
    "memory (RLIMIT_AS)": "AS",
    "cpu_time (RLIMIT_CPU)": "CPU",
    "open_files (RLIMIT_NOFILE)": "NOFILE",
    "processes (RLIMIT_NPROC)": "NPROC",
    "file_size (RLIMIT_FSIZE)": "FSIZE",
    "core dumps (RLIMIT_CORE)": "CORE",
}


def _fmt_limit(v: int) -> str:
    return "unlimited" if v < 0 else str(v)


def _table(rows: Sequence[tuple[str, ...]], indent: str = "  ") -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r[:-1], widths, strict=False)]
        print((indent + "  ".join([*cells, r[-1]])).rstrip())


def _features(caps: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``sandbox.probe()`` as rows: feature, yes/no, what it gives or why not."""
    cg = caps["cgroup"]
    ctrls = ", ".join(sorted(cg["controllers"]))
    cg_detail = f"v{cg['version']}: {ctrls} writable" if cg["controllers"] else "none usable"
    if cg["why"]:
        cg_detail += f" ({cg['why']})"
    abi = caps["landlock_abi"]
    interp = caps["interpreter"]
    if interp["unreadable"]:
        interp_detail = f"{interp['unreadable']} unreadable: run_as agents cannot import from it"
    elif interp["blocked"] and caps["mount_ns"]:
        interp_detail = (
            f"below {interp['blocked']} (closed): run_as re-opens it in a mount namespace"
        )
    elif interp["blocked"]:
        interp_detail = f"below {interp['blocked']} (closed) and no mount namespace: run_as fails"
    else:
        interp_detail = "run_as replicas import as usual"

    def yn(ok: object) -> str:
        return "yes" if ok else "no"

    return [
        ("feature", "here", "what it gives"),
        ("pidfd", yn(caps["pidfd"]), "exits observed without pid-reuse races"),
        (
            "user namespace",
            yn(caps["user_ns"]),
            "unprivileged confinement" if caps["user_ns"] else caps["user_ns_error"],
        ),
        (
            "network namespace",
            yn(caps["net_ns"]),
            f'network = "none" ({caps["net_ns"]})' if caps["net_ns"] else caps["net_ns_error"],
        ),
        (
            "landlock",
            yn(abi),
            f"filesystem allowlists; a domain per replica: no ptrace or /proc/<pid>/fd "
            f"outside its tree (ABI {abi})"
            if abi
            else "not in this kernel: replicas of default may open each other's /proc/<pid>/fd",
        ),
        (
            "landlock scoping",
            yn(caps["landlock_scope"]),
            "signals and abstract unix sockets stay in a replica's tree"
            if caps["landlock_scope"]
            else f"needs ABI 6: strict cannot confine signals here (ABI {abi})",
        ),
        (
            "pid namespace",
            yn(caps["pid_ns"]),
            "not used: the Landlock domain and scopes refuse the same per replica"
            if caps["pid_ns"]
            else caps["pid_ns_error"],
        ),
        ("no_new_privs", yn(caps["no_new_privs"]), "no privilege gain through exec"),
        ("dumpable", "yes", "PR_SET_DUMPABLE 0: /proc/<pid> of a confined replica owned by root"),
        ("cgroups", yn(cg["controllers"]), cg_detail),
        (
            "root",
            yn(caps["root"]),
            "run_as and cgroups may be used"
            if caps["root"]
            else "run_as needs root; RLIMIT_NPROC applies",
        ),
        (
            "mount namespace",
            yn(caps["mount_ns"]),
            "run_as reaches an interpreter below a closed directory"
            if caps["mount_ns"]
            else caps["mount_ns_error"],
        ),
        (
            "interpreter for any uid",
            yn(not interp["blocked"] and not interp["unreadable"]),
            interp_detail,
        ),
    ]


def _cmd_doctor(_args: argparse.Namespace) -> int:
    from agentrt import sandbox
    from agentrt.config import load_sandbox, sandbox_names

    print(f"agentrt {__version__} on Linux {os.uname().release} ({os.uname().machine})")
    caps = sandbox.probe()
    print("isolation features (sandbox probe):")
    _table(_features(caps))
    print("rlimits (soft / hard; a replica may always lower them):")
    rl = caps["rlimits"]
    _table(
        [
            (label, f"{_fmt_limit(rl[k][0])} / {_fmt_limit(rl[k][1])}")
            for label, k in _RLIMITS.items()
        ]
    )
    print("profiles (what each would enforce here):")
    for name in sorted(sandbox_names([], [])):
        print(f"  {name}:")
        try:
            _table(list(sandbox.explain(load_sandbox(name)[0])), "    ")
        except AgentrtError as exc:
            print(f"    cannot load: {exc}")
    return EXIT_OK


# --- trace ------------------------------------------------------------------------------


def _cmd_trace(args: argparse.Namespace) -> int:
    import importlib.util

    from agentrt.trace import load_trace, render_png

    # matplotlib is the `png` extra: checked before anything is printed
    extra = "pip install 'agentrt[png]' (or leave out --png for the summary alone)"
    if args.png is not None and importlib.util.find_spec("matplotlib") is None:
        print(f"agentrt: trace --png needs matplotlib, not installed: {extra}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        doc = load_trace(args.trace)
    except ValueError as exc:
        print(f"agentrt: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    events = doc["traceEvents"]
    other = doc.get("otherData") or {}
    spans = [e for e in events if isinstance(e, dict) and e.get("ph") == "X"]
    instants = [e for e in events if isinstance(e, dict) and e.get("ph") == "i"]
    print(f"{args.trace}: {len(spans)} spans, {len(instants)} instant events")
    if other.get("run_id"):
        print(f"  run {other['run_id']}: {other.get('status')}")
    if other.get("makespan") is not None:
        print(f"  makespan {float(other['makespan']):.4f}s")
    if other.get("critical_path"):
        print(f"  critical path {' -> '.join(other['critical_path'])}")
    if args.png is not None:
        try:
            out = render_png(doc, args.png, width=args.width, height=args.height)
        except ImportError as exc:  # a matplotlib that is there but broken
            print(
                f"agentrt: trace --png: cannot import matplotlib ({exc}): {extra}", file=sys.stderr
            )
            return EXIT_CONFIG
        except (KeyError, TypeError, ValueError) as exc:
            print(f"agentrt: cannot draw {args.trace}: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        print(f"  wrote {out}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``agentrt`` console script."""
    args = _parser().parse_args(argv)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "supervise": _cmd_supervise,
        "validate": _cmd_validate,
        "doctor": _cmd_doctor,
        "trace": _cmd_trace,
        "bench": _cmd_bench,
    }
    cmd = commands.get(args.command)
    return cmd(args) if cmd is not None else EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
