"""The model loop in a real agent, against the scripted model over real HTTP.

The scripted server runs in the test process; the agent (``llm_agents:loop``)
reaches it through the real client.  The script is a function of the
conversation, so what the agent sent each turn is checked from the server's
record of the requests.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from agentrt import ToolSpec
from agentrt.llm import Reply, ScriptedCall, ScriptedModel
from agentrt.llm.scripted import Request

E = "llm_agents"


async def start(sup: Any, agent_spec: Any) -> None:
    await sup.add_tool(ToolSpec(name="lookup", entry=f"{E}:lookup"))
    await sup.add_tool(ToolSpec(name="add", entry=f"{E}:add"))
    await sup.add_tool(ToolSpec(name="boom", entry=f"{E}:boom"))
    await sup.start(agent_spec("research", f"{E}:research", replicas=2))
    await sup.start(agent_spec("loop", f"{E}:loop"))


def fan_out(req: Request) -> Reply:
    """Turn 1: five calls at once; turn 2: the final answer, from what came back."""
    if req.turn() == 0:
        return Reply(
            tool_calls=[
                ScriptedCall("lookup", {"term": "a", "delay": 0.4}),
                ScriptedCall("lookup", {"term": "b", "delay": 0.4}),
                ScriptedCall("research", {"topic": "c"}),
                ScriptedCall("research", {"topic": "d", "depth": 2}),
                ScriptedCall("boom", {"why": "offline"}),
            ]
        )
    answers = req.tool_results()
    return Reply(text=f"done: {len(answers)} answers")


@pytest.mark.parametrize("shape", ["openai", "anthropic"])
async def test_a_turns_calls_run_at_once_and_the_loop_ends_with_the_answer(
    shape, make_supervisor, agent_spec
):
    with ScriptedModel(fan_out, latency=0.05) as model:
        url = model.openai_base_url if shape == "openai" else model.anthropic_base_url
        async with make_supervisor() as sup:
            await start(sup, agent_spec)
            out = await sup.call("loop", {"base_url": url, "prompt": "go", "shape": shape})
        requests = list(model.requests)
    assert out["stop"] == "final" and out["text"] == "done: 5 answers"
    assert (out["turns"], out["tool_calls"]) == (2, 5)
    assert out["calls"] == [["lookup", "lookup", "research", "research", "boom"], []]
    assert out["input_tokens"] > 0 and out["output_tokens"] > 0
    assert [r.shape for r in requests] == [shape, shape]
    first, second = requests
    assert first.system == "You are a test." and first.last_user_text() == "go"
    offered = {t["function"]["name"] if shape == "openai" else t["name"] for t in first.tools}
    assert {"lookup", "add", "boom", "research"} <= offered
    # the second request holds the five answers, in the calls' order
    results = second.tool_results()
    assert len(results) == 5
    bodies = [json.loads(text) for _, text in results]
    assert [b.get("term", b.get("topic")) for b in bodies[:4]] == ["a", "b", "c", "d"]
    assert bodies[4] == {"error": {"type": "ValueError", "message": "offline"}}
    # the four successful calls ran at once: every interval overlaps every other
    assert max(b["start"] for b in bodies[:4]) < min(b["end"] for b in bodies[:4])
    # the conversation the loop returns is the one the model saw, plus the answer
    assert len(out["messages"]) == len(second.messages) + 1


def always_a_tool(req: Request) -> Reply:
    return Reply(tool_calls=[ScriptedCall("add", {"a": req.turn(), "b": 1})] * 2)


@pytest.mark.parametrize(
    ("budget", "stop", "turns", "calls"),
    [
        ({"max_turns": 3}, "max_turns", 3, 6),
        ({"max_tool_calls": 5}, "max_tool_calls", 3, 4),
        ({"max_tokens": 1}, "max_tokens", 1, 2),
    ],
)
async def test_budgets_end_the_loop_with_a_complete_conversation(
    budget, stop, turns, calls, make_supervisor, agent_spec
):
    with ScriptedModel(always_a_tool) as model:
        async with make_supervisor() as sup:
            await start(sup, agent_spec)
            out = await sup.call(
                "loop", {"base_url": model.openai_base_url, "prompt": "go", **budget}
            )
        served = len(model.requests)
    assert (out["stop"], out["turns"], out["tool_calls"], out["text"]) == (stop, turns, calls, "")
    assert served == turns
    # every tool call the model made has its answer, refused ones included
    asked = [c["id"] for m in out["messages"] for c in m.get("tool_calls") or []]
    answered = [m["tool_call_id"] for m in out["messages"] if m.get("role") == "tool"]
    assert asked == answered and len(asked) == 2 * turns
    if stop == "max_tool_calls":
        refused = [json.loads(m["content"]) for m in out["messages"][-2:]]
        assert all(r["error"]["type"] == "BudgetExceeded" for r in refused)


async def test_the_loop_returns_before_the_calls_deadline(make_supervisor, agent_spec):
    def slow_second(req: Request) -> Reply:
        if req.turn() == 0:
            return Reply(tool_calls=[ScriptedCall("add", {"a": 1, "b": 2})])
        return Reply(text="too late", delay=60)

    with ScriptedModel(slow_second) as model:
        async with make_supervisor() as sup:
            await start(sup, agent_spec)
            out = await sup.call(
                "loop", {"base_url": model.openai_base_url, "prompt": "go"}, timeout=4
            )
    assert out["stop"] == "deadline"
    assert (out["turns"], out["tool_calls"]) == (1, 1)
    assert out["messages"][-1] == {
        "role": "tool",
        "tool_call_id": out["messages"][-2]["tool_calls"][0]["id"],
        "content": "3",
    }


async def test_the_model_plans_a_dag_and_reads_its_outcome(make_supervisor, agent_spec):
    steps = [
        {"id": "x", "tool": "add", "args": {"a": 1, "b": 1}},
        {"id": "y", "tool": "add", "args": {"a": 2, "b": 2}},
        {"id": "z", "tool": "add", "args": {"a": "${x}", "b": "${y}"}},
        {"id": "w", "tool": "lookup", "args": {"term": "sum ${z}", "limit": 1, "delay": 0}},
    ]

    def planner(req: Request) -> Reply:
        if req.turn() == 0:
            names = [t["function"]["name"] for t in req.tools]
            assert "run_plan" in names
            return Reply(tool_calls=[ScriptedCall("run_plan", {"steps": steps})])
        ((_, text),) = req.tool_results()
        outcome = json.loads(text)
        return Reply(text=outcome["steps"]["w"]["result"]["hits"][0])

    with ScriptedModel(planner) as model:
        async with make_supervisor() as sup:
            await start(sup, agent_spec)
            out = await sup.call(
                "loop", {"base_url": model.openai_base_url, "prompt": "plan", "planner": True}
            )
    assert out["stop"] == "final" and out["text"] == "sum 6-0"
    assert (out["turns"], out["tool_calls"]) == (2, 4)  # the plan's four steps count
    assert out["calls"] == [["run_plan"], []]


async def test_model_calls_are_spans_in_the_trace(make_supervisor, agent_spec):
    finished: list[str] = []
    with ScriptedModel(fan_out) as model:
        async with make_supervisor(trace_tools=True) as sup:
            await start(sup, agent_spec)
            events = sup.events()
            try:
                out = await sup.call("loop", {"base_url": model.openai_base_url, "prompt": "go"})
                # every span was reported before the call's result: they are all queued
                async with asyncio.timeout(10):
                    async for ev in events:
                        if ev.kind == "call_finished":
                            finished.append(ev.target)
                        if finished.count("model:model") == out["turns"]:
                            break
            finally:
                await events.aclose()
    assert out["turns"] == 2
    # model, then the five calls of its turn (lookups in research too), then model
    assert finished[-1] == "model:model"
    between = finished[finished.index("model:model") + 1 : -1]
    assert sorted(between) == sorted(["research"] * 2 + ["tool:lookup"] * 4 + ["tool:boom"])


async def test_cancelling_the_call_cancels_the_model_loop_and_its_tool_calls(
    make_supervisor, agent_spec
):
    def stuck(req: Request) -> Reply:
        if req.last_user_text() == "again":
            return Reply(text="free")
        if req.turn() == 0:  # a tool call that would never end by itself
            return Reply(tool_calls=[ScriptedCall("forever", {})])
        return Reply(text="unreachable")

    with ScriptedModel(stuck) as model:
        async with make_supervisor(trace_tools=True) as sup:
            await sup.add_tool(ToolSpec(name="forever", entry=f"{E}:hang"))
            await start(sup, agent_spec)
            events = sup.events()
            call = asyncio.ensure_future(
                sup.call("loop", {"base_url": model.openai_base_url, "prompt": "go"})
            )
            async with asyncio.timeout(20):  # the model's turn is in: its tool call starts
                async for ev in events:
                    if ev.kind == "call_finished" and ev.target == "model:model":
                        break
            await events.aclose()
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            # the agent (one call at a time) is free at once: its loop, and the
            # tool call in it, were cancelled, not left running
            again = await sup.call(
                "loop",
                {"base_url": model.openai_base_url, "prompt": "again", "max_turns": 1},
                timeout=10,
            )
    assert (again["stop"], again["text"]) == ("final", "free")
