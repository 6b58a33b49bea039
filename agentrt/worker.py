"""Child side of a replica: isolate, import the entry, serve calls.

Order matters and is the point of this module.  Before any user code is
imported the child: leaves the supervisor's session (own session and
process group), arms ``PR_SET_PDEATHSIG(SIGKILL)``, moves stdout/stderr onto
the capture pipe and stdin onto ``/dev/null``, closes every fd it did not
ask for, applies rlimits (core dumps off), enters a private working
directory and sets its import path.  Only then is ``module:attr`` imported
and ``Ready`` sent.

Sync entries are served by a plain blocking loop (one call at a time; a
call's deadline is enforced with ``ITIMER_REAL``); async entries by an
asyncio loop that runs up to ``concurrency`` calls at once and honours
``Cancel``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import functools
import importlib
import inspect
import os
import resource
import select
import selectors
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Coroutine, MutableMapping
from typing import Any, NoReturn

import msgspec

from agentrt import _linux, deathwatch
from agentrt.context import AgentIO, Context, SyncContext, takes_ctx
from agentrt.errors import AgentrtError
from agentrt.protocol import (
    EXIT_INTERNAL,
    EXIT_MEMORY,
    EXIT_PROTOCOL,
    EXIT_STARTUP,
    Become,
    Boot,
    Call,
    CallMany,
    Cancel,
    Failure,
    FrameDecoder,
    FrameEncoder,
    FrameError,
    Heartbeat,
    Held,
    Log,
    Part,
    Ready,
    Reply,
    ReplyError,
    Rest,
    Result,
    Shutdown,
    StartupFailed,
    SupervisorMessage,
    describe_unencodable,
)
from agentrt.sandbox.confine import confine, enter_cgroups, keep_domain_rulesets, kept_rulesets
from agentrt.sandbox.confine import warm as warm_confinement

__all__ = ["child_main", "exit_code_of"]

_READ_SIZE = 1 << 16
#: a replica keeps spinning while frames arrive within this many spins of its last write
_HOT_SPINS = 4
#: a yield that took longer than this gave the CPU to another process: stop spinning
_CONTENDED = 20e-6
#: spinning slots a replica tries before it blocks instead (each try a syscall)
_SLOT_TRIES = 2
_prepared = False
#: the replica-independent isolation steps are taken (:func:`_detach`)
_detached = False
#: stdin is /dev/null and the output streams line-buffered (see _set_streams)
_streams_set = False


#: how often the items of a ``CallMany`` stop to read what came meanwhile (seconds)
_LOOK_EVERY = 0.001
#: an item of a ``CallMany`` that took longer ends its chunk where calls run
#: side by side (``Rest``): the items after it are spread again (seconds)
_LONG_ITEM = 0.002


class _Deadline(BaseException):
    """Raised by SIGALRM inside a sync call whose deadline passed.

    A BaseException so that a plain ``except Exception`` in agent code does
    not swallow it.
    """


#: what a replica sets back to the default action (plain ints, see default_signals)
_DEFAULT_SIGNALS = tuple(
    int(s) for s in (signal.SIGCHLD, signal.SIGTERM, signal.SIGPIPE, signal.SIGALRM)
)
_SIGINT = (int(signal.SIGINT),)
_SIGALRM = int(signal.SIGALRM)
_SIGALRM_SET = (_SIGALRM,)


def _detach() -> None:
    """The steps of isolation that are the same for every replica: signals back
    to their defaults, nothing to read on stdin, line-buffered output.  A
    zygote's spare takes them while it waits (:func:`prepare_spare`)."""
    global _detached
    if _detached:
        return
    # (SIGINT stays ignored until the replica is isolated: a spare is forked
    # in the zygote's process group, which a terminal's Ctrl-C reaches, and
    # anyone may signal a waiting spare: it must not die of it)
    # (a zygote blocks no signal: nothing to unblock in what it forks)
    _linux.default_signals(_DEFAULT_SIGNALS, unblock=not _prepared)
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(-1)
    if not _streams_set:  # (a zygote's child has its streams from the zygote)
        _set_streams()
    _detached = True


def _set_streams() -> None:
    """Nothing to read on stdin; line-buffered stdout and stderr.

    A replica's sys.stdout/stderr write to fds 1 and 2, the capture pipe:
    line buffering makes each line reach the supervisor's log promptly.  The
    zygote sets its own once, for every replica it forks (see :func:`prepare`).
    """
    global _streams_set
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    for stream in (sys.stdout, sys.stderr):
        if stream is not None and hasattr(stream, "reconfigure"):
            with contextlib.suppress(Exception):
                stream.reconfigure(line_buffering=True)
    _streams_set = True


#: what every replica sets in its environment (_isolate), in this order
_BOOT_VARIABLES = ("AGENTRT_AGENT", "AGENTRT_REPLICA", "AGENTRT_GENERATION", "AGENTRT_LAUNCH_DIR")
#: those a standby learns only when it becomes a replica (``Become``)
_IDENTITY = ("AGENTRT_REPLICA", "AGENTRT_GENERATION")


def prepare_spare() -> None:
    """In a zygote's spare, while it waits for a replica to become: the steps
    of isolation every replica takes, and a rehearsal, so that the pages a
    replica writes on its way to its first answer are copied now, not while
    a caller waits for it."""
    _detach()
    _rehearse(rounds=2, calls=1)  # a call each, sync and async: the pages, once
    # What _isolate and child_main write that the rehearsal does not: the
    # environment (os.environ's dict, libc's array), sys.path, inspect.
    for k in _BOOT_VARIABLES:
        os.environ[k] = ""
        del os.environ[k]
    sys.path.insert(0, "")
    del sys.path[0]
    inspect.iscoroutinefunction(prepare_spare)


def _isolate(boot: Boot, rfd: int, wfd: int, ofd: int, death_fd: int = -1) -> None:
    """Everything that must happen before user code runs (``death_fd``: see
    :func:`agentrt.deathwatch.hold`)."""
    # First: everything from here on is accounted.
    unenforced, memory = enter_cgroups(boot)
    _unenforced.extend(unenforced)
    if memory is not None and (boot.memory is None or not boot.memory_rlimit):
        # the group that was to hold the memory limit could not: the address
        # space holds it instead
        boot = msgspec.structs.replace(boot, memory=memory, memory_rlimit=True)
    with contextlib.suppress(OSError):
        os.setsid()
    _linux.default_signals(_SIGINT, unblock=False)  # (the mask: _detach's)
    _linux.set_pdeathsig(signal.SIGKILL)
    if boot.supervisor_pid and os.getppid() == 1:
        os._exit(EXIT_STARTUP)  # parent already gone: nobody to serve
    _detach()
    deathwatch.hold(death_fd)  # (the memfd is closed below with the rest)
    os.dup2(ofd, 1)
    os.dup2(ofd, 2)
    keep = sorted({0, 1, 2, rfd, wfd, *kept_rulesets()})  # (confine closes these)
    lo = 3
    for fd in keep:
        if fd >= lo:
            os.closerange(lo, fd)
            lo = fd + 1
    os.closerange(lo, 1 << 20)
    _apply_rlimits(boot)
    global _members_fd
    if boot.spin and boot.spin_lock and boot.spin_slots:
        # Opened now, as for the members below: a filesystem allowlist or
        # run_as could keep them out of reach later.  Read-only: a lock needs
        # no more, and an agent gets nothing to write to.  The slots tried
        # start at one of the pid's choosing (replicas spread over them).
        n = boot.spin_slots
        first = os.getpid() % n
        for tried in range(min(n, _SLOT_TRIES)):
            with contextlib.suppress(OSError):
                path = f"{boot.spin_lock}.{(first + tried) % n}"
                _spin_fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
    if boot.cgroups:
        # Opened now: under a filesystem allowlist it could not be opened later,
        # and an interrupted call's leftovers are found through it.
        with contextlib.suppress(OSError):
            _members_fd = os.open(
                os.path.join(boot.cgroups[0], "cgroup.procs"), os.O_RDONLY | os.O_CLOEXEC
            )
    # network namespace, workdir, env allowlist, run_as, no_new_privs, Landlock
    confine(boot)
    for k, v in boot.env.items():
        os.environ[k] = v
    # (replicas run in private directories: where the supervisor was started,
    # AGENTRT_LAUNCH_DIR, is how an agent resolves a user's relative output path)
    ours = (boot.agent, str(boot.replica), str(boot.generation), boot.launch_dir)
    for k, v in zip(_BOOT_VARIABLES, ours, strict=True):
        if boot.standby and k in _IDENTITY:
            os.environ.pop(k, None)  # (set once it becomes a replica)
        else:
            os.environ[k] = v
    for p in reversed(boot.sys_path):
        if p not in sys.path:
            sys.path.insert(0, p)


def _apply_rlimits(boot: Boot) -> None:
    def setlim(res: int, soft: int, hard: int | None = None) -> None:
        _soft, cur_hard = resource.getrlimit(res)
        h = soft if hard is None else hard
        if cur_hard != resource.RLIM_INFINITY:
            h = min(h, cur_hard)
        resource.setrlimit(res, (min(soft, h), h))

    setlim(resource.RLIMIT_CORE, 0)
    if boot.memory is not None and boot.memory_rlimit:
        setlim(resource.RLIMIT_AS, boot.memory)
    if boot.cpu_time is not None:
        secs = max(1, int(boot.cpu_time + 0.999))
        # SIGXCPU at the soft limit, SIGKILL one second later.
        setlim(resource.RLIMIT_CPU, secs, secs + 1)
    if boot.open_files is not None:
        setlim(resource.RLIMIT_NOFILE, boot.open_files)
    if boot.processes is not None:
        setlim(resource.RLIMIT_NPROC, boot.processes)
    if boot.file_size is not None:
        setlim(resource.RLIMIT_FSIZE, boot.file_size)


def _load_entry(entry: str) -> tuple[Any, dict[str, Callable[..., Any]]]:
    """Import ``module:attr``; a class is instantiated once per replica."""
    mod_name, _, attr = entry.partition(":")
    # (a preloaded module is taken as it is: import_module is Python code,
    # and in a forked replica every page it touches is copied)
    module = sys.modules.get(mod_name) or importlib.import_module(mod_name)
    if mod_name == "__main__" and not hasattr(module, attr.partition(".")[0]):
        raise AttributeError(
            f"entry {entry!r}: a replica's __main__ is not the supervisor's program; name"
            " the module that defines it (a script research.py is the module 'research',"
            ' its start under `if __name__ == "__main__"`)'
        )
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    targets: dict[str, Callable[..., Any]] = {}
    if isinstance(obj, type):
        instance = obj()
        for name in dir(instance):
            if name.startswith("_"):
                continue
            member = getattr(instance, name)
            if callable(member):
                targets[name] = member
        default = instance.__call__ if callable(instance) else None
        if default is None:
            default = targets.get("run")
        if default is not None:
            targets[""] = default
        return instance, targets
    if not callable(obj):
        raise TypeError(f"entry {entry!r} is a {type(obj).__name__}, not a function or class")
    targets[""] = obj
    return obj, targets


class _Channel:
    """Blocking frame I/O on the protocol pipes (the child's side).

    Before it sleeps for the next frame, the channel polls for up to
    ``spin`` seconds from its last write: on many machines, waking a sleeping
    process costs far more than a tiny call (an inter-processor interrupt,
    and on a virtual machine an exit of the vCPU), while a replica fed a
    stream of calls receives the next one a few microseconds after it
    answered.  It polls only while the calls keep coming that fast (``hot``:
    the last frame came within a few spins of the answer before it), and
    yields the CPU on every turn, so a busy machine loses nothing to it.
    Where the supervisor bounds spinning (``slots``: the files of the
    spinning slots it may take, of cores - 1), it polls only while it holds
    one: replicas that spin never crowd out the supervisor they wait for.
    """

    def __init__(
        self,
        rfd: int,
        wfd: int,
        max_frame: int,
        spin: float = 0.0,
        slots: list[int] | None = None,
    ) -> None:
        self.rfd = rfd
        self.wfd = wfd
        self.encoder = FrameEncoder(max_frame)
        self.decoder = FrameDecoder(SupervisorMessage, max_frame)
        self.big = False
        self.spin = spin
        self.hot = False  # until a frame arrives soon after an answer
        self.sent_at = 0.0
        #: a frame is being written: a SIGALRM handler must not raise now
        #: (a frame cut in half would break the stream)
        self.writing = False
        #: the spinning slots to try (their files, read-only); None: spin without one
        self._slots = slots
        self._poll = select.poll()
        self._poll.register(rfd, select.POLLIN)

    def frame(self, msg: Any) -> bytearray:
        """Encode ``msg``; a result that cannot be encoded becomes a ``Failure``."""
        try:
            return self.encoder.encode(msg)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            call_id = getattr(msg, "id", None)
            if call_id is None:
                raise
            where = describe_unencodable(getattr(msg, "value", None), "result") or str(exc)
            part = msg.index if isinstance(msg, Part) else -1
            return self.encoder.encode(
                Failure(call_id, type(exc).__name__, where, "", "error", None, part)
            )

    def write(self, msg: Any) -> None:
        self.write_bytes(self.frame(msg))

    def write_bytes(self, data: bytes | bytearray) -> None:
        if len(data) > 65536 and not self.big:
            self.big = True
            _linux.set_pipe_size(self.wfd, 1 << 20)
        view = memoryview(data)
        self.writing = True
        try:
            while view:
                n = os.write(self.wfd, view)
                view = view[n:]
        finally:
            self.writing = False
        if self.spin:
            self.sent_at = time.perf_counter()

    def spin_until(self, ready: Callable[[], Any], limit: float | None = None) -> Any:
        """Poll ``ready()`` while hot, until ``spin`` after the last write (or
        ``limit`` seconds from now); its first true value, or None."""
        if not self.hot:
            return None
        slot = self._take_slot()
        if slot is None:
            return None  # as many replicas as there are spare cores spin already
        try:
            clock = time.perf_counter
            end = self.sent_at + self.spin
            if limit is not None:
                end = min(end, clock() + limit)
            while True:
                got = ready()
                if got:
                    return got
                now = clock()
                if now >= end:
                    return None
                os.sched_yield()
                if clock() - now > _CONTENDED:
                    return None  # something else ran on this CPU meanwhile: leave it the CPU
        finally:
            if slot >= 0:
                fcntl.flock(slot, fcntl.LOCK_UN)

    def _take_slot(self) -> int | None:
        """A spinning slot (its file, locked); -1 when spinning is unbounded;
        None when every slot tried is taken.  The lock goes with the process,
        so a replica that dies while spinning frees its slot."""
        if self._slots is None:
            return -1
        for fd in self._slots:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue
            return fd
        return None

    def woke(self) -> None:
        """A frame arrived: spin next time if it came soon after our last write."""
        self.hot = time.perf_counter() - self.sent_at < _HOT_SPINS * self.spin

    def _ready(self) -> bool:
        return bool(self._poll.poll(0))

    def read_ready(self) -> list[Any]:
        """The messages already in the pipe, without blocking (EOFError at its end)."""
        out: list[Any] = []
        while self._ready():
            chunk = os.read(self.rfd, _READ_SIZE)
            if not chunk:
                raise EOFError
            out.extend(self.decoder.feed(chunk))
        return out

    def read(self) -> list[Any]:
        """Block for the next chunk; ``[]`` never returned except at EOF (raises)."""
        while True:
            if self.spin:
                if not self.spin_until(self._ready):
                    self._poll.poll()
                self.woke()
            chunk = os.read(self.rfd, _READ_SIZE)
            if not chunk:
                raise EOFError
            msgs = self.decoder.feed(chunk)
            if msgs:
                return msgs


def _failure(call_id: int, exc: BaseException, kind: str = "error", part: int = -1) -> Failure:
    tb = "".join(traceback.format_exception(exc))
    typed = exc.to_dict() if isinstance(exc, AgentrtError) else None
    return Failure(call_id, type(exc).__qualname__, str(exc), tb, kind, typed, part)


class _Running:
    """An async call while it runs: when it started (clock ticks), and whether it
    ran alone (no other call of the replica beside it)."""

    __slots__ = ("alone", "since")

    def __init__(self, since: int) -> None:
        self.since = since
        self.alone = True


class _Cancelled(BaseException):
    """Raised inside a sync call (from the frame pump) when its Cancel arrives."""


class _Woken(BaseException):
    """Raised into the pump's wait by a SIGALRM handler that read its frames."""


class _Worker:
    def __init__(self, boot: Boot, chan: _Channel, targets: dict[str, Callable[..., Any]]):
        self.boot = boot
        self.chan = chan
        self.targets = targets
        self.with_ctx = {fn: takes_ctx(fn) for fn in set(targets.values())}
        self.stopping = False
        self.backlog: deque[Any] = deque()
        #: the frames read with a standby's Become (see _stand_by)
        self.early: list[Any] = []
        #: sync mode: answers to write once outside a signal handler
        self.outbox: deque[Any] = deque()
        self.current = 0  # id of the sync call running now
        self.running: set[_Running] = set()  # async calls running now
        self.io = AgentIO(
            boot.agent,
            boot.replica,
            chan.write,
            dict(boot.tools),
            boot.count_tools,
            boot.trace_tools,
            dict(boot.tool_timeouts),
            {k: list(v) for k, v in boot.approvals.items()},
            dict(boot.isolated_entries),
            dict(boot.models),
        )
        self.io.pump = self.pump
        self.io.catch_up = self.catch_up
        self.io.after_alarm = self.after_alarm
        self.selecting = False  # sync mode: the pump waits in select()
        self.woken = False
        #: ``io.held`` when each call arrived, for calls that arrived after a pause
        self.bases: dict[int, float] = {}
        #: sync mode: a read (and the routing of what it read) is in progress
        self.reading = False
        #: sync mode: the running call's deadline, and ``io.held`` when it arrived
        self.deadline = 0.0
        self.base = 0.0

    def route(self, msg: Any) -> bool:
        """Replies go to the context, pauses move the deadlines; True when
        ``msg`` was one of those."""
        if isinstance(msg, Reply | ReplyError):
            self.io.on_reply(msg)
            return True
        if isinstance(msg, Held):
            self.io.on_held(msg.seconds)
            return True
        return False

    def take(self, msgs: list[Any]) -> None:
        """Sync mode: frames in the order they came.  Replies and pauses apply
        now; calls (with the pauses told before them) and the rest wait in the
        backlog; a Cancel of the running call raises :class:`_Cancelled`, after
        the rest is in."""
        cancelled = False
        held = self.io.held
        backlog = self.backlog
        for msg in msgs:
            if type(msg) is Call or type(msg) is CallMany:  # the common case first
                if held:
                    self.bases[msg.id] = held
                backlog.append(msg)
                continue
            if self.route(msg):
                held = self.io.held
                continue
            if isinstance(msg, Cancel):
                if msg.id == self.current and self.current:
                    cancelled = True
                    continue
                if self._drop_waiting(msg.id):
                    continue
            backlog.append(msg)
        if cancelled:
            raise _Cancelled

    def _drop_waiting(self, call_id: int) -> bool:
        """A call cancelled before it started never runs: answered as cancelled."""
        for msg in self.backlog:
            if isinstance(msg, Call | CallMany) and msg.id == call_id:
                self.backlog.remove(msg)
                self.bases.pop(call_id, None)
                # written by the main loop (this may run in a signal handler,
                # which must not write in the middle of another frame)
                self.outbox.append(Failure(call_id, "CancelledError", "cancelled", "", "cancelled"))
                return True
        return False

    def flush(self) -> None:
        """Write the answers :meth:`take` left (main loop only)."""
        while self.outbox:
            self.chan.write(self.outbox.popleft())

    def pump(self, timeout: float | None) -> None:
        """Sync mode, inside a call: read frames; calls wait in the backlog."""
        chan = self.chan
        if timeout is None and chan.spin:
            chan.spin_until(chan._ready)
        # A SIGALRM handler may read the pipe while this waits (a pause's Held
        # frame must be read before a deadline is judged): then it raises
        # _Woken here, for the caller to look at what it read.
        self.selecting = True
        try:
            readable, _, _ = select.select(
                [chan.rfd], [], [], None if timeout is None else max(0.0, timeout)
            )
        except _Woken:
            return
        finally:
            self.selecting = False
        if not readable:
            return
        if chan.spin:
            chan.woke()
        self._take_ready()

    def _take_ready(self) -> None:
        """Sync mode: take the frames already in the pipe into the backlog
        (raises :class:`_Cancelled` on the running call's Cancel).  The
        deadline's SIGALRM waits until they are all in: raised between the
        read and the take, it would lose the frames read."""
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGALRM_SET)
        try:
            self.reading = True
            try:
                msgs = self.chan.read_ready()
            except EOFError:
                raise _Cancelled from None
            finally:
                self.reading = False
            self.take(msgs)
        finally:
            try:
                self.flush()
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGALRM_SET)

    def catch_up(self) -> bool:
        """Sync mode, from a SIGALRM handler: take the frames already in the pipe
        (a ``Held`` sent before the replica was resumed among them).  False
        when the main thread is in the middle of a read."""
        if self.reading:
            return False
        self.reading = True
        try:
            msgs = self.chan.read_ready()
        except EOFError:
            raise _Cancelled from None
        finally:
            self.reading = False
        if msgs and self.selecting:
            self.woken = True  # the pump waits for frames these may be
        self.take(msgs)
        return True

    def after_alarm(self) -> None:
        """The end of a SIGALRM handler that did not raise: wake the pump when
        the handler read frames it was waiting for."""
        if self.woken:
            self.woken = False
            if self.selecting:
                raise _Woken

    def resolve(self, call: Call | CallMany) -> Callable[..., Any]:
        fn = self.targets.get(call.target)
        if fn is None:
            known = ", ".join(repr(t) for t in sorted(self.targets) if t) or "none"
            what = f"method {call.target!r}" if call.target else "a default target"
            raise LookupError(f"agent {self.boot.agent!r} has no {what} (targets: {known})")
        return fn

    def error_kind(self, exc: BaseException) -> str:
        """``"error"``, or the limit of this replica that ``exc`` (or its cause) hit:
        ``"memory"`` (MemoryError, or an mmap refused), ``"open_files"`` (EMFILE),
        ``"file_size"`` (EFBIG)."""
        boot = self.boot
        seen = 0
        e: BaseException | None = exc
        while e is not None and seen < 8:
            if isinstance(e, MemoryError) and boot.memory is not None:
                return "memory"
            if isinstance(e, OSError):
                if e.errno == errno.ENOMEM and boot.memory is not None:
                    return "memory"
                if e.errno == errno.EMFILE and boot.open_files is not None:
                    return "open_files"
                if e.errno == errno.EFBIG and boot.file_size is not None:
                    return "file_size"
            e = e.__cause__ or e.__context__
            seen += 1
        return "error"

    # --- sync mode ---------------------------------------------------------

    def serve_sync(self) -> int:
        chan = self.chan
        backlog = self.backlog

        io = self.io

        def on_alarm(signum: int, frame: Any) -> None:
            if chan.writing:  # an answer is half written: look again soon
                signal.setitimer(signal.ITIMER_REAL, 0.001)
                return
            left = io.alarm_left(self.deadline, self.base)
            if left is None or left > 0:  # not yet read what the supervisor said, or paused
                signal.setitimer(signal.ITIMER_REAL, 0.01 if left is None else left)
                self.after_alarm()
                return
            raise _Deadline

        _linux.set_handler(_SIGALRM, on_alarm)
        if self.early:  # what came with a standby's Become
            early, self.early = self.early, []
            self.take(early)
        # Each result is written before the next call starts: a call that
        # kills the process must not take an earlier call's result with it.
        while True:
            self.flush()
            if not backlog:
                try:
                    self.take(chan.read())
                except EOFError:
                    return 0
                continue
            msg = backlog.popleft()
            match msg:
                case Call() | CallMany():
                    self.current = msg.id
                    ended = self.run_sync(msg)
                    self.current = 0
                    if ended is not None:  # None: an item hit a limit (see _items_sync)
                        chan.write(ended)
                case Shutdown():
                    return 0
                case Cancel() | Heartbeat():
                    pass  # nothing runs between calls in sync mode

    def run_sync(self, call: Call | CallMany) -> Result | Failure | None:
        timed = False
        since = _linux.clock_ticks()
        self.deadline = call.deadline
        self.base = self.bases.pop(call.id, 0.0) if self.bases else 0.0
        try:
            fn = self.resolve(call)
            if call.deadline:
                left = call.deadline + (self.io.held - self.base) - time.monotonic()
                if left <= 0:
                    return Failure(
                        call.id, "TimeoutError", "deadline passed before start", "", "timeout"
                    )
                signal.setitimer(signal.ITIMER_REAL, left)
                timed = True
            if isinstance(call, CallMany):
                ended = self._items_sync(call, fn)
            else:
                if self.with_ctx.get(fn):
                    ctx = SyncContext(self.io, call.id, call.deadline or None, self.base)
                    value = fn(ctx, **call.args)
                else:
                    value = fn(**call.args)
                if inspect.isawaitable(value):
                    value = asyncio.run(_awaitable(value))
                ended = Result(call.id, value)
            if timed:
                signal.setitimer(signal.ITIMER_REAL, 0)
                timed = False
            return ended
        except _Deadline:
            timed = False
            self.kill_leftovers(since)
            return Failure(call.id, "TimeoutError", "call deadline passed", "", "timeout")
        except _Cancelled:
            self.kill_leftovers(since)
            return Failure(call.id, "CancelledError", "cancelled", "", "cancelled")
        except Exception as exc:
            return _failure(call.id, exc, self.error_kind(exc))
        finally:
            if timed:
                signal.setitimer(signal.ITIMER_REAL, 0)

    def _items_sync(self, call: CallMany, fn: Callable[..., Any]) -> Result | None:
        """The items of ``call`` in turn (inside :meth:`run_sync`), each answered
        before the next starts; the whole's answer, or None when an item hit a
        limit of the replica (it is replaced: the rest do not run)."""
        write = self.chan.write
        with_ctx = self.with_ctx.get(fn)
        start = looked = time.perf_counter()
        for i, args in enumerate(call.items):
            now = time.perf_counter()
            if now - looked >= _LOOK_EVERY:
                looked = now
                self.look()  # its Cancel, a pause: read between two items
            try:
                if with_ctx:
                    ctx = SyncContext(self.io, call.id, call.deadline or None, self.base)
                    value = fn(ctx, **args)
                else:
                    value = fn(**args)
                if inspect.isawaitable(value):
                    value = asyncio.run(_awaitable(value))
            except Exception as exc:
                kind = self.error_kind(exc)
                write(_failure(call.id, exc, kind, i))
                if kind != "error":
                    return None
                continue
            write(Part(call.id, i, value))
        return Result(call.id, time.perf_counter() - start)

    def look(self) -> None:
        """Sync mode, between two items of a ``CallMany``: take what came
        meanwhile (raises :class:`_Cancelled` on its Cancel)."""
        if self.chan._ready():
            self._take_ready()

    def kill_leftovers(self, since: int) -> None:
        """An interrupted call ends with what it started: the processes of this
        replica's tree, and of its cgroup, that started during the call (from
        clock tick ``since``).  Where /proc cannot be read (a filesystem
        allowlist), every other process of its cgroup goes."""
        members = _cgroup_members()
        me = os.getpid()
        try:
            mine = _linux.kill_started_since(me, since, members)
        except OSError:  # /proc is out of reach: start times are unknown
            mine = []
            for pid in members:
                if pid != me:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                        mine.append(pid)  # those that are not our children are not reaped
        _linux.reap(mine)

    # --- async mode --------------------------------------------------------

    def serve_async(self) -> int:
        chan = self.chan
        factory: Callable[[], asyncio.AbstractEventLoop] | None = None
        if chan.spin:

            def factory() -> asyncio.AbstractEventLoop:
                return asyncio.SelectorEventLoop(_SpinSelector(chan))

        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(self._serve_async())

    async def _serve_async(self) -> int:
        loop = asyncio.get_running_loop()
        chan = self.chan
        os.set_blocking(chan.rfd, False)
        stop: asyncio.Future[None] = loop.create_future()
        running: dict[int, asyncio.Task[None]] = {}
        waiting: deque[Call | CallMany] = deque()
        free = self.boot.concurrency

        async def run_one(call: Call | CallMany) -> None:
            ended = await self.run_async(call)
            if ended is not None:  # None: an item hit a limit (see _items_async)
                chan.write(ended)

        def finished(call: Call | CallMany, task: asyncio.Task[None]) -> None:
            nonlocal free
            running.pop(call.id, None)
            free += 1
            if task.cancelled():
                # Its Cancel came before it started (in the same read as the
                # call): run_async never ran to answer it, so answer here.
                chan.write(Failure(call.id, "CancelledError", "cancelled", "", "cancelled"))
            start_waiting()

        def start_waiting() -> None:
            # Calls start in arrival order, at most ``concurrency`` at once.
            nonlocal free
            while waiting and free > 0:
                call = waiting.popleft()
                free -= 1
                task = running[call.id] = loop.create_task(run_one(call))
                task.add_done_callback(functools.partial(finished, call))

        io = self.io

        def handle(msg: Any) -> None:
            match msg:
                case Call() | CallMany():
                    if io.held:
                        self.bases[msg.id] = io.held
                    waiting.append(msg)
                    start_waiting()
                case Cancel(id=cid):
                    task = running.get(cid)
                    if task is not None:
                        task.cancel()
                        return
                    for c in waiting:
                        if c.id == cid:
                            waiting.remove(c)
                            chan.write(Failure(cid, "CancelledError", "cancelled", "", "cancelled"))
                            break
                case Shutdown():
                    if not stop.done():
                        stop.set_result(None)
                case Reply() | ReplyError() | Held():
                    self.route(msg)
                case Heartbeat():
                    pass

        for msg in self.early:  # what came with a standby's Become, in order
            handle(msg)
        self.early = []

        def on_readable() -> None:
            try:
                chunk = os.read(chan.rfd, _READ_SIZE)
            except BlockingIOError:
                return
            try:
                if not chunk:
                    loop.remove_reader(chan.rfd)
                    if not stop.done():
                        stop.set_result(None)
                    return
                for m in chan.decoder.feed(chunk):
                    handle(m)
            except Exception as exc:
                # Garbage, or no memory to hold a frame: the replica ends
                # (EXIT_PROTOCOL, EXIT_MEMORY...) rather than lose a message
                # and carry on; nothing escapes into the loop.
                loop.remove_reader(chan.rfd)
                if not stop.done():
                    stop.set_exception(exc)

        loop.add_reader(chan.rfd, on_readable)
        try:
            await stop
        finally:
            loop.remove_reader(chan.rfd)
        if running:
            await asyncio.gather(*running.values(), return_exceptions=True)
        return 0

    async def run_async(self, call: Call | CallMany) -> Result | Rest | Failure | None:
        # Which processes were this call's can only be told when no other call
        # ran beside it: ``alone`` turns False as soon as one does.
        me = _Running(_linux.clock_ticks())
        for other in self.running:
            other.alone = me.alone = False
        self.running.add(me)
        try:
            return await self._run_async(call, me)
        finally:
            self.running.discard(me)

    async def _items_async(
        self, call: CallMany, fn: Callable[..., Any], base: float
    ) -> Result | Rest | None:
        """:meth:`_items_sync` for an async replica (inside :meth:`_run_async`).

        Where calls run side by side (``concurrency > 1``), an item that took
        longer than ``_LONG_ITEM`` ends the chunk (:class:`Rest`): the items
        after it would otherwise wait for each other in one of the replica's
        slots, where as calls of their own they would run together."""
        write = self.chan.write
        with_ctx = self.with_ctx.get(fn)
        side_by_side = self.boot.concurrency > 1
        last = len(call.items) - 1
        start = looked = time.perf_counter()
        for i, args in enumerate(call.items):
            now = time.perf_counter()
            if now - looked >= _LOOK_EVERY:
                looked = now
                await asyncio.sleep(0)  # its Cancel: the loop reads between two items
                now = time.perf_counter()
            try:
                if with_ctx:
                    args = {**args, "ctx": Context(self.io, call.id, call.deadline or None, base)}
                value = await _call_maybe_async(fn, args)
            except Exception as exc:
                kind = self.error_kind(exc)
                write(_failure(call.id, exc, kind, i))
                if kind != "error":
                    return None
            else:
                write(Part(call.id, i, value))
            if side_by_side and i < last:
                took = time.perf_counter()
                if took - now > _LONG_ITEM:
                    return Rest(call.id, took - start)
        return Result(call.id, time.perf_counter() - start)

    async def _run_async(
        self, call: Call | CallMany, me: _Running
    ) -> Result | Rest | Failure | None:
        io = self.io
        base = self.bases.pop(call.id, 0.0) if self.bases else 0.0
        try:
            fn = self.resolve(call)
            work: Coroutine[Any, Any, Any]
            if isinstance(call, CallMany):
                work = self._items_async(call, fn, base)
            else:
                args = call.args
                if self.with_ctx.get(fn):
                    args = {**args, "ctx": Context(io, call.id, call.deadline or None, base)}
                work = _call_maybe_async(fn, args)
            if call.deadline:
                bound = asyncio.timeout_at(call.deadline + (io.held - base))
                io.timeouts.add(bound)  # a pause moves it
                try:
                    async with bound:
                        value = await work
                finally:
                    io.timeouts.discard(bound)
            else:
                value = await work
            if type(call) is CallMany:
                return value
            return Result(call.id, value)
        except TimeoutError as exc:
            if call.deadline and time.monotonic() >= call.deadline + (io.held - base):
                if me.alone:
                    self.kill_leftovers(me.since)
                return Failure(call.id, "TimeoutError", "call deadline passed", "", "timeout")
            return _failure(call.id, exc)
        except asyncio.CancelledError:
            if me.alone:
                self.kill_leftovers(me.since)
            return Failure(call.id, "CancelledError", "cancelled", "", "cancelled")
        except Exception as exc:
            return _failure(call.id, exc, self.error_kind(exc))


class _SpinSelector(selectors.DefaultSelector):
    """The async replica's selector: polls (``timeout=0``) while the channel
    is hot before sleeping, as :meth:`_Channel.read` does."""

    def __init__(self, chan: _Channel) -> None:
        super().__init__()
        self._chan = chan

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        chan = self._chan
        if chan.hot and (timeout is None or timeout > 0):
            start = time.perf_counter()
            got = chan.spin_until(lambda: super(_SpinSelector, self).select(0), timeout)
            if got:
                return got  # type: ignore[no-any-return]
            if timeout is not None:  # a timer is due: the spin used part of the wait
                timeout = max(0.0, timeout - (time.perf_counter() - start))
        events = super().select(timeout)
        if events:
            chan.woke()
        return events


async def _awaitable(aw: Any) -> Any:
    return await aw


async def _call_maybe_async(fn: Callable[..., Any], args: dict[str, Any]) -> Any:
    value = fn(**args)
    if inspect.isawaitable(value):
        value = await value
    return value


#: cgroup.procs of the replica's cgroup, opened before any confinement
_members_fd = -1
#: the spinning slots this replica may take (see ``Boot.spin_lock``)
_spin_fds: list[int] = []
#: cgroups the replica could not make or join (and may go without)
_unenforced: list[str] = []


def _cgroup_members() -> list[int]:
    """The pids in this replica's cgroup (none when it has no cgroup)."""
    if _members_fd < 0:
        return []
    chunks: list[bytes] = []
    offset = 0
    with contextlib.suppress(OSError):
        while chunk := os.pread(_members_fd, 1 << 16, offset):
            chunks.append(chunk)
            offset += len(chunk)
    return [int(x) for x in b"".join(chunks).split() if x.isdigit()]


#: the protocol channel of this replica, once it has one (for log forwarding)
_channel: _Channel | None = None


def _forward_log(_logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """structlog's last processor in a replica: the event becomes a ``Log`` frame."""
    import structlog

    chan = _channel
    if chan is not None:
        event = str(event_dict.pop("event", ""))
        fields: dict[str, Any] = {}
        for k, v in event_dict.items():
            fields[k] = v if isinstance(v, str | int | float | bool | type(None)) else repr(v)
        with contextlib.suppress(OSError, TypeError, ValueError):
            chan.write_bytes(chan.encoder.encode(Log(method, event, fields)))
    raise structlog.DropEvent


def _import_structlog() -> Any:
    """structlog, without the console renderers' optional imports.

    ``structlog.dev`` imports ``rich`` when it is installed (several MiB
    and ~0.1 s here); a replica forwards its events and never renders them.
    The modules are hidden only during this import: agent code that imports
    them later gets them as usual.
    """
    if "structlog" in sys.modules:
        return sys.modules["structlog"]
    hidden = [m for m in ("rich", "better_exceptions", "colorama") if m not in sys.modules]
    for m in hidden:
        sys.modules[m] = None  # type: ignore[assignment]
    try:
        import structlog
    finally:
        for m in hidden:
            del sys.modules[m]
    return structlog


def _rehearsal_target(**kwargs: Any) -> Any:
    return kwargs


async def _rehearsal_async(**kwargs: Any) -> Any:
    return kwargs


#: rounds of the rehearsal; CPython 3.11 specialises a function's bytecode
#: (writing into its code object) during its first eight calls or so
_REHEARSALS = 12


def _rehearse(rounds: int = 2 * _REHEARSALS, calls: int = _REHEARSALS) -> None:
    """Serve a few calls in this process, before any replica is forked.

    Everything a replica runs to serve its first calls (the channel, the
    worker, the frame codecs, the serve loop) then runs already specialised
    by CPython in every replica: a forked replica that runs a function for
    the first time writes to its code object (warm-up counters, inline
    caches), copying that page from the zygote; rehearsed here, those pages
    stay shared.  Output goes to a pipe that is read back and dropped.
    ``rounds`` alternate sync and async entries, ``calls`` calls each.
    """
    boot = Boot(agent="rehearsal", replica=0, generation=0, entry="-:-", workdir="")
    enc = FrameEncoder()
    frames = bytearray()
    for i in range(1, calls + 1):
        frames += enc.encode(Call(i, "", {"i": i}, 0.0))
    frames += enc.encode(Shutdown())
    for i in range(rounds):
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        try:
            os.write(in_w, frames)
            # Sync and async entries both (the async loop with the spinning
            # selector, on a spin too short to matter).
            is_async = i % 2 == 1
            chan = _Channel(in_r, out_w, boot.max_frame, 1e-6 if is_async else 0.0)
            target = _rehearsal_async if is_async else _rehearsal_target
            worker = _Worker(boot, chan, {"": target})
            chan.write(Ready(0))
            if is_async:
                worker.serve_async()
            else:
                worker.serve_sync()
            os.read(out_r, 1 << 16)
        finally:
            for fd in (in_r, in_w, out_r, out_w):
                os.close(fd)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)


def _warm_environ() -> None:
    """Set and unset a variable past CPython's specialisation warm-up: each
    replica sets its own (``AGENTRT_AGENT``...), and finds that code ready
    instead of writing to it (and copying its pages)."""
    for _ in range(12):
        os.environ["AGENTRT_WARMING"] = "1"
        del os.environ["AGENTRT_WARMING"]


def prepare(rehearse: bool = True) -> None:
    """Work every replica would repeat, done once in the process that forks them.

    Configures structlog to forward events over the (future) channel, builds
    the typed decoder, rehearses serving calls (``rehearse``: only worth it
    where replicas are forked afterwards) and freezes the GC so the pages of
    everything imported so far stay shared with the children.
    """
    global _prepared
    _prepared = True
    import gc

    structlog = _import_structlog()

    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, _forward_log],
        cache_logger_on_first_use=True,
    )
    FrameDecoder(SupervisorMessage)
    _linux.warm()
    warm_confinement()
    if rehearse:  # the zygote: its children inherit its streams and signal mask
        _set_streams()
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        _warm_environ()
        keep_domain_rulesets()
        _rehearse()
    gc.collect()
    if rehearse:
        _linux.trim_heap()  # (what the imports and the rehearsal freed)
    gc.freeze()


def exit_code_of(exc: SystemExit) -> int:
    """The status ``sys.exit(arg)`` exits with, as the interpreter computes it.

    ``None`` and ``0`` are a normal exit (0); an int is that status (masked
    to 8 bits by the kernel); anything else is printed and exits 1.
    """
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int) and not isinstance(code, bool):
        return code & 0xFF
    with contextlib.suppress(Exception):
        print(code, file=sys.stderr)
    return 1


def _stand_by(boot: Boot, chan: _Channel) -> tuple[Boot, list[Any]]:
    """A standby, ready: wait for ``Become``, the first frame; the Boot of the
    replica it becomes, and the frames that came with it.

    Shutdown, or the end of the pipe, ends it (exit 0); any other frame is a
    protocol error.
    """
    try:
        msgs = chan.read()
    except EOFError:  # the supervisor let it go
        raise SystemExit(0) from None
    first, rest = msgs[0], msgs[1:]
    if isinstance(first, Shutdown):
        raise SystemExit(0)
    if not isinstance(first, Become):
        raise FrameError(f"a standby's first frame must be Become, not {type(first).__name__}")
    for k, v in zip(_IDENTITY, (str(first.replica), str(first.generation)), strict=True):
        os.environ[k] = v
    boot = msgspec.structs.replace(
        boot, replica=first.replica, generation=first.generation, standby=False
    )
    return boot, rest


def spawned_main(boot_fd: int, rfd: int, wfd: int, ofd: int) -> NoReturn:
    """Entry point of a replica started by ``start_method = "spawn"`` (a fresh
    interpreter, see :class:`agentrt.backends.local.SpawnLauncher`): its Boot
    is read from ``boot_fd`` (a memfd, closed here), then it is any replica."""
    try:
        with os.fdopen(boot_fd, "rb") as f:
            boot = msgspec.msgpack.decode(f.read(), type=Boot)
    except Exception as exc:  # (the supervisor wrote it: a bug, said on the stream)
        with contextlib.suppress(Exception):
            _Channel(rfd, wfd, 1 << 20).write(
                StartupFailed(type(exc).__qualname__, f"its Boot could not be read: {exc}", "")
            )
        os._exit(EXIT_STARTUP)
    child_main(boot, rfd, wfd, ofd)


def child_main(boot: Boot, rfd: int, wfd: int, ofd: int, death_fd: int = -1) -> NoReturn:
    """Entry point of every replica, whatever started it.  Never returns.

    The replica's exit status says how it ended: 0 for a normal end (the
    supervisor closed the pipe or sent Shutdown, or the agent called
    ``sys.exit(0)`` / ``sys.exit()``), ``sys.exit(n)``'s status, or one of
    the protocol's ``EXIT_*`` codes.
    """
    code = EXIT_STARTUP
    try:
        try:
            _isolate(boot, rfd, wfd, ofd, death_fd)
        except Exception as exc:  # a confinement that could not be applied
            with contextlib.suppress(Exception):
                _Channel(rfd, wfd, boot.max_frame).write(
                    StartupFailed(type(exc).__qualname__, f"sandbox: {exc}", "")
                )
            os._exit(EXIT_STARTUP)
        global _channel
        # Bounded spinning and no slot to take (one core, or none could be
        # opened): no spinning at all.
        spin = boot.spin if _spin_fds or not boot.spin_lock else 0.0
        chan = _channel = _Channel(
            rfd, wfd, boot.max_frame, spin, _spin_fds if boot.spin_lock else None
        )
        for why in _unenforced:  # what the sandbox could not do, said now that we can
            chan.write(Log("warning", "sandbox_unenforced", {"setting": "cgroup", "why": why}))
        if not _prepared:  # not forked from the zygote: nothing to share, no rehearsal
            prepare(rehearse=False)
        try:
            _instance, targets = _load_entry(boot.entry)
        except BaseException as exc:
            tb = "".join(traceback.format_exception(exc))
            with contextlib.suppress(OSError):
                chan.write(StartupFailed(type(exc).__qualname__, str(exc), tb))
            os._exit(EXIT_MEMORY if isinstance(exc, MemoryError) else EXIT_STARTUP)
        chan.write(Ready(os.getpid()))
        early: list[Any] = []
        if boot.standby:
            boot, early = _stand_by(boot, chan)
        worker = _Worker(boot, chan, targets)
        worker.early = early  # (what came with a standby's Become: taken first)
        is_async = any(
            inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)
            for fn in targets.values()
        )
        code = worker.serve_async() if is_async else worker.serve_sync()
    except SystemExit as exc:  # sys.exit() in the agent: its status, 0 being a normal exit
        code = exit_code_of(exc)
    except FrameError:
        code = EXIT_PROTOCOL
    except MemoryError:
        code = EXIT_MEMORY
    except BrokenPipeError:
        code = 0  # the supervisor closed our pipe: it is going away
    except BaseException:
        with contextlib.suppress(Exception):
            traceback.print_exc()
        code = EXIT_INTERNAL
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
    os._exit(code)
