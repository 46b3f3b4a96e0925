"""`gha-mlops model ...` on real git repositories and real runs, with GTO (from PyPI) as the
oracle: `gto show`, `gto show NAME` and `gto history NAME` read what our commands wrote and
agree with `model list/show/history`. Bad input exits != 0 with a clear message and no tag."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Workspace, git

GTO = Path(sys.executable).parent / "gto"
REGISTRY = """\
registry:
  stages: [dev, staging, prod]
  champion: prod
  models:
    digits:
      path: models/model.bin
"""


@pytest.fixture
def reg_ws(git_workspace: Workspace) -> Workspace:
    """The three-stage workspace with a registry, committed, and one run."""
    ws = git_workspace
    ws.write("mlops.yaml", ws.read("mlops.yaml") + REGISTRY)
    git(ws.root, "commit", "-qam", "registry")
    ws.run()
    return ws


def _next_run(ws: Workspace, lr: str) -> None:
    """A new commit changing a params value, and its run."""
    ws.write("params.yaml", f"prepare:\n  scale: 1\ntrain:\n  lr: {lr}\n  epochs: 3\n")
    git(ws.root, "commit", "-qam", f"lr {lr}")
    ws.run()


def _ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _json(ws: Workspace, *args: str) -> object:
    return json.loads(_ok(ws.cli("model", *args, "--json")).stdout)


def _gto(ws: Workspace, *args: str) -> object:
    proc = subprocess.run([str(GTO), *args, "--json"], cwd=ws.root, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _tags(ws: Workspace) -> list[str]:
    return git(ws.root, "tag", "-l").split()


def test_gto_reads_what_the_commands_write(reg_ws: Workspace) -> None:
    ws = reg_ws
    out = _ok(ws.cli("model", "register", "digits")).stdout
    assert "tagged digits@v1.0.0" in out and "first version" in out
    _next_run(ws, "0.2")
    assert "minor: a params value changed" in _ok(ws.cli("model", "register", "digits")).stdout
    _next_run(ws, "0.3")
    _ok(ws.cli("model", "register", "digits", "--bump", "major"))
    _ok(ws.cli("model", "promote", "digits", "1.0.0", "--stage", "prod"))
    _ok(ws.cli("model", "promote", "digits", "1.1.0", "--stage", "prod"))
    _ok(ws.cli("model", "promote", "digits", "v2.0.0", "--stage", "staging"))
    _ok(ws.cli("model", "demote", "digits", "--stage", "prod"))  # back to 1.0.0
    _ok(ws.cli("model", "deprecate", "digits", "2.0.0"))
    assert set(_tags(ws)) == {"digits@v1.0.0", "digits@v1.1.0", "digits@v2.0.0",
                              "digits#prod#1", "digits#prod#2", "digits#staging#3",
                              "digits#prod!#4", "digits@v2.0.0!#5"}

    ours = _json(ws, "list")
    theirs = _gto(ws, "show")
    assert ours == [{"name": "digits", "latest": "1.1.0", "stages": {"prod": "1.0.0"},
                     "deprecated": False, "versions_active": 2}]
    assert isinstance(theirs, dict)
    assert theirs["digits"]["version"] == "v1.1.0"
    assert {s: v for s, v in theirs["digits"]["stage"].items() if v} == {"prod": "v1.0.0"}

    shown = _json(ws, "show", "digits")
    gto_versions = _gto(ws, "show", "digits")
    assert isinstance(shown, dict) and isinstance(gto_versions, list)
    assert [(v["version"], v["stages"]) for v in shown["versions"]] == [
        (g["version"].lstrip("v"), [s["stage"] for s in g["stages"]]) for g in gto_versions]

    ours_h = _json(ws, "history", "digits")
    gto_h = _gto(ws, "history", "digits")
    assert isinstance(ours_h, list) and isinstance(gto_h, list)
    assert [(e["event"], e["version"], e["stage"], e["tag"]) for e in ours_h] == [
        (e["event"], e["version"] and e["version"].lstrip("v"), e["stage"], e["ref"])
        for e in reversed(gto_h)]

    one = _json(ws, "show", "digits#prod")
    assert isinstance(one, dict) and one["version"] == "1.0.0"
    lineage = one["lineage"]
    record = json.loads(_ok(ws.cli("runs", "show", lineage["run_id"], "--json")).stdout)
    assert lineage["commit"] == record["git"]["commit"] == one["commit"]
    assert lineage["model"]["sha256"] == record["outputs"]["models/model.bin"]["sha256"]
    assert lineage["metrics"]["accuracy"] == 0.9


def test_deprecating_the_model_hides_it_as_gto_does(reg_ws: Workspace) -> None:
    ws = reg_ws
    _ok(ws.cli("model", "register", "digits"))
    _ok(ws.cli("model", "deprecate", "digits"))
    assert _json(ws, "list") == [] and _gto(ws, "show") == {}
    listed = _json(ws, "list", "--all")
    assert isinstance(listed, list) and listed[0]["deprecated"] is True
    bad = ws.cli("model", "promote", "digits", "1.0.0", "--stage", "prod")
    assert bad.returncode != 0 and "deprecated" in bad.stderr


@pytest.mark.parametrize("case", ["no-output", "existing", "undeclared-stage", "bad-name",
                                  "same-commit", "deprecated-version"])
def test_bad_input_is_refused_before_any_tag(reg_ws: Workspace, case: str) -> None:
    ws = reg_ws
    if case != "no-output":
        _ok(ws.cli("model", "register", "digits"))
    before = _tags(ws)
    if case == "no-output":
        ws.write("mlops.yaml", ws.read("mlops.yaml").replace(
            "path: models/model.bin", "path: prepared/model.onnx"))
        proc, words = ws.cli("model", "register", "digits"), "has no output prepared/model.onnx"
    elif case == "existing":
        _next_run(ws, "0.5")
        proc, words = ws.cli("model", "register", "digits", "--version", "1.0.0"), "exists"
    elif case == "undeclared-stage":
        proc = ws.cli("model", "promote", "digits", "1.0.0", "--stage", "live")
        words = "not declared in registry.stages"
    elif case == "bad-name":
        proc, words = ws.cli("model", "register", "nope"), "no model 'nope'"
    elif case == "same-commit":
        proc, words = ws.cli("model", "register", "digits"), "already registered at commit"
    else:
        _ok(ws.cli("model", "deprecate", "digits", "1.0.0"))
        before = _tags(ws)
        proc = ws.cli("model", "promote", "digits", "1.0.0", "--stage", "prod")
        words = "deprecated"
    assert proc.returncode != 0
    assert words in proc.stderr and "Traceback" not in proc.stderr
    assert _tags(ws) == before


def test_push_checks_the_remote_and_never_forces(reg_ws: Workspace, tmp_path: Path) -> None:
    ws = reg_ws
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(ws.root, "remote", "add", "origin", str(remote))
    _ok(ws.cli("model", "register", "digits", "--push"))
    assert "digits@v1.0.0" in git(remote, "tag", "-l")
    # Someone else promoted 1.0.0 to prod as digits#prod#1 with other content.
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(remote), str(other))
    git(other, "tag", "-a", "-m", "theirs", "digits#prod#1", "digits@v1.0.0^{commit}")
    git(other, "push", "-q", "origin", "refs/tags/digits#prod#1")
    theirs = git(remote, "rev-parse", "refs/tags/digits#prod#1").strip()
    before = _tags(ws)
    proc = ws.cli("model", "promote", "digits", "1.0.0", "--stage", "prod", "--push")
    assert proc.returncode != 0 and "exists on origin with other content" in proc.stderr
    assert _tags(ws) == before
    assert git(remote, "rev-parse", "refs/tags/digits#prod#1").strip() == theirs


def test_the_report_compares_with_the_champion(reg_ws: Workspace) -> None:
    ws = reg_ws
    _ok(ws.cli("model", "register", "digits"))
    _ok(ws.cli("model", "promote", "digits", "1.0.0", "--stage", "prod"))
    champion = json.loads(_ok(ws.cli("runs", "show", "latest", "--json")).stdout)["id"]
    _next_run(ws, "0.7")
    _next_run(ws, "0.8")
    proc = _ok(ws.cli("report"))  # no --baseline and no GitHub: the registry's champion
    assert f"the champion digits 1.0.0 at stage prod (run {champion})" in proc.stderr
    assert champion in proc.stdout


@pytest.mark.parametrize("message", ["x" * 400_000, "Register\n\n{\"schema\": [", "\x1b[31m"])
def test_a_hostile_tag_message_reads_as_lineage_unknown(reg_ws: Workspace,
                                                        message: str) -> None:
    ws = reg_ws
    (ws.root.parent / "msg.txt").write_text(message)
    git(ws.root, "tag", "-a", "-F", str(ws.root.parent / "msg.txt"), "digits@v3.0.0", "HEAD")
    listed = _json(ws, "list")
    assert isinstance(listed, list) and listed[0]["latest"] == "3.0.0"
    shown = _ok(ws.cli("model", "show", "digits@3.0.0"))
    assert "lineage:   unknown" in shown.stdout and "\x1b" not in shown.stdout
    one = _json(ws, "show", "digits@3.0.0")
    assert isinstance(one, dict) and one["lineage"]["problem"]


def test_a_failed_push_says_how_to_finish(reg_ws: Workspace, tmp_path: Path) -> None:
    ws = reg_ws
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'tags are frozen' >&2\nexit 1\n")
    hook.chmod(0o755)
    git(ws.root, "remote", "add", "origin", str(remote))
    proc = ws.cli("model", "register", "digits", "--push")
    assert proc.returncode != 0 and "the push to origin failed" in proc.stderr
    assert "git push origin 'refs/tags/digits@v1.0.0'" in proc.stderr
    assert _tags(ws) == ["digits@v1.0.0"] and not git(remote, "tag", "-l").strip()


def test_a_run_whose_commit_is_not_here_is_refused(reg_ws: Workspace, tmp_path: Path) -> None:
    ws = reg_ws
    record = json.loads(_ok(ws.cli("runs", "show", "latest", "--json")).stdout)
    record["git"]["commit"] = "0123456789abcdef0123456789abcdef01234567"
    elsewhere = tmp_path / "record.json"
    elsewhere.write_text(json.dumps(record))
    proc = ws.cli("model", "register", "digits", "--run", str(elsewhere))
    assert proc.returncode != 0 and "is not in this repository" in proc.stderr
    assert _tags(ws) == []


def test_a_code_change_is_a_patch_and_a_data_change_a_minor(reg_ws: Workspace) -> None:
    """The version rule reads a run's plain dependencies: a script is code (the commit pins
    it, a change is a patch), a data folder is data (a change is a minor)."""
    ws = reg_ws
    ws.write("prep.sh", "cat data/*.txt\n")
    ws.write("mlops.yaml", ws.read("mlops.yaml").replace("    deps: [data]\n",
                                                         "    deps: [data, prep.sh]\n"))
    git(ws.root, "add", "-A")
    git(ws.root, "commit", "-qm", "prep.sh")
    ws.run()
    _ok(ws.cli("model", "register", "digits"))
    lineage = _json(ws, "show", "digits@1.0.0")["lineage"]  # type: ignore[index]
    assert "prep.sh" not in lineage["datasets"] and "data" in lineage["datasets"]

    ws.write("prep.sh", "# the same, commented\ncat data/*.txt\n")
    git(ws.root, "commit", "-qam", "a comment")
    ws.run()
    out = _ok(ws.cli("model", "register", "digits")).stdout
    assert "tagged digits@v1.0.1" in out and "patch" in out

    ws.write("data/a.txt", "alpha, corrected\n")
    git(ws.root, "commit", "-qam", "data fix")
    ws.run()
    out = _ok(ws.cli("model", "register", "digits")).stdout
    assert "tagged digits@v1.1.0" in out and "minor: dataset changed: data" in out


def test_in_actions_register_and_promote_set_the_step_outputs(reg_ws: Workspace,
                                                             tmp_path: Path) -> None:
    ws = reg_ws
    out = tmp_path / "github_output"
    env = {"GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(out)}
    _ok(ws.cli("model", "register", "digits", env=env))
    assert _outputs(out) == {"version": "1.0.0", "tag": "digits@v1.0.0"}
    _ok(ws.cli("model", "promote", "digits", "1.0.0", "--stage", "prod", env=env))
    assert _outputs(out) == {"version": "1.0.0", "tag": "digits#prod#1"}


def _outputs(path: Path) -> dict[str, str]:
    """The step outputs in a $GITHUB_OUTPUT file (``name<<DELIMITER`` blocks), last wins."""
    lines, found = path.read_text().splitlines(), {}
    while lines:
        name, _, delimiter = lines.pop(0).partition("<<")
        end = lines.index(delimiter)
        found[name], lines = "\n".join(lines[:end]), lines[end + 1:]
    return found
