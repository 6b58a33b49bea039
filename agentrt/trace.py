"""A run as a Chrome Trace Event file (Perfetto, chrome://tracing) and as a Gantt PNG.

Layout: one *process* per agent (``pid`` is a small integer, named after the
agent by a ``process_name`` metadata event) and one *thread* per replica
(``tid`` is the replica's OS pid, named ``agent#index pid N``).  Each task is
a complete event (``"ph": "X"``) on the replica that ran it, with its status,
attempts and error in ``args``; crashes, restarts and retries are instant
events (``"ph": "i"``).  Timestamps are microseconds since the run started.
The run's critical path and makespan are kept in ``otherData``, which is what
:func:`render_png` highlights.

Calls: the subagent and tool calls a task makes are drawn in *lanes* beneath
its replica's row, one thread each (``tid`` from :data:`LANE_TID_BASE` up,
named ``<row> lane 2``, ordered by ``thread_sort_index``).  Calls that
overlap never share a lane (:func:`assign_lanes`), calls that follow each
other do; the calls a call makes get lanes of their own beneath its lane
(``lane 2.1``).  A call's span is named after its target (``tool:search``,
``agent:research``) and carries its arguments' ``summary``, ``status`` and
``reason``.  ``otherData["lanes"]`` lists every lane with the row it belongs
to.

A call is placed under its task by its ``task`` field when the events carry
one; otherwise by the replica that ran the task's call (an in-process tool
call reports it) and by time: the task running then on that replica, or the
only task running then.  Calls no task can be named for go to a row of their
own, ``(calls)`` / ``caller not known``.

Usage::

    rec = TraceRecorder()
    ... feed rec.on_event(ev) from sup.events() ...
    rec.write("run.trace.json", result)
    render_png("run.trace.json", "run.png")
"""

from __future__ import annotations

import heapq
import json
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentrt.scheduler import RunResult
    from agentrt.supervisor import RunEvent

__all__ = [
    "LANE_TID_BASE",
    "CallSpan",
    "Lane",
    "TraceRecorder",
    "assign_lanes",
    "build_trace",
    "collect_calls",
    "lay_out_lanes",
    "load_trace",
    "render_png",
]

#: the thread of an agent's process that holds tasks run on no single replica (fan-out parents)
NO_REPLICA_TID = 0
#: lanes' tids count up from here: above every OS pid (Linux's pid_max is at most 2**22)
LANE_TID_BASE = 10_000_000
#: the process and thread of calls whose task could not be told
UNKNOWN_CALLER = "(calls)"
#: rounding: a call that starts this close outside a task's span is still in it (seconds)
_SLACK = 1e-6
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


# --- calls and their lanes ------------------------------------------------------------


@dataclass(eq=False, slots=True)
class CallSpan:
    """One subagent or tool call, from its ``call_started`` / ``call_finished``
    events, with the calls it made (``children``, by start)."""

    call_id: int
    parent: int | None
    target: str
    start: float
    #: None: it had not finished when the trace was written
    end: float | None = None
    #: where it ran: the subagent's (or isolated tool's) replica; an in-process
    #: tool runs in its caller's
    agent: str | None = None
    pid: int | None = None
    status: str | None = None
    summary: str | None = None
    reason: str | None = None
    task: str | None = None
    children: list[CallSpan] = field(default_factory=list)

    @property
    def in_process(self) -> bool:
        """A tool call the agent ran in its own process (it reports it with a negative id)."""
        return self.call_id < 0

    @property
    def name(self) -> str:
        """What it called: ``tool:search``, ``model:gpt-4o`` or ``agent:research``."""
        return self.target if self.kind != "subagent" else f"agent:{self.target}"

    @property
    def kind(self) -> str:
        """``tool``, ``model`` (an agent's call to a language model) or ``subagent``."""
        head = self.target.partition(":")[0]
        return head if head in ("tool", "model") and ":" in self.target else "subagent"

    def until(self, default: float) -> float:
        return self.end if self.end is not None else max(default, self.start)


def collect_calls(events: Iterable[RunEvent]) -> dict[int, CallSpan]:
    """Every call in ``events`` by id, each linked to the calls it made.

    A call dispatched again (its replica died before answering) keeps its
    first start and takes the pid it ran on last.
    """
    calls: dict[int, CallSpan] = {}
    for e in events:
        cid = e.call_id
        if cid is None:
            continue
        c = calls.get(cid)
        if e.kind == "call_started":
            if c is None:
                calls[cid] = CallSpan(
                    call_id=cid,
                    parent=e.parent,
                    target=e.target or e.agent or "call",
                    start=e.time,
                    agent=e.agent,
                    pid=e.pid,
                    summary=e.summary,
                    task=e.task,
                )
            elif e.pid is not None:
                c.pid = e.pid
        elif e.kind == "call_finished" and c is not None:
            c.end = max(e.time, c.start)
            c.status = e.status
            c.reason = e.reason
            c.pid = e.pid if e.pid is not None else c.pid
    for c in calls.values():
        up = calls.get(c.parent) if c.parent is not None else None
        if up is not None and up is not c:
            up.children.append(c)
    for c in calls.values():
        c.children.sort(key=lambda k: (k.start, k.call_id))
    return calls


def assign_lanes(spans: Sequence[tuple[float, float]]) -> list[int]:
    """The lane (0, 1, ...) of each ``(start, end)`` span.

    Greedy interval partitioning: in order of start, each span takes the
    lowest lane whose last span has ended by its start.  Spans that overlap
    never share a lane; a span that starts when another ends may reuse its
    lane; the number of lanes is the most spans running at once.
    """
    order = sorted(range(len(spans)), key=lambda i: (spans[i][0], -spans[i][1], i))
    ends: list[float] = []  # lane -> when its last span ends
    out = [0] * len(spans)
    for i in order:
        start, end = spans[i]
        lane = next((k for k, e in enumerate(ends) if e <= start), len(ends))
        if lane == len(ends):
            ends.append(end)
        else:
            ends[lane] = end
        out[i] = lane
    return out


@dataclass(eq=False, slots=True)
class Lane:
    """A row of calls: ``path`` (1,) is the first lane under a task's row,
    (1, 2) the second lane of the calls made by the calls of lane (1,)."""

    path: tuple[int, ...]
    calls: list[CallSpan]

    @property
    def label(self) -> str:
        return ".".join(map(str, self.path))


def lay_out_lanes(
    roots: Sequence[CallSpan], end: float, prefix: tuple[int, ...] = ()
) -> list[Lane]:
    """The lanes of ``roots`` and, beneath each lane, the lanes of the calls they
    made, depth first (the order the rows are drawn in).  ``end``: when calls
    that never finished are taken to end."""
    if not roots:
        return []
    lanes = assign_lanes([(c.start, c.until(end)) for c in roots])
    rows: list[list[CallSpan]] = [[] for _ in range(max(lanes) + 1)]
    for c, k in zip(roots, lanes, strict=True):
        rows[k].append(c)
    out: list[Lane] = []
    for k, calls in enumerate(rows):
        calls.sort(key=lambda c: (c.start, c.call_id))
        path = (*prefix, k + 1)
        out.append(Lane(path, calls))
        out.extend(lay_out_lanes([ch for c in calls for ch in c.children], end, path))
    return out


@dataclass(frozen=True, slots=True)
class _TaskRun:
    """When and where a task ran, as far as the trace knows."""

    id: str
    agent: str
    pid: int | None
    start: float
    end: float
    #: it ran one call (it was never retried): the calls of no other call are its
    single: bool

    def holds(self, t: float) -> bool:
        return self.start - _SLACK <= t <= self.end + _SLACK


def _task_runs(evs: list[RunEvent], result: RunResult | None, end: float) -> dict[str, _TaskRun]:
    """The tasks that ran a call (a fan-out's parent runs none of its own)."""
    seen: dict[str, dict[str, Any]] = {}
    retried: set[str] = set()
    for e in evs:
        if e.task is None:
            continue
        if e.kind == "task_retry":
            retried.add(e.task)
        if e.kind not in ("task_started", "task_finished"):
            continue
        t = seen.setdefault(e.task, {"agent": e.agent})
        if e.kind == "task_started":
            t.setdefault("start", e.time)
        else:
            t.update(end=e.time, pid=e.pid, agent=e.agent or t["agent"])
    if result is not None:
        for r in result.tasks.values():
            if r.pid is None and r.id not in seen:
                continue
            t = seen.setdefault(r.id, {})
            t.update(agent=r.agent, pid=r.pid if r.pid is not None else t.get("pid"))
            if r.started_at is not None:
                t["start"] = min(t.get("start", r.started_at), r.started_at)
            if r.finished_at is not None:
                t["end"] = r.finished_at
    return {
        tid: _TaskRun(
            tid,
            t.get("agent") or "",
            t.get("pid"),
            t["start"],
            t.get("end", end),
            tid not in retried,
        )
        for tid, t in seen.items()
        if "start" in t
    }


def _candidates(
    groups: dict[int | None, list[CallSpan]], tasks: dict[str, _TaskRun]
) -> dict[int | None, list[_TaskRun]]:
    """The tasks that may have made each group of calls (the calls one call made):
    the task their events name, else those running when each of them started,
    on the replica an in-process tool call among them ran on (its caller's)
    when one did.  One sweep in time: a task is looked at while it runs."""
    by_start = sorted(tasks.values(), key=lambda t: t.start)
    first = {key: min(c.start for c in group) for key, group in groups.items()}
    running: list[tuple[float, int, _TaskRun]] = []  # a heap, by end
    out: dict[int | None, list[_TaskRun]] = {}
    i = 0
    for key in sorted(groups, key=first.__getitem__):
        group = groups[key]
        named = [tasks[c.task] for c in group if c.task in tasks]
        while i < len(by_start) and by_start[i].start - _SLACK <= first[key]:
            heapq.heappush(running, (by_start[i].end, i, by_start[i]))
            i += 1
        while running and running[0][0] + _SLACK < first[key]:
            heapq.heappop(running)
        if named:
            out[key] = named[:1]
            continue
        last = max(c.start for c in group)
        cands = [t for _, _, t in running if t.holds(last)]
        local = _local(group)
        if local is not None:
            here = [t for t in cands if t.pid == local.pid and t.agent == local.agent]
            cands = here or cands
        out[key] = cands
    return out


def _local(group: list[CallSpan]) -> CallSpan | None:
    """An in-process tool call of ``group``: it ran on the replica of its caller."""
    return next((c for c in group if c.in_process and c.pid is not None), None)


def _place_calls(
    calls: dict[int, CallSpan], tasks: dict[str, _TaskRun]
) -> dict[tuple[str, int | None], list[CallSpan]]:
    """The calls a task made directly, by the row they go under: ``(agent, replica
    pid)`` of their task (of their caller, when only that is known), or
    ``(UNKNOWN_CALLER, None)``.  Each call gets its task's id in ``task``.

    Calls are grouped by the call that made them (a task's call).  A group
    whose candidates come down to one task is that task's; a task that ran
    one call only, once it is known to be some group's, is no other group's
    candidate any more, which may settle more groups, and so on.
    """
    groups: dict[int | None, list[CallSpan]] = {}
    for c in calls.values():
        if c.parent is None or c.parent not in calls or calls[c.parent] is c:
            groups.setdefault(c.parent, []).append(c)
    cands = _candidates(groups, tasks)
    groups_of: dict[str, list[int | None]] = {}  # a task -> the groups it may have made
    for key, cs in cands.items():
        for t in cs:
            groups_of.setdefault(t.id, []).append(key)
    chosen: dict[int | None, _TaskRun] = {}
    owner: dict[str, int | None] = {}  # a task -> the first group found to be its
    pending = deque(cands)
    while pending:
        key = pending.popleft()
        if key in chosen:
            continue
        left = [t for t in cands[key] if not (t.single and owner.get(t.id, key) != key)]
        if len(left) != 1:
            continue
        task = chosen[key] = left[0]
        if task.id not in owner:
            owner[task.id] = key
            if task.single:  # the others it might have been: look at them again
                pending.extend(k for k in groups_of[task.id] if k not in chosen)
    rows: dict[tuple[str, int | None], list[CallSpan]] = {}
    for key, group in groups.items():
        found, local = chosen.get(key), _local(group)
        if found is not None:
            row = (found.agent, local.pid if local is not None else found.pid)
            _mark(group, found.id)
        elif local is not None and local.agent:
            row = (local.agent, local.pid)
        else:
            row = (UNKNOWN_CALLER, None)
        rows.setdefault(row, []).extend(group)
    return rows


def _mark(calls: list[CallSpan], task: str) -> None:
    stack = list(calls)
    while stack:
        c = stack.pop()
        if c.task is None or c.task == task:
            c.task = task
            stack.extend(c.children)


# --- the trace document ------------------------------------------------------------------


def build_trace(
    events: Iterable[RunEvent],
    result: RunResult | None = None,
    *,
    origin: float | None = None,
) -> dict[str, Any]:
    """The Chrome Trace Event document of a run (``result``) and its events."""
    evs = list(events)
    times = [e.time for e in evs]
    if result is not None:
        times.append(result.started_at)
    if origin is None:
        origin = min(times) if times else time.time()
    end = max([*times, result.finished_at if result is not None else origin])

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
            if agent == UNKNOWN_CALLER and t == NO_REPLICA_TID:
                threads[(p, t)] = "caller not known"
            elif t == NO_REPLICA_TID:
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

    for e in evs:
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

    calls = collect_calls(evs)
    lanes_of: dict[tuple[int, int], list[tuple[int, Lane]]] = {}
    next_lane: dict[int, int] = {}
    for (agent, pid), roots in _place_calls(calls, _task_runs(evs, result, end)).items():
        row = thread(agent, pid)
        p = row[0]
        for lane in lay_out_lanes(roots, end):
            n = next_lane[p] = next_lane.get(p, -1) + 1
            t = LANE_TID_BASE + n
            lanes_of.setdefault(row, []).append((t, lane))
            out.extend(_call_span(c, lane, p, t, origin, end) for c in lane.calls)

    meta: list[dict[str, Any]] = []
    for agent, p in agent_pids.items():
        meta.append(
            {"name": "process_name", "ph": "M", "pid": p, "tid": 0, "args": {"name": agent}}
        )
        meta.append(
            {"name": "process_sort_index", "ph": "M", "pid": p, "tid": 0, "args": {"sort_index": p}}
        )
    lanes_doc: list[dict[str, Any]] = []
    order = 0
    for p, t in sorted(threads):
        meta.append(_meta("thread_name", p, t, name=threads[(p, t)]))
        meta.append(_meta("thread_sort_index", p, t, sort_index=order))
        order += 1
        for lt, lane in lanes_of.get((p, t), []):
            meta.append(_meta("thread_name", p, lt, name=f"{threads[(p, t)]} lane {lane.label}"))
            meta.append(_meta("thread_sort_index", p, lt, sort_index=order))
            order += 1
            lanes_doc.append({"pid": p, "tid": lt, "row": t, "lane": lane.label})

    other: dict[str, Any] = {"origin": origin, "agents": dict(agent_pids), "lanes": lanes_doc}
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


def _meta(kind: str, pid: int, tid: int, **args: Any) -> dict[str, Any]:
    return {"name": kind, "ph": "M", "pid": pid, "tid": tid, "args": args}


def _call_span(
    c: CallSpan, lane: Lane, pid: int, tid: int, origin: float, end: float
) -> dict[str, Any]:
    """A call's complete event on its lane."""
    start = _us(c.start, origin)
    return {
        "name": c.name,
        "cat": "call",
        "ph": "X",
        "ts": start,
        "dur": max(_us(c.until(end), origin) - start, 0.0),
        "pid": pid,
        "tid": tid,
        "args": {
            "call_id": c.call_id,
            "parent": c.parent,
            "target": c.target,
            "kind": c.kind,
            "in_process": c.in_process,
            "summary": c.summary,
            "status": c.status if c.end is not None else "running",
            "reason": c.reason,
            "task": c.task,
            "agent": c.agent,
            "pid": c.pid,
            "lane": lane.label,
        },
    }


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
    """A Gantt chart of the trace: a row per replica with its tasks, the critical
    path outlined, and beneath each row the lanes of its calls (thinner bars,
    coloured by outcome), so calls that ran at once are seen side by side.

    The image is ``width`` x ``height`` pixels (height grows with the rows when
    not given).  A trace without lanes (written before calls had them) draws
    as it always did.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    doc = trace if isinstance(trace, dict) else load_trace(trace)
    events: list[dict[str, Any]] = doc["traceEvents"]
    other: dict[str, Any] = doc.get("otherData") or {}
    critical = set(other.get("critical_path") or [])
    lanes = {(ln["pid"], ln["tid"]): str(ln["lane"]) for ln in other.get("lanes") or []}
    proc_names = {e["pid"]: e["args"]["name"] for e in events if e.get("name") == "process_name"}
    thread_names = {
        (e["pid"], e["tid"]): e["args"]["name"] for e in events if e.get("name") == "thread_name"
    }
    sort_index = {
        (e["pid"], e["tid"]): e["args"]["sort_index"]
        for e in events
        if e.get("name") == "thread_sort_index"
    }
    spans = [e for e in events if e.get("ph") == "X"]
    instants = [e for e in events if e.get("ph") == "i" and e.get("cat") == "replica"]

    def order(r: tuple[int, int]) -> tuple[int, int, int]:
        return (r[0], 0, sort_index[r]) if r in sort_index else (r[0], 1, r[1])

    rows = sorted({(e["pid"], e["tid"]) for e in spans + instants}, key=order)
    index = {r: i for i, r in enumerate(rows)}
    if height is None:
        height = max(300, 140 + 30 * len(rows))
    dpi = 100
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    ax = fig.add_subplot()
    for e in spans:
        row = (e["pid"], e["tid"])
        y = index[row]
        status = (e.get("args") or {}).get("status", "ok")
        on_path = e.get("cat") == "task" and e.get("name") in critical
        call = row in lanes
        ax.barh(
            y,
            e["dur"] / 1000,
            left=e["ts"] / 1000,
            height=0.4 if call else 0.6,
            color=_STATUS_COLOURS.get(status, "#72b7b2"),
            alpha=0.8 if call else 1.0,
            edgecolor=_CRITICAL if on_path else "white" if call else "none",
            linewidth=2.5 if on_path else 0.5 if call else 0,
        )
    for e in instants:
        y = index[(e["pid"], e["tid"])]
        marker = "x" if e["name"].startswith("replica_crashed") else "|"
        ax.plot([e["ts"] / 1000], [y], marker=marker, color="black", markersize=8)

    def label(r: tuple[int, int]) -> str:
        if r in lanes:
            return f"lane {lanes[r]}"
        return str(thread_names.get(r, f"{proc_names.get(r[0], r[0])} {r[1]}"))

    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([label(r) for r in rows], fontsize=8)
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
    # names go on the bars they fit in, once the layout fixed the bars' widths
    x0, x1 = ax.get_xlim()
    px_per_ms = ax.get_position().width * width / max(x1 - x0, 1e-9)
    for e in spans:
        size = 6 if (e["pid"], e["tid"]) in lanes else 7
        name = str(e.get("name", ""))
        if e["dur"] / 1000 * px_per_ms < len(name) * size * 0.6 * dpi / 72 + 4:
            continue
        ax.text(
            (e["ts"] + e["dur"] / 2) / 1000,
            index[(e["pid"], e["tid"])],
            name,
            ha="center",
            va="center",
            fontsize=size,
            clip_on=True,
        )
    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, format="png", dpi=dpi)
    return p
