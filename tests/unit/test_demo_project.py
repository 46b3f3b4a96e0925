"""The embedded example project: how it is written out, and that it does what it promises."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import gha_mlops
from gha_mlops.bootstrap import object_stores
from gha_mlops.config import load_pipeline
from gha_mlops.data.pointer import read_pointer
from gha_mlops.data.service import Workspace, checkout, fetch, resolve_remote
from gha_mlops.demo import dataset_bytes, project_files, seed_remote, write_project
from gha_mlops.errors import UsageError

SRC = Path(gha_mlops.__file__).resolve().parents[1]
SEED = 42
STAGES = ("prepare", "train", "evaluate", "package")
DIGITS_VERSION = "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"
OUTPUTS = {
    "data/prepared/meta.json",
    *(f"data/prepared/{xy}_{split}.npy" for xy in "xy" for split in ("train", "val", "test")),
    "models/model.pt",
    "metrics/train.json",
    "metrics/eval.json",
    "plots/train_history.csv",
    "plots/confusion.png",
    "plots/loss.png",
    "package/model.onnx",
    "package/signature.json",
    "package/MODEL_CARD.md",
}
PROJECT = {
    ".gitignore",
    "README.md",
    "mlops.yaml",
    "params.yaml",
    "requirements.lock",
    "data/digits.csv.gz.lock.yaml",
    "data/LICENSE-digits.txt",
    *(f"src/{name}.py" for name in (*STAGES, "model", "query")),
}


def test_write_project_writes_the_whole_project(tmp_path: Path) -> None:
    written = write_project(tmp_path / "demo")
    assert {p.relative_to(tmp_path / "demo").as_posix() for p in written} == PROJECT
    assert {str(p) for p in project_files()} == PROJECT
    assert not (tmp_path / "demo" / "data" / "digits.csv.gz").exists()  # it is in the remote


def test_the_pointer_pins_the_packaged_data(tmp_path: Path) -> None:
    write_project(tmp_path)
    ds = read_pointer(tmp_path, "data/digits.csv.gz.lock.yaml")
    data = dataset_bytes()
    assert data[:2] == b"\x1f\x8b"
    assert (ds.name, ds.path, ds.size) == ("digits", "data/digits.csv.gz", len(data))
    assert ds.version == hashlib.sha256(data).hexdigest()


def test_seed_remote_publishes_the_data_once_and_a_fresh_cache_fetches_it(
        tmp_path: Path) -> None:
    write_project(tmp_path)
    assert seed_remote(tmp_path, object_stores()) is True
    assert seed_remote(tmp_path, object_stores()) is False  # the remote has it: nothing is sent again
    ws = Workspace(tmp_path)
    assert not ws.cache.has(DIGITS_VERSION)  # the workspace cache is left to the first run
    [ds] = ws.select(["digits"])
    fetch(ws, [ds], resolve_remote(ws, None), opener=object_stores())
    assert checkout(ws, ds).read_bytes() == dataset_bytes()


def test_seed_remote_leaves_a_repinned_dataset_alone(tmp_path: Path) -> None:
    write_project(tmp_path)
    pointer = tmp_path / "data/digits.csv.gz.lock.yaml"
    pointer.write_text(pointer.read_text().replace(DIGITS_VERSION, "a" * 64))
    assert seed_remote(tmp_path, object_stores()) is False
    assert not (tmp_path / "demo-remote").exists()


def test_write_project_keeps_existing_files_unless_told(tmp_path: Path) -> None:
    write_project(tmp_path)
    params = tmp_path / "params.yaml"
    params.write_text("edited: true\n")
    (tmp_path / "mlops.yaml").unlink()

    written = write_project(tmp_path)
    assert written == [tmp_path / "mlops.yaml"]
    assert params.read_text() == "edited: true\n"

    assert write_project(tmp_path, overwrite=True) == [params]  # only what differs
    assert "prepare:" in params.read_text()
    assert write_project(tmp_path, overwrite=True) == []


def test_write_project_refuses_a_file_as_destination(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("")
    with pytest.raises(UsageError, match="not a directory"):
        write_project(tmp_path / "taken")


def test_the_pipeline_config_is_valid(tmp_path: Path) -> None:
    write_project(tmp_path)
    pipeline = load_pipeline(tmp_path / "mlops.yaml")
    assert list(pipeline.stages) == list(STAGES)
    assert pipeline.seed == SEED
    assert pipeline.model == "models/model.pt"
    upstream = {name: set(stage.upstream) for name, stage in pipeline.stages.items()}
    assert upstream == {
        "prepare": set(),
        "train": {"prepare"},
        "evaluate": {"prepare", "train"},
        "package": {"prepare", "train", "evaluate"},
    }


def test_the_environment_lock_pins_what_the_demo_imports(tmp_path: Path) -> None:
    write_project(tmp_path)
    lines = (tmp_path / "requirements.lock").read_text().splitlines()
    pins = dict(line.split("==") for line in lines if line and not line.startswith("#"))
    assert set(pins) == {"matplotlib", "numpy", "onnx", "onnxruntime", "onnxscript", "pyyaml",
                         "torch"}
    assert pins["torch"] == "2.13.0"


def _run_stages(project: Path, scratch: Path) -> dict[str, str]:
    """Run the four stage scripts as the engine would; return {output: sha256}."""
    write_project(project)
    (project / "data" / "digits.csv.gz").write_bytes(dataset_bytes())
    lineage = scratch / "lineage.json"
    lineage.write_text(json.dumps({"stage": "package", "seed": SEED, "deps": {"x": "0" * 64}}))
    for stage in STAGES:
        report = scratch / f"{stage}.report.json"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
            "GHA_MLOPS_SEED": str(SEED),
            "PYTHONHASHSEED": str(SEED),
            "GHA_MLOPS_PARAMS": str(project / "params.yaml"),
            "GHA_MLOPS_STAGE": stage,
            "GHA_MLOPS_RUN_ID": f"test-{project.name}",
            "GHA_MLOPS_WORKSPACE": str(project),
            "GHA_MLOPS_STAGE_REPORT": str(report),
            "GHA_MLOPS_LINEAGE": str(lineage),
        }
        subprocess.run(
            [sys.executable, f"src/{stage}.py"], cwd=project, env=env, check=True, timeout=300
        )
        if stage != "package":  # package needs no determinism switches: it only exports
            assert json.loads(report.read_text())["seed"] == SEED
    return {
        path.relative_to(project).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for top in ("data/prepared", "models", "metrics", "plots", "package")
        for path in sorted((project / top).rglob("*"))
        if path.is_file()
    }


@pytest.mark.slow
def test_the_demo_is_accurate_and_bit_identical_across_runs(tmp_path: Path) -> None:
    (tmp_path / "s1").mkdir()
    (tmp_path / "s2").mkdir()
    first = _run_stages(tmp_path / "one", tmp_path / "s1")
    assert set(first) == OUTPUTS

    metrics = json.loads((tmp_path / "one" / "metrics" / "eval.json").read_text())
    assert metrics["test_accuracy"] >= 0.97
    assert len(metrics["confusion_matrix"]) == 10
    card = (tmp_path / "one" / "package" / "MODEL_CARD.md").read_text()
    assert first["models/model.pt"] in card
    assert f"| seed | `{SEED}` |" in card
    assert "test-one" not in card  # no run id: outputs must not vary between runs

    # Another directory and run id: every output, model and plots included, byte for byte.
    second = _run_stages(tmp_path / "two", tmp_path / "s2")
    assert second == first
