"""The Actions surface (action.yml, actions/*, .github/workflows/*) passes the real linters with
zero findings, and keeps the rules a linter cannot check: every input described and mapped
through ``env:`` to the CLI option it stands for, no expressions inside scripts, pinned
third-party actions, credentials not persisted, minimal permissions."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ACTIONS = sorted([REPO / "action.yml", *REPO.glob("actions/*/action.yml")])
WORKFLOWS = sorted(REPO.glob(".github/workflows/*.yml"))
REUSABLE = [w for w in WORKFLOWS if "workflow_call" in (yaml.safe_load(w.read_text())
                                                         .get(True) or {})]
SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")

# For each composite action that calls the CLI: input -> the CLI option it becomes, and the
# command whose --help must offer that option. "" marks an input that is not a CLI option
# (a positional argument, a step's working-directory, or an input of a `uses:` step).
CLI_INPUTS: dict[str, tuple[list[str], dict[str, str]]] = {
    "data-fetch": (["data", "pull"], {"datasets": "", "remote": "--remote", "jobs": "--jobs",
                                      "working-directory": "-C", "verify": "",
                                      "cache": ""}),
    "run": (["run"], {"config": "--config", "stages": "--stage", "set": "--set",
                      "force": "--force", "jobs": "--jobs", "working-directory": "",
                      "upload": "", "artifact-name": "", "retention-days": ""}),
    "reproduce": (["reproduce"], {"run": "", "allow-env-drift": "--allow-env-drift",
                                  "jobs": "--jobs", "working-directory": ""}),
    "summary": (["summary"], {"run": "", "working-directory": ""}),
    "report": (["report"], {"head": "", "baseline": "--baseline",
                            "baseline-artifact": "--baseline-artifact",
                            "report-id": "--report-id", "publish": "--publish",
                            "output": "--output", "from-artifact": "--from-artifact",
                            "fail-on-gate": "", "config": "--config",
                            "working-directory": "", "token": ""}),
    "register": (["model", "register"], {"model": "", "run": "--run", "version": "--version",
                                         "bump": "--bump", "push": "--push",
                                         "working-directory": "", "token": ""}),
    "package": (["package"], {"model": "", "tag": "--tag", "base": "--base", "push": "--push",
                              "working-directory": ""}),
    # `deploy NAME ...` runs the group's hidden `start` command, whose --help has the options.
    "deploy": (["deploy", "start"], {"model": "", "version": "--version", "stage": "--stage",
                                     "environment": "--env", "wait": "--wait",
                                     "push": "--push", "github-deployment": "--github-deployment",
                                     "working-directory": "", "token": ""}),
    "monitor": (["monitor", "check"], {"model": "", "window": "--window", "end": "--end",
                                       "version": "--version", "log": "--log",
                                       "profile": "--profile", "state": "--state",
                                       "output": "--output", "act": "--act",
                                       "working-directory": "", "token": ""}),
}


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    return data


def _tool(name: str) -> str:
    found = BIN / name
    if found.exists():
        return str(found)
    which = shutil.which(name)
    if which is None:
        pytest.fail(f"{name} is not installed: `make test` installs it (pip extra dev)")
    return which


def _steps(doc: dict[str, Any]) -> list[dict[str, Any]]:
    steps = list((doc.get("runs") or {}).get("steps") or [])
    for job in (doc.get("jobs") or {}).values():
        steps += job.get("steps") or []
    return steps


def test_actionlint_finds_nothing() -> None:
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is missing, so actionlint would skip the scripts: install it "
                    "(`.ci/system-deps` does)")
    proc = subprocess.run([_tool("actionlint"), "-oneline"], cwd=REPO, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(("schema", "files"), [("vendor.github-workflows", WORKFLOWS),
                                               ("vendor.github-actions", ACTIONS)])
def test_github_schemas_accept_every_file(schema: str, files: list[Path]) -> None:
    assert files
    proc = subprocess.run([_tool("check-jsonschema"), "--builtin-schema", schema,
                           *map(str, files)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_zizmor_offline_finds_nothing() -> None:
    proc = subprocess.run([_tool("zizmor"), "--offline", "--strict-collection", "action.yml",
                           "actions/", ".github/workflows/"], cwd=REPO, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No findings to report" in proc.stdout + proc.stderr


def test_every_suppression_says_why() -> None:
    for path in [*ACTIONS, *WORKFLOWS]:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if "zizmor: ignore[" in line or "actionlint-disable" in line:
                reason = lines[i - 1].strip() if i else ""
                assert reason.startswith("#") and len(reason.split()) >= 5, (
                    f"{path.name}:{i + 1}: a suppression needs a written reason on the line "
                    "above")


@pytest.mark.parametrize("path", ACTIONS + WORKFLOWS, ids=lambda p: str(p.relative_to(REPO)))
def test_no_expression_inside_a_script(path: Path) -> None:
    for step in _steps(_load(path)):
        assert "${{" not in str(step.get("run", "")), (
            f"{path.name}: step {step.get('id') or step.get('name')}: pass values through env:")


@pytest.mark.parametrize("path", ACTIONS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_input_and_output_is_described_and_used(path: Path) -> None:
    doc = _load(path)
    text = path.read_text()
    for kind in ("inputs", "outputs"):
        for name, spec in (doc.get(kind) or {}).items():
            assert isinstance(spec, dict) and str(spec.get("description", "")).strip(), (
                f"{path.name}: {kind[:-1]} {name!r} has no description")
    for name in doc.get("inputs") or {}:
        assert re.search(rf"inputs\.{re.escape(name)}(?![\w-])", text), (
            f"{path.name}: input {name!r} is never used")


@pytest.mark.parametrize("action", sorted(CLI_INPUTS))
def test_inputs_reach_the_cli_through_env_as_its_options(action: str) -> None:
    path = REPO / "actions" / action / "action.yml"
    doc = _load(path)
    command, mapping = CLI_INPUTS[action]
    assert set(doc["inputs"]) == set(mapping), "update CLI_INPUTS with the action's inputs"
    help_text = subprocess.run([sys.executable, "-m", "gha_mlops", *command, "--help"],
                               capture_output=True, text=True, check=True).stdout
    scripts = [s for s in doc["runs"]["steps"] if "run" in s]
    for name, option in mapping.items():
        used_by_run = [(s, var) for s in scripts for var, value in (s.get("env") or {}).items()
                       if value == f"${{{{ inputs.{name} }}}}"]
        if not option:
            continue
        assert used_by_run, f"{action}: input {name!r} must reach the script through env:"
        assert re.search(rf"(^|[\s\[,]){re.escape(option)}([\s=,\]]|$)", help_text), (
            f"`gha-mlops {' '.join(command)}` has no option {option}")
        for step, var in used_by_run:
            script = step["run"]
            assert f'"${var}"' in script or f'"${{{var}}}"' in script or f"${var}" in script, (
                f"{action}: ${var} is not used")
            assert option in script, f"{action}: input {name!r} is not passed as {option}"


@pytest.mark.parametrize("path", ACTIONS + WORKFLOWS, ids=lambda p: str(p.relative_to(REPO)))
def test_third_party_actions_are_pinned_and_checkouts_keep_no_credentials(path: Path) -> None:
    lines = path.read_text().splitlines()
    for step in _steps(_load(path)):
        uses = step.get("uses")
        if not uses or uses.startswith(("$/", "./")):
            continue
        assert SHA_PIN.match(uses), f"{path.name}: {uses} is not pinned to a full commit SHA"
        line = next(x for x in lines if uses in x)
        assert re.search(r"#\s*v\d", line), f"{path.name}: {uses} needs a `# vX.Y.Z` comment"
        if uses.startswith("actions/checkout@"):
            assert (step.get("with") or {}).get("persist-credentials") is False, path.name


# The only jobs that may write, and what: publishing a review (the sticky comment, the check
# run, the plots on the assets branch); a release (the version and stage tags, the image, the
# OIDC token and the attestation of its provenance); a deploy (the stage tag, the Deployment).
WRITES = {("pr-review.yml", "review"): {"contents", "pull-requests", "checks"},
          ("pr-review-publish.yml", "publish"): {"contents", "pull-requests", "checks"},
          ("release.yml", "release"): {"contents", "packages", "id-token", "attestations"},
          ("deploy.yml", "deploy"): {"contents", "deployments"},
          ("monitor.yml", "monitor"): {"issues", "actions"}}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflows_grant_minimal_permissions(path: Path) -> None:
    doc = _load(path)
    assert doc.get("permissions") == {}, f"{path.name}: start from `permissions: {{}}`"
    for name, job in doc["jobs"].items():
        perms = job.get("permissions")
        assert isinstance(perms, dict), f"{path.name}: job {name} must declare permissions"
        writes = {k for k, v in perms.items() if v not in ("read", "none")}
        assert writes == WRITES.get((path.name, name), set()), (
            f"{path.name}: job {name} asks for write access: {perms}")


@pytest.mark.parametrize("path", REUSABLE, ids=lambda p: p.name)
def test_reusable_workflows_use_their_own_actions_at_their_own_ref(path: Path) -> None:
    # `./actions/x` would resolve against the caller's checkout; `$/` is this repository at
    # the commit being run.
    doc = _load(path)
    for step in _steps(doc):
        assert not str(step.get("uses", "")).startswith("./"), path.name
    for job in doc["jobs"].values():
        assert not str(job.get("uses", "")).startswith("./"), path.name
    call = doc[True]["workflow_call"]
    for kind in ("inputs", "outputs", "secrets"):
        for name, spec in (call.get(kind) or {}).items():
            assert str(spec.get("description", "")).strip(), f"{path.name}: {kind} {name}"
