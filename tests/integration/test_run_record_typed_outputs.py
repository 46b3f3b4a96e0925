"""`gha-mlops run` reads its record back typed (RunRecord) only to give a step its outputs: a
run outside Actions, the no-op run's 70 ms budget included, never loads the record's classes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import Workspace

_PROBE = ("import sys\nfrom gha_mlops.cli import main\n"
          "try:\n    main(['run', '-q'])\nexcept SystemExit:\n    pass\n"
          "print('typed record loaded:', 'gha_mlops.runs.record' in sys.modules)")


def _run_in_process(root: Path, extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items()
           if k not in ("GITHUB_ACTIONS", "GITHUB_OUTPUT")} | extra
    proc = subprocess.run([sys.executable, "-c", _PROBE], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    return proc.stdout.strip().splitlines()[-1]


def test_only_a_step_with_outputs_reads_the_record_typed(workspace: Workspace,
                                                         tmp_path: Path) -> None:
    workspace.cli("run", check=True)  # the no-op runs below find everything cached
    assert _run_in_process(workspace.root, {}) == "typed record loaded: False"
    outputs = tmp_path / "github_output"
    outputs.write_text("")
    env = {"GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(outputs)}
    assert _run_in_process(workspace.root, env) == "typed record loaded: True"
    assert "run-id<<" in outputs.read_text()
