"""A run's files, by the sha256 its record names: from the content cache, else the workspace.

Two runs of one workspace (the baseline, then the head, as in a local ``gha-mlops report
--baseline latest~1``) write the same paths: the workspace then holds the head's metrics and
plots, and the baseline's are only in the content cache (``.gha-mlops/cache/objects/ab/cdef..``),
where every output is kept under its sha256. :func:`read_recorded` reads a file from there,
and from the workspace file only when its bytes are the recorded ones; either way the bytes
it returns hash to the recorded digest, so a report never shows another run's file as this
run's.

Records come from artifacts and pull requests: a digest that is not 64 hex digits is never
made into a path, a relative path that is absolute or climbs out (``..``) is never read, a
cache object must be a file inside the cache (a link out of it is not followed), and no file
larger than the caller's bound is read.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from gha_mlops.config import STATE_DIR
from gha_mlops.store.hashing import is_sha256, sha256_file


@dataclass(frozen=True)
class Recorded:
    """What :func:`read_recorded` found: the bytes (hash-checked) and where they came from
    (``cache`` or ``workspace``), or ``problem``: why neither could be used (``None`` when the
    file is simply not there, e.g. a record downloaded without its files)."""

    data: bytes | None = None
    source: str | None = None
    problem: str | None = None


def safe_rel(rel: str) -> bool:
    """True for a relative POSIX path that stays below its root textually (no ``..``)."""
    path = PurePosixPath(rel)
    return bool(rel) and not path.is_absolute() and ".." not in path.parts


def cache_dir(root: Path) -> Path:
    """The content cache of the workspace ``root``."""
    return root / STATE_DIR / "cache"


def read_recorded(root: Path, rel: str, digest: str, *, max_bytes: int) -> Recorded:
    """The bytes of file ``rel`` of a run whose record gives it sha256 ``digest``, read from
    the content cache under ``root`` when it holds them, else from ``root / rel`` when that
    file hashes to ``digest``; see the module documentation. Never raises for a missing,
    changed, damaged or oversized file: the result says what was wrong."""
    if not safe_rel(rel):
        return Recorded()
    cached = _from_cache(cache_dir(root), digest, max_bytes)
    if cached is not None:
        return Recorded(cached, "cache")
    has_cache = (cache_dir(root) / "objects").is_dir()
    path = root / rel
    if not path.is_file():
        # In a workspace (it has a cache) the file should have been in one of the two.
        return Recorded(problem=f"{rel} is neither in the workspace nor in its cache"
                        if has_cache else None)
    try:
        if path.stat().st_size > max_bytes:
            return Recorded(problem=f"{rel} is too large to read")
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as err:
        return Recorded(problem=f"{rel} cannot be read: {err.strerror or err}")
    if len(data) > max_bytes:  # it grew since the stat
        return Recorded(problem=f"{rel} is too large to read")
    if hashlib.sha256(data).hexdigest() != digest:
        missing = " and the cache does not hold the run's copy" if has_cache else ""
        return Recorded(problem=f"{rel} here is not the run's (its sha256 differs){missing}")
    return Recorded(data, "workspace")


def _from_cache(cache: Path, digest: str, max_bytes: int) -> bytes | None:
    """Object ``digest`` of ``cache`` when it is a regular file inside the cache, at most
    ``max_bytes`` long, whose bytes hash to ``digest``; else None."""
    if not is_sha256(digest):
        return None  # a tree (``.dir``) or not a digest at all: never a path
    objects = cache / "objects"
    path = objects / digest[:2] / digest[2:]
    try:
        real = os.path.realpath(path)
        if os.path.dirname(os.path.dirname(real)) != os.path.realpath(objects):
            return None  # a link out of the cache: not an object the cache wrote
        if not os.path.isfile(real) or os.path.getsize(real) > max_bytes:
            return None
        with open(real, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == digest else None


def recorded_size(root: Path, rel: str, digest: str) -> int | None:
    """The size of file ``rel`` (sha256 ``digest``) of a run, of whichever copy holds the
    run's bytes: ``root / rel``, else the cache's object; None when neither does. Streams
    the hash (a model may be gigabytes)."""
    if not safe_rel(rel):
        return None
    candidates = [root / rel]
    if is_sha256(digest):
        objects = cache_dir(root) / "objects"
        candidates.append(objects / digest[:2] / digest[2:])
    for path in candidates:
        try:
            if path.is_file() and sha256_file(path) == digest:
                return path.stat().st_size
        except OSError:
            continue
    return None
