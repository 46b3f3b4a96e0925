"""Atomic file writes: nothing half-written is ever visible to a reader."""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path
from typing import Any

# Read once, at import (single-threaded): os.umask can only be read by setting it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def resolve_inside(root: Path, path: Path | str, *, what: str = "path") -> Path:
    """The real path of ``path`` (relative to ``root``, or absolute), every symlink in it
    resolved, refusing one that then leaves the real path of ``root``.

    Call it before every write, removal or restore in a workspace: a textual check passes
    ``data/out`` even when ``data`` is a symlink to ``/etc``. The last component need not
    exist. ``what`` names the path in the error (``output 'model/'`` ...).
    """
    from gha_mlops.errors import UnsafePathError

    real_root = os.path.realpath(root)
    target = os.path.realpath(os.path.join(real_root, os.fspath(path)))
    if target != real_root and not target.startswith(real_root.rstrip(os.sep) + os.sep):
        raise UnsafePathError(
            f"{what} {os.fspath(path)!r} leads outside the workspace (to {target})",
            hint="a symlink (or '..') in the path points outside the workspace; gha-mlops "
                 "only writes inside it: replace the link with a real folder")
    return Path(target)


def temp_file(directory: Path, prefix: str, suffix: str = ".tmp",
              mode: int = 0o600) -> tuple[int, str]:
    """Create a new private file in ``directory``: ``(fd, path)``, like ``tempfile.mkstemp``
    (which costs a few milliseconds of imports on every start; this is on the hot path)."""
    for _ in range(100):
        path = os.path.join(directory, f"{prefix}{os.urandom(6).hex()}{suffix}")
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {directory}")


def temp_dir(directory: Path, prefix: str, suffix: str = ".tmp") -> Path:
    """Create a new private directory in ``directory``, like ``tempfile.mkdtemp``."""
    for _ in range(100):
        path = Path(directory, f"{prefix}{os.urandom(6).hex()}{suffix}")
        try:
            path.mkdir(mode=0o700)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {directory}")


def atomic_write_bytes(path: Path, data: bytes, *, mode: int | None = None,
                       durable: bool = False) -> None:
    """Write ``data`` to ``path`` through a temp file in the same directory and a rename.

    A crash leaves either the old file or the new one, never a mix; the temp file is removed
    on any failure. ``durable`` also fsyncs the data before the rename, for files that are
    the only copy of something (run records); derived files (indexes, caches) skip it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file(path.parent, f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, mode if mode is not None else 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str, *, durable: bool = False) -> None:
    """Atomically write UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


def dumps_json(obj: Any) -> str:
    """Canonical, human-readable JSON: sorted keys, two-space indent, trailing newline."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def atomic_write_json(path: Path, obj: Any, *, durable: bool = False) -> None:
    """Atomically write ``obj`` as canonical JSON."""
    atomic_write_text(path, dumps_json(obj), durable=durable)


def canonical_json_bytes(obj: Any) -> bytes:
    """Compact canonical JSON used for hashing (key order and spacing never vary)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class JSONFileError(ValueError):
    """A JSON file that cannot be read: ``reason`` is ``not-regular`` (a FIFO, a device: it
    would block or never end), ``too-large`` or ``not-json``; the message says it in words."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def read_json_file(path: Path, *, max_bytes: int) -> Any:
    """The JSON document in ``path``, read as hostile input: only a regular file, at most
    ``max_bytes``, and nesting deeper than the parser goes is refused. :class:`OSError` when
    it cannot be opened; :class:`JSONFileError` saying why it cannot be read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with open(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise JSONFileError("not-regular", "is not a regular file")
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise JSONFileError("too-large", f"is larger than {max_bytes} bytes")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as err:  # RecursionError: nested deeper than it goes
        raise JSONFileError("not-json", f"is not valid JSON ({err})") from None
