"""pydantic's validation errors, reworded for someone editing ``mlops.yaml``: the key path,
what was expected and an example of the expected form."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gha_mlops.config._yaml import Loc, Problems, type_name

_PYDANTIC_MESSAGES = {
    "string_type": "expected a string, got {got}",
    "int_type": "expected a whole number, got {got}",
    "list_type": "expected a list, got {got}",
    "dict_type": "expected a mapping, got {got}",
    "model_type": "expected a mapping, got {got}",
    "too_short": "must not be empty",
    "string_too_short": "must not be empty",
    "greater_than_equal": "must be at least {ge}, got {got}",
    "less_than_equal": "must be at most {le}, got {got}",
    "float_type": "expected a number, got {got}",
    "float_parsing": "expected a number, got {got}",
    "finite_number": "expected a finite number, got {got}",
    "literal_error": "expected {expected}, got {got}",
}

# What each key takes, for hints: "`deps` takes a path or a list of paths, e.g. ...".


_TOP_FORMS = {
    "version": "the number 1 (or leave it out)",
    "seed": "a whole number >= 0, without quotes, e.g. `seed: 42`",
    "params": "the path of the params file, e.g. `params: params.yaml`",
    "env": "a mapping, e.g. `env: {lock: requirements.lock}`",
    "model": "the path of a file a stage outputs, e.g. `model: models/model.pt`",
    "stages": "a mapping from stage names to stages, e.g. "
              "`stages: {train: {cmd: python train.py}}`",
    "gates": "a mapping from metric names to rules, e.g. "
             "`gates: {test_accuracy: {min_delta: -0.002}, latency_ms: {max: 20}}`",
}


_ENV_FORMS = {"lock": "the path of the environment lock file, e.g. `lock: requirements.lock`"}


_STAGE_FORMS = {
    "cmd": "a command string or a list of them, e.g. `cmd: python train.py`",
    "desc": "a one-line description, e.g. `desc: train the model`",
    "deps": "a path or a list of paths, e.g. `deps: [data/raw.csv, train.py]`",
    "params": "a dotted params key or a list of them, e.g. `params: [train.lr, prepare]`",
    "outs": "a path or a list of paths, e.g. `outs: [models/model.pt]`",
    "metrics": "a JSON file path or a list of them, e.g. `metrics: [metrics.json]`",
    "plots": "a path or a list of paths, e.g. `plots: [plots/loss.png]`",
}


_GATE_FORMS = {
    "min": "the lowest value the head run may have, a number, e.g. `min: 0.9`",
    "max": "the highest value the head run may have, a number, e.g. `max: 20`",
    "min_delta": "the least change from the baseline (head - baseline), a number, "
                 "e.g. `min_delta: -0.002`",
    "max_delta": "the largest change from the baseline (head - baseline), a number, "
                 "e.g. `max_delta: 2.5`",
    "max_relative_drop": "the largest move in the worse direction as a fraction of the "
                         "baseline, a number >= 0, e.g. `max_relative_drop: 0.01` (1%)",
    "direction": "`higher` or `lower`: which way is better for this metric",
}


_GATE_FORM = ("a mapping of rules (min, max, min_delta, max_delta, max_relative_drop, "
              "direction), e.g. `test_accuracy: {min_delta: -0.002}`")


_STAGE_FORM = "a mapping with at least `cmd:`, e.g. `train: {cmd: python train.py}`"


def form_hint(loc: Loc) -> str | None:
    """``"`key` takes <form>"`` for the key at ``loc`` (list indices ignored)."""
    names = [p for p in loc if isinstance(p, str)]
    if not names:
        return None
    if names[0] == "stages" and len(loc) >= 2:
        if len(names) >= 3 and names[2] in _STAGE_FORMS:
            return f"`{names[2]}` takes {_STAGE_FORMS[names[2]]}"
        if len(loc) == 2:
            return f"a stage takes {_STAGE_FORM}"
        return None
    if names[0] == "gates" and len(loc) >= 2:
        if len(names) >= 3 and names[2] in _GATE_FORMS:
            return f"`{names[2]}` takes {_GATE_FORMS[names[2]]}"
        return f"a gate takes {_GATE_FORM}" if len(loc) == 2 else None
    if names[0] == "env" and len(names) >= 2:
        form = _ENV_FORMS.get(names[1])
        return f"`{names[1]}` takes {form}" if form else None
    form = _TOP_FORMS.get(names[0])
    return f"`{names[0]}` takes {form}" if form else None


def schema_problems(problems: Problems, errors: Sequence[Mapping[str, Any]],
                       raw: Any) -> None:
    """Turn pydantic's errors into problems worded for someone editing the YAML."""
    import difflib  # only when the config is wrong: a valid load never needs it

    # A missing key and an unknown key that is a typo of it are one mistake: report the typo.
    # Compared within one mapping only: 20,000 stages with a typo each are 20,000 lookups,
    # not 20,000 squared.
    missing: dict[Loc, list[str]] = {}
    for e in errors:
        if e["type"] == "missing":
            missing.setdefault(tuple(e["loc"][:-1]), []).append(str(e["loc"][-1]))
    typos = {(*e["loc"][:-1], close[0]) for e in errors if e["type"] == "extra_forbidden"
             for close in [difflib.get_close_matches(
                 str(e["loc"][-1]), missing.get(tuple(e["loc"][:-1]), []), n=1)]
             if close}
    for e in errors:
        parts: Loc = tuple(e["loc"])
        kind = e["type"]
        value = e.get("input")
        # `cmd: str | list[str]` reports one error per union member; name the union once,
        # or, for a list, the item that is not a string.
        if len(parts) >= 4 and parts[0] == "stages" and parts[2] == "cmd":
            loc: Loc = parts[:3]
            cmd = _dig(raw, loc)
            if isinstance(cmd, list):
                if parts[3] == "list[str]" and len(parts) > 4:
                    problems.add((*loc, parts[4]),
                                 f"expected a command string, got {type_name(value)}",
                                 form_hint(loc))
            elif parts[3] == "str":
                problems.add(loc, "expected a command string (or a list of them), got "
                             f"{type_name(cmd)}", form_hint(loc))
            continue
        if parts and parts[-1] == "[key]":  # a mapping key that is not a string
            loc = (*parts[:-2], str(parts[-2]))
            what = "stage name" if loc[:1] == ("stages",) and len(loc) == 2 else "key"
            problems.add(loc, f"{what} {loc[-1]!r} is not a string",
                         f"quote it (`'{loc[-1]}':`) or use a name that starts with a letter",
                         key=True)
            continue
        loc = tuple(p for p in parts if not (isinstance(p, str) and p.endswith("]")))
        if kind in ("extra_forbidden", "invalid_key"):
            problems.add(loc, f"unknown key {loc[-1]!r}", _unknown_key_hint(loc, raw), key=True)
        elif kind == "missing":
            if loc in typos:
                continue
            parent = loc[:-1]
            hint: str | None
            if loc[-1] == "stages" and not parent:
                hint = ("add the stages to run, e.g. "
                        "`stages: {train: {cmd: python train.py}}`")
            elif loc[-1] == "cmd":
                hint = "add the command that runs this stage, e.g. `cmd: python train.py`"
            else:
                hint = form_hint(loc)
            problems.add(parent, f"missing required key {loc[-1]!r}", hint, key=True)
        elif loc == ("stages",) and kind == "too_short":
            problems.add(loc, "there are no stages", "add at least one stage, e.g. "
                         "`stages: {train: {cmd: python train.py}}`")
        else:
            template = _PYDANTIC_MESSAGES.get(kind)
            if template:
                message = template.format(got=type_name(value), **(e.get("ctx") or {}))
            else:
                message = str(e.get("msg", "invalid value")).removeprefix("Value error, ")
                message += f" (got {type_name(value)})"
            problems.add(loc, message, form_hint(loc))


def _unknown_key_hint(loc: Loc, raw: Any) -> str:
    import difflib

    parent = loc[:-1]
    allowed = _allowed_keys(parent)
    key = str(loc[-1])
    close = difflib.get_close_matches(key, allowed, n=1)
    value = _dig(raw, loc)
    looks_like_stage = isinstance(value, dict) and "cmd" in value
    if looks_like_stage and not parent:
        lead = f"is {key!r} a stage? stages go under `stages:`. "
    elif looks_like_stage and len(parent) == 2:
        lead = f"is {key!r} a stage? indent it to the level of {parent[1]!r}. "
    elif close:
        lead = f"did you mean {close[0]!r}? "
    else:
        lead = ""
    return lead + "allowed keys: " + ", ".join(allowed)


def _dig(raw: Any, loc: Loc) -> Any:
    node = raw
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _allowed_keys(parent: Loc) -> list[str]:
    from gha_mlops.config.schema import (
        ConfigSchema,
        EnvSchema,
        GateSchema,
        RemoteSchema,
        StageSchema,
    )

    if not parent:
        model: Any = ConfigSchema
    elif parent == ("env",):
        model = EnvSchema
    elif parent[:1] == ("remotes",):
        model = RemoteSchema
    elif parent[:1] == ("gates",):
        model = GateSchema
    else:
        model = StageSchema
    return list(model.model_fields)


# -- sections that word their own errors (deploy:, monitor:) --------------------------------

SECTION_MESSAGES = {
    "string_type": "expected a string, got {got}",
    "int_type": "expected a whole number, got {got}",
    "float_type": "expected a number, got {got}",
    "bool_type": "expected true or false, got {got}",
    "list_type": "expected a list, got {got}",
    "dict_type": "expected a mapping, got {got}",
    "model_type": "expected a mapping, got {got}",
    "string_too_short": "must not be empty",
    "too_short": "expected at least {min_length} item(s), got {actual_length}",
    "too_long": "expected at most {max_length} items, got {actual_length}",
    "greater_than": "must be more than {gt}, got {got}",
    "greater_than_equal": "must be at least {ge}, got {got}",
    "less_than_equal": "must be at most {le}, got {got}",
    "finite_number": "expected a finite number, got {got}",
}


def key_form(loc: Loc, forms: Mapping[str, str]) -> str | None:
    """``"`key` takes <form>"`` for the last key named in ``loc`` (None: no form known)."""
    names = [p for p in loc if isinstance(p, str)]
    form = forms.get(names[-1]) if names else None
    return f"`{names[-1]}` takes {form}" if form else None


def section_schema_problems(problems: Problems, errors: Sequence[Mapping[str, Any]], *,
                            allowed: Callable[[Loc], Sequence[str]],
                            form: Callable[[Loc], str | None]) -> None:
    """pydantic's errors under one section worded for someone editing the file: the key,
    what was expected and ``form(loc)`` (the form it takes), with the keys ``allowed(parent)``
    where one is unknown."""
    import difflib  # only when the section is wrong

    for e in errors:
        parts: Loc = tuple(e["loc"])
        kind, value = e["type"], e.get("input")
        if parts and parts[-1] == "[key]":  # a mapping key that is not a string
            loc: Loc = (*parts[:-2], str(parts[-2]))
            problems.add(loc, f"key {loc[-1]!r} is not a string",
                         f"quote it (`'{loc[-1]}':`)", key=True)
            continue
        loc = tuple(p for p in parts if not (isinstance(p, str) and p.endswith("]")))
        if kind == "extra_forbidden":
            keys = allowed(loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), keys, n=1)
            problems.add(loc, f"unknown key {loc[-1]!r}",
                         (f"did you mean {close[0]!r}? " if close else "")
                         + "allowed keys: " + ", ".join(keys), key=True)
        elif kind == "missing":
            problems.add(loc[:-1], f"missing required key {loc[-1]!r}", form(loc), key=True)
        elif kind == "value_error":
            problems.add(loc, str(e.get("msg", "")).removeprefix("Value error, "), form(loc))
        else:
            template = SECTION_MESSAGES.get(kind)
            message = (template.format(got=type_name(value), **(e.get("ctx") or {}))
                       if template else f"{e.get('msg', 'invalid value')} "
                                        f"(got {type_name(value)})")
            problems.add(loc, message, form(loc))


def duration_seconds(value: Any, units: Mapping[str, float], examples: str) -> float:
    """Seconds from a number (not a boolean) or a string ``<number><unit>`` with one of
    ``units`` (unit -> seconds); ValueError naming the forms (``examples``) otherwise.
    Bounds are the caller's."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (found := re.match(
            r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(" + "|".join(units) + r")\s*$", value)):
        seconds = float(found.group(1)) * units[found.group(2)]
    else:
        raise ValueError(f"expected a number of seconds or a duration such as {examples}, "
                         f"got {type_name(value)}")
    if not math.isfinite(seconds):
        raise ValueError(f"expected a finite number of seconds, got {type_name(value)}")
    return seconds
