"""A run-cache entry is read from disk (a cache restored in CI, a checkout): the engine trusts
one only in the shape it writes, for exactly the stage's declared outputs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from gha_mlops.pipeline import runcache
from tests.conftest import Workspace


def _entry_of(workspace: Workspace, stage: str) -> Path:
    entries = [p for p in (workspace.root / ".gha-mlops/cache/runs").glob("*/*.json")
               if json.loads(p.read_bytes()).get("stage") == stage]
    assert len(entries) == 1, entries
    return entries[0]


def _plant(path: Path, doc: Any) -> None:
    path.write_text(json.dumps(doc))


def test_an_entry_that_is_not_an_object_makes_the_stage_run_again(
        workspace: Workspace) -> None:
    workspace.run()
    _plant(_entry_of(workspace, "report"), ["outs", {"report.txt": "0" * 64}])
    result = workspace.run()
    assert workspace.statuses(result)["report"] == "ran"
    assert workspace.count("report") == 2


def test_an_entry_naming_a_path_the_stage_does_not_declare_writes_nothing_there(
        workspace: Workspace) -> None:
    # The entry would have the engine restore a cached object over any file of the workspace.
    workspace.run()
    path = _entry_of(workspace, "report")
    entry = json.loads(path.read_bytes())
    victim = workspace.write("notes.txt", "the user's own notes\n")  # no stage reads it
    entry["outs"]["notes.txt"] = entry["outs"]["report.txt"]
    _plant(path, entry)
    result = workspace.run()
    assert workspace.statuses(result)["report"] == "ran"
    assert victim.read_text() == "the user's own notes\n"


def test_an_entry_nested_deeper_than_the_parser_goes_makes_the_stage_run_again(
        workspace: Workspace) -> None:
    workspace.run()
    _entry_of(workspace, "report").write_text("[" * 200_000 + "]" * 200_000)
    result = workspace.run()
    assert workspace.statuses(result)["report"] == "ran"


def test_an_entry_over_the_size_bound_is_not_read(workspace: Workspace,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runcache, "MAX_ENTRY_BYTES", 4096)
    workspace.run()
    path = _entry_of(workspace, "report")
    path.write_text(path.read_text() + " " * 4096)  # still the same, valid entry
    result = workspace.run()
    assert workspace.statuses(result)["report"] == "ran"


def test_an_entry_that_is_not_a_regular_file_is_not_read(workspace: Workspace) -> None:
    workspace.run()
    path = _entry_of(workspace, "report")
    path.unlink()
    os.mkfifo(path)  # opening it to read would wait for a writer forever
    result = workspace.run()
    assert workspace.statuses(result)["report"] == "ran"
