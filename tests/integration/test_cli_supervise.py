"""`agentrt supervise`: results file, exit codes, config errors, signals (real processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from clitools import ROOT, run_cli, write_project

AGENTS = """
import os, threading, time

def echo(**kw):
    return kw

def crash():
    os._exit(5)

def slow(seconds=30):
    time.sleep(seconds)

class CrashSoon:
    # Ready, then exit 3 a moment later: a crash loop with no call at all
    def __init__(self):
        threading.Timer(0.05, os._exit, (3,)).start()

    def __call__(self):
        return os.getpid()

class Broken:
    # each replica fails before Ready, its agent named
    def __init__(self):
        raise RuntimeError("broken: " + os.environ["AGENTRT_AGENT"])

    def __call__(self):
        return None
"""


_run = run_cli


def _project(tmp_path: Path, config: str) -> Path:
    return write_project(tmp_path, AGENTS, config)


def test_supervise_writes_results_and_exits_0_when_all_tasks_succeed(tmp_path: Path) -> None:
    cfg = _project(
        tmp_path,
        """
[agents.echo]
entry = "agents:echo"
replicas = 2

[[tasks]]
id = "greet"
agent = "echo"
args = { text = "hello" }

[[tasks]]
id = "again"
agent = "echo"
args = { n = 2 }
""",
    )
    out = tmp_path / "results.json"
    proc = _run("supervise", str(cfg), "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["run_id"]
    greet = doc["tasks"]["greet"]
    assert greet["status"] == "ok"
    assert greet["result"] == {"text": "hello"}
    assert greet["error"] is None
    assert greet["attempts"] == 1
    assert greet["agent"] == "echo"
    assert greet["pid"] > 0
    assert greet["finished_at"] >= greet["started_at"]
    assert doc["tasks"]["again"]["result"] == {"n": 2}


def test_supervise_exits_1_and_records_the_typed_cause_when_a_task_fails(tmp_path: Path) -> None:
    cfg = _project(
        tmp_path,
        """
[agents.crasher]
entry = "agents:crash"
[agents.echo]
entry = "agents:echo"

# Independent tasks: with the default fail_fast, whether "fine" ends before
# "boom" crashes would be a race.
[run]
on_error = "continue"

[[tasks]]
id = "boom"
agent = "crasher"

[[tasks]]
id = "fine"
agent = "echo"
""",
    )
    out = tmp_path / "results.json"
    proc = _run("supervise", str(cfg), "--output", str(out), "--log-format", "json")
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(out.read_text())
    boom = doc["tasks"]["boom"]
    assert boom["status"] == "crashed"
    assert boom["error"]["type"] == "AgentCrashed"
    assert boom["error"]["exit_code"] == 5
    assert doc["tasks"]["fine"]["status"] == "ok"
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert any(e.get("event") == "replica_died" and e.get("agent") == "crasher" for e in events)


def test_every_agent_that_cannot_start_is_named_and_each_task_says_why(tmp_path: Path) -> None:
    # the agents start side by side: both failures are known, and recorded
    cfg = _project(
        tmp_path,
        """
[agents.lost]
entry = "agents:Broken"
[agents.echo]
entry = "agents:echo"
[agents.missing]
entry = "agents:Broken"

[[tasks]]
id = "a"
agent = "echo"

[[tasks]]
id = "b"
agent = "missing"
""",
    )
    out = tmp_path / "results.json"
    proc = _run("supervise", str(cfg), "--output", str(out))
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["status"] == "failed"
    assert set(doc["failed_agents"]) == {"lost", "missing"}
    assert "broken: lost" in doc["failed_agents"]["lost"]["message"]
    assert "broken: missing" in doc["failed_agents"]["missing"]["message"]
    a, b = doc["tasks"]["a"], doc["tasks"]["b"]
    assert a["status"] == b["status"] == "skipped"
    assert a["reason"].startswith("agent 'lost' failed to start")  # the first in the config
    assert b["reason"].startswith("agent 'missing' failed to start")  # its own


def test_supervise_exits_2_with_the_key_path_on_a_config_error(tmp_path: Path) -> None:
    cfg = _project(
        tmp_path,
        """
[agents.echo]
entry = "agents:echo"
[agents.echo.limits]
memory = "a lot"
""",
    )
    proc = _run("supervise", str(cfg))
    assert proc.returncode == 2
    assert 'agents.echo.limits.memory: expected a size like "256MiB"' in proc.stderr


def test_supervise_rejects_unknown_keys_with_a_suggestion(tmp_path: Path) -> None:
    cfg = _project(tmp_path, '[agents.echo]\nentry = "agents:echo"\nreplica = 2\n')
    proc = _run("supervise", str(cfg))
    assert proc.returncode == 2
    assert "agents.echo.replica: unknown key; did you mean 'replicas'?" in proc.stderr


def test_supervise_without_tasks_runs_until_sigterm_and_leaves_no_process(tmp_path: Path) -> None:
    cfg = _project(tmp_path, '[agents.echo]\nentry = "agents:echo"\nreplicas = 3\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentrt.cli", "supervise", str(cfg), "--log-format", "json"],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stderr is not None
        ready = 0
        for line in proc.stderr:  # blocks on the real log stream, no polling
            if '"replica_ready"' in line:
                ready += 1
            if '"supervising"' in line:
                break
        assert ready == 3
        family = psutil.Process(proc.pid).children(recursive=True)
        assert len(family) >= 4  # the zygote and three replicas
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        _gone, alive = psutil.wait_procs(family, timeout=5)
        assert not alive
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.mark.skipif(not (ROOT / "examples/demo/config.toml").exists(), reason="no demo")
def test_demo_config_runs_and_its_flaky_agent_is_restarted(tmp_path: Path) -> None:
    out = tmp_path / "demo.json"
    proc = _run("supervise", "examples/demo/config.toml", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert all(t["status"] == "ok" for t in doc["tasks"].values())
    assert doc["tasks"]["flaky-job"]["attempts"] == 2
    assert "replica_died" in proc.stderr
    assert os.path.exists(out)


_QUICK_EXIT = """
import atexit, sys
from agentrt.cli import run
atexit.register(print, "exit handler ran")  # (stdout a pipe: buffered until flushed)
sys.argv = ["agentrt", "validate", sys.argv[1]]
run()
"""


def test_the_command_runs_exit_handlers_and_flushes_its_output_on_its_way_out(
    tmp_path: Path,
) -> None:
    # run() leaves without the interpreter's teardown, not without its exit work
    cfg = _project(tmp_path, '[agents.echo]\nentry = "agents:echo"\n')
    proc = subprocess.run(
        [sys.executable, "-c", _QUICK_EXIT, str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"{cfg}: ok (1 agents, 0 tools, 0 tasks)",
        "exit handler ran",
    ]


def test_bench_refuses_an_unknown_benchmark_name() -> None:
    proc = _run("bench", "--only", "core,nonsense")
    assert proc.returncode == 2
    assert "unknown nonsense" in proc.stderr


@pytest.mark.parametrize(
    ("toml", "path", "fragment"),
    [
        ("[supervisor]\nperiod = 0", "supervisor.period", "greater than 0"),
        ("[supervisor]\nintensity = -1", "supervisor.intensity", "at least 0"),
        ('[supervisor]\nbackoff = "2s"\nbackoff_max = "1s"', "supervisor.backoff_max", "backoff"),
        ('[agents.echo]\nentry = "agents:echo"\nperiod = 0', "agents.echo.period", "greater"),
        ('[agents.echo]\nentry = "agents:echo"\nintensity = -2', "agents.echo.intensity", "least"),
        (
            '[agents.echo]\nentry = "agents:echo"\nshutdown_timeout = "never"',
            "agents.echo.shutdown_timeout",
            "brutal_kill",
        ),
        ('[supervisor]\non_agent_failure = "shrug"', "supervisor.on_agent_failure", "enum"),
    ],
)
def test_supervise_refuses_restart_settings_that_would_storm_with_exit_2(
    toml: str, path: str, fragment: str, tmp_path: Path
) -> None:
    cfg = _project(tmp_path, toml + "\n")
    for command in ("supervise", "validate"):
        proc = _run(command, str(cfg))
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        assert f"{path}: " in proc.stdout + proc.stderr and fragment in proc.stdout + proc.stderr


def test_supervise_accepts_brutal_kill_and_infinity(tmp_path: Path) -> None:
    cfg = _project(
        tmp_path,
        """
[agents.quick]
entry = "agents:echo"
shutdown_timeout = "brutal_kill"
[agents.patient]
entry = "agents:echo"
shutdown_timeout = "infinity"

[[tasks]]
id = "a"
agent = "quick"
[[tasks]]
id = "b"
agent = "patient"
""",
    )
    proc = _run("supervise", str(cfg))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("tasks", [False, True])
def test_an_agent_past_its_intensity_stops_the_run_exits_1_and_is_recorded(
    tasks: bool, tmp_path: Path
) -> None:
    config = """
[supervisor]
backoff = "1ms"
backoff_max = "2ms"
[agents.echo]
entry = "agents:echo"
[agents.crashy]
entry = "agents:CrashSoon"
intensity = 2
period = "30s"
"""
    if tasks:
        config += '\n[[tasks]]\nid = "hang"\nagent = "slow"\n[agents.slow]\nentry = "agents:slow"\n'
    cfg = _project(tmp_path, config)
    out = tmp_path / "results.json"
    proc = _run("supervise", str(cfg), "--output", str(out), "--log-format", "json", timeout=60)
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["status"] == "failed"
    failed = doc["failed_agents"]["crashy"]
    assert failed["type"] == "AgentFailed"
    assert "more than 2 restarts" in failed["reason"]
    assert failed["last_cause"]["type"] == "AgentCrashed"
    assert failed["last_cause"]["exit_code"] == 3
    if tasks:  # the slow task was running when everything stopped
        assert doc["tasks"]["hang"]["status"] == "cancelled"
    assert '"supervisor_stopping"' in proc.stderr


def test_with_on_agent_failure_continue_the_run_goes_on_and_still_exits_1(tmp_path: Path) -> None:
    cfg = _project(
        tmp_path,
        """
[supervisor]
on_agent_failure = "continue"
backoff = "1ms"
backoff_max = "2ms"
[agents.echo]
entry = "agents:echo"
[agents.crasher]
entry = "agents:crash"
intensity = 1
period = "30s"

[run]
on_error = "continue"

[[tasks]]
id = "boom"
agent = "crasher"
retries = 3
[[tasks]]
id = "after"
agent = "echo"
after = ["boom"]
[[tasks]]
id = "fine"
agent = "echo"
args = { n = 1 }
""",
    )
    out = tmp_path / "results.json"
    proc = _run("supervise", str(cfg), "--output", str(out))
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["tasks"]["fine"]["status"] == "ok"
    assert doc["tasks"]["boom"]["status"] in ("crashed", "failed")
    assert doc["tasks"]["after"]["status"] == "skipped"
    assert doc["failed_agents"]["crasher"]["last_cause"]["exit_code"] == 5


def test_resume_goes_on_with_the_journals_run_and_refuses_a_changed_config(
    tmp_path: Path,
) -> None:
    config = """
[agents.echo]
entry = "agents:echo"

[[tasks]]
id = "one"
agent = "echo"
args = { n = 1 }

[[tasks]]
id = "two"
agent = "echo"
args = { n = "${one.n}" }
"""
    cfg = _project(tmp_path, config)
    first = _run("supervise", str(cfg), "--no-live", "-o", str(tmp_path / "r1.json"))
    assert first.returncode == 0, first.stderr
    assert (tmp_path / ".agentrt" / "runs.db").exists()  # next to the config, by default
    run_id = json.loads((tmp_path / "r1.json").read_text())["run_id"]
    again = _run(
        "supervise", str(cfg), "--no-live", "--resume", "last", "-o", str(tmp_path / "r2.json")
    )
    assert again.returncode == 0, again.stderr
    second = json.loads((tmp_path / "r2.json").read_text())
    assert second["run_id"] == run_id and sorted(second["restored"]) == ["one", "two"]
    # the tasks changed: refused, with the difference, before any agent starts
    cfg.write_text(config.replace("n = 1", "n = 2"))
    changed = _run("supervise", str(cfg), "--no-live", "--resume", run_id)
    assert changed.returncode == 2
    assert "task 'one': args was {'n': 1}, is now {'n': 2}" in changed.stderr
    assert "--force" in changed.stderr
    forced = _run(
        "supervise",
        str(cfg),
        "--no-live",
        "--resume",
        run_id,
        "--force",
        "-o",
        str(tmp_path / "r3.json"),
    )
    assert forced.returncode == 0, forced.stderr
    third = json.loads((tmp_path / "r3.json").read_text())
    assert third["restored"] == [] and third["tasks"]["two"]["result"] == {"n": 2}
    unknown = _run("supervise", str(cfg), "--no-live", "--resume", "nope")
    assert unknown.returncode == 2 and "no run 'nope'" in unknown.stderr
    bare = _run("supervise", str(cfg), "--no-live", "--no-journal", "--resume", "last")
    assert bare.returncode == 2 and "--resume: needs a journal" in bare.stderr
    lone = _run("supervise", str(cfg), "--no-live", "--force")
    assert lone.returncode == 2 and "--force: only goes with --resume" in lone.stderr


def test_a_default_journal_place_that_cannot_hold_one_warns_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    cfg = _project(
        tmp_path,
        """
[agents.echo]
entry = "agents:echo"

[[tasks]]
id = "one"
agent = "echo"
""",
    )
    (tmp_path / ".agentrt").write_text("a file where the journal's directory would go")
    proc = _run("supervise", str(cfg), "--no-live", "-o", str(tmp_path / "r.json"))
    assert proc.returncode == 0, proc.stderr
    assert "journal_unavailable" in proc.stderr and "cannot create its directory" in proc.stderr
    assert json.loads((tmp_path / "r.json").read_text())["status"] == "ok"
    # a journal asked for by name is not optional
    named = _run("supervise", str(cfg), "--no-live", "--journal", str(tmp_path / ".agentrt/x.db"))
    assert named.returncode == 2 and "cannot create its directory" in named.stderr
