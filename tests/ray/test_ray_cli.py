"""The ``ray`` backend from the command line: a config names the cluster, nothing else changes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from clitools import run_cli, write_project

pytestmark = pytest.mark.ray

AGENTS = """
import os

def echo(**kw):
    return {**kw, "pid": os.getpid()}

def crash_once(marker):
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(7)
    return "second try"
"""


def _config(address: str, marker: Path) -> str:
    return f"""
[supervisor]
backend = "ray"
address = "{address}"

[agents.echo]
entry = "agents:echo"
replicas = 2

[agents.flaky]
entry = "agents:crash_once"

[[tasks]]
id = "greet"
agent = "echo"
args = {{ text = "hello" }}

[[tasks]]
id = "again"
agent = "echo"
args = {{ after = "${{greet.text}}" }}

[[tasks]]
id = "retry"
agent = "flaky"
args = {{ marker = "{marker}" }}
retries = 1
"""


def test_supervise_runs_a_config_on_the_ray_cluster(ray_cluster: Any, tmp_path: Path) -> None:
    cfg = write_project(tmp_path, AGENTS, _config(ray_cluster.address, tmp_path / "marker"))
    out = tmp_path / "results.json"
    r = run_cli("supervise", str(cfg), "--output", str(out), "--no-journal", timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads(out.read_text())
    tasks = results["tasks"]
    assert tasks["greet"]["result"]["text"] == "hello"
    assert tasks["again"]["result"]["after"] == "hello"
    assert tasks["retry"]["result"] == "second try"  # a crash (exit 7) retried on a new actor
    assert "start_method=ray" in r.stderr


def test_doctor_reports_the_ray_cluster_of_a_config(ray_cluster: Any, tmp_path: Path) -> None:
    cfg = write_project(tmp_path, AGENTS, _config(ray_cluster.address, tmp_path / "m"))
    r = run_cli("doctor", str(cfg), timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    report = r.stdout.split("ray cluster (", 1)[1]
    nodes = len([n for n in ray_cluster.list_all_nodes() if n is not None])
    assert f"{nodes} node(s)" in report
    assert "CPUs" in report and "GiB" in report


def test_doctor_says_when_the_cluster_cannot_be_reached(ray_cluster: Any) -> None:
    r = run_cli("doctor", "--ray", "127.0.0.1:1", timeout=120)
    assert r.returncode == 2
    assert "cannot reach it" in r.stdout
