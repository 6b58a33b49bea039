"""``agentrt runs`` and ``agentrt show``: the runs a journal recorded, and one run's tasks.

Both only read the journal (:class:`agentrt.journal.Journal`, opened with
``create=False``): ``--journal FILE``, else CONFIG's ``[run] journal``
(relative to the config's directory, as ``agentrt supervise`` resolves it),
else ``.agentrt/runs.db`` in the working directory.

``agentrt show RUN_ID --json`` prints the run in the shape of the results file
``agentrt supervise --output`` writes (a :class:`~agentrt.scheduler.RunResult`)
plus an ``attempts`` key (every attempt the journal recorded).  What the journal
does not keep is made up as follows: a task with no outcome is ``pending``
(``reason`` says whether it had started); ``critical_path`` and ``makespan``
are computed again from the top-level tasks' times and their specs'
dependencies, as the scheduler does; ``audit`` is the run's ``audit`` events;
``failed_agents`` and ``restored`` are empty; ``finished_at`` of a run that has
not ended is the last time a task finished (or its start).

Exit status: 0 shown (whatever the run's own status), 2 no journal, a file
that is not one, an unknown run, an invalid config or command line.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from agentrt.cli.common import EXIT_CONFIG, EXIT_OK, Subparsers
from agentrt.config import load_config
from agentrt.errors import ConfigError
from agentrt.graph import GraphError, Node, critical_path
from agentrt.journal import Journal, JournalError, RunRow
from agentrt.scheduler import RunResult, TaskResult

__all__ = ["add_parser", "command", "show_command"]

EPILOG = (
    "exit status: 0 shown, 2 no journal (or a file that is not one), an unknown run, "
    "an invalid config or command line"
)
#: the journal ``runs`` and ``show`` read when given neither CONFIG nor --journal
DEFAULT_JOURNAL = Path(".agentrt") / "runs.db"
#: the widest a result or an error gets in ``show``'s table
_RESULT_WIDTH = 72
_DASH = "\u2014"


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {n}")
    return n


def _journal_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "config",
        nargs="?",
        type=Path,
        metavar="CONFIG",
        help="the config whose journal to read ([run] journal; default: .agentrt/runs.db "
        "in the working directory)",
    )
    p.add_argument(
        "--journal",
        type=Path,
        metavar="FILE",
        help="read this journal (CONFIG is then not read)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")


def add_parser(sub: Subparsers) -> None:
    """The ``runs`` and ``show`` subcommands."""
    rp = sub.add_parser(
        "runs",
        help="the runs the journal recorded, newest first",
        description=(
            "List the runs of a journal, newest first: id, start, duration, status, tasks "
            "ok / failed / pending and how many times each was resumed."
        ),
        epilog=EPILOG,
    )
    _journal_options(rp)
    rp.add_argument("-n", type=_positive, metavar="N", help="only the N newest runs")
    sp = sub.add_parser(
        "show",
        help="one recorded run: its tasks, results and errors",
        description=(
            "Show a run of the journal: each task's status, attempts, agent, pid, duration and "
            "result or error. --json prints it in the results file's shape, with the attempts."
        ),
        epilog=EPILOG,
    )
    sp.add_argument("run", metavar="RUN_ID", help="the run's id ('last': the latest)")
    _journal_options(sp)


# --- finding and opening the journal ---------------------------------------------------


def _journal_path(args: argparse.Namespace) -> Path:
    """``--journal``, else CONFIG's ``[run] journal``, else the default (ConfigError
    for a config that cannot be loaded or records no runs)."""
    if args.journal is not None:
        return Path(args.journal)
    if args.config is None:
        return DEFAULT_JOURNAL
    cfg = load_config(args.config)
    if not cfg.run.journal:
        raise ConfigError("run.journal", f"{args.config} records no runs (its journal is empty)")
    return Path(cfg.base_dir or ".") / cfg.run.journal


def _open(path: Path) -> Journal:
    """The journal at ``path``, read as it is: an empty file is not made into one."""
    if path.is_file() and path.stat().st_size == 0:
        raise JournalError(path, "not a journal (an empty file)")
    return Journal(path, create=False)


def _fail(message: str) -> int:
    print(f"agentrt: {message}", file=sys.stderr)
    return EXIT_CONFIG


# --- runs ------------------------------------------------------------------------------


def command(args: argparse.Namespace) -> int:
    """``agentrt runs``: one line per run of the journal."""
    try:
        path = _journal_path(args)
        with _open(path) as journal:
            runs = journal.runs()
    except ConfigError as exc:
        return _fail(f"config error: {exc}")
    except JournalError as exc:
        return _fail(_hint(exc, args))
    if args.n is not None:
        runs = runs[: args.n]
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(runs)).decode())
        return EXIT_OK
    if not runs:
        print(f"journal {path}: no runs yet", file=sys.stderr)
        return EXIT_OK
    header = [
        "RUN",
        "STARTED",
        "DURATION",
        "STATUS",
        "TASKS",
        "OK",
        "FAILED",
        "SKIPPED",
        "PENDING",
        "RESUMED",
    ]
    rows = [
        [
            r.run_id,
            _when(r.started),
            _DASH if r.ended is None else _duration(r.ended - r.started),
            r.status,
            str(r.tasks),
            str(r.ok),
            str(r.failed),
            str(r.skipped),
            str(r.pending),
            str(r.resumed),
        ]
        for r in runs
    ]
    _table(header, rows)
    return EXIT_OK


def _hint(exc: JournalError, args: argparse.Namespace) -> str:
    """The error, and where else to look when the default journal is missing."""
    if args.journal is None and args.config is None and not Path(exc.path).exists():
        return f"{exc} (give CONFIG or --journal FILE)"
    return str(exc)


# --- show ------------------------------------------------------------------------------


def show_command(args: argparse.Namespace) -> int:
    """``agentrt show RUN_ID``: the run's tasks, as a table or as the results file."""
    try:
        path = _journal_path(args)
        with _open(path) as journal:
            run_id = journal.run_id(args.run)
            row = next(r for r in journal.runs() if r.run_id == run_id)
            result = _run_result(journal, row)
            attempts = journal.attempts(run_id)
    except ConfigError as exc:
        return _fail(f"config error: {exc}")
    except JournalError as exc:
        return _fail(_hint(exc, args))
    if args.json:
        doc = msgspec.to_builtins(result)
        doc["attempts"] = attempts
        try:
            print(msgspec.json.format(msgspec.json.encode(doc)).decode())
        except (TypeError, ValueError, OverflowError) as exc:
            return _fail(f"run {run_id} cannot be written as JSON: {exc}")
        return EXIT_OK
    _print_run(row, result, attempts)
    return EXIT_OK


def _run_result(journal: Journal, row: RunRow) -> RunResult:
    """What the journal holds of run ``row``, as a :class:`RunResult`."""
    run_id = row.run_id
    live = row.status == "running"
    tasks: dict[str, TaskResult] = {}
    for tid, status, outcome in journal.task_outcomes(run_id):
        if outcome is not None:
            try:
                tasks[tid] = msgspec.convert(outcome, TaskResult)
                continue
            except msgspec.ValidationError as exc:
                raise JournalError(journal.path, f"task {tid!r}'s outcome: {exc}") from None
        reason = None
        if status == "running":
            reason = "started, no outcome yet" if live else "started, no outcome recorded"
        tasks[tid] = TaskResult(id=tid, status="pending", reason=reason)
    saved = journal.load(run_id)
    specs = [*saved.initial, *saved.dynamic]
    deps = {str(s.get("id")): _deps(s) for s in specs}
    timings = {
        tid: (r.started_at, r.finished_at)
        for tid, r in tasks.items()
        if tid in deps and r.started_at and r.finished_at
    }
    path, makespan = critical_path(timings, deps)
    finished = row.ended
    if finished is None:
        finished = max((r.finished_at for r in tasks.values() if r.finished_at), default=0.0)
        finished = max(finished, row.started)
    audit = [
        {k: v for k, v in e.items() if k != "kind"}
        for e in journal.events(run_id)
        if e.get("kind") == "audit"
    ]
    return RunResult(
        run_id=run_id,
        status=row.status,
        tasks=tasks,
        critical_path=path,
        makespan=makespan,
        started_at=row.started,
        finished_at=finished,
        audit=audit,
        restored=[],
    )


def _deps(spec: dict[str, Any]) -> set[str]:
    """A task spec's dependencies (``after``, and references in its arguments)."""
    try:
        return msgspec.convert(spec, Node).deps
    except (msgspec.ValidationError, GraphError):
        after = spec.get("after")
        return {str(d) for d in after} if isinstance(after, list) else set()


def _print_run(row: RunRow, result: RunResult, attempts: list[dict[str, Any]]) -> None:
    took = _DASH if row.ended is None else _duration(row.ended - row.started)
    ended = "" if row.ended is None else f", ended {_when(row.ended)}"
    resumed = f", resumed {row.resumed}x" if row.resumed else ""
    print(f"run {row.run_id}: {row.status} (started {_when(row.started)}{ended}, {took}{resumed})")
    if row.argv:
        print(f"  command: {row.argv}")
    if row.config:
        print(f"  config:  {row.config}")
    counts: dict[str, int] = {}
    for r in result.tasks.values():
        counts[r.status] = counts.get(r.status, 0) + 1
    shown = ", ".join(f"{n} {status}" for status, n in counts.items())
    print(f"  tasks:   {len(result.tasks)}" + (f" ({shown})" if shown else ""))
    if result.critical_path:
        chain = " -> ".join(result.critical_path)
        print(f"  critical path: {chain} ({_duration(result.makespan)})")
    per_task: dict[str, int] = {}
    for a in attempts:
        per_task[a["task"]] = per_task.get(a["task"], 0) + 1
    rows = [
        [
            r.id,
            r.status,
            str(max(r.attempts, per_task.get(r.id, 0))),
            r.agent or "-",
            "-" if r.pid is None else str(r.pid),
            _span(r.started_at, r.finished_at),
            _what(r),
        ]
        for r in result.tasks.values()
    ]
    if rows:
        print()
        _table(["TASK", "STATUS", "ATTEMPTS", "AGENT", "PID", "DURATION", "RESULT"], rows)


# --- formatting ------------------------------------------------------------------------


def _what(r: TaskResult) -> str:
    """A task's result, error or reason, on one line."""
    if r.status == "ok":
        try:
            text = msgspec.json.encode(r.result).decode()
        except (TypeError, ValueError, OverflowError):
            text = repr(r.result)
    elif r.error:
        text = f"{r.error.get('type', 'Error')}: {r.error.get('message', '')}"
    else:
        text = r.reason or ""
    return _short(" ".join(text.split()), _RESULT_WIDTH)


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _span(start: float | None, end: float | None) -> str:
    return _DASH if start is None or end is None else _duration(end - start)


def _duration(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds >= 0.1 else f"{seconds * 1000:.0f}ms"
    m, s = divmod(int(seconds), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"
