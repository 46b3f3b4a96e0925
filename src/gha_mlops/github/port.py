"""The GitHub operations gha-mlops needs, as a port: services depend on this Protocol, the
PyGithub adapter implements it against GitHub.com or GitHub Enterprise, and unit tests use
fakes. Every method raises :class:`GitHubError` (never an SDK exception)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from gha_mlops.errors import GhaMlopsError


class GitHubError(GhaMlopsError):
    """A GitHub API call failed; the message names the call, the status and what to do."""

    exit_code = 6

    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None,
                 permission: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.permission = permission  # the `permissions:` entry a 403 asks for, if known


@dataclass(frozen=True)
class Comment:
    id: int
    body: str
    url: str = ""


class GitHubPort(Protocol):
    def issue_comments(self, repo: str, number: int) -> Iterator[Comment]:
        """Every comment of an issue or pull request, oldest first (all pages)."""

    def create_issue_comment(self, repo: str, number: int, body: str) -> Comment: ...

    def edit_issue_comment(self, repo: str, number: int, comment_id: int,
                           body: str) -> Comment: ...

    def create_commit_comment(self, repo: str, sha: str, body: str) -> Comment: ...

    def create_check_run(self, repo: str, sha: str, *, name: str, conclusion: str,
                         title: str, summary: str, text: str = "",
                         details_url: str | None = None) -> str:
        """A completed check run; returns its html URL."""

    def create_status(self, repo: str, sha: str, *, state: str, context: str,
                      description: str, target_url: str | None = None) -> None: ...

    def commit_files(self, repo: str, branch: str, files: Mapping[str, bytes],
                     message: str) -> str:
        """Add ``files`` (path -> bytes) on top of ``branch`` (created, orphan, if missing)
        through the Git Data API; returns the new commit's sha."""


@dataclass(frozen=True)
class WorkflowRunRef:
    """A workflow run, as much of it as choosing a champion needs."""

    id: int
    event: str
    head_sha: str
    head_repo: str  # owner/name of the repository the run's commit came from
    html_url: str = ""


@dataclass(frozen=True)
class ArtifactRef:
    id: int
    name: str
    expired: bool
    size: int = 0


class ActionsPort(Protocol):
    """Reading the Actions API (runs and their artifacts): needs ``actions: read``."""

    def successful_runs(self, repo: str, branch: str) -> Iterator[WorkflowRunRef]:
        """The completed, successful workflow runs on ``branch``, newest first, fetched page
        by page as the caller iterates (stop iterating to stop fetching)."""

    def run_artifacts(self, repo: str, run_id: int) -> list[ArtifactRef]:
        """Every artifact of the run (all pages), expired ones included."""

    def download_artifact(self, repo: str, artifact_id: int) -> bytes:
        """The artifact's zip archive (following GitHub's redirect to its storage); a
        :class:`GitHubError` with ``status`` 410 when it has expired."""

    def download(self, url: str) -> bytes:
        """The body of ``GET url``, following redirects; the token is sent only when ``url``
        is on the API's host (never to a third party)."""


class StoredReportPort(GitHubPort, Protocol):
    """What publishing a report stored by another workflow needs: the usual writes, and a
    check that the pull request it names is the one it was computed for."""

    def pull_head_sha(self, repo: str, number: int) -> str:
        """The sha of the pull request's head commit now."""
