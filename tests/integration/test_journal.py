"""The run journal with real agents: what it records, and resuming a run from it.

Agents say when they run by appending their name to a log file
(``agents:logged``); a FIFO gate holds a task in flight while the run is
stopped, as a supervisor's death would leave it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from agentrt import Graph
from agentrt.journal import _SCHEMA, FORMAT, Journal, JournalError, RunLocked
from agentrt.scheduler import Run


def ran(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


async def start(sup: Any, agent_spec: Any) -> None:
    # queue 0: a call never waits in a replica behind a task a test holds at a gate
    await sup.start(agent_spec("logger", "agents:logged", replicas=4, queue=0))
    await sup.start(agent_spec("submitter", "agents:submits_logged"))


def chain(log: Path, gate: str | None = None) -> Graph:
    g = Graph()
    g.add("a", "logger", args={"log": str(log), "name": "a", "value": 1})
    g.add("b", "logger", args={"log": str(log), "name": "b", "value": 2})
    g.add("slow", "logger", args={"log": str(log), "name": "slow", "gate": gate})
    g.add("sum", "logger", args={"log": str(log), "name": "sum", "value": "${a} + ${b}"})
    g.add("after", "logger", args={"log": str(log), "name": "after"}, after=["slow", "sum"])
    return g


async def test_a_run_is_recorded_task_by_task(make_supervisor, agent_spec, tmp_path):
    log = tmp_path / "ran.log"
    with Journal(tmp_path / "runs.db") as journal:
        async with make_supervisor() as sup:
            await start(sup, agent_spec)
            result = await Run(sup, chain(log), journal=journal, run_id="r1", argv="x y").wait()
        assert result.status == "ok" and result.journal_error is None
        (row,) = journal.runs()
        assert (row.run_id, row.status, row.tasks, row.ok, row.argv) == ("r1", "ok", 5, 5, "x y")
        outcomes = {t: (s, o["result"]) for t, s, o in journal.task_outcomes("r1") if o}
        assert outcomes["sum"] == ("ok", "1 + 2")
        attempts = journal.attempts("r1")
        assert sorted(a["task"] for a in attempts) == ["a", "after", "b", "slow", "sum"]
        assert all(a["status"] == "ok" and a["pid"] for a in attempts)
        kinds = [e["kind"] for e in journal.events("r1")]
        assert kinds[0] == "run_started" and kinds[-1] == "run_finished"


async def test_a_stopped_run_resumes_without_running_finished_tasks_again(
    make_supervisor, agent_spec, tmp_path, make_gate
):
    log = tmp_path / "ran.log"
    gate = make_gate("slow")
    with Journal(tmp_path / "runs.db") as journal:
        async with make_supervisor() as sup:
            await start(sup, agent_spec)
            events = sup.events()
            run = Run(sup, chain(log, gate.path), journal=journal, run_id="r2").start()
            # a, b and sum finish; slow is held in flight: the run stops there
            waiting = {"a", "b", "sum"}
            async with asyncio.timeout(20):
                async for ev in events:
                    if ev.kind == "task_finished":
                        waiting.discard(ev.task)
                    if not waiting:
                        break
            await events.aclose()
            run.cancel_run("stopped by the test")
            first = await run.wait()
            assert first.status == "cancelled"
            assert first.tasks["slow"].status == "cancelled"
            assert first.tasks["after"].status == "skipped"
            # the next attempt of slow passes (a line each, should the first attempt,
            # on its way out, still read one)
            gate.release()
            gate.release()
            before = ran(log)
            second = await Run.resume(sup, journal, "last", chain(log, gate.path)).wait()
        assert second.status == "ok"
        assert sorted(second.restored) == ["a", "b", "sum"]
        assert sorted(ran(log)[len(before) :]) == ["after", "slow"]  # nothing else ran again
        assert second.tasks["sum"].result == "1 + 2"
        (row,) = journal.runs()
        assert (row.status, row.resumed, row.ok) == ("ok", 1, 5)
        # every ok result was recorded once: one row per task, two attempts for slow
        counts = journal.count_attempts("r2")
        assert counts["a"] == 1 and counts["slow"] == 2


async def test_a_changed_graph_is_refused_with_its_differences_unless_forced(
    make_supervisor, agent_spec, tmp_path
):
    log = tmp_path / "ran.log"
    with Journal(tmp_path / "runs.db") as journal:
        async with make_supervisor() as sup:
            await start(sup, agent_spec)
            await Run(sup, chain(log), journal=journal, run_id="r3").wait()
            changed = chain(log)
            changed = Graph.from_specs(
                [
                    {**_spec(n), "args": {**n.args, "value": 10}} if n.id == "b" else _spec(n)
                    for n in changed.nodes
                ]
            )
            with pytest.raises(JournalError) as info:
                Run.resume(sup, journal, "r3", changed)
            assert "task 'b': args was" in str(info.value) and "--force" in str(info.value)
            before = len(ran(log))
            forced = await Run.resume(sup, journal, "r3", changed, force=True).wait()
        # b changed: it and what depends on it ran again; a and slow did not
        assert sorted(ran(log)[before:]) == ["after", "b", "sum"]
        assert forced.tasks["sum"].result == "1 + 10"
        assert sorted(forced.restored) == ["a", "slow"]


def _spec(node: Any) -> dict[str, Any]:
    return {"id": node.id, "agent": node.agent, "args": dict(node.args), "after": node.after}


async def test_submitted_tasks_and_fanout_items_resume_one_by_one(
    make_supervisor, agent_spec, tmp_path, make_gate
):
    log = tmp_path / "ran.log"
    gate = make_gate("item")

    def graph() -> Graph:
        g = Graph()
        g.add("plan", "submitter", args={"log": str(log), "n": 2})
        g.add("subs", "logger", args={"log": str(log), "name": "${item}"}, for_each="${plan}")
        g.add("one", "logger", args={"log": str(log), "name": "one", "value": ["x", "y", "z"]})
        g.add(
            "each",
            "logger",
            for_each="${one}",
            args={"log": str(log), "name": "each_${item}", "gate": f"{tmp_path}/${{item}}"},
        )
        return g

    # each_z's gate is a FIFO that nobody writes yet: it stays in flight; x, y finish
    for item in ("x", "y"):
        (tmp_path / item).write_text("go\n")  # a plain file: the gate passes at once
    (tmp_path / "z").symlink_to(gate.path)
    with Journal(tmp_path / "runs.db") as journal:
        async with make_supervisor() as sup:
            await start(sup, agent_spec)
            events = sup.events()
            run = Run(sup, graph(), journal=journal, run_id="r4").start()
            waiting = {"each[0]", "each[1]", "sub_0", "sub_1", "subs[0]", "subs[1]"}
            async with asyncio.timeout(20):
                async for ev in events:
                    if ev.kind == "task_finished":
                        waiting.discard(ev.task)
                    if not waiting:
                        break
            await events.aclose()
            run.cancel_run("stopped by the test")
            first = await run.wait()
            assert first.tasks["each"].status != "ok"
            gate.release()
            gate.release()
            before = ran(log)
            again = await Run.resume(sup, journal, "r4", graph()).wait()
        assert again.status == "ok"
        # only the item in flight ran again (and its fan-out completed)
        assert ran(log)[len(before) :] == ["each_z"]
        assert {"plan", "sub_0", "sub_1", "subs[0]", "subs[1]", "each[0]", "each[1]"} <= set(
            again.restored
        )
        assert again.tasks["subs"].result == ["sub_0", "sub_1"]
        assert again.tasks["each"].result == ["each_x", "each_y", "each_z"]


async def test_one_supervisor_at_a_time_works_on_a_run(make_supervisor, agent_spec, tmp_path):
    path = tmp_path / "runs.db"
    with Journal(path) as one, Journal(path) as other:
        async with make_supervisor() as sup:
            await start(sup, agent_spec)
            run = Run(sup, chain(tmp_path / "l"), journal=one, run_id="r5")
            with pytest.raises(RunLocked, match="run r5 is being run by another supervisor"):
                Run(sup, chain(tmp_path / "l"), journal=other, run_id="r5")
            await run.wait()
            # once it ended, the lock is free
            await Run.resume(sup, other, "r5", chain(tmp_path / "l")).wait()


def test_a_file_that_is_not_a_journal_is_refused_and_left_alone(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(JournalError, match="not a journal, or damaged"):
        Journal(garbage)
    assert garbage.read_bytes() == b"this is not sqlite at all" * 100

    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE notes (x)")
    con.commit()
    con.close()
    with pytest.raises(JournalError, match="not an agentrt journal"):
        Journal(other)

    future = tmp_path / "future.db"
    Journal(future).close()
    con = sqlite3.connect(future)
    con.execute("UPDATE meta SET value = '99' WHERE key = 'format'")
    con.commit()
    con.close()
    with pytest.raises(JournalError, match=f"format 99; this agentrt reads format {FORMAT}"):
        Journal(future)
    with pytest.raises(JournalError, match="no such file"):
        Journal(tmp_path / "missing.db", create=False)


async def test_a_truncated_journal_is_reported(make_supervisor, agent_spec, tmp_path):
    path = tmp_path / "runs.db"
    with Journal(path) as journal:
        async with make_supervisor() as sup:
            await start(sup, agent_spec)
            await Run(sup, chain(tmp_path / "l"), journal=journal, run_id="r6").wait()
    _truncated_is_refused(path)


def _truncated_is_refused(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    for side in ("-wal", "-shm"):
        Path(f"{path}{side}").unlink(missing_ok=True)
    with pytest.raises(JournalError, match=str(path)), Journal(path) as journal:
        journal.runs()
        journal.load("r6")
    assert path.read_bytes() == data[: len(data) // 2]


async def test_decisions_during_the_run_are_in_its_journal(make_supervisor, agent_spec, tmp_path):
    async def approver(req: Any) -> bool:
        return req.args.get("name") != "no"

    g = Graph()
    g.add("yes", "logger", args={"log": str(tmp_path / "l"), "name": "yes"}, approval="required")
    g.add("no", "logger", args={"log": str(tmp_path / "l"), "name": "no"}, approval="required")
    with Journal(tmp_path / "runs.db") as journal:
        async with make_supervisor(approver=approver) as sup:
            await start(sup, agent_spec)
            result = await Run(sup, g, journal=journal, run_id="r7").wait()
        assert (result.tasks["yes"].status, result.tasks["no"].status) == ("ok", "denied")
        audit = [e for e in journal.events("r7") if e["kind"] == "audit"]
        actions = [e["action"] for e in audit]
        assert {"approved", "denied"} <= set(actions)
        assert all(e["by"] for e in audit)


def test_a_journal_of_the_first_format_is_brought_up_to_date(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    # the first format: the tables of today, less the runs' config_hash
    con.executescript(_SCHEMA.replace("    config_hash TEXT NOT NULL DEFAULT '',\n", ""))
    con.execute("INSERT INTO meta VALUES ('format', '1')")
    con.execute(
        "INSERT INTO runs (run_id, tasks_hash, tasks, started, status) "
        "VALUES ('old', 'h', x'90', 1.0, 'ok')"
    )
    con.commit()
    con.close()
    with Journal(path) as journal:
        (row,) = journal.runs()
        assert (row.run_id, row.status, row.config_hash) == ("old", "ok", "")
    con = sqlite3.connect(path)
    assert con.execute("SELECT value FROM meta WHERE key = 'format'").fetchone() == (str(FORMAT),)
    con.close()
