"""What a stage reads, hashed into its signature: its dependencies (files, trees and pinned
datasets, which are put in place first), the params it reads and the environment lock."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

from gha_mlops._fs import resolve_inside
from gha_mlops.config import Stage, param_value
from gha_mlops.config.loader import DATA_PREFIX
from gha_mlops.errors import GhaMlopsError
from gha_mlops.pipeline.results import Reporter, RunContext, StageFailure, StageResult
from gha_mlops.pipeline.signature import stage_signature
from gha_mlops.store.hashing import is_tree

if TYPE_CHECKING:
    from gha_mlops.data.pointer import Dataset
    from gha_mlops.data.transfer import TransferStats


class _NoteListener:
    """Reports each dataset a run fetches as one line."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    def started(self, ds: Dataset, objects: int | None, nbytes: int | None) -> None:
        return None

    def finished(self, ds: Dataset, stats: TransferStats, source: str) -> None:
        if stats.objects:
            rate = stats.bytes / stats.seconds / 1e6 if stats.seconds > 0 else 0.0
            self.reporter.note(f"fetched dataset {ds.name} ({ds.version[:12]}, "
                               f"{stats.objects} objects, {stats.bytes / 1e6:.1f} MB) {source} "
                               f"in {stats.seconds:.2f} s ({rate:.1f} MB/s)")


class StageInputs:
    """Hashes stages' inputs for one run; thread-safe. ``datasets`` are the workspace's
    pinned datasets once a stage needed them (found by the loader already when a stage
    depends on ``data:NAME``), else None."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.p = ctx.pipeline
        self.root = ctx.root
        self.datasets: Mapping[str, Dataset] | None = ctx.pipeline.datasets
        self._lock = threading.Lock()

    def env_lock_digest(self) -> str | None:
        """The digest of the pipeline's environment lock file (None: it declares none)."""
        return self.ctx.hasher.hash_path(self.p.env_lock) if self.p.env_lock else None

    def fill(self, stage: Stage, res: StageResult) -> str:
        """Set ``res.deps``, ``res.params`` and ``res.signature`` (returned);
        :class:`StageFailure` when a dependency is missing or a pinned dataset cannot be put
        in place."""
        for dep in stage.deps:
            if dep.startswith(DATA_PREFIX):
                res.deps[dep] = self._dataset_dep(dep[len(DATA_PREFIX):])
                continue
            digest = self.ctx.hasher.hash_path(dep)
            if digest is None:
                raise StageFailure(f"dependency {dep!r} does not exist")
            if is_tree(digest) and digest in self.ctx.hasher.manifests:
                self.ctx.cache.store_manifest(digest, self.ctx.hasher.manifests[digest])
            res.deps[dep] = digest
        for key in stage.params:
            res.params[key] = param_value(self.p.params, key)
        res.signature = stage_signature(
            cmd=stage.cmd, deps=res.deps, params=res.params, env_lock=self.env_lock_digest(),
            seed=self.p.seed, outs=[(o.path, o.kind) for o in stage.outs],
            determinism=self.p.determinism)
        return res.signature

    def _dataset_dep(self, name: str) -> str:
        """The pinned version of dataset ``name``, after making sure the workspace holds it.

        Missing data that the cache holds is put in place; data that differs from its pin is
        never overwritten (it may be the user's work in progress): the stage fails instead.
        """
        with self._lock:
            if self.datasets is None:
                from gha_mlops.data.pointer import find_datasets

                self.datasets = find_datasets(self.root)
        ds = self.datasets.get(name)
        if ds is None:
            raise StageFailure(f"no dataset named {name!r}")
        digest = self.ctx.hasher.hash_path(ds.path)
        if digest == ds.version:
            return ds.version
        if digest is not None:
            raise StageFailure(
                f"dataset {name!r} at {ds.path} differs from its pinned version "
                f"{ds.version[:12]}: pin the change with `gha-mlops data add {ds.path}` or "
                f"restore the pin with `gha-mlops data checkout {name}`")
        if not self.ctx.cache.has(ds.version):
            self._fetch_dataset(ds)
        resolve_inside(self.root, ds.path, what=f"the path of dataset {name!r}")
        self.ctx.cache.checkout(ds.version, self.root / ds.path, inside=self.root)
        return ds.version

    def _fetch_dataset(self, ds: Dataset) -> None:
        """Fetch a pinned version the cache lacks: from its source URL or the remote."""
        # Imported only when a dataset must be fetched: a no-op run never needs the transfer
        # machinery (nor the network stack it may load).
        from gha_mlops.config._remotes import choose_remote
        from gha_mlops.data.service import Workspace, fetch

        with self._lock:  # one fetch at a time; a second stage finds it cached
            if self.ctx.cache.has(ds.version):
                return
            remote = None
            if not (ds.source and not ds.is_tree):
                if not self.p.remotes:
                    raise StageFailure(
                        f"dataset {ds.name!r} ({ds.version[:12]}) is not here and mlops.yaml "
                        f"declares no remote to fetch it from: run `gha-mlops data pull "
                        f"{ds.name}` where a remote is set up, or declare `remotes:`")
                remote = choose_remote(self.p.remotes, self.p.default_remote, None)
            listener = _NoteListener(self.ctx.reporter)
            try:
                fetch(Workspace(self.root), [ds], remote, listener=listener,
                      opener=self.ctx.options.open_store)
            except GhaMlopsError as err:
                raise StageFailure(f"dataset {ds.name!r} could not be fetched: {err.message}"
                                   + (f" ({err.hint})" if err.hint else "")) from None
