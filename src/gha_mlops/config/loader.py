"""Read ``mlops.yaml`` and its params file into a :class:`Pipeline`, or explain what is wrong.

Validation is done once per distinct (config, params) content: the normalized result is cached
in ``.gha-mlops/tmp/config.json``, keyed by the hash of the config bytes and checked against the
hash of the params file it names, so a no-op run neither re-parses YAML nor imports pydantic.
Checks that depend on the file system (a dep or the environment lock that does not exist) are
done on every load. ``--set`` overrides are applied to a copy after the cache, which only ever
holds the files as they are.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import posixpath
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from gha_mlops import __version__
from gha_mlops._fs import atomic_write_text
from gha_mlops.config._deploy import build_deploy, deploy_schema_problems, normalize_deploy
from gha_mlops.config._graph import OutputIndex, link_stages
from gha_mlops.config._monitor import build_monitor, monitor_schema_problems, normalize_monitor
from gha_mlops.config._overrides import apply_overrides
from gha_mlops.config._params import check_params, load_params, read_optional
from gha_mlops.config._registry import build_registry, normalize_registry
from gha_mlops.config._schema_errors import form_hint, schema_problems
from gha_mlops.config._state import STATE_DIR
from gha_mlops.config._yaml import Loc, Problems, display, gc_paused, parse_yaml, type_name
from gha_mlops.config.model import Gate, Output, OutputKind, Pipeline, Remote, Stage
from gha_mlops.errors import ConfigError

DEFAULT_CONFIG = "mlops.yaml"
DATA_PREFIX = "data:"
_DATASET_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
# 4: mappings keep the order of the files (a cached load must see params in the same order as
# a fresh one: it is the order of the params file written for a run with --set overrides).
# 5: each gate keeps the line it is written on.
# 6: ``registry:``.
# 7: ``deploy:``.
# 8: ``monitor:``.
_CACHE_FORMAT = 8

# The datasets of a workspace by name, given its root: ``gha_mlops.data.pointer.find_datasets``.
# config sits below data, so the services hand it in; the loader only asks it for names.
DatasetFinder = Callable[[Path], Mapping[str, Any]]


def load_pipeline(config_path: Path, *, overrides: Mapping[str, Any] | None = None,
                  datasets: DatasetFinder | None = None) -> Pipeline:
    """Load and validate ``config_path``; the workspace root is its directory.

    Raises :class:`ConfigError` naming the file, the key path and, where the YAML gives one,
    the line, for anything malformed: YAML syntax, duplicate or unknown keys, wrong types, bad
    paths, duplicate or overlapping outputs, cycles, params keys missing from the params file,
    and dependencies (or the environment lock) that neither exist nor are produced by a stage.
    ``overrides`` (dotted params key -> value, see :func:`parse_overrides`) replace values of
    the params file, as ``gha-mlops run --set`` does: each key must exist in the file
    (:class:`~gha_mlops.errors.UsageError` otherwise). They are applied to the validated
    config after the cache, which always holds the params file as it is, so a load with
    overrides is as fast as one without and never changes what a later load sees.

    ``datasets`` finds the workspace's datasets (``gha_mlops.data.pointer.find_datasets``):
    with it, each ``data:NAME`` dep must name one (:class:`ConfigError` naming the dep's line
    otherwise) and :attr:`Pipeline.datasets` holds what it found; without it, ``data:`` deps
    are not checked here and :attr:`Pipeline.datasets` stays None.
    """
    # Loading allocates objects by the hundred thousand for a large pipeline and makes no
    # cyclic garbage: left running, the collector would scan them again and again.
    with gc_paused():
        return _load(config_path, overrides, datasets)


def _load(config_path: Path, overrides: Mapping[str, Any] | None,
          find_datasets: DatasetFinder | None) -> Pipeline:
    config_path = config_path.absolute()
    root = config_path.parent
    try:
        config_bytes = config_path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"no pipeline file at {display(config_path)}",
            hint="create mlops.yaml (see `gha-mlops demo` for a complete example) "
            "or pass --config PATH",
            file=display(config_path),
        ) from None
    except OSError as err:
        raise ConfigError(
            f"cannot read {display(config_path)}: {err.strerror}", file=display(config_path)
        ) from err

    sha = hashlib.sha256(config_bytes).hexdigest()
    cache_file = root / STATE_DIR / "tmp" / "config.json"
    key = _cache_key(config_bytes)
    pipeline: Pipeline | None = None
    cached = _read_cache(cache_file, key, root)
    if cached is not None:
        try:
            pipeline = _build(root, config_path, sha, cached)
        except (KeyError, TypeError, ValueError, AttributeError):
            pipeline = None  # a cache of an unexpected shape: validate afresh
    if pipeline is None:
        normalized = _validate(config_path, config_bytes)
        pipeline = _build(root, config_path, sha, normalized)
        if (root / STATE_DIR).is_dir():
            # The cache only saves time: a workspace that cannot take it still loads.
            with contextlib.suppress(OSError):
                atomic_write_text(cache_file, json.dumps(
                    {"key": key, "format": _CACHE_FORMAT, **normalized}, ensure_ascii=False))
    if overrides:
        # After the cache, on a copy: the cache and the params file stay as they are.
        params = apply_overrides(pipeline.params, overrides, params_file=pipeline.params_file,
                                 stages=list(pipeline.stages.values()))
        pipeline = dataclasses.replace(pipeline, params=params, overrides=dict(overrides))
    datasets = _check_deps_exist(pipeline, config_path, config_bytes, find_datasets)
    if datasets is not None:
        pipeline = dataclasses.replace(pipeline, datasets=datasets)
    if pipeline.gates:  # the metrics files exist or not whether the config is cached or not
        from gha_mlops.config._gates import check_gate_metrics

        check_gate_metrics(pipeline)
    return pipeline


# --------------------------------------------------------------------------- cache


def _cache_key(config_bytes: bytes) -> str:
    h = hashlib.sha256()
    h.update(f"{__version__}\0{_CACHE_FORMAT}\0".encode())
    h.update(config_bytes)
    return h.hexdigest()


def _file_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _read_cache(cache_file: Path, key: str, root: Path) -> dict[str, Any] | None:
    """The cached normalized config, if it was made from these config bytes and the params
    file it names still has the content it was validated with."""
    try:
        data = json.loads(cache_file.read_bytes())
    except (OSError, ValueError):
        return None
    if (not isinstance(data, dict) or data.get("key") != key
            or data.get("format") != _CACHE_FORMAT
            or not isinstance(data.get("params_file"), str)):
        return None
    if _file_sha256(root / data["params_file"]) != data.get("params_sha256"):
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
        determinism=n["determinism"],
        remotes={k: Remote(name=k, **v) for k, v in (n.get("remotes") or {}).items()},
        default_remote=n.get("default_remote"),
        gates={name: _gate(config_path, name, rules)
               for name, rules in (n.get("gates") or {}).items()},
        registry=build_registry(n.get("registry")),
        deploy=build_deploy(n.get("deploy"), config_path),
        monitor=build_monitor(n.get("monitor"), config_path),
    )


def _gate(config_path: Path, name: str, rules: Mapping[str, Any]) -> Gate:
    """A :class:`Gate` from its normalized rules, which carry the line it is written on."""
    rules = dict(rules)
    line = rules.pop("line", None)
    source = f"{display(config_path)}:{line}" if line else display(config_path)
    return Gate(metric=name, source=source, **rules)


# --------------------------------------------------------------------------- validation


def _validate(config_path: Path, config_bytes: bytes) -> dict[str, Any]:
    raw = parse_yaml(config_path, config_bytes)
    problems = Problems(config_path, config_bytes)
    if raw is None:
        raise ConfigError(
            "the pipeline file is empty (it has no keys, only blank lines or comments)",
            hint="describe at least one stage under `stages:`, e.g. "
            "`stages: {train: {cmd: python train.py}}`",
            file=display(config_path), line=None)
    if not isinstance(raw, dict):
        problems.add((), f"expected a mapping with a `stages:` key, got {type_name(raw)}",
                     "the file must be a mapping of keys such as `seed:` and `stages:`, e.g. "
                     "`stages: {train: {cmd: python train.py}}`")
        problems.raise_if_any()

    from pydantic import ValidationError

    from gha_mlops.config.schema import STAGE_NAME, ConfigSchema

    try:
        cfg = ConfigSchema.model_validate(raw)
    except ValidationError as err:
        errors = err.errors()
        own = (("deploy",), ("monitor",))  # these word their own errors (keys, forms)
        schema_problems(problems, [e for e in errors if tuple(e["loc"][:1]) not in own], raw)
        deploy_schema_problems(problems, [e for e in errors if e["loc"][:1] == ("deploy",)])
        monitor_schema_problems(problems, [e for e in errors if e["loc"][:1] == ("monitor",)])
        problems.raise_if_any()
        raise AssertionError("unreachable") from err

    stages: list[dict[str, Any]] = []
    for name, st in cfg.stages.items():
        if not STAGE_NAME.fullmatch(name):
            problems.add(("stages", name), f"stage name {name!r} is not allowed",
                         "use letters, digits, '_', '-' and '.', starting with a letter, digit "
                         "or '_' (e.g. `train`, `prepare-data`)", key=True)
        stages.append(_normalize_stage(problems, name, st))
    root = config_path.parent
    env_lock = _norm_path(problems, ("env", "lock"), cfg.env.lock) if cfg.env.lock else None
    params_file = _norm_path(problems, ("params",), cfg.params) or "params.yaml"
    problems.raise_if_any()

    params_path = root / params_file
    params_bytes = read_optional(params_path)
    params = load_params(problems, params_path, params_bytes, stages)
    check_params(problems, params_file, params, stages)
    link_stages(problems, stages)
    model = _norm_path(problems, ("model",), cfg.model) if cfg.model else None
    if model and not any(model == o["path"] or model.startswith(o["path"] + "/")
                         for st in stages for o in st["outs"]):
        declared = [o["path"] for st in stages for o in st["outs"] if o["kind"] == "out"]
        problems.add(("model",), f"{model!r} is not an output of any stage",
                     "name a file that a stage declares in `outs:` (or a file inside one); "
                     + ("declared outs: " + ", ".join(declared) if declared
                        else "no stage declares `outs:` yet"))
    remotes = _normalize_remotes(problems, cfg.remotes, cfg.default_remote)
    gates = _normalize_gates(problems, cfg.gates, stages)
    registry = normalize_registry(problems, cfg.registry,
                                  [o["path"] for st in stages for o in st["outs"]], _norm_path)
    deploy = normalize_deploy(problems, cfg.deploy, registry)
    monitor = normalize_monitor(problems, cfg.monitor, registry)
    problems.raise_if_any()
    return {
        "monitor": monitor,
        "deploy": deploy,
        "registry": registry,
        "gates": gates,
        "remotes": remotes,
        "default_remote": cfg.default_remote,
        "model": model,
        "determinism": cfg.determinism,
        "seed": cfg.seed,
        "params_file": params_file,
        "params_sha256": (hashlib.sha256(params_bytes).hexdigest()
                          if params_bytes is not None else None),
        "params": params,
        "env_lock": env_lock,
        "stages": stages,
    }


def _normalize_remotes(problems: Problems, remotes: Mapping[str, Any],
                       default: str | None) -> dict[str, dict[str, Any]]:
    """``remotes:`` as plain mappings, after checking each name and URL and that
    ``default_remote`` names one of them."""
    if remotes:
        from gha_mlops.config._remotes import remote_url_problem
    for name, remote in remotes.items():
        if not _DATASET_NAME.fullmatch(name):
            problems.add(("remotes", name), f"remote name {name!r} is not allowed",
                         "use letters, digits, '_', '-' and '.'", key=True)
        wrong = remote_url_problem(remote.url)
        if wrong is not None:
            problems.add(("remotes", name, "url"), *wrong)
    if default is not None and default not in remotes:
        problems.add(("default_remote",), f"no remote named {default!r}",
                     ("remotes: " + ", ".join(remotes)) if remotes
                     else "declare it under `remotes:` first")
    return {name: r.model_dump() for name, r in remotes.items()}


def _norm_path(problems: Problems, loc: Loc, value: str | None) -> str | None:
    if value is None:
        return None
    config_name = problems.path.name
    if value.startswith(DATA_PREFIX) and len(loc) >= 3 and loc[-2] == "deps":
        name = value[len(DATA_PREFIX):]
        if not _DATASET_NAME.fullmatch(name):
            problems.add(loc, f"{value!r} does not name a dataset",
                         "write `data:NAME` with the name from the dataset's .lock.yaml")
            return None
        return value
    if value.startswith(("/", "\\")) or (len(value) >= 2 and value[0].isalpha()
                                         and value[1] == ":"
                                         and (len(value) == 2 or value[2] in "/\\")):
        problems.add(loc, f"{value!r} is an absolute path",
                     f"write it relative to the directory of {config_name} (the workspace), "
                     "e.g. `data/raw.csv`")
        return None
    if "\\" in value:
        problems.add(loc, f"{value!r} uses '\\' as a separator",
                     "write paths with '/', e.g. `data/raw.csv`; they work on every OS")
        return None
    if not value.strip():
        problems.add(loc, "a path must not be empty", form_hint(loc))
        return None
    norm = posixpath.normpath(value)
    if norm == ".." or norm.startswith("../"):
        problems.add(loc, f"{value!r} points outside the workspace (the directory of "
                     f"{config_name})",
                     "move the file into the workspace; paths may not climb out of it with '..'")
        return None
    if norm == ".":
        problems.add(loc, f"{value!r} is the whole workspace, not a path in it",
                     "name a file or a directory inside the workspace")
        return None
    if norm == STATE_DIR or norm.startswith(STATE_DIR + "/"):
        problems.add(loc, f"{value!r} is inside {STATE_DIR}/, where gha-mlops keeps its own "
                     "cache and run records",
                     f"use a path outside {STATE_DIR}/")
        return None
    return norm


def _normalize_stage(problems: Problems, name: str, st: Any) -> dict[str, Any]:
    base: Loc = ("stages", name)
    cmd = st.cmd if isinstance(st.cmd, str) else " && ".join(st.cmd)
    deps: dict[str, int] = {}  # path -> its place in deps
    for i, d in enumerate(st.deps):
        p = _norm_path(problems, (*base, "deps", i), d)
        if p is not None:
            if p in deps:
                problems.add((*base, "deps", i),
                             f"{d!r} is listed twice (the same path as deps[{deps[p]}])",
                             "remove one of them")
            else:
                deps[p] = len(deps)
    outs: list[dict[str, str]] = []
    kinds: tuple[tuple[str, OutputKind], ...] = (("outs", "out"), ("metrics", "metric"),
                                                 ("plots", "plot"))
    for field, kind in kinds:
        for i, o in enumerate(getattr(st, field)):
            p = _norm_path(problems, (*base, field, i), o)
            if p is not None:
                outs.append({"path": p, "kind": kind, "field": field, "index": str(i)})
    params: dict[str, int] = {}  # key -> its place in params
    for i, key in enumerate(st.params):
        if not key or key.startswith(".") or key.endswith(".") or ".." in key:
            problems.add((*base, "params", i), f"{key!r} is not a dotted params key",
                         "write keys like `train` or `train.lr`")
        elif key in params:
            problems.add((*base, "params", i),
                         f"{key!r} is listed twice (the same key as params[{params[key]}])",
                         "remove one of them")
            continue
        params[key] = len(params)
    return {"name": name, "cmd": cmd, "desc": st.desc, "deps": list(deps),
            "params": list(params), "outs": outs, "upstream": []}


def _normalize_gates(problems: Problems, gates: Mapping[str, Any],
                     stages: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``gates:`` as plain mappings of the rules given (plus the ``line`` each is written on,
    where found), after the checks that span rules: at least one rule, ``min <= max``,
    ``min_delta <= max_delta``, some stage declares a metrics file (else no run can measure
    any gate), and a ``FILE:KEY`` name whose file looks like a path must be a metrics file
    that a stage declares. Whether the metric is in the file is checked on every load, by
    :func:`gha_mlops.config._gates.check_gate_metrics`."""
    import difflib  # only for did-you-mean hints: a load from the validated cache skips it

    from gha_mlops.config.schema import GATE_RULES

    if not gates:
        return {}
    from gha_mlops.config._gates import gate_lines

    metric_files = [o["path"] for s in stages for o in s["outs"] if o["kind"] == "metric"]
    declared = set(metric_files)
    lines = gate_lines(problems.text)
    out: dict[str, dict[str, Any]] = {}
    for name, gate in gates.items():
        loc: Loc = ("gates", name)
        rules = {k: v for k, v in gate.model_dump().items() if v is not None}
        file, sep, key = name.partition(":")
        if name.strip() and not metric_files:
            # A run's metrics come only from the files its stages declare: nothing could
            # ever give this gate a value, and `report` would only say so after training.
            problems.add(loc, f"no stage declares a metrics file, so no run can have the "
                         f"metric {name!r}",
                         "declare the JSON file your training script writes under the "
                         "stage's `metrics:`, e.g. `metrics: [metrics.json]`", key=True)
        elif not name.strip():
            problems.add(loc, "a gate needs a metric name",
                         "name a metric, e.g. `test_accuracy` or `metrics.json:test_accuracy`",
                         key=True)
        elif sep and file not in declared and (
                "/" in file or file.endswith(".json")
                or (close := difflib.get_close_matches(file, metric_files, n=1))):
            close = difflib.get_close_matches(file, metric_files, n=1)
            problems.add(loc, f"no stage declares the metrics file {file!r}",
                         (f"did you mean {close[0] + ':' + key!r}? " if close else "")
                         + ("metrics files: " + ", ".join(metric_files) if metric_files
                            else "declare it under a stage's `metrics:`"), key=True)
        elif sep and not key:
            problems.add(loc, f"{name!r} names no metric after ':'",
                         "write FILE:KEY, e.g. `metrics.json:test_accuracy`", key=True)
        if not any(r in rules for r in GATE_RULES):
            problems.add(loc, "a gate needs at least one rule",
                         "use " + ", ".join(GATE_RULES)
                         + ", e.g. `test_accuracy: {min_delta: -0.002}`")
        for low, high in (("min", "max"), ("min_delta", "max_delta")):
            if low in rules and high in rules and rules[low] > rules[high]:
                problems.add((*loc, low), f"{low} ({rules[low]:g}) > {high} ({rules[high]:g})",
                             f"no value can pass: make {low} at most {high}")
        if name in lines:
            rules["line"] = lines[name]
        out[name] = rules
    return out


def _check_deps_exist(pipeline: Pipeline, config_path: Path, config_bytes: bytes,
                      find_datasets: DatasetFinder | None) -> Mapping[str, Any] | None:
    """The checks that depend on the file system, done on every load, cached or not: each dep
    must exist or overlap a stage output, each ``data:NAME`` dep must name a dataset that
    ``find_datasets`` finds (when given), and the environment lock must exist. Returns the
    datasets found, or None when none were looked for."""
    problems = Problems(config_path, config_bytes)
    outputs = OutputIndex()
    for stage in pipeline.stages.values():
        for out in stage.out_paths:
            outputs.add(out)
    datasets: Mapping[str, Any] | None = None
    present: dict[str, bool] = {}
    for stage in pipeline.stages.values():
        for i, dep in enumerate(stage.deps):
            if dep.startswith(DATA_PREFIX):
                if find_datasets is None:
                    continue
                if datasets is None:
                    datasets = find_datasets(pipeline.root)
                if dep[len(DATA_PREFIX):] not in datasets:
                    problems.add(("stages", stage.name, "deps", i),
                                 f"no dataset named {dep[len(DATA_PREFIX):]!r}",
                                 ("datasets here: " + ", ".join(sorted(datasets))) if datasets
                                 else "pin one with `gha-mlops data add PATH --name NAME`")
                continue
            if dep not in present:  # many stages share a dep (their script): check it once
                present[dep] = (outputs.first(dep) is not None
                                or os.path.lexists(pipeline.root / dep))
            if not present[dep]:
                problems.add(("stages", stage.name, "deps", i),
                             f"{dep!r} does not exist and no stage outputs it",
                             f"check the path (it is relative to the directory of "
                             f"{config_path.name}), or add the stage that produces it")
    lock = pipeline.env_lock
    if lock and not (pipeline.root / lock).is_file():
        problems.add(("env", "lock"), f"the environment lock file {lock!r} does not exist",
                     "create it (e.g. `pip freeze > requirements.lock` or `uv pip compile "
                     "requirements.in -o requirements.lock`) or remove `env.lock`")
    problems.raise_if_any()
    return datasets
