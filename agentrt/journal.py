"""The run journal: every run, task, attempt and result in an embedded SQLite file.

A :class:`Journal` is one SQLite database in WAL mode (``sqlite3`` of the
standard library), by default ``.agentrt/runs.db`` next to the config.  It
holds:

- ``runs``: id, the hash of the graph's tasks and the tasks themselves,
  command line, config path, started, ended, status;
- ``tasks``: each task's id, agent, spec (arguments as written, dependencies),
  whether ``ctx.submit`` added it, its resolved arguments once launched, and
  its outcome (status, result and error as MessagePack, attempts, pid, times);
- ``attempts``: every call made for a task (replica pid, start, end, outcome),
  keyed by run, task and attempt number;
- ``events``: what matters for an audit (run started, resumed, finished;
  retries; people's decisions).

**Writing never blocks the event loop.**  Writes are queued to one writer
thread, which commits them in batches (one transaction for everything queued
meanwhile); :meth:`Journal.flush` awaits the commit of everything queued
before it.  A task's result is committed once (keyed by run and task); a run
is resumed from what was committed: a result that was not is run again
(at-least-once execution, exactly-once recording).

**Only one supervisor works on a run at a time**: :meth:`Journal.lock` takes
an exclusive ``flock`` on ``locks/<run id>.lock`` beside the database,
released when the process ends however it ends.

A file that is not a journal, is damaged, or was written by another format is
a :class:`JournalError` naming the file and the problem; it is never replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import fcntl
import hashlib
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

from agentrt.errors import AgentrtError

__all__ = [
    "FORMAT",
    "Journal",
    "JournalError",
    "Resumed",
    "RunLocked",
    "RunRow",
    "tasks_diff",
    "tasks_digest",
]

#: the journal's format; another one is refused, naming both (an older one that
#: this agentrt knows how to bring up to date is migrated in place)
FORMAT: Final = 2
#: each older format, and the statements that bring it to the next
_MIGRATIONS: Final = {
    "1": ("ALTER TABLE runs ADD COLUMN config_hash TEXT NOT NULL DEFAULT ''",),
}
#: at most this many writes in one transaction
_BATCH: Final = 5_000

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    tasks_hash TEXT NOT NULL,
    tasks BLOB NOT NULL,
    argv TEXT NOT NULL DEFAULT '',
    config TEXT NOT NULL DEFAULT '',
    config_hash TEXT NOT NULL DEFAULT '',
    started REAL NOT NULL,
    ended REAL,
    status TEXT NOT NULL,
    resumed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tasks (
    run_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    agent TEXT NOT NULL,
    spec BLOB NOT NULL,
    dynamic INTEGER NOT NULL DEFAULT 0,  -- 0 graph, 1 ctx.submit, 2 fan-out item
    args BLOB,
    status TEXT NOT NULL DEFAULT 'pending',
    outcome BLOB,
    PRIMARY KEY (run_id, task_id)
);
CREATE TABLE IF NOT EXISTS attempts (
    run_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    pid INTEGER,
    started REAL,
    ended REAL,
    status TEXT NOT NULL,
    error BLOB,
    PRIMARY KEY (run_id, task_id, attempt)
);
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL,
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_run ON events (run_id, seq);
"""

# The statements a run writes.  The writer runs a batch grouped by statement
# (executemany), in this order, which is the order in which one task's rows
# can be written: a run before its tasks, a task's row before its updates,
# the run's end last.
_RUN_BEGIN: Final = (
    "INSERT INTO runs (run_id, tasks_hash, tasks, argv, config, config_hash, started, status) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, 'running')"
)
_RUN_RESUME: Final = (
    "UPDATE runs SET status = 'running', ended = NULL, resumed = resumed + 1 WHERE run_id = ?"
)
_TASK_ADD: Final = (
    "INSERT OR IGNORE INTO tasks (run_id, task_id, seq, agent, spec, dynamic) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_TASK_START: Final = (
    "UPDATE tasks SET args = ?, status = 'running' WHERE run_id = ? AND task_id = ?"
)
_ATTEMPT: Final = (
    "INSERT OR REPLACE INTO attempts (run_id, task_id, attempt, pid, started, ended, status, "
    "error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_TASK_END: Final = (
    "UPDATE tasks SET status = ?, outcome = ? WHERE run_id = ? AND task_id = ? AND status != 'ok'"
)
_EVENT: Final = "INSERT INTO events (run_id, time, kind, body) VALUES (?, ?, ?, ?)"
_RUN_END: Final = "UPDATE runs SET status = ?, ended = ? WHERE run_id = ?"
_ORDER: Final = {
    sql: i
    for i, sql in enumerate(
        (_RUN_BEGIN, _RUN_RESUME, _TASK_ADD, _TASK_START, _ATTEMPT, _TASK_END, _EVENT, _RUN_END)
    )
}

_digest_encode = msgspec.msgpack.Encoder(order="deterministic").encode
_plain_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


def _encode(value: Any) -> bytes:
    """``value`` as MessagePack; what cannot be (a dict keyed by tuples, say) is
    kept as its ``repr`` under ``"unencodable"``, so recording never fails a run."""
    try:
        return _plain_encode(value)
    except (TypeError, ValueError, OverflowError, RecursionError, msgspec.EncodeError):
        return _plain_encode({"unencodable": repr(value)[:10_000]})


class JournalError(AgentrtError):
    """The journal cannot be used: ``path`` is its file, the message says why."""

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        self.path = os.fspath(path)
        self.message = message
        super().__init__(f"journal {self.path}: {message}")


class RunLocked(JournalError):
    """Another supervisor is working on the run (it holds the run's lock)."""


class RunRow(msgspec.Struct, kw_only=True):
    """One run as the journal has it; ``status`` is ``interrupted`` for a run
    whose supervisor died (it says running, and nobody holds its lock)."""

    run_id: str
    status: str
    started: float
    ended: float | None
    argv: str
    config: str
    #: the sha256 of the config file when the run started
    config_hash: str
    resumed: int
    tasks: int
    ok: int
    failed: int
    #: not run: skipped for a failed dependency, a stop or the deadline
    skipped: int
    #: neither finished nor skipped (yet)
    pending: int


@dataclass
class Resumed:
    """What a run left in the journal, for :meth:`agentrt.scheduler.Run.resume`."""

    run_id: str
    tasks_hash: str
    #: the graph's tasks as the run started (Node builtins, in order)
    initial: list[dict[str, Any]]
    #: tasks ``ctx.submit`` added, in the order they were added
    dynamic: list[dict[str, Any]]
    #: each task that finished ok: its TaskResult builtins
    done: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: attempts recorded per task (a resumed task's next attempt is one more)
    attempts: dict[str, int] = field(default_factory=dict)


def tasks_digest(specs: Sequence[dict[str, Any]]) -> str:
    """A hash of a graph's tasks (their specs, in order)."""
    try:
        blob = _digest_encode(list(specs))
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError):
        blob = repr(list(specs)).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def _file_digest(path: str) -> str:
    """The sha256 of the file at ``path`` (the config a run came from), or ``""``."""
    if not path:
        return ""
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return ""


def tasks_diff(old: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]]) -> list[str]:
    """What changed between two lists of task specs, a line per difference."""
    before = {str(t.get("id")): t for t in old}
    after = {str(t.get("id")): t for t in new}
    out: list[str] = []
    for tid in before:
        if tid not in after:
            out.append(f"task {tid!r} was removed")
    for tid, spec in after.items():
        if tid not in before:
            out.append(f"task {tid!r} was added")
            continue
        was = before[tid]
        for key in sorted({*was, *spec}):
            if was.get(key) != spec.get(key):
                a, b = repr(was.get(key)), repr(spec.get(key))
                out.append(f"task {tid!r}: {key} was {_short(a)}, is now {_short(b)}")
    order_old = [t for t in before if t in after]
    order_new = [t for t in after if t in before]
    if not out and order_old != order_new:
        out.append("the tasks are in another order")
    return out


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "\u2026"


class _Flush:
    __slots__ = ("fut", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None]) -> None:
        self.loop = loop
        self.fut = fut


_STOP: Final = object()


def _settle(fut: asyncio.Future[None], error: BaseException | None) -> None:
    if fut.done():
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(error)


class Journal:
    """One journal file: reads on the caller's thread, writes on a writer thread.

    ``Journal(path)`` opens (creating it, and its directory, if missing) and
    checks it; :meth:`close` ends the writer after committing what it holds.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise JournalError(self.path, "no such file")
        if create:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise JournalError(
                    self.path, f"cannot create its directory: {exc.strerror or exc}"
                ) from None
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._failed: JournalError | None = None
        self._locks: dict[str, int] = {}
        self._db = self._open(create)

    # --- opening and checking -------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=10.0, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA busy_timeout = 10000")
        return conn

    def _open(self, create: bool) -> sqlite3.Connection:
        try:
            conn = self._connect()
        except sqlite3.Error as exc:
            raise JournalError(self.path, f"cannot open it: {exc}") from None
        try:
            # a light look (the whole file is checked when a run is resumed from it)
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if not tables and not create:
                raise JournalError(self.path, "not a journal (an empty file)")
            if tables and "meta" not in tables:
                raise JournalError(self.path, "not an agentrt journal (no meta table)")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            if not tables:
                conn.executescript(_SCHEMA)
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('format', ?), ('created', ?)",
                    (str(FORMAT), str(time.time())),
                )
            row = conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            if row is None:
                raise JournalError(self.path, "not an agentrt journal (it names no format)")
            while row[0] in _MIGRATIONS:
                conn.execute("BEGIN IMMEDIATE")
                for statement in _MIGRATIONS[row[0]]:
                    conn.execute(statement)
                row = (str(int(row[0]) + 1),)
                conn.execute("UPDATE meta SET value = ? WHERE key = 'format'", row)
                conn.execute("COMMIT")
            if row[0] != str(FORMAT):
                raise JournalError(
                    self.path,
                    f"written in journal format {row[0]}; this agentrt reads format {FORMAT}",
                )
        except JournalError:
            conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise JournalError(self.path, f"not a journal, or damaged: {exc}") from None
        return conn

    def close(self) -> None:
        """Commit what is queued, stop the writer, release the locks, close."""
        if self._writer is not None:
            self._q.put(_STOP)
            self._writer.join()
            self._writer = None
        for fd in self._locks.values():
            os.close(fd)
        self._locks.clear()
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the writer -----------------------------------------------------------

    def _put(self, sql: str, params: Sequence[Any]) -> None:
        if self._failed is not None:
            return  # it stopped writing: flush() (the run's end) reports why
        if self._writer is None:
            self._writer = threading.Thread(
                target=self._write_loop, name="agentrt-journal", daemon=True
            )
            self._writer.start()
        self._q.put((sql, params))

    def _write_loop(self) -> None:
        conn = self._connect()
        try:
            while True:
                batch = [self._q.get()]
                while len(batch) < _BATCH:
                    try:
                        batch.append(self._q.get_nowait())
                    except queue.Empty:
                        break
                error: JournalError | None = self._failed
                groups: dict[str, list[Sequence[Any]]] = {}
                for b in batch:
                    if isinstance(b, tuple):
                        groups.setdefault(b[0], []).append(b[1])
                if groups and error is None:
                    try:
                        conn.execute("BEGIN IMMEDIATE")
                        for sql in sorted(groups, key=_ORDER.__getitem__):
                            conn.executemany(sql, groups[sql])
                        conn.execute("COMMIT")
                    except sqlite3.Error as exc:
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                        error = self._failed = JournalError(self.path, f"cannot write: {exc}")
                for b in batch:
                    if isinstance(b, _Flush):
                        b.loop.call_soon_threadsafe(_settle, b.fut, error)
                if any(b is _STOP for b in batch):
                    return
        finally:
            conn.close()

    async def flush(self) -> None:
        """Wait until everything queued so far is committed (JournalError if it cannot be)."""
        if self._writer is None:
            if self._failed is not None:
                raise self._failed
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._q.put(_Flush(loop, fut))
        await asyncio.shield(fut)

    @property
    def failed(self) -> JournalError | None:
        """Why writing stopped, if it did."""
        return self._failed

    # --- what a run writes ----------------------------------------------------

    def begin_run(
        self,
        run_id: str,
        tasks: Sequence[dict[str, Any]],
        *,
        argv: str = "",
        config: str = "",
        started: float | None = None,
    ) -> None:
        """A new run and its graph's tasks."""
        self._put(
            _RUN_BEGIN,
            (
                run_id,
                tasks_digest(tasks),
                _encode(list(tasks)),
                argv,
                config,
                _file_digest(config),
                started or time.time(),
            ),
        )
        for i, spec in enumerate(tasks):
            self.add_task(run_id, spec, seq=i)
        self.event(run_id, "run_started", {"tasks": len(tasks), "argv": argv})

    def resume_run(self, run_id: str, *, argv: str = "") -> None:
        """A run goes on after its supervisor died (or it ended and is run again)."""
        self._put(
            _RUN_RESUME,
            (run_id,),
        )
        self.event(run_id, "run_resumed", {"argv": argv})

    def add_task(
        self,
        run_id: str,
        spec: dict[str, Any],
        *,
        seq: int,
        kind: Literal["graph", "submitted", "item"] = "graph",
    ) -> None:
        """A task of the run: of its graph, added by ``ctx.submit``, or an item
        of a fan-out (``spec`` names its ``parent`` and ``index``)."""
        dynamic = {"graph": 0, "submitted": 1, "item": 2}[kind]
        self._put(
            _TASK_ADD,
            (run_id, str(spec["id"]), seq, str(spec.get("agent", "")), _encode(spec), dynamic),
        )

    def task_started(self, run_id: str, task_id: str, args: Any) -> None:
        """The task was launched with these (resolved) arguments."""
        blob = _encode(args)
        self._put(
            _TASK_START,
            (blob, run_id, task_id),
        )

    def attempt(
        self,
        run_id: str,
        task_id: str,
        attempt: int,
        *,
        status: str,
        pid: int | None,
        started: float | None,
        ended: float | None,
        error: dict[str, Any] | None,
    ) -> None:
        self._put(
            _ATTEMPT,
            (
                run_id,
                task_id,
                attempt,
                pid,
                started,
                ended,
                status,
                None if error is None else _encode(error),
            ),
        )

    def task_finished(self, run_id: str, task_id: str, status: str, outcome: Any) -> None:
        """The task's outcome (its TaskResult).  An ``ok`` result is never
        overwritten: a task's result is recorded once."""
        self._put(
            _TASK_END,
            (status, _encode(outcome), run_id, task_id),
        )

    def end_run(self, run_id: str, status: str, *, ended: float | None = None) -> None:
        self._put(
            _RUN_END,
            (status, ended or time.time(), run_id),
        )
        self.event(run_id, "run_finished", {"status": status})

    def event(self, run_id: str, kind: str, body: dict[str, Any]) -> None:
        """An event worth keeping for an audit."""
        self._put(
            _EVENT,
            (run_id, time.time(), kind, _encode(body)),
        )

    # --- locks ------------------------------------------------------------------

    def lock(self, run_id: str) -> None:
        """Take run ``run_id``'s lock for this process; :class:`RunLocked` if taken."""
        if run_id in self._locks:
            return
        lockdir = self.path.parent / "locks"
        path = lockdir / f"{_safe(run_id)}.lock"
        try:
            lockdir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise JournalError(
                self.path, f"cannot take run {run_id}'s lock {path}: {exc.strerror or exc}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunLocked(
                self.path, f"run {run_id} is being run by another supervisor (pid {holder}, {path})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._locks[run_id] = fd

    def unlock(self, run_id: str) -> None:
        fd = self._locks.pop(run_id, None)
        if fd is not None:
            os.close(fd)

    def _locked_elsewhere(self, run_id: str) -> bool:
        if run_id in self._locks:
            return False
        path = self.path.parent / "locks" / f"{_safe(run_id)}.lock"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    # --- reading ----------------------------------------------------------------

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise JournalError(self.path, f"cannot read it: {exc}") from None

    def run_id(self, name: str) -> str:
        """``name``, or the latest run's id for ``"last"``; JournalError if unknown."""
        if name == "last":
            rows = self._rows("SELECT run_id FROM runs ORDER BY started DESC LIMIT 1")
            if not rows:
                raise JournalError(self.path, "it holds no run yet")
            return str(rows[0][0])
        if not self._rows("SELECT 1 FROM runs WHERE run_id = ?", (name,)):
            known = [r[0] for r in self._rows("SELECT run_id FROM runs ORDER BY started DESC")]
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise JournalError(self.path, f"no run {name!r}{hint}")
        return name

    def runs(self) -> list[RunRow]:
        """Every run, newest first, with its task counts."""
        rows = self._rows(
            "SELECT r.run_id, r.status, r.started, r.ended, r.argv, r.config, r.config_hash, "
            "r.resumed, "
            "COUNT(t.task_id), "
            "SUM(t.status = 'ok'), "
            "SUM(t.status IN ('failed', 'timeout', 'crashed', 'limit', 'cancelled', 'denied')), "
            "SUM(t.status = 'skipped') "
            "FROM runs r LEFT JOIN tasks t ON t.run_id = r.run_id "
            "GROUP BY r.run_id ORDER BY r.started DESC"
        )
        out: list[RunRow] = []
        for row in rows:
            rid, status, started, ended, argv, config, config_hash, resumed = row[:8]
            n, ok, failed, skipped = row[8:]
            ok, failed, skipped = int(ok or 0), int(failed or 0), int(skipped or 0)
            if status == "running" and not self._locked_elsewhere(rid):
                status = "interrupted"
            out.append(
                RunRow(
                    run_id=rid,
                    status=status,
                    started=started,
                    ended=ended,
                    argv=argv,
                    config=config,
                    config_hash=config_hash,
                    resumed=resumed,
                    tasks=n,
                    ok=ok,
                    failed=failed,
                    skipped=skipped,
                    pending=n - ok - failed - skipped,
                )
            )
        return out

    def task_outcomes(self, run_id: str) -> list[tuple[str, str, dict[str, Any] | None]]:
        """``(task id, status, TaskResult builtins or None)`` of each task, in order."""
        rows = self._rows(
            "SELECT task_id, status, outcome FROM tasks WHERE run_id = ? ORDER BY seq",
            (run_id,),
        )
        return [(tid, st, None if blob is None else _decode(blob)) for tid, st, blob in rows]

    def attempts(self, run_id: str) -> list[dict[str, Any]]:
        """Every attempt of the run, in order."""
        rows = self._rows(
            "SELECT task_id, attempt, pid, started, ended, status, error FROM attempts "
            "WHERE run_id = ? ORDER BY started, task_id, attempt",
            (run_id,),
        )
        return [
            {
                "task": t,
                "attempt": a,
                "pid": p,
                "started": s,
                "ended": e,
                "status": st,
                "error": None if err is None else _decode(err),
            }
            for t, a, p, s, e, st, err in rows
        ]

    def events(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._rows(
            "SELECT time, kind, body FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
        )
        return [{"time": t, "kind": k, **_decode(b)} for t, k, b in rows]

    def check(self) -> None:
        """Read the whole file (``PRAGMA quick_check``): JournalError if it is damaged."""
        rows = self._rows("PRAGMA quick_check")
        if not rows or rows[0][0] != "ok":
            raise JournalError(self.path, f"damaged: {rows[0][0] if rows else 'no answer'}")

    def load(self, run_id: str) -> Resumed:
        """What run ``run_id`` left (the file checked first): its tasks, those that
        finished ok, attempts."""
        self.check()
        rows = self._rows("SELECT tasks_hash, tasks FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            raise JournalError(self.path, f"no run {run_id!r}")
        tasks_hash, blob = rows[0]
        initial = _decode(blob)
        ids = {str(t["id"]) for t in initial}
        res = Resumed(run_id=run_id, tasks_hash=tasks_hash, initial=initial, dynamic=[])
        for tid, spec, dynamic, status, outcome in self._rows(
            "SELECT task_id, spec, dynamic, status, outcome FROM tasks WHERE run_id = ? "
            "ORDER BY seq",
            (run_id,),
        ):
            if dynamic == 1 and tid not in ids:
                res.dynamic.append(_decode(spec))
            if status == "ok" and outcome is not None:
                res.done[tid] = _decode(outcome)
        for tid, n in self._rows(
            "SELECT task_id, MAX(attempt) FROM attempts WHERE run_id = ? GROUP BY task_id",
            (run_id,),
        ):
            res.attempts[tid] = int(n)
        return res

    def count_attempts(self, run_id: str) -> dict[str, int]:
        """How many attempts each task has recorded."""
        return {
            t: int(n)
            for t, n in self._rows(
                "SELECT task_id, COUNT(*) FROM attempts WHERE run_id = ? GROUP BY task_id",
                (run_id,),
            )
        }


def _safe(run_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)[:200] or "_"
