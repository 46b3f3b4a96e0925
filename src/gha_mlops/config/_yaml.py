"""YAML for the config files: a safe loader that rejects duplicate keys, syntax errors explained
in words at the line to look at, and key paths mapped back to lines for later errors.

Every YAML file gha-mlops reads from a workspace (``mlops.yaml``, the params file,
``runners.yaml``, sweep grids), ``--set`` values and the ``gha_mlops.train`` params helper go
through :func:`load_yaml`, which bounds the work a small file can cause: at most
:data:`MAX_BYTES` bytes, collections nested at most :data:`MAX_DEPTH` deep, and aliases
(``*name``) that add at most :data:`MAX_ALIAS_NODES` nodes (or :data:`ALIAS_FACTOR` times as
many as the file writes out, if more) when expanded. A "billion laughs" file of a few lines,
whose aliases of aliases would expand to billions of values, is refused before anything walks
the expanded values.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import gc
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from gha_mlops.errors import ConfigError

MAX_BYTES = 64 * 1024 * 1024
"""The largest YAML file read (64 MiB); a pipeline of 20,000 stages is about 4 MB."""
MAX_DEPTH = 100
"""The deepest nesting of mappings and lists, aliases expanded (the top-level mapping is 1)."""
MAX_ALIAS_NODES = 100_000
"""How many nodes (values, keys, mappings, lists) aliases may add when expanded, or
:data:`ALIAS_FACTOR` times the nodes the file writes out if that is more: a large pipeline may
alias a shared list in every stage, a file of a few lines may not expand to millions."""
ALIAS_FACTOR = 10
STRING_NODE_CHARS = 100
"""A string counts as one node per this many characters: an alias of a long string is a copy
in every JSON dump and hash of the params."""

_ALIAS_HINT = ("an alias (*name) stands for a copy of everything under its anchor (&name), so "
               "aliases of aliased collections multiply; write the values out, or alias smaller "
               "parts")

Loc = tuple[str | int, ...]
"""A key path into a YAML document: mapping keys and list indices."""


class Located:
    """Key path -> (line, column) of a YAML document, computed only when an error needs it."""

    def __init__(self, text: bytes) -> None:
        self._text = text
        self._root: Any = None
        self._composed = False
        self._index: dict[int, dict[str, tuple[Any, Any]]] = {}

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
                pair = self._keys(node).get(str(part))
                last = i == len(loc) - 1
                node = None if pair is None else pair[0] if (key and last) else pair[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                node = node.value[part] if part < len(node.value) else None
            else:
                node = None
        if node is not None:
            best = (node.start_mark.line + 1, node.start_mark.column + 1)
        return best

    def _keys(self, node: Any) -> dict[str, tuple[Any, Any]]:
        """The (key, value) nodes of a mapping by key text, the first of each, built once per
        mapping: a file with a problem in each of 20,000 stages is not searched 20,000 times."""
        found = self._index.get(id(node))
        if found is None:
            found = self._index[id(node)] = {}
            for k, v in node.value:
                found.setdefault(str(k.value), (k, v))
        return found


@functools.lru_cache(maxsize=1)
def safe_loader() -> Any:
    """A safe YAML loader (libyaml's when available) that rejects duplicate keys, which plain
    PyYAML silently resolves by keeping the last one, e.g. a stage defined twice."""
    import yaml

    try:
        from yaml import CSafeLoader as Base
    except ImportError:  # PyYAML built without libyaml
        from yaml import SafeLoader as Base  # type: ignore[assignment]

    return _unique_key_loader(yaml, _memo_loader(yaml, Base))


# Built on first use (yaml is imported lazily: a no-op run reads no YAML), hence factories.
def _memo_loader(yaml: Any, base: Any) -> Any:
    """``base`` that resolves the tag of each distinct plain scalar once and builds each
    distinct immutable scalar once."""
    scalar = yaml.ScalarNode
    plain_tags = frozenset(f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool",
                                                                "null"))
    base_resolve: Any = base.resolve

    class MemoLoader(base):  # type: ignore[misc]
        # A large pipeline repeats the same keys and values thousands of times: the tag of
        # each distinct plain scalar is resolved once, and each distinct immutable scalar
        # built once. Both are pure functions of the text, so the result is the same.
        PLAIN_TAGS = plain_tags

        def __init__(self, stream: Any) -> None:
            super().__init__(stream)
            self._tags: dict[tuple[str, Any], str] = {}
            self._scalars: dict[tuple[str, str], Any] = {}

        def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
            if kind is not scalar:
                return base_resolve(self, kind, value, implicit)
            key = (value, implicit)
            tag = self._tags.get(key)
            if tag is None:
                tag = self._tags[key] = base_resolve(self, kind, value, implicit)
            return tag

        def construct_object(self, node: Any, deep: bool = False) -> Any:
            if node.__class__ is not scalar or node.tag not in plain_tags:
                return super().construct_object(node, deep=deep)
            key = (node.tag, node.value)
            try:
                return self._scalars[key]
            except KeyError:
                value = self._scalars[key] = super().construct_object(node, deep=deep)
                return value

    return MemoLoader


def _unique_key_loader(yaml: Any, base: Any) -> Any:
    """``base`` (a :func:`_memo_loader`) that refuses duplicate keys and nesting deeper than
    MAX_DEPTH, and builds plain mappings and lists itself."""
    scalar = yaml.ScalarNode
    plain_tags = base.PLAIN_TAGS
    seq_tag = "tag:yaml.org,2002:seq"
    map_tag = "tag:yaml.org,2002:map"

    class UniqueKeyLoader(base):  # type: ignore[misc]
        def construct_tree(self, node: Any) -> Any:
            """``construct_document(node)``, refusing nesting deeper than MAX_DEPTH, for a
            document without recursive aliases (:func:`_check_expansion` passed it). Plain
            mappings and lists are built here, at a third of PyYAML's cost per node; anything
            else (other tags, merge keys, non-scalar keys, a key given twice) is left to
            PyYAML, which finds the same built objects through ``constructed_objects``."""
            try:
                return self._tree(node, 1)
            finally:
                self.constructed_objects: dict[Any, Any] = {}
                self.recursive_objects: dict[Any, Any] = {}

        def _tree(self, node: Any, depth: int) -> Any:
            cls = node.__class__
            if cls is scalar:
                built = self._scalars.get((node.tag, node.value))  # most are seen already
                return built if built is not None else self.construct_object(node)
            built = self.constructed_objects.get(node)
            if built is not None:  # an alias of a collection built already
                return built
            if depth > MAX_DEPTH:
                raise _depth_error(node.start_mark)
            if cls is yaml.SequenceNode and node.tag == seq_tag:
                items = [self._tree(child, depth + 1) for child in node.value]
                self.constructed_objects[node] = items
                return items
            if cls is yaml.MappingNode and node.tag == map_tag:
                mapping: dict[Any, Any] = {}
                for key_node, value_node in node.value:
                    if key_node.__class__ is not scalar or key_node.tag not in plain_tags:
                        return self._by_pyyaml(node, depth)
                    key = self._scalars.get((key_node.tag, key_node.value))
                    if key is None:
                        key = self.construct_object(key_node)
                    if key in mapping:  # PyYAML says which line repeats it
                        return self._by_pyyaml(node, depth)
                    mapping[key] = self._tree(value_node, depth + 1)
                self.constructed_objects[node] = mapping
                return mapping
            return self._by_pyyaml(node, depth)

        def _by_pyyaml(self, node: Any, depth: int) -> Any:
            """PyYAML's construction of ``node`` (recursive), once its nesting is checked."""
            try:
                _check_depth(node, MAX_DEPTH - depth + 1)
            except _Offence as off:
                raise _depth_error(off.node.start_mark) from None
            return self.construct_object(node, deep=True)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
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


class YamlLimitError(ValueError):
    """A YAML document that exceeds a bound of :func:`load_yaml`: where, and what to do."""

    def __init__(self, message: str, *, hint: str, line: int | None = None,
                 column: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.line = line
        self.column = column


def parse_yaml(path: Path, data: bytes) -> Any:
    """The document in ``data`` (read from ``path``), within the bounds of :func:`load_yaml`.

    Raises :class:`ConfigError` naming ``path`` (and the line, where there is one) for a syntax
    error, a duplicate key, or a document over a bound.
    """
    import yaml

    try:
        return load_yaml(data)
    except YamlLimitError as err:
        raise ConfigError(err.message, hint=err.hint, file=display(path), line=err.line,
                          column=err.column) from None
    except yaml.MarkedYAMLError as err:
        raise _yaml_error(path, data, err) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"not valid YAML: {err}", file=display(path),
                          hint="save the file as UTF-8 text") from None


def load_yaml(data: bytes | str) -> Any:
    """The document in ``data``, read with :func:`safe_loader`, or None for an empty one.

    Bounded: raises :class:`YamlLimitError` when ``data`` is over :data:`MAX_BYTES`, nests
    deeper than :data:`MAX_DEPTH`, holds aliases that would add more than
    :data:`MAX_ALIAS_NODES` nodes (or more than :data:`ALIAS_FACTOR` times what it writes
    out) when expanded, or an alias of a collection that contains it. Nothing is built
    before the alias checks, and they take time linear in the size of ``data``. Raises
    ``yaml.YAMLError`` for malformed YAML.
    """
    import yaml

    if len(data) > MAX_BYTES:
        raise YamlLimitError(
            f"the file is {len(data) / 2**20:.0f} MiB, more than the {MAX_BYTES // 2**20} MiB "
            "gha-mlops reads as YAML",
            hint="keep large data out of YAML: put it in a data file that a stage reads")
    # The node graph holds no garbage, but allocating it triggers the cyclic collector again
    # and again over everything allocated so far: without the pause a 4 MB file loads three
    # times slower. The nodes are freed before the collector is back, so it never sees them.
    with gc_paused():
        loader = safe_loader()(data)
        try:
            try:
                node = loader.get_single_node()
            except RecursionError:  # the pure-Python composer, without libyaml
                raise _depth_error(None) from None
            except yaml.MarkedYAMLError as err:
                if "maximum nesting depth" in str(err.problem):  # libyaml's bound (1000)
                    raise _depth_error(err.problem_mark) from None
                raise
            if node is None:
                return None
            _check_expansion(data, node)
            return loader.construct_tree(node)
        finally:
            loader.dispose()
            node = None


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (if on) for a burst of allocations that makes no
    cyclic garbage, such as building a large config; reference counting still frees memory."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _depth_error(mark: Any) -> YamlLimitError:
    return YamlLimitError(
        f"mappings and lists are nested more than {MAX_DEPTH} levels deep",
        hint=f"flatten the structure: gha-mlops reads YAML nested at most {MAX_DEPTH} levels "
        "deep (aliases included)",
        line=mark.line + 1 if mark is not None else None,
        column=mark.column + 1 if mark is not None else None)


class _Offence(Exception):
    """Where :func:`_check_expansion` stopped: the ``nth`` alias of ``node`` (0: the node)."""

    def __init__(self, kind: str, node: Any, nth: int) -> None:
        super().__init__(kind)
        self.kind = kind
        self.node = node
        self.nth = nth


def _check_expansion(data: bytes | str, root: Any) -> None:
    """Raise :class:`YamlLimitError` when ``root`` (a composed document, where an alias is the
    anchored node itself, shared) would, with its aliases expanded, nest deeper than
    :data:`MAX_DEPTH` or add more alias nodes than the budget, or is recursive. A document
    without anchors has no alias: its nesting is left to :meth:`construct_tree`."""
    try:
        anchored = b"&" in data if isinstance(data, bytes) else "&" in data
        if not anchored:
            return  # no anchor, so no alias: the nesting is checked while building
        written, refs = _measure(root)
    except _Offence as off:
        if off.kind == "deep" and off.nth == 0:
            raise _depth_error(off.node.start_mark) from None
        name, mark = _alias_at(data, off.node, off.nth)
        if off.kind == "deep":
            raise _depth_error(mark) from None
        raise YamlLimitError(
            f"the alias *{name} refers to a collection that contains it (a recursive structure)",
            hint="parameters and pipeline files must be trees: write the value out instead of "
            "aliasing the collection it is in",
            line=mark.line + 1 if mark else None,
            column=mark.column + 1 if mark else None) from None
    budget = max(MAX_ALIAS_NODES, ALIAS_FACTOR * written)
    added = 0
    for node, nth, size in refs:
        added += size
        if added > budget:
            name, mark = _alias_at(data, node, nth)
            raise YamlLimitError(
                f"aliases expand to more than {budget:,} nodes (the limit; a string counts one "
                f"per {STRING_NODE_CHARS} characters): the alias *{name} "
                f"here copies {size:,} and brings the total to {added:,}",
                hint=_ALIAS_HINT,
                line=mark.line + 1 if mark else None,
                column=mark.column + 1 if mark else None)


def _check_depth(root: Any, limit: int) -> None:
    """Raise :class:`_Offence` if ``root``, a tree without recursive aliases, nests more than
    ``limit`` collections deep; a walk level by level."""
    import yaml

    scalar = yaml.ScalarNode
    mapping = yaml.MappingNode
    level = [root] if root.__class__ is not scalar else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            raise _Offence("deep", level[0], 0)
        below: list[Any] = []
        for node in level:
            if node.__class__ is mapping:
                for key, value in node.value:
                    if key.__class__ is not scalar:
                        below.append(key)
                    if value.__class__ is not scalar:
                        below.append(value)
            else:
                below.extend(child for child in node.value if child.__class__ is not scalar)
        level = below


def _measure(root: Any) -> tuple[int, list[tuple[Any, int, int]]]:
    """Walk ``root`` once, in document order, without expanding aliases: the nodes written,
    and for each alias of a collection (the ``nth`` time its node is met again) the nodes its
    expansion adds. Raises :class:`_Offence` for nesting over :data:`MAX_DEPTH` and for a
    recursive alias. A string counts one node per :data:`STRING_NODE_CHARS` characters (a
    JSON dump of the params copies each alias of it); aliases of short scalars add one node
    each and are not listed."""
    import yaml

    collection = yaml.CollectionNode
    mapping = yaml.MappingNode
    if not isinstance(root, collection):
        return 1, []
    done: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded size, levels) when walked
    open_: set[int] = {id(root)}
    met_again: dict[int, int] = {}
    long_seen: set[int] = set()
    refs: list[tuple[Any, int, int]] = []
    written = 1

    def children(node: Any) -> list[Any]:
        if isinstance(node, mapping):
            return [part for pair in node.value for part in pair]
        return list(node.value)

    # One frame per open collection: [node, its children, next child, size, levels].
    stack: list[list[Any]] = [[root, children(root), 0, 1, 1]]
    while stack:
        frame = stack[-1]
        kids = frame[1]
        i = frame[2]
        if i == len(kids):
            stack.pop()
            node_id = id(frame[0])
            open_.discard(node_id)
            done[node_id] = (frame[3], frame[4])
            if stack:
                stack[-1][3] += frame[3]
                stack[-1][4] = max(stack[-1][4], frame[4] + 1)
            continue
        frame[2] = i + 1
        child = kids[i]
        if not isinstance(child, collection):
            weight = 1 + len(child.value) // STRING_NODE_CHARS
            frame[3] += weight
            if weight == 1:  # short scalars met again through an alias cost 1 each: no note
                written += 1
            elif id(child) in long_seen:  # an alias of a long string: copied by every walker
                nth = met_again[id(child)] = met_again.get(id(child), 0) + 1
                refs.append((child, nth, weight))
            else:
                long_seen.add(id(child))
                written += weight
            continue
        cid = id(child)
        seen = done.get(cid)
        if seen is not None or cid in open_:
            nth = met_again[cid] = met_again.get(cid, 0) + 1
            if seen is None:
                raise _Offence("recursive", child, nth)
            if len(stack) + seen[1] > MAX_DEPTH:
                raise _Offence("deep", child, nth)
            refs.append((child, nth, seen[0]))
            frame[3] += seen[0]
            frame[4] = max(frame[4], seen[1] + 1)
            continue
        if len(stack) + 1 > MAX_DEPTH:
            raise _Offence("deep", child, 0)
        open_.add(cid)
        written += 1
        stack.append([child, children(child), 0, 1, 1])
    return written, refs


def _alias_at(data: bytes | str, node: Any, nth: int) -> tuple[str, Any]:
    """The anchor name of ``node`` and the mark of its ``nth`` alias, from the events of
    ``data`` (document order, as :func:`_measure` walks). Only called to explain an error."""
    import yaml

    loader = safe_loader()(data)
    name: str | None = None
    count = 0
    try:
        while loader.check_event():
            event: Any = loader.get_event()
            if isinstance(event, yaml.AliasEvent):
                if name is not None and event.anchor == name:
                    count += 1
                    if count == nth:
                        return name, event.start_mark
            elif name is None and isinstance(event, yaml.NodeEvent) and event.anchor:
                start: Any = event.start_mark
                if (start.line, start.column) == (node.start_mark.line, node.start_mark.column):
                    name = str(event.anchor)
    finally:
        loader.dispose()
    return name or "?", None


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
    elif ("mapping values are not allowed" in problem or "expected key" in problem) and (
            keyless := _key_without_colon(lines, mark)) is not None:
        # YAML read the line without ':' and the next one as one value, and only stumbles
        # on the ':' (or the key) of the next line: the line to fix is the one before.
        mark = keyless
        message = "not valid YAML: a line without 'key: value' (could not find expected ':')"
        hint = ("add the ':' after the key (`key: value`); if the line continues the value "
                "above, quote the whole value")
    elif "mapping values are not allowed" in problem:
        message = "not valid YAML: a 'key: value' where none is allowed"
        hint = ("this line is indented deeper than the keys above it, or an unquoted value "
                "contains ': '; fix the indentation or put the value in quotes")
    elif "tab character that violates indentation" in problem:
        message = "not valid YAML: a tab character is used for indentation"
        hint = "indent with spaces only; YAML does not allow tabs"
    elif (context.startswith("while parsing a block mapping") and "expected key" in problem
          ) or "expected <document start>" in problem:
        message = "not valid YAML: this line's indentation does not match the keys above it"
        hint = "keys of one mapping must start in the same column; indent with spaces consistently"
        first = next((i for i, t in enumerate(lines) if t.strip() and not t.lstrip()
                      .startswith(("#", "%", "---"))), None)
        if first is not None and first < mark.line and lines[first][:1] == " ":
            notes.append(f"the first key (line {first + 1}) is indented: top-level keys "
                         "start in the first column")
    elif context.startswith("while parsing a block collection") and "'-'" in problem:
        message = ("not valid YAML: this line's indentation does not match the list items "
                   "above it")
        hint = ("a key after a list belongs at the indentation of the key that holds the list; "
                "list items start with '- ' in the same column")
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


_KEYLESS_WINDOW = 500
"""How many lines above a YAML error :func:`_key_without_colon` scans at most."""


def _key_without_colon(lines: list[str], mark: Any) -> Any:
    """The start of the line that lacks its ':' when YAML failed at ``mark`` on a later line,
    or None. Such a line (``cmd python train.py``) starts a plain value that YAML folds
    together with the following lines, and the error surfaces only on the next ``key:``. It
    is found as the last plain scalar before ``mark`` that starts a line of its own (a
    value after ``key: `` or ``- `` does not) on an earlier line and is not a key.

    Only runs to explain an error, with the pure-Python scanner (libyaml keeps the tokens it
    held back to itself), on at most :data:`_KEYLESS_WINDOW` lines above ``mark``: from the
    last of the least indented lines there, which no multi-line value can be inside of."""
    import yaml

    if mark is None or mark.line == 0 or mark.line >= len(lines):
        return None
    first = 0
    if mark.line > _KEYLESS_WINDOW:
        def depth(i: int) -> int:  # blank and comment lines never start a window
            text = lines[i].lstrip(" ")
            return _indent(lines[i]) if text and text[0] != "#" else 1 << 30

        first = min(range(mark.line - _KEYLESS_WINDOW, mark.line), key=lambda i: (depth(i), -i))
    loader: Any = yaml.SafeLoader("\n".join(lines[first: mark.line + 1]) + "\n")
    seen: list[Any] = []
    try:
        while loader.check_token():
            seen.append(loader.get_token())
    except yaml.YAMLError:
        seen.extend(loader.tokens)  # what the scanner held back to look for a ':'
    finally:
        loader.dispose()
    at = (mark.line - first, mark.column)
    before = [t for t in seen if (t.start_mark.line, t.start_mark.column) < at]
    scalars = [i for i, t in enumerate(before) if isinstance(t, yaml.ScalarToken)]
    if not scalars:
        return None
    i = scalars[-1]
    token = before[i]
    line, column = token.start_mark.line + first, token.start_mark.column
    if (token.style is not None or line >= mark.line
            or (i and isinstance(before[i - 1], yaml.KeyToken))):
        return None
    # The line must start with the value, and the line YAML stumbled on must sit at its
    # indentation or deeper (a sibling or a child of the would-be key): a value on a line of
    # its own under `key:`, followed by a key indented less, is not a missing ':'.
    if column != _indent(lines[line]) or _indent(lines[mark.line]) < column:
        return None
    return yaml.Mark(mark.name, 0, line, column, None, 0)


def _indent(text: str) -> int:
    return len(text) - len(text.lstrip(" "))


class Problems:
    """Collects every problem in a file, then raises one ConfigError listing them all."""

    def __init__(self, path: Path, text: bytes) -> None:
        self.path = path
        self.text = text
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
