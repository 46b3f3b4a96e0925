"""``--set KEY=VALUE``: params values replaced for one run, without editing the params file.

An override behaves exactly like the same edit of the params file: a stage that reads the key
(or a section containing it) gets a new signature and runs, the others stay cached. Only keys
that exist in the params file can be overridden, so a typo is an error, not a silently unused
value.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gha_mlops.config._params import _params_hint, _plain_params
from gha_mlops.config._yaml import keypath, type_name
from gha_mlops.config.model import Stage, param_value
from gha_mlops.errors import UsageError

_FORM = "write --set KEY=VALUE with a dotted params key, e.g. --set train.lr=0.01"


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["train.lr=0.01", ...]`` as ``{"train.lr": 0.01}``.

    The key is a dotted path into the params file; the value is read as YAML (``0.01`` is a
    float, ``true`` a bool, ``[1, 2]`` a list, ``adam`` a string, an empty value null). A key
    given twice keeps its last value. Raises :class:`UsageError` for an item without ``=``,
    a malformed key, or a value that is not YAML or not a plain parameter value.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, value = parse_override(item)
        out.pop(key, None)  # the last one wins, and keeps its place in the order given
        out[key] = value
    return out


def parse_override(item: str) -> tuple[str, Any]:
    """One ``KEY=VALUE`` (see :func:`parse_overrides`)."""
    if "=" not in item:
        raise UsageError(f"--set {item!r}: expected KEY=VALUE, found no '='", hint=_FORM)
    key, text = item.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if not key or not all(p.strip() == p and p for p in parts):
        raise UsageError(f"--set {item!r}: {key!r} is not a dotted params key", hint=_FORM)
    return key, _parse_value(key, text)


def _parse_value(key: str, text: str) -> Any:
    import yaml

    from gha_mlops.config._yaml import YamlLimitError, load_yaml

    quote = "quote it to pass a string, e.g. --set '" + key + "=\"...\"'"
    try:
        value = load_yaml(text)
    except YamlLimitError as err:
        raise UsageError(f"--set {key}: the value {text[:80]!r}: {err.message}",
                         hint=err.hint) from None
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UsageError(f"--set {key}: the value {text!r} is not valid YAML ({problem})",
                         hint=quote) from None
    bad: list[tuple[tuple[str | int, ...], str]] = []
    plain = _plain_params(value, (), bad)
    if bad:
        loc, message = bad[0]
        where = f" at {keypath(loc)}" if loc else ""
        raise UsageError(f"--set {key}: the value {text!r}{where}: {message}",
                         hint="params are strings, numbers, booleans, null, lists or mappings; "
                         + quote)
    return plain


def apply_overrides(params: Mapping[str, Any], overrides: Mapping[str, Any], *,
                    params_file: str, stages: Sequence[Stage]) -> dict[str, Any]:
    """A copy of ``params`` with ``overrides`` applied, in order; ``params`` is unchanged.

    Raises :class:`UsageError` naming the key, the params file and the nearest existing keys
    when a key does not exist in ``params``, and when a value takes away a key that a stage
    reads (a section replaced by a scalar).
    """
    result: dict[str, Any] = copy.deepcopy(dict(params))
    for key, value in overrides.items():
        try:
            param_value(result, key)
        except KeyError:
            raise UsageError(
                f"--set {key}: there is no key {key!r} in {params_file}",
                hint=_params_hint(params_file, result, key)
                + "; --set replaces existing values only, add new keys to the file") from None
        *parents, last = key.split(".")
        node = param_value(result, ".".join(parents)) if parents else result
        if isinstance(node, list):
            node[int(last)] = copy.deepcopy(value)
        else:
            node[last] = copy.deepcopy(value)
    for stage in stages:
        for read in stage.params:
            try:
                param_value(result, read)
            except KeyError:
                culprit = next((k for k in overrides
                                if read == k or read.startswith(k + ".")), read)
                raise UsageError(
                    f"--set {culprit}: stage {stage.name!r} reads {read!r}, which the new "
                    f"value ({type_name(overrides.get(culprit))}) does not have",
                    hint=f"override the keys inside instead, e.g. --set {read}=VALUE") from None
    return result
