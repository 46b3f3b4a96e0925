"""Stages that depend on `data:NAME`: signatures, records, restores and reproduce."""

from __future__ import annotations

import json
import shutil

import pytest

from gha_mlops.errors import ConfigError, StageFailedError
from tests.conftest import Workspace

PIPELINE = """\
seed: 3
stages:
  count:
    cmd: ls data/images | wc -l > count.txt && cat data/images/* | wc -c >> count.txt
    deps: [data:images]
    outs: [count.txt]
"""


@pytest.fixture
def data_ws(workspace: Workspace) -> Workspace:
    for i in range(5):
        workspace.write(f"data/images/{i}.txt", f"image {i}\n")
    workspace.write("mlops.yaml", PIPELINE)
    assert workspace.cli("data", "add", "data/images").returncode == 0
    return workspace


def test_dataset_dependency_is_recorded_by_version(data_ws: Workspace) -> None:
    result = data_ws.run()
    pointer = (data_ws.root / "data/images.lock.yaml").read_text()
    version = next(line.split(": ")[1] for line in pointer.splitlines()
                   if line.startswith("version:"))
    record = result.record
    assert record["stages"][0]["deps"] == {"data:images": version}
    assert record["datasets"]["images"]["version"] == version
    assert record["data"] == {"data:images": version}
    assert set(data_ws.statuses(data_ws.run()).values()) == {"cached"}


def test_new_dataset_version_reruns_the_stage(data_ws: Workspace) -> None:
    data_ws.run()
    data_ws.write("data/images/5.txt", "image 5\n")
    with pytest.raises(StageFailedError, match="differs from its pinned version"):
        data_ws.run()  # an unpinned change is never used, nor overwritten
    assert (data_ws.root / "data/images/5.txt").exists()
    assert data_ws.cli("data", "add", "data/images").returncode == 0
    assert data_ws.statuses(data_ws.run()) == {"count": "ran"}


def test_missing_data_is_put_back_from_the_cache(data_ws: Workspace) -> None:
    data_ws.run()
    shutil.rmtree(data_ws.root / "data/images")
    assert data_ws.statuses(data_ws.run()) == {"count": "cached"}
    assert (data_ws.root / "data/images/3.txt").read_text() == "image 3\n"


def test_unknown_dataset_is_a_config_error(data_ws: Workspace) -> None:
    data_ws.write("mlops.yaml", PIPELINE.replace("data:images", "data:imagez"))
    with pytest.raises(ConfigError, match="no dataset named 'imagez'") as info:
        data_ws.run()
    assert info.value.line == 5 and "images" in (info.value.hint or "")


def test_reproduce_restores_the_recorded_dataset_version(data_ws: Workspace) -> None:
    data_ws.cli("run", check=True)
    run_id = json.loads(data_ws.cli("runs", "show", "--json", check=True).stdout)["id"]
    # A new version is pinned afterwards; the old run still reproduces from the cache.
    data_ws.write("data/images/9.txt", "image 9\n")
    data_ws.cli("data", "add", "data/images", check=True)
    proc = data_ws.cli("reproduce", run_id)
    assert proc.returncode == 0, proc.stderr
    assert "bit-identical" in proc.stdout
    # The workspace keeps the new version; only the scratch copy went back.
    assert (data_ws.root / "data/images/9.txt").exists()


def test_reproduce_without_the_recorded_version_in_the_cache_says_to_pull(
        data_ws: Workspace) -> None:
    data_ws.cli("run", check=True)
    shutil.rmtree(data_ws.root / ".gha-mlops/cache/objects")
    data_ws.write("data/images/0.txt", "changed\n")
    proc = data_ws.cli("reproduce")
    assert proc.returncode == 4
    assert "not in the local cache" in proc.stderr and "data pull images" in proc.stderr
