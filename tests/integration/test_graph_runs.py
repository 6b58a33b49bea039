"""Task graphs on real agents: readiness without barriers, failure policies, fan-out,
retries, timeouts, dynamic submission.  Parallelism is shown by recorded intervals."""

from __future__ import annotations

import pytest

from agentrt import RunSpec
from agentrt.graph import Graph, GraphError
from agentrt.scheduler import Run


async def _agents(sup, agent_spec):
    await sup.start(agent_spec("echo", "agents:echo", replicas=2))
    await sup.start(agent_spec("timed", "agents:timed", replicas=2, concurrency=8))


async def test_independent_tasks_overlap_and_dependents_start_after_their_inputs(
    make_supervisor, agent_spec
):
    async with make_supervisor() as sup:
        await _agents(sup, agent_spec)
        g = Graph()
        g.add("a", "timed", args={"seconds": 0.3, "tag": "a"})
        g.add("b", "timed", args={"seconds": 0.3, "tag": "b"})
        g.add("c", "timed", args={"seconds": 0.05, "tag": "${a.tag}+"})
        r = await Run(sup, g).wait()
        assert r.status == "ok"
        a, b, c = (r.tasks[t].result for t in "abc")
        assert max(a["start"], b["start"]) < min(a["end"], b["end"])  # a and b overlapped
        assert c["start"] >= a["end"]  # c waited only for its input
        assert c["tag"] == "a+"
        assert r.critical_path[-1] == "c"
        assert r.critical_path[0] == "a"
        assert r.makespan > 0


async def test_references_keep_types_and_reach_into_fields_and_indexes(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await _agents(sup, agent_spec)
        g = Graph()
        g.add("search", "echo", args={"hits": [{"title": "one"}, {"title": "two"}], "n": 2})
        g.add(
            "use",
            "echo",
            args={
                "n": "${search.n}",
                "hits": "${search.hits}",
                "t": "${search.hits[1].title}",
                "s": "n is ${search.n}",
            },
        )
        r = await Run(sup, g).wait()
        out = r.tasks["use"].result
        assert out == {
            "n": 2,
            "hits": [{"title": "one"}, {"title": "two"}],
            "t": "two",
            "s": "n is 2",
        }


async def test_reference_into_a_missing_field_fails_the_task_naming_it(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await _agents(sup, agent_spec)
        g = Graph()
        g.add("search", "echo", args={"hits": []})
        g.add("use", "echo", args={"t": "${search.hits[0].title}"})
        r = await Run(sup, g).wait()
        assert r.tasks["use"].status == "failed"
        assert "index 0" in r.tasks["use"].error["message"]


def test_cycles_and_dangling_references_are_refused_before_anything_runs() -> None:
    g = Graph()
    g.add("a", "echo", args={"x": "${b}"})
    g.add("b", "echo", args={"x": "${a}"})
    with pytest.raises(GraphError, match="cycle: a -> b -> a"):
        g.validate()
    g2 = Graph()
    g2.add("a", "echo", args={"x": "${serch}"})
    g2.add("search", "echo")
    with pytest.raises(GraphError, match="unknown task 'serch'"):
        g2.validate()


async def test_continue_skips_only_dependents_of_a_failure(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await _agents(sup, agent_spec)
        await sup.start(agent_spec("check", "agents:fail_if"))
        g = Graph()
        g.add("bad", "check", args={"value": 1, "bad": 1})
        g.add("child", "echo", args={"x": "${bad}"})
        g.add("grandchild", "echo", after=["child"])
        g.add("other", "timed", args={"seconds": 0.05})
        r = await Run(sup, g, RunSpec(on_error="continue")).wait()
        assert r.status == "failed"
        assert r.tasks["bad"].status == "failed"
        assert r.tasks["bad"].error["remote_type"] == "ValueError"
        assert r.tasks["child"].status == "skipped"
        assert "bad" in r.tasks["child"].reason
        assert r.tasks["grandchild"].status == "skipped"
        assert r.tasks["other"].status == "ok"


async def test_fail_fast_cancels_what_is_in_flight(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await _agents(sup, agent_spec)
        await sup.start(agent_spec("check", "agents:fail_if"))
        g = Graph()
        g.add("slow", "timed", args={"seconds": 30})
        g.add("bad", "check", args={"value": 1, "bad": 1})
        g.add("later", "echo", after=["slow"])
        r = await Run(sup, g, RunSpec(on_error="fail_fast")).wait()
        assert r.status == "failed"
        assert r.tasks["slow"].status == "cancelled"
        assert r.tasks["later"].status == "skipped"
        # the slow task's replica was told to stop: the agent serves at once
        assert (await sup.call("timed", {"seconds": 0}, timeout=5))["tag"] == ""


async def test_fan_out_runs_one_task_per_item_and_collects_results_in_order(
    make_supervisor, agent_spec
):
    async with make_supervisor() as sup:
        await _agents(sup, agent_spec)
        g = Graph()
        g.add("plan", "echo", args={"topics": ["x", "y", "z"]})
        g.add("each", "timed", args={"seconds": 0.2, "tag": "${item}"}, for_each="${plan.topics}")
        g.add("join", "echo", args={"tags": "${each}"})
        r = await Run(sup, g).wait()
        assert r.status == "ok"
        results = r.tasks["join"].result["tags"]
        assert [x["tag"] for x in results] == ["x", "y", "z"]
        assert max(x["start"] for x in results) < min(x["end"] for x in results)


async def test_fan_out_quorum_lets_the_downstream_run_with_the_successes(
    make_supervisor, agent_spec
):
    async with make_supervisor() as sup:
        await _agents(sup, agent_spec)
        await sup.start(agent_spec("check", "agents:fail_if", replicas=2))
        g = Graph()
        g.add("plan", "echo", args={"values": [1, 2, 3, 4]})
        g.add(
            "each",
            "check",
            args={"value": "${item}", "bad": 3},
            for_each="${plan.values}",
            min_success=2,
            on_error="continue",
        )
        g.add("join", "echo", args={"ok": "${each}"})
        r = await Run(sup, g, RunSpec(on_error="continue")).wait()
        assert r.tasks["each"].status == "ok"
        oks = r.tasks["join"].result["ok"]
        assert len(oks) >= 2
        assert 3 not in oks


async def test_a_failed_task_is_retried_until_it_succeeds(make_supervisor, agent_spec, tmp_path):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("flaky", "agents:flaky_once"))
        g = Graph()
        g.add("t", "flaky", args={"marker": str(tmp_path / "m")}, retries=2)
        r = await Run(sup, g, RunSpec(retry_backoff=0.01)).wait()
        assert r.tasks["t"].status == "ok"
        assert r.tasks["t"].attempts == 2


async def test_a_task_stuck_in_sync_code_times_out_and_its_replica_is_replaced(
    make_supervisor, agent_spec
):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("stuck", "agents:stuck"))
        await _agents(sup, agent_spec)
        g = Graph()
        g.add("t", "stuck", timeout=0.3)
        g.add("free", "echo", args={"ok": True})
        r = await Run(sup, g, RunSpec(on_error="continue")).wait()
        assert r.tasks["t"].status == "timeout"
        assert r.tasks["free"].result == {"ok": True}


async def test_run_deadline_stops_the_whole_run(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await _agents(sup, agent_spec)
        g = Graph()
        g.add("long", "timed", args={"seconds": 30})
        g.add("after", "echo", after=["long"])
        r = await Run(sup, g, RunSpec(deadline=0.3)).wait()
        assert r.status == "timeout"
        assert r.tasks["long"].status == "timeout"
        assert r.tasks["after"].status == "skipped"


async def test_agents_add_tasks_while_the_run_goes_on(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await _agents(sup, agent_spec)
        await sup.start(agent_spec("planner", "agents:planner"))
        g = Graph()
        g.add("plan", "planner", args={"topics": ["p", "q"]})
        r = await Run(sup, g).wait()
        assert r.status == "ok"
        assert r.tasks["topic_p"].result == {"topic": "p"}
        assert r.tasks["summary"].result == {"all": [{"topic": "p"}, {"topic": "q"}]}


async def test_run_events_stream_task_transitions(make_supervisor, agent_spec):
    import asyncio

    async with make_supervisor() as sup:
        await _agents(sup, agent_spec)
        seen: list[tuple[str, str | None]] = []

        async def watch() -> None:
            async for ev in sup.events():
                seen.append((ev.kind, ev.task))
                if ev.kind == "run_finished":
                    return

        watcher = asyncio.ensure_future(watch())
        await asyncio.sleep(0)  # subscribe before the run starts
        g = Graph()
        g.add("a", "echo")
        g.add("b", "echo", after=["a"])
        await Run(sup, g).wait()
        await asyncio.wait_for(watcher, 5)
        kinds = [k for k, _ in seen]
        assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
        assert ("task_finished", "a") in seen and ("task_finished", "b") in seen
        assert seen.index(("task_finished", "a")) < seen.index(("task_started", "b"))


async def test_the_calls_a_task_makes_name_the_task_in_their_events(make_supervisor, agent_spec):
    import asyncio

    async with make_supervisor(trace_tools=True) as sup:
        await sup.start(agent_spec("worker", "agents:worker", replicas=2))
        await sup.start(agent_spec("fan", "agents:fan_out", replicas=2))
        seen: list = []

        async def watch() -> None:
            async for ev in sup.events():
                if ev.kind == "run_finished":
                    return
                if ev.kind == "call_started":
                    seen.append(ev)

        watcher = asyncio.ensure_future(watch())
        await asyncio.sleep(0)  # subscribed before the run starts
        g = Graph()
        g.add("one", "fan", args={"n": 2, "delay": 0})
        g.add("two", "fan", args={"n": 1, "delay": 0})
        r = await Run(sup, g).wait()
        await asyncio.wait_for(watcher, 5)
        assert r.status == "ok"
        by_task: dict[str, set[str]] = {}
        for ev in seen:
            by_task.setdefault(ev.task, set()).add(ev.target)
        # subagent calls and the in-process tool calls they make, each under its task
        assert set(by_task) == {"one", "two"}
        assert by_task["one"] == {"worker", "tool:lookup", "tool:shout"}
        assert len([e for e in seen if e.task == "one" and e.target == "worker"]) == 2
