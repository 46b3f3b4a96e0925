"""Run records: one JSON document per run, written atomically, with an index for listing.

Records live in ``.gha-mlops/runs/<id>.json``; ``index.json`` beside them holds one summary per
run (id, status, times, model hash, headline metrics) and is rewritten atomically under the
workspace lock, so ``runs list`` never reads every record.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gha_mlops._fs import atomic_write_json
from gha_mlops.errors import UsageError

RECORD_SCHEMA = "gha-mlops/run-record@1"

# hashing.TREE_SUFFIX, not imported from there: `runs list` would load sqlite3 for it.
_TREE_SUFFIX = ".dir"
_RUN_ID = re.compile(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{6}")


def new_run_id(now: float | None = None) -> str:
    """Sortable and unique: UTC time to the second plus 6 random hex digits."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now if now is not None else time.time()))
    return f"{stamp}-{secrets.token_hex(3)}"


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
        if path == model and not str(entry["sha256"]).endswith(_TREE_SUFFIX):
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


def summarize(record: dict[str, Any]) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    for values in (record.get("metrics") or {}).values():
        metrics.update(values)
    stages = record.get("stages") or []
    return {
        "id": record["id"],
        "status": record.get("status"),
        "started_at": record.get("started_at"),
        "finished_at": record.get("finished_at"),
        "duration_s": record.get("duration_s"),
        "git_commit": (record.get("git") or {}).get("commit"),
        "git_dirty": (record.get("git") or {}).get("dirty"),
        "model_sha256": (record.get("model") or {}).get("sha256"),
        "stages_ran": sum(1 for s in stages if s.get("status") == "ran"),
        "stages_cached": sum(1 for s in stages if s.get("status") in ("cached", "restored")),
        "metrics": metrics,
        "kind": record.get("kind", "run"),
    }


class RunStore:
    def __init__(self, runs_dir: Path) -> None:
        self.dir = runs_dir
        self.index_path = runs_dir / "index.json"

    def path(self, run_id: str) -> Path:
        return self.dir / f"{run_id}.json"

    def has(self, run_id: object) -> bool:
        """Whether ``run_id`` is a well-formed id with a record here (one stat)."""
        return (isinstance(run_id, str) and _RUN_ID.fullmatch(run_id) is not None
                and self.path(run_id).is_file())

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
        if _RUN_ID.fullmatch(run_id) is None or self.path(run_id).exists():
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

    def write(self, record: dict[str, Any]) -> Path:
        """Write the record, then add or replace its line in the index (caller holds the lock)."""
        path = self.path(record["id"])
        atomic_write_json(path, record, durable=True)
        index = [e for e in self._index() if e.get("id") != record["id"]]
        index.append(summarize(record))
        index.sort(key=lambda e: (e.get("started_at") or "", e["id"]))
        atomic_write_json(self.index_path, index)
        return path

    def _index(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.index_path.read_bytes())
        except FileNotFoundError:
            return self._rebuild()
        except ValueError:
            return self._rebuild()
        return data if isinstance(data, list) else self._rebuild()

    def _rebuild(self) -> list[dict[str, Any]]:
        """The index from the records themselves (it is derived data, never the only copy)."""
        out = []
        for p in sorted(self.dir.glob("*.json")):
            if p.name == "index.json":
                continue
            try:
                out.append(summarize(json.loads(p.read_bytes())))
            except (ValueError, KeyError):
                continue
        out.sort(key=lambda e: (e.get("started_at") or "", e["id"]))
        return out

    def list(self) -> list[dict[str, Any]]:
        """Summaries, oldest first."""
        return self._index()

    def resolve(self, ref: str) -> str:
        """A run id from ``latest``, ``latest~N`` (runs only), a full id or a unique prefix."""
        entries = self.list()
        ids: list[str] = [e["id"] for e in entries if e.get("kind", "run") == "run"]
        if not entries:
            raise UsageError(f"no runs recorded in {self.dir.parent.parent}",
                             hint="run the pipeline first: gha-mlops run")
        if ref == "latest" or ref.startswith("latest~"):
            back = int(ref.split("~", 1)[1]) if "~" in ref and ref.split("~", 1)[1].isdigit() else 0
            if back >= len(ids):
                raise UsageError(f"{ref}: only {len(ids)} runs are recorded")
            return ids[-1 - back]
        every: list[str] = [e["id"] for e in entries]  # reproductions too, when named explicitly
        if ref in every:
            return ref
        matches = [i for i in every if i.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise UsageError(f"run {ref!r} is ambiguous: {', '.join(matches[:5])}",
                             hint="give more characters of the id")
        raise UsageError(f"no run {ref!r}", hint="see the ids with: gha-mlops runs list")

    def load(self, ref: str) -> dict[str, Any]:
        run_id = self.resolve(ref)
        try:
            record: dict[str, Any] = json.loads(self.path(run_id).read_bytes())
        except FileNotFoundError:
            raise UsageError(f"the record of run {run_id} is missing from {self.dir}") from None
        except ValueError as err:
            raise UsageError(f"the record of run {run_id} is not valid JSON: {err}") from err
        return record
