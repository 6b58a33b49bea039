"""The plan: a sandbox profile merged with an agent's limits, each setting decided.

:func:`plan` says how each setting will be enforced on this machine (or why
it cannot be), :func:`explain` lists it for ``doctor``.
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass, field

from agentrt.config import Limits, SandboxProfile
from agentrt.errors import ConfigError
from agentrt.sandbox.probe import probe

__all__ = ["Plan", "explain", "plan"]


@dataclass
class Plan:
    """A profile resolved for one agent: Boot fields, limits, and what is unenforced."""

    profile: SandboxProfile
    limits: Limits  # merged: profile's, the agent's explicit values winning
    cpu: float | None = None
    run_uid: int | None = None
    run_gid: int | None = None
    #: ``run_as = "dynamic"``: each replica gets a uid of its own (the supervisor allocates)
    dynamic_uid: bool = False
    #: a Landlock domain of its own even without filesystem rules: no ptrace and no
    #: /proc/<pid>/fd of processes outside the replica's tree
    ptrace_isolation: bool = False
    #: Landlock scoping (ABI >= 6): no signals to, nor abstract unix sockets of,
    #: processes outside the replica's tree
    scope: bool = False
    #: PR_SET_DUMPABLE: False makes the replica's /proc entries root-owned
    dumpable: bool = True
    #: cgroup controllers used (empty: no cgroup)
    cgroup: list[str] = field(default_factory=list)
    #: (setting, "enforced by X" | "NOT enforced: why")
    report: list[tuple[str, str]] = field(default_factory=list)

    @property
    def unenforced(self) -> list[tuple[str, str]]:
        return [(s, w) for s, w in self.report if w.startswith("NOT enforced")]

    @property
    def cgroup_memory(self) -> int | None:
        return self.limits.memory if "memory" in self.cgroup else None

    def core_limits(self) -> Limits:
        """The limits the core applies (memory left to the cgroup when it has it)."""
        if "memory" in self.cgroup:
            return Limits(
                cpu_time=self.limits.cpu_time,
                open_files=self.limits.open_files,
                processes=self.limits.processes,
                file_size=self.limits.file_size,
            )
        return self.limits


def _resolve_user(spec: str) -> tuple[int, int]:
    name, _, group = spec.partition(":")
    if name.isdigit():
        uid = int(name)
        try:
            gid = pwd.getpwuid(uid).pw_gid
        except KeyError:
            gid = uid
    else:
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            raise ConfigError("run_as", f"no user named {name!r}") from None
        uid, gid = pw.pw_uid, pw.pw_gid
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise ConfigError("run_as", f"no group named {group!r}") from None
    return uid, gid


def plan(profile: SandboxProfile, limits: Limits | None = None) -> Plan:
    """Merge ``limits`` (the agent's) over the profile's and decide how each is enforced."""
    caps = probe()
    plim = profile.limits
    own = limits or Limits()
    merged = Limits(
        **{
            f: getattr(own, f) if getattr(own, f) is not None else getattr(plim, f)
            for f in ("memory", "cpu_time", "open_files", "processes", "file_size")
        }
    )
    p = Plan(profile, merged, cpu=plim.cpu)
    rep = p.report
    root = bool(caps["root"])

    if profile.network == "none":
        if caps["net_ns"]:
            rep.append(("network", f"enforced by a network namespace ({caps['net_ns']})"))
        else:
            rep.append(("network", f"NOT enforced: no network namespace: {caps['net_ns_error']}"))
    else:
        rep.append(("network", "host network (not confined)"))

    if profile.filesystem is not None:
        abi = caps["landlock_abi"]
        if abi:
            rep.append(("filesystem", f"enforced by Landlock ABI {abi}"))
        else:
            rep.append(("filesystem", "NOT enforced: Landlock is not available in this kernel"))
    else:
        rep.append(("filesystem", "not confined"))

    if profile.env is not None:
        rep.append(("env", "enforced: environment cleared to the allowlist"))
    else:
        rep.append(("env", "not confined (the supervisor's environment is inherited)"))

    if profile.run_as == "dynamic":
        if root:
            p.dynamic_uid = True
            rep.append(("run_as", "enforced: a uid of its own per replica (setuid/setgid)"))
        else:
            rep.append(("run_as", "NOT enforced: the supervisor is not root"))
    elif profile.run_as is not None:
        try:
            p.run_uid, p.run_gid = _resolve_user(profile.run_as)
        except ConfigError as exc:
            rep.append(("run_as", f"NOT enforced: {exc.message}"))
        else:
            if root or p.run_uid == os.geteuid():
                rep.append(("run_as", f"enforced by setuid({p.run_uid})/setgid({p.run_gid})"))
            else:
                rep.append(("run_as", "NOT enforced: the supervisor is not root"))
                p.run_uid = p.run_gid = None

    if profile.no_new_privs:
        rep.append(("no_new_privs", "enforced by prctl(PR_SET_NO_NEW_PRIVS)"))

    cg = caps["cgroup"]
    avail: dict[str, str] = cg["controllers"]
    if profile.cgroup:
        if avail:
            p.cgroup = sorted(avail)
            rep.append(("cgroup", f"enforced by cgroup v{cg['version']} ({', '.join(p.cgroup)})"))
        else:
            rep.append(("cgroup", f"NOT enforced: cannot create cgroups: {cg['why']}"))

    v = cg["version"]
    if merged.memory is not None:
        if "memory" in p.cgroup:
            knob = "memory.max" if v == 2 else "memory.limit_in_bytes"
            rep.append(("limits.memory", f"enforced by cgroup {knob} (real usage, OOM kill)"))
        else:
            rep.append(("limits.memory", "enforced by RLIMIT_AS and the RSS watchdog"))
    if p.cpu is not None:
        if "cpu" in p.cgroup:
            knob = "cpu.max" if v == 2 else "cpu.cfs_quota_us"
            rep.append(("limits.cpu", f"enforced by cgroup {knob}"))
        else:
            why = "needs cgroup = true" if not profile.cgroup else "no writable cpu controller"
            rep.append(("limits.cpu", f"NOT enforced: {why}"))
    if merged.processes is not None:
        if "pids" in p.cgroup:
            rep.append(("limits.processes", "enforced by cgroup pids.max"))
        elif root and p.run_uid in (None, 0):
            rep.append(
                (
                    "limits.processes",
                    "NOT enforced: RLIMIT_NPROC does not apply to root and no pids cgroup",
                )
            )
        else:
            rep.append(("limits.processes", "enforced by RLIMIT_NPROC (per user)"))
    for f, rl in (
        ("cpu_time", "RLIMIT_CPU"),
        ("open_files", "RLIMIT_NOFILE"),
        ("file_size", "RLIMIT_FSIZE"),
    ):
        if getattr(merged, f) is not None:
            rep.append((f"limits.{f}", f"enforced by {rl}"))
    return p


def explain(profile: SandboxProfile, limits: Limits | None = None) -> list[tuple[str, str]]:
    """``[(setting, "enforced by X" | "NOT enforced: why" | "not confined"), ...]``.

    One entry per setting of ``profile`` (merged with an agent's ``limits``)
    as this machine would apply it: ``network``, ``filesystem``, ``env``,
    ``run_as``, ``no_new_privs``, ``cgroup``, ``limits.<name>``.
    """
    return plan(profile, limits).report


describe = explain
