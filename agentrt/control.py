"""The run's control socket: how ``agentrt ctl`` reaches a running supervisor.

One Unix socket per run, ``ctl.sock`` in the run's directory (the directory
is 0700, the socket 0600).  Each connection's peer credentials
(``SO_PEERCRED``) are checked: only the supervisor's own uid, or root, is
served; anyone else gets one refusal frame and a closed connection, and the
refusal is logged and audited.

The wire is the project's framing (a 4-byte length, then MessagePack):
:data:`~agentrt.protocol.ControlRequest` in, one
:data:`~agentrt.protocol.ControlReply` out per request (``tail``: a stream
of ``CtlEvent`` frames).  Nothing a client sends can hurt the run:

* a frame over :data:`~agentrt.protocol.CONTROL_MAX_FRAME` or of length 0 is
  refused from its prefix (an error reply, then the connection closes);
* an undecodable request, an unknown command, an unknown id or target gets
  an error reply naming the problem, and the connection stays usable;
* at most :data:`MAX_CLIENTS` connections at once; a connection idle for
  :data:`IDLE_TIMEOUT`, or that sends half a frame and stops, is closed;
* a client that does not read its replies is dropped once
  :data:`MAX_BUFFERED` bytes wait for it (a ``tail`` too).

Besides the server (:class:`ControlServer`) this module has the client
(:class:`ControlClient`, blocking, for the command line) and run discovery:
each run writes ``run.json`` (its id, pid, working directory, start time,
socket) into its directory, and :func:`find_run` picks the most recent
live run started from a directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
import struct
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from agentrt import _linux
from agentrt.errors import AgentrtError, ControlError
from agentrt.protocol import (
    CONTROL_MAX_FRAME,
    HEADER,
    ControlReply,
    ControlRequest,
    CtlEvent,
    CtlFailed,
    CtlOk,
    CtlTail,
    FrameEncoder,
)

__all__ = [
    "IDLE_TIMEOUT",
    "MAX_BUFFERED",
    "MAX_CLIENTS",
    "RUN_PREFIX",
    "SOCKET_NAME",
    "ControlClient",
    "ControlHandler",
    "ControlServer",
    "Peer",
    "RunInfo",
    "find_run",
    "list_runs",
    "write_run_info",
]

#: connections served at once; past it, new ones are closed at once
MAX_CLIENTS = 32
#: seconds a connection may wait between requests, or inside one, before it is closed
IDLE_TIMEOUT = 300.0
#: seconds the rest of a frame may take once its length has come
FRAME_TIMEOUT = 10.0
#: bytes of replies (or tail events) that may wait for a client that does not read
MAX_BUFFERED = 1 << 20
#: the socket's name in the run's directory
SOCKET_NAME = "ctl.sock"
#: run directories' prefix (in the temporary directory), and their run file
RUN_PREFIX = "agentrt-"
RUN_FILE = "run.json"
_CRED = struct.Struct("3i")


@dataclass(frozen=True, slots=True)
class Peer:
    """A control client, from ``SO_PEERCRED``: its pid, uid, gid and command line."""

    pid: int
    uid: int
    gid: int
    cmd: str


def peer_of(sock: socket.socket) -> Peer:
    pid, uid, gid = _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))
    return Peer(pid, uid, gid, _cmdline(pid))


def _cmdline(pid: int, limit: int = 300) -> str:
    """A process's command line, shortened (``""`` when it cannot be read)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read(4096)
    except OSError:
        return ""
    text = " ".join(p.decode("utf-8", "replace") for p in raw.split(b"\0") if p)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


class ControlHandler(Protocol):
    """What the server asks of the supervisor (the facade implements it)."""

    async def control(self, request: Any, peer: Peer) -> Any:
        """Carry out one request; its value (msgpack-encodable builtins), or a
        raised :class:`~agentrt.errors.AgentrtError` (sent back as ``CtlFailed``)."""
        ...

    def control_tail(self, last: int) -> tuple[list[dict[str, Any]], AsyncIterator[dict[str, Any]]]:
        """The last ``last`` events, and the stream of those to come."""
        ...

    def control_refused(self, peer: Peer, why: str) -> None:
        """A client that may not control this run connected (log and audit it)."""
        ...


class _Unread(Exception):
    """A client left replies unread past the bounds: it is dropped."""


class ControlServer:
    """Serves one run's control socket on the event loop."""

    def __init__(self, path: str, handler: ControlHandler, log: Any) -> None:
        self.path = path
        self.handler = handler
        self.log = log
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._encoder = FrameEncoder(CONTROL_MAX_FRAME)
        self._decoder = msgspec.msgpack.Decoder(ControlRequest)

    async def start(self) -> None:
        old = os.umask(0o177)  # the socket is made 0600
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=self.path)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for t in list(self._conns):
            t.cancel()
        if self._conns:
            await asyncio.wait(set(self._conns))
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            await self._connection(reader, writer)
        except asyncio.CancelledError:
            pass
        except asyncio.IncompleteReadError as exc:
            if exc.partial:  # it stopped in the middle of a frame
                self.log.warning("control_client_dropped", why="the connection ended mid-frame")
        except _Unread:
            self.log.warning("control_client_dropped", why="it does not read its replies")
        except TimeoutError:
            self.log.warning("control_client_dropped", why="nothing came within the time allowed")
        except ConnectionError:
            pass  # it left
        except Exception:  # a bug of ours: logged, never the run's problem
            self.log.exception("control_connection_failed")
        finally:
            self._conns.discard(task)
            writer.transport.abort()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        try:
            peer = peer_of(sock)
        except OSError as exc:
            self.log.warning("control_refused", why=f"no peer credentials: {exc}")
            return
        if peer.uid not in (os.getuid(), 0):
            why = f"uid {peer.uid} may not control a run of uid {os.getuid()}"
            self.handler.control_refused(peer, why)
            await self._reply(writer, CtlFailed("PermissionError", why))
            return
        if len(self._conns) > MAX_CLIENTS:
            why = f"too many control connections ({MAX_CLIENTS})"
            self.log.warning("control_refused", pid=peer.pid, uid=peer.uid, why=why)
            await self._reply(writer, CtlFailed("ControlError", why))
            return
        while True:
            header = await asyncio.wait_for(reader.readexactly(HEADER), IDLE_TIMEOUT)
            n = int.from_bytes(header, "big")
            if n == 0 or n > CONTROL_MAX_FRAME:
                why = f"frame of {n} bytes (at most {CONTROL_MAX_FRAME})"
                self.log.warning("control_bad_frame", pid=peer.pid, uid=peer.uid, why=why)
                await self._reply(writer, CtlFailed("FrameError", why))
                return
            body = await asyncio.wait_for(reader.readexactly(n), FRAME_TIMEOUT)
            try:
                request = self._decoder.decode(body)
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
                self.log.warning("control_bad_request", pid=peer.pid, uid=peer.uid, error=str(exc))
                await self._reply(writer, CtlFailed("BadRequest", f"not a control request: {exc}"))
                continue
            if isinstance(request, CtlTail):
                await self._tail(writer, request)
                if request.follow:
                    return
                continue
            try:
                value = await self.handler.control(request, peer)
                reply: Any = CtlOk(value)
            except AgentrtError as exc:
                reply = CtlFailed(type(exc).__name__, str(exc))
            except Exception as exc:
                self.log.exception("control_request_failed", request=type(request).__name__)
                reply = CtlFailed("InternalError", f"{type(exc).__name__}: {exc}")
            await self._reply(writer, reply)

    async def _reply(self, writer: asyncio.StreamWriter, reply: Any) -> None:
        try:
            frame = self._encoder.encode(reply)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            frame = self._encoder.encode(CtlFailed("InternalError", f"reply not encodable: {exc}"))
        writer.write(frame)
        try:
            if writer.transport.get_write_buffer_size() > MAX_BUFFERED:
                raise TimeoutError
            await asyncio.wait_for(writer.drain(), FRAME_TIMEOUT)
        except TimeoutError:
            raise _Unread from None

    async def _tail(self, writer: asyncio.StreamWriter, request: CtlTail) -> None:
        past, future = self.handler.control_tail(request.last)
        try:
            for ev in past:
                await self._reply(writer, CtlEvent(ev))
            if not request.follow:
                await self._reply(writer, CtlOk(None))
                return
            async for ev in future:
                await self._reply(writer, CtlEvent(ev))
        finally:
            aclose = getattr(future, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()


# --- the client (blocking: for the command line) ---------------------------------


class ControlClient:
    """Talks to one run's control socket: ``ControlClient(path).request(CtlStatus())``."""

    def __init__(self, path: str, timeout: float | None = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self._encoder = FrameEncoder(CONTROL_MAX_FRAME)
        self._decoder = msgspec.msgpack.Decoder(ControlReply)

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        return sock

    def _read(self, sock: socket.socket) -> Any:
        header = _recv_exactly(sock, HEADER)
        n = int.from_bytes(header, "big")
        if n == 0 or n > CONTROL_MAX_FRAME:
            raise ControlError(f"the supervisor sent a frame of {n} bytes")
        return self._decoder.decode(_recv_exactly(sock, n))

    def request(self, request: Any) -> Any:
        """Send one request; its value, or :class:`ControlError` with the reason."""
        with self._connect() as sock:
            # refused before it read the request: the reply says why
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(self._encoder.encode(request))
            try:
                reply = self._read(sock)
            except (EOFError, ConnectionResetError) as exc:
                raise ControlError(f"no reply: {exc}") from None
        if isinstance(reply, CtlFailed):
            raise ControlError(
                f"{reply.type}: {reply.message}" if reply.type != "ControlError" else reply.message
            )
        if isinstance(reply, CtlOk):
            return reply.value
        raise ControlError(f"unexpected reply {type(reply).__name__}")

    def tail(self, last: int = 20, follow: bool = True) -> Iterator[dict[str, Any]]:
        """The run's events: the last ``last``, then (``follow``) each new one."""
        with self._connect() as sock:
            if follow:
                sock.settimeout(None)
            sock.sendall(self._encoder.encode(CtlTail(last=last, follow=follow)))
            while True:
                try:
                    reply = self._read(sock)
                except EOFError:
                    return  # the run ended
                if isinstance(reply, CtlEvent):
                    yield reply.event
                elif isinstance(reply, CtlFailed):
                    raise ControlError(reply.message)
                else:
                    return


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("the supervisor closed the connection")
        buf += chunk
    return bytes(buf)


# --- finding runs ----------------------------------------------------------------


class RunInfo(msgspec.Struct, kw_only=True):
    """A run, as its ``run.json`` describes it."""

    id: str
    pid: int
    #: ``"pid start-time"``: tells the supervisor from a later process of its pid
    identity: str
    cwd: str
    started: float
    socket: str
    dir: str = ""


def write_run_info(rundir: str, info: RunInfo) -> None:
    """Write ``run.json`` (0600) into the run's directory."""
    path = os.path.join(rundir, RUN_FILE)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(msgspec.json.encode(info))


def list_runs(tmp: str | None = None) -> list[RunInfo]:
    """The live runs this user can reach, most recent first."""
    tmp = tmp or tempfile.gettempdir()
    try:
        names = os.listdir(tmp)
    except OSError:
        return []
    out: list[RunInfo] = []
    for name in names:
        if not name.startswith(RUN_PREFIX):
            continue
        d = os.path.join(tmp, name)
        try:
            st = os.lstat(d)
            if not stat.S_ISDIR(st.st_mode):
                continue
            with open(os.path.join(d, RUN_FILE), "rb") as f:
                info = msgspec.json.decode(f.read(65536), type=RunInfo)
        except (OSError, msgspec.DecodeError, ValueError):
            continue
        if _linux.process_identity(info.pid) != info.identity:
            continue  # its supervisor is gone
        info.dir = d
        out.append(info)
    out.sort(key=lambda r: r.started, reverse=True)
    return out


def find_run(run_id: str | None = None, cwd: str | None = None) -> RunInfo:
    """The run ``run_id`` (a prefix will do), or the most recent live one started
    from ``cwd``; :class:`ControlError` saying what runs there are otherwise."""
    runs = list_runs()
    if run_id:
        found = [r for r in runs if r.id == run_id] or [r for r in runs if r.id.startswith(run_id)]
        if len(found) == 1:
            return found[0]
        if found:
            raise ControlError(
                f"{run_id!r} names {len(found)} runs: {', '.join(r.id for r in found)}"
            )
        raise ControlError(f"no live run {run_id!r}{_listing(runs)}")
    here = os.path.realpath(cwd or os.getcwd())
    local = [r for r in runs if os.path.realpath(r.cwd) == here]
    if local:
        return local[0]
    raise ControlError(f"no live run was started from {here}{_listing(runs)}")


def _listing(runs: list[RunInfo]) -> str:
    if not runs:
        return " (no live run of yours; is `agentrt supervise` running?)"
    shown = ", ".join(
        f"{r.id} (pid {r.pid}, in {r.cwd}, {time.strftime('%H:%M:%S', time.localtime(r.started))})"
        for r in runs[:5]
    )
    return f"; live runs: {shown}; pick one with --run ID"


def describe(value: Any) -> str:
    """A control reply as JSON text (for ``--json``)."""
    return json.dumps(value, indent=2, sort_keys=False, default=str)
