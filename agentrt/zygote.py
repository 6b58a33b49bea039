"""The zygote: a single-threaded process that forks agent replicas on request.

It is started once per supervisor (and once per env allowlist in use) as a
fresh interpreter (fork and exec, so it never inherits the supervisor's
threads nor re-imports the user's ``__main__``), imports agentrt and the
``preload`` modules, freezes the GC so forked children share those pages,
and then serves :class:`~agentrt.protocol.Fork` requests on a
``SOCK_SEQPACKET`` socket.  Each request carries the child's three pipe
ends as SCM_RIGHTS; the reply carries a pidfd of the new child, opened
before the zygote could possibly reap it (no pid-reuse race).

The zygote is the replicas' parent (and a child subreaper, so orphaned
grandchildren come back to it): it reports every exit, the raw status and
CPU time, while the child is still a zombie, and then reaps it.  It dies
with the supervisor (``PR_SET_PDEATHSIG``), and its replicas die with it.

:class:`ZygoteClient` is the supervisor's side of that socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import importlib
import os
import select
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NoReturn

import msgspec

from agentrt import _linux
from agentrt.protocol import (
    Boot,
    Fork,
    Forked,
    ForkFailed,
    Reaped,
    SpareForked,
    Spares,
    SpareTaken,
    ZygoteHello,
    ZygoteReply,
    ZygoteRequest,
)

__all__ = ["ZygoteClient", "zygote_main"]

_DGRAM = 1 << 16
#: fork requests read from the socket before any is forked, at most
_FORK_BATCH = 8


def zygote_main(
    sock: socket.socket,
    preload: list[str],
    sys_path: list[str],
    parent: int,
    rundir: str = "",
    spares: int = 0,
    spare_cgroups: list[str] | None = None,
    fork_hooks: list[dict[str, Callable[[], object]]] | None = None,
    imported: list[str] | None = None,
    spares_min: int = 0,
) -> None:
    """Body of the zygote process.

    ``fork_hooks`` are the ``os.register_at_fork`` calls made in this process
    so far, and it goes on recording them (``_main`` wraps the function
    before anything is imported; ``imported`` were the modules then): where
    all are known, replicas are forked without the interpreter's own
    (:func:`_fork`).
    """
    global _parent, _rundir, _parent_fd, _spare_target, _spare_bound, _spare_cgroups, _zygote
    global _spares_min
    _parent, _rundir, _spare_bound, _zygote = parent, rundir, spares, os.getpid()
    _spares_min = spares_min
    _spare_target = _spares_first()
    _spare_cgroups = spare_cgroups or []
    global _name
    with contextlib.suppress(OSError):
        _name = _linux.get_name()
    with contextlib.suppress(OSError):
        _parent_fd = os.pidfd_open(parent)
    # SIGTERM, not SIGKILL, when the supervisor dies: the handler takes every
    # replica's process group down before the zygote goes.
    signal.signal(signal.SIGTERM, lambda *_: _die())
    _linux.set_pdeathsig(signal.SIGTERM)
    if os.getppid() != parent:
        _die()
    with contextlib.suppress(OSError):
        _linux.set_child_subreaper()
    # The zygote is the one process the terminal's Ctrl-C must not reach on its
    # own: the supervisor decides when replicas stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    encoder = msgspec.msgpack.Encoder()
    decoder = msgspec.msgpack.Decoder(ZygoteRequest)
    for p in reversed(sys_path):
        if p not in sys.path:
            sys.path.insert(0, p)
    error = ""
    import agentrt.worker  # preloaded for every replica

    for name in preload:
        try:
            importlib.import_module(name)
        except BaseException as exc:
            error = f"preload {name!r} failed: {type(exc).__name__}: {exc}"
            break
    with contextlib.suppress(ConnectionError):  # (the supervisor gone: the loop says so)
        sock.sendall(encoder.encode(ZygoteHello(os.getpid(), error)))
    if error:
        os._exit(1)
    agentrt.worker.prepare()
    if fork_hooks is not None and _lean_possible(imported or []):
        global _lean
        _lean = _LeanFork(fork_hooks)

    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    own = (wake_r, wake_w)
    announced = 0
    while True:
        if announced != _spare_target:  # the supervisor lets go of spares over it
            with contextlib.suppress(OSError):
                sock.sendall(encoder.encode(Spares(_spare_target)))
            announced = _spare_target
        # Spares are forked one at a time, while nothing else waits, and only
        # once no replica was asked for in a moment (``_refill_after_ms``): a
        # death is usually followed by the request for its replacement, which
        # a fork in progress would hold up.  Exits reported meanwhile do not
        # put the refill off, or a busy pool would never get its spares back.
        now = time.monotonic()
        refill_at = max(_last_request + _refill_after_ms / 1e3, _busy_until)
        if len(_spares) < _spare_target:
            if now >= refill_at and not poller.poll(0):
                _fork_spare(sock, encoder, own)
                continue
            timeout: float | None = max(0.0, refill_at - now) * 1e3
        elif _spare_target > _spares_first():
            timeout = max(0.0, _last_request + _SPARE_IDLE_S - now) * 1e3
        else:
            timeout = None
        try:
            events = poller.poll(timeout)
        except InterruptedError:
            continue
        if not events:
            idle = time.monotonic() >= _last_request + _SPARE_IDLE_S
            if idle and len(_spares) >= _spare_target > _spares_first():
                _shrink_spares()
            continue
        for fd, _ev in events:
            if fd == wake_r:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
                _reap(sock, encoder)
                continue
            # The requests waiting, read before forking any: forked one after
            # another, the zygote writes to few of its pages between forks
            # (each fork makes them all copy-on-write again).
            batch: list[tuple[Fork, list[int]]] = []
            flags = 0
            while len(batch) < _FORK_BATCH:
                try:
                    data, fds = _linux.recv_with_fds(sock, _DGRAM, 8, flags)
                except (BlockingIOError, InterruptedError):
                    break
                except ConnectionError:  # ECONNRESET: it closed with our messages unread
                    data, fds = b"", []
                flags = socket.MSG_DONTWAIT
                if not data:
                    _die(supervisor_gone=True)  # it closed the socket (or exited)
                try:
                    req = decoder.decode(data)
                except msgspec.DecodeError:
                    for f in fds:
                        os.close(f)
                    continue
                if isinstance(req, SpareTaken):
                    for f in fds:
                        os.close(f)
                    _spares.discard(req.pid)
                    if req.cgroups and req.pid in _forked:
                        _cgroups[req.pid] = req.cgroups
                    _demand(served_by_spare=True)
                    continue
                _demand(served_by_spare=False)
                batch.append((req, fds))
            if batch:
                _fork_batch(sock, encoder, batch)


def _spare_failed() -> None:
    """A spare could not be forked, or died before serving: wait longer before
    the next (up to a second), so a machine out of processes or memory is not
    asked for one every few milliseconds."""
    global _refill_after_ms
    _refill_after_ms = min(_REFILL_MAX_MS, _refill_after_ms * 2)


def busy_after_start(busy_until: float, now: float) -> float:
    """Until when the replicas started so far, and one more started ``now``,
    are expected to keep the cores busy: each for ``_START_CPU_MS``, one
    after another from ``now`` at the earliest (the time of starts long
    past has passed), and never more than ``_REFILL_MAX_MS`` ahead."""
    return min(now + _REFILL_MAX_MS / 1e3, max(busy_until, now) + _START_CPU_MS / 1e3)


def _spares_first() -> int:
    """How many spares the zygote keeps before any demand (and never fewer):
    4, or ``[supervisor] spares_min`` where more; never more than the bound."""
    return min(_spare_bound, max(_SPARES_FIRST, _spares_min))


def _shrink_spares() -> None:
    """No request for a while: halve the spares kept (never below the first few).

    The supervisor, which holds the spares, lets the ones over the new
    target go (it closes their sockets: they exit), once told."""
    global _spare_target, _last_request
    _spare_target = max(_spares_first(), _spare_target // 2)
    _last_request = time.monotonic()


def _demand(served_by_spare: bool) -> None:
    """A request came: one no spare was left for doubles the spares kept, up to
    the bound (``[supervisor] spares``)."""
    global _spare_target, _last_request, _refill_after_ms, _busy_until
    _last_request = time.monotonic()
    _busy_until = busy_after_start(_busy_until, _last_request)
    if served_by_spare:
        _refill_after_ms = _REFILL_AFTER_MS  # spares work: refill promptly again
    else:
        _spare_target = min(_spare_bound, max(1, _spare_target * 2))


def _fork_spare(sock: socket.socket, encoder: Any, own: tuple[int, int]) -> None:
    """Fork a spare: a child that waits for the Fork request it will serve.

    It becomes a replica only then (``child_main``: sandbox, limits and the
    entry, as any replica), and it serves one request: no state of one agent
    can reach another through it.  It dies with the zygote.  Its socket goes
    to the supervisor (``SpareForked``), which sends it the request itself:
    starting a replica from a spare takes no round trip through the zygote.
    """
    try:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    except OSError:
        _spare_failed()
        return
    try:
        pid = _fork()
    except OSError:
        ours.close()
        theirs.close()
        _spare_failed()
        return
    if pid == 0:  # the spare
        try:
            # Named first, so that ``ps`` tells spares from replicas (until
            # its setsid below a spare is also in the zygote's session).
            with contextlib.suppress(OSError):
                _linux.set_name(_SPARE_NAME)
            _linux.default_signals(_SIGTERM, unblock=False)
            _linux.set_pdeathsig(signal.SIGKILL)
            if os.getppid() != _zygote:
                os._exit(0)
            # (the zygote's sets of children stay as they are: a child never
            # reads them, and emptying them would copy their pages)
            sock.close()
            ours.close()
            for f in own:
                os.close(f)
            # While nobody waits: groups of its own (moving a process between
            # cgroups can take milliseconds, an RCU grace period; renaming its
            # group later is quick), and the steps every replica takes; then
            # it says it is ready, and waits for its request.
            import agentrt.worker
            from agentrt.sandbox.confine import (
                join_spare_cgroups,
                make_spare_workdir,
                waiting_in,
            )

            waiting_in(join_spare_cgroups(_spare_cgroups, os.getpid()))
            if _rundir:
                make_spare_workdir(_rundir, os.getpid())
            # A session of its own now, as every replica has: the kernel makes
            # it a scheduling group too, which can take most of a millisecond
            # (``_isolate``'s own setsid then finds nothing left to do).
            with contextlib.suppress(OSError):
                os.setsid()
            agentrt.worker.prepare_spare()
            theirs.send(_SPARE_READY)
            data, fds = _linux.recv_with_fds(theirs, _DGRAM, 8)
            theirs.close()
            if not data or len(fds) not in (3, 4):  # (4: with its DeathWatch memfd)
                os._exit(0)
            with contextlib.suppress(OSError):
                _linux.set_name(_name)  # a replica is named as the zygote is
            req = msgspec.msgpack.decode(data, type=Fork)
            from agentrt.worker import child_main

            child_main(req.boot, *fds)
        finally:
            os._exit(70)
    theirs.close()
    # Reaped (and reported) as any replica: the supervisor may have made it one.
    _forked.add(pid)
    _spare_born.add(pid)
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        ours.close()
        return  # it died already
    try:
        _linux.send_with_fds(sock, encoder.encode(SpareForked(pid)), [pidfd, ours.fileno()])
        _spares.add(pid)
    except OSError:
        pass  # no supervisor to hold it: it exits at EOF of its socket
    finally:
        os.close(pidfd)
        ours.close()


def _fork_batch(sock: socket.socket, encoder: Any, batch: list[tuple[Fork, list[int]]]) -> None:
    """Fork a replica for each request, then tell the supervisor of each."""
    ready: list[tuple[Fork, list[int]]] = []
    for req, fds in batch:
        if len(fds) in (3, 4):  # its pipes, and its DeathWatch memfd if any
            ready.append((req, fds))
            continue
        for f in fds:
            os.close(f)
        _fork_failed(sock, encoder, req, f"expected 3 or 4 fds, got {len(fds)}")
    forked: list[int | OSError] = []
    # Where no at-fork hook runs, nothing but the fork comes between two forks
    # (each would make the zygote's pages copy-on-write again): one look for a
    # second thread does for the whole batch.
    alone = _lean.alone() if _lean is not None and _lean.quiet else None
    for req, fds in ready:
        try:
            pid = _fork(alone)
        except OSError as exc:
            forked.append(exc)
            continue
        if pid == 0:
            _become_replica(req, fds)
        forked.append(pid)
    for (req, fds), got in zip(ready, forked, strict=True):
        for f in fds:
            os.close(f)
        if isinstance(got, OSError):
            _fork_failed(sock, encoder, req, f"fork failed: {got}")
            continue
        pid = got
        _forked.add(pid)
        if req.boot.cgroups:
            _cgroups[pid] = req.boot.cgroups
        try:
            pidfd = os.pidfd_open(pid)
        except OSError as exc:
            _fork_failed(sock, encoder, req, f"pidfd_open failed: {exc}")
            continue
        try:
            _linux.send_with_fds(sock, encoder.encode(Forked(req.req, pid)), [pidfd])
        except ConnectionError:
            pass  # the supervisor is gone: the next read says so (and takes them down)
        finally:
            os.close(pidfd)


def _fork_failed(sock: socket.socket, encoder: Any, req: Fork, why: str) -> None:
    with contextlib.suppress(ConnectionError):  # (the supervisor gone: as in _fork_batch)
        sock.sendall(encoder.encode(ForkFailed(req.req, why)))


def _become_replica(req: Fork, fds: list[int]) -> NoReturn:
    """The child of a fork request: the replica (never returns)."""
    try:
        # (the zygote's socket and own descriptors, and the other requests'
        # of its batch, close with all others in child_main, before any user
        # code runs)
        _linux.default_signals(_SIGTERM, unblock=False)
        from agentrt.worker import child_main

        child_main(req.boot, *fds)
    finally:
        os._exit(70)


class _LeanFork:
    """How :func:`_fork` forks: libc's fork, and the at-fork hooks it runs itself.

    Made once the zygote has imported what it preloads, from the
    ``os.register_at_fork`` calls recorded since it started: a registration
    whose every hook is threading's, logging's, concurrent.futures' or
    random's is not needed (random's reseed is done directly), the others
    run as os.fork would run them.
    """

    def __init__(self, hooks: list[dict[str, Callable[[], object]]]) -> None:
        import _random

        #: the recorded calls (the list goes on growing), and how many are sorted
        self.hooks = hooks
        self.sorted = 0
        #: random's generator, reseeded for each child (what its hook does)
        self.random: Any = None
        self.seed = _random.Random.seed
        #: os.fork's order: "before" hooks the last registered first
        self.before: list[Callable[[], object]] = []
        self.child: list[Callable[[], object]] = []
        self.parent: list[Callable[[], object]] = []
        libc = ctypes.PyDLL(None, use_errno=True)  # the GIL held throughout
        fork = libc.fork
        fork.restype, fork.argtypes = ctypes.c_int, []
        self.fork: Callable[[], int] = fork
        # Every signal blocked across the fork: a signal the zygote has taken
        # but not handled yet would be handled in the child too (os.fork
        # clears those flags in the child; a libc fork cannot).
        mask = libc.pthread_sigmask
        mask.restype, mask.argtypes = ctypes.c_int, [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        self.sigmask: Callable[[int, int | None, int | None], int] = mask
        self._sets = [ctypes.create_string_buffer(128) for _ in range(2)]  # sigset_t
        libc.sigfillset(self._sets[0])
        self.all_signals, self.saved = (ctypes.addressof(b) for b in self._sets)
        self.check_signals = ctypes.pythonapi.PyErr_CheckSignals
        #: /proc/self/stat, for the number of threads (field 20): any thread
        #: at all, a C extension's too, and os.fork it is
        self.stat = os.open(f"/proc/{os.getpid()}/stat", os.O_RDONLY | os.O_CLOEXEC)
        self.quiet = False
        self.sort()

    def alone(self) -> bool:
        """Whether the zygote has a single thread."""
        try:
            stat = os.pread(self.stat, 1024, 0)
            return stat[stat.rindex(b")") + 2 :].split()[17] == b"1"
        except (OSError, ValueError, IndexError):
            return False

    def sort(self) -> None:
        """Sort the hooks recorded so far (again, when more were recorded)."""
        known: list[object] = []
        for module, names in (
            ("threading", ("_after_fork",)),
            (
                "logging",  # (3.13 renamed _acquireLock/_releaseLock _prepareFork/_afterFork)
                (
                    "_acquireLock",
                    "_releaseLock",
                    "_prepareFork",
                    "_afterFork",
                    "_after_at_fork_child_reinit_locks",
                ),
            ),
        ):
            mod = sys.modules.get(module)
            known += [getattr(mod, name, None) for name in names if mod is not None]
        cf = sys.modules.get("concurrent.futures.thread")
        lock = getattr(cf, "_global_shutdown_lock", None)
        if lock is not None:
            known += [lock.acquire, lock.release, getattr(lock, "_at_fork_reinit", None)]
        rnd = sys.modules.get("random")
        self.random = getattr(rnd, "_inst", None)
        if self.random is not None:
            known.append(self.random.seed)
        known = [k for k in known if k is not None]

        def unneeded(kw: dict[str, Callable[[], object]]) -> bool:
            # (only a whole registration: a lock taken before the fork must be
            # released after it, by the same module's hooks)
            return all(any(hook == k for k in known) for hook in kw.values())

        hooks = [kw for kw in list(self.hooks) if not unneeded(kw)]
        for key, into, order in (
            ("before", self.before, -1),
            ("after_in_child", self.child, 1),
            ("after_in_parent", self.parent, 1),
        ):
            into.clear()
            into += [kw[key] for kw in hooks[::order] if kw.get(key) is not None]
        self.sorted = len(self.hooks)
        #: no hook runs at a fork: nothing can start a thread between two forks
        self.quiet = not (self.before or self.child or self.parent)


def _fork(alone: bool | None = None) -> int:
    """``os.fork()``, less the interpreter's at-fork work a replica does not need.

    os.fork runs every hook registered with ``os.register_at_fork``, and
    the interpreter's own reinitialisation after it.  In the zygote's single
    thread, with no lock held, threading's bookkeeping and the locks that
    logging and concurrent.futures take and reinitialise are as a child
    needs them already; only random's reseed matters.  Yet that work writes
    to about 170 pages in each child (of the ~740 it wrote before its first
    answer): pages copied, a third of the child's start and of its private
    memory.  So the zygote calls libc's fork itself (the child resumes in
    this thread), reseeds random just before (each child inherits a state
    of its own), and runs every other recorded hook, a preloaded module's,
    as os.fork would (see :class:`_LeanFork`).  A zygote with a second
    thread, or whose hooks could not all be recorded, forks with os.fork.
    ``alone``: what :meth:`_LeanFork.alone` said before a batch of forks
    with no hook to run between them (``quiet``); None: look now.
    """
    lean = _lean
    if lean is None:
        return os.fork()
    if len(lean.hooks) != lean.sorted:  # a module imported since registered one
        lean.sort()
    if alone is None or not lean.quiet:
        alone = lean.alone()
    if not alone:
        return os.fork()
    sys.audit("os.fork")
    for hook in lean.before:
        _run_hook(hook)
    if lean.random is not None:
        # What random's own hook does in the child (Random.seed(None): from
        # the OS's randomness), done here: each child starts from a state of
        # its own all the same, and writes none of its pages to get it.
        lean.seed(lean.random)
        lean.random.gauss_next = None
    lean.sigmask(_SIG_SETMASK, lean.all_signals, lean.saved)
    try:
        lean.check_signals()  # (handlers of signals already taken: here, not in the child)
    except BaseException:
        lean.sigmask(_SIG_SETMASK, lean.saved, None)
        raise
    pid = lean.fork()
    err = ctypes.get_errno()
    lean.sigmask(_SIG_SETMASK, lean.saved, None)
    if pid == 0:
        for hook in lean.child:
            _run_hook(hook)
        return 0
    for hook in lean.parent:
        _run_hook(hook)
    if pid < 0:
        raise OSError(err, os.strerror(err))
    return pid


def _run_hook(hook: Callable[[], object]) -> None:
    """An at-fork hook's exception is reported, not raised (as os.fork does)."""
    try:
        hook()
    except BaseException:
        import traceback

        traceback.print_exc()


def _lean_possible(imported: list[str]) -> bool:
    """Whether the hooks recorded from the zygote's first line are all of them:
    nothing but the standard library (and site's own finders) was imported
    before the recording started (a ``.pth`` file or sitecustomize may
    register hooks of its own)."""
    for name in imported:
        top = name.partition(".")[0]
        if top in sys.stdlib_module_names or top in ("__main__", "_distutils_hack"):
            continue
        if top.startswith("__editable__"):  # an editable install's finder
            continue
        return False
    return True


def _reap(sock: socket.socket, encoder: Any) -> None:
    """Report each exited child, then reap it.

    The report goes out while the child is still a zombie (peeked at with
    WNOWAIT, collected with wait4 after): the supervisor, woken by the same
    exit through its pidfd, reads the status from /proc in the meantime,
    which it can trust only while the child is unreaped.
    """
    orphans = False
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if info is None or info.si_pid == 0:
            break
        pid = info.si_pid
        if pid in _spares:  # a spare that died waiting (never handed a request)
            _spares.discard(pid)
            _spare_failed()
        cpu = _linux.child_cpu(pid)
        if cpu is not None:
            # Report first: the supervisor may be waiting on this to fail the calls.
            _report(sock, encoder, pid, _wait_status(info.si_code, info.si_status), cpu)
        if pid in _forked:
            # Whatever the replica left in its process group goes with it
            # (before the reap: until then no other process can get its pgid).
            _linux.kill_group(pid)
        _pid, status, ru = os.wait4(pid, 0)  # a zombie: returns at once
        if cpu is None:
            _report(sock, encoder, pid, status, ru.ru_utime + ru.ru_stime)
        if pid in _spare_born:
            # groups it waited in as a spare and did not rename (all of them
            # if it never served, else those of hierarchies its replica has no
            # group in)
            _spare_born.discard(pid)
            _remove_spare_cgroups(pid)
        if pid in _forked:
            _forked.discard(pid)
            _cgroups.pop(pid, None)  # the supervisor empties and removes it
            orphans = True
    if orphans:
        # Orphans that escaped into sessions of their own go too: as the
        # subreaper, the zygote adopted them.
        _kill_orphans()


def _wait_status(code: int, value: int) -> int:
    """The raw wait status that a waitid ``si_code``/``si_status`` pair stands for."""
    if code == os.CLD_EXITED:
        return (value & 0xFF) << 8
    return value | (0x80 if code == os.CLD_DUMPED else 0)  # CLD_KILLED


def _report(sock: socket.socket, encoder: Any, pid: int, status: int, cpu: float) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(encoder.encode(Reaped(pid, status, cpu)))


#: replicas forked by this zygote and not yet reaped
_forked: set[int] = set()
#: what a forked child sets back to its default action first (plain ints: an
#: enum's attributes are Python code, and touch pages)
_SIGTERM = (int(signal.SIGTERM),)
#: this process's pid (a forked child's differs)
_zygote = 0
#: sigprocmask's "set the mask"
_SIG_SETMASK = 2
#: how replicas are forked once the zygote's at-fork hooks are known (see _fork)
_lean: _LeanFork | None = None
#: spares waiting for a request, as far as the zygote knows (the supervisor
#: holds their sockets, and says which it gave a replica to become)
_spares: set[int] = set()
#: how many spares the zygote keeps now (forked while it is idle), and at most
_spare_target = 0
_spare_bound = 0
#: ``[supervisor] spares_min``
_spares_min = 0
#: when the last fork request came (time.monotonic())
_last_request = 0.0
#: spares kept before any demand
_SPARES_FIRST = 4
#: idle this long (ms) before forking a spare; longer after spares failed, up to the max
_REFILL_AFTER_MS = 5.0
_REFILL_MAX_MS = 1000.0
_refill_after_ms = _REFILL_AFTER_MS
#: ms of a core a replica takes from its start (a spare taken, or a fork) to
#: its first answer, about: the refill waits until the replicas started
#: lately had that each, one after another, so that spares forked after a
#: burst do not compete for the cores with the burst's replicas
_START_CPU_MS = 2.0
#: until when (time.monotonic()) the replicas started lately are expected to
#: keep the cores busy
_busy_until = 0.0
#: no request for this long (s): the spares kept are halved
_SPARE_IDLE_S = 30.0
#: the cgroups of each of them that has some
_cgroups: dict[int, list[str]] = {}
#: where each spare makes groups of its own to wait in (see ``confine.join_spare_cgroups``)
_spare_cgroups: list[str] = []
#: what a spare says on its socket once it is ready to become a replica
_SPARE_READY = b"ready"
#: the name (``/proc/PID/comm``) of a spare while it waits, and of the zygote
#: (which its replicas keep): buffers made here, not in each child
_SPARE_NAME = ctypes.create_string_buffer(b"agentrt-spare", 16)
_name = ctypes.create_string_buffer(b"python", 16)
#: processes forked as spares, not reaped yet (they may leave waiting groups behind)
_spare_born: set[int] = set()


def _remove_spare_cgroups(pid: int) -> None:
    """Process ``pid``, forked as a spare, is gone: the groups it waited in and
    did not rename (all of them if it never served) go too, and so does the
    workdir it made if it never became a replica."""
    from agentrt.sandbox.confine import spare_cgroups, spare_workdir

    for d in spare_cgroups(_spare_cgroups, pid):
        with contextlib.suppress(OSError):
            os.rmdir(d)
    if _rundir:  # and the workdir it made, if it never became a replica's
        with contextlib.suppress(OSError):
            os.rmdir(spare_workdir(_rundir, pid))


def _kill_orphans() -> None:
    """SIGKILL children of the zygote that it did not fork (adopted orphans)."""
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children", "rb") as f:
            children = [int(x) for x in f.read().split()]
    except OSError:
        return
    for pid in children:
        if pid not in _forked:  # (spares are among them)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


#: the supervisor (its pid and a pidfd), and its run directory (the replicas'
#: working directories)
_parent = 0
_parent_fd = -1
_rundir = ""


def _die(supervisor_gone: bool = False) -> NoReturn:
    """Take every replica's process group and every orphan down, then exit.

    When the supervisor is gone (it closed the socket, or died: the death
    signal), the zygote outlives it and removes its run directory and cgroups.
    A child that gets SIGTERM before it set its own handler dies of it, as it
    would have with the default one.
    """
    if os.getpid() != _zygote:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        os._exit(128 + signal.SIGTERM)
    for pid in list(_forked):
        _linux.kill_group(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _forked.clear()  # (spares among them)
    _kill_orphans()
    for groups in _cgroups.values():  # whatever left the trees, but not the cgroups
        with contextlib.suppress(OSError), open(os.path.join(groups[0], "cgroup.procs")) as f:
            for member in f.read().split():
                with contextlib.suppress(OSError, ValueError):
                    os.kill(int(member), signal.SIGKILL)
        for group in groups:  # a paused replica's frozen processes die once thawed
            for name, thawed in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
                with contextlib.suppress(OSError), open(os.path.join(group, name), "w") as f:
                    f.write(thawed)
    if _rundir and not supervisor_gone and _parent_fd >= 0:
        # A death signal comes when the thread that started us exits, maybe
        # before the rest of the supervisor: wait (briefly) for all of it.
        supervisor_gone = _linux.readable(_parent_fd, 1.0)
    if _rundir and supervisor_gone:
        import shutil

        shutil.rmtree(_rundir, ignore_errors=True)
        _remove_cgroup_parents()
    os._exit(0)


def _remove_cgroup_parents() -> None:
    """The supervisor is gone: remove its cgroups (``agentrt-<pid>`` and the
    groups in it), once the processes killed above have left them."""
    from agentrt.sandbox.cgroups import Cgroups

    parents = set(_spare_cgroups)
    for groups in _cgroups.values():
        parents.update(os.path.dirname(d) for d in groups)
    for parent in sorted(parents):
        with contextlib.suppress(OSError):
            Cgroups.remove([os.path.join(parent, n) for n in os.listdir(parent)] + [parent])


class ZygoteClient:
    """The supervisor's end of the zygote socket (runs on the event loop)."""

    def __init__(
        self,
        preload: list[str],
        sys_path: list[str],
        rundir: str = "",
        spares: int = 0,
        spare_cgroups: list[str] | None = None,
        spares_min: int = 0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.spares = spares
        self.spares_min = spares_min
        #: the zygote's environment (None: ours), which its replicas inherit
        self.env = env
        self.spare_cgroups = spare_cgroups or []
        self.preload = preload
        self.sys_path = sys_path
        self.rundir = rundir
        self.pid = 0
        self._sock: socket.socket | None = None
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(ZygoteReply)
        self._next_req = 0
        self._outbox: deque[tuple[bytes, list[int]]] = deque()
        self._writer_armed = False
        self._forks: dict[int, asyncio.Future[tuple[int, int]]] = {}
        self._exits: dict[int, asyncio.Future[tuple[int, float]]] = {}
        self._early: dict[int, tuple[int, float]] = {}
        self._hello: asyncio.Future[ZygoteHello] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pidfd = -1
        self.closed = False
        #: spares waiting for a replica to become: pid -> (pidfd, its socket);
        #: those ready (they said so) in ``_ready``
        self._idle: dict[int, tuple[int, socket.socket]] = {}
        self._ready: set[int] = set()
        #: spares let go or found dead, whose exit reports are to be ignored
        self._dropped: set[int] = set()
        #: how many spares the zygote keeps now (as it last said)
        self.spares_target = 0
        self._spare_waits: list[tuple[int, asyncio.Future[int]]] = []

    @property
    def spares_ready(self) -> int:
        return len(self._ready)

    def _spare_said(self, pid: int) -> None:
        entry = self._idle.get(pid)
        if entry is None:
            return
        try:
            said = entry[1].recv(64)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            said = b""
        assert self._loop is not None
        self._loop.remove_reader(entry[1].fileno())
        if said == _SPARE_READY:
            self._ready.add(pid)
        else:  # it exited (or said something else: not to be trusted with a replica)
            self._drop_spare(pid)
        self._spares_changed()

    async def spares_forked(self, n: int) -> int:
        """Wait until at least ``n`` spares wait."""
        assert self._loop is not None
        if self.spares_ready >= n:
            return self.spares_ready
        fut: asyncio.Future[int] = self._loop.create_future()
        self._spare_waits.append((n, fut))
        return await fut

    def _spares_changed(self) -> None:
        ready = len(self._ready)
        for n, waiter in self._spare_waits:
            if ready >= n and not waiter.done():
                waiter.set_result(ready)
        self._spare_waits = [(n, w) for n, w in self._spare_waits if not w.done()]

    def _drop_spare(self, pid: int) -> None:
        """Forget spare ``pid`` (gone, or let go: it exits at the EOF of its socket)."""
        self._dropped.add(pid)  # its exit report, when it comes, is not a replica's
        pidfd, conn = self._idle.pop(pid)
        if pid in self._ready:
            self._ready.discard(pid)
        elif self._loop is not None:
            self._loop.remove_reader(conn.fileno())
        os.close(pidfd)
        conn.close()

    def _take_spare(self, boot: Boot, fds: list[int]) -> tuple[int, int] | None:
        """Send the request to a waiting spare: ``(pid, pidfd)``, or None (none left)."""
        while self._ready:
            pid = next(p for p in self._idle if p in self._ready)  # the oldest ready
            self._ready.discard(pid)
            pidfd, conn = self._idle.pop(pid)
            try:
                if _linux.readable(pidfd) or _linux.dying(pid):
                    raise ProcessLookupError(pid)  # gone, or about to be: left to the reaper
                self._next_req += 1
                _linux.send_with_fds(conn, self._encoder.encode(Fork(self._next_req, boot)), fds)
            except OSError:
                self._dropped.add(pid)
                os.close(pidfd)
                continue
            finally:
                conn.close()
                self._spares_changed()
            self._outbox.append((self._encoder.encode(SpareTaken(pid, list(boot.cgroups))), []))
            self._flush_outbox()
            return pid, pidfd
        return None

    def alive(self) -> bool:
        """Whether the zygote process still runs (asked of the kernel, not the socket:
        its pidfd turns readable the moment it exits)."""
        if self._pidfd < 0:
            return not self.closed
        if _linux.readable(self._pidfd):
            return False
        # Its replicas get their death signal while it is exiting, a moment
        # before its pidfd says so: PF_EXITING is set from the start of exit.
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as f:
                stat = f.read()
            flags = int(stat[stat.rfind(b")") + 2 :].split()[6])
        except (OSError, ValueError, IndexError):
            return False
        return not flags & _linux.PF_EXITING

    async def start(self, timeout: float = 30.0) -> None:
        import multiprocess.spawn
        import multiprocess.util

        loop = self._loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        args = msgspec.json.encode(
            [
                theirs.fileno(),
                self.preload,
                self.sys_path,
                os.getpid(),
                self.rundir,
                self.spares,
                self.spare_cgroups,
                self.spares_min,
            ]
        )
        exe = os.fsencode(multiprocess.spawn.get_executable())
        argv = [
            os.fsdecode(exe),
            *multiprocess.util._args_from_interpreter_flags(),
            "-c",
            _BOOTSTRAP.format(args=args.decode(), root=_ROOT),
        ]
        # A fresh interpreter (never a fork of our threads), and unlike a
        # multiprocess "spawn" child it does not re-import the user's __main__.
        # Started from the loop's thread: PR_SET_PDEATHSIG follows the thread
        # that created the child, so it must be one that lives as long as we do.
        try:
            self.pid = _spawn(exe, argv, theirs.fileno(), self.env)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        with contextlib.suppress(OSError):
            self._pidfd = os.pidfd_open(self.pid)
        ours.setblocking(False)
        self._sock = ours
        self._hello = loop.create_future()
        loop.add_reader(ours.fileno(), self._on_readable)
        try:
            async with asyncio.timeout(timeout):
                hello = await self._hello
        except BaseException:
            # Killed, not let go: at its socket's end a zygote takes its
            # supervisor for gone and removes the run directory, which is
            # still in use when only this zygote failed (a fenced one).
            if self._pidfd >= 0:
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            await self.close()
            raise
        if hello.error:
            await self.close()
            raise RuntimeError(hello.error)

    def _on_readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data, fds = _linux.recv_with_fds(self._sock, _DGRAM, 4)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data, fds = b"", []
            if not data:
                self._lost("zygote exited")
                return
            try:
                msg = self._decoder.decode(data)
            except msgspec.DecodeError:
                for f in fds:
                    os.close(f)
                continue
            match msg:
                case Forked(req=req, pid=pid):
                    fut = self._forks.pop(req, None)
                    if fds and fut is not None and not fut.done():
                        fut.set_result((pid, fds[0]))
                    else:
                        for f in fds:
                            os.close(f)
                case ForkFailed(req=req, message=message):
                    fut = self._forks.pop(req, None)
                    if fut is not None and not fut.done():
                        fut.set_exception(OSError(errno.EAGAIN, message))
                case Reaped(pid=pid, status=status, cpu=cpu):
                    if pid in self._idle:  # a spare that never served
                        self._drop_spare(pid)
                        self._spares_changed()
                    if pid in self._dropped:  # nobody waits for a spare's exit
                        self._dropped.discard(pid)
                        continue
                    ex = self._exits.pop(pid, None)
                    if ex is not None:
                        if not ex.done():
                            ex.set_result((status, cpu))
                    else:
                        self._early[pid] = (status, cpu)
                        if len(self._early) > 4096:
                            self._early.pop(next(iter(self._early)))
                case ZygoteHello():
                    if self._hello is not None and not self._hello.done():
                        self._hello.set_result(msg)
                case SpareForked(pid=pid):
                    if len(fds) == 2 and self._loop is not None:
                        conn = socket.socket(fileno=fds[1])
                        conn.setblocking(False)
                        self._idle[pid] = (fds[0], conn)
                        # Used once it says it is ready (its groups joined,
                        # its preparation done): until then a request would wait.
                        self._loop.add_reader(conn.fileno(), self._spare_said, pid)
                    else:
                        for f in fds:
                            os.close(f)
                case Spares(target=target):
                    self.spares_target = target
                    # Fewer kept: the newest over the target go (EOF: they exit).
                    while len(self._idle) > max(target, 0):
                        self._drop_spare(next(reversed(self._idle)))
                    self._spares_changed()

    def _lost(self, why: str) -> None:
        if self._loop is not None and self._sock is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._sock.fileno())
                self._loop.remove_writer(self._sock.fileno())
        self._outbox.clear()
        err = RuntimeError(why)
        futures: list[asyncio.Future[Any]] = [*self._forks.values(), *self._exits.values()]
        for fut in futures:
            if not fut.done():
                fut.set_exception(err)
        if self._hello is not None and not self._hello.done():
            self._hello.set_exception(err)
        for _n, waiter in self._spare_waits:
            if not waiter.done():
                waiter.set_exception(err)
        self._spare_waits.clear()
        for pid in list(self._idle):
            self._drop_spare(pid)
        self._dropped.clear()
        self._forks.clear()
        self._exits.clear()
        self.closed = True

    async def fork(self, boot: Boot, fds: list[int]) -> tuple[int, int]:
        """Fork a replica; returns ``(pid, pidfd)``.  ``fds`` stay ours to close."""
        if self.closed or self._sock is None or self._loop is None:
            raise RuntimeError("zygote is not running")
        spare = self._take_spare(boot, fds)
        if spare is not None:
            return spare
        self._next_req += 1
        req = self._next_req
        fut: asyncio.Future[tuple[int, int]] = self._loop.create_future()
        self._forks[req] = fut
        self._outbox.append((self._encoder.encode(Fork(req, boot)), fds))
        self._flush_outbox()
        return await fut

    def _flush_outbox(self) -> None:
        """Send queued fork requests; when the socket is full, wait for room."""
        sock, loop = self._sock, self._loop
        if sock is None or loop is None:
            return
        while self._outbox:
            data, fds = self._outbox[0]
            try:
                _linux.send_with_fds(sock, data, fds)
            except BlockingIOError:
                if not self._writer_armed:
                    self._writer_armed = True
                    loop.add_writer(sock.fileno(), self._flush_outbox)
                return
            self._outbox.popleft()
        if self._writer_armed:
            self._writer_armed = False
            loop.remove_writer(sock.fileno())

    def exit_status(self, pid: int) -> asyncio.Future[tuple[int, float]]:
        """A future of ``(raw wait status, cpu seconds)`` for a child of the zygote."""
        assert self._loop is not None
        fut: asyncio.Future[tuple[int, float]] = self._loop.create_future()
        early = self._early.pop(pid, None)
        if early is not None:
            fut.set_result(early)
        elif self.closed:
            fut.set_exception(RuntimeError("zygote exited"))
        else:
            self._exits[pid] = fut
        return fut

    async def close(self) -> None:
        """Stop the zygote (its replicas die with it) and reap it."""
        if self._sock is not None:
            if self._loop is not None and not self.closed:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        self._lost("zygote closed")
        pid, self.pid = self.pid, 0
        if pid:
            await asyncio.to_thread(_reap_pid, pid, 2.0)
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1


def _spawn(exe: bytes, argv: list[str], fd: int, env: dict[str, str] | None) -> int:
    """Start the zygote's interpreter (``fd`` passed to it; ``env`` its whole
    environment, None: ours); its pid, which :func:`_reap_pid` reaps.  An
    exec that fails raises, with its reason."""
    import subprocess

    proc = subprocess.Popen(argv, executable=exe, pass_fds=[fd], env=env)
    proc.returncode = 0  # (ours to reap, not Popen's: see _reap_pid)
    return proc.pid


def _reap_pid(pid: int, grace: float) -> None:
    """Wait for the zygote to exit (it does once its socket closes), else kill it."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        pidfd = -1
    if pidfd != -1:
        try:
            if not _linux.readable(pidfd, grace):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        finally:
            os.close(pidfd)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _main(
    args: str,
    fork_hooks: list[dict[str, Callable[[], object]]] | None = None,
    imported: list[str] | None = None,
) -> None:
    """Entry of the zygote interpreter (see :meth:`ZygoteClient.start`)."""
    fd, preload, sys_path, parent, rundir, spares, spare_cgroups, spares_min = msgspec.json.decode(
        args
    )
    zygote_main(
        socket.socket(fileno=fd),
        preload,
        sys_path,
        parent,
        rundir,
        spares,
        spare_cgroups,
        fork_hooks,
        imported,
        spares_min,
    )


#: the directory this agentrt package was imported from
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: what the zygote interpreter runs (``-c``): ``os.register_at_fork`` is
#: wrapped before anything is imported, so that the zygote knows every hook
#: (see :func:`_fork`).  agentrt is imported from where the supervisor's came
#: from: ``-c`` puts the working directory first on ``sys.path``, and an
#: ``agentrt`` there (a checkout, another version) must not answer instead.
_BOOTSTRAP = """\
import os, sys
_imported = list(sys.modules)
_hooks = []
_register = os.register_at_fork
def _record(**kw):
    _register(**kw)
    _hooks.append(kw)
os.register_at_fork = _record
sys.path.insert(0, {root!r})
import agentrt
sys.path.remove({root!r})
from agentrt.zygote import _main
_main({args!r}, _hooks, _imported)
"""
