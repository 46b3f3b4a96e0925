"""Writing run records: the fields a run's stages give its record, and the record of a run
whose process died, assembled from its journal.

Where records live, the index and reading them: :mod:`gha_mlops.runs.store`; the typed
record: :mod:`gha_mlops.runs.record`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gha_mlops.runs import store as runs_store
from gha_mlops.runs._doc import RECORD_SCHEMA, RUN_ID, TREE_SUFFIX

__all__ = ["RECORD_SCHEMA", "RunStore", "fill_stage_fields", "iso_time", "model_entry",
           "new_run_id"]


def new_run_id(now: float | None = None) -> str:
    """Sortable and unique: UTC time to the second plus 6 random hex digits."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now if now is not None else time.time()))
    return f"{stamp}-{os.urandom(3).hex()}"


def iso_time(ts: float) -> str:
    """``ts`` (seconds since the epoch) as the records write it: UTC, milliseconds, ``Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def fill_stage_fields(record: dict[str, Any], parts: Sequence[Mapping[str, Any]],
                      model: str | None) -> None:
    """Set the fields of ``record`` that come from its stages, from each stage's *parts*
    in stage order (``stage``: its entry; ``outputs``, ``metrics``, ``runtime``, ``deps``,
    ``data``, ``params`` (-> ``params.values``), ``datasets``: its share of those fields,
    later stages winning) and the model path (-> ``model``). The one assembly of both a
    finished run's record and a killed run's, from its journal."""
    merged: dict[str, dict[str, Any]] = {k: {} for k in (
        "outputs", "metrics", "runtime", "deps", "data", "params", "datasets")}
    for part in parts:
        for key, into in merged.items():
            value = part.get(key)
            if isinstance(value, Mapping):
                into.update(value)
    for key in ("outputs", "metrics", "runtime", "deps", "data"):
        record[key] = merged[key]
    record["stages"] = [part["stage"] for part in parts]
    record.setdefault("params", {})["values"] = merged["params"]
    if "datasets" in record or any("datasets" in part for part in parts):
        record["datasets"] = merged["datasets"]
    if model:
        record["model"] = model_entry(model, merged["outputs"])


def model_entry(model: str, outputs: Mapping[str, Any]) -> dict[str, Any] | None:
    """The model file's path and sha256 among the ``outputs`` of a record (a file output,
    or a file of a tree output); None when no output holds it."""
    for path, entry in outputs.items():
        if path == model and not str(entry["sha256"]).endswith(TREE_SUFFIX):
            return {"path": model, "sha256": entry["sha256"]}
        if model.startswith(path + "/") and "files" in entry:
            digest = entry["files"].get(model[len(path) + 1:])
            if digest:
                return {"path": model, "sha256": digest}
    return None


def _journal_parts(path: Path) -> dict[str, dict[str, Any]]:
    """The stage parts in a journal, by stage name (a later line for the same stage replaces
    the earlier one in its place); reading stops at the first line that does not parse."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError:
        return {}
    parts: dict[str, dict[str, Any]] = {}
    for line in lines:
        try:
            part = json.loads(line)
        except ValueError:
            break
        if isinstance(part, dict) and isinstance(part.get("stage"), dict):
            parts[str(part["stage"].get("name"))] = part
    return parts


class RunStore(runs_store.RunStore):
    """The run store as the engine writes it: a record, and the journal of a run whose process
    died turned into its record."""

    def adopt_journal(self, folder: Path, run_id: str, *, recorded_by: str,
                      running: Sequence[dict[str, Any]] = ()) -> bool:
        """Turn the journal of a run whose process died into its record, status
        ``interrupted`` (caller holds the lock). The journal (``folder``, the run's tmp
        folder) is what the engine wrote as it went: ``record.json``, the record's head
        written before its first command, and ``stages.jsonl``, one line per finished stage
        (a last line cut short by the kill is ignored). ``running``: the entries of the
        stages that were running when it died. ``finished_at`` is when the journal was last
        written, the last moment the run is known to have been alive.

        Nothing is written when the run has a record already, or the journal is missing,
        damaged or another run's: True when a record was written."""
        if RUN_ID.fullmatch(run_id) is None or self.path(run_id).exists():
            return False
        head, last = folder / "record.json", folder / "stages.jsonl"
        try:
            doc = json.loads(head.read_bytes())
            finished = max(p.stat().st_mtime for p in (head, last) if p.exists())
        except (OSError, ValueError):
            return False
        record = doc.get("record") if isinstance(doc, dict) else None
        if not (isinstance(record, dict) and record.get("id") == run_id
                and record.get("schema") == RECORD_SCHEMA and isinstance(doc.get("started"),
                                                                          (int, float))):
            return False
        parts = _journal_parts(last)
        for entry in running:
            parts.setdefault(str(entry.get("name")), {"stage": entry})
        model = doc.get("model")
        fill_stage_fields(record, list(parts.values()), model if isinstance(model, str) else None)
        record["finished_at"] = iso_time(finished)
        record["duration_s"] = round(max(0.0, finished - float(doc["started"])), 3)
        record["status"] = "interrupted"
        record["interrupted"] = {
            "reason": "its gha-mlops process died (killed or crashed) while the run was in "
                      "progress; stages that were running were stopped",
            "recorded_by_run": recorded_by,
        }
        self.write(record)
        return True
