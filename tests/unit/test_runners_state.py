"""The autoscaler's SQLite state: the allocator's maximum under concurrency, forward-only job
status, delivery dedup, and surviving a process killed with -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from gha_mlops.github.port import GhJob
from gha_mlops.runners.policy import BUSY, GONE, IDLE, LAUNCHING, RESERVED
from gha_mlops.runners.state import State


def test_reserve_never_passes_the_maximum_even_from_many_threads(tmp_path: Path) -> None:
    state = State(tmp_path / "s.db")
    names: list[str] = []
    lock = threading.Lock()

    def grab() -> None:
        got = state.reserve("gpu", 3, 5, boot_id="b", prefix="gm-")
        with lock:
            names.extend(got)

    threads = [threading.Thread(target=grab) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(names) == len(set(names)) == 5
    assert state.reserve("gpu", 1, 5, boot_id="b", prefix="gm-") == []
    state.set_runner(names[0], GONE)
    assert len(state.reserve("gpu", 2, 5, boot_id="b", prefix="gm-")) == 1


def test_reserve_counts_every_runner_not_gone(tmp_path: Path) -> None:
    state = State(tmp_path / "s.db")
    a, b = state.reserve("gpu", 2, 2, boot_id="b", prefix="gm-")
    state.set_runner(a, IDLE)
    state.set_runner(b, BUSY, job_id=1)
    assert state.reserve("gpu", 1, 2, boot_id="b", prefix="gm-") == []
    assert state.reserve("cpu", 1, 2, boot_id="b", prefix="gm-")  # other pools are separate


def job(status: str, *, id: int = 1, run_attempt: int = 1, **kw: object) -> GhJob:
    return GhJob(id=id, repo="o/r", run_id=9, run_attempt=run_attempt, name="train",
                 labels=("self-hosted", "GPU"), status=status, **kw)  # type: ignore[arg-type]


def test_job_status_only_moves_forward(tmp_path: Path) -> None:
    state = State(tmp_path / "s.db")
    assert state.upsert_job(job("queued")) is None
    assert state.upsert_job(job("completed", conclusion="success")) == "queued"
    # A late or replayed `queued` / `in_progress` does not bring it back.
    assert state.upsert_job(job("queued")) == "completed"
    assert state.upsert_job(job("in_progress", runner_name="x")) == "completed"
    view = state.job(1)
    assert view is not None and view.status == "completed" and view.conclusion == "success"
    assert view.labels == frozenset({"self-hosted", "gpu"})
    # Many in one transaction, as the event worker applies a batch.
    assert state.upsert_jobs([job("queued", id=2), job("in_progress", id=2),
                              job("queued", id=3)]) == [None, "queued", None]
    assert sorted(j.id for j in state.jobs()) == [2, 3]


def test_a_rerun_attempt_inherits_rerun_done(tmp_path: Path) -> None:
    state = State(tmp_path / "s.db")
    state.upsert_job(job("completed", conclusion="failure"))
    state.mark_lost(1, "gm-a")
    state.mark_rerun(1)
    state.upsert_job(job("queued", id=2, run_attempt=2))
    again = state.job(2)
    assert again is not None and again.rerun_done  # a second loss is not re-run again


def test_deliveries_are_deduplicated_across_restarts(tmp_path: Path) -> None:
    state = State(tmp_path / "s.db")
    assert state.first_delivery("d-1")
    assert not state.first_delivery("d-1")
    state.close()
    again = State(tmp_path / "s.db")
    assert not again.first_delivery("d-1")
    assert again.first_delivery("d-2")


def test_set_runner_guards(tmp_path: Path) -> None:
    state = State(tmp_path / "s.db")
    (name,) = state.reserve("gpu", 1, 1, boot_id="b", prefix="gm-")
    assert not state.set_runner(name, BUSY, only_from=(IDLE,))
    assert state.set_runner(name, LAUNCHING, github_id=7, only_from=(RESERVED,))
    assert state.set_runner(name, GONE, detail="launch failed")
    assert not state.set_runner(name, IDLE)  # gone stays gone
    r = state.runner(name)
    assert r is not None and r.state == GONE and r.github_id == 7
    kinds = [(t.old, t.new) for t in state.transitions(kind="runner", key=name)]
    assert kinds == [(None, RESERVED), (RESERVED, LAUNCHING), (LAUNCHING, GONE)]


_WRITER = """
import os, signal, sys
from gha_mlops.github.port import GhJob
from gha_mlops.runners.state import State
s = State(sys.argv[1])
names = s.reserve("gpu", 2, 4, boot_id="dead", prefix="gm-")
s.set_runner(names[0], "launching", github_id=11)
s.upsert_job(GhJob(id=5, repo="o/r", run_id=1, run_attempt=1, name="t", labels=("gpu",),
                   status="queued"))
print(",".join(names), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_committed_state_survives_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    proc = subprocess.run([sys.executable, "-c", _WRITER, str(db)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    first, second = proc.stdout.strip().split(",")
    state = State(db)
    a, b = state.runner(first), state.runner(second)
    assert a is not None and a.state == LAUNCHING and a.github_id == 11 and a.boot_id == "dead"
    assert b is not None and b.state == RESERVED
    assert [j.id for j in state.jobs()] == [5]


def test_prune_forgets_old_history_and_keeps_what_is_in_play(tmp_path: Path) -> None:
    now = [1_000_000.0]
    state = State(tmp_path / "s.db", clock=lambda: now[0])
    state.upsert_job(job("completed", id=1, conclusion="success"))
    state.upsert_job(job("queued", id=2))
    (gone,) = state.reserve("gpu", 1, 1, boot_id="b", prefix="gm-")
    state.set_runner(gone, GONE)
    assert state.first_delivery("old")
    now[0] += 8 * 86400
    assert state.first_delivery("new")
    state.prune(older_than=7 * 86400)
    assert state.job(1) is None and state.job(2) is not None
    assert state.runner(gone) is None
    assert state.transitions(key="1") == []
    assert state.first_delivery("old")  # forgotten after DELIVERY_MEMORY
    assert not state.first_delivery("new")
