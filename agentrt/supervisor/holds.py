"""Pause and resume: processes really stopped, nothing dispatched, deadlines standing still.

A paused replica's processes are frozen: by the cgroup freezer where the
replica has a group that can freeze (v2, or v1's ``freezer`` hierarchy),
else by SIGSTOP to every process of its tree.  The pool dispatches nothing
to it.  Pausing an agent pauses every replica it has and any it starts
later, and holds the calls waiting in its queue; pausing the run pauses
every agent, those started later too (isolated tools' pools included).

The rule for deadlines: **while paused, time stands still for the paused
calls.**  A call running on a paused replica, or waiting in a paused
agent's queue, gets on resume the time it had left when the pause began:
the supervisor's timers are held, and before the replica runs again a
``Held`` frame tells it how long the pause lasted, so that its own timers
(the call's deadline, its tool calls' timeouts) move as much.  Calls of
agents that are not paused keep their deadlines, including the subagent
and tool calls a paused call had made: they run on, bounded by the
deadline they were given.  A cancellation waits too: a call cancelled
while its replica is paused is settled at once, and the replica hears of
it (and gets its ``cancel_grace``) when resumed.  Stopping or killing a
paused replica thaws it first.

A paused agent's standby (``standby = true``) is frozen too: what its
import started runs no more than the replicas do (one still starting is
frozen as it becomes ready).  None is launched while the agent is paused
(its import is the agent's code); one is made on resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from typing import Any

from agentrt import _linux
from agentrt.errors import ControlError
from agentrt.process import AgentProcess
from agentrt.protocol import Held
from agentrt.sandbox import Cgroups
from agentrt.supervisor.events import EventHub
from agentrt.supervisor.ledger import Ledger
from agentrt.supervisor.pool import Agent, Pool, Slot

__all__ = ["Holds"]

#: how long a freeze may take to settle (the kernel freezes tasks one by one)
_FREEZE_WAIT = 2.0


class Holds:
    """Pauses and resumes agents, replicas and the whole run."""

    def __init__(self, pool: Pool, ledger: Ledger[Slot], events: EventHub, log: Any) -> None:
        self.pool = pool
        self.ledger = ledger
        self.events = events
        self.log = log
        #: the whole run is paused: agents started from now on start paused
        self.all = False
        pool.on_ready = self._ready
        pool.on_standby = self._standby_ready

    # --- targets -----------------------------------------------------------------

    def resolve(self, target: str) -> tuple[list[Agent], list[Slot]]:
        """``""``: every agent; ``NAME``: an agent; ``NAME#N``: one replica.

        :class:`ControlError` names what is running when nothing matches.
        """
        agents = self.pool.agents
        if not target:
            return list(agents.values()), [s for a in agents.values() for s in a.slots]
        name, hash_, index = target.rpartition("#") if "#" in target else (target, "", "")
        agent = agents.get(name)
        if agent is None:
            raise ControlError(f"no agent named {name!r} (running: {', '.join(agents) or 'none'})")
        if not hash_:
            return [agent], list(agent.slots)
        if not index.isdigit() or int(index) >= len(agent.slots):
            raise ControlError(f"{name!r} has replicas #0 to #{len(agent.slots) - 1}, not #{index}")
        return [], [agent.slots[int(index)]]

    # --- pause ---------------------------------------------------------------------

    async def pause(self, target: str) -> list[str]:
        """Pause ``target``; the replicas paused by this call (already paused: none)."""
        agents, slots = self.resolve(target)
        now = time.monotonic()
        if not target:
            self.all = True
        for agent in agents:
            if not agent.paused:
                agent.paused = True
                agent.paused_at = now
                for call in agent.waiting:
                    self.ledger.hold(call, now)
        todo = [s for s in slots if not s.paused]
        for slot in todo:
            self._hold_slot(slot, now)
        standbys = [
            (a, p) for a in agents for p in list(a.standby_procs) if p.said_ready and not p.stopping
        ]
        await asyncio.gather(
            *(self._freeze(s) for s in todo), *(self._freeze_standby(a, p) for a, p in standbys)
        )
        for slot in todo:
            self.events.emit("replica_paused", agent=slot.agent.name, replica=slot.index)
        return [s.name for s in todo]

    def _hold_slot(self, slot: Slot, now: float) -> None:
        slot.paused = True
        slot.paused_at = now
        for call in slot.inflight.values():
            if call.finished_at is None:
                self.ledger.hold(call, now)
            else:
                call.clear_timer()  # its cancel grace waits for the replica to run again

    def _ready(self, slot: Slot) -> None:
        """A replica became ready in a paused slot (a restart): frozen at once."""
        if slot.paused:
            self.pool.spawn(self._freeze(slot))

    def adopt(self, agent: Agent) -> None:
        """A new agent while the whole run is paused: it starts paused."""
        if self.all:
            agent.paused = True
            now = time.monotonic()
            agent.paused_at = now
            for slot in agent.slots:
                slot.paused, slot.paused_at = True, now

    def _standby_ready(self, agent: Agent, proc: AgentProcess) -> None:
        """A standby became ready while its agent is paused: frozen at once."""
        self.pool.spawn(self._freeze_standby(agent, proc))

    async def _freeze_standby(self, agent: Agent, proc: AgentProcess) -> None:
        if not await self._freeze_proc(proc, agent.name, -1):
            return
        if proc in agent.standby_procs:
            keep = agent.paused
        else:  # it became a replica while it was being stopped
            keep = any(s.proc is proc and s.paused for s in agent.slots)
        if not keep:
            if proc.thaw is not None:
                proc.thaw()  # resumed while it was being stopped
            return
        self.log.info("standby_paused", agent=agent.name, pid=proc.pid)

    async def _freeze(self, slot: Slot) -> None:
        proc = slot.proc
        if proc is None or not await self._freeze_proc(proc, slot.agent.name, slot.index):
            return
        if not slot.paused or slot.proc is not proc or not proc.alive:
            # Resumed (or gone) while it was being stopped: the resume found
            # nothing to thaw yet, so it is thawed now.
            if proc.thaw is not None:
                proc.thaw()
            return
        self.log.info("replica_paused", agent=slot.agent.name, replica=slot.index, pid=proc.pid)

    async def _freeze_proc(self, proc: AgentProcess, agent: str, replica: int) -> bool:
        """Freeze ``proc``'s processes; whether this call froze them."""
        if not proc.alive or proc.thaw is not None:
            return False
        group = Cgroups.freezer(proc.boot.cgroups)
        try:
            if proc.remote is not None:  # its host stops its tree
                await proc.remote.freeze()
                proc.thaw = _Thaw(proc, None, [])
            elif group is not None:
                Cgroups.freeze(group, True)
                proc.thaw = _Thaw(proc, group, [])
                await asyncio.to_thread(_settle_freeze, group)
            else:
                stopped = await asyncio.to_thread(
                    _linux.stop_tree, proc.pid, proc.boot.cgroups, _FREEZE_WAIT
                )
                proc.thaw = _Thaw(proc, None, stopped)
        except OSError as exc:
            self.log.error("pause_failed", agent=agent, replica=replica, error=str(exc))
            return False
        return True

    # --- resume ----------------------------------------------------------------------

    async def resume(self, target: str) -> list[str]:
        """Resume ``target``; the replicas resumed by this call."""
        agents, slots = self.resolve(target)
        now = time.monotonic()
        if not target:
            self.all = False
        done = [s.name for s in slots if s.paused]
        for slot in slots:
            if slot.paused:
                self._release_slot(slot, now)
        for agent in agents:
            if agent.paused:
                agent.paused = False
                agent.held_for += now - agent.paused_at
                for call in agent.waiting:
                    self.ledger.release(call, now, reframe=True)
                _thaw_standbys(agent)
                self.pool.keep_standby(agent)  # (none was made while paused)
            self.pool.dispatch(agent, rescan=True)
        for agent in {s.agent for s in slots}:
            self.pool.dispatch(agent, rescan=True)
        for name in done:
            agent_name, _, index = name.rpartition("#")
            self.events.emit("replica_resumed", agent=agent_name, replica=int(index))
        await asyncio.sleep(0)
        return done

    def _release_slot(self, slot: Slot, now: float) -> None:
        slot.paused = False
        proc = slot.proc
        shift = now - slot.paused_at
        if proc is not None and proc.alive:
            if shift > 0:
                proc.send_now(Held(shift))  # in its pipe before it runs again
            thaw = proc.thaw
            if thaw is not None:
                thaw()
            self.log.info(
                "replica_resumed",
                agent=slot.agent.name,
                replica=slot.index,
                pid=proc.pid,
                paused=round(shift, 3),
            )
        for call in list(slot.inflight.values()):
            if call.finished_at is None:
                self.ledger.release(call, now, reframe=False)
            elif call.timer is None and proc is not None and proc.said_ready:
                self.pool.arm_grace(call, proc)  # (else once ready: see Pool.withdraw)

    def release_all(self) -> None:
        """Thaw everything without moving deadlines (the supervisor is stopping)."""
        self.all = False
        for agent in self.pool.agents.values():
            agent.paused = False
            _thaw_standbys(agent)
            for slot in agent.slots:
                slot.paused = False
                if slot.proc is not None and slot.proc.thaw is not None:
                    slot.proc.thaw()

    def paused(self) -> list[str]:
        """What is paused now: ``run``, agents, replicas."""
        out = ["run"] if self.all else []
        for agent in self.pool.agents.values():
            if agent.paused:
                out.append(agent.name)
            else:
                out.extend(s.name for s in agent.slots if s.paused)
        return out


def _thaw_standbys(agent: Agent) -> None:
    for proc in list(agent.standby_procs):
        if proc.thaw is not None:
            proc.thaw()


class _Thaw:
    """Undoes one replica's freeze, once (a kill, a stop or a resume)."""

    __slots__ = ("group", "proc", "stopped")

    def __init__(self, proc: AgentProcess, group: str | None, stopped: list[int]) -> None:
        self.proc = proc
        self.group = group
        self.stopped = stopped

    def __call__(self) -> None:
        self.proc.thaw = None
        if self.proc.remote is not None:
            self.proc.remote.thaw()
            return
        if self.group is not None:
            with contextlib.suppress(OSError):
                Cgroups.freeze(self.group, False)
            return
        for pid in self.stopped:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGCONT)


def _settle_freeze(group: str) -> None:
    """Wait (in a thread) until the kernel has frozen every task of ``group``."""
    end = time.monotonic() + _FREEZE_WAIT
    delay = 0.0005
    while not Cgroups.frozen(group) and time.monotonic() < end:
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
