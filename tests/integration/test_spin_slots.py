"""Spinning is bounded: a replica polls for its next call only while it holds one
of the cores-1 spinning slots (flock on read-only files of the run directory)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap

import psutil
import pytest

from agentrt import process, worker

#: replicas spin (and the supervisor polls) only with a spinning slot: cores - 1
needs_two_cores = pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2, reason="one core: no spinning slot, nothing polls"
)

_HOLD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("held", flush=True)
sys.stdin.read()
"""


def test_a_replica_spins_only_while_it_holds_a_slot_and_a_dead_holder_frees_it(
    tmp_path, monkeypatch
):
    # The slots alone decide here: a spin that finds the CPU wanted by another
    # process (a busy machine) ends early on its own, whatever the slots say.
    monkeypatch.setattr(worker, "_CONTENDED", 3600.0)
    slots = tmp_path / "spin.0"
    slots.write_bytes(b"")
    fd = os.open(slots, os.O_RDONLY | os.O_CLOEXEC)
    r, w = os.pipe()
    polls: list[int] = []

    def ready() -> bool:
        polls.append(1)
        return len(polls) >= 3

    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(slots)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        chan = worker._Channel(r, w, 1 << 20, spin=10.0, slots=[fd])
        chan.hot = True
        chan.sent_at = 1e18  # the spin window never ends by itself
        # The only slot is another process's: no spinning, ready() is never polled.
        assert chan.spin_until(ready) is None
        assert polls == []
        # The holder dies (killed, as a replica may be): the kernel frees its lock.
        holder.kill()
        holder.wait()
        assert chan.spin_until(ready) is True
        assert len(polls) == 3
        # ...and the slot went back once the spin ended: another process may take it.
        probe = subprocess.run(
            [sys.executable, "-c", _HOLD, str(slots)],
            input="",
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert probe.returncode == 0 and probe.stdout == "held\n", probe.stderr
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        assert holder.stdout is not None and holder.stdin is not None
        holder.stdout.close()
        holder.stdin.close()
        for f in (fd, r, w):
            os.close(f)


def test_without_slots_configured_spinning_is_unbounded(tmp_path):
    r, w = os.pipe()
    try:
        chan = worker._Channel(r, w, 1 << 20, spin=10.0)
        chan.hot = True
        chan.sent_at = 1e18
        assert chan.spin_until(lambda: "frame") == "frame"
    finally:
        os.close(r)
        os.close(w)


@needs_two_cores
async def test_spinning_replicas_hold_the_run_directorys_slots_file(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("hot", "agents:echo", replicas=2))
        await sup.start(agent_spec("cold", "agents:echo", spin=0.0))
        await sup.call("hot", {})
        await sup.call("cold", {})
        prefix = os.path.join(sup._boots.rundir, "spin.")
        by_agent: dict[str, list[set[str]]] = {}
        for st in await sup.status():
            assert st.pid is not None
            opened = psutil.Process(st.pid).open_files()
            # read-only: an agent gets no file to write to through them
            assert all(f.mode == "r" for f in opened if f.path.startswith(prefix))
            files = {f.path for f in opened}
            by_agent.setdefault(st.agent, []).append(files)

        def slots(files: set[str]) -> set[str]:
            return {f for f in files if f.startswith(prefix)}

        # cores - 1 slots here; a replica opens at most two of them, read-only
        assert all(slots(files) for files in by_agent["hot"])
        assert all(len(slots(files)) <= 2 for files in by_agent["hot"])
        assert not any(slots(files) for files in by_agent["cold"])


def test_on_one_core_no_replica_spins(fixtures_dir):
    """cores - 1 = 0 slots: replicas sleep at once after answering."""
    code = textwrap.dedent(
        f"""
        import asyncio, os, psutil
        os.sched_setaffinity(0, {{min(os.sched_getaffinity(0))}})
        from agentrt import AgentSpec, Supervisor

        async def main():
            async with Supervisor(base_dir={str(fixtures_dir)!r}) as sup:
                await sup.start(AgentSpec(name="hot", entry="agents:echo"))
                assert await sup.call("hot", {{"x": 1}}) == {{"x": 1}}
                (st,) = await sup.status()
                files = [f.path for f in psutil.Process(st.pid).open_files()]
                assert not any("/spin." in p for p in files), files
                # ...and the supervisor does not poll for answers either
                for i in range(10):
                    assert await sup.call("hot", {{"x": i}}) == {{"x": i}}
                from agentrt import process
                spinner = process._spinners.get(asyncio.get_running_loop())
                assert spinner is None or spinner.spun == 0, spinner.spun
                print("ok")

        asyncio.run(main())
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


# --- the supervisor's side: a hot replica's answer is polled for ------------------------


@needs_two_cores
async def test_the_supervisor_polls_for_a_hot_replicas_answer(
    make_supervisor, agent_spec, monkeypatch
):
    # (a yield that gives the CPU away, on a busy machine, ends a poll early:
    # not what is tested here)
    monkeypatch.setattr(process, "_CONTENDED", 3600.0)
    async with make_supervisor() as sup:
        await sup.start(agent_spec("hot", "agents:echo", spin="10ms"))
        await sup.start(agent_spec("cold", "agents:echo", spin=0))
        spinner = process._spinner(asyncio.get_running_loop())
        for i in range(20):
            assert await sup.call("cold", {"i": i}) == {"i": i}
        assert (spinner.spun, spinner.caught) == (0, 0)  # spin = 0: never polled for
        # An answer within its spin makes the replica hot; the next answer is
        # read by the poll (a loaded machine may need more than one try).
        for i in range(500):
            assert await sup.call("hot", {"i": i}) == {"i": i}
            if spinner.caught:
                break
        assert spinner.caught >= 1
        assert not spinner.armed


async def test_the_supervisor_never_polls_while_other_work_is_ready(
    make_supervisor, agent_spec, monkeypatch
):
    monkeypatch.setattr(process, "_CONTENDED", 3600.0)
    async with make_supervisor() as sup:
        await sup.start(agent_spec("hot", "agents:echo", spin="5ms"))
        spinner = process._spinner(asyncio.get_running_loop())
        stop = asyncio.Event()

        async def busy() -> int:
            turns = 0
            while not stop.is_set():
                await asyncio.sleep(0)  # always ready: the loop is never idle
                turns += 1
            return turns

        task = asyncio.create_task(busy())
        try:
            for i in range(20):
                assert await sup.call("hot", {"i": i}) == {"i": i}
        finally:
            stop.set()
            turns = await task
        assert turns > 0
        assert spinner.spun == 0


@needs_two_cores
async def test_anything_else_the_loop_waits_for_ends_the_supervisors_poll(
    make_supervisor, agent_spec, monkeypatch
):
    monkeypatch.setattr(process, "_CONTENDED", 3600.0)
    real_yield = os.sched_yield
    async with make_supervisor() as sup:
        await sup.start(agent_spec("hot", "agents:sleep", spin="10ms"))
        loop = asyncio.get_running_loop()
        spinner = process._spinner(loop)

        # A slow call to a hot replica is polled for.  Mid-poll (at its first
        # yield), a socket the loop watches becomes ready: the poll ends there,
        # and the loop runs the socket's reader while the call still runs.
        # (On a loaded machine the replica may not be hot, or the loop not
        # idle, when the slow call is written: then nothing polled; try again.)
        async def attempt() -> tuple[bool, list[bool], int]:
            """(whether the poll yielded, what the reader saw, polls caught before)"""
            assert await sup.call("hot", {"seconds": 0}) == 0
            r, w = socket.socketpair()
            seen: list[bool] = []
            slow: asyncio.Future[object] | None = None

            def on_readable() -> None:
                loop.remove_reader(r.fileno())
                assert slow is not None
                seen.append(slow.done())

            def first_yield() -> None:
                if w.fileno() != -1:
                    w.send(b"x")
                    w.close()
                real_yield()

            loop.add_reader(r.fileno(), on_readable)
            monkeypatch.setattr(process.os, "sched_yield", first_yield)
            caught = spinner.caught
            try:
                slow = sup.submit("hot", {"seconds": 0.5})
                assert await slow == 0.5
            finally:
                monkeypatch.setattr(process.os, "sched_yield", real_yield)
                yielded = w.fileno() == -1
                loop.remove_reader(r.fileno())
                r.close()
                w.close()
            return yielded, seen, caught

        for _ in range(50):
            yielded, seen, caught = await attempt()
            if yielded:
                break
        assert yielded, "the slow call was never polled for"
        assert seen == [False]
        assert spinner.caught == caught + 1
