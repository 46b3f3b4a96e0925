"""`gha-mlops runners serve`, end to end, as a user runs it: the real service process, a real
dockerd, the runner image built from runner/Dockerfile (its stand-in stage, since the real
runner cannot be downloaded here) and the GitHub API emulator sending signed webhooks.

Every test ends with the invariants that matter: every job served, no container and no
runner registration left behind, and no request that departs from GitHub's OpenAPI
description (the `github` fixture checks that).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from gha_mlops.runners.backends.base import LABEL_OWNER
from gha_mlops.testing.github_emulator import GitHubEmulator

pytest_plugins = ["tests.integration.github_fixtures", "tests.integration.docker_fixtures"]

SECRET = "e2e-webhook-secret-" + "0" * 16
REPO = "octo/demo"


def wait_until(what: str, cond: Callable[[], Any], timeout: float = 60.0,
               every: float = 0.2, on_tick: Callable[[], None] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if on_tick is not None:
            on_tick()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


class Service:
    """One `gha-mlops runners serve` process and its log."""

    def __init__(self, workdir: Path, gh: GitHubEmulator, docker_url: str, image: str, *,
                 max_runners: int = 2, auth: str = "token_env: GH_TOKEN") -> None:
        self.workdir = workdir
        self.id = "t" + secrets.token_hex(3)
        self.config = workdir / "runners.yaml"
        self.config.write_text(f"""
id: {self.id}
github: {{repo: {REPO}, api_url: "{gh.url}", {auth}}}
webhook: {{secret_env: HOOK_SECRET, listen: "127.0.0.1:0"}}
state: state.db
reconcile_interval: 2s
grace_period: 4s
backends:
  docker: {{host: "{docker_url}", network: host}}
pools:
  - {{name: cpu, labels: [train], image: "{image}", max: {max_runners}, cpus: 1,
     memory: 512MiB, idle_timeout: 5s, register_timeout: 40s}}
""")
        self.env = {**os.environ, "GH_TOKEN": gh.token, "HOOK_SECRET": SECRET,
                    "PYTHONDONTWRITEBYTECODE": "1"}
        self.gh = gh
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._logs: list[Path] = []

    def start(self, **env: str) -> Service:
        log = self.workdir / f"serve-{len(self._logs)}.log"
        self._logs.append(log)
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gha_mlops", "runners", "serve", "--config",
                 str(self.config), "--log-level", "debug"],
                stdout=out, stderr=subprocess.STDOUT, env={**self.env, **env})
        line = wait_until("the service to listen", lambda: self._find("serving webhooks on"),
                          timeout=30, on_tick=self._check_alive)
        self.port = int(line["msg"].split("http://127.0.0.1:")[1].split("/")[0])
        self.gh.set_webhook(f"http://127.0.0.1:{self.port}/webhook", SECRET)
        return self

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"the service exited ({self.proc.returncode}):\n{self.text()}")

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for log in self._logs:
            for raw in log.read_text(errors="replace").splitlines():
                try:
                    out.append(json.loads(raw))
                except ValueError:
                    out.append({"msg": raw})
        return out

    def text(self) -> str:
        return "\n".join(log.read_text(errors="replace") for log in self._logs)

    def _find(self, needle: str) -> dict[str, Any] | None:
        return next((x for x in self.lines() if needle in str(x.get("msg", ""))), None)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text: str = r.read().decode()
        return text

    def status(self) -> str:
        out = subprocess.run([sys.executable, "-m", "gha_mlops", "runners", "status",
                              "--config", str(self.config)], capture_output=True, text=True,
                             env=self.env, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout


@pytest.fixture
def service(tmp_path: Path, github: GitHubEmulator, dockerd: Any,
            runner_image: str) -> Iterator[Service]:
    github.runner_timeout = 3.0
    svc = Service(tmp_path, github, dockerd.base_url, runner_image)
    yield svc
    if svc.proc is not None and svc.proc.poll() is None:
        svc.stop()
    client = dockerd.client()
    for c in client.containers.list(all=True, sparse=True,
                                    filters={"label": f"{LABEL_OWNER}={svc.id}"}):
        with contextlib.suppress(docker.errors.NotFound):
            c.remove(force=True)  # keep the daemon clean for the next test, whatever happened
    client.close()


def containers(dockerd: Any, svc: Service) -> list[Any]:
    client = dockerd.client()
    try:
        return list(client.containers.list(all=True, sparse=True,
                                           filters={"label": f"{LABEL_OWNER}={svc.id}"}))
    finally:
        client.close()


def jobs_done(gh: GitHubEmulator, ids: list[int]) -> bool:
    return all(gh.job(i).status == "completed" for i in ids)


def assert_clean(gh: GitHubEmulator, dockerd: Any, svc: Service) -> None:
    wait_until("every container to be gone", lambda: not containers(dockerd, svc), 30)
    wait_until("every registration to be gone", lambda: not gh.runners(REPO), 30)


def test_queued_jobs_get_ephemeral_runners_and_nothing_is_left(
        service: Service, github: GitHubEmulator, dockerd: Any) -> None:
    service.start()
    repo = github.repo(REPO)
    ids = [repo.queue_job(["self-hosted", "train"], duration=1.5) for _ in range(3)]
    peak = 0

    def count() -> None:
        nonlocal peak
        peak = max(peak, len(containers(dockerd, service)))

    wait_until("three jobs to complete", lambda: jobs_done(github, ids), 120, on_tick=count)
    jobs = [github.job(i) for i in ids]
    assert [j.conclusion for j in jobs] == ["success"] * 3
    names = {j.runner_name for j in jobs}
    assert len(names) == 3, "each job had its own runner"
    assert all(n and n.startswith(f"{service.id}-cpu-") for n in names)
    assert 1 <= peak <= 2, f"max is 2, saw {peak} containers"
    assert_clean(github, dockerd, service)
    metrics = service.metrics()
    assert 'gha_mlops_runners_actions_total{action="launch"} 3.0' in metrics
    assert 'gha_mlops_runners_queued_to_running_seconds_count{pool="cpu"} 3.0' in metrics
    wait_until("the state to show no runners", lambda: "no runners" in service.status(), 20)
    assert service.stop() == 0
    launched = [x for x in service.lines() if x.get("msg") == "runner launched"]
    assert len(launched) == 3 and all(x.get("runner") in names for x in launched)


def test_as_a_github_app_with_installation_tokens_renewed(
        tmp_path: Path, github: GitHubEmulator, dockerd: Any, runner_image: str) -> None:
    app = github.create_app(4242)
    github.install_app(4242, repo=REPO, permissions={
        "administration": "write", "actions": "write", "metadata": "read"})
    github.installation_token_ttl = 6  # GitHub: an hour; here they expire during the test
    (tmp_path / "app.pem").write_text(app.private_key_pem)
    svc = Service(tmp_path, github, dockerd.base_url, runner_image,
                  auth="app: {id: 4242, private_key_file: app.pem}")
    try:
        svc.start()
        job = github.repo(REPO).queue_job(["self-hosted", "train"], duration=8)
        wait_until("the job to complete", lambda: jobs_done(github, [job]), 90)
        assert github.job(job).conclusion == "success"
        assert_clean(github, dockerd, svc)
        minted = [r for r in github.requests if r.path.endswith("/access_tokens")]
        assert len(minted) >= 2, "the installation token was renewed"
        assert not [r for r in github.requests if r.status == 401]
    finally:
        svc.stop()


def test_a_lost_webhook_is_made_good_by_the_reconcile_loop(
        service: Service, github: GitHubEmulator, dockerd: Any) -> None:
    service.start()
    github.drop_webhooks = 1
    job = github.repo(REPO).queue_job(["self-hosted", "train"], duration=0.5)
    wait_until("the job to complete", lambda: jobs_done(github, [job]), 90)
    assert github.job(job).conclusion == "success"
    found = [x for x in service.lines() if x.get("msg") == "found a queued job no webhook "
             "told of"]
    assert [x.get("job_id") for x in found] == [job]
    assert_clean(github, dockerd, service)


def test_a_job_no_pool_serves_is_reported(service: Service, github: GitHubEmulator) -> None:
    service.start()
    job = github.repo(REPO).queue_job(["self-hosted", "tpu"])
    line = wait_until("the warning", lambda: service._find("no pool serves this job"), 30)
    assert line["job_id"] == job
    assert "[self-hosted, tpu]" in line["msg"] and "cpu [cpu" not in line["msg"]
    assert "(no pool serves these labels)" in service.status()
    assert "gha_mlops_runners_unservable_jobs 1.0" in service.metrics()


def test_killed_between_container_started_and_state_written(
        service: Service, github: GitHubEmulator, dockerd: Any) -> None:
    service.start(GHA_MLOPS_FAILPOINTS="after-launch")
    job = github.repo(REPO).queue_job(["self-hosted", "train"], duration=6)
    assert service.proc is not None
    assert service.proc.wait(timeout=60) == -signal.SIGKILL
    assert len(containers(dockerd, service)) == 1  # started, and nobody wrote it down
    service.start()  # the operator (or systemd) restarts it
    wait_until("the job to complete", lambda: jobs_done(github, [job]), 90)
    assert github.job(job).conclusion == "success"
    assert service._find("adopted a machine started before a restart") is not None
    assert_clean(github, dockerd, service)
    runs = [j for j in github.jobs(REPO) if j.name == github.job(job).name]
    assert len(runs) == 1, "nothing was re-run or launched twice"


def test_the_daemon_down_at_launch_time_delays_the_job_but_loses_nothing(
        service: Service, github: GitHubEmulator, dockerd: Any) -> None:
    service.start()
    dockerd.stop()
    try:
        job = github.repo(REPO).queue_job(["self-hosted", "train"], duration=0.5)
        wait_until("the launch to fail", lambda: service._find("launch failed"), 30)
        assert github.job(job).status == "queued"
        assert not github.runners(REPO), "a failed launch leaves no registration"
    finally:
        dockerd.start()
    wait_until("the job to complete", lambda: jobs_done(github, [job]), 120)
    assert_clean(github, dockerd, service)


def test_a_runner_killed_mid_job_gets_its_job_rerun_once(
        service: Service, github: GitHubEmulator, dockerd: Any) -> None:
    # GitHub gives up on a vanished runner's job minutes later; the autoscaler notices the
    # machine is gone at its next pass (2 s here), long before.
    github.runner_timeout = 8.0
    service.start()
    job = github.repo(REPO).queue_job(["self-hosted", "train"], duration=4)
    wait_until("the job to start", lambda: github.job(job).status == "in_progress", 60)
    (victim,) = containers(dockerd, service)
    victim.kill()  # SIGKILL: the machine dies mid-job (OOM killer, power, a kernel panic)
    lost = wait_until("the runner to be noticed lost",
                      lambda: service._find("runner died mid-job"), 30)
    assert lost["job_id"] == job
    wait_until("GitHub to fail the job", lambda: github.job(job).conclusion == "failure", 30)
    again = wait_until("the re-run attempt", lambda: [
        j for j in github.jobs(REPO) if j.run_attempt == 2], 60)[0]
    assert again.run_id == github.job(job).run_id and again.name == github.job(job).name
    rerun = service._find("re-ran a job whose runner died mid-job")
    assert rerun is not None and rerun["job_id"] == job
    wait_until("the re-run to complete", lambda: jobs_done(github, [again.id]), 120)
    assert github.job(again.id).conclusion == "success"
    assert len([j for j in github.jobs(REPO) if j.run_id == again.run_id]) == 2  # once only
    assert_clean(github, dockerd, service)


def test_the_daemon_restarting_mid_launch_leaves_no_job_unserved_and_no_orphan(
        service: Service, github: GitHubEmulator, dockerd: Any) -> None:
    service.start()
    repo = github.repo(REPO)
    ids = [repo.queue_job(["self-hosted", "train"], duration=1) for _ in range(2)]
    wait_until("a launch to begin", lambda: any(
        x.get("msg") == "job queued" for x in service.lines()), 10, every=0.01)
    dockerd.restart()
    wait_until("every job to be served", lambda: jobs_done(github, ids), 120)
    # A job the restart interrupted counts as served (its runner reported it); none waits.
    assert all(github.job(i).runner_name for i in ids)
    assert_clean(github, dockerd, service)


def test_github_errors_and_rate_limits_lose_nothing(
        service: Service, github: GitHubEmulator, dockerd: Any) -> None:
    service.start()
    github.inject_fault("POST", "/repos/octo/demo/actions/runners/generate-jitconfig",
                        status=502, count=2)
    job = github.repo(REPO).queue_job(["self-hosted", "train"], duration=0.5)
    wait_until("a refused registration", lambda: service._find("GitHub refused to register"),
               30)
    github.exhaust_rate_limit(reset_in=5)
    wait_until("the pause", lambda: service._find("GitHub's rate limit is spent until"), 30)
    wait_until("the job to complete", lambda: jobs_done(github, [job]), 120)
    assert_clean(github, dockerd, service)
    assert 'gha_mlops_runners_errors_total{kind="github"}' in service.metrics()
    assert "gha_mlops_runners_github_rate_limit_remaining" in service.metrics()


def test_orphans_are_removed_and_other_runners_left_alone(
        service: Service, github: GitHubEmulator, dockerd: Any, runner_image: str) -> None:
    client = dockerd.client()
    orphan = client.containers.run(
        runner_image, entrypoint=["sleep", "600"], detach=True, network_mode="host",
        labels={LABEL_OWNER: service.id, "dev.gha-mlops.runner": f"{service.id}-cpu-lost",
                "dev.gha-mlops.pool": "cpu", "dev.gha-mlops.gpus": ""})
    stranger = client.containers.run(runner_image, entrypoint=["sleep", "600"], detach=True,
                                     network_mode="host", labels={LABEL_OWNER: "someone-else"})
    for name in (f"{service.id}-cpu-ghost", "alices-laptop"):
        req = urllib.request.Request(
            f"{github.url}/repos/{REPO}/actions/runners/generate-jitconfig", method="POST",
            data=json.dumps({"name": name, "runner_group_id": 1,
                             "labels": ["self-hosted"]}).encode(),
            headers={"Authorization": f"Bearer {github.token}",
                     "Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=5).close()
    try:
        service.start()
        wait_until("the orphan container to go", lambda: orphan.id not in {
            c.id for c in containers(dockerd, service)}, 30)
        wait_until("the ghost registration to go", lambda: [
            r.name for r in github.runners(REPO)] == ["alices-laptop"], 30)
        assert client.containers.get(stranger.id).status == "running"
    finally:
        stranger.remove(force=True)
        client.close()
