"""The real `gha-mlops` process: interrupts, the workspace lock, kill -9, listing and errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from gha_mlops.store.lock import WorkspaceLock
from tests.conftest import CLI, Workspace

SLOW_STAGE = """\
stages:
  slow:
    cmd: >-
      mkdir -p out && echo partial > out/model.bin && touch started &&
      sleep 30 && echo done > out/model.bin
    outs: [out]
"""


def _wait_for(path: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _start(ws: Workspace, *args: str, pipes: bool = True) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_ACTIONS"}
    out = subprocess.PIPE if pipes else subprocess.DEVNULL
    return subprocess.Popen([*CLI, *args], cwd=ws.root, env=env, stdout=out, stderr=out,
                            text=True)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_ctrl_c_rolls_back_the_running_stage_and_records_the_interruption(
        workspace: Workspace, jobs: str) -> None:
    workspace.write("mlops.yaml", SLOW_STAGE.replace("sleep 30 && ", ""))
    workspace.cli("run", check=True)
    good = workspace.read("out/model.bin")
    workspace.write("mlops.yaml", SLOW_STAGE)  # new signature: it must run again
    (workspace.root / "started").unlink()
    proc = _start(workspace, "run", "-j", jobs)
    _wait_for(workspace.root / "started")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert workspace.read("out/model.bin") == good  # the half-written one was rolled back
    index = json.loads((workspace.root / ".gha-mlops/runs/index.json").read_text())
    assert index[-1]["status"] == "interrupted"
    # The lock was released and the cache is intact: the next run works.
    workspace.write("mlops.yaml", SLOW_STAGE.replace("sleep 30 && ", ""))
    again = workspace.cli("run", check=True)
    assert "cached" in again.stdout


def test_sigterm_from_ci_cancellation_behaves_like_ctrl_c(workspace: Workspace) -> None:
    workspace.write("mlops.yaml", SLOW_STAGE)
    proc = _start(workspace, "run")
    _wait_for(workspace.root / "started")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert not (workspace.root / "out").exists()  # nothing half-written is left


def test_second_run_in_the_same_workspace_fails_clearly(workspace: Workspace) -> None:
    with WorkspaceLock(workspace.root / ".gha-mlops", what="run"):
        busy = workspace.cli("run")
    assert busy.returncode == 75
    assert "the workspace is busy" in busy.stderr and f"pid {os.getpid()}" in busy.stderr
    assert "--wait" in busy.stderr and "Traceback" not in busy.stderr
    assert not (workspace.root / "models").exists()


def test_second_run_can_wait_for_the_first(workspace: Workspace) -> None:
    workspace.write("mlops.yaml", SLOW_STAGE.replace("sleep 30", "sleep 1"))
    first = _start(workspace, "run")
    _wait_for(workspace.root / "started")
    second = workspace.cli("run", "--wait", "60")
    first.communicate(timeout=60)
    assert first.returncode == 0
    assert second.returncode == 0, second.stderr
    assert "cached" in second.stdout  # it saw the first run's finished result


def test_kill_9_leaves_no_lock_and_no_corruption(workspace: Workspace) -> None:
    workspace.write("mlops.yaml", SLOW_STAGE.replace("sleep 30", "sleep 29.5"))
    # The killed process's stage lives on and would hold pipes open: no pipes here.
    proc = _start(workspace, "run", pipes=False)
    _wait_for(workspace.root / "started")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    # The orphaned stage process group is still sleeping; stop it as a user would.
    subprocess.run(["pkill", "-f", "sleep 29.5"], check=False)
    workspace.write("mlops.yaml", SLOW_STAGE.replace("sleep 30 && ", ""))
    result = workspace.cli("run")
    assert result.returncode == 0, result.stderr
    assert workspace.read("out/model.bin") == "done\n"


def test_runs_list_and_show(workspace: Workspace) -> None:
    workspace.cli("run", check=True)
    workspace.cli("run", check=True)
    listed = json.loads(workspace.cli("runs", "list", "--json", check=True).stdout)
    assert len(listed) == 2 and all("id" in e for e in listed)
    shown = json.loads(workspace.cli("runs", "show", "latest", "--json", check=True).stdout)
    assert shown["id"] == listed[-1]["id"]
    by_prefix = workspace.cli("runs", "show", listed[0]["id"][:22], check=True).stdout
    assert listed[0]["id"] in by_prefix and "outputs:" in by_prefix
    table = workspace.cli("runs", "list", check=True).stdout
    assert listed[0]["id"] in table and "accuracy=0.9" in table
    missing = workspace.cli("runs", "show", "nope")
    assert missing.returncode == 2 and "no run 'nope'" in missing.stderr


def test_user_errors_never_show_a_traceback(workspace: Workspace) -> None:
    (workspace.root / "mlops.yaml").unlink()
    proc = workspace.cli("run")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert "hint: " in proc.stderr
    proc = workspace.cli("runs", "show", "latest")
    assert proc.returncode == 2 and "no runs recorded" in proc.stderr


def test_errors_become_annotations_in_github_actions(workspace: Workspace,
                                                     tmp_path: Path) -> None:
    workspace.write("mlops.yaml", "stages:\n  train:\n    cmd: x\n    outz: [a]\n")
    summary = tmp_path / "summary.md"
    proc = workspace.cli("run", env={"GITHUB_ACTIONS": "true",
                                     "GITHUB_STEP_SUMMARY": str(summary)})
    assert proc.returncode == 2
    assert "::error file=mlops.yaml,line=4,col=5,title=gha-mlops::" in proc.stdout
    assert "outz" in summary.read_text()


def test_failed_stage_exit_code_and_summary(workspace: Workspace) -> None:
    workspace.write("mlops.yaml", "stages:\n  bad:\n    cmd: exit 7\n    outs: [x]\n")
    proc = workspace.cli("run")
    assert proc.returncode == 1
    assert "stage 'bad' failed" in proc.stderr and "exit code 7" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_version_and_help(workspace: Workspace) -> None:
    from gha_mlops import __version__

    assert workspace.cli("--version", check=True).stdout.strip() == f"gha-mlops {__version__}"
    helptext = workspace.cli("--help", check=True).stdout
    for command in ("run", "runs", "reproduce", "demo"):
        assert command in helptext


def test_demo_gets_its_own_repository_inside_a_repository_that_ignores_it(
        tmp_path: Path) -> None:
    from tests.conftest import git

    git(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_text("/gha-mlops-demo/\n")
    proc = subprocess.run([*CLI, "demo", "--no-run"], cwd=tmp_path, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    demo = tmp_path / "gha-mlops-demo"
    assert (demo / ".git").is_dir()
    assert git(demo, "status", "--porcelain") == ""  # everything committed
    assert "mlops.yaml" in git(demo, "ls-files")
