"""From the outside: the wheel, installed in a fresh virtual environment, run elsewhere.

The wheel is built from a copy of what it is made of (``pyproject.toml``,
``README.md``, ``agentrt/``), installed with its dependencies (from the
package index: this module needs it reachable; ``-m "not packaging"``
leaves it out) into a new venv, and every command runs from a directory
outside the checkout with a clean environment, so nothing of the source
tree can stand in for what the wheel lacks.  matplotlib, the ``png`` extra,
is not installed there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[2]
#: building, creating the venv and installing take a few seconds each; a slow index more
INSTALL_TIMEOUT = 300.0
RUN_TIMEOUT = 120.0

HELPERS = """
import os

def shout(text):
    return {"text": text.upper(), "module": __file__, "replica": os.environ["AGENTRT_REPLICA"]}
"""

CONFIG = """
[agents.shout]
entry = "helpers:shout"
replicas = 2

[[tasks]]
id = "one"
agent = "shout"
args = { text = "hello" }

[[tasks]]
id = "two"
agent = "shout"
args = { text = "world" }
after = ["one"]
"""

# the agents import `helpers` from the script's own directory, not the working directory
SCRIPT = """
import asyncio, json
from agentrt import AgentSpec, Supervisor

async def main():
    async with Supervisor() as sup:
        await sup.start(AgentSpec(name="shout", entry="helpers:shout", replicas=2))
        results = await sup.map("shout", [{"text": "a"}, {"text": "b"}], timeout=30)
    print(json.dumps(results))

asyncio.run(main())
"""

INSPECT = """
import importlib, importlib.util, json, pkgutil
import agentrt
from agentrt.config import load_sandbox, sandbox_names

modules = [m.name for m in pkgutil.walk_packages(agentrt.__path__, "agentrt.")]
needs = {}  # modules of an extra that is not installed: what they say
for name in modules:
    try:
        importlib.import_module(name)
    except ImportError as exc:
        needs[name] = str(exc)
untrusted, shipped = load_sandbox("untrusted")
print(json.dumps({
    "file": agentrt.__file__,
    "modules": modules,
    "profiles": sorted(sandbox_names([], [])),
    "untrusted": [shipped, untrusted.network, untrusted.run_as],
    "matplotlib": importlib.util.find_spec("matplotlib") is not None,
    "needs": needs,
}))
"""


class Venv:
    """A fresh virtual environment with the wheel installed; runs commands elsewhere."""

    def __init__(self, path: Path, cwd: Path) -> None:
        self.path = path
        self.bin = path / "bin"
        self.cwd = cwd
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env["PATH"] = os.pathsep.join([str(self.bin), env.get("PATH", "")])
        self.env = env

    def run(self, *argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(a) for a in argv],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            cwd=cwd or self.cwd,
            env=self.env,
        )


def _check(cmd: list[str | Path], cwd: Path) -> None:
    proc = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=INSTALL_TIMEOUT, cwd=cwd
    )
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}:\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """The wheel of this checkout, installed with its dependencies in a new venv."""
    work = tmp_path_factory.mktemp("packaging")
    # a copy, so that the build's files never land in the checkout (or race another run)
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "agentrt", src / "agentrt", ignore=shutil.ignore_patterns("__pycache__"))
    dist = work / "dist"
    _check([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, src], work)
    (wheel,) = dist.glob("agentrt-*.whl")
    path = work / "venv"
    _check([sys.executable, "-m", "venv", path], work)
    _check([path / "bin" / "python", "-m", "pip", "install", "-q", wheel], work)
    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    return Venv(path, elsewhere)


def test_wheel_installs_every_module_and_the_shipped_sandbox_profiles(venv: Venv) -> None:
    proc = venv.run(venv.bin / "python", "-c", INSPECT)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert Path(found["file"]).is_relative_to(venv.path)
    assert {"agentrt.cli", "agentrt.sandbox.planning", "agentrt.supervisor.facade"} <= set(
        found["modules"]
    )
    assert set(found["profiles"]) >= {"default", "strict", "untrusted"}
    # the model clients need the llm extra, and say so; everything else imports
    assert found["needs"] == {
        "agentrt.llm.clients": "agentrt.llm.clients needs httpx: pip install 'agentrt[llm]'"
    }
    assert found["untrusted"] == [True, "none", "dynamic"]  # extends the shipped strict
    assert found["matplotlib"] is False  # the png extra, not a dependency


def test_installed_cli_runs_a_config_whose_agents_sit_next_to_it(
    venv: Venv, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "helpers.py").write_text(HELPERS)
    (project / "config.toml").write_text(CONFIG)
    out = tmp_path / "results.json"
    trace = tmp_path / "trace.json"
    proc = venv.run(
        "agentrt", "supervise", project / "config.toml", "--output", out, "--trace", trace
    )
    assert proc.returncode == 0, proc.stderr
    tasks = json.loads(out.read_text())["tasks"]
    assert {t: tasks[t]["status"] for t in tasks} == {"one": "ok", "two": "ok"}
    assert tasks["one"]["result"]["text"] == "HELLO"
    assert tasks["two"]["result"]["text"] == "WORLD"
    assert tasks["one"]["result"]["module"] == str(project / "helpers.py")

    summary = venv.run("agentrt", "trace", trace)
    assert summary.returncode == 0, summary.stderr
    assert "spans" in summary.stdout


def test_trace_png_without_matplotlib_names_the_extra_and_exits_2(
    venv: Venv, tmp_path: Path
) -> None:
    trace = tmp_path / "trace.json"
    trace.write_text(json.dumps({"traceEvents": []}))
    png = tmp_path / "trace.png"
    proc = venv.run("agentrt", "trace", trace, "--png", png)
    assert proc.returncode == 2
    assert "matplotlib" in proc.stderr and "agentrt[png]" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not png.exists()


def test_embedding_script_in_another_directory_runs_agents_next_to_it(
    venv: Venv, tmp_path: Path
) -> None:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "helpers.py").write_text(HELPERS)
    (scripts / "run.py").write_text(SCRIPT)
    proc = venv.run(venv.bin / "python", scripts / "run.py")
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)  # the library prints nothing of its own
    assert [r["text"] for r in results] == ["A", "B"]
    assert {r["module"] for r in results} == {str(scripts / "helpers.py")}


def test_installed_bench_says_it_needs_a_source_checkout(venv: Venv) -> None:
    proc = venv.run("agentrt", "bench", "--quick")
    assert proc.returncode == 2
    assert "source checkout" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (venv.cwd / "out").exists()  # nothing written
