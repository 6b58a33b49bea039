"""``agentrt ctl``: look at and steer a running supervisor through its control socket.

Views (``status``, ``agents``, ``tasks``, ``audit``, ``tail``) print compact
tables or lines, or the reply itself with ``--json``; actions (``pause``,
``resume``, ``cancel``, ``approve``, ``deny``, ``stop``) print one line
saying what was done.  The run is the most recent live one started from
the working directory, or the one ``--run ID`` names (see
:func:`agentrt.control.find_run`).  Only the socket is spoken to: this
module knows the supervisor through :mod:`agentrt.protocol`'s ``Ctl*``
requests and the shapes of their replies, nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from agentrt.cli.common import EXIT_CONFIG, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, Subparsers
from agentrt.control import ControlClient, RunInfo, describe, find_run
from agentrt.errors import ControlError
from agentrt.protocol import (
    CtlAgents,
    CtlApprove,
    CtlAudit,
    CtlCancel,
    CtlDeny,
    CtlPause,
    CtlResume,
    CtlStatus,
    CtlStop,
    CtlTasks,
    summarize,
)

__all__ = ["add_parser", "command"]

EPILOG = (
    "exit status: 0 done, 1 the supervisor refused the request (an unknown approval, "
    "task or agent, ...), 2 invalid command line or --args, or no live run reachable "
    "(none started from this directory: give --run ID), 130 interrupted"
)
#: what ``tail -n`` may ask for (the protocol's bound)
_MAX_LAST = 10_000
Parser = argparse.ArgumentParser


def _json_object(text: str) -> dict[str, Any]:
    """``--args``: a JSON object, else a command-line error naming the problem."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"must be a JSON object of named arguments, not {type(value).__name__}: {text!r}"
        )
    return value


def _last(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= n <= _MAX_LAST:
        raise argparse.ArgumentTypeError(f"must be 0 to {_MAX_LAST}, not {n}")
    return n


def add_parser(sub: Subparsers) -> None:
    """The ``ctl`` subcommand and its own subcommands."""
    cp = sub.add_parser(
        "ctl",
        help="look at and steer a running supervisor (approve, pause, cancel, stop, tail)",
        description=(
            "Talk to a running supervisor through its control socket: the most recent live "
            "run started from this directory, or the one --run ID names."
        ),
        epilog=EPILOG,
    )
    cp.add_argument("--run", metavar="ID", help="the run's id (a prefix will do)")
    cp.add_argument("--json", action="store_true", help="print the reply as JSON")
    # The same options after the subcommand; SUPPRESS keeps a value given before it.
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="as JSON")
    with_run = argparse.ArgumentParser(add_help=False, parents=[shared])
    with_run.add_argument(
        "--run", metavar="ID", default=argparse.SUPPRESS, help="the run's id (a prefix will do)"
    )
    cs = cp.add_subparsers(dest="ctl_command", required=True, metavar="SUBCOMMAND")

    def add(name: str, what: str, parents: list[argparse.ArgumentParser]) -> Parser:
        return cs.add_parser(name, help=what, description=what, parents=parents, epilog=EPILOG)

    add("status", "the run: state, uptime, what is paused, replicas, tasks, approvals", [with_run])
    add(
        "agents",
        "one row per replica (and standby): state, pid, calls, restarts, memory, CPU",
        [with_run],
    )
    add("tasks", "tasks by status, calls in flight, approvals pending", [with_run])
    add("audit", "every approval, denial, pause, resume, cancel and stop", [with_run])
    for verb in ("pause", "resume"):
        p = add(verb, f"{verb} the whole run, an agent or one replica", [with_run])
        p.add_argument(
            "target",
            nargs="?",
            default="",
            metavar="TARGET",
            help="NAME (an agent) or NAME#N (one replica); none: the whole run",
        )
    p = add("cancel", "cancel a task, an agent's calls or the graph run", [shared])
    p.add_argument("task", nargs="?", metavar="TASK", help="a graph task's id or a call's number")
    p.add_argument("--agent", metavar="NAME", help="every call of agent NAME, queued or running")
    p.add_argument(
        "--run",
        dest="cancel_run",
        nargs="?",
        const="",
        default=argparse.SUPPRESS,
        metavar="ID",
        help="the graph run (with ID: run ID, which then also picks the run to talk to, "
        "unless --run ID comes before `cancel`)",
    )
    p.add_argument("--reason", default="", help="why (recorded in the audit log)")
    p = add("approve", "approve a pending request", [with_run])
    p.add_argument("id", metavar="ID", help="the request's id (see `agentrt ctl tasks`)")
    p.add_argument("--reason", default="", help="why (recorded in the audit log)")
    p.add_argument(
        "--args",
        type=_json_object,
        metavar="JSON",
        help="call with these arguments instead (a JSON object: '{\"x\": 2}')",
    )
    p = add("deny", "deny a pending request: its caller gets ApprovalDenied", [with_run])
    p.add_argument("id", metavar="ID", help="the request's id (see `agentrt ctl tasks`)")
    p.add_argument("--reason", default="", help="why (the caller sees it)")
    p = add("stop", "stop the run (gracefully, or --now)", [with_run])
    p.add_argument(
        "--now", action="store_true", help="the kill switch: every agent process killed at once"
    )
    p.add_argument("--reason", default="", help="why (recorded in the audit log)")
    p = add("tail", "the run's events: the last N, then each new one", [with_run])
    p.add_argument("-n", type=_last, default=20, metavar="N", help="events from before (20)")
    p.add_argument(
        "--no-follow",
        dest="follow",
        action="store_false",
        help="stop after those (default: follow until the run ends or Ctrl-C)",
    )


def command(args: argparse.Namespace) -> int:
    """``agentrt ctl SUBCOMMAND``: one request to the run, its reply printed."""
    try:
        request, target = _request(args)
    except ValueError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    try:
        info = find_run(target, os.getcwd())
    except ControlError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    cancel_run = isinstance(request, CtlCancel) and request.scope == "run" and request.target
    if cancel_run and args.run is None:  # ``cancel --run ID``: ID picked the run (or a prefix)
        request = CtlCancel(info.id, "run", request.reason)
    client = ControlClient(info.socket)
    try:
        if args.ctl_command == "tail":
            return _tail(client, args.n, args.follow, args.json)
        value = client.request(request)
    except ControlError as exc:
        return _fail(str(exc), EXIT_FAILED)
    except (OSError, EOFError) as exc:
        return _fail(f"cannot reach run {info.id} at {info.socket}: {exc}", EXIT_CONFIG)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    if args.json:
        print(describe(value))
    else:
        _SHOW[args.ctl_command](value, info)
    return EXIT_OK


def _fail(message: str, status: int) -> int:
    print(f"agentrt: {message}", file=sys.stderr)
    return status


def _request(args: argparse.Namespace) -> tuple[Any, str | None]:
    """The request ``args`` ask for, and the run to send it to (None: this directory's)."""
    run: str | None = args.run
    match args.ctl_command:
        case "status":
            return CtlStatus(), run
        case "agents":
            return CtlAgents(), run
        case "tasks":
            return CtlTasks(), run
        case "audit":
            return CtlAudit(), run
        case "tail":
            return None, run
        case "pause":
            return CtlPause(args.target), run
        case "resume":
            return CtlResume(args.target), run
        case "approve":
            return CtlApprove(args.id, args.reason, args.args), run
        case "deny":
            return CtlDeny(args.id, args.reason), run
        case "stop":
            return CtlStop(args.now, args.reason), run
        case "cancel":
            return _cancel(args)
    raise ValueError(f"unknown ctl subcommand {args.ctl_command!r}")


def _cancel(args: argparse.Namespace) -> tuple[CtlCancel, str | None]:
    # ``--run`` after ``cancel`` (``cancel_run``) is the graph run to cancel; with an
    # ID and no ``--run`` before ``cancel``, that ID picks the run to talk to as well.
    given = [args.task is not None, args.agent is not None, "cancel_run" in args]
    if sum(given) != 1:
        raise ValueError("cancel takes one of TASK, --agent NAME or --run [ID]")
    if args.task is not None:
        return CtlCancel(args.task, "task", args.reason), args.run
    if args.agent is not None:
        return CtlCancel(args.agent, "agent", args.reason), args.run
    return CtlCancel(args.cancel_run, "run", args.reason), args.run or args.cancel_run or None


# --- human output -------------------------------------------------------------------


def _show_status(v: dict[str, Any], info: RunInfo) -> None:
    rows = [
        ("run", f"{v['run_id']}  (pid {v['pid']}, in {v['cwd']})"),
        ("state", f"{v['state']}, up {_duration(v['uptime'])}"),
        ("paused", ", ".join(v["paused"]) or "-"),
        ("agents", f"{v['agents']}; replicas: {_counts(v['replicas'])}"),
        ("tasks", _counts(v["tasks"])),
        ("calls", f"{v['calls_in_flight']} in flight, {v['queued']} queued"),
        ("approvals", f"{v['approvals_pending']} pending"),
    ]
    for key, text in rows:
        print(f"{key:<10} {text}")


def _show_agents(v: list[dict[str, Any]], info: RunInfo) -> None:
    rows: list[list[str]] = []
    notes: list[str] = []
    for ag in v:
        for r in ag["replicas"]:
            rows.append(
                [
                    ag["name"],
                    f"#{r['replica']}",
                    r["state"],
                    _opt(r["pid"]),
                    str(r["inflight"]),
                    str(r["restarts"]),
                    _size(r.get("rss")),
                    "-" if r.get("cpu_percent") is None else f"{r['cpu_percent']:.1f}",
                ]
            )
        standby = ag.get("standby")
        if standby:  # (``standby = true``: the process kept to take a dead replica's place)
            rows.append([ag["name"], "standby", standby["state"], _opt(standby["pid"])] + ["-"] * 4)
        if ag["failed"]:
            notes.append(f"{ag['name']}: {ag['failed']}")
        if ag["queued"]:
            notes.append(f"{ag['name']}: {ag['queued']} calls queued")
    if not rows:
        print("no agent is running")
    else:
        _table(["AGENT", "REPLICA", "STATE", "PID", "CALLS", "RESTARTS", "RSS", "CPU%"], rows)
    for note in notes:
        print(note)


def _show_tasks(v: dict[str, Any], info: RunInfo) -> None:
    for run in v["runs"]:
        print(f"graph run {run['run_id']}")
        rows = [
            [
                t["id"],
                t["agent"],
                t["status"],
                t.get("approval") or _short(t.get("reason") or "", 60),
            ]
            for t in run["tasks"]
        ]
        _table(["TASK", "AGENT", "STATUS", "NOTE"], rows, indent="  ")
        if run["more"]:
            print(f"  ... and {run['more']} more")
    if not v["runs"]:
        print("no graph run")
    print("calls in flight" if v["calls"] else "calls in flight: none")
    now_rows = [
        [
            str(c["id"]),
            f"{c['agent']}#{c['replica']}",
            _opt(c["task"]),
            _opt(c["parent"]),
            "paused" if c["paused"] else _duration(c["running"]),
        ]
        for c in v["calls"]
    ]
    _table(["CALL", "REPLICA", "TASK", "PARENT", "RUNNING"], now_rows, indent="  ")
    print("pending approvals" if v["approvals"] else "pending approvals: none")
    rows = [
        [
            p["id"],
            _opt(p.get("task")),
            p["agent"],
            _opt(p.get("tool")),
            _short(summarize(p.get("args") or {}), 50),
            _duration(p.get("waited")),
        ]
        for p in v["approvals"]
    ]
    _table(["ID", "TASK", "AGENT", "TOOL", "ARGUMENTS", "WAITED"], rows, indent="  ")


def _show_audit(v: list[dict[str, Any]], info: RunInfo) -> None:
    if not v:
        print("the audit log is empty")
    for e in v:
        target = e["target"]
        about = [f"{k} {e[k]}" for k in ("task", "tool", "agent") if e.get(k)]
        if about:
            target += f" ({', '.join(about)})"
        line = f"{_clock(e['time'])}  {e['action']:<18} {target}  by {_who(e['by'])}"
        print(line + (f": {e['reason']}" if e.get("reason") else ""))


def _show_pause(v: dict[str, Any], info: RunInfo) -> None:
    print(f"paused: {', '.join(v['paused']) or 'nothing (already paused, or no replica)'}")


def _show_resume(v: dict[str, Any], info: RunInfo) -> None:
    print(f"resumed: {', '.join(v['resumed']) or 'nothing (none was paused)'}")


def _show_cancel(v: dict[str, Any], info: RunInfo) -> None:
    print(f"cancelled: {', '.join(v['cancelled']) or 'nothing (no call was queued or running)'}")


def _decided(verb: str) -> Callable[[dict[str, Any], RunInfo], None]:
    def show(v: dict[str, Any], info: RunInfo) -> None:
        if v.get("task"):
            what = f"task {v['task']}"
        elif v.get("tool"):
            what = f"tool {v['tool']}, asked by {v['agent']}"
        else:
            what = f"call to {v['agent']}"
        print(f"{verb} {v[verb]} ({what})")

    return show


def _show_stop(v: dict[str, Any], info: RunInfo) -> None:
    if v.get("now"):
        print(f"killing every agent process of run {info.id}; the supervisor stops")
    else:
        print(f"stopping run {info.id}")


_SHOW: dict[str, Callable[[Any, RunInfo], None]] = {
    "status": _show_status,
    "agents": _show_agents,
    "tasks": _show_tasks,
    "audit": _show_audit,
    "pause": _show_pause,
    "resume": _show_resume,
    "cancel": _show_cancel,
    "approve": _decided("approved"),
    "deny": _decided("denied"),
    "stop": _show_stop,
}


def _tail(client: ControlClient, last: int, follow: bool, as_json: bool) -> int:
    for ev in client.tail(last, follow):
        line = json.dumps(ev, default=str) if as_json else _event_line(ev)
        try:
            print(line, flush=True)
        except BrokenPipeError:  # the reader went away (``| head``): nothing more to print
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # (so that the exit's flush does not fail)
            os.close(devnull)
            break
    return EXIT_OK


def _event_line(ev: dict[str, Any]) -> str:
    who = ev.get("agent") or ""
    if who and ev.get("replica") is not None:
        who += f"#{ev['replica']}"
    parts = [_clock(ev.get("time")), f"{ev.get('kind', '?'):<18}", who or "-"]
    for key, label in (("task", "task "), ("call_id", "call "), ("approval", ""), ("pid", "pid ")):
        if ev.get(key) is not None:
            parts.append(f"{label}{ev[key]}")
    for key in ("status", "reason", "summary"):
        if ev.get(key):
            parts.append(_short(str(ev[key]), 100))
    return "  ".join(parts)


# --- formatting ----------------------------------------------------------------------


def _table(header: list[str], rows: list[list[str]], indent: str = "") -> None:
    if not rows:
        return
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print(indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {state}" for state, n in counts.items()) or "none"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(seconds), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 1024:
        return f"{n} B"
    size = n / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _clock(t: float | None) -> str:
    if t is None:
        return "--:--:--"
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1000):03d}"


def _who(by: dict[str, Any]) -> str:
    ids: Iterable[str] = (f"{k} {by[k]}" for k in ("uid", "pid") if by.get(k) is not None)
    shown = ", ".join(ids)
    return f"{by.get('via', '?')} ({shown})" if shown else str(by.get("via", "?"))


def _opt(value: Any) -> str:
    return "-" if value is None else str(value)


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "\u2026"
