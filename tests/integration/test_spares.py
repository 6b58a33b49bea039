"""The zygote's spares: processes forked ahead that become replicas, one each."""

from __future__ import annotations

import os
import signal

import psutil
import pytest


def _spares() -> list[psutil.Process]:
    """The zygote's idle spares: its children with no session of their own."""
    me = psutil.Process()
    zygotes = {p.pid for p in me.children()}
    out = []
    for p in me.children(recursive=True):
        try:
            if p.ppid() in zygotes and os.getsid(p.pid) != p.pid:
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
