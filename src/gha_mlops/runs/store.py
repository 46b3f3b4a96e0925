"""Where a workspace keeps its runs, and the store of their records.

Records live in ``<workspace>/.gha-mlops/runs/<id>.json``; ``index.json`` beside them holds
one summary per run (id, status, times, model hash, headline metrics) and is rewritten
atomically under the workspace lock, so ``runs list`` never reads every record. The index is
derived data: when it is missing or damaged it is rebuilt from the records.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gha_mlops._fs import JSONFileError, atomic_write_json, read_json_file
from gha_mlops.config._state import STATE_DIR
from gha_mlops.errors import UsageError
from gha_mlops.runs._doc import MAX_RECORD_BYTES, RUN_ID, summary_of

if TYPE_CHECKING:
    from gha_mlops.runs.record import RunRecord

RUNS_FOLDER = "runs"


def runs_dir(workspace: Path) -> Path:
    """The folder of ``workspace``'s run records: the one place that says where runs are."""
    return workspace / STATE_DIR / RUNS_FOLDER


def workspace_of(record_file: Path) -> Path | None:
    """The workspace of ``<workspace>/.gha-mlops/runs/<id>.json`` (where the run's metrics and
    plots sit beside the record, also in an artifact that holds the run's files); None for a
    record file anywhere else."""
    parent = record_file.absolute().parent
    if parent.name == RUNS_FOLDER and parent.parent.name == STATE_DIR:
        return parent.parent.parent
    return None


def read_record(path: Path, *, what: str | None = None) -> RunRecord:
    """The record in the JSON file ``path``, validated; a :class:`UsageError` naming the file
    says what is wrong (unreadable, not JSON, not a run record)."""
    try:
        doc = read_json_file(path, max_bytes=MAX_RECORD_BYTES)
    except FileNotFoundError:
        raise UsageError(f"no run record file {path}",
                         hint="give a record file, a run id, `latest` or `latest~N`",
                         file=path) from None
    except OSError as err:
        raise UsageError(f"cannot read {what or path}: {err.strerror}", file=path) from err
    except JSONFileError as err:
        raise UsageError(f"{what or path} {err}", file=path) from err
    if not isinstance(doc, dict) or "id" not in doc or "stages" not in doc:
        raise UsageError(f"{what or path} is not a gha-mlops run record",
                         hint="give a run id, `latest`, or a .gha-mlops/runs/<id>.json file",
                         file=path)
    # Imported here for start-up speed (see runs._doc): writing a record never reads one.
    from gha_mlops.runs.record import RecordError, RunRecord

    try:
        return RunRecord.from_json(doc)
    except RecordError as err:
        raise UsageError(f"{what or path} is not a run record gha-mlops can read: {err.sentence()}",
                         hint="was it edited by hand, or written by another version of "
                              "gha-mlops?", file=path) from None


class RunStore:
    """The run records of one workspace (``runs_dir``)."""

    def __init__(self, runs_dir: Path) -> None:
        self.dir = runs_dir
        self.index_path = runs_dir / "index.json"

    @classmethod
    def of(cls, workspace: Path) -> RunStore:
        return cls(runs_dir(workspace))

    def path(self, run_id: str) -> Path:
        return self.dir / f"{run_id}.json"

    def has(self, run_id: object) -> bool:
        """Whether ``run_id`` is a well-formed id with a record here (one stat)."""
        return (isinstance(run_id, str) and RUN_ID.fullmatch(run_id) is not None
                and self.path(run_id).is_file())

    def write(self, record: Mapping[str, Any]) -> Path:
        """Write the record document, then add or replace its line in the index (the caller
        holds the workspace lock)."""
        path = self.path(record["id"])
        atomic_write_json(path, record, durable=True)
        index = [e for e in self._index() if e.get("id") != record["id"]]
        index.append(summary_of(record))
        index.sort(key=lambda e: (e.get("started_at") or "", e["id"]))
        atomic_write_json(self.index_path, index)
        return path

    def _index(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.index_path.read_bytes())
        except (FileNotFoundError, ValueError):
            return self._rebuild()
        return data if isinstance(data, list) else self._rebuild()

    def _rebuild(self) -> list[dict[str, Any]]:
        """The index from the records themselves (it is derived data, never the only copy)."""
        out = []
        for p in sorted(self.dir.glob("*.json")):
            if p.name == "index.json":
                continue
            try:
                out.append(summary_of(json.loads(p.read_bytes())))
            except (ValueError, KeyError, AttributeError):
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

    def record(self, ref: str) -> RunRecord:
        """The typed record of ``ref`` (see :meth:`resolve`)."""
        run_id = self.resolve(ref)
        path = self.path(run_id)
        if not path.is_file():
            raise UsageError(f"the record of run {run_id} is missing from {self.dir}")
        return read_record(path, what=f"the record of run {run_id}")
