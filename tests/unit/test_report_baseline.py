"""Finding the champion over a fake :class:`ActionsPort`, unpacking its artifact, and the
stored report (report.json) of the fork-safe pattern."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from gha_mlops.errors import UsageError
from gha_mlops.github.port import ArtifactRef, GitHubError, WorkflowRunRef
from gha_mlops.reporting import baseline as bl
from gha_mlops.reporting.publish import (
    StoredReport,
    Target,
    link_images,
    load_stored_report,
    stored_report_json,
)
from gha_mlops.runs.refs import unpack
from gha_mlops.testing.fakes import FakeActions

REPO = "octo/demo"


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def run(i: int, event: str = "push", head_repo: str = REPO) -> WorkflowRunRef:
    return WorkflowRunRef(i, event, f"{i:040x}", head_repo, f"https://x/runs/{i}")


def art(i: int, name: str = "gha-mlops-run", expired: bool = False) -> ArtifactRef:
    return ArtifactRef(i, name, expired)


@pytest.mark.parametrize(("event", "payload", "branch"), [
    ("pull_request", {"pull_request": {"base": {"ref": "release"}},
                      "repository": {"default_branch": "main"}}, "release"),
    ("pull_request_target", {"pull_request": {"base": {"ref": "dev"}}}, "dev"),
    ("push", {"repository": {"default_branch": "trunk"}}, "trunk"),
    ("workflow_dispatch", {"repository": {"default_branch": "main"}}, "main"),
    ("push", {}, None),
])
def test_the_base_branch_comes_from_the_event(event: str, payload: dict[str, object],
                                              branch: str | None) -> None:
    assert bl.base_branch(event, payload) == branch


def test_the_newest_run_with_a_live_artifact_wins_skipping_pull_requests_and_forks() -> None:
    port = FakeActions([
        (run(9, event="pull_request"), [art(90)]),      # a PR's run: untrusted
        (run(8, head_repo="evil/demo"), [art(80)]),     # a fork's
        (run(7), [art(70, name="other")]),              # no such artifact
        (run(6), [art(60, expired=True)]),              # expired
        (run(5), [art(50), art(51)]),                   # the last uploaded wins
        (run(4), [art(40)]),
    ], archives={51: b"zip51", 50: b"zip50", 40: b"zip40"})
    champion = bl.find_champion(port, REPO, "main")
    assert (champion.run.id, champion.artifact.id, champion.archive) == (5, 51, b"zip51")
    assert port.listed == 5  # stopped as soon as one was found (run 4 never fetched)


def test_an_artifact_expiring_during_the_download_is_skipped() -> None:
    port = FakeActions([(run(2), [art(20)]), (run(1), [art(10)])], archives={10: b"ok"},
                       gone={20})
    assert bl.find_champion(port, REPO, "main").archive == b"ok"


def test_no_champion_and_only_expired_ones_are_told_apart() -> None:
    with pytest.raises(bl.NoChampionError) as none:
        bl.find_champion(FakeActions([(run(1), [art(10, name="x")])]), REPO, "main")
    assert none.value.message == (
        "no champion yet: the base branch main has no successful run with artifact "
        "gha-mlops-run; merge a first model or pass --baseline")
    assert none.value.exit_code == 2
    with pytest.raises(bl.NoChampionError) as expired:
        bl.find_champion(FakeActions([(run(1), [art(10, expired=True)])]), REPO, "main")
    assert "has expired" in expired.value.message and "https://x/runs/1" in expired.value.message
    assert "retention-days" in (expired.value.hint or "")


def test_only_the_last_max_runs_are_looked_at() -> None:
    port = FakeActions([(run(i), []) for i in range(10, 0, -1)])
    with pytest.raises(bl.NoChampionError, match="no champion yet") as err:
        bl.find_champion(port, REPO, "main", max_runs=3)
    assert "last 3 successful" in (err.value.hint or "")
    assert port.listed == 4  # the fourth is fetched, then the search stops


def test_other_github_errors_pass_through() -> None:
    class Forbidden(FakeActions):
        def run_artifacts(self, repo: str, run_id: int) -> list[ArtifactRef]:
            raise GitHubError("no", status=403, permission="actions: read")

    with pytest.raises(GitHubError) as err:
        bl.find_champion(Forbidden([(run(1), [])]), REPO, "main")
    assert err.value.permission == "actions: read"


def test_the_record_is_found_in_the_archive_with_its_files(tmp_path: Path) -> None:
    archive = _zip({".gha-mlops/runs/abc.json": b"{}", "metrics/eval.json": b"{}",
                    "plots/history.csv": b"x\n"})
    path = bl.extract_record(archive, tmp_path, source="artifact")
    assert path == tmp_path / ".gha-mlops/runs/abc.json"
    assert (tmp_path / "metrics/eval.json").is_file()
    lone = tmp_path / "lone"
    lone.mkdir()
    assert bl.extract_record(_zip({"run.json": b"{}"}), lone, source="a").name == "run.json"


@pytest.mark.parametrize(("files", "message"), [
    ({"a.txt": b""}, "holds no run record"),
    ({".gha-mlops/runs/a.json": b"{}", ".gha-mlops/runs/b.json": b"{}"},
     "holds several run records"),
    ({"../evil.json": b"{}"}, "unsafe path"),
])
def test_bad_archives_are_clear(tmp_path: Path, files: dict[str, bytes], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        bl.extract_record(_zip(files), tmp_path, source="artifact")


def test_a_download_is_a_zip_or_a_record(tmp_path: Path) -> None:
    assert unpack(b'{"id": "x"}', tmp_path, source="u").name == "record.json"
    zipped = tmp_path / "z"
    zipped.mkdir()
    record = unpack(_zip({".gha-mlops/runs/r.json": b"{}"}), zipped,
                                     source="u")
    assert record.name == "r.json"
    with pytest.raises(UsageError, match="neither a zip archive nor JSON"):
        unpack(b"<html>", tmp_path, source="https://x")


# ---------------------------------------------------------------------- report.json

def _stored(tmp_path: Path) -> StoredReport:
    report = StoredReport("pr", False, "1 gate(s) failed",
                          Target(REPO, "pull_request", sha="a" * 40, number=7),
                          (("metrics.png", "Metrics"),), "report.md",
                          "https://github.com/octo/demo/actions/runs/1")
    (tmp_path / "report.md").write_text("![Metrics](metrics.png)")
    (tmp_path / "metrics.png").write_bytes(b"png")
    (tmp_path / "report.json").write_text(stored_report_json(report))
    return report


def test_report_json_round_trips(tmp_path: Path) -> None:
    report = _stored(tmp_path)
    assert load_stored_report(tmp_path) == report
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["schema"] == 1 and doc["target"]["number"] == 7


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.pop("passed"), "key 'passed' is missing or not true or false"),
    (lambda d: d.update(schema=9), "key 'schema' is 9"),
    (lambda d: d["target"].update(kind="deploy"), "key 'target.kind'"),
    (lambda d: d["target"].update(number="7"), "key 'target.number'"),
    (lambda d: d["target"].update(repo="demo"), "key 'target.repo'"),
    (lambda d: d["images"][0].pop("title"), r"key 'images\[0\].title'"),
    (lambda d: d["images"][0].update(file="../x.png"), "not a plain file name"),
    (lambda d: d["images"][0].update(file="gone.png"), "gone.png is missing"),
])
def test_a_malformed_report_json_names_the_file_and_key(
        tmp_path: Path, change: object, message: str) -> None:
    _stored(tmp_path)
    doc = json.loads((tmp_path / "report.json").read_text())
    change(doc)  # type: ignore[operator]
    (tmp_path / "report.json").write_text(json.dumps(doc))
    with pytest.raises(UsageError, match=message) as err:
        load_stored_report(tmp_path)
    assert "report.json" in err.value.message


def test_a_missing_or_broken_report_json_is_clear(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"report\.json does not exist"):
        load_stored_report(tmp_path)
    (tmp_path / "report.json").write_text("{")
    with pytest.raises(UsageError, match="is not valid JSON"):
        load_stored_report(tmp_path)


def test_image_placeholders_become_urls() -> None:
    text = "![Metrics](metrics.png) and ![Curve](curve.png) and (metrics.png)"
    assert link_images(text, ["metrics.png", "curve.png"], {"metrics.png": "https://u/m"}) == (
        "![Metrics](https://u/m) and ![Curve](curve.png) and (metrics.png)")
