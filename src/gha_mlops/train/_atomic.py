"""Atomic file writes: a reader sees the old file or the whole new one, never half of one."""

from __future__ import annotations

import os
from pathlib import Path

from gha_mlops import _fs


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, creating parent directories.

    The bytes go to a temporary file in the same directory, are flushed to disk, and the file
    is renamed over ``path``, so the write is all or nothing; the temporary file is removed
    if anything fails.
    """
    _fs.atomic_write_bytes(Path(path), data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text (newlines are written as given)."""
    atomic_write_bytes(path, text.encode("utf-8"))
