"""Parameter values of a sweep: how a value is written as the VALUE of ``--set KEY=VALUE`` so
that it reads back as the same value of the same type, and how an override string from a run
record reads (bounded: records come from artifacts)."""

from __future__ import annotations

import json
import re
from typing import Any

from gha_mlops.config._yaml import YamlLimitError, load_yaml

EXPONENT_STRING = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
"""A string PyYAML reads as a string although it looks like a number (``1e-3``)."""


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (``1``, ``1.0`` and ``True`` differ)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def yaml_reads(text: str) -> Any:
    """What an override string from a run record reads as (bounded: records come from
    artifacts, so an alias bomb there reads as unreadable, not as a gigabyte)."""
    import yaml

    try:
        return load_yaml(text)
    except (yaml.YAMLError, YamlLimitError):
        return Unreadable


class Unreadable:
    """What :func:`yaml_reads` returns for text YAML cannot parse (equal to no value)."""


def render_value(value: Any) -> str:
    """``value`` as the VALUE of ``--set KEY=VALUE``: one line that ``yaml.safe_load`` reads
    back as the same value of the same type (``'0.01'`` stays a string, ``1`` an int).

    Raises ``ValueError`` for a value that cannot be written so.
    """
    import yaml

    if isinstance(value, str) and EXPONENT_STRING.fullmatch(value):
        # PyYAML reads 1e-3 as a string and writes it unquoted; YAML 1.2 reads a number.
        return f"'{value}'"
    text = yaml.safe_dump(value, default_flow_style=True, width=2**31 - 1,
                          allow_unicode=True, sort_keys=False)
    text = text.removesuffix("\n...\n").rstrip("\n")
    if "\n" not in text and same(yaml_reads(text), value):
        return text
    text = json.dumps(value, ensure_ascii=False)  # a string with line breaks, escaped
    if "\n" not in text and same(yaml_reads(text), value):
        return text
    raise ValueError(f"{value!r} cannot be written on one line so that YAML reads it back")


def canonical(value: Any) -> str:
    """One text per value (keys sorted): to compare legs."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)
