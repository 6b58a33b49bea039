"""``standby = true``: a replica made ahead takes the place of the next one that dies.

The standby is launched, confined and has imported its agent's module before
any replica dies; when one does and is restarted, the standby becomes it
(``Become``) instead of a process being started then.  Each test tells a
standby from a replica started for its slot by what the module saw when it
was imported: a standby does not know its replica number yet
(``IMPORTED_AS`` is None).
"""

from __future__ import annotations

import asyncio
import os

import msgspec
import psutil
import pytest

from agentrt import AgentFailed, Limits, StandbyStatus, ToolSpec, _linux
from agentrt.supervisor import pool

E = "standby_agents"


@pytest.fixture(autouse=True)
def _next_standby_at_once(monkeypatch):
    monkeypatch.setattr(pool, "_STANDBY_AFTER", 0.0)


@pytest.mark.parametrize("entry", ["who", "awho"])
async def test_a_standby_takes_the_place_of_a_dead_replica(
    make_supervisor, agent_spec, logs, entry
):
    async with make_supervisor(intensity=10) as sup:
        await sup.start(agent_spec("s", f"{E}:{entry}", standby=True))
        await logs.wait_for("standby_ready", agent="s")
        first = await sup.call("s")
        assert (first["replica"], first["generation"], first["imported_as"]) == ("0", "0", "0")
        with pytest.raises(Exception, match="exited with code 3"):
            await sup.call("s", {"die": "exit"})
        # The call made right after the death is the standby's first: it comes
        # in the same read as its Become (an async agent's loop takes both).
        second = await sup.call("s")
        assert second["pid"] != first["pid"]
        assert (second["replica"], second["generation"]) == ("0", "1")
        assert second["imported_as"] is None  # imported before it knew: the standby
        ready = logs.find("replica_ready", agent="s", generation=1)
        assert [e["standby"] for e in ready] == [True]
        (st,) = await sup.status()
        assert (st.pid, st.restarts, st.state) == (second["pid"], 1, "ready")
        # Another standby is made for the next death.
        await logs.wait_for("standby_ready", agent="s", standby=2)
        with pytest.raises(Exception, match="exited with code 3"):
            await sup.call("s", {"die": "exit"})
        third = await sup.call("s")
        assert (third["generation"], third["imported_as"]) == ("2", None)
        assert third["pid"] not in (first["pid"], second["pid"])


async def test_auto_keeps_a_standby_from_the_first_restart_on(make_supervisor, agent_spec, logs):
    async with make_supervisor(intensity=10) as sup:
        await sup.start(agent_spec("s", f"{E}:who", standby="auto"))
        first = await sup.call("s")
        assert sup.standbys() == [] and sup._pool.agents["s"].standby_task is None
        with pytest.raises(Exception, match="exited with code 3"):
            await sup.call("s", {"die": "exit"})
        second = await sup.call("s")  # the first restart: started for its slot
        assert (second["generation"], second["imported_as"]) == ("1", "0")
        ready = await logs.wait_for("standby_ready", agent="s")  # and a standby made
        with pytest.raises(Exception, match="exited with code 3"):
            await sup.call("s", {"die": "exit"})
        third = await sup.call("s")
        assert (third["pid"], third["generation"], third["imported_as"]) == (
            ready["pid"],
            "2",
            None,
        )
        await logs.wait_for("standby_ready", agent="s", standby=2)  # kept from now on
        assert first["pid"] not in (second["pid"], third["pid"])


async def test_auto_is_not_set_off_by_a_group_restart_only_by_its_own_death(
    make_supervisor, agent_spec, logs
):
    async with make_supervisor(strategy="one_for_all", intensity=10) as sup:
        await sup.start(agent_spec("a", f"{E}:who", standby="auto"))
        await sup.start(agent_spec("b", f"{E}:who"))
        with pytest.raises(Exception, match="exited with code 3"):
            await sup.call("b", {"die": "exit"})  # a's replica restarts with the group
        await logs.wait_for("replica_ready", agent="a", generation=1)
        await logs.wait_for("replica_ready", agent="b", generation=1)
        assert (await sup.call("a"))["generation"] == "1"
        assert sup.standbys() == [] and sup._pool.agents["a"].standby_task is None
        with pytest.raises(Exception, match="exited with code 3"):
            await sup.call("a", {"die": "exit"})  # its own
        assert (await sup.call("a"))["generation"] == "2"
        ready = await logs.wait_for("standby_ready", agent="a")
        assert sup.standbys() == [StandbyStatus(agent="a", pid=ready["pid"], state="ready")]


def _cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


async def test_a_paused_agents_standby_is_frozen_until_resume_then_takes_a_place(
    make_supervisor, agent_spec, logs
):
    async with make_supervisor(intensity=10) as sup:
        await sup.start(agent_spec("s", "standby_spin:who", standby=True))
        pid = (await logs.wait_for("standby_ready", agent="s"))["pid"]
        replica = await sup.call("s")
        assert sup.standbys() == [StandbyStatus(agent="s", pid=pid, state="ready")]
        assert await sup.pause("s") == ["s#0"]
        assert logs.find("standby_paused", agent="s", pid=pid)
        assert sup.standbys() == [StandbyStatus(agent="s", pid=pid, state="paused")]
        before = _cpu(pid)
        await asyncio.sleep(0.5)
        assert _cpu(pid) - before < 0.05  # its import's thread stopped with it
        assert await sup.resume("s") == ["s#0"]
        before = _cpu(pid)
        await asyncio.sleep(0.5)
        assert _cpu(pid) - before > 0.05  # and runs again
        with pytest.raises(Exception, match="exited with code 3"):
            await sup.call("s", {"die": "exit"})
        assert await sup.call("s") == pid  # the thawed standby took the place
        assert pid != replica


async def test_a_standby_that_becomes_ready_while_its_agent_is_paused_is_frozen(
    make_supervisor, agent_spec, logs, make_gate
):
    gate, report = make_gate("gate"), make_gate("report")
    env = {"STANDBY_GATE": gate.path, "STANDBY_REPORT": report.path}
    async with make_supervisor(intensity=10) as sup:
        await sup.start(agent_spec("s", "standby_gated:who", standby=True, env=env))
        pid = int(await report.read_line())  # its standby is importing, held at the gate
        await sup.pause("s")
        gate.release()
        assert (await logs.wait_for("standby_paused", agent="s"))["pid"] == pid
        assert [e["pid"] for e in logs.find("standby_ready", agent="s")] == [pid]
        standby = sup._pool.agents["s"].standby
        assert standby is not None and standby.pid == pid and standby.thaw is not None
        await sup.resume("s")
        assert standby.thaw is None  # thawed


async def test_no_standby_is_made_while_its_agent_is_paused(make_supervisor, agent_spec, logs):
    async with make_supervisor(intensity=10) as sup:
        await sup.pause()  # the run: an agent started now starts paused
        await sup.start(agent_spec("s", f"{E}:who", standby=True))
        agent = sup._pool.agents["s"]  # (a standby is asked for as the start ends)
        assert agent.standby_task is None and not agent.standby_procs  # its import would run
        await sup.resume()
        await logs.wait_for("standby_ready", agent="s")
        assert (await sup.call("s"))["replica"] == "0"


async def test_without_standby_a_replacement_is_started_for_its_slot(make_supervisor, agent_spec):
    async with make_supervisor(intensity=10) as sup:
        await sup.start(agent_spec("s", f"{E}:who"))
        with pytest.raises(Exception, match="exited with code 3"):
            await sup.call("s", {"die": "exit"})
        again = await sup.call("s")
        assert (again["generation"], again["imported_as"]) == ("1", "0")


async def test_the_restart_intensity_still_decides(make_supervisor, agent_spec, logs):
    async with make_supervisor(intensity=1, period=60) as sup:
        await sup.start(agent_spec("s", f"{E}:who", standby=True))
        await logs.wait_for("standby_ready", agent="s")
        with pytest.raises(Exception, match="exited with code 3"):
            await sup.call("s", {"die": "exit"})
        assert (await sup.call("s"))["imported_as"] is None
        await logs.wait_for("standby_ready", agent="s", standby=2)
        with pytest.raises(Exception, match="exited with code 3"):
            await sup.call("s", {"die": "exit"})
        with pytest.raises(AgentFailed):
            await sup.call("s")
    # (no process left: the failed agent's standby was stopped with it)


async def test_stopping_the_agent_stops_its_standby(make_supervisor, agent_spec, logs):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("s", f"{E}:who", standby=True))
        ready = await logs.wait_for("standby_ready", agent="s")
        standby = ready["pid"]
        await sup.stop("s")
        with pytest.raises(ProcessLookupError):
            os.kill(standby, 0)  # stopped and reaped
        await sup.start(agent_spec("t", f"{E}:who"))
        assert (await sup.call("t"))["imported_as"] == "0"


async def test_a_standby_that_died_is_not_used_nor_made_again(make_supervisor, agent_spec, logs):
    async with make_supervisor(intensity=10) as sup:
        await sup.start(agent_spec("s", f"{E}:who", standby=True))
        ready = await logs.wait_for("standby_ready", agent="s")
        os.kill(ready["pid"], 9)
        died = await logs.wait_for("standby_died", agent="s")
        assert died["pid"] == ready["pid"]
        with pytest.raises(Exception, match="exited with code 3"):
            await sup.call("s", {"die": "exit"})
        again = await sup.call("s")
        assert (again["generation"], again["imported_as"]) == ("1", "0")  # started for it
        assert len(logs.find("standby_ready", agent="s")) == 1


async def test_a_standby_whose_tree_passes_the_cpu_time_limit_is_killed(
    make_supervisor, agent_spec, logs
):
    # Its import forks a child that spins while the standby lives: no one
    # process reaches RLIMIT_CPU (one second), the tree passes 0.3 s.
    async with make_supervisor(intensity=10) as sup:
        await sup.start(
            agent_spec("s", "standby_tree:who", standby=True, limits=Limits(cpu_time=0.3))
        )
        pid = (await logs.wait_for("standby_ready", agent="s"))["pid"]
        spinner = psutil.Process(pid).children()[0]
        died = await logs.wait_for("standby_died", agent="s")
        assert died["pid"] == pid
        assert died["limit"] == "cpu_time"
        assert "past the limit of 0.3s" in died["reason"]  # the watchdog's, not SIGXCPU
        spinner.wait(timeout=5)  # its child ended with it (psutil.TimeoutExpired if not)
        assert not spinner.is_running()
        assert sup._pool.agents["s"].standby is None
        replica = await sup.call("s")  # the replica (no spinner of its own) serves
        assert replica != pid


async def test_a_standby_made_before_a_tool_was_added_is_not_used(
    make_supervisor, agent_spec, logs
):
    async with make_supervisor(intensity=10) as sup:
        await sup.start(agent_spec("s", f"{E}:use_tool", standby=True))
        await logs.wait_for("standby_ready", agent="s")
        # Agents restarted after add_tool can call it: the standby cannot.
        await sup.add_tool(ToolSpec(name="upper", entry=f"{E}:upper"))
        with pytest.raises(Exception, match="exited with code 3"):
            await sup.call("s", {"die": "exit"})
        assert await sup.call("s") == {"imported_as": "0", "tool": "OK"}
        # A standby with the tool is made instead, and used at the next death.
        await logs.wait_for("standby_ready", agent="s", standby=2)
        with pytest.raises(Exception, match="exited with code 3"):
            await sup.call("s", {"die": "exit"})
        assert await sup.call("s") == {"imported_as": None, "tool": "OK"}


_CHILD = """
import sys, msgspec
from agentrt.protocol import Boot
from agentrt.worker import child_main
boot = msgspec.msgpack.decode(bytes.fromhex(sys.argv[1]), type=Boot)
child_main(boot, int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
"""


@pytest.mark.parametrize("entry", ["nap", "anap"])
def test_the_frames_read_with_become_are_served_in_order(fixtures_dir, tmp_path, entry):
    """A standby's Become, a call and the call's Cancel in one read: the call
    is answered as cancelled (in a sync and in an async replica), and the
    next call runs as the replica it became."""
    import subprocess
    import sys
    import time

    from agentrt.protocol import (
        AgentMessage,
        Become,
        Boot,
        Call,
        Cancel,
        Failure,
        FrameDecoder,
        FrameEncoder,
        Ready,
        Result,
        Shutdown,
    )

    boot = Boot(
        agent="s",
        replica=-1,
        generation=1,
        entry=f"{E}:{entry}",
        workdir=str(tmp_path / "w"),
        sys_path=[str(fixtures_dir)],
        standby=True,
    )
    to_r, to_w = os.pipe()
    from_r, from_w = os.pipe()
    out_r, out_w = os.pipe()
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CHILD,
            msgspec.msgpack.encode(boot).hex(),
            *map(str, (to_r, from_w, out_w)),
        ],
        pass_fds=(to_r, from_w, out_w),
    )
    for fd in (to_r, from_w, out_w):
        os.close(fd)
    enc, dec = FrameEncoder(), FrameDecoder(AgentMessage)
    got: list[object] = []

    def until(kind: type) -> object:
        while not any(isinstance(m, kind) for m in got):
            assert _linux.readable(from_r, 10.0), f"no {kind.__name__} frame within 10s: {got}"
            chunk = os.read(from_r, 65536)
            assert chunk, f"the replica exited before a {kind.__name__} frame: {got}"
            got.extend(dec.feed(chunk))
        return next(m for m in got if isinstance(m, kind))

    try:
        assert isinstance(until(Ready), Ready)
        far = time.monotonic() + 30
        os.write(
            to_w,
            enc.encode(Become(0, 1))
            + enc.encode(Call(1, "", {"seconds": 5.0}, far))
            + enc.encode(Cancel(1)),
        )
        failure = until(Failure)
        assert (failure.id, failure.kind) == (1, "cancelled")
        os.write(to_w, enc.encode(Call(2, "", {"seconds": 0.0}, far)))
        result = until(Result)
        assert (result.id, result.value) == (2, "slept")
        os.write(to_w, enc.encode(Shutdown()))
        assert child.wait(timeout=10) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for fd in (to_w, from_r, out_r):
            os.close(fd)
