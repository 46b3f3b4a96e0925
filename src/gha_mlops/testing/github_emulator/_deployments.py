"""Deployments, their statuses and deployment environments with their protection rules.

As on GitHub: a deployment resolves its ref to a commit, verifies the commit's status checks
(every context, or ``required_contexts``; an empty list skips them) and answers 409 when they
did not pass; a deployment to an environment the repository lacks creates it; a ``success``
status with ``auto_inactive`` (the default) adds an ``inactive`` status to the environment's
earlier successful non-transient, non-production deployments; ``log_url`` sets ``target_url``.
The emulator merges nothing: a ref behind the default branch with ``auto_merge`` (the default)
is answered as a merge conflict (409). Environment names are case-insensitive.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from ._handlers import (
    ApiError,
    Request,
    Response,
    _is_ancestor,
    _repo,
    example,
    paginate,
    route,
    user,
)
from ._state import Deployment, DeploymentStatus, Environment, Repo, Reviewer, now_iso

DEPLOYMENTS_READ = ("deployments", "read")
DEPLOYMENTS_WRITE = ("deployments", "write")
ENVIRONMENTS_READ = ("actions", "read")  # what GitHub asks of a token to read environments
ENVIRONMENTS_WRITE = ("administration", "write")
_PASSED = {"success", "neutral", "skipped"}  # check-run conclusions that pass a context
MAX_REVIEWERS = 6
MAX_WAIT_TIMER = 43_200  # minutes (30 days)

# -- rendering ----------------------------------------------------------------------------


def render_deployment(req: Request, repo: Repo, d: Deployment) -> dict[str, Any]:
    out = example(req, "deployment", repo.full_name)
    base = f"{req.api_url}/repos/{repo.full_name}"
    out.update(
        id=d.id,
        node_id=f"DE_{d.id}",
        url=f"{base}/deployments/{d.id}",
        sha=d.sha,
        ref=d.ref,
        task=d.task,
        payload=d.payload,
        original_environment=d.original_environment,
        environment=d.environment,
        description=d.description,
        creator=user(req, d.user),
        created_at=d.created_at,
        updated_at=d.updated_at,
        statuses_url=f"{base}/deployments/{d.id}/statuses",
        repository_url=base,
        transient_environment=d.transient,
        production_environment=d.production,
        performed_via_github_app=None,
    )
    return out


def render_status(req: Request, repo: Repo, d: Deployment, s: DeploymentStatus) -> dict[str, Any]:
    out = example(req, "deployment-status", repo.full_name)
    base = f"{req.api_url}/repos/{repo.full_name}"
    out.update(
        id=s.id,
        node_id=f"DES_{s.id}",
        url=f"{base}/deployments/{d.id}/statuses/{s.id}",
        state=s.state,
        creator=user(req, s.user),
        description=s.description,
        environment=s.environment,
        target_url=s.log_url,
        log_url=s.log_url,
        environment_url=s.environment_url,
        created_at=s.created_at,
        updated_at=s.created_at,
        deployment_url=f"{base}/deployments/{d.id}",
        repository_url=base,
        performed_via_github_app=None,
    )
    return out


def _reviewer(req: Request, r: Reviewer) -> dict[str, Any]:
    if r.type == "User":
        found = user(req, f"user-{r.id}")
        found["id"] = r.id
        return {"type": "User", "reviewer": found}
    team = {
        "id": r.id,
        "node_id": f"T_{r.id}",
        "url": f"{req.api_url}/teams/{r.id}",
        "html_url": f"{req.root_url}/orgs/octo/teams/team-{r.id}",
        "name": f"team-{r.id}",
        "slug": f"team-{r.id}",
        "description": None,
        "privacy": "closed",
        "notification_setting": "notifications_enabled",
        "permission": "pull",
        "members_url": f"{req.api_url}/teams/{r.id}/members{{/member}}",
        "repositories_url": f"{req.api_url}/teams/{r.id}/repos",
        "parent": None,
        "type": "organization",
    }
    return {"type": "Team", "reviewer": team}


def render_environment(req: Request, repo: Repo, env: Environment) -> dict[str, Any]:
    rules: list[dict[str, Any]] = []
    if env.wait_timer:
        rules.append({"id": env.id * 10 + 1, "node_id": f"GA_{env.id}1", "type": "wait_timer",
                      "wait_timer": env.wait_timer})
    if env.reviewers:
        rules.append({"id": env.id * 10 + 2, "node_id": f"GA_{env.id}2",
                      "type": "required_reviewers",
                      "prevent_self_review": env.prevent_self_review,
                      "reviewers": [_reviewer(req, r) for r in env.reviewers]})
    if env.branch_policy is not None:
        rules.append({"id": env.id * 10 + 3, "node_id": f"GA_{env.id}3",
                      "type": "branch_policy"})
    name = quote(env.name, safe="")
    return {
        "id": env.id,
        "node_id": f"EN_{env.id}",
        "name": env.name,
        "url": f"{req.api_url}/repos/{repo.full_name}/environments/{name}",
        "html_url": f"{req.root_url}/{repo.full_name}/deployments/activity_log?"
        f"environments_filter={name}",
        "created_at": env.created_at,
        "updated_at": env.updated_at,
        "protection_rules": rules,
        "deployment_branch_policy": dict(env.branch_policy) if env.branch_policy else None,
    }


# -- deployments --------------------------------------------------------------------------


def _context_states(req: Request, repo: Repo, sha: str) -> dict[str, str]:
    """Each status context and check run name of commit ``sha`` -> its latest state."""
    states: dict[str, str] = {}
    for s in sorted(req.store.statuses.values(), key=lambda s: s.id):
        if s.repo == repo.full_name and s.sha == sha:
            states[s.context] = s.state
    for c in sorted(req.store.check_runs.values(), key=lambda c: c.id):
        if c.repo == repo.full_name and c.head_sha == sha:
            states[c.name] = (
                "success" if c.conclusion in _PASSED else (c.conclusion or c.status)
            )
    return states


def _verify(req: Request, repo: Repo, ref: str, sha: str) -> Response | None:
    """The 409 GitHub gives a deployment it refuses (merge, status checks), else None."""
    b = req.body
    branch = f"refs/heads/{ref}"
    default = repo.refs.get(f"refs/heads/{repo.default_branch}")
    if (b.get("auto_merge", True) and branch in repo.refs and ref != repo.default_branch
            and default is not None and not _is_ancestor(repo, default, sha)):
        return Response(409)  # GitHub would merge; its description gives a 409 no body
    states = _context_states(req, repo, sha)
    required = b.get("required_contexts")
    wanted = list(states) if required is None else required
    if any(states.get(context) != "success" for context in wanted):
        return Response(409)
    return None


@route("repos/create-deployment", DEPLOYMENTS_WRITE)
def create_deployment(req: Request) -> Response:
    repo = _repo(req)
    b = req.body
    sha = repo.resolve(b["ref"])
    if sha is None:
        raise ApiError(422, f"No ref found for: {b['ref']}")
    refused = _verify(req, repo, b["ref"], sha)
    if refused is not None:
        return refused
    environment = b.get("environment", "production")
    payload = b.get("payload", {})
    if isinstance(payload, str) and payload.strip():
        try:  # GitHub stores a JSON string as the object it encodes
            decoded = json.loads(payload)
        except ValueError as err:
            raise ApiError(422, "Invalid request.\n\npayload is not valid JSON.") from err
        payload = decoded if isinstance(decoded, dict) else payload
    d = Deployment(req.store.ids(), repo.full_name, sha, b["ref"], b.get("task", "deploy"),
                   payload if payload != "" else {}, environment, environment,
                   b.get("description", ""), bool(b.get("transient_environment", False)),
                   bool(b.get("production_environment", environment == "production")),
                   req.login)
    repo.deployments[d.id] = d
    if environment.lower() not in repo.environments:
        repo.environments[environment.lower()] = Environment(req.store.ids(), environment)
    out = render_deployment(req, repo, d)
    return Response(201, out, {"Location": out["url"]})


@route("repos/list-deployments", DEPLOYMENTS_READ)
def list_deployments(req: Request) -> Response:
    repo = _repo(req)
    q = req.query
    found = [
        d
        for d in sorted(repo.deployments.values(), key=lambda d: -d.id)
        if q.get("sha", d.sha) == d.sha
        and q.get("ref", d.ref) == d.ref
        and q.get("task", d.task) == d.task
        and str(q.get("environment", d.environment)).lower() == d.environment.lower()
    ]
    chunk, headers = paginate(req, found)
    return Response(200, [render_deployment(req, repo, d) for d in chunk], headers)


def _deployment(req: Request, repo: Repo) -> Deployment:
    d = repo.deployments.get(req.params["deployment_id"])
    if d is None:
        raise ApiError(404, "Not Found")
    return d


@route("repos/get-deployment", DEPLOYMENTS_READ)
def get_deployment(req: Request) -> Response:
    repo = _repo(req)
    return Response(200, render_deployment(req, repo, _deployment(req, repo)))


def _add_status(req: Request, d: Deployment, state: str, description: str = "",
                log_url: str = "", environment_url: str = "") -> DeploymentStatus:
    s = DeploymentStatus(req.store.ids(), state, description, d.environment, log_url,
                         environment_url, req.login)
    d.statuses.append(s)
    d.updated_at = s.created_at
    return s


@route("repos/create-deployment-status", DEPLOYMENTS_WRITE)
def create_deployment_status(req: Request) -> Response:
    repo = _repo(req)
    d = _deployment(req, repo)
    b = req.body
    description = b.get("description", "")
    if len(description) > 140:
        raise ApiError(422, "Validation Failed", [{
            "resource": "DeploymentStatus", "code": "custom", "field": "description",
            "message": "description is too long (maximum is 140 characters)"}])
    if b.get("environment"):
        d.environment = b["environment"]
    if b["state"] == "success" and b.get("auto_inactive", True):
        for other in repo.deployments.values():
            if (other.id != d.id and other.environment.lower() == d.environment.lower()
                    and not other.transient and not other.production and other.statuses
                    and other.statuses[-1].state == "success"):
                _add_status(req, other, "inactive")
    s = _add_status(req, d, b["state"], description, b.get("log_url") or b.get("target_url", ""),
                    b.get("environment_url", ""))
    out = render_status(req, repo, d, s)
    return Response(201, out, {"Location": out["url"]})


@route("repos/list-deployment-statuses", DEPLOYMENTS_READ)
def list_deployment_statuses(req: Request) -> Response:
    repo = _repo(req)
    d = _deployment(req, repo)
    chunk, headers = paginate(req, list(reversed(d.statuses)))  # newest first, as GitHub
    return Response(200, [render_status(req, repo, d, s) for s in chunk], headers)


# -- environments -------------------------------------------------------------------------


@route("repos/get-all-environments", ENVIRONMENTS_READ)
def list_environments(req: Request) -> Response:
    repo = _repo(req)
    found = sorted(repo.environments.values(), key=lambda e: e.name.lower())
    chunk, headers = paginate(req, found)
    body = {"total_count": len(found),
            "environments": [render_environment(req, repo, e) for e in chunk]}
    return Response(200, body, headers)


@route("repos/get-environment", ENVIRONMENTS_READ)
def get_environment(req: Request) -> Response:
    repo = _repo(req)
    env = repo.environments.get(req.params["environment_name"].lower())
    if env is None:
        raise ApiError(404, "Not Found")
    return Response(200, render_environment(req, repo, env))


def _invalid(message: str) -> ApiError:
    return ApiError(422, f"Invalid request.\n\n{message}")


@route("repos/create-or-update-environment", ENVIRONMENTS_WRITE)
def put_environment(req: Request) -> Response:
    repo = _repo(req)
    name = req.params["environment_name"]
    if not name.strip() or len(name) > 255:
        raise _invalid("The environment name must be 1 to 255 characters long.")
    b = req.body or {}
    env = repo.environments.get(name.lower())
    if env is None:
        env = Environment(req.store.ids(), name)
    wait = b.get("wait_timer", env.wait_timer)
    if wait is not None and not 0 <= wait <= MAX_WAIT_TIMER:
        raise _invalid(f"wait_timer must be between 0 and {MAX_WAIT_TIMER} minutes.")
    reviewers = env.reviewers if "reviewers" not in b else tuple(
        Reviewer(r.get("type", "User"), int(r.get("id", 0))) for r in b["reviewers"] or [])
    if len(reviewers) > MAX_REVIEWERS:
        raise _invalid(f"An environment may have at most {MAX_REVIEWERS} reviewers.")
    policy = b.get("deployment_branch_policy", env.branch_policy)
    if policy is not None and policy["protected_branches"] == policy["custom_branch_policies"]:
        raise _invalid("Only one of protected_branches and custom_branch_policies may be true.")
    env.wait_timer, env.reviewers = int(wait or 0), reviewers
    env.prevent_self_review = bool(b.get("prevent_self_review", env.prevent_self_review))
    env.branch_policy = dict(policy) if policy is not None else None
    env.updated_at = now_iso()
    repo.environments[name.lower()] = env
    return Response(200, render_environment(req, repo, env))
