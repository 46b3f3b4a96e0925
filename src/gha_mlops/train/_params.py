"""What the engine hands a stage: its parameters and its lineage."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gha_mlops.errors import ConfigError

PARAMS_ENV = "GHA_MLOPS_PARAMS"
LINEAGE_ENV = "GHA_MLOPS_LINEAGE"
DEFAULT_PARAMS_FILE = "params.yaml"


class ParamsKeyError(ConfigError, KeyError):
    """A key asked for with :func:`params` is not in the params file.

    A :class:`~gha_mlops.errors.ConfigError` for the CLI and a ``KeyError`` for scripts that
    catch one to fall back on a default.
    """

    def __str__(self) -> str:
        # KeyError would print the repr of the message, quotes and all.
        return self.message


def params_path() -> Path:
    """``$GHA_MLOPS_PARAMS`` if set (``gha-mlops run`` sets it), else ``params.yaml`` in cwd."""
    return Path(os.environ.get(PARAMS_ENV) or DEFAULT_PARAMS_FILE)


def params(section: str | None = None) -> Any:
    """Read the stage parameters, all of them or the part named by ``section``.

    The file is ``$GHA_MLOPS_PARAMS`` (set by ``gha-mlops run``), else ``params.yaml`` in the
    current directory. ``section`` is a dotted key: ``"train"`` returns the ``train`` mapping,
    ``"train.lr"`` the value of ``lr`` inside it. Without ``section`` the whole file is
    returned as a mapping. Read only keys the stage declares in ``mlops.yaml`` (``params:``);
    the engine reruns a stage when those values change, and only then.

    Raises :class:`ParamsKeyError` (a ``KeyError``) naming the file and the key when the key
    is missing, and :class:`~gha_mlops.errors.ConfigError` if the file is missing or is not
    a YAML mapping.
    """
    path = params_path()
    data = _load_yaml_mapping(path)
    if section is None:
        return data
    parts = section.split(".")
    if not all(parts):
        raise ValueError(f"params section {section!r} is not a dotted key such as 'train.lr'")
    node: Any = data
    for depth, part in enumerate(parts):
        where = ".".join(parts[:depth]) or "the top level"
        if not isinstance(node, Mapping):
            raise ParamsKeyError(
                f"{path}: no key {section!r}: {where} is a {type(node).__name__}, not a mapping",
                hint=f"fix the key, or make {where} a mapping in {path}",
                file=path,
            )
        if part not in node:
            known = ", ".join(sorted(str(k) for k in node)) or "none"
            raise ParamsKeyError(
                f"{path}: no key {section!r} ({where} has keys: {known})",
                hint=f"add {section!r} to {path}, or fix the key in the script and in mlops.yaml",
                file=path,
            )
        node = node[part]
    return node


def _load_yaml_mapping(path: Path) -> dict[str, Any]:
    """The params file as a mapping, read with the same bounded loader as ``gha-mlops run``:
    a file of a few lines whose aliases would expand to billions of values is refused."""
    import yaml

    from gha_mlops.config._yaml import YamlLimitError, load_yaml

    try:
        text = path.read_bytes()
    except FileNotFoundError as err:
        raise ConfigError(
            f"params file {path} does not exist",
            hint=f"run from the project root, or set {PARAMS_ENV} to the params file",
            file=path,
        ) from err
    except OSError as err:
        raise ConfigError(f"cannot read params file {path}: {err.strerror}", file=path) from err
    try:
        data = load_yaml(text)
    except YamlLimitError as err:
        raise ConfigError(f"params file {path}: {err.message}", hint=err.hint, file=path,
                          line=err.line, column=err.column) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"params file {path} is not valid YAML: {err}", file=path) from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"params file {path} must hold a mapping at the top level, not a {type(data).__name__}",
            hint="write it as 'section:' followed by indented 'key: value' lines",
            file=path,
        )
    return data


def lineage() -> dict[str, Any]:
    """The lineage ``gha-mlops run`` recorded for this stage, or ``{}`` outside the engine.

    Read from the JSON file at ``$GHA_MLOPS_LINEAGE``: stage name, signature, seed, the
    parameter values the stage reads, its dependencies as ``{path: sha256}`` and the sha256 of
    the environment lock. It holds no run id or time, so outputs built from it stay
    byte-identical across runs. Raises :class:`~gha_mlops.errors.ConfigError` if the
    variable names a file that is missing or not a JSON object.
    """
    raw = os.environ.get(LINEAGE_ENV, "")
    if not raw:
        return {}
    path = Path(raw)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ConfigError(
            f"{LINEAGE_ENV} names {path}, which does not exist",
            hint=f"unset {LINEAGE_ENV} to run the script by hand",
            file=path,
        ) from err
    except ValueError as err:
        raise ConfigError(f"lineage file {path} is not valid JSON: {err}", file=path) from err
    if not isinstance(data, dict):
        raise ConfigError(f"lineage file {path} must hold a JSON object", file=path)
    return data
