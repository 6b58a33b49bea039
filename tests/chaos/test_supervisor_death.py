"""A supervisor process that dies or exits takes every agent process down with it."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

SCRIPT = """
import asyncio, json, os, sys
import structlog
from agentrt import AgentSpec, Supervisor

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

async def main():
    async with Supervisor(base_dir=sys.argv[1], start_method=sys.argv[2]) as sup:
        await sup.start(AgentSpec(name="echo", entry="agents:echo", replicas=2))
        await sup.start(AgentSpec(name="who", entry="agents:whoami", replicas=2))
        await sup.start(AgentSpec(name="counter", entry="agents:Counter"))
        pids = [s.pid for s in await sup.status()]
        print(json.dumps({"supervisor": os.getpid(), "agents": pids}), flush=True)
        await asyncio.Event().wait()

if __name__ == "__main__":
    asyncio.run(main())
"""


@pytest.mark.parametrize("method", ["zygote", "fork"])
async def test_sigkilled_supervisor_leaves_no_agent_process(method, fixtures_dir, tmp_path):
    script = Path(tmp_path) / "supervise.py"
    script.write_text(SCRIPT)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        str(fixtures_dir),
        method,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(30):
            line = await proc.stdout.readline()
        info = json.loads(line)
        assert info["supervisor"] == proc.pid
        assert len(info["agents"]) == 5
        # Every process under the supervisor (agents, and the zygote if any),
        # held by psutil handles taken while they are alive.
        supervisor = psutil.Process(proc.pid)
        tree = supervisor.children(recursive=True)
        assert set(info["agents"]) <= {p.pid for p in tree}
        proc.send_signal(signal.SIGKILL)
        assert await proc.wait() == -signal.SIGKILL
        await proc.stdout.read()  # EOF once nothing holds the pipe any more
        _gone, alive = await asyncio.to_thread(psutil.wait_procs, tree, 2)
        assert not alive, [(p.pid, p.status()) for p in alive]
        if method == "zygote":
            # the zygote outlived the supervisor long enough to remove its run
            # dir and its cgroups
            m = re.search(rb"rundir=(\S+)", await proc.stderr.read())
            assert m is not None
            d = m.group(1).decode()
            assert not await asyncio.to_thread(os.path.exists, d), os.listdir(d)
            assert _cgroups_of(proc.pid) == []
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await _remove_run_dir(await proc.stderr.read())


def _cgroups_of(pid: int) -> list[str]:
    """The cgroup directories of supervisor ``pid`` still there (v1 and v2)."""
    return glob.glob(f"/sys/fs/cgroup/*/agentrt-{pid}") + glob.glob(f"/sys/fs/cgroup/agentrt-{pid}")


def test_a_new_supervisor_removes_cgroups_whose_supervisor_is_gone(fixtures_dir):
    from agentrt.sandbox import Cgroups, probe

    if not probe()["cgroup"]["controllers"]:
        pytest.skip("no cgroups for replicas on this machine")
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = int(gone.stdout)
    base = sorted(Cgroups().bases.values())[0]
    stale = os.path.join(base, f"agentrt-{dead}")
    os.makedirs(os.path.join(stale, "echo.0.0"), exist_ok=True)
    mine = os.path.join(base, f"agentrt-{os.getpid()}-not-a-pid")
    os.makedirs(mine, exist_ok=True)
    try:
        code = (
            "import asyncio\nfrom agentrt import Supervisor\n"
            "async def main():\n    async with Supervisor():\n        pass\n"
            "asyncio.run(main())\n"
        )
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=fixtures_dir)
        assert not os.path.exists(stale)
        assert os.path.isdir(mine)  # not a supervisor's name: left alone
    finally:
        for d in (os.path.join(stale, "echo.0.0"), stale, mine):
            with contextlib.suppress(OSError):
                os.rmdir(d)


async def _remove_run_dir(log: bytes) -> None:
    """A supervisor killed by SIGKILL cannot remove its run dir: do it for it."""
    m = re.search(rb"rundir=(\S+)", log)
    if m is not None:
        await asyncio.to_thread(shutil.rmtree, m.group(1).decode(), True)


EXIT_SCRIPT = """
import asyncio, json, signal, sys
import structlog
from agentrt import AgentSpec, Supervisor

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

async def main():
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, sys.exit, 3)  # a common idiom
    async with Supervisor(base_dir=sys.argv[1]) as sup:
        await sup.start(AgentSpec(name="sleeper", entry="agents:sleep", shutdown_timeout=0.2))
        await sup.start(AgentSpec(name="echo", entry="agents:echo"))
        busy = sup.submit("sleeper", {"seconds": 30})
        print(json.dumps([s.pid for s in await sup.status()]), flush=True)
        await busy

if __name__ == "__main__":
    asyncio.run(main())
"""


async def test_supervisor_leaving_through_sys_exit_in_a_signal_handler_exits_and_stops_agents(
    fixtures_dir, tmp_path
):
    script = Path(tmp_path) / "exit_on_sigterm.py"
    script.write_text(EXIT_SCRIPT)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        str(fixtures_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    tree: list[psutil.Process] = []
    log = b""
    try:
        async with asyncio.timeout(30):
            line = await proc.stdout.readline()
        assert len(json.loads(line)) == 2
        tree = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(5):  # a clean exit takes well under a second
                code = await proc.wait()
        except TimeoutError:
            code = None
        assert code == 3, "the supervisor process did not exit"
        log = await proc.stderr.read()
        _gone, alive = await asyncio.to_thread(psutil.wait_procs, tree, 2)
        assert not alive
        # close() ran to the end: its run dir (agents' workdirs) is removed
        m = re.search(rb"rundir=(\S+)", log)
        assert m is not None, log
        assert not await asyncio.to_thread(os.path.exists, m.group(1).decode())
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await proc.stdout.read()
        await _remove_run_dir(log + await proc.stderr.read())
        for p in tree:
            with contextlib.suppress(psutil.Error):
                p.kill()
        await asyncio.to_thread(psutil.wait_procs, tree, 2)


async def test_a_new_supervisor_removes_run_dirs_whose_supervisor_is_gone(fixtures_dir, tmp_path):
    import tempfile

    from agentrt import Supervisor

    # a run dir as a SIGKILLed supervisor leaves it: its owner is a pid no longer running
    dead = psutil.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = Path(tempfile.mkdtemp(prefix="agentrt-"))
    (stale / "supervisor").write_text(f"{dead.pid} 1")
    (stale / "echo.0.0").mkdir()
    # and one whose supervisor runs: this test's process, as it identifies itself
    alive = Path(tempfile.mkdtemp(prefix="agentrt-"))
    (alive / "supervisor").write_text(f"{os.getpid()} {_start_time(os.getpid())}")
    try:
        async with Supervisor(base_dir=fixtures_dir):
            pass
        assert not await asyncio.to_thread(os.path.exists, stale)
        assert await asyncio.to_thread(os.path.exists, alive)
    finally:
        shutil.rmtree(stale, ignore_errors=True)
        shutil.rmtree(alive, ignore_errors=True)


def _start_time(pid: int) -> str:
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return stat[stat.rfind(b")") + 2 :].split()[19].decode()
