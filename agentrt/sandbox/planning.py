"""The plan: a sandbox profile merged with an agent's limits, each setting decided.

:func:`plan` says how each setting will be enforced on this machine (or why
it cannot be), :func:`explain` lists it for ``doctor``.

Isolation from the processes outside a replica's own tree (its siblings,
the zygote, the supervisor) is decided here too, by kernel mechanism:

* ``isolation.ptrace`` (no ptrace, no ``/proc/<pid>/fd``): a Landlock domain
  per replica, every profile (ABI >= 2; with a filesystem allowlist any
  ABI); else, with ``run_as``, another uid than the supervisor's.
* ``isolation.signal``: confining profiles (a filesystem allowlist or
  ``run_as``: ``strict``, ``untrusted``) get Landlock's signal scope
  (ABI >= 6), else ``run_as = "dynamic"``'s uid of its own per replica.
* ``isolation.abstract_unix``: the abstract-unix-socket scope, wherever there
  is a Landlock domain on ABI >= 6 (``default`` included: it is the least a
  domain without filesystem rules can restrict); else ``network = "none"``'s
  own namespace.
* ``isolation.dumpable``: confining profiles set ``PR_SET_DUMPABLE`` 0.
* ``run_as.import_paths``: the interpreter readable as installed, or through
  a private mount namespace where an ancestor (``/root``) is closed to the uid.

A confining profile reports what nothing here gives as "NOT enforced" (with
``enforce = "strict"`` the agent does not start); ``default`` reports it as
"not confined".
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass, field
from typing import Any

from agentrt.config import Limits, SandboxProfile
from agentrt.errors import ConfigError
from agentrt.sandbox.probe import SCOPE_ABI, probe

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


def plan(profile: SandboxProfile, limits: Limits | None = None, *, remote: bool = False) -> Plan:
    """Merge ``limits`` (the agent's) over the profile's and decide how each is enforced.

    ``remote``: the replicas run on other machines (the ``ray`` backend).  What
    the child applies to itself (namespaces, Landlock, rlimits, uids) is
    decided from this machine's kernel and checked again on the node; what the
    supervisor does from outside (cgroups, the watchdog) cannot hold there.
    """
    caps = probe()
    if remote:
        why = "replicas are Ray actors on cluster nodes: the supervisor makes no cgroups there"
        caps = {**caps, "cgroup": {**caps["cgroup"], "controllers": {}, "why": why}}
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

    _isolation(p, caps)

    cg = caps["cgroup"]
    avail: dict[str, str] = cg["controllers"]
    if profile.cgroup:
        if avail:
            p.cgroup = sorted(avail)
            rep.append(("cgroup", f"enforced by cgroup v{cg['version']} ({', '.join(p.cgroup)})"))
        else:
            rep.append(("cgroup", f"NOT enforced: cannot create cgroups: {cg['why']}"))

    v = cg["version"]
    # Without cgroup = true, a replica still gets a group where the machine
    # allows (the supervisor makes it): its tree is accounted and contained.
    tree = not p.cgroup and bool(avail)
    if p.cgroup or tree:
        rep.append(
            (
                "containment",
                f"enforced by a cgroup per replica (v{v}): what it starts ends with it, "
                "whatever sessions it moves to; its tree held to the limits",
            )
        )
    elif remote:
        rep.append(
            (
                "containment",
                "not confined: a Ray node; the replica's process group is killed when it "
                "ends, but a daemon that leaves the group lives on",
            )
        )
    else:
        rep.append(
            (
                "containment",
                "not confined: no cgroup here; the replica's tree is swept when it ends "
                "and summed by the watchdog, but a daemon that leaves the tree lives on",
            )
        )
    if merged.memory is not None:
        if "memory" in p.cgroup:
            knob = "memory.max" if v == 2 else "memory.limit_in_bytes"
            rep.append(("limits.memory", f"enforced by cgroup {knob} (real usage, OOM kill)"))
        elif tree and "memory" in avail:
            rep.append(
                (
                    "limits.memory",
                    "enforced by RLIMIT_AS per process and the replica's cgroup for its tree",
                )
            )
        elif remote:
            rep.append(("limits.memory", "enforced by RLIMIT_AS per process (and a Ray request)"))
        else:
            rep.append(("limits.memory", "enforced by RLIMIT_AS and the RSS watchdog (tree)"))
    if p.cpu is not None:
        if "cpu" in p.cgroup:
            knob = "cpu.max" if v == 2 else "cpu.cfs_quota_us"
            rep.append(("limits.cpu", f"enforced by cgroup {knob}"))
        else:
            why = "needs cgroup = true" if not profile.cgroup else "no writable cpu controller"
            if remote:
                why = "Ray reserves the CPUs for the replica's actor but does not cap its use"
            rep.append(("limits.cpu", f"NOT enforced: {why}"))
    if merged.processes is not None:
        if "pids" in p.cgroup or (tree and "pids" in avail):
            rep.append(("limits.processes", "enforced by cgroup pids.max (the tree)"))
        elif root and p.run_uid in (None, 0):
            rep.append(
                (
                    "limits.processes",
                    "NOT enforced: RLIMIT_NPROC does not apply to root and no pids cgroup",
                )
            )
        else:
            rep.append(("limits.processes", "enforced by RLIMIT_NPROC (per user)"))
    if merged.cpu_time is not None:
        whole = "its cgroup's CPU time" if (p.cgroup or tree) else "the CPU time of its tree"
        if remote:
            rep.append(("limits.cpu_time", "enforced by RLIMIT_CPU per process"))
        else:
            rep.append(("limits.cpu_time", f"enforced by RLIMIT_CPU and the watchdog ({whole})"))
    for f, rl in (
        ("open_files", "RLIMIT_NOFILE"),
        ("file_size", "RLIMIT_FSIZE"),
    ):
        if getattr(merged, f) is not None:
            rep.append((f"limits.{f}", f"enforced by {rl}"))
    return p


def _isolation(p: Plan, caps: dict[str, Any]) -> None:
    """Decide how the replica is kept from processes outside its tree (see above)."""
    prof = p.profile
    abi: int = caps["landlock_abi"]
    confining = prof.filesystem is not None or prof.run_as is not None
    own_uid = p.dynamic_uid  # no other process runs as the replica's uid
    other_uid = own_uid or (p.run_uid is not None and p.run_uid != os.geteuid())
    absent = "NOT enforced" if confining else "not confined"
    scoping = f"Landlock scoping (ABI {abi})"

    def put(setting: str, how: str) -> None:
        p.report.append((f"isolation.{setting}", how))

    if abi >= 2 or (abi and prof.filesystem is not None):
        p.ptrace_isolation = True
        how = "a Landlock domain per replica"
        unprivileged = other_uid or not caps["cap_sys_admin"]
        if prof.filesystem is None and not prof.no_new_privs and unprivileged:
            how += " (with no_new_privs: the replica lacks CAP_SYS_ADMIN)"
        put(
            "ptrace",
            f"enforced by {how}: no ptrace of, nor /proc/<pid>/fd of, any process outside its tree",
        )
    elif other_uid:
        put("ptrace", "enforced by another uid than the supervisor's and PR_SET_DUMPABLE 0")
    else:
        put("ptrace", f"{absent}: needs Landlock ABI >= 2 (this kernel: {abi})")

    if confining and abi >= SCOPE_ABI:
        p.scope = True
        put("signal", f"enforced by {scoping}: no signal to processes outside its tree")
    elif own_uid:
        put("signal", "enforced by a uid of its own per replica")
    elif confining:
        why = f"needs Landlock ABI >= {SCOPE_ABI} (this kernel: {abi})"
        if p.run_uid is not None:
            why += f"; replicas running as uid {p.run_uid} may signal each other"
        put("signal", f"NOT enforced: {why}")
    else:
        put("signal", "not confined: processes of its uid may signal it and be signalled")

    if p.ptrace_isolation and abi >= SCOPE_ABI:
        put("abstract_unix", f"enforced by {scoping}: no abstract unix socket outside its tree")
    elif prof.network == "none" and caps["net_ns"]:
        put("abstract_unix", "enforced by its own network namespace (abstract sockets live in one)")
    else:
        put(
            "abstract_unix",
            f"{absent}: needs Landlock ABI >= {SCOPE_ABI} or network = 'none' "
            f"(this kernel: ABI {abi})",
        )

    if confining:
        p.dumpable = False
        put("dumpable", "enforced by PR_SET_DUMPABLE 0: /proc/<pid> owned by root, no core dump")
    else:
        put("dumpable", "not confined: dumpable, as any process")

    if other_uid:
        p.report.append(("run_as.import_paths", _import_paths_report(caps)))


def _import_paths_report(caps: dict[str, Any]) -> str:
    """How the interpreter stays readable after the uid is dropped."""
    access: dict[str, str] = caps["interpreter"]
    if access["unreadable"]:
        return f"NOT enforced: {access['unreadable']} is not readable by an unprivileged uid"
    top = access["blocked"]
    if not top:
        return "enforced: the interpreter and its import paths are readable by any uid"
    if caps["mount_ns"]:
        return (
            f"enforced by a private mount namespace: {top} (closed to the replica's uid) "
            "covered by an empty tmpfs, the import paths bound back read-only"
        )
    return (
        f"NOT enforced: the interpreter below {top} is not readable by the replica's uid, "
        f"and no private mount namespace can open it: {caps['mount_ns_error']}"
    )


def explain(profile: SandboxProfile, limits: Limits | None = None) -> list[tuple[str, str]]:
    """``[(setting, "enforced by X" | "NOT enforced: why" | "not confined"), ...]``.

    One entry per setting of ``profile`` (merged with an agent's ``limits``)
    as this machine would apply it: ``network``, ``filesystem``, ``env``,
    ``run_as``, ``no_new_privs``, ``isolation.ptrace``, ``isolation.signal``,
    ``isolation.abstract_unix``, ``isolation.dumpable``,
    ``run_as.import_paths`` (with ``run_as``), ``cgroup``, ``limits.<name>``.
    """
    return plan(profile, limits).report


describe = explain
