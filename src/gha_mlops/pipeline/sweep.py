"""Parameter sweeps: a grid of params values becomes a GitHub Actions matrix of *legs* (one
pipeline run each, with ``gha-mlops run --set KEY=VALUE`` overrides), and the legs' run
records are ranked by one metric to select the best.

The decisions are pure: :func:`plan_sweep` takes a parsed :class:`Grid`, :func:`select_best`
the records that :func:`find_records` read. Errors name the grid (file, key, line) or the
metric, and say what to change.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gha_mlops.config._yaml import (
    Located,
    YamlLimitError,
    display,
    keypath,
    load_yaml,
    parse_yaml,
    type_name,
)
from gha_mlops.errors import ConfigError, GhaMlopsError, UsageError
from gha_mlops.pipeline.records import RECORD_SCHEMA

MAX_MATRIX_LEGS = 256
"""GitHub Actions runs at most this many jobs from one matrix."""

INCLUDE = "include"
"""The grid key that lists explicit legs (so no params key can be called ``include``)."""

_MAX_ID = 60
_MAX_ID_PART = 24
_KEY_PART = re.compile(r"^[^\s=]+$")
_EXPONENT_STRING = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
_GRID_EXAMPLE = "`train.lr: [0.01, 0.001]`"


# --------------------------------------------------------------------------- values


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (``1``, ``1.0`` and ``True`` differ)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _yaml_reads(text: str) -> Any:
    """What an override string from a run record reads as (bounded: records come from
    artifacts, so an alias bomb there reads as unreadable, not as a gigabyte)."""
    import yaml

    try:
        return load_yaml(text)
    except (yaml.YAMLError, YamlLimitError):
        return _Unreadable


class _Unreadable:
    """What :func:`_yaml_reads` returns for text YAML cannot parse (equal to no value)."""


def render_value(value: Any) -> str:
    """``value`` as the VALUE of ``--set KEY=VALUE``: one line that ``yaml.safe_load`` reads
    back as the same value of the same type (``'0.01'`` stays a string, ``1`` an int).

    Raises ``ValueError`` for a value that cannot be written so.
    """
    import yaml

    if isinstance(value, str) and _EXPONENT_STRING.match(value):
        # PyYAML reads 1e-3 as a string and writes it unquoted; YAML 1.2 reads a number.
        return f"'{value}'"
    text = yaml.safe_dump(value, default_flow_style=True, width=2**31 - 1,
                          allow_unicode=True, sort_keys=False)
    text = text.removesuffix("\n...\n").rstrip("\n")
    if "\n" not in text and _same(_yaml_reads(text), value):
        return text
    text = json.dumps(value, ensure_ascii=False)  # a string with line breaks, escaped
    if "\n" not in text and _same(_yaml_reads(text), value):
        return text
    raise ValueError(f"{value!r} cannot be written on one line so that YAML reads it back")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


# --------------------------------------------------------------------------- the grid


@dataclass(frozen=True)
class Grid:
    """A parsed grid document and where it came from, to place errors.

    ``source`` names it in messages (``sweep.yaml``, ``--grid-json``); ``file`` is the path
    for annotations (None for inline JSON); ``text`` locates keys by line."""

    document: Any
    source: str
    file: str | None
    text: bytes
    is_yaml: bool = False


def load_grid_file(path: Path) -> Grid:
    """Read a grid from a YAML or JSON file (by suffix: ``.json`` is read as JSON)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"no grid file at {display(path)}",
                         hint=f"write one, e.g. {_GRID_EXAMPLE}, or pass --grid-json") from None
    except OSError as err:
        raise UsageError(f"cannot read {display(path)}: {err.strerror}",
                         file=display(path)) from err
    if path.suffix.lower() == ".json":
        doc = _parse_json(data.decode("utf-8", "replace"), display(path), display(path))
        return Grid(doc, display(path), display(path), data)
    return Grid(parse_yaml(path, data), display(path), display(path), data, is_yaml=True)


def parse_grid_json(text: str) -> Grid:
    """A grid given inline (``--grid-json``): JSON, or else YAML, since a workflow input that
    holds the grid is often written as YAML (``grid: |`` and a block mapping)."""
    try:
        return Grid(_parse_json(text, "--grid-json", None), "--grid-json", None, text.encode())
    except ConfigError as err:
        json_error = err
    try:
        doc = parse_yaml(Path("--grid-json"), text.encode())
    except ConfigError as err:
        if text.lstrip().startswith(("{", "[")):  # meant as JSON: JSON's complaint is the one
            raise json_error from None
        raise ConfigError(f"--grid-json is not JSON, and {err.message}",
                          hint=err.hint, notes=err.notes) from None
    if not isinstance(doc, dict):
        raise json_error
    return Grid(doc, "--grid-json", None, text.encode(), is_yaml=True)


def _parse_json(text: str, source: str, file: str | None) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise ConfigError(f"{source}: duplicate key {key!r}",
                                  hint="a key may appear only once in a mapping", file=file)
            out[key] = value
        return out

    try:
        return json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"{source} is not valid JSON: {err.msg} (line {err.lineno}, column {err.colno})",
            hint='a grid is an object of params keys to lists, e.g. {"train.lr": [0.01, 0.001]}',
            file=file, line=err.lineno if file else None) from None


@dataclass(frozen=True)
class Leg:
    """One run of the sweep: its id and the params it overrides, in grid order."""

    id: str
    overrides: tuple[tuple[str, Any], ...]

    @property
    def set_lines(self) -> str:
        """``KEY=VALUE`` lines, one per override, for ``gha-mlops run --set``."""
        return "\n".join(f"{key}={render_value(value)}" for key, value in self.overrides)


@dataclass(frozen=True)
class SweepPlan:
    """The legs of a sweep, in order: the grid's product first, then ``include:``."""

    legs: tuple[Leg, ...]
    warnings: tuple[str, ...] = ()

    def matrix(self) -> dict[str, list[dict[str, str]]]:
        """The value of ``strategy.matrix`` (through ``fromJSON``)."""
        return {"include": [{"leg": leg.id, "set": leg.set_lines} for leg in self.legs]}


class _Checker:
    """Problems in a grid become ConfigErrors that name the source, the key and the line."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.where = Located(grid.text)
        self.warnings: list[str] = []

    def error(self, loc: tuple[str | int, ...], message: str, hint: str | None = None,
              *, key: bool = False) -> ConfigError:
        line, column = self.where.find(loc, key=key) if loc else (None, None)
        shown = loc[:-1] if key else loc  # a bad key is named by the message itself
        where = f"{keypath(shown)}: " if shown else ""
        prefix = "" if self.grid.file else f"{self.grid.source}: "
        return ConfigError(f"{prefix}{where}{message}", hint=hint, file=self.grid.file,
                           line=line if self.grid.file else None,
                           column=column if self.grid.file else None)

    def key(self, key: Any, loc: tuple[str | int, ...]) -> str:
        if not isinstance(key, str):
            raise self.error(loc, f"a params key must be a string, got {type_name(key)}",
                             "write the dotted params key, e.g. `train.lr`", key=True)
        if not all(_KEY_PART.match(part) for part in key.split(".")):
            raise self.error(loc, f"{key!r} is not a dotted params key",
                             "use the key as in params.yaml, its parts joined by dots, without "
                             "spaces or '=' (e.g. `train.lr`)", key=True)
        return key

    def value(self, value: Any, loc: tuple[str | int, ...]) -> None:
        def check(v: Any) -> str | None:
            if v is None or isinstance(v, (bool, int, str)):
                return None
            if isinstance(v, float):
                return None if math.isfinite(v) else f"{v} is not a finite number"
            if isinstance(v, list):
                return next((p for p in map(check, v) if p), None)
            if isinstance(v, dict):
                if not all(isinstance(k, str) for k in v):
                    return "a mapping with keys that are not strings"
                return next((p for p in map(check, v.values()) if p), None)
            return f"{type_name(v)} is not a parameter value"

        problem = check(value)
        if problem is None:
            try:
                render_value(value)
            except ValueError:
                problem = f"{value!r} cannot be passed as --set KEY=VALUE and read back the same"
        if problem:
            raise self.error(loc, problem, "params are strings, numbers, booleans, null, or "
                             "lists and mappings of them; quote a value to make it a string")
        if self.grid.is_yaml and isinstance(value, str) and _EXPONENT_STRING.match(value):
            # PyYAML reads 1e-3 as a string (a float needs a dot and a signed exponent), as it
            # reads params.yaml: almost always a number was meant.
            self.warnings.append(
                f"{self.grid.source}: {keypath(loc)}: {value!r} is a string, not a number, "
                f"to YAML 1.1 (PyYAML); if a number is meant, write "
                f"{render_value(float(value))}")


def plan_sweep(grid: Grid, *, max_legs: int | None = None) -> SweepPlan:
    """The legs of ``grid``: the cartesian product of its lists (the first key varies
    slowest), then the explicit legs of ``include:``.

    Raises :class:`ConfigError` for a grid that is not a mapping of dotted keys to non-empty
    lists, an ``include:`` that is not a list of mappings, values that cannot be passed
    through ``--set`` unchanged, duplicate legs, and more legs than GitHub's matrix limit
    (256) or ``max_legs``.
    """
    check = _Checker(grid)
    doc = grid.document
    if not isinstance(doc, dict) or not doc:
        got = "an empty mapping" if isinstance(doc, dict) else type_name(doc)
        raise check.error((), f"a grid must be a mapping of params keys to lists of values, "
                          f"got {got}", f"e.g. {_GRID_EXAMPLE}, `train.epochs: [5, 10]`")
    axes: list[tuple[str, list[Any]]] = []
    for raw_key, values in doc.items():
        if raw_key == INCLUDE:
            continue
        key = check.key(raw_key, (raw_key,))
        if isinstance(values, dict):
            raise check.error((key,), "expected a list of values, got a mapping",
                              f"name each parameter with a dotted key, e.g. "
                              f"`{key}.NAME: [1, 2]`")
        if not isinstance(values, list):
            raise check.error((key,), f"expected a list of values, got {type_name(values)}",
                              f"a grid key takes a list: `{key}: [...]` (a single value "
                              "in brackets keeps it fixed)")
        if not values:
            raise check.error((key,), "an empty list makes no legs",
                              "give at least one value, or remove the key")
        for i, value in enumerate(values):
            check.value(value, (key, i))
            first = next(j for j, other in enumerate(values) if _same(other, value))
            if first != i:
                raise check.error((key, i), f"the value {render_value(value)} is listed twice "
                                  f"(items {first} and {i})", "remove one of them")
        axes.append((key, values))
    explicit = _includes(check, doc.get(INCLUDE)) if INCLUDE in doc else []

    product = math.prod(len(v) for _, v in axes) if axes else 0
    total = product + len(explicit)
    if total > MAX_MATRIX_LEGS or (max_legs is not None and total > max_legs):
        sizes = " x ".join(str(len(v)) for _, v in axes) or "0"
        limit = (f"GitHub runs at most {MAX_MATRIX_LEGS} jobs from one matrix"
                 if total > MAX_MATRIX_LEGS else f"--max-legs is {max_legs}")
        raise check.error((), f"the grid makes {total} legs ({sizes} combinations + "
                          f"{len(explicit)} included) and {limit}",
                          "remove values, or split the sweep into several grids")
    legs: list[tuple[tuple[str, Any], ...]] = []
    if axes:
        keys = [k for k, _ in axes]
        legs += [tuple(zip(keys, combo, strict=True))
                 for combo in itertools.product(*(v for _, v in axes))]
    seen: dict[str, int] = {_leg_key(leg): n for n, leg in enumerate(legs, 1)}
    for j, leg in enumerate(explicit):
        n = product + j + 1
        earlier = seen.setdefault(_leg_key(leg), n)
        if earlier != n:
            raise check.error((INCLUDE, j), f"this leg sets the same values as leg {earlier} "
                              f"({_describe(legs[earlier - 1])})",
                              "remove it: every leg must differ")
        legs.append(leg)
    return SweepPlan(tuple(Leg(i, leg) for i, leg in zip(_leg_ids(legs), legs, strict=True)),
                     tuple(check.warnings))


def _includes(check: _Checker, items: Any) -> list[tuple[tuple[str, Any], ...]]:
    if not isinstance(items, list):
        raise check.error((INCLUDE,), f"expected a list of legs, got {type_name(items)}",
                          "each item is a mapping of params keys to values, e.g. "
                          "`include: [{train.lr: 0.1, train.epochs: 3}]`")
    if not items:
        raise check.error((INCLUDE,), "an empty list makes no legs",
                          "list at least one leg, or remove `include:`")
    legs = []
    for j, item in enumerate(items):
        if not isinstance(item, dict) or not item:
            got = "an empty mapping" if isinstance(item, dict) else type_name(item)
            raise check.error((INCLUDE, j), f"expected a mapping of params keys to values, "
                              f"got {got}", "e.g. `{train.lr: 0.1, train.epochs: 3}`")
        leg = []
        for raw_key, value in item.items():
            key = check.key(raw_key, (INCLUDE, j, raw_key))
            check.value(value, (INCLUDE, j, key))
            leg.append((key, value))
        legs.append(tuple(leg))
    return legs


def _leg_key(leg: Sequence[tuple[str, Any]]) -> str:
    return _canonical(dict(sorted(leg)))


def _describe(leg: Sequence[tuple[str, Any]]) -> str:
    return ", ".join(f"{k}={render_value(v)}" for k, v in leg)


def _slug(text: str) -> str:
    """Only characters that are safe in artifact names, job names and paths."""
    slug = re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9._-]", "_", text)).strip("_")
    return slug[:_MAX_ID_PART] or "_"


def _short_names(keys: Sequence[str]) -> dict[str, str]:
    """The last part of each key (``lr`` for ``train.lr``), longer where two would clash."""
    names = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            name = ".".join(parts[-n:])
            if sum(1 for other in keys if other == name or other.endswith("." + name)) == 1:
                break
        names[key] = _slug(name.replace(".", "_"))
    return names


def _leg_ids(legs: Sequence[Sequence[tuple[str, Any]]]) -> list[str]:
    """``leg-01-lr0.01-epochs5``: a number (unique, in plan order) and the values of the keys
    that vary between legs, as far as they fit in 60 characters of ``[A-Za-z0-9._-]``."""
    width = max(2, len(str(len(legs))))
    keys = list(dict.fromkeys(k for leg in legs for k, _ in leg))
    values: dict[str, set[str]] = {k: set() for k in keys}
    for leg in legs:
        given = dict(leg)
        for k in keys:
            values[k].add(_canonical(given[k]) if k in given else "\0absent")
    varying = [k for k in keys if len(values[k]) > 1] or keys
    names = _short_names(varying)
    ids = []
    for n, leg in enumerate(legs, 1):
        given = dict(leg)
        ident = f"leg-{n:0{width}d}"
        for key in varying:
            if key not in given:
                continue
            value = given[key]
            part = names[key] + _slug(value if isinstance(value, str) else render_value(value))
            if len(ident) + 1 + len(part) <= _MAX_ID:
                ident += "-" + part
        ids.append(ident)
    return ids


# --------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class FoundRecord:
    """A JSON file found among the legs' artifacts: a run record, or why it is unusable.

    ``directory`` is the artifact directory it was found in (``run-<leg>``), ``""`` if none.
    """

    path: str
    directory: str
    record: Mapping[str, Any] | None
    problem: str | None = None

    @property
    def leg(self) -> str:
        if self.directory:
            return self.directory.removeprefix("run-") or self.directory
        return str((self.record or {}).get("id") or Path(self.path).stem)


def find_records(paths: Sequence[Path]) -> list[FoundRecord]:
    """Run records in ``paths``: files, or directories searched recursively for ``*.json``.

    Under a directory, a record's leg directory is the first directory below it (where
    ``actions/download-artifact`` puts each artifact); for a file given directly, the nearest
    parent named ``run-*``. JSON files that are not run records are ignored; files that are
    not valid JSON are returned with a problem. Raises :class:`UsageError` when none is found.
    """
    found: list[FoundRecord] = []
    for root in paths:
        if root.is_file():
            parents = [p.name for p in root.absolute().parents if p.name.startswith("run-")]
            files = [(root, parents[0] if parents else "")]
        else:
            files = []
            for path in sorted(root.rglob("*.json")):
                rel = path.relative_to(root).parts
                files.append((path, rel[0] if len(rel) > 1 else ""))
        for path, directory in files:
            try:
                data = json.loads(path.read_bytes())
            except ValueError:
                found.append(FoundRecord(str(path), directory, None, "not valid JSON"))
                continue
            except OSError as err:
                found.append(FoundRecord(str(path), directory, None,
                                         f"unreadable: {err.strerror}"))
                continue
            if isinstance(data, dict) and data.get("schema") == RECORD_SCHEMA:
                found.append(FoundRecord(str(path), directory, data))
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


def _overrides_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record's ``params.overrides`` as a mapping (``KEY=VALUE`` strings are accepted)."""
    raw = (record.get("params") or {}).get("overrides") or {}
    if isinstance(raw, Mapping):
        return dict(raw)
    if isinstance(raw, list):
        pairs = [str(item).split("=", 1) for item in raw]
        return {p[0]: _yaml_reads(p[1]) if len(p) > 1 else None for p in pairs}
    return {}


def _natural(text: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", text) if p)


def resolve_metric(metric: str, records: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """``(file, key)`` for ``FILE:KEY``, or for ``KEY`` when exactly one metrics file of the
    records holds it. Raises :class:`UsageError` when it is ambiguous or in no record, naming
    the metrics that exist."""
    available: dict[str, set[str]] = {}
    for record in records:
        for file, values in (record.get("metrics") or {}).items():
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


def select_best(found: Sequence[FoundRecord], metric: str, direction: str) -> Selection:
    """Rank the legs' newest successful runs by ``metric`` (``max`` or ``min``): ties go to
    the earlier leg (natural order of leg ids, so ``leg-2`` before ``leg-10``).

    A leg is skipped, with a reason, when its run did not succeed, its record lacks the metric
    or the value is not a number; older records of the same leg and unreadable files are
    skipped too. Raises :class:`GhaMlopsError` when no leg can be ranked.
    """
    if direction not in ("max", "min"):
        raise ValueError(f"direction must be max or min, not {direction!r}")
    skipped: list[Candidate] = []
    by_leg: dict[str, list[FoundRecord]] = {}
    for f in found:
        if f.record is None:
            skipped.append(Candidate(f.leg, f.directory, f.path, None, None,
                                     reason=f.problem or "not a run record"))
        elif f.record.get("kind", "run") != "run":
            skipped.append(_candidate(f, reason=f"a {f.record.get('kind')} record, not a run"))
        else:
            by_leg.setdefault(f.leg, []).append(f)
    chosen: list[FoundRecord] = []
    for items in by_leg.values():
        items = sorted(items, key=lambda f: (str((f.record or {}).get("started_at") or ""),
                                             str((f.record or {}).get("id") or ""), f.path))
        newest = items[-1]
        chosen.append(newest)
        skipped += [_candidate(f, reason=f"superseded by the newer record "
                               f"{(newest.record or {}).get('id')} of the same leg")
                    for f in items[:-1]]
    file, key = resolve_metric(metric, [f.record for f in chosen if f.record is not None])
    ranked: list[Candidate] = []
    for f in chosen:
        record = f.record or {}
        status = record.get("status")
        if status != "succeeded":
            failed = [s.get("name") for s in record.get("stages") or []
                      if s.get("status") == "failed"]
            why = f"the run {status}" + (f" (stage {failed[0]!r})" if failed else "")
            skipped.append(_candidate(f, reason=why))
            continue
        values = (record.get("metrics") or {}).get(file) or {}
        value = values.get(key) if isinstance(values, Mapping) else None
        if value is None:
            skipped.append(_candidate(f, reason=f"its record has no metric {file}:{key}"))
        elif isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            skipped.append(_candidate(f, reason=f"{file}:{key} is {value!r}, not a number"))
        else:
            ranked.append(_candidate(f, value=value))
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


def _candidate(f: FoundRecord, *, value: int | float | None = None,
               reason: str | None = None) -> Candidate:
    record = f.record or {}
    return Candidate(f.leg, f.directory, f.path, record.get("id"), record.get("status"),
                     _overrides_of(record), value, reason)
