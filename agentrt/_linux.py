"""Thin wrappers over the Linux calls the runtime needs (leaf: stdlib only).

prctl death signal and subreaper, pipe sizing, fd passing, and a sweep of
``/proc`` for the processes of a session.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import signal
import socket
from collections.abc import Iterable

__all__ = [
    "descendants",
    "kill_group",
    "kill_tree",
    "pidfd_signal",
    "proc_table",
    "raise_nofile_limit",
    "recv_with_fds",
    "send_with_fds",
    "set_child_subreaper",
    "set_pdeathsig",
    "set_pipe_size",
    "warm",
]

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
# The symbols already loaded into this process (libc among them): no
# find_library() here, it runs a subprocess and costs milliseconds per replica.
_libc = ctypes.CDLL(None, use_errno=True)


def warm() -> None:
    """Resolve the libc functions now, not in each forked child."""
    _ = _libc.prctl


def _prctl(option: int, arg: int) -> None:
    if _libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def set_pdeathsig(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent thread dies."""
    _prctl(_PR_SET_PDEATHSIG, int(sig))


def set_child_subreaper() -> None:
    """Orphaned descendants re-parent to this process instead of init."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def set_pipe_size(fd: int, size: int) -> int:
    """Grow a pipe's buffer (F_SETPIPE_SZ); returns the size in effect."""
    try:
        return fcntl.fcntl(fd, _F_SETPIPE_SZ, size)
    except OSError:
        # Over /proc/sys/fs/pipe-max-size or the user's pipe quota: keep the default.
        return -1


def raise_nofile_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit; returns the new soft limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        except (ValueError, OSError):
            return soft
    return soft


def send_with_fds(sock: socket.socket, data: bytes, fds: Iterable[int]) -> None:
    """One datagram with ``fds`` attached (SCM_RIGHTS)."""
    socket.send_fds(sock, [data], list(fds))


def recv_with_fds(sock: socket.socket, bufsize: int, maxfds: int) -> tuple[bytes, list[int]]:
    """One datagram and the fds attached to it; ``b""`` at end of stream."""
    data, fds, _flags, _addr = socket.recv_fds(sock, bufsize, maxfds)
    return data, fds


def pidfd_signal(pidfd: int, sig: int) -> bool:
    """Signal the process behind ``pidfd``; False when it has already exited."""
    try:
        signal.pidfd_send_signal(pidfd, sig)
        return True
    except ProcessLookupError:
        return False
    except OSError as exc:
        if exc.errno in (errno.ESRCH, errno.EBADF):
            return False
        raise


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> bool:
    """Signal a whole process group; False when it is empty."""
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def proc_table() -> list[tuple[int, int, int, int]]:
    """``(pid, ppid, pgid, sid)`` of every process (one sweep of /proc)."""
    out: list[tuple[int, int, int, int]] = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the parenthesised comm: state ppid pgrp session ...
        rest = stat[stat.rfind(b")") + 2 :].split()
        if len(rest) > 3:
            out.append((int(name), int(rest[1]), int(rest[2]), int(rest[3])))
    return out


def descendants(roots: Iterable[int]) -> list[int]:
    """Every live descendant of ``roots`` (one sweep of /proc for all of them)."""
    children: dict[int, list[int]] = {}
    for pid, ppid, _pgid, _sid in proc_table():
        children.setdefault(ppid, []).append(pid)
    out: list[int] = []
    stack = list(roots)
    while stack:
        for c in children.get(stack.pop(), ()):
            out.append(c)
            stack.append(c)
    return out


def kill_tree(leaders: Iterable[int], extra: Iterable[int] = ()) -> int:
    """SIGKILL what the ``leaders`` left behind: their process groups, every
    process of their sessions or groups, and ``extra`` pids.  Returns how many
    processes were signalled."""
    lead = set(leaders)
    for pid in lead:
        kill_group(pid)
    me = os.getpid()
    victims = {pid for pid, _pp, pgid, sid in proc_table() if sid in lead or pgid in lead}
    victims |= set(extra)
    victims.discard(me)
    n = 0
    for v in victims:
        try:
            os.kill(v, signal.SIGKILL)
            n += 1
        except (ProcessLookupError, PermissionError):
            pass
    return n
