"""A replica on a Ray node, started by its actor (see :mod:`agentrt.backends.ray`).

``python -m agentrt.backends.ray_child ACTOR_PID RFD WFD OFD BOOT``: the
actor's pid (the replica dies with it, and does not start without it), the protocol stream
(a TCP connection to the supervisor, read and written through two fds), the
output stream, and the file holding the replica's ``Boot`` and the
``[supervisor] preload`` modules (read, then removed).  The preloads are
imported first (on the local backend the zygote has them), then it is
:func:`agentrt.worker.child_main`, as on the local backend: the same
sandbox, limits and worker loop.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys

import msgspec

from agentrt import _linux
from agentrt.protocol import EXIT_STARTUP, Boot, StartupFailed
from agentrt.worker import _Channel, child_main


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    _linux.set_pdeathsig(signal.SIGKILL)  # first: the actor's death is ours
    if os.getppid() != int(args[0]):
        os._exit(EXIT_STARTUP)  # the actor died before we could say so
    rfd, wfd, ofd = (int(a) for a in args[1:4])
    with open(args[4], "rb") as f:
        raw, preload = msgspec.msgpack.decode(f.read(), type=tuple[bytes, list[str]])
    os.unlink(args[4])
    boot = msgspec.msgpack.decode(raw, type=Boot)
    for p in reversed(boot.sys_path):
        if p not in sys.path:
            sys.path.insert(0, p)
    for name in preload:
        try:
            importlib.import_module(name)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                _Channel(rfd, wfd, boot.max_frame).write(
                    StartupFailed(type(exc).__qualname__, f"preload {name!r} failed: {exc}", "")
                )
            os._exit(EXIT_STARTUP)
    child_main(boot, rfd, wfd, ofd)


if __name__ == "__main__":
    main()
