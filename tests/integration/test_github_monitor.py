"""The MonitorPort over PyGithub, against the GitHub emulator (every request and answer checked
against GitHub's OpenAPI description): the drift issue opened, found among many issues and
pull requests, edited, closed; the retraining dispatched, and what GitHub refuses (no such
workflow, no workflow_dispatch trigger, an input it does not declare or lacks, a token
without the permission); act_on end to end; and FakeGitHub answering as the adapter does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gha_mlops import bootstrap
from gha_mlops.config.model import MonitorModel, MonitorRetrain
from gha_mlops.github.port import GitHubError, MonitorPort
from gha_mlops.monitor.act import ISSUE_BODY_LIMIT, act_on, marker
from gha_mlops.monitor.hysteresis import AlarmState, Verdict
from gha_mlops.testing.fakes import FakeGitHub
from gha_mlops.testing.github_emulator import GitHubEmulator

pytest_plugins = ["tests.integration.github_fixtures"]

REPO = "octo/demo"
T0 = 1_800_000_000.0
MODEL = MonitorModel(name="digits", log="logs", issue_labels=("drift",),
                     retrain=MonitorRetrain(workflow="retrain.yml", inputs={"epochs": "3"}))
TRIPPED = Verdict("drift", True, True, False, True, "2 of the last 3 windows over 0.50")
STILL = Verdict("drift", True, False, False, False, "drift alarm on since ...")
CLEARED = Verdict("ok", False, False, True, False, "cleared: the last window under 0.30")
INPUTS = {"epochs": {"required": True}, "reason": {"required": False}}


def _port(gh: GitHubEmulator, token: str | None = None) -> Any:
    return bootstrap.github({"GITHUB_TOKEN": token or gh.token, "GITHUB_API_URL": gh.url})


def test_an_issue_is_opened_found_edited_and_closed(github: GitHubEmulator) -> None:
    repo = github.repo(REPO)
    repo.commit({"x.py": "1"}, branch="feature")
    pull = repo.create_pull(head="feature", title="a pull request")
    with _port(github) as port:
        issue = port.create_issue(REPO, title="t" * 300, body="hello", labels=["drift", "ml"])
        assert (issue.title, issue.body, issue.state) == ("t" * 256, "hello", "open")
        assert issue.labels == ("drift", "ml") and issue.url.endswith(f"/issues/{issue.number}")
        assert [i.number for i in port.open_issues(REPO, label="DRIFT")] == [issue.number]
        assert list(port.open_issues(REPO, label="other")) == []
        edited = port.edit_issue(REPO, issue.number, body="updated")
        assert (edited.body, edited.title, edited.state) == ("updated", "t" * 256, "open")
        closed = port.edit_issue(REPO, issue.number, state="closed")
        assert closed.state == "closed" and list(port.open_issues(REPO, label="drift")) == []
        assert port.default_branch(REPO) == "main"
    [stored] = github.issues(REPO)
    assert stored.state == "closed" and stored.closed_at and stored.state_reason == "completed"
    assert pull in {i.number for i in github.issues(REPO, pulls=True)}


def test_pull_requests_are_not_issues_and_the_marker_is_found_among_many(
        github: GitHubEmulator) -> None:
    repo = github.repo(REPO)
    repo.commit({"x.py": "1"}, branch="feature")
    for i in range(120):  # more than a page of 100
        repo.create_issue(title=f"other {i}", body=f"body {i}", labels=["drift"])
    mine = repo.create_issue(title="Drift alarm: model digits",
                             body=marker("digits") + "\nold report", labels=["drift"])
    pull = repo.create_pull(head="feature", body=marker("digits") + "\n")
    repo.issues[pull].labels.append("drift")  # a labelled pull request is still no issue
    repo.create_issue(title="closed", body=marker("digits") + "\n", labels=["drift"],
                      state="closed")
    repo.create_issue(title="unlabelled", body=marker("digits") + "\n")
    for i in range(30):
        repo.create_issue(title=f"newer {i}", body="x", labels=["drift"])
    with _port(github) as port:
        listed = list(port.open_issues(REPO, label="drift"))
        assert len(listed) == 151 and listed[0].title == "newer 29"
        result = act_on(port, REPO, MODEL, verdict=STILL, state=AlarmState(),
                        report_md="new report", now=T0)
    assert result.issue is not None and result.issue.number == mine
    assert github.issues(REPO)[mine - 1].body.rstrip().endswith("new report")


def test_act_on_trips_edits_and_clears_through_the_api(github: GitHubEmulator) -> None:
    github.repo(REPO).add_workflow("retrain.yml", inputs=INPUTS)
    hostile = "| <code>@octocat</code> | `x` |\n<!-- hidden\n" + "| row |\n" * 10000
    state = AlarmState(tripped=True, tripped_at=T0)
    with _port(github) as port:
        first = act_on(port, REPO, MODEL, verdict=TRIPPED, state=state, report_md=hostile,
                       now=T0, run_url="https://github.com/octo/demo/actions/runs/1")
        second = act_on(port, REPO, MODEL, verdict=STILL, state=first.state,
                        report_md="second", now=T0 + 60)
        third = act_on(port, REPO, MODEL, verdict=CLEARED, state=AlarmState(),
                       report_md="third", now=T0 + 120)
    assert first.dispatched and first.errors == () and first.state.last_dispatch == T0
    assert not second.dispatched and second.errors == () and third.errors == ()
    assert first.issue and second.issue and third.issue
    assert first.issue.number == second.issue.number == third.issue.number
    [issue] = github.issues(REPO)
    assert issue.state == "closed" and "cleared" in (issue.body or "")
    [dispatch] = github.dispatches(REPO)
    assert dispatch.path == ".github/workflows/retrain.yml" and dispatch.ref == "main"
    assert dispatch.inputs["epochs"] == "3" and "drift alarm of model digits" in (
        dispatch.inputs["reason"])
    created = next(r for r in github.requests if r.operation_id == "issues/create")
    assert len(created.body["body"]) <= ISSUE_BODY_LIMIT
    assert "@octocat" not in created.body["body"]
    assert created.body["body"].count("<!--") == 1  # the marker only


@pytest.mark.parametrize(("seed", "workflow", "inputs", "status", "said"), [
    ({}, "retrain.yml", {"epochs": "3"}, 404, "no workflow retrain.yml"),
    ({"dispatch": False}, "retrain.yml", {"epochs": "3"}, 422, "workflow_dispatch"),
    ({"inputs": INPUTS}, "retrain.yml", {"epochs": "3", "lr": "1"}, 422, "Unexpected inputs"),
    ({"inputs": INPUTS}, "retrain.yml", {"reason": "x"}, 422, "Required input 'epochs'"),
    ({"inputs": INPUTS, "state": "disabled_manually"}, "retrain.yml", {"epochs": "3"}, 422,
     "disabled"),
])
def test_a_dispatch_github_refuses_names_the_workflow_and_what_to_check(
        github: GitHubEmulator, seed: dict[str, Any], workflow: str, inputs: dict[str, str],
        status: int, said: str) -> None:
    if seed:
        github.repo(REPO).add_workflow("retrain.yml", **seed)
    with _port(github) as port, pytest.raises(GitHubError) as err:
        port.dispatch_workflow(REPO, workflow, ref="main", inputs=inputs)
    assert err.value.status == status and "retrain.yml" in str(err.value)
    assert said in f"{err.value} {err.value.hint}"
    assert github.dispatches(REPO) == []


def test_a_dispatch_on_an_unknown_ref_or_by_id(github: GitHubEmulator) -> None:
    wid = github.repo(REPO).add_workflow("retrain.yaml", inputs=INPUTS)
    with _port(github) as port:
        with pytest.raises(GitHubError) as err:
            port.dispatch_workflow(REPO, "retrain.yaml", ref="nope", inputs={"epochs": "1"})
        assert err.value.status == 422 and "No ref found for: nope" in str(err.value)
        port.dispatch_workflow(REPO, str(wid), ref="main", inputs={"epochs": "1"})
        with pytest.raises(GitHubError, match="neither a workflow id nor a file name"):
            port.dispatch_workflow(REPO, "../../x", ref="main", inputs={})
        with pytest.raises(GitHubError, match="at most 25 inputs"):
            port.dispatch_workflow(REPO, "retrain.yaml", ref="main",
                                   inputs={f"i{n}": "v" for n in range(26)})
    assert [d.workflow_id for d in github.dispatches(REPO)] == [wid]


def test_a_token_without_the_permission_is_told_which_one(github: GitHubEmulator) -> None:
    github.repo(REPO).add_workflow("retrain.yml", inputs=INPUTS)
    github.add_token("ghs_read_only", permissions={"contents": "read", "issues": "read",
                                                    "actions": "read"})
    with _port(github, "ghs_read_only") as port:
        with pytest.raises(GitHubError) as err:
            port.dispatch_workflow(REPO, "retrain.yml", ref="main", inputs={"epochs": "3"})
        assert err.value.status == 403 and err.value.permission == "actions: write"
        assert "actions: write" in str(err.value.hint)
        with pytest.raises(GitHubError) as err:
            port.create_issue(REPO, title="t", body="b", labels=["drift"])
        assert err.value.status == 403 and err.value.permission == "issues: write"
        # act_on: both refused, neither raised; the dispatch stays owed.
        result = act_on(port, REPO, MODEL, verdict=TRIPPED,
                        state=AlarmState(tripped=True, tripped_at=T0), report_md="r", now=T0)
    assert result.issue is None and not result.dispatched and result.state.dispatch_pending
    assert len(result.errors) == 2 and all("403" in e for e in result.errors)


def test_a_body_over_githubs_limit_is_refused_clearly(github: GitHubEmulator) -> None:
    with _port(github) as port, pytest.raises(GitHubError) as err:
        port.create_issue(REPO, title="t", body="x" * (ISSUE_BODY_LIMIT + 1), labels=[])
    assert err.value.status == 422 and "65536" in str(err.value.hint)


Scenario = Callable[[MonitorPort], object]
SCENARIOS: dict[str, Scenario] = {
    "unknown workflow": lambda p: p.dispatch_workflow(REPO, "gone.yml", ref="main", inputs={}),
    "no trigger": lambda p: p.dispatch_workflow(REPO, "ci.yml", ref="main", inputs={}),
    "unknown ref": lambda p: p.dispatch_workflow(REPO, "retrain.yml", ref="nope",
                                                 inputs={"epochs": "1"}),
    "unexpected input": lambda p: p.dispatch_workflow(REPO, "retrain.yml", ref="main",
                                                      inputs={"epochs": "1", "x": "2"}),
    "missing input": lambda p: p.dispatch_workflow(REPO, "retrain.yml", ref="main",
                                                   inputs={}),
    "edit unknown issue": lambda p: p.edit_issue(REPO, 999, body="x"),
    "long body": lambda p: p.create_issue(REPO, title="t", body="x" * 70000, labels=[]),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_the_fake_answers_as_the_adapter_does(github: GitHubEmulator, name: str) -> None:
    github.repo(REPO).add_workflow("retrain.yml", inputs=INPUTS)
    github.repo(REPO).add_workflow("ci.yml", dispatch=False)
    fake = FakeGitHub(workflows={"retrain.yml": {"epochs": True, "reason": False},
                                 "ci.yml": None})
    statuses = []
    for port in (fake, _port(github)):
        with port, pytest.raises(GitHubError) as err:
            SCENARIOS[name](port)
        statuses.append(err.value.status)
    assert statuses[0] == statuses[1]


def test_the_emulator_queues_a_run_for_an_accepted_dispatch(github: GitHubEmulator) -> None:
    from github import Auth, Github

    wid = github.repo(REPO).add_workflow("retrain.yml", inputs=INPUTS)
    client = Github(base_url=github.url, auth=Auth.Token(github.token),
                    seconds_between_requests=None, seconds_between_writes=None, retry=None)
    _, answer = client.requester.requestJsonAndCheck(
        "POST", f"/repos/{REPO}/actions/workflows/{wid}/dispatches",
        input={"ref": "main", "inputs": {"epochs": "2"}, "return_run_details": True})
    run = client.get_repo(REPO).get_workflow_run(answer["workflow_run_id"])
    assert (run.event, run.status, run.head_branch, run.path) == (
        "workflow_dispatch", "queued", "main", ".github/workflows/retrain.yml")
    [dispatch] = github.dispatches(REPO)
    assert dispatch.run_id == run.id and dispatch.inputs == {"epochs": "2"}
    client.close()
