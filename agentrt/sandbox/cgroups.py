"""Per-replica cgroups (supervisor side): one group per replica under ``agentrt-<pid>``."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time

from agentrt.sandbox.probe import _mounts, _own_cgroups, _read, cgroup_probe

__all__ = ["Cgroups", "apply_writes"]


class Cgroups:
    """Per-replica cgroups under ``agentrt-<pid>`` in each writable hierarchy."""

    def __init__(self) -> None:
        cg = cgroup_probe()
        self.version: int | None = cg["version"]
        self.bases: dict[str, str] = dict(cg["controllers"])
        self.parents: dict[str, str] = {}
        #: parent directory -> the files of a group made under it
        self._files: dict[str, set[str]] = {}
        if self.version == 1:
            # v1 counts CPU time in a hierarchy of its own (or mounted with cpu),
            # and freezes (pause) in another
            for extra in ("cpuacct", "freezer"):
                if extra not in self.bases:
                    base = _v1_base(extra)
                    if base is not None:
                        self.bases[extra] = base

    @property
    def tree(self) -> list[str]:
        """The controllers that account a replica's whole tree: its memory (and
        OOM kills), its processes, its CPU time; and, in v1, the freezer (v2
        freezes any group)."""
        want = (
            ("memory", "pids", "cpuacct", "freezer")
            if self.version == 1
            else ("memory", "pids", "cpu")
        )
        return [c for c in want if c in self.bases]

    # --- the freezer (pause) ----------------------------------------------------

    @staticmethod
    def freezer(dirs: list[str]) -> str | None:
        """The group of ``dirs`` that can freeze the replica's tree, if any."""
        for d in dirs:
            if os.path.exists(os.path.join(d, "freezer.state")) or os.path.exists(
                os.path.join(d, "cgroup.freeze")
            ):
                return d
        return None

    @staticmethod
    def freeze(d: str, on: bool) -> None:
        """Freeze (or thaw) every process of group ``d``; raises OSError."""
        v1 = os.path.join(d, "freezer.state")
        if os.path.exists(v1):
            with open(v1, "w") as f:
                f.write("FROZEN" if on else "THAWED")
        else:
            with open(os.path.join(d, "cgroup.freeze"), "w") as f:
                f.write("1" if on else "0")

    @staticmethod
    def frozen(d: str) -> bool:
        """Whether every process of group ``d`` is frozen now (not still freezing)."""
        state = _read(os.path.join(d, "freezer.state")).strip()
        if state:
            return state == "FROZEN"
        return "frozen 1" in _read(os.path.join(d, "cgroup.events"))

    @staticmethod
    def cpu_usage(dirs: list[str]) -> float | None:
        """CPU seconds the processes of a replica's group used, all of them (None: unknown)."""
        for d in dirs:
            raw = _read(os.path.join(d, "cpuacct.usage")).strip()
            if raw.isdigit():
                return int(raw) / 1e9
            for line in _read(os.path.join(d, "cpu.stat")).splitlines():
                k, _, n = line.partition(" ")
                if k == "usage_usec" and n.strip().isdigit():
                    return int(n) / 1e6
        return None

    @staticmethod
    def oom_kills(dirs: list[str]) -> int:
        """How many processes the OOM killer has killed in a replica's group."""
        for d in dirs:
            for name in ("memory.events", "memory.oom_control"):
                for line in _read(os.path.join(d, name)).splitlines():
                    k, _, n = line.partition(" ")
                    if k == "oom_kill" and n.strip().isdigit():
                        return int(n)
        return 0

    def _parent(self, ctrl: str) -> str:
        key = "" if self.version == 2 else ctrl
        if key not in self.parents:
            d = os.path.join(self.bases[ctrl], f"agentrt-{os.getpid()}")
            os.makedirs(d, exist_ok=True)
            if self.version == 2:
                want = " ".join(f"+{c}" for c in sorted(self.bases))
                with open(os.path.join(d, "cgroup.subtree_control"), "w") as f:
                    f.write(want)
            self.parents[key] = d
        return self.parents[key]

    def plan(
        self,
        leaf: str,
        ctrls: list[str],
        memory: int | None,
        cpu: float | None,
        processes: int | None,
    ) -> tuple[list[str], list[list[tuple[str, str, bool]]]]:
        """The replica's group(s) and their limits: the directories, and the limit
        writes to make in each (``(file, value, required)``).  The replica makes
        them itself (:func:`agentrt.sandbox.confine.enter_cgroups`): a zygote's
        spare by renaming the groups it waits in, which is quick, anyone else
        by making them and moving in."""
        per_dir = (
            [(self._parent(ctrls[0]), ctrls)]
            if self.version == 2
            else [(self._parent(c), [c]) for c in ctrls]
        )
        dirs: list[str] = []
        writes: list[list[tuple[str, str, bool]]] = []
        for parent, cs in per_dir:
            dirs.append(os.path.join(parent, leaf))
            writes.append(self._writes(self._leaf_files(parent), cs, memory, cpu, processes))
        return dirs, writes

    def tree_parents(self) -> list[str]:
        """The parent directories of a replica's tree groups (made if need be)."""
        return sorted({self._parent(c) for c in self.tree})

    def _leaf_files(self, parent: str) -> set[str]:
        """The files a group made under ``parent`` has (learnt once, from a probe)."""
        if parent not in self._files:
            probe = os.path.join(parent, "files-probe")
            with contextlib.suppress(FileExistsError):
                os.mkdir(probe)
            try:
                self._files[parent] = set(os.listdir(probe))
            finally:
                os.rmdir(probe)
        return self._files[parent]

    def _writes(
        self,
        files: set[str],
        ctrls: list[str],
        memory: int | None,
        cpu: float | None,
        processes: int | None,
    ) -> list[tuple[str, str, bool]]:
        """The limit files to write in a group that has ``files``: ``(file, value, required)``."""
        out: list[tuple[str, str, bool]] = []
        v2 = self.version == 2
        if memory is not None and "memory" in ctrls:
            if v2:
                out += [("memory.max", str(memory), True), ("memory.swap.max", "0", False)]
            else:
                out += [
                    ("memory.limit_in_bytes", str(memory), True),
                    ("memory.memsw.limit_in_bytes", str(memory), False),
                ]
        if cpu is not None and "cpu" in ctrls:
            period = 100_000
            quota = max(1000, int(cpu * period))
            if v2 and "cpu.max" in files:
                out.append(("cpu.max", f"{quota} {period}", True))
            elif "cpu.cfs_quota_us" in files:
                out += [
                    ("cpu.cfs_period_us", str(period), True),
                    ("cpu.cfs_quota_us", str(quota), True),
                ]
        if processes is not None and "pids" in ctrls and "pids.max" in files:
            out.append(("pids.max", str(processes), True))
        return out

    @classmethod
    def oom_killed(cls, dirs: list[str]) -> bool:
        """Whether the OOM killer acted in one of ``dirs`` (read before removing them)."""
        return cls.oom_kills(dirs) > 0

    @staticmethod
    def remove(dirs: list[str], wait: float = 2.0) -> None:
        """Kill what is left in ``dirs`` and remove them (blocking: call in a thread)."""
        deadline = time.monotonic() + wait
        for d in dirs:
            # a frozen process dies of SIGKILL only once thawed (cgroup v1)
            with contextlib.suppress(OSError):
                if os.path.exists(os.path.join(d, "freezer.state")):
                    Cgroups.freeze(d, False)
            while os.path.isdir(d):
                for pid in _read(os.path.join(d, "cgroup.procs")).split():
                    with contextlib.suppress(OSError, ValueError):
                        os.kill(int(pid), signal.SIGKILL)
                try:
                    os.rmdir(d)
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        break
                    time.sleep(0.01)

    def sweep(self) -> int:
        """Remove the groups that supervisors now gone left behind (one killed by
        SIGKILL cannot remove its own): each ``agentrt-<pid>`` of a pid that no
        longer runs, when no process is left in it.  The number removed."""
        removed = 0
        for base in sorted(set(self.bases.values())):
            try:
                names = os.listdir(base)
            except OSError:
                continue
            for name in names:
                pid = name.removeprefix("agentrt-")
                if pid == name or not pid.isdigit() or _alive(int(pid)):
                    continue
                d = os.path.join(base, name)
                try:
                    subs = [os.path.join(d, n) for n in os.listdir(d)]
                    groups = [g for g in subs if os.path.isdir(g)]
                    if any(_read(os.path.join(g, "cgroup.procs")).strip() for g in [d, *groups]):
                        continue  # someone is still in it: not ours to judge
                    for g in groups:
                        os.rmdir(g)
                    os.rmdir(d)
                    removed += 1
                except OSError:
                    continue
        return removed

    def close(self) -> None:
        """Remove the ``agentrt-<pid>`` parents (their replicas' groups are gone by now)."""
        for d in self.parents.values():
            with contextlib.suppress(OSError):
                for sub in os.listdir(d):
                    if os.path.isdir(os.path.join(d, sub)):
                        self.remove([os.path.join(d, sub)])
            self.remove([d])
        self.parents.clear()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists (not ours to signal)
    return True


def apply_writes(d: str, writes: list[tuple[str, str, bool]]) -> None:
    """Write a group's limit files; raises OSError for a required one."""
    for name, value, required in writes:
        # (os calls, not open(): a replica writes these before anything else,
        # and io objects would dirty pages it shares with the zygote)
        try:
            fd = os.open(os.path.join(d, name), os.O_WRONLY | os.O_CLOEXEC)
            try:
                data = value.encode()
                if os.write(fd, data) != len(data):
                    raise OSError(errno.EIO, f"short write to {name}")
            finally:
                os.close(fd)
        except OSError:
            if required:
                raise


def _v1_base(ctrl: str) -> str | None:
    """Where this process may make groups of v1 controller ``ctrl`` (None: nowhere)."""
    own = _own_cgroups()
    for mnt, kind, opts in _mounts():
        if kind == "cgroup" and ctrl in opts and ctrl in own:
            base = os.path.join(mnt, own[ctrl].lstrip("/"))
            if os.path.isdir(base) and os.access(base, os.W_OK):
                return base
    return None
