"""deploy.yml and actions/deploy, what the linters of test_workflows cannot see: the job names
the GitHub environment and queues per environment, asks for two permissions and says why,
keeps no credentials, hands the SSH secrets to one step; the action's script turns its inputs
into exactly the command line interfaces.md names; and docs/release-train.md's workflows pass
actionlint against these reusable workflows (inputs, outputs, secrets, permissions), its
environment set-up is what GitHub's API takes and reads back as the port reports it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gha_mlops import bootstrap
from gha_mlops.github.port import EnvironmentInfo
from gha_mlops.testing.github_emulator import GitHubEmulator

pytest_plugins = ["tests.integration.github_fixtures"]

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / ".github/workflows/deploy.yml"
ACTION = REPO / "actions/deploy/action.yml"
DOC = REPO / "docs/release-train.md"
BIN = Path(sys.executable).parent


def _load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict)
    return doc


def _job() -> dict[str, Any]:
    job: dict[str, Any] = _load(DEPLOY)["jobs"]["deploy"]
    return job


def _step(step_id: str) -> dict[str, Any]:
    [step] = [s for s in _job()["steps"] if s.get("id") == step_id]
    return dict(step)


def test_the_job_names_the_environment_and_queues_per_environment() -> None:
    job = _job()
    assert job["environment"] == {"name": "${{ inputs.environment }}",
                                  "url": "${{ steps.deploy.outputs.url }}"}
    assert job["concurrency"] == {
        "group": "gha-mlops-deploy-${{ github.repository }}-${{ inputs.environment }}",
        "cancel-in-progress": False}
    assert _load(DEPLOY)[True]["workflow_call"]["inputs"]["environment"]["required"] is True


def test_two_permissions_each_saying_what_it_is_for() -> None:
    perms = _job()["permissions"]
    assert perms == {"contents": "write", "deployments": "write"}
    lines = DEPLOY.read_text().splitlines()
    start = lines.index("    permissions:")
    for line in lines[start + 1:start + 1 + len(perms)]:
        name, _, rest = line.strip().partition(":")
        assert name in perms and "#" in rest and len(rest.split("#", 1)[1].split()) >= 3, line


def test_the_checkout_has_every_tag_and_keeps_no_credentials() -> None:
    [checkout] = [s for s in _job()["steps"]
                  if str(s.get("uses", "")).startswith("actions/checkout@")]
    assert checkout["with"] == {"persist-credentials": False, "fetch-depth": 0,
                                "fetch-tags": True}


def test_every_input_reaches_the_action_and_every_output_comes_back() -> None:
    call = _load(DEPLOY)[True]["workflow_call"]
    action = _load(ACTION)
    deploy = _step("deploy")
    assert deploy["uses"] == "$/actions/deploy"
    # Every action input but the token (the job's own) comes from the workflow input of the
    # same name.
    assert set(deploy["with"]) == set(action["inputs"]) - {"token"}
    for name, value in deploy["with"].items():
        assert value == f"${{{{ inputs.{name} }}}}" and name in call["inputs"], name
    for name in call["outputs"]:
        assert call["outputs"][name]["value"] == f"${{{{ jobs.deploy.outputs.{name} }}}}"
        assert _job()["outputs"][name] == f"${{{{ steps.deploy.outputs.{name} }}}}"
        assert action["outputs"][name]["value"] == f"${{{{ steps.deploy.outputs.{name} }}}}"


def test_the_ssh_secrets_reach_one_step_only() -> None:
    text = DEPLOY.read_text()
    for step in _job()["steps"]:
        uses_secrets = "secrets." in yaml.safe_dump(step)
        assert uses_secrets == (step.get("id") == "ssh"), step.get("id") or step.get("name")
    assert set(re.findall(r"secrets\.(\w+)", text)) == {"DEPLOY_SSH_KEY",
                                                        "DEPLOY_SSH_KNOWN_HOSTS"}
    assert _step("deploy")["env"] == {"SSH_AUTH_SOCK": "${{ steps.ssh.outputs.socket }}"}


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
                    'env | grep "^GIT_CONFIG" > "$OUT/git" || true\n')
    stub.chmod(0o755)
    env.update(PATH=f"{stub.parent}:/usr/bin:/bin", OUT=str(tmp))
    subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
                   env=env, check=True, cwd=tmp)
    argv = (tmp / "argv").read_text().split("\0")[:-1]
    git = dict(line.split("=", 1) for line in (tmp / "git").read_text().splitlines())
    return argv, git


def test_the_action_runs_the_command_interfaces_md_names(tmp_path: Path) -> None:
    argv, git = _run_action(tmp_path, model="digits", version="1.2.0", environment="staging",
                            push="true", wait="30", token="ghs_x")
    assert argv == ["deploy", "--env", "staging", "--version", "1.2.0", "--wait", "30",
                    "--github-deployment", "--push", "--", "digits"]
    # The push reads the token from the step's environment through git's credential helper.
    assert git["GIT_CONFIG_KEY_1"] == "credential.helper" and "$TOKEN" in git[
        "GIT_CONFIG_VALUE_1"]
    argv, git = _run_action(tmp_path, stage="staging", environment="production",
                            github_deployment="false")
    assert argv == ["deploy", "--env", "production", "--stage", "staging", "--"]
    assert git == {}


def test_a_hostile_model_name_stays_one_positional_argument(tmp_path: Path) -> None:
    name = "--push; rm -rf / $(id) `id`"
    argv, _ = _run_action(tmp_path, model=name, version="1.0.0", environment="e")
    assert argv[-2:] == ["--", name]


# ---------------------------------------------------------------------------------------------
# docs/release-train.md


def _doc_blocks(kind: str) -> list[str]:
    text = DOC.read_text()
    return re.findall(rf"<!-- example: [^>]*-->\n```{kind}\n(.*?)```", text, re.S)


def _called(path: str) -> Path | None:
    m = re.fullmatch(r"<owner>/gha-mlops/\.github/workflows/([\w-]+\.yml)@v1", path)
    return REPO / ".github/workflows" / m.group(1) if m else None


def test_the_doc_workflows_pass_actionlint_against_these_reusable_workflows(
        tmp_path: Path) -> None:
    blocks = _doc_blocks("yaml")
    assert len(blocks) == 3
    assert any("deploy.yml@v1" in b and "environment: production" in b for b in blocks)
    workflows = tmp_path / ".github/workflows"
    workflows.mkdir(parents=True)
    for name in ("pipeline.yml", "pr-review.yml", "release.yml", "deploy.yml"):
        shutil.copy(REPO / ".github/workflows" / name, workflows / name)
    for i, block in enumerate(blocks):
        # The same calls, to the local copies, so actionlint checks the inputs, the outputs
        # read through needs and the secrets against the reusable workflows themselves.
        local = re.sub(r"<owner>/gha-mlops/(\.github/workflows/[\w-]+\.yml)@v1", r"./\1", block)
        (workflows / f"example-{i}.yml").write_text(local)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)  # actionlint's project
    actionlint = BIN / "actionlint" if (BIN / "actionlint").exists() else shutil.which(
        "actionlint")
    proc = subprocess.run([str(actionlint), "-oneline"], cwd=tmp_path, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_doc_jobs_grant_what_the_called_jobs_ask_and_no_more() -> None:
    for block in _doc_blocks("yaml"):
        doc = yaml.safe_load(block)
        assert doc["permissions"] == {}
        for name, job in doc["jobs"].items():
            called = _called(job["uses"])
            assert called is not None, job["uses"]
            asked: dict[str, str] = {}
            for called_job in _load(called)["jobs"].values():
                asked.update(called_job.get("permissions") or {})
            # GitHub refuses a call whose jobs ask more than the caller grants.
            assert job["permissions"] == asked, (name, job["permissions"], asked)
            call = _load(called)[True]["workflow_call"]
            assert set(job.get("with") or {}) <= set(call.get("inputs") or {}), name
            assert set(job.get("secrets") or {}) <= set(call.get("secrets") or {}), name


def test_the_doc_environment_setup_is_what_github_takes(github: GitHubEmulator) -> None:
    [body] = _doc_blocks("json")
    with bootstrap.github({"GITHUB_TOKEN": github.token, "GITHUB_API_URL": github.url}) as port:
        port.client.requester.requestJsonAndCheck(
            "PUT", "/repos/octo/demo/environments/production", input=json.loads(body))
        assert port.environment("octo/demo", "production") == EnvironmentInfo(
            "production", required_reviewers=2, wait_timer=10, branch_policy=True)
    # The fixture fails the test if the body or the answer departed from GitHub's description.


@pytest.mark.parametrize("line", ["uses: <owner>/gha-mlops/.github/workflows/deploy.yml@v1",
                                  "gha-mlops deploy rollback --env production",
                                  "group: gha-mlops-deploy-${{ github.repository }}-"
                                  "${{ inputs.environment }}"])
def test_the_doc_names_what_the_workflow_does(line: str) -> None:
    assert line in DOC.read_text()
    assert "gha-mlops deploy rollback" not in line or "rollback" in _cli_help()


def _cli_help() -> str:
    return subprocess.run([sys.executable, "-m", "gha_mlops", "deploy", "--help"],
                          capture_output=True, text=True, check=True).stdout
