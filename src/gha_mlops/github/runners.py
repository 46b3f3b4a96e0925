"""The :class:`~gha_mlops.github.port.RunnersPort` over PyGithub, for a repository or an
organization, authenticated with a token or as a GitHub App installation.

As in :mod:`gha_mlops.github.pygithub`: no client-side throttling; GET, HEAD and DELETE are
retried with backoff on 5xx and connection errors (a DELETE retried after a lost answer finds
the runner gone: 404, which is success here); POSTs are never retried, since registering a
runner twice is worse than an error (on a 5xx the caller lists the runners to clean up). As an
App, PyGithub caches the installation token and renews it before it expires; a token GitHub
refuses anyway (401: revoked, or a clock behind GitHub's) is renewed once and the call repeated.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from gha_mlops.errors import ConfigError, missing_extra
from gha_mlops.github.port import (
    GhJob,
    GhRunner,
    GitHubError,
    JitConfig,
    RateBudget,
    RunnerBusyError,
    RunnersPort,
)
from gha_mlops.github.pygithub import client_options, translate

if TYPE_CHECKING:
    from github import Github
    from github.Organization import Organization
    from github.Repository import Repository
    from github.WorkflowJob import WorkflowJob

T = TypeVar("T")

RETRIED = frozenset({"GET", "HEAD", "DELETE"})
REPOS_TTL = 300.0  # seconds an organization's list of repositories is reused
# The classic token scope that stands for each App permission (named in 403 hints).
CLASSIC_SCOPES = {"organization_self_hosted_runners": "admin:org"}
APP_401_HINT = ("GitHub refused the App's credentials: check app_id, installation_id and the "
                "private key, and that this host's clock is right (a JWT lives 10 minutes)")


@dataclass(frozen=True)
class RunnerScope:
    """Where runners are registered: a repository (``owner/name``) or an organization. For an
    organization, ``repos`` are the repositories whose queued jobs are watched; empty: every
    repository the credentials reach."""

    repo: str | None = None
    org: str | None = None
    repos: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "repos", tuple(self.repos))
        if (self.repo is None) == (self.org is None):
            raise ConfigError("runners need one scope: a repository or an organization",
                              hint="set exactly one of `repo: owner/name` and `org: name`")
        if self.repo is not None and (self.repo.count("/") != 1 or self.repos):
            raise ConfigError(f"the runners' repository must be owner/name, got {self.repo!r}",
                              hint="`repos:` is for an organization scope only")

    @property
    def path(self) -> str:
        """The API path of the scope: ``/repos/owner/name`` or ``/orgs/name``."""
        return f"/repos/{self.repo}" if self.repo else f"/orgs/{self.org}"

    def __str__(self) -> str:
        return str(self.repo or f"organization {self.org}")


def connect_runners(scope: RunnerScope, *, token: str | None = None, app_id: int | None = None,
                    private_key: str | None = None, installation_id: int | None = None,
                    base_url: str = "https://api.github.com",
                    timeout: float = 15) -> PyGitHubRunners:
    """A :class:`PyGitHubRunners` for ``scope``, with ``token`` or as the GitHub App
    ``app_id`` (``private_key`` PEM; its installation on the scope is looked up when
    ``installation_id`` is not given)."""
    try:
        from github import Auth, Github
    except ImportError:
        raise missing_extra("PyGithub", "github") from None
    options = client_options(base_url, timeout, RETRIED)
    if token is not None and app_id is None:
        return PyGitHubRunners(scope, lambda: Github(auth=Auth.Token(token), **options))
    if token is None and app_id is not None and private_key:
        app = Auth.AppAuth(app_id, private_key)
        found = installation_id or _installation_id(scope, app, options)
        return PyGitHubRunners(
            scope, lambda: Github(auth=app.get_installation_auth(found), **options), app=True)
    raise ConfigError("the runners need one credential: a token, or a GitHub App's id and "
                      "private key", hint="set `token`, or `app_id` with `private_key`")


def _installation_id(scope: RunnerScope, app: Any, options: Mapping[str, Any]) -> int:
    from github import GithubIntegration

    integration = GithubIntegration(auth=app, **options)
    owner, _, name = str(scope.repo or scope.org).partition("/")
    try:
        found = _guard(f"find the GitHub App's installation on {scope}", "metadata: read",
                       lambda: integration.get_repo_installation(owner, name) if name
                       else integration.get_org_installation(owner), app=True)
        return int(found.id)
    finally:
        integration.close()


class PyGitHubRunners(RunnersPort):
    """The runners of one scope. ``make_client`` builds the PyGithub client (again after a
    refused App token); :meth:`close` (or leaving a ``with`` block) closes its connections."""

    def __init__(self, scope: RunnerScope, make_client: Callable[[], Github], *,
                 app: bool = False) -> None:
        self.scope = scope
        self._make_client = make_client
        self.client = make_client()
        self._app = app
        self._repos: tuple[float, tuple[str, ...]] | None = None
        kind = "organization_self_hosted_runners" if scope.org else "administration"
        self._write, self._read = f"{kind}: write", f"{kind}: read"

    def close(self) -> None:
        """Close the client's connection pool (a later call opens a new one)."""
        self.client.close()

    def _call(self, what: str, need: str, fn: Callable[[], T],
              hints: Mapping[int, str] | None = None) -> T:
        try:
            return _guard(what, need, fn, app=self._app, hints=hints)
        except GitHubError as err:
            if err.status != 401 or not self._app:
                raise
        # A new installation token, then once more (the old client's pool is let go).
        old, self.client = self.client, self._make_client()
        old.close()
        return _guard(what, need, fn, app=self._app, hints=hints)

    def _owner(self) -> Repository | Organization:
        if self.scope.org:
            return self.client.get_organization(self.scope.org)
        return self.client.get_repo(str(self.scope.repo))

    # ------------------------------------------------------------------ runners

    def generate_jitconfig(self, name: str, labels: tuple[str, ...], *,
                           runner_group_id: int = 1, work_folder: str = "_work") -> JitConfig:
        body = {"name": name, "runner_group_id": runner_group_id, "labels": list(labels),
                "work_folder": work_folder}
        lost = (f"the runner may be registered although the answer was lost: list the "
                f"runners and delete {name!r} if it is there, then register a new name")
        hints = {500: lost, 0: lost,
                 409: f"a runner named {name!r} exists already (an earlier attempt whose "
                      "answer was lost?): delete it, or register under a new name"}
        _, data = self._call(
            f"register runner {name!r} in {self.scope}", self._write,
            lambda: self.client.requester.requestJsonAndCheck(
                "POST", f"{self.scope.path}/actions/runners/generate-jitconfig", input=body),
            hints)
        return JitConfig(int(data["runner"]["id"]), str(data["runner"]["name"]),
                         str(data["encoded_jit_config"]))

    def list_runners(self) -> list[GhRunner]:
        def fetch() -> list[GhRunner]:
            return [GhRunner(r.id, r.name, r.status, bool(r.busy),
                             tuple(str(label["name"]) for label in r.labels))
                    for r in self._owner().get_self_hosted_runners()]

        return self._call(f"list the runners of {self.scope}", self._read, fetch)

    def delete_runner(self, runner_id: int) -> None:
        try:
            self._call(f"remove runner {runner_id} from {self.scope}", self._write,
                       lambda: self.client.requester.requestJsonAndCheck(
                           "DELETE", f"{self.scope.path}/actions/runners/{runner_id}"))
        except GitHubError as err:
            if err.status == 404:
                return
            if err.status == 422:
                raise RunnerBusyError(err.message, status=422, hint="the runner is running a "
                                      "job: remove it once the job is over") from None
            raise

    # ------------------------------------------------------------------ jobs

    def queued_jobs(self) -> list[GhJob]:
        found: dict[int, GhJob] = {}
        for repo in self._watched():
            try:
                jobs = self._call(f"list the queued jobs of {repo}", "actions: read",
                                  partial(self._queued_in, repo))
            except GitHubError as err:
                if err.status != 404 or not self._repos:
                    raise
                self._repos = None  # a repository of the organization went away: list again
                continue
            found.update((job.id, job) for job in jobs)
        return sorted(found.values(), key=lambda j: j.id)

    def _queued_in(self, repo: str) -> list[GhJob]:
        r = self.client.get_repo(repo)
        return [_gh_job(repo, job)
                for status in ("queued", "in_progress")
                for run in r.get_workflow_runs(status=status)
                for job in run.jobs("latest") if job.status == "queued"]

    def _watched(self) -> tuple[str, ...]:
        if self.scope.repo:
            return (self.scope.repo,)
        if self.scope.repos:
            return self.scope.repos
        if self._repos is None or time.monotonic() - self._repos[0] > REPOS_TTL:
            names = self._call(f"list the repositories of {self.scope}", "metadata: read",
                               self._org_repos)
            self._repos = (time.monotonic(), names)
        return self._repos[1]

    def _org_repos(self) -> tuple[str, ...]:
        if not self._app:
            return tuple(r.full_name for r in self.client.get_organization(str(self.scope.org))
                         .get_repos())
        from github.PaginatedList import PaginatedList
        from github.Repository import Repository

        reachable = PaginatedList(Repository, self.client.requester,
                                  "/installation/repositories", None, list_item="repositories")
        owner = str(self.scope.org).lower()
        return tuple(r.full_name for r in reachable if r.owner.login.lower() == owner)

    def get_job(self, repo: str, job_id: int) -> GhJob:
        return self._call(f"read job {job_id} of {repo}", "actions: read",
                          lambda: _gh_job(repo, self.client.get_repo(repo)
                                          .get_workflow_job(job_id)))

    def rerun_job(self, repo: str, job_id: int) -> None:
        self._call(f"re-run job {job_id} of {repo}", "actions: write",
                   lambda: self.client.requester.requestJsonAndCheck(
                       "POST", f"/repos/{repo}/actions/jobs/{job_id}/rerun"))

    def rate_budget(self) -> RateBudget | None:
        remaining, limit = self.client.requester.rate_limiting
        if limit < 0:
            return None
        return RateBudget(remaining, limit, float(self.client.requester.rate_limiting_resettime))


def _gh_job(repo: str, job: WorkflowJob) -> GhJob:
    return GhJob(job.id, repo, job.run_id, job.run_attempt or 1, job.name, job.status,
                 tuple(job.labels), job.conclusion, job.runner_name, _iso(job.created_at),
                 _iso(job.started_at), _iso(job.completed_at))


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- errors ----------------------------------------------------------------------------------


def _guard(what: str, need: str, fn: Callable[[], T], *, app: bool = False,
           hints: Mapping[int, str] | None = None) -> T:
    """``fn()``, its PyGithub and network errors as :class:`GitHubError` (``hints`` by
    status: 500 for any 5xx, 0 for a network error, which may come after GitHub acted)."""
    from github import GithubException

    try:
        return fn()
    except GithubException as err:
        raise _translate(err, what, need, app=app, hints=hints or {}) from None
    except OSError as err:  # refused, reset, timed out: after the retries
        raise GitHubError(f"GitHub API unreachable while trying to {what}: {err}",
                          hint=(hints or {}).get(0, "check the API URL and the network; "
                                                 "try again")) from None


def _translate(err: Any, what: str, need: str, *, app: bool,
               hints: Mapping[int, str]) -> GitHubError:
    base = translate(err, what, need)
    status = base.status or 0
    data = getattr(err, "data", None)
    detail = str(data.get("message", "")) if isinstance(data, dict) else ""
    headers = {k.lower(): v for k, v in (getattr(err, "headers", None) or {}).items()}
    if status in (403, 429) and headers.get("x-ratelimit-remaining") == "0":
        reset = int(headers.get("x-ratelimit-reset", "0") or 0)
        at = datetime.fromtimestamp(reset, timezone.utc).strftime("%H:%M:%S UTC")
        return GitHubError(f"{base.message}; it resets at {at}", status=status, hint=base.hint)
    hint = hints.get(500 if status >= 500 else status)
    if hint is not None:
        return GitHubError(base.message, status=status, hint=hint)
    if status == 401 and app:
        return GitHubError(base.message, status=401, hint=APP_401_HINT)
    if base.permission is None:
        return base
    if detail and "not accessible" not in detail.lower():  # refused for another reason
        return GitHubError(base.message, status=status, hint=f"GitHub answered: {detail}")
    classic = CLASSIC_SCOPES.get(need.partition(":")[0], "repo")
    return GitHubError(base.message, status=status, permission=need,
                       hint=f"grant the GitHub App `{need}` (a fine-grained token the same "
                       f"permission, a classic token the `{classic}` scope)")
