"""A stateful GitHub REST API emulator for tests, validated against GitHub's own OpenAPI
description (npm ``@octokit/openapi``).

    with GitHubEmulator() as gh:
        repo = gh.create_repo("octo/demo")
        repo.commit({"README.md": "hi"})
        client = Github(base_url=gh.url, auth=Auth.Token(gh.token))
        ...
        assert gh.violations == []

It also stands in for what self-hosted runners need: just-in-time runner registration, jobs
that runner stand-ins take over ``{root_url}/_runner/...``, signed ``workflow_job`` webhooks,
organizations and GitHub Apps; deployments, their statuses and environments; issues and
workflows with their ``workflow_dispatch``. See
docs/github-emulator.md for what it serves and checks.
"""

from ._handlers import HANDLERS as _HANDLERS
from ._server import Fault, GitHubEmulator, LoggedRequest, Violation
from ._spec import (
    ENV_VAR,
    WEBHOOK_EXAMPLES_ENV_VAR,
    OpenApiSpec,
    SpecNotFoundError,
    find_spec_file,
    find_webhook_examples_file,
    load_spec,
)
from ._state import (
    App,
    Deployment,
    DeploymentStatus,
    Dispatch,
    Environment,
    Installation,
    Issue,
    Job,
    Org,
    Repo,
    Reviewer,
    Runner,
    Token,
    Workflow,
)
from ._webhooks import Delivery

IMPLEMENTED_OPERATIONS = frozenset(_HANDLERS)
"""The ``operationId`` of every operation the emulator serves."""

__all__ = [
    "ENV_VAR",
    "IMPLEMENTED_OPERATIONS",
    "WEBHOOK_EXAMPLES_ENV_VAR",
    "App",
    "Delivery",
    "Deployment",
    "DeploymentStatus",
    "Dispatch",
    "Environment",
    "Fault",
    "GitHubEmulator",
    "Installation",
    "Issue",
    "Job",
    "LoggedRequest",
    "OpenApiSpec",
    "Org",
    "Repo",
    "Reviewer",
    "Runner",
    "SpecNotFoundError",
    "Token",
    "Violation",
    "Workflow",
    "find_spec_file",
    "find_webhook_examples_file",
    "load_spec",
]
