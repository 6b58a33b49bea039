"""The child's side: confinement applied in the replica before user code.

:func:`enter_cgroups` first thing, :func:`confine` after the fds and rlimits,
in this order: join the cgroups, a fresh network namespace, the working
directory (chowned to ``run_as``), the environment allowlist, drop to
``run_as`` (setgroups, setgid, setuid), ``PR_SET_NO_NEW_PRIVS``, Landlock.
Everything needing root happens before the uid is dropped.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import fnmatch
import os
import signal
import socket
import struct
import sys
from pathlib import Path

from agentrt import _linux
from agentrt.protocol import Boot
from agentrt.sandbox.probe import (
    _FS_ABI1,
    _FS_FILE_RIGHTS,
    _FS_IOCTL_DEV,
    _FS_READ,
    _FS_REFER,
    _FS_TRUNCATE,
    _LANDLOCK_RULE_PATH_BENEATH,
    _PR_SET_NO_NEW_PRIVS,
    _SYS_LANDLOCK_ADD_RULE,
    _SYS_LANDLOCK_CREATE_RULESET,
    _SYS_LANDLOCK_RESTRICT_SELF,
    SandboxError,
    _libc,
    _syscall,
    _unshare_net,
    landlock_abi,
)

__all__ = ["confine", "enter_cgroups"]


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
