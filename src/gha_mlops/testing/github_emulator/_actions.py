"""Self-hosted runners (just-in-time registration, list, get, delete; repository and
organization scope), workflow jobs (list, get, re-run) and an organization's repositories."""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

from ._handlers import (
    ApiError,
    Request,
    Response,
    _repo,
    _run,
    example,
    in_repo,
    org_of,
    paginate,
    reaches,
    render_minimal_repo,
    route,
)
from ._state import Job, Runner, WorkflowRun

# Labels GitHub gives runners itself (typed ``read-only``); every other label is ``custom``.
DEFAULT_LABELS = frozenset(
    {"self-hosted", "linux", "windows", "macos", "x64", "arm", "arm64", "x86"}
)
RUNNER_GROUP_NAME = "Default"

REPO_RUNNERS_READ = ("administration", "read")
REPO_RUNNERS_WRITE = ("administration", "write")
ORG_RUNNERS_READ = ("organization_self_hosted_runners", "read")
ORG_RUNNERS_WRITE = ("organization_self_hosted_runners", "write")


# -- rendering ----------------------------------------------------------------------------


def render_runner(req: Request, runner: Runner) -> dict[str, Any]:
    out = example(req, "runner")
    out.update(
        id=runner.id,
        runner_group_id=runner.runner_group_id,
        name=runner.name,
        os="Linux",
        status=runner.status,
        busy=runner.busy,
        ephemeral=True,
        labels=[
            {
                "id": req.store.label_id(label),
                "name": label,
                "type": "read-only" if label.lower() in DEFAULT_LABELS else "custom",
            }
            for label in runner.labels
        ],
    )
    return out


def job_fields(api_url: str, root_url: str, job: Job, run: WorkflowRun) -> dict[str, Any]:
    """A job's fields as the REST API and the ``workflow_job`` webhook both write them."""
    api = f"{api_url}/repos/{job.repo}/actions"
    return {
        "id": job.id,
        "run_id": job.run_id,
        "run_url": f"{api}/runs/{job.run_id}",
        "run_attempt": job.run_attempt,
        "node_id": f"CR_{job.id}",
        "head_sha": run.head_sha,
        "head_branch": run.head_branch,
        "workflow_name": run.name,
        "url": f"{api}/jobs/{job.id}",
        "html_url": f"{root_url}/{job.repo}/actions/runs/{job.run_id}/job/{job.id}",
        "check_run_url": f"{api_url}/repos/{job.repo}/check-runs/{job.id}",
        "status": job.status,
        "conclusion": job.conclusion,
        "created_at": job.created_at,
        "started_at": job.started_at or job.created_at,
        "completed_at": job.completed_at,
        "name": job.name,
        "steps": [],
        "labels": list(job.labels),
        "runner_id": job.runner_id,
        "runner_name": job.runner_name,
        "runner_group_id": job.runner_group_id,
        "runner_group_name": RUNNER_GROUP_NAME if job.runner_group_id is not None else None,
    }


def render_job(req: Request, job: Job) -> dict[str, Any]:
    out = example(req, "job")
    out.update(job_fields(req.api_url, req.root_url, job, req.store.runs[job.run_id]))
    return out


# -- runners ------------------------------------------------------------------------------


def _scope(req: Request) -> str:
    """The runners' scope the path names: ``owner/name`` or an organization's login."""
    if "org" in req.params:
        return org_of(req).login
    return _repo(req).full_name


def _runners_of(req: Request, scope: str) -> list[Runner]:
    return sorted(
        (r for r in req.store.runners.values() if r.scope.lower() == scope.lower()),
        key=lambda r: r.id,
    )


def _runner(req: Request) -> Runner:
    scope = _scope(req)
    runner = req.store.runners.get(req.params["runner_id"])
    if runner is None or runner.scope.lower() != scope.lower():
        raise ApiError(404, "Not Found")
    return runner


def encode_jit_config(runner: Runner, root_url: str) -> str:
    """The emulator's JIT config: base64 of JSON ``runner_id``, ``name``, ``labels``, ``url``
    (the emulator's root URL) and ``token`` (the runner's session token)."""
    config = {
        "runner_id": runner.id,
        "name": runner.name,
        "labels": list(runner.labels),
        "url": root_url,
        "token": runner.session_token,
    }
    return base64.b64encode(json.dumps(config).encode()).decode()


@route("actions/generate-runner-jitconfig-for-repo", REPO_RUNNERS_WRITE)
@route("actions/generate-runner-jitconfig-for-org", ORG_RUNNERS_WRITE)
def generate_jitconfig(req: Request) -> Response:
    scope = _scope(req)
    b = req.body
    if any(r.name.lower() == b["name"].lower() for r in _runners_of(req, scope)):
        raise ApiError(409, f"Already exists - A runner with the name {b['name']} already exists.")
    runner = Runner(
        req.store.ids(),
        b["name"],
        scope,
        tuple(b["labels"]),
        b["runner_group_id"],
        b.get("work_folder") or "_work",
        secrets.token_urlsafe(24),
    )
    req.store.runners[runner.id] = runner
    req.store.runner_sessions[runner.session_token] = runner
    body = {
        "runner": render_runner(req, runner),
        "encoded_jit_config": encode_jit_config(runner, req.root_url),
    }
    return Response(201, body)


@route("actions/list-self-hosted-runners-for-repo", REPO_RUNNERS_READ)
@route("actions/list-self-hosted-runners-for-org", ORG_RUNNERS_READ)
def list_runners(req: Request) -> Response:
    name = req.query.get("name")
    runners = [r for r in _runners_of(req, _scope(req)) if name in (None, r.name)]
    chunk, headers = paginate(req, runners)
    body = {"total_count": len(runners), "runners": [render_runner(req, r) for r in chunk]}
    return Response(200, body, headers)


@route("actions/get-self-hosted-runner-for-repo", REPO_RUNNERS_READ)
@route("actions/get-self-hosted-runner-for-org", ORG_RUNNERS_READ)
def get_runner(req: Request) -> Response:
    return Response(200, render_runner(req, _runner(req)))


@route("actions/delete-self-hosted-runner-from-repo", REPO_RUNNERS_WRITE)
@route("actions/delete-self-hosted-runner-from-org", ORG_RUNNERS_WRITE)
def delete_runner(req: Request) -> Response:
    runner = _runner(req)
    if runner.busy:
        raise ApiError(422, f'Bad request - Runner "{runner.name}" is still running a job"')
    req.store.remove_runner(runner)
    return Response(204)


# -- jobs ---------------------------------------------------------------------------------


@route("actions/list-jobs-for-workflow-run", ("actions", "read"))
def list_jobs(req: Request) -> Response:
    repo = _repo(req)
    run = _run(req, repo)
    if req.query.get("filter", "latest") == "latest":
        jobs = req.store.latest_jobs(run.id)
    else:
        jobs = sorted(
            (j for j in req.store.jobs.values() if j.run_id == run.id), key=lambda j: j.id
        )
    chunk, headers = paginate(req, jobs)
    return Response(
        200, {"total_count": len(jobs), "jobs": [render_job(req, j) for j in chunk]}, headers
    )


def _job(req: Request) -> Job:
    return in_repo(req.store.jobs, req.params["job_id"], _repo(req))


@route("actions/get-job-for-workflow-run", ("actions", "read"))
def get_job(req: Request) -> Response:
    return Response(200, render_job(req, _job(req)))


@route("actions/re-run-job-for-workflow-run", ("actions", "write"))
def rerun_job(req: Request) -> Response:
    """A new attempt of the run with a copy of the job, queued (GitHub refuses while the run
    is not completed)."""
    job = _job(req)
    run = req.store.runs[job.run_id]
    if run.status != "completed":
        raise ApiError(403, "The workflow run containing this job is already running")
    if job.superseded:
        raise ApiError(403, "This job was re-run already: re-run its latest attempt")
    job.superseded = True
    run.run_attempt += 1
    req.store.add_job(run, job.name, job.labels, job.duration, job.planned_conclusion)
    return Response(201, {})


# -- organizations ------------------------------------------------------------------------


@route("repos/list-for-org", ("metadata", "read"))
def list_org_repos(req: Request) -> Response:
    org = org_of(req)
    repos = sorted(
        (
            r
            for r in req.store.repos.values()
            if r.owner.lower() == org.login.lower() and reaches(req, r.full_name)
        ),
        key=lambda r: r.full_name.lower(),
    )
    chunk, headers = paginate(req, repos)
    return Response(200, [render_minimal_repo(req, r) for r in chunk], headers)
