"""`gha-mlops reproduce` on shell pipelines: worktree and copy modes, refusals, differences."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Workspace, git


def _record(ws: Workspace, run: str = "latest") -> dict:  # type: ignore[type-arg]
    return json.loads(ws.cli("runs", "show", run, "--json", check=True).stdout)


def test_clean_commit_is_reproduced_in_a_git_worktree(git_workspace: Workspace) -> None:
    ws = git_workspace
    ws.cli("run", check=True)
    proc = ws.cli("reproduce", "latest")
    assert proc.returncode == 0, proc.stderr
    assert "bit-identical" in proc.stdout
    listed = json.loads(ws.cli("runs", "list", "--json", "--all", check=True).stdout)
    verdict = _record(ws, listed[-1]["id"])
    assert verdict["kind"] == "reproduction"
    assert verdict["verdict"]["method"] == "git-worktree"
    assert verdict["verdict"]["identical"] is True
    # `latest` still means the latest run, not the reproduction.
    assert _record(ws)["kind"] == "run"
    # The worktree is gone again.
    worktrees = git(ws.root, "worktree", "list").strip().splitlines()
    assert len(worktrees) == 1


def test_worktree_reproduction_uses_the_commit_not_the_working_tree(
        git_workspace: Workspace) -> None:
    ws = git_workspace
    ws.cli("run", check=True)
    run_id = _record(ws)["id"]
    # Later edits to the workspace do not matter: the recorded commit is checked out.
    ws.write("params.yaml", "prepare:\n  scale: 5\ntrain:\n  lr: 9\n")
    proc = ws.cli("reproduce", run_id)
    assert proc.returncode == 0, proc.stderr


def test_dirty_run_is_reproduced_from_a_copy(workspace: Workspace) -> None:
    workspace.cli("run", check=True)
    proc = workspace.cli("reproduce")
    assert proc.returncode == 0, proc.stderr
    assert "no git commit" in proc.stdout and "bit-identical" in proc.stdout


def test_altered_data_is_refused_naming_the_file(workspace: Workspace) -> None:
    workspace.cli("run", check=True)
    workspace.write("data/b.txt", "BETA\n")
    proc = workspace.cli("reproduce")
    assert proc.returncode == 4
    assert "not available as recorded" in proc.stderr
    assert "data/b.txt: changed" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_non_deterministic_output_is_reported_per_output(workspace: Workspace) -> None:
    config = workspace.read("mlops.yaml").replace(
        "wc -c models/model.bin > report.txt", "date +%s%N > report.txt")
    workspace.write("mlops.yaml", config)
    workspace.cli("run", check=True)
    proc = workspace.cli("reproduce")
    assert proc.returncode == 4
    assert "did not reproduce: 1 differences" in proc.stderr
    assert "output report.txt: recorded" in proc.stderr
    # The deterministic outputs were compared and matched.
    assert "models/model.bin" not in proc.stderr


def test_environment_drift_is_refused_unless_allowed(workspace: Workspace) -> None:
    run = workspace.cli("run", check=True)
    assert run.returncode == 0
    record_path = next(p for p in (workspace.root / ".gha-mlops/runs").glob("2*.json"))
    record = json.loads(record_path.read_text())
    record["env"]["packages"]["pydantic"] = "0.0.1"
    record["env"]["packages"]["left-pad"] = "1.0"
    record_path.write_text(json.dumps(record))
    proc = workspace.cli("reproduce")
    assert proc.returncode == 5
    assert "environment differs" in proc.stderr
    assert "pydantic: recorded 0.0.1, now " in proc.stderr
    assert "left-pad: recorded 1.0, now not installed" in proc.stderr
    allowed = workspace.cli("reproduce", "--allow-env-drift")
    assert allowed.returncode == 0, allowed.stderr
    assert "environment drift allowed" in allowed.stdout


def test_failed_run_cannot_be_reproduced(workspace: Workspace) -> None:
    workspace.write("mlops.yaml", "stages:\n  bad:\n    cmd: exit 1\n    outs: [x]\n")
    workspace.cli("run")
    proc = workspace.cli("reproduce")
    assert proc.returncode == 4 and "did not succeed" in proc.stderr


def test_keep_leaves_the_scratch_workspace(workspace: Workspace) -> None:
    workspace.cli("run", check=True)
    proc = workspace.cli("reproduce", "--keep", check=True)
    kept = Path(proc.stdout.split("scratch workspace kept at ", 1)[1].splitlines()[0])
    assert (kept / "models/model.bin").is_file()
    import shutil

    shutil.rmtree(kept.parent)


def test_workspace_ignored_by_an_enclosing_repository(workspace: Workspace) -> None:
    # Like `make demo` inside a clone that ignores the demo directory: its files are in no
    # commit, so the run must not claim one, and reproduce must copy the workspace.
    outer = workspace.root.parent
    git(outer, "init", "-q")
    (outer / ".gitignore").write_text("/ws/\n")
    git(outer, "add", ".gitignore")
    git(outer, "commit", "-q", "-m", "outer")
    workspace.cli("run", check=True)
    assert _record(workspace)["git"] is None
    proc = workspace.cli("reproduce")
    assert proc.returncode == 0, proc.stderr
    assert "bit-identical" in proc.stdout
