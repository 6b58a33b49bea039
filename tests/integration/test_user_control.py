"""User control with real processes: approvals, pause and resume, cancel, the kill switch.

Agents come from ``tests/fixtures/control_agents.py``.  Waiting is on events,
futures and FIFOs (an agent says it started by writing its pid), never on
sleep loops; the only sleeps are the spans a pause must last to show that
time stood still for the paused calls.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import psutil
import pytest

from agentrt import (
    AgentCrashed,
    AgentSpec,
    ApprovalDenied,
    CallCancelled,
    CallTimeout,
    ControlError,
    Decision,
    Graph,
    PendingApproval,
    Run,
    Supervisor,
    SupervisorClosed,
    ToolSpec,
)
from agentrt.sandbox import Cgroups
from agentrt.supervisor import RunEvent


@pytest.fixture
def sup_factory(make_supervisor: Callable[..., Supervisor]) -> Callable[..., Supervisor]:
    return make_supervisor


def spec(name: str, entry: str, **fields: Any) -> AgentSpec:
    fields.setdefault("shutdown_timeout", 0.2)
    fields.setdefault("cancel_grace", 0.2)
    return AgentSpec(name=name, entry=f"control_agents:{entry}", **fields)


async def next_event(sup_events: Any, kind: str, **fields: Any) -> RunEvent:
    """The next event of ``kind`` (with ``fields``) from a subscribed stream."""
    async with asyncio.timeout(20):
        async for ev in sup_events:
            if ev.kind == kind and all(getattr(ev, k) == v for k, v in fields.items()):
                return ev  # type: ignore[no-any-return]
    raise AssertionError(f"the stream ended before {kind}")


async def pending(sup: Supervisor, n: int = 1) -> list[PendingApproval]:
    """Wait (on the event stream) until ``n`` approvals are pending."""
    events = sup.events()
    try:
        while len(sup.approvals()) < n:
            await next_event(events, "approval_requested")
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    return sup.approvals()


# --- approvals in a graph: the other branch runs meanwhile ----------------------------


def _graph() -> Graph:
    g = Graph()
    g.add("publish", "echo", args={"text": "hello"}, approval="required")
    g.add("draft", "echo", args={"text": "draft"})
    g.add("notify", "echo", args={"after": "${publish.text}"})
    return g


@pytest.mark.parametrize("answer", ["approve", "edit", "deny", "timeout"])
async def test_approval_waits_while_the_rest_of_the_graph_runs(
    sup_factory: Callable[..., Supervisor], answer: str
) -> None:
    async with sup_factory(approvals={"timeout": 0.5 if answer == "timeout" else 60}) as sup:
        await sup.start(spec("echo", "echo"))
        events = sup.events()
        run = Run(sup, _graph()).start()
        # The approval is requested and the independent task finishes while it waits.
        req = await next_event(events, "approval_requested")
        await next_event(events, "task_finished", task="draft")
        assert req.task == "publish" and req.approval is not None
        rows = {r["id"]: r["status"] for r in run.task_rows()}
        assert rows["draft"] == "ok" and rows["publish"] == "running"
        if answer == "approve":
            sup.approve(req.approval, reason="looks fine")
        elif answer == "edit":
            sup.approve(req.approval, args={"text": "edited"})
        elif answer == "deny":
            sup.deny(req.approval, reason="not today")
        result = await run.wait()
        await events.aclose()  # type: ignore[attr-defined]
        tasks = result.tasks
        assert tasks["draft"].status == "ok"
        assert tasks["draft"].finished_at <= (tasks["publish"].finished_at or 0)
        actions = [(e.action, e.target) for e in sup.audit()]
    assert ("approval_requested", req.approval) in actions
    if answer in ("approve", "edit"):
        text = "hello" if answer == "approve" else "edited"
        assert tasks["publish"].status == "ok" and tasks["publish"].result == {"text": text}
        assert tasks["notify"].result == {"after": text}
        assert ("approved", req.approval) in actions
        # it started only once approved, after the other branch had finished
        assert tasks["publish"].started_at >= tasks["draft"].finished_at
    else:
        assert tasks["publish"].status == "denied"
        err = tasks["publish"].error or {}
        assert err["type"] == "ApprovalDenied" and err["approval"] == req.approval
        assert tasks["notify"].status == "skipped"
        assert "publish" in (tasks["notify"].reason or "")
        if answer == "deny":
            assert err["reason"] == "not today" and err["by"] == "api"
            assert ("denied", req.approval) in actions
        else:
            assert err["by"] == "timeout" and "approval timeout" in err["reason"]
            assert ("approval_timeout", req.approval) in actions


async def test_an_approver_callback_answers_and_sees_the_request(
    sup_factory: Callable[..., Supervisor],
) -> None:
    seen: list[PendingApproval] = []
    passed = asyncio.Event()

    async def approver(req: PendingApproval) -> Decision | bool | None:
        seen.append(req)
        if req.args.get("n") == 1:
            return True
        if req.args.get("n") == 2:
            return Decision(approved=True, args={"n": 20})
        if req.args.get("n") == 3:
            return False
        passed.set()
        return None  # left to a person

    async with sup_factory(approver=approver) as sup:
        await sup.start(spec("echo", "echo", approval="required"))
        assert await sup.call("echo", {"n": 1}) == {"n": 1}
        assert await sup.call("echo", {"n": 2}) == {"n": 20}
        with pytest.raises(ApprovalDenied) as denied:
            await sup.call("echo", {"n": 3})
        assert denied.value.by == "approver"
        fourth = sup.submit("echo", {"n": 4})
        await passed.wait()
        (req,) = sup.approvals()
        assert req.args == {"n": 4} and req.agent == "echo" and req.kind == "call"
        sup.approve(req.id)
        assert await fourth == {"n": 4}
        with pytest.raises(ControlError, match="no approval"):
            sup.approve(req.id)  # decided already
    assert [r.args["n"] for r in seen] == [1, 2, 3, 4]


async def test_rules_match_tools_and_agents_by_argument_patterns(
    sup_factory: Callable[..., Supervisor],
) -> None:
    rules = [
        {"tool": "shell", "args": {"cmd": ["rm *", "*sudo*"]}},
        {"agent": "publisher", "args": {"channel": "prod*"}},
    ]
    async with sup_factory(approvals={"rules": rules}) as sup:
        await sup.add_tool(ToolSpec(name="shell", entry="control_agents:shell"))
        await sup.start(spec("model", "model_turns"))
        await sup.start(spec("publisher", "publish"))
        await sup.start(spec("asker", "ask_publisher"))
        # no rule matches: no approval asked
        assert await sup.call("model", {"cmds": ["ls"]}) == [{"role": "tool", "content": "ran: ls"}]
        assert await sup.call("asker", {"channel": "dev", "text": "x"}) == "dev: x"
        assert sup.audit() == []
        # a subagent call to publisher on prod waits for approval
        to_prod = sup.submit("asker", {"channel": "prod-eu", "text": "y"})
        (req,) = await pending(sup)
        assert req.agent == "publisher" and req.kind == "call"
        assert "rule 2" in req.why and "prod*" in req.why
        sup.approve(req.id)
        assert await to_prod == "prod-eu: y"


async def test_a_model_gets_a_denial_as_the_tool_answer_and_carries_on(
    sup_factory: Callable[..., Supervisor],
) -> None:
    rules = [{"tool": "shell", "args": {"cmd": "rm *"}}]
    async with sup_factory(approvals={"rules": rules}) as sup:
        await sup.start(spec("model", "model_turns"))
        turns = sup.submit("model", {"cmds": ["ls", "rm -rf /", "echo done"]})
        (req,) = await pending(sup)
        assert req.kind == "tool" and req.tool == "shell" and req.agent == "model"
        assert req.args == {"cmd": "rm -rf /"}
        sup.deny(req.id, reason="destructive")
        assert await turns == [
            {"role": "tool", "content": "ran: ls"},
            {"role": "tool", "content": "denied: destructive"},
            {"role": "tool", "content": "ran: echo done"},
        ]


async def test_parallel_tool_calls_run_while_one_waits_for_approval(
    sup_factory: Callable[..., Supervisor],
) -> None:
    rules = [{"tool": "shell", "args": {"cmd": "deploy*"}}]
    async with sup_factory(approvals={"rules": rules}) as sup:
        await sup.start(spec("model", "model_parallel"))
        events = sup.events()
        turn = sup.submit("model", {"cmds": ["a", "deploy prod", "b", "deploy dev"]})
        first = await next_event(events, "approval_requested")
        second = await next_event(events, "approval_requested")
        await events.aclose()  # type: ignore[attr-defined]
        by_id = {p.id: p for p in sup.approvals()}
        assert {by_id[first.approval].args["cmd"], by_id[second.approval].args["cmd"]} == {
            "deploy prod",
            "deploy dev",
        }
        prod = (
            first.approval
            if by_id[first.approval].args["cmd"] == "deploy prod"
            else second.approval
        )
        dev = second.approval if prod == first.approval else first.approval
        sup.approve(dev, args={"cmd": "deploy dev --dry-run"})
        sup.deny(prod)
        assert await turn == [
            "ran: a",
            "denied: ",
            "ran: b",
            "ran: deploy dev --dry-run",
        ]


async def test_an_isolated_tool_that_requires_approval(
    sup_factory: Callable[..., Supervisor],
) -> None:
    async with sup_factory() as sup:
        await sup.add_tool(
            ToolSpec(name="shell", entry="control_agents:shell", isolated=True, approval="required")
        )
        await sup.start(spec("model", "model_turns"))
        turns = sup.submit("model", {"cmds": ["whoami"]})
        (req,) = await pending(sup)
        assert req.kind == "tool" and req.tool == "shell" and req.agent == "model"
        sup.approve(req.id)
        assert await turns == [{"role": "tool", "content": "ran: whoami"}]


async def test_a_request_is_withdrawn_when_its_caller_leaves(
    sup_factory: Callable[..., Supervisor],
) -> None:
    async with sup_factory() as sup:
        await sup.start(spec("echo", "echo", approval="required"))
        fut = sup.submit("echo", {"x": 1})
        (req,) = await pending(sup)
        fut.cancel()
        await asyncio.sleep(0)
        assert sup.approvals() == []
        assert [e.action for e in sup.audit()][-1] == "approval_withdrawn"
        with pytest.raises(ControlError):
            sup.approve(req.id)


# --- pause and resume --------------------------------------------------------------


def _cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


@pytest.mark.parametrize("entry", ["spin_cpu", "aspin_cpu"])
async def test_pause_stops_cpu_and_deadlines_stand_still(
    sup_factory: Callable[..., Supervisor], make_gate: Callable[[str], Any], entry: str
) -> None:
    gate = make_gate("started")
    async with sup_factory() as sup:
        await sup.start(spec("spinner", entry))
        # 0.2 s of CPU under a 3 s timeout (room for a loaded machine); paused for
        # 3.5 s in the middle
        fut = sup.submit("spinner", {"seconds": 0.2, "fifo": gate.path}, timeout=3.0)
        pid = int(await gate.read_line())
        assert await sup.pause("spinner") == ["spinner#0"]
        (status,) = await sup.status()
        assert status.state == "paused"
        before = _cpu(pid)
        await asyncio.sleep(3.5)  # longer than the call's whole timeout
        assert _cpu(pid) - before < 0.05  # really stopped
        assert not fut.done()  # its deadline stood still
        assert await sup.resume("spinner") == ["spinner#0"]
        assert await fut > 0
        assert [e.action for e in sup.audit()] == ["pause", "resume"]


@pytest.mark.parametrize("entry", ["spin_forever", "aspin_forever"])
async def test_a_deadline_still_runs_out_after_resume(
    sup_factory: Callable[..., Supervisor], make_gate: Callable[[str], Any], entry: str
) -> None:
    gate = make_gate("started")
    async with sup_factory() as sup:
        await sup.start(spec("spinner", entry, cancel_grace=0.5))
        fut = sup.submit("spinner", {"fifo": gate.path}, timeout=1.5)
        await gate.read_line()
        await sup.pause()
        await asyncio.sleep(2.0)
        assert not fut.done()
        await sup.resume()
        with pytest.raises(CallTimeout):
            await fut
        # the replica ended the call itself (its timer moved with the pause too):
        # it was not killed for ignoring its deadline
        (status,) = await sup.status()
        assert status.restarts == 0


async def test_a_paused_agent_queues_calls_and_holds_their_deadlines(
    sup_factory: Callable[..., Supervisor],
) -> None:
    async with sup_factory() as sup:
        await sup.start(spec("echo", "echo", replicas=2))
        assert sorted(await sup.pause("echo")) == ["echo#0", "echo#1"]
        fut = sup.submit("echo", {"x": 1}, timeout=0.3)
        await asyncio.sleep(0.6)
        assert not fut.done()  # queued, not dispatched, deadline held
        assert sup.paused() == ["echo"]
        await sup.resume("echo")
        assert await fut == {"x": 1}
        assert sup.paused() == []


async def test_pause_one_replica_the_others_serve(
    sup_factory: Callable[..., Supervisor],
) -> None:
    async with sup_factory() as sup:
        await sup.start(spec("echo", "echo", replicas=2))
        await sup.pause("echo#1")
        results = await asyncio.gather(*(sup.call("echo", {"i": i}) for i in range(6)))
        assert results == [{"i": i} for i in range(6)]
        states = {s.replica: s.state for s in await sup.status()}
        assert states == {0: "ready", 1: "paused"}
        with pytest.raises(ControlError, match="#0 to #1"):
            await sup.pause("echo#5")
        with pytest.raises(ControlError, match="no agent"):
            await sup.pause("nobody")


async def test_pause_without_a_freezer_stops_the_tree_with_sigstop(
    sup_factory: Callable[..., Supervisor],
    make_gate: Callable[[str], Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Cgroups, "freezer", staticmethod(lambda dirs: None))
    gate = make_gate("started")
    async with sup_factory() as sup:
        await sup.start(spec("spinner", "spin_cpu"))
        fut = sup.submit("spinner", {"seconds": 0.2, "fifo": gate.path}, timeout=2.0)
        pid = int(await gate.read_line())
        await sup.pause("spinner")
        assert psutil.Process(pid).status() == psutil.STATUS_STOPPED
        await asyncio.sleep(2.5)
        assert not fut.done()
        await sup.resume("spinner")
        assert psutil.Process(pid).status() != psutil.STATUS_STOPPED
        assert await fut > 0


async def test_closing_a_paused_supervisor_stops_its_replicas(
    sup_factory: Callable[..., Supervisor],
) -> None:
    async with sup_factory() as sup:
        await sup.start(spec("echo", "echo", replicas=2))
        procs = [psutil.Process(s.pid) for s in await sup.status() if s.pid]
        await sup.pause()
        assert {p.status() for p in procs} != {psutil.STATUS_RUNNING}
    _gone, alive = psutil.wait_procs(procs, timeout=5)
    assert len(procs) == 2 and not alive


# --- cancel and the kill switch --------------------------------------------------------


async def test_cancel_a_task_with_live_subagents_and_tools_leaves_no_process(
    sup_factory: Callable[..., Supervisor], make_gate: Callable[[str], Any]
) -> None:
    minion_gate, tool_gate = make_gate("minion"), make_gate("tool")
    async with sup_factory() as sup:
        await sup.add_tool(
            ToolSpec(name="hang_tool", entry="control_agents:sleep_in_child", isolated=True)
        )
        await sup.start(spec("minion", "sleep_in_child"))
        await sup.start(spec("boss", "boss"))
        await sup.start(spec("echo", "echo"))
        g = Graph()
        g.add("job", "boss", args={"minion_fifo": minion_gate.path, "tool_fifo": tool_gate.path})
        g.add("report", "echo", args={"job": "${job}"})
        g.add("other", "echo", args={"x": 1})
        run = Run(sup, g).start()
        sleepers = [psutil.Process(int(await minion_gate.read_line()))]
        sleepers.append(psutil.Process(int(await tool_gate.read_line())))
        assert await sup.cancel("job", reason="wrong target") == ["job"]
        result = await run.wait()
        _gone, alive = await asyncio.to_thread(psutil.wait_procs, sleepers, timeout=10)
        assert not alive, alive
        job = result.tasks["job"]
        assert job.status == "cancelled" and "wrong target" in (job.reason or "")
        assert result.tasks["report"].status == "skipped"
        assert result.tasks["other"].status == "ok"
        (entry,) = [e for e in sup.audit() if e.action == "cancel"]
        assert entry.target == "task job" and entry.reason == "wrong target"
        with pytest.raises(ControlError, match="no running task"):
            await sup.cancel("job")


async def test_cancel_an_agents_calls_and_a_call_by_number(
    sup_factory: Callable[..., Supervisor], make_gate: Callable[[str], Any]
) -> None:
    gate = make_gate("started")
    async with sup_factory() as sup:
        await sup.start(spec("spinner", "spin_forever", queue=4))
        await sup.start(spec("echo", "echo"))
        futs = [sup.submit("spinner", {"fifo": gate.path}) for _ in range(3)]
        await gate.read_line()
        cancelled = await sup.cancel("spinner", scope="agent")
        assert len(cancelled) == 3
        for f in futs:
            with pytest.raises(CallCancelled, match="cancelled by api"):
                await f
        assert await sup.call("echo", {"still": "fine"}) == {"still": "fine"}
        gate2 = make_gate("again")
        fut = sup.submit("spinner", {"fifo": gate2.path})
        await gate2.read_line()
        (call,) = [c for c in sup.tasks()["calls"] if c["agent"] == "spinner"]
        assert await sup.cancel(str(call["id"])) == [str(call["id"])]
        with pytest.raises(CallCancelled):
            await fut


async def test_the_kill_switch_ends_every_agent_process_at_once(
    sup_factory: Callable[..., Supervisor], make_gate: Callable[[str], Any]
) -> None:
    gate = make_gate("started")
    sup = sup_factory()
    async with sup:
        # agents that would never stop gracefully: SIGTERM ignored, no shutdown timeout
        await sup.start(
            spec("stubborn", "ignore_sigterm_and_spin", replicas=2, shutdown_timeout="infinity")
        )
        await sup.start(spec("frozen", "spin_forever", shutdown_timeout="infinity"))
        calls = [sup.submit("stubborn", {"fifo": gate.path}) for _ in range(2)]
        calls.append(sup.submit("frozen", {"fifo": gate.path}))
        for _ in range(3):
            await gate.read_line()
        await sup.pause("frozen")  # a frozen process dies only once thawed
        procs = [psutil.Process(s.pid) for s in await sup.status() if s.pid]
        assert len(procs) == 3
        sup.request_stop(now=True, reason="runaway")
        await sup.wait_closed()
        _gone, alive = await asyncio.to_thread(psutil.wait_procs, procs, timeout=5)
        assert not alive
        for c in calls:
            with pytest.raises((AgentCrashed, SupervisorClosed)):
                await c
        assert [(e.action, e.reason) for e in sup.audit()][-1] == ("stop_now", "runaway")


async def test_a_graceful_stop_closes_the_supervisor(
    sup_factory: Callable[..., Supervisor],
) -> None:
    async with sup_factory() as sup:
        await sup.start(spec("echo", "echo"))
        sup.request_stop(reason="done for today")
        await sup.wait_closed()
        with pytest.raises(ControlError, match="stopping"):
            await sup.pause()
    assert [e.action for e in sup.audit()] == ["stop"]


async def test_the_audit_log_is_appended_to_a_file(
    sup_factory: Callable[..., Supervisor], tmp_path: Any
) -> None:
    path = tmp_path / "audit.jsonl"
    async with sup_factory(audit_log=str(path)) as sup:
        await sup.start(spec("echo", "echo", approval="required"))
        fut = sup.submit("echo", {"secret": "s"})
        (req,) = await pending(sup)
        sup.deny(req.id, reason="no")
        with pytest.raises(ApprovalDenied):
            await fut
        await sup.pause("echo")
        await sup.resume("echo")
        assert os.stat(path).st_mode & 0o777 == 0o600
    import json

    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["action"] for x in lines] == ["approval_requested", "denied", "pause", "resume"]
    assert lines[1]["reason"] == "no" and lines[1]["by"] == {"via": "api"}
    assert lines[0]["args"] == {"secret": "s"}


def test_supervise_writes_the_audit_log_into_the_results_file(tmp_path: Any) -> None:
    import json

    from clitools import run_cli, write_project

    cfg = write_project(
        tmp_path,
        "def echo(**kw):\n    return kw\n",
        """
[agents.echo]
entry = "agents:echo"

[[tasks]]
id = "risky"
agent = "echo"
args = { x = 1 }
approval = "required"

[[tasks]]
id = "safe"
agent = "echo"
args = { y = 2 }

[approvals]
timeout = "300ms"
""",
    )
    out = tmp_path / "results.json"
    proc = run_cli("supervise", str(cfg), "-o", str(out), "--no-live")
    assert proc.returncode == 1, proc.stderr
    result = json.loads(out.read_text())
    assert result["tasks"]["safe"]["status"] == "ok"
    risky = result["tasks"]["risky"]
    assert risky["status"] == "denied" and risky["error"]["by"] == "timeout"
    assert [a["action"] for a in result["audit"]] == ["approval_requested", "approval_timeout"]
    assert result["audit"][0]["task"] == "risky" and result["audit"][0]["args"] == {"x": 1}
    assert "risky  denied" in proc.stderr  # the closing summary


async def test_cancelled_calls_queued_in_a_replica_never_run(
    sup_factory: Callable[..., Supervisor], make_gate: Callable[[str], Any], tmp_path: Any
) -> None:
    gate = make_gate("started")
    marks = [tmp_path / f"mark{i}" for i in range(3)]
    async with sup_factory() as sup:
        await sup.start(spec("waiter", "wait_or_mark", queue=4, cancel_grace=30))
        first = sup.submit("waiter", {"fifo": gate.path})
        await gate.read_line()
        queued = [sup.submit("waiter", {"mark": str(m)}) for m in marks]
        assert len(await sup.cancel("waiter", scope="agent")) == 4
        for f in [first, *queued]:
            with pytest.raises(CallCancelled):
                await f
        # the replica heard every Cancel (it was not killed), and ran none of the queued calls
        assert await sup.call("waiter", {"mark": str(tmp_path / "after")}) == "marked"
        (status,) = await sup.status()
        assert status.restarts == 0
    assert not any(m.exists() for m in marks)
