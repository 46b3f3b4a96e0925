"""The composition root: each builder reads only the mapping it is handed, and a command
without what it needs stops with a message that says what to set."""

from __future__ import annotations

import pytest

from gha_mlops import bootstrap
from gha_mlops.errors import UsageError


@pytest.mark.parametrize("environ", [{}, {"GITHUB_TOKEN": "", "GH_TOKEN": ""}])
def test_github_without_a_token_says_which_variable_to_pass(environ: dict[str, str],
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "the-process-own")  # never read: only `environ` is
    with pytest.raises(UsageError) as err:
        bootstrap.github(environ)
    assert err.value.message == "--publish needs a token: GITHUB_TOKEN is not set"
    assert err.value.hint == "pass it to the step: env: GITHUB_TOKEN: ${{ github.token }}"
    with pytest.raises(UsageError, match=r"^--from-artifact needs a token"):
        bootstrap.github(environ, need="--from-artifact")


def test_the_github_facts_come_from_the_mapping_with_github_com_defaults() -> None:
    assert bootstrap.github_token({"GH_TOKEN": "b"}) == "b"
    assert bootstrap.github_token({"GITHUB_TOKEN": "a", "GH_TOKEN": "b"}) == "a"
    assert bootstrap.github_token({"GITHUB_TOKEN": "", "GH_TOKEN": ""}) is None
    assert bootstrap.github_api_url({}) == "https://api.github.com"
    assert bootstrap.github_api_url({"GITHUB_API_URL": "https://ghe/api/v3"}) == \
        "https://ghe/api/v3"
    assert bootstrap.github_server_url({}) == "https://github.com"
