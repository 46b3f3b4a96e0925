"""The scaler with a cloud pool beside a Docker pool (fakes of both ports): a spot
interruption notice (drain, replacement, the re-run said so, the metric), a machine past its
expiry, the restart between CreateFleet and the state write, each machine removed through its
own backend, and the GPU inventory of several Docker hosts."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from gha_mlops.github.port import GhJob
from gha_mlops.runners.backends.base import PENDING, BackendError, Health, LaunchSpec, Machine
from gha_mlops.runners.config import load_config
from gha_mlops.runners.policy import BOOTING, BUSY, GONE, IDLE, LAUNCHING
from gha_mlops.runners.scaler import Scaler
from gha_mlops.runners.state import State
from gha_mlops.testing.fake_runners import FakeBackend, FakeRunnersGitHub
from tests.unit.test_runners_scaler import ENV, Clock

CONFIG = """
id: gm
github: {repo: octo/demo, token_env: TOKEN}
webhook: {secret_env: SECRET}
state: state.db
reconcile_interval: 30s
grace_period: 2m
backends:
  docker:
    hosts:
      - {name: a, host: "unix:///tmp/a.sock", gpus: [0, 1]}
      - {name: b, host: "unix:///tmp/b.sock", gpus: [0]}
  ec2: {region: us-east-1, subnets: [subnet-0123abcd], security_groups: [sg-0123abcd]}
pools:
  - {name: gpu, labels: [gpu], image: runner:test, max: 4, gpus: 1, idle_timeout: 5m,
     register_timeout: 3m}
  - name: cloud
    backend: ec2
    labels: [cloud]
    image: runner:test
    max: 3
    gpus: 1
    idle_timeout: 5m
    ec2: {instance_types: [g5.xlarge], ami: ami-0123456789abcdef0}
"""
CLOUD = ("self-hosted", "cloud")
NOTICE = "spot interruption notice for 2026-12-06T03:02:00Z (eventbridge)"


class FakeCloud(FakeBackend):
    """Instances: ids ``i-...``, ``pending`` when launched (they start by themselves)."""

    name = "ec2"

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock=clock)
        self._instance_ids = itertools.count(0x10000000)

    def launch(self, spec: LaunchSpec) -> Machine:
        m = super().launch(spec)
        with self._lock:
            del self.machines[m.id]
            m = replace(m, id=f"i-{next(self._instance_ids):08x}", state=PENDING)
            self.machines[m.id] = m
            return m

    def set(self, runner: str, **changes: object) -> Machine:
        m = self.machine_of(runner)
        assert m is not None
        m = self.machines[m.id] = replace(m, **changes)  # type: ignore[arg-type]
        return m


class Rig:
    def __init__(self, tmp: Path, config: str = CONFIG,
                 docker: Callable[..., FakeBackend] | None = None) -> None:
        (tmp / "runners.yaml").write_text(config)
        self.config = load_config(tmp / "runners.yaml", ENV)
        self.clock = Clock()
        self.gh = FakeRunnersGitHub(clock=self.clock)
        self.docker = (docker or FakeBackend)(clock=self.clock)
        self.cloud = FakeCloud(self.clock)
        self.state = State(tmp / "state.db", clock=self.clock)
        self.scaler = self.new_scaler()

    def new_scaler(self) -> Scaler:
        return Scaler(self.config, self.state, self.gh,
                      {"docker": self.docker, "ec2": self.cloud}, clock=self.clock,
                      launch_workers=0)

    def queue(self, labels: tuple[str, ...] = CLOUD) -> GhJob:
        job = self.gh.queue(labels)
        self.scaler.on_job_event(job)
        return job

    def states(self) -> dict[str, str]:
        return {r.name: r.state for r in self.state.runners(alive_only=False)}

    def alive(self) -> list[str]:
        return sorted(r.name for r in self.state.runners())

    def run_job(self, runner: str) -> GhJob:
        self.gh.connect(runner)
        job = self.gh.assign(runner)
        assert job is not None
        self.scaler.on_job_event(self.gh.jobs[job.id])
        return job

    def metric(self, line: str) -> bool:
        return line in self.scaler.metrics.render().decode()


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def _idle_cloud_runner(rig: Rig) -> str:
    job = rig.queue()
    rig.scaler.reconcile(full=False)
    (name,) = rig.alive()
    rig.gh.connect(name)
    rig.scaler.reconcile(full=True)
    assert rig.states()[name] == IDLE
    rig.gh.jobs[job.id] = replace(rig.gh.jobs[job.id], status="completed",
                                  conclusion="cancelled")  # its job went elsewhere
    rig.scaler.on_job_event(rig.gh.jobs[job.id])
    return name


def test_an_idle_runner_under_notice_is_drained_at_once_and_replaced(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    name = _idle_cloud_runner(rig)
    m = rig.cloud.set(name, notice=NOTICE)
    rig.queue()  # a job waits: the replacement launches in the same pass
    with caplog.at_level(logging.INFO, "gha_mlops.runners"):
        rig.scaler.reconcile(full=True)
    assert rig.states()[name] == GONE and rig.gh.runner_by_name(name) is None
    assert m.id in rig.cloud.destroyed
    assert len(rig.cloud.launched) == 2 and rig.docker.launched == []
    warned = [r for r in caplog.records if r.getMessage().startswith(
        "spot interruption notice: runner draining")]
    assert len(warned) == 1
    assert (warned[0].runner, warned[0].pool, warned[0].machine, warned[0].reason) == (  # type: ignore[attr-defined]
        name, "cloud", m.id, NOTICE)
    assert f"drained: {NOTICE}" in caplog.text
    assert rig.metric('gha_mlops_runners_interruptions_total{pool="cloud"} 1.0')


def test_a_busy_runner_under_notice_keeps_its_job_and_the_rerun_says_interrupted(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    job = rig.queue()
    rig.scaler.reconcile(full=False)
    (name,) = rig.alive()
    rig.run_job(name)
    rig.cloud.set(name, notice=NOTICE, state="running")
    with caplog.at_level(logging.WARNING, "gha_mlops.runners"):
        for _ in range(3):  # logged and counted once, however many passes see it
            rig.clock.advance(10)
            rig.scaler.reconcile(full=True)
    assert rig.states()[name] == BUSY  # its job goes on
    assert len(rig.cloud.launched) == 2  # one runner boots for the re-run, once
    # ... and the backend is told it replaces an interrupted one (ec2.rerun_on_demand)
    assert [spec.replaces_interrupted for spec in rig.cloud.specs.values()] == [False, True]
    assert caplog.text.count("spot interruption notice: runner draining") == 1
    # Two minutes on, AWS takes the instance: the job fails, and is re-run once, said so.
    rig.cloud.lose(name)
    rig.gh.finish(job.id, "failure")
    rig.scaler.on_job_event(rig.gh.jobs[job.id])
    with caplog.at_level(logging.WARNING, "gha_mlops.runners"):
        for _ in range(2):
            rig.clock.advance(31)
            rig.scaler.reconcile(full=True)
    assert rig.gh.calls.count("rerun_job") == 1
    assert f"job {job.id} lost: its spot instance was interrupted" in caplog.text
    assert f"re-ran job {job.id}: its spot instance was interrupted" in caplog.text
    assert rig.metric('gha_mlops_runners_interruptions_total{pool="cloud"} 1.0')
    # The re-run attempt is served by the runner that booted meanwhile: no third launch.
    rig.scaler.reconcile(full=False)
    assert len(rig.cloud.launched) == 2


def test_an_instance_gone_after_its_notice_without_a_lost_report_was_interrupted(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    job = rig.queue()
    rig.scaler.reconcile(full=False)
    (name,) = rig.alive()
    rig.run_job(name)
    rig.cloud.set(name, notice=NOTICE, state="running")
    rig.scaler.reconcile(full=True)
    rig.cloud.exit(name)  # terminated and gone from the listing (no "lost" seen)
    rig.gh.finish(job.id, "failure")
    rig.scaler.on_job_event(rig.gh.jobs[job.id])
    with caplog.at_level(logging.WARNING, "gha_mlops.runners"):
        for _ in range(2):
            rig.clock.advance(31)
            rig.scaler.reconcile(full=True)
    assert rig.gh.calls.count("rerun_job") == 1
    assert f"re-ran job {job.id}: its spot instance was interrupted" in caplog.text


def test_a_machine_past_its_expiry_is_removed_and_its_job_not_rerun(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    job = rig.queue()
    rig.scaler.reconcile(full=False)
    (name,) = rig.alive()
    rig.run_job(name)
    m = rig.cloud.set(name, state="running", expires_at=rig.clock() + 60)
    rig.clock.advance(59)
    rig.scaler.reconcile(full=True)
    assert rig.states()[name] == BUSY
    rig.clock.advance(1)
    with caplog.at_level(logging.WARNING, "gha_mlops.runners"):
        rig.scaler.reconcile(full=True)
    assert m.id in rig.cloud.destroyed and rig.states()[name] == GONE
    assert f"job {job.id} is not re-run: its machine was past its expiry" in caplog.text
    rig.gh.finish(job.id, "failure")
    rig.scaler.on_job_event(rig.gh.jobs[job.id])
    for _ in range(2):
        rig.clock.advance(31)
        rig.scaler.reconcile(full=True)
    assert "rerun_job" not in rig.gh.calls


def test_a_restart_between_create_fleet_and_the_state_write_adopts_the_pending_instance(
        rig: Rig) -> None:
    job = rig.queue()
    # What `runners serve` killed at failpoint "after-launch" leaves: the runner reserved and
    # registered (LAUNCHING, no machine id written) and the instance, tagged, still pending.
    (name,) = rig.state.reserve("cloud", 1, 3, boot_id="dead-process", prefix="gm-")
    jit = rig.gh.generate_jitconfig(name, CLOUD)
    rig.state.set_runner(name, LAUNCHING, github_id=jit.runner_id)
    m = rig.cloud.launch(LaunchSpec(name, "cloud", "runner:test", jit.encoded, gpus=1))
    assert m.state == PENDING
    rig.cloud.launched.clear()
    rig.scaler = rig.new_scaler()
    rig.scaler.reconcile(full=True)
    assert rig.states()[name] == BOOTING
    assert rig.state.runner(name).machine_id == m.id  # type: ignore[union-attr]
    assert rig.cloud.launched == [] and rig.docker.launched == []  # no second instance
    rig.clock.advance(1)
    rig.scaler.reconcile(full=False)
    rig.scaler.reconcile(full=True)
    assert rig.cloud.launched == []
    rig.gh.connect(name)
    assert rig.gh.assign(name) is not None and rig.gh.jobs[job.id].runner_name == name


def test_a_machine_is_removed_through_its_own_backend_only(rig: Rig) -> None:
    name = _idle_cloud_runner(rig)
    m = rig.cloud.machine_of(name)
    assert m is not None
    # The Docker hosts are down: removing the cloud machine does not ask them, and succeeds.
    rig.docker.fail_next("destroy", times=10)
    rig.clock.advance(301)  # past idle_timeout: drained
    rig.scaler.reconcile(full=True)
    assert m.id in rig.cloud.destroyed and rig.states()[name] == GONE
    # An orphan listed by the cloud: removed through the cloud alone too.
    rig.cloud.machines["i-0badc0de"] = Machine("i-0badc0de", "gm-cloud-x", "cloud", "running",
                                               rig.clock() - 500)
    rig.scaler.reconcile(full=True)
    assert "i-0badc0de" in rig.cloud.destroyed
    with pytest.raises(BackendError):  # every Docker fault is still armed: never asked
        for _ in range(10):
            rig.docker.destroy("nothing")
    assert rig.docker.destroyed == []


def test_fast_passes_count_the_gpus_of_every_docker_host_and_not_for_cloud_pools(
        rig: Rig) -> None:
    for _ in range(4):
        rig.queue(("self-hosted", "gpu"))
        rig.scaler.reconcile(full=False)
    assert len(rig.docker.launched) == 3  # hosts a and b: 3 GPUs; the fourth job waits
    rig.queue()
    rig.scaler.reconcile(full=False)
    assert len(rig.cloud.launched) == 1  # a cloud pool's GPUs are not the hosts'


def test_ec2_failing_to_list_does_not_blind_the_docker_pool(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """EC2 throttled (its listing fails) for a while: the docker pool's finished runner is
    still settled and its slot freed, the cloud runner mid-job is not taken for lost, and
    once EC2 answers again without its instance, that job is re-run once."""
    cloud_job = rig.queue()
    gpu_job = rig.queue(("self-hosted", "gpu"))
    rig.scaler.reconcile(full=False)
    names = rig.alive()
    cloud_name = next(n for n in names if "-cloud-" in n)
    gpu_name = next(n for n in names if "-gpu-" in n)
    rig.run_job(cloud_name)
    rig.run_job(gpu_name)
    rig.scaler.reconcile(full=True)
    # The docker runner finishes and its container exits; EC2 starts throttling.
    rig.gh.finish(gpu_job.id)
    rig.scaler.on_job_event(rig.gh.jobs[gpu_job.id])
    rig.docker.exit(gpu_name)
    rig.cloud.fail_next("list", BackendError("DescribeInstances: RequestLimitExceeded"),
                        times=3)
    with caplog.at_level(logging.ERROR, "gha_mlops.runners"):
        rig.clock.advance(31)
        rig.scaler.reconcile(full=True)
    assert rig.states()[gpu_name] == "gone"  # settled although EC2 did not answer
    assert rig.states()[cloud_name] == BUSY  # not judged by a listing it is not in
    assert "backend ec2: listing machines failed" in caplog.text
    assert rig.gh.calls.count("rerun_job") == 0
    # EC2 answers again: its instance went away meanwhile (the job failed with it).
    rig.cloud.exit(cloud_name)
    rig.gh.finish(cloud_job.id, "failure")
    rig.scaler.on_job_event(rig.gh.jobs[cloud_job.id])
    for _ in range(4):
        rig.clock.advance(31)
        rig.scaler.reconcile(full=True)
    assert rig.states()[cloud_name] == "gone"
    assert rig.gh.calls.count("rerun_job") == 1


class TwoHosts(FakeBackend):
    """Two Docker hosts of 2 GPUs each as :class:`DockerHosts` shows them: ids ``HOST/ID``,
    a runner placed on the host with the most free GPUs or refused (retryably) when none
    has its GPUs, and each host's free GPUs in ``health().gpus_by_host``."""

    down: frozenset[str] = frozenset()  # hosts that do not answer

    def free_by_host(self) -> dict[str, int]:
        free = {"a": 2, "b": 2}
        for m in self.machines.values():
            free[m.id.split("/")[0]] -= len(m.gpus)
        return {h: n for h, n in free.items() if h not in self.down}

    def launch(self, spec: LaunchSpec) -> Machine:
        free = self.free_by_host()
        host = max(free, key=lambda h: free[h], default="")
        if not host:
            raise BackendError("no Docker host answers", retryable=True)
        if free[host] < spec.gpus:
            raise BackendError(f"no host has {spec.gpus} GPU(s) free for {spec.runner_name}",
                               retryable=True)
        m = super().launch(spec)
        with self._lock:
            del self.machines[m.id]
            m = replace(m, id=f"{host}/{m.id}")
            self.machines[m.id] = m
            return m

    def health(self) -> Health:
        free = self.free_by_host()
        return Health(bool(free), "ok", {"gpus": sum(free.values())}, gpus_by_host=free)


BIG = CONFIG.replace("""      - {name: b, host: "unix:///tmp/b.sock", gpus: [0]}""",
                     """      - {name: b, host: "unix:///tmp/b.sock", gpus: [0, 1]}""").replace(
    "pools:\n", "pools:\n  - {name: big, labels: [big], image: runner:test, max: 2, gpus: 2}\n")


def test_a_runner_is_launched_only_where_one_host_has_all_its_gpus(tmp_path: Path) -> None:
    """1 + 1 free GPUs on two hosts: a 2-GPU runner waits (no launch that must fail), in
    fast passes (counted from the state, by the host in each machine id) and full ones
    (each host's free GPUs as listed); it launches when one host has 2 free again."""
    rig = Rig(tmp_path, BIG, TwoHosts)
    for _ in range(2):
        rig.queue(("self-hosted", "gpu"))
        rig.scaler.reconcile(full=False)
    assert sorted(m.split("/")[0] for m in rig.docker.machines) == ["a", "b"]
    rig.queue(("self-hosted", "big"))
    rig.scaler.reconcile(full=False)
    rig.clock.advance(31)
    rig.scaler.reconcile(full=True)
    assert [n for _, n in rig.docker.launched if "-big-" in n] == []
    assert not rig.metric('gha_mlops_runners_errors_total{kind="backend"}'), \
        "no launch was tried that could not fit"
    small = next(m.runner_name for m in rig.docker.machines.values())
    rig.docker.exit(small)  # its job done: host a or b has 2 free again
    rig.clock.advance(31)
    rig.scaler.reconcile(full=True)
    assert len([n for _, n in rig.docker.launched if "-big-" in n]) == 1


def test_fast_passes_count_no_gpus_on_a_host_the_last_full_pass_found_down(
        tmp_path: Path) -> None:
    rig = Rig(tmp_path, BIG, TwoHosts)
    rig.docker.down = frozenset({"b"})
    rig.scaler.reconcile(full=True)
    for _ in range(2):
        rig.queue(("self-hosted", "big"))
        rig.scaler.reconcile(full=False)
    assert [m.split("/")[0] for m in rig.docker.machines] == ["a"], "b's GPUs were not free"
    assert not rig.metric('gha_mlops_runners_errors_total{kind="backend"}')
    rig.docker.down = frozenset()  # b answers again: the next full pass counts it
    rig.clock.advance(31)
    rig.scaler.reconcile(full=True)
    assert sorted(m.split("/")[0] for m in rig.docker.machines) == ["a", "b"]
