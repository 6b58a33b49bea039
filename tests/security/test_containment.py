"""Nothing escapes: what an interrupted call started ends with it; limits hold for
the whole tree; mailboxes and requests are bounded (real processes, hostile agents)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psutil
import pytest

from agentrt import CallCancelled, CallTimeout


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
