"""The legs' run records come from artifacts, so `sweep select` treats them as input: a record
of the wrong form, or a file too large to be one, is a skipped leg with its reason (never a
traceback, never an unbounded read), and the other legs are still ranked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import gha_mlops.sweep.select as select_module
from gha_mlops.runs.record import RECORD_SCHEMA
from gha_mlops.sweep import find_records, select_best


def _put(root: Path, leg: str, record: dict[str, Any]) -> Path:
    path = root / f"run-{leg}" / ".gha-mlops" / "runs" / f"{record['id']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def _good(run_id: str, acc: float) -> dict[str, Any]:
    return {"schema": RECORD_SCHEMA, "id": run_id, "status": "succeeded",
            "started_at": "2026-11-22T00:00:00.000Z", "metrics": {"m.json": {"acc": acc}},
            "stages": [{"name": "train", "status": "ran"}]}


def test_a_record_of_the_wrong_form_is_a_skipped_leg_naming_the_field(tmp_path: Path) -> None:
    root = tmp_path / "legs"
    _put(root, "leg-01", _good("r-01", 0.5))
    _put(root, "leg-02", {**_good("r-02", 0.9), "stages": "not a list"})
    selection = select_best(find_records([root]), "acc", "max")
    assert [c.leg for c in selection.ranking] == ["leg-01"]
    [skipped] = selection.skipped
    assert skipped.leg == "leg-02"
    assert skipped.reason is not None and "not a valid run record" in skipped.reason
    assert "'stages'" in skipped.reason


def test_a_file_too_large_to_be_a_record_is_not_read_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(select_module, "MAX_RECORD_BYTES", 4096)
    root = tmp_path / "legs"
    _put(root, "leg-01", _good("r-01", 0.5))
    _put(root, "leg-02", {**_good("r-02", 0.9), "padding": "x" * 10_000})
    selection = select_best(find_records([root]), "acc", "max")
    assert [c.leg for c in selection.ranking] == ["leg-01"]
    assert [(c.leg, c.reason) for c in selection.skipped] == [("leg-02", "larger than 4096 bytes: too large for a run record")]
