"""What a replica starts with: its sandbox plan, cgroups, working directory, ``Boot``.

:class:`BootPlanner` resolves an agent's sandbox profile once (refusing or
warning about what this machine cannot enforce), creates the per-replica
cgroups the profile asks for, builds each replica's :class:`Boot`, says
when a SIGKILL was the cgroup's OOM killer, and removes a replica's
working directory and cgroups once it is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterable
from typing import Any

import msgspec

from agentrt import _linux, sandbox
from agentrt.config import AgentSpec, SupervisorSpec, load_sandbox
from agentrt.control import RUN_PREFIX
from agentrt.errors import AgentCrashed, AgentDied, LimitExceeded, StartupError
from agentrt.protocol import AgentMessage, Boot, FrameDecoder

__all__ = ["BootPlanner"]


class BootPlanner:
    """Sandbox plans, cgroups and ``Boot`` messages of one supervisor's replicas."""

    def __init__(
        self, spec: SupervisorSpec, base_dir: str | None, sys_path: list[str], log: Any
    ) -> None:
        self.spec = spec
        self.base_dir = base_dir
        self.sys_path = sys_path
        self.log = log
        #: replicas run on a cluster's nodes (the ``ray`` backend): no cgroups
        self.remote = spec.backend != "local"
        self.rundir = ""
        #: ``[models.X]``: every replica's Boot carries their client configs
        self.models: dict[str, dict[str, Any]] = {}
        self.launch_dir = os.getcwd()
        #: the replicas' spinning slots (``Boot.spin_lock``); none on a cluster
        self.spin_lock = ""
        self.spin_slots = 0
        #: each running agent's sandbox plan (profile resolved, limits merged)
        self._plans: dict[str, sandbox.Plan] = {}
        #: per-replica cgroups, created on the first agent whose profile asks
        self._cgroups: sandbox.Cgroups | None = None
        #: uids of replicas of ``run_as = "dynamic"`` profiles
        self._uids = UidPool(spec.uids)
        #: the sweep of groups that supervisors now gone left behind
        self._sweep: threading.Thread | None = None

    def open(self) -> None:
        """Make the run directory; remove those left by supervisors that are gone."""
        _sweep_run_dirs(tempfile.gettempdir())
        self.rundir = tempfile.mkdtemp(prefix=_RUN_PREFIX)
        with open(os.path.join(self.rundir, _OWNER), "w") as f:
            f.write(_linux.process_identity(os.getpid()) or "")
        # (only the cgroup part of the probe: its forked checks are warm()'s)
        if not self.remote and sandbox.cgroup_probe()["controllers"]:
            # Every replica gets a group of its own where the machine allows
            # (made now: the zygote's spares wait in groups under its parents).
            self._cgroups = sandbox.Cgroups()
            # Those that killed supervisors left go, in the background.
            self._sweep = threading.Thread(
                target=self._cgroups.sweep, name="agentrt-cgroup-sweep", daemon=True
            )
            self._sweep.start()
        if not self.remote:
            # Spinning pays only on a core nobody else needs: one is the
            # supervisor's, the others may each have one spinning replica.
            self.spin_slots = max(0, len(os.sched_getaffinity(0)) - 1)
            self.spin_lock = os.path.join(self.rundir, _SPIN_LOCK)
            for i in range(self.spin_slots):
                path = f"{self.spin_lock}.{i}"
                os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o400))

    async def close(self) -> None:
        if self._sweep is not None:
            await asyncio.to_thread(self._sweep.join)
            self._sweep = None
        if self.rundir:
            await asyncio.to_thread(shutil.rmtree, self.rundir, True)
        if self._cgroups is not None:
            await asyncio.to_thread(self._cgroups.close)
            self._cgroups = None

    def warm(self) -> None:
        """Do now what the first agent's start would do first, and only once
        (meant for while the zygote boots): the planner imported, the
        default sandbox profile resolved and planned (with the machine's
        probe, whose checks fork), the spec classes'
        field tables built, the replicas' message decoder made.  Only those
        caches are kept; what fails is left for that start to report."""
        with contextlib.suppress(Exception):
            spec = AgentSpec(name="warm", entry="warm:warm")
            dirs = [self.base_dir] if self.base_dir is not None else []
            if isinstance(spec.sandbox, str):
                prof, _shipped = load_sandbox(spec.sandbox, dirs=dirs, where="warm")
                sandbox.plan(prof, spec.limits, remote=self.remote)
            FrameDecoder(AgentMessage)

    def env_allowlists(self, specs: Iterable[AgentSpec]) -> list[list[str]]:
        """The ``env`` allowlists of these agents' sandbox profiles (those
        that have one); an agent whose profile cannot be read is left out
        (its start says why)."""
        out: list[list[str]] = []
        dirs = [self.base_dir] if self.base_dir is not None else []
        for spec in specs:
            prof = spec.sandbox
            if isinstance(prof, str):
                try:
                    prof, _shipped = load_sandbox(prof, dirs=dirs, where=f"agents.{spec.name}")
                except Exception:
                    continue
            if prof.env is not None:
                out.append(list(prof.env))
        return out

    def plan(self, spec: AgentSpec) -> AgentSpec:
        """Resolve the agent's sandbox profile; refuse or warn about what is unenforced.

        Returns the spec with its limits merged (memory left to the cgroup
        when one limits it); the plan is kept for its replicas' boots.
        """
        prof = spec.sandbox
        if isinstance(prof, str):
            dirs = [self.base_dir] if self.base_dir is not None else []
            prof, _shipped = load_sandbox(prof, dirs=dirs, where=f"agents.{spec.name}.sandbox")
        plan = sandbox.plan(prof, spec.limits, remote=self.remote)
        unenforced = plan.unenforced
        if unenforced and prof.enforce == "strict":
            setting, why = unenforced[0]
            raise StartupError(
                f"sandbox {prof.name or '(inline)'!r} of agent {spec.name!r}: "
                f"{setting} cannot be enforced on this machine: {why}",
                agent=spec.name,
            )
        for setting, why in unenforced:
            self.log.warning(
                "sandbox_unenforced",
                agent=spec.name,
                profile=prof.name,
                setting=setting,
                why=why.removeprefix("NOT enforced: "),
            )
        if (plan.run_uid is not None or plan.dynamic_uid) and self.rundir:
            # the replica enters its workdir after dropping to run_as
            os.chmod(self.rundir, 0o711)
        if (
            self._cgroups is None
            and not self.remote
            and (plan.cgroup or sandbox.probe()["cgroup"]["controllers"])
        ):
            # Every replica gets a group of its own where the machine allows:
            # its whole tree is accounted (memory, processes, CPU time) and
            # nothing it started outlives it, whatever sessions it moved to.
            self._cgroups = sandbox.Cgroups()
        self._plans[spec.name] = plan
        return msgspec.structs.replace(spec, limits=plan.core_limits())

    def forget(self, agent: str) -> None:
        self._plans.pop(agent, None)

    def spare_cgroups(self) -> list[str]:
        """Where a zygote's spares make groups of their own to wait in (the tree
        groups' parents): none when this machine gives replicas no groups, nor
        on cgroup v2, which cannot rename a group (a replica moves in there)."""
        if self.remote or self._cgroups is None or self._cgroups.version != 1:
            return []
        try:
            return self._cgroups.tree_parents()
        except OSError:
            return []

    def _cgroups_for(
        self, spec: AgentSpec, leaf: str, plan: sandbox.Plan
    ) -> tuple[list[str], list[list[tuple[str, str, bool]]]]:
        """The replica's groups: the profile's limits (``cgroup = true``: memory as
        real usage, a CPU quota, processes), or else the tree's accounting (memory
        and processes limited for the whole tree, CPU time counted).  Only
        planned here: the replica makes them, before anything else."""
        groups = self._cgroups
        if groups is None:
            return [], []
        lim = plan.limits
        try:
            if plan.cgroup:
                ctrls = sorted({*plan.cgroup, *groups.tree})
                return groups.plan(leaf, ctrls, plan.cgroup_memory, plan.cpu, lim.processes)
            return groups.plan(leaf, groups.tree, lim.memory, None, lim.processes)
        except OSError as exc:
            if plan.cgroup and plan.profile.enforce == "strict":
                # the child fails to join it: the replica does not start
                return [os.path.join("/nonexistent-cgroup", leaf)], [[]]
            self.log.warning(
                "sandbox_unenforced",
                agent=spec.name,
                profile=plan.profile.name,
                setting="cgroup",
                why=f"cannot create the replica's cgroup: {exc}",
            )
            return [], []

    def boot(
        self,
        spec: AgentSpec,
        replica: int,
        generation: int,
        tools: dict[str, str],
        tool_timeouts: dict[str, float] | None = None,
        approvals: dict[str, list[dict[str, list[str]]]] | None = None,
        isolated_entries: dict[str, str] | None = None,
    ) -> Boot:
        """The Boot of replica ``replica`` of ``spec`` in its ``generation``."""
        lim = spec.limits
        leaf = f"{spec.name}.{replica}.{generation}".replace("/", "_")
        plan = self._plans.get(spec.name)
        sb: dict[str, Any] = {}
        if plan is not None:
            prof = plan.profile
            cgroups, writes = self._cgroups_for(spec, leaf, plan)
            sb = {
                "cgroups": cgroups,
                "cgroup_writes": writes,
                # a replica that cannot make them does not start (else it warns)
                "cgroup_required": bool(plan.cgroup) and prof.enforce == "strict",
                "memory_rlimit": not (cgroups and plan.cgroup_memory is not None),
                "network": prof.network,
                "fs_read": list(prof.filesystem.read) if prof.filesystem is not None else None,
                "fs_write": list(prof.filesystem.write) if prof.filesystem is not None else [],
                "env_allow": list(prof.env) if prof.env is not None else None,
                "run_uid": plan.run_uid,
                "run_gid": plan.run_gid,
                "no_new_privs": prof.no_new_privs,
                "ptrace_isolation": plan.ptrace_isolation,
                "scope": plan.scope,
                "dumpable": plan.dumpable,
                "strict": prof.enforce == "strict",
                "cpu": plan.cpu,
            }
            if plan.dynamic_uid:
                uid = self._uids.take(spec.name, replica)
                sb["run_uid"] = sb["run_gid"] = uid
        sup = self.spec
        return Boot(
            agent=spec.name,
            replica=replica,
            generation=generation,
            entry=spec.entry,
            workdir=os.path.join(self.rundir, leaf),
            sys_path=self.sys_path,
            env=dict(spec.env),
            memory=lim.memory,
            cpu_time=lim.cpu_time,
            open_files=lim.open_files,
            processes=lim.processes,
            file_size=lim.file_size,
            max_frame=sup.max_frame,
            concurrency=spec.concurrency,
            spin=spec.spin,
            spin_lock=self.spin_lock,
            spin_slots=self.spin_slots,
            supervisor_pid=os.getpid(),
            launch_dir=self.launch_dir,
            tools=tools,
            isolated_entries=isolated_entries or {},
            models=self.models,
            tool_timeouts=tool_timeouts or {},
            approvals=approvals or {},
            count_tools=sup.max_tool_calls is not None,
            trace_tools=sup.trace_tools,
            **sb,
        )

    def death_cause(self, boot: Boot, pid: int, cause: AgentDied | None) -> AgentDied | None:
        """A SIGKILL in a memory-limited cgroup whose OOM killer acted is the memory limit."""
        plan = self._plans.get(boot.agent)
        mem = plan.cgroup_memory if plan is not None else None
        if mem is None:
            mem = boot.memory  # the tree's limit (the group holds it too)
        if (
            mem is None
            or not boot.cgroups
            or not isinstance(cause, AgentCrashed)
            or cause.signal != signal.SIGKILL
            or not sandbox.Cgroups.oom_killed(list(boot.cgroups))
        ):
            return cause
        return LimitExceeded(
            f"cgroup memory limit of {mem} bytes exceeded (killed by the OOM killer)",
            limit="memory",
            value=mem,
            agent=boot.agent,
            pid=pid,
            exit_code=cause.exit_code,
            signal=cause.signal,
        )

    async def remove_workdir(self, boot: Boot) -> None:
        await asyncio.to_thread(shutil.rmtree, boot.workdir, True)

    def release(self, boot: Boot) -> None:
        """The replica and everything it started are gone: its dynamic uid is free."""
        if boot.run_uid is not None:
            self._uids.give_back(boot.run_uid)

    @staticmethod
    async def remove_cgroups(boot: Boot) -> None:
        if boot.cgroups:
            await asyncio.to_thread(sandbox.Cgroups.remove, list(boot.cgroups))


class UidPool:
    """Uids for ``run_as = "dynamic"`` replicas: one per live replica, never shared.

    A uid goes back to the pool only once its replica and whatever it started
    are gone (the replica's cgroups removed), so no process of an earlier
    replica can still run under a uid handed to a new one.
    """

    def __init__(self, uids: range) -> None:
        self._free = iter(uids)
        self._returned: list[int] = []
        self._taken: set[int] = set()

    def take(self, agent: str, replica: int) -> int:
        uid = self._returned.pop() if self._returned else next(self._free, None)
        if uid is None:
            raise StartupError(
                f"no dynamic uid left for {agent}#{replica}: every uid of "
                "[supervisor] uid_range is in use",
                agent=agent,
            )
        self._taken.add(uid)
        return uid

    def give_back(self, uid: int) -> None:
        if uid in self._taken:
            self._taken.discard(uid)
            self._returned.append(uid)


_RUN_PREFIX = RUN_PREFIX
#: in each run directory: the pid and start time of the supervisor it belongs to
_OWNER = "supervisor"
#: in each run directory: the replicas' spinning slots, ``spin.0`` ... (flock)
_SPIN_LOCK = "spin"


def _sweep_run_dirs(tmp: str) -> None:
    """Remove run directories whose supervisor is gone (killed before it could)."""
    try:
        names = os.listdir(tmp)
    except OSError:
        return
    for name in names:
        if not name.startswith(_RUN_PREFIX):
            continue
        d = os.path.join(tmp, name)
        try:
            with open(os.path.join(d, _OWNER)) as f:
                owner = f.read().strip()
            pid = int(owner.split()[0])
        except (OSError, ValueError, IndexError):
            continue  # not one of ours, or not finished being made
        if _linux.process_identity(pid) != owner:
            shutil.rmtree(d, ignore_errors=True)
