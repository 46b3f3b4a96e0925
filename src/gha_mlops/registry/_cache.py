"""The tags of a repository, kept between commands (measured in benchmarks/bench_registry.py:
the one ``git for-each-ref`` with messages is most of a ``model list`` at 10,000 tags).

The cache (``.git/gha-mlops/tags.json``) holds the tags with the *key* of the refs they were
read under, a digest of the identity (inode, size, mtime) of ``packed-refs`` and of every loose ref file
under ``refs/tags``. git changes a ref by writing a new file and renaming it over the old one,
so any tag created, moved or deleted, by any tool, gives a new inode and a new key; tag objects
never change. A repository whose refs are not files (reftable) or whose ``.git`` is not a
folder (a worktree, a submodule) is read afresh every time. The cache is derived data: one
that cannot be read, or whose tags do not hash to the sum in its header (an edit), is
rebuilt; one that cannot be written is not.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

from gha_mlops._fs import atomic_write_bytes
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


def refs_key(git_dir: Path) -> str | None:
    """A digest of the identity of every file that says where a tag points; None when there
    are too many loose ones to walk."""
    h = hashlib.sha256()
    with contextlib.suppress(FileNotFoundError):
        st = (git_dir / "packed-refs").stat()
        h.update(f"packed-refs\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    entries: list[str] = []
    stack = [str(git_dir / "refs" / "tags")]
    while stack:  # os.scandir: one stat per file, no path arithmetic per file
        folder = stack.pop()
        with contextlib.suppress(FileNotFoundError, NotADirectoryError), \
                os.scandir(folder) as found:
            for entry in found:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                    continue
                with contextlib.suppress(FileNotFoundError):
                    st = entry.stat(follow_symlinks=False)
                    entries.append(f"{entry.path}\0{st.st_ino}\0{st.st_size}\0"
                                   f"{st.st_mtime_ns}")
        if len(entries) > MAX_LOOSE:
            return None
    entries.sort()
    h.update("\n".join(entries).encode("utf-8", "surrogateescape"))
    return h.hexdigest()


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
    body = json.dumps([list(t) for t in tags]).encode()
    head = json.dumps({"format": _FORMAT, "key": key,
                       "sum": hashlib.sha256(body).hexdigest()}).encode()
    with contextlib.suppress(OSError):
        path.parent.mkdir(exist_ok=True)
        atomic_write_bytes(path, head + b"\n" + body)
    return tags


def _read(path: Path, key: str) -> list[RawTag] | None:
    """The cached tags: a header line (format, refs key, sha256 of the rest), then the tags
    as JSON. Anything else, or a rest that does not hash to the sum, is no cache."""
    try:
        data = path.read_bytes()
        cut = data.index(b"\n")
        head, body = json.loads(data[:cut]), data[cut + 1:]
        if (not isinstance(head, dict) or head.get("format") != _FORMAT
                or head.get("key") != key
                or head.get("sum") != hashlib.sha256(body).hexdigest()):
            return None
        return [RawTag(*row) for row in json.loads(body)]
    except (OSError, ValueError, TypeError):
        return None
