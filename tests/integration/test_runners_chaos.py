"""Chaos at targeted moments, against the real thing: `gha-mlops runners serve` killed with -9
between creating a container and starting it (then restarted), and dockerd restarted under a
running job; a real dockerd, the GitHub emulator and the runner stand-in (see
test_runners_e2e.py).

Each trial ends with the claims that matter: no orphan (no container, no registration left),
no lost job (every job succeeded, a job lost to its machine re-run once), no job on two
runners, never more containers than the pool's max, and, after the kill, the slot of the
container that was never started is given back at once (started or removed), not held as
"booting" until ``register_timeout``.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gha_mlops.testing.github_emulator import GitHubEmulator
from tests.integration.test_runners_e2e import (
    REPO,
    Service,
    assert_clean,
    containers,
    jobs_done,
    wait_until,
)

pytest_plugins = ["tests.integration.github_fixtures", "tests.integration.docker_fixtures"]

MAX = 2
BURST = 4  # jobs, twice the pool's max
JOB_S = 1.5
REGISTER_TIMEOUT = "3m"  # the default: what a held slot would cost


@pytest.fixture
def chaos(tmp_path: Path, github: GitHubEmulator, dockerd: Any,
          runner_image: str) -> Iterator[Service]:
    github.runner_timeout = 3.0
    svc = Service(tmp_path, github, dockerd.base_url, runner_image, max_runners=MAX)
    svc.config.write_text(svc.config.read_text().replace(
        "register_timeout: 40s", f"register_timeout: {REGISTER_TIMEOUT}"))
    yield svc
    if svc.proc is not None and svc.proc.poll() is None:
        svc.stop()
    for c in containers(dockerd, svc):
        c.remove(force=True)


class Peak:
    """The most containers of this service seen at once (polled while waiting)."""

    def __init__(self, dockerd: Any, svc: Service) -> None:
        self.dockerd, self.svc, self.most = dockerd, svc, 0

    def __call__(self) -> None:
        self.most = max(self.most, len(containers(self.dockerd, self.svc)))


def _burst(github: GitHubEmulator) -> list[int]:
    repo = github.repo(REPO)
    return [repo.queue_job(["self-hosted", "train"], duration=JOB_S) for _ in range(BURST)]


def _assert_served_once_each(github: GitHubEmulator, ids: list[int]) -> None:
    """Every job succeeded, none on a runner that ran another, none re-run."""
    jobs = [github.job(i) for i in ids]
    assert [j.conclusion for j in jobs] == ["success"] * len(ids)
    runners = [j.runner_name for j in jobs]
    assert len(set(runners)) == len(runners), f"a runner ran two jobs: {runners}"
    assert all(j.run_attempt == 1 for j in github.jobs(REPO)), "nothing was re-run"


def test_killed_between_create_and_start_the_restart_gives_the_slot_back_at_once(
        chaos: Service, github: GitHubEmulator, dockerd: Any) -> None:
    peak = Peak(dockerd, chaos)
    chaos.start(GHA_MLOPS_FAILPOINTS="after-create")
    ids = _burst(github)
    assert chaos.proc is not None
    assert chaos.proc.wait(timeout=60) == -signal.SIGKILL
    created = [c for c in containers(dockerd, chaos) if c.status == "created"]
    assert created, "the kill left a container created and never started"
    restarted = time.monotonic()
    chaos.start()
    freed = wait_until("the created container to be started or removed", lambda: all(
        c.status != "created" for c in containers(dockerd, chaos)), 20, on_tick=peak)
    slot_s = time.monotonic() - restarted
    wait_until("the burst to drain", lambda: jobs_done(github, ids), 90, on_tick=peak)
    drain_s = time.monotonic() - restarted
    assert freed and slot_s < 10, f"the slot was held {slot_s:.1f} s"
    assert chaos._find("started a machine created but never started") is not None \
        or chaos._find("created but never started") is not None
    assert chaos._find("never came online") is None, "held as booting until the timeout"
    _assert_served_once_each(github, ids)
    assert_clean(github, dockerd, chaos)
    # The same burst on the same service with no kill, for the comparison.
    started = time.monotonic()
    again = _burst(github)
    wait_until("the second burst to drain", lambda: jobs_done(github, again), 90,
               on_tick=peak)
    plain_s = time.monotonic() - started
    _assert_served_once_each(github, ids + again)
    assert_clean(github, dockerd, chaos)
    assert peak.most <= MAX, f"{peak.most} containers at once, max is {MAX}"
    print(f"\nburst of {BURST} x {JOB_S} s jobs, max {MAX}: slot given back "
          f"{slot_s:.1f} s after the restart; drained {drain_s:.1f} s after the restart "
          f"(no kill: {plain_s:.1f} s)")
    # Held as booting until register_timeout (part 1), it drained no sooner than 180 s.
    assert drain_s < plain_s + 20, (drain_s, plain_s)


def test_a_job_cancelled_by_a_dockerd_restart_is_rerun_once_and_said_so(
        chaos: Service, github: GitHubEmulator, dockerd: Any) -> None:
    peak = Peak(dockerd, chaos)
    chaos.start()
    job = github.repo(REPO).queue_job(["self-hosted", "train"], duration=8)
    wait_until("the job to start", lambda: github.job(job).status == "in_progress", 60,
               on_tick=peak)
    dockerd.restart()  # stops the runner under its job (SIGTERM): it reports it cancelled
    wait_until("the job to end", lambda: github.job(job).status == "completed", 60)
    assert github.job(job).conclusion == "cancelled"
    again = wait_until("the re-run attempt", lambda: [
        j for j in github.jobs(REPO) if j.run_attempt == 2], 60, on_tick=peak)[0]
    assert again.run_id == github.job(job).run_id and again.name == github.job(job).name
    line = chaos._find(f"re-ran job {job}: its machine went away")
    assert line is not None and line["job_id"] == job
    wait_until("the re-run to complete", lambda: jobs_done(github, [again.id]), 90,
               on_tick=peak)
    assert github.job(again.id).conclusion == "success"
    assert again.runner_name != github.job(job).runner_name
    assert len([j for j in github.jobs(REPO) if j.run_id == again.run_id]) == 2  # once only
    assert_clean(github, dockerd, chaos)
    assert peak.most <= MAX
    assert 'gha_mlops_runners_errors_total{kind="machine_lost"} 1.0' in chaos.metrics()
