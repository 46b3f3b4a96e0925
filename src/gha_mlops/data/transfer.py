"""Moving objects between the local content-addressed cache and a remote, fast and verified.

Small objects travel in packs and large ones alone (the layout is in
:mod:`gha_mlops.data.packs` and ``docs/data-remote-format.md``), so pushing or pulling ten
thousand small files costs a few dozen requests, not ten thousand.

- :func:`push` sends what the remote lacks; a second push of the same objects sends nothing.
- :func:`fetch` brings objects into the cache: ranged GETs of just the needed parts of packs,
  resumable streaming downloads of large objects; every object is verified against its hash
  before it enters the cache.

A read-only ``https://`` source pinned by sha256 is fetched by :mod:`gha_mlops.data.https`,
which shares this module's resumable, verified download (:func:`resumable_download`).

Digests are opaque keys: a plain sha256 for a file, ``<sha256>.dir`` for a tree manifest (whose
bytes hash to the part before ``.dir``). Trees are not expanded here; callers pass the members.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from gha_mlops._fs import atomic_write_bytes
from gha_mlops.data.packs import (
    LARGE_THRESHOLD,
    MAX_INDEX_BYTES,
    MAX_PACKED_OBJECT,
    OBJECTS_PREFIX,
    PACK_SIZE,
    PACKS_PREFIX,
    PackEntry,
    PackIndex,
    ReadPlan,
    digest_of_object_key,
    index_key,
    is_pack_id,
    object_key,
    pack_key,
    pack_target,
    plan_packs,
    plan_reads,
    write_pack,
)
from gha_mlops.data.ports import ObjectStore, TransientStoreError
from gha_mlops.errors import DataIntegrityError, GhaMlopsError, RemoteError
from gha_mlops.store.hashing import CHUNK, TREE_SUFFIX, is_object_digest, is_tree
from gha_mlops.store.objects import MAX_MANIFEST_BYTES, ContentCache, ManifestError, ObjectMismatch

__all__ = [
    "Progress",
    "Tally",
    "TransferStats",
    "fetch",
    "missing_on_remote",
    "push",
    "resumable_download",
]

Progress = Callable[[int, int], None]
"""Called as ``progress(done_objects, done_bytes)`` (running totals) from worker threads."""

T = TypeVar("T")

ATTEMPTS = 5
"""Tries per request (and per resumed download) before a transient failure is final."""
_BACKOFF = 0.2
_DAMAGED_HINT = ("the remote copy is damaged; nothing was added to the local cache. Delete the "
                 "damaged key (and, for a pack, its .idx) from the remote, then run "
                 "`gha-mlops data push` on a machine whose cache holds the object: the remote "
                 "index no longer lists it, so it is sent again")

_FOREIGN_HINT = ("the remote holds data that is not what gha-mlops writes; nothing was "
                 "added to the local cache. Check who can write to {remote}: anyone who can "
                 "may plant files there")


@dataclass(frozen=True)
class TransferStats:
    """What a transfer did: objects and payload bytes moved, store requests, wall seconds."""

    objects: int = 0
    bytes: int = 0
    requests: int = 0
    seconds: float = 0.0
    packs: int = 0


class Tally:
    """Thread-safe running totals of a transfer, reported to the progress callback."""

    def __init__(self, progress: Progress | None) -> None:
        self.objects = self.bytes = self.requests = self.packs = 0
        self._progress = progress
        self._lock = threading.Lock()
        self._start = time.monotonic()

    def request(self, n: int = 1) -> None:
        with self._lock:
            self.requests += n

    def done(self, objects: int, nbytes: int, *, packs: int = 0) -> None:
        with self._lock:
            self.objects += objects
            self.bytes += nbytes
            self.packs += packs
            totals = (self.objects, self.bytes)
        if self._progress is not None:
            self._progress(*totals)

    def stats(self) -> TransferStats:
        return TransferStats(self.objects, self.bytes, self.requests,
                             time.monotonic() - self._start, self.packs)


def _retry(fn: Callable[[], T], tally: Tally) -> T:
    """Call ``fn`` (one store request) until it does not raise a transient error."""
    for attempt in range(ATTEMPTS):
        tally.request()
        try:
            return fn()
        except TransientStoreError:
            if attempt == ATTEMPTS - 1:
                raise
            _sleep_backoff(attempt)
    raise AssertionError("unreachable")


def _sleep_backoff(attempt: int) -> None:
    time.sleep(_BACKOFF * (2 ** attempt) * (0.5 + random.random()))


def _run_all(pool: ThreadPoolExecutor, tasks: Iterable[Callable[[], None]]) -> None:
    """Run ``tasks`` on ``pool``; on the first failure cancel what has not started, wait for
    what has, and raise that failure."""
    futures: list[Future[None]] = [pool.submit(t) for t in tasks]
    try:
        _, pending = wait(futures, return_when=FIRST_EXCEPTION)
    except BaseException:  # Ctrl-C: start nothing more
        for f in futures:
            f.cancel()
        raise
    for f in pending:
        f.cancel()
    for f in futures:
        if f.done() and not f.cancelled():
            exc = f.exception()
            if exc is not None:
                wait(futures)
                raise exc


def _unique(digests: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(digests))


# --------------------------------------------------------------------------------- indexes


class _RemoteIndex:
    """Which objects a remote holds: its pack indexes, and its large objects when listed.

    Index files are cached under ``index_dir`` as ``<pack-id>.idx`` (packs are immutable, so a
    cached index never goes stale); only indexes of packs the remote still lists are used.
    """

    def __init__(self) -> None:
        self.packs: dict[str, PackIndex] = {}
        self.where: dict[str, tuple[str, PackEntry]] = {}
        self.objects: dict[str, int] | None = None

    def has(self, digest: str) -> bool:
        """True when the remote holds ``digest`` (in a pack, or alone if objects were listed)."""
        return digest in self.where or (self.objects is not None and digest in self.objects)

    def add(self, index: PackIndex) -> None:
        self.packs[index.pack_id] = index
        for e in index.entries:
            self.where.setdefault(e.digest, (index.pack_id, e))

    @classmethod
    def load(cls, store: ObjectStore, index_dir: Path, pool: ThreadPoolExecutor, tally: Tally,
             *, objects: bool) -> _RemoteIndex:
        """List the remote's packs (one paginated LIST), download the indexes not cached in
        ``index_dir``, and with ``objects`` also list the large objects."""
        listed: dict[str, int] = {}
        indexes: dict[str, int] = {}
        tally.request()
        for key, size in _retry_list(store, PACKS_PREFIX):
            # The listing is the remote's word: only names of the form gha-mlops writes
            # count (a pack id names a local file, the cached index, so it must be hex).
            stem, dot, ext = key[len(PACKS_PREFIX):].rpartition(".")
            if not (dot and is_pack_id(stem) and isinstance(size, int) and size >= 0):
                continue
            if ext == "pack":
                listed[stem] = size
            elif ext == "idx":
                indexes[stem] = size
        self = cls()
        # An index without its pack promises nothing (the pack was deleted, or is damaged).
        ids = sorted(indexes.keys() & listed.keys())
        fetched: list[PackIndex] = []

        def get(pack_id: str) -> None:
            cached = index_dir / f"{pack_id}.idx"
            try:
                index = PackIndex.from_bytes(cached.read_bytes(), pack_id)
            except (OSError, ValueError):
                if indexes[pack_id] > MAX_INDEX_BYTES:
                    raise RemoteError(
                        f"pack index {store.url}/{index_key(pack_id)} has {indexes[pack_id]} "
                        f"bytes, more than the {MAX_INDEX_BYTES} an index of a pack may have",
                        hint=_FOREIGN_HINT.format(remote=store.url)) from None
                data = _retry(lambda: store.read_range(index_key(pack_id), 0,
                                                       indexes[pack_id]), tally)
                try:
                    index = PackIndex.from_bytes(data, pack_id)
                except ValueError as err:
                    hint = ("upgrade gha-mlops" if str(err).startswith("newer") else
                            f"delete {index_key(pack_id)} from the remote and push again")
                    raise RemoteError(f"pack index {store.url}/{index_key(pack_id)} cannot be "
                                      f"used: {err}", hint=hint) from None
                atomic_write_bytes(cached, data)
            if index.size != listed[pack_id]:
                raise RemoteError(
                    f"pack {store.url}/{pack_key(pack_id)} has {listed[pack_id]} bytes but "
                    f"its index says {index.size}", hint=_DAMAGED_HINT)
            fetched.append(index)

        index_dir.mkdir(parents=True, exist_ok=True)
        _run_all(pool, [functools.partial(get, p) for p in ids])
        for index in sorted(fetched, key=lambda i: i.pack_id):
            self.add(index)
        if objects:
            tally.request()
            self.objects = {}
            for key, size in _retry_list(store, OBJECTS_PREFIX):
                digest = digest_of_object_key(key)
                if digest is not None:
                    self.objects[digest] = size
        return self


def _retry_list(store: ObjectStore, prefix: str) -> list[tuple[str, int]]:
    """A whole listing, retried from the start on a transient failure."""
    for attempt in range(ATTEMPTS):
        try:
            return list(store.list(prefix))
        except TransientStoreError:
            if attempt == ATTEMPTS - 1:
                raise
            _sleep_backoff(attempt)
    raise AssertionError("unreachable")


def missing_on_remote(store: ObjectStore, digests: Iterable[str], *, index_dir: Path,
                      jobs: int = 16) -> set[str]:
    """The digests among ``digests`` that ``store`` does not hold (two LISTs plus the
    indexes not yet cached in ``index_dir``)."""
    with ThreadPoolExecutor(jobs) as pool:
        index = _RemoteIndex.load(store, index_dir, pool, Tally(None), objects=True)
    return {d for d in digests if not index.has(d)}


# --------------------------------------------------------------------------------- push


def push(store: ObjectStore, cache: ContentCache, digests: Iterable[str], *, index_dir: Path,
         jobs: int = 16, progress: Progress | None = None,
         large_threshold: int = LARGE_THRESHOLD, pack_size: int = PACK_SIZE) -> TransferStats:
    """Upload the objects among ``digests`` that the remote lacks.

    Objects smaller than ``large_threshold`` go in new packs (each ``.pack`` before its
    ``.idx``), larger ones alone; up to ``jobs`` uploads run at once. Tree manifests are
    uploaded after every other object, so a remote never holds a tree without the files the
    caller pushed with it. Every digest must be in ``cache`` (else :class:`GhaMlopsError`).
    Objects the remote holds are not sent: a second push sends nothing.
    """
    tally = Tally(progress)
    large_threshold = min(large_threshold, MAX_PACKED_OBJECT)  # what readers accept in packs
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        remote = _RemoteIndex.load(store, index_dir, pool, tally, objects=True)
        missing = [d for d in _unique(digests) if not remote.has(d)]
        sizes = {}
        for d in missing:
            try:
                sizes[d] = cache.object_path(d).stat().st_size
            except FileNotFoundError:
                raise GhaMlopsError(
                    f"object {d} is not in the local cache, so it cannot be pushed to "
                    f"{store.url}",
                    hint="fetch it from the remote that has it, or add the data again "
                         "(gha-mlops data add)") from None
        cache.tmp.mkdir(parents=True, exist_ok=True)
        # Files first, then tree manifests: a manifest on the remote promises its members.
        for phase in ([d for d in missing if not is_tree(d)], [d for d in missing if is_tree(d)]):
            small = [(d, sizes[d]) for d in phase if sizes[d] < large_threshold]
            large = [d for d in phase if sizes[d] >= large_threshold]
            target = pack_target(sum(s for _, s in small), jobs, pack_size=pack_size)
            tasks: list[Callable[[], None]] = [
                functools.partial(_push_pack, store, cache, group, index_dir, tally)
                for group in plan_packs(small, target)
            ]
            tasks += [functools.partial(_push_large, store, cache, d, sizes[d], tally)
                      for d in large]
            _run_all(pool, tasks)
    return tally.stats()


def _push_pack(store: ObjectStore, cache: ContentCache, group: list[str], index_dir: Path,
               tally: Tally) -> None:
    tmp, index = write_pack(((d, cache.object_path(d)) for d in group), cache.tmp)
    try:
        _retry(lambda: store.upload_file(pack_key(index.pack_id), tmp), tally)
        data = index.to_bytes()
        # Only now that the pack is complete does the index announce it.
        _retry(lambda: store.upload_bytes(index_key(index.pack_id), data), tally)
    finally:
        os.unlink(tmp)
    atomic_write_bytes(index_dir / f"{index.pack_id}.idx", data)
    tally.done(len(group), index.size, packs=1)


def _push_large(store: ObjectStore, cache: ContentCache, digest: str, size: int,
                tally: Tally) -> None:
    _retry(lambda: store.upload_file(object_key(digest), cache.object_path(digest)), tally)
    tally.done(1, size)


# --------------------------------------------------------------------------------- fetch


def fetch(store: ObjectStore, cache: ContentCache, digests: Iterable[str], *, index_dir: Path,
          jobs: int = 16, progress: Progress | None = None) -> TransferStats:
    """Bring the objects among ``digests`` that ``cache`` lacks from ``store`` into it.

    Packed objects come by ranged GETs of only the parts of packs they occupy (the whole pack
    when most of it is needed); large objects stream to ``cache.tmp/<digest>.partial`` and a
    retry, or a later call, resumes from its size. Every object is verified against its
    digest before it enters the cache: a mismatch raises :class:`DataIntegrityError` and puts
    nothing in. An object the remote does not hold raises :class:`RemoteError`. Concurrent
    fetches into one cache (threads or processes) are safe. A cache that already holds
    everything costs no request.
    """
    tally = Tally(progress)
    wanted = _unique(digests)
    for d in wanted:
        if not is_object_digest(d):
            # Every digest names a path in the cache and a key on the remote.
            raise DataIntegrityError(
                f"cannot fetch {d!r} from {store.url}: it is not an object digest (64 "
                "lowercase hex digits, + .dir for a tree)",
                hint="the pointer or manifest that names it was not written by gha-mlops: "
                     "restore it from a commit you trust")
    wanted = cache.absent(wanted)
    if not wanted:
        return tally.stats()
    cache.tmp.mkdir(parents=True, exist_ok=True)
    # Requests wait on the network and want many threads; writing thousands of small files
    # into the cache is bound by the CPUs and the filesystem, where more threads only contend.
    installs = threading.Semaphore(max(2, min(jobs, 2 * (os.cpu_count() or 1))))
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        remote = _RemoteIndex.load(store, index_dir, pool, tally, objects=False)
        by_pack: dict[str, list[PackEntry]] = {}
        alone: list[str] = []
        for d in wanted:
            loc = remote.where.get(d)
            if loc is None:
                alone.append(d)
            else:
                by_pack.setdefault(loc[0], []).append(loc[1])
        tasks: list[Callable[[], None]] = []
        for pack_id, entries in by_pack.items():
            for plan in plan_reads(entries, remote.packs[pack_id].size):
                tasks.append(functools.partial(_fetch_range, store, cache, pack_id, plan,
                                               tally, installs))
        tasks += [functools.partial(_fetch_large, store, cache, d, tally) for d in alone]
        _run_all(pool, tasks)
    return tally.stats()


def _fetch_range(store: ObjectStore, cache: ContentCache, pack_id: str, plan: ReadPlan,
                 tally: Tally, installs: threading.Semaphore) -> None:
    key = pack_key(pack_id)
    want = plan.end - plan.start

    def read() -> bytes:
        data = store.read_range(key, plan.start, plan.end)
        if len(data) != want:
            raise TransientStoreError(
                f"remote {store.url} returned {len(data)} of the {want} bytes asked of {key}",
                hint="run again; if it persists the pack is damaged: " + _DAMAGED_HINT)
        return data

    try:
        data = _retry(read, tally)
    except KeyError:
        raise RemoteError(f"pack {store.url}/{key} was deleted from the remote",
                          hint="push the data again from a machine that has it") from None
    view = memoryview(data)
    nbytes = 0
    with installs:
        for e in plan.entries:
            lo = e.offset - plan.start
            try:
                cache.put_verified_bytes(bytes(view[lo:lo + e.length]), e.digest)
            except ObjectMismatch as err:
                raise _integrity(e.digest, f"{store.url}/{key} (bytes {e.offset}-"
                                           f"{e.offset + e.length - 1})", err.actual) from None
            except ManifestError as err:
                raise err.within(source=f"{store.url}/{key}",
                                 hint=_FOREIGN_HINT.format(remote=store.url)) from None
            nbytes += e.length
    tally.done(len(plan.entries), nbytes)


def _integrity(digest: str, source: str, actual: str) -> DataIntegrityError:
    expected = digest.removesuffix(TREE_SUFFIX)
    return DataIntegrityError(
        f"object {digest} from {source} has the wrong content: expected sha256 {expected}, "
        f"got {actual}", hint=_DAMAGED_HINT)


def _fetch_large(store: ObjectStore, cache: ContentCache, digest: str, tally: Tally) -> None:
    key = object_key(digest)
    size = _retry(lambda: store.size(key), tally)
    if size is None:
        raise RemoteError(f"object {digest} is not in remote {store.url}",
                          hint="push it from a machine whose cache has it (gha-mlops data "
                               "push), or check that this is the right remote")
    source = f"{store.url}/{key}"

    def download(partial: Path, offset: int) -> None:
        try:
            store.download(key, partial, offset=offset)
        except KeyError:
            raise RemoteError(f"object {digest} was deleted from remote {store.url} during "
                              "the download", hint="push it again") from None

    if resumable_download(cache, digest, source, size, download, tally):
        tally.done(1, size)


# --------------------------------------------------------------------------------- partials


@contextlib.contextmanager
def _locked_partial(cache: ContentCache, tmp_dir: Path, digest: str) -> Iterator[int | None]:
    """Hold an exclusive ``flock`` on ``tmp_dir/<digest>.partial``: yields its fd, or None
    once another process has installed the object (then there is nothing to do).

    The lock lives on the partial file itself, which is renamed into the cache when complete;
    a waiter that then wakes up on the renamed file sees the object in the cache, and one that
    opened a path since replaced retries on the new file.
    """
    partial = tmp_dir / f"{digest}.partial"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(partial, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if cache.object_path(digest).exists():
                with contextlib.suppress(FileNotFoundError):
                    if os.stat(partial).st_ino == os.fstat(fd).st_ino:
                        os.unlink(partial)  # an empty file we created after the install
                yield None
                return
            try:
                same = os.stat(partial).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                yield fd
                return
        finally:
            os.close(fd)  # releases the lock


def resumable_download(cache: ContentCache, digest: str, source: str, size: int | None,
                        download: Callable[[Path, int], None], tally: Tally,
                        tmp_dir: Path | None = None) -> bool:
    """Complete ``<digest>.partial`` with ``download(partial, offset)`` (resuming from the
    partial's size, retrying transient failures), verify it and rename it into the cache.

    Returns False when another process installed it meanwhile. A partial left by an earlier
    run that turns out wrong is discarded and downloaded once more from the start before a
    mismatch is reported.
    """
    tmp_dir = tmp_dir or cache.tmp
    partial = tmp_dir / f"{digest}.partial"
    with _locked_partial(cache, tmp_dir, digest) as fd:
        if fd is None:
            return False
        resumed = os.fstat(fd).st_size > 0
        while True:
            for attempt in range(ATTEMPTS):
                have = os.fstat(fd).st_size
                if size is not None and have > size:
                    os.ftruncate(fd, 0)
                    have = 0
                if size is not None and have == size:
                    break
                tally.request()
                try:
                    download(partial, have)
                    break
                except TransientStoreError:
                    if attempt == ATTEMPTS - 1:
                        raise
                    _sleep_backoff(attempt)
            actual = _sha256_fd(fd)
            if actual == digest.removesuffix(TREE_SUFFIX):
                if is_tree(digest):
                    _check_manifest_fd(cache, digest, fd, partial, source)
                break
            os.ftruncate(fd, 0)
            if not resumed:
                os.unlink(partial)
                raise _integrity(digest, source, actual)
            resumed = False  # the old partial may have been the damaged part: once more
        dest = cache.object_path(digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.fchmod(fd, 0o444)
        os.replace(partial, dest)
        return True


def _check_manifest_fd(cache: ContentCache, digest: str, fd: int, partial: Path,
                       source: str) -> None:
    """Validate the downloaded manifest in ``fd`` before it may enter the cache; a malformed
    one is deleted and raises :class:`ManifestError` naming ``source``."""
    os.lseek(fd, 0, os.SEEK_SET)
    size = os.fstat(fd).st_size
    with os.fdopen(os.dup(fd), "rb") as fh:
        data = fh.read(min(size, MAX_MANIFEST_BYTES + 1))
    try:
        cache.check_manifest(digest, data)
    except ManifestError as err:
        os.unlink(partial)
        remote = source.rpartition("/v1/")[0] or source
        raise err.within(source=source, hint=_FOREIGN_HINT.format(remote=remote)) from None


def _sha256_fd(fd: int) -> str:
    h = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    while chunk := os.read(fd, CHUNK):
        h.update(chunk)
    return h.hexdigest()
