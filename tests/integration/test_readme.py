"""Every snippet of the README runs as written: the programs run, the configs load."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from clitools import ROOT

from agentrt import parse_config

README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```$", README, re.M | re.S)
PYTHON = [code for lang, code in BLOCKS if lang == "python"]
TOML = [code for lang, code in BLOCKS if lang == "toml"]


def _program_name(code: str) -> str:
    """The file a program says it is (the module its entries name), else main.py."""
    m = re.search(r'entry=f?"(\w+):', code)
    module = m.group(1) if m else "main"
    return "main.py" if module == "mypkg" else f"{module}.py"


def test_the_readme_has_its_snippets() -> None:
    assert len(PYTHON) >= 3 and len(TOML) >= 2


@pytest.mark.parametrize("code", PYTHON, ids=[_program_name(c) for c in PYTHON])
def test_each_python_snippet_runs_as_written(code: str, tmp_path: Path) -> None:
    if 'backend="ray"' in code:
        pytest.importorskip("ray", reason="the ray backend's snippet needs agentrt[ray]")
    program = tmp_path / _program_name(code)
    program.write_text(code)
    if "mypkg.agents:echo" in code:  # the module the text beside it describes
        (tmp_path / "mypkg").mkdir()
        (tmp_path / "mypkg" / "__init__.py").write_text("")
        (tmp_path / "mypkg" / "agents.py").write_text("def echo(**kwargs): return kwargs\n")
    proc = subprocess.run(
        [sys.executable, str(program)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip(), "it prints what it did"
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("code", TOML, ids=[f"toml{i}" for i in range(len(TOML))])
def test_each_config_snippet_loads(code: str, tmp_path: Path) -> None:
    doc = tomllib.loads(code)
    cfg = parse_config(doc, tmp_path)
    assert cfg.agents or doc.get("sandboxes")
