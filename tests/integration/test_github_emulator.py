"""The GitHub API emulator, driven through PyGithub and raw HTTP: state, pagination, git data,
Actions, auth, faults, and validation against GitHub's OpenAPI description."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest
import requests
from github import Auth, Github, GithubException, InputGitTreeElement

from gha_mlops.testing.github_emulator import (
    ENV_VAR,
    GitHubEmulator,
    SpecNotFoundError,
    find_spec_file,
)
from gha_mlops.testing.github_emulator._handlers import HANDLERS, Request, Response

# The fixtures `github` and `github_spec`, imported as a plugin (not a conftest).
pytest_plugins = ["tests.integration.github_fixtures"]

REPO = "octo/demo"


def client(gh: GitHubEmulator, token: str | None = None) -> Github:
    # retry=None: a test of failures wants to see them, not PyGithub's back-off. PyGithub
    # also spaces requests out (0.25 s, and 1 s between writes) unless told not to.
    return Github(
        base_url=gh.url,
        auth=Auth.Token(token or gh.token),
        retry=None,
        per_page=100,
        seconds_between_requests=None,
        seconds_between_writes=None,
    )


def api(gh: GitHubEmulator, method: str, path: str, token: str | None = None, **kw: object):
    headers = {"Authorization": f"Bearer {token or gh.token}"}
    return requests.request(method, gh.url + path, headers=headers, timeout=10, **kw)  # type: ignore[arg-type]


def test_pr_comments_paginate_edit_and_delete(github: GitHubEmulator) -> None:
    repo = github.repo(REPO)
    repo.commit({"model.py": "print(1)\n"}, branch="feature", message="Train better")
    number = repo.create_pull(head="feature", title="Better model")
    gh = client(github)
    pr = gh.get_repo(REPO).get_pull(number)
    assert (pr.title, pr.head.ref, pr.base.ref) == ("Better model", "feature", "main")

    for i in range(250):
        pr.create_issue_comment(f"comment {i}")
    listed = list(pr.get_issue_comments())
    assert [c.body for c in listed] == [f"comment {i}" for i in range(250)]
    pages = [r for r in github.requests if r.operation_id == "issues/list-comments"]
    assert [r.query.get("page", ["1"])[-1] for r in pages] == ["1", "2", "3"]

    listed[7].edit("edited")
    listed[8].delete()
    bodies = [c.body for c in github.issue_comments(REPO, number)]
    assert len(bodies) == 249 and bodies[7] == "edited" and "comment 8" not in bodies
    gh.close()


def test_link_header_is_githubs(github: GitHubEmulator) -> None:
    repo = github.repo(REPO)
    number = repo.create_issue(title="Tracking")
    for i in range(5):
        api(github, "POST", f"/repos/{REPO}/issues/{number}/comments", json={"body": str(i)})
    r = api(github, "GET", f"/repos/{REPO}/issues/{number}/comments?per_page=2&page=2")
    assert [c["body"] for c in r.json()] == ["2", "3"]
    base = f"{github.url}/repos/{REPO}/issues/{number}/comments"
    assert r.headers["Link"] == (
        f'<{base}?per_page=2&page=1>; rel="prev", <{base}?per_page=2&page=1>; rel="first", '
        f'<{base}?per_page=2&page=3>; rel="next", <{base}?per_page=2&page=3>; rel="last"'
    )


def test_check_runs_and_statuses(github: GitHubEmulator) -> None:
    sha = github.repo(REPO).refs["refs/heads/main"]
    gh = client(github)
    repo = gh.get_repo(REPO)
    run = repo.create_check_run(name="model review", head_sha=sha, status="in_progress")
    run.edit(conclusion="success", output={"title": "Better", "summary": "accuracy +0.4%"})
    repo.get_commit(sha).create_status("success", context="gha-mlops", description="ok")
    repo.get_commit(sha).create_comment("Metrics attached")

    runs = list(repo.get_commit(sha).get_check_runs())
    assert [(r.name, r.status, r.conclusion) for r in runs] == [
        ("model review", "completed", "success")
    ]
    assert runs[0].output.summary == "accuracy +0.4%"
    assert [(s.state, s.context) for s in github.statuses(REPO)] == [("success", "gha-mlops")]
    gh.close()


def test_git_data_round_trip(github: GitHubEmulator) -> None:
    gh = client(github)
    repo = gh.get_repo(REPO)
    main = repo.get_git_ref("heads/main")
    parent = repo.get_git_commit(main.object.sha)
    blob = repo.create_git_blob("a,b\n1,2\n", "utf-8")
    tree = repo.create_git_tree(
        [
            InputGitTreeElement("reports/metrics.csv", "100644", "blob", sha=blob.sha),
            InputGitTreeElement("reports/summary.md", "100644", "blob", content="# ok\n"),
        ],
        base_tree=parent.tree,
    )
    assert sorted(e.path for e in tree.tree) == ["README.md", "reports"]
    commit = repo.create_git_commit("Add report", tree, [parent])
    repo.create_git_ref("refs/heads/report", commit.sha)
    assert repo.get_git_ref("heads/report").object.sha == commit.sha
    main.edit(commit.sha)  # a fast-forward
    assert repo.get_contents("reports/metrics.csv").decoded_content == b"a,b\n1,2\n"
    listing = repo.get_contents("reports", ref="report")
    assert isinstance(listing, list)
    assert sorted(c.name for c in listing) == ["metrics.csv", "summary.md"]
    # The emulator computes git's own object ids.
    assert blob.sha == hashlib.sha1(b"blob 8\0a,b\n1,2\n").hexdigest()

    with pytest.raises(GithubException) as err:
        main.edit(parent.sha)  # backwards without force
    assert err.value.status == 422
    gh.close()


def test_workflow_runs_and_artifacts(github: GitHubEmulator) -> None:
    repo = github.repo(REPO)
    repo.commit({"x": "1"}, branch="feature")
    number = repo.create_pull(head="feature")
    ok = repo.add_workflow_run(head_branch="feature", event="pull_request", pull_requests=[number])
    repo.add_workflow_run(head_branch="feature", conclusion="failure")
    repo.add_workflow_run(head_branch="main", status="in_progress")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("metrics.json", '{"accuracy": 0.91}')
    repo.add_artifact(ok, "metrics", buf.getvalue())

    gh = client(github)
    grepo = gh.get_repo(REPO)
    found = list(grepo.get_workflow_runs(branch="feature", status="success", event="pull_request"))
    assert [r.id for r in found] == [ok]
    assert found[0].pull_requests[0].number == number
    assert grepo.get_workflow_runs(status="in_progress").totalCount == 1
    artifacts = list(found[0].get_artifacts())
    assert [(a.name, a.size_in_bytes) for a in artifacts] == [("metrics", len(buf.getvalue()))]

    r = api(
        github,
        "GET",
        f"/repos/{REPO}/actions/artifacts/{artifacts[0].id}/zip",
        allow_redirects=False,
    )
    assert r.status_code == 302 and r.headers["Location"].startswith(github.root_url)
    data = requests.get(r.headers["Location"], timeout=10).content
    assert zipfile.ZipFile(io.BytesIO(data)).read("metrics.json") == b'{"accuracy": 0.91}'
    gh.close()


# -- validation ---------------------------------------------------------------------------


def test_invalid_bodies_are_rejected_and_recorded(github: GitHubEmulator) -> None:
    sha = github.repo(REPO).refs["refs/heads/main"]
    r = api(github, "POST", f"/repos/{REPO}/check-runs", json={"head_sha": sha})
    assert r.status_code == 422
    assert r.json()["message"] == "Invalid request.\n\n'name' is a required property"
    r = api(
        github,
        "POST",
        f"/repos/{REPO}/check-runs",
        json={"name": "x", "head_sha": sha, "conclusion": "great"},
    )
    assert r.status_code == 422
    violations = github.take_violations()
    assert [(v.kind, v.operation_id) for v in violations] == [("request", "checks/create")] * 2
    assert "'great' is not one of" in violations[1].message
    assert github.check_runs(REPO) == []


def test_unknown_routes_and_bad_parameters_are_404_and_recorded(github: GitHubEmulator) -> None:
    assert api(github, "GET", f"/repos/{REPO}/no-such-thing").status_code == 404
    assert api(github, "PUT", f"/repos/{REPO}/check-runs").status_code == 404
    assert api(github, "GET", f"/repos/{REPO}/issues/abc/comments").status_code == 404
    r = api(github, "GET", f"/repos/{REPO}/actions/runs?status=fine")
    assert r.status_code == 422
    kinds = [(v.kind, v.method) for v in github.take_violations()]
    assert kinds == [
        ("unknown-route", "GET"),
        ("unknown-route", "PUT"),
        ("request", "GET"),
        ("request", "GET"),
    ]


def test_a_response_off_the_schema_is_an_emulator_bug(
    github: GitHubEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(req: Request) -> Response:
        return Response(200, {"id": 1, "name": "demo"})

    monkeypatch.setitem(HANDLERS, "repos/get", broken)
    assert api(github, "GET", f"/repos/{REPO}").status_code == 200
    violations = github.take_violations()
    assert violations and {v.kind for v in violations} == {"response"}
    assert "is a required property" in violations[0].message


def test_an_unimplemented_operation_is_recorded(github: GitHubEmulator) -> None:
    assert api(github, "GET", f"/repos/{REPO}/branches").status_code == 404
    assert [v.kind for v in github.take_violations()] == ["unimplemented"]


# -- auth, rate limits, faults --------------------------------------------------------------


def test_tokens_and_permissions(github: GitHubEmulator) -> None:
    sha = github.repo(REPO).refs["refs/heads/main"]
    github.add_token("ghs_readonly", permissions={"checks": "read", "issues": "write"})
    github.add_token("github_pat_x", permissions={}, kind="personal access token")
    body = {"name": "review", "head_sha": sha}
    r = api(github, "POST", f"/repos/{REPO}/check-runs", token="ghs_readonly", json=body)
    assert r.status_code == 403
    assert r.json() == {
        "message": "Resource not accessible by integration",
        "documentation_url": "https://docs.github.com/rest/reference/checks#create-a-check-run",
        "status": "403",
    }
    r = api(github, "POST", f"/repos/{REPO}/check-runs", token="github_pat_x", json=body)
    assert r.json()["message"] == "Resource not accessible by personal access token"
    r = api(github, "GET", f"/repos/{REPO}", token="nope")
    assert (r.status_code, r.json()["message"]) == (401, "Bad credentials")

    gh = client(github, "ghs_readonly")
    with pytest.raises(GithubException) as err:
        gh.get_repo(REPO).create_check_run(name="review", head_sha=sha)
    assert err.value.status == 403
    gh.close()


def test_rate_limit_headers_and_exhaustion(github: GitHubEmulator) -> None:
    first = api(github, "GET", f"/repos/{REPO}")
    second = api(github, "GET", f"/repos/{REPO}")
    assert first.headers["x-ratelimit-limit"] == "5000"
    assert (
        int(first.headers["x-ratelimit-remaining"])
        == int(second.headers["x-ratelimit-remaining"]) + 1
    )
    github.exhaust_rate_limit(reset_in=120)
    r = api(github, "GET", f"/repos/{REPO}")
    assert r.status_code == 403 and r.headers["x-ratelimit-remaining"] == "0"
    assert r.json()["message"].startswith("API rate limit exceeded")


def test_injected_faults(github: GitHubEmulator) -> None:
    path = f"/repos/{REPO}/issues/1/comments"
    github.repo(REPO).create_issue(title="t")
    github.inject_fault(
        "POST", "/repos/{owner}/{repo}/issues/{issue_number}/comments", status=502, count=1
    )
    assert api(github, "POST", path, json={"body": "x"}).status_code == 502
    assert api(github, "POST", path, json={"body": "x"}).status_code == 201

    github.inject_fault("GET", path, status=429, rate_limited=True, retry_after=3)
    r = api(github, "GET", path)
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "3" and r.headers["x-ratelimit-remaining"] == "0"
    assert int(r.headers["x-ratelimit-reset"]) > 0
    assert [(e.method, e.status) for e in github.requests[-3:]] == [
        ("POST", 502),
        ("POST", 201),
        ("GET", 429),
    ]


def test_missing_spec_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(SpecNotFoundError) as err:
        find_spec_file({ENV_VAR: str(tmp_path / "absent.json")})
    assert "npm" in (err.value.hint or "") and ENV_VAR in (err.value.hint or "")
