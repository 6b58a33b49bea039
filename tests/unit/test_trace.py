"""The Chrome trace document of a run and its Gantt PNG (no processes)."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentrt.scheduler import RunResult, TaskResult
from agentrt.supervisor import RunEvent
from agentrt.trace import TraceRecorder, build_trace, load_trace, render_png

T0 = 1_700_000_000.0


@pytest.fixture(scope="module", autouse=True)
def _fonts_loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """matplotlib keeps the font files it has used open (a process-wide cache):
    draw once before the per-test fd leak check takes its snapshot."""
    render_png({"traceEvents": []}, tmp_path_factory.mktemp("fonts") / "warm.png")
    yield


def _result() -> RunResult:
    tasks = {
        "plan": TaskResult(
            id="plan",
            status="ok",
            attempts=1,
            agent="planner",
            pid=101,
            queued_at=T0,
            started_at=T0 + 0.001,
            finished_at=T0 + 0.5,
        ),
        "work": TaskResult(
            id="work",
            status="crashed",
            attempts=2,
            agent="worker",
            pid=202,
            error={"type": "AgentCrashed", "message": "exit 5", "exit_code": 5},
            queued_at=T0 + 0.5,
            started_at=T0 + 0.5,
            finished_at=T0 + 1.25,
        ),
        "late": TaskResult(id="late", status="skipped", reason="work failed", agent="worker"),
    }
    return RunResult(
        run_id="r1",
        status="failed",
        tasks=tasks,
        critical_path=["plan", "work"],
        makespan=1.25,
        started_at=T0,
        finished_at=T0 + 1.25,
    )


def _events() -> list[RunEvent]:
    return [
        RunEvent(kind="replica_ready", time=T0, agent="planner", replica=0, pid=101),
        RunEvent(kind="replica_ready", time=T0, agent="worker", replica=0, pid=202),
        RunEvent(kind="run_started", time=T0, run_id="r1", tasks=3),
        RunEvent(kind="task_started", time=T0 + 0.001, task="plan", agent="planner"),
        RunEvent(
            kind="replica_crashed",
            time=T0 + 0.75,
            agent="worker",
            replica=0,
            pid=202,
            status="crashed",
            reason="exit 5",
        ),
        RunEvent(kind="replica_restarting", time=T0 + 0.8, agent="worker", replica=0),
        RunEvent(kind="task_retry", time=T0 + 0.8, task="work", attempt=2, status="crashed"),
        RunEvent(kind="task_skipped", time=T0 + 1.25, task="late", reason="work failed"),
    ]


def test_trace_is_a_valid_chrome_trace_with_microsecond_timestamps() -> None:
    doc = json.loads(json.dumps(build_trace(_events(), _result())))
    events = doc["traceEvents"]
    assert isinstance(events, list) and events
    for e in events:
        assert {"ph", "pid", "tid", "name"} <= set(e)
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int)
        if e["ph"] != "M":
            assert isinstance(e["ts"], int | float) and e["ts"] >= 0
    spans = {e["name"]: e for e in events if e["ph"] == "X"}
    assert set(spans) == {"plan", "work"}  # a skipped task never ran
    plan, work = spans["plan"], spans["work"]
    us = pytest.approx  # epoch floats: exact to well under a microsecond
    assert plan["ts"] == us(1_000, abs=1) and plan["dur"] == us(499_000, abs=1)  # microseconds
    assert work["ts"] == us(500_000, abs=1) and work["dur"] == us(750_000, abs=1)
    assert work["args"]["status"] == "crashed" and work["args"]["attempts"] == 2
    assert work["args"]["error"]["type"] == "AgentCrashed"
    # one track per replica: pid = agent (named), tid = the replica's OS pid
    assert plan["tid"] == 101 and work["tid"] == 202 and plan["pid"] != work["pid"]
    names = {(e["pid"], e["args"]["name"]) for e in events if e["name"] == "process_name"}
    assert names == {(plan["pid"], "planner"), (work["pid"], "worker")}
    threads = {e["tid"]: e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert threads[202] == "worker#0 pid 202"
    instants = [e for e in events if e["ph"] == "i"]
    assert all(e["s"] in ("t", "p", "g") for e in instants)
    crash = next(e for e in instants if e["name"] == "replica_crashed")
    assert crash["tid"] == 202 and crash["ts"] == pytest.approx(750_000, abs=1)
    restart = next(e for e in instants if e["name"] == "replica_restarting")
    assert restart["tid"] == 202  # the replica's last pid, from the events
    assert any(e["name"] == "task_retry work" for e in instants)
    other = doc["otherData"]
    assert other["critical_path"] == ["plan", "work"] and other["makespan"] == 1.25
    assert other["run_id"] == "r1"


def test_recorder_writes_a_loadable_file_and_works_without_a_result(tmp_path: Path) -> None:
    rec = TraceRecorder()
    for ev in _events():
        rec.on_event(ev)
    path = rec.write(tmp_path / "sub" / "t.json", _result())
    doc = load_trace(path)
    assert sum(1 for e in doc["traceEvents"] if e["ph"] == "X") == 2
    bare = TraceRecorder()
    bare.on_event(_events()[0])
    assert "critical_path" not in bare.build()["otherData"]


def test_load_trace_refuses_what_is_not_a_trace(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"events": []}')
    for path in (bad, tmp_path / "missing.json"):
        try:
            load_trace(path)
        except ValueError as exc:
            assert str(path) in str(exc)
        else:
            raise AssertionError("accepted a non-trace")


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    w, h = struct.unpack(">II", data[16:24])
    return w, h


def test_png_renderer_writes_an_image_of_the_requested_size(tmp_path: Path) -> None:
    doc = build_trace(_events(), _result())
    out = render_png(doc, tmp_path / "g.png", width=800, height=400)
    assert out.stat().st_size > 1000
    assert _png_size(out) == (800, 400)


def test_png_renderer_reads_a_trace_file_and_sizes_rows(tmp_path: Path) -> None:
    path = TraceRecorder().write(tmp_path / "t.json", None)  # no tasks: still an image
    out = render_png(path, tmp_path / "empty.png")
    assert _png_size(out) == (1200, 300)
    rec = TraceRecorder()
    for ev in _events():
        rec.on_event(ev)
    full = render_png(rec.write(tmp_path / "t2.json", _result()), tmp_path / "full.png")
    assert _png_size(full)[0] == 1200
