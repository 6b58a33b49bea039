"""A live terminal view of a supervisor (rich): agents, replicas, progress, recent events.

The view never slows the runtime down: it takes a status snapshot on its own
schedule (``sup.status()`` runs psutil in a thread), events only update a
few counters on the loop, and the drawing is done by rich's refresh thread
from a snapshot taken under a lock.  Logs printed through :func:`console_stream`
appear above the live region instead of garbling it.

An agent's row shows its replicas' states and, where it keeps one, its
standby's (``+standby ready``, from ``sup.standbys()`` sampled with the
status); beside its running task, the subagent and tool calls in flight
for its tasks (nested ones too), from ``call_started`` /
``call_finished``: each target with how long its oldest call has run, a
count when it has several (``tool:search x3 1.2s``).  A call goes to the
task its event names; else to the agent of its caller, when an in-process
tool call of the same caller told it, or when only one agent runs tasks;
else to a line of calls whose caller is not known.

Calls waiting for approval are listed in a panel of their own, oldest first,
from ``sup.approvals()`` sampled with the status (so a view attached late
shows them too).  With ``interactive=True`` (stdin is a terminal) the view
reads keys, in cbreak mode, on the loop: arrows (or ``j``/``k``) select a
request, ``a`` approves it, ``d`` denies it, ``p`` pauses the run or resumes
it; the audit log names the live view as who did it.  :class:`Keys` turns
the bytes read into those actions; the terminal's settings are restored
when the view is detached, whatever ends it.

Usage::

    view = LiveView(console)
    ... feed view.on_event(ev) from sup.events() ...
    async with view.attached(sup, interactive=sys.stdin.isatty()):
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import structlog
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from agentrt.protocol import summarize
from agentrt.supervisor import Who

if TYPE_CHECKING:
    from agentrt.supervisor import ReplicaStatus, RunEvent, StandbyStatus, Supervisor

__all__ = ["Action", "ConsoleStream", "Controls", "Keys", "LiveView", "console_stream"]

_STATE_STYLE = {
    "ready": "green",
    "busy": "green",
    "starting": "yellow",
    "backoff": "yellow",
    "crashed": "bold red",
    "failed": "bold red",
    "exited": "dim",
    "stopping": "dim",
    "paused": "magenta",
}
_NOTABLE_STATUS = {"failed", "timeout", "crashed", "limit", "cancelled"}
#: call targets shown on a row before "+N" counts the rest
_SHOWN_TARGETS = 2
#: pending approvals shown before "+N more" counts the rest
_SHOWN_APPROVALS = 8
_DENY_REASON = "denied from the live view"
_APPROVE_REASON = "approved from the live view"
_FOOTER = "keys: \u2191/\u2193 select  a approve  d deny  p pause/resume  Ctrl-C stop the run"


@dataclass(slots=True)
class _Call:
    """A subagent or tool call in flight."""

    label: str  # tool:search, agent:research
    start: float
    #: the call its tree grew from: a task's call (not itself an event's)
    root: int | None
    task: str | None


def _calls_text(calls: list[tuple[str, float]], now: float) -> str:
    """``(label, start)`` of calls in flight, by target, oldest first:
    ``tool:search x3 1.2s, agent:research 0.4s +2``."""
    by_target: dict[str, list[float]] = {}
    for label, start in sorted(calls, key=lambda c: c[1]):
        by_target.setdefault(label, []).append(start)
    parts = [
        f"{label}{f' x{len(starts)}' if len(starts) > 1 else ''} {max(now - starts[0], 0.0):.1f}s"
        for label, starts in list(by_target.items())[:_SHOWN_TARGETS]
    ]
    rest = sum(len(s) for s in list(by_target.values())[_SHOWN_TARGETS:])
    return ", ".join(parts) + (f" +{rest}" if rest else "")


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}GiB"  # pragma: no cover


def _duration(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def _args_text(args: Any, width: int = 60) -> str:
    """A call's arguments shown short: ``query='who', n=3``."""
    return summarize(args, width)


# --- keys ------------------------------------------------------------------------

#: what a key asks the view to do
Action = Literal["up", "down", "approve", "deny", "pause"]

_KEY_ACTIONS: dict[int, Action] = {
    ord("k"): "up",
    ord("j"): "down",
    ord("a"): "approve",
    ord("d"): "deny",
    ord("p"): "pause",
}
#: the final byte of an arrow key's sequence (``ESC [ A``, ``ESC O A``)
_ARROWS: dict[int, Action] = {ord("A"): "up", ord("B"): "down"}
_ESC = 0x1B
#: an unfinished escape sequence longer than this is no key: dropped
_MAX_ESCAPE = 16


def _escape_end(buf: bytes, i: int) -> int | None:
    """Where the escape sequence starting at ``buf[i]`` (an ESC) ends, or None
    while it is unfinished.  CSI (``ESC [`` parameters, a final byte), SS3
    (``ESC O`` and one byte), else ESC and one key (Alt+key)."""
    if i + 1 >= len(buf):
        return None
    kind = buf[i + 1]
    if kind == ord("["):
        j = i + 2
        while j < len(buf) and 0x20 <= buf[j] <= 0x3F:  # parameters, intermediates
            j += 1
        return j + 1 if j < len(buf) else None
    if kind == ord("O"):
        return i + 3 if i + 2 < len(buf) else None
    return i + 2


class Keys:
    """Bytes typed on the terminal, to the view's actions (:data:`Action`).

    ``a`` approve, ``d`` deny, ``p`` pause or resume, ``\u2191``/``k`` up,
    ``\u2193``/``j`` down.  Arrow keys arrive as escape sequences (``ESC [ A``,
    or ``ESC O A`` in the terminal's application mode) that a read may split
    anywhere: an unfinished one waits for the next :meth:`feed`.  Any other
    key or sequence (Alt+key, function keys, a lone ESC followed by a key)
    is ignored.
    """

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[Action]:
        """The actions ``data`` completes, in order."""
        buf = self._pending + data
        self._pending = b""
        out: list[Action] = []
        i = 0
        while i < len(buf):
            byte = buf[i]
            if byte != _ESC:
                action = _KEY_ACTIONS.get(byte)
                if action is not None:
                    out.append(action)
                i += 1
                continue
            end = _escape_end(buf, i)
            if end is None:
                if len(buf) - i <= _MAX_ESCAPE:
                    self._pending = buf[i:]  # the rest comes with the next read
                break
            if end - i == 3 and buf[i + 1] in b"[O" and buf[i + 2] in _ARROWS:
                out.append(_ARROWS[buf[i + 2]])
            i = end
        return out


class _Pending(Protocol):
    """A call waiting for approval, as the view reads it (the supervisor's
    ``PendingApproval``)."""

    @property
    def id(self) -> str: ...
    @property
    def agent(self) -> str: ...
    @property
    def tool(self) -> str | None: ...
    @property
    def task(self) -> str | None: ...
    @property
    def args(self) -> dict[str, Any]: ...
    @property
    def why(self) -> str: ...
    @property
    def requested_at(self) -> float: ...
    @property
    def waited(self) -> float: ...


class Controls(Protocol):
    """What the view's keys use of a :class:`~agentrt.supervisor.Supervisor`."""

    def approvals(self) -> Sequence[_Pending]: ...
    def paused(self) -> list[str]: ...
    def approve(self, approval: str, *, reason: str = ..., by: Any = ...) -> object: ...
    def deny(self, approval: str, *, reason: str = ..., by: Any = ...) -> object: ...
    def pause(self, target: str = ..., *, by: Any = ...) -> Awaitable[object]: ...
    def resume(self, target: str = ..., *, by: Any = ...) -> Awaitable[object]: ...


def _approvals_panel(approvals: list[_Pending], row: int, now: float) -> list[RenderableType]:
    """The pending approvals, oldest first; ``row`` (the selected one) marked
    and highlighted, and kept in sight when more than fit are pending."""
    first = max(0, row - _SHOWN_APPROVALS + 1)
    shown = approvals[first : first + _SHOWN_APPROVALS]
    table = Table(expand=False, header_style="bold", box=None, pad_edge=False)
    table.add_column("", no_wrap=True)
    for col, width in (
        ("id", None),
        ("task", None),
        ("agent", None),
        ("tool", None),
        ("args", 50),
        ("why", 40),
        ("waited", None),
    ):
        table.add_column(
            col,
            justify="right" if col == "waited" else "left",
            no_wrap=True,
            overflow="ellipsis",
            max_width=width,
        )
    for i, p in enumerate(shown, start=first):
        waited = now - p.requested_at if p.requested_at else p.waited
        table.add_row(
            ">" if i == row else "",
            p.id,
            p.task or "-",
            p.agent,
            p.tool or "-",
            _args_text(p.args),
            p.why,
            _duration(waited),
            style="reverse" if i == row else None,
        )
    parts: list[RenderableType] = [Text("pending approvals", style="bold yellow"), table]
    hidden = len(approvals) - len(shown)
    if hidden:
        parts.append(Text(f"  +{hidden} more", style="dim"))
    return parts


class ConsoleStream:
    """A text stream whose complete lines are printed through a rich console.

    While a :class:`rich.live.Live` runs on that console, each line goes above
    the live region.  ANSI colour codes (structlog's console renderer) are kept.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self._buf = ""
        self._lock = threading.Lock()

    def write(self, s: str) -> int:
        with self._lock:
            self._buf += s
            if "\n" not in self._buf:
                return len(s)
            *lines, self._buf = self._buf.split("\n")
        for line in lines:
            self.console.print(Text.from_ansi(line), soft_wrap=True, highlight=False)
        return len(s)

    def flush(self) -> None:
        with self._lock:
            line, self._buf = self._buf, ""
        if line:
            self.console.print(Text.from_ansi(line), soft_wrap=True, highlight=False)

    def isatty(self) -> bool:
        return self.console.is_terminal


def console_stream(console: Console) -> ConsoleStream:
    """A stream for :func:`agentrt.observe.configure_logging` that keeps a live view intact."""
    return ConsoleStream(console)


class LiveView:
    """The state behind the live view and its rendering (:meth:`render`)."""

    def __init__(
        self,
        console: Console | None = None,
        *,
        total: int = 0,
        hz: float = 4.0,
        max_events: int = 8,
        clock: Any = time.time,
    ) -> None:
        self.console = console or Console(stderr=True)
        self.hz = hz
        self.clock = clock
        self._lock = threading.Lock()
        self.statuses: list[ReplicaStatus] = []
        self.standbys: dict[str, StandbyStatus] = {}  # agent -> its standby
        self.total = total
        self.finished: set[str] = set()
        self.failed: set[str] = set()
        self.skipped: set[str] = set()
        self.retries = 0
        self.running: dict[str, dict[str, float]] = {}  # agent -> {task: started}
        self.calls: dict[int, _Call] = {}  # call id -> a call in flight
        self.callers: dict[int, str] = {}  # a task's call id -> its agent, once known
        self.recent: deque[tuple[float, str, str]] = deque(maxlen=max_events)
        self.run_status: str | None = None
        self.approvals: list[_Pending] = []  # oldest first
        self.paused: list[str] = []  # "run", agent names, "agent#N"
        #: the selected request: its id, and its row (kept when it is decided)
        self.selected: str | None = None
        self._row = 0
        #: keys are read (a terminal): the footer shows them
        self.interactive = False
        self.keys = Keys()
        #: a pause or resume asked for by a key, running
        self.toggle: asyncio.Task[None] | None = None
        self._who: Who | None = None
        self._log = structlog.get_logger("agentrt.live")

    # --- inputs (loop thread) --------------------------------------------------

    def set_status(self, statuses: Iterable[ReplicaStatus]) -> None:
        snap = list(statuses)
        with self._lock:
            self.statuses = snap

    def set_standbys(self, standbys: Iterable[StandbyStatus]) -> None:
        """The agents' standbys (those that have one)."""
        snap = {st.agent: st for st in standbys}
        with self._lock:
            self.standbys = snap

    def set_control(self, approvals: Iterable[_Pending], paused: Iterable[str]) -> None:
        """The requests waiting for approval (oldest first) and what is paused."""
        pending, held = list(approvals), list(paused)
        with self._lock:
            self.approvals = pending
            self.paused = held
            self._reselect()

    def on_event(self, ev: RunEvent) -> None:
        with self._lock:
            self._apply(ev)

    def _note(self, ev: RunEvent, style: str, text: str) -> None:
        self.recent.append((ev.time, style, text))

    def _reselect(self) -> None:
        """Keep the selection on its request; when that one is gone, on the row
        it was at (the next one down), or on the last."""
        ids = [p.id for p in self.approvals]
        if self.selected in ids:
            self._row = ids.index(self.selected)
        elif ids:
            self._row = min(self._row, len(ids) - 1)
            self.selected = ids[self._row]
        else:
            self._row, self.selected = 0, None

    def _move(self, step: int) -> None:
        if self.approvals:
            self._row = min(max(self._row + step, 0), len(self.approvals) - 1)
            self.selected = self.approvals[self._row].id

    def _apply(self, ev: RunEvent) -> None:
        k = ev.kind
        if k == "run_started":
            self.total = max(self.total, ev.tasks or 0)
        elif k in ("fanout",):
            self.total += ev.items or 0
        elif k == "task_added":
            self.total += 1
        elif k == "task_started" and ev.task is not None:
            self.running.setdefault(ev.agent or "?", {})[ev.task] = ev.time
        elif k == "task_finished" and ev.task is not None:
            self.finished.add(ev.task)
            for agent, tasks in self.running.items():
                if tasks.pop(ev.task, None) is not None and not tasks:
                    # its calls are over: who made them need not be remembered
                    self.callers = {c: a for c, a in self.callers.items() if a != agent}
            if ev.status != "ok":
                self.failed.add(ev.task)
                self._note(ev, "red", f"task {ev.task} {ev.status} ({ev.agent}, pid {ev.pid})")
        elif k == "task_skipped" and ev.task is not None:
            self.skipped.add(ev.task)
            self._note(ev, "yellow", f"task {ev.task} skipped: {ev.reason}")
        elif k == "task_retry":
            self.retries += 1
            self._note(ev, "yellow", f"task {ev.task} retry {ev.attempt} after {ev.status}")
        elif k == "replica_crashed":
            what = "limit hit" if ev.status == "limit" else "crashed"
            self._note(
                ev, "bold red", f"{ev.agent}#{ev.replica} pid {ev.pid} {what}: {ev.reason or ''}"
            )
        elif k == "replica_restarting":
            self._note(ev, "cyan", f"{ev.agent}#{ev.replica} restarting")
        elif k == "run_finished":
            self.run_status = ev.status
            self.calls.clear()  # any still here lost their end (a reader that fell behind)
            self._note(ev, "bold", f"run finished: {ev.status}")
        elif k == "call_started" and ev.call_id is not None:
            self._call_started(ev, ev.call_id)
        elif k == "call_finished" and ev.call_id is not None:
            self.calls.pop(ev.call_id, None)
        elif k == "approval_requested":
            what = f"task {ev.task}" if ev.task else (ev.target or ev.agent or "a call")
            self._note(ev, "yellow", f"approval {ev.approval} requested: {what} ({ev.reason})")
        elif k == "approval_decided":
            # gone from the panel now, not at the next sample
            self.approvals = [p for p in self.approvals if p.id != ev.approval]
            self._reselect()
            style = {"approved": "green", "denied": "red", "timeout": "red"}.get(ev.status or "")
            why = f": {ev.reason}" if ev.reason else ""
            self._note(ev, style or "dim", f"approval {ev.approval} {ev.status}{why}")

    def _call_started(self, ev: RunEvent, cid: int) -> None:
        if cid in self.calls:
            return  # dispatched again (its replica died): it has been in flight since
        up = self.calls.get(ev.parent) if ev.parent is not None else None
        root = up.root if up is not None else ev.parent
        if cid < 0 and up is None and root is not None and ev.agent:
            # an in-process tool call runs in its caller: a task of this agent
            self.callers[root] = ev.agent
        target = ev.target or ev.agent or "call"
        self.calls[cid] = _Call(
            target if target.startswith(("tool:", "model:")) else f"agent:{target}",
            ev.time,
            root,
            ev.task or (up.task if up is not None else None),
        )

    def _owner(self, call: _Call) -> str | None:
        """The agent whose task made ``call`` (directly or not), if it can be told."""
        if call.task is not None:
            for agent, tasks in self.running.items():
                if call.task in tasks:
                    return agent
        if call.root is not None and call.root in self.callers:
            return self.callers[call.root]
        busy = [agent for agent, tasks in self.running.items() if tasks]
        return busy[0] if len(busy) == 1 else None

    # --- output (any thread) -----------------------------------------------------

    def render(self) -> RenderableType:
        with self._lock:
            statuses = list(self.statuses)
            standbys = dict(self.standbys)
            running = {a: dict(t) for a, t in self.running.items()}
            total = self.total
            done = len(self.finished | self.skipped)
            failed = len(self.failed)
            skipped = len(self.skipped)
            retries = self.retries
            recent = list(self.recent)
            run_status = self.run_status
            calls: dict[str | None, list[tuple[str, float]]] = {}
            for c in self.calls.values():
                calls.setdefault(self._owner(c), []).append((c.label, c.start))
            approvals = list(self.approvals)
            row = self._row if self.selected is not None else -1
            run_paused = "run" in self.paused
            interactive = self.interactive
        now = self.clock()

        table = Table(expand=False, header_style="bold", box=None, pad_edge=False)
        for col, just in (
            ("agent", "left"),
            ("replicas", "right"),
            ("state", "left"),
            ("pid(s)", "left"),
            ("CPU %", "right"),
            ("RSS", "right"),
            ("restarts", "right"),
            ("task", "left"),
            ("elapsed", "right"),
            ("calls", "left"),
        ):
            table.add_column(col, justify=just, no_wrap=True)  # type: ignore[arg-type]
        agents: dict[str, list[ReplicaStatus]] = {}
        for s in statuses:
            agents.setdefault(s.agent, []).append(s)
        for name in running:
            agents.setdefault(name, [])
        for owner in calls:
            if owner is not None:
                agents.setdefault(owner, [])
        for name, reps in agents.items():
            states: dict[str, int] = {}
            for s in reps:
                states[s.state] = states.get(s.state, 0) + 1
            state = Text()
            for i, (st, n) in enumerate(sorted(states.items())):
                if i:
                    state.append(" ")
                state.append(f"{st}" + (f" x{n}" if n > 1 else ""), _STATE_STYLE.get(st, ""))
            standby = standbys.get(name)
            if standby is not None:
                state.append(" +standby ", "dim")
                state.append(standby.state, _STATE_STYLE.get(standby.state, ""))
            pids = [str(s.pid) for s in reps if s.pid is not None]
            pid_text = ",".join(pids[:4]) + (f",+{len(pids) - 4}" if len(pids) > 4 else "")
            cpus = [s.cpu_percent for s in reps if s.cpu_percent is not None]
            rss = [s.rss for s in reps if s.rss is not None]
            alive = sum(1 for s in reps if s.pid is not None)
            tasks = running.get(name, {})
            task_text, elapsed = "-", "-"
            if tasks:
                first, since = min(tasks.items(), key=lambda kv: kv[1])
                task_text = first + (f" +{len(tasks) - 1}" if len(tasks) > 1 else "")
                elapsed = f"{max(now - since, 0.0):.1f}s"
            table.add_row(
                name,
                f"{alive}/{len(reps)}",
                state,
                pid_text or "-",
                f"{sum(cpus):.0f}" if cpus else "-",
                _size(sum(rss)) if rss else "-",
                str(sum(s.restarts for s in reps)),
                task_text,
                elapsed,
                _calls_text(calls[name], now) if name in calls else "-",
            )

        in_flight = sum(map(len, calls.values()))
        line = Text(
            f"{done}/{total} done, {failed} failed, {skipped} skipped, {retries} retries"
            + (f", {in_flight} call{'s' * (in_flight > 1)} in flight" if in_flight else "")
            + (f", {len(approvals)} awaiting approval" if approvals else "")
            + (f" - run {run_status}" if run_status else ""),
            style="red" if failed else "",
        )
        if run_paused and not run_status:
            line.append(" - run paused", style="bold magenta")
        progress = Table.grid(padding=(0, 1))
        progress.add_row(
            Text("tasks", style="bold"),
            ProgressBar(total=max(total, 1), completed=done, width=30),
            line,
        )
        parts: list[RenderableType] = [table]
        if None in calls:
            parts.append(
                Text(f"calls, caller not known: {_calls_text(calls[None], now)}", style="dim")
            )
        parts.append(progress)
        if approvals:
            parts.extend(_approvals_panel(approvals, row, now))
        if recent:
            parts.append(Text("recent events", style="bold"))
            for t, style, text in recent:
                stamp = time.strftime("%H:%M:%S", time.localtime(t))
                parts.append(Text(f"  {stamp} {text}", style=style, overflow="ellipsis"))
        if interactive:
            parts.append(Text(_FOOTER, style="dim"))
        return Group(*parts)

    # --- keys (loop thread) ----------------------------------------------------------

    def keypress(self, data: bytes, sup: Controls) -> None:
        """Act on the keys in ``data`` (bytes read from the terminal)."""
        for action in self.keys.feed(data):
            self.act(action, sup)

    def act(self, action: Action, sup: Controls) -> None:
        """Do what a key asks: move the selection, approve or deny the selected
        request, pause or resume the run (a task: :attr:`toggle`).  A failure
        (the request was decided meanwhile) becomes a note, never an error."""
        if action in ("up", "down"):
            with self._lock:
                self._move(-1 if action == "up" else 1)
            return
        if action == "pause":
            self._toggle_pause(sup)
            return
        with self._lock:
            rid = self.selected
        if rid is None:
            self._say("yellow", f"nothing to {action}: no approval is pending")
            return
        try:
            if action == "approve":
                sup.approve(rid, reason=_APPROVE_REASON, by=self._by(sup))
            else:
                sup.deny(rid, reason=_DENY_REASON, by=self._by(sup))
        except Exception as exc:  # ControlError: decided, timed out or withdrawn meanwhile
            self._say("red", f"{action} {rid} failed: {exc}")
            return
        with self._lock:
            self.approvals = [p for p in self.approvals if p.id != rid]
            self._reselect()

    def _toggle_pause(self, sup: Controls) -> None:
        if self.toggle is not None and not self.toggle.done():
            self._say("yellow", "a pause or resume is still under way")
            return
        resume = "run" in sup.paused()
        step = sup.resume(by=self._by(sup)) if resume else sup.pause(by=self._by(sup))
        self.toggle = asyncio.get_running_loop().create_task(self._pause_step(step, resume, sup))

    async def _pause_step(self, step: Awaitable[object], resume: bool, sup: Controls) -> None:
        what = "resume" if resume else "pause"
        try:
            await step
        except Exception as exc:  # the supervisor closing, a replica that would not freeze
            self._log.error("live_pause_failed", action=what, error=f"{type(exc).__name__}: {exc}")
            self._say("red", f"{what} failed: {exc}")
            return
        self._say("magenta", "run resumed" if resume else "run paused")
        with self._lock:
            self.paused = sup.paused()

    def _say(self, style: str, text: str) -> None:
        with self._lock:
            self.recent.append((self.clock(), style, text))

    def _by(self, sup: Controls) -> Who:
        if self._who is None:
            self._who = Who(via="live", uid=os.getuid(), pid=os.getpid())
        return self._who

    async def settled(self) -> None:
        """Wait for the pause or resume a key started, if one is running."""
        if self.toggle is not None:
            await asyncio.wait([self.toggle])  # its failure is a note already

    # --- running ------------------------------------------------------------------

    async def _sample(self, sup: Supervisor) -> None:
        period = 1.0 / self.hz
        while True:
            await self._sample_once(sup)
            await asyncio.sleep(period)

    async def _sample_once(self, sup: Supervisor) -> None:
        with contextlib.suppress(Exception):
            self.set_status(await sup.status())
        with contextlib.suppress(Exception):
            self.set_standbys(sup.standbys())
        with contextlib.suppress(Exception):
            self.set_control(sup.approvals(), sup.paused())

    @contextlib.asynccontextmanager
    async def attached(
        self, sup: Supervisor, *, interactive: bool = False
    ) -> AsyncIterator[LiveView]:
        """Show the view while the block runs; status sampled ``hz`` times a second.

        Rich's refresh thread draws it; the loop only feeds state in.  With
        ``interactive`` (stdin is a terminal), keys are read from stdin in
        cbreak mode by a reader on the loop; the terminal's settings are
        restored on the way out.
        """
        live = Live(
            get_renderable=self.render,
            console=self.console,
            refresh_per_second=self.hz,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        await self._sample_once(sup)  # its first frame shows what is there already
        sampler = asyncio.ensure_future(self._sample(sup))
        live.start()
        try:
            async with self._keys_read(sup) if interactive else contextlib.nullcontext():
                yield self
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            await self.settled()
            await self._sample_once(sup)
            live.stop()  # draws the final state once more and leaves it on screen

    @contextlib.asynccontextmanager
    async def _keys_read(self, sup: Supervisor) -> AsyncIterator[None]:
        """stdin in cbreak mode (keys come one by one, unechoed; Ctrl-C still
        interrupts), read by a reader on the loop; then the settings it had."""
        import termios
        import tty

        try:
            fd = sys.stdin.fileno()
            saved = termios.tcgetattr(fd)
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation, termios.error):
            yield  # not a terminal after all: no keys
            return
        loop = asyncio.get_running_loop()

        def readable() -> None:
            try:
                data = os.read(fd, 1024)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:  # the terminal is gone
                loop.remove_reader(fd)
                return
            self.keypress(data, sup)

        try:
            tty.setcbreak(fd, termios.TCSANOW)
            loop.add_reader(fd, readable)
            self.interactive = True
            yield
        finally:
            self.interactive = False
            loop.remove_reader(fd)
            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(fd, termios.TCSADRAIN, saved)
