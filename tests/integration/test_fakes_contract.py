"""The fake GitHub of gha_mlops.testing answers as GitHub does: one scenario runs against the
fake and against the PyGithub adapter talking to the emulator (which checks every exchange
against GitHub's OpenAPI description), and both must give the same answers."""

from __future__ import annotations

from typing import Any

import pytest

from gha_mlops import bootstrap
from gha_mlops.github.port import GitHubAPI, GitHubError
from gha_mlops.testing.fakes import FakeGitHub
from gha_mlops.testing.github_emulator import GitHubEmulator

pytest_plugins = ["tests.integration.github_fixtures"]

REPO = "octo/demo"


def _status(call: Any) -> int | None:
    with pytest.raises(GitHubError) as err:
        call()
    return err.value.status


def scenario(gh: GitHubAPI, number: int, sha: str) -> list[object]:
    """What a report's publishing asks of GitHub, and the errors it must tell apart."""
    first = gh.create_issue_comment(REPO, number, "one")
    gh.create_issue_comment(REPO, number, "other")
    edited = gh.edit_issue_comment(REPO, number, first.id, "two")
    return [
        first.body, edited.id == first.id, edited.body,
        [c.body for c in gh.issue_comments(REPO, number)],
        gh.create_commit_comment(REPO, sha, "on the commit").body,
        gh.create_check_run(REPO, sha, name="gha-mlops", conclusion="success", title="t",
                            summary="s").startswith("http"),
        gh.create_status(REPO, sha, state="failure", context="c", description="d"),
        len(gh.commit_files(REPO, "gha-mlops-assets", {"a/b.png": b"png"}, "plots")),
        gh.pull_head_sha(REPO, number) == sha,
        _status(lambda: gh.edit_issue_comment(REPO, number, 987654, "x")),
        _status(lambda: gh.pull_head_sha(REPO, 9999)),
        _status(lambda: gh.download_artifact(REPO, 424242)),
    ]


def test_the_fake_github_answers_as_the_real_adapter_does(github: GitHubEmulator) -> None:
    sha = github.repo(REPO).commit({"model.py": "print(1)\n"}, message="change",
                                   branch="feature")
    number = github.repo(REPO).create_pull(head="feature")
    with bootstrap.github({"GITHUB_TOKEN": github.token,
                           "GITHUB_API_URL": github.url}) as real:
        expected = scenario(real, number, sha)
    with FakeGitHub(heads={number: sha}) as fake:
        assert scenario(fake, number, sha) == expected
    assert expected[-3:] == [404, 404, 404]
