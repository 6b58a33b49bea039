"""A model turn's tool calls and planned DAGs, run by real agents.

Calls come in the three API shapes; concurrency is shown by overlapping
recorded intervals; every failure a model can cause or meet comes back as an
error answer it can read.  Agents and tools: ``tests/fixtures/llm_agents.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from agentrt import AgentSpec, Limits, PendingApproval, Supervisor, ToolSpec

E = "llm_agents"


def oa(cid: str, name: str, args: Any) -> dict[str, Any]:
    """An OpenAI chat-completions tool call (``args`` a dict, or raw text)."""
    text = args if isinstance(args, str) else json.dumps(args)
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": text}}


def rs(cid: str, name: str, args: Any) -> dict[str, Any]:
    """An OpenAI Responses function_call item."""
    text = args if isinstance(args, str) else json.dumps(args)
    return {
        "type": "function_call",
        "id": f"fc_{cid}",
        "call_id": cid,
        "name": name,
        "arguments": text,
    }


def an(cid: str, name: str, args: Any) -> dict[str, Any]:
    """An Anthropic tool_use block."""
    return {"type": "tool_use", "id": cid, "name": name, "input": args}


SHAPES = {"openai": oa, "responses": rs, "anthropic": an}


def content(shape: str, a: dict[str, Any]) -> str:
    return str(a["output"] if shape == "responses" else a["content"])


def call_id(shape: str, a: dict[str, Any]) -> str:
    return str(
        {
            "openai": a.get("tool_call_id"),
            "responses": a.get("call_id"),
            "anthropic": a.get("tool_use_id"),
        }[shape]
    )


def error(shape: str, a: dict[str, Any]) -> dict[str, str] | None:
    """The error an answer carries (None: a result)."""
    try:
        body = json.loads(content(shape, a))
    except ValueError:
        return None
    if isinstance(body, dict) and set(body) == {"error"}:
        if shape == "anthropic":
            assert a["is_error"] is True
        return body["error"]  # type: ignore[no-any-return]
    if shape == "anthropic":
        assert a["is_error"] is False
    return None


async def start_all(sup: Supervisor, agent_spec: Callable[..., AgentSpec], **extra: Any) -> None:
    await sup.add_tool(ToolSpec(name="lookup", entry=f"{E}:lookup"))
    await sup.add_tool(ToolSpec(name="blocking", entry=f"{E}:blocking"))
    await sup.add_tool(ToolSpec(name="typed", entry=f"{E}:typed"))
    await sup.add_tool(ToolSpec(name="boom", entry=f"{E}:boom"))
    await sup.add_tool(ToolSpec(name="add", entry=f"{E}:add"))
    await sup.add_tool(ToolSpec(name="hang", entry=f"{E}:hang", timeout=0.5))
    await sup.add_tool(ToolSpec(name="crash", entry=f"{E}:crash", isolated=True))
    await sup.add_tool(
        ToolSpec(name="hog", entry=f"{E}:hog", isolated=True, limits=Limits(memory="128MiB"))
    )
    await sup.add_tool(ToolSpec(name="publish", entry=f"{E}:publish", approval="required"))
    await sup.start(agent_spec("research", f"{E}:research", replicas=2))
    for name in ("turn", "schemas", "plan", "sync_turn", "turn_raising"):
        await sup.start(agent_spec(name, f"{E}:{name}", **extra))


async def test_schemas_come_from_every_tool_the_agent_may_call(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await start_all(sup, agent_spec)
        out = await sup.call("schemas", {})
    by_name = {t["function"]["name"]: t["function"] for t in out["openai"]}
    # in-process tools, an isolated one (read for its signature only) and a subagent
    assert {"lookup", "blocking", "typed", "crash", "hog", "research"} <= set(by_name)
    look = by_name["lookup"]
    assert look["description"] == "Look a term up in the catalogue."
    assert look["parameters"]["required"] == ["term"]
    assert look["parameters"]["properties"]["limit"] == {
        "description": "how many hits at most",
        "type": "integer",
        "default": 3,
    }
    assert by_name["crash"]["parameters"]["properties"]["how"]["enum"] == ["exit", "segfault"]
    assert by_name["research"]["parameters"]["required"] == ["topic"]
    assert "ctx" not in by_name["research"]["parameters"]["properties"]
    resp = {t["name"]: t for t in out["responses"]}
    assert resp["lookup"]["type"] == "function"
    assert resp["lookup"]["parameters"] == look["parameters"]
    anth = {t["name"]: t for t in out["anthropic"]}
    assert anth["typed"]["input_schema"] == by_name["typed"]["parameters"]


@pytest.mark.parametrize("shape", list(SHAPES))
async def test_a_turns_calls_run_at_once_and_answer_in_order_in_their_shape(
    shape, make_supervisor, agent_spec
):
    mk = SHAPES[shape]
    calls = [
        mk("c1", "lookup", {"term": "a", "delay": 0.4}),
        mk("c2", "blocking", {"term": "b", "delay": 0.4}),
        mk("c3", "research", {"topic": "c"}),
        mk("c4", "lookup", {"term": "d", "limit": 1, "delay": 0.4}),
        mk("c5", "research", {"topic": "e", "depth": 2}),
        mk("c6", "blocking", {"term": "f", "delay": 0.4}),
    ]
    async with make_supervisor() as sup:
        await start_all(sup, agent_spec)
        answers = await sup.call("turn", {"calls": calls})
    assert [call_id(shape, a) for a in answers] == ["c1", "c2", "c3", "c4", "c5", "c6"]
    if shape == "openai":
        assert all(a["role"] == "tool" for a in answers)
    elif shape == "responses":
        assert all(a["type"] == "function_call_output" for a in answers)
    else:
        assert all(a["type"] == "tool_result" for a in answers)
    results = [json.loads(content(shape, a)) for a in answers]
    assert all(error(shape, a) is None for a in answers)
    assert results[0]["hits"] == ["a-0", "a-1", "a-2"]
    assert results[3]["hits"] == ["d-0"]
    assert results[4]["hits"] == ["e-0", "e-1"]
    # every interval overlaps every other: no call waited for another
    assert max(r["start"] for r in results) < min(r["end"] for r in results)
    # the subagents ran in processes of their own, the tools in the agent's
    assert results[2]["pid"] != results[4]["pid"]
    assert results[0]["pid"] == results[1]["pid"] not in (results[2]["pid"], results[4]["pid"])


async def test_every_failure_is_an_error_answer_the_model_can_read(make_supervisor, agent_spec):
    async def approver(req: PendingApproval) -> bool:
        return req.args.get("text") == "fine"

    calls = [
        oa("ok", "lookup", {"term": "x", "delay": 0}),
        oa("made-up", "search_the_web", {"q": "x"}),
        oa("not-json", "lookup", "{term: x"),
        oa("bad-type", "lookup", {"term": 3}),
        oa("missing", "lookup", {}),
        oa("extra", "lookup", {"term": "x", "colour": "red"}),
        oa(
            "bad-enum", "typed", {"mode": "medium", "tags": [], "flt": {"field": "a", "value": "b"}}
        ),
        oa("raises", "boom", {"why": "no such page"}),
        oa("crashes", "crash", {"how": "exit"}),
        oa("segfault", "crash", {"how": "segfault"}),
        oa("timeout", "hang", {}),
        oa("memory", "hog", {"mib": 512}),
        oa("denied", "publish", {"text": "secret"}),
        oa("approved", "publish", {"text": "fine"}),
        oa("subagent-bad", "research", {"topic": ["not", "a", "string"]}),
        oa(
            "typed",
            "typed",
            {
                "mode": "fast",
                "tags": ["t"],
                "flt": {"field": "a", "value": "b"},
                "window": {"start": 2},
            },
        ),
    ]
    async with make_supervisor(approver=approver) as sup:
        await start_all(sup, agent_spec)
        answers = await sup.call("turn", {"calls": calls}, timeout=30)
        again = await sup.call("turn", {"calls": calls[:1]})  # the agent lived on
    by_id = {a["tool_call_id"]: a for a in answers}
    assert list(by_id) == [c["id"] for c in calls]
    errs = {cid: error("openai", a) for cid, a in by_id.items()}
    assert errs["ok"] is None and errs["approved"] is None and errs["typed"] is None
    assert by_id["approved"]["content"] == "published: fine"  # a string as it is
    assert json.loads(by_id["typed"]["content"])["flt"] == ["Filter", "a", "b"]
    assert json.loads(by_id["typed"]["content"])["window"] == ["Window", 2, 10]

    def err(cid: str) -> dict[str, str]:
        e = errs[cid]
        assert e is not None, cid
        return e

    assert err("made-up")["type"] == "UnknownTool"
    assert "search_the_web" in err("made-up")["message"] and "lookup" in err("made-up")["message"]
    assert err("not-json")["type"] == "ArgumentsError"
    assert "not valid JSON" in err("not-json")["message"]
    assert err("bad-type") == {
        "type": "ArgumentsError",
        "message": "arguments of 'lookup': Expected `str`, got `int` - at `$.term`",
    }
    assert "missing required field `term`" in err("missing")["message"]
    assert "unknown field `colour`" in err("extra")["message"]
    assert "`$.mode`" in err("bad-enum")["message"]
    assert err("raises") == {"type": "ValueError", "message": "no such page"}
    assert err("crashes")["type"] == "AgentCrashed" and "3" in err("crashes")["message"]
    assert err("segfault")["type"] == "AgentCrashed"
    assert "SIGSEGV" in err("segfault")["message"]
    assert err("timeout")["type"] == "CallTimeout"
    assert err("memory")["type"] == "LimitExceeded" and "memory" in err("memory")["message"]
    assert err("denied")["type"] == "ApprovalDenied"
    assert "`$.topic`" in err("subagent-bad")["message"]
    assert error("openai", again[0]) is None


async def test_a_spent_tool_budget_is_an_answer_too(make_supervisor, agent_spec):
    calls = [oa(f"c{i}", "lookup", {"term": str(i), "delay": 0}) for i in range(3)]
    async with make_supervisor(max_tool_calls=2) as sup:
        await start_all(sup, agent_spec)
        answers = await sup.call("turn", {"calls": calls})
    kinds = [(error("openai", a) or {}).get("type") for a in answers]
    assert sorted(kinds, key=str) == sorted([None, None, "BudgetExceeded"], key=str)


async def test_raise_errors_raises_the_first_failure_once_all_ended(make_supervisor, agent_spec):
    calls = [
        oa("a", "lookup", {"term": "x", "delay": 0}),
        oa("b", "boom", {"why": "first"}),
        oa("c", "nope", {}),
    ]
    async with make_supervisor() as sup:
        await start_all(sup, agent_spec)
        out = await sup.call("turn_raising", {"calls": calls})
    assert out == {"raised": "ValueError", "message": "first"}


async def test_a_sync_agent_runs_a_turn_too(make_supervisor, agent_spec):
    calls = [
        an("t1", "lookup", {"term": "s", "delay": 0}),
        an("t2", "research", {"topic": "r"}),
        an("t3", "boom", {}),
    ]
    async with make_supervisor() as sup:
        await start_all(sup, agent_spec)
        answers = await sup.call("sync_turn", {"calls": calls})
    assert [a["tool_use_id"] for a in answers] == ["t1", "t2", "t3"]
    assert json.loads(answers[0]["content"])["hits"][0] == "s-0"
    # research is not in the sync agent's toolbox: only tools it may call are
    assert error("anthropic", answers[1]) is not None
    assert error("anthropic", answers[2]) == {"type": "ValueError", "message": "bad input"}


# --- plans ------------------------------------------------------------------------


async def test_a_plan_runs_each_step_once_its_inputs_exist(make_supervisor, agent_spec):
    steps = [
        {"id": "one", "tool": "add", "args": {"a": 1, "b": 2}},
        {"id": "two", "tool": "add", "args": {"a": 10, "b": 20}},
        {"id": "sum", "tool": "add", "args": {"a": "${one}", "b": "${two}"}},
        {"id": "look", "tool": "lookup", "args": {"term": "n=${sum}", "limit": 1, "delay": 0}},
        {"id": "first", "tool": "lookup", "args": {"term": "${look.hits[0]}", "delay": 0}},
        {"id": "late", "tool": "add", "args": {"a": 0, "b": 0}, "after": ["first"]},
    ]
    async with make_supervisor() as sup:
        await start_all(sup, agent_spec)
        out = await sup.call("plan", {"steps": steps})
    model = out["model"]["steps"]
    assert out["ok"] is True
    assert model["sum"] == {"result": 33}
    assert model["look"]["result"]["hits"] == ["n=33-0"]
    assert model["first"]["result"]["term"] == "n=33-0"
    # the independent steps ran side by side; each dependent one after its inputs
    assert set(out["order"][:2]) == {"one", "two"}
    assert out["order"][2:] == ["sum", "look", "first", "late"]


async def test_a_failed_step_skips_its_dependents_only(make_supervisor, agent_spec):
    steps = [
        {"id": "bad", "tool": "boom", "args": {"why": "broken"}},
        {"id": "after_bad", "tool": "add", "args": {"a": "${bad}", "b": 1}},
        {"id": "good", "tool": "add", "args": {"a": 1, "b": 1}},
        {"id": "wrong_field", "tool": "lookup", "args": {"term": "${good.nope}"}},
        {"id": "wrong_type", "tool": "add", "args": {"a": "x${good}", "b": 1}},
    ]
    async with make_supervisor() as sup:
        await start_all(sup, agent_spec)
        out = await sup.call("plan", {"steps": steps})
    model = out["model"]["steps"]
    assert out["ok"] is False
    assert model["bad"] == {"error": {"type": "ValueError", "message": "broken"}}
    assert model["after_bad"] == {"skipped": "step 'bad' failed"}
    assert model["good"] == {"result": 2}
    assert model["wrong_field"]["error"]["type"] == "GraphRefError"
    assert "cannot take field 'nope' of int" in model["wrong_field"]["error"]["message"]
    assert model["wrong_type"]["error"]["type"] == "ArgumentsError"


@pytest.mark.parametrize(
    ("steps", "expect"),
    [
        (
            [
                {"id": "a", "tool": "add", "args": {"a": "${c}", "b": 1}},
                {"id": "b", "tool": "add", "args": {"a": "${a}", "b": 1}},
                {"id": "c", "tool": "add", "args": {"a": "${b}", "b": 1}},
            ],
            "cycle: ",
        ),
        ([{"id": "a", "tool": "add", "args": {"a": "${zz}", "b": 1}}], "unknown step 'zz'"),
        ([{"id": "a", "tool": "add", "args": {"a": "${a.", "b": 1}}], "malformed reference"),
        ([{"id": "a", "tool": "fly", "args": {}}], "steps.a.tool: no tool named 'fly'"),
        ([{"id": "a", "tool": "add", "args": {}, "colour": 1}], "unknown field `colour`"),
        ("[{not json", "not valid JSON"),
        ([{"id": "a", "tool": "add"}, {"id": "a", "tool": "add"}], "duplicate step id 'a'"),
    ],
    ids=["cycle", "dangling", "malformed", "unknown-tool", "bad-shape", "not-json", "duplicate"],
)
async def test_a_plan_that_cannot_run_is_one_readable_error(
    steps, expect, make_supervisor, agent_spec
):
    async with make_supervisor() as sup:
        await start_all(sup, agent_spec)
        out = await sup.call("plan", {"steps": steps})
    assert out["ok"] is False and out["order"] == []
    assert out["model"]["error"]["type"] == "PlanError"
    assert expect in out["model"]["error"]["message"]


async def test_a_turns_calls_to_one_isolated_tool_overlap_up_to_its_concurrency(
    make_supervisor, agent_spec
):
    calls = [oa(f"c{i}", "far", {"term": str(i), "delay": 0.4}) for i in range(4)]
    async with make_supervisor() as sup:
        await sup.add_tool(ToolSpec(name="far", entry=f"{E}:lookup", isolated=True, concurrency=4))
        await sup.start(agent_spec("turn", f"{E}:turn"))
        answers = await sup.call("turn", {"calls": calls})
    results = [json.loads(a["content"]) for a in answers]
    assert len({r["pid"] for r in results}) == 1  # one tool process served all four...
    assert max(r["start"] for r in results) < min(r["end"] for r in results)  # ...at once
