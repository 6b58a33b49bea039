"""The zygote's spares: processes forked ahead that become replicas, one each."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import psutil
import pytest

from agentrt import ConfigError, Limits, StartupError, SupervisorSpec
from agentrt.config import SandboxLimits, SandboxProfile


def _not_own_session(p: psutil.Process) -> bool:
    return os.getsid(p.pid) != p.pid


def _spares() -> list[psutil.Process]:
    """The zygote's idle spares: its children named ``agentrt-spare`` (from
    their first step), or not yet in a session of their own (a replica forked
    without a spare, in its first steps)."""
    me = psutil.Process()
    zygotes = {p.pid for p in me.children()}
    out = []
    for p in me.children(recursive=True):
        try:
            if p.ppid() in zygotes and (p.name() == "agentrt-spare" or _not_own_session(p)):
                out.append(p)
        except (psutil.Error, ProcessLookupError):
            pass
    return out


@pytest.mark.parametrize("spares", [0, 4])
async def test_replicas_start_and_restart_with_or_without_spares(
    spares, make_supervisor, agent_spec, healthy, logs
):
    async with make_supervisor(spares=spares, intensity=100) as sup:
        await sup.start(agent_spec("echo", "agents:echo", replicas=3))
        await healthy(sup)
        seen = {s.pid for s in await sup.status()}
        # every replica is a process of its own, never one that served another
        for generation in (1, 2, 3):
            for st in await sup.status():
                os.kill(st.pid, signal.SIGKILL)
            for replica in range(3):
                await logs.wait_for(
                    "replica_ready", agent="echo", replica=replica, generation=generation
                )
            pids = {s.pid for s in await sup.status()}
            assert len(pids) == 3 and not pids & seen
            seen |= pids
            await healthy(sup)
        if spares == 0:
            assert _spares() == []


async def test_a_killed_spare_is_not_a_replica_death_and_is_replaced(
    make_supervisor, agent_spec, healthy, logs
):
    async with make_supervisor(spares=2) as sup:
        await sup.start(agent_spec("echo", "agents:echo"))
        await healthy(sup)
        for p in _spares():
            os.kill(p.pid, signal.SIGKILL)
        await sup.start(agent_spec("more", "agents:echo", replicas=3))
        await healthy(sup)
        await healthy(sup, "more")
        assert not logs.find("replica_died")  # no replica died: only spares did


async def test_replicas_forked_in_one_batch_each_have_channels_of_their_own(
    make_supervisor, agent_spec, logs
):
    """Without spares a burst is forked in batches (the zygote reads the
    requests waiting before it forks any, and each child briefly holds its
    siblings' pipes): each replica still answers and writes on pipes of its
    own, and a death is its own alone."""
    n = 16
    async with make_supervisor(spares=0, intensity=100) as sup:
        await sup.start(agent_spec("talk", "agents:say_pid", replicas=n))
        before = {s.replica: s.pid for s in await sup.status()}
        assert len(set(before.values())) == n
        answered = set(await asyncio.gather(*(sup.call("talk") for _ in range(4 * n))))
        assert answered <= set(before.values())
        for pid in answered:  # each line logged as the output of the replica that printed it
            await logs.wait_for("agent_output", agent="talk", line=f"pid {pid}", pid=pid)
        assert all(e["line"] == f"pid {e['pid']}" for e in logs.find("agent_output"))
        victim = min(before)
        os.kill(before[victim], signal.SIGKILL)
        await logs.wait_for("replica_ready", agent="talk", replica=victim, generation=1)
        after = {s.replica: s.pid for s in await sup.status()}
        assert after[victim] != before[victim]
        assert {r: p for r, p in after.items() if r != victim} == {
            r: p for r, p in before.items() if r != victim
        }
        assert [e["replica"] for e in logs.find("replica_died")] == [victim]


def _cgroup_paths(pid: int) -> dict[str, str]:
    """Controller -> the path of ``pid``'s group (v1 lines, and v2's as "")."""
    out: dict[str, str] = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _id, ctrls, path = line.rstrip("\n").split(":", 2)
            for c in ctrls.split(",") if ctrls else [""]:
                out[c] = path
    return out


def _read_int(path: str) -> int:
    return int(Path(path).read_text())


def _existing(paths: list[str]) -> list[str]:
    return [p for p in paths if Path(p).exists()]


def _replica_groups(sup) -> bool:
    return bool(sup._boots.spare_cgroups())


async def test_the_spares_kept_start_at_four_and_double_on_demand_up_to_the_bound(
    make_supervisor, agent_spec, healthy
):
    async with make_supervisor(spares=6) as sup:
        client = sup._launcher.client
        assert await client.spares_forked(4) == 4
        assert client.spares_target == 4 and len(_spares()) == 4
        # A burst that finds no spare left: the zygote keeps more, never past 6.
        await sup.start(agent_spec("echo", "agents:echo", replicas=8))
        await healthy(sup)
        assert await client.spares_forked(6) == 6
        assert client.spares_target == 6 and len(_spares()) == 6


async def test_spares_min_keeps_that_many_from_the_start_and_a_burst_takes_them(
    make_supervisor, agent_spec, healthy
):
    async with make_supervisor(spares=8, spares_min=6) as sup:
        client = sup._launcher.client
        # six before any start (four without spares_min: this would time out)
        assert await asyncio.wait_for(client.spares_forked(6), 30) == 6
        assert client.spares_target == 6
        waiting = {p.pid for p in _spares()}
        assert len(waiting) == 6
        await sup.start(agent_spec("echo", "agents:echo", replicas=6))
        await healthy(sup)
        assert {st.pid for st in await sup.status()} == waiting  # each was a spare


def test_spares_min_above_spares_is_a_config_error_naming_both() -> None:
    with pytest.raises(ConfigError, match=r"spares_min: must be at most spares \(4\), got 5"):
        SupervisorSpec(spares_min=5)


async def test_a_spare_waits_in_groups_of_its_own_and_renames_them_to_its_replicas(
    make_supervisor, agent_spec
):
    async with make_supervisor(spares=2) as sup:
        if not _replica_groups(sup):
            pytest.skip("no cgroups for replicas on this machine")
        client = sup._launcher.client
        await client.spares_forked(2)
        for p in _spares():
            groups = _cgroup_paths(p.pid)
            assert groups["memory" if "memory" in groups else ""].endswith(f"/spare-{p.pid}")
        waiting = {p.pid for p in _spares()}
        await sup.start(agent_spec("lim", "agents:echo", limits=Limits(memory=512 << 20)))
        (st,) = await sup.status()
        assert st.pid in waiting  # the replica was a spare...
        groups = _cgroup_paths(st.pid)
        leaf = "lim.0.0"
        memory = groups.get("memory", groups.get(""))
        assert memory is not None and memory.endswith("/" + leaf)  # ...now in its own group
        boot = sup._pool.agents["lim"].slots[0].proc.boot
        (mem_dir,) = [d for d in boot.cgroups if "/memory/" in d or len(boot.cgroups) == 1]
        limit_file = "memory.limit_in_bytes" if "memory" in groups else "memory.max"
        assert _read_int(os.path.join(mem_dir, limit_file)) == 512 << 20
        assert await sup.call("lim", {"x": 1}) == {"x": 1}
        parents = sup._boots.spare_cgroups()
    # Nothing is left: neither the replica's groups nor any spare's.
    assert _existing(parents) == []


def _rmdir(path: str) -> None:
    os.rmdir(path)


async def test_a_replica_that_cannot_make_its_group_warns_and_runs_unless_required(
    make_supervisor, agent_spec, logs
):
    """The replica makes its own groups; one it cannot make is a warning it
    sends once it can speak, or, for a strict ``cgroup = true`` profile, a
    failed start that names the group."""
    async with make_supervisor(spares=0) as sup:
        parents = sup._boots.spare_cgroups()
        if not parents:
            pytest.skip("no cgroups for replicas on this machine")
        await sup.start(agent_spec("first", "agents:echo"))
        await sup.stop("first")  # (its groups removed: the parents are empty)
        gone = parents[-1]
        _rmdir(gone)  # the supervisor's parent group of one hierarchy: gone
        await sup.start(agent_spec("lenient", "agents:echo"))
        assert await sup.call("lenient", {"x": 1}) == {"x": 1}
        (warned,) = logs.find("sandbox_unenforced", agent="lenient")
        assert warned["source"] == "agent" and warned["setting"] == "cgroup"
        assert gone in warned["why"]
        strict = SandboxProfile(enforce="strict", cgroup=True, limits=SandboxLimits(processes=64))
        with pytest.raises(StartupError, match="cannot join cgroup"):
            await sup.start(agent_spec("strict", "agents:echo", sandbox=strict))
        assert await sup.call("lenient", {"x": 2}) == {"x": 2}


async def test_spares_serve_a_supervisor_with_descriptors_past_select_limit(
    make_supervisor, agent_spec, logs
):
    """A supervisor of many replicas holds more than 1,024 descriptors: a spare's
    pidfd may be numbered past what select(2) takes."""
    async with make_supervisor(spares=2) as sup:
        fillers = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
        try:
            await sup._launcher.client.spares_forked(2)  # the start takes spares
            await sup.start(agent_spec("many", "agents:echo", replicas=3))
            (first, *_rest) = await sup.status()
            os.kill(first.pid, signal.SIGKILL)
            await logs.wait_for("replica_ready", agent="many", replica=first.replica, generation=1)
            assert await sup.map("many", [{"i": i} for i in range(6)]) == [
                {"i": i} for i in range(6)
            ]
        finally:
            for f in fillers:
                os.close(f)


async def _signal_ready_spares(sup, sig: int) -> set[int]:
    """Wait for the 4 spares to be ready, send each ``sig``: their pids."""
    client = sup._launcher.client
    await client.spares_forked(4)
    ready = set(client._ready)
    for pid in ready:
        os.kill(pid, sig)
    return ready


async def test_a_spare_waits_in_a_session_of_its_own_named_and_its_replica_is_not(
    make_supervisor, agent_spec
):
    """A spare leaves the zygote's session as it is forked (the replica it
    becomes has a session of its own), named ``agentrt-spare`` while it
    waits; the replica it becomes is named as the zygote is."""
    async with make_supervisor(spares=2) as sup:
        client = sup._launcher.client
        await client.spares_forked(2)
        zygote = psutil.Process(client.pid)
        waiting = set(client._ready)
        assert {p.pid for p in _spares()} == waiting
        for pid in waiting:
            assert os.getsid(pid) == os.getpgid(pid) == pid != os.getsid(zygote.pid)
        await sup.start(agent_spec("w", "agents:whoami"))
        info = await sup.call("w")
        assert info["pid"] in waiting  # the replica was a spare
        assert info["sid"] == info["pgid"] == info["pid"]
        assert psutil.Process(info["pid"]).name() == zygote.name() != "agentrt-spare"


async def test_waiting_spares_ignore_a_terminals_ctrl_c(make_supervisor, agent_spec, logs):
    """A spare is forked in the zygote's process group, which a terminal's
    Ctrl-C reaches, and anyone may signal it: it must wait on, and become a
    replica that stops as usual."""
    async with make_supervisor(spares=4) as sup:
        waiting = await _signal_ready_spares(sup, signal.SIGINT)
        await sup.start(agent_spec("echo", "agents:echo", replicas=2))
        pids = {s.pid for s in await sup.status()}
        assert pids <= waiting  # two of the spares, alive after the SIGINT
        assert await sup.call("echo", {"x": 1}) == {"x": 1}
        assert not logs.find("replica_died")


async def test_a_dead_spares_exit_is_not_kept_for_a_later_process(make_supervisor, agent_spec):
    """A spare found dead is let go; its exit report must not wait around for a
    later process that gets the same pid."""
    async with make_supervisor(spares=4) as sup:
        client = sup._launcher.client
        killed = await _signal_ready_spares(sup, signal.SIGKILL)
        await sup.start(agent_spec("echo", "agents:echo"))  # finds them dead: forks
        # The zygote reports their exits before it forks new spares: once four
        # new ones are ready, every report of the dead ones has been read.
        await client.spares_forked(4)
        assert not killed & set(client._ready)
        assert not killed & set(client._early)


async def test_a_spare_waits_with_its_replicas_workdir_made(make_supervisor, agent_spec):
    """A spare makes its replica's working directory while it waits (renamed
    to the replica's name when it becomes one); a spare that dies waiting
    leaves none behind."""
    async with make_supervisor(spares=4) as sup:
        client = sup._launcher.client
        await client.spares_forked(4)
        rundir = sup._boots.rundir
        made = {pid: os.stat(os.path.join(rundir, f"spare-{pid}")).st_ino for pid in client._ready}
        await sup.start(agent_spec("w", "agents:whoami"))
        info = await sup.call("w")
        assert info["pid"] in made
        assert os.stat(info["cwd"]).st_ino == made[info["pid"]]  # the spare's, renamed
        assert os.path.basename(info["cwd"]) == "w.0.0"
        killed = await _signal_ready_spares(sup, signal.SIGKILL)
        await sup.start(agent_spec("echo", "agents:echo"))  # finds them dead: forks
        await client.spares_forked(4)  # (their exits were handled before)
        left = {name for name in os.listdir(rundir) if name.startswith("spare-")}
        assert not left & {f"spare-{pid}" for pid in killed}
        assert left == {f"spare-{pid}" for pid in client._ready}


def test_a_supervisor_gone_with_the_zygotes_messages_unread_is_cleaned_up_after(
    tmp_path: Path,
) -> None:
    """A supervisor that closes its socket (or dies) before it read what the
    zygote sent makes the zygote's next read fail with ECONNRESET, not end:
    the zygote takes its spares down, removes the run directory and exits 0,
    as at the socket's end, without a traceback."""
    import select
    import socket
    import subprocess
    import sys

    import msgspec

    from agentrt import _linux
    from agentrt.protocol import SpareForked, ZygoteReply
    from agentrt.zygote import _BOOTSTRAP, _ROOT, _SPARES_FIRST

    rundir = tmp_path / "run"
    rundir.mkdir()
    decoder = msgspec.msgpack.Decoder(ZygoteReply)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    args = msgspec.json.encode([theirs.fileno(), [], [], os.getpid(), str(rundir), 8, [], 0])
    code = _BOOTSTRAP.format(args=args.decode(), root=_ROOT)
    with subprocess.Popen(
        [sys.executable, "-c", code], pass_fds=[theirs.fileno()], stderr=subprocess.PIPE
    ) as zygote:
        theirs.close()
        with ours:
            # Everything it sends read, but for its last spare's news, which
            # is only looked at: once it came, the zygote waits, idle.
            spares = []
            while len(spares) < _SPARES_FIRST:
                assert select.select([ours], [], [], 30)[0], "the zygote went quiet"
                data, fds = _linux.recv_with_fds(ours, 1 << 16, 4, socket.MSG_PEEK)
                for fd in fds:
                    os.close(fd)
                msg = decoder.decode(data)
                if isinstance(msg, SpareForked):
                    spares.append(psutil.Process(msg.pid))
                if len(spares) < _SPARES_FIRST:
                    for fd in _linux.recv_with_fds(ours, 1 << 16, 4)[1]:
                        os.close(fd)
        _, err = zygote.communicate(timeout=30)
    assert b"Traceback" not in err, err.decode()
    assert zygote.returncode == 0, err.decode()
    assert not rundir.exists()
    _gone, alive = psutil.wait_procs(spares, timeout=10)  # taken down with it
    assert not alive
