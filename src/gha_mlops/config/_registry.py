"""``registry:`` of mlops.yaml: checks that span fields, and the typed value.

The names follow GTO's grammar (docs/registry.md), since the registry's tags are GTO's: a
model or stage name is letters, digits, ``-``, ``_`` and ``/`` (stages: no ``/``), starting
and ending with a letter or digit.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from gha_mlops.config._yaml import Loc, Problems
from gha_mlops.config.model import RegistryConfig, RegistryModel

# GTO's constants.name (model names may hold '/', as GTO's do); a stage has no '/', which
# would read as a folder in a tag name.
MODEL_NAME = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9\-/_]*[a-zA-Z0-9])?$")
STAGE_NAME = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9\-_]*[a-zA-Z0-9])?$")
_NAME_HINT = ("use letters, digits, '-' and '_' (and '/' in a model name), starting and "
              "ending with a letter or digit: GTO's grammar for names in tags")

PathNormalizer = Callable[[Problems, Loc, "str | None"], "str | None"]


def normalize_registry(problems: Problems, registry: Any, outputs: list[str],
                       norm_path: PathNormalizer) -> dict[str, Any] | None:
    """``registry:`` (a validated ``RegistrySchema`` or None) as a plain mapping, after the
    checks the schema cannot make: names in GTO's grammar, no stage twice, the champion one
    of the stages, each model's ``path`` (and ``check_data``) a relative path that is, or
    lies inside, an output some stage declares (``outputs``)."""
    if registry is None:
        return None
    stages: list[str] = []
    for i, stage in enumerate(registry.stages):
        if not STAGE_NAME.fullmatch(stage):
            problems.add(("registry", "stages", i), f"stage name {stage!r} is not allowed",
                         _NAME_HINT)
        elif stage in stages:
            problems.add(("registry", "stages", i), f"stage {stage!r} is listed twice",
                         "remove one of them")
        else:
            stages.append(stage)
    if registry.champion not in registry.stages:
        problems.add(("registry", "champion"),
                     f"{registry.champion!r} is not one of the registry's stages",
                     "name one of registry.stages: " + ", ".join(map(repr, registry.stages)))
    models: dict[str, dict[str, Any]] = {}
    for name, model in registry.models.items():
        loc: Loc = ("registry", "models", name)
        if not MODEL_NAME.fullmatch(name):
            problems.add(loc, f"model name {name!r} is not allowed", _NAME_HINT, key=True)
        path = norm_path(problems, (*loc, "path"), model.path)
        check = norm_path(problems, (*loc, "check_data"), model.check_data)
        for field, value in (("path", path), ("check_data", check)):
            if value is not None and not _is_output(value, outputs):
                problems.add((*loc, field), f"{value!r} is not an output of any stage",
                             "name a file that a stage declares in `outs:` (or a file "
                             "inside one); declared outs: " + (", ".join(outputs) or "none"))
        models[name] = {"path": path, "description": model.description, "check_data": check,
                        "atol": model.tolerance.atol, "rtol": model.tolerance.rtol}
    return {"stages": stages, "champion": registry.champion, "models": models}


def _is_output(path: str, outputs: list[str]) -> bool:
    return any(path == out or path.startswith(out + "/") for out in outputs)


def build_registry(normalized: Mapping[str, Any] | None) -> RegistryConfig | None:
    """The typed ``registry:`` from its normalized (cached) form."""
    if normalized is None:
        return None
    return RegistryConfig(
        stages=tuple(normalized["stages"]), champion=normalized["champion"],
        models={name: RegistryModel(**m) for name, m in normalized["models"].items()})
