"""`determinism: portable` in mlops.yaml: every stage starts with its CPU kernel dispatchers
pinned (whatever the script calls), the mode is in the record and in the stage signatures."""

from __future__ import annotations

import json
import platform
from typing import Any

import pytest

from gha_mlops.train._portable import portable_pins
from tests.conftest import Workspace

STAGE = """\
{mode}stages:
  probe:
    cmd: env > env.txt
    outs: [env.txt]
"""


def _run(workspace: Workspace, mode: str) -> tuple[dict[str, str], dict[str, Any]]:
    workspace.write("mlops.yaml", STAGE.format(mode=f"determinism: {mode}\n" if mode else ""))
    workspace.cli("run", env={"ATEN_CPU_CAPABILITY": "avx512", "NPY_DISABLE_CPU_FEATURES": "x"},
                  check=True)
    env = dict(line.split("=", 1) for line in
               (workspace.root / "env.txt").read_text().splitlines() if "=" in line)
    record = json.loads(workspace.cli("runs", "show", "--json", check=True).stdout)
    return env, record


def test_portable_pins_every_stage_and_changes_its_signature(workspace: Workspace) -> None:
    native_env, native = _run(workspace, "")
    assert native_env["ATEN_CPU_CAPABILITY"] == "avx512"  # native: left as the caller set it
    assert native["determinism"] == "native"
    env, record = _run(workspace, "portable")
    assert record["determinism"] == "portable"
    for key, value in portable_pins(platform.machine()).items():
        if key != "OPENBLAS_CORETYPE" or "OPENBLAS_CORETYPE" not in native_env:
            assert env[key] == value, key
    assert env["GHA_MLOPS_DETERMINISM"] == "portable"
    assert "NPY_DISABLE_CPU_FEATURES" not in env
    signature = {s["name"]: s["signature"] for s in record["stages"]}
    assert signature != {s["name"]: s["signature"] for s in native["stages"]}
    assert [s["status"] for s in record["stages"]] == ["ran"]
    shown = workspace.cli("runs", "show", check=True).stdout
    assert "determinism portable" in shown and f" {platform.machine()} " in shown


def test_an_unknown_mode_is_a_config_error_naming_the_line(workspace: Workspace) -> None:
    workspace.write("mlops.yaml", STAGE.format(mode="determinism: portabel\n"))
    proc = workspace.cli("run")
    assert proc.returncode == 2, proc.stderr
    assert "mlops.yaml:1" in proc.stderr and "determinism" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("mode", ["native", "portable"])
def test_the_mode_round_trips_through_the_loader(workspace: Workspace, mode: str) -> None:
    from gha_mlops.config import load_pipeline

    workspace.write("mlops.yaml", STAGE.format(mode=f"determinism: {mode}\n"))
    assert load_pipeline(workspace.root / "mlops.yaml").determinism == mode
