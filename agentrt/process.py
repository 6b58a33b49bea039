"""Parent side of one replica: pipes, handshake, frame I/O, kill, reap, classify.

An :class:`AgentProcess` owns one child process for its whole life:

* ``start``: make the pipes, have the launcher start the child, wait for
  ``Ready`` under ``startup_timeout`` (else :class:`StartupError`);
* frames in: a reader callback on the loop decodes frames and hands each
  message to the owner's handler; a frame that fails to decode is a
  :class:`ProtocolViolation` and kills the child, it never raises into the
  loop;
* stdout/stderr: read line by line into the structlog log, tagged with the
  agent's name and pid;
* death: noticed by the pidfd or by pipe EOF and classified into one
  :class:`AgentDied` subclass.  The exit status is read from ``/proc`` as
  soon as the pidfd turns readable (the replica is a zombie until its parent
  reaps it, see :func:`agentrt._linux.zombie_status`); where that read cannot
  be trusted, from the status the launcher reaped.  The launcher's status is
  awaited either way: the replica's leftovers are swept once it is reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import select
import signal
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from agentrt import _linux
from agentrt.errors import (
    AgentCrashed,
    AgentDied,
    LimitExceeded,
    ProtocolViolation,
    StartupError,
    signal_name,
)
from agentrt.protocol import (
    EXIT_MEMORY,
    EXIT_STARTUP,
    AgentMessage,
    Boot,
    FrameDecoder,
    FrameEncoder,
    FrameError,
    Log,
    Ready,
    StartupFailed,
)

if TYPE_CHECKING:
    from agentrt.deathwatch import DeathWatch

__all__ = ["AgentProcess", "ExitInfo", "Launched", "Launcher", "log_from_agent"]

#: the levels an agent's log events may have (anything else is logged at info)
_LEVELS = frozenset({"debug", "info", "warning", "error", "critical"})
#: fields an agent may not set: the logger's own (the pid is the supervisor's to say)
_RESERVED = frozenset({"event", "source", "pid"})


def log_from_agent(log: Any, msg: Log) -> None:
    """Log an agent's event through ``log``, at its level if that is a level."""
    meth = getattr(log, msg.level if msg.level in _LEVELS else "info")
    fields = {k: v for k, v in msg.fields.items() if k not in _RESERVED}
    meth(msg.event, source="agent", **fields)


_READ_SIZE = 1 << 18
_tls = threading.local()


def _read(fd: int) -> memoryview:
    """Read into this thread's reusable buffer (every replica's reader shares it:
    the decoder consumes or copies what it is given before the next read)."""
    view: memoryview | None = getattr(_tls, "view", None)
    if view is None:
        view = _tls.view = memoryview(bytearray(_READ_SIZE))
    n = os.readv(fd, [view])
    return view[:n]


_BIG_PIPE = 1 << 20
#: how long a remote replica's host may take to report its exit after its stream closed
_REMOTE_EOF_WAIT = 30.0
#: frames sent within this long of the previous write are coalesced with it
_BURST = 20e-6
_MAX_LINE = 8192


@dataclass(frozen=True, slots=True)
class ExitInfo:
    """How a process ended: ``exit_code`` is ``-signum`` for a signal death."""

    exit_code: int | None
    cpu: float | None = None
    #: what else is known of its end (a remote replica's lost node)
    detail: str = ""

    @property
    def signal(self) -> int | None:
        return -self.exit_code if self.exit_code is not None and self.exit_code < 0 else None

    @classmethod
    def from_status(cls, status: int, cpu: float | None = None) -> ExitInfo:
        return cls(os.waitstatus_to_exitcode(status), cpu)

    def describe(self) -> str:
        if self.exit_code is None:
            how = "exit status unknown"
        elif self.signal is not None:
            how = f"killed by {signal_name(self.signal)} ({self.exit_code})"
        else:
            how = f"exited with code {self.exit_code}"
        return f"{how}: {self.detail}" if self.detail else how


@dataclass(slots=True)
class Launched:
    pid: int
    pidfd: int | None
    exited: Awaitable[ExitInfo]
    #: whether the process that forked it (the zygote) has died since: a replica
    #: that died with it did nothing wrong
    orphaned: Callable[[], bool] = field(default=lambda: False)
    #: a replica on another machine (or in another's process tree): its stream
    #: ``(read, write, output)`` fds, made by the launcher, and its handle
    fds: tuple[int, int, int] | None = None
    remote: Remote | None = None


class Remote(Protocol):
    """A replica whose process this one cannot signal or read in ``/proc``:
    its host does that (the ``ray`` backend's actor)."""

    #: where it runs, for logs and errors (``node 10.0.0.7``)
    where: str

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the replica and its process group (asynchronously)."""

    async def freeze(self) -> None:
        """SIGSTOP its whole tree, until every process of it has stopped."""

    def thaw(self) -> None:
        """SIGCONT what :meth:`freeze` stopped."""


class Launcher(Protocol):
    """Starts replica processes (the zygote, fresh interpreters, ``multiprocess``, Ray).

    A launcher with ``remote = True`` makes the replica's stream itself
    (``launch`` gets no fds and returns :attr:`Launched.fds`)."""

    name: str
    remote: bool

    @property
    def deaths(self) -> DeathWatch | None:
        """Where replicas it starts hold a page whose death is noticed early
        (the zygote's); None elsewhere."""

    async def start(self) -> None: ...

    async def launch(self, boot: Boot, fds: list[int]) -> Launched: ...

    async def close(self) -> None: ...


Handler = Callable[["AgentProcess", Any], None]


def _never() -> bool:
    return False


#: seconds a dead replica's sweep waits for others to share its pass over /proc
_SWEEP_AFTER = 0.01
#: looks at an exiting replica whose other threads have not all begun to exit
_STRAGGLER_LOOKS = 5


class _Sweeps:
    """The sweeps of dead replicas' leftovers, one pass over /proc for many.

    A sweep reads every process's stat (``kill_tree``): about 20 µs a
    process here, on a thread that holds the GIL for most of it, so with a
    thousand processes alive a death cost 20 ms of CPU, right when the
    replacement starts.  Each waits ``_SWEEP_AFTER``, off the replacement's
    way, and the deaths of that moment share one pass; :meth:`flush` starts
    the pass at once (for whoever waits on a death: a group restart).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = weakref.ref(loop)  # (no cycle: the loop is the dict's key)
        self.leaders: list[int] = []
        self.extra: list[int] = []
        self.done: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.passes: set[asyncio.Task[None]] = set()

    def add(self, pid: int, extra: list[int]) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        self.leaders.append(pid)
        self.extra += extra
        if self.done is None:
            self.done = loop.create_future()
            self.timer = loop.call_later(_SWEEP_AFTER, self.flush)
        return self.done

    def take(self) -> tuple[list[int], list[int], asyncio.Future[None]] | None:
        """The deaths waiting for a pass, ``(leaders, extra, done)``; none wait
        any more (no timer, nothing pending that holds the loop)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.done is None:
            return None
        batch = (self.leaders, self.extra, self.done)
        self.leaders, self.extra, self.done = [], [], None
        return batch

    def flush(self) -> None:
        """Start the pass of the deaths waiting for one, now."""
        loop = self.loop()
        batch = self.take() if loop is not None else None
        if loop is None or batch is None:
            return
        done = batch[2]
        task = loop.create_task(self._pass(*batch))
        self.passes.add(task)  # (a task nothing refers to may be collected)
        task.add_done_callback(self.passes.discard)
        task.add_done_callback(lambda _t: done.cancel())  # (never left pending)

    @staticmethod
    async def _pass(leaders: list[int], extra: list[int], done: asyncio.Future[None]) -> None:
        try:
            await asyncio.to_thread(_linux.kill_tree, leaders, extra)
        except Exception as exc:  # e.g. no fd left to read /proc: said once, not per death
            asyncio.get_running_loop().call_exception_handler(
                {"message": f"sweeping what replicas {leaders} left failed", "exception": exc}
            )
        if not done.done():
            done.set_result(None)


_sweeps: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Sweeps] = weakref.WeakKeyDictionary()

_T = TypeVar("_T")


def _of_loop(
    registry: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _T],
    make: Callable[[asyncio.AbstractEventLoop], _T],
    loop: asyncio.AbstractEventLoop,
) -> _T:
    """``loop``'s entry in ``registry`` (made by ``make`` the first time)."""
    obj = registry.get(loop)
    if obj is None:
        obj = registry[loop] = make(loop)
    return obj


async def _sweep_later(pid: int, extra: list[int], now: bool = False) -> None:
    """Kill what the dead replica ``pid`` left (its group, session, ``extra``),
    in the next shared pass (see :class:`_Sweeps`; ``now``: at once)."""
    sweeps = _of_loop(_sweeps, _Sweeps, asyncio.get_running_loop())
    done = sweeps.add(pid, extra)
    if now:
        sweeps.flush()
    try:
        await asyncio.shield(done)
    except asyncio.CancelledError:
        if sweeps.done is done and (batch := sweeps.take()) is not None:
            # Torn down before its pass began: the pass is made here, for every
            # death waiting on it (they are cancelled too), and nothing is left
            # pending to hold the loop (the registry would then keep it).
            done.cancel()
            with contextlib.suppress(Exception):
                _linux.kill_tree(batch[0], batch[1])
        raise


def sweep_now() -> None:
    """Start the pending sweep of dead replicas' leftovers now (see :class:`_Sweeps`)."""
    sweeps = _sweeps.get(asyncio.get_running_loop())
    if sweeps is not None:
        sweeps.flush()


#: a spin stops when a yield took longer than this: another process needed the CPU
_CONTENDED = 20e-6


class _Spinner:
    """The supervisor's side of spinning: while a hot replica's answer is due
    (a call written to a replica that answered its last one within its
    ``spin``), the event loop polls its selector instead of sleeping in it.

    Waking a sleeping process costs tens of microseconds on many machines
    (an inter-processor interrupt; on a virtual machine, an exit of the
    vCPU), more than a tiny call takes.  The poll runs as one loop callback,
    and only when the loop has nothing else ready, never past its next timer
    nor past ``spin`` after the write.  Anything the loop waits for ends it:
    the answers waited for are read at once, as the replica's reader would
    read them; anything else (another replica's frame, a file the
    application's loop watches) is left to the loop, which sees it again in
    its next select.  It yields the CPU on every turn and stops as soon as a
    yield took long (something else needed this CPU).

    It uses the loop's selector (its epoll fd), ready queue and timer heap
    (asyncio's own event loops); on a loop without them (uvloop) it never
    spins.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weak references only, to the loop and to the replicas: the loop is
        # the key of this spinner's entry in ``_spinners``, and a loop closed
        # before a run must not be kept alive by it.
        self.loop = weakref.ref(loop)
        #: the replicas whose answers the next :meth:`run` waits for, by read fd
        self.armed: dict[int, weakref.ref[AgentProcess]] = {}
        #: runs that polled, and runs that saw something ready (for tests, debugging)
        self.spun = 0
        self.caught = 0

    def arm(self, proc: AgentProcess) -> None:
        """Poll for ``proc``'s answer in the next loop iteration."""
        if not self.armed:
            proc._loop.call_soon(self.run)
        self.armed[proc._rfd] = proc._weak

    def run(self) -> None:
        armed: dict[int, AgentProcess] = {}
        for fd, ref in self.armed.items():
            proc = ref()
            if proc is not None and proc._rfd == fd and proc._listening():
                armed[fd] = proc
        self.armed = {}
        loop = self.loop()
        # the loop's epoll fd is readable when anything the loop waits for is
        selector = getattr(loop, "_selector", None)
        fileno = getattr(selector, "fileno", None)
        if (
            not armed
            or loop is None
            or fileno is None
            or getattr(loop, "_ready", True)
            or getattr(loop, "_stopping", True)
        ):
            return  # other work is ready (or no way to tell): the selector waits
        poll = select.poll()
        poll.register(fileno(), select.POLLIN)
        for fd in armed:
            poll.register(fd, select.POLLIN)
        clock = time.perf_counter
        end = max(p._wrote_at + p.spin for p in armed.values())
        timers: list[asyncio.TimerHandle] = getattr(loop, "_scheduled", [])
        if timers:
            end = min(end, clock() + timers[0].when() - loop.time())
        self.spun += 1
        while True:
            ready = poll.poll(0)
            if ready:
                self.caught += 1
                for fd, _ev in ready:
                    proc = armed.get(fd)
                    # (not closed, or past its end, by an answer handled before it)
                    if proc is not None and proc._rfd == fd and proc._listening():
                        proc._on_readable()
                return  # (anything else: the loop's next select sees it again)
            now = clock()
            if now >= end:
                return
            os.sched_yield()
            if clock() - now > _CONTENDED:
                return


_spinners: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Spinner] = (
    weakref.WeakKeyDictionary()
)


def _spinner(loop: asyncio.AbstractEventLoop) -> _Spinner:
    return _of_loop(_spinners, _Spinner, loop)


class AgentProcess:
    """One replica process as the supervisor sees it."""

    def __init__(self, boot: Boot, handler: Handler, log: Any) -> None:
        self.boot = boot
        self.handler = handler
        self.log = log
        self.pid = 0
        self.ready_at = 0.0
        self.exit: ExitInfo | None = None
        self.cause: AgentDied | None = None
        self.reason: AgentDied | None = None  # set by whoever killed it on purpose
        self._loop = asyncio.get_running_loop()
        self._pidfd: int | None = None
        self._rfd = -1
        self._wfd = -1
        self._ofd = -1
        self._wbuf = bytearray()
        self._wbig = False
        self._wrote_at = 0.0  # perf_counter() of the last write
        self._flush_soon = False  # an _end_burst is scheduled
        #: how long the supervisor polls for this replica's answer (see
        #: :class:`_Spinner`): its agent's ``spin`` where replicas may spin
        #: (not on one core, not on a cluster)
        self.spin = boot.spin if boot.spin_slots else 0.0
        #: its last frame came within ``spin`` of the write before it
        self._hot = False
        self._weak = weakref.ref(self)
        self._writer_armed = False
        self._encoder = FrameEncoder(boot.max_frame)
        self._decoder = FrameDecoder(AgentMessage, boot.max_frame)
        self._obuf = b""
        self._ready: asyncio.Future[None] = self._loop.create_future()
        self._launched = asyncio.Event()  # launched, or failed to
        #: see :attr:`Launched.orphaned`
        self._orphaned: Callable[[], bool] = _never
        #: the launcher lost track of it (its zygote died before reporting)
        self.launcher_lost = False
        #: its host, when it is not a process of this machine's that we may signal
        self.remote: Remote | None = None
        self._start_called = False
        self._gone = asyncio.Event()  # pidfd readable or exit status known
        self.dead: asyncio.Future[AgentDied | None] = self._loop.create_future()
        self._eof = False
        self._broken = False
        self._exited: Awaitable[ExitInfo] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._descendants: list[int] = []
        #: someone waits on its sweep (``wait_closed(now=True)``): no delay
        self._sweep_now = False
        #: sweep the replica's leftovers when it dies; off when the owner
        #: stops many replicas and sweeps them in one pass
        self.sweep = True
        self.stopping = False
        #: called as its ``Ready`` is read, before the frames after it
        self.on_ready: Callable[[], None] | None = None
        #: set while the replica is paused (frozen): thaws it; a kill or a stop
        #: thaws it too (a frozen process dies only once thawed)
        self.thaw: Callable[[], None] | None = None
        #: its page of the launcher's DeathWatch, by address (see :meth:`_exit_began`)
        self._deaths: DeathWatch | None = None
        self._death_page = 0

    # --- start -------------------------------------------------------------

    async def start(
        self,
        launcher: Launcher,
        startup_timeout: float,
        serving: Callable[[], None] | None = None,
    ) -> None:
        """Start the child and wait for ``Ready``; raises :class:`StartupError`
        (its ``__cause__`` what the child was killed for, if it was).

        ``serving`` is called once its pipes are set up, before ``Ready``:
        from then on frames may be sent (:meth:`send_bytes`), and the child
        reads them once it is ready.
        """
        self._start_called = True
        if launcher.remote:
            await self._start_remote(launcher, startup_timeout)
        else:
            await self._start_local(launcher)
        await self._serve(startup_timeout, serving)

    @property
    def said_ready(self) -> bool:
        """Whether it sent ``Ready`` (so it may have run calls since)."""
        ready = self._ready
        return ready.done() and not ready.cancelled() and ready.exception() is None

    async def _start_remote(self, launcher: Launcher, startup_timeout: float) -> None:
        try:
            async with asyncio.timeout(startup_timeout):
                launched = await launcher.launch(self.boot, [])
        except BaseException as exc:
            late = isinstance(exc, TimeoutError)
            why = f"not placed within {startup_timeout:g}s" if late else exc
            self.cause = StartupError(f"could not start: {why}", agent=self.boot.agent)
            self.dead.set_result(self.cause)
            raise self.cause from exc
        finally:
            self._launched.set()
        assert launched.fds is not None and launched.remote is not None
        self._rfd, self._wfd, self._ofd = launched.fds
        self.remote = launched.remote
        self._adopt(launched)

    def _adopt(self, launched: Launched) -> None:
        self.pid = launched.pid
        self._pidfd = launched.pidfd
        self._exited = launched.exited
        self._orphaned = launched.orphaned
        where = {"node": self.remote.where} if self.remote is not None else {}
        self.log = self.log.bind(pid=self.pid, **where)

    async def _start_local(self, launcher: Launcher) -> None:
        made: list[int] = []
        try:
            for _ in range(3):
                made.extend(os.pipe2(os.O_CLOEXEC))
        except OSError as exc:  # e.g. EMFILE: no replica without its pipes
            for fd in made:
                os.close(fd)
            self._launched.set()
            self.cause = StartupError(f"could not make its pipes: {exc}", agent=self.boot.agent)
            self.dead.set_result(self.cause)
            raise self.cause from exc
        to_child_r, to_child_w, from_child_r, from_child_w, out_r, out_w = made
        child_fds = [to_child_r, from_child_w, out_w]
        self._rfd, self._wfd, self._ofd = from_child_r, to_child_w, out_r
        deaths = launcher.deaths
        if deaths is not None and (page := deaths.take()) is not None:
            # its memfd goes with its pipes (closed here below, as they are)
            child_fds.append(page[0])
            self._deaths, self._death_page = deaths, page[1]
        try:
            launched = await launcher.launch(self.boot, child_fds)
        except BaseException as exc:
            for fd in (*child_fds, from_child_r, to_child_w, out_r):
                os.close(fd)
            self._rfd = self._wfd = self._ofd = -1
            self._give_back_page()
            self.cause = StartupError(f"could not start: {exc}", agent=self.boot.agent)
            self.dead.set_result(self.cause)
            raise self.cause from exc
        finally:
            self._launched.set()
            if self._rfd != -1:
                for fd in child_fds:
                    os.close(fd)
        self._adopt(launched)

    async def _serve(self, startup_timeout: float, serving: Callable[[], None] | None) -> None:
        """Listen to the replica's stream and output; wait for ``Ready``."""
        for fd in (self._rfd, self._wfd, self._ofd):
            os.set_blocking(fd, False)
        loop = self._loop
        loop.add_reader(self._rfd, self._on_readable)
        loop.add_reader(self._ofd, self._on_output)
        if self._pidfd is not None:
            loop.add_reader(self._pidfd, self._on_pidfd)
        self._watch = loop.create_task(self._watch_exit(), name=f"watch-{self.pid}")
        if serving is not None:
            serving()
        try:
            async with asyncio.timeout(startup_timeout):
                await asyncio.shield(self._ready)
        except TimeoutError:
            self.kill(
                StartupError(
                    f"no Ready within {startup_timeout:g}s", agent=self.boot.agent, pid=self.pid
                )
            )
            cause = await self.dead
            assert cause is not None
            if isinstance(cause, StartupError):
                raise cause from None
            raise self._startup_error(cause) from cause
        except StartupError:
            await self.dead
            raise
        except AgentDied as exc:  # killed for what it did before its Ready
            await self.dead
            raise self._startup_error(exc) from exc
        except asyncio.CancelledError:
            self.kill()
            await asyncio.shield(self.dead)
            raise
        self.ready_at = time.monotonic()

    def _startup_error(self, exc: AgentDied) -> StartupError:
        """A death before ``Ready`` as the StartupError it is to a start's caller."""
        return StartupError(
            f"died before Ready: {type(exc).__name__}: {exc}", agent=self.boot.agent, pid=self.pid
        )

    # --- frames in ---------------------------------------------------------

    def _on_readable(self) -> None:
        if self.spin:
            self._hot = time.perf_counter() - self._wrote_at < self.spin
        try:
            chunk = _read(self._rfd)
        except BlockingIOError:
            return
        except OSError:
            self._on_eof()
            return
        if not chunk:
            self._on_eof()
            return
        self._feed(chunk)

    def _feed(self, chunk: bytes | memoryview) -> None:
        try:
            msgs = self._decoder.feed(chunk)
        except FrameError as exc:
            self._violation(str(exc))
            return
        except Exception as exc:  # e.g. MemoryError: what it sent cannot be held
            self._violation(f"its frames cannot be read: {type(exc).__name__}: {exc}")
            return
        ready = self._ready
        for msg in msgs:
            if self._broken:
                return
            if ready.done():
                if isinstance(msg, Ready | StartupFailed):
                    self._violation(f"unexpected {type(msg).__name__} frame after Ready")
                    return
                try:
                    self.handler(self, msg)
                except Exception as exc:
                    # Never into the loop: the replica whose message could not
                    # be handled is stopped (its stream is no longer trusted).
                    self.log.exception("message_not_handled", message=type(msg).__name__)
                    self._violation(f"{type(msg).__name__} could not be handled: {exc}")
                    return
            elif isinstance(msg, Ready):
                ready.set_result(None)
                if self._deaths is not None:  # it holds its page's mutex now
                    report = functools.partial(self._loop.call_soon_threadsafe, self._exit_began)
                    self._deaths.arm(self._death_page, self.pid, report)
                if self.on_ready is not None:
                    self.on_ready()  # (before the frames that follow it are handled)
            elif isinstance(msg, Log):  # logging while it starts (a class agent's __init__)
                log_from_agent(self.log, msg)
            elif isinstance(msg, StartupFailed):
                err = StartupError(
                    f"{msg.type}: {msg.message}", agent=self.boot.agent, pid=self.pid
                )
                err.__notes__ = [msg.traceback]
                self.reason = err
                ready.set_exception(err)
            else:
                self._violation(f"{type(msg).__name__} frame before Ready")
                return

    def _violation(self, what: str) -> None:
        """Kill the replica; nothing it sent from here on is read, let alone trusted."""
        self._broken = True
        if self._rfd != -1:
            self._loop.remove_reader(self._rfd)
        self.kill(ProtocolViolation(what, agent=self.boot.agent, pid=self.pid))

    def _listening(self) -> bool:
        """Its stream is still read (not at its end, not broken off)."""
        return not self._eof and not self._broken

    def _on_eof(self) -> None:
        self._loop.remove_reader(self._rfd)
        self._eof = True
        if not self._gone.is_set() and not self.stopping:
            self._loop.create_task(self._eof_check())

    async def _eof_check(self) -> None:
        # An exiting process closes its fds a moment before it becomes a
        # zombie: give it that moment before calling the EOF a violation (a
        # remote one's status comes through its host: a longer moment).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.2 if self.remote is None else _REMOTE_EOF_WAIT):
                await self._gone.wait()
        if not self._gone.is_set():
            self.kill(
                ProtocolViolation(
                    "closed its protocol pipe while alive", agent=self.boot.agent, pid=self.pid
                )
            )

    def _drain(self) -> None:
        """Read what the child wrote before it died (results are not lost)."""
        while self._rfd != -1 and not self._eof and not self._broken:
            try:
                chunk = _read(self._rfd)
            except BlockingIOError:
                return
            except OSError:
                return
            if not chunk:
                self._eof = True
                return
            self._feed(chunk)

    # --- output ------------------------------------------------------------

    def _on_output(self) -> None:
        try:
            chunk = os.read(self._ofd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._loop.remove_reader(self._ofd)
            self._flush_output(final=True)
            return
        self._obuf += chunk
        self._flush_output()

    def _flush_output(self, final: bool = False) -> None:
        buf = self._obuf
        if not buf:
            return
        lines = buf.split(b"\n")
        rest = b"" if final else lines.pop()
        if len(rest) > _MAX_LINE:
            lines.append(rest)
            rest = b""
        self._obuf = rest
        for raw in lines:
            if not raw and not final:
                continue
            line = raw[:_MAX_LINE].decode("utf-8", "replace")
            if len(raw) > _MAX_LINE:
                line += f" ...[{len(raw) - _MAX_LINE} bytes cut]"
            self.log.info("agent_output", line=line)

    # --- frames out --------------------------------------------------------

    def send(self, msg: Any) -> None:
        """Queue one frame to the child; never blocks.  Dropped if the child is gone."""
        self.send_bytes(self._encoder.encode(msg))

    def send_now(self, msg: Any) -> None:
        """Queue one frame and write what is queued at once, not coalesced with a
        burst: it must be in the pipe before the replica runs again (a thaw)."""
        if self._wfd == -1:
            return
        self._wbuf += self._encoder.encode(msg)
        if not self._writer_armed:
            self._wrote_at = time.perf_counter()
            self._on_writable()

    def send_soon(self, msg: Any) -> None:
        """Queue one frame for the start of the next loop iteration, written with
        what is sent until then (one wake-up of the child for them all)."""
        if self._wfd == -1:
            return
        self._wbuf += self._encoder.encode(msg)
        if not self._flush_soon and not self._writer_armed:
            self._flush_soon = True
            self._loop.call_soon(self._end_burst)

    def encode(self, msg: Any) -> bytearray:
        return self._encoder.encode(msg)

    def send_bytes(self, data: bytes | bytearray) -> None:
        """Write now if nothing is pending; otherwise coalesce.

        A frame is written at once (lowest latency) unless another went out
        within the last ``_BURST`` seconds: then it is gathered with the rest
        of the burst and written at the start of the next loop iteration.
        Waking a blocked reader costs far more than copying bytes, so a burst
        pays for one wake-up, while calls made one at a time never wait for
        an iteration.
        """
        if self._wfd == -1:
            return
        if len(data) > 65536 and not self._wbig:
            self._wbig = True
            _linux.set_pipe_size(self._wfd, _BIG_PIPE)
        if self._wbuf:
            self._wbuf += data
            return
        now = time.perf_counter()
        if now - self._wrote_at < _BURST:
            self._wbuf += data
            if not self._flush_soon:
                self._flush_soon = True
                self._loop.call_soon(self._end_burst)
            return
        self._wrote_at = now
        try:
            n = os.write(self._wfd, data)
        except BlockingIOError:
            n = 0
        except OSError:
            return  # EPIPE: the child is dying; death handling reports it
        if n < len(data):
            self._wbuf += memoryview(data)[n:]
            self._arm_writer()
        elif self._hot:
            _spinner(self._loop).arm(self)  # (one no longer listened to: not polled)

    def flush(self) -> None:
        """Write what is queued now (not at the next loop iteration)."""
        self._end_burst()

    def _end_burst(self) -> None:
        self._flush_soon = False
        if self._wbuf and not self._writer_armed:
            self._wrote_at = time.perf_counter()
            self._on_writable()

    def _arm_writer(self) -> None:
        if not self._writer_armed and self._wfd != -1:
            self._writer_armed = True
            self._loop.add_writer(self._wfd, self._on_writable)

    def _on_writable(self) -> None:
        try:
            n = os.write(self._wfd, self._wbuf)
        except BlockingIOError:
            n = 0
        except OSError:
            n = len(self._wbuf)
        del self._wbuf[:n]
        if self._wbuf:
            self._arm_writer()
        elif self._writer_armed:
            self._writer_armed = False
            self._loop.remove_writer(self._wfd)

    # --- death -------------------------------------------------------------

    def _exit_began(self, looks: int = 0) -> None:
        """Its DeathWatch page changed: settle now if ``/proc`` agrees that it
        is exiting (every thread), before the kernel has freed its memory and
        closed its pipes.  Anything else (a replica writing its own page) is
        left to the usual signs of death.

        Its main thread comes first (the notice is its): while other threads
        are still on their way, it looks again, ``_STRAGGLER_LOOKS`` times at
        most, 0.2 ms later and doubling."""
        pidfd = self._pidfd
        if self.dead.done() or pidfd is None or self._deaths is None:
            return
        found = _linux.exit_started(self.pid, pidfd)
        if found is _linux.STRAGGLING:
            if looks < _STRAGGLER_LOOKS:
                self._loop.call_later(0.0002 * 2**looks, self._exit_began, looks + 1)
            return
        if found is None:
            return
        # A thread started after /proc was listed would go unseen: the
        # SIGKILL leaves none behind (to a process already exiting, a no-op).
        _linux.pidfd_signal(pidfd, signal.SIGKILL)
        self._deaths.noticed += 1
        self._settle(ExitInfo.from_status(*found))

    def _give_back_page(self) -> None:
        """Its process is reaped (or never started): its page is unmapped."""
        if self._deaths is not None:
            self._deaths.give_back(self._death_page)
            self._deaths, self._death_page = None, 0

    def _on_pidfd(self) -> None:
        pidfd = self._pidfd
        assert pidfd is not None
        self._loop.remove_reader(pidfd)
        self._gone.set()
        # It has exited: a zombie until its parent reaps it, and its status is
        # in /proc already.  Settle now rather than after the launcher's
        # report (a hop through the zygote); _watch_exit still waits for that
        # report before it sweeps the leftovers, and its _settle is a no-op.
        found = _linux.zombie_status(self.pid, pidfd)
        if found is not None:
            self._settle(ExitInfo.from_status(*found))

    def orphaned(self) -> bool:
        """Whether the process that forked it (the zygote) died: a replica that
        died with it did nothing wrong.  Certain once :meth:`wait_closed` returned."""
        return self.launcher_lost or self._orphaned()

    @property
    def local(self) -> bool:
        """Its pid is a process of this machine's that we may signal and sweep
        (a remote replica's host does that)."""
        return self.remote is None

    @property
    def alive(self) -> bool:
        return self.pid != 0 and not self.dead.done() and not self._gone.is_set()

    def exiting(self) -> bool:
        """Whether the kernel says it has exited (its pidfd readable), its
        exit handled or not yet."""
        pidfd = self._pidfd
        return pidfd is not None and _linux.readable(pidfd)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the replica and its whole process group."""
        if self.pid == 0 or self.dead.done():
            return
        if self.remote is not None:
            self.remote.signal(sig)
        elif self._pidfd is not None:
            _linux.pidfd_signal(self._pidfd, sig)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
        if self.remote is None:
            _linux.kill_group(self.pid, sig)
        if self.thaw is not None and sig in (signal.SIGKILL, signal.SIGTERM):
            self.thaw()  # after the signal: it dies before it runs again

    def kill(self, reason: AgentDied | None = None) -> None:
        """SIGKILL the replica's process group; ``reason`` classifies the death."""
        if reason is not None and self.reason is None:
            self.reason = reason
        self.signal(signal.SIGKILL)

    async def stop(self, grace: float) -> AgentDied | None:
        """Graceful stop: ``Shutdown``, ``grace`` seconds, SIGTERM, then SIGKILL.

        ``grace`` 0 is OTP's ``brutal_kill`` (SIGKILL at once, no Shutdown);
        ``math.inf`` is ``infinity`` (wait for the replica to exit).
        """
        from agentrt.protocol import Shutdown

        self.stopping = True
        if self.pid == 0 and not self.dead.done():
            if not self._start_called:  # never started: nothing to stop
                self.dead.set_result(None)
                return None
            await self._launched.wait()  # it is being launched: stop it once it exists
        if self.dead.done():
            return self.dead.result()
        if self.thaw is not None and grace > 0:
            self.thaw()  # a stop overrides a pause: it must read its Shutdown
        if self.sweep and self.local:
            self._descendants = await asyncio.to_thread(_linux.descendants, [self.pid])
        if grace <= 0:
            steps: tuple[tuple[int, float], ...] = ((signal.SIGKILL, 5.0),)
        else:
            self.send(Shutdown())
            if grace == math.inf:
                return await asyncio.shield(self.dead)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    return await asyncio.shield(self.dead)
            steps = ((signal.SIGTERM, 0.5), (signal.SIGKILL, 5.0))
        for sig, wait in steps:
            self.signal(sig)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    return await asyncio.shield(self.dead)
        self.log.error("replica_unkillable", pid=self.pid)
        return self.reason

    async def _watch_exit(self) -> None:
        assert self._exited is not None
        try:
            info = await self._exited
        except asyncio.CancelledError:
            # The loop is being torn down under us (asyncio.run cancelling
            # every task): kill the replica and settle ``dead`` anyway, so
            # nothing waits on it forever.
            self.signal(signal.SIGKILL)
            self._settle(ExitInfo(None))
            self._give_back_page()
            raise
        except Exception as exc:  # the launcher lost track: assume killed
            self.launcher_lost = True
            if not self.dead.done():  # else the status came from /proc already
                self.log.warning("exit_status_lost", error=str(exc))
            info = ExitInfo(None)
        self._settle(info)
        self._give_back_page()
        # Nothing the replica started may outlive it: its session and group
        # members, and the descendants seen while it was alive.
        if self.sweep and self.local:
            descendants, self._descendants = self._descendants, []
            await _sweep_later(self.pid, descendants, self._sweep_now)

    def _settle(self, info: ExitInfo) -> None:
        """The process is gone: read its last frames, close, classify, resolve ``dead``.

        Once only: the first status known (from /proc or the launcher) wins."""
        if self.dead.done():
            return
        self._gone.set()
        if self._deaths is not None:
            self._deaths.disarm(self._death_page)
        self.exit = info
        self._drain()
        self._close_fds()
        self.cause = None if (self.stopping and self.reason is None) else self._classify(info)
        if not self._ready.done():
            self._ready.set_exception(
                self.cause
                or StartupError("stopped before Ready", agent=self.boot.agent, pid=self.pid)
            )
            self._ready.exception()  # retrieved: nobody may be waiting any more
        self.dead.set_result(self.cause)

    async def wait_closed(self, now: bool = False) -> None:
        """Wait until the process is reaped and its leftovers are swept
        (``now``: the sweep does not wait for others to share its pass)."""
        if now:
            self._sweep_now = True
            sweep_now()
        if self._watch is not None:
            # wait(), not shield(): a watcher cancelled by loop teardown must
            # not cancel the caller (close() still has work to do).
            await asyncio.wait({self._watch})

    def _classify(self, info: ExitInfo) -> AgentDied:
        kw: dict[str, Any] = {
            "agent": self.boot.agent,
            "pid": self.pid,
            "exit_code": info.exit_code,
            "signal": info.signal,
        }
        r = self.reason
        if r is not None:
            r.exit_code, r.signal = info.exit_code, info.signal
            return r
        sig = info.signal
        cpu_limit = self.boot.cpu_time
        if sig == signal.SIGXCPU or (
            cpu_limit is not None and sig == signal.SIGKILL and (info.cpu or 0) >= cpu_limit
        ):
            return LimitExceeded(
                f"CPU time limit of {cpu_limit:g}s exceeded ({info.describe()})",
                limit="cpu_time",
                value=cpu_limit,
                **kw,
            )
        if info.exit_code == EXIT_MEMORY and self.boot.memory is not None:
            return LimitExceeded(
                f"memory limit of {self.boot.memory} bytes exceeded (MemoryError)",
                limit="memory",
                value=self.boot.memory,
                **kw,
            )
        if info.exit_code == EXIT_STARTUP and not self._ready.done():
            return StartupError(f"failed during startup ({info.describe()})", **kw)
        if not self._ready.done():
            return StartupError(f"died before Ready ({info.describe()})", **kw)
        return AgentCrashed(
            f"replica {self.boot.agent}#{self.boot.replica} {info.describe()}", **kw
        )

    def _close_fds(self) -> None:
        loop = self._loop
        if self._ofd != -1:
            # Pick up the last lines it printed, then stop listening.
            with contextlib.suppress(OSError):
                while True:
                    chunk = os.read(self._ofd, _READ_SIZE)
                    if not chunk:
                        break
                    self._obuf += chunk
            self._flush_output(final=True)
        for attr in ("_rfd", "_wfd", "_ofd"):
            fd = getattr(self, attr)
            if fd != -1:
                loop.remove_reader(fd)
                loop.remove_writer(fd)
                os.close(fd)
                setattr(self, attr, -1)
        if self._pidfd is not None:
            loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        self._wbuf.clear()

    def rss(self) -> int | None:
        """Resident set size in bytes (from /proc; cheap, but do not loop it on the event loop)."""
        if not self.local:
            return None
        try:
            with open(f"/proc/{self.pid}/statm", "rb") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None
