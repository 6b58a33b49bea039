"""Nothing escapes: what an interrupted call started ends with it; limits hold for
the whole tree; mailboxes and requests are bounded (real processes, hostile agents)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import psutil
import pytest

from agentrt import CallCancelled, CallTimeout, LimitExceeded, Limits, sandbox

_CGROUPS = bool(sandbox.probe()["cgroup"]["controllers"])


def _pid(path: Path) -> int:
    return int(path.read_text())


async def _gone(pid: int, timeout: float = 5.0) -> bool:
    """Wait (bounded) for ``pid`` to end; True once it has."""
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return True
    _gone, alive = await asyncio.to_thread(psutil.wait_procs, [proc], timeout)
    return not alive


@pytest.mark.parametrize("entry", ["agents:start_and_hang", "agents:astart_and_hang"])
@pytest.mark.parametrize("daemon", [False, True])
@pytest.mark.parametrize("ending", ["timeout", "cancel"])
async def test_an_interrupted_call_leaves_nothing_running_and_its_replica_serves_on(
    entry, daemon, ending, make_supervisor, agent_spec, make_gate, tmp_path
):
    gate = make_gate("child.pid")  # the agent writes its child's pid here
    async with make_supervisor() as sup:
        await sup.start(agent_spec("starter", entry))
        [before] = await sup.status()
        args = {"pidfile": gate.path, "daemon": daemon}
        call = asyncio.ensure_future(
            sup.call("starter", args, timeout=1.0 if ending == "timeout" else 20.0)
        )
        child = int(await gate.read_line())  # started: the call hangs now
        if ending == "cancel":
            call.cancel()
        with pytest.raises((CallTimeout, CallCancelled, asyncio.CancelledError)):
            await call
        assert await _gone(child), f"the call's child {child} outlived the call"
        [after] = await sup.status()
        if ending == "timeout" or entry.startswith("agents:a"):
            # a deadline interrupts any call, a cancellation an async one: the
            # replica survives (a blocked sync call is ended with its replica)
            assert after.pid == before.pid
        pidfile = tmp_path / "later.pid"
        assert await sup.call("starter", {**args, "pidfile": str(pidfile), "hang": False}) == (
            _pid(pidfile)
        )


async def test_what_an_earlier_call_started_survives_a_later_calls_timeout(
    make_supervisor, agent_spec, tmp_path
):
    first, second = tmp_path / "first.pid", tmp_path / "second.pid"
    async with make_supervisor() as sup:
        await sup.start(agent_spec("starter", "agents:start_and_hang"))
        kept = await sup.call("starter", {"pidfile": str(first), "hang": False})
        with pytest.raises(CallTimeout):
            await sup.call("starter", {"pidfile": str(second)}, timeout=1.0)
        assert await _gone(_pid(second))
        assert psutil.pid_exists(kept) and psutil.Process(kept).status() != "zombie"


# --- the zygote is supervised too -----------------------------------------------------


@pytest.mark.parametrize("profile", ["default", "strict", "untrusted"])
async def test_a_killed_zygote_is_replaced_and_every_agent_serves_again(
    profile, make_supervisor, agent_spec, healthy, logs
):
    if profile != "default" and os.geteuid() != 0:
        pytest.skip(f"the {profile} profile needs root here")
    async with make_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo", replicas=2, sandbox=profile))
        [first, *_] = await sup.status()
        zygote = _zygote_of(first.pid)
        os.kill(zygote, signal.SIGKILL)
        await logs.wait_for("zygote_restarting")
        async with asyncio.timeout(10):  # a bound, not a figure: it takes milliseconds
            await healthy(sup)  # the replicas died with it, and are back
            await sup.start(agent_spec("late", "agents:echo", sandbox=profile))
        assert await sup.call("late", {"x": 1}) == {"x": 1}
        pids = [s.pid for s in await sup.status()]
        assert all(p is not None and psutil.Process(p).ppid() != zygote for p in pids)


def _zygote_of(pid: int | None) -> int:
    assert pid is not None
    zygote = psutil.Process(pid).ppid()
    assert zygote not in (0, 1, os.getpid())
    return zygote


async def test_a_zygote_that_keeps_dying_stops_the_supervisor(make_supervisor, agent_spec, logs):
    async with make_supervisor(intensity=1, period=60, on_agent_failure="continue") as sup:
        await sup.start(agent_spec("echo", "agents:echo"))
        [st] = await sup.status()
        os.kill(_zygote_of(st.pid), signal.SIGKILL)
        await logs.wait_for("replica_ready", agent="echo", generation=1)
        [st] = await sup.status()
        os.kill(_zygote_of(st.pid), signal.SIGKILL)  # one death more than intensity allows
        async with asyncio.timeout(10):
            await sup.wait_closed()
        assert sup.failure is not None and sup.failure.agent == "zygote"
        assert "zygote" in sup.failed_agents


# --- everything a replica started ends with it -------------------------------------------


async def _chain_pids(gate, n: int = 5) -> list[psutil.Process]:
    return [psutil.Process(int(await gate.read_line())) for _ in range(n)]


async def test_a_chain_of_sessions_ends_with_its_replica(make_supervisor, agent_spec, make_gate):
    gate = make_gate("chain")
    async with make_supervisor() as sup:
        await sup.start(agent_spec("chainer", "agents:setsid_chain"))
        assert await sup.call("chainer", {"pidfile": gate.path}) == "started"
        chain = await _chain_pids(gate)
        assert len({p.pid for p in chain}) == 5
        assert len({p.pid for p in chain} & {os.getsid(p.pid) for p in chain}) == 5  # sessions
    _gone, alive = await asyncio.to_thread(psutil.wait_procs, chain, 5)
    assert not alive, f"{len(alive)} of the chain outlived close()"


async def test_a_chain_of_sessions_ends_when_the_supervisor_is_sigkilled(make_gate, tmp_path):
    from clitools import ROOT, write_project

    gate = make_gate("chain")
    agents = (Path(ROOT) / "tests" / "fixtures" / "agents.py").read_text()
    cfg = write_project(
        tmp_path,
        agents,
        f'[agents.chainer]\nentry = "agents:setsid_chain_and_hang"\n'
        f'[[tasks]]\nid = "t"\nagent = "chainer"\nargs = {{ pidfile = "{gate.path}" }}\n',
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentrt.cli",
        "supervise",
        str(cfg),
        cwd=ROOT,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        chain = await _chain_pids(gate)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        _gone, alive = await asyncio.to_thread(psutil.wait_procs, chain, 5)
        assert not alive, f"{len(alive)} of the chain outlived the supervisor"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# --- limits hold for the whole tree -------------------------------------------------------


@pytest.mark.skipif(not _CGROUPS, reason="no cgroup: the watchdog sums the tree instead")
async def test_children_past_the_memory_limit_are_the_replicas_limit(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await sup.start(
            agent_spec("parent", "agents:children_hog", limits=Limits(memory=256 * 2**20))
        )
        with pytest.raises(LimitExceeded) as info:
            await sup.call("parent", {"n": 5, "mb": 150})
        assert info.value.limit == "memory"


async def test_children_past_the_cpu_time_limit_are_the_replicas_limit(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("parent", "agents:children_spin", limits=Limits(cpu_time=2.0)))
        with pytest.raises(LimitExceeded) as info:
            await sup.call("parent", {"n": 3, "seconds": 1.5})
        assert info.value.limit == "cpu_time"


@pytest.mark.skipif(not _CGROUPS, reason="without a cgroup there is nothing to find them by")
async def test_under_strict_an_interrupted_call_still_leaves_nothing_running(
    make_supervisor, agent_spec, make_gate, tmp_path
):
    # /proc is outside strict's allowlist: the replica finds what to end
    # through its cgroup (opened before it was confined)
    import msgspec

    from agentrt.config import FilesystemSpec, load_sandbox

    strict = load_sandbox("strict")[0]
    assert strict.filesystem is not None
    prof = msgspec.structs.replace(
        strict, filesystem=FilesystemSpec(read=strict.filesystem.read, write=[str(tmp_path)])
    )
    gate = make_gate("child.pid")
    async with make_supervisor() as sup:
        await sup.start(agent_spec("starter", "agents:start_and_hang", sandbox=prof))
        call = asyncio.ensure_future(
            sup.call("starter", {"pidfile": gate.path, "daemon": True}, timeout=1.0)
        )
        child = int(await gate.read_line())
        with pytest.raises(CallTimeout):
            await call
        assert await _gone(child), f"the call's child {child} outlived the call"
