"""The run record's constants and its index line, without the typed record's classes: the
engine writes a record on every run (a no-op too), and defining the record's dataclasses
costs ~3.5 ms that writing never needs. Readers use :mod:`gha_mlops.runs.record`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

RECORD_SCHEMA = "gha-mlops/run-record@1"
RUN_ID = re.compile(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{6}")
# The largest run record read (a record of 20,000 stages is ~20 MB): records come from
# artifacts and other machines too.
MAX_RECORD_BYTES = 64 * 1024 * 1024
TREE_SUFFIX = ".dir"  # hashing.TREE_SUFFIX; not imported, so `runs list` does not load sqlite3


def summary_of(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The line of ``index.json`` for the record document ``doc``: read leniently (a field of
    the wrong type reads as absent), because the writer calls it on every run and validating
    a whole record there would cost the no-op run its budget. ``KeyError`` without an id."""
    def part(key: str) -> Mapping[str, Any]:
        value = doc.get(key)
        return value if isinstance(value, Mapping) else {}

    metrics: dict[str, Any] = {}
    for values in part("metrics").values():
        if isinstance(values, Mapping):
            metrics.update(values)
    stages = [s for s in (doc.get("stages") or []) if isinstance(s, Mapping)]
    return {
        "id": doc["id"],
        "status": doc.get("status"),
        "started_at": doc.get("started_at"),
        "finished_at": doc.get("finished_at"),
        "duration_s": doc.get("duration_s"),
        "git_commit": part("git").get("commit"),
        "git_dirty": part("git").get("dirty"),
        "model_sha256": part("model").get("sha256"),
        "stages_ran": sum(1 for s in stages if s.get("status") == "ran"),
        "stages_cached": sum(1 for s in stages if s.get("status") in ("cached", "restored")),
        "metrics": metrics,
        "kind": doc.get("kind", "run"),
    }
