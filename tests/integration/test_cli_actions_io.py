"""The real `gha-mlops run` process as a GitHub Actions step: step outputs, log groups,
annotations, and `--set` sweeps whose legs reproduce. The runner's files are temp files here,
read back with the runner's own parsing rules."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gha_mlops.pipeline.execute import HeldInterrupts as _HeldInterrupts
from gha_mlops.store.hashing import sha256_file
from tests.conftest import CLI, Workspace
from tests.unit.test_gha_runtime import parse_command, parse_env_file

OUTPUTS = ["run-id", "status", "metrics", "model-sha256", "record"]


class Step:
    """One step's runner files and environment."""

    def __init__(self, root: Path, workspace: Path) -> None:
        self.files = {var: root / var.lower() for var in
                      ("GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY", "GITHUB_ENV", "GITHUB_PATH",
                       "GITHUB_STATE")}
        for path in self.files.values():
            path.write_text("")  # the runner creates them empty
        self.env = {"GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": str(workspace),
                    **{k: str(v) for k, v in self.files.items()}}

    def outputs(self) -> dict[str, str]:
        pairs = parse_env_file(self.files["GITHUB_OUTPUT"].read_text())
        names = [name for name, _ in pairs]
        assert len(names) == len(set(names)), f"an output was written twice: {names}"
        return dict(pairs)

    def text(self, var: str) -> str:
        return self.files[var].read_text()


@pytest.fixture
def step(workspace: Workspace, tmp_path: Path) -> Step:
    return Step(tmp_path, workspace.root)


def _commands(stdout: str) -> list[tuple[str, dict[str, str], str]]:
    return [parse_command(line) for line in stdout.splitlines() if line.startswith("::")]


def test_a_run_sets_its_step_outputs(workspace: Workspace, step: Step) -> None:
    proc = workspace.cli("run", env=step.env, check=True)
    out = step.outputs()
    assert list(out) == OUTPUTS
    record_path = workspace.root / out["record"]
    record = json.loads(record_path.read_text())
    assert out["record"] == f".gha-mlops/runs/{out['run-id']}.json"
    assert record["id"] == out["run-id"] and record["status"] == out["status"] == "succeeded"
    assert json.loads(out["metrics"]) == record["metrics"] == {
        "metrics/train.json": {"accuracy": 0.9, "loss.final": 0.25}}
    assert "\n" not in out["metrics"] and ", " not in out["metrics"]  # compact
    assert out["model-sha256"] == sha256_file(workspace.root / "models/model.bin")
    assert out["run-id"] in proc.stdout
    # The run touches no other runner file.
    assert step.text("GITHUB_ENV") == step.text("GITHUB_PATH") == step.text("GITHUB_STATE") == ""


def test_each_stage_that_runs_is_a_log_group(workspace: Workspace, step: Step,
                                             tmp_path: Path) -> None:
    workspace.write("mlops.yaml", """\
        stages:
          first:
            cmd: echo "output of first" && echo 1 > a.txt
            outs: [a.txt]
          second:
            cmd: echo "output of second" && cat a.txt > b.txt
            deps: [a.txt]
            outs: [b.txt]
        """)
    lines = workspace.cli("run", env=step.env, check=True).stdout.splitlines()
    i = lines.index("output of first")
    assert lines[i - 1].startswith("::group::▶ first  echo")
    assert lines[i + 1] == "::endgroup::"
    assert lines[i + 2].startswith("✓ first ran")
    j = lines.index("output of second")
    assert lines[j - 1].startswith("::group::▶ second") and lines[j + 1] == "::endgroup::"
    assert sum(1 for ln in lines if ln.startswith("::group::")) == 2
    assert sum(1 for ln in lines if ln == "::endgroup::") == 2
    # Nothing runs the second time (a later step): no groups; the outputs name the new run.
    (tmp_path / "next").mkdir()
    later = Step(tmp_path / "next", workspace.root)
    again = workspace.cli("run", env=later.env, check=True).stdout
    assert "::group::" not in again
    assert later.outputs()["run-id"] in again
    assert later.outputs()["run-id"] != step.outputs()["run-id"]


def test_parallel_stages_are_not_grouped(workspace: Workspace, step: Step) -> None:
    proc = workspace.cli("run", "-j", "2", env=step.env, check=True)
    assert "::group::" not in proc.stdout and "::endgroup::" not in proc.stdout
    assert step.outputs()["status"] == "succeeded"


def test_outside_actions_there_are_no_commands_and_no_outputs(workspace: Workspace,
                                                              step: Step) -> None:
    env = {k: v for k, v in step.env.items() if k not in ("GITHUB_ACTIONS", "GITHUB_OUTPUT")}
    proc = workspace.cli("run", env=env, check=True)
    assert "::" not in proc.stdout and "::" not in proc.stderr
    assert step.text("GITHUB_OUTPUT") == ""


def test_a_failed_run_still_sets_its_outputs(workspace: Workspace, step: Step) -> None:
    workspace.write("mlops.yaml", """\
        model: models/model.bin
        stages:
          ok:
            cmd: >-
              printf '{"loss": 0.5}' > m.json
            metrics: [m.json]
          bad:
            cmd: echo "about to fail" && exit 7
            outs: [models/model.bin]
        """)
    proc = workspace.cli("run", env=step.env)
    assert proc.returncode == 1
    out = step.outputs()
    assert list(out) == OUTPUTS
    assert out["status"] == "failed"
    assert json.loads(out["metrics"]) == {"m.json": {"loss": 0.5}}
    assert out["model-sha256"] == ""
    record = json.loads((workspace.root / out["record"]).read_text())
    assert record["id"] == out["run-id"] and record["status"] == "failed"
    errors = [c for c in _commands(proc.stdout) if c[0] == "error"]
    assert len(errors) == 1
    assert "stage 'bad' failed" in errors[0][2] and "exit code 7" in errors[0][2]
    # The failing stage's output stays inside its group; the error comes after it closed.
    lines = proc.stdout.splitlines()
    assert lines[lines.index("about to fail") + 1] == "::endgroup::"
    assert lines.index("::endgroup::") < next(
        i for i, ln in enumerate(lines) if ln.startswith("::error"))
    assert "stage 'bad' failed" in step.text("GITHUB_STEP_SUMMARY")


def test_an_interrupted_run_still_sets_its_outputs(workspace: Workspace, step: Step) -> None:
    # The stage interrupts gha-mlops itself, as Ctrl-C or a cancelled job would. (No command
    # after the kill forks: dash defers a SIGINT that lands while it forks until that child
    # ends, which would make the engine wait out its grace period.)
    workspace.write("mlops.yaml", """\
        stages:
          s:
            cmd: kill -INT $PPID; echo late > o.txt
            outs: [o.txt]
        """)
    proc = workspace.cli("run", env=step.env, timeout=60)
    assert proc.returncode == 130, proc.stderr
    out = step.outputs()
    assert out["status"] == "interrupted"
    assert json.loads((workspace.root / out["record"]).read_text())["status"] == "interrupted"
    assert not (workspace.root / "o.txt").exists()  # rolled back


def test_an_interrupt_while_a_command_starts_is_held_until_it_can_be_stopped() -> None:
    # What makes the test above deterministic: a Ctrl-C that lands between starting a stage's
    # command and the code that stops it is raised there, not before (leaving it running).
    before = signal.getsignal(signal.SIGINT)
    held = _HeldInterrupts()
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(1000):  # let the interpreter run the handler: it must only take note
        pass
    assert held.pending == signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
        held.release()
    assert signal.getsignal(signal.SIGINT) is before
    quiet = _HeldInterrupts()
    quiet.release()  # nothing came: nothing raised
    assert signal.getsignal(signal.SIGINT) is before


def test_a_pipeline_without_a_model_has_an_empty_model_output(workspace: Workspace,
                                                             step: Step) -> None:
    workspace.write("mlops.yaml", "stages:\n  s:\n    cmd: echo hi > o.txt\n    outs: [o.txt]\n")
    workspace.cli("run", env=step.env, check=True)
    out = step.outputs()
    assert out["model-sha256"] == "" and out["metrics"] == "{}"


def test_the_record_path_is_relative_to_the_github_workspace(workspace: Workspace,
                                                            step: Step) -> None:
    # The pipeline in a subdirectory of the checkout: later steps resolve paths from the root.
    sub = workspace.root / "ml"
    sub.mkdir()
    (sub / "mlops.yaml").write_text("stages:\n  s:\n    cmd: echo hi > o.txt\n"
                                    "    outs: [o.txt]\n")
    workspace.cli("run", "--config", "ml/mlops.yaml", env=step.env, check=True)
    out = step.outputs()
    assert out["record"] == f"ml/.gha-mlops/runs/{out['run-id']}.json"
    assert (workspace.root / out["record"]).is_file()


def test_a_config_error_is_an_annotation_on_the_file_and_line(workspace: Workspace,
                                                             step: Step) -> None:
    workspace.write("mlops.yaml", "seed: 1\nstages:\n  train:\n    cmd: x\n    outz: [a]\n")
    proc = workspace.cli("run", env=step.env)
    assert proc.returncode == 2
    assert "::error file=mlops.yaml,line=5" in proc.stdout
    (name, props, message), = _commands(proc.stdout)
    assert (name, props["file"], props["line"]) == ("error", "mlops.yaml", "5")
    assert "outz" in message and "did you mean 'outs'?" in message
    assert "outz" in step.text("GITHUB_STEP_SUMMARY")
    assert step.text("GITHUB_OUTPUT") == ""  # no run started, so no run to name


def test_an_unknown_set_key_is_an_annotation_naming_the_key(workspace: Workspace,
                                                           step: Step) -> None:
    proc = workspace.cli("run", "--set", "train.lrr=0.1", env=step.env)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "error: --set train.lrr: there is no key 'train.lrr' in params.yaml" in proc.stderr
    assert "did you mean 'train.lr'?" in proc.stderr
    (name, _, message), = _commands(proc.stdout)
    assert name == "error" and "train.lrr" in message and "train.lr" in message


def test_a_set_without_an_equals_sign_is_a_usage_error(workspace: Workspace) -> None:
    proc = workspace.cli("run", "--set", "train.lr")
    assert proc.returncode == 2
    assert "expected KEY=VALUE" in proc.stderr and "Traceback" not in proc.stderr


SWEEP = """\
    seed: 11
    model: models/model.bin
    stages:
      train:
        cmd: >-
          mkdir -p models metrics && python -c "from gha_mlops.train import params;
          print(params('train.lr'))" > models/model.bin
          && python -c "import json; from gha_mlops.train import params;
          print(json.dumps({'lr': params('train.lr')}))" > metrics/train.json
        params: [train.lr]
        outs: [models/model.bin]
        metrics: [metrics/train.json]
    """


def test_a_sweep_in_actions_and_the_reproduction_of_each_leg(workspace: Workspace,
                                                             tmp_path: Path) -> None:
    workspace.write("mlops.yaml", SWEEP)
    legs = []
    for i, lr in enumerate(("0.01", "0.3")):
        leg_dir = tmp_path / f"leg{i}"
        leg_dir.mkdir()
        step = Step(leg_dir, workspace.root)
        workspace.cli("run", "--set", f"train.lr={lr}", env=step.env, check=True)
        out = step.outputs()
        assert json.loads(out["metrics"]) == {"metrics/train.json": {"lr": float(lr)}}
        record = json.loads((workspace.root / out["record"]).read_text())
        assert record["params"]["overrides"] == {"train.lr": float(lr)}
        legs.append(out)
    assert legs[0]["model-sha256"] != legs[1]["model-sha256"]
    assert "lr: 0.1" in workspace.read("params.yaml")  # never edited
    for out in legs:
        proc = workspace.cli("reproduce", out["run-id"])
        assert proc.returncode == 0, proc.stderr
        assert "bit-identical" in proc.stdout


def test_version_stays_free_of_the_engine() -> None:
    # `--version` must not import the run command (and with it the engine).
    code = ("import sys\nfrom gha_mlops.cli import main\n"
            "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('gha_mlops.cli.run', 'gha_mlops.pipeline.engine', "
            "'gha_mlops.gha.runtime', 'yaml', 'pydantic') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.strip().splitlines()[-1]
    assert out == "[]"


def test_record_output_through_symlinks_and_outside_the_checkout(tmp_path: Path) -> None:
    from gha_mlops.cli.run import step_outputs

    real = tmp_path / "real"
    (real / ".gha-mlops/runs").mkdir(parents=True)
    record_path = real / ".gha-mlops/runs/r1.json"
    record_path.write_text("{}")
    (tmp_path / "link").symlink_to(real)
    record = {"id": "r1", "status": "succeeded", "metrics": {"m.json": {"b": 1, "a": 0.5}},
              "model": {"path": "m.bin", "sha256": "ab" * 32}}
    out = step_outputs(record, record_path, tmp_path / "link")
    assert out == {"run-id": "r1", "status": "succeeded",
                   "metrics": '{"m.json":{"a":0.5,"b":1}}', "model-sha256": "ab" * 32,
                   "record": ".gha-mlops/runs/r1.json"}
    elsewhere = step_outputs(record, record_path, tmp_path / "other")
    assert elsewhere["record"] == str(record_path)


def test_an_annotation_names_the_file_from_the_repository_root(workspace: Workspace,
                                                               step: Step) -> None:
    # `working-directory: ml` in a workflow: the command runs in ml/, GitHub needs ml/mlops.yaml.
    sub = workspace.root / "ml"
    sub.mkdir()
    (sub / "mlops.yaml").write_text("stages:\n  s:\n    cmd: x\n    outz: [a]\n")
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_ACTIONS"} | step.env
    proc = subprocess.run([*CLI, "run"], cwd=sub, env=env, capture_output=True, text=True,
                          check=False, timeout=120)
    assert proc.returncode == 2
    (name, props, _), = _commands(proc.stdout)
    assert (name, props["file"], props["line"]) == ("error", "ml/mlops.yaml", "4")
    assert "mlops.yaml:4" in proc.stderr  # the terminal message stays relative to where it ran
