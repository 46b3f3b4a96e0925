"""The RunnersPort adapter (gha_mlops.github.runners) against the GitHub emulator, through
PyGithub: repository and organization scope, with a token and as a GitHub App (installation
tokens renewed), errors, retries and rate limits."""

from __future__ import annotations

import base64
import json
import time

import pytest

from gha_mlops.errors import ConfigError
from gha_mlops.github.port import GitHubError, RunnerBusyError, RunnersPort
from gha_mlops.github.runners import PyGitHubRunners, RunnerScope, connect_runners
from gha_mlops.testing.github_emulator import GitHubEmulator
from tests.integration.test_github_emulator_runners import StandIn

pytest_plugins = ["tests.integration.github_fixtures"]

REPO = "octo/demo"
ORG = "octo-org"
RUNNERS = f"/repos/{REPO}/actions/runners"


def as_token(gh: GitHubEmulator, scope: RunnerScope, token: str | None = None) -> PyGitHubRunners:
    return connect_runners(scope, token=token or gh.token, base_url=gh.url)


def as_app(gh: GitHubEmulator, scope: RunnerScope, **install: str) -> PyGitHubRunners:
    app = gh.create_app(77, slug="scaler")
    gh.install_app(77, **install)
    return connect_runners(scope, app_id=77, private_key=app.private_key_pem, base_url=gh.url)


def standin(config: str) -> StandIn:
    return StandIn(json.loads(base64.b64decode(config)))


def calls(gh: GitHubEmulator, operation: str) -> list[int]:
    """The statuses of every request made so far to ``operation``."""
    return [r.status for r in gh.requests if r.operation_id == operation]


def queued(port: RunnersPort, repo: str) -> list[int]:
    return [j.id for j in port.queued_jobs() if j.repo == repo]


def exercise(gh: GitHubEmulator, port: RunnersPort, repo: str) -> None:
    """Every RunnersPort method, as the autoscaler uses them, on ``repo``'s jobs."""
    demo = gh.repo(repo)
    waiting = demo.queue_job(["self-hosted", "gpu"], duration=0)
    other = demo.queue_job(["cpu"])
    jit = port.generate_jitconfig("gpu-1", ("self-hosted", "gpu"))
    assert [(r.id, r.name, r.status, r.busy, r.labels) for r in port.list_runners()] == [
        (jit.runner_id, "gpu-1", "offline", False, ("self-hosted", "gpu"))
    ]
    assert queued(port, repo) == [waiting, other]

    runner = standin(jit.encoded)
    job = runner.take_job()
    assert [(r.status, r.busy) for r in port.list_runners()] == [("online", True)]
    with pytest.raises(RunnerBusyError) as busy:
        port.delete_runner(jit.runner_id)
    assert busy.value.status == 422
    # a second job of the same (now in progress) run still waits
    later = demo.queue_job(["cpu"], name="eval", run_id=gh.job(waiting).run_id)
    assert queued(port, repo) == [other, later]
    got = port.get_job(repo, waiting)
    assert (got.status, got.runner_name, got.run_attempt, got.labels) == (
        "in_progress",
        "gpu-1",
        1,
        ("self-hosted", "gpu"),
    )
    assert got.created_at and got.started_at and got.completed_at is None

    runner.complete(job, "failure")
    assert port.list_runners() == []
    port.delete_runner(jit.runner_id)  # gone already: quietly
    assert port.get_job(repo, waiting).conclusion == "failure"
    with pytest.raises(GitHubError) as running:  # `later` still runs in this run
        port.rerun_job(repo, waiting)
    assert running.value.status == 403 and running.value.permission is None
    assert "already running" in (running.value.hint or "")


def test_repository_scope_with_a_token(github: GitHubEmulator) -> None:
    port = as_token(github, RunnerScope(repo=REPO))
    assert port.rate_budget() is None  # nothing asked yet
    exercise(github, port, REPO)
    budget = port.rate_budget()
    assert budget is not None and budget.limit == 5000 and 0 < budget.remaining < 5000
    assert budget.reset > time.time()

    one = github.repo(REPO).queue_job(["gpu"], duration=0, conclusion="failure")
    runner = standin(port.generate_jitconfig("gpu-2", ("gpu",)).encoded)
    runner.complete(runner.take_job())
    port.rerun_job(REPO, one)
    new = github.jobs(REPO)[-1]
    assert (new.name, new.run_attempt, new.status) == ("train", 2, "queued")
    assert new.id in [j.id for j in port.queued_jobs()]


def test_organization_scope_with_a_token(github: GitHubEmulator) -> None:
    github.create_org(ORG)
    for name in ("models", "data", "web"):
        github.create_repo(f"{ORG}/{name}")
    web = github.repo(f"{ORG}/web").queue_job(["arm64"])  # not for the gpu runner
    port = as_token(github, RunnerScope(org=ORG))
    exercise(github, port, f"{ORG}/models")
    assert web in [j.id for j in port.queued_jobs()]
    assert calls(github, "repos/list-for-org") == [200]  # listed once, then reused
    github.inject_fault("GET", f"/repos/{ORG}/web/actions/runs", status=404, message="Not Found")
    assert web not in [j.id for j in port.queued_jobs()]  # gone, it seems: skipped
    assert web in [j.id for j in port.queued_jobs()]
    assert calls(github, "repos/list-for-org") == [200, 200]  # and the list is made again

    watched = as_token(github, RunnerScope(org=ORG, repos=(f"{ORG}/web",)))
    assert [j.id for j in watched.queued_jobs()] == [web]
    assert github.runners(ORG) == [] and github.runners(REPO) == []


def test_repository_scope_as_an_app_renews_its_token(github: GitHubEmulator) -> None:
    github.installation_token_ttl = 21  # PyGithub renews 20 s before the end: after 1 s
    port = as_app(github, RunnerScope(repo=REPO), repo=REPO)
    exercise(github, port, REPO)
    time.sleep(1.1)
    assert port.list_runners() == []
    tokens = calls(github, "apps/create-installation-access-token")
    assert len(tokens) >= 2 and set(tokens) == {201}
    assert calls(github, "apps/get-repo-installation") == [200]
    assert not [r for r in github.requests if r.status == 401]


def test_a_token_github_refuses_is_renewed_once(github: GitHubEmulator) -> None:
    port = as_app(github, RunnerScope(repo=REPO), repo=REPO)
    port.list_runners()
    github.expire_installation_tokens()  # revoked, or our clock is behind GitHub's
    assert port.list_runners() == []
    refused = [r for r in github.requests if r.status == 401]
    assert [r.operation_id for r in refused] == ["actions/list-self-hosted-runners-for-repo"]
    assert len(calls(github, "apps/create-installation-access-token")) == 2


def test_organization_scope_as_an_app(github: GitHubEmulator) -> None:
    github.create_org(ORG)
    github.create_repo(f"{ORG}/models")
    port = as_app(github, RunnerScope(org=ORG), account=ORG)
    exercise(github, port, f"{ORG}/models")
    assert calls(github, "apps/get-org-installation") == [200]
    assert calls(github, "apps/list-repos-accessible-to-installation") == [200]


def test_an_app_with_a_wrong_key_or_no_installation(github: GitHubEmulator) -> None:
    github.create_app(77)
    key = github.create_app(78).private_key_pem  # 77 is not installed
    for app_id, status, hint in ((77, 401, "clock"), (78, 404, "")):
        with pytest.raises(GitHubError) as refused:
            connect_runners(
                RunnerScope(repo=REPO), app_id=app_id, private_key=key, base_url=github.url
            )
        assert refused.value.status == status and hint in (refused.value.hint or "")


def test_missing_permissions_are_named(github: GitHubEmulator) -> None:
    github.create_org(ORG)
    github.add_token("ghs_jobs", permissions={"actions": "read", "administration": "read"})
    repo_port = as_token(github, RunnerScope(repo=REPO), "ghs_jobs")
    org_port = as_token(github, RunnerScope(org=ORG), "ghs_jobs")
    assert repo_port.list_runners() == []
    job = github.repo(REPO).queue_job(["gpu"])
    for attempt, need in (
        (lambda: repo_port.generate_jitconfig("x", ("gpu",)), "administration: write"),
        (
            lambda: org_port.generate_jitconfig("x", ("gpu",)),
            "organization_self_hosted_runners: write",
        ),
        (lambda: org_port.list_runners(), "organization_self_hosted_runners: read"),
        (lambda: repo_port.rerun_job(REPO, job), "actions: write"),
    ):
        with pytest.raises(GitHubError) as refused:
            attempt()
        assert (refused.value.status, refused.value.permission) == (403, need)
        assert f"`{need}`" in (refused.value.hint or "")


def test_reads_and_deletes_are_retried_registrations_never(github: GitHubEmulator) -> None:
    port = as_token(github, RunnerScope(repo=REPO))
    github.inject_fault("GET", RUNNERS, status=502, count=2)
    assert port.list_runners() == []
    assert calls(github, "actions/list-self-hosted-runners-for-repo") == [502, 502, 200]

    jit = port.generate_jitconfig("gpu-1", ("gpu",))
    github.inject_fault("DELETE", f"{RUNNERS}/{jit.runner_id}", status=503)
    port.delete_runner(jit.runner_id)
    assert calls(github, "actions/delete-self-hosted-runner-from-repo") == [503, 204]

    github.inject_fault("POST", f"{RUNNERS}/generate-jitconfig", status=502)
    with pytest.raises(GitHubError) as lost:
        port.generate_jitconfig("gpu-2", ("gpu",))
    assert lost.value.status == 502 and "list the runners" in (lost.value.hint or "")
    assert calls(github, "actions/generate-runner-jitconfig-for-repo") == [201, 502]
    port.generate_jitconfig("gpu-2", ("gpu",))
    with pytest.raises(GitHubError) as taken:
        port.generate_jitconfig("gpu-2", ("gpu",))
    assert taken.value.status == 409 and "exists already" in (taken.value.hint or "")


def test_a_spent_rate_limit_names_the_reset(github: GitHubEmulator) -> None:
    port = as_token(github, RunnerScope(repo=REPO))
    github.exhaust_rate_limit(reset_in=120)
    with pytest.raises(GitHubError) as limited:
        port.list_runners()
    err = limited.value
    assert err.status == 403 and "rate limit" in err.message
    reset = time.strftime("%H:%M", time.gmtime(time.time() + 120))
    assert f"resets at {reset}" in err.message and "resets in" in (err.hint or "")
    budget = port.rate_budget()
    assert budget is not None and budget.remaining == 0

    github.inject_fault("GET", RUNNERS, status=429, rate_limited=True)
    github.exhaust_rate_limit(reset_in=-1)  # the limit is back; the fault answers next
    with pytest.raises(GitHubError) as secondary:
        port.list_runners()
    assert secondary.value.status == 429 and "resets at" in secondary.value.message


def test_scope_and_credentials_are_checked(github: GitHubEmulator) -> None:
    for bad in (
        lambda: RunnerScope(),
        lambda: RunnerScope(repo=REPO, org=ORG),
        lambda: RunnerScope(repo="demo"),
        lambda: RunnerScope(repo=REPO, repos=("octo/x",)),
        lambda: connect_runners(RunnerScope(repo=REPO), base_url=github.url),
        lambda: connect_runners(RunnerScope(repo=REPO), token="t", app_id=1, private_key="k"),
    ):
        with pytest.raises(ConfigError):
            bad()
    assert RunnerScope(org=ORG, repos=[f"{ORG}/a"]).repos == (f"{ORG}/a",)  # type: ignore[arg-type]
