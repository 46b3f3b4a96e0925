"""The tags of a repository, kept between commands (measured in benchmarks/bench_registry.py:
the one ``git for-each-ref`` with messages is most of a ``model list`` at 10,000 tags).

The cache (``.git/gha-mlops/tags.json``) holds the tags with the *key* of the refs they were
read under: the identity (inode, size, mtime) of ``packed-refs`` and of every loose ref file
under ``refs/tags``. git changes a ref by writing a new file and renaming it over the old one,
so any tag created, moved or deleted, by any tool, gives a new inode and a new key; tag objects
never change. A repository whose refs are not files (reftable) or whose ``.git`` is not a
folder (a worktree, a submodule) is read afresh every time. The cache is derived data: one
that cannot be read or does not have its form is rebuilt, one that cannot be written is not.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from gha_mlops._fs import atomic_write_text
from gha_mlops.git import toplevel
from gha_mlops.registry._git import RawTag, list_tags

_FORMAT = 1
MAX_LOOSE = 100_000  # beyond this, walking refs/tags is no cheaper than asking git


def _git_dir(workspace: Path) -> Path | None:
    top = toplevel(workspace)
    git_dir = top / ".git" if top is not None else None
    if git_dir is None or not git_dir.is_dir() or (git_dir / "reftable").exists():
        return None
    return git_dir


def refs_key(git_dir: Path) -> list[list[object]] | None:
    """The identity of every file that says where a tag points; None when too many."""
    key: list[list[object]] = []
    with contextlib.suppress(FileNotFoundError):
        st = (git_dir / "packed-refs").stat()
        key.append(["packed-refs", st.st_ino, st.st_size, st.st_mtime_ns])
    base = git_dir / "refs" / "tags"
    for folder, _dirs, files in os.walk(base):
        for name in files:
            path = os.path.join(folder, name)
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(path)
                key.append([os.path.relpath(path, base), st.st_ino, st.st_size,
                            st.st_mtime_ns])
        if len(key) > MAX_LOOSE:
            return None
    key.sort()
    return key


def cached_tags(workspace: Path) -> list[RawTag]:
    """:func:`~gha_mlops.registry._git.list_tags`, from the cache when the refs are as they
    were when it was written (see the module's docstring)."""
    git_dir = _git_dir(workspace)
    key = refs_key(git_dir) if git_dir is not None else None
    if git_dir is None or key is None:
        return list_tags(workspace)
    path = git_dir / "gha-mlops" / "tags.json"
    found = _read(path, key)
    if found is not None:
        return found
    tags = list_tags(workspace)
    with contextlib.suppress(OSError):
        path.parent.mkdir(exist_ok=True)
        atomic_write_text(path, json.dumps({"format": _FORMAT, "key": key,
                                            "tags": [list(t) for t in tags]}))
    return tags


def _read(path: Path, key: list[list[object]]) -> list[RawTag] | None:
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT or doc.get("key") != key:
        return None
    rows = doc.get("tags")
    if not isinstance(rows, list):
        return None
    tags: list[RawTag] = []
    for row in rows:
        if (not isinstance(row, list) or len(row) != 7 or not isinstance(row[3], int)
                or not all(isinstance(v, str) for i, v in enumerate(row) if i != 3)):
            return None
        tags.append(RawTag(*row))
    return tags
