"""`gha-mlops run` against a hostile world: its process killed hard, and outputs that are
symlinks out of the workspace. One test per class of attack, through the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import CLI, Workspace

# The stage's shell ($$), a child of it that outlives a kill of the shell alone, and in it a
# late write: what a killed run must never let happen behind the next one.
GRANDCHILD_STAGE = """\
stages:
  quick:
    cmd: echo one > quick.txt
    outs: [quick.txt]
  slow:
    cmd: >-
      echo $$ > leader.pid && (sleep {late}; echo late > late.txt) & echo $! > child.pid;
      touch started; wait
    deps: [quick.txt]
    outs: [late.txt]
"""
QUICK_ONLY = """\
stages:
  quick:
    cmd: echo one > quick.txt
    outs: [quick.txt]
  slow:
    cmd: echo fine > late.txt
    deps: [quick.txt]
    outs: [late.txt]
"""


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a zombie runs nothing and writes nothing)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def _wait_until(predicate: object, timeout: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s: {what}"
        time.sleep(0.02)


def _start(ws: Workspace, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_ACTIONS"}
    return subprocess.Popen([*CLI, *args], cwd=ws.root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _pids(ws: Workspace) -> tuple[int, int]:
    _wait_until(lambda: (ws.root / "started").exists(), 30, "the slow stage started")
    return int(ws.read("leader.pid")), int(ws.read("child.pid"))


def _children_named(parent: int, mark: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/status") as fh:
                ppid = next(int(line.split()[1]) for line in fh if line.startswith("PPid:"))
            with open(f"/proc/{name}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except (OSError, ValueError, StopIteration):
            continue
        if ppid == parent and mark.encode() in cmdline:
            found.append(int(name))
    return found


def _kill_9(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def test_kill_9_of_the_runner_takes_its_stage_and_what_it_started_down(
        workspace: Workspace) -> None:
    workspace.write("mlops.yaml", GRANDCHILD_STAGE.format(late=3))
    runner = _start(workspace, "run")
    leader, child = _pids(workspace)
    killed_at = time.monotonic()
    _kill_9(runner)
    _wait_until(lambda: not _running(leader) and not _running(child), 3,
                "the stage's processes died with their runner")
    time.sleep(max(0.0, 3.5 - (time.monotonic() - killed_at)))
    assert not (workspace.root / "late.txt").exists()  # the late write never happened


def test_what_a_stage_command_leaves_running_is_stopped_when_it_ends(
        workspace: Workspace) -> None:
    workspace.write("mlops.yaml", """\
        stages:
          quick:
            cmd: (sleep 2; echo late > late.txt) & echo $! > child.pid; echo ok > out.txt
            outs: [out.txt]
        """)
    result = workspace.cli("run")
    assert result.returncode == 0, result.stderr
    assert not _running(int(workspace.read("child.pid")))
    time.sleep(2.5)
    assert not (workspace.root / "late.txt").exists()


@pytest.mark.parametrize("jobs", ["1", "2"])  # -j 2: stages start in worker threads
def test_what_survives_a_dead_runner_is_stopped_by_the_next_run(workspace: Workspace,
                                                                 jobs: str) -> None:
    workspace.write("mlops.yaml", GRANDCHILD_STAGE.format(late=60))
    runner = _start(workspace, "run", "-j", jobs)
    leader, child = _pids(workspace)
    # The runner and its guard go down together (an OOM kill of both, a lost container): only
    # the shell's parent-death signal acts at once; the shell's own child lives on.
    guards = _children_named(runner.pid, "gha-mlops-stage-guard")
    for pid in guards:
        os.kill(pid, signal.SIGKILL)
    _kill_9(runner)
    _wait_until(lambda: not _running(leader), 3, "the stage's shell died with its runner")
    assert _running(child)
    workspace.write("mlops.yaml", QUICK_ONLY)
    nxt = workspace.cli("run")
    assert nxt.returncode == 0, nxt.stderr
    # Stopped (and waited for) before the next run did anything: it can write nothing more.
    assert not _running(child)
    assert "ended without its gha-mlops process" in nxt.stdout and "stopped" in nxt.stdout
    assert workspace.read("late.txt") == "fine\n"
    assert not any((workspace.root / ".gha-mlops/tmp/runs").iterdir())


def test_a_planted_process_record_cannot_name_someone_elses_processes(
        workspace: Workspace) -> None:
    """A checkout can carry ``.gha-mlops/tmp`` (``git add -f``): a process record there that
    names another process group, with its exact start time, must not get it killed."""
    other = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        with open(f"/proc/{other.pid}/stat", "rb") as fh:
            start = int(fh.read().rsplit(b")", 1)[1].split()[19])
        workspace.write(".gha-mlops/tmp/runs/20260101-000000-abcdef/procs/train.json",
                        json.dumps({"run_id": "20260101-000000-abcdef", "stage": "train",
                                    "pid": other.pid, "pgid": other.pid, "start": start}))
        workspace.cli("run", check=True)
        assert other.poll() is None  # still running
        assert not (workspace.root / ".gha-mlops/tmp/runs/20260101-000000-abcdef").exists()
    finally:
        other.kill()
        other.wait()


@pytest.mark.parametrize("snapshot", ["kept", "lost"])
def test_a_killed_run_leaves_no_reference_to_a_run_without_a_record(
        workspace: Workspace, snapshot: str) -> None:
    """``kept``: the killed run is recorded as interrupted by the next one; ``lost`` (its
    folder has no snapshot, as an older gha-mlops left it): nothing may name the run."""
    workspace.write("mlops.yaml", GRANDCHILD_STAGE.format(late=30))
    runner = _start(workspace, "run")
    _pids(workspace)
    _kill_9(runner)
    leftover = [p for p in (workspace.root / ".gha-mlops/tmp/runs").iterdir()]
    assert len(leftover) == 1
    killed = leftover[0].name
    if snapshot == "lost":
        (leftover[0] / "record.json").unlink(missing_ok=True)
    workspace.write("mlops.yaml", QUICK_ONLY)
    nxt = workspace.cli("run", check=True)
    record = json.loads(workspace.cli("runs", "show", "--json", check=True).stdout)
    quick = next(s for s in record["stages"] if s["name"] == "quick")
    assert quick["status"] == "cached"  # the killed run's finished stage was kept
    for stage in record["stages"]:
        if "produced_by_run" in stage:
            shown = workspace.cli("runs", "show", stage["produced_by_run"], "--json")
            assert shown.returncode == 0, shown.stderr
    if snapshot == "kept":
        assert quick["produced_by_run"] == killed
        dead = json.loads(workspace.cli("runs", "show", killed, "--json", check=True).stdout)
        assert dead["status"] == "interrupted" and "interrupted" in dead
        assert [(s["name"], s["status"]) for s in dead["stages"]] == [
            ("quick", "ran"), ("slow", "interrupted")]
        assert list(dead["outputs"]) == ["quick.txt"] and dead["env"]["packages"]
        assert f"run {killed} ended without its gha-mlops process" in nxt.stdout
    else:
        assert "produced_by_run" not in quick
    assert not leftover[0].exists()


OUTSIDE_STAGE = """\
stages:
  train:
    cmd: {cmd}
    outs: [{out}]
"""


@pytest.mark.parametrize("case", ["output folder", "output file", "parent folder",
                                  "restore from cache", "made by the command"])
def test_outputs_that_lead_out_of_the_workspace_are_refused(
        workspace: Workspace, tmp_path: Path, case: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "model.bin"
    victim.write_text("precious\n")
    root = workspace.root
    write = "mkdir -p models && echo new > models/model.bin"
    if case == "output folder":
        workspace.write("mlops.yaml", OUTSIDE_STAGE.format(cmd=write, out="models"))
        (root / "models").symlink_to(outside)
    elif case == "output file":
        workspace.write("mlops.yaml", OUTSIDE_STAGE.format(cmd="echo new > model.bin",
                                                           out="model.bin"))
        (root / "model.bin").symlink_to(victim)
    elif case == "parent folder":
        workspace.write("mlops.yaml", OUTSIDE_STAGE.format(cmd=write, out="models/model.bin"))
        (root / "models").symlink_to(outside)
    elif case == "restore from cache":
        workspace.write("mlops.yaml", OUTSIDE_STAGE.format(cmd=write, out="models/model.bin"))
        workspace.cli("run", check=True)
        (root / "models/model.bin").unlink()
        (root / "models").rmdir()
        (root / "models").symlink_to(outside)
        victim.unlink()  # the restore would write it
    else:
        cmd = f"ln -s {outside} models && exit 1"  # then rolled back through the link
        workspace.write("mlops.yaml", OUTSIDE_STAGE.format(cmd=cmd, out="models/model.bin"))
    before = sorted((p.name, p.read_text()) for p in outside.iterdir())
    proc = workspace.cli("run")
    assert proc.returncode == 8, proc.stdout + proc.stderr
    assert "leads outside the workspace" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted((p.name, p.read_text()) for p in outside.iterdir()) == before
    record = json.loads(workspace.cli("runs", "show", "--json", check=True).stdout)
    assert record["status"] == "failed"


def test_a_state_folder_that_leads_out_of_the_workspace_is_refused(
        workspace: Workspace, tmp_path: Path) -> None:
    """What a run finds in ``.gha-mlops/tmp/runs`` it removes (runs killed earlier): a
    symlink there must not make that someone else's folder."""
    outside = tmp_path / "outside"
    (outside / "precious").mkdir(parents=True)
    (outside / "precious" / "file.txt").write_text("keep\n")
    (workspace.root / ".gha-mlops/tmp").mkdir(parents=True)
    (workspace.root / ".gha-mlops/tmp/runs").symlink_to(outside)
    proc = workspace.cli("run")
    assert proc.returncode == 8, proc.stdout + proc.stderr
    assert "leads outside the workspace" in proc.stderr and "Traceback" not in proc.stderr
    assert [p.name for p in outside.iterdir()] == ["precious"]
    assert (outside / "precious" / "file.txt").read_text() == "keep\n"


def test_a_planted_state_gitignore_link_is_replaced_not_written_through(
        workspace: Workspace, tmp_path: Path) -> None:
    """``.gha-mlops/.gitignore`` is the one file a run writes in the state folder before its
    lock: a dangling link a pull request planted there must not create a file outside."""
    target = tmp_path / "outside" / "authorized_keys"
    target.parent.mkdir()
    (workspace.root / ".gha-mlops").mkdir()
    (workspace.root / ".gha-mlops/.gitignore").symlink_to(target)
    workspace.cli("run", check=True)
    assert not target.exists()
    ignore = workspace.root / ".gha-mlops/.gitignore"
    assert not ignore.is_symlink() and ignore.read_text().strip().endswith("*")


def test_a_stage_command_never_runs_before_its_process_is_recorded(tmp_path: Path) -> None:
    """The guard is told a stage's process group and its record is written before the
    command may start; when writing the record fails, the command never runs. Without that
    order, a runner killed in between left a stage running that nothing recorded."""
    from gha_mlops.pipeline._procs import StageProcesses

    seen: list[bool] = []

    class SlowGuard(StageProcesses):
        def _tell_guard(self, line: str) -> None:
            if line.startswith("+"):  # a stage's group, told before its record is written
                time.sleep(0.5)  # long enough for any shell to run `echo`
                seen.append((tmp_path / "ran").exists())
            super()._tell_guard(line)

    env = {"PATH": os.environ["PATH"]}
    procs = SlowGuard(tmp_path / "procs", "20260101-000000-abcdef")
    proc = procs.start("a", "echo > ran", cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    assert procs.finish("a", proc) == 0
    assert seen == [False] and (tmp_path / "ran").exists()  # it ran, once recorded

    (tmp_path / "ran").unlink()
    (tmp_path / "procs" / "b.json").mkdir()  # the record of stage b cannot be written
    with pytest.raises(OSError):
        procs.start("b", "echo > ran", cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)
    procs.close()
    assert seen == [False, False] and not (tmp_path / "ran").exists()


def test_a_stage_command_runs_as_before_behind_the_gate(tmp_path: Path) -> None:
    """Behind the gate the command is the process the runner started (same pid, so `$$` and
    the process group are what they were), with stdin from /dev/null and `$0` the shell."""
    from gha_mlops.pipeline._procs import StageProcesses

    procs = StageProcesses(tmp_path / "procs", "20260101-000000-abcdef")
    proc = procs.start("train", 'echo "$$ $0" > out.txt; cat > in.txt', cwd=tmp_path,
                       env={"PATH": os.environ["PATH"]}, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    assert procs.finish("train", proc) == 0
    procs.close()
    assert (tmp_path / "out.txt").read_text() == f"{proc.pid} /bin/sh\n"
    assert (tmp_path / "in.txt").read_text() == ""
