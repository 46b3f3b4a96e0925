"""The fork-safe pattern through the real CLI and the GitHub emulator: a `pull_request`
workflow (no usable token) runs `gha-mlops report --output DIR`; a `workflow_run` workflow
publishes DIR with `gha-mlops report --from-artifact DIR --publish`: one sticky comment, a
check run, the plots by commit-SHA URL; forged or stale report.json files are refused."""

from __future__ import annotations

import json
from pathlib import Path

from gha_mlops.testing.github_emulator import GitHubEmulator
from tests.integration.test_cli_report import _cli, _ok, ws  # noqa: F401 - the fixture
from tests.integration.test_cli_report_publish import REPO, _env, _pull_request_payload

pytest_plugins = ["tests.integration.github_fixtures"]


def _compute(root: Path, github: GitHubEmulator, tmp: Path, acc: str) -> tuple[int, str, Path]:
    """The pull_request side: a fork's token cannot write, so nothing is published."""
    repo = github.repo(REPO)
    sha = repo.commit({"train.py": acc}, branch="feature")
    number = next((n for n, i in repo.issues.items() if i.pull is not None), None)
    number = number or repo.create_pull(head="feature")
    event = tmp / "pr-event.json"
    event.write_text(json.dumps(_pull_request_payload(number, sha)))
    _ok(_cli(root, "run", "--set", f"train.acc={acc}"))
    out = tmp / "report"
    proc = _cli(root, "report", "--baseline", "latest~1", "--output", str(out), "--report-id",
                "pr", env=_env(github, event, tmp, GITHUB_TOKEN=""))
    assert proc.returncode in (0, 1), proc.stderr
    return number, sha, out


def _publish_env(github: GitHubEmulator, tmp: Path, sha: str, **extra: str) -> dict[str, str]:
    event = tmp / "run-event.json"
    event.write_text(json.dumps({"action": "completed", "workflow_run": {
        "id": 77, "head_sha": sha, "html_url": f"{github.root_url}/{REPO}/actions/runs/77"}}))
    return _env(github, event, tmp, GITHUB_EVENT_NAME="workflow_run", **extra)


def test_output_then_from_artifact_publishes_once_without_recomputing(
        ws: Path, github: GitHubEmulator, tmp_path: Path) -> None:  # noqa: F811
    number, sha, out = _compute(ws, github, tmp_path, "0.96")
    stored = json.loads((out / "report.json").read_text())
    assert stored["schema"] == 1 and stored["passed"] is True
    assert stored["target"] == {"repo": REPO, "kind": "pull_request", "number": number,
                                "sha": sha}
    assert sorted(i["file"] for i in stored["images"]) == sorted(
        p.name for p in out.glob("*.png"))
    assert github.issue_comments(REPO, number) == []  # nothing published yet

    elsewhere = tmp_path / "elsewhere"  # no workspace, no run records, no mlops.yaml
    elsewhere.mkdir()
    env = _publish_env(github, tmp_path, sha)
    first = _ok(_cli(elsewhere, "report", "--from-artifact", str(out), "--publish", env=env))
    assert "created comment" in first.stdout and "check run" in first.stdout
    second = _ok(_cli(elsewhere, "report", "--from-artifact", str(out), "--publish", env=env))
    assert "updated comment" in second.stdout or "created" not in second.stdout

    [comment] = github.issue_comments(REPO, number)
    assert comment.body.startswith("<!-- gha-mlops-report:pr -->")
    for image in stored["images"]:  # every placeholder became a commit-SHA URL
        assert f"]({image['file']})" not in comment.body
        assert f"/{REPO}/raw/" in comment.body and f"/pr/{sha[:12]}/{image['file']})" in (
            comment.body)
    [check, _] = github.check_runs(REPO)
    assert (check.conclusion, check.head_sha) == ("success", sha)


def test_a_failed_stored_verdict_exits_1_after_publishing(
        ws: Path, github: GitHubEmulator, tmp_path: Path) -> None:  # noqa: F811
    number, sha, out = _compute(ws, github, tmp_path, "0.9469")
    proc = _cli(tmp_path, "report", "--from-artifact", str(out), "--publish",
                env=_publish_env(github, tmp_path, sha))
    assert proc.returncode == 1 and "the stored report failed its gates" in proc.stderr
    assert [c.conclusion for c in github.check_runs(REPO)] == ["failure"]
    assert len(github.issue_comments(REPO, number)) == 1


def test_forged_stale_or_broken_report_json_is_refused(
        ws: Path, github: GitHubEmulator, tmp_path: Path) -> None:  # noqa: F811
    number, sha, out = _compute(ws, github, tmp_path, "0.96")
    doc = json.loads((out / "report.json").read_text())

    def attempt(change: dict[str, object], **env: str) -> tuple[int, str]:
        (out / "report.json").write_text(json.dumps({**doc, "target": {**doc["target"],
                                                                        **change}}))
        proc = _cli(tmp_path, "report", "--from-artifact", str(out), "--publish",
                    env=_publish_env(github, tmp_path, sha, **env))
        return proc.returncode, proc.stdout + proc.stderr

    code, text = attempt({"repo": "victim/other"})
    assert code == 2 and "target.repo is victim/other" in text and "refusing" in text
    code, text = attempt({"sha": "f" * 40})  # not the commit the uploading run ran on
    assert code == 2 and "target.sha" in text
    other = github.repo(REPO)
    other.commit({"x.py": "1"}, branch="other")
    victim = other.create_pull(head="other")  # its head is not the stored commit
    code, text = attempt({"number": victim})
    assert code == 0 and f"pull request #{victim} has moved on" in text
    assert github.issue_comments(REPO, victim) == [] and github.check_runs(REPO) == []

    (out / "report.json").write_text(json.dumps({**doc, "passed": "yes"}))
    broken = _cli(tmp_path, "report", "--from-artifact", str(out), "--publish")
    assert broken.returncode == 2
    assert "report.json: key 'passed' is missing or not true or false" in broken.stderr
    (out / "report.json").unlink()
    missing = _cli(tmp_path, "report", "--from-artifact", str(out), "--publish")
    assert missing.returncode == 2 and "report.json does not exist" in missing.stderr
    assert github.issue_comments(REPO, number) == []
