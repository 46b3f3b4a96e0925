"""The run cache: a stage signature -> the outputs it produced.

``.gha-mlops/cache/runs/ab/<signature>.json`` holds ``{"outs": {path: digest}, "stage": ...,
"run_id": ..., "metrics": ..., "runtime": ...}``, so returning to an earlier signature restores
the outputs from the object store instead of running the stage again.

Entries come from disk (a checkout, a restored CI cache) and are read as hostile: only a
regular file (a FIFO would block the reader), at most :data:`MAX_ENTRY_BYTES`, any nesting the
JSON parser refuses is an unreadable entry. What an entry may say is checked by its reader
(:func:`gha_mlops.pipeline.decide.parse_entry` for the engine, :mod:`gha_mlops.pipeline.gc`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from gha_mlops._fs import JSONFileError, atomic_write_json, read_json_file
from gha_mlops.store.objects import ContentCache

# An honest entry holds digests, metrics and a runtime report.
MAX_ENTRY_BYTES = 64 * 1024 * 1024


class RunCache:
    """The run cache beside the object store ``cache`` (its outputs live there)."""

    def __init__(self, cache: ContentCache) -> None:
        self.cache = cache
        self.root = cache.root / "runs"

    def entry_path(self, signature: str) -> Path:
        return self.root / signature[:2] / f"{signature}.json"

    def entries(self) -> Iterator[Path]:
        """Every entry file, sorted."""
        return iter(sorted(self.root.glob("*/*.json")))

    def read(self, signature: str) -> object:
        """The entry for ``signature`` as parsed JSON; None when there is none or it cannot be
        read (the stage then runs)."""
        try:
            return read_json_file(self.entry_path(signature), max_bytes=MAX_ENTRY_BYTES)
        except (OSError, JSONFileError):
            return None

    def save(self, signature: str, outs: Mapping[str, str], extra: Mapping[str, Any]) -> None:
        atomic_write_json(self.entry_path(signature), {"outs": dict(outs), **extra})
