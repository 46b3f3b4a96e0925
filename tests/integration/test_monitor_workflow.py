"""monitor.yml and actions/monitor, what the linters of test_workflows cannot see: one check per
model at a time, three permissions each saying why, a checkout with the registry's tags that
keeps no credentials, every input reaching the action and every output coming back, the report
uploaded even when the check fails; the action's script turning its inputs into exactly the
`monitor check` command line; and the scheduled caller shown in monitor.yml's header passing
actionlint against the reusable workflow."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github/workflows/monitor.yml"
ACTION = REPO / "actions/monitor/action.yml"
BIN = Path(sys.executable).parent


def _load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict)
    return doc


def _job() -> dict[str, Any]:
    job: dict[str, Any] = _load(WORKFLOW)["jobs"]["monitor"]
    return job


def _step(step_id: str) -> dict[str, Any]:
    [step] = [s for s in _job()["steps"] if s.get("id") == step_id]
    return dict(step)


def test_one_check_per_model_at_a_time_never_cancelled() -> None:
    assert _job()["concurrency"] == {
        "group": "gha-mlops-monitor-${{ github.repository }}-${{ inputs.model }}",
        "cancel-in-progress": False}
    call = _load(WORKFLOW)[True]["workflow_call"]
    assert call["inputs"]["model"]["required"] is True
    assert call["inputs"]["act"] == {"description": call["inputs"]["act"]["description"],
                                     "type": "boolean", "default": True}


def test_three_permissions_each_saying_what_it_is_for() -> None:
    perms = _job()["permissions"]
    assert perms == {"contents": "read", "issues": "write", "actions": "write"}
    assert _load(WORKFLOW)["permissions"] == {}
    lines = WORKFLOW.read_text().splitlines()
    start = lines.index("    permissions:")
    for line in lines[start + 1:start + 1 + len(perms)]:
        name, _, rest = line.strip().partition(":")
        assert name in perms and "#" in rest and len(rest.split("#", 1)[1].split()) >= 3, line


def test_the_checkout_has_the_tags_and_keeps_no_credentials() -> None:
    [checkout] = [s for s in _job()["steps"]
                  if str(s.get("uses", "")).startswith("actions/checkout@")]
    assert checkout["with"] == {"persist-credentials": False, "fetch-depth": 0,
                                "fetch-tags": True}


def test_every_input_reaches_the_action_and_every_output_comes_back() -> None:
    call = _load(WORKFLOW)[True]["workflow_call"]
    action = _load(ACTION)
    check = _step("check")
    assert check["uses"] == "$/actions/monitor"
    # The job's own: the token (github.token), the end (now), the report's folder.
    assert set(check["with"]) == set(action["inputs"]) - {"token", "end"}
    for name, value in check["with"].items():
        if name == "output":
            assert value == "${{ runner.temp }}/gha-mlops-monitor"
            continue
        assert value == f"${{{{ inputs.{name} }}}}" and name in call["inputs"], name
    assert set(call["outputs"]) == set(action["outputs"]) == {"verdict", "status", "tripped",
                                                              "dispatch"}
    for name in call["outputs"]:
        assert call["outputs"][name]["value"] == f"${{{{ jobs.monitor.outputs.{name} }}}}"
        assert _job()["outputs"][name] == f"${{{{ steps.check.outputs.{name} }}}}"
        assert action["outputs"][name]["value"] == f"${{{{ steps.check.outputs.{name} }}}}"


def test_the_report_is_uploaded_whatever_the_verdict() -> None:
    [upload] = [s for s in _job()["steps"]
                if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
    assert upload["if"] == "always() && steps.check.outputs.status != ''"
    assert upload["with"]["path"] == _step("check")["with"]["output"]
    assert upload["with"]["name"] == "gha-mlops-monitor-${{ inputs.model }}"


# ---------------------------------------------------------------------------------------------
# The action's script, run by bash with a `gha-mlops` that records its arguments


def _run_action(tmp: Path, **inputs: str) -> tuple[list[str], dict[str, str]]:
    action = _load(ACTION)
    [step] = action["runs"]["steps"]
    values = {name: str(spec.get("default", "")) for name, spec in action["inputs"].items()}
    values.update({k.replace("_", "-"): v for k, v in inputs.items()})
    env = {var: re.sub(r"\$\{\{ inputs\.([\w-]+) \}\}", lambda m: values[m.group(1)], value)
           for var, value in step["env"].items()}
    stub = tmp / "bin/gha-mlops"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text('#!/bin/bash\nprintf "%s\\0" "$@" > "$OUT/argv"\n'
                    'printf "%s" "$GITHUB_TOKEN" > "$OUT/token"\n')
    stub.chmod(0o755)
    env.update(PATH=f"{stub.parent}:/usr/bin:/bin", OUT=str(tmp))
    subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
                   env=env, check=True, cwd=tmp)
    return (tmp / "argv").read_text().split("\0")[:-1], {"token": (tmp / "token").read_text()}


def test_the_action_runs_monitor_check_with_the_options_given(tmp_path: Path) -> None:
    argv, seen = _run_action(tmp_path, model="digits", window="24h", version="1.2.0",
                             log="s3://bucket/logs", profile="profile.json",
                             state="alarm.json", output="/tmp/report", act="true",
                             end="2026-03-10T00:00Z", token="ghs_x")
    assert argv == ["monitor", "check", "--window", "24h", "--end", "2026-03-10T00:00Z",
                    "--version", "1.2.0", "--log", "s3://bucket/logs", "--profile",
                    "profile.json", "--state", "alarm.json", "--output", "/tmp/report",
                    "--act", "--", "digits"]
    assert seen["token"] == "ghs_x"
    argv, _ = _run_action(tmp_path, model="digits")
    assert argv == ["monitor", "check", "--", "digits"]  # act defaults to "false" here


def test_hostile_inputs_stay_single_arguments(tmp_path: Path) -> None:
    name = "--act; rm -rf / $(id) `id`"
    argv, _ = _run_action(tmp_path, model=name, window="1h $(id)", act="yes")
    assert argv == ["monitor", "check", "--window", "1h $(id)", "--", name]


def test_the_scheduled_caller_in_the_header_passes_actionlint(tmp_path: Path) -> None:
    lines = WORKFLOW.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("#   on:"))
    block = []
    for line in lines[start:]:
        if not line.startswith("#  "):
            break
        block.append(line[4:])
    caller = "name: monitor\n" + "\n".join(block) + "\npermissions: {}\n"
    doc = yaml.safe_load(caller)
    assert doc[True]["schedule"][0]["cron"]
    job = doc["jobs"]["monitor"]
    assert job["permissions"] == _job()["permissions"]  # what the called job asks, no more
    workflows = tmp_path / ".github/workflows"
    workflows.mkdir(parents=True)
    shutil.copy(WORKFLOW, workflows / "monitor.yml")
    (workflows / "scheduled.yml").write_text(caller.replace(
        "<owner>/gha-mlops/.github/workflows/monitor.yml@v1", "./.github/workflows/monitor.yml"))
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)  # actionlint's project
    actionlint = BIN / "actionlint" if (BIN / "actionlint").exists() else shutil.which(
        "actionlint")
    proc = subprocess.run([str(actionlint), "-oneline"], cwd=tmp_path, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
