"""The run record, typed: what ``.gha-mlops/runs/<id>.json`` holds, validated as it is read.

A record is written once by the engine (see :mod:`gha_mlops.pipeline.records`) and read by
``runs``, ``summary``, ``report``, ``reproduce`` and ``data gc``, from this workspace or from
another machine's artifact: it is input like any other. :meth:`RunRecord.from_json` checks the
fields every reader relies on (types, digests, the schema) and raises :class:`RecordError`
naming the field; fields no reader types (``env``, ``options``, ``runtime``...) are kept as
they are. :meth:`RunRecord.to_json` gives back the document it was read from, so a record
round-trips byte for byte through ``canonical JSON``.

Schema versions: ``gha-mlops/run-record@1``; a record without ``schema`` (written before the
field existed) is read as version 1. Any other schema is refused: a newer gha-mlops wrote it.

A *lenient* reading (``RunRecord.from_json(doc, lenient=True)``) runs the same checks but never
raises: a value of the wrong type reads as absent (a required string as ``"?"``), an entry that
is not a JSON object (an output, a stage, a metrics file) is left out, and a digest keeps any
string it is given. It is for code whose contract is to show whatever a document it is handed
holds (the report's comparison, the run summary, reproduce's CPU pre-check, when called with a
plain dict); every reader of a record *file* reads strictly.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gha_mlops.errors import quoted
from gha_mlops.runs._doc import RECORD_SCHEMA, RUN_ID, TREE_SUFFIX, summary_of

__all__ = ["RECORD_SCHEMA", "RUN_ID", "TREE_SUFFIX", "GitFacts", "ModelRef", "Output",
           "RecordError", "RunRecord", "StageRun", "summary_of"]

_DIGEST = re.compile(r"[0-9a-f]{64}(?:\.dir)?")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class RecordError(ValueError):
    """A run record that does not have the form gha-mlops writes; the message names the field
    and what was expected (the caller adds which file): ``outputs['m'].sha256 is ...`` for a
    field, ``is ...``/``has ...`` for the record as a whole (see :meth:`sentence`)."""

    def sentence(self) -> str:
        """The problem as the end of a sentence about the record: ``it is ...`` or
        ``its outputs['m'].sha256 is ...``."""
        text = str(self)
        return f"it {text}" if text.startswith(("is ", "has ")) else f"its {text}"


_T = TypeVar("_T")
# One set of checks for both readings: each failed check goes through _bad, which raises in a
# strict reading and gives its fallback in a lenient one (see the module's docstring).
_LENIENT: ContextVar[bool] = ContextVar("gha_mlops_lenient_record", default=False)


def _bad(message: str, fallback: _T) -> _T:
    if _LENIENT.get():
        return fallback
    raise RecordError(message)


def _objects(entries: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The items of ``entries``; a lenient reading leaves out values that are not objects."""
    lenient = _LENIENT.get()
    return [(k, v) for k, v in entries.items() if not lenient or isinstance(v, Mapping)]



def _map(doc: Mapping[str, Any], key: str, *, where: str = "") -> Mapping[str, Any]:
    """``doc[key]`` as a JSON object; absent or null is empty."""
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        return _bad(f"{where}{key!r} is {quoted(value)}, not a JSON object", {})
    return value


def _str(doc: Mapping[str, Any], key: str, *, where: str = "", optional: bool = False,
         default: str | None = None) -> str | None:
    value = doc.get(key, default)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        return _bad(f"{where}{key!r} is {quoted(value)}, not a string",
                    None if optional else default or "?")
    return value


def _digest(value: object, what: str, *, tree: bool = True) -> str:
    if not isinstance(value, str) or not (_DIGEST if tree else _SHA256).fullmatch(value):
        return _bad(f"{what} is {quoted(value)}, not an object digest (64 lowercase hex digits"
                    + (", then .dir for a directory)" if tree else ")"),
                    value if isinstance(value, str) else "?")
    return value


def _number(doc: Mapping[str, Any], key: str) -> float | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _bad(f"{key!r} is {quoted(value)}, not a number", None)
    return float(value)


def _byte_count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _byte_counts(value: object) -> dict[str, int]:
    counts = value.items() if isinstance(value, Mapping) else ()
    return {str(k): n for k, v in counts if (n := _byte_count(v)) is not None}


@dataclass(frozen=True)
class Output:
    """One output of the run: a file (``sha256`` of its bytes) or a tree (``sha256`` of its
    manifest, ending ``.dir``, with ``files``: relative path -> sha256). ``size`` (a file's
    bytes) and ``sizes`` (a tree's, by relative path) are there when the writer recorded them;
    a value that is not a byte count reads as absent."""

    path: str
    sha256: str
    kind: str = "out"
    stage: str | None = None
    files: Mapping[str, str] | None = None
    size: int | None = None
    sizes: Mapping[str, int] = field(default_factory=dict)

    @property
    def is_tree(self) -> bool:
        return self.sha256.endswith(TREE_SUFFIX)

    @classmethod
    def from_json(cls, path: str, doc: object) -> Output:
        where = f"outputs[{quoted(path)}]"
        if not isinstance(doc, Mapping):
            raise RecordError(f"{where} is {quoted(doc)}, not a JSON object")
        files = doc.get("files")
        if files is not None and not isinstance(files, Mapping):
            files = _bad(f"{where}.files is not a JSON object", None)
        if files is not None:
            files = {str(k): _digest(v, f"{where}.files[{quoted(k)}]", tree=False)
                     for k, v in files.items()}
        return cls(path=path, sha256=_digest(doc.get("sha256"), f"{where}.sha256"),
                   kind=str(doc.get("kind") or "out"),
                   stage=_str(doc, "stage", where=where + ".", optional=True), files=files,
                   size=_byte_count(doc.get("size")), sizes=_byte_counts(doc.get("sizes")))


@dataclass(frozen=True)
class StageRun:
    """One stage as the run saw it."""

    name: str
    status: str
    cmd: str | None = None
    signature: str | None = None
    error: str | None = None
    duration_s: float | None = None
    deps: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    outs: Mapping[str, str] = field(default_factory=dict)
    produced_by_run: str | None = None
    runtime: Mapping[str, Any] = field(default_factory=dict)
    """What the stage reported of its process (e.g. ``cpu_dispatch``); a value that is not an
    object reads as empty, as readers judge its parts one by one."""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def came_from_cache(self) -> bool:
        return self.status in ("cached", "restored")

    @classmethod
    def from_json(cls, index: int, doc: object) -> StageRun:
        where = f"stages[{index}]."
        if not isinstance(doc, Mapping):
            raise RecordError(f"stages[{index}] is {quoted(doc)}, not a JSON object")
        return cls(
            name=str(_str(doc, "name", where=where)), status=str(_str(doc, "status", where=where)),
            cmd=_str(doc, "cmd", where=where, optional=True),
            signature=_str(doc, "signature", where=where, optional=True),
            error=_str(doc, "error", where=where, optional=True),
            duration_s=_number(doc, "duration_s"),
            deps=dict(_map(doc, "deps", where=where)), params=dict(_map(doc, "params", where=where)),
            outs=dict(_map(doc, "outs", where=where)),
            produced_by_run=_str(doc, "produced_by_run", where=where, optional=True),
            runtime=runtime if isinstance(runtime := doc.get("runtime"), Mapping) else {},
            raw=doc)


@dataclass(frozen=True)
class ModelRef:
    path: str
    sha256: str


@dataclass(frozen=True)
class GitFacts:
    """Where the workspace stood in git (None fields: not known, or before the first commit)."""

    commit: str | None = None
    dirty: bool | None = None
    branch: str | None = None
    root: str | None = None  # the repository's top folder on the machine that ran
    subdir: str = "."  # the workspace's folder inside the repository
    changed: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunRecord:
    """A run record; see the module's docstring. ``doc`` is the JSON it came from."""

    id: str
    kind: str
    status: str
    started_at: str | None
    finished_at: str | None
    duration_s: float | None
    seed: int | None
    determinism: str
    workspace: str | None
    outputs: Mapping[str, Output]
    deps: Mapping[str, str]
    metrics: Mapping[str, Mapping[str, Any]]
    stages: tuple[StageRun, ...]
    model: ModelRef | None
    git: GitFacts | None
    params: Mapping[str, Any]
    config: Mapping[str, Any]
    env: Mapping[str, Any]
    datasets: Mapping[str, Mapping[str, Any]] | None
    data: Mapping[str, str]
    runtime: Mapping[str, Any]
    options: Mapping[str, Any]
    reproduces: str | None
    interrupted: Mapping[str, Any] | None
    doc: Mapping[str, Any] = field(repr=False, compare=False)

    # ------------------------------------------------------------------ reading

    @classmethod
    def from_json(cls, doc: object, *, lenient: bool = False) -> RunRecord:
        """Validate ``doc`` (a parsed JSON document) into a record; :class:`RecordError`
        names what does not fit. ``lenient``: never raise (see the module's docstring)."""
        token = _LENIENT.set(lenient)
        try:
            return cls._read(doc)
        finally:
            _LENIENT.reset(token)

    @classmethod
    def _read(cls, doc: object) -> RunRecord:
        if not isinstance(doc, Mapping):
            doc = _bad(f"is {quoted(doc)}, not a JSON object", {})
        schema = doc.get("schema", RECORD_SCHEMA)
        if schema != RECORD_SCHEMA:
            _bad(f"has the schema {quoted(schema)}, not {RECORD_SCHEMA} (a record of another "
                 "version of gha-mlops?)", None)
        seed = doc.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            seed = _bad(f"'seed' is {quoted(seed)}, not an integer", None)
        return cls(
            id=str(_str(doc, "id")), kind=str(_str(doc, "kind", default="run")),
            status=str(_str(doc, "status", default="unknown")),
            started_at=_str(doc, "started_at", optional=True),
            finished_at=_str(doc, "finished_at", optional=True),
            duration_s=_number(doc, "duration_s"), seed=seed,
            determinism=str(_str(doc, "determinism", default="native")),
            workspace=_str(doc, "workspace", optional=True),
            outputs={p: Output.from_json(p, o) for p, o in _objects(_map(doc, "outputs"))},
            deps={d: _digest(h, f"deps[{quoted(d)}]") for d, h in _map(doc, "deps").items()},
            metrics=_metrics(doc), stages=_stages(doc), model=_model(doc), git=_git(doc),
            params=_map(doc, "params"), config=_map(doc, "config"), env=_map(doc, "env"),
            datasets=_map(doc, "datasets") if doc.get("datasets") is not None else None,
            data=dict(_map(doc, "data")), runtime=_map(doc, "runtime"),
            options=_map(doc, "options"),
            reproduces=_str(doc, "reproduces", optional=True),
            interrupted=_map(doc, "interrupted") if doc.get("interrupted") is not None else None,
            doc=doc)

    @classmethod
    def coerce(cls, record: RunRecord | Mapping[str, Any], *, lenient: bool = False
               ) -> RunRecord:
        """``record`` itself, or the JSON document ``record`` read by :meth:`from_json`."""
        return record if isinstance(record, RunRecord) else cls.from_json(record,
                                                                          lenient=lenient)

    def to_json(self) -> dict[str, Any]:
        """The record as JSON (a deep copy of the document it was read from)."""
        return copy.deepcopy(dict(self.doc))

    # ------------------------------------------------------------------ facts

    def object_digests(self) -> list[str]:
        """Every object the record names (deps and outputs): roots for garbage collection."""
        return [*self.deps.values(), *(o.sha256 for o in self.outputs.values())]

    def flat_metrics(self) -> dict[str, Any]:
        """Every metric of every metrics file, later files winning."""
        out: dict[str, Any] = {}
        for values in self.metrics.values():
            out.update(values)
        return out

    @property
    def param_values(self) -> Mapping[str, Any]:
        values = self.params.get("values")
        return values if isinstance(values, Mapping) else {}

    @property
    def overrides(self) -> Mapping[str, Any]:
        values = self.params.get("overrides")
        return values if isinstance(values, Mapping) else {}

    def stage(self, name: str) -> StageRun | None:
        return next((s for s in self.stages if s.name == name), None)

    def summary(self) -> dict[str, Any]:
        """The line of ``index.json`` for this run."""
        return summary_of(self.doc)


def _metrics(doc: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for path, values in _map(doc, "metrics").items():
        if isinstance(values, Mapping):
            out[str(path)] = values
        else:
            _bad(f"metrics[{quoted(path)}] is {quoted(values)}, not a JSON object", None)
    return out


def _stages(doc: Mapping[str, Any]) -> tuple[StageRun, ...]:
    stages = doc.get("stages") or []
    if not isinstance(stages, list):
        stages = _bad(f"'stages' is {quoted(stages)}, not a list", [])
    lenient = _LENIENT.get()
    return tuple(StageRun.from_json(i, s) for i, s in enumerate(stages)
                 if not lenient or isinstance(s, Mapping))


def _model(doc: Mapping[str, Any]) -> ModelRef | None:
    model = doc.get("model")
    if model is None:
        return None
    if not isinstance(model, Mapping):
        return _bad(f"'model' is {quoted(model)}, not a JSON object", None)
    return ModelRef(path=str(_str(model, "path", where="model.")),
                    sha256=_digest(model.get("sha256"), "model.sha256", tree=False))


def _git(doc: Mapping[str, Any]) -> GitFacts | None:
    git = doc.get("git")
    if git is None:
        return None
    if not isinstance(git, Mapping):
        return _bad(f"'git' is {quoted(git)}, not a JSON object", None)
    dirty = git.get("dirty")
    changed = git.get("changed") or []
    if not isinstance(changed, list):
        changed = _bad(f"'git.changed' is {quoted(changed)}, not a list", [])
    return GitFacts(commit=_str(git, "commit", where="git.", optional=True),
                    dirty=dirty if isinstance(dirty, bool) else None,
                    branch=_str(git, "branch", where="git.", optional=True),
                    root=_str(git, "root", where="git.", optional=True),
                    subdir=str(_str(git, "subdir", where="git.", default=".")),
                    changed=tuple(str(c) for c in changed))
