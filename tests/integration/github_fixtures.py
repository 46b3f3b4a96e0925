"""The GitHub API emulator as pytest fixtures. Import them where needed (not a conftest):

    pytest_plugins = ["tests.integration.github_fixtures"]

``github`` gives a running ``GitHubEmulator`` with one repository, ``octo/demo``, that has a
commit on ``main``; at teardown it fails the test if any request or response departed from
GitHub's OpenAPI description (tests that provoke violations on purpose take them with
``gh.take_violations()``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gha_mlops.testing.github_emulator import GitHubEmulator, OpenApiSpec, load_spec


@pytest.fixture(scope="session")
def github_spec() -> OpenApiSpec:
    """GitHub's OpenAPI description, parsed once per test session."""
    return load_spec()


@pytest.fixture
def github(github_spec: OpenApiSpec) -> Iterator[GitHubEmulator]:
    """A fresh emulator with ``octo/demo`` (one commit on ``main``); no violations allowed."""
    with GitHubEmulator(spec=github_spec) as gh:
        gh.create_repo("octo/demo").commit({"README.md": "# demo\n"}, message="Initial commit")
        yield gh
        violations = gh.take_violations()
    if violations:
        pytest.fail(
            "the GitHub emulator saw departures from GitHub's OpenAPI description:\n"
            + "\n".join(f"  {v}" for v in violations),
            pytrace=False,
        )
