"""Dataset operations on a workspace: add, list, status, verify, checkout, push, fetch.

Datasets live in the same content-addressed cache as pipeline outputs
(``.gha-mlops/cache/objects``), so a dataset that is also a stage output is stored once.

The operations that change the workspace or its cache's roots take the workspace lock
themselves (:class:`~gha_mlops.store.lock.WorkspaceLock`): :func:`add` and
:func:`checkout_all` (``data gc`` is :func:`gha_mlops.pipeline.gc.gc`). The building blocks
they share with a run (:func:`checkout`, :func:`fetch`) do not: a run holds the lock already.
Object stores are opened through the :class:`StoreOpener` a caller hands in (the CLI gets it
from :mod:`gha_mlops.bootstrap`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

from gha_mlops._fs import atomic_write_bytes, resolve_inside
from gha_mlops.config import STATE_DIR, ensure_state_dir
from gha_mlops.config._remotes import choose_remote
from gha_mlops.config.model import Remote
from gha_mlops.data.pointer import NAME, Dataset, find_datasets, pointer_for, write_pointer
from gha_mlops.errors import GhaMlopsError, UsageError
from gha_mlops.store.hashing import (
    Hasher,
    StatCache,
    is_object_digest,
    is_tree,
    tree_digest,
    tree_manifest_bytes,
    walk_files,
)
from gha_mlops.store.lock import WorkspaceLock
from gha_mlops.store.objects import ContentCache, ManifestError, Tree

if TYPE_CHECKING:
    # Only for annotations: a run that must fetch a dataset imports this module, and the
    # modules that move data bring thread pools and, for https:// sources, the whole network
    # stack (http.client, ssl, email, urllib): the functions that move data import them when
    # they run.
    from gha_mlops.data.ports import ObjectStore
    from gha_mlops.data.transfer import Progress, TransferStats

# How long a data command waits for a run (or another data command) to release the workspace.
LOCK_WAIT = 60.0


class Workspace:
    """The data side of a workspace: its cache, stat cache and dataset pointers."""

    def __init__(self, root: Path, *, jobs: int | None = None, link: str = "auto") -> None:
        self.root = root.absolute()
        self.state = self.root / STATE_DIR
        self.cache = ContentCache(self.state / "cache", link=link)
        # Hashing and copying are CPU-bound here (the GIL for small files): more threads than
        # cores only add contention.
        self.jobs = jobs or (os.cpu_count() or 1)

    # Loaded on first use: a fetch never hashes the workspace, so it need not read the stat
    # cache (a large one takes a while).
    @functools.cached_property
    def stat_cache(self) -> StatCache:
        return StatCache(self.state / "tmp" / "stat.db")

    @functools.cached_property
    def hasher(self) -> Hasher:
        return Hasher(self.root, self.stat_cache, jobs=self.jobs)

    def rel(self, path: Path) -> str:
        full = (Path.cwd() / path).resolve() if not path.is_absolute() else path.resolve()
        try:
            rel = full.relative_to(self.root.resolve())
        except ValueError:
            raise UsageError(f"{path} is outside the workspace {self.root}",
                             hint="datasets must live inside the directory of mlops.yaml") from None
        if str(rel) == "." or rel.parts[0] == STATE_DIR:
            raise UsageError(f"{path} cannot be a dataset", hint="name a file or directory "
                             "inside the workspace")
        return rel.as_posix()

    def open_state(self) -> Path:
        """The state folder (``.gha-mlops``), made on first use with the ``.gitignore`` that
        keeps it out of git: every operation that may write there calls this first."""
        return ensure_state_dir(self.root)

    def datasets(self) -> dict[str, Dataset]:
        return find_datasets(self.root)

    def select(self, names: Iterable[str]) -> list[Dataset]:
        all_ = self.datasets()
        names = list(names)
        if not names:
            return list(all_.values())
        unknown = [n for n in names if n not in all_]
        if unknown:
            raise UsageError(f"no dataset named {unknown[0]!r}",
                             hint=("datasets here: " + ", ".join(all_)) if all_ else
                             "add one with `gha-mlops data add PATH`")
        return [all_[n] for n in names]


@dataclass
class AddResult:
    dataset: Dataset
    new_objects: int
    seconds: float
    changed: bool


def add(ws: Workspace, path: Path, *, name: str | None = None,
        source: str | None = None) -> AddResult:
    """Hash ``path`` (a file or a tree), put its contents in the cache and write its pointer,
    holding the workspace lock (waiting up to :data:`LOCK_WAIT` seconds for it).

    Files are read once: a file the cache lacks is hashed while it is copied in; a file the
    stat cache vouches for and the cache holds is not read at all. Runs on all cores.
    ``source`` (https:// URL, single files only) records where the file can be downloaded
    again: `data pull` then fetches it from there, verified against the pinned version.
    """
    if source is not None and not source.startswith(("https://", "http://")):
        raise UsageError(f"--source must be an https:// URL, got {source!r}")
    with WorkspaceLock(ws.open_state(), wait=LOCK_WAIT, what="data add"):
        return _store_and_pin(ws, path, name, source)


def _store_and_pin(ws: Workspace, path: Path, name: str | None,
                   source: str | None) -> AddResult:
    """:func:`add`, with the workspace lock held."""
    started = time.monotonic()
    rel = ws.rel(path)
    full = ws.root / rel
    if not full.exists():
        raise UsageError(f"{rel} does not exist", hint="give the path of a data file or directory")
    name = name or Path(rel).name.split(".")[0] or Path(rel).name
    if not NAME.fullmatch(name):
        raise UsageError(f"{name!r} is not a valid dataset name",
                         hint="use --name with letters, digits, '_', '-' and '.'")
    existing = ws.datasets()
    other = existing.get(name)
    if other is not None and other.path != rel:
        raise UsageError(f"a dataset named {name!r} already exists at {other.path}",
                         hint="choose another name with --name")
    new_objects = 0
    if full.is_dir():
        if source is not None:
            raise UsageError("--source pins a single downloaded file, not a directory",
                             hint="push directories to a remote (`gha-mlops data push`)")
        entries, new_objects = _store_tree(ws, rel)
        manifest = tree_manifest_bytes(entries)
        version = tree_digest(manifest)
        ws.cache.store_manifest(version, manifest)
        files, size = len(entries), sum(e["size"] for e in entries)
    else:
        st = full.stat()
        version = ws.stat_cache.get(rel, st) or ""
        if not version or not ws.cache.object_path(version).exists():
            version, created = ws.cache.add_file(full)
            ws.stat_cache.put(rel, st, version)
            new_objects = int(created)
        files, size = 1, st.st_size
    ws.stat_cache.flush()
    ds = Dataset(name=name, path=rel, pointer=pointer_for(rel), version=version, files=files,
                 size=size, source=source or (other.source if other and other.version == version
                                              else None))
    changed = other is None or other.version != version
    # The pointer is renamed into place (a link there is replaced); its folder is the
    # dataset's, already resolved by ws.rel. The .gitignore is resolved in _git_ignore.
    resolve_inside(ws.root, ds.pointer, what=f"pointer of dataset {name}")
    write_pointer(ws.root, ds)
    _git_ignore(ws.root, rel)
    return AddResult(ds, new_objects, time.monotonic() - started, changed)


def _store_tree(ws: Workspace, rel: str) -> tuple[list[dict[str, Any]], int]:
    from concurrent.futures import ThreadPoolExecutor  # ~3 ms (logging): only when adding

    base = ws.root / rel
    items = list(walk_files(base, inside=ws.root))

    prefix = f"{base}/"

    def batch(chunk: list[tuple[str, os.stat_result]]) -> tuple[list[dict[str, Any]], int]:
        entries, new_count = [], 0
        for sub, st in chunk:
            key = f"{rel}/{sub}"
            digest = ws.stat_cache.get(key, st)
            if digest is None or not ws.cache.object_path(digest).exists():
                digest, new = ws.cache.add_file(prefix + sub)
                new_count += new
                ws.stat_cache.put(key, st, digest)
            entries.append({"path": sub, "sha256": digest, "size": st.st_size})
        return entries, new_count

    # A few large batches, not a task per file: with 10,000s of small files the per-task
    # hand-off between threads costs more than the work.
    size = max(256, len(items) // (ws.jobs * 4) + 1)
    chunks = [items[i:i + size] for i in range(0, len(items), size)]
    with ThreadPoolExecutor(ws.jobs) as pool:
        results = list(pool.map(batch, chunks))
    return [e for entries, _ in results for e in entries], sum(n for _, n in results)


def _git_ignore(root: Path, rel: str) -> None:
    """Keep the data itself out of git: ``/name`` in the .gitignore beside it.

    The .gitignore may be a symlink (a pull request can commit one): it is followed only
    while it stays in the workspace (else :class:`UnsafePathError`), and the new text is
    written atomically to the file it resolves to."""
    line = "/" + PurePosixPath(rel).name
    ignore_rel = str(PurePosixPath(rel).parent / ".gitignore")
    ignore = resolve_inside(root, ignore_rel, what=".gitignore")
    text = ignore.read_bytes() if ignore.is_file() else b""
    entry = line.encode("utf-8")
    if entry not in text.splitlines():
        sep = b"" if not text or text.endswith(b"\n") else b"\n"
        atomic_write_bytes(ignore, text + sep + entry + b"\n")


# --------------------------------------------------------------------------- inspection


@dataclass
class DatasetStatus:
    dataset: Dataset
    workspace: str  # "ok", "missing", "modified"
    cache_missing: int  # objects the local cache lacks
    remote_missing: int | None = None  # objects the remote lacks (None: not asked)
    modified_files: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.dataset.name, "path": self.dataset.path,
                "version": self.dataset.version, "workspace": self.workspace,
                "cache_missing": self.cache_missing, "remote_missing": self.remote_missing,
                "modified_files": self.modified_files}


def tree_of(ws: Workspace, ds: Dataset, *, source: str | None = None) -> Tree | None:
    """The validated manifest of tree dataset ``ds``, or None when the cache lacks it. A
    malformed one raises :class:`ManifestError` naming the dataset (and ``source``, the
    remote it just came from)."""
    try:
        return ws.cache.tree_if_known(ds.version)
    except ManifestError as err:
        hint = (_FOREIGN_MANIFEST.format(remote=source) if source else
                f"delete {ws.cache.object_path(ds.version)} and pull {ds.name} again from a "
                f"remote only trusted people can write to; if {ds.pointer} came with a pull "
                "request, check where it points")
        raise err.within(dataset=f"{ds.name} ({ds.pointer})", source=source,
                         hint=hint) from None


_FOREIGN_MANIFEST = ("the remote holds a manifest that is not one gha-mlops wrote; nothing "
                     "was written to the workspace. Check who can write to {remote}")


def objects_of(ws: Workspace, ds: Dataset) -> list[str] | None:
    """Every object digest the dataset needs (manifest included), or None when the manifest
    itself is not in the cache (fetch it first). A malformed manifest raises
    :class:`ManifestError`."""
    if not ds.is_tree:
        return [ds.version]
    tree = tree_of(ws, ds)
    if tree is None:
        return None
    return [ds.version, *sorted(tree.digests())]


def status_named(ws: Workspace, names: Iterable[str], *, remote: str | None,
                 opener: StoreOpener | None = None) -> list[DatasetStatus]:
    """:func:`status` of the datasets called ``names`` (all when empty). ``remote``: None asks
    no remote, ``""`` the default one (:func:`resolve_remote`), else the one of that name."""
    target = resolve_remote(ws, remote or None) if remote is not None else None
    return status(ws, ws.select(names), target, opener=opener)


def status(ws: Workspace, datasets: Iterable[Dataset], remote: Remote | None = None, *,
           opener: StoreOpener | None = None) -> list[DatasetStatus]:
    """Per dataset: the workspace copy against the pin, the objects the local cache lacks and,
    with ``remote``, the objects the remote lacks (one listing of the remote, opened with
    ``opener``)."""
    datasets = list(datasets)
    ws.open_state()  # the stat cache is written below
    out = []
    for ds in datasets:
        digest = ws.hasher.hash_path(ds.path)
        state = "ok" if digest == ds.version else ("missing" if digest is None else "modified")
        modified: list[str] = []
        if state == "modified" and ds.is_tree and digest and is_tree(digest):
            tree = tree_of(ws, ds)
            old = tree.files() if tree is not None else {}
            new = {e["path"]: e["sha256"] for e in json.loads(ws.hasher.manifests[digest])}
            modified = [p for p in sorted(set(old) | set(new)) if old.get(p) != new.get(p)]
        objects = objects_of(ws, ds)
        missing = (len(ws.cache.absent(objects)) if objects is not None else ds.files + 1)
        out.append(DatasetStatus(ds, state, missing, modified_files=modified[:20]))
    ws.stat_cache.flush()
    if remote is not None:
        from gha_mlops.data.transfer import missing_on_remote

        wanted = {ds.name: objects_of(ws, ds) or [ds.version] for ds in datasets}
        with contextlib.closing(_LazyStore(ws, remote, opener)) as store:
            absent = missing_on_remote(store.get(),
                                       {d for objs in wanted.values() for d in objs},
                                       index_dir=_index_dir(ws, remote))
        for row in out:
            row.remote_missing = sum(1 for d in wanted[row.dataset.name] if d in absent)
    return out


@dataclass
class VerifyProblem:
    dataset: str
    where: str  # "cache" or "workspace"
    item: str
    expected: str
    actual: str | None


def verify_named(ws: Workspace, names: Iterable[str]) -> int:
    """:func:`verify` the datasets called ``names`` (all when empty): the number verified, or
    :class:`GhaMlopsError` listing every problem found."""
    datasets = ws.select(names)
    problems = verify(ws, datasets)
    if problems:
        raise GhaMlopsError(
            f"{len(problems)} problems found",
            hint="a corrupted cache object can be deleted and fetched again (`gha-mlops data "
            "pull`); a modified workspace file is restored by `gha-mlops data pull` or pinned "
            "anew by `gha-mlops data add`",
            notes=[f"{p.dataset}: {p.where} {p.item}: expected {p.expected[:16]}, got "
                   f"{(p.actual or 'missing')[:16]}" for p in problems])
    return len(datasets)


def verify(ws: Workspace, datasets: Iterable[Dataset]) -> list[VerifyProblem]:
    """Re-hash (no stat cache) every cached object and workspace file of the datasets."""
    from concurrent.futures import ThreadPoolExecutor

    from gha_mlops.store.hashing import sha256_file

    problems: list[VerifyProblem] = []
    for ds in datasets:
        objects = objects_of(ws, ds) or [ds.version]

        def check(digest: str, ds: Dataset = ds) -> VerifyProblem | None:
            path = ws.cache.object_path(digest)
            if not path.exists():
                return None  # missing is status's business, not corruption
            got = sha256_file(path)
            if got != digest.removesuffix(".dir"):
                return VerifyProblem(ds.name, "cache", str(path), digest, got)
            return None

        with ThreadPoolExecutor(ws.jobs) as pool:
            problems.extend(p for p in pool.map(check, objects) if p)
        fresh = Hasher(ws.root, StatCache(None), jobs=ws.jobs).hash_path(ds.path)
        if fresh is not None and fresh != ds.version:
            problems.append(VerifyProblem(ds.name, "workspace", ds.path, ds.version, fresh))
    return problems


def checkout_all(ws: Workspace, datasets: Iterable[Dataset], *, to: Path | None = None,
                 placed: Callable[[Dataset, Path], None] | None = None,
                 what: str = "data checkout") -> None:
    """:func:`checkout` each of ``datasets`` holding the workspace lock (``what`` tells who
    holds it to a command that waits); ``placed(dataset, destination)`` after each."""
    with WorkspaceLock(ws.open_state(), wait=LOCK_WAIT, what=what):
        for ds in datasets:
            dest = checkout(ws, ds, to=to)
            if placed is not None:
                placed(ds, dest)


def checkout(ws: Workspace, ds: Dataset, *, to: Path | None = None) -> Path:
    """Materialize ``ds`` from the cache at its path (or under ``to``), atomically. The caller
    holds the workspace lock (:func:`checkout_all` takes it).

    Nothing is written outside the workspace through a symlink: the destination is resolved
    first and refused (:class:`UnsafePathError`) when it leaves the workspace, or, for a
    ``to`` the user named outside the workspace, when it leaves ``to``. A symlink inside
    the existing tree where the dataset has a folder is refused too. A malformed manifest
    raises :class:`ManifestError` before anything is written."""
    from gha_mlops.store.objects import CacheMiss

    inside, dest = _destination(ws, ds, to)
    ws.open_state()
    if to is None and ws.hasher.hash_path(ds.path) == ds.version:
        return dest
    if ds.is_tree:
        tree_of(ws, ds)  # a malformed manifest is named with its dataset
    try:
        ws.cache.checkout(ds.version, dest, inside=inside)
    except ManifestError as err:  # an object that is not the size its entry says
        raise err.within(dataset=f"{ds.name} ({ds.pointer})") from None
    except CacheMiss:
        raise GhaMlopsError(
            f"dataset {ds.name} ({ds.version[:12]}) is not in the local cache",
            hint=f"fetch it first: gha-mlops data pull {ds.name}") from None
    return dest


def _destination(ws: Workspace, ds: Dataset, to: Path | None) -> tuple[Path, Path]:
    """``(the folder writes must stay in, the destination)`` of a checkout of ``ds``."""
    if to is None:
        dest = ws.root / ds.path
        resolve_inside(ws.root, ds.path, what=f"dataset {ds.name} ({ds.pointer}) path")
        return ws.root, dest
    full = Path(os.path.normpath(Path.cwd() / to))
    name = PurePosixPath(ds.path).name
    real_root = os.path.realpath(ws.root)
    if (full == ws.root or ws.root in full.parents
            or os.path.commonpath([real_root, os.path.realpath(full)]) == real_root):
        # Inside the workspace, a folder from the working tree may be a planted link.
        resolve_inside(ws.root, full, what="--to folder")
        return ws.root, full / name
    # Elsewhere, the folder is the user's own choice: only the dataset's name is checked.
    return full, full / name


def dataset_roots(ws: Workspace) -> list[str]:
    """The object digests that the workspace's dataset pointers name: roots that garbage
    collection keeps (with the objects of every tree among them)."""
    # Pointers are validated as they are read; the check keeps a root a digest.
    return [ds.version for ds in ws.datasets().values() if is_object_digest(ds.version)]


# --------------------------------------------------------------------------- remotes


def resolve_remote(ws: Workspace, name: str | None) -> Remote:
    """The remote called ``name``, else ``default_remote``, else the only one declared."""
    from gha_mlops.config import load_pipeline

    pipeline = load_pipeline(ws.root / "mlops.yaml", datasets=find_datasets)
    return choose_remote(pipeline.remotes, pipeline.default_remote, name)


class StoreOpener(Protocol):
    """Opens the object store of a remote declared in ``mlops.yaml``: the real adapters
    (:func:`gha_mlops.data.stores.open_remote`, from :mod:`gha_mlops.bootstrap`) or, in tests,
    a fake (e.g. one that hands out a :class:`~gha_mlops.data.stores.MemoryStore`)."""

    def __call__(self, remote: Remote, *, root: Path) -> ObjectStore:
        """The store of ``remote`` for the workspace ``root`` (a relative directory is taken
        relative to it); the caller closes it."""


def _opener(opener: StoreOpener | None) -> StoreOpener:
    """``opener``; the service never builds adapters itself (:mod:`gha_mlops.bootstrap` does),
    so a caller that must open a remote and handed none is told so."""
    if opener is None:
        raise UsageError("a data remote must be opened, and no object-store opener was passed",
                         hint="from Python, pass opener=gha_mlops.bootstrap.object_stores() "
                         "(or a fake); from a command, this is a bug in gha-mlops: please "
                         "report it")
    return opener


def _index_dir(ws: Workspace, remote: Remote) -> Path:
    return ws.state / "remotes" / remote.name


class TransferListener(Protocol):
    """Told about each dataset's transfer (the CLI draws progress bars or prints lines)."""

    def started(self, ds: Dataset, objects: int | None, nbytes: int | None) -> Progress | None:
        """A dataset's transfer begins: ``objects``/``nbytes`` to move, None when not known
        yet (a push learns what the remote lacks only as it goes). Returns the callback for
        the running totals of this dataset, or None."""

    def finished(self, ds: Dataset, stats: TransferStats, source: str) -> None:
        """A dataset's transfer ended (``stats.objects == 0``: there was nothing to move)."""


def _add(a: TransferStats, b: TransferStats) -> TransferStats:
    from gha_mlops.data.transfer import TransferStats

    return TransferStats(a.objects + b.objects, a.bytes + b.bytes, a.requests + b.requests,
                         a.seconds + b.seconds, a.packs + b.packs)


@dataclass(frozen=True)
class Transfer:
    """What a push or fetch of named datasets did, and where from or to."""

    stats: TransferStats
    datasets: list[Dataset]
    remote: Remote | None  # None: a fetch that needed no remote (cache or source URLs)


def push_named(ws: Workspace, names: Iterable[str], remote: str | None, *, jobs: int = 16,
               listener: TransferListener | None = None,
               opener: StoreOpener | None = None) -> Transfer:
    """:func:`push` the datasets called ``names`` (all when empty) to the remote called
    ``remote`` (see :func:`resolve_remote`)."""
    target = resolve_remote(ws, remote)
    datasets = ws.select(names)
    stats = push(ws, datasets, target, jobs=jobs, listener=listener, opener=opener)
    return Transfer(stats, datasets, target)


def fetch_named(ws: Workspace, names: Iterable[str], remote: str | None, *, jobs: int = 16,
                listener: TransferListener | None = None,
                opener: StoreOpener | None = None) -> Transfer:
    """:func:`fetch` the datasets called ``names`` (all when empty) from the remote called
    ``remote``. With no remote named and none declared, datasets the cache holds or that
    have a source URL are still fetched (the remote is only asked for when needed)."""
    datasets = ws.select(names)
    needs_remote = any(not (ds.source and not ds.is_tree) for ds in datasets)
    target = None
    if needs_remote:
        try:
            target = resolve_remote(ws, remote)
        except UsageError:  # no remote declared: the datasets may all be in the cache
            if remote is not None:
                raise
    stats = fetch(ws, datasets, target, jobs=jobs, listener=listener, opener=opener)
    return Transfer(stats, datasets, target)


def push(ws: Workspace, datasets: Iterable[Dataset], remote: Remote, *, jobs: int = 16,
         listener: TransferListener | None = None,
         opener: StoreOpener | None = None) -> TransferStats:
    """Upload every object of ``datasets`` that the remote lacks (packed when small), one
    dataset after the other; an object two datasets share is sent once. The store is opened
    with ``opener`` (see :class:`StoreOpener`) and closed at the end."""
    from gha_mlops.data import transfer
    from gha_mlops.data.transfer import TransferStats

    datasets = list(datasets)
    ws.open_state()  # the remote's pack index is kept there
    plan: list[tuple[Dataset, list[str]]] = []
    for ds in datasets:
        objects = objects_of(ws, ds)
        missing = ([ds.version] if objects is None else
                   ws.cache.absent(objects))
        if missing:
            raise GhaMlopsError(
                f"dataset {ds.name} is not complete in the local cache ({len(missing)} objects "
                "missing), so it cannot be pushed",
                hint=f"pull it first (`gha-mlops data pull {ds.name}`) or re-add it from the "
                f"data (`gha-mlops data add {ds.path}`)")
        plan.append((ds, objects or []))
    total = TransferStats()
    with contextlib.closing(_LazyStore(ws, remote, opener)) as store:
        for ds, objects in plan:
            progress = listener.started(ds, None, None) if listener else None
            stats = transfer.push(store.get(), ws.cache, objects,
                                  index_dir=_index_dir(ws, remote), jobs=jobs,
                                  progress=progress)
            if listener:
                listener.finished(ds, stats, f"to {remote.name}")
            total = _add(total, stats)
    return total


def fetch(ws: Workspace, datasets: Iterable[Dataset], remote: Remote | None, *,
          jobs: int = 16, listener: TransferListener | None = None,
          opener: StoreOpener | None = None) -> TransferStats:
    """Bring every object of ``datasets`` into the local cache: from the remote (opened with
    ``opener`` when first needed, see :class:`StoreOpener`), or for a single-file dataset
    with a pinned ``source:`` URL, from that URL. Verified on arrival. Takes no lock: a run
    that holds it fetches the datasets its stages need."""
    from gha_mlops.data.transfer import TransferStats

    ws.open_state()
    total = TransferStats()
    with contextlib.closing(_LazyStore(ws, remote, opener)) as store:
        for ds in datasets:
            total = _add(total, _fetch_one(ws, ds, store, jobs, listener))
    return total


class _LazyStore:
    """The remote's store, opened on first use and closed after (an S3 client holds
    connections)."""

    def __init__(self, ws: Workspace, remote: Remote | None,
                 opener: StoreOpener | None) -> None:
        self.ws = ws
        self.remote = remote
        self._opener = opener
        self._store: ObjectStore | None = None

    def get(self) -> ObjectStore:
        if self._store is None:
            assert self.remote is not None
            self._store = _opener(self._opener)(self.remote, root=self.ws.root)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def _fetch_one(ws: Workspace, ds: Dataset, store: _LazyStore, jobs: int,
               listener: TransferListener | None) -> TransferStats:
    from gha_mlops.data import https, transfer
    from gha_mlops.data.transfer import TransferStats

    objects = objects_of(ws, ds)
    if objects is not None and not ws.cache.absent(objects):
        if listener:
            listener.finished(ds, TransferStats(), "cache")
        return TransferStats()
    if ds.source and not ds.is_tree:
        progress = listener.started(ds, 1, ds.size) if listener else None
        started = time.monotonic()
        https.fetch_url(ds.source, ds.version, ws.cache, progress=progress)
        stats = TransferStats(objects=1, bytes=ds.size, requests=1,
                              seconds=time.monotonic() - started)
        if listener:
            listener.finished(ds, stats, ds.source)
        return stats
    if store.remote is None:
        raise UsageError(f"dataset {ds.name} is not in the local cache and no remote is "
                         "declared to fetch it from",
                         hint="declare `remotes:` in mlops.yaml (and push from where the "
                         "data is), or pin a `source:` URL in its pointer")
    index_dir = _index_dir(ws, store.remote)
    first = TransferStats()
    remote = f"remote {store.remote.name} ({store.remote.url})"
    if objects is None:  # the manifest comes first: it names the files
        try:
            first = transfer.fetch(store.get(), ws.cache, [ds.version], index_dir=index_dir,
                                   jobs=jobs)
        except ManifestError as err:  # refused before it entered the cache
            raise err.within(dataset=f"{ds.name} ({ds.pointer})",
                             hint=_FOREIGN_MANIFEST.format(remote=store.remote.url)) from None
        tree = tree_of(ws, ds, source=remote)
        objects = [ds.version, *sorted(tree.digests())] if tree is not None else []
    wanted = set(ws.cache.absent(objects))
    tree = tree_of(ws, ds) if ds.is_tree else None
    sizes = {e.sha256: e.size for e in tree.entries} if tree is not None else {}
    nbytes = sum(sizes.get(d, 0) for d in wanted) if ds.is_tree else ds.size
    progress = listener.started(ds, len(wanted), nbytes) if listener else None
    stats = _add(first, transfer.fetch(store.get(), ws.cache, objects, index_dir=index_dir,
                                       jobs=jobs, progress=progress))
    if listener:
        listener.finished(ds, stats, f"from {store.remote.name}")
    return stats
