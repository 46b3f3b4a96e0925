"""`gha-mlops report` without `--baseline` in a pull request finds the champion through the
Actions API of the GitHub emulator: the newest successful run on the base branch that
uploaded the `gha-mlops-run` artifact (a zip of a real run record and its files, as
actions/run uploads it). Also: `--baseline URL`, an expired artifact, no champion at all, and
a token without `actions: read`."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from gha_mlops.testing.github_emulator import GitHubEmulator
from tests.integration.test_cli_report import _cli, _ok, ws  # noqa: F401 - the fixture
from tests.integration.test_cli_report_publish import REPO, _env, _pull_request_payload

pytest_plugins = ["tests.integration.github_fixtures"]


def _artifact(root: Path, run: str = "latest") -> tuple[str, bytes]:
    """The run's id and the zip actions/run would upload: `gha-mlops runs files` paths."""
    record = json.loads(_ok(_cli(root, "runs", "show", run, "--json")).stdout)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for rel in (f".gha-mlops/runs/{record['id']}.json", "metrics/eval.json",
                    "plots/history.csv", "model.bin"):
            zf.write(root / rel, rel)
    return str(record["id"]), buf.getvalue()


def _pull(github: GitHubEmulator, tmp: Path) -> tuple[int, Path]:
    repo = github.repo(REPO)
    sha = repo.commit({"train.py": "x"}, branch="feature")
    number = repo.create_pull(head="feature")
    payload = _pull_request_payload(number, sha)
    payload["pull_request"]["base"]["ref"] = "main"  # type: ignore[index]
    event = tmp / "event.json"
    event.write_text(json.dumps(payload))
    return number, event


def test_without_baseline_the_champion_of_the_base_branch_is_used(
        ws: Path, github: GitHubEmulator, tmp_path: Path) -> None:  # noqa: F811
    champion_id, archive = _artifact(ws)  # the fixture's run, acc 0.95
    repo = github.repo(REPO)
    old = repo.add_workflow_run(head_branch="main")
    repo.add_artifact(old, "gha-mlops-run", b"not even a zip", expired=True)
    good = repo.add_workflow_run(head_branch="main")
    repo.add_artifact(good, "gha-mlops-run", archive)
    repo.add_artifact(repo.add_workflow_run(head_branch="main", conclusion="failure"),
                      "gha-mlops-run", b"failed runs are not champions")
    repo.add_artifact(repo.add_workflow_run(head_branch="main", event="pull_request"),
                      "gha-mlops-run", b"nor are pull requests' runs")
    repo.add_workflow_run(head_branch="main")  # newest, but without the artifact
    # Locally, latest~1 would be a worse run (the gate would fail against it).
    _ok(_cli(ws, "run", "--set", "train.acc=0.90"))
    _ok(_cli(ws, "run", "--set", "train.acc=0.96"))
    number, event = _pull(github, tmp_path)

    proc = _ok(_cli(ws, "report", "--publish", "--report-id", "pr",
                    env=_env(github, event, tmp_path)))
    assert f"the champion from run {github.root_url}/{REPO}/actions/runs/{good}" in proc.stderr
    [comment] = github.issue_comments(REPO, number)
    assert champion_id[:8] in comment.body and "all 2 gates pass" in comment.body
    assert "Files not used" not in comment.body  # its metrics and plots came with it
    assert [c.conclusion for c in github.check_runs(REPO)] == ["success"]


def test_the_baseline_can_be_a_url_of_an_artifact_zip(
        ws: Path, github: GitHubEmulator, tmp_path: Path) -> None:  # noqa: F811
    champion_id, archive = _artifact(ws)
    repo = github.repo(REPO)
    artifact = repo.add_artifact(repo.add_workflow_run(head_branch="main"), "model", archive)
    _ok(_cli(ws, "run", "--set", "train.acc=0.96"))
    url = f"{github.url}/repos/{REPO}/actions/artifacts/{artifact}/zip"
    env = {"GITHUB_API_URL": github.url, "GITHUB_TOKEN": github.token}
    proc = _ok(_cli(ws, "report", "--baseline", url, env=env))
    assert champion_id[:8] in proc.stdout
    # The token is sent to the API host: a bad one is refused, and the error says so.
    denied = _cli(ws, "report", "--baseline", url,
                  env={"GITHUB_API_URL": github.url, "GITHUB_TOKEN": "nope"})
    assert denied.returncode == 9 and "HTTP 401" in denied.stderr
    assert "GITHUB_TOKEN" in denied.stderr


def test_an_expired_champion_and_no_champion_are_clear(
        ws: Path, github: GitHubEmulator, tmp_path: Path) -> None:  # noqa: F811
    _ok(_cli(ws, "run", "--set", "train.acc=0.96"))
    number, event = _pull(github, tmp_path)
    env = _env(github, event, tmp_path)
    none = _cli(ws, "report", "--publish", env=env)
    assert none.returncode == 2
    assert ("no champion yet: the base branch main has no successful run with artifact "
            "gha-mlops-run; merge a first model or pass --baseline") in none.stderr
    repo = github.repo(REPO)
    run = repo.add_workflow_run(head_branch="main")
    repo.add_artifact(run, "gha-mlops-run", _artifact(ws)[1], expired=True)
    expired = _cli(ws, "report", "--publish", env=env)
    assert expired.returncode == 2
    assert "artifact gha-mlops-run on main has expired" in expired.stderr
    assert "retention-days" in expired.stderr
    # --base-branch overrides the event's; --baseline-artifact names another artifact.
    other = _cli(ws, "report", "--base-branch", "release", "--baseline-artifact", "champ",
                 env=env)
    assert "base branch release has no successful run with artifact champ" in other.stderr
    assert github.issue_comments(REPO, number) == []


def test_a_token_without_actions_read_names_the_permission(
        ws: Path, github: GitHubEmulator, tmp_path: Path) -> None:  # noqa: F811
    github.add_token("no-actions", permissions={"pull_requests": "write", "issues": "write",
                                                "checks": "write", "contents": "write"})
    _ok(_cli(ws, "run", "--set", "train.acc=0.96"))
    _, event = _pull(github, tmp_path)
    proc = _cli(ws, "report", "--publish",
                env=_env(github, event, tmp_path, GITHUB_TOKEN="no-actions"))
    assert proc.returncode == 9, proc.stderr
    assert "HTTP 403" in proc.stderr and "actions: read" in proc.stderr
