"""A replica's death noticed as it starts to exit, not once its memory is gone.

A process that dies closes its pipes, and its pidfd turns readable, only
after the kernel has torn its memory down: for a replica, a fork of the
zygote sharing its pages, that takes 1-3 ms on a small VM, during which the
caller waits for nothing.  The kernel does one thing for a dying process
before that teardown: it walks the robust futex list of each of its threads
(``exit_mm`` -> ``exit_robust_list``), marks every futex the thread still
holds ``FUTEX_OWNER_DIED`` and wakes one waiter.  So:

- The supervisor's :class:`DeathWatch` owns a sealed memfd of one page per
  slot, each with a process-shared robust mutex.  A replica gets a slot in
  its ``Boot`` (``death_slot``), maps only that page (the memfd is inherited
  from the zygote and closed before any user code runs) and locks the mutex
  in its main thread (:func:`hold_slot`); once it said Ready, the supervisor
  checks that the mutex's word is its pid and marks it as waited for.
- Threads of the supervisor wait on up to 127 slots each with
  ``futex_waitv(2)`` (Linux 5.16), with the GIL released; a word that
  changed is reported to the replica's loop (``call_soon_threadsafe``).
- The replica's :class:`~agentrt.process.AgentProcess` trusts none of it: it
  checks in ``/proc`` that every thread of the process is exiting
  (``PF_EXITING``: no user code runs in it again, so nothing more can reach
  its pipe) and reads the exit status the kernel already set.  Only then is
  it settled: what is in its pipe is read, its callers get their error, and
  its replacement starts while the kernel still frees its memory.

A replica can write only its own page: at worst it fakes its own death,
which the check in ``/proc`` refuses; a slot that wakes without its word
changing, or whose word changed without a death, is dropped (that replica's
death is then noticed the usual way).  The memfd is sealed against
shrinking, so no process holding it can make the supervisor's mapping fault.
Where something is missing (no memfd, no ``futex_waitv`` as under some
seccomp profiles or gVisor, a libc whose robust mutex keeps its owner
elsewhere) slots are simply not handed out.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import os
import platform
import threading
from collections.abc import Callable

__all__ = ["DeathWatch", "hold_slot", "inherited_fd"]

PAGE = os.sysconf("SC_PAGE_SIZE")
#: slots (pages) in the memfd: replicas alive at once with an early notice
CAPACITY = 8192
#: futex_waitv(2) takes at most 128 futexes: one is the thread's control word
_PER_THREAD = 127
#: a slot that wakes its thread this many times with its word unchanged is dropped
_SPURIOUS = 3

_FUTEX_WAITERS = 0x80000000
_FUTEX_OWNER_DIED = 0x40000000
_FUTEX_TID_MASK = 0x3FFFFFFF
_FUTEX2_SIZE_U32 = 0x02
_FUTEX2_PRIVATE = 128
_FUTEX_WAKE_PRIVATE = 1 | 128
#: (futex, futex_waitv) system call numbers
_SYSCALLS = {"x86_64": (202, 449), "aarch64": (98, 449)}
_NR = _SYSCALLS.get(platform.machine())

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
# mmap(2) itself, not the mmap module: one extension module fewer in the
# zygote (replicas import what they use on demand).  Only the argument types
# _linux's prctl has (c_int, c_ulong): a replica has called through them
# already, and a call that touches no new ctypes objects copies fewer of the
# pages it shares with the zygote.
_mmap = _libc.mmap
_mmap.restype = ctypes.c_ulong
_mmap.argtypes = [
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_ulong,  # (off_t: 64 bits on the machines of _SYSCALLS)
]
_munmap = _libc.munmap
_munmap.argtypes = [ctypes.c_ulong, ctypes.c_ulong]
_PROT_RW = 0x1 | 0x2
try:  # (in libc since glibc 2.34; in libpthread, loaded by the interpreter, before)
    _lock: Callable[[int], int] | None = _libc.pthread_mutex_lock
    _lock.argtypes = [ctypes.c_ulong]  # type: ignore[union-attr]
    _init = _libc.pthread_mutex_init
    _init.argtypes = [ctypes.c_ulong, ctypes.c_void_p]
    _libc.pthread_mutexattr_init, _libc.pthread_mutexattr_setrobust  # noqa: B018
except AttributeError:
    _lock = None
_MAP_SHARED = 0x01
_MAP_FAILED = (1 << 64) - 1

#: the memfd as a replica inherits it (set by the zygote; -1: none)
inherited_fd = -1
#: the address of the replica's own slot page, mapped for as long as it lives
_held = 0


class _Waitv(ctypes.Structure):
    _fields_ = [
        ("val", ctypes.c_uint64),
        ("uaddr", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
    ]


def _waitv(entries: ctypes.Array[_Waitv], n: int) -> tuple[int, int]:
    """futex_waitv(2) without a timeout: ``(index woken or -1, errno)``."""
    assert _NR is not None
    rc = _syscall(_NR[1], entries, n, 0, None, 0)
    return rc, (ctypes.get_errno() if rc < 0 else 0)


def _wake_private(addr: int) -> None:
    assert _NR is not None
    _syscall(_NR[0], ctypes.c_void_p(addr), _FUTEX_WAKE_PRIVATE, 1, None, None, 0)


def _map_shared(fd: int, size: int, offset: int) -> int:
    """mmap(2) of ``fd`` shared, read-write; its address (OSError if refused)."""
    addr = _mmap(0, size, _PROT_RW, _MAP_SHARED, fd, offset)
    if addr == _MAP_FAILED:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(addr)


def hold_slot(slot: int) -> None:
    """In a replica, before user code: lock the robust mutex the supervisor
    made in page ``slot`` of the inherited memfd, so that the kernel marks it
    as the replica exits.  The caller closes the memfd afterwards (with every
    fd not kept).

    Two calls and nothing else: in a process forked from the zygote, every
    object touched copies the page it lives on (its reference count is
    written), and this runs in every new replica.  The supervisor checks the
    owner and marks the mutex as waited for (:meth:`DeathWatch.arm`).
    """
    global _held
    if slot < 0 or inherited_fd < 0 or _held or _lock is None:
        return
    addr = _mmap(0, PAGE, _PROT_RW, _MAP_SHARED, inherited_fd, slot * PAGE)
    if addr != _MAP_FAILED and _lock(addr) == 0:
        _held = addr


class _Armed:
    """A slot watched: the word its replica left, and how to report it."""

    __slots__ = ("report", "spurious", "val")

    def __init__(self, val: int, report: Callable[[], object]) -> None:
        self.val = val
        self.report = report
        self.spurious = 0


class _Waiter(threading.Thread):
    """Waits on up to 127 slots; reports the ones whose word changed."""

    def __init__(self, watch: DeathWatch, index: int) -> None:
        super().__init__(name=f"agentrt-deathwatch-{index}", daemon=True)
        self.watch = watch
        self.ctrl = ctypes.c_uint32(0)
        self.armed: dict[int, _Armed] = {}
        self.stop = False

    def poke(self) -> None:
        """Make the thread wait again, on its slots as they are now (lock held)."""
        self.ctrl.value = (self.ctrl.value + 1) & 0xFFFFFFFF
        _wake_private(ctypes.addressof(self.ctrl))

    def run(self) -> None:
        watch = self.watch
        while True:
            with watch.lock:
                if self.stop:
                    return
                items = list(self.armed.items())
                entries = (_Waitv * (len(items) + 1))()
                entries[0].val = self.ctrl.value
            entries[0].uaddr = ctypes.addressof(self.ctrl)
            entries[0].flags = _FUTEX2_SIZE_U32 | _FUTEX2_PRIVATE
            for i, (slot, armed) in enumerate(items, 1):
                entries[i].val = armed.val
                entries[i].uaddr = watch.word_address(slot)
                entries[i].flags = _FUTEX2_SIZE_U32
            rc, err = _waitv(entries, len(items) + 1)
            if rc == 0 or err == errno.EINTR:
                continue
            if rc < 0 and err != errno.EAGAIN:
                watch.failed(f"futex_waitv: {os.strerror(err)}")
                return
            self._scan(items, rc)

    def _scan(self, items: list[tuple[int, _Armed]], woken: int) -> None:
        watch = self.watch
        gone: list[Callable[[], object]] = []
        with watch.lock:
            for i, (slot, armed) in enumerate(items, 1):
                if self.armed.get(slot) is not armed:
                    continue  # disarmed (or armed anew) meanwhile
                if watch.word(slot) != armed.val:
                    del self.armed[slot]
                    watch.reported += 1
                    gone.append(armed.report)
                elif i == woken:
                    armed.spurious += 1
                    if armed.spurious >= _SPURIOUS:
                        del self.armed[slot]  # woken for nothing: not watched any more
        for report in gone:
            with contextlib.suppress(RuntimeError):  # (its loop is closed)
                report()


class DeathWatch:
    """Slots for replicas' robust futexes, and the threads that wait on them.

    Used from the event loop's thread (``take``, ``arm``, ``disarm``,
    ``give_back``, ``close``); reports reach the loop through the ``report``
    given to :meth:`arm` (``call_soon_threadsafe``).
    """

    def __init__(self) -> None:
        self.fd = -1
        self.reported = 0  #: words seen changed (each checked by its AgentProcess)
        self.noticed = 0  #: deaths settled early (counted by the AgentProcess)
        self.why_off = ""  #: why no slots are handed out, if none are
        self.lock = threading.Lock()
        self._base = 0  # the memfd's mapping (0: none)
        self._attr = ctypes.create_string_buffer(0)
        self._free: list[int] = []
        self._next = 0
        self._waiters: list[_Waiter | None] = []
        self._poke: set[_Waiter] = set()
        try:
            self._open()
        except OSError as exc:
            self.why_off = f"{type(exc).__name__}: {exc}"
            self.close()

    def _open(self) -> None:
        if _NR is None:
            raise OSError(errno.ENOSYS, f"no futex_waitv number for {platform.machine()}")
        probe = (_Waitv * 1)()
        word = ctypes.c_uint32(1)
        probe[0].val, probe[0].uaddr = 0, ctypes.addressof(word)
        probe[0].flags = _FUTEX2_SIZE_U32 | _FUTEX2_PRIVATE
        rc, err = _waitv(probe, 1)
        if rc >= 0 or err != errno.EAGAIN:  # (the value differs: EAGAIN where it works)
            raise OSError(err, f"futex_waitv: {os.strerror(err)}")
        self.fd = os.memfd_create("agentrt-deaths", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        os.ftruncate(self.fd, CAPACITY * PAGE)
        fcntl.fcntl(
            self.fd,
            fcntl.F_ADD_SEALS,
            fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL,
        )
        self._base = _map_shared(self.fd, CAPACITY * PAGE, 0)
        if _lock is None:
            raise OSError(errno.ENOSYS, "no pthread_mutex_lock in this libc")
        # Every slot's mutex is made here: process-shared, robust.
        attr = self._attr = ctypes.create_string_buffer(64)
        if (
            _libc.pthread_mutexattr_init(attr)
            or _libc.pthread_mutexattr_setpshared(attr, 1)
            or _libc.pthread_mutexattr_setrobust(attr, 1)
        ):
            raise OSError(errno.EINVAL, "no process-shared robust mutexes in this libc")

    @property
    def on(self) -> bool:
        return self._base != 0 and not self.why_off

    def word_address(self, slot: int) -> int:
        return self._base + slot * PAGE

    def word(self, slot: int) -> int:
        return ctypes.c_uint32.from_address(self._base + slot * PAGE).value

    def failed(self, why: str) -> None:
        """A waiter cannot wait (from its thread): hand out no more slots."""
        self.why_off = why

    def take(self) -> int:
        """A slot for a replica about to start (its page cleared); -1: none."""
        if not self.on:
            return -1
        if self._free:
            slot = self._free.pop()
        elif self._next < CAPACITY:
            slot, self._next = self._next, self._next + 1
        else:
            return -1
        addr = self._base + slot * PAGE
        ctypes.memset(addr, 0, 64)
        if _init(addr, self._attr):
            self._free.append(slot)
            return -1
        return slot

    def arm(self, slot: int, pid: int, report: Callable[[], object]) -> bool:
        """Watch ``slot``, whose replica ``pid`` said Ready (so it holds its
        mutex): ``report`` is called from a waiter thread once its word changes.

        The word must be the replica's main thread's id and nothing else
        (glibc's layout, and a replica in our pid namespace); it is then
        marked as waited for, so that the kernel wakes a waiter when it marks
        the owner dead.  (Should the replica die between the read and the
        write, the mark hides the kernel's: that death is noticed the usual
        way, and the slot dropped then.)  The waiter learns of it at the end
        of the loop's iteration: replicas that said Ready in one iteration
        wake it once."""
        if not self.on or self.word(slot) != pid:
            return False  # it could not hold its mutex, or died: noticed the usual way
        word = pid | _FUTEX_WAITERS
        ctypes.c_uint32.from_address(self.word_address(slot)).value = word
        index = slot // _PER_THREAD
        with self.lock:
            while len(self._waiters) <= index:
                self._waiters.append(None)
            waiter = self._waiters[index]
            if waiter is None:
                waiter = self._waiters[index] = _Waiter(self, index)
                waiter.armed[slot] = _Armed(word, report)
                waiter.start()
                return True
            waiter.armed[slot] = _Armed(word, report)
            if not self._poke:
                asyncio.get_running_loop().call_soon(self._commit)
            self._poke.add(waiter)
        return True

    def _commit(self) -> None:
        with self.lock:
            for waiter in self._poke:
                waiter.poke()
            self._poke.clear()

    def disarm(self, slot: int) -> None:
        """Stop watching ``slot``.  Its waiter is not woken for that: it drops
        the slot the next time it wakes (a change to its word is not reported)."""
        index = slot // _PER_THREAD
        with self.lock:
            waiter = self._waiters[index] if index < len(self._waiters) else None
            if waiter is not None:
                waiter.armed.pop(slot, None)

    def give_back(self, slot: int) -> None:
        """The slot's replica is reaped: its page may serve another."""
        self.disarm(slot)
        if self.on:
            self._free.append(slot)

    def close(self) -> None:
        """Stop the waiters, unmap, close the memfd (idempotent)."""
        with self.lock:
            waiters = [w for w in self._waiters if w is not None]
            self._waiters = []
            self._poke.clear()
            for w in waiters:
                w.stop = True
                w.poke()
        for w in waiters:
            w.join()
        if self._base:
            _munmap(self._base, CAPACITY * PAGE)
            self._base = 0
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
