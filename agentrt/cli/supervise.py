"""``agentrt supervise``: run a config's agents and tasks; results, trace, summary and log.

The run's events go to sinks that never block (the log, the trace recorder,
the live view); the results file and the closing summary come from the
:class:`RunResult` (or, when no run started, one made up of skipped tasks).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import structlog

from agentrt.cli.common import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_HELP,
    EXIT_INTERRUPTED,
    EXIT_OK,
    Subparsers,
)
from agentrt.config import Config, check_entries, load_config
from agentrt.errors import AgentFailed, AgentrtError, ConfigError
from agentrt.graph import Graph
from agentrt.journal import Journal, JournalError
from agentrt.observe import LineStream, configure_logging
from agentrt.scheduler import Run, RunResult, TaskResult
from agentrt.supervisor import RunEvent, Supervisor

__all__ = ["add_parser", "command"]


def add_parser(sub: Subparsers) -> None:
    """The ``supervise`` subcommand and its options."""
    sp = sub.add_parser(
        "supervise",
        help="start the agents of a config file and run its tasks",
        description=(
            "Start the agents of CONFIG, run its [[tasks]] concurrently and write the results. "
            "With no tasks, supervise the agents until SIGINT or SIGTERM."
        ),
        epilog=EXIT_HELP,
    )
    sp.add_argument("config", type=Path, help="path to config.toml")
    sp.add_argument("--output", "-o", type=Path, help="write the results file (JSON) here")
    sp.add_argument(
        "--resume",
        metavar="RUN_ID",
        help="go on with a run of the journal ('last': the latest): tasks that finished are "
        "not run again; those in flight when it stopped run again",
    )
    sp.add_argument(
        "--force",
        action="store_true",
        help="with --resume: run the tasks whose spec changed since the run started again "
        "(without it a changed config is refused)",
    )
    sp.add_argument(
        "--journal",
        type=Path,
        metavar="FILE",
        help="the run journal (SQLite; default: [run] journal: .agentrt/runs.db by the config)",
    )
    sp.add_argument(
        "--no-journal", action="store_true", help="record nothing (a run that cannot be resumed)"
    )
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
    "denied": "warning",
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
    journal: Journal | None = None,
    resume: str | None = None,
    force: bool = False,
    config: str = "",
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
    audit: list[dict[str, Any]] = []
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
        sup = Supervisor(
            spec, base_dir=cfg.base_dir, approvals=cfg.approvals, models=cfg.models, run_id=resume
        )
        # (the zygotes of the agents' env allowlists boot beside the main one)
        await sup.open(cfg.agents.values())
        async with sup:
            pump = asyncio.ensure_future(_pump(sup, sinks))
            await asyncio.sleep(0)  # the pump subscribes before anything is emitted
            view = (
                live.attached(sup, interactive=sys.stdin is not None and sys.stdin.isatty())
                if live is not None
                else contextlib.nullcontext()
            )
            try:
                async with view:
                    outcome = await _run_tasks(
                        sup,
                        cfg,
                        graph,
                        stop,
                        log,
                        journal=journal,
                        resume=resume,
                        force=force,
                        config=config,
                    )
                    await asyncio.sleep(0)  # the pump drains what the run emitted last
            finally:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
            failed = sup.failed_agents
            audit = [msgspec.to_builtins(e) for e in sup.audit()]
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        result = outcome.result = _json_safe(outcome.result, log)
        if recorder is not None and trace is not None:
            recorder.write(trace, result)
            log.info("trace_written", path=str(trace), events=len(recorder.events))
    if outcome.journal_error is not None:
        print(f"agentrt: {outcome.journal_error}", file=sys.stderr)
        return EXIT_CONFIG
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
        if outcome.start_error is not None and not outcome.start_failures:
            result.failed_agents[outcome.start_agent] = outcome.start_error.to_dict()
        for name, exc in outcome.start_failures.items():
            result.failed_agents[name] = exc.to_dict()
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
    if audit:
        result = msgspec.structs.replace(result, audit=audit)
    if output is not None:
        _write_results(output, msgspec.json.format(msgspec.json.encode(result)) + b"\n")
    summary = _summary(result)
    if summary and live is None and json_logs:
        log.error("run_summary", lines=summary)
    elif summary:
        print("\n".join(summary), file=sys.stderr)
    if result.journal_error:
        print(f"agentrt: the run was not fully recorded: {result.journal_error}", file=sys.stderr)
        return EXIT_FAILED
    if signals and cfg.tasks and outcome.interrupted:
        return 128 + signals[0]  # 130 for SIGINT: the run was cut short
    return EXIT_OK if result.status == "ok" and not failed else EXIT_FAILED


class _Outcome:
    """What ``_run_tasks`` ended with."""

    def __init__(self) -> None:
        self.result: RunResult | None = None
        self.start_error: AgentrtError | None = None
        #: the journal refused the run (locked, changed, unreadable): nothing ran
        self.journal_error: JournalError | None = None
        self.start_agent = ""
        #: every agent that could not start, in the config's order
        self.start_failures: dict[str, AgentrtError] = {}
        self.interrupted = False


def _skipped_all(cfg: Config, outcome: _Outcome) -> dict[str, TaskResult]:
    """Every task, skipped because an agent could not start (none ran)."""
    if outcome.start_error is None:
        return {}
    failed = {outcome.start_agent: outcome.start_error, **outcome.start_failures}

    def why(agent: str) -> str:
        # its own agent's failure where it had one, else the first agent's
        name = agent if agent in failed else outcome.start_agent
        return f"agent {name!r} failed to start: {failed[name]}"

    return {
        t.id: TaskResult(id=t.id, status="skipped", reason=why(t.agent), agent=t.agent)
        for t in cfg.tasks
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
    sup: Supervisor,
    cfg: Config,
    graph: Graph,
    stop: asyncio.Event,
    log: Any,
    *,
    journal: Journal | None = None,
    resume: str | None = None,
    force: bool = False,
    config: str = "",
) -> _Outcome:
    """Start the agents and run the graph (or, with no tasks, supervise until a signal).

    The run ends early on SIGINT/SIGTERM and when the supervisor stops
    because an agent failed (``on_agent_failure = "stop"``).
    """
    outcome = _Outcome()
    run: Run | None = None
    if cfg.tasks:
        # the journal first: a run another supervisor holds, or whose tasks
        # changed, is refused before any agent starts
        argv = " ".join(sys.argv)
        try:
            if resume is not None and journal is not None:
                run = Run.resume(
                    sup, journal, resume, graph, cfg.run, force=force, argv=argv, config=config
                )
                log.info("run_resumed", run_id=run.run_id, restored=run.restorable)
            else:
                run = Run(
                    sup, graph, cfg.run, sup.run_id, journal=journal, argv=argv, config=config
                )
        except JournalError as exc:
            log.error("journal_error", error=str(exc))
            outcome.journal_error = exc
            return outcome
    try:
        for tool in cfg.tools.values():
            await sup.add_tool(tool)
        # The agents start side by side: their replicas come up together, and
        # the run waits for its slowest agent, not for the sum of them all.
        started = await asyncio.gather(
            *(sup.start(spec) for spec in cfg.agents.values()), return_exceptions=True
        )
    except AgentrtError as exc:
        log.error("agent_start_failed", agent="", error=str(exc), type=type(exc).__name__)
        outcome.start_error = exc
        return outcome
    for name, got in zip(cfg.agents, started, strict=True):
        if isinstance(got, BaseException) and not isinstance(got, AgentrtError):
            raise got  # (a bug, or cancelled: not an agent's failure)
        if isinstance(got, AgentrtError):
            log.error("agent_start_failed", agent=name, error=str(got), type=type(got).__name__)
            outcome.start_failures[name] = got
            if outcome.start_error is None:  # (the first in the config's order)
                outcome.start_agent, outcome.start_error = name, got
    if outcome.start_error is not None:
        return outcome
    if sup.control_path is not None:
        log.info(
            "control", run_id=sup.run_id, hint="agentrt ctl status|tasks|pause|approve ID|stop"
        )
    closed = asyncio.ensure_future(sup.wait_closed())
    stopper = asyncio.ensure_future(stop.wait())
    try:
        if not cfg.tasks:
            log.info("supervising", agents=list(cfg.agents), hint="stop with Ctrl-C")
            await asyncio.wait([stopper, closed], return_when=asyncio.FIRST_COMPLETED)
            return outcome
        assert run is not None
        run.start()
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


def _journal_path(args: argparse.Namespace, cfg: Config) -> Path | None:
    """Where this run is recorded: ``--journal``, else ``[run] journal`` (relative to
    the config's directory); None with ``--no-journal`` or an empty ``journal``."""
    if args.no_journal:
        return None
    if args.journal is not None:
        return Path(args.journal)
    if not cfg.run.journal:
        return None
    return Path(cfg.base_dir or ".") / cfg.run.journal


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


def command(args: argparse.Namespace) -> int:
    """``agentrt supervise``: check CONFIG and the output paths, then run it."""
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
        journal_path = _journal_path(args, cfg)
        if args.resume is not None and journal_path is None:
            raise ConfigError(
                "--resume", "needs a journal (drop --no-journal, or set [run] journal)"
            )
        if args.force and args.resume is None:
            raise ConfigError("--force", "only goes with --resume")
    except ConfigError as exc:
        if args.log_format == "json":
            structlog.get_logger("agentrt.cli").error(
                "config_error", error=str(exc), path=exc.path, message=exc.message
            )
        else:
            print(f"agentrt: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    journal: Journal | None = None
    resume: str | None = None
    try:
        if journal_path is not None:
            # resuming reads a journal: a missing file is an error, never a new journal
            journal = Journal(journal_path, create=args.resume is None)
            if args.resume is not None:
                resume = journal.run_id(args.resume)
    except JournalError as exc:
        if journal is not None:
            journal.close()
            journal = None
        if args.journal is not None or args.resume is not None:
            print(f"agentrt: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        # the default place cannot hold a journal (a read-only directory, say): the
        # run goes on unrecorded, and says so
        structlog.get_logger("agentrt.cli").warning(
            "journal_unavailable",
            error=str(exc),
            hint="this run cannot be resumed; give --journal FILE, or --no-journal",
        )
    try:
        return asyncio.run(
            _supervise(
                cfg,
                graph,
                args.output,
                trace=args.trace,
                live=view,
                json_logs=args.log_format == "json",
                journal=journal,
                resume=resume,
                force=args.force,
                config=str(args.config.resolve()),
            )
        )
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        if journal is not None:
            journal.close()
