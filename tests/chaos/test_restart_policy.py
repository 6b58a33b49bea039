"""Retries, restart strategies, restart intensity, backoff and restart types.

Crashes are on demand (``agents:whoami_or_exit``, ``agents:crash_once``); a
healthy ``agents:echo`` runs next to them and must keep answering.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agentrt import AgentCrashed, AgentFailed

CRASH = {"code": 3}


def _journal(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


async def _pids(sup) -> dict[tuple[str, int], int | None]:
    return {(s.agent, s.replica): s.pid for s in await sup.status()}


# --- retries -------------------------------------------------------------------------------


async def test_retry_reruns_a_call_whose_replica_died_on_a_fresh_replica(
    make_supervisor, agent_spec, healthy, tmp_path
):
    marker, journal = tmp_path / "marker", tmp_path / "journal"
    async with make_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo"))
        await sup.start(agent_spec("flaky", "agents:crash_once"))
        fut = sup.submit("flaky", {"marker": str(marker), "journal": str(journal)}, retries=1)
        delivered: list[object] = []
        fut.add_done_callback(lambda f: delivered.append(f.result()))
        result = await fut
        crashed_pid = int(marker.read_text())
        assert result["pid"] != crashed_pid
        # run twice (crash, success), answered once
        assert _journal(journal) == [crashed_pid, result["pid"]]
        assert delivered == [result]
        [st] = [s for s in await sup.status() if s.agent == "flaky"]
        assert st.restarts == 1
        assert st.pid == result["pid"]
        await healthy(sup)


async def test_without_retries_the_call_fails_with_the_typed_cause(
    make_supervisor, agent_spec, healthy, tmp_path
):
    marker, journal = tmp_path / "marker", tmp_path / "journal"
    args = {"marker": str(marker), "journal": str(journal)}
    async with make_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo"))
        await sup.start(agent_spec("flaky", "agents:crash_once"))
        with pytest.raises(AgentCrashed) as info:
            await sup.call("flaky", args, retries=0)
        assert info.value.exit_code == 5
        assert info.value.pid == int(marker.read_text())
        assert len(_journal(journal)) == 1  # not run again
        await healthy(sup)
        # the caller may try again: the fresh replica answers
        assert (await sup.call("flaky", args))["pid"] != info.value.pid
        assert len(_journal(journal)) == 2


async def test_spare_retries_are_not_used_once_a_call_succeeds(
    make_supervisor, agent_spec, healthy, tmp_path
):
    marker, journal = tmp_path / "marker", tmp_path / "journal"
    async with make_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo"))
        await sup.start(agent_spec("flaky", "agents:crash_once"))
        result = await sup.call(
            "flaky", {"marker": str(marker), "journal": str(journal)}, retries=3
        )
        await sup.call("flaky", {"marker": str(marker)})  # any duplicate run would be done
        assert _journal(journal) == [int(marker.read_text()), result["pid"]]
        await healthy(sup)


async def test_many_concurrent_calls_with_one_retry_each_crash_once_then_succeed_once(
    make_supervisor, agent_spec, healthy, tmp_path
):
    n = 8
    async with make_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo"))
        await sup.start(agent_spec("flaky", "agents:crash_once", replicas=2, intensity=100))
        args = [
            {"marker": str(tmp_path / f"m{i}"), "journal": str(tmp_path / f"j{i}")}
            for i in range(n)
        ]
        futs = [sup.submit("flaky", a, retries=1) for a in args]
        counts = [0] * n
        for i, f in enumerate(futs):
            f.add_done_callback(lambda _f, i=i: counts.__setitem__(i, counts[i] + 1))
        results = await asyncio.gather(*futs, healthy(sup))
        assert counts == [1] * n
        for i, r in enumerate(results[:n]):
            # first run crashed its replica, the retry answered
            runs = _journal(tmp_path / f"j{i}")
            assert len(runs) == 2
            assert runs[1] == r["pid"] != runs[0]
        await healthy(sup)


async def test_calls_queued_in_a_crashed_replica_are_requeued_without_using_an_attempt(
    make_supervisor, agent_spec, healthy, tmp_path
):
    marker, journal = tmp_path / "marker", tmp_path / "journal"
    ok_marker = tmp_path / "ok"
    ok_marker.write_text("already crashed")
    async with make_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo"))
        await sup.start(agent_spec("flaky", "agents:crash_once", concurrency=1, queue=4))
        [st] = [s for s in await sup.status() if s.agent == "flaky"]
        crashing = sup.submit("flaky", {"marker": str(marker)}, retries=0)
        # queued in the same replica behind the crashing call, retries=0
        queued = [
            sup.submit("flaky", {"marker": str(ok_marker), "journal": str(journal)}, retries=0)
            for _ in range(3)
        ]
        with pytest.raises(AgentCrashed):
            await crashing
        results = await asyncio.gather(*queued)
        await healthy(sup)
        crashed_pid = int(marker.read_text())
        assert st.pid == crashed_pid
        assert all(r["pid"] != crashed_pid for r in results)
        assert len(_journal(journal)) == 3  # each ran exactly once


async def test_result_computed_before_a_crash_in_the_same_batch_is_delivered(
    make_supervisor, agent_spec, healthy, make_gate, tmp_path
):
    gate = make_gate()
    marker, journal = tmp_path / "marker", tmp_path / "journal"
    async with make_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo"))
        await sup.start(agent_spec("box", "agents:Toolbox", concurrency=1, queue=4))
        blocked = sup.submit("box", {"path": gate.path}, method="gate")
        # Both wait in the replica's pipe while it is blocked: it reads them together.
        answers = sup.submit("box", {"path": str(journal)}, method="journal", retries=0)
        crashes = sup.submit("box", {"marker": str(marker)}, method="crash_once", retries=0)
        [st] = [s for s in await sup.status() if s.agent == "box"]
        assert st.inflight == 3
        gate.release()
        assert (await blocked)["data"] == "go"
        results = await asyncio.gather(answers, crashes, return_exceptions=True)
        await healthy(sup)
        assert _journal(journal) == [st.pid]  # it did run, once, and answered...
        assert results[0] == {"pid": st.pid}  # ...so its answer must arrive
        assert isinstance(results[1], AgentCrashed), results[1]
        assert results[1].exit_code == 5
        assert int(marker.read_text()) == st.pid


# --- restart strategies --------------------------------------------------------------------


async def _three_agents(sup, agent_spec):
    # declaration order: first#0, victim#0, victim#1, last#0
    await sup.start(agent_spec("first", "agents:whoami_or_exit"))
    await sup.start(agent_spec("victim", "agents:whoami_or_exit", replicas=2))
    await sup.start(agent_spec("last", "agents:whoami_or_exit"))


async def _crash_victim(sup, logs):
    """Crash victim#0 (the first idle replica) and wait for its replacement."""
    with pytest.raises(AgentCrashed):
        await sup.call("victim", CRASH)
    await logs.wait_for("replica_ready", agent="victim", replica=0, generation=1)


async def _answer_all(sup):
    for agent in ("first", "victim", "last"):
        assert "pid" in await sup.call(agent, retries=1)


async def test_one_for_one_restarts_only_the_crashed_replica(
    make_supervisor, agent_spec, healthy, logs
):
    async with make_supervisor(strategy="one_for_one") as sup:
        await sup.start(agent_spec("echo", "agents:echo"))
        await _three_agents(sup, agent_spec)
        before = await _pids(sup)
        await _crash_victim(sup, logs)
        after = await _pids(sup)
        changed = {k for k in before if before[k] != after[k]}
        assert changed == {("victim", 0)}
        assert not logs.find("replica_restart_by_strategy")
        await _answer_all(sup)
        await healthy(sup)


async def test_one_for_all_restarts_every_replica(make_supervisor, agent_spec, healthy, logs):
    async with make_supervisor(strategy="one_for_all") as sup:
        await sup.start(agent_spec("echo", "agents:echo"))
        await _three_agents(sup, agent_spec)
        before = await _pids(sup)
        await _crash_victim(sup, logs)
        for agent, replica in before:
            await logs.wait_for("replica_ready", agent=agent, replica=replica, generation=1)
        after = await _pids(sup)
        assert all(after[k] not in (None, before[k]) for k in before)
        st = {(s.agent, s.replica): s for s in await sup.status()}
        assert all(s.restarts == 1 for s in st.values())
        await _answer_all(sup)
        await healthy(sup)


async def test_rest_for_one_restarts_the_replicas_declared_after_the_crashed_one(
    make_supervisor, agent_spec, healthy, logs
):
    async with make_supervisor(strategy="rest_for_one") as sup:
        await _three_agents(sup, agent_spec)
        await sup.start(agent_spec("echo", "agents:echo"))  # declared last: restarted too
        before = await _pids(sup)
        await _crash_victim(sup, logs)
        later = [("victim", 1), ("last", 0), ("echo", 0)]
        for agent, replica in later:
            await logs.wait_for("replica_ready", agent=agent, replica=replica, generation=1)
        after = await _pids(sup)
        changed = {k for k in before if before[k] != after[k]}
        assert changed == {("victim", 0), *later}
        await _answer_all(sup)
        await healthy(sup)


# --- intensity and backoff -----------------------------------------------------------------


async def test_more_crashes_than_intensity_within_period_fail_the_agent(
    make_supervisor, agent_spec, healthy, logs
):
    async with make_supervisor(on_agent_failure="continue") as sup:
        await sup.start(agent_spec("echo", "agents:echo"))
        await sup.start(agent_spec("crashy", "agents:whoami_or_exit", intensity=2, period=30))
        for _ in range(3):  # the 3rd crash is one more than intensity allows
            with pytest.raises(AgentCrashed):
                await sup.call("crashy", CRASH)
        failed = await logs.wait_for("agent_failed", agent="crashy")
        assert "more than 2 restarts" in failed["reason"]
        with pytest.raises(AgentFailed) as info:
            await sup.call("crashy")
        assert info.value.agent == "crashy"
        with pytest.raises(AgentFailed):
            sup.submit("crashy")
        [st] = [s for s in await sup.status() if s.agent == "crashy"]
        assert st.state == "failed"
        assert st.pid is None
        await healthy(sup)


async def test_intensity_counts_crashes_within_period_only_up_to_the_limit(
    make_supervisor, agent_spec, healthy, logs
):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo"))
        await sup.start(agent_spec("crashy", "agents:whoami_or_exit", intensity=2, period=30))
        for generation in (1, 2):  # exactly intensity crashes: still restarted
            with pytest.raises(AgentCrashed):
                await sup.call("crashy", CRASH)
            await logs.wait_for("replica_ready", agent="crashy", generation=generation)
        assert "pid" in await sup.call("crashy")
        assert not logs.find("agent_failed")
        await healthy(sup)


async def test_calls_pending_when_the_agent_fails_fail_with_agent_failed(
    make_supervisor, agent_spec, healthy, logs
):
    async with make_supervisor(on_agent_failure="continue") as sup:
        await sup.start(agent_spec("echo", "agents:echo"))
        await sup.start(
            agent_spec(
                "crashy", "agents:whoami_or_exit", intensity=2, period=30, concurrency=1, queue=0
            )
        )
        # one call in the replica at a time: three crash it, two wait behind them
        futs = [sup.submit("crashy", CRASH) for _ in range(5)]
        await logs.wait_for("agent_failed", agent="crashy")
        # failed in the same step that gave up: none is left waiting
        pending = [f for f in futs if not f.done()]
        assert not pending, f"{len(pending)} calls left pending after the agent failed"
        errors = [f.exception() for f in futs]
        assert [type(e) for e in errors] == [AgentCrashed] * 3 + [AgentFailed] * 2
        await healthy(sup)


async def test_repeated_crashes_go_through_backoff(make_supervisor, agent_spec, healthy, logs):
    async with make_supervisor(backoff=0.01, backoff_max=0.05) as sup:
        await sup.start(agent_spec("echo", "agents:echo"))
        await sup.start(agent_spec("crashy", "agents:whoami_or_exit", intensity=100))
        for generation in (1, 2, 3):
            with pytest.raises(AgentCrashed):
                await sup.call("crashy", CRASH)
            await logs.wait_for("replica_ready", agent="crashy", generation=generation)
        states = [e["to_state"] for e in logs.find("replica_state", agent="crashy", replica=0)]
        # the first restart in a period is immediate, the next ones back off
        assert states.count("crashed") == 3
        assert states.count("backoff") == 2
        for i, state in enumerate(states):
            if state == "backoff":
                assert states[i - 1 : i + 2] == ["crashed", "backoff", "starting"]
        delays = [e["delay"] for e in logs.find("replica_backoff", agent="crashy")]
        assert len(delays) == 2
        assert all(0 < d <= 0.05 * 1.25 for d in delays)
        [st] = [s for s in await sup.status() if s.agent == "crashy"]
        assert st.restarts == 3
        assert "pid" in await sup.call("crashy")
        await healthy(sup)


# --- restart types -------------------------------------------------------------------------


async def test_transient_replica_exiting_0_is_not_restarted(
    make_supervisor, agent_spec, healthy, logs
):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo"))
        await sup.start(agent_spec("tr", "agents:whoami_or_exit", restart="transient"))
        with pytest.raises(AgentCrashed) as info:
            await sup.call("tr", {"code": 0})
        assert info.value.exit_code == 0
        await logs.wait_for("replica_not_restarted", agent="tr")
        [st] = [s for s in await sup.status() if s.agent == "tr"]
        assert (st.state, st.pid, st.restarts) == ("exited", None, 0)
        await healthy(sup)


async def test_transient_replica_crashing_is_restarted(make_supervisor, agent_spec, healthy, logs):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo"))
        await sup.start(agent_spec("tr", "agents:whoami_or_exit", restart="transient"))
        with pytest.raises(AgentCrashed):
            await sup.call("tr", CRASH)
        await logs.wait_for("replica_ready", agent="tr", generation=1)
        assert "pid" in await sup.call("tr")
        await healthy(sup)


@pytest.mark.parametrize("code", [0, 3])
async def test_temporary_replica_is_never_restarted(
    code, make_supervisor, agent_spec, healthy, logs
):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo"))
        await sup.start(agent_spec("tmp", "agents:whoami_or_exit", restart="temporary"))
        with pytest.raises(AgentCrashed) as info:
            await sup.call("tmp", {"code": code})
        assert info.value.exit_code == code
        await logs.wait_for("replica_not_restarted", agent="tmp")
        [st] = [s for s in await sup.status() if s.agent == "tmp"]
        assert st.pid is None
        assert st.restarts == 0
        assert st.state == ("exited" if code == 0 else "crashed")
        assert not logs.find("replica_restarting", agent="tmp")
        await healthy(sup)


@pytest.mark.parametrize(
    ("restart", "code"), [("temporary", 3), ("temporary", 0), ("transient", 0)]
)
async def test_calls_to_an_agent_with_no_replica_left_fail_at_once_with_agent_failed(
    restart, code, make_supervisor, agent_spec, healthy, logs
):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo"))
        await sup.start(
            agent_spec("gone", "agents:whoami_or_exit", restart=restart, concurrency=1, queue=0)
        )
        ending = sup.submit("gone", {"code": code})
        behind = sup.submit("gone")  # waits in the supervisor's queue
        with pytest.raises(AgentCrashed):
            await ending
        await logs.wait_for("replica_not_restarted", agent="gone")
        # Neither the waiting call nor a new one waits for a replica that will
        # never come (an agent_spec call would otherwise run into its deadline).
        with pytest.raises(AgentFailed):
            await behind
        with pytest.raises(AgentFailed):
            await sup.call("gone")
        await healthy(sup)
