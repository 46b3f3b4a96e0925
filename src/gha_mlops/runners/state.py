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
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gha_mlops.errors import ExitCode, GhaMlopsError
from gha_mlops.github.port import GhJob
from gha_mlops.runners.policy import (
    ALIVE,
    GONE,
    MACHINE_WENT_AWAY,
    RESERVED,
    RUNNER_DIED,
    SPOT_INTERRUPTED,
    JobView,
    RunnerView,
)

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
CREATE INDEX IF NOT EXISTS deliveries_time ON deliveries (received_at);
CREATE TABLE IF NOT EXISTS transitions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    old TEXT,
    new TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS transitions_time ON transitions (at);
"""

DELIVERY_MEMORY = 3 * 86400.0  # seconds a delivery id is remembered (GitHub redelivers
# from the last 3 days)
_ORDER = {"waiting": 0, "queued": 1, "in_progress": 2, "completed": 3}


class StateError(GhaMlopsError):
    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class Applied:
    """What :meth:`State.apply_jobs` did with one job."""

    old: str | None  # its previous status (None: new, or not written)
    error: str | None = None  # why it could not be written (then nothing of it was)


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
        # Write-through caches of what every pass reads: the jobs still in play and the
        # runners not gone. This process is the database's only writer, so they stay exact;
        # a pass then costs no SQL and no row decoding, however long the queue.
        self._jobs: dict[int, JobView] = {}
        self._runners: dict[str, RunnerView] = {}
        for row in self._db.execute(_JOB_SELECT + _ACTIVE_JOBS).fetchall():
            self._jobs[int(row[0])] = _job(row)
        for row in self._db.execute(_RUNNER_SELECT + f" WHERE state IN ({_ALIVE})", ALIVE):
            self._runners[str(row[0])] = _runner(row)
        self._seen_lock = threading.Lock()
        self._pending: list[tuple[str, float]] = []
        self._inflight: set[str] = set()  # claimed, not applied yet
        self._seen: dict[str, float] = dict(self._db.execute(
            "SELECT id, received_at FROM deliveries WHERE received_at >= ?",
            (self.now() - DELIVERY_MEMORY,)).fetchall())

    def now(self) -> float:
        t: float = self._clock()
        return t

    def close(self) -> None:
        with self._lock:
            self.flush()
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
        """Note a delivery id as applied at once; False when it was seen before (a replay or a
        redelivery), or is being applied now. New ids are written with the next batch of jobs
        (or at :meth:`close`). The service takes ids with :meth:`claim_delivery` instead, so
        that one is remembered only once its event is applied."""
        with self._seen_lock:
            if delivery_id in self._seen or delivery_id in self._inflight:
                return False
            now = self.now()
            self._seen[delivery_id] = now
            self._pending.append((delivery_id, now))
            return True

    def claim_delivery(self, delivery_id: str) -> bool:
        """Take a delivery for applying; False when it was applied in the last
        ``DELIVERY_MEMORY`` seconds (a replay or a redelivery) or is being applied now.

        Answered from memory (the ids applied, loaded at start, and those in flight), so the
        webhook endpoint never waits for the database. Nothing is written here: the id is
        remembered when :meth:`apply_jobs` applies its event (in the same savepoint as the
        job), so a redelivery of one whose application failed, or that a crash cut short, is
        taken again; :meth:`release_deliveries` gives back one taken but not applied."""
        with self._seen_lock:
            if delivery_id in self._seen or delivery_id in self._inflight:
                return False
            self._inflight.add(delivery_id)
            return True

    def release_deliveries(self, *delivery_ids: str) -> None:
        """Give back ids taken with :meth:`claim_delivery` and not applied."""
        with self._seen_lock:
            self._inflight.difference_update(delivery_ids)

    def _write_deliveries(self, db: sqlite3.Connection) -> None:
        with self._seen_lock:
            pending, self._pending = self._pending, []
        db.executemany("INSERT OR IGNORE INTO deliveries (id, received_at) VALUES (?, ?)",
                       pending)

    def flush(self) -> None:
        with self._tx() as db:
            self._write_deliveries(db)

    # -- jobs -------------------------------------------------------------------------------

    def upsert_jobs(self, jobs: Sequence[GhJob], *, at: float | None = None
                    ) -> list[str | None]:
        """Record what GitHub says of jobs, in one transaction; status only moves forward.
        Returns, per job, its previous status (None for a new job), or its current one
        unchanged when the news is stale. Each job is written in its own savepoint: one
        that cannot be written raises :class:`StateError` after the others are committed."""
        results = self.apply_jobs(jobs, at=at)
        failed = [(job, r.error) for job, r in zip(jobs, results, strict=True) if r.error]
        if failed:
            job, error = failed[0]
            raise StateError(f"could not record job {job.id}: {error}",
                             hint="the reconcile loop reads it again from GitHub")
        return [r.old for r in results]

    def apply_jobs(self, jobs: Sequence[GhJob], deliveries: Sequence[str | None] = (), *,
                   at: float | None = None, remember: Sequence[str] = ()) -> list[Applied]:
        """Record jobs as :meth:`upsert_jobs` does, each in its own savepoint with its
        delivery id (``deliveries``, one per job when given): a job that cannot be written
        is rolled back alone, its id not remembered (so its redelivery is taken again), and
        the others are committed. ``remember``: ids of deliveries applied without a job to
        write (out of scope, waiting). Every id given is released from the in-flight set."""
        at = self.now() if at is None else at
        ids = list(deliveries) or [None] * len(jobs)
        given = [d for d in [*ids, *remember] if d is not None]
        outcomes: list[tuple[str | None, JobView | None, str | None]] = []
        applied: list[str] = []
        try:
            with self._lock:
                with self._tx() as db:
                    outcomes = [self._apply_one(db, job, delivery, at)
                                for job, delivery in zip(jobs, ids, strict=True)]
                    self._write_deliveries(db)
                    db.executemany("INSERT OR IGNORE INTO deliveries (id, received_at) "
                                   "VALUES (?, ?)", [(d, at) for d in remember])
                applied = [d for d, o in zip(ids, outcomes, strict=True)
                           if d is not None and o[2] is None] + list(remember)
                self._cache_jobs(jobs, outcomes)
        finally:  # committed or not, nothing given stays in flight
            with self._seen_lock:
                self._seen.update((d, at) for d in applied)
                self._inflight.difference_update(given)
        return [Applied(old, error) for old, _new, error in outcomes]

    def _apply_one(self, db: sqlite3.Connection, job: GhJob, delivery: str | None,
                   at: float) -> tuple[str | None, JobView | None, str | None]:
        db.execute("SAVEPOINT job")
        try:
            old, new = self._upsert(db, job, at)
            if delivery is not None:
                db.execute("INSERT OR IGNORE INTO deliveries (id, received_at) VALUES (?, ?)",
                           (delivery, at))
        except Exception as err:  # one event's failure must not cost the others: undo it alone
            db.execute("ROLLBACK TO job")
            db.execute("RELEASE job")
            return None, None, f"{type(err).__name__}: {err}"
        db.execute("RELEASE job")
        return old, new, None

    def _cache_jobs(self, jobs: Sequence[GhJob],
                    outcomes: Sequence[tuple[str | None, JobView | None, str | None]]) -> None:
        for job, (old, new, error) in zip(jobs, outcomes, strict=True):
            if error is not None:
                continue
            if new is not None:  # inserted: its view is known without a read
                if _active(new):
                    self._jobs[job.id] = new
            elif old != job.status and _ORDER.get(job.status, 0) > _ORDER.get(old or "", 0):
                self._refresh_job(job.id)

    def upsert_job(self, job: GhJob, *, at: float | None = None) -> str | None:
        return self.upsert_jobs([job], at=at)[0]

    def _upsert(self, db: sqlite3.Connection, job: GhJob,
                at: float) -> tuple[str | None, JobView | None]:
        """(the previous status, the new job's view when it was inserted)."""
        status, runner_name = job.status, job.runner_name
        row = db.execute("SELECT status FROM jobs WHERE id = ?", (job.id,)).fetchone()
        if row is None:
            rerun = db.execute("SELECT 1 FROM jobs WHERE repo = ? AND run_id = ? AND name = ? "
                               "AND rerun_done = 1", (job.repo, job.run_id, job.name)).fetchone()
            labels = json.dumps(sorted({x.lower() for x in job.labels}))
            db.execute(
                "INSERT INTO jobs (id, repo, run_id, run_attempt, name, labels, status, "
                "conclusion, runner_name, queued_at, started_at, completed_at, updated_at, "
                "rerun_done) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job.id, job.repo, job.run_id, job.run_attempt, job.name, labels, status,
                 job.conclusion, runner_name, at, at if status == "in_progress" else None,
                 at if status == "completed" else None, at, 1 if rerun else 0))
            self._log(db, "job", str(job.id), None, status, runner_name or "")
            return None, JobView(id=job.id, repo=job.repo, labels=_labels(labels),
                                 status=status, queued_at=at, runner_name=runner_name,
                                 rerun_done=bool(rerun), conclusion=job.conclusion)
        old = str(row[0])
        if _ORDER.get(status, 0) <= _ORDER.get(old, 0):
            return old, None
        db.execute(
            "UPDATE jobs SET status = ?, conclusion = COALESCE(?, conclusion), "
            "runner_name = COALESCE(?, runner_name), updated_at = ?, "
            "started_at = CASE WHEN ? = 'in_progress' THEN ? ELSE started_at END, "
            "completed_at = CASE WHEN ? = 'completed' THEN ? ELSE completed_at END "
            "WHERE id = ?",
            (status, job.conclusion, runner_name, at, status, at, status, at, job.id))
        self._log(db, "job", str(job.id), old, status, runner_name or "")
        return old, None

    def _refresh_job(self, job_id: int) -> None:
        row = self._db.execute(_JOB_SELECT + " WHERE id = ?", (job_id,)).fetchone()
        view = _job(row) if row else None
        if view is not None and _active(view):
            self._jobs[job_id] = view
        else:
            self._jobs.pop(job_id, None)

    def job(self, job_id: int) -> JobView | None:
        with self._lock:
            cached = self._jobs.get(job_id)
            if cached is not None:
                return cached
            row = self._db.execute(_JOB_SELECT + " WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def jobs(self, statuses: Iterable[str] = ("queued", "in_progress")) -> list[JobView]:
        """The jobs in play in ``statuses`` (queued, in progress), and every lost job not
        re-run yet; from the cache, never from the database."""
        wanted = frozenset(statuses)
        with self._lock:
            return [j for j in self._jobs.values()
                    if j.status in wanted or (j.lost and not j.rerun_done)]

    def mark_lost(self, job_id: int, runner: str, cause: str = RUNNER_DIED) -> None:
        """Note that a job was lost to ``cause`` (:data:`~gha_mlops.runners.policy.RUNNER_DIED`,
        :data:`~gha_mlops.runners.policy.MACHINE_WENT_AWAY`,
        :data:`~gha_mlops.runners.policy.SPOT_INTERRUPTED`) on ``runner``; it is re-run once."""
        with self._lock:
            with self._tx() as db:
                db.execute("UPDATE jobs SET lost = 1 WHERE id = ?", (job_id,))
                self._log(db, "job", str(job_id), None, "lost", f"{cause}: runner {runner}")
            self._refresh_job(job_id)

    def lost_cause(self, job_id: int) -> str:
        """Why a job was lost, as :meth:`mark_lost` noted it (``RUNNER_DIED`` for a job
        noted before causes were)."""
        with self._lock:
            row = self._db.execute(
                "SELECT detail FROM transitions WHERE kind = 'job' AND key = ? AND new = 'lost' "
                "ORDER BY seq DESC LIMIT 1", (str(job_id),)).fetchone()
        detail = str(row[0]) if row else ""
        for cause in (MACHINE_WENT_AWAY, SPOT_INTERRUPTED):
            if detail.startswith(cause):
                return cause
        return RUNNER_DIED

    def mark_rerun(self, job_id: int, detail: str = "") -> None:
        with self._lock:
            with self._tx() as db:
                db.execute("UPDATE jobs SET rerun_done = 1 WHERE id = ?", (job_id,))
                self._log(db, "job", str(job_id), None, "rerun", detail)
            self._refresh_job(job_id)

    # -- runners ----------------------------------------------------------------------------

    def reserve(self, pool: str, n: int, maximum: int, *, boot_id: str,
                prefix: str) -> list[str]:
        """Take up to ``n`` slots in ``pool`` without passing ``maximum`` (every runner not
        gone counts); returns the new runners' names, in state ``reserved``."""
        now = self.now()
        names: list[str] = []
        with self._lock, self._tx() as db:
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
            for name in names:
                self._runners[name] = RunnerView(name=name, pool=pool, state=RESERVED,
                                                 created_at=now, state_since=now,
                                                 boot_id=boot_id)
        return names

    def set_runner(self, name: str, state: str, *, detail: str = "",
                   only_from: Iterable[str] | None = None, **fields: object) -> bool:
        """Move a runner to ``state`` (and set ``github_id``, ``machine_id``, ``job_id``).
        With ``only_from``, only when its current state is one of those; returns whether it
        moved. A runner that is gone stays gone."""
        with self._lock:
            moved = self._set_runner(name, state, detail, only_from, fields)
            if moved:
                row = self._db.execute(_RUNNER_SELECT + " WHERE name = ?", (name,)).fetchone()
                if row[2] in ALIVE:
                    self._runners[name] = _runner(row)
                else:
                    self._runners.pop(name, None)
            return moved

    def _set_runner(self, name: str, state: str, detail: str,
                    only_from: Iterable[str] | None, fields: dict[str, object]) -> bool:
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
            cached = self._runners.get(name)
            if cached is not None:
                return cached
            row = self._db.execute(_RUNNER_SELECT + " WHERE name = ?", (name,)).fetchone()
        return _runner(row) if row else None

    def runners(self, *, alive_only: bool = True) -> list[RunnerView]:
        with self._lock:
            if alive_only:
                return list(self._runners.values())
            rows = self._db.execute(_RUNNER_SELECT).fetchall()
        return [_runner(r) for r in rows]

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
            self._write_deliveries(db)
            db.execute("DELETE FROM deliveries WHERE received_at < ?",
                       (self.now() - DELIVERY_MEMORY,))
        with self._seen_lock:
            horizon = self.now() - DELIVERY_MEMORY
            self._seen = {k: t for k, t in self._seen.items() if t >= horizon}


_ALIVE = ",".join("?" * len(ALIVE))
_ACTIVE_JOBS = (" WHERE status IN ('queued', 'in_progress') OR (lost = 1 AND rerun_done = 0)")


def _active(job: JobView) -> bool:
    return job.status in ("queued", "in_progress") or (job.lost and not job.rerun_done)
_JOB_SELECT = ("SELECT id, repo, labels, status, queued_at, runner_name, lost, rerun_done, "
               "conclusion FROM jobs")
_RUNNER_SELECT = ("SELECT name, pool, state, created_at, state_since, boot_id, github_id, "
                  "machine_id, job_id FROM runners")


_LABEL_SETS: dict[str, frozenset[str]] = {}  # one object per distinct set: cheap dict keys


def _labels(text: str) -> frozenset[str]:
    found = _LABEL_SETS.get(text)
    if found is None:
        found = _LABEL_SETS.setdefault(text, frozenset(json.loads(text)))
    return found


def _job(row: Any) -> JobView:
    return JobView(id=int(row[0]), repo=str(row[1]),
                   labels=_labels(str(row[2])), status=str(row[3]),
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
