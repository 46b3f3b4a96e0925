"""The GitHub operations gha-mlops needs, as a port: services depend on this Protocol, the
PyGithub adapter implements it against GitHub.com or GitHub Enterprise, and tests use the fakes
of :mod:`gha_mlops.testing.fakes`. Every method raises :class:`GitHubError` (never an SDK
exception). Every port owns ``close()`` and is a context manager (:class:`Closing`): a client
holds pooled connections until it is closed. :mod:`gha_mlops.bootstrap` builds the real ones."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gha_mlops._closing import Closing
from gha_mlops.errors import ExitCode, GhaMlopsError


class GitHubError(GhaMlopsError):
    """A GitHub API call failed; the message names the call, the status and what to do."""

    exit_code = ExitCode.GITHUB

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


class GitHubPort(Closing, Protocol):
    """Writing where a report shows (comments, checks, statuses, a branch of files): needs
    the ``permissions:`` :data:`gha_mlops.github.pygithub.PERMISSIONS` names per call."""

    def issue_comments(self, repo: str, number: int) -> Iterator[Comment]:
        """Every comment of an issue or pull request, oldest first (all pages)."""

    def create_issue_comment(self, repo: str, number: int, body: str) -> Comment:
        """A new comment on issue or pull request ``number``; returns it as GitHub stored it."""

    def edit_issue_comment(self, repo: str, number: int, comment_id: int,
                           body: str) -> Comment:
        """Replace the body of comment ``comment_id`` (of issue or pull ``number``)."""

    def create_commit_comment(self, repo: str, sha: str, body: str) -> Comment:
        """A new comment on commit ``sha`` (where a push's report goes)."""

    def create_check_run(self, repo: str, sha: str, *, name: str, conclusion: str,
                         title: str, summary: str, text: str = "",
                         details_url: str | None = None) -> str:
        """A completed check run; returns its html URL."""

    def create_status(self, repo: str, sha: str, *, state: str, context: str,
                      description: str, target_url: str | None = None) -> None:
        """A commit status (the fallback when the token may not create check runs);
        ``description`` is cut to GitHub's 140 characters."""

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


class ActionsPort(Closing, Protocol):
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


@dataclass(frozen=True)
class DeploymentRef:
    """A GitHub Deployment as created: its id (for the statuses), environment and API URL."""

    id: int
    environment: str
    url: str


@dataclass(frozen=True)
class EnvironmentInfo:
    """What a GitHub environment's protection rules demand before a job that names it runs.

    ``required_reviewers``: how many people or teams may approve (0: no approval needed; one
    approval of any of them suffices); ``wait_timer``: minutes a job waits once approved;
    ``branch_policy``: whether only some branches may deploy to it."""

    name: str
    required_reviewers: int
    wait_timer: int
    branch_policy: bool


# The states a deployment status may take (GitHub's enum).
DEPLOYMENT_STATES = frozenset({"error", "failure", "inactive", "in_progress", "queued",
                               "pending", "success"})


class DeploymentsPort(Closing, Protocol):
    """GitHub Deployments and environments: creating a deployment and posting its statuses
    needs ``deployments: write``; reading an environment ``actions: read``."""

    def create_deployment(self, repo: str, *, ref: str, environment: str, description: str,
                          payload: Mapping[str, Any], production: bool) -> DeploymentRef:
        """Record a deployment of ``ref`` (a sha, branch or tag) to ``environment``. No status
        check is required and nothing is merged (the workflow's own gates already ran); the
        environment is not transient; ``production`` marks it as the one users reach."""

    def create_deployment_status(self, repo: str, deployment_id: int, *, state: str,
                                 description: str, environment_url: str | None = None,
                                 log_url: str | None = None) -> None:
        """Post a status (one of :data:`DEPLOYMENT_STATES`) on a deployment; ``description``
        is cut to GitHub's 140 characters. A ``success`` makes the environment's earlier
        successful deployments ``inactive`` (GitHub's ``auto_inactive``)."""

    def environment(self, repo: str, name: str) -> EnvironmentInfo | None:
        """The environment's protection rules, or None when the repository has no
        environment of that name."""


@dataclass(frozen=True)
class IssueRef:
    """An issue as monitoring needs it: its number, title, body, state (``open`` or
    ``closed``), labels and web URL."""

    number: int
    title: str
    body: str
    state: str
    labels: tuple[str, ...]
    url: str


class MonitorPort(Closing, Protocol):
    """What acting on a drift verdict needs: the one open drift issue of a model (found by a
    label and a marker in its body, created or edited in place) and a ``workflow_dispatch``
    of the consumer's retraining workflow."""

    def open_issues(self, repo: str, *, label: str) -> Iterator[IssueRef]:
        """The open issues (not pull requests) carrying ``label``, newest first."""

    def create_issue(self, repo: str, *, title: str, body: str,
                     labels: Sequence[str]) -> IssueRef:
        """Open an issue."""

    def edit_issue(self, repo: str, number: int, *, title: str | None = None,
                   body: str | None = None, state: str | None = None) -> IssueRef:
        """Change an issue's title, body or state (``open``/``closed``); None: unchanged."""

    def dispatch_workflow(self, repo: str, workflow: str, *, ref: str,
                          inputs: Mapping[str, str]) -> None:
        """``workflow_dispatch`` the workflow (its file name, e.g. ``retrain.yml``, or id) on
        ``ref`` with ``inputs``; a :class:`GitHubError` naming the workflow when GitHub
        refuses (no such workflow, no ``workflow_dispatch`` trigger, an unknown input)."""

    def default_branch(self, repo: str) -> str:
        """The repository's default branch."""


class GitHubAPI(StoredReportPort, ActionsPort, DeploymentsPort, MonitorPort, Protocol):
    """Every REST port one token-backed client serves (what
    :func:`gha_mlops.bootstrap.github` builds): the report's writes, the stored report's
    check, the Actions reads of the champion, the deployments of a rollout and the drift
    issue and retraining dispatch of monitoring."""


# -- self-hosted runners (the autoscaler) ---------------------------------------------------


class RunnerBusyError(GitHubError):
    """GitHub refused to remove a runner because it is running a job (422): keep it."""


@dataclass(frozen=True)
class JitConfig:
    runner_id: int
    runner_name: str
    encoded: str  # the value the runner takes with --jitconfig (secret: never logged)


@dataclass(frozen=True)
class GhRunner:
    """A self-hosted runner registered in the scope."""

    id: int
    name: str
    status: str  # "online" | "offline"
    busy: bool
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class GhJob:
    """A workflow job (as the REST API and the ``workflow_job`` webhook describe it)."""

    id: int
    repo: str  # owner/name
    run_id: int
    run_attempt: int
    name: str
    status: str  # "queued" | "in_progress" | "completed" | "waiting" | ...
    labels: tuple[str, ...]
    conclusion: str | None = None
    runner_name: str | None = None
    created_at: str | None = None  # ISO 8601, when it was queued
    started_at: str | None = None
    completed_at: str | None = None


@dataclass(frozen=True)
class RateBudget:
    remaining: int
    limit: int
    reset: float  # unix seconds


class RunnersPort(Closing, Protocol):
    """What the autoscaler needs from GitHub, for one scope: a repository (``owner/name``) or
    an organization. Repository scope needs the App permission ``administration: write`` (or a
    token with ``repo``); organization scope ``organization_self_hosted_runners: write``; both
    ``actions: write`` to read jobs and re-run them."""

    def generate_jitconfig(self, name: str, labels: tuple[str, ...], *,
                           runner_group_id: int = 1, work_folder: str = "_work") -> JitConfig:
        """Register a runner for one job and return its just-in-time config."""

    def list_runners(self) -> list[GhRunner]:
        """Every self-hosted runner of the scope (all pages)."""

    def delete_runner(self, runner_id: int) -> None:
        """Deregister the runner; a runner already gone is not an error; one that is running a
        job raises :class:`RunnerBusyError`."""

    def queued_jobs(self) -> list[GhJob]:
        """Every job of the scope waiting for a runner now (status ``queued``), from the
        workflow runs that are queued or in progress (all pages, all repositories)."""

    def get_job(self, repo: str, job_id: int) -> GhJob:
        """One workflow job of ``repo`` as GitHub sees it now."""

    def rerun_job(self, repo: str, job_id: int) -> None:
        """Re-run one job (and its dependants) of a completed workflow run."""

    def rate_budget(self) -> RateBudget | None:
        """The rate-limit budget as the last response reported it (no request)."""
