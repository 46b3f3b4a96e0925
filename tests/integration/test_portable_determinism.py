"""Portable determinism on the demo: one model whatever kernel level the environment forces,
three models without it, and `reproduce` naming the difference before it runs anything.

This machine can only emulate other CPUs downwards (``ATEN_CPU_CAPABILITY`` forces torch to a
lower level; oneDNN, MKL and numpy are capped by their own variables): each level stands in
for a machine that has no more. The demo trains one epoch here (``--set train.epochs=1``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gha_mlops.pipeline.environment import cpu_facts
from gha_mlops.pipeline.reproduce import expected_aten
from tests.conftest import CLI

pytestmark = pytest.mark.slow

LEVELS = ("default", "avx2", "avx512")
SMALL = ("--set", "train.epochs=1")
_DISPATCH_VARS = ("ATEN_CPU_CAPABILITY", "GHA_MLOPS_DETERMINISM", "ONEDNN_MAX_CPU_ISA",
                  "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "NPY_ENABLE_CPU_FEATURES")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k != "GITHUB_ACTIONS" and k not in _DISPATCH_VARS}
    env.update(extra)
    return env


def gha(*args: str, cwd: Path, env: dict[str, str],
        check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def train(project: Path, **env: str) -> dict[str, Any]:
    """Train the demo (prepare and train, one epoch) afresh; return the run record."""
    gha("run", "-q", "-s", "train", "--force", *SMALL, cwd=project, env=_env(**env))
    record: dict[str, Any] = json.loads(
        gha("runs", "show", "latest", "--json", cwd=project, env=_env()).stdout)
    return record


def _train_dispatch(record: dict[str, Any]) -> dict[str, Any]:
    stage = next(s for s in record["stages"] if s["name"] == "train")
    dispatch: dict[str, Any] = stage["runtime"]["cpu_dispatch"]
    return dispatch


def _demo(root: Path, determinism: str) -> Path:
    gha("demo", "project", "--no-run", cwd=root, env=_env())
    config = root / "project" / "mlops.yaml"
    text = config.read_text()
    assert "determinism: portable\n" in text
    config.write_text(text.replace("determinism: portable\n", f"determinism: {determinism}\n"))
    return root / "project"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo with the pipeline's `determinism:` off, so that what is tested is each
    script's own gha_mlops.train.portable() call (and GHA_MLOPS_DETERMINISM=native)."""
    return _demo(tmp_path_factory.mktemp("portable"), "native")


@pytest.fixture(scope="module")
def pinned_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo as shipped: `determinism: portable` pins every stage from the engine."""
    return _demo(tmp_path_factory.mktemp("pinned"), "portable")


@pytest.fixture(scope="module")
def portable_runs(project: Path) -> dict[str, dict[str, Any]]:
    return {level: train(project, ATEN_CPU_CAPABILITY=level) for level in LEVELS}


@pytest.fixture(scope="module")
def native_runs(project: Path) -> dict[str, dict[str, Any]]:
    return {level: train(project, ATEN_CPU_CAPABILITY=level, GHA_MLOPS_DETERMINISM="native")
            for level in LEVELS}


def test_portable_mode_trains_one_model_whatever_level_the_environment_forces(
        portable_runs: dict[str, dict[str, Any]]) -> None:
    models = {level: r["model"]["sha256"] for level, r in portable_runs.items()}
    assert len(set(models.values())) == 1, models
    for level, record in portable_runs.items():
        dispatch = _train_dispatch(record)
        assert dispatch["portable"] is True
        assert dispatch["aten_capability"] == "DEFAULT"
        assert dispatch["num_threads"] == dispatch["num_interop_threads"] == 1
        assert dispatch["variables"]["ONEDNN_MAX_CPU_ISA"] == "SSE41"
        assert dispatch["variables"]["MKL_CBWR"] == "COMPATIBLE"
        assert dispatch["numpy"]["simd_dispatch"] == []
        stage = next(s for s in record["stages"] if s["name"] == "train")
        overridden = stage["runtime"]["portable"]["overridden"]
        assert overridden.get("ATEN_CPU_CAPABILITY") == (None if level == "default" else level)
        # What decides the bytes is in the record: the CPU and the libraries.
        cpu = record["env"]["cpu"]
        assert cpu["vendor"] and cpu["flags"] and cpu["machine"]
        assert {"blas", "onednn"} <= set(dispatch["libraries"])


def test_the_pipeline_key_trains_the_same_model_as_the_scripts_call(
        pinned_project: Path, portable_runs: dict[str, dict[str, Any]]) -> None:
    """`determinism: portable` in mlops.yaml pins the stage's environment before the script
    starts, so even GHA_MLOPS_DETERMINISM=native and a forced level change nothing."""
    record = train(pinned_project, ATEN_CPU_CAPABILITY="avx512",
                   GHA_MLOPS_DETERMINISM="native")
    assert record["determinism"] == "portable"
    assert record["model"]["sha256"] == portable_runs["default"]["model"]["sha256"]
    assert _train_dispatch(record)["aten_capability"] == "DEFAULT"


def test_without_portable_mode_each_level_trains_another_model(
        native_runs: dict[str, dict[str, Any]]) -> None:
    here = expected_aten(cpu_facts(), {})
    levels = [lv for lv in LEVELS if LEVELS.index(lv) <= LEVELS.index((here or "").lower())]
    if len(levels) < 2:
        pytest.skip(f"this CPU dispatches {here}: nothing to force it down to")
    models = {lv: native_runs[lv]["model"]["sha256"] for lv in levels}
    assert len(set(models.values())) == len(levels), models
    for lv in levels:
        dispatch = _train_dispatch(native_runs[lv])
        assert dispatch["portable"] is False
        assert dispatch["aten_capability"] == lv.upper()


def test_reproduce_names_the_kernel_level_before_running(
        project: Path, native_runs: dict[str, dict[str, Any]]) -> None:
    here = expected_aten(cpu_facts(), {})
    used = next((lv for lv in LEVELS if lv.upper() != here), None)
    assert used is not None
    run = native_runs[used]["id"]
    proc = gha("reproduce", run, cwd=project, env=_env(GHA_MLOPS_DETERMINISM="native"),
               check=False)
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert (f"this machine dispatches {here} torch kernels, run {run} used {used.upper()} "
            "and portable mode was off: the model bytes will differ") in proc.stderr
    assert f"ATEN_CPU_CAPABILITY={used}" in proc.stderr and "docs/reproduce.md" in proc.stderr
    assert "▶" not in proc.stdout  # refused before any stage ran
    assert "Traceback" not in proc.stderr


def test_a_portable_run_reproduces_under_another_forced_level(
        project: Path, portable_runs: dict[str, dict[str, Any]]) -> None:
    run = portable_runs["avx512"]["id"]
    proc = gha("reproduce", run, "-q", cwd=project, env=_env(ATEN_CPU_CAPABILITY="avx2"))
    assert "bit-identical" in proc.stdout


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], env=_env(**env), capture_output=True,
                          text=True, timeout=300, check=False)


@pytest.mark.parametrize("first", ["import torch", "import numpy"])
def test_portable_after_torch_is_imported_is_refused_with_the_fix(first: str) -> None:
    proc = _python(f"{first}\nfrom gha_mlops.train import portable\nportable()")
    assert proc.returncode != 0
    assert "portable determinism was asked for after" in proc.stderr
    assert "call gha_mlops.train.portable() before importing torch" in proc.stderr


def test_portable_accepts_any_import_order_when_the_process_started_pinned() -> None:
    # What the engine does when the pipeline asks for portable mode: the pins are in the
    # environment before the interpreter starts.
    from gha_mlops.train import portable_environment

    pinned = portable_environment(_env(ATEN_CPU_CAPABILITY="avx512"))
    proc = subprocess.run(
        [sys.executable, "-c", "import torch\nfrom gha_mlops.train import portable\n"
         "print(portable()['cpu_dispatch']['aten_capability'])"],
        env=pinned, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "DEFAULT"
