"""The core scenarios on the ``ray`` backend: each replica a Ray actor of a real cluster.

The same agents (``tests/fixtures``) and the same assertions as on the local
backend: results, typed deaths, restarts and intensity, timeouts with
cancellation, graphs, subagents, isolated tools, pause and resume.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path

import psutil
import pytest

from agentrt import (
    AgentCrashed,
    AgentFailed,
    ApprovalDenied,
    BudgetExceeded,
    CallTimeout,
    LimitExceeded,
    Limits,
    StartupError,
    ToolSpec,
)
from agentrt.config import FilesystemSpec, SandboxLimits, SandboxProfile
from agentrt.graph import Graph
from agentrt.scheduler import Run

pytestmark = pytest.mark.ray


async def test_calls_run_in_ray_actors_and_results_come_back(ray_supervisor, agent_spec):
    async with ray_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo", replicas=2))
        await sup.start(agent_spec("who", "agents:whoami"))
        assert await sup.call("echo", {"x": [1, "two", {"3": None}]}) == {
            "x": [1, "two", {"3": None}]
        }
        assert await sup.map("echo", [{"i": i} for i in range(50)]) == [{"i": i} for i in range(50)]
        status = {s.agent: s for s in await sup.status()}
        assert status["who"].node is not None  # placed by Ray, and it says where
        who = await sup.call("who")
        assert who["pid"] == status["who"].pid
        # the replica is a process of its actor's, not of the supervisor's
        assert who["pid"] not in {p.pid for p in psutil.Process().children()}
        assert who["sid"] == who["pid"]  # a session of its own, as locally


@pytest.mark.parametrize(
    ("entry", "args", "exit_code", "signame"),
    [
        ("agents:exit_with", {"code": 3}, 3, None),
        ("agents:kill_self", None, -9, "SIGKILL"),
        ("agents:segfault", None, -11, "SIGSEGV"),
    ],
)
async def test_a_replica_death_is_classified_as_on_the_local_backend_and_it_restarts(
    ray_supervisor, agent_spec, logs, entry, args, exit_code, signame
):
    async with ray_supervisor() as sup:
        await sup.start(agent_spec("bad", entry))
        await sup.start(agent_spec("echo", "agents:echo"))
        [before] = [s for s in await sup.status() if s.agent == "bad"]
        with pytest.raises(AgentCrashed) as ei:
            await sup.call("bad", args)
        err = ei.value
        assert err.exit_code == exit_code
        assert err.signal_name == signame
        assert err.pid == before.pid
        await logs.wait_for("replica_ready", agent="bad", generation=1)
        [after] = [s for s in await sup.status() if s.agent == "bad"]
        assert after.restarts == 1 and after.pid != before.pid
        assert await sup.call("echo", {"ok": 1}) == {"ok": 1}


async def test_the_memory_limit_is_an_rlimit_on_the_node_and_a_ray_request(
    ray_supervisor, agent_spec, logs
):
    async with ray_supervisor() as sup:
        await sup.start(agent_spec("hog", "agents:blow_memory", limits=Limits(memory="256MiB")))
        with pytest.raises(LimitExceeded) as ei:
            await sup.call("hog", {"mb": 2048})
        assert ei.value.limit == "memory"
        assert ei.value.value == 256 * 1024 * 1024
        await logs.wait_for("replica_ready", agent="hog", generation=1)
        assert await sup.call("hog", {"mb": 1}) == 1


async def test_a_replica_killed_from_outside_is_sigkill(ray_supervisor, agent_spec, make_gate):
    gate = make_gate()
    async with ray_supervisor() as sup:
        await sup.start(agent_spec("slow", "agents:report_and_sleep"))
        call = sup.submit("slow", {"fifo": gate.path, "seconds": 30})
        pid = int((await gate.read_line()).split()[-1])
        os.kill(pid, signal.SIGKILL)  # the cluster's nodes are on this machine
        with pytest.raises(AgentCrashed) as ei:
            await call
        assert ei.value.signal == signal.SIGKILL
        assert ei.value.pid == pid


async def test_an_actor_killed_before_its_cleanup_leaves_no_directory_behind(
    ray_supervisor, agent_spec, make_gate, logs
):
    gate = make_gate()
    async with ray_supervisor() as sup:
        await sup.start(agent_spec("slow", "agents:report_and_sleep"))
        call = sup.submit("slow", {"fifo": gate.path, "seconds": 30})
        replica = psutil.Process(int((await gate.read_line()).split()[-1]))
        cwd = Path(replica.cwd())
        [base] = [p for p in (cwd, *cwd.parents) if p.name.startswith("agentrt-ray-")]
        assert (base / "work").is_dir()
        actor = replica.parent()
        assert actor is not None and "ReplicaHost" in " ".join(actor.cmdline())
        actor.kill()  # as Ray kills an actor: it removes nothing
        with pytest.raises(AgentCrashed):
            await call
        await logs.wait_for("replica_ready", agent="slow", replica=0, generation=1)
        # the replacement's actor found the directory abandoned
        assert not base.exists()
        assert await sup.call("slow", {"fifo": gate.path, "seconds": 0}) == 0


async def test_pause_stops_the_replica_on_its_node_and_resume_continues_it(
    ray_supervisor, agent_spec, make_gate
):
    gate = make_gate()
    async with ray_supervisor() as sup:
        await sup.start(agent_spec("slow", "agents:report_and_sleep"))
        call = sup.submit("slow", {"fifo": gate.path, "seconds": 0.5})
        pid = int((await gate.read_line()).split()[-1])
        assert await sup.pause("slow") == ["slow#0"]
        assert psutil.Process(pid).status() == psutil.STATUS_STOPPED
        assert await sup.resume("slow") == ["slow#0"]
        assert await call == 0.5
        assert psutil.Process(pid).status() != psutil.STATUS_STOPPED


async def test_restart_intensity_holds_on_ray(ray_supervisor, agent_spec, logs):
    async with ray_supervisor(intensity=2, period=60, on_agent_failure="continue") as sup:
        await sup.start(agent_spec("bad", "agents:exit_with"))
        await sup.start(agent_spec("echo", "agents:echo"))
        for _ in range(3):
            with pytest.raises(AgentCrashed):
                await sup.call("bad", {"code": 4})
        await logs.wait_for("agent_failed", agent="bad")
        assert sup.failure is None and set(sup.failed_agents) == {"bad"}
        with pytest.raises(AgentFailed):
            await sup.call("bad", {"code": 4})
        assert await sup.call("echo", {"still": "here"}) == {"still": "here"}


async def test_a_timed_out_call_is_cancelled_and_the_replica_serves_again(
    ray_supervisor, agent_spec
):
    async with ray_supervisor() as sup:
        await sup.start(agent_spec("stuck", "agents:stuck", cancel_grace=0.2))
        with pytest.raises(CallTimeout):
            await sup.call("stuck", timeout=0.5)
        await sup.start(agent_spec("echo", "agents:echo"))
        assert await sup.call("echo", {"after": 1}) == {"after": 1}


async def test_a_graph_fans_out_over_ray_replicas(ray_supervisor, agent_spec):
    async with ray_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo"))
        await sup.start(agent_spec("timed", "agents:timed", replicas=2, concurrency=4))
        g = Graph()
        g.add("plan", "echo", args={"topics": ["x", "y", "z"]})
        g.add("each", "timed", args={"seconds": 0.3, "tag": "${item}"}, for_each="${plan.topics}")
        g.add("join", "echo", args={"tags": "${each}"})
        r = await Run(sup, g).wait()
        assert r.status == "ok", r
        results = r.tasks["join"].result["tags"]
        assert [x["tag"] for x in results] == ["x", "y", "z"]
        assert max(x["start"] for x in results) < min(x["end"] for x in results)  # in parallel


async def test_subagents_are_ray_replicas_with_their_tools(ray_supervisor, agent_spec):
    async with ray_supervisor() as sup:
        await sup.start(agent_spec("worker", "agents:worker", replicas=3))
        await sup.start(agent_spec("fan", "agents:fan_out"))
        results = await sup.call("fan", {"n": 3, "delay": 0.2})
        assert [r["i"] for r in results] == [0, 1, 2]
        assert len({r["pid"] for r in results}) == 3
        assert max(r["start"] for r in results) < min(r["end"] for r in results)
        assert results[2]["hits"][1] == "W2"


async def test_an_isolated_tool_that_segfaults_fails_only_its_call(ray_supervisor, agent_spec):
    async with ray_supervisor() as sup:
        await sup.add_tool(ToolSpec(name="crashy", entry="tools:crashy", isolated=True))
        await sup.start(agent_spec("iso", "agents:call_isolated"))
        first = await sup.call("iso", {"mode": "ok"})
        with pytest.raises(Exception) as info:
            await sup.call("iso", {"mode": "segfault"})
        assert info.value.to_dict()["exit_code"] == -11
        second = await sup.call("iso", {"mode": "ok"})
        assert second["pid"] != first["pid"]


async def test_replicas_of_a_lost_node_are_restarted_on_the_nodes_left(
    ray_cluster, ray_supervisor, agent_spec, logs, make_gate
):
    gate = make_gate()
    doomed = ray_cluster.add_node(num_cpus=2)
    ray_cluster.wait_for_nodes()
    gone = doomed.node_id[:12]
    async with ray_supervisor(intensity=10) as sup:
        await sup.start(agent_spec("slow", "agents:report_and_sleep", replicas=4))
        placed = {s.replica: s.node for s in await sup.status()}
        lost = [r for r, node in placed.items() if node is not None and gone in node]
        assert lost and len(lost) < 4, placed  # spread over both nodes
        calls = [sup.submit("slow", {"fifo": gate.path, "seconds": 30}) for _ in range(4)]
        running = {int((await gate.read_line()).split()[-1]) for _ in range(4)}
        assert running == {s.pid for s in await sup.status()}  # one call in each replica
        ray_cluster.remove_node(doomed)
        failed = []
        for fut in asyncio.as_completed(calls):  # the lost node's calls fail first
            try:
                await fut
            except AgentCrashed as err:
                failed.append(err)
            if len(failed) == len(lost):
                break
        for err in failed:
            assert isinstance(err, AgentCrashed), repr(err)
            assert err.signal == signal.SIGKILL
            assert "Ray actor died" in str(err)
        for r in lost:
            await logs.wait_for("replica_ready", agent="slow", replica=r, generation=1)
        after = await sup.status()
        assert all(s.node is not None and gone not in s.node for s in after)
        for call in calls:  # the survivors' calls are still running: cancelled
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        crashed = [c for c in calls if not c.cancelled() and c.exception() is not None]
        assert len(crashed) == len(lost)  # only the lost node's calls failed
        more = await sup.map("slow", [{"fifo": gate.path, "seconds": 0.01}] * 8)
        assert more == [0.01] * 8


async def test_the_sandbox_holds_on_the_node(ray_supervisor, agent_spec, tmp_path):
    allowed, secret, out = (tmp_path / d for d in ("allowed", "secret", "out"))
    for d in (allowed, secret, out):
        d.mkdir()
    (allowed / "data.txt").write_text("public")
    (secret / "key.txt").write_text("hunter2")
    prof = SandboxProfile(
        network="none", filesystem=FilesystemSpec(read=[str(allowed)], write=[str(out)])
    )
    async with ray_supervisor() as sup:
        await sup.start(agent_spec("fs", "sandboxed:read", sandbox=prof))
        await sup.start(agent_spec("w", "sandboxed:write", sandbox=prof))
        await sup.start(agent_spec("net", "sandboxed:connect", sandbox=prof))
        assert await sup.call("fs", {"path": str(allowed / "data.txt")}) == "public"
        assert await sup.call("fs", {"path": str(secret / "key.txt")}) == "PermissionError"
        assert await sup.call("w", {"path": str(out / "ok.txt"), "text": "y"}) == "ok"
        assert await sup.call("w", {"path": str(allowed / "no.txt")}) == "PermissionError"
        with socket.create_server(("127.0.0.1", 0)) as srv:
            port = srv.getsockname()[1]
            assert await sup.call("net", {"port": port}) != "ok"  # its own network namespace
    assert (out / "ok.txt").read_text() == "y"


async def test_a_strict_profile_that_needs_cgroups_does_not_start_on_ray(
    ray_supervisor, agent_spec
):
    prof = SandboxProfile(enforce="strict", cgroup=True, limits=SandboxLimits(processes=16))
    async with ray_supervisor() as sup:
        with pytest.raises(StartupError) as ei:
            await sup.start(agent_spec("boxed", "agents:echo", sandbox=prof))
        assert "cgroup" in str(ei.value) and "Ray" in str(ei.value)


async def test_a_lenient_profile_that_needs_cgroups_starts_with_a_warning(
    ray_supervisor, agent_spec, logs
):
    prof = SandboxProfile(cgroup=True, limits=SandboxLimits(processes=16))
    async with ray_supervisor() as sup:
        await sup.start(agent_spec("boxed", "agents:echo", sandbox=prof))
        [warned] = logs.find("sandbox_unenforced", agent="boxed", setting="cgroup")
        assert "Ray" in warned["why"]
        assert await sup.call("boxed", {"a": 1}) == {"a": 1}


async def test_preload_modules_are_imported_by_each_replica_and_a_bad_one_fails_its_start(
    ray_supervisor, agent_spec
):
    async with ray_supervisor(preload=["no_such_module_here"]) as sup:
        with pytest.raises(StartupError) as ei:
            await sup.start(agent_spec("echo", "agents:echo"))
        assert "preload 'no_such_module_here' failed" in str(ei.value)


async def test_budgets_approvals_and_events_behave_as_locally(ray_supervisor, agent_spec):
    async def approver(req):
        return req.args.get("n") != 3

    async with ray_supervisor(max_tool_calls=3, approver=approver) as sup:
        events = sup.events()
        await sup.start(agent_spec("worker", "agents:worker", replicas=3))
        await sup.start(agent_spec("fan", "agents:fan_out"))
        with pytest.raises(BudgetExceeded) as info:  # 3 subagents x 2 tool calls > 3
            await sup.call("fan", {"n": 3, "delay": 0})
        assert info.value.budget == "max_tool_calls"
        await sup.start(agent_spec("gated", "agents:echo", approval="required"))
        assert await sup.call("gated", {"n": 1}) == {"n": 1}
        with pytest.raises(ApprovalDenied):
            await sup.call("gated", {"n": 3})
        kinds = []
        async with asyncio.timeout(10):
            async for ev in events:  # from the start: the subagent calls' too
                kinds.append((ev.kind, ev.agent))
                if ev.kind == "call_finished" and ev.agent == "worker":
                    break
        assert ("replica_ready", "fan") in kinds and ("call_started", "worker") in kinds


async def test_a_memory_request_no_node_can_grant_fails_the_start_by_its_timeout(
    ray_supervisor, agent_spec
):
    async with ray_supervisor() as sup:
        spec = agent_spec("huge", "agents:echo", limits=Limits(memory="100TiB"), startup_timeout=3)
        with pytest.raises(StartupError) as ei:
            await sup.start(spec)
        assert "not placed within 3s" in str(ei.value)
        await sup.start(agent_spec("echo", "agents:echo"))  # the rest goes on
        assert await sup.call("echo", {"a": 1}) == {"a": 1}


async def test_strangers_on_the_stream_listener_are_turned_away(ray_supervisor, agent_spec):
    async with ray_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo"))
        lst = sup._launcher._listener
        loop = asyncio.get_running_loop()
        for hello in (b"", b"x" * 17, os.urandom(16) + b"D", b"y" * 4096):
            with socket.create_connection((lst.host, lst.port)) as s:
                s.sendall(hello)
                s.shutdown(socket.SHUT_WR)
                s.setblocking(False)
                # the listener closes it (EOF, or a reset where bytes were left
                # unread), nothing ever written back
                try:
                    got = await asyncio.wait_for(loop.sock_recv(s, 1), 15)
                except ConnectionResetError:
                    got = b""
                assert got == b""
        assert await sup.call("echo", {"still": "served"}) == {"still": "served"}
        await sup.start(agent_spec("more", "agents:echo"))  # new replicas still connect
        assert await sup.call("more", {"b": 2}) == {"b": 2}


async def test_a_flood_of_idle_connections_does_not_keep_replicas_from_starting(
    ray_supervisor, agent_spec
):
    async with ray_supervisor() as sup:
        lst = sup._launcher._listener
        loop = asyncio.get_running_loop()
        idle = []
        try:
            for _ in range(1100):  # more than the listener keeps waiting for a hello
                s = socket.socket()
                s.setblocking(False)
                idle.append(s)
                await loop.sock_connect(s, (lst.host, lst.port))
            await sup.start(agent_spec("echo", "agents:echo", replicas=2))
            assert await sup.call("echo", {"ok": True}) == {"ok": True}
        finally:
            for s in idle:
                s.close()
