"""The reports render in a core install (no extras): tabulate, which lays out their tables,
is a core dependency. A fresh venv, as tests/integration/test_core_install.py builds."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.integration.test_core_install import core_venv  # noqa: F401  (the fixture)


@pytest.mark.slow
def test_the_pr_report_and_the_run_summary_render_without_extras(
        core_venv: Path, tmp_path: Path) -> None:  # noqa: F811
    code = (
        "import importlib.metadata as m, pathlib, sys\n"
        "from gha_mlops.reporting.compare import compare\n"
        "from gha_mlops.reporting.gates import Verdict\n"
        "from gha_mlops.reporting.markdown import render\n"
        "from gha_mlops.reporting.run_summary import render_run_summary\n"
        "rec = lambda i, v: {'id': i, 'status': 'succeeded', 'metrics': {'m.json': {'acc': v}},"
        " 'stages': [{'name': 'train', 'status': 'ran'}]}\n"
        "print(render(compare(rec('b', 0.5), rec('h', 0.75)), Verdict()))\n"
        "print(render_run_summary(rec('h', 0.75), pathlib.Path(sys.argv[1])))\n"
        "print('tabulate', m.version('tabulate'))\n"
    )
    proc = subprocess.run([str(core_venv / "bin/python"), "-c", code, str(tmp_path)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "| <code>m.json:acc</code> | 0.5 | 0.75 |" in out
    assert "| `train` |" in out
    assert "\ntabulate 0." in out or "\ntabulate 1." in out
