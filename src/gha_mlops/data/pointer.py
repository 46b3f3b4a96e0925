"""Dataset pointers: small YAML files committed to git beside the data they pin.

``data/images`` is pinned by ``data/images.lock.yaml``::

    # gha-mlops dataset pointer: commit this file; the data stays out of git.
    name: images
    path: images            # relative to this file
    version: 1f0c...e9.dir  # sha256 of the file, or of the directory's manifest + ".dir"
    files: 10000
    size: 102400000
    source: https://example.org/images.tar   # optional, read-only origin pinned by version

The version is the dataset's identity: the same bytes give the same version on any machine.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from gha_mlops._fs import atomic_write_text
from gha_mlops.config._yaml import parse_yaml
from gha_mlops.errors import ConfigError
from gha_mlops.store.hashing import is_object_digest, relpath_problem

POINTER_SUFFIX = ".lock.yaml"
# \Z, not $: "$" also matches before a trailing newline.
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
# Never a dataset: git's own files (a dataset at .git/config could set a command git runs)
# and the state folder that holds the cache itself.
_RESERVED_PARTS = frozenset((".git", ".gha-mlops"))
_SKIP_DIRS = {".git", ".gha-mlops", "__pycache__", ".venv", "node_modules"}


@dataclass(frozen=True)
class Dataset:
    """A pinned dataset. ``path`` and ``pointer`` are POSIX, relative to the workspace."""

    name: str
    path: str
    pointer: str
    version: str
    files: int
    size: int
    source: str | None = None

    @property
    def is_tree(self) -> bool:
        return self.version.endswith(".dir")


def pointer_for(data_rel: str) -> str:
    return data_rel + POINTER_SUFFIX


def read_pointer(root: Path, pointer_rel: str) -> Dataset:
    """Parse one pointer file; every problem names the file and the key."""
    path = root / pointer_rel
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"dataset pointer {pointer_rel} does not exist",
                          file=pointer_rel) from None
    # A pointer comes with a pull request: read it with the bounded loader (aliases, depth
    # and size limited), like every other YAML of the workspace, unless it has exactly the
    # plain form gha-mlops writes (then both readings give the same mapping).
    raw = plain_pointer(data)
    if raw is None:
        raw = parse_yaml(Path(pointer_rel), data)
    if not isinstance(raw, dict):
        raise ConfigError("a dataset pointer must be a mapping (name, path, version, ...)",
                          hint="re-create it with `gha-mlops data add PATH`", file=pointer_rel)

    def need(key: str, kind: type, check: Any = None, form: str = "") -> Any:
        value = raw.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) or (check and not check(value)):
            raise ConfigError(
                f"key {key!r} must be {form or kind.__name__}, got {value!r}",
                hint="the pointer was edited by hand: restore it from git, or re-create it "
                "with `gha-mlops data add PATH`", file=pointer_rel)
        return value

    unknown = set(raw) - {"name", "path", "version", "files", "size", "source"}
    if unknown:
        raise ConfigError(f"unknown key {sorted(unknown)[0]!r} in a dataset pointer",
                          hint="allowed: name, path, version, files, size, source",
                          file=pointer_rel)
    name = need("name", str, NAME.match, "a dataset name (letters, digits, _ . -)")
    # A pointer comes with a pull request: its path and version are hostile input. The path
    # is where `data pull` writes, the version names a file in the cache.
    rel = need("path", str, _safe_data_path, "a path relative to the pointer, inside the "
               "workspace (no '..', '.', empty parts, backslashes or NUL; not in .git or "
               ".gha-mlops)")
    version = need("version", str, is_object_digest, "a sha256 (64 lowercase hex digits, "
                   "+ .dir for a directory)")
    files = need("files", int, lambda v: 0 <= v < 1 << 63, "a whole number")
    size = need("size", int, lambda v: 0 <= v < 1 << 63, "a whole number")
    source = raw.get("source")
    if source is not None and not (isinstance(source, str) and
                                   source.startswith(("https://", "http://"))):
        raise ConfigError(f"key 'source' must be an https:// URL, got {source!r}",
                          file=pointer_rel)
    parent = PurePosixPath(pointer_rel).parent
    if not _safe_data_path(str(parent / rel)):
        raise ConfigError(f"key 'path' leads to {str(parent / rel)!r}, which cannot hold a "
                          "dataset", hint="keep datasets out of .git and .gha-mlops",
                          file=pointer_rel)
    return Dataset(name=name, path=str(parent / rel) if str(parent) != "." else rel,
                   pointer=pointer_rel, version=version, files=files, size=size, source=source)


# The form write_pointer gives, read without PyYAML: importing it and compiling its resolvers
# costs a no-op run ~10 ms. Each value is one that YAML reads as this very string or integer
# (a word starting with a letter that is none of YAML 1.1's booleans or nulls, a digest, a
# decimal without leading zeros, a URL without spaces, quotes or flow characters); anything
# else, comments after a value included, goes to the YAML loader.
_PLAIN_LINE = re.compile(
    rb"(?:(name|path): ([A-Za-z_][A-Za-z0-9_./-]{0,254})"
    rb"|(version): ([0-9a-f]{64}(?:\.dir)?)"
    rb"|(files|size): (0|[1-9][0-9]{0,18})"
    rb"|(source): (https?://[A-Za-z0-9._~/?=&%+@:-]{1,2000}))\Z")
_COMMENT = re.compile(rb"#[\x20-\x7e]*")
_YAML_WORDS = frozenset(
    w for base in ("y", "yes", "n", "no", "true", "false", "on", "off", "null")
    for w in (base, base.capitalize(), base.upper()))


def plain_pointer(data: bytes) -> dict[str, Any] | None:
    """The mapping of a pointer in the plain form gha-mlops writes (comment lines, then one
    ``key: value`` per line, each key once), the same that YAML would give; None for anything
    else, which the YAML loader then reads (and reports on)."""
    out: dict[str, Any] = {}
    for line in data.split(b"\n"):
        if not line:
            continue
        if line.startswith(b"#"):
            if _COMMENT.fullmatch(line) is None:
                return None  # YAML refuses some bytes even in a comment: let it say which
            continue
        match = _PLAIN_LINE.match(line)
        if match is None:
            return None
        groups = [g for g in match.groups() if g is not None]
        key, value = groups[0].decode(), groups[1].decode()
        if key in out or value in _YAML_WORDS or value.endswith(":") or value.isdigit() != (
                key in ("files", "size")):
            return None  # a version of digits only is an integer to YAML
        out[key] = int(value) if key in ("files", "size") else value
    return out or None


def _safe_data_path(path: str) -> bool:
    return relpath_problem(path) is None and not _RESERVED_PARTS & set(path.split("/"))


def write_pointer(root: Path, ds: Dataset) -> None:
    """Write ``ds``'s pointer atomically (keys in a fixed order, so diffs stay small)."""
    rel = PurePosixPath(ds.path).name
    lines = [
        "# gha-mlops dataset pointer: commit this file; the data stays out of git.",
        f"# Get the data with: gha-mlops data pull {ds.name}",
        f"name: {ds.name}",
        f"path: {rel}",
        f"version: {ds.version}",
        f"files: {ds.files}",
        f"size: {ds.size}",
    ]
    if ds.source:
        lines.append(f"source: {ds.source}")
    atomic_write_text(root / ds.pointer, "\n".join(lines) + "\n")


def _pointer_paths(root: Path) -> Iterator[str]:
    from gha_mlops.git import is_ignored, ls_files

    listed = ls_files(root, [f"*{POINTER_SUFFIX}"])
    # git lists nothing in a directory its repository ignores: walk it instead (and walk
    # where there is no git).
    if listed is not None and not is_ignored(root):
        yield from (p for p in listed if not p.startswith(".gha-mlops/"))
        return
    for dirpath, dirnames, filenames in os.walk(root):
        pointed = {f[: -len(POINTER_SUFFIX)] for f in filenames if f.endswith(POINTER_SUFFIX)}
        # Never descend into the datasets themselves: they can hold many files.
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and d not in pointed]
        for f in sorted(filenames):
            if f.endswith(POINTER_SUFFIX):
                yield os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/")


def find_datasets(root: Path) -> dict[str, Dataset]:
    """Every dataset of the workspace by name; two pointers with one name is an error."""
    found: dict[str, Dataset] = {}
    for rel in sorted(_pointer_paths(root)):
        if not (root / rel).is_file():
            continue
        ds = read_pointer(root, rel)
        if ds.name in found:
            raise ConfigError(f"two datasets are named {ds.name!r}: {found[ds.name].pointer} "
                              f"and {rel}", hint="rename one with `gha-mlops data add PATH "
                              "--name NEW`", file=rel)
        found[ds.name] = ds
    return found
