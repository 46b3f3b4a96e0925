"""The one reader of a run's files: by the sha256 its record names, with one size limit.

Two runs of one workspace (the baseline, then the head, as in a local ``gha-mlops report
--baseline latest~1``) write the same paths: the workspace then holds the head's metrics and
plots, and the baseline's are only in the content cache (``.gha-mlops/cache/objects/ab/cdef..``),
where every output is kept under its sha256. :func:`read_run_file` reads a file from there
(unless told to look only in the workspace), and from the workspace file only when its bytes
are the recorded ones: the bytes it returns always hash to the recorded digest, so a report
never shows another run's file as this run's.

Records come from artifacts and pull requests, so every input is hostile: a digest that is
not 64 hex digits is never made into a path, a relative path that is absolute or climbs out
(``..``) is never read, a cache object must be a regular file inside the cache (a link out of
it is not followed), and no file larger than :data:`MAX_RUN_FILE_BYTES` is read.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from gha_mlops.config import STATE_DIR
from gha_mlops.errors import ExitCode, GhaMlopsError
from gha_mlops.store.hashing import is_sha256, sha256_file

MAX_RUN_FILE_BYTES = 16 << 20
"""The most bytes read of any one file of a run (a metrics document, a CSV curve, an image):
a record from a pull request must not make a report read a gigabyte."""

Source = Literal["cache", "workspace"]
Reason = Literal["unsafe", "absent", "missing", "too-large", "unreadable", "changed"]
"""Why a file could not be read. ``unsafe``: the record names a path or digest that is never
read; ``absent``: not there, and no cache to look in either (a record downloaded without its
files); ``missing``: neither in the workspace nor in a cache that should have held it;
``too-large``: over :data:`MAX_RUN_FILE_BYTES`; ``unreadable``: an OS error; ``changed``: the
bytes there are not the run's."""


class RunFileError(GhaMlopsError):
    """A file a run record names cannot be shown as the run's: :attr:`reason` says why (see
    :data:`Reason`), the message names the file. Callers that show a report of what *can* be
    read turn it into a note; nothing half-checked is ever returned instead."""

    exit_code = ExitCode.DATA_INTEGRITY

    def __init__(self, message: str, *, reason: Reason, rel: str) -> None:
        super().__init__(message, hint="the run record's sha256 is the truth: restore the "
                         "run's files (e.g. download its artifact) or run it again")
        self.reason: Reason = reason
        self.rel = rel


@dataclass(frozen=True)
class RunFile:
    """A file of a run: its bytes (hash-checked against the record) and where they were
    found."""

    rel: str
    data: bytes
    source: Source


def safe_rel(rel: str) -> bool:
    """True for a relative POSIX path that stays below its root textually (no ``..``)."""
    path = PurePosixPath(rel)
    return bool(rel) and not path.is_absolute() and ".." not in path.parts


def cache_dir(root: Path) -> Path:
    """The content cache of the workspace ``root``."""
    return root / STATE_DIR / "cache"


def read_run_file(root: Path, rel: str, digest: str, *, cache: bool = True) -> RunFile:
    """The bytes of file ``rel`` of a run whose record gives it sha256 ``digest``: from the
    content cache under ``root`` when it holds them (and ``cache``), else from ``root / rel``
    when that file hashes to ``digest``. Raises :class:`RunFileError` for anything else
    (see :data:`Reason`); reads at most :data:`MAX_RUN_FILE_BYTES` + 1 bytes of any file."""
    if not safe_rel(rel) or not digest:
        raise RunFileError(f"{rel!r} is not a file path inside the run", reason="unsafe",
                           rel=rel)
    has_cache = cache and (cache_dir(root) / "objects").is_dir()
    if has_cache:
        cached = _from_cache(cache_dir(root), digest)
        if cached is not None:
            return RunFile(rel, cached, "cache")
    path = root / rel
    if not path.is_file():
        if has_cache:
            raise RunFileError(f"{rel} is neither in the workspace nor in its cache",
                               reason="missing", rel=rel)
        if cache:  # a folder with no cache: a record downloaded without its files
            raise RunFileError(f"{rel} is not here", reason="absent", rel=rel)
        raise RunFileError(f"{rel} is not in the workspace", reason="missing", rel=rel)
    data = _read_bounded(path, rel)
    if hashlib.sha256(data).hexdigest() != digest:
        if not cache:
            message = f"{rel} in the workspace is not this run's (its sha256 differs)"
        else:
            missing = " and the cache does not hold the run's copy" if has_cache else ""
            message = f"{rel} here is not the run's (its sha256 differs){missing}"
        raise RunFileError(message, reason="changed", rel=rel)
    return RunFile(rel, data, "workspace")


def _read_bounded(path: Path, rel: str) -> bytes:
    """At most :data:`MAX_RUN_FILE_BYTES` of ``path``, or :class:`RunFileError`."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            data = fh.read(MAX_RUN_FILE_BYTES + 1)
    except OSError as err:
        raise RunFileError(f"{rel} cannot be read: {err.strerror or err}", reason="unreadable",
                           rel=rel) from err
    if max(size, len(data)) > MAX_RUN_FILE_BYTES:  # len: it may have grown since the stat
        raise RunFileError(f"{rel} is too large to read ({max(size, len(data)) >> 20} MiB, "
                           f"more than {MAX_RUN_FILE_BYTES >> 20} MiB)", reason="too-large",
                           rel=rel)
    return data


def _object_path(cache: Path, digest: str) -> Path:
    return cache / "objects" / digest[:2] / digest[2:]


def _from_cache(cache: Path, digest: str) -> bytes | None:
    """Object ``digest`` of ``cache`` when it is a regular file inside the cache, at most
    :data:`MAX_RUN_FILE_BYTES` long, whose bytes hash to ``digest``; else None."""
    if not is_sha256(digest):
        return None  # a tree (``.dir``) or not a digest at all: never a path
    path = _object_path(cache, digest)
    try:
        real = os.path.realpath(path)
        if os.path.dirname(os.path.dirname(real)) != os.path.realpath(cache / "objects"):
            return None  # a link out of the cache: not an object the cache wrote
        if not os.path.isfile(real) or os.path.getsize(real) > MAX_RUN_FILE_BYTES:
            return None
        with open(real, "rb") as fh:
            data = fh.read(MAX_RUN_FILE_BYTES + 1)
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == digest else None


def recorded_size(root: Path, rel: str, digest: str) -> int | None:
    """The size of file ``rel`` (sha256 ``digest``) of a run, of whichever copy holds the
    run's bytes: ``root / rel``, else the cache's object; None when neither does. Streams
    the hash, with no size limit: it reads no bytes into memory (a model may be gigabytes)."""
    if not safe_rel(rel):
        return None
    candidates = [root / rel]
    if is_sha256(digest):
        candidates.append(_object_path(cache_dir(root), digest))
    for path in candidates:
        try:
            if path.is_file() and sha256_file(path) == digest:
                return path.stat().st_size
        except OSError:
            continue
    return None
