"""Embedding the Supervisor in a program of one's own: as a user meets it, from outside."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from clitools import ROOT

MAIN = """
import asyncio
from agentrt import AgentSpec, Limits, Supervisor

async def main():
    async with Supervisor() as sup:
        await sup.start(AgentSpec(name="echo", entry="mypkg.agents:echo", replicas=2,
                                  limits=Limits(memory=256 * 2**20, cpu_time=10.0)))
        print(await sup.call("echo", {"text": "hi"}, timeout=5))

asyncio.run(main())
"""

AGENTS = """
def echo(**kwargs):
    return kwargs
"""


def _app(tmp_path: Path) -> Path:
    app = tmp_path / "app"
    (app / "mypkg").mkdir(parents=True)
    (app / "mypkg" / "__init__.py").write_text("")
    (app / "mypkg" / "agents.py").write_text(AGENTS)
    (app / "main.py").write_text(MAIN)
    return app


def test_the_programs_own_directory_reaches_the_agents_and_stdout_stays_the_programs(
    tmp_path: Path,
) -> None:
    app = _app(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run(
        [sys.executable, str(app / "main.py")],
        cwd=elsewhere,  # neither the checkout nor the script's directory
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    # the program's output is its own: no log line of the library in it
    assert proc.stdout == "{'text': 'hi'}\n"
    # and the library says nothing below warning unless asked
    assert "replica_state" not in proc.stderr and "supervisor_started" not in proc.stderr


def test_log_level_lets_the_library_say_more_on_stderr(tmp_path: Path) -> None:
    app = _app(tmp_path)
    (app / "main.py").write_text(MAIN.replace("Supervisor()", 'Supervisor(log_level="info")'))
    proc = subprocess.run(
        [sys.executable, str(app / "main.py")],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "{'text': 'hi'}\n"
    assert "supervisor_started" in proc.stderr and "replica_ready" in proc.stderr
