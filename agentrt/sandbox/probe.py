"""What this machine offers for confinement (supervisor side; doctor reads it).

:func:`probe` forks short children to try namespaces, asks the kernel for its
Landlock ABI, finds the cgroup hierarchies this process may create groups in
and whether an unprivileged uid can read the interpreter.  The low-level
calls shared with the child's side live here too.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import resource
import stat
import sys
import tempfile
from collections.abc import Iterable
from typing import Any

__all__ = ["SandboxError", "interpreter_paths", "landlock_abi", "probe"]

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

_SYS_LANDLOCK_CREATE_RULESET = 444
_SYS_LANDLOCK_ADD_RULE = 445
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1
_PR_SET_DUMPABLE = 4
_PR_SET_NO_NEW_PRIVS = 38
_CAP_SYS_ADMIN = 21

# Landlock filesystem rights, by the ABI that introduced them.
_FS_EXECUTE = 1 << 0
_FS_WRITE_FILE = 1 << 1
_FS_READ_FILE = 1 << 2
_FS_READ_DIR = 1 << 3
_FS_MAKE_BLOCK = 1 << 11
_FS_ABI1 = (1 << 13) - 1  # EXECUTE .. MAKE_SYM
_FS_REFER = 1 << 13  # ABI 2
_FS_TRUNCATE = 1 << 14  # ABI 3
_FS_IOCTL_DEV = 1 << 15  # ABI 5
_FS_FILE_RIGHTS = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV
_FS_READ = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
# Landlock scopes (ABI 6): what a domain may not reach outside itself.
_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
_SCOPE_SIGNAL = 1 << 1
#: the first ABI with scopes
SCOPE_ABI = 6

_CONTROLLERS = ("memory", "cpu", "pids")
_CGROUP_ROOT = "/sys/fs/cgroup"


class SandboxError(OSError):
    """A confinement could not be applied in the child (the replica does not start)."""


@functools.cache
def landlock_abi() -> int:
    """The Landlock ABI version of this kernel; 0 when Landlock is unavailable."""
    rc = _syscall(
        _SYS_LANDLOCK_CREATE_RULESET,
        None,
        ctypes.c_size_t(0),
        ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION),
    )
    return int(rc) if rc > 0 else 0


def _fork_checks(*fns: Any) -> list[str]:
    """Run each of ``fns`` in a forked child of its own, the children side by
    side; for each, '' when it worked, else the error text."""
    children: list[tuple[int, int]] = []
    try:
        for fn in fns:
            r, w = os.pipe()
            try:
                pid = os.fork()
            except BaseException:
                os.close(r)
                os.close(w)
                raise
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
            children.append((pid, r))
    finally:
        out = [_check_result(pid, r) for pid, r in children]
    return out


def _check_result(pid: int, r: int) -> str:
    """What a :func:`_fork_checks` child wrote, once it has exited (reaped)."""
    chunks = []
    try:
        while chunk := os.read(r, 4096):
            chunks.append(chunk)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    return b"".join(chunks).decode(errors="replace")


_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000

_MS_RDONLY = 1
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_NOEXEC = 8
_MS_REMOUNT = 32
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18


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


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    """``mount(2)``."""
    rc = _libc.mount(
        source.encode() if source is not None else None,
        target.encode(),
        fstype.encode() if fstype is not None else None,
        ctypes.c_ulong(flags),
        data.encode() if data else None,
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def _private_mounts() -> None:
    """Enter a mount namespace of our own whose mounts reach no other namespace."""
    _unshare(_CLONE_NEWNS)
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)


def _try_mount_ns() -> None:
    _private_mounts()
    _mount("tmpfs", tempfile.gettempdir(), "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755")


def _try_pid_ns() -> None:
    if os.geteuid() == 0:
        _unshare(_CLONE_NEWPID)
    else:
        _unshare(_CLONE_NEWUSER | _CLONE_NEWPID)


@functools.cache
def has_cap_sys_admin() -> bool:
    """Whether this process holds CAP_SYS_ADMIN (Landlock then needs no no_new_privs).

    Asked once (a replica inherits its zygote's answer): after a uid change
    away from root, the capabilities are gone whatever this says.
    """
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> _CAP_SYS_ADMIN & 1)
    return False


def interpreter_paths() -> list[str]:
    """Where this interpreter imports from: its prefixes, the stdlib and ``sys.path``
    (as real paths, those that exist)."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    for mod in (os, contextlib):  # the stdlib, wherever it lives
        paths.add(os.path.dirname(os.path.abspath(mod.__file__ or "")))
    paths.update(p for p in sys.path if p)
    return real_paths(paths)


def real_paths(paths: Iterable[str]) -> list[str]:
    """The real paths of ``paths`` that exist, sorted, each once."""
    return sorted({os.path.realpath(p) for p in paths if p and os.path.exists(p)})


def outermost(paths: Iterable[str]) -> list[str]:
    """``paths`` without those inside another one of them."""
    out: list[str] = []
    for p in sorted(set(paths)):
        if not any(p == q or p.startswith(q.rstrip("/") + "/") for q in out):
            out.append(p)
    return out


def others_blocked(path: str) -> tuple[str, str]:
    """``(ancestor, "")`` where a uid owning nothing cannot enter an ancestor of
    ``path``, ``("", path)`` where it cannot read ``path`` itself, else ``("", "")``.

    From the mode bits (the "other" class), as a replica's dynamic uid sees them.
    """
    parts = path.strip("/").split("/")
    cur = "/"
    for part in parts[:-1]:
        cur = os.path.join(cur, part)
        try:
            if not os.stat(cur).st_mode & stat.S_IXOTH:
                return cur, ""
        except OSError:
            return cur, ""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "", path
    need = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) else 0)
    return ("", "") if mode & need == need else ("", path)


def _interpreter_access() -> dict[str, str]:
    """Whether an unprivileged uid reads the interpreter's import paths; the first
    ancestor it cannot enter (``blocked``) or path it cannot read (``unreadable``)."""
    blocked = unreadable = ""
    for p in interpreter_paths():
        b, u = others_blocked(p)
        blocked = blocked or b
        unreadable = unreadable or u
    return {"blocked": blocked, "unreadable": unreadable}


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


@functools.cache
def cgroup_probe() -> dict[str, Any]:
    """``probe()["cgroup"]`` alone (cached): files read, no child forked.

    Which cgroup hierarchy this process may create groups in, per controller."""
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
    """What this machine offers for confinement (cached; forks four short children).

    Returns a dict::

        {"root": bool,                     # euid 0
         "pidfd": bool,                    # os.pidfd_open works
         "user_ns": bool, "user_ns_error": str,
         "net_ns": "netns" | "userns+netns" | None, "net_ns_error": str,
         "landlock_abi": int,              # 0 = no Landlock
         "landlock_scope": bool,           # ABI >= 6: signal and abstract-socket scoping
         "mount_ns": bool, "mount_ns_error": str,  # a private mount namespace with a tmpfs
         "pid_ns": bool, "pid_ns_error": str,
         "cap_sys_admin": bool,            # Landlock without no_new_privs
         "interpreter": {"blocked": str,   # an ancestor of the import paths, or ""
                         "unreadable": str},  # an import path itself, or ""
                                           # (as an unprivileged uid sees them)
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
    user_err, mount_err, pid_err, net_err = _fork_checks(
        lambda: _unshare(_CLONE_NEWUSER), _try_mount_ns, _try_pid_ns, _unshare_net
    )
    net_how: list[str] = []
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
        "landlock_scope": landlock_abi() >= SCOPE_ABI,
        "mount_ns": not mount_err,
        "mount_ns_error": mount_err,
        "pid_ns": not pid_err,
        "pid_ns_error": pid_err,
        "cap_sys_admin": has_cap_sys_admin(),
        "interpreter": _interpreter_access(),
        "no_new_privs": True,
        "cgroup": cgroup_probe(),
        "rlimits": rl,
        "nproc_enforced": os.geteuid() != 0,
    }
