"""A run as a Chrome Trace Event file (Perfetto, chrome://tracing) and as a Gantt PNG.

Layout: one *process* per agent (``pid`` is a small integer, named after the
agent by a ``process_name`` metadata event) and one *thread* per replica
(``tid`` is the replica's OS pid, named ``agent#index pid N``).  Each task is
a complete event (``"ph": "X"``) on the replica that ran it, with its status,
attempts and error in ``args``; crashes, restarts and retries are instant
events (``"ph": "i"``).  Timestamps are microseconds since the run started.
The run's critical path and makespan are kept in ``otherData``, which is what
:func:`render_png` highlights.

Usage::

    rec = TraceRecorder()
    ... feed rec.on_event(ev) from sup.events() ...
    rec.write("run.trace.json", result)
    render_png("run.trace.json", "run.png")
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentrt.scheduler import RunResult
    from agentrt.supervisor import RunEvent

__all__ = ["TraceRecorder", "build_trace", "load_trace", "render_png"]

#: the thread of an agent's process that holds tasks run on no single replica (fan-out parents)
NO_REPLICA_TID = 0
_INSTANT_KINDS = {
    "replica_crashed",
    "replica_restarting",
    "replica_ready",
    "task_retry",
    "task_skipped",
    "fanout",
}


def _us(t: float, origin: float) -> float:
    return round((t - origin) * 1_000_000, 3)


class TraceRecorder:
    """Collects supervisor events during a run; :meth:`build` turns them into a trace."""

    def __init__(self) -> None:
        self.events: list[RunEvent] = []
        self.created_at = time.time()

    def on_event(self, ev: RunEvent) -> None:
        self.events.append(ev)

    def build(self, result: RunResult | None = None) -> dict[str, Any]:
        return build_trace(self.events, result, origin=None if result else self.created_at)

    def write(self, path: str | Path, result: RunResult | None = None) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.build(result), default=str) + "\n", encoding="utf-8")
        return p


def build_trace(
    events: Iterable[RunEvent],
    result: RunResult | None = None,
    *,
    origin: float | None = None,
) -> dict[str, Any]:
    """The Chrome Trace Event document of a run (``result``) and its events."""
    evs = list(events)
    if origin is None:
        times = [e.time for e in evs]
        if result is not None:
            times.append(result.started_at)
        origin = min(times) if times else time.time()

    agent_pids: dict[str, int] = {}
    threads: dict[tuple[int, int], str] = {}
    replica_pid: dict[tuple[str, int], int] = {}  # (agent, replica index) -> last OS pid
    pid_replica: dict[int, int] = {}  # OS pid -> replica index
    out: list[dict[str, Any]] = []

    def proc(agent: str) -> int:
        if agent not in agent_pids:
            agent_pids[agent] = len(agent_pids) + 1
        return agent_pids[agent]

    def thread(agent: str, tid: int | None) -> tuple[int, int]:
        p = proc(agent)
        t = tid if tid is not None else NO_REPLICA_TID
        if (p, t) not in threads:
            if t == NO_REPLICA_TID:
                threads[(p, t)] = f"{agent} (no single replica)"
            elif t in pid_replica:
                threads[(p, t)] = f"{agent}#{pid_replica[t]} pid {t}"
            else:
                threads[(p, t)] = f"{agent} pid {t}"
        return p, t

    for e in evs:  # replica pids first, so thread names carry the replica index
        if e.agent is not None and e.replica is not None and e.pid is not None:
            replica_pid[(e.agent, e.replica)] = e.pid
            pid_replica.setdefault(e.pid, e.replica)

    task_agent: dict[str, str] = {}
    if result is not None:
        for r in result.tasks.values():
            task_agent[r.id] = r.agent
            if r.started_at is None or r.finished_at is None:
                continue
            p, t = thread(r.agent, r.pid)
            args: dict[str, Any] = {
                "task": r.id,
                "status": r.status,
                "attempts": r.attempts,
                "agent": r.agent,
                "pid": r.pid,
            }
            if r.queued_at is not None:
                args["queued_us"] = _us(r.queued_at, origin)
                args["wait_ms"] = round((r.started_at - r.queued_at) * 1000, 3)
            if r.error:
                args["error"] = r.error
            if r.reason:
                args["reason"] = r.reason
            out.append(
                {
                    "name": r.id,
                    "cat": "task",
                    "ph": "X",
                    "ts": _us(r.started_at, origin),
                    "dur": max(_us(r.finished_at, origin) - _us(r.started_at, origin), 0.0),
                    "pid": p,
                    "tid": t,
                    "args": args,
                }
            )

    calls: dict[Any, tuple[RunEvent, Any]] = {}
    for e in evs:
        if e.kind in ("call_started", "call_finished"):
            _call_event(e, calls, out, thread, origin)
            continue
        if e.kind not in _INSTANT_KINDS:
            continue
        agent = e.agent or (task_agent.get(e.task, "") if e.task else "") or "run"
        pid = e.pid
        if pid is None and e.replica is not None:
            pid = replica_pid.get((agent, e.replica))
        p, t = thread(agent, pid)
        name = e.kind if e.task is None else f"{e.kind} {e.task}"
        args = {
            k: v
            for k in ("task", "replica", "pid", "status", "reason", "attempt", "items")
            if (v := getattr(e, k)) is not None
        }
        out.append(
            {
                "name": name,
                "cat": "replica" if e.kind.startswith("replica_") else "run",
                "ph": "i",
                "s": "t",
                "ts": _us(e.time, origin),
                "pid": p,
                "tid": t,
                "args": args,
            }
        )

    meta: list[dict[str, Any]] = []
    for agent, p in agent_pids.items():
        meta.append(
            {"name": "process_name", "ph": "M", "pid": p, "tid": 0, "args": {"name": agent}}
        )
        meta.append(
            {"name": "process_sort_index", "ph": "M", "pid": p, "tid": 0, "args": {"sort_index": p}}
        )
    for (p, t), name in threads.items():
        meta.append({"name": "thread_name", "ph": "M", "pid": p, "tid": t, "args": {"name": name}})

    other: dict[str, Any] = {"origin": origin, "agents": dict(agent_pids)}
    if result is not None:
        other.update(
            run_id=result.run_id,
            status=result.status,
            critical_path=list(result.critical_path),
            makespan=result.makespan,
            started_at=result.started_at,
            finished_at=result.finished_at,
        )
    out.sort(key=lambda ev: (ev["ts"], ev["pid"], ev["tid"]))
    return {"traceEvents": meta + out, "displayTimeUnit": "ms", "otherData": other}


def _call_event(
    e: RunEvent,
    calls: dict[Any, tuple[RunEvent, Any]],
    out: list[dict[str, Any]],
    thread: Any,
    origin: float,
) -> None:
    """Per-call spans (``ctx.spawn`` / tool calls), once the supervisor emits
    ``call_started`` / ``call_finished`` events carrying ``call_id``, ``parent``,
    ``target`` (agent or tool), ``agent`` and ``pid``."""
    call_id = getattr(e, "call_id", None)
    if call_id is None:
        return
    if e.kind == "call_started":
        calls[call_id] = (e, None)
        return
    started = calls.pop(call_id, None)
    if started is None:
        return
    s = started[0]
    agent = e.agent or s.agent or "call"
    p, t = thread(agent, e.pid if e.pid is not None else s.pid)
    out.append(
        {
            "name": str(getattr(s, "target", None) or agent),
            "cat": "call",
            "ph": "X",
            "ts": _us(s.time, origin),
            "dur": max(_us(e.time, origin) - _us(s.time, origin), 0.0),
            "pid": p,
            "tid": t,
            "args": {
                "call_id": call_id,
                "parent": getattr(s, "parent", None),
                "status": e.status,
                "task": s.task,
            },
        }
    )


def load_trace(path: str | Path) -> dict[str, Any]:
    """Read a trace file and check its shape; ``ValueError`` says what is wrong."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        raise ValueError(f"{path}: not a Chrome trace (no traceEvents list)")
    return doc


_STATUS_COLOURS = {
    "ok": "#4c78a8",
    "failed": "#e45756",
    "crashed": "#b279a2",
    "timeout": "#f58518",
    "limit": "#9d755d",
    "cancelled": "#bab0ac",
}
_CRITICAL = "#e3b505"


def render_png(
    trace: dict[str, Any] | str | Path,
    out: str | Path,
    *,
    width: int = 1200,
    height: int | None = None,
) -> Path:
    """A Gantt chart of the trace's tasks, a row per replica, critical path highlighted.

    The image is ``width`` x ``height`` pixels (height grows with the rows when
    not given).
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    doc = trace if isinstance(trace, dict) else load_trace(trace)
    events: list[dict[str, Any]] = doc["traceEvents"]
    other: dict[str, Any] = doc.get("otherData") or {}
    critical = set(other.get("critical_path") or [])
    proc_names = {e["pid"]: e["args"]["name"] for e in events if e.get("name") == "process_name"}
    thread_names = {
        (e["pid"], e["tid"]): e["args"]["name"] for e in events if e.get("name") == "thread_name"
    }
    spans = [e for e in events if e.get("ph") == "X"]
    instants = [e for e in events if e.get("ph") == "i" and e.get("cat") == "replica"]
    rows = sorted({(e["pid"], e["tid"]) for e in spans + instants})
    index = {r: i for i, r in enumerate(rows)}
    if height is None:
        height = max(300, 140 + 30 * len(rows))
    dpi = 100
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    ax = fig.add_subplot()
    for e in spans:
        y = index[(e["pid"], e["tid"])]
        status = (e.get("args") or {}).get("status", "ok")
        on_path = e.get("cat") == "task" and e.get("name") in critical
        ax.barh(
            y,
            e["dur"] / 1000,
            left=e["ts"] / 1000,
            height=0.6,
            color=_STATUS_COLOURS.get(status, "#72b7b2"),
            edgecolor=_CRITICAL if on_path else "none",
            linewidth=2.5 if on_path else 0,
        )
        if e["dur"] > 0:
            ax.text(
                (e["ts"] + e["dur"] / 2) / 1000,
                y,
                str(e.get("name", "")),
                ha="center",
                va="center",
                fontsize=7,
                clip_on=True,
            )
    for e in instants:
        y = index[(e["pid"], e["tid"])]
        marker = "x" if e["name"].startswith("replica_crashed") else "|"
        ax.plot([e["ts"] / 1000], [y], marker=marker, color="black", markersize=8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(
        [thread_names.get(r, f"{proc_names.get(r[0], r[0])} {r[1]}") for r in rows], fontsize=8
    )
    ax.invert_yaxis()
    ax.set_xlabel("time since the trace began (ms)")
    title = "agentrt run"
    if other.get("run_id"):
        title += f" {str(other['run_id'])[:8]}"
    if other.get("makespan") is not None:
        title += f": makespan {float(other['makespan']) * 1000:.1f} ms"
    if critical:
        title += f"; critical path {' -> '.join(other['critical_path'])}"
    ax.set_title(title if len(title) <= 160 else title[:157] + "...", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    legend = [Patch(color=c, label=s) for s, c in _STATUS_COLOURS.items()]
    legend.append(Patch(facecolor="white", edgecolor=_CRITICAL, linewidth=2.5, label="critical"))
    ax.legend(handles=legend, fontsize=7, loc="best", ncols=4, framealpha=0.6)
    fig.tight_layout()
    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, format="png", dpi=dpi)
    return p
