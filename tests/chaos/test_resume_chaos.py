"""``agentrt supervise --resume``: SIGKILL at random points, resume, every result recorded once.

The chaos run is a few hundred tasks (independent ones, chains of ``${...}``
references, a ``for_each`` fan-out of 50 items) on agents of 2 to 4 replicas
(``tests/fixtures/journal_agents.py``).  Every call appends ``"<task> <pid>"``
to a side-effect log and writes the same line to a FIFO the test reads: the
test reads a random (seeded) number of lines, SIGKILLs the supervisor, checks
that no agent process outlived it, and resumes; after a few rounds a last
resume runs to the end.  A supervisor that is to be killed gets a few more
tickets than the test reads lines (a call takes one first), so calls are in
flight when it dies, and never so many that its run could end first.  The
log, split by a marker line per round, shows what each supervisor executed;
the journal, read between rounds, what was committed.

Also pinned: two supervisors never work on one run at once, and a journal
that is garbage, truncated or of another format is reported and left as it is.

``AGENTRT_CHAOS_SEED=N`` draws other kill points (the seed is in every failure).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from clitools import ROOT

from agentrt.journal import FORMAT, Journal

FIXTURES_DIR = Path(__file__).resolve().parents[1] / "fixtures"

#: the kills are random, but the same on every run of the suite
SEED = int(os.environ.get("AGENTRT_CHAOS_SEED", "20250611"))
#: SIGKILL/resume rounds before the last resume, which runs to the end
KILL_ROUNDS = 4
#: the supervisor is killed after this many calls (drawn per round) ...
KILL_AFTER = (5, 50)
#: ... and may make this many more (tickets beyond those, drawn per round)
SPARE = (0, 10)
#: the fan-out's items, the chains (and their length), the independent tasks
FAN_ITEMS, CHAINS, CHAIN_LEN, SOLO = 50, 10, 8, 120
#: bound on every wait for a line, a process, an exit (a hang fails, it does not stall)
WAIT = 60.0
#: the environment variable that marks this test's supervisors and everything they start
MARK = "AGENTRT_RESUME_CHAOS"


# --- the chaos run's config ------------------------------------------------------


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


def _task(tid: str, agent: str, args: dict[str, Any], **more: Any) -> str:
    lines = ["[[tasks]]", f"id = {_toml(tid)}", f"agent = {_toml(agent)}"]
    lines += [f"{k} = {_toml(v)}" for k, v in more.items()]
    lines.append(f"args = {_toml(args)}")
    return "\n".join(lines) + "\n"


def _agents(**replicas: int) -> str:
    """The config's agents (they find the log and the FIFO in the supervisor's environment)."""
    out = [
        "[supervisor]",
        f"sys_path = [{_toml(str(FIXTURES_DIR))}]",
        "backoff = 0.01",
        "backoff_max = 0.05",
        "",
    ]
    for name, n in replicas.items():
        entry = "journal_agents:gate" if name == "gate" else "journal_agents:step"
        out += [
            f"[agents.{name}]",
            f"entry = {_toml(entry)}",
            f"replicas = {n}",
            "shutdown_timeout = 0.5",
            "timeout = 30",
            "",
        ]
    return "\n".join(out)


def chaos_config(tmp: Path) -> tuple[Path, dict[str, Any]]:
    """The chaos run's config, and the value each task (fan-out items included) must end with."""
    expect: dict[str, Any] = {}
    tasks: list[str] = []
    for i in range(SOLO):
        tid = f"solo-{i:03d}"
        tasks.append(_task(tid, "solo", {"task": tid, "value": i * 7}))
        expect[tid] = i * 7
    for c in range(CHAINS):
        head = f"ch{c}-0"
        tasks.append(_task(head, "chain", {"task": head, "value": 100 * c}))
        expect[head] = 100 * c
        for j in range(1, CHAIN_LEN):
            tid, prev = f"ch{c}-{j}", f"ch{c}-{j - 1}"
            tasks.append(_task(tid, "chain", {"task": tid, "prev": f"${{{prev}}}", "add": j}))
            expect[tid] = expect[prev] + j
    tasks.append(_task("plan", "fan", {"task": "plan", "n": FAN_ITEMS}))
    expect["plan"] = list(range(FAN_ITEMS))
    tasks.append(_task("fan", "fan", {"task": "fan", "item": "${item}"}, for_each="${plan}"))
    items = [i * i + 1 for i in range(FAN_ITEMS)]
    expect.update({f"fan[{i}]": v for i, v in enumerate(items)})
    expect["fan"] = items
    tasks.append(_task("join", "chain", {"task": "join", "xs": "${fan}"}))
    expect["join"] = sum(items)
    cfg = tmp / "config.toml"
    cfg.write_text(_agents(solo=3, chain=2, fan=4) + "\n" + "\n".join(tasks))
    return cfg, expect


#: fan-out parents: expanded again on a resume (their items are restored one by one), no call
FANOUTS = {"fan"}


# --- supervise processes -----------------------------------------------------------


def _env(mark: str, log: Path, fifo: str, tickets: str = "") -> dict[str, str]:
    """The environment of a supervisor (and of all it starts): marked with ``mark``,
    naming the side-effect log and the FIFO its agents write to, and their tickets."""
    env = {**os.environ, MARK: mark, "JOURNAL_LOG": str(log), "JOURNAL_FIFO": fifo}
    env.pop("JOURNAL_TICKETS", None)
    if tickets:
        env["JOURNAL_TICKETS"] = tickets
    return env


def _supervise(cfg: Path, stderr: Path, *args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``agentrt supervise CONFIG ARGS`` started, its log into ``stderr``."""
    with open(stderr, "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "agentrt.cli", "supervise", str(cfg), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=ROOT,
            env=env,
        )


def _cli(cfg: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``agentrt supervise CONFIG ARGS`` to its end, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "agentrt.cli", "supervise", str(cfg), *args],
        capture_output=True,
        text=True,
        timeout=WAIT,
        cwd=ROOT,
        env=env,
    )


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


@contextlib.contextmanager
def _killed_at_the_end(proc: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """``proc``, killed and waited for if the test leaves the block while it still runs."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)


def _marked(mark: str) -> list[psutil.Process]:
    """Every live descendant of this process that ``mark`` marks (or whose environment
    cannot be read: then it cannot be told apart, and counts)."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            if p.environ().get(MARK) == mark:
                out.append(p)
        except psutil.AccessDenied:
            out.append(p)
        except psutil.NoSuchProcess:
            continue
    return out


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait on pidfds until each of ``procs`` has exited, reap those that are (now) our
    children, and return those still running at the deadline."""
    fds: dict[int, psutil.Process] = {}
    try:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                fd = os.pidfd_open(p.pid)
                if p.is_running():  # the pid is still the process we knew
                    fds[fd] = p
                else:
                    os.close(fd)
        pending = set(fds)
        deadline = time.monotonic() + timeout
        while pending and (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select(list(pending), [], [], left)
            pending -= set(ready)
        alive = [fds[fd] for fd in pending]
    finally:
        for fd in fds:
            os.close(fd)
    for p in procs:  # orphans come back to us (a child subreaper) as zombies: reap them
        with contextlib.suppress(ChildProcessError):
            os.waitpid(p.pid, os.WNOHANG)
    return alive


def _kill_and_check_no_survivor(proc: subprocess.Popen[bytes], mark: str) -> None:
    """SIGKILL the supervisor; its zygote takes every agent down: none outlives it."""
    family = psutil.Process(proc.pid).children(recursive=True)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(WAIT) == -signal.SIGKILL
    survivors = _wait_gone([*family, *_marked(mark)], WAIT)
    assert not survivors, f"outlived the supervisor: {_describe(survivors)}"
    left = _marked(mark)
    assert not left, f"outlived the supervisor: {_describe(left)}"


def _describe(procs: list[psutil.Process]) -> str:
    out = []
    for p in procs:
        try:
            out.append(f"{p.pid} {p.status()} {' '.join(p.cmdline())[:120]!r}")
        except psutil.Error:
            out.append(f"{p.pid} (gone)")
    return "; ".join(out)


# --- the journal and the side-effect log ----------------------------------------------


@dataclass
class Snapshot:
    """What the journal has committed of the run: each task's status and outcome."""

    run_id: str | None
    #: the run's status as ``Journal.runs`` tells it (``interrupted``: its supervisor died)
    run_status: str
    status: dict[str, str]
    outcome: dict[str, dict[str, Any] | None]
    attempts: dict[str, int]

    @property
    def ok(self) -> set[str]:
        return {t for t, s in self.status.items() if s == "ok"}


def snapshot(db: Path) -> Snapshot:
    """What journal ``db`` has committed of its one run (nothing: no run yet)."""
    if not db.exists():
        return Snapshot(None, "", {}, {}, {})
    with Journal(db, create=False) as j:
        runs = j.runs()
        if not runs:  # killed before the run's first commit: it starts afresh
            return Snapshot(None, "", {}, {}, {})
        assert len(runs) == 1, [r.run_id for r in runs]
        rid = runs[0].run_id
        rows = j.task_outcomes(rid)
        ids = [t for t, _s, _o in rows]
        assert len(ids) == len(set(ids)), "a task has two rows"
        return Snapshot(
            rid,
            runs[0].status,
            {t: s for t, s, _o in rows},
            {t: o for t, _s, o in rows},
            j.count_attempts(rid),
        )


def executed(log: Path) -> list[list[tuple[str, int]]]:
    """The side-effect log, split at the marker lines: ``(task, pid)`` per call, per round."""
    rounds: list[list[tuple[str, int]]] = []
    for line in log.read_text().splitlines():
        if line.startswith("--- round"):
            rounds.append([])
            continue
        task, pid = line.rsplit(" ", 1)
        rounds[-1].append((task, int(pid)))
    return rounds


def _mark_round(log: Path, n: int) -> None:
    with open(log, "a") as f:
        f.write(f"--- round {n}\n")


async def _line(fifo: Any, proc: subprocess.Popen[bytes], err: Path) -> str:
    """The next line of the calls' FIFO; the supervisor exiting first fails the test."""
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()
    pidfd = os.pidfd_open(proc.pid)
    loop.add_reader(pidfd, lambda: exited.done() or exited.set_result(None))
    line = asyncio.ensure_future(fifo.read_line(timeout=WAIT))
    try:
        await asyncio.wait({line, exited}, return_when=asyncio.FIRST_COMPLETED)
        if not line.done():
            raise AssertionError(f"supervise exited ({proc.wait()}) early:\n{_tail(err)}")
        return line.result()
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        line.cancel()
        await asyncio.wait({line})


# --- the chaos test ------------------------------------------------------------------


async def test_sigkilled_supervise_resumes_to_every_result_recorded_once_and_no_rerun_of_committed(
    tmp_path: Path, make_gate: Callable[[str], Any]
) -> None:
    rng = random.Random(SEED)
    mark = uuid.uuid4().hex
    log = tmp_path / "effects.log"
    cfg, expect = chaos_config(tmp_path)
    calls = set(expect) - FANOUTS  # the tasks that are agent calls
    db = tmp_path / ".agentrt" / "runs.db"
    snaps: list[Snapshot] = []
    kills: list[int] = []

    for n in range(KILL_ROUNDS):
        snap = snapshot(db)
        snaps.append(snap)
        k = rng.randint(*KILL_AFTER)
        # fewer tickets than calls left: the run cannot end before the kill
        budget = min(k + rng.randint(*SPARE), len(calls - snap.ok) - 1)
        k = min(k, budget)
        assert k > 0, f"seed {SEED}: the run got too far to be killed in round {n}"
        kills.append(k)
        resume = ("--resume", "last") if snap.run_id is not None else ()
        _mark_round(log, n)
        err = tmp_path / f"round-{n}.log"
        fifo = make_gate(f"calls-{n}")  # FIFOs per round: what a killed round left is not read
        tickets = make_gate(f"tickets-{n}")
        os.write(tickets.fd, b"t" * budget)
        env = _env(mark, log, fifo.path, tickets.path)
        proc = _supervise(cfg, err, "--log-format", "json", *resume, env=env)
        with _killed_at_the_end(proc):
            for _ in range(k):
                await _line(fifo, proc, err)
            _kill_and_check_no_survivor(proc, mark)

    final = snapshot(db)
    snaps.append(final)
    assert final.run_id is not None, "no kill round committed anything"
    assert {s.run_status for s in snaps[1:]} <= {"interrupted", ""}
    n = KILL_ROUNDS
    _mark_round(log, n)
    out = tmp_path / "results.json"
    err = tmp_path / f"round-{n}.log"
    env = _env(mark, log, make_gate(f"calls-{n}").path)
    proc = _supervise(cfg, err, "--resume", "last", "--output", str(out), env=env)
    with _killed_at_the_end(proc):
        assert proc.wait(WAIT) == 0, _tail(err)

    rounds = executed(log)
    assert len(rounds) == KILL_ROUNDS + 1
    ran: dict[str, list[int]] = collections.defaultdict(list)  # task -> pids that ran it
    for n, (snap, done) in enumerate(zip(snaps, rounds, strict=True)):
        tasks = [t for t, _pid in done]
        where = (
            f"seed {SEED}, round {n} (killed after {kills[n] if n < len(kills) else None} calls)"
        )
        # a supervisor runs each task it runs once (no retries, no crashes here) ...
        twice = [t for t, c in collections.Counter(tasks).items() if c > 1]
        assert not twice, f"{where}: ran twice by one supervisor: {twice}"
        # ... and never one whose ok result was committed before it started
        again = sorted(set(tasks) & snap.ok)
        assert not again, f"{where}: committed ok, yet executed again: {again}"
        assert set(tasks) <= calls
        for t, pid in done:
            ran[t].append(pid)
    # the committed stays committed, as it was (ok is never overwritten)
    for before, after in itertools.pairwise(snaps):
        assert before.ok <= after.ok
        changed = [t for t in before.ok if after.outcome[t] != before.outcome[t]]
        assert not changed, f"an ok result was overwritten: {changed}"
    # the last round ran exactly what was not committed, each once
    last = [t for t, _pid in rounds[-1]]
    assert sorted(last) == sorted(calls - final.ok)

    # the journal: every task (fan-out items included) ok, once, with the right value
    end = snapshot(db)
    assert end.run_id == final.run_id
    assert end.run_status == "ok"
    assert set(end.status) == set(expect)
    assert all(s == "ok" for s in end.status.values()), {
        t: s for t, s in end.status.items() if s != "ok"
    }
    for t, value in expect.items():
        outcome = end.outcome[t]
        assert outcome is not None and outcome["result"] == value, (t, outcome)
        if t in calls:  # recorded from a call that really happened
            assert outcome["pid"] in ran[t], (t, outcome["pid"], ran[t])
    # an attempt per call, and no more attempts than calls
    for t in calls:
        assert 1 <= end.attempts.get(t, 0) <= len(ran[t]), (t, end.attempts.get(t), ran[t])
    assert set(end.attempts) == calls

    # the results file: every task ok, chains computed from the restored values
    doc = json.loads(out.read_text())
    assert doc["run_id"] == final.run_id
    assert doc["status"] == "ok"
    assert {t: r["status"] for t, r in doc["tasks"].items()} == {t: "ok" for t in expect}
    assert {t: r["result"] for t, r in doc["tasks"].items()} == expect
    # restored: the tasks the last supervisor did not run (fan-out parents are expanded again)
    assert len(doc["restored"]) == len(set(doc["restored"]))
    assert set(doc["restored"]) == final.ok - FANOUTS
    assert not set(doc["restored"]) & set(last)
    assert set(doc["restored"]) | set(last) == calls


# --- one supervisor per run; damaged journals ---------------------------------------


def small_config(tmp: Path, hold: Path | None = None) -> Path:
    """Three tasks in a row; with ``hold``, the middle one blocks on that FIFO."""
    gate = {"gate": 1} if hold is not None else {}
    tasks = [_task("first", "solo", {"task": "first", "value": 1})]
    if hold is not None:
        tasks.append(_task("hold", "gate", {"task": "hold", "path": str(hold)}, after=["first"]))
    else:
        tasks.append(_task("hold", "solo", {"task": "hold", "prev": "${first}", "add": 1}))
    tasks.append(_task("last", "solo", {"task": "last", "prev": "${hold}", "add": 1}))
    cfg = tmp / "config.toml"
    cfg.write_text(_agents(solo=2, **gate) + "\n" + "\n".join(tasks))
    return cfg


async def _until(fifo: Any, proc: subprocess.Popen[bytes], err: Path, task: str) -> None:
    """Read the calls' FIFO until ``task`` reports."""
    while not (await _line(fifo, proc, err)).startswith(f"{task} "):
        pass


async def test_a_run_resumed_by_one_supervisor_is_refused_to_a_second_with_exit_2(
    tmp_path: Path, make_gate: Callable[[str], Any]
) -> None:
    mark = uuid.uuid4().hex
    log = tmp_path / "effects.log"
    calls, hold = make_gate("calls"), make_gate("hold")
    cfg = small_config(tmp_path, Path(hold.path))
    env = _env(mark, log, calls.path)
    db = tmp_path / ".agentrt" / "runs.db"
    # a run whose supervisor dies while "hold" waits
    _mark_round(log, 0)
    proc = _supervise(cfg, tmp_path / "round-0.log", env=env)
    with _killed_at_the_end(proc):
        await _until(calls, proc, tmp_path / "round-0.log", "hold")
        _kill_and_check_no_survivor(proc, mark)
    killed = snapshot(db)
    run_id = killed.run_id
    assert run_id is not None and killed.run_status == "interrupted"
    # one supervisor resumes it, and waits at "hold" again
    _mark_round(log, 1)
    err = tmp_path / "round-1.log"
    first = _supervise(cfg, err, "--resume", "last", env=env)
    with _killed_at_the_end(first):
        await _until(calls, first, err, "hold")
        assert snapshot(db).run_status == "running"  # its lock is held
        # a second one is refused, naming the lock and the supervisor that holds it
        _mark_round(log, 2)
        second = await asyncio.to_thread(_cli, cfg, "--resume", "last", env=env)
        _mark_round(log, 3)
        assert second.returncode == 2, second.stderr
        assert "agent_started" not in second.stderr  # refused before any agent starts
        assert f"run {run_id} is being run by another supervisor" in second.stderr
        assert f"pid {first.pid}," in second.stderr
        assert str(db.parent / "locks" / f"{run_id}.lock") in second.stderr
        # the first goes on undisturbed
        hold.release()
        assert first.wait(WAIT) == 0, _tail(err)
    rounds = executed(log)
    assert rounds[2] == [], "the refused supervisor ran a task"
    assert [t for t, _pid in rounds[0]] == ["first", "hold"]
    end = snapshot(db)
    assert end.run_id == run_id
    assert end.status == {"first": "ok", "hold": "ok", "last": "ok"}
    # "hold" answered from the replica the first resume ran it on; "last" from that
    (hold_pid,) = [pid for t, pid in rounds[1] if t == "hold"]
    results = {t: (o or {}).get("result") for t, o in end.outcome.items()}
    assert results == {"first": 1, "hold": hold_pid, "last": hold_pid + 1}
    # and once it is over, the run's lock is free again
    again = await asyncio.to_thread(_cli, cfg, "--resume", "last", env=env)
    assert again.returncode == 0, again.stderr


def _real_journal(tmp: Path, cfg: Path, env: dict[str, str]) -> Path:
    """The journal of a run of ``cfg`` to its end, checkpointed into its one file."""
    proc = _cli(cfg, env=env)
    assert proc.returncode == 0, proc.stderr
    db = tmp / ".agentrt" / "runs.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return db


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("garbage", "not a journal, or damaged: file is not a database"),
        ("truncated", "damaged"),
        ("format", f"written in journal format 99; this agentrt reads format {FORMAT}"),
    ],
    ids=["garbage", "truncated", "format"],
)
def test_resume_from_a_damaged_or_foreign_journal_exits_2_naming_it_and_leaves_it_as_is(
    damage: str, problem: str, tmp_path: Path, make_gate: Callable[[str], Any]
) -> None:
    log = tmp_path / "effects.log"
    env = _env(uuid.uuid4().hex, log, make_gate("calls").path)
    cfg = small_config(tmp_path)
    bad = tmp_path / "bad" / "runs.db"
    bad.parent.mkdir()
    if damage == "garbage":
        bad.write_bytes(random.Random(SEED).randbytes(64 * 1024))
    else:
        data = _real_journal(tmp_path, cfg, env).read_bytes()
        if damage == "truncated":
            bad.write_bytes(data[: len(data) // 2])
        else:
            bad.write_bytes(data)
            with contextlib.closing(sqlite3.connect(bad)) as conn:
                conn.execute("UPDATE meta SET value = '99' WHERE key = 'format'")
                conn.commit()
    before = bad.read_bytes()
    effects = log.read_bytes() if log.exists() else b""
    proc = _cli(cfg, "--journal", str(bad), "--resume", "last", env=env)
    assert proc.returncode == 2, proc.stderr
    assert f"journal {bad}: " in proc.stderr
    assert problem in proc.stderr
    assert bad.read_bytes() == before, "the journal was changed"
    assert os.listdir(bad.parent) == ["runs.db"], "files were left beside it"
    assert (log.read_bytes() if log.exists() else b"") == effects, "a task ran"
