"""The local backend: replica processes on this machine.

``zygote`` (the default) forks replicas from a preloaded single-threaded
zygote; ``spawn`` starts each in a fresh interpreter of its own; ``forkserver``
and ``fork`` start them through the ``multiprocess`` package.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import signal
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from agentrt.deathwatch import DeathWatch
from agentrt.process import ExitInfo, Launched, Launcher
from agentrt.protocol import Boot
from agentrt.zygote import ZygoteClient

__all__ = ["MultiprocessLauncher", "SpawnLauncher", "ZygoteLauncher", "make_launcher"]


class ZygoteLauncher:
    """Replicas forked by the zygote (about a millisecond each).

    The zygote is a supervised child like any other: when it dies (killed,
    OOM, a crash) its replicas die with it, and the next launch starts a new
    zygote, if ``may_restart(why)`` agrees (the supervisor's own restart
    intensity).

    A replica inherits its zygote's memory, the zygote's initial environment
    block included: removing a variable from ``os.environ`` does not remove
    its value from there.  So the replicas of agents with an ``env``
    allowlist are forked from a zygote of their own per allowlist, started
    (at the first such agent) with only the variables it lets through and
    those the interpreter needs to start: a secret the allowlist hides is
    not in their memory at all.
    """

    name = "zygote"
    remote = False
    deaths: DeathWatch | None

    def __init__(
        self,
        preload: list[str],
        sys_path: list[str],
        rundir: str = "",
        may_restart: Callable[[str], bool] | None = None,
        spares: int = 0,
        spare_cgroups: list[str] | None = None,
        spares_min: int = 0,
    ) -> None:
        self._args = (preload, sys_path, rundir, spares, spare_cgroups or [], spares_min)
        #: the zygote of agents without an env allowlist
        self.client = ZygoteClient(*self._args)
        #: the zygotes of agents with one, by allowlist (started on first use)
        self.fenced: dict[tuple[str, ...], ZygoteClient] = {}
        # Replicas' deaths noticed as they start to exit (see agentrt.deathwatch).
        watch = DeathWatch()
        self.deaths = watch if watch.on else None
        self._may_restart = may_restart
        self._restarts: dict[tuple[str, ...] | None, asyncio.Future[None]] = {}
        self._closed = False

    async def start(self) -> None:
        await self.client.start()

    def _current(self, key: tuple[str, ...] | None) -> ZygoteClient | None:
        return self.client if key is None else self.fenced.get(key)

    async def _live(self, key: tuple[str, ...] | None) -> ZygoteClient:
        """The running zygote for ``key`` (None: the main one; else an env
        allowlist); a new one if it died, or none was started yet."""
        while (client := self._current(key)) is None or client.closed:
            if self._closed:
                raise RuntimeError("the zygotes are closed")
            restart = self._restarts.get(key)
            if restart is None or restart.done():
                restart = self._restarts[key] = asyncio.ensure_future(self._replace(key, client))
            await asyncio.shield(restart)
        return client

    async def _replace(self, key: tuple[str, ...] | None, dead: ZygoteClient | None) -> None:
        if dead is not None:
            of = "" if key is None else f" of env allowlist {list(key)}"
            why = f"the zygote{of} (pid {dead.pid}) exited"
            await dead.close()  # reap it
            if self._may_restart is not None and not self._may_restart(why):
                raise RuntimeError(f"{why} and is not restarted (restart intensity)")
        if key is None:
            client = ZygoteClient(*self._args)
        else:
            # (spares as the main zygote's, but not spares_min: four at first)
            client = ZygoteClient(*self._args[:5], 0, _fenced_env(key))
        try:
            await client.start()
        except RuntimeError as exc:
            if key is None:
                raise
            # (a preload that works in the main zygote may need a variable
            # this allowlist hides: say which zygote failed)
            raise RuntimeError(
                f"{exc} (in the zygote of env allowlist {list(key)}, whose preload"
                " modules see only the variables it lets through)"
            ) from exc
        if key is None:
            self.client = client
        else:
            self.fenced[key] = client

    def expect(self, allowlists: Iterable[tuple[str, ...]]) -> None:
        """Agents with these ``env`` allowlists (:func:`allowlist_key`) are
        about to start: their zygotes start now, in the background, beside
        the main one.  One that fails is started again at its first launch
        (which reports the failure if it fails again)."""
        for key in allowlists:
            if self._closed or self._current(key) is not None or key in self._restarts:
                continue
            early = self._restarts[key] = asyncio.ensure_future(self._replace(key, None))
            early.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def launch(self, boot: Boot, fds: list[int]) -> Launched:
        key = allowlist_key(boot.env_allow)
        client = await self._live(key)
        pid, pidfd = await client.fork(boot, fds)
        status = client.exit_status(pid)

        async def exited() -> ExitInfo:
            raw, cpu = await status
            return ExitInfo.from_status(raw, cpu)

        return Launched(pid, pidfd, exited(), lambda: not client.alive())

    async def close(self) -> None:
        self._closed = True
        for restart in list(self._restarts.values()):
            if not restart.done():
                restart.cancel()
                with contextlib.suppress(BaseException):
                    await restart
        try:
            clients = [self.client, *self.fenced.values()]
            results = await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
            for r in results:
                if isinstance(r, BaseException):
                    raise r
        finally:
            if self.deaths is not None:
                self.deaths.close()


def _mp_child(boot: Boot, conns: list[Any]) -> None:
    """Target of a ``multiprocess`` replica: unwrap the fds and become a worker."""
    import asyncio.events

    from agentrt.worker import child_main

    asyncio.events._set_running_loop(None)  # a forked copy of the supervisor's loop thread
    fds = [c.fileno() for c in conns]
    child_main(boot, fds[0], fds[1], fds[2])


class MultiprocessLauncher:
    """Replicas started by ``multiprocess`` (``forkserver`` or ``fork``)."""

    remote = False
    deaths = None  # (their deaths are noticed at their pipes' end)

    def __init__(self, method: str, preload: list[str], sys_path: list[str]) -> None:
        import multiprocess

        self.name = method
        self.ctx = multiprocess.get_context(method)
        if method == "forkserver":
            self.ctx.set_forkserver_preload(["agentrt.worker", *preload])
        self.sys_path = sys_path

    async def start(self) -> None:
        return None

    async def launch(self, boot: Boot, fds: list[int]) -> Launched:
        from multiprocess.connection import Connection

        # proc.start() below blocks the loop for milliseconds (a fork of this
        # process, or a spawn): let what is ready run first.  A replacement is
        # launched right after its predecessor's calls failed, and their
        # callers then get their errors before the fork, not after it.
        await asyncio.sleep(0)
        conns = [Connection(os.dup(fd)) for fd in fds]
        if self.sys_path:
            boot = _with_sys_path(boot, self.sys_path)
        proc = self.ctx.Process(target=_mp_child, args=(boot, conns), name=f"agentrt-{boot.agent}")
        try:
            # From the loop's thread: PR_SET_PDEATHSIG follows the creating thread.
            proc.start()
        finally:
            for c in conns:
                c.close()
        pidfd = os.pidfd_open(proc.pid)
        # Not multiprocess's sentinel: the replica closes every fd it did not
        # ask for, that one included.
        done, unwatch = _watch_exit(pidfd)

        async def exited() -> ExitInfo:
            try:
                await done
                # It has exited: join only collects the status (for forkserver,
                # from the server's pipe, written as soon as it reaps).
                await asyncio.to_thread(proc.join, 5.0)
                return ExitInfo(proc.exitcode)
            finally:
                unwatch()
                with contextlib.suppress(Exception):
                    proc.close()

        return Launched(proc.pid, pidfd, exited())

    async def close(self) -> None:
        """Stop the helper processes multiprocess started for us (forkserver,
        resource tracker); the next use starts them again."""
        await asyncio.to_thread(self._stop_helpers)

    def _stop_helpers(self) -> None:
        import multiprocess.forkserver
        import multiprocess.resource_tracker

        if self.name == "forkserver":
            multiprocess.forkserver._forkserver._stop()
        multiprocess.resource_tracker._resource_tracker._stop()


#: what a spawned replica's interpreter runs (``-c``, with ``-P``: nothing is
#: put before ``sys.path``): agentrt is imported from where the supervisor's
#: came from, then the replica's own path comes from its Boot
_SPAWN_BOOTSTRAP = """\
import sys
sys.path.insert(0, {root!r})
from agentrt.worker import spawned_main
sys.path.remove({root!r})
spawned_main({fds})
"""
#: variables an interpreter may need to start (its loader's, its own, and
#: HOME for the user's site-packages), kept whatever the agent's ``env``
#: allowlist (which removes them from its environment once it runs)
_START_VARIABLES = ("LD_*", "PYTHONHOME", "PYTHONPATH", "HOME")


def _reap_later(pid: int) -> None:
    """Collect child ``pid``'s exit on a thread of its own: a spawned replica
    whose watcher is gone (its loop closed without the supervisor's close)
    must not stay a zombie."""

    def wait() -> None:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)

    threading.Thread(target=wait, name=f"agentrt-reap-{pid}", daemon=True).start()


def allowlist_key(env_allow: Sequence[str] | None) -> tuple[str, ...] | None:
    """Which zygote forks the replicas of an agent with this ``env`` allowlist:
    one per set of patterns (None: no allowlist, the main zygote)."""
    return None if env_allow is None else tuple(sorted(set(env_allow)))


def _fenced_env(allow: Sequence[str]) -> dict[str, str]:
    """Our environment as a process whose agent has the ``env`` allowlist
    ``allow`` starts with: what it lets through, and what the interpreter
    needs to start (the agent's ``confine`` removes those later).  The rest
    never reaches such a process's memory (``os.environ``'s deletions leave
    the strings of a process's initial environment in place)."""
    pats = [*allow, *_START_VARIABLES]
    return {k: v for k, v in os.environ.items() if any(fnmatch.fnmatchcase(k, p) for p in pats)}


def _spawn_env(boot: Boot) -> dict[str, str]:
    """The environment a spawned replica starts with (see :func:`_fenced_env`)."""
    return dict(os.environ) if boot.env_allow is None else _fenced_env(boot.env_allow)


class SpawnLauncher:
    """Replicas started as fresh interpreters (``start_method = "spawn"``).

    Nothing of the supervisor's process is inherited but the replica's pipes
    and the environment its ``env`` allowlist lets through: the interpreter,
    in a session of its own from the start, runs agentrt's worker, which
    reads its Boot from a memfd and imports the agent's entry.  Unlike a
    ``multiprocess`` spawn child it does not import the supervisor's
    ``__main__`` again (nor ``multiprocess`` and ``dill``): a script's
    top-level code runs in the supervisor and where a replica imports its
    entry, no more (an entry must name a module: ``__main__`` in a replica
    is not the supervisor's program), and a replica answers in about half
    the time (212-224 ms against 384-394 here).
    """

    name = "spawn"
    remote = False
    deaths = None  # (their deaths are noticed at their pipes' end)

    def __init__(self, sys_path: list[str]) -> None:
        self.sys_path = sys_path

    async def start(self) -> None:
        return None

    async def launch(self, boot: Boot, fds: list[int]) -> Launched:
        import subprocess

        import msgspec
        import multiprocess.spawn
        import multiprocess.util

        from agentrt.zygote import _ROOT

        # The fork below blocks the loop for a moment: what is ready runs first
        # (as in MultiprocessLauncher.launch).
        await asyncio.sleep(0)
        if self.sys_path:
            boot = _with_sys_path(boot, self.sys_path)
        # (a memfd, not argv, which any user's ps shows, nor a pipe, which
        # would hold a large Boot back until the child reads it)
        boot_fd = os.memfd_create("agentrt-boot", os.MFD_CLOEXEC)
        try:
            data = msgspec.msgpack.encode(boot)
            while data:
                data = data[os.write(boot_fd, data) :]
            os.lseek(boot_fd, 0, os.SEEK_SET)
            exe = multiprocess.spawn.get_executable()
            code = _SPAWN_BOOTSTRAP.format(root=_ROOT, fds=", ".join(map(str, [boot_fd, *fds])))
            # From the loop's thread: PR_SET_PDEATHSIG follows the creating
            # thread.  An exec that fails raises here, with its reason.
            proc = subprocess.Popen(  # noqa: ASYNC220 (from this thread, see above)
                [exe, *multiprocess.util._args_from_interpreter_flags(), "-P", "-c", code],
                executable=exe,
                stdin=subprocess.DEVNULL,
                pass_fds=[boot_fd, *fds],
                env=_spawn_env(boot),
                start_new_session=True,
            )
        finally:
            os.close(boot_fd)
        pid = proc.pid
        pidfd = -1
        try:
            pidfd = os.pidfd_open(pid)
            done, unwatch = _watch_exit(pidfd)
        except OSError:  # (EMFILE): no replica it cannot watch
            if pidfd != -1:
                os.close(pidfd)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            proc.returncode = -signal.SIGKILL  # (reaped here, not by Popen)
            _reap_later(pid)
            raise

        async def exited() -> ExitInfo:
            # (a returncode on every way out, so that Popen never waits for it:
            # its pid may be another process's once reaped)
            proc.returncode = -signal.SIGKILL
            waiting = False
            try:
                await done
                # It has exited (its pidfd is readable): the wait only reaps it
                # (on its thread, which reaps it even if this is cancelled).
                waiting = True
                try:
                    _pid, status, usage = await asyncio.to_thread(os.wait4, pid, 0)
                except ChildProcessError:  # reaped by someone else (a waitpid(-1))
                    return ExitInfo(None)
                info = ExitInfo.from_status(status, usage.ru_utime + usage.ru_stime)
                proc.returncode = info.exit_code
                return info
            finally:
                unwatch()
                if not waiting:  # (cancelled first: the loop is going away)
                    _reap_later(pid)

        return Launched(pid, pidfd, exited())

    async def close(self) -> None:
        return None


def _watch_exit(pidfd: int) -> tuple[asyncio.Future[None], Callable[[], None]]:
    """A future done once the process of ``pidfd`` has exited (the loop reads
    a copy of the pidfd, which turns readable then), and what ends the watch."""
    watch_fd = os.dup(pidfd)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def on_exit() -> None:
        loop.remove_reader(watch_fd)
        if not done.done():
            done.set_result(None)

    def unwatch() -> None:
        loop.remove_reader(watch_fd)
        os.close(watch_fd)

    loop.add_reader(watch_fd, on_exit)
    return done, unwatch


def _with_sys_path(boot: Boot, extra: list[str]) -> Boot:
    import msgspec

    return msgspec.structs.replace(boot, sys_path=[*extra, *boot.sys_path])


def make_launcher(
    method: str,
    preload: list[str],
    sys_path: list[str],
    rundir: str = "",
    may_restart: Callable[[str], bool] | None = None,
    spares: int = 0,
    spare_cgroups: list[str] | None = None,
    spares_min: int = 0,
) -> Launcher:
    """The launcher for ``start_method`` (``may_restart``: whether a dead zygote
    may be replaced; ``rundir``: removed by the zygote if it outlives us;
    ``spare_cgroups``: where the zygote's spares wait in groups of their own)."""
    if method == "zygote":
        return ZygoteLauncher(
            preload, sys_path, rundir, may_restart, spares, spare_cgroups, spares_min
        )
    if method == "spawn":
        return SpawnLauncher(sys_path)
    return MultiprocessLauncher(method, preload, sys_path)
