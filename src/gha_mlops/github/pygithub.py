"""The :class:`~gha_mlops.github.port.GitHubPort` over PyGithub (imported only here).

``base_url`` is ``https://api.github.com`` or a GitHub Enterprise ``https://HOST/api/v3``
(``$GITHUB_API_URL`` in Actions). Requests are not throttled client-side (PyGithub's default
pauses a second between writes, which alone would cost a report seconds); idempotent calls
(GET, PATCH, PUT) are retried with backoff on 5xx and connection errors, honouring
``Retry-After``; a rate limit is an error naming when it resets, never a silent sleep.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from gha_mlops.errors import missing_extra
from gha_mlops.github.port import (
    DEPLOYMENT_STATES,
    ArtifactRef,
    Comment,
    DeploymentRef,
    EnvironmentInfo,
    GitHubAPI,
    GitHubError,
    IssueRef,
    WorkflowRunRef,
)

if TYPE_CHECKING:
    from github import Github
    from github.Repository import Repository
    from urllib3.util.retry import Retry

T = TypeVar("T")

# What `permissions:` a workflow must grant for each kind of call (GITHUB_TOKEN), named in the
# error when GitHub answers 403.
PERMISSIONS = {
    "comment": "pull-requests: write (issues: write for an issue)",
    "commit-comment": "contents: write",
    "check": "checks: write",
    "status": "statuses: write",
    "contents": "contents: write",
    "read": "contents: read",
    "actions": "actions: read",
    "pulls": "pull-requests: read",
    "deployments": "deployments: write",
    "environments": "actions: read",
    "issues": "issues: write",
    "dispatch": "actions: write",
}

# owner/name as GitHub spells repositories: nothing that could leave /repos/{owner}/{repo}.
_REPO_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}")

# The largest artifact or record a baseline download may be (a zip bomb stops here).
MAX_DOWNLOAD = 2 * 1024**3

# GitHub's limits on an issue and a workflow_dispatch.
MAX_ISSUE_TITLE = 256
MAX_ISSUE_BODY = 65536
MAX_DISPATCH_INPUTS = 25
# A workflow as the dispatch endpoint names it: its id or its file name (no path).
_WORKFLOW_NAME = re.compile(r"[0-9]+|[A-Za-z0-9_.-]{1,255}\.ya?ml")


def retry_policy(methods: Iterable[str]) -> Retry:
    """Retries with backoff on 5xx and connection errors, honouring ``Retry-After``; a request
    that reached GitHub is sent again only for ``methods`` (the idempotent ones)."""
    from urllib3.util.retry import Retry

    return Retry(total=4, connect=3, read=2, backoff_factor=0.3,
                 status_forcelist=(500, 502, 503, 504), allowed_methods=frozenset(methods),
                 respect_retry_after_header=True, raise_on_status=False)


def client_options(base_url: str, timeout: float, retried: Iterable[str]) -> dict[str, Any]:
    """The keyword arguments of ``Github``/``GithubIntegration``: no client-side throttling,
    100 items a page, lazy objects, ``retried`` methods retried (:func:`retry_policy`)."""
    return {"base_url": base_url.rstrip("/"), "timeout": int(timeout),
            "retry": retry_policy(retried), "seconds_between_requests": None,
            "seconds_between_writes": None, "per_page": 100, "lazy": True}


def connect(token: str, base_url: str = "https://api.github.com", *,
            timeout: float = 15) -> PyGitHub:
    try:
        from github import Auth, Github
    except ImportError:
        raise missing_extra("PyGithub", "github") from None
    client = Github(auth=Auth.Token(token),
                    **client_options(base_url, timeout, {"GET", "PATCH", "PUT", "HEAD"}))
    return PyGitHub(client, token=token, base_url=base_url, timeout=timeout)


class PyGitHub(GitHubAPI):
    """Every REST port over one PyGithub client (its connection pool lives until
    :meth:`close`; ``with`` closes it too)."""

    def __init__(self, client: Github, *, token: str | None = None,
                 base_url: str = "https://api.github.com", timeout: float = 15) -> None:
        self.client = client
        self._repos: dict[str, Repository] = {}
        self._token = token
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout

    def close(self) -> None:
        """Close the client's connection pool (PyGithub opens a new one if used again)."""
        self._repos.clear()
        self.client.close()

    def _repo(self, name: str) -> Repository:
        if name not in self._repos:
            self._repos[name] = self._call(f"read repository {name}", "read",
                                           lambda: self.client.get_repo(name))
        return self._repos[name]

    def _call(self, what: str, kind: str, fn: Callable[[], T]) -> T:
        from github import GithubException

        try:
            return fn()
        except GithubException as err:
            raise translate(err, what, kind) from None
        except OSError as err:  # connection refused, DNS, TLS: after the retries
            raise GitHubError(f"GitHub API unreachable while trying to {what}: {err}",
                              hint="check GITHUB_API_URL and the network; run again") from None

    # ------------------------------------------------------------------ comments

    def issue_comments(self, repo: str, number: int) -> Iterator[Comment]:
        def pages() -> Any:
            return self._repo(repo).get_issue(number).get_comments()

        listing = self._call(f"list the comments of #{number} in {repo}", "read", pages)
        iterator = iter(listing)
        while True:
            item = self._call(f"list the comments of #{number} in {repo}", "read",
                              lambda: next(iterator, None))
            if item is None:
                return
            yield Comment(item.id, item.body or "", item.html_url)

    def create_issue_comment(self, repo: str, number: int, body: str) -> Comment:
        item = self._call(f"comment on #{number} in {repo}", "comment",
                          lambda: self._repo(repo).get_issue(number).create_comment(body))
        return Comment(item.id, item.body or "", item.html_url)

    def edit_issue_comment(self, repo: str, number: int, comment_id: int,
                           body: str) -> Comment:
        def edit() -> Any:
            comment = self._repo(repo).get_issue(number).get_comment(comment_id)
            comment.edit(body)
            return comment

        item = self._call(f"edit comment {comment_id} in {repo}", "comment", edit)
        return Comment(item.id, body, item.html_url)

    def create_commit_comment(self, repo: str, sha: str, body: str) -> Comment:
        item = self._call(f"comment on commit {sha[:12]} in {repo}", "commit-comment",
                          lambda: self._repo(repo).get_commit(sha).create_comment(body))
        return Comment(item.id, item.body or "", item.html_url)

    # ------------------------------------------------------------------ checks

    def create_check_run(self, repo: str, sha: str, *, name: str, conclusion: str,
                         title: str, summary: str, text: str = "",
                         details_url: str | None = None) -> str:
        from github.GithubObject import NotSet

        output: dict[str, str | list[dict[str, str | int]]] = {
            "title": title, "summary": summary[:65535]}
        if text:
            output["text"] = text[:65535]
        run = self._call(
            f"create check run {name!r} on {sha[:12]} in {repo}", "check",
            lambda: self._repo(repo).create_check_run(
                name=name, head_sha=sha, status="completed", conclusion=conclusion,
                output=output, details_url=details_url or NotSet))
        return str(run.html_url or "")

    def create_status(self, repo: str, sha: str, *, state: str, context: str,
                      description: str, target_url: str | None = None) -> None:
        from github.GithubObject import NotSet

        self._call(f"set status {context!r} on {sha[:12]} in {repo}", "status",
                   lambda: self._repo(repo).get_commit(sha).create_status(
                       state=state, context=context, description=description[:140],
                       target_url=target_url or NotSet))

    # ------------------------------------------------------------------ git data

    def commit_files(self, repo: str, branch: str, files: Mapping[str, bytes],
                     message: str) -> str:
        from github import GithubException, InputGitTreeElement
        from github.GithubObject import NotSet

        r = self._repo(repo)
        what = f"commit {len(files)} files to branch {branch} of {repo}"
        parent = None
        try:
            ref = r.get_git_ref(f"heads/{branch}")
            parent = r.get_git_commit(ref.object.sha)
        except GithubException as err:
            if err.status != 404:
                raise translate(err, what, "contents") from None
            ref = None

        def write() -> str:
            elements = [InputGitTreeElement(path, "100644", "blob", sha=r.create_git_blob(
                base64.b64encode(data).decode(), "base64").sha)
                for path, data in sorted(files.items())]
            tree = r.create_git_tree(elements, base_tree=parent.tree if parent else NotSet)
            commit = r.create_git_commit(message, tree, [parent] if parent else [])
            if ref is None:
                r.create_git_ref(f"refs/heads/{branch}", commit.sha)
            else:
                ref.edit(commit.sha)
            return str(commit.sha)

        return self._call(what, "contents", write)

    # ------------------------------------------------------------------ actions

    def successful_runs(self, repo: str, branch: str) -> Iterator[WorkflowRunRef]:
        what = f"list the successful workflow runs on {branch} in {repo}"
        listing = self._call(what, "actions", lambda: self._repo(repo).get_workflow_runs(
            branch=branch, status="success"))  # type: ignore[arg-type]  # str is accepted
        iterator = iter(listing)
        while True:
            run = self._call(what, "actions", lambda: next(iterator, None))
            if run is None:
                return
            head = run.raw_data.get("head_repository") or {}
            yield WorkflowRunRef(run.id, run.event or "", run.head_sha or "",
                                 str(head.get("full_name") or repo) if isinstance(head, dict)
                                 else repo, run.html_url or "")

    def run_artifacts(self, repo: str, run_id: int) -> list[ArtifactRef]:
        def fetch() -> list[ArtifactRef]:
            run = self._repo(repo).get_workflow_run(run_id)
            return [ArtifactRef(a.id, a.name, bool(a.expired), int(a.size_in_bytes or 0))
                    for a in run.get_artifacts()]

        return self._call(f"list the artifacts of workflow run {run_id} in {repo}", "actions",
                          fetch)

    def download_artifact(self, repo: str, artifact_id: int) -> bytes:
        url = f"{self._base_url}/repos/{repo}/actions/artifacts/{artifact_id}/zip"
        return self.download(url, what=f"download artifact {artifact_id} of {repo}")

    def download(self, url: str, *, what: str | None = None) -> bytes:
        return download(url, token=self._token, api_url=self._base_url, timeout=self._timeout,
                        what=what)

    # ------------------------------------------------------------------ pulls

    def pull_head_sha(self, repo: str, number: int) -> str:
        # Read the sha inside the call: the client is lazy, so the request (and a 404 for a
        # pull request that does not exist) happens when an attribute is first read.
        return self._call(f"read pull request #{number} of {repo}", "pulls",
                          lambda: str(self._repo(repo).get_pull(number).head.sha))

    # ------------------------------------------------------------------ deployments

    def _json(self, verb: str, path: str, body: Any = None) -> Any:
        # PyGithub's Deployment.create_status knows no log_url: the documented requester
        # sends the body as GitHub describes it (same client, retries and errors).
        return self.client.requester.requestJsonAndCheck(verb, path, input=body)[1]

    def create_deployment(self, repo: str, *, ref: str, environment: str, description: str,
                          payload: Mapping[str, Any], production: bool) -> DeploymentRef:
        what = f"create a deployment of {ref[:40]} to {environment} in {repo}"
        body = {"ref": ref, "task": "deploy", "auto_merge": False, "required_contexts": [],
                "payload": dict(payload), "environment": environment,
                "description": description[:140], "transient_environment": False,
                "production_environment": production}
        data = self._call(what, "deployments", lambda: self._json(
            "POST", f"/repos/{_repo_path(repo)}/deployments", body))
        return _deployment_ref(data, what)

    def create_deployment_status(self, repo: str, deployment_id: int, *, state: str,
                                 description: str, environment_url: str | None = None,
                                 log_url: str | None = None) -> None:
        if state not in DEPLOYMENT_STATES:
            raise GitHubError(f"{state!r} is not a deployment state",
                              hint=f"use one of {', '.join(sorted(DEPLOYMENT_STATES))}")
        body: dict[str, Any] = {"state": state, "description": description[:140],
                                "auto_inactive": True}
        if environment_url:
            body["environment_url"] = environment_url
        if log_url:
            body["log_url"] = log_url
        self._call(f"set deployment {deployment_id} of {repo} to {state}", "deployments",
                   lambda: self._json(
                       "POST", f"/repos/{_repo_path(repo)}/deployments/{int(deployment_id)}"
                       "/statuses", body))

    def environment(self, repo: str, name: str) -> EnvironmentInfo | None:
        from urllib.parse import quote

        path = f"/repos/{_repo_path(repo)}/environments/{quote(name, safe='')}"
        try:
            data = self._call(f"read environment {name!r} of {repo}", "environments",
                              lambda: self._json("GET", path))
        except GitHubError as err:
            if err.status == 404:
                return None
            raise
        return environment_info(name, data)

    # ------------------------------------------------------------------ monitoring

    def open_issues(self, repo: str, *, label: str) -> Iterator[IssueRef]:
        if not label or "," in label:
            raise GitHubError(f"cannot list the issues labelled {label!r}: GitHub's filter "
                              "takes label names without commas",
                              hint="name a label without a comma in monitor.models.*."
                              "issue_labels")
        what = f"list the open issues labelled {label!r} in {repo}"
        listing = self._call(what, "issues", lambda: self._repo(repo).get_issues(
            state="open", labels=[label], sort="created", direction="desc"))
        iterator = iter(listing)
        while True:
            item = self._call(what, "issues", lambda: next(iterator, None))
            if item is None:
                return
            data = item.raw_data
            if isinstance(data, dict) and data.get("pull_request") is None:
                yield issue_ref(data, f"GitHub's answer to {what}")

    def create_issue(self, repo: str, *, title: str, body: str,
                     labels: Sequence[str]) -> IssueRef:
        what = f"open an issue in {repo}"
        payload = {"title": title[:MAX_ISSUE_TITLE], "body": body, "labels": list(labels)}
        data = self._monitor(what, "issues", lambda: self._json(
            "POST", f"/repos/{_repo_path(repo)}/issues", payload), _ISSUE_HINTS)
        return issue_ref(data, f"GitHub's answer to {what}")

    def edit_issue(self, repo: str, number: int, *, title: str | None = None,
                   body: str | None = None, state: str | None = None) -> IssueRef:
        if state not in (None, "open", "closed"):
            raise GitHubError(f"{state!r} is not an issue state", hint="use open or closed")
        payload: dict[str, Any] = {}
        if title is not None:
            payload["title"] = title[:MAX_ISSUE_TITLE]
        if body is not None:
            payload["body"] = body
        if state is not None:
            payload["state"] = state
        what = f"edit issue #{int(number)} in {repo}"
        data = self._monitor(what, "issues", lambda: self._json(
            "PATCH", f"/repos/{_repo_path(repo)}/issues/{int(number)}", payload), _ISSUE_HINTS)
        return issue_ref(data, f"GitHub's answer to {what}")

    def dispatch_workflow(self, repo: str, workflow: str, *, ref: str,
                          inputs: Mapping[str, str]) -> None:
        from urllib.parse import quote

        what = f"dispatch workflow {workflow} on {ref} in {repo}"
        if not _WORKFLOW_NAME.fullmatch(workflow):
            raise GitHubError(f"cannot {what}: {workflow!r} is neither a workflow id nor a "
                              "file name ending .yml or .yaml",
                              hint="name the file under .github/workflows, e.g. retrain.yml")
        if len(inputs) > MAX_DISPATCH_INPUTS or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in inputs.items()):
            raise GitHubError(f"cannot {what}: GitHub takes at most {MAX_DISPATCH_INPUTS} "
                              f"inputs, each a string (got {len(inputs)})",
                              hint="declare fewer inputs in monitor.models.*.retrain.inputs")
        hints = {
            404: f"no workflow {workflow} under .github/workflows of {repo}, or the token "
                 "cannot see the repository: check retrain.workflow (the file name) in "
                 "mlops.yaml and that the file is on the default branch",
            422: f"the workflow {workflow} on {ref} has no `workflow_dispatch:` trigger, is "
                 "disabled, or an input is not declared under on.workflow_dispatch.inputs "
                 "(or a required one is missing), or the ref is no branch or tag: "
                 "GitHub's message above says which",
        }
        self._monitor(what, "dispatch", lambda: self._json(
            "POST", f"/repos/{_repo_path(repo)}/actions/workflows/{quote(workflow, safe='')}"
            "/dispatches", {"ref": ref, "inputs": dict(inputs)}), hints)

    def default_branch(self, repo: str) -> str:
        data = self._call(f"read repository {repo}", "read",
                          lambda: self._json("GET", f"/repos/{_repo_path(repo)}"))
        branch = data.get("default_branch") if isinstance(data, dict) else None
        if not isinstance(branch, str) or not branch:
            raise GitHubError(f"GitHub's answer for repository {repo} names no default branch",
                              hint="run again; report it if it persists")
        return branch

    def _monitor(self, what: str, kind: str, fn: Callable[[], T],
                 hints: Mapping[int, str]) -> T:
        """:meth:`_call`, with the hint of ``hints`` for a 404 or 422 (monitoring knows what
        they mean) and a 403 hint naming the permission (not the report's fork advice)."""
        try:
            return self._call(what, kind, fn)
        except GitHubError as err:
            if err.status is not None and err.status in hints:
                raise GitHubError(err.message, status=err.status, hint=hints[err.status]) from None
            if err.status == 403 and err.permission is not None:
                raise GitHubError(err.message, status=403, permission=err.permission,
                                  hint=f"grant the token `{err.permission}` in the workflow's "
                                  "`permissions:` (a GitHub App token: give the App that "
                                  "permission)") from None
            raise


_ISSUE_HINTS = {
    404: "the repository does not exist, the token cannot see it, or the issue is gone",
    410: "issues are turned off for this repository: turn them on in its settings",
    422: f"GitHub refused the issue: a title is at most {MAX_ISSUE_TITLE} characters, a body "
         f"at most {MAX_ISSUE_BODY}; this is a bug in gha-mlops if both fit: please report it",
}


def issue_ref(data: Any, where: str) -> IssueRef:
    """An issue's JSON as an :class:`IssueRef`, checked (anything else is an error)."""
    if not isinstance(data, dict):
        raise GitHubError(f"{where} is not an issue", hint="run again")
    number, state = data.get("number"), data.get("state")
    labels = data.get("labels") or []
    if (not isinstance(number, int) or isinstance(number, bool) or number < 1
            or state not in ("open", "closed") or not isinstance(labels, list)):
        raise GitHubError(f"{where} is not an issue (number {number!r}, state {state!r})",
                          hint="run again; report it if it persists")
    names = tuple(str(x.get("name", "")) if isinstance(x, dict) else str(x) for x in labels)
    return IssueRef(number, str(data.get("title") or ""), str(data.get("body") or ""),
                    str(state), names, str(data.get("html_url") or ""))


def _repo_path(repo: str) -> str:
    """``owner/name`` checked before it becomes part of a URL path."""
    if not _REPO_NAME.fullmatch(repo) or repo.split("/")[1] in {".", ".."}:
        raise GitHubError(f"{repo!r} is not a repository name owner/name",
                          hint="check GITHUB_REPOSITORY (or the repository given)")
    return repo


def _deployment_ref(data: Any, what: str) -> DeploymentRef:
    """The deployment GitHub answered, checked (a 202 merge answer has no id)."""
    if not isinstance(data, dict) or not isinstance(data.get("id"), int) or isinstance(
            data.get("id"), bool):
        raise GitHubError(f"GitHub's answer to {what} names no deployment: "
                          f"{str(data)[:200]}", hint="run again; report it if it persists")
    return DeploymentRef(int(data["id"]), str(data.get("environment") or ""),
                         str(data.get("url") or ""))


def environment_info(name: str, data: Any) -> EnvironmentInfo:
    """An environment's JSON (``GET /repos/{owner}/{repo}/environments/{name}``) as the
    protection rules it carries; anything unexpected is an error, not a guess."""
    where = f"GitHub's answer for environment {name!r}"
    if not isinstance(data, dict):
        raise GitHubError(f"{where} is not an object", hint="run again")
    rules = data.get("protection_rules") or []
    if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
        raise GitHubError(f"{where}: protection_rules is not a list of objects",
                          hint="run again")
    reviewers = wait = 0
    branch = data.get("deployment_branch_policy") is not None
    for rule in rules:
        kind = rule.get("type")
        if kind == "required_reviewers":
            listed = rule.get("reviewers") or []
            reviewers += len(listed) if isinstance(listed, list) else 0
        elif kind == "wait_timer":
            minutes = rule.get("wait_timer")
            wait = minutes if isinstance(minutes, int) and not isinstance(minutes, bool) else 0
        elif kind == "branch_policy":
            branch = True
    return EnvironmentInfo(str(data.get("name") or name), reviewers, wait, branch)


def download(url: str, *, token: str | None = None, api_url: str = "https://api.github.com",
             timeout: float = 15, what: str | None = None) -> bytes:
    """``GET url`` following redirects, retried on 5xx and connection errors; ``token`` is
    sent only when ``url`` is on ``api_url``'s host (requests drops it on a redirect to
    another host, e.g. the artifact's signed storage URL)."""
    from urllib.parse import urlsplit

    try:
        import requests
        from requests.adapters import HTTPAdapter
    except ImportError:
        raise missing_extra("PyGithub", "github") from None
    what = what or f"download {url}"
    headers = {"Accept": "application/vnd.github+json, application/zip, */*",
               "X-GitHub-Api-Version": "2022-11-28"}
    if token and urlsplit(url).netloc.lower() == urlsplit(api_url).netloc.lower():
        headers["Authorization"] = f"Bearer {token}"
    retry = retry_policy({"GET"})
    with requests.Session() as session:
        session.mount("https://", HTTPAdapter(max_retries=retry))
        session.mount("http://", HTTPAdapter(max_retries=retry))
        try:
            with session.get(url, headers=headers, timeout=timeout, stream=True,
                             allow_redirects=True) as resp:
                if resp.status_code >= 400:
                    raise _http_error(resp, what)
                chunks: list[bytes] = []
                size = 0
                for chunk in resp.iter_content(1 << 16):
                    size += len(chunk)
                    if size > MAX_DOWNLOAD:
                        raise GitHubError(f"{what}: larger than {MAX_DOWNLOAD} bytes",
                                          hint="point at a smaller artifact or record")
                    chunks.append(chunk)
                return b"".join(chunks)
        except requests.RequestException as err:
            raise GitHubError(f"could not {what}: {err}",
                              hint="check the URL, GITHUB_API_URL and the network; "
                              "run again") from None


def _http_error(resp: Any, what: str) -> GitHubError:
    status = int(resp.status_code)
    try:
        data = resp.json()
    except ValueError:
        data = {}
    if status == 410:
        detail = data.get("message", "") if isinstance(data, dict) else ""
        return GitHubError(f"could not {what}: HTTP 410 {detail or 'Gone'}".rstrip(),
                           status=410, hint="the artifact has expired (its retention period "
                           "is over): run the workflow again to upload a fresh one")

    from types import SimpleNamespace

    err = SimpleNamespace(status=status, data=data, headers=dict(resp.headers))
    return translate(err, what, "actions")


def translate(err: Any, what: str, kind: str) -> GitHubError:
    """A PyGithub exception as a :class:`GitHubError` that says what to do."""
    status = getattr(err, "status", None)
    data = getattr(err, "data", None) or {}
    detail = data.get("message", "") if isinstance(data, dict) else str(data)
    headers = {k.lower(): v for k, v in (getattr(err, "headers", None) or {}).items()}
    prefix = f"GitHub refused to {what}: HTTP {status}" + (f" {detail}" if detail else "")
    if status in (403, 429) and headers.get("x-ratelimit-remaining") == "0":
        reset = int(headers.get("x-ratelimit-reset", "0") or 0)
        wait = max(0, reset - int(time.time()))
        return GitHubError(f"GitHub's rate limit is spent while trying to {what}",
                           status=status, hint=f"it resets in {wait} s; run again then, or use "
                           "a token with a higher limit (a GitHub App installation token)")
    if status == 401:
        return GitHubError(prefix, status=status,
                           hint="the token is missing, expired or wrong: pass GITHUB_TOKEN "
                           "(or a GitHub App installation token) to the step")
    if status == 403 and "secondary rate limit" in detail.lower():
        return GitHubError(prefix, status=status, hint="GitHub's secondary rate limit: wait "
                           f"{headers.get('retry-after', 'a minute')} s and run again")
    if status == 403:
        need = PERMISSIONS.get(kind, "write access")
        return GitHubError(prefix, status=status, permission=need,
                           hint=f"grant the token `{need}` in the workflow's `permissions:` "
                           "(fork pull requests get a read-only token: post from a "
                           "workflow_run workflow instead, see docs/report.md)")
    if status == 404:
        return GitHubError(prefix, status=status, hint="check the repository, number or sha; "
                           "a token without access to a private repository also gets 404")
    if status == 422:
        errors = data.get("errors") if isinstance(data, dict) else None
        return GitHubError(prefix + (f" ({errors})" if errors else ""), status=status,
                           hint="GitHub rejected the request's content; this is a bug in "
                           "gha-mlops if the inputs look right: please report it")
    return GitHubError(prefix, status=status,
                       hint="GitHub had a problem (retried where safe); run again later")
