"""Thin wrappers over the Linux calls the runtime needs (leaf: stdlib only).

prctl death signal and subreaper, pipe sizing, fd passing, the exit status
of a zombie, and a sweep of ``/proc`` for the processes of a session.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # (no stub: the C module under signal)
import array
import contextlib
import ctypes
import errno
import fcntl
import os
import signal
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "child_cpu",
    "clock_ticks",
    "default_signals",
    "descendants",
    "exit_started",
    "get_name",
    "kill_group",
    "kill_started_since",
    "kill_tree",
    "pidfd_alive",
    "pidfd_signal",
    "proc_table",
    "raise_nofile_limit",
    "reap",
    "recv_with_fds",
    "send_with_fds",
    "set_child_subreaper",
    "set_handler",
    "set_name",
    "set_pdeathsig",
    "set_pipe_size",
    "warm",
    "zombie_status",
]

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
_PR_GET_NAME = 16
_PR_SET_CHILD_SUBREAPER = 36
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
# The symbols already loaded into this process (libc among them): no
# find_library() here, it runs a subprocess and costs milliseconds per replica.
_libc = ctypes.CDLL(None, use_errno=True)
_CLK_TCK = os.sysconf("SC_CLK_TCK")
#: prctl(2) with its argument types declared: called with plain ints (no
#: ctypes objects made in a forked child, whose pages they would dirty)
_prctl_call = _libc.prctl
_prctl_call.argtypes = [ctypes.c_int, *[ctypes.c_ulong] * 4]
_prctl_call.restype = ctypes.c_int


def warm() -> None:
    """Resolve the libc functions now, not in each forked child."""
    _ = _libc.prctl


def trim_heap() -> None:
    """Hand the C heap's free pages back to the kernel (glibc's ``malloc_trim``;
    nothing elsewhere): each fork of this process then copies fewer page
    table entries, and a child that allocates there gets a zeroed page
    instead of a copy of a stale one."""
    trim = getattr(_libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


def _prctl(option: int, arg: int) -> None:
    if _prctl_call(option, arg, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def default_signals(sigs: tuple[int, ...], unblock: bool = True) -> None:
    """Give ``sigs`` their default action, and unblock every signal (unless
    the parent is known to block none), in a forked child.

    Through ``_signal``: ``signal.signal`` turns the handler it replaces
    into an enum (by way of an exception when it is a function), which
    writes to some 60 pages a forked child would otherwise share.
    """
    for sig in sigs:
        _signal.signal(sig, _signal.SIG_DFL)
    if unblock:
        _signal.pthread_sigmask(_signal.SIG_SETMASK, ())


def set_handler(sig: int, handler: Callable[[int, Any], None]) -> None:
    """``signal.signal`` without turning the old handler into an enum (see
    :func:`default_signals`)."""
    _signal.signal(sig, handler)


def set_pdeathsig(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent thread dies."""
    _prctl(_PR_SET_PDEATHSIG, int(sig))


def get_name() -> ctypes.Array[ctypes.c_char]:
    """This thread's name (``/proc/self/comm``), in a buffer :func:`set_name` takes."""
    buf = ctypes.create_string_buffer(16)
    _prctl(_PR_GET_NAME, ctypes.addressof(buf))
    return buf


def set_name(buf: ctypes.Array[ctypes.c_char]) -> None:
    """Name this thread (``/proc/self/comm``, what ``ps`` shows; 15 bytes at most).

    The buffer is made beforehand (:func:`get_name`, ``create_string_buffer``):
    a forked child that renames itself makes no object whose page it would copy.
    """
    _prctl(_PR_SET_NAME, ctypes.addressof(buf))


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


def recv_with_fds(
    sock: socket.socket, bufsize: int, maxfds: int, flags: int = 0
) -> tuple[bytes, list[int]]:
    """One datagram and the fds attached to it; ``b""`` at end of stream.

    ``flags`` as for recvmsg(2) (socket.recv_fds drops them before 3.12).
    """
    data, ancdata, _flags, _addr = sock.recvmsg(bufsize, socket.CMSG_LEN(maxfds * 4), flags)
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds += array.array("i", payload[: len(payload) - len(payload) % 4])
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


def pidfd_alive(pidfd: int) -> bool:
    """Whether the process behind ``pidfd`` is running or a zombie (not reaped yet).

    Signal 0 checks without sending: it fails with ESRCH once the process is
    reaped (and with EPERM for a process we may not signal: False too).
    """
    try:
        signal.pidfd_send_signal(pidfd, 0)
        return True
    except OSError:
        return False


def _stat_fields(path: str) -> list[bytes] | None:
    """The fields of a ``/proc/.../stat`` file from field 3 (state) on, after
    the parenthesised comm; None if unreadable or short."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        stat = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    rest = stat[stat.rfind(b")") + 2 :].split()
    return rest if len(rest) >= 50 else None


def _exit_stat(pid: int, rest: list[bytes] | None = None) -> tuple[bytes, int, float] | None:
    """``(state, exit_code, cpu seconds)`` from ``/proc/<pid>/stat``; None if unreadable.

    ``exit_code`` is field 52, the status as waitpid(2) reports it (Linux >=
    3.5); the CPU time is fields 14-17 (utime, stime and those of the reaped
    children, in clock ticks), what wait4(2)'s rusage counts.
    """
    if rest is None:
        rest = _stat_fields(f"/proc/{pid}/stat")
    if rest is None:
        return None
    try:
        ticks = int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
        return rest[0], int(rest[49]), ticks / _CLK_TCK
    except ValueError:
        return None


#: /proc/<pid>/stat flags (field 9): the task has begun to exit
PF_EXITING = 0x4


#: :func:`exit_started`'s answer for a process whose main thread is exiting
#: and some other thread not yet
STRAGGLING = (-1, 0.0)


def exit_started(pid: int, pidfd: int) -> tuple[int, float] | None:
    """``(raw wait status, cpu seconds)`` of a process every thread of which
    has begun to exit, read from ``/proc`` while its memory may still be torn
    down; :data:`STRAGGLING` while its main thread has and some other thread
    not yet; None where neither is so or the read cannot be trusted.

    A thread with ``PF_EXITING`` runs no user code again, so once all of them
    have it nothing more reaches the process's pipes.  The kernel sets the
    exit status (field 52) before that teardown.  As :func:`zombie_status`:
    trusted only while ``pidfd`` (checked after the reads) still refers to an
    unreaped process, and a status of 0 is left to the parent's report.
    """
    rest = _stat_fields(f"/proc/{pid}/stat")
    if rest is None:
        return None
    found = _exit_stat(pid, rest)
    try:
        flags, threads = int(rest[6]), int(rest[17])
    except ValueError:
        return None
    if rest[0] not in (b"Z", b"X") and not flags & PF_EXITING:
        return None
    if found is None or found[1] <= 0:
        return None
    if threads > 1:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return None
        for tid in tids:
            task = _stat_fields(f"/proc/{pid}/task/{tid}/stat")
            if task is not None and not int(task[6]) & PF_EXITING:
                return STRAGGLING  # (a task gone meanwhile has exited)
    if not pidfd_alive(pidfd):
        return None
    return found[1], found[2]


def zombie_status(pid: int, pidfd: int) -> tuple[int, float] | None:
    """``(raw wait status, cpu seconds)`` of an exited process that is not reaped
    yet, read from ``/proc/<pid>/stat``; None where the read cannot be trusted.

    ``pidfd`` is the process's pidfd, readable (it has exited): the status is
    in /proc before its parent reaps it.  The pid is the process's only while
    it is unreaped: once reaped it may belong to another process already, so
    the read is trusted only when the pidfd, checked *after* it, still refers
    to an unreaped process.

    None: reaped already (or during the read), /proc unreadable, not exited,
    or a status of 0.  The kernel prints 0 where the reader may not ptrace
    the process (a replica under another uid) and for a group leader that
    exited on its own before the rest of its threads: a clean exit is not told
    apart from those, so it is left to the parent's report.
    """
    found = _exit_stat(pid)
    if found is None or not pidfd_alive(pidfd):
        return None
    state, status, cpu = found
    if state not in (b"Z", b"X") or status <= 0:
        return None
    return status, cpu


def child_cpu(pid: int) -> float | None:
    """CPU seconds of an exited child of this process that it has not reaped
    (so ``pid`` is still that child's), as wait4(2) would report them; None
    if unreadable."""
    found = _exit_stat(pid)
    return None if found is None else found[2]


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
        proc = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return out
    # Plain fds relative to /proc, not open(): half the cost of the sweep
    # (it runs on a thread, next to the event loop, after every death).
    try:
        for name in os.listdir(proc):
            if not name.isdigit():
                continue
            try:
                fd = os.open(name + "/stat", os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc)
            except OSError:
                continue
            try:
                stat = os.read(fd, 4096)
            except OSError:
                continue
            finally:
                os.close(fd)
            # Fields after the parenthesised comm: state ppid pgrp session ...
            rest = stat[stat.rfind(b")") + 2 :].split(None, 4)
            if len(rest) > 3:
                out.append((int(name), int(rest[1]), int(rest[2]), int(rest[3])))
    finally:
        os.close(proc)
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


def process_identity(pid: int) -> str | None:
    """``"pid start-time"`` of a running process (the start time tells a reused pid)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    return f"{pid} {int(fields[19])}" if len(fields) > 19 else None


def proc_state(pid: int) -> str | None:
    """The state letter of a process (``R``, ``S``, ``T`` stopped...; None: gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    rest = stat[stat.rfind(b")") + 2 :]
    return rest[:1].decode() or None


_SIGKILL_BIT = 1 << (signal.SIGKILL - 1)


def dying(pid: int) -> bool:
    """Whether ``pid`` is gone, a zombie, or has a SIGKILL pending (it will not
    run user code again).  One raw read of ``/proc/PID/status``: it is on a
    spare's way to becoming a replica (20 us here, against 66 for a buffered
    read split into lines)."""
    try:
        fd = os.open(f"/proc/{pid}/status", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return True
    try:
        status = os.read(fd, 1 << 16)  # (a long Groups: line comes before SigPnd)
    except OSError:
        return True
    finally:
        os.close(fd)
    state = _status_field(status, b"State")
    if state is not None and state[:1] in (b"Z", b"X"):
        return True
    for key in (b"SigPnd", b"ShdPnd"):
        pending = _status_field(status, key)
        try:
            if pending is not None and int(pending, 16) & _SIGKILL_BIT:
                return True
        except ValueError:
            pass
    return False


def _status_field(status: bytes, key: bytes) -> bytes | None:
    """The value of line ``key:`` of a ``/proc/PID/status`` (None if absent)."""
    at = status.find(b"\n" + key + b":")
    if at == -1:
        return None
    start = at + len(key) + 2
    end = status.find(b"\n", start)
    return status[start : end if end != -1 else len(status)].strip()


def cgroup_members(group: str) -> list[int]:
    """The pids in cgroup directory ``group`` (none when it cannot be read)."""
    try:
        with open(os.path.join(group, "cgroup.procs")) as f:
            return [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return []


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


def clock_ticks() -> int:
    """Now, in the unit ``/proc/<pid>/stat`` counts process start times in
    (clock ticks since boot)."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * _CLK_TCK)


def _start_times() -> dict[int, tuple[int, int]]:
    """``{pid: (ppid, start time in clock ticks)}`` of every process (one /proc sweep);
    :class:`OSError` when /proc cannot be read at all."""
    out: dict[int, tuple[int, int]] = {}
    proc = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in os.listdir(proc):
            if not name.isdigit():
                continue
            try:
                fd = os.open(name + "/stat", os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc)
            except OSError:
                continue
            try:
                stat = os.read(fd, 4096)
            except OSError:
                continue
            finally:
                os.close(fd)
            # after the comm: state(3) ppid(4) ... starttime(22)
            rest = stat[stat.rfind(b")") + 2 :].split()
            if len(rest) > 19:
                out[int(name)] = (int(rest[1]), int(rest[19]))
    finally:
        os.close(proc)
    return out


def kill_started_since(root: int, since: int, members: Iterable[int] = ()) -> list[int]:
    """SIGKILL the processes of ``root``'s tree, and ``members`` (a cgroup's), that
    started at clock tick ``since`` or later; ``root`` itself is spared.

    What a call started while it ran, whatever sessions or groups it moved
    to: its descendants, and (through ``members``) the daemons that left the
    tree but not the replica's cgroup.  Returns the direct children of
    ``root`` among those killed (theirs to reap); :class:`OSError` when
    /proc cannot be read (start times unknown: nothing is killed).
    """
    table = _start_times()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _start) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set(members)
    stack = [root]
    while stack:
        for c in children.get(stack.pop(), ()):
            found.add(c)
            stack.append(c)
    found.discard(root)
    mine: list[int] = []
    for pid in found:
        entry = table.get(pid)
        if entry is None or entry[1] < since:
            continue
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue
        if entry[0] == root:
            mine.append(pid)
    return mine


def readable(fd: int, timeout: float | None = 0.0) -> bool:
    """Whether ``fd`` is readable within ``timeout`` seconds (None: wait).

    poll(2), not select(2): a supervisor of many replicas has descriptors
    past select's limit of 1,024."""
    import select

    p = select.poll()
    p.register(fd, select.POLLIN)
    ms = None if timeout is None else max(0, int(timeout * 1000 + 0.999))
    while True:
        try:
            return bool(p.poll(ms))
        except InterruptedError:
            continue


def reap(pids: Iterable[int], timeout: float = 1.0) -> None:
    """Collect the killed children among ``pids`` (each waited for ``timeout`` at most)."""
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            continue
        try:
            if readable(fd, timeout):
                os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOHANG)
        except OSError:  # not a child of ours (ChildProcessError): nothing to collect
            pass
        finally:
            os.close(fd)


def stop_tree(pid: int, cgroups: list[str], wait: float = 2.0) -> list[int]:
    """SIGSTOP every process of a replica's tree (its cgroup's members, or its
    process group and descendants), until no new one appears: a stopped
    process forks no more.  The pids stopped."""
    stopped: set[int] = set()
    for _ in range(100):
        members = cgroup_members(cgroups[0]) if cgroups else [pid, *descendants([pid])]
        new = [p for p in members if p not in stopped]
        if not new:
            break
        for p in new:
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGSTOP)
            stopped.add(p)
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGSTOP)
    # A signal is delivered when its process next runs: wait until each has stopped.
    end = time.monotonic() + wait
    delay = 0.0005
    waiting = [p for p in stopped if proc_state(p) not in (None, "T", "t", "Z", "X")]
    while waiting and time.monotonic() < end:
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
        waiting = [p for p in waiting if proc_state(p) not in (None, "T", "t", "Z", "X")]
    return sorted(stopped)
