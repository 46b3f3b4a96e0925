"""The composition root: each builder reads only the mapping it is handed, and a command
without what it needs stops with a message that says what to set."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from gha_mlops import bootstrap
from gha_mlops.errors import UsageError
from gha_mlops.runners.config import RunnersConfig, load_config
from gha_mlops.testing.fakes import FakeActions, FakeBackend, FakeGitHub, FakeRunnersGitHub


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


def test_a_command_s_adapters_use_what_they_are_given_and_close_it_once() -> None:
    fake = FakeGitHub()
    with bootstrap.build({}, github=fake) as adapters:  # no token needed: nothing is built
        assert adapters.github() is fake and adapters.github() is fake
        assert not adapters.actions().active
        assert not fake.closed
    assert fake.closed
    with pytest.raises(UsageError, match=r"^--from-artifact needs a token"), \
            bootstrap.build({}) as adapters:
        adapters.github(need="--from-artifact")


def test_every_fake_port_is_a_context_manager_that_records_its_closing() -> None:
    for port in (FakeGitHub(), FakeActions(), FakeRunnersGitHub(), FakeBackend()):
        with port as entered:
            assert entered is port and not port.closed
        assert port.closed, type(port).__name__


def _runners_config(tmp_path: Path, port: int = 0) -> RunnersConfig:
    (tmp_path / "runners.yaml").write_text(
        "github: {repo: octo/demo, token_env: TOKEN}\n"
        f"webhook: {{secret_env: SECRET, listen: '127.0.0.1:{port}'}}\n"
        "pools: [{name: gpu, labels: [gpu], image: img, max: 1}]\n")
    return load_config(tmp_path / "runners.yaml", {"TOKEN": "t", "SECRET": "s" * 20})


def test_the_runner_service_closes_its_ports_when_it_stops(tmp_path: Path) -> None:
    github, backend = FakeRunnersGitHub(), FakeBackend()
    service = bootstrap.runner_service(_runners_config(tmp_path), {}, github=github,
                                       backends={"docker": backend}).start()
    assert not github.closed and not backend.closed
    service.stop()
    assert github.closed and backend.closed


def test_a_runner_service_that_cannot_start_closes_the_ports_it_holds(
        tmp_path: Path) -> None:
    with socket.socket() as taken:  # the webhook's port is someone else's
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = _runners_config(tmp_path, taken.getsockname()[1])
        github, backend = FakeRunnersGitHub(), FakeBackend()
        with pytest.raises(OSError):
            bootstrap.runner_service(config, {}, github=github, backends={"docker": backend})
    assert github.closed and backend.closed
