"""The embedded demo through the real CLI: cached re-runs, param changes, restores,
identical models across fresh runs, and reproduce (torch, CPU)."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gha_mlops.cli._render import format_metric
from tests.conftest import CLI

DOCS = Path(__file__).resolve().parents[2] / "docs"

pytestmark = pytest.mark.slow


NO_DOCKER = "unix:///nonexistent/docker.sock"


def gha(*args: str, cwd: Path, check: bool = True,
        docker_host: str = NO_DOCKER) -> subprocess.CompletedProcess[str]:
    # No Docker daemon here, whatever the machine has: the demo's packaging step is tested
    # against the tests' own dockerd (test_demo_release.py).
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_ACTIONS"}
    env["DOCKER_HOST"] = docker_host
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
    (root / "demo.out").write_text(proc.stdout)
    return root / "project"


def test_demo_registers_its_model_and_says_in_one_line_that_it_did_not_package(
        demo: Path) -> None:
    out = (demo.parent / "demo.out").read_text()
    assert "model version  digits 1.0.0, registered: git tag digits@v1.0.0" in out
    skipped = [line for line in out.splitlines() if "not packaged" in line]
    assert skipped == [f"  not packaged: Docker is not reachable at {NO_DOCKER} "
                       "(then: gha-mlops package digits; docs/packaging.md)"]
    shown = json.loads(gha("model", "show", "digits@1.0.0", "--json", cwd=demo).stdout)
    assert shown["lineage"]["run_id"] == latest(demo)["id"]
    assert shown["lineage"]["signature"]["inputs"] == [
        {"name": "input", "datatype": "FP32", "shape": [-1, 1, 16, 16]}]


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
    assert {"package/model.onnx", "package/signature.json", "package/MODEL_CARD.md"} <= {
        f"package/{name}" for name in record["outputs"]["package"]["files"]}


def test_the_numbers_in_getting_started_are_what_the_demo_produces(demo: Path) -> None:
    """docs/getting-started.md shows the demo's accuracy and model sha256 as produced in
    portable mode, the same on every x86-64 machine with the pinned packages: checked here
    against this machine's run, so the page cannot go stale."""
    text = (DOCS / "getting-started.md").read_text(encoding="utf-8")
    shown = dict(re.findall(r"^  (test_accuracy|macro_f1|model sha256) +(\S+)", text, re.M))
    assert set(shown) == {"test_accuracy", "macro_f1", "model sha256"}, shown
    assert "CPU kernels    portable" in text
    record = latest(demo)
    dispatch = [s["runtime"]["cpu_dispatch"] for s in record["stages"] if "runtime" in s]
    assert dispatch and all(d["portable"] is True for d in dispatch)
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the page shows the x86-64 numbers")
    metrics = record["metrics"]["metrics/eval.json"]
    assert shown["test_accuracy"] == format_metric(metrics["test_accuracy"])
    assert shown["macro_f1"] == format_metric(metrics["macro_f1"])
    assert shown["model sha256"] == record["model"]["sha256"]


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


def _drop_cached_digits(demo: Path, record: dict[str, Any]) -> None:
    version = record["datasets"]["digits"]["version"]
    (demo / ".gha-mlops/cache/objects" / version[:2] / version[2:]).unlink()


def test_the_run_records_the_dataset_and_where_it_is_kept(demo: Path) -> None:
    record = latest(demo)
    digits = record["datasets"]["digits"]
    assert digits["path"] == "data/digits.csv.gz" and digits["files"] == 1
    assert digits["remote"] == {"name": "demo", "url": "demo-remote"}
    assert record["deps"]["data:digits"] == digits["version"]


def test_a_fresh_workspace_fetches_the_pinned_dataset_from_the_remote(demo: Path) -> None:
    record = latest(demo)
    _drop_cached_digits(demo, record)
    (demo / "data/digits.csv.gz").unlink()
    proc = gha("run", cwd=demo)
    assert "fetched dataset digits" in proc.stdout and "from demo" in proc.stdout
    assert set(statuses(latest(demo)).values()) <= {"cached", "restored"}


def test_reproduce_fetches_exactly_the_recorded_version(demo: Path) -> None:
    record = latest(demo)
    _drop_cached_digits(demo, record)
    proc = gha("reproduce", record["id"], cwd=demo)
    assert "bit-identical" in proc.stdout
    version = record["datasets"]["digits"]["version"]
    assert (demo / ".gha-mlops/cache/objects" / version[:2] / version[2:]).is_file()


def test_reproduce_says_which_dataset_version_cannot_be_had(demo: Path) -> None:
    record = latest(demo)
    remote = demo / "demo-remote"
    remote.rename(demo / "demo-remote.away")
    try:
        remote.mkdir()  # the shared disk is there, the data is not
        _drop_cached_digits(demo, record)
        proc = gha("reproduce", record["id"], cwd=demo, check=False)
    finally:
        remote.rmdir()
        (demo / "demo-remote.away").rename(remote)
    assert proc.returncode == 4, proc.stderr
    assert "dataset 'digits' version 09f66e6debde" in proc.stderr
    assert "remote demo (demo-remote)" in proc.stderr
    assert "Traceback" not in proc.stderr
    gha("data", "pull", "digits", cwd=demo)  # the remote is back: the data comes back
