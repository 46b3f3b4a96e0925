"""The Deployments port over PyGithub, against the GitHub emulator (which checks every request
and answer against GitHub's OpenAPI description): a rollout's deployment and its statuses in
order, what GitHub refuses (a token without the permission, status checks, a bad branch
policy), environments' protection rules, and the fake answering as the adapter does."""

from __future__ import annotations

from typing import Any

import pytest
from github import Auth, Github, GithubException
from github.EnvironmentDeploymentBranchPolicy import EnvironmentDeploymentBranchPolicyParams
from github.EnvironmentProtectionRuleReviewer import ReviewerParams

from gha_mlops import bootstrap
from gha_mlops.github.port import DeploymentsPort, EnvironmentInfo, GitHubError
from gha_mlops.testing.fakes import FakeGitHub
from gha_mlops.testing.github_emulator import GitHubEmulator

pytest_plugins = ["tests.integration.github_fixtures"]

REPO = "octo/demo"


def _port(gh: GitHubEmulator, token: str | None = None) -> Any:
    return bootstrap.github({"GITHUB_TOKEN": token or gh.token, "GITHUB_API_URL": gh.url})


def _client(gh: GitHubEmulator) -> Github:
    return Github(base_url=gh.url, auth=Auth.Token(gh.token), seconds_between_requests=None,
                  seconds_between_writes=None, retry=None)


def test_a_rollout_records_a_deployment_and_its_statuses_in_order(
        github: GitHubEmulator) -> None:
    sha = github.repo(REPO).refs["refs/heads/main"]
    run = "http://github.invalid/octo/demo/actions/runs/7"
    with _port(github) as port:
        # A commit status that failed: the workflow's own gates decide, not GitHub's checks.
        port.create_status(REPO, sha, state="failure", context="lint", description="no")
        first = port.create_deployment(REPO, ref=sha, environment="staging",
                                       description="digits 1.0.0", production=False,
                                       payload={"model": "digits", "version": "1.0.0"})
        port.create_deployment_status(REPO, first.id, state="in_progress",
                                      description="rolling out", log_url=run)
        port.create_deployment_status(REPO, first.id, state="success", description="x" * 300,
                                      environment_url="https://staging.example.com",
                                      log_url=run)
        second = port.create_deployment(REPO, ref="main", environment="staging",
                                        description="digits 1.1.0", production=False,
                                        payload={})
        port.create_deployment_status(REPO, second.id, state="success", description="done")
    assert (first.environment, second.environment) == ("staging", "staging")
    assert first.url.endswith(f"/repos/{REPO}/deployments/{first.id}")
    one, two = github.deployments(REPO)
    assert (one.sha, one.ref, one.task, one.transient, one.production) == (
        sha, sha, "deploy", False, False)
    assert one.payload == {"model": "digits", "version": "1.0.0"}
    # In order; GitHub's 140 characters; the newer success retires the older (auto_inactive).
    assert [s.state for s in one.statuses] == ["in_progress", "success", "inactive"]
    assert len(one.statuses[1].description) == 140
    assert one.statuses[1].environment_url == "https://staging.example.com"
    assert one.statuses[1].log_url == run
    assert [s.state for s in two.statuses] == ["success"]
    # What a user's client reads back, newest first, with target_url following log_url.
    listed = list(_client(github).get_repo(REPO).get_deployment(one.id).get_statuses())
    assert [s.state for s in listed] == ["inactive", "success", "in_progress"]
    assert listed[1].target_url == run


def test_a_token_without_the_permission_is_told_which_one(github: GitHubEmulator) -> None:
    github.add_token("ghs_contents_only", permissions={"contents": "write"})
    with _port(github, "ghs_contents_only") as port:
        with pytest.raises(GitHubError) as err:
            port.create_deployment(REPO, ref="main", environment="production",
                                   description="d", payload={}, production=True)
        assert err.value.status == 403 and err.value.permission == "deployments: write"
        assert "deployments: write" in str(err.value.hint)
        with pytest.raises(GitHubError) as err:
            port.environment(REPO, "production")
        assert err.value.permission == "actions: read"
    assert github.deployments(REPO) == []


def test_environments_report_their_protection_rules(github: GitHubEmulator) -> None:
    repo = _client(github).get_repo(REPO)
    # Set up through the API, as a repository admin would (PyGithub's own call).
    repo.create_environment(
        "production", wait_timer=30,
        reviewers=[ReviewerParams("User", 1), ReviewerParams("Team", 2)],
        deployment_branch_policy=EnvironmentDeploymentBranchPolicyParams(
            protected_branches=True, custom_branch_policies=False))
    repo.create_environment("qa")
    with pytest.raises(GithubException) as refused:  # both policies at once: GitHub's 422
        repo.create_environment("bad", deployment_branch_policy=(
            EnvironmentDeploymentBranchPolicyParams(True, True)))
    assert refused.value.status == 422
    with _port(github) as port:
        assert port.environment(REPO, "production") == EnvironmentInfo("production", 2, 30, True)
        assert port.environment(REPO, "Production") == EnvironmentInfo("production", 2, 30, True)
        assert port.environment(REPO, "qa") == EnvironmentInfo("qa", 0, 0, False)
        assert port.environment(REPO, "nowhere") is None
        assert port.environment(REPO, "a/../../b") is None  # one path segment, quoted
        port.create_deployment(REPO, ref="main", environment="review/pr-1", description="",
                               payload={}, production=False)
        # A deployment to an environment the repository lacks creates it, as on GitHub.
        assert port.environment(REPO, "review/pr-1") == EnvironmentInfo(
            "review/pr-1", 0, 0, False)
    assert [e.name for e in repo.get_environments()] == ["production", "qa", "review/pr-1"]


def test_github_refuses_a_deployment_its_status_checks_block(github: GitHubEmulator) -> None:
    """What the adapter's required_contexts=[] and auto_merge=False avoid."""
    main = github.repo(REPO).refs["refs/heads/main"]
    github.repo(REPO).commit({"x": "1"}, branch="old")
    github.repo(REPO).commit({"y": "2"})  # main moves on: branch old is behind it
    with _port(github) as port:
        port.create_status(REPO, main, state="failure", context="ci", description="red")
    repo = _client(github).get_repo(REPO)
    for ref, extra in ((main, {}), ("old", {"required_contexts": []})):
        with pytest.raises(GithubException) as err:
            repo.create_deployment(ref, environment="staging", **extra)
        assert err.value.status == 409, ref
    with _port(github) as port:  # the branch behind main, as it is: nothing merged
        ref = port.create_deployment(REPO, ref="old", environment="staging",
                                     description="", payload={}, production=False)
    [deployment] = github.deployments(REPO)
    assert deployment.id == ref.id and deployment.sha == github.repo(REPO).refs[
        "refs/heads/old"]


def test_a_repository_name_that_leaves_its_path_is_refused_before_any_request(
        github: GitHubEmulator) -> None:
    before = len(github.requests)
    with _port(github) as port:
        for name in ("octo/../admin", "octo/demo/../x", "octo", "octo/demo?x=1"):
            with pytest.raises(GitHubError, match="not a repository name"):
                port.create_deployment(name, ref="main", environment="e", description="",
                                       payload={}, production=False)
    assert len(github.requests) == before


def _scenario(port: DeploymentsPort, sha: str) -> list[object]:
    ref = port.create_deployment(REPO, ref=sha, environment="staging", description="d",
                                 payload={"v": 1}, production=False)
    port.create_deployment_status(REPO, ref.id, state="in_progress", description="go")
    port.create_deployment_status(REPO, ref.id, state="success", description="ok",
                                  environment_url="https://s.example.com")
    with pytest.raises(GitHubError) as err:
        port.create_deployment_status(REPO, 987654321, state="failure", description="x")
    return [ref.environment, port.environment(REPO, "staging"),
            port.environment(REPO, "nowhere"), err.value.status]


def test_the_fake_answers_as_the_adapter_does(github: GitHubEmulator) -> None:
    sha = github.repo(REPO).refs["refs/heads/main"]
    with _port(github) as real:
        expected = _scenario(real, sha)
    with FakeGitHub() as fake:
        assert _scenario(fake, sha) == expected
        [statuses] = fake.deployment_statuses.values()
        assert [s["state"] for s in statuses] == ["in_progress", "success"]
    assert expected == ["staging", EnvironmentInfo("staging", 0, 0, False), None, 404]
    with FakeGitHub(deployments_allowed=False) as fake, pytest.raises(GitHubError) as err:
        fake.create_deployment(REPO, ref=sha, environment="e", description="", payload={},
                               production=False)
    assert err.value.permission == "deployments: write"


@pytest.mark.parametrize(("data", "expected"), [
    ({"name": "p", "protection_rules": [{"type": "wait_timer", "wait_timer": True},
                                        {"type": "required_reviewers", "reviewers": "all"},
                                        {"type": "branch_policy"}, {"type": "future_rule"}]},
     EnvironmentInfo("p", 0, 0, True)),
    ({"name": "p", "protection_rules": None, "deployment_branch_policy": None},
     EnvironmentInfo("p", 0, 0, False)),
    ([], None), ({"protection_rules": "wait_timer"}, None), ({"protection_rules": [1]}, None),
])
def test_an_environment_answer_is_read_strictly(data: object,
                                                expected: EnvironmentInfo | None) -> None:
    """What GitHub answers is checked, never guessed at: odd values count as no rule, a shape
    that is not GitHub's is an error."""
    from gha_mlops.github.pygithub import environment_info

    if expected is None:
        with pytest.raises(GitHubError, match="environment 'p'"):
            environment_info("p", data)
    else:
        assert environment_info("p", data) == expected
