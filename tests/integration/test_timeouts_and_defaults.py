"""Timeouts are promises (tools in-process and isolated, per-call overrides, the
caller's deadline), and defaults that suit parallel work (continue, quorum)."""

from __future__ import annotations

import pytest

from agentrt import Graph, Run, RunSpec, ToolSpec

# --- a tool's timeout holds ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("caller", "entry", "isolated"),
    [
        ("agents:use_tool", "agents:slow_async_tool", False),  # cancelled
        ("agents:use_tool", "agents:slow_sync_tool", False),  # in a thread: abandoned
        ("agents:use_tool_sync", "agents:slow_sync_tool", False),  # interrupted by a timer
        ("agents:use_tool", "agents:slow_sync_tool", True),  # its own process, replaced
        ("agents:use_tool_sync", "agents:slow_async_tool", True),
    ],
)
async def test_a_tools_own_timeout_ends_the_call_with_call_timeout(
    caller, entry, isolated, make_supervisor, agent_spec
):
    async with make_supervisor() as sup:
        await sup.add_tool(ToolSpec(name="slow", entry=entry, timeout=0.5, isolated=isolated))
        await sup.start(agent_spec("caller", caller))
        got = await sup.call("caller", {"tool": "slow", "seconds": 30}, timeout=20)
        assert got["error"] == "CallTimeout", got
        if not isolated:
            assert "tool 'slow' timed out after 0.5s" in got["message"]
        # the caller carries on: the next call to the tool is served
        fast = await sup.call("caller", {"tool": "slow", "seconds": 0}, timeout=20)
        assert fast == {"value": "done"}


@pytest.mark.parametrize("isolated", [False, True])
async def test_a_per_call_override_replaces_the_tools_own_timeout(
    isolated, make_supervisor, agent_spec
):
    async with make_supervisor() as sup:
        await sup.add_tool(
            ToolSpec(name="slow", entry="agents:slow_async_tool", timeout=60, isolated=isolated)
        )
        await sup.start(agent_spec("caller", "agents:use_tool"))
        got = await sup.call("caller", {"tool": "slow", "seconds": 30, "override": 0.3})
        assert got["error"] == "CallTimeout", got


@pytest.mark.parametrize("isolated", [False, True])
async def test_a_tool_never_outlives_its_callers_deadline(isolated, make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await sup.add_tool(
            ToolSpec(name="slow", entry="agents:slow_async_tool", isolated=isolated)
        )  # no timeout of its own
        await sup.start(agent_spec("caller", "agents:use_tool"))
        from agentrt import CallTimeout

        with pytest.raises(CallTimeout):
            await sup.call("caller", {"tool": "slow", "seconds": 30}, timeout=0.5)


async def test_an_unknown_tool_is_a_typed_error_listing_the_known_ones(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await sup.add_tool(ToolSpec(name="slow", entry="agents:slow_async_tool"))
        await sup.add_tool(ToolSpec(name="far", entry="agents:slow_async_tool", isolated=True))
        await sup.start(agent_spec("caller", "agents:use_tool"))
        got = await sup.call("caller", {"tool": "nope"})
        assert got["error"] == "UnknownTool"
        assert got["tool"] == "nope" and {"slow", "far"} <= set(got["known"])


# --- defaults that suit parallel work ---------------------------------------------------------


async def test_by_default_a_failure_sinks_only_its_own_branch(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("check", "agents:fail_if"))
        await sup.start(agent_spec("later", "agents:value_after", concurrency=4))
        g = Graph()  # no on_error given: continue
        g.add("bad", "check", args={"value": 1, "bad": 1})
        g.add("after_bad", "check", args={"value": "${bad}"})
        g.add("slow", "later", args={"value": "fine", "seconds": 0.3})
        r = await Run(sup, g).wait()
        assert r.tasks["bad"].status == "failed"
        assert r.tasks["after_bad"].status == "skipped" and "bad" in r.tasks["after_bad"].reason
        assert r.tasks["slow"].status == "ok" and r.tasks["slow"].result == "fine"


@pytest.mark.parametrize(("missing", "joined"), [("drop", [1, 2]), ("null", [1, 2, None, None])])
async def test_a_quorum_cancels_stragglers_saying_so_and_hands_on_what_it_has(
    missing, joined, make_supervisor, agent_spec
):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo"))
        await sup.start(agent_spec("later", "agents:value_after", concurrency=8))
        g = Graph()
        g.add("plan", "echo", args={"items": [[1, 0], [2, 0], [3, 30], [4, 30]]})
        g.add(
            "each",
            "later",
            args={"value": "${item[0]}", "seconds": "${item[1]}"},
            for_each="${plan.items}",
            min_success=2,
            missing=missing,
        )
        g.add("join", "echo", args={"got": "${each}"})
        r = await Run(sup, g).wait()
        assert r.status == "ok"  # the quorum was met: the run is ok
        assert r.tasks["join"].result == {"got": joined}
        for straggler in ("each[2]", "each[3]"):
            t = r.tasks[straggler]
            assert t.status == "cancelled" and t.reason == "quorum reached", t
            assert "quorum reached" in t.error["message"]
        assert r.tasks["each"].attempts == 1  # its own, not the sum of its items'


async def test_a_quorum_met_with_failures_is_an_ok_run_and_the_failures_are_recorded(
    make_supervisor, agent_spec
):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo"))
        await sup.start(agent_spec("check", "agents:fail_or_wait", concurrency=4))
        g = Graph()
        g.add("plan", "echo", args={"values": [1, 2, 3]})
        g.add(
            "each",
            "check",
            args={"value": "${item}", "bad": 2},  # 2 fails at once, before the quorum
            for_each="${plan.values}",
            min_success=2,
        )
        r = await Run(sup, g, RunSpec(on_error="fail_fast")).wait()
        assert r.status == "ok"
        assert r.tasks["each[1]"].status == "failed"
        assert r.tasks["each"].status == "ok"
