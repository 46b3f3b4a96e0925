"""The scaler against fakes of its two ports: the lifecycle of a runner, and every fault the
issue names (lost webhooks, GitHub 5xx, a busy runner at drain time, orphans, a restart in the
middle of a launch, a runner dying mid-job)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest

from gha_mlops.github.port import GhJob, RunnerBusyError
from gha_mlops.runners.backends.base import BackendError, LaunchSpec, Machine
from gha_mlops.runners.config import load_config
from gha_mlops.runners.policy import ALIVE, BOOTING, BUSY, DONE, GONE, IDLE, LAUNCHING
from gha_mlops.runners.scaler import Scaler
from gha_mlops.runners.state import State
from gha_mlops.testing.fake_runners import FakeBackend, FakeRunnersGitHub

CONFIG = """
id: gm
github: {repo: octo/demo, token_env: TOKEN}
webhook: {secret_env: SECRET}
state: state.db
reconcile_interval: 30s
grace_period: 2m
backends: {docker: {gpus: [0, 1, 2, 3]}}
pools:
  - {name: gpu, labels: [gpu], image: runner:test, max: 3, gpus: 1, idle_timeout: 5m,
     register_timeout: 3m}
"""
ENV = {"TOKEN": "t0ken", "SECRET": "s" * 32}


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class Rig:
    def __init__(self, tmp: Path, *, gpus: int | None = None, config: str = CONFIG) -> None:
        (tmp / "runners.yaml").write_text(config)
        self.config = load_config(tmp / "runners.yaml", ENV)
        self.clock = Clock()
        self.gh = FakeRunnersGitHub(clock=self.clock)
        self.backend = FakeBackend(clock=self.clock, gpus=gpus)
        self.state = State(tmp / "state.db", clock=self.clock)
        self.scaler = self.new_scaler()

    def new_scaler(self) -> Scaler:
        return Scaler(self.config, self.state, self.gh, {"docker": self.backend},
                      clock=self.clock, launch_workers=0)

    def queue(self, *labels: str, webhook: bool = True) -> GhJob:
        job = self.gh.queue(labels or ("self-hosted", "gpu"))
        if webhook:
            self.scaler.on_job_event(job)
        return job

    def event(self, job_id: int) -> None:
        self.scaler.on_job_event(self.gh.jobs[job_id])

    def alive(self) -> list[str]:
        return sorted(r.name for r in self.state.runners())

    def states(self) -> dict[str, str]:
        return {r.name: r.state for r in self.state.runners(alive_only=False)}

    def run_job(self, runner: str) -> GhJob:
        """The runner connects and GitHub hands it a job (webhook in_progress)."""
        self.gh.connect(runner)
        job = self.gh.assign(runner)
        assert job is not None
        self.event(job.id)
        return job


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def test_a_queued_job_launches_a_registered_runner_with_its_jit_config(rig: Rig) -> None:
    rig.queue()
    rig.scaler.reconcile(full=False)
    (runner,) = rig.alive()
    assert rig.states()[runner] == BOOTING
    spec = next(iter(rig.backend.specs.values()))
    assert spec.runner_name == runner and spec.gpus == 1 and spec.image == "runner:test"
    assert set(spec.labels) == {"self-hosted", "linux", "x64", "gpu"}
    assert rig.gh.runner_by_name(runner) is not None  # registered through generate-jitconfig
    assert spec.jit_config
    # The same job again (a redelivery) asks for nothing more.
    rig.event(next(iter(rig.gh.jobs)))
    rig.scaler.reconcile(full=False)
    assert len(rig.backend.launched) == 1


def test_the_whole_life_of_a_runner(rig: Rig) -> None:
    job = rig.queue()
    rig.scaler.reconcile(full=False)
    (runner,) = rig.alive()
    rig.gh.connect(runner)
    rig.scaler.reconcile(full=True)
    assert rig.states()[runner] == IDLE
    got = rig.gh.assign(runner)
    assert got is not None and got.id == job.id
    rig.event(job.id)
    assert rig.states()[runner] == BUSY
    rig.gh.finish(job.id)
    rig.event(job.id)
    assert rig.states()[runner] == DONE
    rig.backend.exit(runner)  # the ephemeral runner exits after its one job
    rig.clock.advance(31)
    rig.scaler.reconcile(full=True)
    assert rig.states()[runner] == GONE
    assert rig.backend.machines == {} and rig.gh.runners == {}
    assert len(rig.backend.launched) == 1  # nothing more was launched


def test_a_lost_webhook_is_made_good_by_the_reconcile_loop(rig: Rig,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    rig.queue(webhook=False)
    rig.scaler.reconcile(full=False)
    assert rig.backend.launched == []
    with caplog.at_level(logging.WARNING, "gha_mlops.runners"):
        rig.scaler.reconcile(full=True)
    assert len(rig.backend.launched) == 1
    assert "found a queued job no webhook told of" in caplog.text


def test_a_job_that_started_elsewhere_stops_being_demand(rig: Rig) -> None:
    job = rig.queue()
    # The job was taken by a runner that is not ours, and its in_progress webhook was lost.
    rig.gh.jobs[job.id] = replace(job, status="in_progress", runner_name="someone-else")
    rig.clock.advance(31)
    rig.scaler.reconcile(full=True)
    assert rig.state.job(job.id).status == "in_progress"  # type: ignore[union-attr]


def test_the_maximum_holds_through_a_burst(rig: Rig) -> None:
    jobs = [rig.queue() for _ in range(20)]
    peak = 0
    for _ in range(40):
        rig.scaler.reconcile(full=False)
        peak = max(peak, len(rig.alive()))
        for name in rig.alive():
            if rig.states()[name] == BOOTING:
                job = rig.run_job(name)
                rig.gh.finish(job.id)
                rig.event(job.id)
                rig.backend.exit(name)
        rig.clock.advance(31)
        rig.scaler.reconcile(full=True)
        peak = max(peak, len(rig.alive()))
    assert peak == 3
    assert all(rig.gh.jobs[j.id].status == "completed" for j in jobs)
    assert rig.alive() == []


def test_idle_runners_are_drained_deregistered_first(rig: Rig) -> None:
    job = rig.queue()
    rig.scaler.reconcile(full=False)
    (runner,) = rig.alive()
    rig.gh.connect(runner)
    rig.gh.jobs[job.id] = replace(job, status="completed", conclusion="cancelled")
    rig.event(job.id)  # cancelled before it reached our runner
    rig.scaler.reconcile(full=True)
    assert rig.states()[runner] == IDLE
    rig.clock.advance(301)
    calls = len(rig.gh.calls)
    rig.scaler.reconcile(full=True)
    assert rig.states()[runner] == GONE
    assert rig.gh.runners == {} and rig.backend.machines == {}
    after = [c for c in rig.gh.calls[calls:] if c == "delete_runner"]
    assert after == ["delete_runner"]


def test_a_runner_that_got_a_job_while_draining_is_kept(rig: Rig) -> None:
    job = rig.queue()
    rig.scaler.reconcile(full=False)
    (runner,) = rig.alive()
    rig.gh.connect(runner)
    rig.gh.jobs[job.id] = replace(job, status="completed", conclusion="cancelled")
    rig.event(job.id)
    rig.scaler.reconcile(full=True)
    assert rig.states()[runner] == IDLE
    rig.clock.advance(301)
    rig.gh.fail_next("delete_runner", RunnerBusyError("still running a job", status=422))
    machine = rig.backend.machine_of(runner)
    rig.scaler.reconcile(full=False)
    assert rig.states()[runner] == BUSY
    assert machine is not None and machine.id in rig.backend.machines  # not killed


def test_orphans_are_removed_and_other_runners_left_alone(rig: Rig) -> None:
    rig.backend.machines["stray"] = Machine("stray", "gm-gpu-dead", "gpu", "running",
                                            rig.clock() - 500)
    rig.backend.machines["young"] = Machine("young", "gm-gpu-new", "gpu", "running",
                                            rig.clock() - 10)
    rig.gh.generate_jitconfig("gm-gpu-ghost", ("gpu",))
    rig.gh.generate_jitconfig("laptop-of-alice", ("gpu",))
    rig.scaler.reconcile(full=True)
    assert sorted(rig.backend.machines) == ["young"]  # within the grace period
    assert [r.name for r in rig.gh.runners.values()] == ["laptop-of-alice"]


def test_a_restart_between_container_started_and_state_written_adopts_the_machine(
        rig: Rig) -> None:
    job = rig.queue()
    # What the killed process left: the slot reserved and registered (state LAUNCHING), the
    # container running, and no machine id written.
    (name,) = rig.state.reserve("gpu", 1, 3, boot_id="dead-process", prefix="gm-")
    jit = rig.gh.generate_jitconfig(name, ("self-hosted", "gpu"))
    rig.state.set_runner(name, LAUNCHING, github_id=jit.runner_id)
    rig.backend.machines["m-x"] = Machine("m-x", name, "gpu", "running", rig.clock())
    restarted = rig.new_scaler()
    restarted.reconcile(full=True)
    assert rig.states()[name] == BOOTING
    assert rig.state.runner(name).machine_id == "m-x"  # type: ignore[union-attr]
    assert len(rig.backend.launched) == 0  # the adopted runner covers the job
    rig.gh.connect(name)
    assert rig.gh.assign(name) is not None
    assert rig.gh.jobs[job.id].runner_name == name


def test_a_restart_before_the_container_started_cleans_up_and_relaunches(rig: Rig) -> None:
    rig.queue()
    (name,) = rig.state.reserve("gpu", 1, 3, boot_id="dead-process", prefix="gm-")
    jit = rig.gh.generate_jitconfig(name, ("self-hosted", "gpu"))
    rig.state.set_runner(name, LAUNCHING, github_id=jit.runner_id)
    rig.scaler = rig.new_scaler()
    rig.scaler.reconcile(full=True)
    assert rig.states()[name] == GONE
    assert rig.gh.runner_by_name(name) is None  # its registration is gone too
    assert len(rig.backend.launched) == 1  # and the job got a new runner


def test_a_job_whose_runner_died_is_rerun_once(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    job = rig.queue()
    rig.scaler.reconcile(full=False)
    (runner,) = rig.alive()
    rig.run_job(runner)
    rig.backend.exit(runner)  # the machine dies mid-job
    rig.gh.disconnect(runner)
    rig.clock.advance(31)
    with caplog.at_level(logging.WARNING, "gha_mlops.runners"):
        rig.scaler.reconcile(full=True)
    assert rig.states()[runner] == GONE
    assert rig.state.job(job.id).lost  # type: ignore[union-attr]
    assert "rerun_job" not in rig.gh.calls  # GitHub has not failed the job yet
    rig.gh.finish(job.id, "failure")  # minutes later GitHub gives up on it
    rig.clock.advance(31)
    with caplog.at_level(logging.WARNING, "gha_mlops.runners"):
        rig.scaler.reconcile(full=True)
    assert rig.gh.calls.count("rerun_job") == 1
    assert "re-ran a job whose runner died mid-job" in caplog.text
    attempt2 = next(j for j in rig.gh.jobs.values() if j.run_attempt == 2)
    # The new attempt is served; if its runner dies too, it is not re-run again.
    rig.clock.advance(31)
    rig.scaler.reconcile(full=True)
    (runner2,) = [n for n in rig.alive() if n != runner]
    rig.run_job(runner2)
    rig.backend.exit(runner2)
    rig.gh.finish(attempt2.id, "failure")
    for _ in range(3):
        rig.clock.advance(31)
        rig.scaler.reconcile(full=True)
    assert rig.gh.calls.count("rerun_job") == 1


def test_a_finished_job_whose_webhook_was_lost_is_not_rerun(rig: Rig) -> None:
    job = rig.queue()
    rig.scaler.reconcile(full=False)
    (runner,) = rig.alive()
    rig.run_job(runner)
    rig.gh.finish(job.id, "success")  # completed webhook lost
    rig.backend.exit(runner)
    rig.clock.advance(31)
    rig.scaler.reconcile(full=True)
    assert rig.states()[runner] == GONE
    assert not rig.state.job(job.id).lost  # type: ignore[union-attr]
    assert "rerun_job" not in rig.gh.calls


def test_github_5xx_loses_nothing(rig: Rig) -> None:
    job = rig.queue()
    rig.gh.fail_next("generate_jitconfig")
    rig.scaler.reconcile(full=False)
    assert rig.alive() == [] and rig.backend.launched == []
    assert rig.scaler.backoff("gpu") is not None
    rig.gh.fail_next("list_runners")
    rig.gh.fail_next("queued_jobs")
    rig.clock.advance(31)
    rig.scaler.reconcile(full=True)  # survives failing listings, and the backoff has passed
    assert len(rig.backend.launched) == 1
    assert rig.state.job(job.id).status == "queued"  # type: ignore[union-attr]
    errors = rig.scaler.metrics.registry.get_sample_value(
        "gha_mlops_runners_errors_total", {"kind": "github"})
    assert errors == 3


def test_a_failed_launch_leaves_no_registration_behind(rig: Rig) -> None:
    rig.queue()
    rig.backend.fail_next("launch")
    rig.scaler.reconcile(full=False)
    assert rig.gh.runners == {}  # deregistered again
    assert [s for s in rig.states().values()] == [GONE]
    rig.clock.advance(3)
    rig.scaler.reconcile(full=False)
    assert len(rig.backend.launched) == 1


def test_an_unservable_job_is_reported_once(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.queue("self-hosted", "tpu")
    with caplog.at_level(logging.WARNING, "gha_mlops.runners"):
        rig.scaler.reconcile(full=False)
        rig.scaler.reconcile(full=False)
    assert caplog.text.count("no pool serves this job's runs-on labels [self-hosted, tpu]") == 1
    assert "gpu [gpu, linux, self-hosted, x64]" in caplog.text
    assert rig.backend.launched == []
    assert "gha_mlops_runners_unservable_jobs 1.0" in rig.scaler.metrics.render().decode()


def test_gpus_are_not_overcommitted(tmp_path: Path) -> None:
    rig = Rig(tmp_path, gpus=2)
    for _ in range(3):
        rig.queue()
    rig.scaler.reconcile(full=True)
    assert len(rig.backend.launched) == 2
    assert {r.state for r in rig.state.runners()} <= set(ALIVE)


def test_metrics_render(rig: Rig) -> None:
    rig.queue()
    rig.queue("self-hosted", "tpu")
    rig.scaler.reconcile(full=True)
    text = rig.scaler.metrics.render().decode()
    assert 'gha_mlops_runners_queued_jobs{pool="gpu"} 1.0' in text
    assert 'gha_mlops_runners{pool="gpu",state="booting"} 1.0' in text
    assert "gha_mlops_runners_unservable_jobs 1.0" in text
    assert 'gha_mlops_runners_launch_seconds_count{pool="gpu"} 1.0' in text
    assert "gha_mlops_runners_github_rate_limit_remaining" in text


def test_the_watchdog_removes_a_runner_that_never_comes_online(rig: Rig) -> None:
    job = rig.queue()
    rig.scaler.reconcile(full=False)
    (runner,) = rig.alive()
    rig.clock.advance(179)
    rig.scaler.reconcile(full=True)
    assert rig.states()[runner] == BOOTING  # within register_timeout (3m)
    rig.clock.advance(2)
    rig.scaler.reconcile(full=True)
    assert rig.states()[runner] == GONE
    assert rig.gh.runner_by_name(runner) is None and rig.backend.machine_of(runner) is None
    # The job still waits, so a fresh runner is launched in the same pass.
    assert rig.state.job(job.id).status == "queued"  # type: ignore[union-attr]
    assert len(rig.backend.launched) == 2


def test_fast_passes_count_gpus_from_the_state(tmp_path: Path) -> None:
    rig = Rig(tmp_path, gpus=4, config=CONFIG.replace("gpus: 1,", "gpus: 2,"))
    for _ in range(3):
        rig.queue()
        rig.scaler.reconcile(full=False)
    assert len(rig.backend.launched) == 2  # 4 GPUs, 2 per runner: the third job waits
    assert rig.scaler.backoff("gpu") is None  # and no launch failed for want of a GPU


def test_a_finished_runners_slot_is_freed_without_waiting_for_a_full_pass(rig: Rig) -> None:
    jobs = [rig.queue() for _ in range(4)]
    rig.scaler.reconcile(full=False)
    assert len(rig.alive()) == 3  # max 3
    first = rig.alive()[0]
    job = rig.run_job(first)
    rig.gh.finish(job.id)
    rig.event(job.id)
    rig.backend.exit(first)
    rig.clock.advance(1)
    rig.scaler.reconcile(full=False)
    assert first not in rig.alive()
    assert len(rig.backend.launched) == 4  # the fourth job got the freed slot at once
    assert {j.id for j in jobs} >= {job.id}


def test_a_spent_rate_limit_pauses_github_calls_until_it_resets(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.gh.exhaust_rate_limit(reset_in=120)
    rig.queue()
    calls = len(rig.gh.calls)
    with caplog.at_level(logging.WARNING, "gha_mlops.runners"):
        for _ in range(3):
            rig.scaler.reconcile(full=True)
            rig.clock.advance(31)
    assert len(rig.gh.calls) == calls  # not one call while the limit is spent
    assert caplog.text.count("GitHub's rate limit is spent until") == 1
    assert rig.backend.launched == []
    rig.clock.advance(30)  # past the reset
    rig.scaler.reconcile(full=True)
    assert len(rig.backend.launched) == 1


def test_a_queued_job_github_no_longer_knows_stops_being_demand(rig: Rig) -> None:
    job = rig.queue()
    del rig.gh.jobs[job.id]  # its workflow run was deleted
    rig.clock.advance(31)
    rig.scaler.reconcile(full=True)
    view = rig.state.job(job.id)
    assert view is None or view.status == "completed"
    assert rig.scaler.last_decision.queued == {"gpu": 0}


# -- part 1's restart gaps: adopt by the machine's state; jobs lost to their machine -----------

def _killed_after_create(rig: Rig) -> tuple[str, str]:
    """What a process killed between creating a machine and starting it leaves: the runner
    reserved and registered (LAUNCHING) and a machine in state ``created``."""
    (name,) = rig.state.reserve("gpu", 1, 3, boot_id="dead-process", prefix="gm-")
    jit = rig.gh.generate_jitconfig(name, ("self-hosted", "gpu"))
    rig.state.set_runner(name, LAUNCHING, github_id=jit.runner_id)
    m = rig.backend.create(LaunchSpec(name, "gpu", "runner:test", jit.encoded, gpus=1))
    rig.backend.launched.clear()
    return name, m.id


def test_a_restart_starts_a_machine_created_but_never_started_when_a_job_wants_it(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    job = rig.queue()
    name, mid = _killed_after_create(rig)
    rig.scaler = rig.new_scaler()
    with caplog.at_level(logging.WARNING, "gha_mlops.runners"):
        rig.scaler.reconcile(full=True)
    assert rig.backend.started == [mid] and rig.backend.machines[mid].state == "running"
    assert rig.states()[name] == BOOTING and rig.backend.launched == []
    assert "started a machine created but never started" in caplog.text
    rig.gh.connect(name)
    assert rig.gh.assign(name) is not None and rig.gh.jobs[job.id].runner_name == name


def test_a_restart_removes_a_created_machine_no_job_wants_and_frees_its_slot_at_once(
        tmp_path: Path) -> None:
    rig = Rig(tmp_path, config=CONFIG.replace("max: 3", "max: 1"))
    name, mid = _killed_after_create(rig)
    rig.scaler = rig.new_scaler()
    rig.scaler.reconcile(full=True)
    assert mid in rig.backend.destroyed and rig.states()[name] == GONE
    assert rig.gh.runner_by_name(name) is None  # deregistered too
    # The pool's only slot is free now, not after register_timeout (3 minutes): a job queued
    # a second later is launched for at once.
    rig.clock.advance(1)
    rig.queue()
    rig.scaler.reconcile(full=False)
    assert len(rig.backend.launched) == 1


def test_a_created_machine_that_will_not_start_is_removed_with_its_runner(rig: Rig) -> None:
    rig.queue()
    name, mid = _killed_after_create(rig)
    rig.backend.fail_next("start", BackendError("start: no such image", retryable=False))
    rig.scaler = rig.new_scaler()
    rig.scaler.reconcile(full=True)
    assert mid in rig.backend.destroyed and rig.states()[name] == GONE
    rig.clock.advance(1)
    rig.scaler.reconcile(full=True)
    assert len(rig.backend.launched) == 1  # the job gets a fresh runner


def _run_one_job(rig: Rig) -> tuple[GhJob, str]:
    job = rig.queue()
    rig.scaler.reconcile(full=False)
    (runner,) = rig.alive()
    rig.run_job(runner)
    return job, runner


def _rerun_reported(rig: Rig, caplog: pytest.LogCaptureFixture, job: GhJob) -> None:
    for _ in range(2):
        rig.clock.advance(31)
        with caplog.at_level(logging.WARNING, "gha_mlops.runners"):
            rig.scaler.reconcile(full=True)
    assert rig.gh.calls.count("rerun_job") == 1
    assert f"re-ran job {job.id}: its machine went away" in caplog.text
    assert 'gha_mlops_runners_errors_total{kind="machine_lost"} 1.0' in \
        rig.scaler.metrics.render().decode()


def test_a_job_whose_machine_its_host_stopped_is_rerun_once_and_said_so(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    job, runner = _run_one_job(rig)
    rig.backend.lose(runner)  # a spot interruption, a host restart: the backend says "lost"
    rig.gh.finish(job.id, "cancelled")
    rig.event(job.id)
    _rerun_reported(rig, caplog, job)
    assert rig.backend.machines == {}
    # Once only: the new attempt's machine goes away too, and it is not re-run again.
    attempt2 = next(j for j in rig.gh.jobs.values() if j.run_attempt == 2)
    rig.scaler.reconcile(full=True)
    (runner2,) = rig.alive()
    rig.run_job(runner2)
    rig.backend.lose(runner2)
    rig.gh.finish(attempt2.id, "cancelled")
    for _ in range(3):
        rig.clock.advance(31)
        rig.scaler.reconcile(full=True)
    assert rig.gh.calls.count("rerun_job") == 1


def test_a_job_cancelled_as_its_daemon_restarted_is_rerun_once(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    # dockerd restarts: it stops the runner (SIGTERM), which reports its job cancelled, and
    # the autoscaler's listing fails while the daemon is down; then the container is gone.
    job, runner = _run_one_job(rig)
    rig.gh.finish(job.id, "cancelled")
    rig.event(job.id)
    rig.backend.fail_next("list")
    rig.clock.advance(2)
    rig.scaler.reconcile(full=True)
    rig.backend.exit(runner)
    _rerun_reported(rig, caplog, job)


def test_a_job_that_succeeded_as_its_daemon_restarted_is_not_rerun(rig: Rig) -> None:
    job, runner = _run_one_job(rig)
    rig.gh.finish(job.id, "success")
    rig.event(job.id)
    rig.backend.fail_next("list")
    rig.clock.advance(2)
    rig.scaler.reconcile(full=True)
    rig.backend.exit(runner)
    for _ in range(2):
        rig.clock.advance(31)
        rig.scaler.reconcile(full=True)
    assert "rerun_job" not in rig.gh.calls and rig.states()[runner] == GONE
