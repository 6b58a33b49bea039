"""The live view's in-flight calls: a running task's row shows the subagent and
tool calls it has in flight (fake events, no processes)."""

from __future__ import annotations

import io

from rich.console import Console

from agentrt.live import LiveView
from agentrt.supervisor import ReplicaStatus, RunEvent

NOW = 1_700_000_010.0


def _view(*events: RunEvent) -> LiveView:
    view = LiveView(Console(file=io.StringIO()), clock=lambda: NOW)
    view.set_status(
        [
            ReplicaStatus(agent="hub", replica=0, state="busy", pid=11, restarts=0, inflight=1),
            ReplicaStatus(agent="leaf", replica=0, state="busy", pid=12, restarts=0, inflight=1),
        ]
    )
    for ev in events:
        view.on_event(ev)
    return view


def _text(view: LiveView) -> str:
    buf = io.StringIO()
    Console(file=buf, force_terminal=True, width=160, color_system=None).print(view.render())
    return buf.getvalue()


def _row(text: str, agent: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(agent + " "))


def _started(cid: int, parent: int, target: str, ago: float, **kw: str) -> RunEvent:
    agent = kw.pop("agent", target)  # a supervisor call's: where it runs
    return RunEvent(
        kind="call_started",
        time=NOW - ago,
        call_id=cid,
        parent=parent,
        target=target,
        agent=agent,
        **kw,  # type: ignore[arg-type]
    )


def _finished(cid: int, parent: int, target: str) -> RunEvent:
    return RunEvent(kind="call_finished", time=NOW, call_id=cid, parent=parent, target=target)


def _task(task: str, agent: str, ago: float) -> RunEvent:
    return RunEvent(kind="task_started", time=NOW - ago, task=task, agent=agent)


def test_a_running_tasks_row_shows_its_calls_in_flight_by_target_with_a_count() -> None:
    view = _view(
        _task("gather", "hub", 3.0),
        _started(2, 1, "tool:search", 2.0),  # isolated tools and subagents: supervisor calls
        _started(3, 1, "tool:search", 1.5),
        _started(4, 1, "tool:search", 1.0),
        _started(5, 1, "leaf", 0.5),
        _started(6, 5, "tool:shout", 0.25),  # made by the subagent: still gather's
    )
    row = _row(_text(view), "hub")
    assert "gather" in row and "3.0s" in row
    assert "tool:search x3 2.0s, agent:leaf 0.5s +1" in row  # oldest first, the rest counted
    assert _row(_text(view), "leaf").rstrip().endswith("-")  # serving a call: no task of its own
    assert "5 calls in flight" in _text(view)
    for cid in (2, 3, 6):
        view.on_event(_finished(cid, 1, "tool:search"))
    row = _row(_text(view), "hub")
    assert "tool:search 1.0s, agent:leaf 0.5s" in row and "+" not in row
    view.on_event(_started(4, 1, "tool:search", 0.1))  # sent again: in flight since before
    assert "tool:search 1.0s" in _row(_text(view), "hub")


def test_calls_go_to_the_agent_whose_task_made_them() -> None:
    view = _view(
        _task("gather", "hub", 3.0),
        _task("other", "leaf", 3.0),
        _started(5, 1, "sub", 1.0),  # two agents run tasks: whose is it?
        _started(7, 8, "sub", 1.0, task="other"),  # its event says
    )
    text = _text(view)
    assert "calls, caller not known: agent:sub 1.0s" in text
    assert "agent:sub 1.0s" in _row(text, "leaf")
    assert "agent:sub" not in _row(text, "hub")
    # an in-process tool call is reported by the agent that made it: call 1 is hub's
    view.on_event(_started(-9, 1, "tool:read", 0.5, agent="hub"))
    text = _text(view)
    assert "caller not known" not in text
    assert "agent:sub 1.0s, tool:read 0.5s" in _row(text, "hub")
    view.on_event(_finished(-9, 1, "tool:read"))
    assert "agent:sub 1.0s" in _row(_text(view), "hub")  # still known to be hub's


def test_calls_in_flight_are_gone_when_the_run_ends() -> None:
    view = _view(_task("gather", "hub", 3.0), _started(5, 1, "leaf", 1.0))
    assert "1 call in flight" in _text(view)
    view.on_event(RunEvent(kind="run_finished", time=NOW, status="ok"))
    assert "in flight" not in _text(view) and _row(_text(view), "hub").rstrip().endswith("-")
