"""The ``ray`` backend's suite: one real Ray cluster (started on this machine) for all.

Skipped where Ray is not installed (``pip install -e '.[ray]'``; ``.ci/run``
installs it).  The cluster's own processes (GCS, raylets, idle workers) live
for a whole module, so this suite's leak check looks at agentrt's processes
only: replica processes, replica actors, zygotes.  A test's sockets to the
supervisor's listener are checked by :func:`ray_supervisor` when it closes.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

from agentrt import Supervisor  # noqa: E402

pytestmark = pytest.mark.ray

#: seconds agentrt's processes get to finish exiting after a test
EXIT_WAIT = 5.0
_OURS = ("agentrt.backends.ray_child", "ReplicaHost", "agentrt.zygote")


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    """A Ray cluster of one head node (2 CPUs), this process its driver; one per
    module (gone before the rest of the suite, whose leak checks see every child)."""
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    cluster = cluster_utils.Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "include_dashboard": False,
            # a lost node noticed in about a second (Ray's default: 15 s)
            "_system_config": {
                "health_check_period_ms": 300,
                "health_check_timeout_ms": 300,
                "health_check_failure_threshold": 3,
            },
        },
    )
    ray.init(address=cluster.address, log_to_driver=False, logging_level="WARNING")
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def _ours() -> list[psutil.Process]:
    out = []
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if any(mark in " ".join(p.cmdline()) for mark in _OURS):
                out.append(p)
    return out


def _files() -> dict[int, str]:
    out = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{name}")
            if target.startswith("/"):  # Ray's driver opens sockets, pipes and eventfds
                out[int(name)] = target
    return out


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """No replica process or actor of agentrt's, and no file, outlives a test."""
    before = _files()
    yield
    problems = []
    _gone, alive = psutil.wait_procs(_ours(), timeout=EXIT_WAIT)
    if alive:
        problems.append("processes left: " + "; ".join(" ".join(p.cmdline())[:100] for p in alive))
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGKILL)
    gc.collect()
    leaked = {fd: t for fd, t in _files().items() if fd not in before}
    if leaked:
        threading.Event().wait(0.2)
        leaked = {fd: t for fd, t in _files().items() if fd not in before}
    if leaked:
        problems.append(f"files left open: {leaked}")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def _tcp_fds(port: int) -> list[Any]:
    return [c for c in psutil.Process().net_connections("tcp") if c.laddr and c.laddr.port == port]


@pytest.fixture
def ray_supervisor(ray_cluster: Any, fixtures_dir: Path) -> Callable[..., Any]:
    """``async with ray_supervisor(**settings) as sup``: a Supervisor on the
    ``ray`` backend (the suite's cluster); on exit, none of its listener's
    sockets is left open in this process."""

    @contextlib.asynccontextmanager
    async def make(**settings: Any) -> AsyncIterator[Supervisor]:
        settings.setdefault("backoff", 0.01)
        settings.setdefault("backoff_max", 0.05)
        sup = Supervisor(base_dir=fixtures_dir, backend="ray", address="auto", **settings)
        async with sup:
            port = sup._launcher._listener.port  # type: ignore[union-attr]
            yield sup
        left = _tcp_fds(port)
        assert not left, f"sockets of the listener left open: {left}"

    return make
