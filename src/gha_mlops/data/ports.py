"""The port the data layer talks to storage through: a flat key -> bytes store.

Implementations (adapters) live in :mod:`gha_mlops.data.stores`: a local directory (a shared
disk or NAS, ``/path`` or ``file://``), S3 through boto3 (``s3://bucket/prefix``), and an
in-memory store for tests. Keys are POSIX-style relative paths. The pack layer
(:mod:`gha_mlops.data.packs`) builds the remote layout on top of this port. A store owns
``close()`` and is a context manager (:class:`~gha_mlops._closing.Closing`): whoever opens one
closes it (an S3 client holds pooled connections). Tests use the in-memory store that
:mod:`gha_mlops.testing.fakes` exports.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from gha_mlops._closing import Closing
from gha_mlops.errors import RemoteError


class TransientStoreError(RemoteError):
    """A failure that may succeed when retried: a connection refused or dropped midway, a
    timeout, throttling, a 5xx. Adapters raise it (with the remote URL in the message) so the
    transfer layer can retry with backoff; every other failure is final."""


class ObjectStore(Closing, Protocol):
    """Byte storage under keys. Writes become visible to readers whole or not at all."""

    url: str

    def upload_file(self, key: str, src: Path) -> None:
        """Store the file ``src`` under ``key`` (multipart for large files where supported)."""

    def upload_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``."""

    def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of ``key`` (fewer if ``key`` ends before ``end``: callers
        check the length); raises ``KeyError(key)`` if it does not exist."""

    def download(self, key: str, dest: Path, *, offset: int = 0) -> None:
        """Stream ``key`` from byte ``offset`` on, appending to ``dest`` (which then holds
        ``offset`` bytes already): this is how an interrupted download resumes.

        Raises ``KeyError(key)`` if it does not exist. If the connection drops midway,
        ``dest`` keeps the bytes that arrived and :class:`TransientStoreError` is raised."""

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        """``(key, size)`` of every key under ``prefix``, paginated as needed."""

    def size(self, key: str) -> int | None:
        """The size of ``key``, or None when it does not exist."""
