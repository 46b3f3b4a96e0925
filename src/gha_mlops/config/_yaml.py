"""YAML for the config files: a safe loader that rejects duplicate keys, syntax errors explained
in words at the line to look at, and key paths mapped back to lines for later errors."""

from __future__ import annotations

import datetime
import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gha_mlops.errors import ConfigError

Loc = tuple[str | int, ...]
"""A key path into a YAML document: mapping keys and list indices."""


class Located:
    """Key path -> (line, column) of a YAML document, computed only when an error needs it."""

    def __init__(self, text: bytes) -> None:
        self._text = text
        self._root: Any = None
        self._composed = False

    def find(self, loc: Loc, *, key: bool = False) -> tuple[int | None, int | None]:
        """Where ``loc`` is, or the deepest part of it that exists (its value, or with ``key``
        its key). ``(None, None)`` when the text does not parse."""
        import yaml

        if not self._composed:
            self._composed = True
            try:
                self._root = yaml.compose(self._text, Loader=safe_loader())
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
                    if str(k.value) == str(part):
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


@functools.lru_cache(maxsize=1)
def safe_loader() -> Any:
    """A safe YAML loader (libyaml's when available) that rejects duplicate keys, which plain
    PyYAML silently resolves by keeping the last one, e.g. a stage defined twice."""
    import yaml

    try:
        from yaml import CSafeLoader as Base
    except ImportError:  # PyYAML built without libyaml
        from yaml import SafeLoader as Base  # type: ignore[assignment]

    class UniqueKeyLoader(Base):
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                    continue
                key = self.construct_object(key_node)
                try:
                    first = seen.get((type(key), key))
                except TypeError:
                    continue
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"found duplicate key {key!r} (first defined on line {first})",
                        key_node.start_mark)
                seen[(type(key), key)] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def display(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def keypath(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def type_name(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "a mapping"}
    for t, name in names.items():
        if type(value) is t:
            shown = repr(value) if t in (bool, int, float, str) else ""
            return f"{name} {shown}".strip() if len(shown) <= 40 else name
    if type(value) is datetime.date:
        return f"a date ({value})"
    if isinstance(value, datetime.datetime):
        return f"a timestamp ({value})"
    return type(value).__name__


def parse_yaml(path: Path, data: bytes) -> Any:
    import yaml

    try:
        return yaml.load(data, Loader=safe_loader())
    except yaml.MarkedYAMLError as err:
        raise _yaml_error(path, data, err) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"not valid YAML: {err}", file=display(path),
                          hint="save the file as UTF-8 text") from None


def _yaml_error(path: Path, data: bytes, err: Any) -> ConfigError:
    """Explain a YAML syntax error in words, at the line where the user must look."""
    problem: str = err.problem or "malformed YAML"
    context: str = err.context or ""
    mark = err.problem_mark or err.context_mark
    lines = data.decode("utf-8", "replace").splitlines()

    def source(m: Any) -> str:
        return lines[m.line] if m is not None and m.line < len(lines) else ""

    message = f"not valid YAML: {problem}" + (f" ({context})" if context else "")
    hint = "fix the YAML syntax at the line shown (indentation, a missing ':' or quote)"
    notes: list[str] = []
    opened = err.context_mark
    if problem.startswith("found duplicate key"):
        message = problem.replace("found duplicate key", "duplicate key", 1)
        hint = "a key may appear only once in a mapping: rename one of them, or merge the two"
    elif "cannot start any token" in problem and "\t" in source(mark):
        message = "not valid YAML: a tab character is used for indentation"
        hint = "indent with spaces only; YAML does not allow tabs"
    elif context.startswith("while scanning a quoted scalar") and opened is not None:
        message = "not valid YAML: the quoted string that starts here is never closed"
        hint = "add the closing quote, the same kind (' or \") as the one that opens it"
        notes.append("the file ends before the string is closed" if "end of stream" in problem
                     else f"YAML reached line {mark.line + 1} still inside the string")
        mark = opened
    elif context.startswith("while parsing a flow") and opened is not None:
        opener = source(opened)[opened.column: opened.column + 1] or "["
        closer = {"[": "]", "{": "}"}.get(opener, "]")
        message = f"not valid YAML: the {opener!r} opened here is never closed"
        hint = f"close it with {closer!r} (and separate the items with ',')"
        notes.append(f"YAML reached line {mark.line + 1} without finding {closer!r}")
        mark = opened
    elif "mapping values are not allowed" in problem:
        message = "not valid YAML: a 'key: value' where none is allowed"
        hint = ("this line is indented deeper than the keys above it, or an unquoted value "
                "contains ': '; fix the indentation or put the value in quotes")
    elif context.startswith("while parsing a block mapping") and "expected key" in problem:
        message = "not valid YAML: this line's indentation does not match the keys above it"
        hint = "keys of one mapping must start in the same column; indent with spaces consistently"
    elif "could not find expected ':'" in problem:
        if context.startswith("while scanning a simple key") and opened is not None:
            mark = opened  # the key without ':' is where the scan started, not where it failed
        message = "not valid YAML: a line without 'key: value' (could not find expected ':')"
        hint = "write `key: value`; if the line continues the value above, quote the whole value"
    text = source(mark)
    if text:
        notes.insert(0, f"{mark.line + 1} | {text.replace(chr(9), '<TAB>')}")
    return ConfigError(
        message, hint=hint, file=display(path),
        line=mark.line + 1 if mark is not None else None,
        column=mark.column + 1 if mark is not None else None, notes=notes,
    )


class Problems:
    """Collects every problem in a file, then raises one ConfigError listing them all."""

    def __init__(self, path: Path, text: bytes) -> None:
        self.path = path
        self.where = Located(text)
        self.items: list[tuple[int | None, int | None, str, str | None, list[str]]] = []

    def add(self, loc: Loc, message: str, hint: str | None = None, *, key: bool = False,
            notes: Sequence[str] = ()) -> None:
        line, col = self.where.find(loc, key=key)
        self.items.append((line, col, f"{keypath(loc)}: {message}", hint, list(notes)))

    def at(self, loc: Loc) -> str:
        """``file:line`` of ``loc``, for a note that points at a second place."""
        line, _col = self.where.find(loc)
        return f"{display(self.path)}:{line}" if line else display(self.path)

    def raise_if_any(self) -> None:
        if not self.items:
            return
        # The first problem in the file is the one reported; the others become notes.
        items = sorted(self.items, key=lambda item: item[0] if item[0] is not None else 1 << 30)
        line, col, message, hint, notes = items[0]
        for l2, _c2, m2, _h2, _n2 in items[1:]:
            where = f"{display(self.path)}:{l2}" if l2 else display(self.path)
            notes.append(f"{where}: {m2}")
        raise ConfigError(message, hint=hint, file=display(self.path), line=line, column=col,
                          notes=notes)
