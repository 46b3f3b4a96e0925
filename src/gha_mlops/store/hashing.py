"""Content hashes of files and directory trees, with a stat cache so unchanged files are not re-read.

A file's hash is the hex sha256 of its bytes. A directory's hash is the sha256 of its manifest
(canonical JSON of ``[{"path", "sha256", "size"}]`` sorted by path) followed by ``.dir``, so a
tree hash is recognisable and its manifest can be stored in the cache as an ordinary object.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gha_mlops._fs import canonical_json_bytes
from gha_mlops.errors import UnsafePathError

CHUNK = 1 << 20
TREE_SUFFIX = ".dir"
# A file modified within this window of its hashing could change again inside the same mtime
# tick without its stat changing ("racy" entries, as git calls them): such hashes are not kept.
RACY_WINDOW_NS = 1_000_000_000


_SHA256 = re.compile(r"[0-9a-f]{64}")
_OBJECT_DIGEST = re.compile(r"[0-9a-f]{64}(?:\.dir)?")
# Parts of 1-255 characters other than "/", NUL and "\\", none of them "." or "..".
_SAFE_ASCII_PATH = re.compile(
    r"(?:(?!\.{1,2}/)[^/\0\\]{1,255}/)*(?!\.{1,2}\Z)[^/\0\\]{1,255}")
# The longest path and file name Linux accepts (PATH_MAX, NAME_MAX), in bytes.
MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255


def is_tree(digest: str) -> bool:
    return digest.endswith(TREE_SUFFIX)


def is_sha256(value: object) -> bool:
    """True for a file's digest as gha-mlops writes it: exactly 64 lowercase hex digits."""
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def is_object_digest(value: object) -> bool:
    """True for any object digest: a file's sha256, or a tree's ``<sha256>.dir``.

    Digests that come from outside (pointers, manifests, pack indexes, a remote's listing)
    must pass this before they name a path: ``object_path("../../x")`` would leave the cache.
    """
    return isinstance(value, str) and _OBJECT_DIGEST.fullmatch(value) is not None


def relpath_problem(path: object) -> str | None:
    """Why ``path`` is not a safe relative POSIX path, or None when it is one.

    Safe: a non-empty ``str`` of ``/``-separated parts, none of them empty, ``.`` or ``..``,
    no NUL or backslash, not absolute, valid UTF-8 (no lone surrogates), at most
    :data:`MAX_PATH_BYTES` bytes with parts of at most :data:`MAX_NAME_BYTES`. Joined to a
    folder, such a path never leaves it textually (symlinks are the caller's business).
    """
    if not isinstance(path, str):
        return f"a path must be a string, not {type(path).__name__}"
    if path.isascii() and len(path) <= MAX_PATH_BYTES and _SAFE_ASCII_PATH.fullmatch(path):
        return None  # the common case, in one regex (manifests list 100,000s of paths)
    if not path:
        return "the path is empty"
    if "\0" in path:
        return "the path contains a NUL byte"
    if "\\" in path:
        return "the path contains a backslash"
    if path.startswith("/"):
        return "the path is absolute"
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        return "the path is not valid UTF-8"
    if len(encoded) > MAX_PATH_BYTES:
        return f"the path is longer than {MAX_PATH_BYTES} bytes"
    for part in path.split("/"):
        if not part:
            return "the path has an empty part ('//' or a trailing '/')"
        if part in (".", ".."):
            return f"the path has a {part!r} part"
        if len(part.encode("utf-8")) > MAX_NAME_BYTES:
            return f"a part of the path is longer than {MAX_NAME_BYTES} bytes"
    return None


def sha256_file(path: Path | str) -> str:
    """Stream ``path`` through sha256 in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def tree_manifest_bytes(entries: list[dict[str, Any]]) -> bytes:
    return canonical_json_bytes(sorted(entries, key=lambda e: e["path"]))


def tree_digest(manifest: bytes) -> str:
    return hashlib.sha256(manifest).hexdigest() + TREE_SUFFIX


def walk_files(root: Path, *, inside: Path | None = None) -> Iterator[tuple[str, os.stat_result]]:
    """Regular files below ``root`` as (POSIX relative path, stat), in no particular order.

    Links to folders are not followed; links to files are, as the file they name. With
    ``inside``, a link whose target is not inside the real path of ``inside`` raises
    :class:`~gha_mlops.errors.UnsafePathError`: what is walked for ``data add`` is pushed to a
    remote, and a link planted in a data folder must not carry a secret there.

    Relative paths are built by joining names (``os.path.relpath`` per file costs more than
    the stat itself on 10,000-file trees)."""
    limit = os.path.realpath(inside) + os.sep if inside is not None else None
    stack: list[tuple[str, str]] = [(str(root), "")]
    while stack:
        directory, prefix = stack.pop()
        with os.scandir(directory) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, f"{prefix}{entry.name}/"))
                elif entry.is_file():
                    if limit is not None and entry.is_symlink():
                        _check_link(entry.path, limit)
                    yield f"{prefix}{entry.name}", entry.stat()


def _check_link(path: str, limit: str) -> None:
    target = os.path.realpath(path)
    if not target.startswith(limit):
        raise UnsafePathError(
            f"{path} is a link to {target}, outside the workspace",
            hint="gha-mlops does not copy files from outside the workspace into a dataset: "
                 "replace the link with the file itself, or remove it")


class StatCache:
    """(path, inode, mtime, size) -> sha256, kept in SQLite under the workspace state dir.

    Loaded into memory once; new entries are written back by :meth:`flush`. Thread-safe.
    """

    def __init__(self, db_path: Path | None) -> None:
        self._db_path = db_path
        self._lock = threading.Lock()
        self._rows: dict[str, tuple[int, int, int, str]] = {}
        self._dirty: dict[str, tuple[int, int, int, str]] = {}
        if db_path is not None and db_path.exists():
            try:
                with sqlite3.connect(db_path) as conn:
                    for path, ino, mtime, size, digest in conn.execute(
                        "SELECT path, ino, mtime_ns, size, sha256 FROM stat"
                    ):
                        self._rows[path] = (ino, mtime, size, digest)
            except sqlite3.DatabaseError:
                self._rows = {}  # a damaged cache only costs a re-hash

    def get(self, path: str, st: os.stat_result) -> str | None:
        row = self._rows.get(path)
        if row is not None and row[:3] == (st.st_ino, st.st_mtime_ns, st.st_size):
            return row[3]
        return None

    def put(self, path: str, st: os.stat_result, digest: str) -> None:
        if st.st_mtime_ns > time.time_ns() - RACY_WINDOW_NS:
            return
        row = (st.st_ino, st.st_mtime_ns, st.st_size, digest)
        with self._lock:
            if self._rows.get(path) != row:
                self._rows[path] = row
                self._dirty[path] = row

    def flush(self) -> None:
        """Persist new entries (one transaction). Safe to call from one thread at a time."""
        if self._db_path is None:
            return
        with self._lock:
            dirty, self._dirty = self._dirty, {}
        if not dirty:
            return
        self._db_path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._db_path, timeout=30)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS stat (path TEXT PRIMARY KEY, ino INTEGER, "
                "mtime_ns INTEGER, size INTEGER, sha256 TEXT)"
            )
            with conn:
                conn.executemany(
                    "INSERT OR REPLACE INTO stat VALUES (?, ?, ?, ?, ?)",
                    [(p, *row) for p, row in dirty.items()],
                )
        finally:
            conn.close()


class Hasher:
    """Hashes workspace paths (files or trees) through a :class:`StatCache`."""

    def __init__(self, root: Path, stat_cache: StatCache, *, jobs: int | None = None) -> None:
        self.root = root
        self.stat_cache = stat_cache
        self.jobs = jobs or min(8, os.cpu_count() or 1)
        # Tree manifests computed this session, so the cache can store them without re-walking.
        self.manifests: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def _file(self, rel: str, st: os.stat_result) -> str:
        digest = self.stat_cache.get(rel, st)
        if digest is None:
            digest = sha256_file(self.root / rel)
            self.stat_cache.put(rel, st, digest)
        return digest

    def hash_path(self, rel: str) -> str | None:
        """The hash of workspace path ``rel``, or None when it does not exist."""
        full = self.root / rel
        try:
            st = full.stat()
        except FileNotFoundError:
            return None
        if not full.is_dir():
            return self._file(rel, st)
        return self.hash_tree(rel)[0]

    def hash_tree(self, rel: str) -> tuple[str, bytes]:
        """(tree hash, manifest bytes) of directory ``rel``; files hashed in parallel."""
        entries: list[dict[str, Any]] = []
        stale: list[tuple[str, os.stat_result]] = []
        for sub, st in walk_files(self.root / rel):
            digest = self.stat_cache.get(f"{rel}/{sub}", st)
            if digest is None:
                stale.append((sub, st))
            else:
                entries.append({"path": sub, "sha256": digest, "size": st.st_size})

        def one(item: tuple[str, os.stat_result]) -> dict[str, Any]:
            sub, st = item
            return {"path": sub, "sha256": self._file(f"{rel}/{sub}", st), "size": st.st_size}

        # Only files the stat cache cannot vouch for are read, in parallel when many.
        if len(stale) > 16 and self.jobs > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(self.jobs) as pool:
                entries.extend(pool.map(one, stale))
        else:
            entries.extend(one(f) for f in stale)
        manifest = tree_manifest_bytes(entries)
        digest = tree_digest(manifest)
        with self._lock:
            self.manifests[digest] = manifest
        return digest, manifest
