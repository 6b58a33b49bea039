"""`agentrt runs` and `agentrt show`: what the journal of real `agentrt supervise` runs holds,
read back by the real command (subprocesses), and the journal errors they report."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from clitools import run_cli as agentrt
from clitools import write_project

from agentrt.graph import Node
from agentrt.journal import Journal
from agentrt.scheduler import TaskResult

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

CONFIG = """
[agents.echo]
entry = "agents:echo"
replicas = 2
[agents.failer]
entry = "agents:fail"

[run]
on_error = "continue"

[[tasks]]
id = "first"
agent = "echo"
args = { x = 1 }

[[tasks]]
id = "second"
agent = "echo"
args = { y = "${first}" }

[[tasks]]
id = "bad"
agent = "failer"
args = { message = "no luck" }

[[tasks]]
id = "after_bad"
agent = "echo"
args = { z = "${bad}" }
"""


@dataclass
class Project:
    dir: Path
    config: Path
    #: the results file of each run, oldest first
    results: list[dict[str, Any]]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """A config of four tasks (one fails, one is skipped for it), supervised twice."""
    tmp = tmp_path_factory.mktemp("runs")
    cfg = write_project(tmp, (FIXTURES / "agents.py").read_text(), CONFIG)
    results = []
    for n in (1, 2):
        out = tmp / f"results{n}.json"
        proc = agentrt("supervise", str(cfg), "--no-live", "-o", str(out))
        assert proc.returncode == 1, proc.stderr  # a task failed
        results.append(json.loads(out.read_text()))
    return Project(dir=tmp, config=cfg, results=results)


def test_runs_lists_each_run_newest_first_with_its_task_counts(project: Project) -> None:
    proc = agentrt("runs", str(project.config), "--json")
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(proc.stdout)
    assert [r["run_id"] for r in runs] == [r["run_id"] for r in reversed(project.results)]
    for r in runs:
        assert r["status"] == "failed"
        assert (r["tasks"], r["ok"], r["failed"]) == (4, 2, 1)
        assert r["pending"] == r["tasks"] - r["ok"] - r["failed"] - r["skipped"]
        assert r["pending"] == 0  # the run ended: its tasks finished or were skipped
        assert r["resumed"] == 0
        assert r["ended"] >= r["started"]
        assert "supervise" in r["argv"]
        assert r["config"] == str(project.config.resolve())
        assert r["config_hash"] == hashlib.sha256(project.config.read_bytes()).hexdigest()

    proc = agentrt("runs", str(project.config))
    assert proc.returncode == 0, proc.stderr
    header, *lines = proc.stdout.splitlines()
    assert header.split() == [
        "RUN",
        "STARTED",
        "DURATION",
        "STATUS",
        "TASKS",
        "OK",
        "FAILED",
        "SKIPPED",
        "PENDING",
        "RESUMED",
    ]
    assert [line.split()[0] for line in lines] == [r["run_id"] for r in runs]
    cells = lines[0].split()
    assert cells[4:6] == ["failed", "4"] and cells[6:10] == ["2", "1", "1", "0"]


def test_runs_n_keeps_the_newest_runs(project: Project) -> None:
    proc = agentrt("runs", str(project.config), "--json", "-n", "1")
    assert proc.returncode == 0, proc.stderr
    assert [r["run_id"] for r in json.loads(proc.stdout)] == [project.results[-1]["run_id"]]


def test_runs_without_a_config_reads_the_journal_of_the_working_directory(
    project: Project,
) -> None:
    proc = agentrt("runs", "--json", cwd=project.dir)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == 2


def test_show_last_json_is_the_results_file_plus_the_attempts(project: Project) -> None:
    proc = agentrt("show", "last", str(project.config), "--json")
    assert proc.returncode == 0, proc.stderr  # a failed run shown is a success
    shown = json.loads(proc.stdout)
    attempts = shown.pop("attempts")
    results = project.results[-1]
    assert shown == results
    assert {t: r["status"] for t, r in shown["tasks"].items()} == {
        "first": "ok",
        "second": "ok",
        "bad": "failed",
        "after_bad": "skipped",
    }
    assert shown["tasks"]["second"]["result"] == {"y": {"x": 1}}
    assert shown["critical_path"] in (["first", "second"], ["bad"])  # whichever ended last
    assert sorted((a["task"], a["attempt"], a["status"]) for a in attempts) == [
        ("bad", 1, "failed"),
        ("first", 1, "ok"),
        ("second", 1, "ok"),
    ]
    bad = next(a for a in attempts if a["task"] == "bad")
    assert bad["error"]["remote_type"] == "ValueError"
    assert bad["pid"] == results["tasks"]["bad"]["pid"]


def test_show_an_older_run_by_its_id(project: Project) -> None:
    first = project.results[0]
    proc = agentrt("show", first["run_id"], "--journal", str(project.dir / ".agentrt/runs.db"))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith(f"run {first['run_id']}: failed (")
    rows = {line.split()[0]: line for line in out.splitlines()[out.splitlines().index("") + 2 :]}
    assert list(rows) == ["first", "second", "bad", "after_bad"]
    assert rows["second"].split()[1:4] == ["ok", "1", "echo"]
    assert '{"y":{"x":1}}' in rows["second"]
    assert "ValueError: no luck" in rows["bad"]
    assert "skipped" in rows["after_bad"] and "upstream 'bad' failed" in rows["after_bad"]
    proc = agentrt("show", first["run_id"], str(project.config), "--json")
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    del shown["attempts"]
    assert shown == first


def test_show_of_an_unknown_run_exits_2_naming_it(project: Project) -> None:
    proc = agentrt("show", "nope", str(project.config))
    assert proc.returncode == 2
    assert "no run 'nope'" in proc.stderr
    assert proc.stdout == ""
    near = project.results[0]["run_id"][:-1] + "?"
    proc = agentrt("show", near, str(project.config))
    assert proc.returncode == 2
    assert f"did you mean {project.results[0]['run_id']}?" in proc.stderr


def test_runs_of_a_missing_journal_exits_2_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    proc = agentrt("runs", "--journal", str(missing))
    assert proc.returncode == 2
    assert str(missing) in proc.stderr and "no such file" in proc.stderr
    assert not missing.exists()  # looking does not create one
    proc = agentrt("runs", cwd=tmp_path)
    assert proc.returncode == 2
    assert ".agentrt/runs.db" in proc.stderr and "--journal" in proc.stderr


def test_a_file_that_is_not_a_journal_exits_2_and_is_left_as_it_was(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    data = bytes(range(256)) * 16
    junk.write_bytes(data)
    for args in (["runs"], ["show", "last"]):
        proc = agentrt(*args, "--journal", str(junk))
        assert proc.returncode == 2
        assert "not a journal" in proc.stderr and str(junk) in proc.stderr
    empty = tmp_path / "empty.db"
    empty.touch()
    proc = agentrt("runs", "--journal", str(empty))
    assert proc.returncode == 2 and "not a journal" in proc.stderr
    assert junk.read_bytes() == data
    assert empty.stat().st_size == 0


def test_a_config_that_records_no_runs_exits_2(tmp_path: Path) -> None:
    cfg = write_project(tmp_path, "", '[run]\njournal = ""\n')
    proc = agentrt("runs", str(cfg))
    assert proc.returncode == 2
    assert "records no runs" in proc.stderr
    proc = agentrt("runs", str(tmp_path / "absent.toml"))
    assert proc.returncode == 2 and "config error" in proc.stderr


def test_a_run_whose_supervisor_died_is_interrupted_and_its_unfinished_tasks_pending(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.db"
    specs = [
        msgspec.to_builtins(Node(id="a", agent="echo")),
        msgspec.to_builtins(Node(id="b", agent="echo", after=["a"])),
        msgspec.to_builtins(Node(id="c", agent="echo", after=["b"])),
    ]
    done = TaskResult(id="a", status="ok", result=1, attempts=1, agent="echo", pid=1)
    done.started_at, done.finished_at = 100.0, 101.5
    with Journal(path) as journal:  # what a supervisor killed while "b" ran left
        journal.begin_run("r1", specs, argv="agentrt supervise x.toml", started=99.0)
        journal.task_started("r1", "a", {})
        journal.task_finished("r1", "a", "ok", msgspec.to_builtins(done))
        journal.task_started("r1", "b", {})
    proc = agentrt("runs", "--journal", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    [run] = json.loads(proc.stdout)
    assert (run["status"], run["ended"], run["ok"], run["pending"]) == ("interrupted", None, 1, 2)
    proc = agentrt("runs", "--journal", str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[1].split()[3:5] == ["\u2014", "interrupted"]
    proc = agentrt("show", "r1", "--journal", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["status"] == "interrupted"
    assert shown["tasks"]["a"] == msgspec.to_builtins(done)
    assert {t: (r["status"], r["reason"]) for t, r in shown["tasks"].items() if t != "a"} == {
        "b": ("pending", "started, no outcome recorded"),
        "c": ("pending", None),
    }
    assert (shown["started_at"], shown["finished_at"]) == (99.0, 101.5)
    assert (shown["critical_path"], shown["makespan"]) == (["a"], 1.5)
    assert shown["attempts"] == []
