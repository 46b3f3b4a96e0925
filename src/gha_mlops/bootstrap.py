"""The composition root: the one place besides ``cli/`` that reads an environment and builds
the real adapters from it (GitHub, Actions, the runner autoscaler's GitHub, backends and
service). Services never build adapters; they take ports.

Every builder takes the environment as a mapping (the CLI passes ``os.environ``; tests pass
a dict of their own) and reads nothing else. Heavy adapters are imported inside the builders,
so importing this module stays cheap for ``gha-mlops --help``. :func:`build` bundles them for
a command: what it is handed (fakes, in tests) is used instead of what it would build.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from gha_mlops.errors import UsageError

if TYPE_CHECKING:
    from gha_mlops.github.port import GitHubAPI

DEFAULT_API_URL = "https://api.github.com"
DEFAULT_SERVER_URL = "https://github.com"
TOKEN_HINT = "pass it to the step: env: GITHUB_TOKEN: ${{ github.token }}"


# ------------------------------------------------------------------------------ GitHub


def github_token(environ: Mapping[str, str]) -> str | None:
    """The token to call GitHub with: ``$GITHUB_TOKEN``, else ``$GH_TOKEN`` (the gh CLI's
    name); None when neither is set or both are empty."""
    return environ.get("GITHUB_TOKEN") or environ.get("GH_TOKEN") or None


def github_api_url(environ: Mapping[str, str]) -> str:
    """The REST API's root: ``$GITHUB_API_URL`` (set by Actions, e.g. a GitHub Enterprise
    ``https://HOST/api/v3``), else GitHub.com's."""
    return environ.get("GITHUB_API_URL") or DEFAULT_API_URL


def github_server_url(environ: Mapping[str, str]) -> str:
    """The web root links point at: ``$GITHUB_SERVER_URL``, else ``https://github.com``."""
    return environ.get("GITHUB_SERVER_URL") or DEFAULT_SERVER_URL


def github(environ: Mapping[str, str], *, need: str = "--publish",
           timeout: float = 15) -> GitHubAPI:
    """A PyGithub-backed client (every GitHub port: comments, checks, statuses, commits,
    Actions runs and artifacts, pull requests) with the token and API URL of ``environ``.

    Raises :class:`UsageError` naming ``need`` (what asked for GitHub, e.g. ``--publish``)
    when no token is set, and :class:`~gha_mlops.errors.MissingExtraError` when PyGithub is
    not installed. The client holds connections: close it (it is a context manager)."""
    token = github_token(environ)
    if not token:
        raise UsageError(f"{need} needs a token: GITHUB_TOKEN is not set", hint=TOKEN_HINT)
    from gha_mlops.github.pygithub import connect

    return connect(token, github_api_url(environ), timeout=timeout)
