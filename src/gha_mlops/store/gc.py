"""Garbage collection of the object store: remove what no root names.

The store does not know who refers to its objects. The layers above hand it *roots* (the
digests that dataset pointers, run-cache entries and run records name); a root that is a tree
keeps every object its manifest lists.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from gha_mlops.store.hashing import is_tree
from gha_mlops.store.objects import ContentCache, ManifestError, remove_path

# A temp file of a writer in flight (fetches do not take the workspace lock) is left alone;
# only leftovers of a crash older than this are removed.
STALE_TEMP_SECONDS = 86400


@dataclass(frozen=True)
class GcResult:
    removed: int
    freed: int
    kept: int


def closure(cache: ContentCache, roots: Iterable[str]) -> set[str]:
    """``roots`` plus every object that a root tree's manifest lists."""
    keep: set[str] = set()
    for digest in roots:
        keep.add(digest)
        if is_tree(digest):
            try:
                tree = cache.tree_if_known(digest)
            except ManifestError:
                continue  # a malformed manifest holds nothing gc can vouch for; keep it alone
            if tree is not None:
                keep.update(tree.digests())
    return keep


def sweep(cache: ContentCache, roots: Iterable[str], *, dry_run: bool = False,
          now: float | None = None) -> GcResult:
    """Remove every object of ``cache`` that :func:`closure` of ``roots`` does not keep.

    The caller gathers every root before calling: nothing is deleted on a partial list."""
    keep = closure(cache, roots)
    removed = freed = kept = 0
    if not cache.objects.exists():
        return GcResult(0, 0, 0)
    stale = (time.time() if now is None else now) - STALE_TEMP_SECONDS
    for sub in cache.objects.iterdir():
        if sub.is_symlink() or not sub.is_dir():
            continue  # not a fan-out folder gha-mlops made: never remove through it
        for obj in sub.iterdir():
            if obj.name.startswith("."):
                if obj.stat().st_mtime < stale and not dry_run:
                    remove_path(obj)
                continue
            digest = sub.name + obj.name
            if digest in keep:
                kept += 1
                continue
            removed += 1
            freed += obj.stat().st_size
            if not dry_run:
                remove_path(obj)
    return GcResult(removed, freed, kept)
