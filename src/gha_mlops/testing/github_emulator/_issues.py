"""Issues (listed, opened, edited, closed) and workflows with their ``workflow_dispatch``.

As on GitHub: the repository's issue list holds pull requests too (each with a
``pull_request`` key), open ones by default, newest first, filtered by ``labels`` (every one
named, ignoring case); an issue's title is at most 256 characters and its body 65,536; labels
that do not exist yet are created with the issue; closing sets ``closed_at`` and a
``state_reason`` (``completed`` unless given), reopening clears them.

A workflow is named by its id or its file name. A dispatch of a workflow the repository lacks
is 404; one without a ``workflow_dispatch`` trigger, disabled, on a ref that is not a branch
or tag, with an input the trigger does not declare, without a required input, or with a
choice outside its options is 422 with GitHub's messages. An accepted dispatch is 204 (200
with the run's ids when ``return_run_details`` is true), is recorded in ``Repo.dispatches``
and queues a ``workflow_dispatch`` run of the workflow.
"""

from __future__ import annotations

import json
from typing import Any

from ._handlers import (
    ApiError,
    Request,
    Response,
    _issue,
    _repo,
    example,
    paginate,
    render_issue,
    route,
)
from ._state import Dispatch, Issue, Repo, Workflow, now_iso

ISSUES_READ = (("issues", "read"),)
ISSUES_WRITE = (("issues", "write"),)
# Editing through the issues API works on pull requests too, with either permission.
ISSUES_EDIT = (("issues", "write"), ("pull_requests", "write"))
ACTIONS_READ = (("actions", "read"),)
ACTIONS_WRITE = (("actions", "write"),)
MAX_TITLE = 256
MAX_BODY = 65536

# -- issues -------------------------------------------------------------------------------


def _too_long(field: str, most: int) -> ApiError:
    return ApiError(422, "Validation Failed", [{
        "resource": "Issue", "code": "custom", "field": field,
        "message": f"{field} is too long (maximum is {most} characters)"}])


def _text(value: Any) -> str:
    return str(value)  # GitHub takes an integer title as its digits


def _check(title: str | None, body: str | None) -> None:
    if title is not None and not title.strip():
        raise ApiError(422, "Validation Failed", [{
            "resource": "Issue", "code": "missing_field", "field": "title"}])
    if title is not None and len(title) > MAX_TITLE:
        raise _too_long("title", MAX_TITLE)
    if body is not None and len(body) > MAX_BODY:
        raise _too_long("body", MAX_BODY)


def _label_names(raw: list[Any]) -> list[str]:
    names: list[str] = []
    for item in raw:
        name = item.get("name", "") if isinstance(item, dict) else str(item)
        if name and name.lower() not in {n.lower() for n in names}:
            names.append(name)
    return names


def _matches(issue: Issue, req: Request) -> bool:
    q = req.query
    state = q.get("state", "open")
    if state != "all" and issue.state != state:
        return False
    wanted = [w.strip().lower() for w in str(q.get("labels", "")).split(",") if w.strip()]
    have = {label.lower() for label in issue.labels}
    if any(w not in have for w in wanted):
        return False
    creator = q.get("creator")
    return creator is None or str(creator).lower() == issue.user.lower()


@route("issues/list-for-repo", *ISSUES_READ)
def list_issues(req: Request) -> Response:
    repo = _repo(req)
    key = {"created": lambda i: (i.created_at, i.number),
           "updated": lambda i: (i.updated_at, i.number),
           "comments": lambda i: (0, i.number)}[req.query.get("sort", "created")]
    found = sorted((i for i in repo.issues.values() if _matches(i, req)), key=key,
                   reverse=req.query.get("direction", "desc") == "desc")
    since = req.query.get("since")
    if since is not None:
        found = [i for i in found if i.updated_at >= since]
    chunk, headers = paginate(req, found)
    return Response(200, [render_issue(req, repo, i) for i in chunk], headers)


@route("issues/create", *ISSUES_WRITE)
def create_issue(req: Request) -> Response:
    repo = _repo(req)
    b = req.body
    title = _text(b["title"])
    body = b.get("body")
    _check(title, body)
    number = max(repo.issues, default=0) + 1
    issue = Issue(number, title, body, req.login, labels=_label_names(b.get("labels") or []))
    repo.issues[number] = issue
    out = render_issue(req, repo, issue)
    return Response(201, out, {"Location": out["url"]})


def _set_state(issue: Issue, state: str, reason: str | None) -> None:
    if state == issue.state:
        return
    issue.state = state
    if state == "closed":
        issue.closed_at, issue.state_reason = now_iso(), reason or "completed"
    else:
        issue.closed_at, issue.state_reason = None, "reopened"


@route("issues/update", *ISSUES_EDIT)
def update_issue(req: Request) -> Response:
    repo = _repo(req)
    issue = _issue(req, repo, req.params["issue_number"])
    b = req.body or {}
    title = _text(b["title"]) if b.get("title") is not None else None
    body = b.get("body")
    _check(title, body)
    if title is not None:
        issue.title = title
    if "body" in b:
        issue.body = body
    if "labels" in b:
        issue.labels = _label_names(b["labels"] or [])
    if "state" in b:
        _set_state(issue, b["state"], b.get("state_reason"))
    issue.updated_at = now_iso()
    return Response(200, render_issue(req, repo, issue))


# -- workflows ----------------------------------------------------------------------------


def render_workflow(req: Request, repo: Repo, wf: Workflow) -> dict[str, Any]:
    out = example(req, "workflow", repo.full_name)
    out.update(
        id=wf.id,
        node_id=f"W_{wf.id}",
        name=wf.name,
        path=wf.path,
        state=wf.state,
        created_at=wf.created_at,
        updated_at=wf.created_at,
        url=f"{req.api_url}/repos/{repo.full_name}/actions/workflows/{wf.id}",
        html_url=f"{req.root_url}/{repo.full_name}/blob/{repo.default_branch}/{wf.path}",
        badge_url=f"{req.root_url}/{repo.full_name}/workflows/{wf.name}/badge.svg",
    )
    return out


def _workflow(req: Request, repo: Repo) -> Workflow:
    """The workflow of the ``workflow_id`` parameter: an id, or a file name (404 if none)."""
    key = str(req.params["workflow_id"])
    for wf in repo.workflows.values():
        if key == str(wf.id) or key == wf.path.rsplit("/", 1)[-1] or key == wf.path:
            return wf
    raise ApiError(404, "Not Found")


@route("actions/list-repo-workflows", *ACTIONS_READ)
def list_workflows(req: Request) -> Response:
    repo = _repo(req)
    found = sorted(repo.workflows.values(), key=lambda w: w.id)
    chunk, headers = paginate(req, found)
    return Response(200, {"total_count": len(found),
                          "workflows": [render_workflow(req, repo, w) for w in chunk]}, headers)


@route("actions/get-workflow", *ACTIONS_READ)
def get_workflow(req: Request) -> Response:
    repo = _repo(req)
    return Response(200, render_workflow(req, repo, _workflow(req, repo)))


def _dispatch_ref(repo: Repo, ref: str) -> str:
    """The commit of a branch or tag (GitHub dispatches on those only, not on a sha)."""
    name = ref.removeprefix("refs/heads/").removeprefix("refs/tags/")
    for candidate in (ref, f"refs/heads/{name}", f"refs/tags/{name}"):
        if candidate.startswith("refs/") and candidate in repo.refs:
            return repo.refs[candidate]
    raise ApiError(422, f"No ref found for: {ref}")


def _check_inputs(wf: Workflow, inputs: dict[str, Any]) -> None:
    """GitHub's 422 for inputs the trigger does not take, lacks or does not allow."""
    unexpected = sorted(set(inputs) - set(wf.inputs))
    if unexpected:
        raise ApiError(422, f"Unexpected inputs provided: {json.dumps(unexpected)}")
    for name, spec in wf.inputs.items():
        if spec.get("required") and name not in inputs and spec.get("default") is None:
            raise ApiError(422, f"Required input '{name}' not provided")
        value = inputs.get(name)
        if value is None:
            continue
        if not isinstance(value, (str, int, float, bool)):
            raise ApiError(422, f"Provided value for input '{name}' is not a string")
        options = spec.get("options")
        if spec.get("type") == "choice" and options is not None and str(value) not in options:
            raise ApiError(422, f"Provided value '{value}' for input '{name}' not in the list "
                                "of allowed values")
        if spec.get("type") == "boolean" and str(value).lower() not in {"true", "false"}:
            raise ApiError(422, f"Provided value '{value}' for input '{name}' is not a boolean")


@route("actions/create-workflow-dispatch", *ACTIONS_WRITE)
def create_dispatch(req: Request) -> Response:
    repo = _repo(req)
    wf = _workflow(req, repo)
    b = req.body
    if not wf.dispatch:
        raise ApiError(422, "Workflow does not have 'workflow_dispatch' trigger")
    if wf.state != "active":
        raise ApiError(422, "Cannot trigger a 'workflow_dispatch' on a disabled workflow")
    sha = _dispatch_ref(repo, b["ref"])
    inputs = dict(b.get("inputs") or {})
    _check_inputs(wf, inputs)
    branch = b["ref"].removeprefix("refs/heads/").removeprefix("refs/tags/")
    run_id = repo.add_workflow_run(name=wf.name, head_branch=branch, head_sha=sha,
                                   event="workflow_dispatch", status="queued", conclusion=None,
                                   path=wf.path, actor=req.login)
    repo.dispatches.append(Dispatch(wf.id, wf.path, b["ref"], sha, inputs, req.login, run_id))
    if not b.get("return_run_details"):
        return Response(204)
    base = f"{req.api_url}/repos/{repo.full_name}/actions/runs/{run_id}"
    return Response(200, {"workflow_run_id": run_id, "run_url": base,
                          "html_url": f"{req.root_url}/{repo.full_name}/actions/runs/{run_id}"})
