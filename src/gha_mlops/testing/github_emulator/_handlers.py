"""One handler per emulated operation (keyed by GitHub's ``operationId``), and the JSON each
returns. Response bodies start from the description's own examples, rewritten to this server's
URLs and filled from the store, so they carry every field GitHub's schemas require."""

from __future__ import annotations

import base64
import copy
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, urlencode

from ._spec import OpenApiSpec
from ._state import (
    Artifact,
    CheckRun,
    CommitComment,
    CommitStatus,
    GitCommit,
    Issue,
    IssueComment,
    Org,
    Repo,
    Signature,
    Store,
    Token,
    TreeEntry,
    WorkflowRun,
    now_iso,
)

Permission = tuple[str, str]  # (permission, "read" | "write")


class ApiError(Exception):
    """An error answer, shaped like GitHub's (``message``, ``documentation_url``, ``status``)."""

    def __init__(
        self, status: int, message: str, errors: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors


@dataclass
class Request:
    """A routed, validated request as a handler sees it."""

    method: str
    path: str  # below the API prefix, e.g. /repos/o/r/pulls/1
    params: dict[str, Any]  # path parameters, converted to their schema types
    query: dict[str, Any]  # query parameters, converted to their schema types
    body: Any
    token: Token | None
    api_url: str  # http://127.0.0.1:PORT/api/v3
    root_url: str  # http://127.0.0.1:PORT
    store: Store
    spec: OpenApiSpec

    @property
    def login(self) -> str:
        return self.token.login if self.token else "ghost"


@dataclass
class Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Response]
HANDLERS: dict[str, Handler] = {}
PERMISSIONS: dict[str, tuple[Permission, ...]] = {}


def route(operation_id: str, *perms: Permission) -> Callable[[Handler], Handler]:
    """Register a handler; ``perms`` are alternatives (any one of them suffices)."""

    def register(fn: Handler) -> Handler:
        HANDLERS[operation_id] = fn
        PERMISSIONS[operation_id] = perms
        return fn

    return register


# -- rendering ----------------------------------------------------------------------------


def example(req: Request, name: str, full_name: str = "octocat/Hello-World") -> dict[str, Any]:
    """A deep copy of ``components/examples/<name>``, pointed at this server and repository."""
    text = json.dumps(req.spec.document["components"]["examples"][name]["value"])
    text = text.replace("https://api.github.com", req.api_url)
    text = text.replace("https://github.com", req.root_url)
    text = text.replace("octocat/Hello-World", full_name)
    value: dict[str, Any] = json.loads(text)
    return value


def user(req: Request, login: str) -> dict[str, Any]:
    """A ``simple-user`` for ``login`` (``[bot]`` logins are of type Bot)."""
    api = f"{req.api_url}/users/{login}"
    return {
        "login": login,
        "id": abs(hash(login)) % 10_000_000,
        "node_id": "MDQ6VXNlcjE=",
        "avatar_url": f"{req.root_url}/avatars/{login}",
        "gravatar_id": "",
        "url": api,
        "html_url": f"{req.root_url}/{login}",
        "followers_url": f"{api}/followers",
        "following_url": f"{api}/following{{/other_user}}",
        "gists_url": f"{api}/gists{{/gist_id}}",
        "starred_url": f"{api}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{api}/subscriptions",
        "organizations_url": f"{api}/orgs",
        "repos_url": f"{api}/repos",
        "events_url": f"{api}/events{{/privacy}}",
        "received_events_url": f"{api}/received_events",
        "type": _account_type(req, login),
        "site_admin": False,
        "user_view_type": "public",
    }


def _account_type(req: Request, login: str) -> str:
    if login.endswith("[bot]"):
        return "Bot"
    return "Organization" if req.store.org(login) is not None else "User"


def _repo_fields(req: Request, repo: Repo, out: dict[str, Any]) -> dict[str, Any]:
    out.update(
        id=repo.id,
        name=repo.name,
        full_name=repo.full_name,
        owner=user(req, repo.owner),
        private=repo.private,
        visibility="private" if repo.private else "public",
        default_branch=repo.default_branch,
        fork=False,
        created_at=repo.created_at,
    )
    return out


def render_repo(req: Request, repo: Repo) -> dict[str, Any]:
    out = example(req, "full-repository-default-response", repo.full_name)
    out.pop("source", None)
    out.pop("parent", None)
    out.pop("organization", None)
    out.pop("template_repository", None)
    out["language"] = None
    return _repo_fields(req, repo, out)


def render_minimal_repo(req: Request, repo: Repo) -> dict[str, Any]:
    return _repo_fields(req, repo, example(req, "minimal-repository", repo.full_name))


def render_issue_comment(req: Request, c: IssueComment) -> dict[str, Any]:
    out = example(req, "issue-comment", c.repo)
    base = f"{req.api_url}/repos/{c.repo}"
    out.update(
        id=c.id,
        body=c.body,
        user=user(req, c.user),
        created_at=c.created_at,
        updated_at=c.updated_at,
        url=f"{base}/issues/comments/{c.id}",
        html_url=f"{req.root_url}/{c.repo}/issues/{c.issue_number}#issuecomment-{c.id}",
        issue_url=f"{base}/issues/{c.issue_number}",
    )
    out.pop("performed_via_github_app", None)
    return out


def render_issue(req: Request, repo: Repo, issue: Issue) -> dict[str, Any]:
    out = example(req, "issue", repo.full_name)
    base = f"{req.api_url}/repos/{repo.full_name}/issues/{issue.number}"
    kind = "pull" if issue.pull else "issues"
    out.update(
        id=issue.number + repo.id * 1000,
        number=issue.number,
        title=issue.title,
        body=issue.body,
        user=user(req, issue.user),
        state=issue.state,
        url=base,
        comments_url=f"{base}/comments",
        html_url=f"{req.root_url}/{repo.full_name}/{kind}/{issue.number}",
        comments=sum(
            1
            for c in req.store.issue_comments.values()
            if c.repo == repo.full_name and c.issue_number == issue.number
        ),
        created_at=issue.created_at,
        updated_at=issue.updated_at,
        labels=[render_label(req, repo, name) for name in issue.labels],
        assignee=None,
        assignees=[],
        milestone=None,
        closed_by=None,
        closed_at=issue.closed_at,
        state_reason=issue.state_reason,
    )
    if issue.pull is None:
        out.pop("pull_request", None)
    else:
        pulls = f"{req.api_url}/repos/{repo.full_name}/pulls/{issue.number}"
        out["pull_request"] = {
            "url": pulls,
            "html_url": f"{req.root_url}/{repo.full_name}/pull/{issue.number}",
            "diff_url": f"{req.root_url}/{repo.full_name}/pull/{issue.number}.diff",
            "patch_url": f"{req.root_url}/{repo.full_name}/pull/{issue.number}.patch",
            "merged_at": None,
        }
    return out


def render_label(req: Request, repo: Repo, name: str) -> dict[str, Any]:
    """A label of an issue (a label is the repository's: one id per name, ignoring case)."""
    label_id = req.store.label_id(f"{repo.full_name}:{name}")
    return {
        "id": label_id,
        "node_id": f"LA_{label_id}",
        "url": f"{req.api_url}/repos/{repo.full_name}/labels/{quote(name, safe='')}",
        "name": name,
        "description": None,
        "color": "ededed",
        "default": False,
    }


def render_pull(req: Request, repo: Repo, issue: Issue) -> dict[str, Any]:
    pr = issue.pull
    assert pr is not None
    out = example(req, "pull-request", repo.full_name)
    n = issue.number
    base = f"{req.api_url}/repos/{repo.full_name}"
    owner = user(req, repo.owner)
    repo_json = _repo_fields(req, repo, copy.deepcopy(out["head"]["repo"]))
    out.update(
        id=n + repo.id * 1000,
        number=n,
        title=issue.title,
        body=issue.body,
        state=issue.state,
        user=user(req, issue.user),
        draft=pr.draft,
        merged=pr.merged,
        mergeable=True,
        merged_at=None,
        merged_by=None,
        closed_at=None,
        merge_commit_sha=None,
        created_at=issue.created_at,
        updated_at=issue.updated_at,
        url=f"{base}/pulls/{n}",
        html_url=f"{req.root_url}/{repo.full_name}/pull/{n}",
        issue_url=f"{base}/issues/{n}",
        comments_url=f"{base}/issues/{n}/comments",
        review_comments_url=f"{base}/pulls/{n}/comments",
        commits_url=f"{base}/pulls/{n}/commits",
        statuses_url=f"{base}/statuses/{pr.head_sha}",
        labels=[],
        assignee=None,
        assignees=[],
        requested_reviewers=[],
        requested_teams=[],
        milestone=None,
        auto_merge=None,
    )
    for side, ref, sha in (("head", pr.head_ref, pr.head_sha), ("base", pr.base_ref, pr.base_sha)):
        out[side] = {
            "label": f"{repo.owner}:{ref}",
            "ref": ref,
            "sha": sha,
            "user": owner,
            "repo": repo_json,
        }
    return out


def render_check_run(req: Request, run: CheckRun) -> dict[str, Any]:
    out = example(req, "check-run", run.repo)
    url = f"{req.api_url}/repos/{run.repo}/check-runs/{run.id}"
    out.update(
        id=run.id,
        name=run.name,
        head_sha=run.head_sha,
        status=run.status,
        conclusion=run.conclusion,
        started_at=run.started_at,
        completed_at=run.completed_at,
        details_url=run.details_url,
        external_id=run.external_id,
        url=url,
        html_url=f"{req.root_url}/{run.repo}/runs/{run.id}",
        pull_requests=[],
    )
    out["output"] = {
        "title": run.output.get("title"),
        "summary": run.output.get("summary"),
        "text": run.output.get("text"),
        "annotations_count": len(run.annotations),
        "annotations_url": f"{url}/annotations",
    }
    return out


def render_git_commit(req: Request, repo: Repo, c: GitCommit) -> dict[str, Any]:
    base = f"{req.api_url}/repos/{repo.full_name}/git"

    def sig(s: Signature) -> dict[str, Any]:
        return {"name": s.name, "email": s.email, "date": s.date}

    return {
        "sha": c.sha,
        "node_id": "C_" + c.sha[:20],
        "url": f"{base}/commits/{c.sha}",
        "html_url": f"{req.root_url}/{repo.full_name}/commit/{c.sha}",
        "author": sig(c.author),
        "committer": sig(c.committer),
        "message": c.message,
        "tree": {"sha": c.tree, "url": f"{base}/trees/{c.tree}"},
        "parents": [
            {
                "sha": p,
                "url": f"{base}/commits/{p}",
                "html_url": f"{req.root_url}/{repo.full_name}/commit/{p}",
            }
            for p in c.parents
        ],
        "verification": {
            "verified": False,
            "reason": "unsigned",
            "signature": None,
            "payload": None,
            "verified_at": None,
        },
    }


def render_tree(req: Request, repo: Repo, sha: str, recursive: bool = False) -> dict[str, Any]:
    base = f"{req.api_url}/repos/{repo.full_name}/git"
    entries: list[dict[str, Any]] = []

    def walk(tree_sha: str, prefix: str) -> None:
        for e in repo.trees[tree_sha]:
            item: dict[str, Any] = {
                "path": prefix + e.name,
                "mode": e.mode,
                "type": e.type,
                "sha": e.sha,
                "url": f"{base}/{e.type}s/{e.sha}",
            }
            if e.type == "blob":
                item["size"] = len(repo.blobs[e.sha])
            entries.append(item)
            if recursive and e.type == "tree":
                walk(e.sha, f"{prefix}{e.name}/")

    walk(sha, "")
    return {"sha": sha, "url": f"{base}/trees/{sha}", "tree": entries, "truncated": False}


def render_ref(req: Request, repo: Repo, ref: str) -> dict[str, Any]:
    sha = repo.refs[ref]
    base = f"{req.api_url}/repos/{repo.full_name}/git"
    return {
        "ref": ref,
        "node_id": "REF_" + sha[:12],
        "url": f"{base}/{ref}",
        "object": {"type": "commit", "sha": sha, "url": f"{base}/commits/{sha}"},
    }


def render_workflow_run(req: Request, repo: Repo, run: WorkflowRun) -> dict[str, Any]:
    out = example(req, "workflow-run", repo.full_name)
    base = f"{req.api_url}/repos/{repo.full_name}/actions/runs/{run.id}"
    commit = repo.commits.get(run.head_sha)
    out.update(
        id=run.id,
        name=run.name,
        run_number=run.run_number,
        run_attempt=run.run_attempt,
        head_branch=run.head_branch,
        head_sha=run.head_sha,
        path=run.path,
        display_title=run.name,
        event=run.event,
        status=run.status,
        conclusion=run.conclusion,
        created_at=run.created_at,
        updated_at=run.updated_at,
        run_started_at=run.created_at,
        url=base,
        html_url=f"{req.root_url}/{repo.full_name}/actions/runs/{run.id}",
        jobs_url=f"{base}/jobs",
        logs_url=f"{base}/logs",
        artifacts_url=f"{base}/artifacts",
        cancel_url=f"{base}/cancel",
        rerun_url=f"{base}/rerun",
        check_suite_url=f"{req.api_url}/repos/{repo.full_name}/check-suites/{run.id}",
        actor=user(req, run.actor),
        triggering_actor=user(req, run.actor),
        repository=render_minimal_repo(req, repo),
        head_repository=render_minimal_repo(req, repo),
        pull_requests=[
            _run_pull(req, repo, n) for n in run.pull_requests if _pull_of(repo, n) is not None
        ],
    )
    out["head_commit"] = {
        "id": run.head_sha,
        "tree_id": commit.tree if commit else "0" * 40,
        "message": commit.message if commit else "",
        "timestamp": commit.committer.date if commit else run.created_at,
        "author": {"name": commit.author.name, "email": commit.author.email} if commit else None,
        "committer": (
            {"name": commit.committer.name, "email": commit.committer.email} if commit else None
        ),
    }
    return out


def _pull_of(repo: Repo, number: int) -> Issue | None:
    issue = repo.issues.get(number)
    return issue if issue is not None and issue.pull is not None else None


def _run_pull(req: Request, repo: Repo, number: int) -> dict[str, Any]:
    issue = _pull_of(repo, number)
    assert issue is not None and issue.pull is not None
    pr = issue.pull
    rep = {"id": repo.id, "url": f"{req.api_url}/repos/{repo.full_name}", "name": repo.name}
    return {
        "id": number + repo.id * 1000,
        "number": number,
        "url": f"{req.api_url}/repos/{repo.full_name}/pulls/{number}",
        "head": {"ref": pr.head_ref, "sha": pr.head_sha, "repo": rep},
        "base": {"ref": pr.base_ref, "sha": pr.base_sha, "repo": rep},
    }


def render_artifact(req: Request, repo: Repo, a: Artifact) -> dict[str, Any]:
    out = example(req, "artifact", repo.full_name)
    run = req.store.runs[a.run_id]
    base = f"{req.api_url}/repos/{repo.full_name}/actions/artifacts/{a.id}"
    out.update(
        id=a.id,
        node_id=f"MDg6QXJ0aWZhY3Q{a.id}",
        name=a.name,
        size_in_bytes=len(a.data),
        url=base,
        archive_download_url=f"{base}/zip",
        expired=a.expired,
        created_at=a.created_at,
        updated_at=a.created_at,
        expires_at=a.created_at,
        digest=None,
    )
    out["workflow_run"] = {
        "id": run.id,
        "repository_id": repo.id,
        "head_repository_id": repo.id,
        "head_branch": run.head_branch,
        "head_sha": run.head_sha,
    }
    return out


# -- pagination ---------------------------------------------------------------------------


def paginate(req: Request, items: list[Any]) -> tuple[list[Any], dict[str, str]]:
    """Slice ``items`` by ``per_page`` (default 30, at most 100) and ``page``, with GitHub's
    ``Link`` header (``next``/``last`` and ``prev``/``first`` as they apply)."""
    per_page = min(max(int(req.query.get("per_page", 30)), 1), 100)
    page = max(int(req.query.get("page", 1)), 1)
    last = max(math.ceil(len(items) / per_page), 1)
    chunk = items[(page - 1) * per_page : page * per_page]

    def link(n: int, rel: str) -> str:
        query = {k: _query_text(v) for k, v in req.query.items()}
        query.update(per_page=str(per_page), page=str(n))
        return f'<{req.api_url}{req.path}?{urlencode(query)}>; rel="{rel}"'

    links = []
    if page > 1:
        links += [link(min(page - 1, last), "prev"), link(1, "first")]
    if page < last:
        links += [link(page + 1, "next"), link(last, "last")]
    return chunk, ({"Link": ", ".join(links)} if links else {})


def _query_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# -- lookups ------------------------------------------------------------------------------


def _repo(req: Request) -> Repo:
    repo = req.store.repo(req.params["owner"], req.params["repo"])
    if repo is None or (repo.private and req.token is None) or not reaches(req, repo.full_name):
        raise ApiError(404, "Not Found")
    return repo


def reaches(req: Request, full_name: str) -> bool:
    """Whether the request's token may see the repository (an installation token sees the
    repositories of its installation only)."""
    if req.token is None or req.token.installation_id is None:
        return True
    installation = req.store.installations.get(req.token.installation_id)
    return installation is not None and installation.covers(full_name)


def org_of(req: Request) -> Org:
    """The organization of the ``org`` path parameter (404 if unknown); an installation token
    of another account gets 403, as GitHub answers."""
    org = req.store.org(req.params["org"])
    if org is None:
        raise ApiError(404, "Not Found")
    token = req.token
    if token is not None and token.installation_id is not None:
        installation = req.store.installations.get(token.installation_id)
        if installation is None or installation.account.lower() != org.login.lower():
            raise ApiError(403, f"Resource not accessible by {token.kind}")
    return org


class _OfRepo(Protocol):
    repo: str  # the full name of the repository the object belongs to


Owned = TypeVar("Owned", bound=_OfRepo)


def in_repo(items: Mapping[int, Owned], key: int, repo: Repo) -> Owned:
    """``items[key]`` if it belongs to ``repo``; 404 otherwise."""
    found = items.get(key)
    if found is None or found.repo != repo.full_name:
        raise ApiError(404, "Not Found")
    return found


def _issue(req: Request, repo: Repo, number: int) -> Issue:
    issue = repo.issues.get(number)
    if issue is None:
        raise ApiError(404, "Not Found")
    return issue


def _comment(req: Request, repo: Repo) -> IssueComment:
    return in_repo(req.store.issue_comments, req.params["comment_id"], repo)


def _commit_sha(repo: Repo, ref: str, status: int = 422) -> str:
    sha = repo.resolve(ref)
    if sha is None:
        raise ApiError(status, f"No commit found for SHA: {ref}")
    return sha


# -- repositories, issues, pulls ----------------------------------------------------------

ISSUES_READ = (("issues", "read"), ("pull_requests", "read"))
ISSUES_WRITE = (("issues", "write"), ("pull_requests", "write"))


@route("repos/get", ("metadata", "read"))
def get_repo(req: Request) -> Response:
    return Response(200, render_repo(req, _repo(req)))


@route("issues/get", *ISSUES_READ)
def get_issue(req: Request) -> Response:
    repo = _repo(req)
    return Response(200, render_issue(req, repo, _issue(req, repo, req.params["issue_number"])))


@route("pulls/get", ("pull_requests", "read"))
def get_pull(req: Request) -> Response:
    repo = _repo(req)
    issue = _issue(req, repo, req.params["pull_number"])
    if issue.pull is None:
        raise ApiError(404, "Not Found")
    return Response(200, render_pull(req, repo, issue))


@route("issues/list-comments", *ISSUES_READ)
def list_issue_comments(req: Request) -> Response:
    repo = _repo(req)
    number = req.params["issue_number"]
    _issue(req, repo, number)
    since = req.query.get("since")
    comments = [
        c
        for c in sorted(req.store.issue_comments.values(), key=lambda c: c.id)
        if c.repo == repo.full_name
        and c.issue_number == number
        and (since is None or c.updated_at >= since)
    ]
    chunk, headers = paginate(req, comments)
    return Response(200, [render_issue_comment(req, c) for c in chunk], headers)


@route("issues/create-comment", *ISSUES_WRITE)
def create_issue_comment(req: Request) -> Response:
    repo = _repo(req)
    number = req.params["issue_number"]
    _issue(req, repo, number)
    _check_comment_length(req.body["body"])
    c = IssueComment(req.store.ids(), repo.full_name, number, req.body["body"], req.login)
    req.store.issue_comments[c.id] = c
    return Response(
        201, render_issue_comment(req, c), {"Location": render_issue_comment(req, c)["url"]}
    )


def _check_comment_length(body: str) -> None:
    if len(body) > 65536:
        raise ApiError(
            422,
            "Validation Failed",
            [
                {
                    "resource": "IssueComment",
                    "code": "unprocessable",
                    "field": "data",
                    "message": "Body is too long (maximum is 65536 characters)",
                }
            ],
        )


@route("issues/get-comment", *ISSUES_READ)
def get_issue_comment(req: Request) -> Response:
    repo = _repo(req)
    return Response(200, render_issue_comment(req, _comment(req, repo)))


@route("issues/update-comment", *ISSUES_WRITE)
def update_issue_comment(req: Request) -> Response:
    repo = _repo(req)
    c = _comment(req, repo)
    _check_comment_length(req.body["body"])
    c.body = req.body["body"]
    c.updated_at = now_iso()
    return Response(200, render_issue_comment(req, c))


@route("issues/delete-comment", *ISSUES_WRITE)
def delete_issue_comment(req: Request) -> Response:
    repo = _repo(req)
    c = _comment(req, repo)
    del req.store.issue_comments[c.id]
    return Response(204)


# -- commits, comments, checks, statuses --------------------------------------------------


@route("repos/get-commit", ("contents", "read"))
def get_commit(req: Request) -> Response:
    repo = _repo(req)
    sha = _commit_sha(repo, req.params["ref"])
    c = repo.commits[sha]
    git = render_git_commit(req, repo, c)
    out = example(req, "commit", repo.full_name)
    out.update(
        sha=sha,
        node_id=git["node_id"],
        url=f"{req.api_url}/repos/{repo.full_name}/commits/{sha}",
        html_url=git["html_url"],
        comments_url=f"{req.api_url}/repos/{repo.full_name}/commits/{sha}/comments",
        author=None,
        committer=None,
        parents=git["parents"],
        files=[],
        stats={"additions": 0, "deletions": 0, "total": 0},
    )
    out["commit"] = {
        "url": git["url"],
        "author": git["author"],
        "committer": git["committer"],
        "message": c.message,
        "tree": git["tree"],
        "comment_count": 0,
        "verification": git["verification"],
    }
    return Response(200, out)


@route("repos/create-commit-comment", ("contents", "write"))
def create_commit_comment(req: Request) -> Response:
    repo = _repo(req)
    sha = _commit_sha(repo, req.params["commit_sha"])
    b = req.body
    c = CommitComment(
        req.store.ids(),
        repo.full_name,
        sha,
        b["body"],
        req.login,
        b.get("path"),
        b.get("position"),
        b.get("line"),
    )
    req.store.commit_comments[c.id] = c
    out = example(req, "commit-comment", repo.full_name)
    out.update(
        id=c.id,
        body=c.body,
        path=c.path,
        position=c.position,
        line=c.line,
        commit_id=sha,
        user=user(req, c.user),
        created_at=c.created_at,
        updated_at=c.created_at,
        url=f"{req.api_url}/repos/{repo.full_name}/comments/{c.id}",
        html_url=f"{req.root_url}/{repo.full_name}/commit/{sha}#commitcomment-{c.id}",
    )
    return Response(201, out)


def _apply_check_fields(run: CheckRun, body: dict[str, Any]) -> None:
    for key in ("name", "details_url", "external_id", "started_at", "completed_at"):
        if key in body:
            setattr(run, key, body[key])
    if "status" in body:
        run.status = body["status"]
    if body.get("conclusion") is not None:
        run.conclusion = body["conclusion"]
        run.status = "completed"
    if run.status == "completed" and run.conclusion is None:
        raise ApiError(
            422,
            'Invalid request.\n\nNo subschema in "anyOf" matched.\n"conclusion" wasn\'t supplied.',
        )
    if run.status == "completed" and run.completed_at is None:
        run.completed_at = now_iso()
    if run.status != "queued" and run.started_at is None:
        run.started_at = now_iso()
    if "output" in body:
        out = body["output"]
        if "title" not in out or "summary" not in out:
            raise ApiError(422, 'Invalid request.\n\n"title", "summary" weren\'t supplied.')
        run.output = {k: out.get(k) for k in ("title", "summary", "text")}
        run.annotations.extend(out.get("annotations", []))


@route("checks/create", ("checks", "write"))
def create_check_run(req: Request) -> Response:
    repo = _repo(req)
    sha = _commit_sha(repo, req.body["head_sha"])
    run = CheckRun(req.store.ids(), repo.full_name, req.body["name"], sha)
    _apply_check_fields(run, req.body)
    req.store.check_runs[run.id] = run
    return Response(201, render_check_run(req, run))


def _check_run(req: Request, repo: Repo) -> CheckRun:
    return in_repo(req.store.check_runs, req.params["check_run_id"], repo)


@route("checks/update", ("checks", "write"))
def update_check_run(req: Request) -> Response:
    repo = _repo(req)
    run = _check_run(req, repo)
    _apply_check_fields(run, req.body)
    return Response(200, render_check_run(req, run))


@route("checks/get", ("checks", "read"))
def get_check_run(req: Request) -> Response:
    repo = _repo(req)
    return Response(200, render_check_run(req, _check_run(req, repo)))


@route("checks/list-for-ref", ("checks", "read"))
def list_check_runs(req: Request) -> Response:
    repo = _repo(req)
    sha = _commit_sha(repo, req.params["ref"])
    runs = [
        r
        for r in sorted(req.store.check_runs.values(), key=lambda r: -r.id)
        if r.repo == repo.full_name
        and r.head_sha == sha
        and req.query.get("check_name", r.name) == r.name
        and req.query.get("status", r.status) == r.status
    ]
    if req.query.get("filter", "latest") == "latest":
        seen: set[str] = set()
        runs = [r for r in runs if not (r.name in seen or seen.add(r.name))]  # type: ignore[func-returns-value]
    chunk, headers = paginate(req, runs)
    body = {"total_count": len(runs), "check_runs": [render_check_run(req, r) for r in chunk]}
    return Response(200, body, headers)


@route("repos/create-commit-status", ("statuses", "write"))
def create_status(req: Request) -> Response:
    repo = _repo(req)
    sha = _commit_sha(repo, req.params["sha"])
    b = req.body
    s = CommitStatus(
        req.store.ids(),
        repo.full_name,
        sha,
        b["state"],
        b.get("context") or "default",
        b.get("description"),
        b.get("target_url"),
        req.login,
    )
    req.store.statuses[s.id] = s
    out = example(req, "status", repo.full_name)
    out.update(
        id=s.id,
        url=f"{req.api_url}/repos/{repo.full_name}/statuses/{sha}",
        state=s.state,
        description=s.description,
        target_url=s.target_url,
        context=s.context,
        created_at=s.created_at,
        updated_at=s.created_at,
        creator=user(req, s.user),
    )
    return Response(201, out)


# -- git data -----------------------------------------------------------------------------


@route("git/create-blob", ("contents", "write"))
def create_blob(req: Request) -> Response:
    repo = _repo(req)
    content = req.body["content"]
    if req.body.get("encoding", "utf-8") == "base64":
        try:
            data = base64.b64decode(content, validate=False)
        except ValueError as err:
            raise ApiError(422, "Invalid request.\n\ncontent is not valid Base64.") from err
    else:
        data = content.encode()
    sha = repo.add_blob(data)
    url = f"{req.api_url}/repos/{repo.full_name}/git/blobs/{sha}"
    return Response(201, {"url": url, "sha": sha}, {"Location": url})


@route("git/get-blob", ("contents", "read"))
def get_blob(req: Request) -> Response:
    repo = _repo(req)
    sha = req.params["file_sha"]
    if sha not in repo.blobs:
        raise ApiError(404, "Not Found")
    data = repo.blobs[sha]
    return Response(
        200,
        {
            "content": base64.encodebytes(data).decode(),
            "encoding": "base64",
            "url": f"{req.api_url}/repos/{repo.full_name}/git/blobs/{sha}",
            "sha": sha,
            "size": len(data),
            "node_id": "B_" + sha[:12],
        },
    )


_TYPE_OF_MODE = {
    "100644": "blob",
    "100755": "blob",
    "120000": "blob",
    "040000": "tree",
    "160000": "commit",
}


@route("git/create-tree", ("contents", "write"))
def create_tree(req: Request) -> Response:
    repo = _repo(req)
    files: dict[str, TreeEntry] = {}
    base = req.body.get("base_tree")
    if base is not None:
        if base not in repo.trees:
            raise ApiError(422, "Invalid request.\n\nbase_tree is not a valid tree oid")
        files = repo.flatten(base)
    for item in req.body["tree"]:
        path = item.get("path")
        if not path:
            raise ApiError(422, 'Invalid request.\n\n"path" wasn\'t supplied.')
        mode = item.get("mode", "100644")
        kind = item.get("type", _TYPE_OF_MODE[mode])
        if "content" in item:
            sha = repo.add_blob(item["content"].encode())
        elif item.get("sha") is None:
            if "sha" in item:  # an explicit null deletes the path
                files = {
                    p: e for p, e in files.items() if p != path and not p.startswith(path + "/")
                }
                continue
            raise ApiError(422, "Invalid request.\n\nMust supply either tree.sha or tree.content")
        else:
            sha = item["sha"]
            known = repo.blobs if kind == "blob" else repo.trees if kind == "tree" else None
            if known is not None and sha not in known:
                raise ApiError(422, f"Invalid request.\n\n{sha} is not a valid {kind} oid")
        if kind == "tree":
            files = {p: e for p, e in files.items() if not p.startswith(path + "/")}
            files.update({f"{path}/{p}": e for p, e in repo.flatten(sha).items()})
        else:
            files[path] = TreeEntry(path, mode, kind, sha)
    sha = repo.build_tree(files)
    out = render_tree(req, repo, sha)
    return Response(201, out, {"Location": out["url"]})


@route("git/get-tree", ("contents", "read"))
def get_tree(req: Request) -> Response:
    repo = _repo(req)
    sha = repo.resolve(req.params["tree_sha"])
    sha = repo.commits[sha].tree if sha else req.params["tree_sha"]
    if sha not in repo.trees:
        raise ApiError(404, "Not Found")
    recursive = req.query.get("recursive") not in (None, "", "0", "false")
    return Response(200, render_tree(req, repo, sha, recursive))


def _signature(value: dict[str, Any] | None, fallback: Signature) -> Signature:
    if not value:
        return fallback
    return Signature(value["name"], value["email"], value.get("date") or now_iso())


@route("git/create-commit", ("contents", "write"))
def create_git_commit(req: Request) -> Response:
    repo = _repo(req)
    b = req.body
    if b["tree"] not in repo.trees:
        raise ApiError(422, "Tree SHA does not exist")
    parents = b.get("parents", [])
    for p in parents:
        if p not in repo.commits:
            raise ApiError(422, "Parent SHA does not exist or is not a commit object")
    default = Signature(req.login, f"{req.login}@users.noreply.github.com", now_iso())
    author = _signature(b.get("author"), default)
    commit = repo.add_commit(
        b["tree"], parents, b["message"], author, _signature(b.get("committer"), author)
    )
    out = render_git_commit(req, repo, commit)
    return Response(201, out, {"Location": out["url"]})


@route("git/get-commit", ("contents", "read"))
def get_git_commit(req: Request) -> Response:
    repo = _repo(req)
    c = repo.commits.get(req.params["commit_sha"])
    if c is None:
        raise ApiError(404, "Not Found")
    return Response(200, render_git_commit(req, repo, c))


@route("git/create-ref", ("contents", "write"))
def create_ref(req: Request) -> Response:
    repo = _repo(req)
    ref, sha = req.body["ref"], req.body["sha"]
    if not ref.startswith("refs/") or ref.count("/") < 2:
        raise ApiError(422, "Reference name must start with 'refs/' and have at least two slashes.")
    if ref in repo.refs:
        raise ApiError(422, "Reference already exists")
    if sha not in repo.commits:
        raise ApiError(422, "Object does not exist")
    repo.refs[ref] = sha
    out = render_ref(req, repo, ref)
    return Response(201, out, {"Location": out["url"]})


def _is_ancestor(repo: Repo, old: str, new: str) -> bool:
    todo, seen = [new], set()
    while todo:
        sha = todo.pop()
        if sha == old:
            return True
        if sha in seen or sha not in repo.commits:
            continue
        seen.add(sha)
        todo.extend(repo.commits[sha].parents)
    return False


@route("git/update-ref", ("contents", "write"))
def update_ref(req: Request) -> Response:
    repo = _repo(req)
    ref = "refs/" + req.params["ref"].removeprefix("refs/")
    if ref not in repo.refs:
        raise ApiError(422, "Reference does not exist")
    sha = req.body["sha"]
    if sha not in repo.commits:
        raise ApiError(422, "Object does not exist")
    if not req.body.get("force") and not _is_ancestor(repo, repo.refs[ref], sha):
        raise ApiError(422, "Update is not a fast forward")
    repo.refs[ref] = sha
    return Response(200, render_ref(req, repo, ref))


@route("git/delete-ref", ("contents", "write"))
def delete_ref(req: Request) -> Response:
    repo = _repo(req)
    ref = "refs/" + req.params["ref"].removeprefix("refs/")
    if repo.refs.pop(ref, None) is None:
        raise ApiError(422, "Reference does not exist")
    return Response(204)


@route("git/get-ref", ("contents", "read"))
def get_ref(req: Request) -> Response:
    repo = _repo(req)
    ref = "refs/" + req.params["ref"].removeprefix("refs/")
    if ref not in repo.refs:
        raise ApiError(404, "Not Found")
    return Response(200, render_ref(req, repo, ref))


@route("git/list-matching-refs", ("contents", "read"))
def list_matching_refs(req: Request) -> Response:
    repo = _repo(req)
    prefix = "refs/" + req.params["ref"].removeprefix("refs/")
    return Response(
        200, [render_ref(req, repo, r) for r in sorted(repo.refs) if r.startswith(prefix)]
    )


@route("repos/get-content", ("contents", "read"))
def get_content(req: Request) -> Response:
    repo = _repo(req)
    ref = req.query.get("ref") or repo.default_branch
    sha = repo.resolve(ref)
    if sha is None:
        raise ApiError(404, f"No commit found for the ref {ref}")
    path = req.params["path"].strip("/")
    files = repo.flatten(repo.commits[sha].tree)

    def item(p: str, e: TreeEntry | None, kind: str, size: int, obj: str) -> dict[str, Any]:
        api = f"{req.api_url}/repos/{repo.full_name}/contents/{p}?ref={ref}"
        git = f"{req.api_url}/repos/{repo.full_name}/git/{'trees' if kind == 'dir' else 'blobs'}/{obj}"
        html = f"{req.root_url}/{repo.full_name}/{'tree' if kind == 'dir' else 'blob'}/{ref}/{p}"
        return {
            "type": kind,
            "size": size,
            "name": p.rsplit("/", 1)[-1],
            "path": p,
            "sha": obj,
            "url": api,
            "git_url": git,
            "html_url": html,
            "download_url": None
            if kind == "dir"
            else f"{req.root_url}/raw/{repo.full_name}/{ref}/{p}",
            "_links": {"self": api, "git": git, "html": html},
        }

    if path in files:
        e = files[path]
        data = repo.blobs[e.sha]
        out = item(path, e, "file", len(data), e.sha)
        out.update(encoding="base64", content=base64.encodebytes(data).decode())
        return Response(200, out)
    below = {p: e for p, e in files.items() if p.startswith(path + "/")}
    if not below:
        raise ApiError(404, "Not Found")
    listing: dict[str, dict[str, Any]] = {}
    for p, e in below.items():
        child = p[len(path) + 1 :].split("/", 1)[0]
        full = f"{path}/{child}"
        if full in files:
            listing[child] = item(full, e, "file", len(repo.blobs[e.sha]), e.sha)
        elif child not in listing:
            listing[child] = item(full, None, "dir", 0, "0" * 40)
    return Response(200, [listing[k] for k in sorted(listing)])


# -- actions ------------------------------------------------------------------------------

_CONCLUSIONS = {
    "action_required",
    "cancelled",
    "failure",
    "neutral",
    "skipped",
    "stale",
    "success",
    "timed_out",
}


@route("actions/list-workflow-runs-for-repo", ("actions", "read"))
def list_workflow_runs(req: Request) -> Response:
    repo = _repo(req)
    q = req.query

    def keep(r: WorkflowRun) -> bool:
        status = q.get("status")
        if status is not None and status != (r.conclusion if status in _CONCLUSIONS else r.status):
            return False
        return bool(
            q.get("branch", r.head_branch) == r.head_branch
            and q.get("event", r.event) == r.event
            and q.get("actor", r.actor) == r.actor
            and q.get("head_sha", r.head_sha) == r.head_sha
        )

    runs = [
        r
        for r in sorted(req.store.runs.values(), key=lambda r: -r.id)
        if r.repo == repo.full_name and keep(r)
    ]
    chunk, headers = paginate(req, runs)
    body = {
        "total_count": len(runs),
        "workflow_runs": [render_workflow_run(req, repo, r) for r in chunk],
    }
    return Response(200, body, headers)


def _run(req: Request, repo: Repo) -> WorkflowRun:
    return in_repo(req.store.runs, req.params["run_id"], repo)


@route("actions/get-workflow-run", ("actions", "read"))
def get_workflow_run(req: Request) -> Response:
    repo = _repo(req)
    return Response(200, render_workflow_run(req, repo, _run(req, repo)))


@route("actions/list-workflow-run-artifacts", ("actions", "read"))
def list_run_artifacts(req: Request) -> Response:
    repo = _repo(req)
    run = _run(req, repo)
    found = [
        a
        for a in sorted(req.store.artifacts.values(), key=lambda a: a.id)
        if a.run_id == run.id and req.query.get("name", a.name) == a.name
    ]
    if req.query.get("direction") == "desc":
        found.reverse()
    chunk, headers = paginate(req, found)
    body = {"total_count": len(found), "artifacts": [render_artifact(req, repo, a) for a in chunk]}
    return Response(200, body, headers)


def _artifact(req: Request, repo: Repo) -> Artifact:
    return in_repo(req.store.artifacts, req.params["artifact_id"], repo)


@route("actions/get-artifact", ("actions", "read"))
def get_artifact(req: Request) -> Response:
    repo = _repo(req)
    return Response(200, render_artifact(req, repo, _artifact(req, repo)))


@route("actions/download-artifact", ("actions", "read"))
def download_artifact(req: Request) -> Response:
    repo = _repo(req)
    a = _artifact(req, repo)
    if req.params["archive_format"] != "zip":
        raise ApiError(404, "Not Found")
    if a.expired:
        raise ApiError(410, "Artifact has expired")
    return Response(302, None, {"Location": f"{req.root_url}/_emulator/artifacts/{a.id}.zip"})


@route("rate-limit/get")
def get_rate_limit(req: Request) -> Response:
    out = example(req, "rate-limit-overview")
    if req.token is not None:
        t = req.token
        core = {
            "limit": t.rate_limit,
            "used": t.used,
            "remaining": max(t.rate_limit - t.used, 0),
            "reset": t.reset_at,
        }
        out["resources"]["core"] = core
        out["rate"] = core
    return Response(200, out)
