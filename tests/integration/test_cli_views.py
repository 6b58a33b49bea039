"""`agentrt validate / doctor / trace`, `supervise --trace / --live / --no-live / --log-format json`
(real subprocesses), and the live view's rendering (fake statuses and events)."""

from __future__ import annotations

import io
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from clitools import ROOT, run_cli, write_project
from rich.console import Console

from agentrt.live import LiveView, console_stream
from agentrt.supervisor import ReplicaStatus, RunEvent

AGENTS = """
import os

def echo(**kw):
    return kw

def crash():
    os._exit(5)
"""
GOOD = """
[agents.echo]
entry = "agents:echo"
replicas = 2
[agents.crasher]
entry = "agents:crash"

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
id = "boom"
agent = "crasher"
"""
BAD = """
[supervisor]
intensty = 3

[agents.echo]
entry = "agents:echo"
replica = 2
[agents.echo.limits]
memory = "a lot"

[[tasks]]
id = "a"
agent = "ecko"

[[tasks]]
id = "b"
agent = "echo"
args = { x = "${nowhere}" }
"""


_run = run_cli


def _project(tmp_path: Path, config: str) -> Path:
    return write_project(tmp_path, AGENTS, config)


# --- validate / doctor ------------------------------------------------------------------


def test_validate_reports_every_error_at_once_with_paths_hints_and_suggestions(
    tmp_path: Path,
) -> None:
    proc = _run("validate", str(_project(tmp_path, BAD)))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    out = proc.stdout
    assert "5 errors" in out
    assert "supervisor.intensty: unknown key; did you mean 'intensity'?" in out
    assert "agents.echo.replica: unknown key; did you mean 'replicas'?" in out
    assert 'agents.echo.limits.memory: expected a size like "256MiB"' in out
    assert "tasks.a.agent: no agent named 'ecko'; did you mean 'echo'?" in out
    assert "tasks.b.args: task 'b' depends on unknown task 'nowhere'" in out
    assert out.count("hint: ") == 5
    assert "allowed keys here: entry, replicas" in out


def test_validate_accepts_a_valid_config(tmp_path: Path) -> None:
    proc = _run("validate", str(_project(tmp_path, GOOD)))
    assert proc.returncode == 0, proc.stdout
    assert "ok (2 agents, 0 tools, 3 tasks)" in proc.stdout


def test_validate_reports_a_cycle_and_invalid_toml(tmp_path: Path) -> None:
    cyc = _project(
        tmp_path,
        '[agents.echo]\nentry = "agents:echo"\n'
        '[[tasks]]\nid = "a"\nagent = "echo"\nafter = ["b"]\n'
        '[[tasks]]\nid = "b"\nagent = "echo"\nafter = ["a"]\n',
    )
    proc = _run("validate", str(cyc))
    assert proc.returncode == 2
    assert "cycle" in proc.stdout and "hint:" in proc.stdout
    broken = tmp_path / "broken.toml"
    broken.write_text("[agents.echo\n")
    proc = _run("validate", str(broken))
    assert proc.returncode == 2 and "invalid TOML" in proc.stdout


def test_doctor_exits_0_and_names_the_isolation_features() -> None:
    proc = _run("doctor")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.lower()
    for word in ("pidfd", "early death notice", "landlock", "cgroup", "namespace", "rlimit"):
        assert word in text, word


def test_help_documents_commands_and_exit_codes() -> None:
    proc = _run("--help")
    assert proc.returncode == 0
    for word in ("supervise", "validate", "doctor", "trace", "exit status"):
        assert word in proc.stdout
    sup = _run("supervise", "--help")
    assert "--trace" in sup.stdout and "--no-live" in sup.stdout


# --- supervise views ----------------------------------------------------------------------


def test_supervise_trace_writes_a_loadable_trace_and_renders_a_png(tmp_path: Path) -> None:
    cfg = _project(tmp_path, GOOD)
    trace = tmp_path / "run.trace.json"
    proc = _run("supervise", str(cfg), "--no-live", "--trace", str(trace))
    assert proc.returncode == 1, proc.stderr  # "boom" crashes
    doc = json.loads(trace.read_text())
    events = doc["traceEvents"]
    spans = {e["name"]: e for e in events if e["ph"] == "X"}
    assert set(spans) == {"first", "second", "boom"}
    for e in spans.values():
        assert {"ts", "dur", "pid", "tid", "args"} <= set(e)
        assert e["tid"] == e["args"]["pid"]  # one track per replica
    assert spans["first"]["pid"] == spans["second"]["pid"] != spans["boom"]["pid"]
    assert spans["boom"]["args"]["status"] == "crashed"
    assert spans["second"]["ts"] >= spans["first"]["ts"] + spans["first"]["dur"]
    instants = {e["name"] for e in events if e["ph"] == "i"}
    assert {"replica_crashed", "replica_restarting"} <= instants
    assert doc["otherData"]["critical_path"]
    assert doc["otherData"]["makespan"] > 0

    png = tmp_path / "gantt.png"
    shown = _run("trace", str(trace), "--png", str(png), "--width", "900", "--height", "300")
    assert shown.returncode == 0, shown.stderr
    assert "critical path" in shown.stdout
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(data[16:20], "big") == 900
    assert int.from_bytes(data[20:24], "big") == 300
    nope = tmp_path / "nope.json"
    nope.write_text("[]")
    assert _run("trace", str(nope)).returncode == 2


LANES_AGENTS = """
import asyncio

from agentrt.context import tool

_started = {}


@tool
async def probe(query="", group="g", n=3):
    # returns once n probes of its group have started: the n run at once
    seen = _started.setdefault(group, [0, asyncio.Event()])
    seen[0] += 1
    if seen[0] == n:
        seen[1].set()
    await asyncio.wait_for(seen[1].wait(), 10)
    return query


@tool
def shout(text=""):
    return text.upper()


async def hub(ctx, topic=""):
    found = await ctx.gather(
        *(ctx.tool("probe", query=f"{topic}{i}", group=topic) for i in range(3))
    )
    return {"found": found, "deeper": await ctx.spawn("leaf", topic=topic)}


async def leaf(ctx, topic=""):
    return await ctx.tool("shout", text=topic)
"""
LANES = """
[agents.hub]
entry = "agents:hub"
[agents.leaf]
entry = "agents:leaf"

[[tasks]]
id = "gather"
agent = "hub"
args = { topic = "moon" }
"""


def test_supervise_trace_draws_calls_made_at_once_in_lanes_under_their_task(
    tmp_path: Path,
) -> None:
    cfg = write_project(tmp_path, LANES_AGENTS, LANES)
    trace = tmp_path / "run.trace.json"
    proc = _run("supervise", str(cfg), "--no-live", "--trace", str(trace))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(trace.read_text())
    events = doc["traceEvents"]
    (task,) = [e for e in events if e.get("cat") == "task"]
    lanes = {(ln["pid"], ln["tid"]): ln for ln in doc["otherData"]["lanes"]}
    calls = [e for e in events if e.get("cat") == "call"]
    for c in calls:
        lane = lanes[(c["pid"], c["tid"])]  # every call is in a lane ...
        assert (lane["pid"], lane["row"]) == (task["pid"], task["tid"])  # ... under the task
        assert c["args"]["task"] == "gather" and c["args"]["status"] == "ok"
    probes = sorted((c for c in calls if c["name"] == "tool:probe"), key=lambda c: c["ts"])
    assert [p["args"]["summary"] for p in probes] == [
        f"query='moon{i}', group='moon'" for i in range(3)
    ]
    assert len({p["tid"] for p in probes}) == 3  # three lanes ...
    for a in probes:
        for b in probes:
            assert a["ts"] < b["ts"] + b["dur"]  # ... for three calls that ran at once
    (sub,) = [c for c in calls if c["name"] == "agent:leaf"]
    (nested,) = [c for c in calls if c["name"] == "tool:shout"]
    assert sub["args"]["agent"] == "leaf" and sub["args"]["summary"] == "topic='moon'"
    assert nested["args"]["parent"] == sub["args"]["call_id"]
    assert lanes[(nested["pid"], nested["tid"])]["lane"] == sub["args"]["lane"] + ".1"
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in events if e["name"] == "thread_name"}
    row = names[(task["pid"], task["tid"])]
    assert names[(sub["pid"], sub["tid"])] == f"{row} lane {sub['args']['lane']}"

    png = tmp_path / "lanes.png"
    shown = _run("trace", str(trace), "--png", str(png))
    assert shown.returncode == 0, shown.stderr
    rows = {(e["pid"], e["tid"]) for e in events if e["ph"] == "X" or e.get("cat") == "replica"}
    assert int.from_bytes(png.read_bytes()[20:24], "big") == max(300, 140 + 30 * len(rows))


def test_trace_reads_a_file_written_before_calls_had_lanes(tmp_path: Path) -> None:
    old = tmp_path / "old.trace.json"
    span = {"ph": "X", "pid": 1, "tid": 7, "args": {"status": "ok"}}
    old.write_text(
        json.dumps(
            {
                "traceEvents": [
                    {"name": "thread_name", "ph": "M", "pid": 1, "tid": 7, "args": {"name": "w"}},
                    {**span, "name": "t", "cat": "task", "ts": 0, "dur": 10},
                    {**span, "name": "tool:a", "cat": "call", "ts": 1, "dur": 5},
                ],
                "otherData": {"critical_path": ["t"], "makespan": 1e-5},
            }
        )
    )
    shown = _run("trace", str(old), "--png", str(tmp_path / "old.png"))
    assert shown.returncode == 0, shown.stderr
    assert "2 spans" in shown.stdout and "critical path t" in shown.stdout


def test_supervise_no_live_gives_plain_logs(tmp_path: Path) -> None:
    proc = _run("supervise", str(_project(tmp_path, GOOD)), "--no-live")
    assert proc.returncode == 1
    assert "\x1b[" not in proc.stderr  # no colours, no cursor movement
    assert "recent events" not in proc.stderr
    assert "task_finished" in proc.stderr and "run_finished" in proc.stderr


@pytest.mark.parametrize("live", ["--no-live", "--live"])
def test_supervise_json_logs_are_one_object_per_line(tmp_path: Path, live: str) -> None:
    cfg = _project(tmp_path, GOOD)
    proc = _run("supervise", str(cfg), "--log-format", "json", live)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    if live == "--no-live":
        events = [json.loads(line) for line in lines]  # every line parses
    else:
        # forced on a pipe: the view's frames are drawn between the log lines,
        # each log line itself is still one whole JSON object
        events = [json.loads(line[line.index("{") :]) for line in lines if '"event": "' in line]
    names = {e["event"] for e in events}
    assert {"replica_ready", "task_finished", "run_finished"} <= names


def test_supervise_json_config_error_is_json(tmp_path: Path) -> None:
    cfg = _project(tmp_path, '[agents.echo]\nentry = "agents:echo"\nreplica = 2\n')
    proc = _run("supervise", str(cfg), "--log-format", "json", "--no-live")
    assert proc.returncode == 2
    (event,) = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
    assert event["event"] == "config_error" and event["path"] == "agents.echo.replica"


@pytest.mark.skipif(shutil.which("script") is None, reason="no script(1)")
def test_supervise_on_a_terminal_shows_the_live_view(tmp_path: Path) -> None:
    cfg = _project(tmp_path, GOOD)
    cmd = shlex.join([sys.executable, "-m", "agentrt.cli", "supervise", str(cfg)])
    proc = subprocess.run(
        ["script", "-qfec", cmd, "/dev/null"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    out = proc.stdout
    assert proc.returncode == 1, out
    for word in ("agent", "replicas", "RSS", "restarts", "echo", "crasher"):
        assert word in out, word
    assert "3/3 done, 1 failed" in out
    assert "recent events" in out and "crashed" in out
    assert "run_finished" in out  # logs still shown, above the view


# --- the live view's renderer -------------------------------------------------------------


def _render(view: LiveView) -> str:
    buf = io.StringIO()
    Console(file=buf, force_terminal=True, width=140, color_system=None).print(view.render())
    return buf.getvalue()


def test_live_view_renders_agents_progress_and_recent_events() -> None:
    now = 1_700_000_010.0
    view = LiveView(Console(file=io.StringIO()), clock=lambda: now)
    view.set_status(
        [
            ReplicaStatus(
                agent="research",
                replica=0,
                state="busy",
                pid=111,
                restarts=0,
                inflight=1,
                rss=50 * 1024 * 1024,
                cpu_percent=12.0,
            ),
            ReplicaStatus(
                agent="research",
                replica=1,
                state="ready",
                pid=112,
                restarts=2,
                inflight=0,
                rss=40 * 1024 * 1024,
                cpu_percent=3.0,
            ),
            ReplicaStatus(
                agent="flaky", replica=0, state="backoff", pid=None, restarts=1, inflight=0
            ),
        ]
    )
    for ev in (
        RunEvent(kind="run_started", time=now - 5, run_id="r", tasks=3),
        RunEvent(kind="fanout", time=now - 5, task="research", items=2),
        RunEvent(kind="task_started", time=now - 2.5, task="research[0]", agent="research"),
        RunEvent(kind="task_started", time=now - 1, task="research[1]", agent="research"),
        RunEvent(
            kind="task_finished",
            time=now - 1,
            task="research[1]",
            agent="research",
            pid=112,
            status="ok",
        ),
        RunEvent(
            kind="replica_crashed",
            time=now - 1,
            agent="flaky",
            replica=0,
            pid=113,
            status="limit",
            reason="memory limit 512MiB",
        ),
        RunEvent(kind="replica_restarting", time=now - 0.5, agent="flaky", replica=0),
        RunEvent(
            kind="task_finished", time=now, task="job", agent="flaky", pid=113, status="limit"
        ),
    ):
        view.on_event(ev)
    text = _render(view)
    assert "research" in text and "2/2" in text and "111,112" in text
    assert "15" in text  # CPU % summed over the replicas
    assert "90.0MiB" in text  # RSS summed
    assert "research[0]" in text and "2.5s" in text  # the oldest running task, its elapsed
    assert "flaky" in text and "0/1" in text and "backoff" in text
    assert "2/5 done, 1 failed" in text
    assert "flaky#0 pid 113 limit hit: memory limit 512MiB" in text
    assert "flaky#0 restarting" in text
    assert "task job limit" in text


def test_console_stream_prints_whole_lines_through_the_console() -> None:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=40, color_system=None)
    stream = console_stream(console)
    long_line = json.dumps({"event": "x" * 100})
    stream.write(long_line[:30])
    assert buf.getvalue() == ""  # nothing until the line is complete
    stream.write(long_line[30:] + "\n")
    stream.flush()
    assert buf.getvalue().splitlines() == [long_line]  # not wrapped at the console width
    assert stream.isatty()
