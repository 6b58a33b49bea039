"""A live terminal view of a supervisor (rich): agents, replicas, progress, recent events.

The view never slows the runtime down: it takes a status snapshot on its own
schedule (``sup.status()`` runs psutil in a thread), events only update a
few counters on the loop, and the drawing is done by rich's refresh thread
from a snapshot taken under a lock.  Logs printed through :func:`console_stream`
appear above the live region instead of garbling it.

An agent's row shows, beside its running task, the subagent and tool calls
in flight for its tasks (nested ones too), from ``call_started`` /
``call_finished``: each target with how long its oldest call has run, a
count when it has several (``tool:search x3 1.2s``).  A call goes to the
task its event names; else to the agent of its caller, when an in-process
tool call of the same caller told it, or when only one agent runs tasks;
else to a line of calls whose caller is not known.

Usage::

    view = LiveView(console)
    ... feed view.on_event(ev) from sup.events() ...
    async with view.attached(sup):
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from agentrt.supervisor import ReplicaStatus, RunEvent, Supervisor

__all__ = ["ConsoleStream", "LiveView", "console_stream"]

_STATE_STYLE = {
    "ready": "green",
    "busy": "green",
    "starting": "yellow",
    "backoff": "yellow",
    "crashed": "bold red",
    "failed": "bold red",
    "exited": "dim",
    "stopping": "dim",
}
_NOTABLE_STATUS = {"failed", "timeout", "crashed", "limit", "cancelled"}
#: call targets shown on a row before "+N" counts the rest
_SHOWN_TARGETS = 2


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

    # --- inputs (loop thread) --------------------------------------------------

    def set_status(self, statuses: Iterable[ReplicaStatus]) -> None:
        snap = list(statuses)
        with self._lock:
            self.statuses = snap

    def on_event(self, ev: RunEvent) -> None:
        with self._lock:
            self._apply(ev)

    def _note(self, ev: RunEvent, style: str, text: str) -> None:
        self.recent.append((ev.time, style, text))

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
            target if target.startswith("tool:") else f"agent:{target}",
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
        progress = Table.grid(padding=(0, 1))
        progress.add_row(
            Text("tasks", style="bold"),
            ProgressBar(total=max(total, 1), completed=done, width=30),
            Text(
                f"{done}/{total} done, {failed} failed, {skipped} skipped, {retries} retries"
                + (f", {in_flight} call{'s' * (in_flight > 1)} in flight" if in_flight else "")
                + (f" - run {run_status}" if run_status else ""),
                style="red" if failed else "",
            ),
        )
        parts: list[RenderableType] = [table]
        if None in calls:
            parts.append(
                Text(f"calls, caller not known: {_calls_text(calls[None], now)}", style="dim")
            )
        parts.append(progress)
        if recent:
            parts.append(Text("recent events", style="bold"))
            for t, style, text in recent:
                stamp = time.strftime("%H:%M:%S", time.localtime(t))
                parts.append(Text(f"  {stamp} {text}", style=style, overflow="ellipsis"))
        return Group(*parts)

    # --- running ------------------------------------------------------------------

    async def _sample(self, sup: Supervisor) -> None:
        period = 1.0 / self.hz
        while True:
            with contextlib.suppress(Exception):
                self.set_status(await sup.status())
            await asyncio.sleep(period)

    @contextlib.asynccontextmanager
    async def attached(self, sup: Supervisor) -> AsyncIterator[LiveView]:
        """Show the view while the block runs; status sampled ``hz`` times a second.

        Rich's refresh thread draws it; the loop only feeds state in.
        """
        live = Live(
            get_renderable=self.render,
            console=self.console,
            refresh_per_second=self.hz,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        sampler = asyncio.ensure_future(self._sample(sup))
        live.start()
        try:
            yield self
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            with contextlib.suppress(Exception):
                self.set_status(await sup.status())
            live.stop()  # draws the final state once more and leaves it on screen
