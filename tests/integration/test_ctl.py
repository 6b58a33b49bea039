"""`agentrt ctl` against a real supervisor: views, approvals, pause and resume, cancel,
stop and the kill switch, audit and tail.

The supervisor is embedded in the test (started from ``tmp_path``, so that is the
directory its run is found from) and ``agentrt ctl`` runs as a real subprocess on
the real control socket, awaited without blocking the loop that serves it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from agentrt import ApprovalDenied, CallCancelled, Supervisor
from agentrt.graph import Graph
from agentrt.scheduler import Run

#: a bound on one ctl command, so a test that goes wrong fails instead of hanging
CTL_TIMEOUT = 30.0


@dataclass
class Ctl:
    """One finished ``agentrt ctl`` command."""

    rc: int
    out: str
    err: str
    pid: int

    def json(self) -> Any:
        return json.loads(self.out)


async def ctl(*args: str, cwd: Path | None = None) -> Ctl:
    """``python -m agentrt.cli ctl ARGS`` in ``cwd`` (default: this directory)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentrt.cli",
        "ctl",
        *args,
        cwd=cwd or os.getcwd(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(CTL_TIMEOUT):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return Ctl(proc.returncode, out.decode(), err.decode(), proc.pid)


def ok(result: Ctl) -> str:
    assert result.rc == 0, f"exit {result.rc}: {result.err}"
    return result.out


@pytest.fixture
async def sup(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_supervisor: Callable[..., Supervisor],
) -> AsyncIterator[Supervisor]:
    """A supervisor whose run was started from ``tmp_path`` (the working directory)."""
    monkeypatch.chdir(tmp_path)
    async with make_supervisor() as s:
        yield s


async def test_views_show_agents_a_paused_replica_and_a_pending_approval(sup, agent_spec):
    await sup.start(agent_spec("echo", "agents:echo", replicas=2))
    await sup.start(agent_spec("gated", "agents:echo", approval="required"))
    pending = sup.submit("gated", {"x": 1})
    [approval] = sup.approvals()
    assert ok(await ctl("pause", "echo#1")).strip() == "paused: echo#1"

    status, agents, tasks, jstatus, jagents, jtasks = await asyncio.gather(
        ctl("status"),
        ctl("agents"),
        ctl("tasks"),
        ctl("--json", "status"),
        ctl("agents", "--json"),  # --json after the subcommand too
        ctl("--json", "tasks"),
    )

    lines = dict(line.split(None, 1) for line in ok(status).splitlines())
    assert lines["run"].startswith(sup.run_id)
    assert lines["state"].startswith("running, up ")
    assert lines["paused"] == "echo#1"
    assert "1 paused" in lines["agents"] and "2 ready" in lines["agents"]
    assert lines["approvals"] == "1 pending"

    rows = [line.split() for line in ok(agents).splitlines()]
    assert rows[0] == ["AGENT", "REPLICA", "STATE", "PID", "CALLS", "RESTARTS", "RSS", "CPU%"]
    states = {(r[0], r[1]): r[2] for r in rows[1:]}
    assert states == {("echo", "#0"): "ready", ("echo", "#1"): "paused", ("gated", "#0"): "ready"}

    text = ok(tasks)
    assert "pending approvals" in text
    [row] = [line.split() for line in text.splitlines() if line.strip().startswith(approval.id)]
    assert row[:5] == [approval.id, "-", "gated", "-", "x=1"]

    js = jstatus.json()
    assert js["run_id"] == sup.run_id
    assert js["paused"] == ["echo#1"]
    assert js["replicas"] == {"ready": 2, "paused": 1}
    assert js["approvals_pending"] == 1
    ja = {a["name"]: a for a in jagents.json()}
    assert [r["state"] for r in ja["echo"]["replicas"]] == ["ready", "paused"]
    assert all(isinstance(r["pid"], int) for r in ja["echo"]["replicas"])
    [shown] = jtasks.json()["approvals"]
    assert (shown["id"], shown["agent"], shown["args"]) == (approval.id, "gated", {"x": 1})

    pending.cancel()
    await sup.resume("echo#1")


async def test_approve_with_edited_args_and_deny_with_a_reason_name_the_ctl_peer(sup, agent_spec):
    await sup.start(agent_spec("gated", "agents:echo", approval="required"))
    first = sup.submit("gated", {"x": 1})
    second = sup.submit("gated", {"x": 1})
    a, b = (p.id for p in sup.approvals())

    approved = await ctl("approve", a, "--args", '{"x": 2}', "--reason", "looks fine")
    assert ok(approved).strip() == f"approved {a} (call to gated)"
    assert await first == {"x": 2}

    denied = await ctl("deny", b, "--reason", "not today")
    assert ok(denied).strip() == f"denied {b} (call to gated)"
    with pytest.raises(ApprovalDenied) as info:
        await second
    assert info.value.reason == "not today"
    assert info.value.by.startswith(f"ctl: uid {os.getuid()}, pid {denied.pid}")

    audit, jaudit, tail, jtail = await asyncio.gather(
        ctl("audit"),
        ctl("--json", "audit"),
        ctl("tail", "-n", "5", "--no-follow"),
        ctl("tail", "-n", "5", "--no-follow", "--json"),
    )
    lines = ok(audit).splitlines()
    [line] = [x for x in lines if " approved " in x]
    assert f"by ctl (uid {os.getuid()}, pid {approved.pid}): looks fine" in line
    [line] = [x for x in lines if " denied " in x]
    assert f"by ctl (uid {os.getuid()}, pid {denied.pid}): not today" in line
    decided = {e["action"]: e for e in jaudit.json() if e["action"] in ("approved", "denied")}
    assert decided["approved"]["args"] == {"x": 2}
    for action, peer in (("approved", approved), ("denied", denied)):
        by = decided[action]["by"]
        assert (by["via"], by["uid"], by["pid"]) == ("ctl", os.getuid(), peer.pid)
        assert "ctl" in by["cmd"]

    events = ok(tail).splitlines()
    assert 0 < len(events) <= 5
    assert any("approval_decided" in e and "denied" in e and "not today" in e for e in events)
    kinds = [json.loads(line)["kind"] for line in ok(jtail).splitlines()]
    assert kinds.count("approval_decided") == 2


async def test_refusals_and_bad_command_lines_exit_1_and_2(sup, agent_spec, tmp_path):
    await sup.start(agent_spec("gated", "agents:echo", approval="required"))
    pending = sup.submit("gated", {"x": 1})
    [approval] = sup.approvals()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    unknown, no_agent, no_task, not_object, not_json, nowhere, by_id = await asyncio.gather(
        ctl("approve", "a99"),
        ctl("pause", "nobody"),
        ctl("cancel", "no-such-task"),
        ctl("approve", approval.id, "--args", "[2]"),
        ctl("approve", approval.id, "--args", "{x: 2}"),
        ctl("status", cwd=elsewhere),
        ctl("status", "--run", sup.run_id, cwd=elsewhere),
    )
    assert unknown.rc == 1
    assert unknown.err.strip() == f"agentrt: no approval 'a99' is pending (pending: {approval.id})"
    assert no_agent.rc == 1 and "no agent named 'nobody'" in no_agent.err
    assert no_task.rc == 1 and "no running task or call 'no-such-task'" in no_task.err
    assert not_object.rc == 2 and "--args: must be a JSON object" in not_object.err
    assert not_json.rc == 2 and "--args: not valid JSON" in not_json.err
    assert nowhere.rc == 2
    assert f"no live run was started from {elsewhere.resolve()}" in nowhere.err
    assert sup.run_id in nowhere.err  # the live runs are listed
    assert ok(by_id).startswith(f"run        {sup.run_id}")

    # nothing was decided by the refused requests
    assert [p.id for p in sup.approvals()] == [approval.id]
    pending.cancel()


async def test_pause_then_resume_an_agent_or_the_run_holds_calls_in_between(sup, agent_spec):
    await sup.start(agent_spec("echo", "agents:echo", replicas=2))

    assert ok(await ctl("pause", "echo")).strip() == "paused: echo#0, echo#1"
    held = sup.submit("echo", {"n": 1})
    status = (await ctl("--json", "status")).json()
    assert status["paused"] == ["echo"]
    assert status["replicas"] == {"paused": 2}
    assert status["queued"] == 1
    assert "paused     echo" in ok(await ctl("status"))
    assert not held.done()

    assert ok(await ctl("resume", "echo")).strip() == "resumed: echo#0, echo#1"
    assert await held == {"n": 1}
    status = (await ctl("--json", "status")).json()
    assert status["paused"] == []
    assert status["replicas"] == {"ready": 2}

    # no target: the whole run
    assert ok(await ctl("pause")).strip() == "paused: echo#0, echo#1"
    status = (await ctl("--json", "status")).json()
    assert (status["state"], status["paused"]) == ("paused", ["run", "echo"])  # and every agent
    assert ok(await ctl("resume")).strip() == "resumed: echo#0, echo#1"
    assert await sup.call("echo", {"n": 2}) == {"n": 2}
    actions = [(e.action, e.target) for e in sup.audit()]
    assert actions == [("pause", "echo"), ("resume", "echo"), ("pause", "run"), ("resume", "run")]


async def test_agents_shows_an_agents_standby_and_its_pause(sup, agent_spec, logs):
    await sup.start(agent_spec("s", "standby_agents:who", standby=True))
    pid = (await logs.wait_for("standby_ready", agent="s"))["pid"]
    rows = [line.split() for line in ok(await ctl("agents")).splitlines()]
    assert [r[:4] for r in rows[1:]] == [
        ["s", "#0", "ready", str((await sup.status())[0].pid)],
        ["s", "standby", "ready", str(pid)],
    ]
    await sup.pause("s")
    [shown] = (await ctl("--json", "agents")).json()
    assert shown["standby"] == {"pid": pid, "state": "paused"}
    await sup.resume("s")
    [shown] = (await ctl("--json", "agents")).json()
    assert shown["standby"] == {"pid": pid, "state": "ready"}


async def test_cancel_a_running_call_by_number_and_an_agents_calls(sup, agent_spec, make_gate):
    gate = make_gate("started")
    await sup.start(agent_spec("slow", "agents:report_and_sleep", concurrency=2))
    running = sup.submit("slow", {"fifo": gate.path, "tag": "one"})
    assert (await gate.read_line()).startswith("one ")
    [call] = (await ctl("--json", "tasks")).json()["calls"]
    assert call["agent"] == "slow"

    cancelled = await ctl("cancel", str(call["id"]), "--reason", "too slow")
    assert ok(cancelled).strip() == f"cancelled: {call['id']}"
    with pytest.raises(CallCancelled, match="too slow"):
        await running

    calls = [sup.submit("slow", {"fifo": gate.path, "tag": f"c{i}"}) for i in range(3)]
    for _ in range(2):  # two run (concurrency 2), the third waits in the queue
        assert (await gate.read_line()).startswith("c")
    out = ok(await ctl("cancel", "--agent", "slow"))
    assert out.startswith("cancelled: ") and len(out.split(",")) == 3
    for fut in calls:
        with pytest.raises(CallCancelled):
            await fut
    assert [e.target for e in sup.audit() if e.action == "cancel"] == [
        f"task {call['id']}",
        "agent slow",
    ]


async def test_graph_tasks_awaiting_approval_and_paused_then_approved_and_cancelled(
    sup, agent_spec, make_gate
):
    gate = make_gate("started")
    await sup.start(agent_spec("echo", "agents:echo"))
    await sup.start(agent_spec("slow", "agents:report_and_sleep"))
    g = Graph()
    g.add("fetch", "echo", args={"url": "u"}, approval="required")
    g.add("hold", "slow", args={"fifo": gate.path, "tag": "hold"})
    run = Run(sup, g).start()
    assert (await gate.read_line()).startswith("hold ")
    ok(await ctl("pause", "slow"))

    text = ok(await ctl("tasks"))
    [fetch] = [line.split() for line in text.splitlines() if line.strip().startswith("fetch")]
    [hold] = [line.split() for line in text.splitlines() if line.strip().startswith("hold")]
    [approval] = sup.approvals()
    assert fetch == ["fetch", "echo", "awaiting_approval", approval.id]
    assert hold[:3] == ["hold", "slow", "paused"]
    assert "1 paused" in ok(await ctl("status"))

    assert ok(await ctl("approve", approval.id)).strip() == f"approved {approval.id} (task fetch)"
    assert ok(await ctl("cancel", "hold")).strip() == "cancelled: hold"
    ok(await ctl("resume"))
    result = await run.wait()
    assert result.tasks["fetch"].status == "ok"
    assert result.tasks["fetch"].result == {"url": "u"}
    assert result.tasks["hold"].status == "cancelled"


async def test_stop_ends_the_supervisor_and_a_following_tail(sup, agent_spec):
    await sup.start(agent_spec("echo", "agents:echo"))
    tail = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentrt.cli",
        "ctl",
        "tail",
        "-n",
        "100",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert tail.stdout is not None
    try:
        async with asyncio.timeout(CTL_TIMEOUT):
            first = await tail.stdout.readline()  # it is connected: the history came
            assert b"replica_ready" in first

            stop = await ctl("stop", "--reason", "done for today")
            assert ok(stop).strip() == f"stopping run {sup.run_id}"
            await sup.wait_closed()
            rest, _err = await tail.communicate()  # the tail ends with the run
    finally:
        if tail.returncode is None:
            tail.kill()
            await tail.wait()
    assert tail.returncode == 0
    lines = (first + rest).decode().splitlines()
    assert all(line[2] == ":" and line[8] == "." for line in lines)  # HH:MM:SS.mmm  kind ...
    [entry] = [e for e in sup.audit() if e.action == "stop"]
    assert (entry.by.via, entry.by.pid, entry.reason) == ("ctl", stop.pid, "done for today")


async def test_stop_now_kills_every_replica_at_once(sup, agent_spec, make_gate):
    gate = make_gate("started")
    await sup.start(agent_spec("echo", "agents:echo", replicas=2))
    await sup.start(agent_spec("slow", "agents:report_and_sleep"))
    running = sup.submit("slow", {"fifo": gate.path})
    await gate.read_line()
    pids = [r.pid for r in await sup.status()]
    assert len(pids) == 3 and all(pids)

    out = ok(await ctl("stop", "--now"))
    assert out.strip() == f"killing every agent process of run {sup.run_id}; the supervisor stops"
    async with asyncio.timeout(CTL_TIMEOUT):
        await sup.wait_closed()
    assert [pid for pid in pids if psutil.pid_exists(pid)] == []
    with pytest.raises(Exception, match="stopped by ctl"):
        await running
    assert [e.action for e in sup.audit()][-1] == "stop_now"


async def test_cancel_run_cancels_the_graph_run_here_or_by_run_id_from_elsewhere(
    sup, agent_spec, make_gate, tmp_path
):
    gate = make_gate("started")
    await sup.start(agent_spec("slow", "agents:report_and_sleep", concurrency=2))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for args, cwd in ((["--run"], tmp_path), (["--run", sup.run_id], elsewhere)):
        g = Graph()
        g.add("hold", "slow", args={"fifo": gate.path, "tag": "hold"})
        run = Run(sup, g).start()
        assert (await gate.read_line()).startswith("hold ")
        out = ok(await ctl("cancel", *args, "--reason", "enough", cwd=cwd))
        assert out.strip() == f"cancelled: {run.run_id}"
        result = await run.wait()  # cancelled by a person: the result says so
        assert result is run.result and result.status == "cancelled"
        hold = run.result.tasks["hold"]
        assert hold.status == "cancelled"
        assert "cancelled by ctl" in str(hold.reason or hold.error)
        assert "enough" in str(hold.reason or hold.error)
    assert [e.target for e in sup.audit() if e.action == "cancel"] == ["run", f"run {sup.run_id}"]
    no_run = await ctl("cancel", "--run")
    assert no_run.rc == 1 and "no graph run is going on" in no_run.err
