"""The autoscaler's durable state: jobs, runners (each with its machine) and every transition,
in one SQLite database in WAL mode.

Every change is one transaction, committed before the action it enables: a runner's slot is
reserved (under its pool's maximum, in a ``BEGIN IMMEDIATE`` transaction: the one allocator)
before GitHub registers it and before its machine starts, so a ``kill -9`` at any point leaves
a row that names what may exist, and the next reconcile pass adopts or removes it. Job status
only moves forward (queued -> in_progress -> completed), so replayed or reordered webhooks
cannot resurrect a finished job.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gha_mlops.errors import GhaMlopsError
from gha_mlops.runners.policy import ALIVE, GONE, RESERVED, JobView, RunnerView

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,
    received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    repo TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    run_attempt INTEGER NOT NULL DEFAULT 1,
    name TEXT NOT NULL DEFAULT '',
    labels TEXT NOT NULL,
    status TEXT NOT NULL,
    conclusion TEXT,
    runner_name TEXT,
    queued_at REAL NOT NULL,
    started_at REAL,
    completed_at REAL,
    updated_at REAL NOT NULL,
    lost INTEGER NOT NULL DEFAULT 0,
    rerun_done INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status);
CREATE INDEX IF NOT EXISTS jobs_run ON jobs (repo, run_id, name);
CREATE TABLE IF NOT EXISTS runners (
    name TEXT PRIMARY KEY,
    pool TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    state_since REAL NOT NULL,
    boot_id TEXT NOT NULL,
    github_id INTEGER,
    machine_id TEXT,
    job_id INTEGER,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS runners_state ON runners (state);
CREATE TABLE IF NOT EXISTS transitions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    old TEXT,
    new TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
"""

_ORDER = {"waiting": 0, "queued": 1, "in_progress": 2, "completed": 3}


class StateError(GhaMlopsError):
    exit_code = 2


@dataclass(frozen=True)
class Transition:
    seq: int
    at: float
    kind: str
    key: str
    old: str | None
    new: str
    detail: str


class State:
    """One database, shared by the intake and the scaler threads (a lock serializes them;
    SQLite serializes writers anyway, and each transaction is short)."""

    def __init__(self, path: Path | str, *, clock: Callable[[], float] = time.time) -> None:
        self.path = str(path)
        self._clock = clock
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False,
                                       isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as err:
            raise StateError(f"cannot open the autoscaler state {self.path}: {err}",
                             hint="check the path in `state:`; a corrupt file can be moved "
                             "away: the reconcile loop rebuilds demand from GitHub") from None
        self._lock = threading.RLock()

    def now(self) -> float:
        t: float = self._clock()
        return t

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _log(self, db: sqlite3.Connection, kind: str, key: str, old: str | None, new: str,
             detail: str = "") -> None:
        db.execute("INSERT INTO transitions (at, kind, key, old, new, detail) "
                   "VALUES (?, ?, ?, ?, ?, ?)", (self.now(), kind, key, old, new, detail))

    # -- webhook deliveries -----------------------------------------------------------------

    def first_delivery(self, delivery_id: str) -> bool:
        """Record a delivery id; False when it was seen before (a replay or a redelivery)."""
        with self._tx() as db:
            cur = db.execute("INSERT OR IGNORE INTO deliveries (id, received_at) VALUES (?, ?)",
                             (delivery_id, self.now()))
            return cur.rowcount == 1

    def prune_deliveries(self, older_than: float) -> int:
        with self._tx() as db:
            return db.execute("DELETE FROM deliveries WHERE received_at < ?",
                              (self.now() - older_than,)).rowcount

    # -- jobs -------------------------------------------------------------------------------

    def upsert_job(self, *, id: int, repo: str, run_id: int, run_attempt: int, name: str,
                   labels: Iterable[str], status: str, conclusion: str | None = None,
                   runner_name: str | None = None, at: float | None = None) -> str | None:
        """Record what GitHub says of a job; status only moves forward. Returns the previous
        status (None for a new job), or the current one unchanged when this is stale."""
        at = self.now() if at is None else at
        labels_json = json.dumps(sorted({x.lower() for x in labels}))
        with self._tx() as db:
            row = db.execute("SELECT status FROM jobs WHERE id = ?", (id,)).fetchone()
            if row is None:
                rerun = db.execute("SELECT 1 FROM jobs WHERE repo = ? AND run_id = ? AND "
                                   "name = ? AND rerun_done = 1", (repo, run_id, name)).fetchone()
                db.execute(
                    "INSERT INTO jobs (id, repo, run_id, run_attempt, name, labels, status, "
                    "conclusion, runner_name, queued_at, started_at, completed_at, updated_at, "
                    "rerun_done) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (id, repo, run_id, run_attempt, name, labels_json, status, conclusion,
                     runner_name, at, at if status == "in_progress" else None,
                     at if status == "completed" else None, at, 1 if rerun else 0))
                self._log(db, "job", str(id), None, status, runner_name or "")
                return None
            old = str(row[0])
            if _ORDER.get(status, 0) <= _ORDER.get(old, 0):
                return old
            db.execute(
                "UPDATE jobs SET status = ?, conclusion = COALESCE(?, conclusion), "
                "runner_name = COALESCE(?, runner_name), updated_at = ?, "
                "started_at = CASE WHEN ? = 'in_progress' THEN ? ELSE started_at END, "
                "completed_at = CASE WHEN ? = 'completed' THEN ? ELSE completed_at END "
                "WHERE id = ?",
                (status, conclusion, runner_name, at, status, at, status, at, id))
            self._log(db, "job", str(id), old, status, runner_name or "")
            return old

    def job(self, job_id: int) -> JobView | None:
        with self._lock:
            row = self._db.execute(_JOB_SELECT + " WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def jobs(self, statuses: Iterable[str] = ("queued", "in_progress")) -> list[JobView]:
        wanted = tuple(statuses)
        marks = ",".join("?" * len(wanted))
        with self._lock:
            rows = self._db.execute(_JOB_SELECT + f" WHERE status IN ({marks}) OR "
                                    "(lost = 1 AND rerun_done = 0)", wanted).fetchall()
        return [_job(r) for r in rows]

    def job_times(self, job_id: int) -> tuple[float, float | None]:
        with self._lock:
            row = self._db.execute("SELECT queued_at, started_at FROM jobs WHERE id = ?",
                                   (job_id,)).fetchone()
        return (float(row[0]), row[1]) if row else (0.0, None)

    def mark_lost(self, job_id: int, runner: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET lost = 1 WHERE id = ?", (job_id,))
            self._log(db, "job", str(job_id), None, "lost", f"runner {runner} died mid-job")

    def mark_rerun(self, job_id: int, detail: str = "") -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET rerun_done = 1 WHERE id = ?", (job_id,))
            self._log(db, "job", str(job_id), None, "rerun", detail)

    # -- runners ----------------------------------------------------------------------------

    def reserve(self, pool: str, n: int, maximum: int, *, boot_id: str,
                prefix: str) -> list[str]:
        """Take up to ``n`` slots in ``pool`` without passing ``maximum`` (every runner not
        gone counts); returns the new runners' names, in state ``reserved``."""
        now = self.now()
        names: list[str] = []
        with self._tx() as db:
            (count,) = db.execute(
                f"SELECT COUNT(*) FROM runners WHERE pool = ? AND state IN ({_ALIVE})",
                (pool, *ALIVE)).fetchone()
            for _ in range(max(0, min(n, maximum - int(count)))):
                name = f"{prefix}{pool}-{secrets.token_hex(4)}"
                db.execute("INSERT INTO runners (name, pool, state, created_at, state_since, "
                           "boot_id) VALUES (?, ?, ?, ?, ?, ?)",
                           (name, pool, RESERVED, now, now, boot_id))
                self._log(db, "runner", name, None, RESERVED, f"pool {pool}")
                names.append(name)
        return names

    def set_runner(self, name: str, state: str, *, detail: str = "",
                   only_from: Iterable[str] | None = None, **fields: object) -> bool:
        """Move a runner to ``state`` (and set ``github_id``, ``machine_id``, ``job_id``).
        With ``only_from``, only when its current state is one of those; returns whether it
        moved. A runner that is gone stays gone."""
        allowed = {"github_id", "machine_id", "job_id"}
        assert set(fields) <= allowed, fields
        with self._tx() as db:
            row = db.execute("SELECT state FROM runners WHERE name = ?", (name,)).fetchone()
            if row is None or row[0] == GONE:
                return False
            old = str(row[0])
            if only_from is not None and old not in set(only_from):
                return False
            sets = ", ".join(f"{k} = ?" for k in fields)
            now = self.now()
            since = now if old != state else None
            db.execute(
                "UPDATE runners SET state = ?, state_since = COALESCE(?, state_since), "
                f"detail = ?{', ' + sets if sets else ''} WHERE name = ?",
                (state, since, detail, *fields.values(), name))
            if old != state:
                self._log(db, "runner", name, old, state, detail)
            return True

    def runner(self, name: str) -> RunnerView | None:
        with self._lock:
            row = self._db.execute(_RUNNER_SELECT + " WHERE name = ?", (name,)).fetchone()
        return _runner(row) if row else None

    def runners(self, *, alive_only: bool = True) -> list[RunnerView]:
        where = f" WHERE state IN ({_ALIVE})" if alive_only else ""
        with self._lock:
            rows = self._db.execute(_RUNNER_SELECT + where,
                                    ALIVE if alive_only else ()).fetchall()
        return [_runner(r) for r in rows]

    def runner_detail(self, name: str) -> str:
        with self._lock:
            row = self._db.execute("SELECT detail FROM runners WHERE name = ?",
                                   (name,)).fetchone()
        return str(row[0]) if row else ""

    def transitions(self, *, kind: str | None = None, key: str | None = None,
                    since_seq: int = 0) -> list[Transition]:
        sql = "SELECT seq, at, kind, key, old, new, detail FROM transitions WHERE seq > ?"
        args: list[object] = [since_seq]
        if kind:
            sql += " AND kind = ?"
            args.append(kind)
        if key:
            sql += " AND key = ?"
            args.append(key)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY seq", args).fetchall()
        return [Transition(*r) for r in rows]

    def prune(self, older_than: float) -> None:
        """Forget finished jobs, gone runners and their transitions after ``older_than`` s."""
        cutoff = self.now() - older_than
        with self._tx() as db:
            db.execute("DELETE FROM jobs WHERE status = 'completed' AND updated_at < ? AND "
                       "(lost = 0 OR rerun_done = 1)", (cutoff,))
            db.execute("DELETE FROM runners WHERE state = ? AND state_since < ?",
                       (GONE, cutoff))
            db.execute("DELETE FROM transitions WHERE at < ?", (cutoff,))
            db.execute("DELETE FROM deliveries WHERE received_at < ?", (cutoff,))


_ALIVE = ",".join("?" * len(ALIVE))
_JOB_SELECT = ("SELECT id, repo, labels, status, queued_at, runner_name, lost, rerun_done, "
               "conclusion FROM jobs")
_RUNNER_SELECT = ("SELECT name, pool, state, created_at, state_since, boot_id, github_id, "
                  "machine_id, job_id FROM runners")


def _job(row: Any) -> JobView:
    return JobView(id=int(row[0]), repo=str(row[1]),
                   labels=frozenset(json.loads(str(row[2]))), status=str(row[3]),
                   queued_at=float(row[4]),
                   runner_name=row[5] if row[5] is None else str(row[5]),
                   lost=bool(row[6]), rerun_done=bool(row[7]),
                   conclusion=row[8] if row[8] is None else str(row[8]))


def _runner(row: Any) -> RunnerView:
    return RunnerView(name=str(row[0]), pool=str(row[1]), state=str(row[2]),
                      created_at=float(row[3]),
                      state_since=float(row[4]),
                      boot_id=str(row[5]),
                      github_id=row[6] if row[6] is None else int(row[6]),
                      machine_id=row[7] if row[7] is None else str(row[7]),
                      job_id=row[8] if row[8] is None else int(row[8]))
