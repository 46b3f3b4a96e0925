"""In-memory fakes of gha-mlops' ports, for this project's tests and for users' own: hand them
to the services (or to :func:`gha_mlops.bootstrap.build`) instead of the real adapters.

- :class:`FakeActions`: the Actions API (:class:`~gha_mlops.github.port.ActionsPort`):
  successful runs, their artifacts and the archives' bytes.
- :class:`FakeGitHub`: every GitHub port (:class:`~gha_mlops.github.port.GitHubAPI`):
  comments, check runs (or a token refused ``checks: write``), statuses, commits on a branch,
  pull requests' heads, deployments with their statuses and environments (or a token
  refused ``deployments: write``), the issues and ``workflow_dispatch`` of monitoring (or a
  token refused ``issues: write`` / ``actions: write``), and the Actions reads of
  :class:`FakeActions`.
- :class:`~gha_mlops.data.stores.MemoryStore`: the object store
  (:class:`~gha_mlops.data.ports.ObjectStore`), counting requests and bytes.
- :class:`~gha_mlops.testing.fake_runners.FakeRunnersGitHub` and
  :class:`~gha_mlops.testing.fake_runners.FakeBackend`: the runner autoscaler's two ports.

Each implements our own Protocol (none patches an SDK) and records what it was asked, so a test
asserts on the calls; ``closed`` says whether :meth:`close` ran. A fault is injected by
subclassing and raising :class:`~gha_mlops.github.port.GitHubError` where GitHub would.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from gha_mlops.data.stores import MemoryStore
from gha_mlops.github.port import (
    ActionsPort,
    ArtifactRef,
    Comment,
    DeploymentRef,
    EnvironmentInfo,
    GitHubAPI,
    GitHubError,
    IssueRef,
    WorkflowRunRef,
)
from gha_mlops.testing.fake_runners import FakeBackend, FakeRunnersGitHub

__all__ = ["FakeActions", "FakeBackend", "FakeGitHub", "FakeRunnersGitHub", "MemoryStore"]

RunListing = tuple[WorkflowRunRef, list[ArtifactRef]]


class FakeActions(ActionsPort):
    """A repository's successful workflow runs (newest first), each with its artifacts.

    ``archives`` maps an artifact id to its zip's bytes; an id in ``gone`` expires while it is
    downloaded (410); ``downloads`` maps a URL to what ``GET`` answers. ``listed`` counts the
    runs handed out, so a test can prove the search stopped early."""

    def __init__(self, runs: Iterable[RunListing] = (), archives: Mapping[int, bytes] | None = None,
                 gone: Iterable[int] = (), downloads: Mapping[str, bytes] | None = None) -> None:
        self.runs = list(runs)
        self.archives = dict(archives or {})
        self.gone = set(gone)
        self.downloads = dict(downloads or {})
        self.listed = 0
        self.closed = False

    def successful_runs(self, repo: str, branch: str) -> Iterator[WorkflowRunRef]:
        """Every run given, in order, counted in ``listed`` as it is handed out."""
        for run, _ in self.runs:
            self.listed += 1
            yield run

    def run_artifacts(self, repo: str, run_id: int) -> list[ArtifactRef]:
        """The artifacts given with run ``run_id``; 404 for a run not given."""
        for run, artifacts in self.runs:
            if run.id == run_id:
                return list(artifacts)
        raise GitHubError(f"no workflow run {run_id} in {repo}: HTTP 404", status=404)

    def download_artifact(self, repo: str, artifact_id: int) -> bytes:
        """The archive given for ``artifact_id``: 410 if it is in ``gone``, 404 if unknown."""
        if artifact_id in self.gone:
            raise GitHubError(f"artifact {artifact_id} has expired: HTTP 410", status=410)
        if artifact_id not in self.archives:
            raise GitHubError(f"no artifact {artifact_id} in {repo}: HTTP 404", status=404)
        return self.archives[artifact_id]

    def download(self, url: str) -> bytes:
        """What ``downloads`` holds for ``url``; 404 otherwise."""
        if url not in self.downloads:
            raise GitHubError(f"could not download {url}: HTTP 404", status=404)
        return self.downloads[url]

    def close(self) -> None:
        """Remember that the caller let go (``closed``)."""
        self.closed = True


class FakeGitHub(FakeActions, GitHubAPI):
    """One GitHub, its repositories' comments, checks, statuses and commits kept in lists.

    ``checks_allowed=False`` answers check runs as a token without ``checks: write`` is
    answered (403); ``heads`` maps a pull request's number to its head sha now. ``calls``
    lists the comment calls in order (``list``, ``create``, ``edit``). ``deployments`` maps a
    deployment's id to what it was created with and ``deployment_statuses`` to its states,
    oldest first; ``environments`` are the repository's environments by name (a deployment
    to a new one creates it, as on GitHub); ``deployments_allowed=False`` answers as a token
    without ``deployments: write`` is answered (403).

    Monitoring: ``issues`` maps a number to its :class:`IssueRef` (pull requests are in it too,
    their numbers in ``pulls``; :meth:`add_issue` seeds either); ``workflows`` maps a workflow
    file name to the inputs its ``workflow_dispatch`` declares (name -> required) or to None
    when it has no such trigger, and a dispatch is answered as GitHub does (404 unknown, 422
    no trigger, unknown ref, unexpected or missing input); ``workflows=None`` (the default)
    accepts any workflow and inputs. ``branches`` are the refs a dispatch may name (the first
    is the default branch). Accepted dispatches are appended to ``dispatches`` (``repo,
    workflow, ref, inputs``). ``issues_allowed=False`` / ``actions_allowed=False`` answer as
    a token without ``issues: write`` / ``actions: write`` is answered (403);
    ``failing_dispatches`` answers that many dispatches with a 502 first."""

    def __init__(self, *, checks_allowed: bool = True, heads: Mapping[int, str] | None = None,
                 runs: Iterable[RunListing] = (), archives: Mapping[int, bytes] | None = None,
                 gone: Iterable[int] = (), downloads: Mapping[str, bytes] | None = None,
                 environments: Mapping[str, EnvironmentInfo] | None = None,
                 deployments_allowed: bool = True,
                 workflows: Mapping[str, Mapping[str, bool] | None] | None = None,
                 branches: Sequence[str] = ("main",), issues_allowed: bool = True,
                 actions_allowed: bool = True, failing_dispatches: int = 0) -> None:
        super().__init__(runs, archives, gone, downloads)
        self.issues: dict[int, IssueRef] = {}
        self.pulls: set[int] = set()
        self.workflows = None if workflows is None else {
            k: None if v is None else dict(v) for k, v in workflows.items()}
        self.branches = list(branches)
        self.dispatches: list[dict[str, Any]] = []
        self.issues_allowed = issues_allowed
        self.actions_allowed = actions_allowed
        self.failing_dispatches = failing_dispatches
        self.monitor_calls: list[str] = []  # "list", "create", "edit", "dispatch" in order
        self.deployments: dict[int, dict[str, Any]] = {}
        self.deployment_statuses: dict[int, list[dict[str, Any]]] = {}
        self.environments = dict(environments or {})
        self.deployments_allowed = deployments_allowed
        self.comments: dict[int, list[Comment]] = {}
        self.commit_comments: list[tuple[str, str]] = []
        self.checks: list[dict[str, object]] = []
        self.statuses: list[dict[str, object]] = []
        self.commits: list[dict[str, bytes]] = []
        self.checks_allowed = checks_allowed
        self.heads = dict(heads or {})
        self.calls: list[str] = []
        self._next = 100

    def issue_comments(self, repo: str, number: int) -> Iterator[Comment]:
        """The comments of ``number``, oldest first."""
        self.calls.append("list")
        yield from self.comments.get(number, [])

    def create_issue_comment(self, repo: str, number: int, body: str) -> Comment:
        """Append a comment with the next id."""
        self.calls.append("create")
        self._next += 1
        comment = Comment(self._next, body)
        self.comments.setdefault(number, []).append(comment)
        return comment

    def edit_issue_comment(self, repo: str, number: int, comment_id: int,
                           body: str) -> Comment:
        """Replace the body of ``comment_id``; 404 if ``number`` has no such comment."""
        self.calls.append("edit")
        items = self.comments.get(number, [])
        for i, comment in enumerate(items):
            if comment.id == comment_id:
                items[i] = Comment(comment_id, body)
                return items[i]
        raise GitHubError(f"no comment {comment_id} on #{number}: HTTP 404", status=404)

    def create_commit_comment(self, repo: str, sha: str, body: str) -> Comment:
        """Record ``(sha, body)`` in ``commit_comments``."""
        self.commit_comments.append((sha, body))
        return Comment(1, body)

    def create_check_run(self, repo: str, sha: str, *, name: str, conclusion: str,
                         title: str, summary: str, text: str = "",
                         details_url: str | None = None) -> str:
        """Record the check run, or refuse it (403) when ``checks_allowed`` is False."""
        if not self.checks_allowed:
            raise GitHubError("GitHub refused: HTTP 403 Resource not accessible by integration",
                              status=403, permission="checks: write")
        self.checks.append({"sha": sha, "conclusion": conclusion, "title": title})
        return f"https://github.com/{repo}/runs/1"

    def create_status(self, repo: str, sha: str, *, state: str, context: str,
                      description: str, target_url: str | None = None) -> None:
        """Record the status in ``statuses``."""
        self.statuses.append({"sha": sha, "state": state, "context": context})

    def commit_files(self, repo: str, branch: str, files: Mapping[str, bytes],
                     message: str) -> str:
        """Record the files in ``commits``; every commit has the same sha."""
        self.commits.append(dict(files))
        return "c0ffee" * 6 + "abcd"

    def pull_head_sha(self, repo: str, number: int) -> str:
        """The head ``heads`` gives for ``number``; 404 for a pull request not given."""
        if number not in self.heads:
            raise GitHubError(f"no pull request #{number} in {repo}: HTTP 404", status=404)
        return self.heads[number]

    def _deployments_write(self) -> None:
        if not self.deployments_allowed:
            raise GitHubError("GitHub refused: HTTP 403 Resource not accessible by integration",
                              status=403, permission="deployments: write")

    def create_deployment(self, repo: str, *, ref: str, environment: str, description: str,
                          payload: Mapping[str, Any], production: bool) -> DeploymentRef:
        """Record the deployment under the next id (and its environment, if new)."""
        self._deployments_write()
        self._next += 1
        self.deployments[self._next] = {"repo": repo, "ref": ref, "environment": environment,
                                        "description": description[:140],
                                        "payload": dict(payload), "production": production}
        self.deployment_statuses[self._next] = []
        self.environments.setdefault(environment, EnvironmentInfo(environment, 0, 0, False))
        return DeploymentRef(self._next, environment,
                             f"https://api.github.com/repos/{repo}/deployments/{self._next}")

    def create_deployment_status(self, repo: str, deployment_id: int, *, state: str,
                                 description: str, environment_url: str | None = None,
                                 log_url: str | None = None) -> None:
        """Append the status; 404 for an unknown deployment. A ``success`` makes the earlier
        successful non-production deployments of the environment ``inactive``."""
        self._deployments_write()
        if deployment_id not in self.deployments:
            raise GitHubError(f"no deployment {deployment_id} in {repo}: HTTP 404", status=404)
        env = self.deployments[deployment_id]["environment"]
        if state == "success":
            for other, statuses in self.deployment_statuses.items():
                mine = self.deployments[other]
                if (other != deployment_id and mine["environment"] == env
                        and not mine["production"] and statuses
                        and statuses[-1]["state"] == "success"):
                    statuses.append({"state": "inactive", "description": "",
                                     "environment_url": None, "log_url": None})
        self.deployment_statuses[deployment_id].append(
            {"state": state, "description": description[:140],
             "environment_url": environment_url, "log_url": log_url})

    def environment(self, repo: str, name: str) -> EnvironmentInfo | None:
        """The environment given (or created by a deployment), else None."""
        return self.environments.get(name)

    # -- monitoring ------------------------------------------------------------------------

    def add_issue(self, title: str, body: str = "", *, labels: Sequence[str] = (),
                  state: str = "open", pull: bool = False) -> int:
        """Seed an issue (or, with ``pull``, a pull request) under the next number."""
        number = max(self.issues, default=0) + 1
        self.issues[number] = IssueRef(number, title, body, state, tuple(labels),
                                       f"https://github.com/o/r/issues/{number}")
        if pull:
            self.pulls.add(number)
        return number

    def _issues_write(self) -> None:
        if not self.issues_allowed:
            raise GitHubError("GitHub refused: HTTP 403 Resource not accessible by integration",
                              status=403, permission="issues: write")

    def open_issues(self, repo: str, *, label: str) -> Iterator[IssueRef]:
        """The open issues (not pull requests) with ``label`` (ignoring case), newest first."""
        self.monitor_calls.append("list")
        for number in sorted(self.issues, reverse=True):
            issue = self.issues[number]
            if (number not in self.pulls and issue.state == "open"
                    and label.lower() in {x.lower() for x in issue.labels}):
                yield issue

    def create_issue(self, repo: str, *, title: str, body: str,
                     labels: Sequence[str]) -> IssueRef:
        """Open an issue under the next number; 422 for GitHub's title or body limits."""
        self.monitor_calls.append("create")
        self._issues_write()
        _issue_limits(title, body)
        number = self.add_issue(title, body, labels=labels)
        return self.issues[number]

    def edit_issue(self, repo: str, number: int, *, title: str | None = None,
                   body: str | None = None, state: str | None = None) -> IssueRef:
        """Change the issue; 404 for an unknown number, 422 for GitHub's limits."""
        self.monitor_calls.append("edit")
        self._issues_write()
        if number not in self.issues:
            raise GitHubError(f"no issue #{number} in {repo}: HTTP 404", status=404)
        _issue_limits(title, body)
        issue = self.issues[number]
        self.issues[number] = replace(
            issue, title=issue.title if title is None else title,
            body=issue.body if body is None else body,
            state=issue.state if state is None else state)
        return self.issues[number]

    def dispatch_workflow(self, repo: str, workflow: str, *, ref: str,
                          inputs: Mapping[str, str]) -> None:
        """Record the dispatch, or refuse it as GitHub would (see the class)."""
        self.monitor_calls.append("dispatch")
        if not self.actions_allowed:
            raise GitHubError("GitHub refused: HTTP 403 Resource not accessible by integration",
                              status=403, permission="actions: write")
        if self.failing_dispatches > 0:
            self.failing_dispatches -= 1
            raise GitHubError(f"GitHub refused to dispatch {workflow}: HTTP 502", status=502)
        if self.workflows is not None:
            if workflow not in self.workflows:
                raise GitHubError(f"no workflow {workflow} in {repo}: HTTP 404", status=404)
            declared = self.workflows[workflow]
            problem = _dispatch_problem(declared, ref in self.branches, ref, inputs)
            if problem:
                raise GitHubError(f"GitHub refused to dispatch {workflow}: HTTP 422 {problem}",
                                  status=422)
        self.dispatches.append({"repo": repo, "workflow": workflow, "ref": ref,
                                "inputs": dict(inputs)})

    def default_branch(self, repo: str) -> str:
        """The first of ``branches``."""
        return self.branches[0]


def _issue_limits(title: str | None, body: str | None) -> None:
    if (title is not None and len(title) > 256) or (body is not None and len(body) > 65536):
        raise GitHubError("GitHub refused the issue: HTTP 422 Validation Failed (a title is at "
                          "most 256 characters, a body 65536)", status=422)


def _dispatch_problem(declared: Mapping[str, bool] | None, known_ref: bool, ref: str,
                      inputs: Mapping[str, str]) -> str | None:
    """GitHub's 422 message for a dispatch it refuses, else None."""
    if declared is None:
        return "Workflow does not have 'workflow_dispatch' trigger"
    if not known_ref:
        return f"No ref found for: {ref}"
    unexpected = sorted(set(inputs) - set(declared))
    if unexpected:
        return f"Unexpected inputs provided: {unexpected}"
    missing = sorted(k for k, required in declared.items() if required and k not in inputs)
    return f"Required input '{missing[0]}' not provided" if missing else None
