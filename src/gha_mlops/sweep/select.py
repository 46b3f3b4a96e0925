"""Selecting the best leg of a sweep: the legs' run records (downloaded artifacts) are found,
read as typed :class:`~gha_mlops.runs.record.RunRecord` values, and ranked by one metric.

Records come from artifacts, so they are input: a file that is not JSON, or a record that does
not have the form gha-mlops writes, is reported as a skipped leg with the reason, never a
traceback; each file read is bounded by :data:`MAX_RECORD_BYTES`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gha_mlops._fs import JSONFileError, read_json_file
from gha_mlops.errors import GhaMlopsError, UsageError
from gha_mlops.runs._doc import MAX_RECORD_BYTES
from gha_mlops.runs.record import RECORD_SCHEMA, RecordError, RunRecord
from gha_mlops.sweep.values import yaml_reads


@dataclass(frozen=True)
class FoundRecord:
    """A JSON file found among the legs' artifacts: a run record, or why it is unusable.

    ``directory`` is the artifact directory it was found in (``run-<leg>``), ``""`` if none.
    """

    path: str
    directory: str
    record: RunRecord | None
    problem: str | None = None

    @property
    def leg(self) -> str:
        if self.directory:
            return self.directory.removeprefix("run-") or self.directory
        return (self.record.id if self.record else "") or Path(self.path).stem


def _json_files(root: Path) -> list[tuple[Path, str]]:
    """The JSON files under ``root`` with the leg directory of each (see :func:`find_records`)."""
    if root.is_file():
        parents = [p.name for p in root.absolute().parents if p.name.startswith("run-")]
        return [(root, parents[0] if parents else "")]
    files = []
    for path in sorted(root.rglob("*.json")):
        rel = path.relative_to(root).parts
        files.append((path, rel[0] if len(rel) > 1 else ""))
    return files


def _read(path: Path, directory: str) -> FoundRecord | None:
    """The record at ``path``, a FoundRecord with the problem, or None for JSON that is not
    a run record."""
    try:
        doc = read_json_file(path, max_bytes=MAX_RECORD_BYTES)
    except JSONFileError as err:
        problem = {"too-large": f"larger than {MAX_RECORD_BYTES} bytes: too large for a run "
                                "record",
                   "not-json": "not valid JSON"}.get(err.reason, str(err))
        return FoundRecord(str(path), directory, None, problem)
    except OSError as err:
        return FoundRecord(str(path), directory, None, f"unreadable: {err.strerror}")
    if not (isinstance(doc, dict) and doc.get("schema") == RECORD_SCHEMA):
        return None
    try:
        return FoundRecord(str(path), directory, RunRecord.from_json(doc))
    except RecordError as err:
        return FoundRecord(str(path), directory, None, f"not a valid run record: {err}")


def find_records(paths: Sequence[Path]) -> list[FoundRecord]:
    """Run records in ``paths``: files, or directories searched recursively for ``*.json``.

    Under a directory, a record's leg directory is the first directory below it (where
    ``actions/download-artifact`` puts each artifact); for a file given directly, the nearest
    parent named ``run-*``. JSON files that are not run records are ignored; files that are
    not valid JSON or not valid records are returned with a problem. Raises
    :class:`UsageError` when no record is found.
    """
    found = [f for root in paths for path, directory in _json_files(root)
             if (f := _read(path, directory)) is not None]
    if not any(f.record is not None for f in found):
        where = ", ".join(str(p) for p in paths)
        raise UsageError(
            f"no run records in {where}",
            hint="each leg uploads its record (.gha-mlops/runs/<id>.json) as an artifact "
            "`run-<leg>`; download them all into one directory, e.g. actions/download-artifact "
            "with `pattern: run-*` and `path: legs`, and pass that directory")
    return found


@dataclass(frozen=True)
class Candidate:
    """A leg's run: ranked with its metric ``value``, or skipped for ``reason``."""

    leg: str
    directory: str
    path: str
    run_id: str | None
    status: str | None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    value: int | float | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"leg": self.leg, "run_id": self.run_id, "status": self.status,
                               "overrides": dict(self.overrides), "record": self.path,
                               "directory": self.directory}
        if self.reason is None:
            doc["value"] = self.value
        else:
            doc["reason"] = self.reason
        return doc


@dataclass(frozen=True)
class Selection:
    """The ranked legs (best first) and the skipped ones, for ``file:key`` and a direction."""

    metric_file: str
    metric_key: str
    direction: str
    ranking: tuple[Candidate, ...]
    skipped: tuple[Candidate, ...]

    @property
    def metric(self) -> str:
        return f"{self.metric_file}:{self.metric_key}"

    @property
    def best(self) -> Candidate:
        return self.ranking[0]

    def ranking_json(self) -> list[dict[str, Any]]:
        return [{"rank": n, **c.to_json()} for n, c in enumerate(self.ranking, 1)]

    def to_json(self) -> dict[str, Any]:
        """The selection as ``sweep select --json`` prints it."""
        return {"metric": self.metric, "direction": self.direction,
                "best": {"rank": 1, **self.best.to_json()}, "ranking": self.ranking_json(),
                "skipped": [c.to_json() for c in self.skipped]}

    def step_outputs(self) -> dict[str, str]:
        """The step outputs of ``sweep select`` in GitHub Actions, in the order they are set."""
        def compact(value: Any, **kw: Any) -> str:
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"), **kw)

        best = self.best
        return {
            "best-leg": best.leg, "best-run-id": best.run_id or "",
            "best-value": json.dumps(best.value),
            "best-overrides": json.dumps(dict(best.overrides), sort_keys=True,
                                         ensure_ascii=False),
            "ranking": compact(self.ranking_json()),
            "skipped": compact([c.to_json() for c in self.skipped]),
            "metric": self.metric,
        }


def _overrides_of(record: RunRecord) -> dict[str, Any]:
    """The record's ``params.overrides`` as a mapping (``KEY=VALUE`` strings are accepted)."""
    raw = record.params.get("overrides") or {}
    if isinstance(raw, Mapping):
        return dict(raw)
    if isinstance(raw, list):
        pairs = [str(item).split("=", 1) for item in raw]
        return {p[0]: yaml_reads(p[1]) if len(p) > 1 else None for p in pairs}
    return {}


def _natural(text: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", text) if p)


def resolve_metric(metric: str, records: Sequence[RunRecord | Mapping[str, Any]]
                   ) -> tuple[str, str]:
    """``(file, key)`` for ``FILE:KEY``, or for ``KEY`` when exactly one metrics file of the
    records holds it. Raises :class:`UsageError` when it is ambiguous or in no record, naming
    the metrics that exist."""
    available: dict[str, set[str]] = {}
    for record in records:
        metrics = (record.metrics if isinstance(record, RunRecord)
                   else record.get("metrics") or {})
        for file, values in metrics.items():
            if isinstance(values, Mapping):
                available.setdefault(file, set()).update(values)
    file, sep, key = metric.partition(":")
    if sep and file in available:
        if key in available[file]:
            return file, key
        holders = [file]
    else:
        key = metric
        holders = sorted(f for f, keys in available.items() if key in keys)
        if len(holders) == 1:
            return holders[0], key
        if len(holders) > 1:
            raise UsageError(f"the metric {key!r} is in several metrics files: "
                             + ", ".join(holders),
                             hint=f"name one as FILE:KEY, e.g. --metric {holders[0]}:{key}")
    names = sorted((f"{f}:{k}" for f, keys in available.items() for k in keys),
                   key=lambda n: (n.count("."), n))
    shown = ", ".join(names[:30]) + (f", ... ({len(names)} in all)" if len(names) > 30 else "")
    where = f" (no record's {file} has {key!r})" if sep and holders else ""
    raise UsageError(f"no run record has the metric {metric!r}{where}",
                     hint=("the records have: " + shown) if names
                     else "the records have no metrics: does the pipeline declare `metrics:`?")


def select_legs(paths: Sequence[Path], metric: str, direction: str) -> Selection:
    """``sweep select``: the legs' records found in ``paths``, ranked by ``metric``."""
    return select_best(find_records(paths), metric, direction)


def select_best(found: Sequence[FoundRecord], metric: str, direction: str) -> Selection:
    """Rank the legs' newest successful runs by ``metric`` (``max`` or ``min``): ties go to
    the earlier leg (natural order of leg ids, so ``leg-2`` before ``leg-10``).

    A leg is skipped, with a reason, when its run did not succeed, its record lacks the metric
    or the value is not a number; older records of the same leg and unreadable files are
    skipped too. Raises :class:`GhaMlopsError` when no leg can be ranked.
    """
    if direction not in ("max", "min"):
        raise ValueError(f"direction must be max or min, not {direction!r}")
    chosen, skipped = _newest_per_leg(found)
    file, key = resolve_metric(metric, [f.record for f in chosen if f.record is not None])
    ranked: list[Candidate] = []
    for f in chosen:
        candidate = _judge(f, file, key)
        (ranked if candidate.reason is None else skipped).append(candidate)
    sign = -1 if direction == "max" else 1
    ranked.sort(key=lambda c: (sign * (c.value or 0), _natural(c.leg), c.path))
    skipped.sort(key=lambda c: (_natural(c.leg), c.path))
    if not ranked:
        raise GhaMlopsError(
            f"no leg can be ranked by {file}:{key}: {len(skipped)} skipped",
            hint="see why each leg was skipped above; a leg is ranked when its run succeeded "
            "and recorded the metric",
            notes=[f"{c.leg}: {c.reason} ({c.path})" for c in skipped])
    return Selection(file, key, direction, tuple(ranked), tuple(skipped))


def _newest_per_leg(found: Sequence[FoundRecord]) -> tuple[list[FoundRecord], list[Candidate]]:
    """The newest run record of each leg, and the skipped files (unusable, not a run, older)."""
    skipped: list[Candidate] = []
    by_leg: dict[str, list[FoundRecord]] = {}
    for f in found:
        if f.record is None:
            skipped.append(Candidate(f.leg, f.directory, f.path, None, None,
                                     reason=f.problem or "not a run record"))
        elif f.record.kind != "run":
            skipped.append(_candidate(f, reason=f"a {f.record.kind} record, not a run"))
        else:
            by_leg.setdefault(f.leg, []).append(f)
    chosen: list[FoundRecord] = []
    for items in by_leg.values():
        items = sorted(items, key=lambda f: (f.record.started_at or "" if f.record else "",
                                             f.record.id if f.record else "", f.path))
        newest = items[-1]
        chosen.append(newest)
        newest_id = newest.record.id if newest.record else None
        skipped += [_candidate(f, reason=f"superseded by the newer record {newest_id} of the "
                               "same leg") for f in items[:-1]]
    return chosen, skipped


def _judge(f: FoundRecord, file: str, key: str) -> Candidate:
    """The leg ranked with its value of ``file:key``, or skipped with the reason."""
    assert f.record is not None
    record = f.record
    if record.status != "succeeded":
        failed = [s.name for s in record.stages if s.status == "failed"]
        why = f"the run {record.status}" + (f" (stage {failed[0]!r})" if failed else "")
        return _candidate(f, reason=why)
    values = record.metrics.get(file) or {}
    value = values.get(key)
    if value is None:
        return _candidate(f, reason=f"its record has no metric {file}:{key}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return _candidate(f, reason=f"{file}:{key} is {value!r}, not a number")
    return _candidate(f, value=value)


def _candidate(f: FoundRecord, *, value: int | float | None = None,
               reason: str | None = None) -> Candidate:
    record = f.record
    assert record is not None
    return Candidate(f.leg, f.directory, f.path, record.id, record.status,
                     _overrides_of(record), value, reason)
