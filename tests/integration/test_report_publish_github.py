"""Report publishing through the real PyGithub adapter against the GitHub emulator (every
request and response checked against GitHub's OpenAPI description)."""

from __future__ import annotations

import time
from collections.abc import Mapping

import pytest

from gha_mlops.github.port import GitHubError
from gha_mlops.github.pygithub import connect
from gha_mlops.reporting.markdown import marker
from gha_mlops.reporting.publish import Target, publish
from gha_mlops.testing.github_emulator import GitHubEmulator

pytest_plugins = ["tests.integration.github_fixtures"]

REPO = "octo/demo"


def render(urls: Mapping[str, str]) -> str:
    return "## report\n" + "\n".join(f"![{k}]({v})" for k, v in sorted(urls.items()))


@pytest.fixture
def pr(github: GitHubEmulator) -> Target:
    repo = github.repo(REPO)
    sha = repo.commit({"model.py": "print(1)\n"}, message="change", branch="feature")
    number = repo.create_pull(head="feature")
    return Target(REPO, "pull_request", sha=sha, number=number)


def test_sticky_comment_check_run_and_images(github: GitHubEmulator, pr: Target) -> None:
    port = connect(github.token, github.url)
    assert pr.number is not None
    for i in range(250):  # a busy pull request: the marker hides on the last page
        port.create_issue_comment(REPO, pr.number, f"comment {i}")
    started = time.perf_counter()
    first = publish(port, pr, render, report_id="main", passed=True, headline="all gates pass",
                    images={"metrics.png": b"\x89PNG\r\n\x1a\nA"},
                    server_url=github.root_url)
    elapsed = time.perf_counter() - started
    second = publish(port, pr, lambda _: "## report v2", report_id="main", passed=False,
                     headline="accuracy dropped")
    comments = github.issue_comments(REPO, pr.number)
    ours = [c for c in comments if marker("main") in c.body]
    assert len(comments) == 251 and len(ours) == 1
    assert first.comment_created and not second.comment_created
    assert ours[0].body.endswith("## report v2")
    assert [(c.conclusion, c.head_sha) for c in github.check_runs(REPO)] == [
        ("success", pr.sha), ("failure", pr.sha)]
    url = first.image_urls["metrics.png"]
    assert f"/raw/{first.assets_commit}/main/{pr.sha[:12]}/metrics.png" in url
    assert elapsed < 5  # no client-side throttling (PyGithub's default would add seconds)


def test_a_token_without_checks_write_falls_back_to_a_status(github: GitHubEmulator,
                                                            pr: Target) -> None:
    github.add_token("limited", permissions={"pull_requests": "write", "issues": "write",
                                             "statuses": "write", "contents": "read",
                                             "checks": "read"})
    out = publish(connect("limited", github.url), pr, render, report_id="main", passed=False,
                  headline="latency over budget")
    assert out.status_instead_of_check
    [status] = github.statuses(REPO)
    assert (status.state, status.context) == ("failure", "gha-mlops report")


def test_missing_permission_names_what_to_grant(github: GitHubEmulator, pr: Target) -> None:
    github.add_token("read-only", permissions={"pull_requests": "read", "issues": "read",
                                               "contents": "read"})
    with pytest.raises(GitHubError) as err:
        publish(connect("read-only", github.url), pr, render, report_id="main", passed=True,
                headline="ok")
    assert err.value.status == 403
    assert "pull-requests: write" in (err.value.hint or "")


def test_a_bad_token_and_a_spent_rate_limit_are_clear(github: GitHubEmulator,
                                                     pr: Target) -> None:
    with pytest.raises(GitHubError) as bad:
        publish(connect("nope", github.url), pr, render, report_id="main", passed=True,
                headline="ok")
    assert bad.value.status == 401 and "GITHUB_TOKEN" in (bad.value.hint or "")
    github.exhaust_rate_limit(reset_in=120)
    with pytest.raises(GitHubError) as limited:
        publish(connect(github.token, github.url), pr, render, report_id="main", passed=True,
                headline="ok")
    assert "rate limit" in limited.value.message and "resets in" in (limited.value.hint or "")


def test_a_flaky_read_is_retried_and_a_failed_write_is_not(github: GitHubEmulator,
                                                           pr: Target) -> None:
    port = connect(github.token, github.url)
    github.inject_fault("GET", "/repos/{owner}/{repo}/issues/{issue_number}/comments",
                        status=502, count=1)
    publish(port, pr, render, report_id="main", passed=True, headline="ok")  # GET retried
    assert len(github.issue_comments(REPO, pr.number or 0)) == 1
    github.inject_fault("POST", "/repos/{owner}/{repo}/check-runs", status=502, count=1)
    with pytest.raises(GitHubError, match="502"):
        publish(port, pr, lambda _: "v2", report_id="main", passed=True, headline="ok")
    assert len(github.check_runs(REPO)) == 1  # the POST was not repeated
