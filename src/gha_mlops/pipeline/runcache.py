"""The run cache: a stage signature -> the outputs it produced.

``.gha-mlops/cache/runs/ab/<signature>.json`` holds ``{"outs": {path: digest}, "stage": ...,
"run_id": ..., "metrics": ..., "runtime": ...}``, so returning to an earlier signature restores
the outputs from the object store instead of running the stage again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from gha_mlops._fs import atomic_write_json
from gha_mlops.store.hashing import is_object_digest
from gha_mlops.store.objects import ContentCache, ManifestError


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

    def lookup(self, signature: str) -> dict[str, Any] | None:
        """The outputs recorded for ``signature``, if every one of them is still cached."""
        try:
            entry: dict[str, Any] = json.loads(self.entry_path(signature).read_bytes())
        except (OSError, ValueError):
            return None
        outs = entry.get("outs")
        if not isinstance(outs, dict) or not all(is_object_digest(d) for d in outs.values()):
            return None  # a damaged entry: the stage runs again
        try:
            if not all(self.cache.has(d) for d in outs.values()):
                return None
        except ManifestError:
            return None  # an output whose manifest is damaged cannot be restored: re-run
        return entry

    def save(self, signature: str, outs: Mapping[str, str], extra: Mapping[str, Any]) -> None:
        atomic_write_json(self.entry_path(signature), {"outs": dict(outs), **extra})
