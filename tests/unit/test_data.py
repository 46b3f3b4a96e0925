"""Datasets on a local workspace: add, pointers, status, verify, checkout, gc."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gha_mlops.data.pointer import find_datasets, read_pointer
from gha_mlops.data.service import Workspace, add, checkout, status, verify
from gha_mlops.errors import ConfigError, GhaMlopsError, UsageError
from gha_mlops.pipeline.gc import gc
from gha_mlops.store.hashing import sha256_file


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    root = tmp_path / "ws"
    (root / "data/images/a").mkdir(parents=True)
    (root / "mlops.yaml").write_text("stages:\n  s:\n    cmd: 'true'\n")
    for i in range(40):
        (root / f"data/images/a/{i}.bin").write_bytes(os.urandom(100 + i))
    (root / "data/images/readme.txt").write_text("hello\n")
    (root / "data/table.csv").write_text("x,y\n1,2\n")
    return Workspace(root)


def test_add_directory_writes_pointer_and_caches_every_file(ws: Workspace) -> None:
    result = add(ws, ws.root / "data/images")
    ds = result.dataset
    assert (ds.name, ds.path, ds.files) == ("images", "data/images", 41)
    assert ds.version.endswith(".dir") and result.new_objects == 41
    assert read_pointer(ws.root, "data/images.lock.yaml") == ds
    assert "/images" in (ws.root / "data/.gitignore").read_text().splitlines()
    for f in (ws.root / "data/images/a").iterdir():
        assert ws.cache.object_path(sha256_file(f)).exists()
    again = add(ws, ws.root / "data/images")
    assert again.dataset.version == ds.version and not again.changed
    assert again.new_objects == 0


def test_add_file_and_name_option(ws: Workspace) -> None:
    ds = add(ws, ws.root / "data/table.csv", name="table").dataset
    assert ds.version == sha256_file(ws.root / "data/table.csv") and ds.files == 1
    assert set(find_datasets(ws.root)) == {"table"}


def test_add_refuses_paths_outside_and_name_clashes(ws: Workspace, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="outside the workspace"):
        add(ws, tmp_path)
    with pytest.raises(UsageError, match="does not exist"):
        add(ws, ws.root / "data/nope")
    add(ws, ws.root / "data/table.csv", name="d")
    with pytest.raises(UsageError, match="already exists"):
        add(ws, ws.root / "data/images", name="d")


def test_status_reports_modified_files_and_missing_data(ws: Workspace) -> None:
    ds = add(ws, ws.root / "data/images").dataset
    assert status(ws, [ds])[0].workspace == "ok"
    (ws.root / "data/images/a/3.bin").write_bytes(b"changed")
    row = status(ws, [ds])[0]
    assert row.workspace == "modified" and row.modified_files == ["a/3.bin"]
    subprocess.run(["rm", "-rf", str(ws.root / "data/images")], check=True)
    row = status(ws, [ds])[0]
    assert row.workspace == "missing" and row.cache_missing == 0


def test_checkout_restores_the_pinned_version(ws: Workspace) -> None:
    ds = add(ws, ws.root / "data/images").dataset
    original = (ws.root / "data/images/a/7.bin").read_bytes()
    (ws.root / "data/images/a/7.bin").write_bytes(b"edited")
    (ws.root / "data/images/extra.txt").write_text("new\n")
    checkout(ws, ds)
    assert (ws.root / "data/images/a/7.bin").read_bytes() == original
    assert not (ws.root / "data/images/extra.txt").exists()
    out = checkout(ws, ds, to=ws.root / "elsewhere")
    assert (out / "a/7.bin").read_bytes() == original


def test_verify_finds_a_corrupted_cache_object(ws: Workspace) -> None:
    ds = add(ws, ws.root / "data/images").dataset
    assert verify(ws, [ds]) == []
    obj = ws.cache.object_path(sha256_file(ws.root / "data/images/a/1.bin"))
    os.chmod(obj, 0o644)
    obj.write_bytes(b"bit rot")
    problems = verify(ws, [ds])
    assert [(p.where, p.item) for p in problems] == [("cache", str(obj))]


def test_gc_keeps_what_pointers_reference(ws: Workspace) -> None:
    ds = add(ws, ws.root / "data/images").dataset
    old = add(ws, ws.root / "data/table.csv", name="table").dataset
    (ws.root / "data/table.csv").write_text("x,y\n3,4\n")
    new = add(ws, ws.root / "data/table.csv", name="table").dataset
    result = gc(ws, dry_run=True)
    assert result.removed == 1  # the table's old version only
    gc(ws)
    assert not ws.cache.object_path(old.version).exists()
    assert ws.cache.object_path(new.version).exists()
    assert verify(ws, [ds]) == [] and status(ws, [ds])[0].cache_missing == 0


def test_hand_edited_pointer_is_a_clear_error(ws: Workspace) -> None:
    add(ws, ws.root / "data/table.csv", name="table")
    pointer = ws.root / "data/table.csv.lock.yaml"
    pointer.write_text(pointer.read_text().replace("version: ", "version: zz"))
    with pytest.raises(ConfigError, match="key 'version' must be a sha256") as info:
        ws.datasets()
    assert info.value.file == "data/table.csv.lock.yaml" and info.value.hint
    pointer.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        ws.datasets()


def test_checkout_of_an_uncached_dataset_says_to_pull(ws: Workspace) -> None:
    ds = add(ws, ws.root / "data/table.csv", name="table").dataset
    subprocess.run(["rm", "-rf", str(ws.cache.root)], check=True)
    (ws.root / "data/table.csv").unlink()
    with pytest.raises(GhaMlopsError, match="not in the local cache") as info:
        checkout(ws, ds)
    assert "gha-mlops data pull table" in (info.value.hint or "")


def test_cli_data_commands(ws: Workspace) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gha_mlops", "data", *args], cwd=ws.root,
                              capture_output=True, text=True, check=False)

    added = cli("add", "data/images")
    assert added.returncode == 0, added.stderr
    assert "added dataset images" in added.stdout and "git add data/images.lock.yaml" in added.stdout
    assert "images" in cli("ls").stdout
    assert "workspace: ok" in cli("status").stdout
    assert "every byte matches" in cli("verify").stdout
    missing = cli("status", "nope")
    assert missing.returncode == 2 and "no dataset named 'nope'" in missing.stderr


def test_datasets_are_found_in_a_directory_an_enclosing_repository_ignores(
        tmp_path: Path) -> None:
    from tests.conftest import git

    git(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_text("/ws/\n")
    root = tmp_path / "ws"
    root.mkdir()
    (root / "mlops.yaml").write_text("stages:\n  s:\n    cmd: 'true'\n")
    (root / "t.csv").write_text("a\n")
    ws = Workspace(root)
    add(ws, root / "t.csv")
    assert set(ws.datasets()) == {"t"}
