"""The core installs and works without torch, boto3, docker or matplotlib (a fresh venv)."""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("core-venv")
    venv.EnvBuilder(with_pip=True).create(root)
    proc = subprocess.run([str(root / "bin/python"), "-m", "pip", "install", "--quiet",
                           str(REPO)], capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


@pytest.mark.slow
def test_heavy_dependencies_are_absent_and_the_core_imports(core_venv: Path) -> None:
    code = (
        "import importlib.util as u, sys\n"
        "missing = [m for m in ('torch', 'boto3', 'docker', 'matplotlib', 'github')\n"
        "           if u.find_spec(m) is None]\n"
        "import gha_mlops.cli, gha_mlops.config, gha_mlops.pipeline.engine\n"
        "import gha_mlops.pipeline.reproduce, gha_mlops.train, gha_mlops.demo\n"
        "import gha_mlops.data.service, gha_mlops.data.stores, gha_mlops.cli.data\n"
        "print(','.join(sorted(missing)))\n"
    )
    out = subprocess.run([str(core_venv / "bin/python"), "-c", code], capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "boto3,docker,github,matplotlib,torch"


@pytest.mark.slow
def test_help_and_version_run_without_heavy_imports(core_venv: Path) -> None:
    exe = str(core_venv / "bin/gha-mlops")
    assert subprocess.run([exe, "--version"], capture_output=True, text=True,
                          check=True).stdout.startswith("gha-mlops ")
    assert "reproduce" in subprocess.run([exe, "--help"], capture_output=True, text=True,
                                         check=True).stdout
    code = ("import sys\nfrom gha_mlops.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('pydantic', 'yaml', 'torch', 'numpy') if m in sys.modules))")
    out = subprocess.run([str(core_venv / "bin/python"), "-c", code], capture_output=True,
                         text=True, check=True).stdout.strip().splitlines()[-1]
    assert out == "[]"


@pytest.mark.slow
def test_a_pipeline_runs_and_the_demo_names_the_missing_extra(core_venv: Path,
                                                             tmp_path: Path) -> None:
    exe = str(core_venv / "bin/gha-mlops")
    (tmp_path / "mlops.yaml").write_text("stages:\n  s:\n    cmd: echo hi > o.txt\n"
                                         "    outs: [o.txt]\n")
    run = subprocess.run([exe, "run"], cwd=tmp_path, capture_output=True, text=True,
                         check=False)
    assert run.returncode == 0, run.stderr
    demo = subprocess.run([exe, "demo", str(tmp_path / "demo")], capture_output=True,
                          text=True, check=False)
    assert demo.returncode == 3
    assert "pip install 'gha-mlops[torch]'" in demo.stderr
    assert "Traceback" not in demo.stderr



@pytest.mark.slow
def test_s3_remote_without_the_aws_extra_names_it(core_venv: Path, tmp_path: Path) -> None:
    exe = str(core_venv / "bin/gha-mlops")
    (tmp_path / "mlops.yaml").write_text(
        "remotes:\n  s3:\n    url: s3://bucket/prefix\nstages:\n  s:\n    cmd: 'true'\n")
    (tmp_path / "data.csv").write_text("a\n1\n")
    added = subprocess.run([exe, "data", "add", "data.csv"], cwd=tmp_path, capture_output=True,
                           text=True, check=False)
    assert added.returncode == 0, added.stderr
    push = subprocess.run([exe, "data", "push"], cwd=tmp_path, capture_output=True, text=True,
                          check=False)
    assert push.returncode == 3
    assert "pip install 'gha-mlops[aws]'" in push.stderr and "Traceback" not in push.stderr
