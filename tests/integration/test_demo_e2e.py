"""The embedded demo through the real CLI: cached re-runs, param changes, restores,
identical models across fresh runs, and reproduce (torch, CPU)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLI

pytestmark = pytest.mark.slow


def gha(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_ACTIONS"}
    proc = subprocess.run([*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def latest(cwd: Path) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(gha("runs", "show", "latest", "--json", cwd=cwd).stdout)
    return record


def statuses(record: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s["status"] for s in record["stages"]}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    proc = gha("demo", "project", cwd=root)
    assert "demo finished" in proc.stdout and "model sha256" in proc.stdout
    assert "gha-mlops reproduce latest" in proc.stdout  # the next commands to try
    return root / "project"


def test_demo_trains_an_accurate_model_and_records_it(demo: Path) -> None:
    record = latest(demo)
    assert record["status"] == "succeeded"
    assert set(statuses(record).values()) == {"ran"}
    assert record["metrics"]["metrics/eval.json"]["test_accuracy"] >= 0.97
    assert record["model"]["path"] == "models/model.pt"
    assert record["git"]["commit"] and record["git"]["dirty"] is False
    runtime = record["runtime"]
    assert runtime["torch"].startswith("2.")
    assert runtime["determinism"]["use_deterministic_algorithms"] is True
    assert {"package/model.ts", "package/MODEL_CARD.md"} <= {
        f"package/{name}" for name in record["outputs"]["package"]["files"]}


def test_second_demo_run_is_fully_cached(demo: Path) -> None:
    proc = gha("demo", str(demo), cwd=demo.parent)
    assert "fully cached" in proc.stdout
    assert set(statuses(latest(demo)).values()) == {"cached"}


def test_changing_one_param_reruns_only_the_stages_that_read_it(demo: Path) -> None:
    params = demo / "params.yaml"
    original = params.read_text()
    try:
        params.write_text(original.replace("epochs: 10", "epochs: 9"))
        gha("run", cwd=demo)
        assert statuses(latest(demo)) == {"prepare": "cached", "train": "ran",
                                          "evaluate": "ran", "package": "ran"}
    finally:
        params.write_text(original)
    # Back to the original value: everything is restored from the cache, nothing trains.
    gha("run", cwd=demo)
    assert set(statuses(latest(demo)).values()) <= {"cached", "restored"}


def test_deleted_output_is_restored_without_running(demo: Path) -> None:
    model = demo / "models/model.pt"
    before = model.read_bytes()
    model.unlink()
    gha("run", cwd=demo)
    record = latest(demo)
    assert statuses(record)["train"] == "restored"
    assert "ran" not in statuses(record).values()
    assert model.read_bytes() == before


def test_reproduce_is_bit_identical(demo: Path) -> None:
    proc = gha("reproduce", "latest", cwd=demo)
    assert "bit-identical" in proc.stdout


def test_two_fresh_demos_give_the_same_model(demo: Path, tmp_path: Path) -> None:
    gha("demo", "again", cwd=tmp_path)
    assert latest(tmp_path / "again")["model"]["sha256"] == latest(demo)["model"]["sha256"]


def test_reproduce_fails_clearly_after_the_data_is_altered(demo: Path) -> None:
    # A run from a dirty tree (an untracked note) is reproduced from a copy of the workspace,
    # so an altered data file is what reproduce would get: it must refuse, naming the file.
    note = demo / "notes.txt"
    note.write_text("thinking about more epochs\n")
    data = demo / "data/digits.csv.gz"
    original = data.read_bytes()
    try:
        gha("run", cwd=demo)
        assert latest(demo)["git"]["dirty"] is True
        data.write_bytes(original[:-16] + bytes(16))
        proc = gha("reproduce", "latest", cwd=demo, check=False)
    finally:
        data.write_bytes(original)
        note.unlink()
    assert proc.returncode == 4
    assert "data/digits.csv.gz: recorded" in proc.stderr
    assert "Traceback" not in proc.stderr
