"""A replica's death noticed as it starts to exit, not once its memory is gone.

A process that dies closes its pipes, and its pidfd turns readable, only
after the kernel has torn its memory down: for a replica, a fork of the
zygote sharing its pages, that takes 1-3 ms on a small VM, during which the
caller waits for nothing.  The kernel does one thing for a dying process
before that teardown: it walks the robust futex list of each of its threads
(``exit_mm`` -> ``exit_robust_list``), marks every futex the thread still
holds ``FUTEX_OWNER_DIED`` and wakes one waiter.  So:

- For each replica about to start, the supervisor's :class:`DeathWatch`
  makes a memfd of one page, sealed at that size, with a process-shared
  robust mutex in it, and maps it.  The memfd goes to the replica with its
  pipes (the supervisor keeps only its mapping); the replica maps it, locks
  the mutex in its main thread (:func:`hold`) and closes it with every
  other inherited fd before any user code runs.  Once it said Ready, the
  supervisor checks that the mutex's word is its pid and marks it as
  waited for.
- Threads of the supervisor wait on up to 127 replicas each with
  ``futex_waitv(2)`` (Linux 5.16), with the GIL released; a word that
  changed is reported to the replica's loop (``call_soon_threadsafe``).
- The replica's :class:`~agentrt.process.AgentProcess` trusts none of it: it
  checks in ``/proc`` that every thread of the process is exiting
  (``PF_EXITING``: no user code runs in it again, so nothing more can reach
  its pipe) and reads the exit status the kernel already set.  Only then is
  it settled: what is in its pipe is read, its callers get their error, and
  its replacement starts while the kernel still frees its memory.

A replica can reach only its own page: a memfd of its own, never reused,
which cannot grow (a mapping grown with ``mremap`` faults past its end).
At worst it fakes its own death, which the check in ``/proc`` refuses; a
page that wakes its waiter without its word changing, or whose word changed
without a death, is dropped (that replica's death is then noticed the usual
way).  The memfd cannot shrink either, so no process holding it can make
the supervisor's mapping fault.  Where something is missing (no memfd, no
``futex_waitv`` as under some seccomp profiles or gVisor, a libc whose robust
mutex keeps its owner elsewhere than glibc does) no page is handed out.
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

__all__ = ["DeathWatch", "hold"]

PAGE = os.sysconf("SC_PAGE_SIZE")
#: futex_waitv(2) takes at most 128 futexes: one is the thread's control word
_PER_THREAD = 127
#: a page that wakes its thread this many times with its word unchanged is dropped
_SPURIOUS = 3

_FUTEX_WAITERS = 0x80000000
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
    # trylock: a replica never waits for its mutex, whatever is in its page
    _lock: Callable[[int], int] | None = _libc.pthread_mutex_trylock
    _lock.argtypes = [ctypes.c_ulong]  # type: ignore[union-attr]
    _init = _libc.pthread_mutex_init
    _init.argtypes = [ctypes.c_ulong, ctypes.c_void_p]
    _libc.pthread_mutexattr_init, _libc.pthread_mutexattr_setrobust  # noqa: B018
except AttributeError:
    _lock = None
_MAP_SHARED = 0x01
_MAP_FAILED = (1 << 64) - 1

#: the address of the replica's own page, mapped for as long as it lives
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


def hold(fd: int) -> None:
    """In a replica, before user code: map the page of ``fd`` (the memfd the
    supervisor sent with its pipes) and lock the robust mutex in it, so that
    the kernel marks it as the replica exits.  The caller closes ``fd``
    afterwards (with every fd not kept).

    Two calls and nothing else: in a process forked from the zygote, every
    object touched copies the page it lives on (its reference count is
    written), and this runs in every new replica.  The supervisor checks the
    owner and marks the mutex as waited for (:meth:`DeathWatch.arm`).
    """
    global _held
    if fd < 0 or _held or _lock is None:
        return
    addr = _mmap(0, PAGE, _PROT_RW, _MAP_SHARED, fd, 0)
    if addr != _MAP_FAILED and _lock(addr) == 0:
        _held = addr


class _Armed:
    """A page watched: the word its replica left, and how to report it."""

    __slots__ = ("report", "spurious", "val")

    def __init__(self, val: int, report: Callable[[], object]) -> None:
        self.val = val
        self.report = report
        self.spurious = 0


class _Waiter(threading.Thread):
    """Waits on up to 127 pages (by address); reports those whose word changed."""

    def __init__(self, watch: DeathWatch, index: int) -> None:
        super().__init__(name=f"agentrt-deathwatch-{index}", daemon=True)
        self.watch = watch
        self.ctrl = ctypes.c_uint32(0)
        self.armed: dict[int, _Armed] = {}
        self.stop = False

    def poke(self) -> None:
        """Make the thread wait again, on its pages as they are now (lock held)."""
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
            for i, (addr, armed) in enumerate(items, 1):
                entries[i].val = armed.val
                entries[i].uaddr = addr
                entries[i].flags = _FUTEX2_SIZE_U32
            rc, err = _waitv(entries, len(items) + 1)
            # (EFAULT: a page given back, unmapped, since the list was made)
            if rc == 0 or err in (errno.EINTR, errno.EFAULT):
                continue
            if rc < 0 and err != errno.EAGAIN:
                watch.failed(f"futex_waitv: {os.strerror(err)}")
                return
            self._scan(items, rc)

    def _scan(self, items: list[tuple[int, _Armed]], woken: int) -> None:
        watch = self.watch
        gone: list[Callable[[], object]] = []
        with watch.lock:
            for i, (addr, armed) in enumerate(items, 1):
                if self.armed.get(addr) is not armed:
                    continue  # disarmed meanwhile (and maybe unmapped: not read)
                if _word(addr) != armed.val:
                    del self.armed[addr]
                    watch.forget(addr)
                    watch.reported += 1
                    gone.append(armed.report)
                elif i == woken:
                    armed.spurious += 1
                    if armed.spurious >= _SPURIOUS:
                        del self.armed[addr]  # woken for nothing: not watched any more
                        watch.forget(addr)
        for report in gone:
            with contextlib.suppress(RuntimeError):  # (its loop is closed)
                report()


def _word(addr: int) -> int:
    return ctypes.c_uint32.from_address(addr).value


class DeathWatch:
    """Pages for replicas' robust futexes, and the threads that wait on them.

    Used from the event loop's thread (``take``, ``arm``, ``disarm``,
    ``give_back``, ``close``); reports reach the loop through the ``report``
    given to :meth:`arm` (``call_soon_threadsafe``).
    """

    def __init__(self) -> None:
        self.reported = 0  #: words seen changed (each checked by its AgentProcess)
        self.noticed = 0  #: deaths settled early (counted by the AgentProcess)
        self.why_off = ""  #: why no page is handed out, if none is
        self.lock = threading.Lock()
        self._attr = ctypes.create_string_buffer(64)
        self._pages: set[int] = set()  # mapped here: address
        self._waiters: list[_Waiter] = []
        self._of: dict[int, _Waiter] = {}  # armed page -> its waiter
        self._poke: set[_Waiter] = set()
        self._closed = False
        try:
            self._probe()
        except (OSError, AttributeError) as exc:
            self.why_off = f"{type(exc).__name__}: {exc}"

    def _probe(self) -> None:
        if _NR is None:
            raise OSError(errno.ENOSYS, f"no futex_waitv number for {platform.machine()}")
        probe = (_Waitv * 1)()
        word = ctypes.c_uint32(1)
        probe[0].val, probe[0].uaddr = 0, ctypes.addressof(word)
        probe[0].flags = _FUTEX2_SIZE_U32 | _FUTEX2_PRIVATE
        rc, err = _waitv(probe, 1)
        if rc >= 0 or err != errno.EAGAIN:  # (the value differs: EAGAIN where it works)
            raise OSError(err, f"futex_waitv: {os.strerror(err)}")
        if _lock is None:
            raise OSError(errno.ENOSYS, "no pthread_mutex_trylock in this libc")
        attr = self._attr
        if (
            _libc.pthread_mutexattr_init(attr)
            or _libc.pthread_mutexattr_setpshared(attr, 1)
            or _libc.pthread_mutexattr_setrobust(attr, 1)
        ):
            raise OSError(errno.EINVAL, "no process-shared robust mutexes in this libc")
        # The owner must be the mutex's first word (glibc's layout): the
        # futex the kernel marks, and the one watched.
        mutex = ctypes.create_string_buffer(64)
        addr = ctypes.addressof(mutex)
        if _init(addr, attr) or _lock(addr):
            raise OSError(errno.EINVAL, "a robust mutex could not be locked")
        owner = _word(addr)
        _libc.pthread_mutex_unlock(ctypes.c_ulong(addr))
        if owner != threading.get_native_id():
            raise OSError(errno.EINVAL, "this libc keeps a mutex's owner elsewhere")
        fd, addr = self._make()  # (memfd, seals and mmap work here)
        os.close(fd)
        _munmap(addr, PAGE)

    @property
    def on(self) -> bool:
        return not self.why_off and not self._closed

    def _make(self) -> tuple[int, int]:
        fd = os.memfd_create("agentrt-death", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, PAGE)
            seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            addr = _map_shared(fd, PAGE, 0)
        except BaseException:
            os.close(fd)
            raise
        if _init(addr, self._attr):
            _munmap(addr, PAGE)
            os.close(fd)
            raise OSError(errno.EINVAL, "pthread_mutex_init failed")
        return fd, addr

    def forget(self, addr: int) -> None:
        """A waiter no longer watches the page at ``addr`` (lock held)."""
        self._of.pop(addr, None)

    def watched(self, addr: int) -> bool:
        return addr in self._of

    def failed(self, why: str) -> None:
        """A waiter cannot wait (from its thread): hand out no more pages."""
        self.why_off = why

    def take(self) -> tuple[int, int] | None:
        """A page for a replica about to start: ``(memfd, its address here)``.
        The memfd goes to the replica and is then closed here; the address
        is the page's until :meth:`give_back`.  None: no page."""
        if not self.on:
            return None
        try:
            fd, addr = self._make()
        except OSError:
            return None
        self._pages.add(addr)
        return fd, addr

    def arm(self, addr: int, pid: int, report: Callable[[], object]) -> bool:
        """Watch the page at ``addr``, whose replica ``pid`` said Ready (so it
        holds its mutex): ``report`` is called from a waiter thread once its
        word changes.

        The word must be the replica's main thread's id and nothing else
        (glibc's layout, and a replica in our pid namespace); it is then
        marked as waited for, so that the kernel wakes a waiter when it marks
        the owner dead.  (Should the replica die between the read and the
        write, the mark hides the kernel's: that death is noticed the usual
        way.)  The waiter learns of it at the end of the loop's iteration:
        replicas that said Ready in one iteration wake it once."""
        if not self.on or addr not in self._pages or _word(addr) != pid:
            return False  # it could not hold its mutex, or died: noticed the usual way
        word = pid | _FUTEX_WAITERS
        ctypes.c_uint32.from_address(addr).value = word
        with self.lock:
            waiter = next((w for w in self._waiters if len(w.armed) < _PER_THREAD), None)
            if waiter is None:
                waiter = _Waiter(self, len(self._waiters))
                try:
                    waiter.start()
                except RuntimeError:  # (no thread to be had: noticed the usual way)
                    return False
                self._waiters.append(waiter)
            waiter.armed[addr] = _Armed(word, report)
            self._of[addr] = waiter
            if not self._poke:
                asyncio.get_running_loop().call_soon(self._commit)
            self._poke.add(waiter)
        return True

    def _commit(self) -> None:
        with self.lock:
            for waiter in self._poke:
                waiter.poke()
            self._poke.clear()

    def disarm(self, addr: int) -> None:
        """Stop watching the page at ``addr``.  Its waiter is not woken for
        that: it drops the page the next time it wakes (a change to its word
        is not reported)."""
        with self.lock:
            waiter = self._of.pop(addr, None)
            if waiter is not None:
                waiter.armed.pop(addr, None)

    def give_back(self, addr: int) -> None:
        """The page's replica is reaped: unmap it (its memfd goes with the
        last process that had it open or mapped)."""
        with self.lock:  # (a waiter reads a page's word only with it held)
            waiter = self._of.pop(addr, None)
            if waiter is not None:
                waiter.armed.pop(addr, None)
            if addr in self._pages:
                self._pages.discard(addr)
                _munmap(addr, PAGE)

    def close(self) -> None:
        """Stop the waiters and unmap every page (idempotent)."""
        with self.lock:
            self._closed = True
            waiters, self._waiters = self._waiters, []
            self._of.clear()
            self._poke.clear()
            for w in waiters:
                w.stop = True
                w.poke()
        for w in waiters:
            w.join()
        with self.lock:
            for addr in self._pages:
                _munmap(addr, PAGE)
            self._pages.clear()
