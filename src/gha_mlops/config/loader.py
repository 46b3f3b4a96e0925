"""Read ``mlops.yaml`` and its params file into a :class:`Pipeline`, or explain what is wrong.

Validation is done once per distinct (config, params) content: the normalized result is cached
in ``.gha-mlops/tmp/config.json`` keyed by the bytes' hash, so a no-op run neither re-parses
YAML nor imports pydantic. Checks that depend on the file system (a dep that does not exist)
are done on every load.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import posixpath
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gha_mlops import __version__
from gha_mlops._fs import atomic_write_json
from gha_mlops.config.model import Output, OutputKind, Pipeline, Stage, param_value
from gha_mlops.errors import ConfigError

DEFAULT_CONFIG = "mlops.yaml"
STATE_DIR = ".gha-mlops"
_CACHE_FORMAT = 1

Loc = tuple[str | int, ...]


def load_pipeline(config_path: Path, *, overrides: Mapping[str, Any] | None = None) -> Pipeline:
    """Load and validate ``config_path``; the workspace root is its directory.

    Raises :class:`ConfigError` naming the file, the key path and, where the YAML gives one,
    the line, for anything malformed: YAML syntax, unknown keys, wrong types, bad paths,
    duplicate or overlapping outputs, cycles, params keys missing from the params file, and
    dependencies that neither exist nor are produced by a stage.
    """
    config_path = config_path.absolute()
    root = config_path.parent
    try:
        config_bytes = config_path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"no pipeline file at {_display(config_path)}",
            hint="create mlops.yaml (see `gha-mlops demo` for a complete example) "
            "or pass --config PATH",
            file=_display(config_path),
        ) from None
    except OSError as err:
        raise ConfigError(
            f"cannot read {_display(config_path)}: {err.strerror}", file=_display(config_path)
        ) from err

    cache_file = root / STATE_DIR / "tmp" / "config.json"
    params_name, params_bytes = _peek_params(root, config_bytes)
    key = _cache_key(config_bytes, params_name, params_bytes)
    normalized = None if overrides else _read_cache(cache_file, key)
    if normalized is None:
        normalized = _validate(config_path, config_bytes, params_bytes, overrides or {})
        if not overrides and (root / STATE_DIR).is_dir():
            atomic_write_json(cache_file, {"key": key, "format": _CACHE_FORMAT, **normalized})
    pipeline = _build(root, config_path, hashlib.sha256(config_bytes).hexdigest(), normalized)
    _check_deps_exist(pipeline, config_path, config_bytes)
    return pipeline


# --------------------------------------------------------------------------- cache


def _peek_params(root: Path, config_bytes: bytes) -> tuple[str, bytes | None]:
    """The params file name (cheaply, without a YAML parse when possible) and its bytes."""
    name = "params.yaml"
    for raw in config_bytes.splitlines():
        line = raw.decode("utf-8", "replace")
        if line.startswith("params:"):
            value = line.split(":", 1)[1].split("#", 1)[0].strip().strip("'\"")
            if value:
                name = value
            break
    try:
        return name, (root / name).read_bytes()
    except OSError:
        return name, None


def _cache_key(config_bytes: bytes, params_name: str, params_bytes: bytes | None) -> str:
    h = hashlib.sha256()
    h.update(f"{__version__}\0{_CACHE_FORMAT}\0{params_name}\0".encode())
    h.update(config_bytes)
    h.update(b"\0" + (params_bytes if params_bytes is not None else b"\xff-missing"))
    return h.hexdigest()


def _read_cache(cache_file: Path, key: str) -> dict[str, Any] | None:
    try:
        data = json.loads(cache_file.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != key:
        return None
    return data


def _build(root: Path, config_path: Path, sha: str, n: Mapping[str, Any]) -> Pipeline:
    stages = {
        s["name"]: Stage(
            name=s["name"],
            cmd=s["cmd"],
            desc=s.get("desc"),
            deps=tuple(s["deps"]),
            params=tuple(s["params"]),
            outs=tuple(Output(o["path"], o["kind"]) for o in s["outs"]),
            upstream=tuple(s["upstream"]),
        )
        for s in n["stages"]
    }
    return Pipeline(
        root=root,
        config_file=config_path,
        config_sha256=sha,
        seed=n["seed"],
        params_file=n["params_file"],
        params=n["params"],
        env_lock=n["env_lock"],
        stages=stages,
        model=n.get("model"),
    )


# --------------------------------------------------------------------------- validation


class _Located:
    """Key path -> (line, column) of a YAML document, computed only when an error needs it."""

    def __init__(self, text: bytes) -> None:
        self._text = text
        self._root: Any = None
        self._composed = False

    def find(self, loc: Loc, *, key: bool = False) -> tuple[int | None, int | None]:
        import yaml

        if not self._composed:
            self._composed = True
            try:
                self._root = yaml.compose(self._text, Loader=_safe_loader())
            except yaml.YAMLError:
                self._root = None
        node = self._root
        best: tuple[int | None, int | None] = (None, None)
        for i, part in enumerate(loc):
            if node is None:
                break
            best = (node.start_mark.line + 1, node.start_mark.column + 1)
            if isinstance(node, yaml.MappingNode):
                nxt = None
                for k, v in node.value:
                    if k.value == part:
                        last = i == len(loc) - 1
                        nxt = k if (key and last) else v
                        break
                node = nxt
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                node = node.value[part] if part < len(node.value) else None
            else:
                node = None
        if node is not None:
            best = (node.start_mark.line + 1, node.start_mark.column + 1)
        return best


def _safe_loader() -> Any:
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _display(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def _keypath(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "a mapping"}
    for t, name in names.items():
        if type(value) is t:
            shown = repr(value) if t in (bool, int, float, str) else ""
            return f"{name} {shown}".strip() if len(shown) <= 40 else name
    return type(value).__name__


def _parse_yaml(path: Path, data: bytes, what: str) -> Any:
    import yaml

    try:
        return yaml.load(data, Loader=_safe_loader())
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        problem = err.problem or "malformed YAML"
        raise ConfigError(
            f"not valid YAML: {problem}"
            + (f" ({err.context})" if err.context else ""),
            hint="fix the YAML syntax at the line shown (indentation, a missing ':' or quote)",
            file=_display(path),
            line=mark.line + 1 if mark else None,
            column=mark.column + 1 if mark else None,
        ) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} is not valid YAML: {err}", file=_display(path)) from None


class _Problems:
    """Collects every problem in a file, then raises one ConfigError listing them all."""

    def __init__(self, path: Path, text: bytes) -> None:
        self.path = path
        self.where = _Located(text)
        self.items: list[tuple[int | None, int | None, str, str | None]] = []

    def add(self, loc: Loc, message: str, hint: str | None = None, *, key: bool = False) -> None:
        line, col = self.where.find(loc, key=key)
        self.items.append((line, col, f"{_keypath(loc)}: {message}", hint))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        line, col, message, hint = self.items[0]
        notes = []
        for l2, _c2, m2, _h2 in self.items[1:]:
            where = f"{_display(self.path)}:{l2}" if l2 else _display(self.path)
            notes.append(f"{where}: {m2}")
        raise ConfigError(message, hint=hint, file=_display(self.path), line=line, column=col,
                          notes=notes)


def _validate(
    config_path: Path, config_bytes: bytes, params_bytes: bytes | None,
    overrides: Mapping[str, Any],
) -> dict[str, Any]:
    raw = _parse_yaml(config_path, config_bytes, _display(config_path))
    problems = _Problems(config_path, config_bytes)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.add((), f"expected a mapping with a `stages:` key, got {_type_name(raw)}",
                     "see docs/pipeline.md for the format")
        problems.raise_if_any()

    from pydantic import ValidationError

    from gha_mlops.config.schema import STAGE_NAME, ConfigSchema, StageSchema

    try:
        cfg = ConfigSchema.model_validate(raw)
    except ValidationError as err:
        for e in err.errors():
            _pydantic_problem(problems, e, raw)
        problems.raise_if_any()
        raise AssertionError("unreachable") from err

    stages: list[dict[str, Any]] = []
    for name, st in cfg.stages.items():
        if not STAGE_NAME.match(name):
            problems.add(("stages", name), f"stage name {name!r} is not allowed",
                         "use letters, digits, '_', '-' and '.', starting with a letter, digit or '_'",
                         key=True)
        stages.append(_normalize_stage(problems, name, st, StageSchema))
    root = config_path.parent
    env_lock = _norm_path(problems, ("env", "lock"), cfg.env.lock) if cfg.env.lock else None
    if env_lock and not (root / env_lock).is_file():
        problems.add(("env", "lock"), f"the environment lock file {env_lock!r} does not exist",
                     "create it (e.g. `pip freeze > requirements.lock` or `uv pip compile`) "
                     "or remove env.lock")
    params_file = _norm_path(problems, ("params",), cfg.params) or "params.yaml"
    problems.raise_if_any()

    params = _load_params(config_path, problems, root / params_file, params_bytes, stages)
    for key, value in overrides.items():
        _set_dotted(params, key, value)
    _check_params(problems, params_file, params, stages)
    _link_stages(problems, stages)
    model = _norm_path(problems, ("model",), cfg.model) if cfg.model else None
    if model and not any(_overlaps(model, o["path"]) and (model == o["path"] or
                                                          model.startswith(o["path"] + "/"))
                         for st in stages for o in st["outs"]):
        problems.add(("model",), f"{model!r} is not an output of any stage",
                     "name the model file a stage declares in outs (or a file inside one)")
    problems.raise_if_any()
    return {
        "model": model,
        "seed": cfg.seed,
        "params_file": params_file,
        "params": params,
        "env_lock": env_lock,
        "stages": stages,
    }


_PYDANTIC_MESSAGES = {
    "string_type": "expected a string, got {got}",
    "int_type": "expected a whole number, got {got}",
    "list_type": "expected a list, got {got}",
    "dict_type": "expected a mapping, got {got}",
    "model_type": "expected a mapping, got {got}",
    "missing": "this key is required",
    "too_short": "must not be empty",
    "string_too_short": "must not be empty",
}


def _pydantic_problem(problems: _Problems, e: Mapping[str, Any], raw: Any) -> None:
    loc: Loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.endswith("]")))
    # `cmd: str | list[str]` reports one error per union member; name the union once.
    if len(loc) >= 3 and loc[-1] in ("str", "list[str]") and loc[-2] == "cmd":
        loc = loc[:-1]
        if any(item[2].startswith(_keypath(loc) + ":") for item in problems.items):
            return
        value = _dig(raw, loc)
        problems.add(loc, f"expected a command string (or a list of them), got {_type_name(value)}")
        return
    kind = e["type"]
    value = e.get("input")
    if kind == "extra_forbidden":
        parent = loc[:-1]
        allowed = _allowed_keys(parent)
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = (f"did you mean {close[0]!r}? " if close else "") + "allowed keys: " + ", ".join(allowed)
        problems.add(loc, f"unknown key {loc[-1]!r}", hint, key=True)
        return
    if kind == "missing":
        problems.add(loc[:-1] if len(loc) > 1 else loc, f"missing required key {loc[-1]!r}",
                     "see docs/pipeline.md for the format")
        return
    template = _PYDANTIC_MESSAGES.get(kind)
    if template:
        message = template.format(got=_type_name(value))
    else:
        message = str(e.get("msg", "invalid value")).removeprefix("Value error, ")
        message += f" (got {_type_name(value)})"
    problems.add(loc, message)


def _dig(raw: Any, loc: Loc) -> Any:
    node = raw
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _allowed_keys(parent: Loc) -> list[str]:
    from gha_mlops.config.schema import ConfigSchema, EnvSchema, StageSchema

    if not parent:
        model: Any = ConfigSchema
    elif parent == ("env",):
        model = EnvSchema
    else:
        model = StageSchema
    return list(model.model_fields)


def _norm_path(problems: _Problems, loc: Loc, value: str | None) -> str | None:
    if value is None:
        return None
    if "\\" in value:
        problems.add(loc, f"{value!r}: use '/' in paths, not '\\'")
        return None
    if value.startswith("/") or (len(value) > 1 and value[1] == ":"):
        problems.add(loc, f"{value!r} is an absolute path",
                     "paths are relative to the directory of mlops.yaml")
        return None
    norm = posixpath.normpath(value)
    if norm == ".." or norm.startswith("../"):
        problems.add(loc, f"{value!r} points outside the workspace",
                     "paths must stay inside the directory of mlops.yaml")
        return None
    if norm == ".":
        problems.add(loc, "the whole workspace cannot be a path here")
        return None
    if norm == STATE_DIR or norm.startswith(STATE_DIR + "/"):
        problems.add(loc, f"{value!r} is inside {STATE_DIR}/, which gha-mlops manages itself")
        return None
    return norm


def _normalize_stage(problems: _Problems, name: str, st: Any, _schema: Any) -> dict[str, Any]:
    base: Loc = ("stages", name)
    cmd = st.cmd if isinstance(st.cmd, str) else " && ".join(st.cmd)
    deps = []
    for i, d in enumerate(st.deps):
        p = _norm_path(problems, (*base, "deps", i), d)
        if p is not None:
            if p in deps:
                problems.add((*base, "deps", i), f"{p!r} is listed twice")
            deps.append(p)
    outs: list[dict[str, str]] = []
    kinds: tuple[tuple[str, OutputKind], ...] = (("outs", "out"), ("metrics", "metric"),
                                                 ("plots", "plot"))
    for field, kind in kinds:
        for i, o in enumerate(getattr(st, field)):
            p = _norm_path(problems, (*base, field, i), o)
            if p is not None:
                outs.append({"path": p, "kind": kind, "field": field, "index": str(i)})
    params = []
    for i, key in enumerate(st.params):
        if not key or key.startswith(".") or key.endswith(".") or ".." in key:
            problems.add((*base, "params", i), f"{key!r} is not a dotted params key",
                         "write keys like `train` or `train.lr`")
        params.append(key)
    return {"name": name, "cmd": cmd, "desc": st.desc, "deps": deps, "params": params,
            "outs": outs, "upstream": []}


def _load_params(
    config_path: Path, problems: _Problems, params_path: Path, params_bytes: bytes | None,
    stages: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    if params_bytes is None:
        try:
            params_bytes = params_path.read_bytes()
        except FileNotFoundError:
            users = [s["name"] for s in stages if s["params"]]
            if users:
                problems.add(("stages", users[0], "params"),
                             f"reads params, but the params file {_display(params_path)} does "
                             "not exist", "create it, or set `params:` to the right file")
                problems.raise_if_any()
            return {}
        except OSError as err:
            raise ConfigError(f"cannot read {_display(params_path)}: {err.strerror}",
                              file=_display(params_path)) from err
    data = _parse_yaml(params_path, params_bytes, _display(params_path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{_display(params_path)} must hold a mapping of parameters, got {_type_name(data)}",
            hint="write it as `section:` blocks of `key: value`", file=_display(params_path),
            line=1)
    return data


def _set_dotted(params: dict[str, Any], key: str, value: Any) -> None:
    node = params
    parts = key.split(".")
    for part in parts[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            node[part] = nxt
        node = nxt
    node[parts[-1]] = value


def _check_params(problems: _Problems, params_file: str, params: Mapping[str, Any],
                  stages: Sequence[Mapping[str, Any]]) -> None:
    for st in stages:
        for i, key in enumerate(st["params"]):
            try:
                param_value(params, key)
            except KeyError:
                parent, _, leaf = key.rpartition(".")
                try:
                    siblings = param_value(params, parent) if parent else params
                except KeyError:
                    siblings = {}
                names = list(siblings) if isinstance(siblings, Mapping) else []
                close = difflib.get_close_matches(leaf, [str(n) for n in names], n=1)
                hint = (f"did you mean {'.'.join(filter(None, [parent, close[0]]))!r}? "
                        if close else "")
                hint += (f"{params_file} has: " + ", ".join(
                    ".".join(filter(None, [parent, str(n)])) for n in names)) if names else (
                    f"add {key} to {params_file}")
                problems.add(("stages", st["name"], "params", i),
                             f"params key {key!r} does not exist in {params_file}", hint)


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def _link_stages(problems: _Problems, stages: list[dict[str, Any]]) -> None:
    """Find producers, reject duplicate/overlapping outputs and cycles, sort topologically."""
    owners: list[tuple[str, dict[str, str]]] = []
    for st in stages:
        for out in st["outs"]:
            for other_name, other in owners:
                if _overlaps(out["path"], other["path"]):
                    same = out["path"] == other["path"]
                    what = "is also" if same else "overlaps"
                    problems.add(
                        ("stages", st["name"], out["field"], int(out["index"])),
                        f"{out['path']!r} {what} an output of stage {other_name!r}"
                        f" ({other['path']!r} in stages.{other_name}.{other['field']})",
                        "each path may be written by one stage only; give each output its own path")
            owners.append((st["name"], out))
    by_name = {st["name"]: st for st in stages}
    dep_loc: dict[tuple[str, str], Loc] = {}
    for st in stages:
        upstream: list[str] = []
        for i, dep in enumerate(st["deps"]):
            for owner, out in owners:
                if _overlaps(dep, out["path"]):
                    if owner == st["name"]:
                        problems.add(("stages", st["name"], "deps", i),
                                     f"{dep!r} is an output of this same stage",
                                     "a stage cannot depend on what it writes")
                    elif owner not in upstream:
                        upstream.append(owner)
                        dep_loc[(st["name"], owner)] = ("stages", st["name"], "deps", i)
        st["upstream"] = sorted(upstream)
    # Kahn's algorithm, ties broken by declaration order so the order is stable.
    indeg = {n: len(by_name[n]["upstream"]) for n in by_name}
    order: list[str] = []
    ready = [n for n in by_name if indeg[n] == 0]
    while ready:
        n = ready.pop(0)
        order.append(n)
        for m in by_name:
            if n in by_name[m]["upstream"]:
                indeg[m] -= 1
                if indeg[m] == 0:
                    ready.append(m)
    if len(order) < len(by_name):
        cycle = _find_cycle({n: by_name[n]["upstream"] for n in by_name if n not in order})
        loc = dep_loc.get((cycle[0], cycle[1]), ("stages", cycle[0]))
        problems.add(loc, "stages form a cycle: " + " -> ".join([*cycle, cycle[0]])
                     .replace(" -> ", " needs "),
                     "a stage's deps may not (even indirectly) include its own outputs")
        return
    for st in stages:
        for out in st["outs"]:
            for k in ("field", "index"):
                out.pop(k, None)
    stages.sort(key=lambda s: order.index(s["name"]))


def _find_cycle(graph: Mapping[str, Sequence[str]]) -> list[str]:
    """One cycle in ``graph`` (node -> the nodes it needs), as a list of nodes."""
    for start in graph:
        path = [start]
        seen = {start}
        node = start
        while True:
            nxt = next((u for u in graph[node] if u in graph), None)
            if nxt is None:
                break
            if nxt in seen:
                return path[path.index(nxt):]
            path.append(nxt)
            seen.add(nxt)
            node = nxt
    return list(graph)[:1] * 2


def _check_deps_exist(pipeline: Pipeline, config_path: Path, config_bytes: bytes) -> None:
    problems: _Problems | None = None
    for stage in pipeline.stages.values():
        for i, dep in enumerate(stage.deps):
            if pipeline.producer_of(dep) is None and not os.path.lexists(pipeline.root / dep):
                problems = problems or _Problems(config_path, config_bytes)
                problems.add(("stages", stage.name, "deps", i),
                             f"{dep!r} does not exist and no stage outputs it",
                             "check the path (it is relative to the directory of mlops.yaml), "
                             "or add the stage that produces it")
    if problems:
        problems.raise_if_any()
