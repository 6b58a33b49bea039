"""The ``ray`` backend: each replica a Ray actor, anywhere on a Ray cluster.

``[supervisor] backend = "ray"`` (``pip install 'agentrt[ray]'``).  Ray
places replicas; agentrt still supervises them:

* every replica is one actor (:class:`ReplicaHost`), placed by Ray with the
  replica's resource requests (``num_cpus``: the profile's ``limits.cpu`` or
  ``[supervisor] ray_num_cpus``; ``memory``: ``limits.memory``).  The actor
  starts the replica's process on its node
  (``python -m agentrt.backends.ray_child``), which runs the same
  :func:`~agentrt.worker.child_main` as a local replica: the sandbox settings
  the node's kernel holds, the rlimits, the worker loop.  Settings the node
  cannot hold fail the start under ``enforce = "strict"`` and are dropped
  with a ``sandbox_unenforced`` warning otherwise.
* the protocol is the local one, on a stream: the actor connects two TCP
  connections to the supervisor (frames, output), each introduced by a
  one-time token, and hands them to the replica's process.  A frame costs a
  TCP round trip, not a Ray method call (``benchmarks/bench_ray.py``
  measures both).
* the actor reaps the replica and returns its exit status and CPU time
  (:meth:`ReplicaHost.wait`), so a death is classified as on the local
  backend (exit code, signal, memory and CPU limits).  An actor that dies
  (killed, its node lost) is a replica killed by SIGKILL, with Ray's reason.
  Ray's own restarts are off (``max_restarts = 0``): agentrt's strategies
  and restart intensity decide, as on the local backend.
* signals (kill, pause and resume) go through the actor, which sends them to
  the replica's process group on its node.  Nothing here signals a pid of
  another machine's.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from typing import Any

import msgspec

from agentrt import _linux
from agentrt.config import SupervisorSpec
from agentrt.process import ExitInfo, Launched
from agentrt.protocol import Boot

__all__ = ["RayLauncher", "ReplicaHost", "cluster_summary"]

_TOKEN = 16
#: what an actor sends first on each connection: its token and which stream it is
_HELLO = _TOKEN + 1
_DATA, _OUTPUT = b"D", b"O"
#: how long a connection may take to say which replica it is
_HELLO_WAIT = 10.0
#: connections not yet introduced, at most (the oldest makes room for a new one)
_MAX_PENDING = 1024
#: the listener's answer to a hello it accepted (the actor waits for it)
_ACCEPTED = b"\x01"
#: times a replica's exit is asked again of an actor Ray says is unavailable for now
_UNAVAILABLE_RETRIES = 20
#: how long after a SIGKILL the actor may take to report before it is killed itself
_KILL_WAIT = 5.0
#: an actor's directory on its node (its replica's boot file and workdir)
_BASE_PREFIX = "agentrt-ray-"
#: in an actor's directory: made once the actor holds its lock
_OWNED = ".locked"


def ray_module() -> Any:
    """``ray``, or a clear error naming the extra to install."""
    try:
        return importlib.import_module("ray")
    except ImportError as exc:
        raise RuntimeError(
            "[supervisor] backend = \"ray\" needs Ray: pip install 'agentrt[ray]'"
        ) from exc


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast, naming the address, where a cluster's ``host:port`` does not
    answer (``ray.init`` would retry for a minute or more)."""
    if address in ("local", "auto"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except (OSError, ValueError) as exc:
        raise RuntimeError(
            f"[supervisor] address: the Ray cluster at {address} cannot be reached: {exc}"
        ) from None


# --- the actor (runs on a Ray node) -------------------------------------------------


class ReplicaHost:
    """The Ray actor behind one replica: starts its process, signals and reaps it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._pidfd = -1
        self._reaped = False
        self._base = ""
        #: the base directory, opened and locked while this actor lives
        self._base_fd = -1
        self._stopped: list[int] = []

    def start(
        self, raw: bytes, preload: list[str], host: str, port: int, token: bytes
    ) -> dict[str, Any]:
        """Connect the replica's streams to the supervisor and start its process."""
        boot = msgspec.msgpack.decode(raw, type=Boot)
        boot, warnings = fit_to_node(boot)
        self._base = tempfile.mkdtemp(prefix=_BASE_PREFIX)
        try:
            self._base_fd = _own(self._base)
            pid = self._start(boot, preload, host, port, token)
            # (while the replica boots: the sweep overlaps its start)
            remove_abandoned(os.path.dirname(self._base))
        except BaseException:
            if self._proc is not None:
                self._proc.kill()
                self._proc.wait()
                self._reaped = True
            self._remove_base()
            raise
        ray = ray_module()
        return {
            "pid": pid,
            "ip": ray.util.get_node_ip_address(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "warnings": warnings,
        }

    def _start(self, boot: Boot, preload: list[str], host: str, port: int, token: bytes) -> int:
        boot = msgspec.structs.replace(
            boot,
            workdir=os.path.join(self._base, "work"),
            sys_path=[*boot.sys_path, *(p for p in sys.path if p and p not in boot.sys_path)],
        )
        path = os.path.join(self._base, "boot")
        with open(path, "wb") as f:
            f.write(msgspec.msgpack.encode((msgspec.msgpack.encode(boot), preload)))
        data = _connect(host, port, token + _DATA)
        out = _connect(host, port, token + _OUTPUT)
        try:
            rfd = data.fileno()
            wfd = os.dup(rfd)
            ofd = out.fileno()
            try:
                argv = [sys.executable, "-m", "agentrt.backends.ray_child", str(os.getpid())]
                self._proc = subprocess.Popen(
                    [*argv, str(rfd), str(wfd), str(ofd), path],
                    pass_fds=(rfd, wfd, ofd),
                    stdin=subprocess.DEVNULL,
                    cwd=self._base,
                )
            finally:
                os.close(wfd)
        finally:
            data.close()
            out.close()
        self._pidfd = os.pidfd_open(self._proc.pid)
        return self._proc.pid

    def wait(self) -> tuple[int, float]:
        """Block until the replica exits: its raw wait status and CPU seconds.

        Its process group goes with it (what it started and left behind)."""
        proc = self._proc
        assert proc is not None
        os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED | os.WNOWAIT)
        with self._lock:
            # A zombie still holds its pid and group id: neither is reused yet.
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            _pid, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            self._reaped = True
            os.close(self._pidfd)
        self._remove_base()
        return status, usage.ru_utime + usage.ru_stime

    def _remove_base(self) -> None:
        """Remove the actor's directory, then let go of its lock."""
        shutil.rmtree(self._base, ignore_errors=True)
        if self._base_fd != -1:
            os.close(self._base_fd)
            self._base_fd = -1

    def signal(self, sig: int) -> None:
        """``sig`` to the replica and its process group (nothing once it is reaped)."""
        with self._lock:
            if self._proc is None or self._reaped:
                return
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self._pidfd, sig)
            with contextlib.suppress(OSError):
                os.killpg(self._proc.pid, sig)

    def freeze(self) -> None:
        """SIGSTOP the replica's tree, until each process of it has stopped."""
        with self._lock:
            if self._proc is not None and not self._reaped:
                self._stopped = _linux.stop_tree(self._proc.pid, [])

    def thaw(self) -> None:
        with self._lock:
            stopped, self._stopped = self._stopped, []
            if self._reaped:
                return
            for pid in stopped:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGCONT)


def _own(base: str) -> int:
    """Lock the actor's new directory ``base`` for as long as the actor lives
    (the kernel lets go of the lock when the process dies, however it dies);
    the open directory."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(os.open(_OWNED, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600, dir_fd=fd))
    except BaseException:
        os.close(fd)
        raise
    return fd


def remove_abandoned(tmp: str) -> list[str]:
    """Remove the directories of actors on this node that died without
    removing theirs (killed by Ray, their node's raylet gone); the paths removed.

    A directory is abandoned when it says its actor locked it (``.locked``)
    and its lock is free: its actor is gone (an actor removes its own
    directory before letting go of the lock).
    """
    removed = []
    with contextlib.suppress(OSError), os.scandir(tmp) as entries:
        for entry in entries:
            if not entry.name.startswith(_BASE_PREFIX) or not entry.is_dir(follow_symlinks=False):
                continue
            if not os.path.exists(os.path.join(entry.path, _OWNED)):
                continue  # not an actor's, or one between its mkdtemp and its lock
            try:
                fd = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its actor lives
            else:
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(entry.path)
            finally:
                os.close(fd)
    return removed


def _connect(host: str, port: int, hello: bytes) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=_HELLO_WAIT)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(hello)
        if sock.recv(1) != _ACCEPTED:  # not taken (the listener was full, or is gone)
            raise ConnectionError(f"the supervisor at {host}:{port} did not accept the stream")
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return sock


def fit_to_node(boot: Boot) -> tuple[Boot, list[tuple[str, str]]]:
    """The Boot with what this node's kernel cannot hold taken out, and what was.

    Under ``strict`` a setting that cannot hold is an error instead."""
    from agentrt import sandbox

    caps = sandbox.probe()
    abi: int = caps["landlock_abi"]
    lost: list[tuple[str, str]] = []
    changes: dict[str, Any] = {}
    if boot.network == "none" and not caps["net_ns"]:
        lost.append(("network", f"no network namespace: {caps['net_ns_error']}"))
        changes["network"] = "host"
    if boot.fs_read is not None and not abi:
        lost.append(("filesystem", "Landlock is not available in this kernel"))
        changes["fs_read"] = None
        changes["fs_write"] = []
    if boot.ptrace_isolation and abi < 2 and boot.fs_read is None:
        lost.append(("isolation.ptrace", f"Landlock ABI {abi} (2 needed)"))
        changes["ptrace_isolation"] = False
    if boot.scope and abi < 6:
        lost.append(("isolation.signal", f"Landlock ABI {abi} (6 needed)"))
        changes["scope"] = False
    if boot.run_uid is not None and not caps["root"] and boot.run_uid != os.geteuid():
        lost.append(("run_as", "the node's Ray worker is not root"))
        changes["run_uid"] = changes["run_gid"] = None
    node = socket.gethostname()
    if lost and boot.strict:
        setting, why = lost[0]
        raise RuntimeError(f"{setting} cannot be enforced on Ray node {node}: {why}")
    return msgspec.structs.replace(boot, **changes), [(s, f"{w} (node {node})") for s, w in lost]


# --- the supervisor's side -----------------------------------------------------------


class _Listener:
    """Where replicas' actors connect their streams; each names its replica by token.

    A connection that has not yet said which replica it is holds a slot; when
    all are taken, the oldest is closed for the newest.  An actor says hello
    as soon as it connects, so a flood of idle connections (from anywhere the
    listener can be reached) pushes out its own, not the actors'."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.host, self.port = sock.getsockname()[:2]
        self._waiting: dict[bytes, dict[bytes, asyncio.Future[socket.socket]]] = {}
        self._task: asyncio.Task[None] | None = None
        #: connections saying hello, oldest first
        self._hellos: dict[asyncio.Task[None], None] = {}

    @classmethod
    def open(cls, host: str) -> _Listener:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.bind((host, 0))
        sock.listen(1024)
        sock.setblocking(False)
        listener = cls(sock)
        listener._task = asyncio.get_running_loop().create_task(listener._serve())
        return listener

    def expect(self, token: bytes) -> tuple[asyncio.Future[socket.socket], ...]:
        loop = asyncio.get_running_loop()
        futs = {kind: loop.create_future() for kind in (_DATA, _OUTPUT)}
        self._waiting[token] = futs
        return futs[_DATA], futs[_OUTPUT]

    def forget(self, token: bytes) -> None:
        for fut in self._waiting.pop(token, {}).values():
            if fut.done() and not fut.cancelled():
                fut.result().close()  # connected, never taken
            else:
                fut.cancel()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _addr = await loop.sock_accept(self.sock)
            except OSError:  # EMFILE and the like: the listener stays, and tries again
                await asyncio.sleep(0.1)
                continue
            if len(self._hellos) >= _MAX_PENDING:
                next(iter(self._hellos)).cancel()  # the oldest makes room
            task = loop.create_task(self._hello(conn))
            self._hellos[task] = None
            task.add_done_callback(self._hellos.pop)

    async def _hello(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        got = b""
        try:
            async with asyncio.timeout(_HELLO_WAIT):
                while len(got) < _HELLO:
                    chunk = await loop.sock_recv(conn, _HELLO - len(got))
                    if not chunk:
                        break
                    got += chunk
                fut = self._waiting.get(got[:_TOKEN], {}).get(got[_TOKEN:])
                if len(got) != _HELLO or fut is None or fut.done():
                    conn.close()  # not one of ours, or said too little
                    return
                await loop.sock_sendall(conn, _ACCEPTED)
        except (TimeoutError, OSError):
            conn.close()
            return
        except BaseException:  # cancelled: pushed out, or the listener is closing
            conn.close()
            raise
        if fut.done():  # forgotten meanwhile
            conn.close()
            return
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        fut.set_result(conn)

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._hellos) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for token in list(self._waiting):
            self.forget(token)
        self.sock.close()


class _RayReplica:
    """:class:`agentrt.process.Remote` for one replica's actor."""

    def __init__(self, ray: Any, actor: Any) -> None:
        self._ray = ray
        self.actor = actor
        self.where = ""
        self.done = False
        self._loop = asyncio.get_running_loop()
        self._refs: set[Any] = set()

    def _fire(self, ref: Any) -> None:
        # Kept until it settles, and its error (a dead actor) taken: Ray
        # reports an error nobody fetched as unhandled.
        self._refs.add(ref)

        def settled(fut: Any) -> None:
            self._refs.discard(ref)
            fut.exception()

        ref.future().add_done_callback(settled)

    def signal(self, sig: int) -> None:
        if self.done:
            return
        self._fire(self.actor.signal.remote(sig))
        if sig == signal.SIGKILL:
            # An actor that does not report the death soon is killed itself.
            self._loop.call_later(_KILL_WAIT, self.kill_actor)

    def kill_actor(self) -> None:
        """``ray.kill`` the actor, off the event loop (it asks Ray's control service)."""
        if not self.done:
            self._loop.run_in_executor(None, self._kill)

    def _kill(self) -> None:
        with contextlib.suppress(Exception):
            self._ray.kill(self.actor, no_restart=True)

    async def freeze(self) -> None:
        try:
            await self.actor.freeze.remote()
        except Exception as exc:
            raise OSError(f"the replica's actor did not pause it: {exc}") from exc

    def thaw(self) -> None:
        if not self.done:
            self._fire(self.actor.thaw.remote())


#: supervisors of this process on the ray backend, and whether one of them
#: started (or joined) Ray: the last one to close shuts it down
_init_lock = threading.Lock()
_users = 0
_started_ray = False


class RayLauncher:
    """Replicas as Ray actors (see the module's doc)."""

    name = "ray"
    remote = True
    deaths = None  # (a remote replica's death comes through its host)

    def __init__(self, spec: SupervisorSpec, log: Any) -> None:
        self.spec = spec
        self.log = log
        self._ray: Any = None
        self._counted = False
        self._listener: _Listener | None = None
        self._host_cls: Any = None
        self._live: set[_RayReplica] = set()

    async def start(self) -> None:
        global _users
        ray = self._ray = ray_module()
        with _init_lock:
            _users += 1
            self._counted = True
        await asyncio.to_thread(self._init)
        host = ray.util.get_node_ip_address()
        self._listener = _Listener.open(host)
        self._host_cls = ray.remote(ReplicaHost)
        self.log.info(
            "ray_connected",
            address=self.spec.address,
            nodes=sum(1 for n in ray.nodes() if n.get("Alive")),
            listen=f"{host}:{self._listener.port}",
        )

    def _init(self) -> None:
        global _started_ray
        ray = self._ray
        address = self.spec.address
        with _init_lock:
            if ray.is_initialized():
                # The application (or another supervisor) joined Ray already:
                # that connection is used, and left open.
                if address not in ("local", "auto"):
                    self.log.info("ray_already_initialized", address=address)
                return
            # From a thread (it blocks for seconds), so that Ray leaves the
            # program's SIGTERM handler alone.
            join_ray(ray, address)
            _started_ray = True

    def _options(self, boot: Boot) -> dict[str, Any]:
        opts: dict[str, Any] = {
            "num_cpus": boot.cpu if boot.cpu is not None else self.spec.ray_num_cpus,
            "max_restarts": 0,
            "max_task_retries": 0,
            # start, wait, and the signals that arrive meanwhile
            "max_concurrency": 4,
            "scheduling_strategy": self.spec.ray_strategy,
        }
        if boot.memory is not None:
            opts["memory"] = boot.memory
        return opts

    async def launch(self, boot: Boot, fds: list[int]) -> Launched:
        assert self._listener is not None and not fds  # it makes the stream itself
        ray = self._ray
        token = secrets.token_bytes(_TOKEN)
        data_f, out_f = self._listener.expect(token)
        replica: _RayReplica | None = None
        made: list[int] = []
        try:
            actor = self._host_cls.options(**self._options(boot)).remote()
            replica = _RayReplica(ray, actor)
            raw = msgspec.msgpack.encode(boot)
            try:
                lst = self._listener
                preload = list(self.spec.preload)
                info = await actor.start.remote(raw, preload, lst.host, lst.port, token)
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None) or exc
                raise RuntimeError(f"its Ray actor: {cause}") from None
            data, out = await asyncio.gather(data_f, out_f)
            made.append(data.detach())
            made.append(out.detach())
            made.append(os.dup(made[0]))
        except BaseException:
            for fd in made:
                os.close(fd)
            self._listener.forget(token)
            if replica is not None:
                replica.kill_actor()
            raise
        replica.where = f"{info['ip']} {info['node_id'][:12]}"
        for setting, why in info["warnings"]:
            self.log.warning("sandbox_unenforced", agent=boot.agent, setting=setting, why=why)
        self._live.add(replica)
        rfd, ofd, wfd = made
        return Launched(
            info["pid"],
            None,
            self._exited(replica, token),
            fds=(rfd, wfd, ofd),
            remote=replica,
        )

    async def _exited(self, replica: _RayReplica, token: bytes) -> ExitInfo:
        ray = self._ray
        try:
            for _ in range(_UNAVAILABLE_RETRIES):
                try:
                    status, cpu = await replica.actor.wait.remote()
                    return ExitInfo.from_status(status, cpu)
                except ray.exceptions.ActorUnavailableError:
                    await asyncio.sleep(0.5)  # Ray retries reaching it: ask again
            status, cpu = await replica.actor.wait.remote()
            return ExitInfo.from_status(status, cpu)
        except ray.exceptions.RayActorError as exc:
            return ExitInfo(-signal.SIGKILL, None, detail=f"its Ray actor died: {_first_line(exc)}")
        finally:
            replica.kill_actor()
            replica.done = True
            self._live.discard(replica)
            if self._listener is not None:
                self._listener.forget(token)

    async def close(self) -> None:
        live = [r for r in self._live if not r.done]
        self._live.clear()

        def kill_all() -> None:
            for r in live:
                r._kill()

        if live:
            await asyncio.to_thread(kill_all)
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        global _users, _started_ray
        if self._counted:
            self._counted = False
            with _init_lock:
                _users -= 1
                last = _users == 0 and _started_ray
                if last:
                    _started_ray = False
            if last:  # the Ray instance one of us started, and nobody uses it now
                await asyncio.to_thread(self._ray.shutdown)


class _NotMainThread:
    """Drops Ray's warning that it set no SIGTERM handler when joined from a
    thread (``RayLauncher._init``): leaving the program's handler alone is wanted."""

    def filter(self, record: Any) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


_QUIET = _NotMainThread()


def join_ray(ray: Any, address: str) -> None:
    """``ray.init`` for agentrt: an unreachable address fails fast, Ray's logs
    stay out of the program's output, no dashboard for a local instance."""
    logging.getLogger("ray._private.worker").addFilter(_QUIET)  # once: the same filter
    kw: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address == "local":
        kw["include_dashboard"] = False
    check_reachable(address)
    ray.init(address=address, **kw)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("ActorDiedError") and "class_name" not in line:
            return line[:300]
    return type(exc).__name__


def cluster_summary(address: str) -> dict[str, Any]:
    """The cluster's nodes, CPUs and memory (``agentrt doctor``); joins it for the look."""
    ray = ray_module()
    owned = not ray.is_initialized()
    if owned:
        join_ray(ray, address)
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        return {
            "address": address,
            "ray": ray.__version__,
            "nodes": [
                {
                    "node": n.get("NodeManagerHostname", ""),
                    "ip": n.get("NodeManagerAddress", ""),
                    "cpus": n.get("Resources", {}).get("CPU", 0.0),
                    "memory": int(n.get("Resources", {}).get("memory", 0)),
                }
                for n in nodes
            ],
        }
    finally:
        if owned:
            ray.shutdown()
