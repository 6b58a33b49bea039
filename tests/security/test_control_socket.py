"""The control socket under hostile clients: other uids, garbage, floods, stalls.

Each test runs a real supervisor and talks to its socket with raw frames
from a thread (the supervisor's loop keeps serving on the test's thread).
After every abuse the supervisor still answers and its agents still work.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentrt import AgentSpec, Supervisor
from agentrt import control as ctl_mod
from agentrt.control import ControlClient, find_run
from agentrt.protocol import (
    CONTROL_MAX_FRAME,
    ControlReply,
    CtlAgents,
    CtlApprove,
    CtlAudit,
    CtlCancel,
    CtlDeny,
    CtlFailed,
    CtlOk,
    CtlPause,
    CtlResume,
    CtlStatus,
    CtlTail,
    CtlTasks,
    FrameEncoder,
)

NOBODY = 65534
_reply = msgspec.msgpack.Decoder(ControlReply)
_enc = FrameEncoder(CONTROL_MAX_FRAME)


def _recv_frame(sock: socket.socket) -> Any:
    """One reply frame, or None at EOF."""
    head = b""
    while len(head) < 4:
        chunk = sock.recv(4 - len(head))
        if not chunk:
            return None
        head += chunk
    n = int.from_bytes(head, "big")
    body = b""
    while len(body) < n:
        chunk = sock.recv(n - len(body))
        if not chunk:
            return None
        body += chunk
    return _reply.decode(body)


def _raw(path: str, data: bytes, timeout: float = 10.0) -> list[Any]:
    """Send ``data`` on a fresh connection; every reply until the server closes
    it or stops answering (a reply per request, or silence)."""
    out: list[Any] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        try:
            while (msg := _recv_frame(s)) is not None:
                out.append(msg)
        except (ConnectionResetError, TimeoutError):
            pass
    return out


async def _started(make_supervisor: Callable[..., Supervisor], **kw: Any) -> Supervisor:
    sup = make_supervisor(**kw)
    await sup.open()
    await sup.start(AgentSpec(name="echo", entry="agents:echo", replicas=2, shutdown_timeout=0.2))
    return sup


async def _healthy(sup: Supervisor) -> None:
    assert await sup.call("echo", {"ok": 1}) == {"ok": 1}
    path = sup.control_path
    assert path is not None
    status = await asyncio.to_thread(ControlClient(path).request, CtlStatus())
    assert status["run_id"] == sup.run_id


async def test_socket_and_directory_are_owner_only(
    make_supervisor: Callable[..., Supervisor], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    sup = await _started(make_supervisor)
    try:
        path = sup.control_path
        assert path is not None
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) in (0o700, 0o711)
        run = find_run(None, str(tmp_path))
        assert run.id == sup.run_id and run.socket == path and run.pid == os.getpid()
        assert find_run(sup.run_id[:-2]).id == sup.run_id  # a prefix will do
    finally:
        await sup.close()
    assert not await asyncio.to_thread(os.path.exists, path)


_CONNECT_AS = r"""
import os, socket, sys
uid = int(sys.argv[2])
os.setgroups([]); os.setgid(uid); os.setuid(uid)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("connect-failed", e.errno); sys.exit(0)
frame = bytes.fromhex(sys.argv[3])
try:
    s.sendall(frame)
except BrokenPipeError:  # refused at once: the reply is there to read
    pass
data = b""
while True:
    try:
        chunk = s.recv(65536)
    except ConnectionResetError:  # closed with our request unread: the reply came first
        break
    if not chunk:
        break
    data += chunk
print("reply", data.hex())
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another uid needs root")
async def test_a_client_of_another_uid_is_refused_and_audited(
    make_supervisor: Callable[..., Supervisor],
) -> None:
    sup = await _started(make_supervisor)
    try:
        path = sup.control_path
        assert path is not None
        frame = _enc.encode(CtlStatus()).hex()

        def connect_as_nobody() -> str:
            out = subprocess.run(
                [sys.executable, "-c", _CONNECT_AS, path, str(NOBODY), frame],
                capture_output=True,
                text=True,
                timeout=30,
            )
            return out.stdout.strip()

        # The directory and the socket keep it out already...
        assert (await asyncio.to_thread(connect_as_nobody)).startswith("connect-failed")
        # ...and if they were opened up by mistake, its credentials are checked.
        os.chmod(os.path.dirname(path), 0o755)
        os.chmod(path, 0o666)
        answer = await asyncio.to_thread(connect_as_nobody)
        assert answer.startswith("reply ")
        reply = _reply.decode(bytes.fromhex(answer.split()[1])[4:])
        assert isinstance(reply, CtlFailed) and reply.type == "PermissionError"
        assert f"uid {NOBODY}" in reply.message
        (entry,) = [e for e in sup.audit() if e.action == "refused"]
        assert entry.by.uid == NOBODY and entry.by.via == "ctl" and entry.by.pid
        await _healthy(sup)
    finally:
        await sup.close()


async def test_bad_frames_get_an_error_and_the_run_goes_on(
    make_supervisor: Callable[..., Supervisor],
) -> None:
    sup = await _started(make_supervisor)
    try:
        path = sup.control_path
        assert path is not None
        cases = {
            "oversized prefix": (1 << 31).to_bytes(4, "big"),
            "empty frame": (0).to_bytes(4, "big"),
            "garbage body": (5).to_bytes(4, "big") + b"\xc1\xc1\xc1\xc1\xc1",
            "unknown command": _enc.encode_many([CtlOk(1)]),  # a reply is no request
            "a field too long": (lambda b: len(b).to_bytes(4, "big") + b)(
                msgspec.msgpack.encode({"op": "pause", "target": "x" * 5000})
            ),
        }
        for what, data in cases.items():
            replies = await asyncio.to_thread(_raw, path, data)
            assert replies and isinstance(replies[0], CtlFailed), (what, replies)
        # unknown ids and targets: an error naming them, the connection stays usable
        replies = await asyncio.to_thread(
            _raw,
            path,
            _enc.encode_many(
                [
                    CtlApprove("a999"),
                    CtlDeny("nope"),
                    CtlPause("ghost"),
                    CtlCancel("ghost", scope="agent"),
                    CtlCancel("42"),
                    CtlStatus(),
                ]
            ),
        )
        assert [type(r).__name__ for r in replies] == ["CtlFailed"] * 5 + ["CtlOk"]
        assert "a999" in replies[0].message and "ghost" in replies[2].message
        await _healthy(sup)
    finally:
        await sup.close()


async def test_a_client_that_stops_mid_frame_or_never_reads_is_dropped(
    make_supervisor: Callable[..., Supervisor], monkeypatch: pytest.MonkeyPatch, logs: Any
) -> None:
    monkeypatch.setattr(ctl_mod, "FRAME_TIMEOUT", 0.5)
    sup = await _started(make_supervisor)
    try:
        path = sup.control_path
        assert path is not None

        def half_frame_then_leave() -> None:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(path)
                s.sendall((100).to_bytes(4, "big") + b"partial")

        await asyncio.to_thread(half_frame_then_leave)
        await logs.wait_for("control_client_dropped", why="the connection ended mid-frame")

        # A client that sends many requests and reads none of the replies: the
        # server answers until its replies pile up, then drops it, and the send
        # fails (that is how the client learns it was dropped).
        flood = _enc.encode_many([CtlStatus()] * 200_000)

        def never_read() -> str:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(60)
                s.connect(path)
                try:
                    s.sendall(flood)
                except (BrokenPipeError, ConnectionResetError) as exc:
                    return type(exc).__name__
                return "sent it all"

        assert await asyncio.to_thread(never_read) != "sent it all"
        # (it may also be caught in the middle of a frame the server waits for)
        assert len(logs.find("control_client_dropped")) >= 2
        await _healthy(sup)
    finally:
        await sup.close()


_requests = st.one_of(
    st.builds(CtlStatus),
    st.builds(CtlAgents),
    st.builds(CtlTasks),
    st.builds(CtlAudit),
    st.builds(
        CtlPause, st.sampled_from(["", "echo", "echo#0", "echo#1", "echo#9", "x", "#", "echo#"])
    ),
    st.builds(CtlResume, st.sampled_from(["", "echo", "echo#1", "zz"])),
    st.builds(
        CtlCancel,
        st.text(max_size=20),
        st.sampled_from(["task", "agent", "run"]),
        st.text(max_size=20),
    ),
    st.builds(CtlApprove, st.text(max_size=10), st.text(max_size=10)),
    st.builds(CtlDeny, st.text(max_size=10), st.text(max_size=10)),
    st.builds(CtlTail, st.integers(0, 50), st.just(False)),
)


async def test_generated_frames_and_command_streams_never_hurt_the_supervisor(
    make_supervisor: Callable[..., Supervisor],
) -> None:
    sup = await _started(make_supervisor)
    try:
        path = sup.control_path
        assert path is not None
        client = ControlClient(path)

        @settings(
            max_examples=40,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(st.binary(max_size=200))
        def garbage(data: bytes) -> None:
            body = len(data).to_bytes(4, "big") + data
            for frame in (data, body):
                replies = _raw(path, frame, timeout=15)
                assert all(isinstance(r, CtlOk | CtlFailed) for r in replies)
            assert client.request(CtlStatus())["run_id"] == sup.run_id

        @settings(
            max_examples=40,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(st.lists(_requests, max_size=12))
        def streams(reqs: list[Any]) -> None:
            replies = _raw(path, _enc.encode_many(reqs) if reqs else b"", timeout=15)
            # one reply per request (a tail's events come before its end)
            ends = [r for r in replies if isinstance(r, CtlOk | CtlFailed)]
            assert len(ends) == len(reqs)
            assert client.request(CtlStatus())["run_id"] == sup.run_id

        await asyncio.to_thread(garbage)
        await asyncio.to_thread(streams)
        await sup.resume()  # whatever the streams paused
        await _healthy(sup)
        assert len(sup.agents) == 1
    finally:
        await sup.close()
