"""The report pipeline as a service (reporting/pr_report.py), driven without the CLI: its
ports are fakes (FakeGitHub, FakeImageHost, an Actions bound to a dict) and the environment
is a GitHubContext value, never os.environ."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from gha_mlops import bootstrap
from gha_mlops.errors import UsageError
from gha_mlops.gha.runtime import Actions
from gha_mlops.reporting.context import GitHubContext
from gha_mlops.reporting.gates import GateFailedError
from gha_mlops.reporting.images import MAX_UPLOAD_BYTES
from gha_mlops.reporting.pr_report import (
    ReportPorts,
    ReportRequest,
    publish_stored_report,
    run_report,
)
from gha_mlops.testing.fakes import FakeGitHub
from gha_mlops.testing.images import FakeImageHost

REPO = "octo/model"
PNG = b"\x89PNG\r\n\x1a\n" + b"picture"


def _record(run_id: str, acc: float, png: bytes) -> dict[str, Any]:
    return {"id": run_id, "status": "succeeded", "stages": [],
            "metrics": {"m.json": {"acc": acc}},
            "outputs": {"plots/fig.png": {"sha256": hashlib.sha256(png).hexdigest(),
                                          "kind": "plot"}}}


def _run(folder: Path, run_id: str, acc: float, png: bytes = PNG) -> Path:
    """A run record file with its declared image beside it (as in a downloaded artifact)."""
    (folder / "plots").mkdir(parents=True, exist_ok=True)
    (folder / "plots/fig.png").write_bytes(png)
    path = folder / f"{run_id}.json"
    path.write_text(json.dumps(_record(run_id, acc, png)))
    return path


class _Ports:
    """The service's ports, with what each was asked kept for the assertions."""

    def __init__(self, images: FakeImageHost | None = None) -> None:
        self.github = FakeGitHub()
        self.built = 0
        self.out: list[str] = []
        self.err: list[str] = []
        self.images = images

    def github_port(self) -> FakeGitHub:
        self.built += 1
        return self.github

    def ports(self) -> ReportPorts:
        def echo(message: str, *, nl: bool = True) -> None:
            self.out.append(message)

        def no_download(url: str) -> bytes:
            raise AssertionError(f"nothing to download: {url}")

        return ReportPorts(github=self.github_port, download=no_download,
                           actions=Actions({}, io.StringIO()), echo=echo,
                           warn=self.err.append, images=self.images)


def _pr_context(tmp_path: Path) -> GitHubContext:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 7, "head": {"sha": "a" * 40}}}))
    return GitHubContext(active=True, repository=REPO, event_name="pull_request",
                         event_path=str(event), token="t", run_id="42")


def test_a_local_report_needs_no_github_and_writes_its_files(tmp_path: Path) -> None:
    base, head = _run(tmp_path / "base", "base", 0.9), _run(tmp_path / "head", "head", 0.95)
    fake = _Ports()
    verdict = run_report(ReportRequest(head=str(head), baseline=str(base),
                                       output=tmp_path / "out", config=None),
                         GitHubContext(), fake.ports())
    assert verdict.passed and fake.built == 0  # no token, no client
    stored = json.loads((tmp_path / "out/report.json").read_text())
    assert stored["target"] is None and stored["headline"] == "no gates declared"
    assert (tmp_path / "out/declared-plots-fig-head.png").read_bytes() == PNG
    assert fake.out == [f"wrote {tmp_path / 'out/report.md'}, report.json and 3 plots"]  # bars + both images


def test_plots_go_to_the_image_host_and_the_comment_links_them(tmp_path: Path) -> None:
    base, head = _run(tmp_path / "base", "base", 0.9), _run(tmp_path / "head", "head", 0.95)
    fake = _Ports(images=FakeImageHost())
    run_report(ReportRequest(head=str(head), baseline=str(base), publish=True),
               _pr_context(tmp_path), fake.ports())
    assert fake.built == 1 and not fake.github.commits  # nothing on the assets branch
    [comment] = fake.github.comments[7]
    assert fake.images is not None and len(fake.images.stored) >= 2
    assert all(url in comment.body for url in fake.images.stored)
    assert fake.out[-2:] == [f"created comment {comment.id}",
                             f"check run https://github.com/{REPO}/runs/1"]


def test_a_failed_gate_is_raised_after_publishing(tmp_path: Path) -> None:
    base, head = _run(tmp_path / "base", "base", 0.9), _run(tmp_path / "head", "head", 0.5)
    (tmp_path / "mlops.yaml").write_text(
        "stages:\n  train:\n    cmd: 'true'\n    metrics: [m.json]\n"
        "gates:\n  acc: {min: 0.8}\n")
    fake = _Ports()
    with pytest.raises(GateFailedError):
        run_report(ReportRequest(head=str(head), baseline=str(base), publish=True,
                                 config=tmp_path / "mlops.yaml"),
                   _pr_context(tmp_path), fake.ports())
    assert fake.github.checks[0]["conclusion"] == "failure"


def _stored(tmp_path: Path, *, repo: str = REPO, png: bytes = PNG) -> Path:
    folder = tmp_path / "artifact"
    folder.mkdir()
    (folder / "report.md").write_text("## report\n![fig](fig.png)\n")
    (folder / "fig.png").write_bytes(png)
    (folder / "report.json").write_text(json.dumps({
        "schema": 1, "report_id": "r", "passed": True, "headline": "ok",
        "markdown": "report.md", "details_url": None,
        "target": {"repo": repo, "kind": "pull_request", "number": 7, "sha": "a" * 40},
        "images": [{"file": "fig.png", "title": "fig"}]}))
    return folder


def test_a_stored_report_for_another_repository_is_refused(tmp_path: Path) -> None:
    fake = _Ports()
    with pytest.raises(UsageError, match=r"target\.repo is evil/repo"):
        publish_stored_report(_stored(tmp_path, repo="evil/repo"), _pr_context(tmp_path),
                              fake.ports())
    assert fake.built == 0 and not fake.github.calls


def test_an_oversized_stored_image_is_refused_before_anything_is_published(
        tmp_path: Path) -> None:
    fake = _Ports()
    fake.github.heads[7] = "a" * 40
    folder = _stored(tmp_path, png=b"\x89PNG" + b"x" * MAX_UPLOAD_BYTES)
    with pytest.raises(UsageError, match=r"image fig\.png is 5 MiB, more than"):
        publish_stored_report(folder, _pr_context(tmp_path), fake.ports())
    assert not fake.github.commits and not fake.github.comments.get(7)


def test_the_context_is_read_from_a_mapping_once() -> None:
    context = bootstrap.github_context({
        "GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": REPO, "GITHUB_RUN_ID": "9",
        "GH_TOKEN": "t2", "GITHUB_STEP_SUMMARY": "/tmp/s", "AWS_ENDPOINT_URL": "http://s3"})
    assert (context.active, context.token, context.s3_endpoint) == (True, "t2", "http://s3")
    assert context.run_url() == f"https://github.com/{REPO}/actions/runs/9"
    assert "t2" not in repr(context)  # the token is never printed with the context
    assert bootstrap.github_context({}) == GitHubContext()
