"""The live view (fake events and a fake supervisor, no processes): a running
task's row shows the subagent and tool calls it has in flight; pending
approvals are listed and decided with keys; paused replicas and a paused run
are shown; the key parser turns bytes, split anywhere, into actions."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest
from rich.console import Console

from agentrt.errors import ControlError
from agentrt.live import Keys, LiveView
from agentrt.supervisor import ReplicaStatus, RunEvent, StandbyStatus
from agentrt.supervisor.oversight import API, PendingApproval

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


# --- approvals, pause, keys ------------------------------------------------------


def _pending(n: int, **kw: Any) -> PendingApproval:
    fields: dict[str, Any] = {
        "id": f"a{n}",
        "kind": "task",
        "agent": "hub",
        "task": f"t{n}",
        "args": {"query": "who", "n": n},
        "why": "the task requires approval",
        "requested_at": NOW - 10 * n,
        **kw,
    }
    return PendingApproval(**fields)


class FakeSupervisor:
    """The controls the view's keys use, recorded; ``gone`` ids are not pending."""

    def __init__(self, *gone: str) -> None:
        self.gone = set(gone)
        self.decided: list[tuple[str, str, str, Any]] = []
        self.held: list[str] = []
        self.steps: list[str] = []

    def approvals(self) -> list[PendingApproval]:
        return []

    def paused(self) -> list[str]:
        return list(self.held)

    def approve(self, approval: str, *, reason: str = "", by: Any = API) -> None:
        self._decide("approve", approval, reason, by)

    def deny(self, approval: str, *, reason: str = "", by: Any = API) -> None:
        self._decide("deny", approval, reason, by)

    def _decide(self, what: str, approval: str, reason: str, by: Any) -> None:
        if approval in self.gone:
            raise ControlError(f"no approval {approval!r} is pending (pending: none)")
        self.decided.append((what, approval, reason, by))

    async def pause(self, target: str = "", *, by: Any = API) -> list[str]:
        self.steps.append(f"pause by {by.via}")
        self.held.append("run")
        return []

    async def resume(self, target: str = "", *, by: Any = API) -> list[str]:
        self.steps.append(f"resume by {by.via}")
        self.held.remove("run")
        return []


def _panel(text: str) -> list[str]:
    """The ids in the pending approvals panel, top down; the selected one starred."""
    lines = text.splitlines()
    if "pending approvals" not in lines:
        return []
    ids: list[str] = []
    for line in lines[lines.index("pending approvals") + 2 :]:  # past its header
        words = line.split()
        if words[:1] == [">"]:
            ids.append(words[1] + "*")
        elif words and words[0][:1] == "a" and words[0][1:].isdigit():
            ids.append(words[0])
        else:
            break
    return ids


def _selected(text: str) -> str:
    """The id on the row marked selected."""
    (rid,) = [i for i in _panel(text) if i.endswith("*")]
    return rid[:-1]


def _approvals_view(n: int) -> LiveView:
    view = _view()
    view.set_control([_pending(i) for i in range(n, 0, -1)], [])  # a{n} is the oldest
    return view


def test_pending_approvals_show_id_task_agent_tool_args_why_and_how_long_they_waited() -> None:
    view = _view()
    view.set_control(
        [
            _pending(2),
            _pending(1, kind="tool", task=None, tool="delete", args={"path": "/tmp/x"}),
        ],
        [],
    )
    text = _text(view)
    assert "pending approvals" in text and "2 awaiting approval" in text
    first, second = (line for line in text.splitlines() if " a1 " in line or " a2 " in line)
    assert first.split()[:5] == [">", "a2", "t2", "hub", "-"]  # oldest first, selected
    assert "query='who', n=2" in first and "the task requires approval" in first
    assert first.rstrip().endswith("20.0s")
    assert second.split()[:4] == ["a1", "-", "hub", "delete"]  # no task: a tool call's
    assert "path='/tmp/x'" in second and second.rstrip().endswith("10.0s")


def test_the_selection_moves_with_arrows_and_j_k_and_stops_at_the_ends() -> None:
    view, sup = _approvals_view(3), FakeSupervisor()
    assert _selected(_text(view)) == "a3"
    for keys, expected in (
        (b"j", "a2"),
        (b"\x1b[B", "a1"),
        (b"j", "a1"),  # the last one: stays
        (b"k", "a2"),
        (b"\x1bOA", "a3"),  # the terminal's application mode
        (b"\x1b[A", "a3"),
    ):
        view.keypress(keys, sup)
        assert _selected(_text(view)) == expected, keys


def test_a_decided_request_leaves_the_selection_on_the_next_one() -> None:
    view, sup = _approvals_view(3), FakeSupervisor()
    view.keypress(b"j", sup)
    assert _selected(_text(view)) == "a2"
    view.on_event(RunEvent(kind="approval_decided", time=NOW, approval="a2", status="approved"))
    text = _text(view)
    assert _panel(text) == ["a3", "a1*"]  # gone at once, not at the next sample
    assert "approval a2 approved" in text
    view.set_control([_pending(1)], [])
    assert _selected(_text(view)) == "a1"
    view.set_control([], [])
    assert _panel(_text(view)) == []
    assert "pending approvals" not in _text(view)


def test_more_than_eight_pending_show_a_count_and_keep_the_selected_one_in_sight() -> None:
    view, sup = _approvals_view(11), FakeSupervisor()
    text = _text(view)
    assert _panel(text) == ["a11*", "a10", "a9", "a8", "a7", "a6", "a5", "a4"]
    assert "+3 more" in text
    view.keypress(b"j" * 10, sup)
    text = _text(view)
    assert _panel(text) == ["a8", "a7", "a6", "a5", "a4", "a3", "a2", "a1*"]
    assert "+3 more" in text


def test_a_approves_and_d_denies_the_selected_request_as_the_live_view() -> None:
    view, sup = _approvals_view(2), FakeSupervisor()
    view.keypress(b"a", sup)
    assert [d[:2] for d in sup.decided] == [("approve", "a2")]
    assert _selected(_text(view)) == "a1"  # decided: off the panel before the next sample
    view.keypress(b"d", sup)
    what, rid, reason, by = sup.decided[-1]
    assert (what, rid, reason) == ("deny", "a1", "denied from the live view")
    assert by.via == "live" and by.uid is not None and by.pid is not None
    assert "pending approvals" not in _text(view)
    view.keypress(b"a", sup)  # nothing pending: a note, no call
    assert len(sup.decided) == 2 and "no approval is pending" in _text(view)


def test_a_request_decided_elsewhere_meanwhile_is_a_note_not_an_error() -> None:
    view, sup = _approvals_view(1), FakeSupervisor("a1")
    view.keypress(b"a", sup)
    assert sup.decided == []
    assert "approve a1 failed: no approval 'a1' is pending" in _text(view)


async def test_p_pauses_the_run_and_p_again_resumes_it() -> None:
    view, sup = _view(), FakeSupervisor()
    view.keypress(b"p", sup)
    await view.settled()
    assert sup.steps == ["pause by live"]
    assert "- run paused" in _text(view)
    view.keypress(b"p", sup)
    await view.settled()
    assert sup.steps == ["pause by live", "resume by live"]
    assert "run resumed" in _text(view) and "- run paused" not in _text(view)


async def test_a_pause_that_fails_is_a_note() -> None:
    view, sup = _view(), FakeSupervisor()

    async def refused(target: str = "", *, by: Any = API) -> list[str]:
        raise ControlError("the supervisor is closing")

    sup.pause = refused  # type: ignore[method-assign]
    view.keypress(b"p", sup)
    await view.settled()
    assert "pause failed: the supervisor is closing" in _text(view)


async def test_a_second_p_while_a_pause_is_under_way_is_ignored() -> None:
    view, sup = _view(), FakeSupervisor()
    release = asyncio.Event()
    pause = sup.pause

    async def slow(target: str = "", *, by: Any = API) -> list[str]:
        await release.wait()
        return await pause(target, by=by)

    sup.pause = slow  # type: ignore[method-assign]
    view.keypress(b"p", sup)
    view.keypress(b"p", sup)
    assert "still under way" in _text(view)
    release.set()
    await view.settled()
    assert sup.steps == ["pause by live"]


def test_paused_replicas_and_a_paused_run_are_shown() -> None:
    view = _view()
    view.set_status(
        [
            ReplicaStatus(agent="hub", replica=0, state="paused", pid=11, restarts=0, inflight=1),
            ReplicaStatus(agent="hub", replica=1, state="paused", pid=13, restarts=0, inflight=0),
            ReplicaStatus(agent="leaf", replica=0, state="ready", pid=12, restarts=0, inflight=0),
        ]
    )
    text = _text(view)
    assert "paused x2" in _row(text, "hub") and "paused" not in _row(text, "leaf")
    assert "run paused" not in text
    view.set_control([], ["run"])
    assert "- run paused" in _text(view)
    buf = io.StringIO()
    Console(file=buf, force_terminal=True, width=160, color_system="standard").print(view.render())
    assert "\x1b[35mpaused x2" in buf.getvalue()  # magenta


def test_an_agents_standby_is_shown_on_its_row_with_its_state() -> None:
    view = _view()
    assert "standby" not in _text(view)
    view.set_standbys([StandbyStatus(agent="hub", pid=21, state="ready")])
    text = _text(view)
    assert "busy +standby ready" in _row(text, "hub") and "standby" not in _row(text, "leaf")
    view.set_standbys([StandbyStatus(agent="hub", pid=21, state="paused")])
    buf = io.StringIO()
    Console(file=buf, force_terminal=True, width=160, color_system="standard").print(view.render())
    assert "+standby \x1b[0m\x1b[35mpaused" in buf.getvalue()  # magenta, as a paused replica
    view.set_standbys([])  # it took a dead replica's place: none until the next is made
    assert "standby" not in _text(view)


def test_the_footer_shows_the_keys_only_while_they_are_read() -> None:
    view = _approvals_view(1)
    assert "a approve" not in _text(view)
    view.interactive = True
    assert "a approve  d deny  p pause/resume" in _text(view).splitlines()[-1]


# --- the key parser ----------------------------------------------------------------


def test_keys_turn_letters_and_arrows_into_actions() -> None:
    keys = Keys()
    assert keys.feed(b"adpjk") == ["approve", "deny", "pause", "down", "up"]
    assert keys.feed(b"\x1b[A\x1b[B\x1bOA\x1bOB") == ["up", "down", "up", "down"]


@pytest.mark.parametrize("seq", [b"\x1b[A", b"\x1bOB", b"a\x1b[Bd"])
def test_a_sequence_split_across_two_reads_is_still_one_key(seq: bytes) -> None:
    whole = Keys().feed(seq)
    for cut in range(1, len(seq)):
        keys = Keys()
        assert keys.feed(seq[:cut]) + keys.feed(seq[cut:]) == whole, cut


def test_unknown_keys_and_sequences_are_ignored() -> None:
    keys = Keys()
    assert keys.feed(b"qxQ A\r\n\t") == []  # q: nothing special
    assert keys.feed("é€".encode()) == []
    assert keys.feed(b"\x1bOP") == []  # F1
    assert keys.feed(b"\x1b[1;5A") == []  # Ctrl+up
    assert keys.feed(b"\x1b[200~") == []  # bracketed paste begins
    assert keys.feed(b"\x1ba") == []  # Alt+a: not an approval
    assert keys.feed(b"\x1b[15~p") == ["pause"]  # F5, then a key


def test_an_escape_sequence_that_never_ends_is_dropped() -> None:
    keys = Keys()
    assert keys.feed(b"\x1b[" + b"1;" * 40) == []
    assert keys.feed(b"a") == ["approve"]
    assert keys.feed(b"\x1b") == []  # a lone ESC waits for what follows
    assert keys.feed(b"[") == []
    assert keys.feed(b"B") == ["down"]
