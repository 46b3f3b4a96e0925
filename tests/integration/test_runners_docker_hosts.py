"""One pool over two real Docker daemons (two sockets, two data roots, two containerd): the
stand-in runner in real containers, GPUs through the daemons' device-request path (see
docker_fixtures for the stand-in NVIDIA hook), placement by spread and by pack, a daemon
stopped (its runners lost after down_after, launches going to the other, the daemon back),
and a daemon frozen (cut off while its containers run on: listed again when it answers)."""

from __future__ import annotations

import contextlib
import gc
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker.errors
import pytest

from gha_mlops.bootstrap import runner_service
from gha_mlops.runners.backends.base import LABEL_OWNER, LOST, RUNNING, BackendError, Machine
from gha_mlops.runners.backends.docker import DockerBackend
from gha_mlops.runners.backends.docker_hosts import DockerHosts
from gha_mlops.runners.config import DockerHost, load_config
from gha_mlops.runners.observe import LOG
from gha_mlops.testing.github_emulator import GitHubEmulator
from tests.integration.test_docker_backend import ProtocolServer, spec_for

if TYPE_CHECKING:
    from tests.integration.docker_fixtures import Dockerd

pytest_plugins = ["tests.integration.docker_fixtures", "tests.integration.github_fixtures"]

DOWN_AFTER = 3.0
NewHosts = Callable[..., DockerHosts]


@pytest.fixture
def protocol() -> Iterator[ProtocolServer]:
    """The runner protocol's server: the stand-in runners open a session and wait for jobs
    (none come), so their containers run until destroyed."""
    server = ProtocolServer()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture
def daemons(dockerd: Dockerd, second_dockerd: Dockerd) -> dict[str, Dockerd]:
    return {"a": dockerd, "b": second_dockerd}


@pytest.fixture
def owner(daemons: dict[str, Dockerd]) -> Iterator[str]:
    """A fresh autoscaler id; its containers are removed from both daemons after the test."""
    owner = f"test-{uuid.uuid4().hex[:10]}"
    yield owner
    for daemon in daemons.values():
        daemon.start()  # a test that stopped one has started it again; make sure
        api = daemon.client().api
        for c in api.containers(all=True, filters={"label": f"{LABEL_OWNER}={owner}"}):
            with contextlib.suppress(docker.errors.NotFound):
                api.remove_container(c["Id"], force=True)


@pytest.fixture
def new_hosts(daemons: dict[str, Dockerd], owner: str,
              second_runner_image: str) -> Iterator[NewHosts]:
    """``new_hosts(placement=...)``: host a (GPUs 0, 1) and host b (GPUs 0, 1, 2), one per
    daemon, with the runner image on both; closed after the test."""
    made: list[DockerHosts] = []
    gpus = {"a": ("0", "1"), "b": ("0", "1", "2")}

    def make(h: DockerHost) -> DockerBackend:
        # A listing that takes over list_timeout (1 s) counts as down; the client's own
        # timeout, shorter than its minute, keeps the test's frozen calls short.
        return DockerBackend(owner, base_url=h.host, gpus=h.gpus, network=h.network,
                             stop_timeout=2, timeout=5)

    def new(placement: str = "spread") -> DockerHosts:
        hosts = [DockerHost(n, d.base_url, gpus[n], "host", "nvidia", {})
                 for n, d in daemons.items()]
        made.append(DockerHosts(owner, hosts, placement=placement, down_after=DOWN_AFTER,
                                list_timeout=1, make=make))
        return made[-1]

    yield new
    for backend in made:
        backend.close()


def on(machine: Machine) -> str:
    return machine.id.split("/", 1)[0]


def container(daemons: dict[str, Dockerd], machine: Machine) -> dict[str, Any]:
    host, cid = machine.id.split("/", 1)
    return dict(daemons[host].client().api.inspect_container(cid))


def until(check: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.2)
    return result


@pytest.mark.parametrize(("placement", "order"), [("spread", "bab"), ("pack", "aab")])
def test_runners_are_placed_on_the_hosts_gpus_by_the_placement(
        daemons: dict[str, Dockerd], new_hosts: NewHosts, owner: str,
        protocol: ProtocolServer, runner_image: str, placement: str, order: str) -> None:
    hosts = new_hosts(placement)
    launched = [hosts.launch(spec_for(protocol, runner_image, f"{owner}-{i}", gpus=1))
                for i in range(3)]
    assert "".join(on(m) for m in launched) == order
    for m in launched:
        info = container(daemons, m)
        (request,) = info["HostConfig"]["DeviceRequests"]
        assert request["DeviceIDs"] == list(m.gpus)
        assert info["Id"] in daemons[on(m)].nvidia_hook_calls()
    # Each host gave its own GPUs out once: a gets 0 (and 1 when packed), b 0 then 1.
    by_host = sorted((on(m), m.gpus) for m in launched)
    assert len(set(by_host)) == 3
    listed = hosts.list()
    assert sorted(m.id for m in listed) == sorted(m.id for m in launched)
    assert {m.state for m in listed} == {RUNNING}
    health = hosts.health()
    assert health.ok and health.capacity == {"gpus": 2}

    hosts.destroy(launched[0].id)
    assert launched[0].id not in {m.id for m in hosts.list()}
    assert hosts.health().capacity == {"gpus": 3}


# The SDK leaks a socket per refused connection (https://github.com/docker/docker-py/pull/3356).
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_a_stopped_daemon_loses_its_runners_after_down_after_and_launches_go_elsewhere(
        daemons: dict[str, Dockerd], new_hosts: NewHosts, owner: str,
        protocol: ProtocolServer, runner_image: str) -> None:
    hosts = new_hosts("spread")
    on_b = hosts.launch(spec_for(protocol, runner_image, f"{owner}-1", gpus=1))
    assert on(on_b) == "b"
    daemons["b"].stop()  # SIGTERM: the daemon stops its containers and goes
    try:
        # A blip: b's runner is reported as it was, so no job is re-run for it yet ...
        assert [(m.id, m.state) for m in hosts.list()] == [(on_b.id, RUNNING)]
        found_down = time.monotonic()
        health = hosts.health()
        assert health.ok and "down: b: down since" in health.detail
        assert health.capacity == {"gpus": 2}  # a's only
        # ... and launches go to a, although b has more GPUs.
        on_a = hosts.launch(spec_for(protocol, runner_image, f"{owner}-2", gpus=1))
        assert on(on_a) == "a"
        time.sleep(max(0.0, DOWN_AFTER - (time.monotonic() - found_down)))
        listed = {m.id: m for m in hosts.list()}
        assert listed[on_b.id].state == LOST and "has not answered for 3s" in \
            listed[on_b.id].detail
        assert listed[on_a.id].state == RUNNING
        assert on_b.id not in {m.id for m in hosts.list()}, "lost once"
        hosts.destroy(on_b.id)  # what the scaler does with a lost machine: nothing to reach
        gc.collect()
    finally:
        daemons["b"].start()
    # Back: its stopped runner is gone with the daemon's stop, and not reported lost again.
    assert [m.id for m in hosts.list()] == [on_a.id]
    assert hosts.health().capacity == {"gpus": 4}
    again = hosts.launch(spec_for(protocol, runner_image, f"{owner}-3", gpus=1))
    assert on(again) == "b"


def test_a_frozen_daemon_is_down_and_what_it_still_runs_is_listed_again_when_it_answers(
        daemons: dict[str, Dockerd], new_hosts: NewHosts, owner: str,
        protocol: ProtocolServer, runner_image: str) -> None:
    # Imported here: pytest must load docker_fixtures as a plugin first (assert rewriting).
    from tests.integration.docker_fixtures import freeze, thaw

    hosts = new_hosts("pack")
    on_a = hosts.launch(spec_for(protocol, runner_image, f"{owner}-1", gpus=1))
    assert on(on_a) == "a"
    freeze(daemons["a"])  # cut off: its container runs on
    try:
        assert [(m.id, m.state) for m in hosts.list()] == [(on_a.id, RUNNING)]
        on_b = hosts.launch(spec_for(protocol, runner_image, f"{owner}-2", gpus=1))
        assert on(on_b) == "b", "pack would fill a, but a does not answer"
        time.sleep(DOWN_AFTER)
        lost = [m for m in hosts.list() if m.id == on_a.id]
        assert [m.state for m in lost] == [LOST]
        with pytest.raises(BackendError) as err:  # b is up: only a's machine is unreachable
            hosts.start(on_a.id)
        assert err.value.retryable
    finally:
        thaw(daemons["a"])
    # The scaler has forgotten its runner and re-run its job; the container is still there:
    # listed again, it is an orphan to the policy, which removes it after the grace period.
    listed = {m.id: m for m in hosts.list()}
    assert listed[on_a.id].state == RUNNING and set(listed) == {on_a.id, on_b.id}
    hosts.destroy(on_a.id)
    until(lambda: on_a.id not in {m.id for m in hosts.list()}, "the orphan removed")


# -- end to end: the real service ------------------------------------------------------------

SECRET = "hosts-webhook-secret-" + "0" * 16


class LogLines(logging.Handler):
    """The service's log records, as the messages and fields its JSON lines carry."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def find(self, needle: str) -> logging.LogRecord | None:
        return next((r for r in list(self.records) if needle in r.getMessage()), None)


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # the SDK's leaked sockets, see above
def test_a_host_stopped_under_a_running_job_gets_the_job_rerun_once_on_the_other_host(
        tmp_path: Path, github: GitHubEmulator, daemons: dict[str, Dockerd], owner: str,
        second_runner_image: str) -> None:
    github.runner_timeout = 6.0  # GitHub gives up on a vanished runner's job after this
    (tmp_path / "runners.yaml").write_text(f"""
id: {owner}
github: {{repo: octo/demo, api_url: "{github.url}", token_env: GH_TOKEN}}
webhook: {{secret_env: HOOK_SECRET, listen: "127.0.0.1:0"}}
state: state.db
reconcile_interval: 1s
grace_period: 4s
backends:
  docker:
    hosts:
      - {{name: a, host: "{daemons['a'].base_url}", network: host}}
      - {{name: b, host: "{daemons['b'].base_url}", network: host}}
    placement: spread
pools:
  - {{name: cpu, labels: [train], image: "{second_runner_image}", max: 2, cpus: 1,
     memory: 512MiB, idle_timeout: 3s, register_timeout: 40s}}
""")
    env = {"GH_TOKEN": github.token, "HOOK_SECRET": SECRET}
    config = load_config(tmp_path / "runners.yaml", env)
    hosts = DockerHosts(config.id, config.docker_hosts, placement=config.placement,
                        down_after=DOWN_AFTER)
    lines, level = LogLines(), LOG.level
    LOG.addHandler(lines)
    LOG.setLevel(logging.INFO)
    service = runner_service(config, env, backends={"docker": hosts}, port=0).start()
    stopped: Dockerd | None = None
    try:
        github.set_webhook(f"http://127.0.0.1:{service.server.port}/webhook", SECRET)
        job = github.repo("octo/demo").queue_job(["self-hosted", "train"], duration=8)
        until(lambda: github.job(job).status == "in_progress", "the job to start", 60)
        busy = [n for n, d in daemons.items() if d.client().api.containers(
            filters={"label": f"{LABEL_OWNER}={owner}"})]
        assert len(busy) == 1
        stopped = daemons[busy[0]]
        stopped.stop()  # the host goes, its runner mid-job with it

        again = until(lambda: [j for j in github.jobs("octo/demo") if j.run_attempt == 2],
                      "the re-run attempt", 60)[0]
        until(lambda: github.job(again.id).status == "completed", "the re-run to end", 60)
        assert github.job(again.id).conclusion == "success"
        assert github.job(job).conclusion != "success"
        assert lines.find(f"Docker host {busy[0]} down for") is not None
        assert lines.find(f"job {job} lost: its machine went away") is not None
        assert lines.find(f"re-ran job {job}: its machine went away") is not None
        assert [j.run_attempt for j in github.jobs("octo/demo")
                if j.run_id == again.run_id] == [1, 2], "re-run once"
        # The first runner was on the host that went, the re-run's on the other one.
        machines = {getattr(r, "runner", None): getattr(r, "machine", "") for r in lines.records
                    if r.getMessage() == "runner launched"}
        assert machines[github.job(job).runner_name].startswith(f"{busy[0]}/")
        assert not machines[github.job(again.id).runner_name].startswith(f"{busy[0]}/")
    finally:
        if stopped is not None:
            stopped.start()
        service.stop()
        LOG.removeHandler(lines)
        LOG.setLevel(level)
        gc.collect()  # the SDK's leaked sockets, while their warnings are ignored
    # The host is back: nothing of ours is left on either, and no registration.
    for daemon in daemons.values():
        until(lambda d=daemon: not d.client().api.containers(  # type: ignore[misc]
            all=True, filters={"label": f"{LABEL_OWNER}={owner}"}), "no container left", 30)
    assert not github.runners("octo/demo")
