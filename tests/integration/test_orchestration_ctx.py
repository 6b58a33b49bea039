"""Inside an agent: ctx.tool / spawn / gather / send / receive, budgets, cancellation.

Parallelism is shown by recorded intervals (they overlap), never by wall-clock
thresholds.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import psutil
import pytest

from agentrt import BudgetExceeded, CallCancelled, CallTimeout, ToolSpec


async def test_gathered_subagents_run_concurrently_in_their_own_processes(
    make_supervisor, agent_spec
):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("worker", "agents:worker", replicas=4))
        await sup.start(agent_spec("fan", "agents:fan_out"))
        results = await sup.call("fan", {"n": 4, "delay": 0.2})
        assert [r["i"] for r in results] == [0, 1, 2, 3]
        assert len({r["pid"] for r in results}) == 4
        # every pair of subagent intervals overlaps: no one waited for another
        assert max(r["start"] for r in results) < min(r["end"] for r in results)
        # in-process tools ran inside the subagent's own process
        assert all(r["hits"][0]["pid"] == r["pid"] for r in results)
        assert results[2]["hits"][1] == "W2"


async def test_sync_agent_gets_the_blocking_context_and_inherits_the_deadline(
    make_supervisor, agent_spec
):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("worker", "agents:worker", replicas=2))
        await sup.start(agent_spec("sfan", "agents:sync_fan_out"))
        out = await sup.call("sfan", {"n": 3}, timeout=5)
        assert out["n"] == 4
        assert out["last"] == "S"
        assert 0 < out["remaining"] <= 5


async def test_subagent_nesting_past_max_depth_is_refused_with_a_typed_error(
    make_supervisor, agent_spec
):
    async with make_supervisor(max_depth=3) as sup:
        await sup.start(agent_spec("deep", "agents:deep", replicas=4))
        assert await sup.call("deep", {"limit": 3}) == 3
        with pytest.raises(BudgetExceeded) as info:
            await sup.call("deep", {"limit": 10})
        assert info.value.budget == "max_depth"
        assert info.value.limit == 3
        assert await sup.call("deep", {"limit": 2}) == 2  # nothing broke


async def test_tool_calls_past_max_tool_calls_are_refused_per_run(make_supervisor, agent_spec):
    async with make_supervisor(max_tool_calls=3) as sup:
        await sup.start(agent_spec("worker", "agents:worker"))
        # each worker task makes 2 tool calls: within budget
        assert (await sup.call("worker", {"i": 1, "delay": 0}))["i"] == 1
        await sup.start(agent_spec("fan", "agents:fan_out"))
        await sup.start(agent_spec("worker2", "agents:worker"))
        # 3 subagents x 2 tool calls = 6 > 3 in one run
        with pytest.raises(BudgetExceeded) as info:
            await sup.call("fan", {"n": 3, "delay": 0})
        assert info.value.budget == "max_tool_calls"


async def test_isolated_tool_that_segfaults_fails_only_that_call(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await sup.add_tool(ToolSpec(name="crashy", entry="tools:crashy", isolated=True))
        await sup.start(agent_spec("iso", "agents:call_isolated"))
        first = await sup.call("iso", {"mode": "ok"})
        with pytest.raises(Exception) as info:
            await sup.call("iso", {"mode": "segfault"})
        assert info.value.to_dict()["exit_code"] == -11
        second = await sup.call("iso", {"mode": "ok"})
        assert second["pid"] != first["pid"]  # a fresh tool process replaced it


async def test_cancelling_a_task_ends_its_subagents_and_hung_isolated_tools(
    make_supervisor, agent_spec
):
    async with make_supervisor() as sup:
        await sup.add_tool(ToolSpec(name="crashy", entry="tools:crashy", isolated=True))
        await sup.add_tool(ToolSpec(name="stubborn", entry="tools:stubborn", isolated=True))
        await sup.start(agent_spec("sleeper", "agents:sleeper", replicas=2))
        await sup.start(agent_spec("boss", "agents:spawn_stuck"))
        with pytest.raises(CallTimeout):
            await sup.call("boss", {"n": 2}, timeout=0.5)
        # the subagents were cancelled: both sleeper replicas serve again at once
        assert await asyncio.gather(
            sup.call("sleeper", {"seconds": 0}, timeout=5),
            sup.call("sleeper", {"seconds": 0}, timeout=5),
        ) == [None, None]

        await sup.start(agent_spec("iso", "agents:call_isolated"))
        with pytest.raises(CallTimeout):
            await sup.call("iso", {"mode": "hang"}, timeout=0.5)
        # the hung tool call inherited the deadline and was stopped: the tool's
        # single warm process serves the next call
        assert (await sup.call("iso", {"mode": "ok"}, timeout=5))["mode"] == "ok"

        with pytest.raises(CallTimeout):
            await sup.call("iso", {"tool": "stubborn"}, timeout=0.5)
        stubborn_pid = next(s.pid for s in await sup.status() if s.agent == "tool:stubborn")
        assert stubborn_pid is not None
        # a tool that swallows the cancellation is killed after cancel_grace
        _gone, alive = await asyncio.to_thread(psutil.wait_procs, [psutil.Process(stubborn_pid)], 5)
        assert not alive


async def test_agents_exchange_messages_through_the_supervisor(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("echo_back", "agents:echo_back"))
        await sup.start(agent_spec("pinger", "agents:ping_pong"))
        responder = asyncio.ensure_future(sup.call("echo_back", {}))
        sender, body = await sup.call("pinger", {"peer": "echo_back"})
        assert sender == "echo_back"
        assert "hello" in body["got"]
        assert await responder == "echoed"


async def test_starting_agents_past_max_agents_is_refused_and_nothing_starts(
    make_supervisor, agent_spec
):
    async with make_supervisor(max_agents=3) as sup:
        await sup.start(agent_spec("echo", "agents:echo", replicas=2))
        with pytest.raises(BudgetExceeded) as info:
            await sup.start(agent_spec("more", "agents:echo", replicas=2))
        assert info.value.budget == "max_agents"
        assert "more" not in sup.agents
        assert len(await sup.status()) == 2


async def test_isolated_tool_pool_past_max_agents_fails_the_tool_call_typed(
    make_supervisor, agent_spec
):
    async with make_supervisor(max_agents=1) as sup:
        await sup.add_tool(ToolSpec(name="crashy", entry="tools:crashy", isolated=True))
        await sup.start(agent_spec("iso", "agents:call_isolated"))
        with pytest.raises(BudgetExceeded):
            await sup.call("iso", {"mode": "ok"})


async def test_spawns_past_max_tasks_are_refused_per_run(make_supervisor, agent_spec):
    async with make_supervisor(max_tasks=3) as sup:
        await sup.start(agent_spec("worker", "agents:worker", replicas=4))
        await sup.start(agent_spec("fan", "agents:fan_out"))
        assert len(await sup.call("fan", {"n": 3, "delay": 0})) == 3
        with pytest.raises(BudgetExceeded) as info:
            await sup.call("fan", {"n": 4, "delay": 0})
        assert info.value.budget == "max_tasks"


async def test_subagent_and_tool_calls_are_reported_as_spans_when_traced(
    make_supervisor, agent_spec
):
    async with make_supervisor(trace_tools=True) as sup:
        await sup.start(agent_spec("worker", "agents:worker", replicas=2))
        await sup.start(agent_spec("fan", "agents:fan_out"))
        spans: dict[int, list] = {}

        async def watch() -> None:
            async for ev in sup.events():
                if ev.kind == "end_of_test":
                    return
                if ev.call_id is not None:
                    spans.setdefault(ev.call_id, []).append(ev)

        watcher = asyncio.ensure_future(watch())
        await asyncio.sleep(0)  # subscribe before the calls start
        await sup.call("fan", {"n": 2, "delay": 0})
        # events are delivered in order: this one comes last
        sup.link_run(SimpleNamespace(run_id="marker")).emit("end_of_test")
        await asyncio.wait_for(watcher, 5)
        targets = sorted(evs[0].target for evs in spans.values())
        assert targets.count("worker") == 2
        assert targets.count("tool:lookup") == 2 and targets.count("tool:shout") == 2
        for evs in spans.values():
            assert [e.kind for e in evs] == ["call_started", "call_finished"]
            assert evs[0].time <= evs[1].time
            assert evs[1].status == "ok"


@pytest.mark.parametrize("ending", ["parent_deadline", "caller_leaves", "child_deadline"])
async def test_subagent_calls_that_end_without_an_answer_still_end_their_spans(
    ending, make_supervisor, agent_spec
):
    async with make_supervisor() as sup:
        sleeper_timeout = 0.3 if ending == "child_deadline" else 20.0
        await sup.start(
            agent_spec("sleeper", "agents:sleeper", replicas=2, timeout=sleeper_timeout)
        )
        await sup.start(agent_spec("boss", "agents:spawn_stuck"))
        events: list = []
        started = asyncio.Event()

        async def watch() -> None:
            async for ev in sup.events():
                if ev.kind == "end_of_test":
                    return
                if ev.call_id is not None:
                    events.append(ev)
                    if sum(e.kind == "call_started" for e in events) == 2:
                        started.set()

        watcher = asyncio.ensure_future(watch())
        await asyncio.sleep(0)  # subscribe before the calls start
        args = {"n": 2, "child_timeout": 0.3 if ending == "child_deadline" else None}
        timeout = 0.3 if ending == "parent_deadline" else 20.0
        call = asyncio.ensure_future(sup.call("boss", args, timeout=timeout))
        await asyncio.wait_for(started.wait(), 10)  # both subagents run
        if ending == "caller_leaves":
            call.cancel()
        if ending == "child_deadline":  # the boss carries on, with two timeouts as results
            assert [r["type"] for r in await call] == ["CallTimeout", "CallTimeout"]
        else:
            with pytest.raises((CallTimeout, CallCancelled, asyncio.CancelledError)):
                await call
        sup.link_run(SimpleNamespace(run_id="marker")).emit("end_of_test")
        await asyncio.wait_for(watcher, 5)
        spans: dict[int, list] = {}
        for ev in events:
            spans.setdefault(ev.call_id, []).append(ev)
        assert len(spans) == 2
        # a child shares its parent's deadline: whichever timer fires first ends it
        want = {
            "parent_deadline": {"timeout", "cancelled"},
            "caller_leaves": {"cancelled"},
            "child_deadline": {"timeout"},
        }[ending]
        for evs in spans.values():
            assert [e.kind for e in evs] == ["call_started", "call_finished"]
            assert evs[1].status in want
