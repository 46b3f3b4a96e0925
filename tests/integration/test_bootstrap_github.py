"""bootstrap.github against the GitHub emulator: the client it builds calls the API the
environment names, with the token it names, and closes like any port."""

from __future__ import annotations

import pytest

from gha_mlops import bootstrap
from gha_mlops.github.port import GitHubError
from gha_mlops.testing.github_emulator import GitHubEmulator

pytest_plugins = ["tests.integration.github_fixtures"]

REPO = "octo/demo"


@pytest.mark.parametrize("name", ["GITHUB_TOKEN", "GH_TOKEN"])
def test_the_client_uses_the_environment_s_api_and_token(github: GitHubEmulator,
                                                         name: str) -> None:
    sha = github.repo(REPO).commit({"model.py": "print(1)\n"}, message="change")
    environ = {name: github.token, "GITHUB_API_URL": github.url}
    with bootstrap.github(environ) as gh:
        assert gh.create_commit_comment(REPO, sha, "hello").body == "hello"
    # Closed, it still works: the next call opens a new connection.
    assert gh.create_commit_comment(REPO, sha, "again").body == "again"
    with pytest.raises(GitHubError) as err, \
            bootstrap.github({name: "wrong", "GITHUB_API_URL": github.url}) as refused:
        refused.create_commit_comment(REPO, sha, "x")
    assert err.value.status == 401
