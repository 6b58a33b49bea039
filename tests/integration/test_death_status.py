"""A replica's exit status is read from /proc the moment it dies, and only trusted then.

The supervisor settles a dead replica as soon as its pidfd turns readable:
the replica is a zombie until its parent reaps it, and its wait status is in
``/proc/<pid>/stat`` already (:func:`agentrt._linux.zombie_status`).  That
read is trusted only when the pidfd, checked after it, still refers to an
unreaped process; otherwise the status the launcher reaped is used, as it
is for a clean exit.  These tests pin down:

* the /proc reader against real children: the status waitpid then reports,
  nothing once the child is reaped (its pid may be another process's), and
  nothing for a clean exit or a live process;
* the zygote's report (made before it reaps, from waitid) encodes the same
  status as waitpid;
* an :class:`AgentProcess` is settled by the /proc status while the
  launcher has not reported yet, and the later report changes nothing (no
  second settle, nothing left pending, no unretrieved exception);
* SIGKILL, SIGSEGV and ``os._exit(3)`` are classified as before, under every
  start method, and with the /proc read disabled (the launcher's status).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import select
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from agentrt import AgentCrashed, _linux
from agentrt.backends.local import ZygoteLauncher
from agentrt.process import AgentProcess, ExitInfo, Launched
from agentrt.protocol import Boot
from agentrt.zygote import _wait_status

# --- children of the test process -----------------------------------------------------


def _segfault() -> None:
    import ctypes
    import faulthandler
    import resource

    faulthandler.disable()  # pytest's handler would print a traceback first
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    ctypes.string_at(0)


#: how each child dies, and the wait status waitpid reports for it
DEATHS = {
    "exit3": (lambda: os._exit(3), 3 << 8),
    "sigkill": (lambda: os.kill(os.getpid(), signal.SIGKILL), signal.SIGKILL),
    "segfault": (_segfault, signal.SIGSEGV),
    "exit0": (lambda: os._exit(0), 0),
}


class Child:
    """A forked child of the test process, with a pidfd; reaped on close."""

    def __init__(self, death: str | None) -> None:
        self.hold_r, self.hold_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                # Only its own end of its own pipe: the write end of an earlier
                # child's pipe, inherited, would keep that child from its EOF.
                os.closerange(3, self.hold_r)
                os.closerange(self.hold_r + 1, 1 << 20)
                os.read(self.hold_r, 1)  # wait for release()
                if death is not None:
                    DEATHS[death][0]()
            finally:
                os._exit(70)
        os.close(self.hold_r)
        self.pid = pid
        self.pidfd = os.pidfd_open(pid)
        self.reaped: int | None = None

    def release(self) -> None:
        """Let the child die (as its ``death`` says), and wait until it has: a zombie."""
        os.close(self.hold_w)
        self.hold_w = -1
        readable, _, _ = select.select([self.pidfd], [], [], 10.0)
        assert readable, "the child did not exit"

    def reap(self) -> int:
        _pid, status = os.waitpid(self.pid, 0)
        self.reaped = status
        return status

    def close(self) -> None:
        if self.hold_w != -1:
            os.close(self.hold_w)
            self.hold_w = -1
        if self.reaped is None:
            self.reap()
        os.close(self.pidfd)


@pytest.fixture
def child() -> Iterator[Any]:
    made: list[Child] = []

    def make(death: str | None = "exit3") -> Child:
        c = Child(death)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


# --- the /proc reader ------------------------------------------------------------------


@pytest.mark.parametrize("death", ["exit3", "sigkill", "segfault"])
def test_zombie_status_is_the_status_waitpid_then_reports(child, death):
    c = child(death)
    c.release()
    found = _linux.zombie_status(c.pid, c.pidfd)
    assert found is not None, "a zombie's status was not read"
    status, cpu = found
    assert cpu >= 0.0
    assert _linux.child_cpu(c.pid) == cpu  # what the zygote reports, before it reaps
    assert status == c.reap() == DEATHS[death][1]


def test_zombie_status_of_a_child_reaped_before_the_read_is_not_trusted(child):
    c = child("exit3")
    c.release()
    c.reap()
    assert _linux.zombie_status(c.pid, c.pidfd) is None


def test_a_read_that_found_another_process_is_discarded_by_the_pidfd_check(child):
    # As if the first child's pid had been reused by the second between its
    # reap and the read: /proc shows a genuine zombie with a status, but the
    # check made after the read, on the first child's pidfd, rejects it.
    reaped, other = child("exit3"), child("sigkill")
    reaped.release()
    reaped.reap()
    other.release()
    assert _linux.zombie_status(other.pid, reaped.pidfd) is None
    found = _linux.zombie_status(other.pid, other.pidfd)
    assert found is not None and found[0] == signal.SIGKILL


def test_zombie_status_leaves_a_clean_exit_and_a_live_process_to_the_parent(child):
    live = child("exit0")
    assert _linux.zombie_status(live.pid, live.pidfd) is None  # running: no status yet
    assert _linux.pidfd_alive(live.pidfd)
    live.release()
    # 0 is also what the kernel prints to a reader that may not ptrace the
    # process: not told apart, so never trusted.
    assert _linux.zombie_status(live.pid, live.pidfd) is None
    assert _linux.pidfd_alive(live.pidfd)  # a zombie still
    assert live.reap() == 0
    assert not _linux.pidfd_alive(live.pidfd)


# --- the zygote's report ---------------------------------------------------------------


@pytest.mark.parametrize("death", ["exit3", "sigkill", "segfault", "exit0"])
def test_the_zygotes_status_from_waitid_is_the_one_waitpid_reports(child, death):
    c = child(death)
    c.release()
    info = os.waitid(os.P_PID, c.pid, os.WEXITED | os.WNOWAIT)
    assert info is not None
    assert _wait_status(info.si_code, info.si_status) == c.reap() == DEATHS[death][1]


def test_a_core_dump_keeps_its_flag_in_the_zygotes_status():
    status = _wait_status(os.CLD_DUMPED, signal.SIGSEGV)
    assert os.WIFSIGNALED(status) and os.WCOREDUMP(status)
    assert os.WTERMSIG(status) == signal.SIGSEGV
    assert ExitInfo.from_status(status).signal == signal.SIGSEGV


# --- one AgentProcess, its launcher held back -------------------------------------------


class HeldLauncher:
    """The zygote launcher, with each replica's exit report held until ``release``."""

    name = "zygote-held"
    remote = False
    deaths = None  # (settled from /proc at the pidfd, the way under test)

    def __init__(self, fixtures_dir: Path) -> None:
        self.inner = ZygoteLauncher([], [str(fixtures_dir)])
        self.gate = asyncio.Event()
        self.reported: list[ExitInfo] = []

    async def start(self) -> None:
        await self.inner.start()

    async def launch(self, boot: Boot, fds: list[int]) -> Launched:
        launched = await self.inner.launch(boot, fds)
        real = launched.exited

        async def exited() -> ExitInfo:
            info = await real
            await self.gate.wait()
            self.reported.append(info)
            return info

        return Launched(launched.pid, launched.pidfd, exited())

    async def close(self) -> None:
        await self.inner.close()


@contextlib.asynccontextmanager
async def _one_replica(fixtures_dir: Path, entry: str = "agents:echo") -> Any:
    """An AgentProcess on a HeldLauncher; asyncio errors (never-retrieved
    exceptions among them) are collected instead of logged."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    old_handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    launcher = HeldLauncher(fixtures_dir)
    await launcher.start()
    boot = Boot(
        agent="probe",
        replica=0,
        generation=0,
        entry=entry,
        workdir=str(fixtures_dir),
        sys_path=[str(fixtures_dir)],
        supervisor_pid=os.getpid(),
        launch_dir=os.getcwd(),
    )
    proc = AgentProcess(boot, lambda _proc, _msg: None, structlog.get_logger())
    try:
        await proc.start(launcher, 10.0)
        yield proc, launcher, errors
    finally:
        launcher.gate.set()
        proc.kill()
        await proc.wait_closed()
        await launcher.close()
        gc.collect()  # a future dropped with its exception unretrieved reports it now
        loop.set_exception_handler(old_handler)


async def _turns(n: int = 5) -> None:
    """Let the loop run a few iterations (no time passes: ordering only)."""
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_killed_replica_is_settled_before_its_launcher_reports(fixtures_dir):
    async with _one_replica(fixtures_dir) as (proc, launcher, errors):
        pid = proc.pid
        # The zygote, stopped, can neither reap the replica nor report it: the
        # replica stays a zombie, and only its /proc status can settle it.
        zygote = launcher.inner.client.pid
        os.kill(zygote, signal.SIGSTOP)
        try:
            await asyncio.to_thread(os.waitid, os.P_PID, zygote, os.WSTOPPED)  # it has stopped
            os.kill(pid, signal.SIGKILL)
            async with asyncio.timeout(10):
                cause = await proc.dead
        finally:
            os.kill(zygote, signal.SIGCONT)
        assert launcher.reported == []
        assert isinstance(cause, AgentCrashed), repr(cause)
        assert (cause.signal, cause.exit_code, cause.pid) == (signal.SIGKILL, -9, pid)
        assert proc.exit is not None and proc.exit.signal == signal.SIGKILL
        first_exit = proc.exit

        # wait_closed still waits for the launcher (its report is held now):
        # the sweep follows that report.
        closed = asyncio.ensure_future(proc.wait_closed())
        await _turns()
        assert not closed.done()
        launcher.gate.set()
        async with asyncio.timeout(10):
            await closed
        # The report came and changed nothing.
        assert [i.signal for i in launcher.reported] == [signal.SIGKILL]
        assert proc.dead.result() is cause
        assert proc.exit is first_exit
    assert errors == [], errors
    left = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
    assert left == set(), left


async def test_a_clean_exit_waits_for_the_launchers_status(fixtures_dir):
    async with _one_replica(fixtures_dir) as (proc, launcher, errors):
        watch = os.pidfd_open(proc.pid)
        try:
            stopping = asyncio.ensure_future(proc.stop(5.0))  # Shutdown: exits with 0
            exited = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().add_reader(
                watch, lambda: exited.done() or exited.set_result(None)
            )
            try:
                async with asyncio.timeout(10):
                    await exited
            finally:
                asyncio.get_running_loop().remove_reader(watch)
            await _turns()  # the replica's own pidfd callback has run too
            assert not proc.dead.done(), "a status of 0 from /proc was trusted"
            launcher.gate.set()
            async with asyncio.timeout(10):
                assert await stopping is None  # stopped on request: no cause
            assert proc.exit == launcher.reported[0]
            assert proc.exit is not None and proc.exit.exit_code == 0
        finally:
            os.close(watch)
    assert errors == [], errors


async def test_a_replica_reaped_before_the_read_is_classified_from_the_launcher(
    fixtures_dir, monkeypatch
):
    monkeypatch.setattr(_linux, "zombie_status", lambda _pid, _pidfd: None)
    async with _one_replica(fixtures_dir) as (proc, launcher, errors):
        os.kill(proc.pid, signal.SIGSEGV)
        async with asyncio.timeout(10):
            await proc._gone.wait()  # its pidfd turned readable: it is a zombie now
        await _turns()
        assert not proc.dead.done()  # nothing but the held report can settle it now
        launcher.gate.set()
        async with asyncio.timeout(10):
            cause = await proc.dead
        assert isinstance(cause, AgentCrashed), repr(cause)
        assert cause.signal == signal.SIGSEGV
        assert proc.exit == launcher.reported[0]
    assert errors == [], errors


# --- through a Supervisor --------------------------------------------------------------

CRASHES = [
    ("agents:kill_self", None, -signal.SIGKILL, signal.SIGKILL),
    ("agents:segfault", None, -signal.SIGSEGV, signal.SIGSEGV),
    ("agents:exit_with", {"code": 3}, 3, None),
]


async def _crashes_are_classified(sup: Any, agent_spec: Any, logs: Any) -> None:
    for i, (entry, _args, _code, _sig) in enumerate(CRASHES):
        await sup.start(agent_spec(f"bad{i}", entry))
    before = {s.agent: s.pid for s in await sup.status()}
    errs = await asyncio.gather(
        *(sup.call(f"bad{i}", args) for i, (_e, args, _c, _s) in enumerate(CRASHES)),
        return_exceptions=True,
    )
    for i, (err, (entry, _args, code, sig)) in enumerate(zip(errs, CRASHES, strict=True)):
        assert isinstance(err, AgentCrashed), f"{entry}: {err!r}"
        assert (err.exit_code, err.signal) == (code, sig), entry
        assert err.pid == before[f"bad{i}"]
        # and replaced
        ready = await logs.wait_for("replica_ready", agent=f"bad{i}", generation=1)
        assert ready["pid"] != err.pid


@pytest.mark.parametrize("method", ["zygote", "fork", "forkserver", "spawn"])
async def test_crashes_are_classified_as_before_under_every_start_method(
    method, make_supervisor, agent_spec, logs
):
    try:
        async with make_supervisor(start_method=method) as sup:
            await _crashes_are_classified(sup, agent_spec, logs)
    finally:
        if method in ("forkserver", "spawn"):
            _stop_multiprocess_helpers()


async def test_crashes_are_classified_from_the_zygotes_report_without_proc(
    make_supervisor, agent_spec, logs, monkeypatch
):
    monkeypatch.setattr(_linux, "zombie_status", lambda _pid, _pidfd: None)
    async with make_supervisor() as sup:
        await _crashes_are_classified(sup, agent_spec, logs)


def _stop_multiprocess_helpers() -> None:
    """Safety net: stop the process-wide helpers of ``multiprocess`` if close() did not."""
    from multiprocess import forkserver, resource_tracker

    with contextlib.suppress(Exception):
        forkserver._forkserver._stop()
    with contextlib.suppress(Exception):
        resource_tracker._resource_tracker._stop()


async def test_deaths_at_once_share_one_sweep(make_supervisor, agent_spec, monkeypatch, logs):
    """The leftovers of replicas that die together are swept in one pass over
    /proc (each pass reads every process), off the replacements' way."""
    from agentrt import _linux, process

    passes: list[list[int]] = []
    real = _linux.kill_tree

    def spy(leaders, extra=()):
        passes.append(sorted(leaders))
        return real(leaders, extra)

    monkeypatch.setattr(_linux, "kill_tree", spy)
    monkeypatch.setattr(process, "_SWEEP_AFTER", 0.5)  # both deaths fall within it
    async with make_supervisor(intensity=10) as sup:
        await sup.start(agent_spec("w", "agents:whoami", replicas=2))
        pids = sorted(s.pid for s in await sup.status())
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        for i in (0, 1):
            await logs.wait_for("replica_ready", agent="w", replica=i, generation=1)
        slots = sup._pool.agents["w"].slots
        for slot in slots:
            assert slot.dead_proc is not None and slot.dead_proc.pid in pids
            await slot.dead_proc.wait_closed()  # its sweep is done
        got = {r["pid"] for r in await asyncio.gather(*(sup.call("w") for _ in range(8)))}
        assert got and not got & set(pids)
    assert pids in passes  # one pass for the two
    assert not any(len(p) == 1 and p[0] in pids for p in passes)


def test_a_sweep_torn_down_before_its_pass_still_kills_and_lets_the_loop_go():
    """A loop torn down while deaths wait for their shared pass (asyncio.run
    cancelling every task): the pass is made there and then, for every death
    waiting on it, and nothing pending is left to keep the loop alive."""
    import gc
    import subprocess
    import sys
    import weakref

    from agentrt import process

    # Two "dead replicas' leftovers": sessions of their own, still running.
    left = [
        subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
        )
        for _ in range(2)
    ]
    loop_ref: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def main() -> None:
        loop_ref.append(weakref.ref(asyncio.get_running_loop()))
        waits = [asyncio.ensure_future(process._sweep_later(p.pid, [])) for p in left]
        await asyncio.sleep(0)  # both wait for the pass (_SWEEP_AFTER away)
        for w in waits:
            w.cancel()
        for w in waits:
            with pytest.raises(asyncio.CancelledError):
                await w

    try:
        asyncio.run(main())
        assert [p.wait(timeout=10) for p in left] == [-signal.SIGKILL] * 2
        gc.collect()
        assert loop_ref[0]() is None
    finally:
        for p in left:
            if p.poll() is None:
                p.kill()
                p.wait()
