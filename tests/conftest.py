"""Shared fixtures for the real-process suites.

* ``no_leaks`` (autouse): after every test, no child process of the test
  process is left and no file descriptor was leaked.  The test process is
  made a child subreaper at start-up, so an orphaned agent process (its
  zygote gone) is re-parented to us and counts as a leaked child too.
* ``fixtures_dir``: ``tests/fixtures``, for ``Supervisor(base_dir=...)`` so
  that ``entry="agents:echo"`` imports.
* ``make_supervisor`` / ``agent_spec``: a Supervisor and AgentSpecs with the
  short timeouts and backoff that keep the suite fast.
* ``logs``: every structlog event, recorded; ``await logs.wait_for(...)``
  waits for one (an event, never a sleep loop).
* ``healthy``: checks that the ``agents:echo`` agent of a supervisor answers.
* ``make_gate``: FIFOs that agents block on (``agents:gate``) or report through.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import structlog

from agentrt import AgentSpec, Supervisor, _linux
from agentrt.observe import configure_logging

FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"

#: how long a leaked child may take to finish exiting before it counts as leaked
CHILD_EXIT_WAIT = 3.0
#: one bounded wait for fds whose closing the event loop finishes late
FD_CLOSE_WAIT = 0.2


def pytest_configure(config: pytest.Config) -> None:
    # Orphans of our descendants come back to us (instead of init): the leak
    # check sees them, and their zombies are reaped by psutil.wait_procs.
    with contextlib.suppress(OSError):
        _linux.set_child_subreaper()
    # The test process is an application that configured its logging: the
    # supervisors it embeds log through it (and the ``logs`` fixture sees it).
    configure_logging("console", "debug")


# --- leak checks ---------------------------------------------------------------


def _open_fds() -> dict[int, str]:
    """``{fd: what it points at}`` for this process (the listing's own fd excluded)."""
    out: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the directory fd of the listing itself, closed by now
    return out


def _leaked_fds(before: dict[int, str]) -> dict[int, str]:
    now = _open_fds()
    return {fd: target for fd, target in now.items() if fd not in before}


def _describe(p: psutil.Process) -> str:
    try:
        return f"{p.pid} {p.status()} {' '.join(p.cmdline())[:120]!r}"
    except psutil.Error:
        return f"{p.pid} (gone)"


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail the test if it leaves a child process or an open fd behind."""
    fds_before = _open_fds()
    yield
    problems: list[str] = []

    children = psutil.Process().children(recursive=True)
    if children:
        # Exiting children get a bounded moment to finish (and are reaped).
        _gone, alive = psutil.wait_procs(children, timeout=CHILD_EXIT_WAIT)
        if alive:
            problems.append("child processes left: " + "; ".join(_describe(p) for p in alive))
            for p in alive:
                with contextlib.suppress(psutil.Error):
                    p.send_signal(signal.SIGKILL)
            psutil.wait_procs(alive, timeout=CHILD_EXIT_WAIT)

    leaked = _leaked_fds(fds_before)
    if leaked:
        gc.collect()  # an fd held by an unreachable object is closed by its finaliser
        leaked = _leaked_fds(fds_before)
    if leaked:
        threading.Event().wait(FD_CLOSE_WAIT)  # one bounded wait, not a polling loop
        leaked = _leaked_fds(fds_before)
    if leaked:
        problems.append(f"file descriptors leaked: {leaked}")

    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# --- supervisors and specs -----------------------------------------------------


@pytest.fixture
def fixtures_dir() -> Path:
    """``tests/fixtures``: pass it as ``Supervisor(base_dir=...)``."""
    return FIXTURES_DIR


@pytest.fixture
def make_supervisor(fixtures_dir: Path) -> Callable[..., Supervisor]:
    """``make_supervisor(**settings)``: a Supervisor on the fixtures dir, fast backoff."""

    def make(**settings: Any) -> Supervisor:
        settings.setdefault("backoff", 0.01)
        settings.setdefault("backoff_max", 0.05)
        return Supervisor(base_dir=fixtures_dir, **settings)

    return make


@pytest.fixture
def agent_spec() -> Callable[..., AgentSpec]:
    """``agent_spec(name, entry, **fields)``: an AgentSpec with short grace periods."""

    def spec(name: str, entry: str, **fields: Any) -> AgentSpec:
        fields.setdefault("shutdown_timeout", 0.2)
        fields.setdefault("cancel_grace", 0.2)
        fields.setdefault("startup_timeout", 10.0)
        # A bound on every call, so a test that goes wrong fails instead of hanging.
        fields.setdefault("timeout", 20.0)
        return AgentSpec(name=name, entry=entry, **fields)

    return spec


@pytest.fixture
def healthy() -> Callable[..., Any]:
    """``await healthy(sup, agent="echo")``: the echo agent answers a few calls at once."""

    async def check(sup: Supervisor, agent: str = "echo", n: int = 3) -> None:
        results = await asyncio.gather(
            *(sup.call(agent, {"probe": i}, timeout=10) for i in range(n))
        )
        assert results == [{"probe": i} for i in range(n)]

    return check


# --- FIFO gates ------------------------------------------------------------------


class Gate:
    """A FIFO an agent blocks on (``agents:gate``) or reports through.

    The test holds the FIFO open read-write, so neither side's ``open`` ever
    blocks; :meth:`release` writes one line, :meth:`read_line` awaits one.
    """

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = str(path)
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self._buf = b""

    def release(self, line: str = "go") -> None:
        os.write(self.fd, line.encode() + b"\n")

    async def read_line(self, timeout: float = 10.0) -> str:
        loop = asyncio.get_running_loop()
        while b"\n" not in self._buf:
            ready: asyncio.Future[None] = loop.create_future()
            loop.add_reader(self.fd, lambda f=ready: f.done() or f.set_result(None))
            try:
                async with asyncio.timeout(timeout):
                    await ready
            finally:
                loop.remove_reader(self.fd)
            with contextlib.suppress(BlockingIOError):
                self._buf += os.read(self.fd, 4096)
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode()

    def close(self) -> None:
        if self.fd != -1:
            os.close(self.fd)
            self.fd = -1


@pytest.fixture
def make_gate(tmp_path: Path) -> Iterator[Callable[[str], Gate]]:
    """``make_gate(name)``: a :class:`Gate` in the test's tmp dir (closed afterwards)."""
    gates: list[Gate] = []

    def make(name: str = "gate") -> Gate:
        g = Gate(tmp_path / name)
        gates.append(g)
        return g

    yield make
    for g in gates:
        g.close()


# --- structlog recording -------------------------------------------------------


class LogRecorder:
    """A structlog processor that keeps every event and wakes waiters.

    It passes each event on to the configured processors, so the console
    output pytest shows for a failed test stays as it was.
    """

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self._waiters: list[tuple[dict[str, Any], asyncio.Future[dict[str, Any]]]] = []
        self._lock = threading.Lock()

    def __call__(self, _logger: Any, method: str, event_dict: Any) -> Any:
        entry = dict(event_dict)
        entry.setdefault("log_level", method)
        with self._lock:
            self.entries.append(entry)
            waiters = list(self._waiters)
        for fields, fut in waiters:
            if _matches(entry, fields):
                fut.get_loop().call_soon_threadsafe(_set_once, fut, entry)
        return event_dict

    def find(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        """Recorded events named ``event`` whose fields include ``fields``."""
        want = {"event": event, **fields}
        with self._lock:
            return [e for e in self.entries if _matches(e, want)]

    async def wait_for(self, event: str, *, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        """The first event named ``event`` with ``fields`` (recorded or still to come)."""
        want = {"event": event, **fields}
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        with self._lock:
            for e in self.entries:
                if _matches(e, want):
                    return e
            self._waiters.append((want, fut))
        try:
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            with self._lock:
                self._waiters = [w for w in self._waiters if w[1] is not fut]


def _matches(entry: dict[str, Any], fields: dict[str, Any]) -> bool:
    return all(k in entry and entry[k] == v for k, v in fields.items())


def _set_once(fut: asyncio.Future[dict[str, Any]], entry: dict[str, Any]) -> None:
    if not fut.done():
        fut.set_result(entry)


@pytest.fixture
def logs() -> Iterator[LogRecorder]:
    """Record structlog events for the duration of the test."""
    recorder = LogRecorder()
    processors = structlog.get_config()["processors"]
    old = list(processors)
    # Keep the list object: loggers bound earlier hold a reference to it.
    processors.insert(0, recorder)
    structlog.configure(processors=processors)
    try:
        yield recorder
    finally:
        processors.clear()
        processors.extend(old)
        structlog.configure(processors=processors)
