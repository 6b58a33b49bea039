"""A replacement takes a call waiting for its agent before it says Ready.

The call is in its pipe when it becomes ready, so the first answer after a
crash costs no round trip through the supervisor; a replacement that never
becomes ready ran none of its calls, which go back to the queue.  Only a
replica that started quickly last time does so (``_EARLY_WITHIN``): these
tests set that bound, so that a loaded machine's slow first start decides
nothing here.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from agentrt import CallCancelled, CallTimeout, SupervisorClosed
from agentrt.supervisor import pool


@pytest.fixture(autouse=True)
def _any_start_is_quick(monkeypatch):
    monkeypatch.setattr(pool, "_EARLY_WITHIN", 3600.0)


async def _held_replacement(sup, agent_spec, report, gate, **fields):
    """Start ``h`` (one replica), kill it, wait until its replacement waits at
    ``gate`` (from a spare: its pipes were up before it ran a line): its pid."""
    await sup.start(
        agent_spec(
            "h",
            "agents:HeldReplacement",
            env={"REPORT": report.path, "GATE": gate.path},
            **fields,
        )
    )
    await sup._launcher.client.spares_forked(1)
    (first,) = await sup.status()
    os.kill(first.pid, signal.SIGKILL)
    line = await report.read_line()
    assert line.startswith("starting ")
    return int(line.split()[1])


async def test_a_replacement_takes_a_waiting_call_before_it_is_ready(
    make_supervisor, agent_spec, make_gate
):
    report, gate = make_gate("report"), make_gate("gate")
    async with make_supervisor(spares=2, intensity=100) as sup:
        pid = await _held_replacement(sup, agent_spec, report, gate)
        answer = sup.submit("h")
        (st,) = await sup.status()
        assert (st.state, st.pid, st.inflight) == ("starting", pid, 1)  # in its pipe already
        gate.release("go")
        assert await answer == pid
        (st,) = await sup.status()
        assert (st.state, st.inflight) == ("ready", 0)


async def test_a_call_sent_to_a_replacement_that_fails_to_start_is_requeued_unspent(
    make_supervisor, agent_spec, make_gate, logs
):
    """It never said Ready, so it ran none of its calls: a call with no
    retries left goes back to the queue, and the next replacement answers it."""
    report, gate = make_gate("report"), make_gate("gate")
    async with make_supervisor(spares=2, intensity=100) as sup:
        failing = await _held_replacement(sup, agent_spec, report, gate, retries=0)
        answer = sup.submit("h")
        gate.release("no")  # its start fails
        await logs.wait_for("replica_died", agent="h", cause="StartupError", pid=failing)
        assert not answer.done()
        line = await report.read_line()  # the next replacement waits in turn
        # A failed start is not a quick one: the next takes no call before its Ready.
        (st,) = await sup.status()
        assert (st.state, st.pid, st.inflight) == ("starting", int(line.split()[1]), 0)
        gate.release("go")
        assert await answer == int(line.split()[1])


async def test_a_replacement_killed_before_ready_leaves_its_call_to_the_next(
    make_supervisor, agent_spec, make_gate, logs
):
    """Killed for what it sent before its Ready (a frame that cannot be read):
    the slot goes on restarting, and the call it held is answered by the next."""
    report, gate = make_gate("report"), make_gate("gate")
    async with make_supervisor(spares=2, intensity=100) as sup:
        garbled = await _held_replacement(sup, agent_spec, report, gate, retries=0)
        answer = sup.submit("h")
        gate.release("garbage")
        died = await logs.wait_for("replica_died", agent="h", cause="StartupError", pid=garbled)
        assert "ProtocolViolation" in died["reason"]
        line = await report.read_line()
        gate.release("go")
        async with asyncio.timeout(30):
            assert await answer == int(line.split()[1])
        assert not logs.find("replica_loop_failed")


async def test_a_resume_starts_no_cancel_grace_for_a_replacement_still_starting(
    make_supervisor, agent_spec, make_gate
):
    report, gate = make_gate("report"), make_gate("gate")
    async with make_supervisor(spares=2, intensity=100) as sup:
        pid = await _held_replacement(sup, agent_spec, report, gate, cancel_grace=1.0)
        with pytest.raises(CallTimeout):  # withdrawn: a Cancel follows it into the pipe
            await sup.call("h", timeout=0.05)
        (slot,) = sup._pool.agents["h"].slots
        (call,) = slot.inflight.values()
        assert call.timer is None
        await sup.pause("h")
        await sup.resume("h")
        assert call.timer is None  # no grace started before its Ready
        gate.release("go")
        assert await sup.call("h") == pid  # the same process: it was not killed


async def test_a_call_past_its_deadline_does_not_kill_a_replacement_still_starting(
    make_supervisor, agent_spec, make_gate, logs
):
    """``cancel_grace`` counts from the replica's Ready: before it, it has not
    read the call, so it cannot be ignoring the Cancel."""
    report, gate = make_gate("report"), make_gate("gate")
    async with make_supervisor(spares=2, intensity=100) as sup:
        pid = await _held_replacement(sup, agent_spec, report, gate, cancel_grace=1.0)
        with pytest.raises(CallTimeout):
            await sup.call("h", timeout=0.05)
        (slot,) = sup._pool.agents["h"].slots
        assert [c.timer for c in slot.inflight.values()] == [None]  # no grace running yet
        gate.release("go")
        assert await sup.call("h") == pid  # the same process: it was not killed
        assert not logs.find("replica_killed_for_deadline")


async def test_a_replacement_whose_last_start_was_slow_takes_no_call_before_ready(
    make_supervisor, agent_spec, make_gate, monkeypatch
):
    """An agent that takes long to start must not hold a call that another
    replica may be free for sooner: the call waits in the queue."""
    monkeypatch.setattr(pool, "_EARLY_WITHIN", 0.0)  # every start is slower than this
    report, gate = make_gate("report"), make_gate("gate")
    async with make_supervisor(spares=2, intensity=100) as sup:
        pid = await _held_replacement(sup, agent_spec, report, gate)
        answer = sup.submit("h")
        (st,) = await sup.status()
        assert (st.state, st.pid, st.inflight) == ("starting", pid, 0)
        gate.release("go")
        assert await answer == pid


async def test_closing_while_a_replacement_holds_a_call_cancels_the_call(
    make_supervisor, agent_spec, make_gate
):
    """Its replica was stopped, not failed: the caller is told so, as are the
    callers whose calls still waited in the queue."""
    report, gate = make_gate("report"), make_gate("gate")
    async with make_supervisor(spares=2, intensity=100) as sup:
        await _held_replacement(sup, agent_spec, report, gate)
        held, queued = sup.submit("h"), sup.submit("h")
        (st,) = await sup.status()
        assert st.inflight == 1
    for answer in (held, queued):
        assert isinstance(answer.exception(), CallCancelled | SupervisorClosed)
