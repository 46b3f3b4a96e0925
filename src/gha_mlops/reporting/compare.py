"""The comparison of two run records: a *head* run (a pull request's model) against a
*baseline* (the champion).

:func:`compare` is pure: two records (typed :class:`~gha_mlops.runs.record.RunRecord` values;
a plain JSON document is read leniently into one), and optionally the files of each run that
were read beside them (:func:`read_run_files`, the only I/O here), become a
:class:`Comparison`:

- every metric, named ``FILE:KEY`` (nested keys joined with dots), with both values, the
  absolute and relative delta and a direction-aware :data:`Change`; a metric on one side only
  is ``added`` or ``removed``; NaN and ±inf are kept, shown as such, and never count as better;
- the parameters whose values differ, the ``--set`` overrides of each side, the dataset
  versions and raw-input hashes that differ, the stages each side ran or took from the cache,
  the model (sha256, size) and an inference latency metric when one exists;
- what the plots need: lists of lists in metrics files (confusion matrices) and the CSV plot
  files of each side.

Which way is better for a metric: the ``direction`` of its gate when one is declared, else
:func:`default_direction`: a name containing ``loss``, ``error``, ``mse``, ``mae``,
``latency`` or ``time`` is lower-is-better, any other higher-is-better.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from gha_mlops.runs.record import RunRecord

Direction = Literal["higher", "lower"]
Change = Literal["better", "worse", "same", "added", "removed", "incomparable"]
"""How the head's value relates to the baseline's. ``incomparable``: the baseline's value is
NaN or infinite and the head's is not, so neither can be called better."""

LOWER_IS_BETTER = ("loss", "error", "mse", "mae", "latency", "time")
"""Metric names containing one of these (case-insensitively) are lower-is-better."""

_CSV_SUFFIXES = frozenset({".csv", ".tsv"})
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".svg")
"""Image plot files the report shows as they are."""
MAX_IMAGE_BYTES = 5 * 1024 * 1024
"""The largest image plot a report embeds (files are read up to
:data:`gha_mlops.runs.files.MAX_RUN_FILE_BYTES`)."""


def default_direction(name: str) -> Direction:
    """``lower`` when ``name`` contains a word of :data:`LOWER_IS_BETTER`, else ``higher``."""
    lowered = name.lower()
    return "lower" if any(word in lowered for word in LOWER_IS_BETTER) else "higher"


def is_number(value: Any) -> bool:
    """An int or float (NaN and ±inf included), not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class MetricDiff:
    """One metric on both sides; ``None`` where a side does not have it."""

    file: str
    key: str
    base: float | None
    head: float | None
    direction: Direction

    @property
    def name(self) -> str:
        """``FILE:KEY``, the metric's unique name."""
        return f"{self.file}:{self.key}"

    @property
    def delta(self) -> float | None:
        """``head - base`` when both are finite numbers."""
        if _finite(self.base) and _finite(self.head):
            assert self.base is not None and self.head is not None
            return self.head - self.base
        return None

    @property
    def relative(self) -> float | None:
        """``delta / |base|``, when the delta exists and the baseline is not 0."""
        delta = self.delta
        if delta is None or not self.base:
            return None
        return delta / abs(self.base)

    @property
    def change(self) -> Change:
        base, head = self.base, self.head
        if base is None:
            return "added"
        if head is None:
            return "removed"
        if not math.isfinite(head):
            # NaN is never "the same" as NaN for a model that should produce numbers, but a
            # baseline that was already NaN has not got worse.
            same = (math.isnan(head) and math.isnan(base)) or head == base
            return "same" if same else "worse"
        if not math.isfinite(base):
            return "incomparable"
        if head == base:
            return "same"
        better = head > base if self.direction == "higher" else head < base
        return "better" if better else "worse"


@dataclass(frozen=True)
class ValueChange:
    """A parameter, dataset version or input hash that differs. ``in_base``/``in_head`` say
    which sides have it (``base``/``head`` are ``None`` where absent; ``None`` may also be a
    value)."""

    name: str
    base: Any
    head: Any
    in_base: bool = True
    in_head: bool = True


@dataclass(frozen=True)
class Side:
    """What the report says about one run besides its metrics."""

    id: str
    status: str
    commit: str | None = None
    branch: str | None = None
    dirty: bool = False
    ran: tuple[str, ...] = ()
    cached: tuple[str, ...] = ()
    other: tuple[tuple[str, str], ...] = ()
    """Stages neither ran nor cached: ``(name, status)`` (failed, skipped, interrupted)."""
    model_path: str | None = None
    model_sha256: str | None = None
    model_size: int | None = None
    overrides: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class MatrixPair:
    """A list of lists in a metrics file (e.g. a confusion matrix) on both sides."""

    name: str
    base: list[list[float]] | None
    head: list[list[float]] | None


@dataclass(frozen=True)
class CurvePair:
    """A CSV plot file's text on both sides (``None`` where not available)."""

    path: str
    base: str | None
    head: str | None


@dataclass(frozen=True)
class Comparison:
    """Head against baseline; see the module documentation."""

    base: Side
    head: Side
    metrics: tuple[MetricDiff, ...]
    params: tuple[ValueChange, ...] = ()
    datasets: tuple[ValueChange, ...] = ()
    inputs: tuple[ValueChange, ...] = ()
    matrices: tuple[MatrixPair, ...] = ()
    curves: tuple[CurvePair, ...] = ()
    notes: tuple[str, ...] = ()

    def find(self, name: str) -> list[MetricDiff]:
        """The metrics ``name`` designates: the one named ``FILE:KEY`` exactly, else every
        metric whose key is ``name`` (more than one when several files have that key)."""
        exact = [m for m in self.metrics if m.name == name]
        return exact or [m for m in self.metrics if m.key == name]

    @property
    def latency(self) -> MetricDiff | None:
        """The inference latency metric: a key like ``latency_ms``, else any with
        ``latency`` in its name."""
        candidates = [m for m in self.metrics if "latency" in m.key.lower()]
        ms = [m for m in candidates if m.key.lower().endswith("latency_ms")]
        found = ms or candidates
        return found[0] if found else None

    @property
    def model_changed(self) -> bool:
        return self.base.model_sha256 != self.head.model_sha256


@dataclass(frozen=True)
class RunFiles:
    """Files of one run read beside its record, each only when its bytes are the recorded
    ones: metrics documents (parsed JSON), CSV plot texts, the model's size, image plots, and
    why a file the record names could not be used."""

    documents: Mapping[str, Any] = field(default_factory=dict)
    curves: Mapping[str, str] = field(default_factory=dict)
    model_size: int | None = None
    problems: tuple[str, ...] = ()
    images: Mapping[str, bytes] = field(default_factory=dict)
    """Image plot files a stage declares (``plots: [x.png]``), path -> bytes."""


# --------------------------------------------------------------------------- reading files


def read_run_files(record: RunRecord | Mapping[str, Any], root: Path | None) -> RunFiles:
    """The files of ``record`` under ``root`` (its workspace, or the directory a downloaded
    record sits in), each read by the sha256 the record gives it through
    :func:`gha_mlops.runs.files.read_run_file`: from the workspace's content cache, else from
    the workspace file when its bytes are the run's, so a baseline run whose files a later
    run of the same workspace overwrote is still shown whole. Never raises for a missing,
    changed or unparseable file: it is left out and named in ``problems``."""
    from gha_mlops.runs.files import RunFileError, read_run_file

    if root is None:
        return RunFiles()
    rec = RunRecord.coerce(record, lenient=True)
    documents: dict[str, Any] = {}
    curves: dict[str, str] = {}
    problems: list[str] = []
    images: dict[str, bytes] = {}
    declared = rec.outputs
    for rel, digest, kind in _record_files(rec):
        suffix = PurePosixPath(rel).suffix.lower()
        # Images a stage names one by one (not each file of a plots folder) are shown.
        image = kind == "plot" and suffix in IMAGE_SUFFIXES and rel in declared
        if kind not in ("metric", "plot") or (kind == "plot" and suffix not in _CSV_SUFFIXES
                                              and not image):
            continue
        try:
            data = read_run_file(root, rel, digest).data
        except RunFileError as err:
            if err.reason not in ("unsafe", "absent"):
                problems.append(err.message)
            continue  # not downloaded with the record: the record's numbers are used
        if image:
            if len(data) > MAX_IMAGE_BYTES:  # what a comment may embed, below the read limit
                problems.append(f"{rel} is too large to read")
            else:
                images[rel] = data
            continue
        try:
            if kind == "metric":
                documents[rel] = json.loads(data)
            else:
                curves[rel] = data.decode("utf-8-sig")
        except (UnicodeDecodeError, ValueError) as err:
            problems.append(f"{rel} cannot be read: {err}")
    model_size = _model_size(rec, root)
    return RunFiles(documents, curves, model_size, tuple(problems), images)


def _record_files(record: RunRecord) -> Iterator[tuple[str, str, str]]:
    """``(path, sha256, kind)`` of every file output of ``record``, directories expanded."""
    for path, entry in record.outputs.items():
        if entry.files is not None:
            for name, digest in sorted(entry.files.items()):
                yield f"{path}/{name}", digest, entry.kind
        elif entry.sha256:
            yield path, entry.sha256, entry.kind


def _model_size(record: RunRecord, root: Path) -> int | None:
    from gha_mlops.runs.files import recorded_size

    model = record.model
    if model is None or not model.path or not model.sha256:
        return None
    return recorded_size(root, model.path, model.sha256)


# --------------------------------------------------------------------------- comparing


def compare(base: RunRecord | Mapping[str, Any], head: RunRecord | Mapping[str, Any], *,
            base_files: RunFiles | None = None, head_files: RunFiles | None = None,
            directions: Mapping[str, Direction] | None = None) -> Comparison:
    """Compare run record ``head`` with run record ``base`` (see the module documentation).

    ``directions`` maps a metric key or ``FILE:KEY`` to ``higher``/``lower`` (the gates'
    ``direction``); other metrics get :func:`default_direction` of their key. Never raises
    for a record of an unexpected shape: what cannot be read is left out (a plain JSON document
    is read leniently: :meth:`RunRecord.from_json`).
    """
    base = RunRecord.coerce(base, lenient=True)
    head = RunRecord.coerce(head, lenient=True)
    base_files = base_files or RunFiles()
    head_files = head_files or RunFiles()
    directions = directions or {}
    base_values, base_matrices = _metric_values(base, base_files)
    head_values, head_matrices = _metric_values(head, head_files)
    metrics = []
    for file, key in _union(head_values, base_values):
        direction = (directions.get(f"{file}:{key}") or directions.get(key)
                     or default_direction(key))
        metrics.append(MetricDiff(file, key, base_values.get((file, key)),
                                  head_values.get((file, key)), direction))
    matrices = [MatrixPair(f"{f}:{k}", base_matrices.get((f, k)), head_matrices.get((f, k)))
                for f, k in _union(head_matrices, base_matrices)]
    curves = [CurvePair(p, base_files.curves.get(p), head_files.curves.get(p))
              for p in _union(head_files.curves, base_files.curves)]
    notes = [f"baseline: {p}" for p in base_files.problems]
    notes += [f"head: {p}" for p in head_files.problems]
    return Comparison(
        base=_side(base, base_files),
        head=_side(head, head_files),
        metrics=tuple(metrics),
        params=tuple(_changes(_flat(base.param_values), _flat(head.param_values))),
        datasets=tuple(_changes(_versions(base), _versions(head))),
        inputs=tuple(_changes(base.data, head.data)),
        matrices=tuple(matrices),
        curves=tuple(curves),
        notes=tuple(notes),
    )


def _union(first: Mapping[Any, Any], second: Mapping[Any, Any]) -> list[Any]:
    """Keys of ``first`` in order, then those only in ``second``."""
    return [*first, *(k for k in second if k not in first)]


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _metric_values(record: RunRecord, files: RunFiles
                   ) -> tuple[dict[tuple[str, str], float], dict[tuple[str, str], Any]]:
    """``(file, key) -> number`` and ``(file, key) -> matrix``. A metrics document read
    beside the record wins over the record's numbers: it also has NaN and ±inf (which
    records leave out) and lists."""
    values: dict[tuple[str, str], float] = {}
    matrices: dict[tuple[str, str], Any] = {}
    metrics = record.metrics
    for file in _union(metrics, files.documents):
        document = files.documents.get(file)
        if isinstance(document, Mapping):
            for key, value in _flatten(document):
                if is_number(value):
                    values[(file, key)] = float(value)
                elif _is_matrix(value):
                    matrices[(file, key)] = value
        else:
            for key, value in metrics.get(file, {}).items():
                if is_number(value):
                    values[(file, str(key))] = float(value)
    return values, matrices


def _flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, name + ".")
        else:
            yield name, value


def _is_matrix(value: Any) -> bool:
    return (isinstance(value, list) and bool(value)
            and all(isinstance(row, list) and row and len(row) == len(value[0])
                    and all(is_number(x) for x in row) for row in value))


def _flat(values: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted key -> leaf value (lists are leaves)."""
    return dict(_flatten(values))


def _versions(record: RunRecord) -> dict[str, Any]:
    return {str(name): _mapping(ds).get("version")
            for name, ds in (record.datasets or {}).items()}


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON (so 1 and 1.0 differ, as they do in a params file, and NaN == NaN)."""
    try:
        return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    except (TypeError, ValueError):
        return bool(a == b)


def _changes(base: Mapping[str, Any], head: Mapping[str, Any]) -> Iterator[ValueChange]:
    for key in _union(head, base):
        in_base, in_head = key in base, key in head
        if in_base and in_head and _same(base[key], head[key]):
            continue
        yield ValueChange(str(key), base.get(key), head.get(key), in_base, in_head)


def _side(record: RunRecord, files: RunFiles) -> Side:
    git = record.git
    ran: list[str] = []
    cached: list[str] = []
    other: list[tuple[str, str]] = []
    for stage in record.stages:
        if stage.status == "ran":
            ran.append(stage.name)
        elif stage.came_from_cache:
            cached.append(stage.name)
        else:
            other.append((stage.name, stage.status))
    model = record.model
    model_path = model.path if model is not None and model.path else None
    return Side(
        id=record.id,
        status=record.status,
        commit=git.commit or None if git is not None else None,
        branch=git.branch or None if git is not None else None,
        dirty=bool(git is not None and git.dirty),
        ran=tuple(ran),
        cached=tuple(cached),
        other=tuple(other),
        model_path=model_path,
        model_sha256=model.sha256 or None if model is not None else None,
        model_size=_recorded_size(record, model_path) or files.model_size,
        overrides=tuple((str(k), v) for k, v in record.overrides.items()),
    )


def _recorded_size(record: RunRecord, model_path: str | None) -> int | None:
    """The model's size when the record's ``outputs`` carry sizes."""
    if model_path is None:
        return None
    entry = record.outputs.get(model_path)
    if entry is not None and entry.size is not None:
        return entry.size
    for path, out in record.outputs.items():  # the model inside an output directory
        rel = model_path[len(path) + 1:] if model_path.startswith(f"{path}/") else None
        if rel is not None and rel in out.sizes:
            return out.sizes[rel]
    return None

