"""The README's two commands install into separate virtual environments: the tests' dev tools
must not land in the environment the demo's runs were recorded in, or every earlier demo run
reads as environment drift to `gha-mlops reproduce`."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _planned(target: str) -> str:
    """What `make TARGET` would run on a fresh clone (dry run, every target out of date)."""
    proc = subprocess.run(["make", "-n", "-B", "-C", str(REPO), target], capture_output=True,
                          text=True, check=True, timeout=60)
    return proc.stdout


def _venvs(commands: str) -> set[str]:
    return set(re.findall(r"(\S+)/bin/(?:python|pip|gha-mlops)\b", commands))


def test_demo_and_test_install_into_separate_environments() -> None:
    demo, test = _planned("install-demo"), _planned("install-test")
    demo_venvs, test_venvs = _venvs(demo), _venvs(test)
    assert demo_venvs and test_venvs, (demo, test)
    assert not demo_venvs & test_venvs, (demo_venvs, test_venvs)
    # The demo packages its model: the package extra (onnx, onnxruntime, docker SDK) too.
    assert ".[torch,package]" in demo and "dev" not in demo, demo
    assert ".[torch,dev]" in test, test
    # `make demo` runs the command from the demo's environment, and says which one it is.
    run = _planned("demo")
    assert any(f"{venv}/bin/gha-mlops demo" in run for venv in demo_venvs), run
