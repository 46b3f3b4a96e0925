"""A new user's first hour through the real CLI: the mistakes that used to pass silently."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_data_cli import gha

STAGES = """\
stages:
  count:
    cmd: ls data/images | wc -l > count.txt
    deps: [data:images]
    outs: [count.txt]
"""


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com",
                           *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A git repository with a small dataset and a directory remote beside it."""
    ws = tmp_path / "ws"
    (ws / "data/images").mkdir(parents=True)
    (tmp_path / "remote").mkdir()
    for i in range(3):
        (ws / f"data/images/{i}.png").write_bytes(os.urandom(100))
    (ws / "mlops.yaml").write_text("remotes:\n  nas:\n    url: ../remote\n" + STAGES)
    git(ws, "init", "-q")
    return ws


def _staged(ws: Path) -> list[str]:
    git(ws, "add", "-A")
    return git(ws, "diff", "--cached", "--name-only").split()


def test_the_docs_flow_never_stages_the_cache(workspace: Path, tmp_path: Path) -> None:
    """docs/data.md: `data add`, `data push`, then `git add -A`: only the pointer, the
    .gitignore and mlops.yaml are staged, before any `run` made the state folder."""
    add = gha(workspace, "data", "add", "data/images")
    assert add.returncode == 0, add.stderr
    assert (workspace / ".gha-mlops/.gitignore").read_text().strip().endswith("*")
    assert sorted(_staged(workspace)) == ["data/.gitignore", "data/images.lock.yaml",
                                          "mlops.yaml"]
    git(workspace, "commit", "-qm", "images")
    (workspace / ".gha-mlops/.gitignore").unlink()  # push writes it as well
    push = gha(workspace, "data", "push")
    assert push.returncode == 0, push.stderr
    assert (workspace / ".gha-mlops/.gitignore").is_file()
    assert _staged(workspace) == []
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(workspace), str(clone))
    pull = gha(clone, "data", "pull")
    assert pull.returncode == 0, pull.stderr
    assert _staged(clone) == []


def test_a_remote_with_one_slash_is_refused_not_made_a_folder(workspace: Path) -> None:
    (workspace / "mlops.yaml").write_text(
        "remotes:\n  storage:\n    url: s3:/bucket/prefix\n" + STAGES)
    assert gha(workspace, "data", "add", "data/images").returncode == 0
    push = gha(workspace, "data", "push")
    assert push.returncode == 2, push.stderr
    assert "mlops.yaml:3" in push.stderr and "remotes.storage.url" in push.stderr
    assert "did you mean 's3://bucket/prefix'?" in push.stderr
    assert "mkdir" not in push.stderr
    assert not (workspace / "s3:").exists()


def test_a_typo_in_a_gate_is_named_before_training_and_by_report(workspace: Path) -> None:
    (workspace / "train.sh").write_text("echo '{\"test_accuracy\": 0.9}' > metrics.json\n")
    (workspace / "mlops.yaml").write_text(
        "stages:\n  train:\n    cmd: sh train.sh\n    deps: [train.sh]\n"
        "    metrics: [metrics.json]\ngates:\n  test_acuracy: {min: 0.5}\n")
    first = gha(workspace, "run")
    assert first.returncode == 0, first.stderr
    assert first.stderr.count("warning:") == 1  # no metrics yet: one warning, with the line
    assert "mlops.yaml:7: gates: cannot check the metric of a gate yet" in first.stderr
    second = gha(workspace, "run")
    assert second.returncode == 0, second.stderr
    assert ("mlops.yaml:7: gates.test_acuracy: no metric 'test_acuracy' in metrics.json; "
            "did you mean 'test_accuracy'?") in second.stderr
    report = gha(workspace, "report", "latest", "--baseline", "latest")
    assert report.returncode == 1
    assert "mlops.yaml:7); did you mean test_accuracy?" in report.stderr
