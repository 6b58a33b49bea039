"""Calls through a real Supervisor: targets, dispatch, backpressure, errors, status, stop."""

from __future__ import annotations

import asyncio
import os

import psutil
import pytest

from agentrt import (
    CallCancelled,
    CallError,
    RemoteError,
    ReplicaStatus,
    SupervisorClosed,
    UnknownAgent,
)

# --- call targets ----------------------------------------------------------------


async def test_sync_function_agent_returns_its_kwargs(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo"))
        assert await sup.call("echo", {"a": 1, "b": [1, 2], "c": {"d": "e"}}) == {
            "a": 1,
            "b": [1, 2],
            "c": {"d": "e"},
        }
        assert await sup.call("echo") == {}


async def test_async_function_agent_is_awaited(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("aecho", "agents:aecho"))
        assert await sup.call("aecho", {"x": "y"}) == {"x": "y"}


@pytest.mark.parametrize("spin", [0, "200us", "5ms"])
async def test_replicas_serve_streams_of_calls_whether_they_spin_or_sleep(
    make_supervisor, agent_spec, spin
):
    # A replica polls for its next call after answering (spin) or sleeps at
    # once (0); sync and async replicas must see every frame either way,
    # whether calls come back to back or after the replica went to sleep (a
    # new replica sleeps until its first call; so does one after a pause).
    async with make_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo", spin=spin))
        await sup.start(agent_spec("aecho", "agents:aecho", spin=spin))
        for name in ("echo", "aecho"):
            for i in range(50):
                assert await sup.call(name, {"i": i}) == {"i": i}
            got = await asyncio.gather(*(sup.call(name, {"i": i}) for i in range(200)))
            assert got == [{"i": i} for i in range(200)]


async def test_class_agent_methods_are_targets_and_keep_state(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("counter", "agents:Counter"))
        assert [await sup.call("counter", {"by": 2}, method="incr") for _ in range(3)] == [2, 4, 6]
        assert await sup.call("counter", method="get") == 6  # an async method


async def test_class_agent_state_is_per_replica(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("counter", "agents:PidCounter", replicas=2))
        results = await asyncio.gather(*(sup.call("counter", method="incr") for _ in range(8)))
        by_pid: dict[int, list[int]] = {}
        for r in results:
            by_pid.setdefault(r["pid"], []).append(r["n"])
        assert len(by_pid) == 2
        for counts in by_pid.values():
            # each replica counts its own calls from 1, with no gap or repeat
            assert sorted(counts) == list(range(1, len(counts) + 1))


async def test_unknown_method_is_a_remote_lookup_error(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("counter", "agents:Counter"))
        with pytest.raises(RemoteError) as info:
            await sup.call("counter", method="nope")
        assert info.value.type_name == "LookupError"
        assert "'incr'" in info.value.remote_message
        assert await sup.call("counter", method="incr") == 1


# --- replicas and dispatch --------------------------------------------------------


async def test_each_replica_has_its_own_process_group_session_and_cwd(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("who", "agents:whoami", replicas=3))
        # Submitted in one go, each call goes to a different idle replica.
        infos = await asyncio.gather(*(sup.submit("who") for _ in range(3)))
        pids = {i["pid"] for i in infos}
        assert len(pids) == 3
        assert os.getpid() not in pids
        for info in infos:
            assert info["pgid"] == info["pid"]  # its own process group
            assert info["sid"] == info["pid"]  # and its own session
            assert info["sid"] != os.getsid(0)
        cwds = {i["cwd"] for i in infos}
        assert len(cwds) == 3
        assert os.getcwd() not in cwds
        status_pids = {s.pid for s in await sup.status()}
        assert status_pids == pids
    # private workdirs are removed at close
    assert not any(await asyncio.to_thread(lambda: [os.path.exists(c) for c in cwds]))


async def test_concurrent_calls_spread_over_the_least_loaded_replicas(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("who", "agents:whoami", replicas=3, queue=4))
        # Dispatch happens in submit(), before any answer can come back:
        # least-loaded means 2 calls per replica.
        futs = [sup.submit("who") for _ in range(6)]
        infos = await asyncio.gather(*futs)
        per_pid: dict[int, int] = {}
        for i in infos:
            per_pid[i["pid"]] = per_pid.get(i["pid"], 0) + 1
        assert sorted(per_pid.values()) == [2, 2, 2]


async def test_sequential_calls_use_the_first_idle_replica(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("who", "agents:whoami", replicas=2))
        pids = {(await sup.call("who"))["pid"] for _ in range(4)}
        first = next(s.pid for s in await sup.status() if s.replica == 0)
        assert pids == {first}


async def test_submit_returns_a_future_of_the_result(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo"))
        fut = sup.submit("echo", {"n": 1})
        assert isinstance(fut, asyncio.Future)
        assert await fut == {"n": 1}
        assert fut.done() and fut.result() == {"n": 1}


async def test_backpressure_one_call_at_a_time_in_submission_order(make_supervisor, agent_spec):
    n = 25
    async with make_supervisor() as sup:
        await sup.start(
            agent_spec("counter", "agents:PidCounter", replicas=1, concurrency=1, queue=0)
        )
        finished: list[int] = []
        futs = [sup.submit("counter", method="incr") for _ in range(n)]
        for i, f in enumerate(futs):
            f.add_done_callback(lambda _f, i=i: finished.append(i))
        max_inflight = 0
        pending = set(futs)
        while pending:
            st = await sup.status()
            max_inflight = max(max_inflight, sum(s.inflight for s in st))
            assert all(s.inflight <= 1 for s in st)
            _done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        results = [f.result() for f in futs]
    assert max_inflight <= 1
    assert finished == list(range(n))  # answered in submission order
    assert len({r["pid"] for r in results}) == 1
    assert [r["n"] for r in results] == list(range(1, n + 1))  # run in order, each once


async def test_backpressure_holds_calls_in_the_supervisor_not_the_replica(
    make_supervisor, agent_spec, make_gate
):
    gate = make_gate()
    async with make_supervisor() as sup:
        await sup.start(agent_spec("gate", "agents:gate", concurrency=1, queue=0))
        first = sup.submit("gate", {"path": gate.path})
        rest = [sup.submit("gate", {"path": gate.path}) for _ in range(3)]
        [st] = await sup.status()
        assert st.inflight == 1  # one running, three waiting on our side
        assert st.state == "busy"
        for _ in range(4):
            gate.release("go")
        results = [await first, *await asyncio.gather(*rest)]
    assert [r["data"] for r in results] == ["go"] * 4


# --- errors ------------------------------------------------------------------------


async def test_remote_error_carries_type_message_and_traceback(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("fail", "agents:fail"))
        [before] = await sup.status()
        with pytest.raises(RemoteError) as info:
            await sup.call("fail", {"message": "kaputt"})
        err = info.value
        assert isinstance(err, CallError)
        assert err.type_name == "ValueError"
        assert err.remote_message == "kaputt"
        assert "Traceback" in err.traceback
        assert "ValueError: kaputt" in err.traceback
        assert "in fail" in err.traceback
        assert err.agent == "fail"
        assert err.pid == before.pid
        assert err.call_id is not None
        assert err.to_dict()["remote_type"] == "ValueError"
        [after] = await sup.status()
        assert (after.pid, after.restarts) == (before.pid, 0)  # an exception is not a crash


async def test_unknown_agent_raises_for_call_submit_and_stop(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo"))
        with pytest.raises(UnknownAgent, match="nope"):
            await sup.call("nope")
        with pytest.raises(UnknownAgent):
            sup.submit("nope")
        with pytest.raises(LookupError):
            await sup.stop("nope")
        assert await sup.call("echo", {"ok": True}) == {"ok": True}


async def test_unencodable_arguments_fail_the_call_not_the_replica(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo"))
        with pytest.raises(TypeError):
            await sup.call("echo", {"x": object()})
        assert await sup.call("echo", {"x": 1}) == {"x": 1}
        [st] = await sup.status()
        assert st.restarts == 0


# --- status and stop ---------------------------------------------------------------


async def test_status_reports_each_replica(make_supervisor, agent_spec, make_gate):
    gate = make_gate()
    async with make_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo", replicas=2))
        await sup.start(agent_spec("gate", "agents:gate"))
        st = await sup.status()
        assert all(isinstance(s, ReplicaStatus) for s in st)
        assert [(s.agent, s.replica) for s in st] == [("echo", 0), ("echo", 1), ("gate", 0)]
        for s in st:
            assert s.state == "ready"
            assert isinstance(s.pid, int) and psutil.pid_exists(s.pid)
            assert s.restarts == 0
            assert s.inflight == 0
            assert s.rss is not None and s.rss > 0
            assert s.cpu_percent is not None and s.cpu_percent >= 0
            assert s.uptime is not None and s.uptime >= 0
        fut = sup.submit("gate", {"path": gate.path})
        busy = next(s for s in await sup.status() if s.agent == "gate")
        assert (busy.state, busy.inflight) == ("busy", 1)
        gate.release()
        assert (await fut)["data"] == "go"
        idle = next(s for s in await sup.status() if s.agent == "gate")
        assert (idle.state, idle.inflight) == ("ready", 0)


async def test_stop_ends_the_agent_and_fails_its_waiting_calls(
    make_supervisor, agent_spec, make_gate
):
    gate = make_gate()
    async with make_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo"))
        await sup.start(agent_spec("gate", "agents:gate", concurrency=1, queue=0))
        [pid] = [s.pid for s in await sup.status() if s.agent == "gate"]
        proc = psutil.Process(pid)
        running = sup.submit("gate", {"path": gate.path})
        waiting = sup.submit("gate", {"path": gate.path})
        await sup.stop("gate")
        assert sup.agents == ["echo"]
        with pytest.raises(CallCancelled):
            await waiting
        with pytest.raises(CallCancelled):
            await running
        _gone, alive = await asyncio.to_thread(psutil.wait_procs, [proc], 2)
        assert not alive
        with pytest.raises(UnknownAgent):
            await sup.call("gate", {"path": gate.path})
        assert [s.agent for s in await sup.status()] == ["echo"]
        assert await sup.call("echo", {"still": "here"}) == {"still": "here"}
        # the name is free again
        await sup.start(agent_spec("gate", "agents:echo"))
        assert await sup.call("gate", {"a": 1}) == {"a": 1}


async def test_close_stops_every_replica(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo", replicas=3))
        await sup.start(agent_spec("aecho", "agents:aecho", replicas=2))
        procs = [psutil.Process(s.pid) for s in await sup.status()]
        assert len(procs) == 5
    _gone, alive = await asyncio.to_thread(psutil.wait_procs, procs, 2)
    assert not alive


async def test_map_returns_every_result_in_order_across_replicas(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo", replicas=2))
        await sup.start(agent_spec("whoami", "agents:whoami", replicas=2))
        got = await sup.map("echo", ({"i": i} for i in range(500)))
        assert got == [{"i": i} for i in range(500)]
        assert await sup.map("echo", []) == []
        pids = await sup.map("whoami", [None] * 40)
        assert len({p["pid"] for p in pids}) == 2  # both replicas served


async def test_map_raises_the_first_failure_or_returns_it_in_place(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("f", "agents:fail_if", replicas=2))
        items = [{"value": i, "bad": 3} for i in range(8)]
        got = await sup.map("f", items, return_exceptions=True)
        assert isinstance(got[3], RemoteError)
        assert [g for i, g in enumerate(got) if i != 3] == [i for i in range(8) if i != 3]
        with pytest.raises(RemoteError):
            await sup.map("f", items)
        # An argument msgpack cannot encode fails that call only.
        got = await sup.map("f", [{"value": 1}, {"value": object()}], return_exceptions=True)
        assert got[0] == 1 and isinstance(got[1], TypeError)
        # The replicas are still there and serve the next map.
        assert await sup.map("f", [{"value": 5}]) == [5]


async def test_cancelling_a_map_cancels_its_calls_in_the_replicas(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        # One replica with room for 4 calls at once, and a long cancel_grace.
        # The barrier needs all 4 places at the same time, which it only has
        # once the replica itself ended the cancelled calls (a kill would come
        # after 30 s, past the calls' 20 s timeout).
        await sup.start(agent_spec("m", "agents:Meeting", concurrency=4, queue=0, cancel_grace=30))
        task = asyncio.create_task(sup.map("m", [{"seconds": 3600}] * 4, method="sleep"))
        await asyncio.sleep(0)  # the map queues its calls: they fill the replica
        assert [r.inflight for r in await sup.status() if r.agent == "m"] == [4]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await sup.map("m", [{"n": 4}] * 4, method="barrier") == [4] * 4
        # (a chunk's own end follows its items' answers: one call more, whose
        # answer comes after them on the replica's stream, and they are in)
        assert await sup.call("m", {"n": 1}, method="barrier") == 1
        after = [r for r in await sup.status() if r.agent == "m"]
        assert [(r.restarts, r.inflight) for r in after] == [(0, 0)]


async def test_cancelling_a_submitted_future_cancels_the_call_in_its_replica(
    make_supervisor, agent_spec, make_gate, logs
):
    gate = make_gate()
    async with make_supervisor() as sup:
        await sup.start(agent_spec("blocked", "control_agents:sleep_in_child", cancel_grace=0.1))
        [st] = await sup.status()
        fut = sup.submit("blocked", {"fifo": gate.path})
        await gate.read_line()  # it runs (a call cancelled before it starts never runs)
        fut.cancel()
        # the replica was told (Cancel); a sync call blocked in a wait cannot
        # stop, so after cancel_grace its process group is killed
        killed = await logs.wait_for("replica_killed_for_deadline", agent="blocked")
        assert killed["pid"] == st.pid
        await logs.wait_for("replica_ready", agent="blocked", generation=1)


@pytest.mark.parametrize("how", ["stop", "close"])
async def test_calls_queued_in_a_replica_are_answered_when_its_agent_stops(
    how, make_supervisor, agent_spec
):
    sup = make_supervisor()
    await sup.open()
    try:
        await sup.start(agent_spec("s", "agents:sleep", concurrency=1, queue=3, timeout=None))
        futs = [sup.submit("s", {"seconds": 30}) for _ in range(4)]  # all four in the replica
        [st] = await sup.status()
        assert st.inflight == 4
        await (sup.stop("s") if how == "stop" else sup.close())
        assert all(f.done() for f in futs)
        assert all(isinstance(f.exception(), CallCancelled | SupervisorClosed) for f in futs)
    finally:
        await sup.close()
