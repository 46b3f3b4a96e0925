"""Planning a sweep: a grid of params values becomes the legs of a GitHub Actions matrix (one
pipeline run each, with ``gha-mlops run --set KEY=VALUE`` overrides).

The decision is pure: :func:`plan_sweep` takes a parsed :class:`~gha_mlops.sweep.grid.Grid`.
Errors name the grid (file, key, line) and say what to change.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gha_mlops.config._yaml import Located, keypath, type_name
from gha_mlops.errors import ConfigError
from gha_mlops.sweep.grid import GRID_EXAMPLE, Grid, load_grid
from gha_mlops.sweep.values import EXPONENT_STRING, canonical, render_value, same

MAX_MATRIX_LEGS = 256
"""GitHub Actions runs at most this many jobs from one matrix."""

INCLUDE = "include"
"""The grid key that lists explicit legs (so no params key can be called ``include``)."""

_MAX_ID = 60
_MAX_ID_PART = 24
_KEY_PART = re.compile(r"^[^\s=]+$")


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
        if not all(_KEY_PART.fullmatch(part) for part in key.split(".")):
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
        if self.grid.is_yaml and isinstance(value, str) and EXPONENT_STRING.fullmatch(value):
            # PyYAML reads 1e-3 as a string (a float needs a dot and a signed exponent), as it
            # reads params.yaml: almost always a number was meant.
            self.warnings.append(
                f"{self.grid.source}: {keypath(loc)}: {value!r} is a string, not a number, "
                f"to YAML 1.1 (PyYAML); if a number is meant, write "
                f"{render_value(float(value))}")


def plan_grid(grid_file: Path | None, grid_json: str | None, *,
         max_legs: int | None = None) -> SweepPlan:
    """``sweep plan``: the legs of the grid given by exactly one of ``--grid FILE`` and
    ``--grid-json JSON`` (see :func:`~gha_mlops.sweep.grid.load_grid`, :func:`plan_sweep`)."""
    return plan_sweep(load_grid(grid_file, grid_json), max_legs=max_legs)


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
                          f"got {got}", f"e.g. {GRID_EXAMPLE}, `train.epochs: [5, 10]`")
    axes = [_axis(check, raw_key, values) for raw_key, values in doc.items()
            if raw_key != INCLUDE]
    explicit = _includes(check, doc.get(INCLUDE)) if INCLUDE in doc else []
    # The size is checked before the product is built: a grid of a few lines can ask for more.
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


def _axis(check: _Checker, raw_key: Any, values: Any) -> tuple[str, list[Any]]:
    """One key of the grid and its values, checked: a dotted key, a non-empty list, each
    value passable through ``--set``, none listed twice."""
    key = check.key(raw_key, (raw_key,))
    if isinstance(values, dict):
        raise check.error((key,), "expected a list of values, got a mapping",
                          f"name each parameter with a dotted key, e.g. `{key}.NAME: [1, 2]`")
    if not isinstance(values, list):
        raise check.error((key,), f"expected a list of values, got {type_name(values)}",
                          f"a grid key takes a list: `{key}: [...]` (a single value "
                          "in brackets keeps it fixed)")
    if not values:
        raise check.error((key,), "an empty list makes no legs",
                          "give at least one value, or remove the key")
    for i, value in enumerate(values):
        check.value(value, (key, i))
        first = next(j for j, other in enumerate(values) if same(other, value))
        if first != i:
            raise check.error((key, i), f"the value {render_value(value)} is listed twice "
                              f"(items {first} and {i})", "remove one of them")
    return key, values


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
    return canonical(dict(sorted(leg)))


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
            values[k].add(canonical(given[k]) if k in given else "\0absent")
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
