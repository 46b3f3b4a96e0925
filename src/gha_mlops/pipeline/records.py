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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gha_mlops._fs import atomic_write_json
from gha_mlops.errors import UsageError

RECORD_SCHEMA = "gha-mlops/run-record@1"

_RUN_ID = re.compile(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{6}")


def new_run_id(now: float | None = None) -> str:
    """Sortable and unique: UTC time to the second plus 6 random hex digits."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now if now is not None else time.time()))
    return f"{stamp}-{secrets.token_hex(3)}"


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

    def adopt_snapshot(self, snapshot: Path, run_id: str, *, recorded_by: str,
                       running: Sequence[dict[str, Any]] = ()) -> bool:
        """Make the last snapshot of a run whose process died its record (caller holds the
        lock). The snapshot is what the engine wrote as that run's record-so-far: the
        stages that had finished, status ``interrupted``; ``finished_at`` is when it was
        last written (the last moment the run is known to have been alive). ``running``:
        the entries of the stages that were running then, added unless already there. Nothing is written when the
        run has a record already, or the snapshot is missing, damaged or another run's:
        True when a record was written."""
        if _RUN_ID.fullmatch(run_id) is None or self.path(run_id).exists():
            return False
        try:
            record = json.loads(snapshot.read_bytes())
        except (OSError, ValueError):
            return False
        if not (isinstance(record, dict) and record.get("id") == run_id
                and record.get("schema") == RECORD_SCHEMA):
            return False
        stages = record.get("stages")
        if isinstance(stages, list):
            known = {s.get("name") for s in stages if isinstance(s, dict)}
            stages += [entry for entry in running if entry.get("name") not in known]
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
