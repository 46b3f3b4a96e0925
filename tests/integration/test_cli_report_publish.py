"""`gha-mlops report --publish` through the real CLI into the GitHub emulator, for a
`pull_request` event whose payload is GitHub's own example (npm @octokit/webhooks-examples),
re-pointed at the emulator's repository, pull request and head commit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gha_mlops.testing.github_emulator import GitHubEmulator
from tests.integration.test_cli_report import _cli, _ok, ws  # noqa: F401 - the fixture

pytest_plugins = ["tests.integration.github_fixtures"]

REPO = "octo/demo"
EXAMPLES = (Path(__file__).resolve().parents[2] / ".ci/npm/node_modules/@octokit/"
            "webhooks-examples/api.github.com/index.json")


def _pull_request_payload(number: int, sha: str) -> dict[str, object]:
    if not EXAMPLES.is_file():
        pytest.fail(f"{EXAMPLES} is missing: `make test` installs it (npm ci --prefix .ci/npm)")
    hooks = json.loads(EXAMPLES.read_text())
    [spec] = [h for h in hooks if h["name"] == "pull_request"]
    payload: dict[str, object] = next(e for e in spec["examples"] if e["action"] == "opened")
    pull = payload["pull_request"]
    assert isinstance(pull, dict)
    pull["number"] = number
    pull["head"]["sha"] = sha
    payload["number"] = number
    payload["repository"]["full_name"] = REPO  # type: ignore[index]
    return payload


def _env(github: GitHubEmulator, event: Path, tmp: Path, **extra: str) -> dict[str, str]:
    summary = tmp / "summary.md"
    summary.touch()
    return {"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "pull_request",
            "GITHUB_EVENT_PATH": str(event), "GITHUB_REPOSITORY": REPO,
            "GITHUB_API_URL": github.url, "GITHUB_SERVER_URL": github.root_url,
            "GITHUB_TOKEN": github.token, "GITHUB_RUN_ID": "4242",
            "GITHUB_STEP_SUMMARY": str(summary), **extra}


def test_a_pull_request_gets_one_comment_a_check_and_plots(
        ws: Path, github: GitHubEmulator, tmp_path: Path) -> None:  # noqa: F811
    repo = github.repo(REPO)
    sha = repo.commit({"train.py": "x"}, branch="feature")
    number = repo.create_pull(head="feature")
    event = tmp_path / "event.json"
    event.write_text(json.dumps(_pull_request_payload(number, sha)))
    env = _env(github, event, tmp_path)

    _ok(_cli(ws, "run", "--set", "train.acc=0.96"))
    first = _ok(_cli(ws, "report", "--baseline", "latest~1", "--publish", "--report-id",
                     "pr", env=env))
    assert "created comment" in first.stdout and "check run" in first.stdout
    _ok(_cli(ws, "run", "--set", "train.acc=0.9469"))
    second = _cli(ws, "report", "--baseline", "latest~2", "--publish", "--report-id", "pr",
                  env=env)
    assert second.returncode == 1  # the gate failed, and the PR says so
    assert "updated comment" in second.stdout

    [comment] = github.issue_comments(REPO, number)
    assert comment.body.startswith("<!-- gha-mlops-report:pr -->")
    assert "1 of 2 gates failed" in comment.body and "dropped 0.0031" in comment.body
    assert f"{github.root_url}/{REPO}/raw/" in comment.body  # plots by commit-SHA URL
    assert [(c.conclusion, c.head_sha) for c in github.check_runs(REPO)] == [
        ("success", sha), ("failure", sha)]


def test_publishing_without_a_token_is_a_clear_error(
        ws: Path, github: GitHubEmulator, tmp_path: Path) -> None:  # noqa: F811
    repo = github.repo(REPO)
    sha = repo.commit({"a": "b"}, branch="feature")
    event = tmp_path / "event.json"
    event.write_text(json.dumps(_pull_request_payload(repo.create_pull(head="feature"), sha)))
    env = _env(github, event, tmp_path, GITHUB_TOKEN="")
    _ok(_cli(ws, "run", "--set", "train.acc=0.96"))
    proc = _cli(ws, "report", "--baseline", "latest~1", "--publish", env=env)
    assert proc.returncode == 2
    assert "GITHUB_TOKEN is not set" in proc.stderr and "github.token" in proc.stderr
