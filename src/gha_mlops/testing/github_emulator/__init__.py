"""A stateful GitHub REST API emulator for tests, validated against GitHub's own OpenAPI
description (npm ``@octokit/openapi``).

    with GitHubEmulator() as gh:
        repo = gh.create_repo("octo/demo")
        repo.commit({"README.md": "hi"})
        client = Github(base_url=gh.url, auth=Auth.Token(gh.token))
        ...
        assert gh.violations == []

See docs/github-emulator.md for what it serves and what it checks.
"""

from ._handlers import HANDLERS as _HANDLERS
from ._server import Fault, GitHubEmulator, LoggedRequest, Violation
from ._spec import ENV_VAR, OpenApiSpec, SpecNotFoundError, find_spec_file, load_spec
from ._state import Repo, Token

IMPLEMENTED_OPERATIONS = frozenset(_HANDLERS)
"""The ``operationId`` of every operation the emulator serves."""

__all__ = [
    "ENV_VAR",
    "IMPLEMENTED_OPERATIONS",
    "Fault",
    "GitHubEmulator",
    "LoggedRequest",
    "OpenApiSpec",
    "Repo",
    "SpecNotFoundError",
    "Token",
    "Violation",
    "find_spec_file",
    "load_spec",
]
