"""The params file: read it, keep only what JSON can hold, and check the keys stages read."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gha_mlops.config._yaml import Loc, Located, Problems, display, keypath, parse_yaml, type_name
from gha_mlops.config.model import param_value
from gha_mlops.errors import ConfigError


def read_optional(path: Path) -> bytes | None:
    """The bytes of ``path``, or None if it does not exist."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise ConfigError(f"cannot read {display(path)}: {err.strerror}",
                          file=display(path)) from err


def load_params(
    problems: Problems, params_path: Path, params_bytes: bytes | None,
    stages: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    if params_bytes is None:
        users = [s for s in stages if s["params"]]
        if users:
            name = users[0]["name"]
            keys = ", ".join(k for s in users for k in s["params"])
            problems.add(("stages", name, "params"),
                         f"reads params, but the params file {display(params_path)} does "
                         "not exist",
                         f"create {params_path.name} with the keys the stages read ({keys}), "
                         "or set the top-level `params:` to the right file")
            problems.raise_if_any()
        return {}
    data = parse_yaml(params_path, params_bytes)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"the params file must hold a mapping of parameters, got {type_name(data)}",
            hint="write it as sections of `key: value`, e.g. `train: {lr: 0.01, epochs: 5}`",
            file=display(params_path), line=1)
    bad: list[tuple[Loc, str]] = []
    plain: dict[str, Any] = _plain_params(data, (), bad)
    if bad:
        where = Located(params_bytes)
        loc, message = bad[0]
        line, col = where.find(loc)
        notes = [f"{display(params_path)}:{where.find(loc2)[0]}: {keypath(loc2)}: {msg2}"
                 for loc2, msg2 in bad[1:]]
        raise ConfigError(
            f"{keypath(loc)}: {message}",
            hint="params must be strings, numbers, booleans, lists or mappings; put the value "
            "in quotes to make it a string",
            file=display(params_path), line=line, column=col, notes=notes)
    return plain


def _plain_params(value: Any, loc: Loc, bad: list[tuple[Loc, str]]) -> Any:
    """``value`` as JSON would round-trip it (non-string keys become strings, as in the cache),
    recording in ``bad`` what JSON cannot hold (dates, sets, binary)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if isinstance(k, str):
                name = k
            elif k is None or isinstance(k, (bool, int, float)):
                name = json.dumps(k)
            else:
                bad.append(((*loc, str(k)), f"the key {type_name(k)} is not supported"))
                continue
            out[name] = _plain_params(v, (*loc, name), bad)
        return out
    if isinstance(value, list):
        return [_plain_params(v, (*loc, i), bad) for i, v in enumerate(value)]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    bad.append((loc, f"{type_name(value)} is not supported as a parameter value"))
    return None


def _params_hint(params_file: str, params: Mapping[str, Any], key: str) -> str:
    """A did-you-mean for the first part of ``key`` that is missing, and what exists there."""
    import difflib  # only on an error: a valid load never needs it
    node: Any = params
    parts = key.split(".")
    found: list[str] = []
    for part in parts:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            break
        found.append(part)
    missing = parts[len(found)]
    names = [str(n) for n in node] if isinstance(node, Mapping) else []
    close = difflib.get_close_matches(missing, names, n=1)
    hint = ""
    if close:
        guess = ".".join([*found, close[0], *parts[len(found) + 1:]])
        hint = f"did you mean {guess!r}? "
    if names:
        shown = [".".join([*found, n]) for n in names[:12]]
        more = ", ..." if len(names) > 12 else ""
        where = f"under {'.'.join(found)!r}" if found else "at the top level"
        hint += f"{params_file} has {where}: " + ", ".join(shown) + more
    elif found:
        hint += (f"{'.'.join(found)!r} in {params_file} is {type_name(node)}, "
                 "not a mapping of keys")
    else:
        hint += f"add {key} to {params_file}"
    return hint


def check_params(problems: Problems, params_file: str, params: Mapping[str, Any],
                  stages: Sequence[Mapping[str, Any]]) -> None:
    for st in stages:
        for i, key in enumerate(st["params"]):
            try:
                param_value(params, key)
            except KeyError:
                problems.add(("stages", st["name"], "params", i),
                             f"params key {key!r} does not exist in {params_file}",
                             _params_hint(params_file, params, key))
