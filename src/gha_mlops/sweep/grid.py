"""A sweep's grid as read: from a YAML or JSON file (``--grid``) or inline (``--grid-json``),
kept with its source text so that later errors can name the line of a key."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gha_mlops.config._yaml import display, parse_yaml
from gha_mlops.errors import ConfigError, UsageError

GRID_EXAMPLE = "`train.lr: [0.01, 0.001]`"


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


def load_grid(grid_file: Path | None, grid_json: str | None) -> Grid:
    """The grid given by exactly one of ``--grid FILE`` and ``--grid-json JSON``; a
    :class:`UsageError` when neither or both are given."""
    if (grid_file is None) == (grid_json is None):
        raise UsageError("give the grid with exactly one of --grid FILE and --grid-json JSON",
                         hint="e.g. gha-mlops sweep plan --grid-json "
                         "'{\"train.lr\": [0.01, 0.001]}'")
    return load_grid_file(grid_file) if grid_file is not None else parse_grid_json(grid_json or "")


def load_grid_file(path: Path) -> Grid:
    """Read a grid from a YAML or JSON file (by suffix: ``.json`` is read as JSON)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"no grid file at {display(path)}",
                         hint=f"write one, e.g. {GRID_EXAMPLE}, or pass --grid-json") from None
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
