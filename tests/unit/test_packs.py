"""The pack layout and the transfers over it, against the in-memory store (no network)."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gha_mlops.data import transfer
from gha_mlops.data.packs import (
    PACKS_PREFIX,
    PackEntry,
    PackIndex,
    ReadPlan,
    digest_of_object_key,
    index_key,
    object_key,
    pack_key,
    plan_packs,
    plan_reads,
    write_pack,
)
from gha_mlops.data.ports import TransientStoreError
from gha_mlops.data.stores import MemoryStore
from gha_mlops.errors import DataIntegrityError, GhaMlopsError, RemoteError
from gha_mlops.store.hashing import tree_digest, tree_manifest_bytes
from gha_mlops.store.objects import ContentCache


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transfer, "_BACKOFF", 0.0)


def _put(cache: ContentCache, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    cache.put_verified_bytes(data, digest)
    return digest


def _blobs(cache: ContentCache, n: int, size: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [_put(cache, rng.randbytes(size)) for _ in range(n)]


def _cache_files(cache: ContentCache) -> list[Path]:
    return sorted(p for p in cache.root.rglob("*") if p.is_file())


def _assert_verified(cache: ContentCache, digests: list[str]) -> None:
    for d in digests:
        data = cache.object_path(d).read_bytes()
        assert hashlib.sha256(data).hexdigest() == d.removesuffix(".dir")


@pytest.fixture
def src(tmp_path: Path) -> ContentCache:
    return ContentCache(tmp_path / "src-cache")


@pytest.fixture
def dst(tmp_path: Path) -> ContentCache:
    return ContentCache(tmp_path / "dst-cache")


# --------------------------------------------------------------------------- format


def test_pack_index_round_trips_and_its_id_is_the_sha256_of_the_pack(
        src: ContentCache, tmp_path: Path) -> None:
    digests = _blobs(src, 5, 100)
    path, index = write_pack(((d, src.object_path(d)) for d in digests), tmp_path)
    data = path.read_bytes()
    assert index.pack_id == hashlib.sha256(data).hexdigest()
    assert index.size == len(data) == 500
    for e in index.entries:
        assert hashlib.sha256(data[e.offset:e.offset + e.length]).hexdigest() == e.digest
    encoded = index.to_bytes()
    doc = json.loads(encoded)
    assert doc["format"] == "gha-mlops-pack-index" and doc["version"] == 1
    assert doc["sha256"] == doc["pack"] == index.pack_id
    assert [e[0] for e in doc["entries"]] == sorted(digests)
    again = PackIndex.from_bytes(encoded, index.pack_id)
    assert sorted(again.entries) == sorted(index.entries)
    assert again.to_bytes() == encoded


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d.update(pack="0" * 64), "describes pack"),
    (lambda d: d.update(version=2), "newer"),
    (lambda d: d.update(format="zip"), "not a gha-mlops pack index"),
    (lambda d: d["entries"].append(["ab" * 32, 490, 20]), "outside the pack"),
    (lambda d: d["entries"].append(["ab" * 32, True, 1]), "malformed entry"),
    (lambda d: d["entries"].append(["../etc", 0, 1]), "not an object digest"),
])
def test_a_damaged_or_foreign_index_is_refused(mutate: Callable[[dict[str, Any]], None],
                                               message: str) -> None:
    index = PackIndex("f" * 64, 500, (PackEntry("a" * 64, 0, 500),))
    doc = json.loads(index.to_bytes())
    mutate(doc)
    with pytest.raises(ValueError, match=message):
        PackIndex.from_bytes(json.dumps(doc).encode(), "f" * 64)
    with pytest.raises(ValueError, match="not JSON"):
        PackIndex.from_bytes(b"{", "f" * 64)


def test_keys() -> None:
    d = "ab" + "c" * 62
    assert object_key(d) == f"v1/objects/ab/{'c' * 62}"
    assert object_key(d + ".dir") == f"v1/objects/ab/{'c' * 62}.dir"
    assert digest_of_object_key(object_key(d + ".dir")) == d + ".dir"
    assert digest_of_object_key("v1/objects/ab/cd/ef") is None
    assert pack_key("p" * 3) == "v1/packs/ppp.pack" and index_key("p" * 3) == "v1/packs/ppp.idx"
    with pytest.raises(ValueError):
        object_key("../x")


def test_plan_packs_fills_up_to_the_target_in_order() -> None:
    objs = [("a", 40), ("b", 40), ("c", 40), ("d", 100), ("e", 1)]
    assert plan_packs(objs, 100) == [["a", "b"], ["c"], ["d"], ["e"]]
    assert plan_packs([], 100) == []


def _e(name: str, offset: int, length: int) -> PackEntry:
    return PackEntry(name, offset, length)


@pytest.mark.parametrize(("entries", "size", "expected"), [
    # far apart: one GET each
    ([_e("a", 0, 10), _e("b", 1000, 10)], 10_000, [(0, 10), (1000, 1010)]),
    # a gap within RANGE_GAP is bridged
    ([_e("a", 0, 10), _e("b", 100, 10)], 10_000_000, [(0, 110)]),
    # most of the pack needed: all of it, in one GET
    ([_e("a", 0, 10), _e("b", 4000, 6000)], 10_000, [(0, 10_000)]),
    # nothing needed
    ([], 10_000, []),
])
def test_plan_reads_coalesces_nearby_ranges(entries: list[PackEntry], size: int,
                                            expected: list[tuple[int, int]]) -> None:
    plans = plan_reads(entries, size, gap=256)
    assert [(p.start, p.end) for p in plans] == expected
    assert sorted(e for p in plans for e in p.entries) == sorted(entries)


def test_plan_reads_splits_long_reads() -> None:
    entries = [_e(str(i), i * 100, 100) for i in range(100)]
    plans = plan_reads(entries, 10_000, max_read=1000)
    assert all(p.end - p.start <= 1000 for p in plans) and len(plans) == 10
    assert plans[0] == ReadPlan(0, 1000, tuple(entries[:10]))


# --------------------------------------------------------------------------- push / fetch


def test_round_trip_through_packs(src: ContentCache, dst: ContentCache, tmp_path: Path) -> None:
    store = MemoryStore()
    digests = _blobs(src, 300, 1000)
    stats = transfer.push(store, src, digests, index_dir=tmp_path / "idx-a", jobs=4)
    assert stats.objects == 300 and stats.bytes == 300_000 and stats.packs >= 1
    keys = sorted(store.objects)
    assert all(k.startswith(PACKS_PREFIX) for k in keys)
    for key in keys:
        if key.endswith(".pack"):
            pack_id = key[len(PACKS_PREFIX):-5]
            assert hashlib.sha256(store.objects[key]).hexdigest() == pack_id
            assert index_key(pack_id) in store.objects
    # far fewer requests than objects
    assert stats.requests <= 2 + 2 * stats.packs
    got = transfer.fetch(store, dst, digests, index_dir=tmp_path / "idx-b", jobs=4)
    assert got.objects == 300 and got.bytes == 300_000
    _assert_verified(dst, digests)
    assert not list(dst.tmp.iterdir())  # no temp or partial files left


def test_second_push_sends_nothing(src: ContentCache, tmp_path: Path) -> None:
    store = MemoryStore()
    digests = _blobs(src, 50, 500)
    transfer.push(store, src, digests, index_dir=tmp_path / "idx")
    store.reset_counters()
    again = transfer.push(store, src, digests, index_dir=tmp_path / "idx")
    assert (again.objects, again.bytes) == (0, 0)
    assert store.bytes_written == 0 and store.bytes_read == 0
    assert set(store.requests) == {"list"}  # packs and objects listed, nothing else
    # Another machine (no cached indexes) learns the same from the remote's indexes.
    store.reset_counters()
    other = transfer.push(store, src, digests, index_dir=tmp_path / "other-idx")
    assert (other.objects, other.bytes, store.bytes_written) == (0, 0, 0)
    # A push of a superset sends only the new objects.
    more = _blobs(src, 3, 500, seed=9)
    plus = transfer.push(store, src, digests + more, index_dir=tmp_path / "idx")
    assert (plus.objects, plus.bytes) == (3, 1500)
    assert transfer.missing_on_remote(store, [*digests, *more, "e" * 64],
                                      index_dir=tmp_path / "idx") == {"e" * 64}


def test_fetching_a_subset_reads_only_the_needed_ranges(
        src: ContentCache, dst: ContentCache, tmp_path: Path) -> None:
    store = MemoryStore()
    digests = _blobs(src, 1000, 4096)
    transfer.push(store, src, digests, index_dir=tmp_path / "idx", jobs=1)
    pack_bytes = sum(len(v) for k, v in store.objects.items() if k.endswith(".pack"))
    assert pack_bytes == 1000 * 4096
    subset = digests[::100]  # 10 objects, 400 KB apart
    store.reset_counters()
    stats = transfer.fetch(store, dst, subset, index_dir=tmp_path / "idx")
    assert stats.objects == 10
    assert store.bytes_read == 10 * 4096  # exactly the objects, nothing around them
    assert store.bytes_read < pack_bytes / 50
    assert store.requests["get"] == 10 and store.requests["list"] == 1
    _assert_verified(dst, subset)
    assert len(_cache_files(dst)) == 10
    # A fetch of what the cache holds costs no request at all.
    store.reset_counters()
    assert transfer.fetch(store, dst, subset, index_dir=tmp_path / "idx").requests == 0
    assert sum(store.requests.values()) == 0


def test_corrupted_pack_bytes_are_rejected_and_nothing_enters_the_cache(
        src: ContentCache, dst: ContentCache, tmp_path: Path) -> None:
    store = MemoryStore("memory://team")
    digests = _blobs(src, 20, 1000)
    transfer.push(store, src, digests, index_dir=tmp_path / "idx")
    (key,) = [k for k in store.objects if k.endswith(".pack")]
    index = PackIndex.from_bytes(store.objects[key.replace(".pack", ".idx")],
                                 key[len(PACKS_PREFIX):-5])
    victim = index.entries[3]
    damaged = bytearray(store.objects[key])
    damaged[victim.offset + 7] ^= 0xFF
    store.objects[key] = bytes(damaged)
    with pytest.raises(DataIntegrityError) as info:
        transfer.fetch(store, dst, [victim.digest], index_dir=tmp_path / "idx")
    err = info.value
    assert victim.digest in err.message and f"memory://team/{key}" in err.message
    actual = hashlib.sha256(damaged[victim.offset:victim.offset + victim.length]).hexdigest()
    assert actual in err.message and err.exit_code == 7 and err.hint
    assert _cache_files(dst) == []


def test_threshold_routes_small_objects_to_packs_and_large_ones_alone(
        src: ContentCache, dst: ContentCache, tmp_path: Path) -> None:
    store = MemoryStore()
    small = _blobs(src, 10, 100)
    large = _blobs(src, 2, 5000, seed=1)
    stats = transfer.push(store, src, small + large, index_dir=tmp_path / "idx",
                          large_threshold=1000)
    assert stats.objects == 12 and stats.packs == 1
    assert {k for k in store.objects if k.startswith("v1/objects/")} == \
        {object_key(d) for d in large}
    assert store.objects[object_key(large[0])] == src.object_path(large[0]).read_bytes()
    (pack,) = [v for k, v in store.objects.items() if k.endswith(".pack")]
    assert len(pack) == 1000
    transfer.fetch(store, dst, small + large, index_dir=tmp_path / "idx2")
    _assert_verified(dst, small + large)
    assert transfer.push(store, src, small + large, index_dir=tmp_path / "idx",
                         large_threshold=1000).objects == 0


def test_tree_manifests_travel_after_their_files_and_verify_without_the_suffix(
        src: ContentCache, dst: ContentCache, tmp_path: Path) -> None:
    store = MemoryStore()
    files = _blobs(src, 3, 10)
    manifest = tree_manifest_bytes([{"path": f"f{i}", "sha256": d, "size": 10}
                                    for i, d in enumerate(files)])
    tree = tree_digest(manifest)
    src.store_manifest(tree, manifest)
    stats = transfer.push(store, src, [tree, *files], index_dir=tmp_path / "idx")
    assert stats.packs == 2  # the files' pack, then the manifest's
    transfer.fetch(store, dst, [tree, *files], index_dir=tmp_path / "idx2")
    assert dst.has(tree) and dst.tree_files(tree) == {f"f{i}": d for i, d in enumerate(files)}
    # a manifest with the wrong bytes is refused like any object
    (key,) = [k for k, v in store.objects.items() if v == manifest]
    store.objects[key] = manifest.replace(b"f0", b"g0")
    with pytest.raises(DataIntegrityError, match=tree):
        transfer.fetch(store, ContentCache(tmp_path / "c3"), [tree], index_dir=tmp_path / "idx")


def test_pushing_an_object_the_cache_lacks_says_so(src: ContentCache, tmp_path: Path) -> None:
    with pytest.raises(GhaMlopsError, match="not in the local cache"):
        transfer.push(MemoryStore(), src, ["0" * 64], index_dir=tmp_path / "idx")


def test_an_object_the_remote_lacks_is_a_remote_error(dst: ContentCache, tmp_path: Path) -> None:
    with pytest.raises(RemoteError, match="not in remote memory://store") as info:
        transfer.fetch(MemoryStore(), dst, ["0" * 64], index_dir=tmp_path / "idx")
    assert info.value.exit_code == 6


def test_an_index_whose_pack_is_gone_promises_nothing(src: ContentCache, tmp_path: Path) -> None:
    store = MemoryStore()
    digests = _blobs(src, 5, 100)
    transfer.push(store, src, digests, index_dir=tmp_path / "idx")
    for key in [k for k in store.objects if k.endswith(".pack")]:
        del store.objects[key]
    assert transfer.missing_on_remote(store, digests, index_dir=tmp_path / "idx") == \
        set(digests)
    assert transfer.push(store, src, digests, index_dir=tmp_path / "idx").objects == 5


def test_progress_reports_running_totals(src: ContentCache, dst: ContentCache,
                                         tmp_path: Path) -> None:
    store = MemoryStore()
    digests = _blobs(src, 40, 100) + _blobs(src, 1, 2000, seed=3)
    seen: list[tuple[int, int]] = []
    transfer.push(store, src, digests, index_dir=tmp_path / "i", large_threshold=1000,
                  progress=lambda o, b: seen.append((o, b)))
    assert max(seen) == (41, 6000)
    seen.clear()
    transfer.fetch(store, dst, digests, index_dir=tmp_path / "j",
                   progress=lambda o, b: seen.append((o, b)))
    assert max(seen) == (41, 6000)


# --------------------------------------------------------------------------- faults


class FlakyStore(MemoryStore):
    """Drops the first ``drops`` ranged reads of packs, and cuts downloads off after ``cut``
    bytes. Every ranged read of a pack is noted in ``pack_reads``, failed ones included."""

    # A retry loop with no bound would spin on a store that always fails: past this many pack
    # reads the store stops answering with a transient error, so such a loop fails the test
    # instead of hanging it.
    RUNAWAY = 100

    def __init__(self, *, drops: int = 0, cut: int | None = None, cuts: int = 0) -> None:
        super().__init__()
        self.drops, self.cut, self.cuts = drops, cut, cuts
        self.offsets: list[int] = []
        self.pack_reads: list[tuple[str, int, int]] = []

    def read_range(self, key: str, start: int, end: int) -> bytes:
        if key.endswith(".pack"):
            self.pack_reads.append((key, start, end))
            if len(self.pack_reads) > self.RUNAWAY:
                raise RuntimeError(f"still reading {key} after {self.RUNAWAY} tries")
            if self.drops:
                self.drops -= 1
                raise TransientStoreError("connection reset")
        return super().read_range(key, start, end)

    def download(self, key: str, dest: Path, *, offset: int = 0) -> None:
        self.offsets.append(offset)
        if self.cut is not None and self.cuts:
            self.cuts -= 1
            data = self.objects[key][offset:offset + self.cut]
            with open(dest, "ab") as fh:
                fh.write(data)
            raise TransientStoreError("connection dropped midway")
        super().download(key, dest, offset=offset)


def test_transient_read_failures_are_retried(src: ContentCache, dst: ContentCache,
                                             tmp_path: Path) -> None:
    store = FlakyStore(drops=2)
    digests = _blobs(src, 10, 100)
    transfer.push(store, src, digests, index_dir=tmp_path / "idx")
    # What a fetch asks of a store that does not fail: one ranged read of the one pack.
    calm = FlakyStore()
    calm.objects = store.objects
    clean = transfer.fetch(calm, ContentCache(tmp_path / "calm"), digests,
                           index_dir=tmp_path / "idx")
    (read,) = calm.pack_reads
    stats = transfer.fetch(store, dst, digests, index_dir=tmp_path / "idx")
    _assert_verified(dst, digests)
    # Both failures were hit, and the same read was asked again after each: three tries in
    # all, each one counted as a request.
    assert store.drops == 0
    assert store.pack_reads == [read, read, read]
    assert stats.requests == clean.requests + 2


def test_a_read_that_keeps_failing_is_given_up_after_a_bounded_number_of_tries(
        src: ContentCache, dst: ContentCache, tmp_path: Path) -> None:
    store = FlakyStore()
    digests = _blobs(src, 10, 100)
    transfer.push(store, src, digests, index_dir=tmp_path / "idx")
    store.drops = 10**9  # the network never comes back
    with pytest.raises(TransientStoreError, match="connection reset"):
        transfer.fetch(store, dst, digests, index_dir=tmp_path / "idx")
    # Retried (more than once), but no more than the transfer's bound, and nothing half-done
    # entered the cache.
    assert 1 < len(store.pack_reads) == transfer.ATTEMPTS < FlakyStore.RUNAWAY
    assert len(set(store.pack_reads)) == 1
    assert _cache_files(dst) == []


def test_an_interrupted_large_download_resumes_from_the_partial(
        src: ContentCache, dst: ContentCache, tmp_path: Path) -> None:
    store = FlakyStore(cut=3000, cuts=2)
    (big,) = _blobs(src, 1, 10_000)
    transfer.push(store, src, [big], index_dir=tmp_path / "idx", large_threshold=1000)
    transfer.fetch(store, dst, [big], index_dir=tmp_path / "idx")
    assert store.offsets == [0, 3000, 6000]
    assert store.bytes_read == 10_000 - 6000  # the last, complete read; cut reads aside
    _assert_verified(dst, [big])
    assert not list(dst.tmp.iterdir())


def test_a_partial_left_by_an_earlier_run_is_resumed(
        src: ContentCache, dst: ContentCache, tmp_path: Path) -> None:
    store = FlakyStore()
    (big,) = _blobs(src, 1, 10_000)
    transfer.push(store, src, [big], index_dir=tmp_path / "idx", large_threshold=1000)
    dst.tmp.mkdir(parents=True)
    (dst.tmp / f"{big}.partial").write_bytes(src.object_path(big).read_bytes()[:4000])
    store.reset_counters()
    transfer.fetch(store, dst, [big], index_dir=tmp_path / "idx")
    assert store.offsets == [4000] and store.bytes_read == 6000
    _assert_verified(dst, [big])
    # A damaged partial is thrown away and the object downloaded once more, whole.
    dst2 = ContentCache(tmp_path / "c2")
    dst2.tmp.mkdir(parents=True)
    (dst2.tmp / f"{big}.partial").write_bytes(b"x" * 4000)
    transfer.fetch(store, dst2, [big], index_dir=tmp_path / "idx")
    assert store.offsets[-2:] == [4000, 0]
    _assert_verified(dst2, [big])


def test_a_corrupted_large_object_never_enters_the_cache(
        src: ContentCache, dst: ContentCache, tmp_path: Path) -> None:
    store = MemoryStore()
    (big,) = _blobs(src, 1, 10_000)
    transfer.push(store, src, [big], index_dir=tmp_path / "idx", large_threshold=1000)
    store.objects[object_key(big)] = b"y" * 10_000
    with pytest.raises(DataIntegrityError, match=f"{big} from memory://store/{object_key(big)}"):
        transfer.fetch(store, dst, [big], index_dir=tmp_path / "idx")
    assert _cache_files(dst) == []
