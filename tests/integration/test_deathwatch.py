"""A replica's death is noticed as it begins to exit (agentrt.deathwatch).

Each replica holds a robust futex in a memfd page of its own, shared with
the supervisor; the kernel marks it and wakes the supervisor's waiter thread
before it tears the replica's memory down.  The supervisor then checks ``/proc``
(every thread exiting) and settles the replica there and then.  These tests
pin down:

* a death by SIGKILL and by ``os._exit`` of a replica whose memory takes the
  kernel a while to free is settled by that notice, classified as before,
  and its replacement serves;
* a hostile replica that marks its own page as dead is not taken for dead
  (it goes on serving), one that wakes its waiter over and over is no
  longer watched (its death is still reported, the usual way), and one that
  grows its mapping with mremap reaches nothing past its own page;
* pages are unmapped once their processes are reaped, and the waiter
  threads end with the supervisor;
* without ``futex_waitv`` nothing is handed out and deaths are noticed as
  before.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading

import pytest

from agentrt import AgentCrashed, Supervisor, deathwatch
from agentrt.process import AgentProcess


def _available() -> bool:
    watch = deathwatch.DeathWatch()
    try:
        return watch.on
    finally:
        watch.close()


pytestmark = pytest.mark.skipif(not _available(), reason="no futex_waitv or memfd here")


def _watch(sup: Supervisor) -> deathwatch.DeathWatch:
    """The supervisor's DeathWatch (its zygote launcher's)."""
    deaths = sup._launcher.deaths
    assert deaths is not None
    return deaths


def _waiters() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("agentrt-deathwatch")]


@pytest.mark.parametrize(("how", "status"), [("kill", -signal.SIGKILL), ("exit", 3)])
async def test_a_death_is_settled_as_it_begins_and_the_replacement_serves(
    make_supervisor, agent_spec, logs, how, status
):
    async with make_supervisor(preload=["dying_agents"]) as sup:
        await sup.start(agent_spec("d", "dying_agents:die_heavy"))
        deaths = _watch(sup)
        # 128 MiB in small pages: the kernel takes a while to free them, and
        # the pipe's end and the pidfd come only after that.
        with pytest.raises(AgentCrashed) as err:
            await sup.call("d", {"mib": 128, "how": how, "say": "last words"})
        assert err.value.exit_code == status
        assert deaths.noticed == 1
        assert deaths.reported == 1
        # What it wrote just before dying was read (its pipes drained then).
        assert logs.find("agent_output", line="last words")
        # Its replacement serves, and holds a slot of its own.
        with pytest.raises(AgentCrashed):
            await sup.call("d", {"mib": 128, "how": how})
        assert deaths.noticed == 2
    assert _waiters() == []


async def test_a_replica_with_threads_is_settled_once_they_all_exit(make_supervisor, agent_spec):
    async with make_supervisor(preload=["dying_agents"]) as sup:
        await sup.start(agent_spec("t", "dying_agents:die_heavy_threaded"))
        deaths = _watch(sup)
        with pytest.raises(AgentCrashed) as err:
            await sup.call("t", {"mib": 128})
        assert err.value.exit_code == -signal.SIGKILL
        assert deaths.noticed == 1


_LEADER_GONE = """
import ctypes, os, platform, threading, time
leader = os.getpid()

def watch():
    # Says when the main thread has exited (a zombie leader), then lives on.
    while open(f"/proc/{leader}/task/{leader}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
        time.sleep(0.001)
    print("gone", flush=True)
    time.sleep(60)

threading.Thread(target=watch).start()
ctypes.CDLL(None).syscall(60 if platform.machine() == "x86_64" else 93, 1)  # SYS_exit
"""


def test_exit_started_waits_for_every_thread():
    """A main thread gone (``SYS_exit``) while another runs: STRAGGLING, not
    settled; once the whole process is killed, its status."""
    import subprocess
    import sys

    from agentrt import _linux

    child = subprocess.Popen(
        [sys.executable, "-c", _LEADER_GONE], stdout=subprocess.PIPE, text=True
    )
    pidfd = os.pidfd_open(child.pid)
    try:
        assert child.stdout is not None and child.stdout.readline() == "gone\n"
        assert _linux.exit_started(child.pid, pidfd) is _linux.STRAGGLING
        child.kill()
        assert _linux.readable(pidfd, 10)  # the whole process has exited
        status = _linux.exit_started(child.pid, pidfd)
        assert status is not None and status[0] == signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        os.close(pidfd)
        if child.stdout is not None:
            child.stdout.close()


async def test_a_replica_that_fakes_its_death_is_not_taken_for_dead(
    make_supervisor, agent_spec, monkeypatch
):
    checked = asyncio.Event()
    real = AgentProcess._exit_began

    def spy(self: AgentProcess) -> None:
        real(self)
        checked.set()

    monkeypatch.setattr(AgentProcess, "_exit_began", spy)
    async with make_supervisor(preload=["dying_agents"]) as sup:
        await sup.start(agent_spec("h", "dying_agents:fake_death"))
        deaths = _watch(sup)
        pid = await sup.call("h")
        assert pid is not None  # it held a slot, and marked it as the kernel would
        async with asyncio.timeout(10):
            await checked.wait()  # the supervisor looked, in /proc
        assert deaths.reported == 1
        assert deaths.noticed == 0
        # Still the same process, serving; nothing restarted.
        assert await sup.call("h") == pid
        assert [s.restarts for s in await sup.status()] == [0]


async def test_a_replica_waking_its_waiter_over_and_over_is_no_longer_watched(
    make_supervisor, agent_spec
):
    async with make_supervisor(preload=["dying_agents"]) as sup:
        await sup.start(agent_spec("s", "dying_agents:wake_spuriously"))
        await sup.start(agent_spec("k", "dying_agents:die_heavy"))
        deaths = _watch(sup)
        pid = await sup.call("s", {"times": 50, "pause": 0.002})
        assert pid is not None
        page = sup._pool.agents["s"].slots[0].proc._death_page
        assert page and not deaths.watched(page)  # dropped
        # Its death is still reported (the pipe's end), not through its slot.
        with pytest.raises(AgentCrashed):
            await sup.call("s", {"then_die": True})
        assert deaths.noticed == 0
        # Its replacement is up (the loop has nothing left to do about it)...
        assert await sup.call("s", {"times": 0}) not in (None, pid)
        # ...and another replica's slot is watched as before.
        with pytest.raises(AgentCrashed):
            await sup.call("k", {"mib": 128})
        assert deaths.noticed == 1


async def test_pages_are_unmapped_once_their_processes_are_reaped(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("k", "agents:kill_self", replicas=2))
        deaths = _watch(sup)
        assert len(deaths._pages) == 2
        for _ in range(4):
            with pytest.raises(AgentCrashed):
                await sup.call("k")
        await sup.stop("k")  # (returns once every process of it is reaped)
        assert deaths._pages == set()
        assert deaths._of == {}


async def test_a_replica_growing_its_mapping_reaches_nothing_past_its_page(
    make_supervisor, agent_spec
):
    async with make_supervisor(preload=["dying_agents"]) as sup:
        await sup.start(agent_spec("g", "dying_agents:grow_page"))
        await sup.start(agent_spec("d", "dying_agents:die_heavy"))
        deaths = _watch(sup)
        # mremap grows the mapping, but its memfd is one page, sealed: past it, SIGBUS.
        assert await sup.call("g") == -signal.SIGBUS
        with pytest.raises(AgentCrashed):
            await sup.call("d", {"mib": 128})
        assert deaths.noticed == 1


async def test_without_futex_waitv_no_slot_is_handed_out(make_supervisor, agent_spec, monkeypatch):
    monkeypatch.setattr(deathwatch, "_NR", None)
    watch = deathwatch.DeathWatch()
    assert not watch.on
    assert "futex_waitv" in watch.why_off
    assert watch.take() is None
    watch.close()
    async with make_supervisor() as sup:
        await sup.start(agent_spec("k", "agents:kill_self"))
        assert sup._launcher.deaths is None
        with pytest.raises(AgentCrashed) as err:
            await sup.call("k")
        assert err.value.exit_code == -signal.SIGKILL
