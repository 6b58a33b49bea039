"""Descriptors passed over the zygote's socket (SCM_RIGHTS), and the flags of
a receive: the zygote reads the fork requests waiting without blocking, so
that it can fork them one after another."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from agentrt import _linux

pytestmark = pytest.mark.timeout(10)  # (a receive that ignores MSG_DONTWAIT would block)


def test_a_datagram_and_its_descriptors_arrive_together() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    r, w = os.pipe()
    try:
        _linux.send_with_fds(a, b"fork", [r, w])
        data, fds = _linux.recv_with_fds(b, 1 << 16, 8)
        assert data == b"fork" and len(fds) == 2
        os.write(fds[1], b"x")  # the same pipe, under new numbers
        assert os.read(r, 1) == b"x"
        for f in fds:
            os.close(f)
    finally:
        for f in (r, w):
            os.close(f)
        a.close()
        b.close()


def test_a_receive_without_waiting_takes_what_is_there_and_stops_when_nothing_is() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        for i in range(3):
            _linux.send_with_fds(a, b"req%d" % i, [])
        got = []
        while True:
            try:
                data, fds = _linux.recv_with_fds(b, 1 << 16, 8, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            assert fds == []
            got.append(data)
        assert got == [b"req0", b"req1", b"req2"]
        assert b.getblocking()  # (the socket itself still blocks)
    finally:
        a.close()
        b.close()


def test_dying_tells_a_live_process_from_a_zombie_and_from_one_gone() -> None:
    """(``dying`` guards a spare's hand-over: it reads ``/proc/PID/status``.)"""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # waits for a byte, then exits
        os.read(r, 1)
        os._exit(0)
    try:
        assert not _linux.dying(pid)
        os.write(w, b"x")
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # a zombie, not reaped
        assert _linux.dying(pid)
    finally:
        os.waitpid(pid, 0)
        os.close(r)
        os.close(w)
    assert _linux.dying(pid)  # reaped: gone


_HOLES = """
import ctypes
from agentrt import _linux

def anon_kib():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1])

# 60 MiB in chunks malloc serves from its heap, every tenth kept: what is
# freed lies between them, where free() alone gives nothing back
chunks = [ctypes.create_string_buffer(6000) for _ in range(10_000)]
kept = chunks[::10]
del chunks
before = anon_kib()
_linux.trim_heap()
print(before, anon_kib())
"""


@pytest.mark.skipif(not hasattr(_linux._libc, "malloc_trim"), reason="not glibc")
def test_trim_heap_gives_the_free_pages_between_live_chunks_back() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _HOLES], capture_output=True, text=True, check=True, timeout=30
    )
    before, after = map(int, out.stdout.split())
    assert before - after > 30 * 1024, (before, after)  # KiB: most of the 54 MiB freed
