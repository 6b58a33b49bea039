"""A replica on a Ray node, started by its actor (see :mod:`agentrt.backends.ray`).

``python -m agentrt.backends.ray_child RFD WFD OFD BOOT``: the protocol stream
(a TCP connection to the supervisor, read and written through two fds), the
output stream, and the file holding the replica's ``Boot`` (read, then
removed).  From there on it is :func:`agentrt.worker.child_main`, as on the
local backend: the same sandbox, limits and worker loop.
"""

from __future__ import annotations

import os
import sys

import msgspec

from agentrt.protocol import Boot
from agentrt.worker import child_main


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    rfd, wfd, ofd = (int(a) for a in args[:3])
    with open(args[3], "rb") as f:
        boot = msgspec.msgpack.decode(f.read(), type=Boot)
    os.unlink(args[3])
    child_main(boot, rfd, wfd, ofd)


if __name__ == "__main__":
    main()
