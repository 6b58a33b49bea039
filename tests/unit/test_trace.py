"""The Chrome trace document of a run and its Gantt PNG (no processes)."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentrt.scheduler import RunResult, TaskResult
from agentrt.supervisor import RunEvent
from agentrt.trace import (
    LANE_TID_BASE,
    CallSpan,
    TraceRecorder,
    assign_lanes,
    build_trace,
    collect_calls,
    lay_out_lanes,
    load_trace,
    render_png,
)

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


# --- calls in lanes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spans", "lanes"),
    [
        pytest.param([], [], id="none"),
        pytest.param([(0, 3), (1, 4), (2, 5)], [0, 1, 2], id="three-at-once-three-lanes"),
        pytest.param([(0, 1), (1, 2), (2, 3)], [0, 0, 0], id="one-after-another-one-lane"),
        pytest.param([(0, 2), (1, 3), (2, 4), (3, 5)], [0, 1, 0, 1], id="freed-lanes-reused"),
        pytest.param([(2, 4), (0, 1), (0, 3)], [1, 1, 0], id="by-start-longest-first"),
        pytest.param([(0, 10), (1, 2), (3, 4), (5, 6)], [0, 1, 1, 1], id="long-one-keeps-its-lane"),
        pytest.param([(0, 5), (1, 2), (1, 3), (4, 5)], [0, 2, 1, 1], id="lowest-free-lane"),
        pytest.param([(1, 1), (1, 1)], [0, 0], id="instants-share"),
    ],
)
def test_assign_lanes_never_shares_a_lane_between_overlapping_calls(
    spans: list[tuple[float, float]], lanes: list[int]
) -> None:
    got = assign_lanes(spans)
    assert got == lanes
    for i, (s1, e1) in enumerate(spans):
        for j, (s2, e2) in enumerate(spans[:i]):
            if s1 < e2 and s2 < e1:
                assert got[i] != got[j]
    # as many lanes as calls at once, at most
    peak = max((sum(s <= t < e for s, e in spans) for t, _ in spans), default=0)
    assert len(set(got)) == max(peak, 1 if spans else 0)


def _call(cid: int, start: float, end: float, *children: CallSpan) -> CallSpan:
    c = CallSpan(call_id=cid, parent=None, target=f"tool:t{cid}", start=start, end=end)
    c.children = list(children)
    return c


def test_calls_made_by_a_call_get_lanes_beneath_its_lane() -> None:
    a = _call(1, 0, 10, _call(11, 1, 5), _call(12, 2, 6), _call(13, 6, 9))
    b = _call(2, 1, 4)
    c = _call(3, 11, 12, _call(31, 11, 12))  # after a: lane 1 again, its child in lane 1.1
    lanes = lay_out_lanes([b, c, a], end=20)
    assert [(ln.label, [x.call_id for x in ln.calls]) for ln in lanes] == [
        ("1", [1, 3]),
        ("1.1", [11, 13, 31]),
        ("1.2", [12]),
        ("2", [2]),
    ]
    unfinished = CallSpan(call_id=4, parent=None, target="x", start=1.0)
    (only,) = lay_out_lanes([unfinished], end=7.0)
    assert only.calls == [unfinished] and unfinished.until(7.0) == 7.0


_AGENT_OF = {101: "planner", 202: "worker", 303: "helper", 304: "helper"}


def _span(
    cid: int,
    parent: int,
    target: str,
    start: float,
    end: float | None,
    pid: int,
    status: str = "ok",
    reason: str | None = None,
    task: str | None = None,
) -> list[RunEvent]:
    """A call's ``call_started`` and (unless ``end`` is None) ``call_finished``."""
    agent = _AGENT_OF.get(pid, f"a{pid}")
    evs = [
        RunEvent(
            kind="call_started",
            time=T0 + start,
            call_id=cid,
            parent=parent,
            target=target,
            agent=agent,
            pid=pid,
            summary=f"n={cid}",
            task=task,
        )
    ]
    if end is not None:
        evs.append(
            RunEvent(
                kind="call_finished",
                time=T0 + end,
                call_id=cid,
                parent=parent,
                target=target,
                agent=agent,
                pid=pid,
                status=status,
                reason=reason,
                task=task,
            )
        )
    return evs


def _call_events() -> list[RunEvent]:
    """'plan' (planner, pid 101, its call 1) makes three tool calls at once, then a
    subagent call that fails after making two tool calls at once; 'work' (worker,
    pid 202, its call 9) makes one subagent call."""
    return [
        *_events(),
        *_span(-2, 1, "tool:search", 0.10, 0.30, 101),
        *_span(-3, 1, "tool:search", 0.15, 0.35, 101),
        *_span(-4, 1, "tool:read", 0.20, 0.25, 101),
        *_span(5, 1, "helper", 0.36, 0.45, 303, status="failed", reason="ValueError: bad"),
        *_span(-6, 5, "tool:shout", 0.37, 0.38, 303),
        *_span(-7, 5, "tool:shout", 0.375, 0.39, 303),
        *_span(10, 9, "helper", 0.6, 0.7, 303),
    ]


def _lanes(doc: dict[str, Any]) -> dict[int, tuple[int, str]]:
    """Each call's ``call_id`` -> (the row its lane is under, the lane)."""
    lanes = {(ln["pid"], ln["tid"]): (ln["row"], ln["lane"]) for ln in doc["otherData"]["lanes"]}
    return {
        e["args"]["call_id"]: lanes[(e["pid"], e["tid"])]
        for e in doc["traceEvents"]
        if e.get("cat") == "call"
    }


def test_a_tasks_concurrent_calls_get_lanes_of_their_own_under_its_row() -> None:
    doc = json.loads(json.dumps(build_trace(_call_events(), _result())))
    events = doc["traceEvents"]
    lanes = _lanes(doc)
    # three tool calls at once: three lanes under plan's row (its replica, pid 101)
    assert lanes[-2] == (101, "1") and lanes[-3] == (101, "2") and lanes[-4] == (101, "3")
    # the subagent call follows the first search: it reuses lane 1; its calls nest under it
    assert lanes[5] == (101, "1") and lanes[-6] == (101, "1.1") and lanes[-7] == (101, "1.2")
    assert lanes[10] == (202, "1")  # work's call, found by time: the only task running then
    calls = {e["args"]["call_id"]: e for e in events if e.get("cat") == "call"}
    plan = next(e for e in events if e.get("name") == "plan" and e["ph"] == "X")
    for cid in (-2, -3, -4, 5, -6, -7):
        span = calls[cid]
        assert span["pid"] == plan["pid"] and span["tid"] >= LANE_TID_BASE
        assert span["args"]["task"] == "plan"
    assert len({calls[cid]["tid"] for cid in (-2, -3, -4)}) == 3
    assert calls[5]["tid"] == calls[-2]["tid"]
    assert calls[10]["args"]["task"] == "work"
    # lanes are named after their row, and sorted right beneath it, nested depth first
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in events if e["name"] == "thread_name"}
    order = {
        (e["pid"], e["tid"]): e["args"]["sort_index"]
        for e in events
        if e["name"] == "thread_sort_index"
    }
    assert names[(plan["pid"], calls[-3]["tid"])] == "planner#0 pid 101 lane 2"
    rows = sorted((k for k in order if k[0] == plan["pid"]), key=order.__getitem__)
    assert [names[r].removeprefix("planner#0 pid 101") for r in rows] == [
        "",
        " lane 1",
        " lane 1.1",
        " lane 1.2",
        " lane 2",
        " lane 3",
    ]


def test_call_spans_say_their_target_arguments_and_outcome() -> None:
    doc = build_trace(_call_events(), _result())
    calls = {e["args"]["call_id"]: e for e in doc["traceEvents"] if e.get("cat") == "call"}
    search, helper = calls[-2], calls[5]
    assert search["name"] == "tool:search" and search["ph"] == "X"
    assert search["ts"] == pytest.approx(100_000, abs=1)
    assert search["dur"] == pytest.approx(200_000, abs=1)
    assert search["args"] == {
        "call_id": -2,
        "parent": 1,
        "target": "tool:search",
        "kind": "tool",
        "in_process": True,
        "summary": "n=-2",
        "status": "ok",
        "reason": None,
        "task": "plan",
        "agent": "planner",
        "pid": 101,
        "lane": "1",
    }
    assert helper["name"] == "agent:helper"
    assert helper["args"]["kind"] == "subagent" and not helper["args"]["in_process"]
    assert helper["args"]["status"] == "failed"
    assert helper["args"]["reason"] == "ValueError: bad"
    assert helper["args"]["agent"] == "helper" and helper["args"]["pid"] == 303  # where it ran
    assert helper["args"]["summary"] == "n=5"


def _at_once(*pids: int) -> RunResult:
    """A run whose tasks A, B, ... (agent a<pid>, replica pid <pid>) all ran at once."""
    tasks = {
        tid: TaskResult(
            id=tid,
            status="ok",
            attempts=1,
            agent=f"a{pid}",
            pid=pid,
            started_at=T0,
            finished_at=T0 + 1,
        )
        for tid, pid in zip("ABCD", pids, strict=False)
    }
    return RunResult(
        run_id="r",
        status="ok",
        tasks=tasks,
        critical_path=[],
        makespan=1.0,
        started_at=T0,
        finished_at=T0 + 1,
    )


def _calls_of(doc: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {e["args"]["call_id"]: e for e in doc["traceEvents"] if e.get("cat") == "call"}


def test_calls_go_under_the_task_their_events_name_their_caller_ran_or_that_is_left() -> None:
    result = _at_once(1, 2, 3)  # A, B and C run at once
    evs = [
        *_span(-11, 100, "tool:t", 0.1, 0.2, 1),  # in-process: ran in its caller, on A's replica
        *_span(101, 100, "sub", 0.1, 0.3, 9),  # made by the same call (100): A's too
        *_span(401, 400, "sub", 0.2, 0.3, 9, task="C"),  # its events name its task
        *_span(201, 200, "sub", 0.2, 0.3, 9),  # A and C made one call each: B's
    ]
    doc = build_trace(evs, result)
    calls, lanes = _calls_of(doc), _lanes(doc)
    assert calls[-11]["args"]["task"] == calls[101]["args"]["task"] == "A"
    assert lanes[101] == (1, "1") and lanes[-11] == (1, "2")  # at once: the longer first
    assert calls[401]["args"]["task"] == "C" and lanes[401] == (3, "1")
    assert calls[201]["args"]["task"] == "B" and lanes[201] == (2, "1")
    # once A was retried (a second call of its own), call 200 may be A's as well as B's
    evs.append(RunEvent(kind="task_retry", time=T0 + 0.5, task="A", attempt=2, status="failed"))
    assert _calls_of(build_trace(evs, result))[201]["args"]["task"] is None


def test_calls_whose_task_cannot_be_told_go_to_a_row_of_their_own() -> None:
    result = _at_once(1, 2)
    evs = [*_span(201, 200, "sub", 0.2, 0.4, 9), *_span(301, 300, "sub", 0.3, 0.5, 9)]
    doc = build_trace(evs, result)
    calls, lanes = _calls_of(doc), _lanes(doc)
    procs = {e["pid"]: e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "process_name"}
    threads = {e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "thread_name"}
    for cid in (201, 301):
        assert calls[cid]["args"]["task"] is None
        assert procs[calls[cid]["pid"]] == "(calls)"
    assert lanes[201] == (0, "1") and lanes[301] == (0, "2")  # they overlap
    assert "caller not known" in threads


def test_a_call_dispatched_again_is_one_span_and_an_unfinished_one_runs_to_the_end() -> None:
    evs = [
        *_events(),
        *_span(5, 1, "helper", 0.1, None, 303),
        *_span(5, 1, "helper", 0.2, 0.4, 304),  # its replica died: sent to another
        *_span(6, 1, "helper", 0.3, None, 303),  # never finished
    ]
    calls = collect_calls(evs)
    assert calls[5].start == T0 + 0.1 and calls[5].end == T0 + 0.4 and calls[5].pid == 304
    doc = build_trace(evs, _result())
    spans = {e["args"]["call_id"]: e for e in doc["traceEvents"] if e.get("cat") == "call"}
    assert len(spans) == 2
    assert spans[6]["args"]["status"] == "running"
    assert spans[6]["ts"] + spans[6]["dur"] == pytest.approx(1_250_000, abs=1)  # the run's end


def _rows(doc: dict[str, Any]) -> int:
    drawn = [e for e in doc["traceEvents"] if e["ph"] == "X" or e.get("cat") == "replica"]
    return len({(e["pid"], e["tid"]) for e in drawn})


def test_png_draws_a_row_per_lane(tmp_path: Path) -> None:
    plain = build_trace(_events(), _result())
    laned = build_trace(_call_events(), _result())
    assert _rows(laned) == _rows(plain) + 6  # plan's 5 lanes and work's one
    for doc in (plain, laned):
        out = render_png(doc, tmp_path / "g.png")
        assert _png_size(out) == (1200, max(300, 140 + 30 * _rows(doc)))


def test_png_draws_a_trace_written_before_lanes(tmp_path: Path) -> None:
    """Calls on their replica's row, no sort index, no lanes in otherData."""
    span = {"ph": "X", "pid": 1, "tid": 7}
    ok = {"status": "ok", "task": None}
    old = {
        "traceEvents": [
            {"name": "process_name", "ph": "M", "pid": 1, "tid": 0, "args": {"name": "w"}},
            {"name": "thread_name", "ph": "M", "pid": 1, "tid": 7, "args": {"name": "w#0 pid 7"}},
            {**span, "name": "t", "cat": "task", "ts": 0, "dur": 10, "args": {"status": "ok"}},
            {**span, "name": "tool:a", "cat": "call", "ts": 1, "dur": 5, "args": ok},
            {**span, "name": "tool:b", "cat": "call", "ts": 2, "dur": 5, "args": ok},
        ],
        "otherData": {"critical_path": ["t"], "makespan": 1e-5},
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    assert _png_size(render_png(path, tmp_path / "old.png")) == (1200, 300)


def test_a_model_call_is_a_span_of_its_own_kind() -> None:
    from agentrt.trace import CallSpan

    model = CallSpan(call_id=-9, parent=1, target="model:gpt-4o", agent="a", pid=1, start=T0)
    tool = CallSpan(call_id=-8, parent=1, target="tool:search", agent="a", pid=1, start=T0)
    sub = CallSpan(call_id=8, parent=1, target="research", agent="a", pid=1, start=T0)
    odd = CallSpan(call_id=7, parent=1, target="model", agent="a", pid=1, start=T0)
    assert (model.name, model.kind) == ("model:gpt-4o", "model")
    assert (tool.name, tool.kind) == ("tool:search", "tool")
    assert (sub.name, sub.kind) == ("agent:research", "subagent")
    assert (odd.name, odd.kind) == ("agent:model", "subagent")  # an agent named "model"
