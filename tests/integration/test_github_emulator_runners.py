"""The GitHub emulator's self-hosted runner support: JIT registration and the runner list
(repository and organization), jobs and re-runs, the runner stand-in protocol, heartbeats,
webhooks, GitHub App authentication and installation tokens, faults and rate limits."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
import requests
from github import Auth, GithubIntegration

from gha_mlops.testing.github_emulator import GitHubEmulator
from tests.integration.test_github_emulator import api, client

pytest_plugins = ["tests.integration.github_fixtures"]

REPO = "octo/demo"
ORG = "octo-org"


def register(
    gh: GitHubEmulator, name: str, labels: list[str], scope: str = f"repos/{REPO}"
) -> dict[str, Any]:
    """Register a runner through the API; returns its decoded JIT config."""
    body = {"name": name, "runner_group_id": 1, "labels": labels}
    r = api(gh, "POST", f"/{scope}/actions/runners/generate-jitconfig", json=body)
    assert r.status_code == 201, r.text
    config: dict[str, Any] = json.loads(base64.b64decode(r.json()["encoded_jit_config"]))
    return config


@dataclass
class StandIn:
    """The runner's side of the stand-in protocol, one call at a time."""

    config: dict[str, Any]

    def call(
        self, method: str, action: str, body: Any = None, wait: float | None = None
    ) -> requests.Response:
        url = f"{self.config['url']}/_runner/{action}" + (
            f"?wait={wait}" if wait is not None else ""
        )
        headers = {"Authorization": f"RunnerSession {self.config['token']}"}
        return requests.request(method, url, json=body, headers=headers, timeout=15)

    def take_job(self, wait: float = 5) -> dict[str, Any]:
        assert self.call("POST", "session").status_code == 200
        r = self.call("POST", "acquire", wait=wait)
        assert r.status_code == 200, r.status_code
        job: dict[str, Any] = r.json()["job"]
        return job

    def complete(self, job: dict[str, Any], conclusion: str | None = None) -> requests.Response:
        body = {"job_id": job["id"], "conclusion": conclusion or job["conclusion"]}
        return self.call("POST", "complete", body)


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.02)


@dataclass
class Receiver:
    url: str
    status: int = 200
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A loopback HTTP server that records what is POSTed to it."""
    box = Receiver("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            box.received.append(({k.lower(): v for k, v in self.headers.items()}, raw))
            self.send_response(box.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    box.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield box
    server.shutdown()
    server.server_close()
    thread.join()


# -- registration and the runner list --------------------------------------------------------


def test_jitconfig_registers_an_offline_runner_with_a_unique_name(github: GitHubEmulator) -> None:
    config = register(github, "gpu-1", ["self-hosted", "Linux", "gpu"])
    assert set(config) == {"runner_id", "name", "labels", "url", "token"}
    assert (config["name"], config["url"]) == ("gpu-1", github.root_url)

    runner = api(github, "GET", f"/repos/{REPO}/actions/runners/{config['runner_id']}").json()
    assert (runner["status"], runner["busy"], runner["os"]) == ("offline", False, "Linux")
    assert [(label["name"], label["type"]) for label in runner["labels"]] == [
        ("self-hosted", "read-only"),
        ("Linux", "read-only"),
        ("gpu", "custom"),
    ]
    again = {"name": "gpu-1", "runner_group_id": 1, "labels": ["gpu"]}
    r = api(github, "POST", f"/repos/{REPO}/actions/runners/generate-jitconfig", json=again)
    assert r.status_code == 409
    assert r.json()["message"] == "Already exists - A runner with the name gpu-1 already exists."

    register(github, "gpu-2", ["gpu"])
    listing = api(github, "GET", f"/repos/{REPO}/actions/runners?per_page=1&page=2").json()
    assert listing["total_count"] == 2 and [x["name"] for x in listing["runners"]] == ["gpu-2"]
    named = api(github, "GET", f"/repos/{REPO}/actions/runners?name=gpu-1").json()
    assert [x["id"] for x in named["runners"]] == [config["runner_id"]]

    path = f"/repos/{REPO}/actions/runners/{config['runner_id']}"
    assert api(github, "DELETE", path).status_code == 204
    assert api(github, "GET", path).status_code == 404
    assert api(github, "DELETE", path).status_code == 404
    assert [r.name for r in github.runners(REPO)] == ["gpu-2"]


def test_organization_runners_serve_every_repository_of_the_org(github: GitHubEmulator) -> None:
    github.create_org(ORG)
    for name in ("b", "a"):
        github.create_repo(f"{ORG}/{name}")
    config = register(github, "org-1", ["self-hosted", "gpu"], scope=f"orgs/{ORG}")
    listing = api(github, "GET", f"/orgs/{ORG}/actions/runners").json()
    assert [r["name"] for r in listing["runners"]] == ["org-1"]
    assert api(github, "GET", f"/repos/{REPO}/actions/runners").json()["total_count"] == 0
    assert api(github, "GET", "/orgs/nope/actions/runners").status_code == 404
    repos = api(github, "GET", f"/orgs/{ORG}/repos").json()
    assert [r["full_name"] for r in repos] == [f"{ORG}/a", f"{ORG}/b"]
    assert repos[0]["owner"]["type"] == "Organization"

    github.repo(REPO).queue_job(["gpu"])  # another owner's repository: not this runner's
    job_id = github.repo(f"{ORG}/b").queue_job(["self-hosted", "gpu"])
    job = StandIn(config).take_job()
    assert (job["id"], job["repo"]) == (job_id, f"{ORG}/b")
    runner_path = f"/orgs/{ORG}/actions/runners/{config['runner_id']}"
    assert api(github, "GET", runner_path).json()["busy"] is True
    r = api(github, "DELETE", runner_path)
    assert r.status_code == 422
    assert r.json()["message"] == 'Bad request - Runner "org-1" is still running a job"'


def test_runner_and_job_permissions(github: GitHubEmulator) -> None:
    github.create_org(ORG)
    github.add_token("ghs_read", permissions={"administration": "read", "actions": "read"})
    github.add_token("ghs_admin", permissions={"administration": "write"})
    github.add_token("ghs_org", permissions={"organization_self_hosted_runners": "write"})
    body = {"name": "x", "runner_group_id": 1, "labels": ["gpu"]}
    repo_jit = f"/repos/{REPO}/actions/runners/generate-jitconfig"
    org_jit = f"/orgs/{ORG}/actions/runners/generate-jitconfig"
    assert api(github, "POST", repo_jit, "ghs_read", json=body).status_code == 403
    assert api(github, "GET", f"/repos/{REPO}/actions/runners", "ghs_read").status_code == 200
    assert api(github, "POST", org_jit, "ghs_admin", json=body).status_code == 403
    assert api(github, "POST", org_jit, "ghs_org", json=body).status_code == 201
    assert api(github, "POST", repo_jit, "ghs_admin", json=body).status_code == 201

    job_id = github.repo(REPO).queue_job(["gpu"])
    run_id = github.job(job_id).run_id
    assert (
        api(github, "GET", f"/repos/{REPO}/actions/runs/{run_id}/jobs", "ghs_admin").status_code
        == 403
    )
    assert api(github, "GET", f"/repos/{REPO}/actions/jobs/{job_id}", "ghs_read").status_code == 200
    r = api(github, "POST", f"/repos/{REPO}/actions/jobs/{job_id}/rerun", "ghs_read")
    assert (r.status_code, r.json()["message"]) == (403, "Resource not accessible by integration")


# -- the stand-in protocol ---------------------------------------------------------------------


def test_a_jit_config_is_single_use(github: GitHubEmulator) -> None:
    standin = StandIn(register(github, "one", ["gpu"]))
    assert standin.call("POST", "acquire").status_code == 409  # no session yet
    r = standin.call("POST", "session")
    assert (r.status_code, r.json()) == (200, {"runner_id": standin.config["runner_id"]})
    assert github.runners(REPO)[0].status == "online"
    assert standin.call("POST", "session").status_code == 409
    assert standin.call("DELETE", "session").status_code == 204
    assert github.runners(REPO)[0].status == "offline"
    assert standin.call("POST", "session").status_code == 409  # ended: never again
    assert StandIn({**standin.config, "token": "forged"}).call("POST", "session").status_code == 401

    other = StandIn(register(github, "two", ["gpu"]))
    api(github, "DELETE", f"/repos/{REPO}/actions/runners/{other.config['runner_id']}")
    assert other.call("POST", "session").status_code == 410


def test_acquire_long_polls_for_a_job_whose_labels_the_runner_has(github: GitHubEmulator) -> None:
    repo = github.repo(REPO)
    repo.queue_job(["self-hosted", "cpu"])  # not for this runner
    standin = StandIn(register(github, "gpu-1", ["self-hosted", "linux", "gpu"]))
    assert standin.call("POST", "session").status_code == 200
    started = time.monotonic()
    assert standin.call("POST", "acquire", wait=0.3).status_code == 204
    assert time.monotonic() - started >= 0.3

    later = threading.Timer(0.3, lambda: repo.queue_job(["GPU", "self-hosted"], duration=2))
    later.start()
    started = time.monotonic()
    r = standin.call("POST", "acquire", wait=5)
    later.join()
    assert r.status_code == 200 and time.monotonic() - started < 3
    job = r.json()["job"]
    assert (job["labels"], job["duration"], job["conclusion"]) == (
        ["GPU", "self-hosted"],
        2,
        "success",
    )
    assert standin.call("POST", "acquire").json()["job"]["id"] == job["id"]  # asked again: same

    now = github.job(job["id"])
    assert (now.status, now.runner_name, now.run_attempt) == ("in_progress", "gpu-1", 1)
    assert github.runners(REPO)[0].busy
    assert standin.call("POST", "heartbeat", {"job_id": job["id"]}).status_code == 200
    assert standin.complete(job).status_code == 200
    done = github.job(job["id"])
    assert (done.status, done.conclusion) == ("completed", "success")
    assert github.runners(REPO) == []  # ephemeral: gone with its job
    assert standin.call("POST", "acquire").status_code == 410
    runs = api(github, "GET", f"/repos/{REPO}/actions/runs?status=completed").json()
    assert [r["id"] for r in runs["workflow_runs"]] == [done.run_id]


def test_a_runner_deleted_during_a_long_poll_gets_410(github: GitHubEmulator) -> None:
    standin = StandIn(register(github, "idle", ["gpu"]))
    assert standin.call("POST", "session").status_code == 200
    path = f"/repos/{REPO}/actions/runners/{standin.config['runner_id']}"
    later = threading.Timer(0.2, lambda: api(github, "DELETE", path))
    later.start()
    assert standin.call("POST", "acquire", wait=5).status_code == 410
    later.join()


def test_a_busy_runner_without_heartbeats_loses_its_job(github: GitHubEmulator) -> None:
    github.runner_timeout = 0.4
    repo = github.repo(REPO)
    alive, silent = (StandIn(register(github, n, ["gpu"])) for n in ("alive", "silent"))
    first, second = repo.queue_job(["gpu"]), repo.queue_job(["gpu"])
    assert alive.take_job()["id"] == first
    assert silent.take_job()["id"] == second
    for _ in range(8):  # 0.8 s: twice the timeout
        assert alive.call("POST", "heartbeat", {"job_id": first}).status_code == 200
        time.sleep(0.1)
    lost = github.job(second)
    assert (lost.status, lost.conclusion) == ("completed", "failure")
    assert github.job(first).status == "in_progress"
    assert [r.name for r in github.runners(REPO)] == ["alive"]
    assert silent.call("POST", "heartbeat").status_code == 410


# -- jobs, runs and re-runs ------------------------------------------------------------------


def test_jobs_and_runs_through_pygithub(github: GitHubEmulator) -> None:
    repo = github.repo(REPO)
    queued = repo.queue_job(["gpu"], name="train")
    running = repo.queue_job(["cpu"], name="eval")
    StandIn(register(github, "cpu-1", ["cpu"])).take_job()
    gh = client(github)
    grepo = gh.get_repo(REPO)
    assert [r.id for r in grepo.get_workflow_runs(status="queued")] == [github.job(queued).run_id]
    [run] = grepo.get_workflow_runs(status="in_progress")
    assert run.id == github.job(running).run_id and run.run_attempt == 1
    [job] = run.jobs()
    assert (job.id, job.name, job.status, job.runner_name) == (
        running,
        "eval",
        "in_progress",
        "cpu-1",
    )
    assert job.labels == ["cpu"]
    got = grepo.get_workflow_job(queued)
    assert (got.status, got.runner_name, got.run_id) == ("queued", None, github.job(queued).run_id)
    assert api(github, "GET", f"/repos/{REPO}/actions/jobs/999999").status_code == 404
    gh.close()


def test_rerun_makes_a_new_attempt_of_a_completed_job(
    github: GitHubEmulator, receiver: Receiver
) -> None:
    github.set_webhook(receiver.url, "s3cret")
    job_id = github.repo(REPO).queue_job(["gpu"], name="train", duration=0.2, conclusion="failure")
    rerun = f"/repos/{REPO}/actions/jobs/{job_id}/rerun"
    r = api(github, "POST", rerun)
    assert (r.status_code, r.json()["message"]) == (
        403,
        "The workflow run containing this job is already running",
    )
    standin = StandIn(register(github, "gpu-1", ["gpu"]))
    standin.complete(standin.take_job())
    run_id = github.job(job_id).run_id
    assert (
        api(github, "GET", f"/repos/{REPO}/actions/runs/{run_id}").json()["conclusion"] == "failure"
    )

    assert api(github, "POST", rerun).status_code == 201
    old, new = github.jobs(REPO)
    assert old.id == job_id and new.id != job_id
    assert (new.run_id, new.run_attempt, new.status) == (run_id, 2, "queued")
    assert (new.name, new.labels, new.duration) == ("train", ("gpu",), 0.2)
    run = api(github, "GET", f"/repos/{REPO}/actions/runs/{run_id}").json()
    assert (run["run_attempt"], run["status"], run["conclusion"]) == (2, "queued", None)
    latest = api(github, "GET", f"/repos/{REPO}/actions/runs/{run_id}/jobs").json()
    assert [j["id"] for j in latest["jobs"]] == [new.id]
    every = api(github, "GET", f"/repos/{REPO}/actions/runs/{run_id}/jobs?filter=all").json()
    assert [(j["id"], j["run_attempt"]) for j in every["jobs"]] == [(job_id, 1), (new.id, 2)]
    github.flush_webhooks()
    assert [(d.action, d.job_id) for d in github.deliveries][-1] == ("queued", new.id)
    again = StandIn(register(github, "gpu-2", ["gpu"]))
    again.complete(again.take_job(), "success")
    assert (
        api(github, "GET", f"/repos/{REPO}/actions/runs/{run_id}").json()["conclusion"] == "success"
    )
    r = api(github, "POST", rerun)  # the first attempt's job: re-run already
    assert r.status_code == 403 and "re-run already" in r.json()["message"]


# -- webhooks ----------------------------------------------------------------------------------


def test_every_job_transition_is_a_signed_webhook(
    github: GitHubEmulator, receiver: Receiver
) -> None:
    github.set_webhook(receiver.url, "s3cret")
    job_id = github.repo(REPO).queue_job(["gpu"], duration=0)
    standin = StandIn(register(github, "gpu-1", ["gpu"]))
    standin.complete(standin.take_job())
    github.flush_webhooks()

    assert [(d.action, d.job_id, d.status) for d in github.deliveries] == [
        ("queued", job_id, 200),
        ("in_progress", job_id, 200),
        ("completed", job_id, 200),
    ]
    payloads = []
    for headers, raw in receiver.received:
        expected = hmac.new(b"s3cret", raw, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["x-hub-signature-256"], f"sha256={expected}")
        assert headers["x-github-event"] == "workflow_job"
        assert headers["user-agent"].startswith("GitHub-Hookshot/")
        assert headers["content-type"] == "application/json"
        payloads.append(json.loads(raw))
    assert [h["x-github-delivery"] for h, _ in receiver.received] == [
        d.id for d in github.deliveries
    ]
    queued, started, completed = payloads
    job = github.job(job_id)
    assert queued["action"] == "queued" and queued["workflow_job"]["runner_name"] is None
    assert (started["workflow_job"]["status"], started["workflow_job"]["runner_name"]) == (
        "in_progress",
        "gpu-1",
    )
    wj = completed["workflow_job"]
    assert (wj["id"], wj["run_id"], wj["run_attempt"], wj["labels"]) == (
        job_id,
        job.run_id,
        1,
        ["gpu"],
    )
    assert (wj["status"], wj["conclusion"], wj["completed_at"]) == (
        "completed",
        "success",
        job.completed_at,
    )
    assert wj["url"] == f"{github.url}/repos/{REPO}/actions/jobs/{job_id}"
    repo = completed["repository"]
    assert (repo["full_name"], repo["name"], repo["owner"]["login"]) == (REPO, "demo", "octo")
    assert repo["html_url"] == f"{github.root_url}/{REPO}"


def test_dropped_webhooks_can_be_redelivered(github: GitHubEmulator, receiver: Receiver) -> None:
    github.set_webhook(receiver.url, "s3cret")
    github.drop_webhooks = 1
    job_id = github.repo(REPO).queue_job(["gpu"])
    github.flush_webhooks()
    [lost] = github.deliveries
    assert (lost.dropped, lost.status, lost.job_id) == (True, None, job_id)
    assert receiver.received == []

    receiver.status = 500  # the receiver fails: recorded, not retried
    github.redeliver(lost.id)
    github.flush_webhooks()
    receiver.status = 200
    github.redeliver(lost.id)
    github.flush_webhooks()
    assert [(d.id, d.redelivery, d.status) for d in github.deliveries[1:]] == [
        (lost.id, True, 500),
        (lost.id, True, 200),
    ]
    assert [raw for _, raw in receiver.received] == [lost.body, lost.body]
    assert {h["x-github-delivery"] for h, _ in receiver.received} == {lost.id}
    with pytest.raises(KeyError):
        github.redeliver("no-such-delivery")


# -- GitHub Apps -------------------------------------------------------------------------------


def signed(app_id: int, key: str, *, iat: int, exp: int) -> str:
    return jwt.encode({"iss": str(app_id), "iat": iat, "exp": exp}, key, algorithm="RS256")


def test_app_jwt_authentication(github: GitHubEmulator) -> None:
    app = github.create_app(42, slug="scaler")
    installation_id = github.install_app(42, repo=REPO, permissions={"administration": "write"})
    integration = GithubIntegration(
        auth=Auth.AppAuth(42, app.private_key_pem), base_url=github.url, retry=None
    )
    installation = integration.get_repo_installation("octo", "demo")
    assert (installation.id, installation.app_id) == (installation_id, 42)
    token = integration.get_access_token(installation_id)
    assert api(github, "GET", f"/repos/{REPO}/actions/runners", token.token).status_code == 200
    assert api(github, "GET", f"/repos/{REPO}/actions/runs", token.token).status_code == 403
    integration.close()

    now = int(time.time())
    path = f"/repos/{REPO}/installation"
    expired = signed(42, app.private_key_pem, iat=now - 700, exp=now - 60)
    r = api(github, "GET", path, expired)
    assert r.status_code == 401 and r.json()["message"].startswith("'Expiration time' claim")
    too_long = signed(42, app.private_key_pem, iat=now, exp=now + 3600)
    assert api(github, "GET", path, too_long).json()["message"].endswith("too far in the future")
    other = github.create_app(43)
    forged = signed(42, other.private_key_pem, iat=now - 60, exp=now + 300)
    r = api(github, "GET", path, forged)
    assert (r.status_code, r.json()["message"]) == (401, "A JSON web token could not be decoded")
    good = signed(42, app.private_key_pem, iat=now - 60, exp=now + 300)
    assert api(github, "GET", path, good).status_code == 200
    assert api(github, "GET", f"/repos/{REPO}", good).status_code == 403  # a JWT is not a token
    assert api(github, "GET", path).status_code == 401  # a token is not a JWT
    assert api(github, "GET", f"/orgs/{ORG}/installation", good).status_code == 404


def test_installation_tokens_expire_and_reach_their_repositories(github: GitHubEmulator) -> None:
    github.create_org(ORG)
    github.create_repo(f"{ORG}/a")
    github.create_repo(f"{ORG}/b", private=True)
    app = github.create_app(7)
    installation_id = github.install_app(7, account=ORG, permissions={"actions": "read"})
    now = int(time.time())
    jwt_token = signed(7, app.private_key_pem, iat=now - 60, exp=now + 300)
    assert (
        api(github, "GET", f"/orgs/{ORG}/installation", jwt_token).json()["id"] == installation_id
    )

    github.installation_token_ttl = 2  # expires_at is whole seconds: 1 to 2 s from now
    path = f"/app/installations/{installation_id}/access_tokens"
    r = api(github, "POST", path, jwt_token, json={"permissions": {"actions": "write"}})
    assert r.status_code == 422
    r = api(github, "POST", path, jwt_token)
    assert r.status_code == 201 and r.json()["permissions"] == {"actions": "read"}
    token, expires_at = r.json()["token"], r.json()["expires_at"]
    repos = api(github, "GET", "/installation/repositories", token).json()
    assert [x["full_name"] for x in repos["repositories"]] == [f"{ORG}/a", f"{ORG}/b"]
    assert api(github, "GET", f"/repos/{ORG}/b/actions/runs", token).status_code == 200
    assert api(github, "GET", f"/repos/{REPO}/actions/runs", token).status_code == 404
    assert api(github, "GET", "/installation/repositories").status_code == 403
    end = datetime.strptime(expires_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    time.sleep(max(end.timestamp() - time.time(), 0) + 0.05)
    r = api(github, "GET", f"/repos/{ORG}/a/actions/runs", token)
    assert (r.status_code, r.json()["message"]) == (401, "Bad credentials")


# -- faults and rate limits ------------------------------------------------------------------


def test_faults_and_rate_limits_reach_the_runner_operations(github: GitHubEmulator) -> None:
    github.inject_fault(
        "POST", "/repos/{owner}/{repo}/actions/runners/generate-jitconfig", status=502
    )
    body = {"name": "x", "runner_group_id": 1, "labels": ["gpu"]}
    jit = f"/repos/{REPO}/actions/runners/generate-jitconfig"
    assert api(github, "POST", jit, json=body).status_code == 502
    assert github.runners(REPO) == []  # the fault answered before anything was registered
    assert api(github, "POST", jit, json=body).status_code == 201

    run_id = github.job(github.repo(REPO).queue_job(["gpu"])).run_id
    jobs = f"/repos/{REPO}/actions/runs/{run_id}/jobs"
    github.inject_fault("GET", jobs, status=503, count=2)
    assert [api(github, "GET", jobs).status_code for _ in range(3)] == [503, 503, 200]
    github.inject_fault("GET", f"/repos/{REPO}/actions/runners", status=429, rate_limited=True)
    r = api(github, "GET", f"/repos/{REPO}/actions/runners")
    assert r.status_code == 429 and r.headers["x-ratelimit-remaining"] == "0"

    core = api(github, "GET", "/rate_limit").json()["resources"]["core"]
    assert core == api(github, "GET", "/rate_limit").json()["rate"]  # asking is free
    assert core["used"] == 6 and core["remaining"] == core["limit"] - 6
    github.exhaust_rate_limit(reset_in=90)
    assert api(github, "GET", "/rate_limit").json()["rate"]["remaining"] == 0
    r = api(github, "DELETE", f"/repos/{REPO}/actions/runners/1")
    assert r.status_code == 403 and r.json()["message"].startswith("API rate limit exceeded")
    assert int(r.headers["x-ratelimit-reset"]) >= int(time.time()) + 80
