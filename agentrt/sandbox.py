"""Sandbox profiles enforced: what this machine offers, the plan, the child's side.

Supervisor side: :func:`probe` (what the machine can enforce), :func:`explain`
(each setting of a profile, enforced by what, or why not), :func:`plan` (a
profile merged with an agent's limits, resolved to Boot fields), and
:class:`Cgroups` (one group per replica under ``agentrt-<supervisor pid>``).

Child side (:func:`enter_cgroups` first thing, :func:`confine` after the fds
and rlimits, before user code), in this order: join the cgroups, a fresh
network namespace, the working directory (chowned to ``run_as``), the
environment allowlist, drop to ``run_as`` (setgroups, setgid, setuid),
``PR_SET_NO_NEW_PRIVS``, Landlock.  Everything needing root happens before
the uid is dropped.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import fnmatch
import functools
import grp
import os
import pwd
import resource
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentrt import _linux
from agentrt.config import Limits, SandboxProfile
from agentrt.errors import ConfigError
from agentrt.protocol import Boot

__all__ = ["Cgroups", "Plan", "confine", "enter_cgroups", "explain", "plan", "probe"]

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

_SYS_LANDLOCK_CREATE_RULESET = 444
_SYS_LANDLOCK_ADD_RULE = 445
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

# Landlock filesystem rights, by the ABI that introduced them.
_FS_EXECUTE = 1 << 0
_FS_WRITE_FILE = 1 << 1
_FS_READ_FILE = 1 << 2
_FS_READ_DIR = 1 << 3
_FS_ABI1 = (1 << 13) - 1  # EXECUTE .. MAKE_SYM
_FS_REFER = 1 << 13  # ABI 2
_FS_TRUNCATE = 1 << 14  # ABI 3
_FS_IOCTL_DEV = 1 << 15  # ABI 5
_FS_FILE_RIGHTS = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV
_FS_READ = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR

_CONTROLLERS = ("memory", "cpu", "pids")
_CGROUP_ROOT = "/sys/fs/cgroup"


class SandboxError(OSError):
    """A confinement could not be applied in the child (the replica does not start)."""


# --- probing -------------------------------------------------------------------


def landlock_abi() -> int:
    """The Landlock ABI version of this kernel; 0 when Landlock is unavailable."""
    rc = _syscall(
        _SYS_LANDLOCK_CREATE_RULESET,
        None,
        ctypes.c_size_t(0),
        ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION),
    )
    return int(rc) if rc > 0 else 0


def _fork_check(fn: Any) -> str:
    """Run ``fn`` in a forked child; '' when it worked, else the error text."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(r)
        msg = b""
        try:
            fn()
        except BaseException as exc:
            msg = str(exc).encode()[:500] or type(exc).__name__.encode()
        with contextlib.suppress(OSError):
            os.write(w, msg)
        os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 4096):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode(errors="replace")


_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000


def _unshare(flags: int) -> None:
    """``unshare(2)`` (``os.unshare`` is Python >= 3.12)."""
    if _libc.unshare(ctypes.c_int(flags)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare: {os.strerror(err)}")


def _unshare_net() -> str:
    """Enter a fresh network namespace; returns how (``"netns"`` or ``"userns+netns"``)."""
    try:
        _unshare(_CLONE_NEWNET)
        return "netns"
    except PermissionError:
        if os.geteuid() == 0:
            raise
    uid, gid = os.geteuid(), os.getegid()
    _unshare(_CLONE_NEWUSER | _CLONE_NEWNET)
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"{gid} {gid} 1")
    return "userns+netns"


def _mounts() -> list[tuple[str, str, set[str]]]:
    out = []
    with contextlib.suppress(OSError), open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 4 and parts[2] in ("cgroup", "cgroup2"):
                out.append((parts[1], parts[2], set(parts[3].split(","))))
    return out


def _own_cgroups() -> dict[str, str]:
    """``{controller or "": path}`` from /proc/self/cgroup ("" = the v2 group)."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError), open("/proc/self/cgroup") as f:
        for line in f:
            hid, ctrls, path = line.rstrip("\n").split(":", 2)
            if hid == "0" and not ctrls:
                out[""] = path
            for c in ctrls.split(","):
                if c:
                    out[c] = path
    return out


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _cgroup_probe() -> dict[str, Any]:
    """Which cgroup hierarchy this process may create groups in, per controller."""
    own = _own_cgroups()
    mounts = _mounts()
    why: list[str] = []
    for mnt, kind, _opts in mounts:
        if kind != "cgroup2" or "" not in own:
            continue
        base = os.path.join(mnt, own[""].lstrip("/"))
        enabled = set(_read(os.path.join(base, "cgroup.subtree_control")).split())
        ctrls = [c for c in _CONTROLLERS if c in enabled]
        if ctrls and os.access(base, os.W_OK):
            return {"version": 2, "controllers": {c: base for c in ctrls}, "why": ""}
        why.append(
            f"cgroup v2 at {base}: "
            + ("not writable" if not os.access(base, os.W_OK) else "no controllers delegated")
        )
    bases: dict[str, str] = {}
    for c in _CONTROLLERS:
        for mnt, kind, opts in mounts:
            if kind == "cgroup" and c in opts and c in own:
                base = os.path.join(mnt, own[c].lstrip("/"))
                if os.path.isdir(base) and os.access(base, os.W_OK):
                    bases[c] = base
                else:
                    why.append(f"cgroup v1 {c} at {base}: not writable")
                break
    if bases:
        return {"version": 1, "controllers": bases, "why": "; ".join(why)}
    return {"version": None, "controllers": {}, "why": "; ".join(why) or "no cgroup hierarchy"}


@functools.cache
def probe() -> dict[str, Any]:
    """What this machine offers for confinement (cached; forks two short children).

    Returns a dict::

        {"root": bool,                     # euid 0
         "pidfd": bool,                    # os.pidfd_open works
         "user_ns": bool, "user_ns_error": str,
         "net_ns": "netns" | "userns+netns" | None, "net_ns_error": str,
         "landlock_abi": int,              # 0 = no Landlock
         "no_new_privs": bool,
         "cgroup": {"version": 1 | 2 | None,
                    "controllers": {"memory"|"cpu"|"pids": base dir},  # writable
                    "why": str},           # what is not available, and why
         "rlimits": {"AS"|"CPU"|"NOFILE"|"NPROC"|"FSIZE"|"CORE": [soft, hard]},  # -1 = unlimited
         "nproc_enforced": bool}           # RLIMIT_NPROC applies (not root)
    """
    pidfd = False
    if hasattr(os, "pidfd_open"):
        try:
            os.close(os.pidfd_open(os.getpid()))
            pidfd = True
        except OSError:
            pass
    user_err = _fork_check(lambda: _unshare(_CLONE_NEWUSER))
    net_how: list[str] = []
    net_err = _fork_check(_unshare_net)
    if not net_err:
        net_how.append("netns" if os.geteuid() == 0 else "userns+netns")
    rl = {}
    for name in ("AS", "CPU", "NOFILE", "NPROC", "FSIZE", "CORE"):
        soft, hard = resource.getrlimit(getattr(resource, f"RLIMIT_{name}"))
        rl[name] = [soft, hard]
    return {
        "root": os.geteuid() == 0,
        "pidfd": pidfd,
        "user_ns": not user_err,
        "user_ns_error": user_err,
        "net_ns": net_how[0] if net_how else None,
        "net_ns_error": net_err,
        "landlock_abi": landlock_abi(),
        "no_new_privs": True,
        "cgroup": _cgroup_probe(),
        "rlimits": rl,
        "nproc_enforced": os.geteuid() != 0,
    }


# --- the plan ------------------------------------------------------------------


@dataclass
class Plan:
    """A profile resolved for one agent: Boot fields, limits, and what is unenforced."""

    profile: SandboxProfile
    limits: Limits  # merged: profile's, the agent's explicit values winning
    cpu: float | None = None
    run_uid: int | None = None
    run_gid: int | None = None
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

    if profile.run_as is not None:
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


# --- cgroups (supervisor side) ------------------------------------------------------


class Cgroups:
    """Per-replica cgroups under ``agentrt-<pid>`` in each writable hierarchy."""

    def __init__(self) -> None:
        cg = probe()["cgroup"]
        self.version: int | None = cg["version"]
        self.bases: dict[str, str] = dict(cg["controllers"])
        self.parents: dict[str, str] = {}

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

    def create(
        self,
        leaf: str,
        ctrls: list[str],
        memory: int | None,
        cpu: float | None,
        processes: int | None,
    ) -> list[str]:
        """Make the replica's group(s) with their limits; the directories to join."""
        dirs: list[str] = []
        try:
            if self.version == 2:
                d = os.path.join(self._parent(ctrls[0]), leaf)
                os.makedirs(d, exist_ok=True)
                dirs.append(d)
                self._limit(d, ctrls, memory, cpu, processes)
            else:
                for c in ctrls:
                    d = os.path.join(self._parent(c), leaf)
                    os.makedirs(d, exist_ok=True)
                    dirs.append(d)
                    self._limit(d, [c], memory, cpu, processes)
        except OSError:
            self.remove(dirs)
            raise
        return dirs

    def _limit(
        self,
        d: str,
        ctrls: list[str],
        memory: int | None,
        cpu: float | None,
        processes: int | None,
    ) -> None:
        def put(name: str, value: str, required: bool = True) -> None:
            path = os.path.join(d, name)
            if not required and not os.path.exists(path):
                return
            try:
                with open(path, "w") as f:
                    f.write(value)
            except OSError:
                if required:
                    raise

        v2 = self.version == 2
        if memory is not None and "memory" in ctrls:
            if v2:
                put("memory.max", str(memory))
                put("memory.swap.max", "0", required=False)
            else:
                put("memory.limit_in_bytes", str(memory))
                put("memory.memsw.limit_in_bytes", str(memory), required=False)
        if cpu is not None and "cpu" in ctrls:
            period = 100_000
            quota = max(1000, int(cpu * period))
            if v2 and os.path.exists(os.path.join(d, "cpu.max")):
                put("cpu.max", f"{quota} {period}")
            elif os.path.exists(os.path.join(d, "cpu.cfs_quota_us")):
                put("cpu.cfs_period_us", str(period))
                put("cpu.cfs_quota_us", str(quota))
        if (
            processes is not None
            and "pids" in ctrls
            and os.path.exists(os.path.join(d, "pids.max"))
        ):
            put("pids.max", str(processes))

    @staticmethod
    def oom_killed(dirs: list[str]) -> bool:
        """Whether the OOM killer acted in one of ``dirs`` (read before removing them)."""
        for d in dirs:
            for name in ("memory.events", "memory.oom_control"):
                for line in _read(os.path.join(d, name)).splitlines():
                    k, _, n = line.partition(" ")
                    if k == "oom_kill" and n.strip().isdigit() and int(n) > 0:
                        return True
        return False

    @staticmethod
    def remove(dirs: list[str], wait: float = 2.0) -> None:
        """Kill what is left in ``dirs`` and remove them (blocking: call in a thread)."""
        deadline = time.monotonic() + wait
        for d in dirs:
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

    def close(self) -> None:
        """Remove the ``agentrt-<pid>`` parents (their replicas' groups are gone by now)."""
        for d in self.parents.values():
            with contextlib.suppress(OSError):
                for sub in os.listdir(d):
                    if os.path.isdir(os.path.join(d, sub)):
                        self.remove([os.path.join(d, sub)])
            self.remove([d])
        self.parents.clear()


# --- the child's side ------------------------------------------------------------


def enter_cgroups(boot: Boot) -> None:
    """First thing in the child: join the replica's cgroups."""
    pid = str(os.getpid())
    for d in boot.cgroups:
        try:
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write(pid)
        except OSError as exc:
            raise SandboxError(exc.errno, f"cannot join cgroup {d}: {exc.strerror}") from None


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, 0x8913, ifr))[1]  # SIOCGIFFLAGS
        fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", flags | 1))  # SIOCSIFFLAGS


def _import_paths(boot: Boot) -> list[str]:
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    for mod in (os, contextlib):  # the stdlib, wherever it lives
        paths.add(os.path.dirname(os.path.abspath(mod.__file__ or "")))
    paths.update(p for p in sys.path if p)
    paths.update(boot.sys_path)
    paths.add(str(Path(__file__).resolve().parent))  # agentrt itself (editable installs)
    return sorted(paths)


def _landlock(read: list[str], write: list[str]) -> None:
    abi = landlock_abi()
    if abi <= 0:
        raise SandboxError(errno.ENOSYS, "Landlock is not available")
    handled = _FS_ABI1
    if abi >= 2:
        handled |= _FS_REFER
    if abi >= 3:
        handled |= _FS_TRUNCATE
    if abi >= 5:
        handled |= _FS_IOCTL_DEV
    attr = struct.pack("=Q", handled)  # handled_access_fs only: valid on every ABI
    buf = ctypes.create_string_buffer(attr, len(attr))
    rfd = _syscall(
        _SYS_LANDLOCK_CREATE_RULESET, buf, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0)
    )
    if rfd < 0:
        err = ctypes.get_errno()
        raise SandboxError(err, f"landlock_create_ruleset: {os.strerror(err)}")
    try:
        rules = [(p, _FS_READ & handled) for p in read] + [(p, handled) for p in write]
        for path, access in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # a path that does not exist grants nothing
            try:
                if not os.path.isdir(path):
                    access &= _FS_FILE_RIGHTS
                rule = ctypes.create_string_buffer(struct.pack("=Qi", access, fd), 12)
                if (
                    _syscall(
                        _SYS_LANDLOCK_ADD_RULE,
                        ctypes.c_int(rfd),
                        ctypes.c_int(_LANDLOCK_RULE_PATH_BENEATH),
                        rule,
                        ctypes.c_uint32(0),
                    )
                    != 0
                ):
                    err = ctypes.get_errno()
                    raise SandboxError(err, f"landlock_add_rule({path}): {os.strerror(err)}")
            finally:
                os.close(fd)
        _prctl_nnp()
        if _syscall(_SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(rfd), ctypes.c_uint32(0)) != 0:
            err = ctypes.get_errno()
            raise SandboxError(err, f"landlock_restrict_self: {os.strerror(err)}")
    finally:
        os.close(rfd)


def _prctl_nnp() -> None:
    if (
        _libc.prctl(
            _PR_SET_NO_NEW_PRIVS,
            ctypes.c_ulong(1),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
        )
        != 0
    ):
        err = ctypes.get_errno()
        raise SandboxError(err, f"PR_SET_NO_NEW_PRIVS: {os.strerror(err)}")


def confine(boot: Boot) -> None:
    """The rest of the confinement, in the child, before user code.

    Creates and enters ``boot.workdir`` as well (chowned to ``run_as``).
    """
    if boot.network == "none":
        try:
            _unshare_net()
        except OSError as exc:
            raise SandboxError(
                exc.errno or errno.EPERM, f"network = 'none': cannot unshare: {exc}"
            ) from None
        with contextlib.suppress(OSError):
            _loopback_up()
    os.makedirs(boot.workdir, mode=0o700, exist_ok=True)
    if boot.run_uid is not None:
        os.chown(boot.workdir, boot.run_uid, boot.run_gid if boot.run_gid is not None else -1)
    os.chdir(boot.workdir)
    readable = [*boot.fs_read, *_import_paths(boot)] if boot.fs_read is not None else []
    if boot.env_allow is not None:
        pats = boot.env_allow
        for k in list(os.environ):
            if not any(fnmatch.fnmatchcase(k, p) for p in pats):
                del os.environ[k]
    if boot.run_uid is not None:
        gid = boot.run_gid if boot.run_gid is not None else boot.run_uid
        os.setgroups([])
        os.setgid(gid)
        os.setuid(boot.run_uid)
        # a credential change clears the parent-death signal: arm it again
        _linux.set_pdeathsig(signal.SIGKILL)
        if boot.supervisor_pid and os.getppid() == 1:
            os._exit(71)
    if boot.no_new_privs:
        _prctl_nnp()
    if boot.fs_read is not None:
        _landlock(readable, [*boot.fs_write, boot.workdir])
