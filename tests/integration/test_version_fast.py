"""`gha-mlops --version` answers before the command-line parser is imported."""

from __future__ import annotations

import subprocess
import sys

from gha_mlops import __version__


def test_version_answers_without_importing_click() -> None:
    code = ("import sys\nsys.argv = ['gha-mlops', '--version']\n"
            "from gha_mlops.__main__ import main\nmain()\n"
            "print(sorted(m for m in ('click', 'gha_mlops.cli', 'yaml') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.splitlines()
    assert out == [f"gha-mlops {__version__}", "[]"]


def test_other_arguments_reach_the_command_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "gha_mlops", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "Usage: gha-mlops" in proc.stdout
