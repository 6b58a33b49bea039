"""OTP's supervisor rules, with real processes: who is terminated, in what order, what restarts.

Replicas of ``agents:Lifecycle`` journal each start (pid, generation, the
shared monotonic clock, and which earlier replicas were still alive at
that moment) and each SIGTERM they get; the supervisor's log gives the
order of terminations.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from agentrt import AgentCrashed, AgentFailed, CallCancelled, StartupError, SupervisorClosed

Key = tuple[str, int]


def _journal(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _starts(path: Path, generation: int | None = None) -> dict[Key, dict[str, Any]]:
    return {
        (r["agent"], r["replica"]): r
        for r in _journal(path)
        if r["event"] == "start" and (generation is None or r["generation"] == generation)
    }


def _at(logs, event: str, **fields: Any) -> int:
    """Position of the first ``event`` with ``fields`` in the recorded log."""
    for i, e in enumerate(logs.entries):
        if e.get("event") == event and all(e.get(k) == v for k, v in fields.items()):
            return i
    raise AssertionError(f"no {event} {fields} in the log")


async def _start_abc(sup, agent_spec, journal: Path, **fields: Any) -> dict[Key, int]:
    """Agents a (1 replica), b (2) and c (1), declared in that order; their pids."""
    env = {"JOURNAL": str(journal)}
    for name, n in (("a", 1), ("b", 2), ("c", 1)):
        await sup.start(agent_spec(name, "agents:Lifecycle", replicas=n, env=env, **fields))
    return {k: r["pid"] for k, r in _starts(journal, 0).items()}


# --- one_for_all / rest_for_one: terminate first, then restart in start order --------------


async def test_one_for_all_terminates_every_sibling_in_reverse_order_before_any_restart(
    make_supervisor, agent_spec, logs, tmp_path
):
    journal = tmp_path / "journal"
    async with make_supervisor(strategy="one_for_all") as sup:
        old = await _start_abc(sup, agent_spec, journal)
        with pytest.raises(AgentCrashed):
            await sup.call("b", {"code": 3})  # the first idle replica: b#0
        for agent, replica in old:
            await logs.wait_for("replica_ready", agent=agent, replica=replica, generation=1)
        new = _starts(journal, 1)
        assert set(new) == set(old)
        # nothing of the old generation was alive when any new replica started
        for key, r in new.items():
            assert not set(r["alive"]) & set(old.values()), (key, r["alive"])
        # terminated in reverse start order, each gone before the next is asked to stop
        order = [(e["agent"], e["replica"]) for e in logs.find("replica_restart_by_strategy")]
        assert order == [("c", 0), ("b", 1), ("a", 0)]
        assert _at(logs, "replica_stopped", agent="c") < _at(
            logs, "replica_restart_by_strategy", agent="b"
        )
        assert _at(logs, "replica_stopped", agent="b", replica=1) < _at(
            logs, "replica_restart_by_strategy", agent="a"
        )
        # restarted in start order, agent by agent
        t = {k: r["t"] for k, r in new.items()}
        assert t[("a", 0)] < min(t[("b", 0)], t[("b", 1)])
        assert max(t[("b", 0)], t[("b", 1)]) < t[("c", 0)]
        st = {(s.agent, s.replica): s for s in await sup.status()}
        assert {k: s.pid for k, s in st.items()} == {k: r["pid"] for k, r in new.items()}
        assert all(s.restarts == 1 for s in st.values())


async def test_rest_for_one_terminates_those_started_after_and_restarts_them_in_order(
    make_supervisor, agent_spec, logs, tmp_path
):
    journal = tmp_path / "journal"
    async with make_supervisor(strategy="rest_for_one") as sup:
        old = await _start_abc(sup, agent_spec, journal)
        with pytest.raises(AgentCrashed):
            await sup.call("b", {"code": 3})  # b#0
        for agent, replica in [("b", 0), ("b", 1), ("c", 0)]:
            await logs.wait_for("replica_ready", agent=agent, replica=replica, generation=1)
        new = _starts(journal, 1)
        assert set(new) == {("b", 0), ("b", 1), ("c", 0)}  # a is untouched
        order = [(e["agent"], e["replica"]) for e in logs.find("replica_restart_by_strategy")]
        assert order == [("c", 0), ("b", 1)]
        terminated = {old[k] for k in [("b", 0), ("b", 1), ("c", 0)]}
        for key, r in new.items():
            assert not set(r["alive"]) & terminated, (key, r["alive"])
        assert max(new[("b", 0)]["t"], new[("b", 1)]["t"]) < new[("c", 0)]["t"]
        pids = {(s.agent, s.replica): s.pid for s in await sup.status()}
        assert pids[("a", 0)] == old[("a", 0)]


# --- restart types under a strategy ----------------------------------------------------------


@pytest.mark.parametrize("strategy", ["one_for_all", "rest_for_one"])
async def test_a_strategy_terminates_a_temporary_sibling_for_good_and_restarts_a_transient_one(
    strategy, make_supervisor, agent_spec, logs, tmp_path
):
    journal = tmp_path / "journal"
    env = {"JOURNAL": str(journal)}
    async with make_supervisor(strategy=strategy) as sup:
        await sup.start(agent_spec("perm", "agents:Lifecycle", env=env))
        await sup.start(agent_spec("trans", "agents:Lifecycle", env=env, restart="transient"))
        await sup.start(agent_spec("temp", "agents:Lifecycle", env=env, restart="temporary"))
        old = {k: r["pid"] for k, r in _starts(journal, 0).items()}
        with pytest.raises(AgentCrashed):
            await sup.call("perm", {"code": 3})
        await logs.wait_for("replica_ready", agent="perm", generation=1)
        await logs.wait_for("replica_ready", agent="trans", generation=1)
        assert set(_starts(journal, 1)) == {("perm", 0), ("trans", 0)}
        st = {s.agent: s for s in await sup.status()}
        assert st["temp"].pid is None and st["temp"].state == "exited"
        assert st["trans"].pid not in (None, old[("trans", 0)])
        assert not logs.find("replica_ready", agent="temp", generation=1)
        with pytest.raises(AgentFailed, match="no replica left"):
            await sup.call("temp")
        assert "pid" in await sup.call("trans")


# --- a clean exit is normal ----------------------------------------------------------------


@pytest.mark.parametrize("entry", ["agents:sys_exit", "agents:async_sys_exit"])
@pytest.mark.parametrize(
    ("how", "code"), [("exit0", 0), ("exit", 0), ("none", 0), ("exit3", 3), ("message", 1)]
)
async def test_sys_exit_ends_the_replica_with_its_status_and_only_0_is_normal(
    entry, how, code, make_supervisor, agent_spec, logs
):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("leaver", entry, restart="transient"))
        with pytest.raises(AgentCrashed) as info:
            await sup.call("leaver", {"how": how})
        assert info.value.exit_code == code
        if code == 0:
            await logs.wait_for("replica_not_restarted", agent="leaver")
            [st] = await sup.status()
            assert (st.state, st.pid, st.restarts) == ("exited", None, 0)
        else:
            await logs.wait_for("replica_ready", agent="leaver", generation=1)
            assert await sup.call("leaver", {"how": "stay"}) == "stayed"


# --- shutdown --------------------------------------------------------------------------------


async def test_close_stops_agents_one_after_another_in_reverse_start_order(
    make_supervisor, agent_spec, logs, tmp_path
):
    journal = tmp_path / "journal"
    async with make_supervisor() as sup:
        await _start_abc(sup, agent_spec, journal)
    stopping = [(e["agent"], e["replica"]) for e in logs.find("replica_state", to_state="stopping")]
    assert [a for a, _ in stopping] == ["c", "b", "b", "a"]
    # each agent is gone before the one started before it is asked to stop
    assert _at(logs, "replica_stopped", agent="c") < _at(
        logs, "replica_state", agent="b", to_state="stopping"
    )
    for replica in (0, 1):
        assert _at(logs, "replica_stopped", agent="b", replica=replica) < _at(
            logs, "replica_state", agent="a", to_state="stopping"
        )


@pytest.mark.parametrize(
    ("shutdown_timeout", "exit_code", "sigterm"), [("brutal_kill", -9, False), (0.2, 0, True)]
)
async def test_shutdown_timeout_brutal_kill_kills_at_once_and_a_grace_ends_in_sigterm(
    shutdown_timeout, exit_code, sigterm, make_supervisor, agent_spec, make_gate, logs, tmp_path
):
    journal, gate = tmp_path / "journal", make_gate()
    env = {"JOURNAL": str(journal)}
    async with make_supervisor() as sup:
        await sup.start(
            agent_spec("busy", "agents:Lifecycle", env=env, shutdown_timeout=shutdown_timeout)
        )
        call = sup.submit("busy", {"path": gate.path}, method="gate")  # sent at once
    with pytest.raises(CallCancelled):
        await call  # blocked until the end: never answered
    [stopped] = logs.find("replica_stopped", agent="busy")
    assert stopped["exit_code"] == exit_code
    terms = [r for r in _journal(journal) if r["event"] == "term"]
    assert bool(terms) is sigterm


async def test_shutdown_timeout_infinity_waits_for_the_running_call(
    make_supervisor, agent_spec, make_gate, logs, tmp_path
):
    gate = make_gate()
    env = {"JOURNAL": str(tmp_path / "journal")}
    sup = make_supervisor()
    await sup.open()
    try:
        await sup.start(
            agent_spec("slow", "agents:Lifecycle", env=env, shutdown_timeout="infinity")
        )
        call = sup.submit("slow", {"path": gate.path}, method="gate")
        [st] = await sup.status()
        closing = asyncio.ensure_future(sup.close())
        await logs.wait_for("replica_state", agent="slow", to_state="stopping")
        assert not closing.done()  # still waiting: the call has not finished
        gate.release("done")
        await closing
    finally:
        await sup.close()
    assert (await call)["data"] == "done"  # it finished, and its answer arrived
    [stopped] = logs.find("replica_stopped", agent="slow")
    assert (stopped["pid"], stopped["exit_code"]) == (st.pid, 0)


# --- escalation ------------------------------------------------------------------------------


async def test_an_agent_past_its_intensity_stops_everything_under_on_agent_failure_stop(
    make_supervisor, agent_spec, logs
):
    async with make_supervisor() as sup:  # on_agent_failure = "stop" is the default
        await sup.start(agent_spec("echo", "agents:echo"))
        await sup.start(agent_spec("crashy", "agents:whoami_or_exit", intensity=1, period=30))
        [echo] = [s for s in await sup.status() if s.agent == "echo"]
        for _ in range(2):
            with pytest.raises(AgentCrashed):
                await sup.call("crashy", {"code": 3})
        async with asyncio.timeout(10):
            await sup.wait_closed()
        assert sup.failure is not None and sup.failure.agent == "crashy"
        assert isinstance(sup.failure.last, AgentCrashed) and sup.failure.last.exit_code == 3
        assert set(sup.failed_agents) == {"crashy"}
        with pytest.raises(SupervisorClosed, match="crashy"):
            await sup.call("echo")
        assert [e["pid"] for e in logs.find("replica_stopped", agent="echo")] == [echo.pid]
        assert logs.find("supervisor_stopping", agent="crashy")


async def test_on_agent_failure_continue_keeps_the_others_running(
    make_supervisor, agent_spec, healthy, logs
):
    async with make_supervisor(on_agent_failure="continue") as sup:
        await sup.start(agent_spec("echo", "agents:echo"))
        await sup.start(agent_spec("crashy", "agents:whoami_or_exit", intensity=1, period=30))
        for _ in range(2):
            with pytest.raises(AgentCrashed):
                await sup.call("crashy", {"code": 3})
        await logs.wait_for("agent_failed", agent="crashy")
        assert sup.failure is None and set(sup.failed_agents) == {"crashy"}
        await healthy(sup)


# --- backoff uses the agent's own period -----------------------------------------------------


@pytest.mark.parametrize(
    ("sup_period", "agent_period", "backoffs"), [(0.001, 60.0, 1), (60.0, 0.001, 0)]
)
async def test_backoff_counts_restarts_within_the_agents_own_period(
    sup_period, agent_period, backoffs, make_supervisor, agent_spec, logs
):
    async with make_supervisor(period=sup_period, backoff=0.01, backoff_max=0.02) as sup:
        await sup.start(
            agent_spec("crashy", "agents:whoami_or_exit", intensity=100, period=agent_period)
        )
        for generation in (1, 2):
            with pytest.raises(AgentCrashed):
                await sup.call("crashy", {"code": 3})
            await logs.wait_for("replica_ready", agent="crashy", generation=generation)
        assert len(logs.find("replica_backoff", agent="crashy")) == backoffs


async def test_a_group_restart_while_an_agent_fails_its_first_start_does_not_wait_for_it(
    make_supervisor, agent_spec, make_gate, logs
):
    gate = make_gate()
    async with make_supervisor(strategy="one_for_all") as sup:
        await sup.start(agent_spec("a", "agents:whoami_or_exit"))
        starting = asyncio.ensure_future(
            sup.start(agent_spec("c", "agents:FailOrWait", replicas=2, env={"GATE": gate.path}))
        )
        await logs.wait_for("replica_state", agent="c", replica=0, to_state="crashed")
        for generation in (1, 2):  # each group restart completes, none waits on c
            with pytest.raises(AgentCrashed):
                await sup.call("a", {"code": 3})
            await logs.wait_for("replica_ready", agent="a", generation=generation)
        gate.release()
        with pytest.raises(StartupError, match="cannot start"):
            await starting
        assert sup.agents == ["a"]
        assert "pid" in await sup.call("a")
