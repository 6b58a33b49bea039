"""The supervision tree: restart decisions, group restarts, failure, ordered shutdown.

What :mod:`~agentrt.supervisor.policy` decides on paper, this module does to
real replicas, in OTP's order:

* after a replica dies, its restart type decides whether it starts again;
  then the agent's restart intensity (too many restarts: the agent has
  failed, and ``on_agent_failure`` says whether everything stops);
* ``one_for_one``: the replica alone restarts, after its backoff;
* ``one_for_all`` / ``rest_for_one``: a *group restart*.  The affected
  siblings are terminated in reverse start order (an agent's replicas
  together, each with its own shutdown sequence) and reaped, with what they
  left behind; only then do the affected replicas start again, in start
  order, one agent after another, each waiting for the previous agent's
  replicas to be up.  Nothing of the old generation is alive when the new
  one starts.  Temporary replicas are terminated and not started again.
  Group restarts run one at a time; a crash that a group restart already
  took care of is not handled twice;
* shutdown (``close``, escalation): agents stop one after another in
  reverse start order, the replicas of one agent together.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence

from agentrt import _linux
from agentrt.config import AgentSpec, SupervisorSpec
from agentrt.errors import AgentCrashed, AgentDied, AgentFailed, CallError, SupervisorClosed
from agentrt.supervisor import policy
from agentrt.supervisor.events import EventHub
from agentrt.supervisor.pool import Agent, Pool, Slot, normal_end

__all__ = ["Tree"]


class Tree:
    """Applies the restart policy to a :class:`Pool` (its :class:`Restarts`)."""

    def __init__(
        self,
        pool: Pool,
        spec: SupervisorSpec,
        events: EventHub,
        on_agent_failed: Callable[[Agent], None],
    ) -> None:
        self.pool = pool
        self.spec = spec
        self.events = events
        self._on_agent_failed = on_agent_failed
        self._pending: deque[tuple[Slot, int]] = deque()
        self._coordinator: asyncio.Task[None] | None = None
        pool.restarts = self

    # --- settings, the agent's own winning ---------------------------------------------

    def intensity(self, spec: AgentSpec) -> int:
        return spec.intensity if spec.intensity is not None else self.spec.intensity

    def period(self, spec: AgentSpec) -> float:
        return spec.period if spec.period is not None else self.spec.period

    def _backoff(self, slot: Slot, now: float) -> float:
        recent = slot.window.add(now)
        return policy.backoff_delay(
            recent, self.spec.backoff, self.spec.backoff_max, random.uniform(0.75, 1.25)
        )

    # --- after a death -------------------------------------------------------------------

    async def after_death(self, slot: Slot, cause: AgentDied | None) -> bool:
        """Whether ``slot`` starts again: its restart type, the agent's intensity, the strategy."""
        if slot.hold is not None:  # a group restart terminated it (or took its crash over)
            return await self._held(slot)
        agent = slot.agent
        spec = agent.spec
        pool = self.pool
        if not policy.restarts(spec.restart, normal=normal_end(cause), by_strategy=False):
            pool.log.info(
                "replica_not_restarted", agent=agent.name, replica=slot.index, restart=spec.restart
            )
            self._end(slot)
            return False
        proc = slot.proc
        if proc is not None and _killed_or_lost(cause) and proc.orphaned():
            # Its zygote died and took it along: no fault of its own.  It starts
            # again at once (from a new zygote), counted against nothing: the
            # zygote's deaths have their own restart intensity.
            pool.log.info("replica_orphaned", agent=agent.name, replica=slot.index)
            slot.restarts += 1
            slot.generation += 1
            return True
        now = time.monotonic()
        if agent.window.add(now) > self.intensity(spec):
            self.give_up(agent, cause)
            return False
        if self.spec.strategy != "one_for_one":
            slot.hold = asyncio.get_running_loop().create_future()
            self._pending.append((slot, slot.generation))
            if self._coordinator is None or self._coordinator.done():
                self._coordinator = pool.spawn(self._coordinate())
            return await self._held(slot)
        delay = self._backoff(slot, now)
        slot.restarts += 1
        slot.generation += 1
        if delay > 0:
            pool.remove_leftovers(slot)  # (not kept for the backoff's length)
            pool.set_state(slot, "backoff")
            pool.log.info(
                "replica_backoff", agent=agent.name, replica=slot.index, delay=round(delay, 4)
            )
            await asyncio.sleep(delay)
        return True

    async def _held(self, slot: Slot) -> bool:
        hold = slot.hold
        assert hold is not None
        self.pool.remove_leftovers(slot)  # (a group restart takes its time)
        try:
            again = await hold
        finally:
            if slot.hold is hold:
                slot.hold = None
        if not again and not slot.stop_requested and not self.pool.closing:
            self.pool.log.info(
                "replica_not_restarted",
                agent=slot.agent.name,
                replica=slot.index,
                restart=slot.agent.spec.restart,
            )
            self._end(slot)
        return again

    def _end(self, slot: Slot) -> None:
        """The slot will not serve again; calls waiting for the agent fail if none will."""
        agent = slot.agent
        agent.slot_gone(slot)
        if agent.all_gone:
            self.pool.fail_waiting(agent, agent.no_replica())
            self.pool.spawn(self.pool.drop_standby(agent))  # (nothing left to replace)

    # --- group restarts (one_for_all, rest_for_one) --------------------------------------

    async def _coordinate(self) -> None:
        """Run the queued group restarts, one at a time."""
        while self._pending:
            slot, generation = self._pending.popleft()
            hold = slot.hold
            if slot.generation != generation or hold is None or hold.done():
                continue  # an earlier group restart already restarted it
            if self.pool.closing or slot.stop_requested:
                hold.set_result(False)
                continue
            await self._group_restart(slot)

    async def _group_restart(self, crashed: Slot) -> None:
        pool = self.pool
        strategy = self.spec.strategy
        plan = policy.strategy_plan(strategy, pool.order(), crashed, lambda s: s.agent.spec.restart)
        loop = asyncio.get_running_loop()
        for s in plan.terminate:
            if s.hold is None:
                s.hold = loop.create_future()
            if s.proc is not None and not s.proc.dead.done():
                pool.set_state(s, "stopping")  # no new call goes to a replica about to stop
        pool.log.info(
            "group_restart",
            strategy=strategy,
            because=crashed.name,
            terminate=[s.name for s in plan.terminate],
            restart=[s.name for s in plan.restart],
        )
        try:
            await self._run_plan(plan, crashed)
        except Exception:
            pool.log.exception("group_restart_failed", strategy=strategy, because=crashed.name)
        finally:
            # Whatever happened, no slot of the plan waits forever: the ones not
            # released yet start again (temporary ones end).
            for s in plan.ended:
                _release(s, False)
            for s in (*plan.terminate, crashed):
                if s.hold is None or s.hold.done():
                    continue
                if pool.closing or s.agent.spec.restart == "temporary":
                    _release(s, False)
                else:
                    s.restarts += 1
                    s.generation += 1
                    _release(s, True)

    async def _run_plan(self, plan: policy.StrategyPlan[Slot], crashed: Slot) -> None:
        pool = self.pool
        loop = asyncio.get_running_loop()
        # 1. terminate, in reverse start order (an agent's replicas together)
        for batch in policy.batches(plan.terminate, _agent_of):
            await asyncio.gather(*(self._terminate(s, crashed) for s in batch))
        dead = crashed.dead_proc
        if dead is not None:
            await dead.wait_closed(now=True)  # its leftovers are gone too
        # 2. the crashed replica's backoff
        delay = self._backoff(crashed, time.monotonic())
        if delay > 0 and not pool.closing:
            pool.set_state(crashed, "backoff")
            pool.log.info(
                "replica_backoff",
                agent=crashed.agent.name,
                replica=crashed.index,
                delay=round(delay, 4),
            )
            await asyncio.sleep(delay)
        for s in plan.ended:
            _release(s, False)
        # 3. start again, in start order, one agent after another
        for batch in policy.batches(plan.restart, _agent_of):
            starting: list[asyncio.Future[None]] = []
            for s in batch:
                if (
                    pool.closing
                    or s.stop_requested
                    or s.agent.failed is not None
                    or s.task is None
                    or s.task.done()
                ):
                    _release(s, False)
                    continue
                s.restarts += 1
                s.generation += 1
                s.started = loop.create_future()
                starting.append(s.started)
                _release(s, True)
            if starting:
                await asyncio.wait(starting)

    async def _terminate(self, slot: Slot, crashed: Slot) -> None:
        """Stop one sibling for a group restart (its shutdown sequence, then reaped)."""
        proc = slot.proc
        if proc is None:
            return
        if proc.dead.done():
            await proc.wait_closed(now=True)  # dead already: its leftovers must be gone too
            return
        strategy = self.spec.strategy
        self.pool.log.info(
            "replica_restart_by_strategy",
            agent=slot.agent.name,
            replica=slot.index,
            strategy=strategy,
            because=crashed.name,
            pid=proc.pid,
        )
        proc.reason = AgentCrashed(
            f"terminated by {strategy} because {crashed.name} crashed",
            agent=slot.agent.name,
            pid=proc.pid,
        )
        self.pool.set_state(slot, "stopping")
        await proc.stop(slot.agent.spec.shutdown_timeout)
        await proc.wait_closed(now=True)

    # --- failure -------------------------------------------------------------------------

    def give_up(self, agent: Agent, cause: AgentDied | None) -> None:
        """Restart intensity exceeded: the agent has failed."""
        spec = agent.spec
        reason = f"more than {self.intensity(spec)} restarts within {self.period(spec):g}s"
        if cause is not None:
            reason += f"; last: {cause}"
        agent.failed = AgentFailed(agent.name, reason, last=cause)
        pool = self.pool
        pool.log.error("agent_failed", agent=agent.name, reason=reason)
        self.events.emit("agent_failed", agent=agent.name, reason=reason)
        for s in agent.slots:
            s.stop_requested = True
            pool.set_state(s, "failed")
            _release(s, False)
            if s.proc is not None and not s.proc.dead.done():
                pool.spawn(s.proc.stop(spec.shutdown_timeout))
        pool.spawn(pool.drop_standby(agent))
        pool.fail_waiting(agent, agent.failed)
        self._on_agent_failed(agent)

    # --- ordered shutdown ----------------------------------------------------------------

    async def shutdown(self, agents: Sequence[Agent], err: CallError | SupervisorClosed) -> None:
        """Stop ``agents`` (given in start order) in reverse start order, one after
        another, the replicas of each together; then sweep what they left."""
        for a in agents:
            for s in a.slots:
                s.stop_requested = True
        leaders = [
            s.proc.pid
            for a in agents
            for s in a.slots
            if s.proc is not None and s.proc.pid and s.proc.local and not s.proc.dead.done()
        ]
        left = await asyncio.to_thread(_linux.descendants, leaders) if leaders else []
        for a in policy.shutdown_order(agents):
            await self.pool.stop_slots(a.slots, err, sweep=False)
        if leaders:
            await asyncio.to_thread(_linux.kill_tree, leaders, left)


def _killed_or_lost(cause: AgentDied | None) -> bool:
    """A death that may have come from its zygote's (SIGKILL, or status unknown)."""
    return type(cause) is AgentCrashed and (
        cause.signal == signal.SIGKILL or cause.exit_code is None
    )


def _agent_of(slot: Slot) -> Agent:
    return slot.agent


def _release(slot: Slot, again: bool) -> None:
    if slot.hold is not None and not slot.hold.done():
        slot.hold.set_result(again)
