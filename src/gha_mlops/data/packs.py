"""The remote layout (format v1): small objects travel in packs, large ones alone.

Under a store::

    v1/packs/<pack-id>.pack   small objects' bytes, concatenated (no header, no padding)
    v1/packs/<pack-id>.idx    the pack's index (canonical JSON, see :class:`PackIndex`)
    v1/objects/ab/<rest>      one large object (>= :data:`LARGE_THRESHOLD`), by its digest

``pack-id`` is the sha256 of the pack's bytes. Packs are immutable; an ``.idx`` is uploaded
only after its ``.pack``, so an index's presence promises a complete pack. The full
specification is ``docs/data-remote-format.md``; this module is its reference implementation
and holds only pure code (keys, index encoding, pack building, range planning).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gha_mlops._fs import canonical_json_bytes, temp_file
from gha_mlops.store.hashing import is_object_digest, is_sha256

__all__ = [
    "FORMAT",
    "INDEX_FORMAT_NAME",
    "INDEX_VERSION",
    "LARGE_THRESHOLD",
    "MAX_INDEX_BYTES",
    "MAX_PACKED_OBJECT",
    "OBJECTS_PREFIX",
    "PACKS_PREFIX",
    "PACK_SIZE",
    "PackEntry",
    "PackIndex",
    "ReadPlan",
    "index_key",
    "is_pack_id",
    "object_key",
    "pack_key",
    "plan_packs",
    "plan_reads",
    "write_pack",
]

FORMAT = "v1"
PACKS_PREFIX = f"{FORMAT}/packs/"
OBJECTS_PREFIX = f"{FORMAT}/objects/"
INDEX_FORMAT_NAME = "gha-mlops-pack-index"
INDEX_VERSION = 1

LARGE_THRESHOLD = 4 << 20
"""Objects of this size or more are stored alone under ``v1/objects/``."""
PACK_SIZE = 32 << 20
"""The most bytes a pack is filled with (a single object may make it exceed this)."""
MIN_PACK_SIZE = 1 << 20
"""Packs are made smaller than :data:`PACK_SIZE` to spread a push over the threads, but not
smaller than this."""
RANGE_GAP = 256 << 10
"""Needed byte ranges of a pack separated by at most this many bytes are read in one GET:
reading a gap costs less than another request's latency."""
MAX_READ = 8 << 20
"""The most bytes one ranged GET asks for, so reads spread over threads and memory stays
bounded."""
WHOLE_PACK_FRACTION = 0.5
"""When at least this fraction of a pack's bytes is needed, the whole pack is read."""

MAX_PACKED_OBJECT = 64 << 20
"""The largest object a pack may hold (16 x the default :data:`LARGE_THRESHOLD`): each is
read into memory whole, so an index may not claim more."""
MAX_INDEX_BYTES = 256 << 20
"""The largest ``.idx`` read from a remote: far above what a :data:`PACK_SIZE` pack of real
files needs, and a bound on the memory a hostile remote can make a fetch use."""


def _check_digest(digest: str) -> None:
    # Exactly a digest gha-mlops writes: the digest names a path in the local cache.
    if not is_object_digest(digest):
        raise ValueError(f"not an object digest (64 lowercase hex digits, maybe + .dir): "
                         f"{digest!r}")


def is_pack_id(name: str) -> bool:
    """True when ``name`` can be a pack id (the sha256 of the pack: 64 lowercase hex)."""
    return is_sha256(name)


def object_key(digest: str) -> str:
    """Where a large object lives: ``v1/objects/ab/<rest>`` (``<rest>`` keeps a ``.dir``)."""
    _check_digest(digest)
    return f"{OBJECTS_PREFIX}{digest[:2]}/{digest[2:]}"


def digest_of_object_key(key: str) -> str | None:
    """The digest a ``v1/objects/`` key holds, or None for a key that is not one."""
    rest = key[len(OBJECTS_PREFIX):] if key.startswith(OBJECTS_PREFIX) else ""
    head, sep, tail = rest.partition("/")
    if not sep or len(head) != 2 or "/" in tail:
        return None
    digest = head + tail
    try:
        _check_digest(digest)
    except ValueError:
        return None
    return digest


def pack_key(pack_id: str) -> str:
    """``v1/packs/<pack-id>.pack``."""
    return f"{PACKS_PREFIX}{pack_id}.pack"


def index_key(pack_id: str) -> str:
    """``v1/packs/<pack-id>.idx``."""
    return f"{PACKS_PREFIX}{pack_id}.idx"


@dataclass(frozen=True, order=True)
class PackEntry:
    """An object inside a pack: bytes ``[offset, offset + length)``."""

    digest: str
    offset: int
    length: int


@dataclass(frozen=True)
class PackIndex:
    """What a ``.idx`` holds: the pack's id (= its sha256), size and entries sorted by digest.

    Encoded as canonical JSON (sorted keys, no spaces, UTF-8)::

        {"entries": [["<digest>", <offset>, <length>], ...], "format": "gha-mlops-pack-index",
         "pack": "<pack-id>", "sha256": "<pack-id>", "size": <bytes>, "version": 1}
    """

    pack_id: str
    size: int
    entries: tuple[PackEntry, ...]

    def to_bytes(self) -> bytes:
        """The canonical encoding (what is uploaded as the ``.idx``)."""
        return canonical_json_bytes({
            "format": INDEX_FORMAT_NAME,
            "version": INDEX_VERSION,
            "pack": self.pack_id,
            "sha256": self.pack_id,
            "size": self.size,
            "entries": [[e.digest, e.offset, e.length] for e in sorted(self.entries)],
        })

    @classmethod
    def from_bytes(cls, data: bytes, pack_id: str) -> PackIndex:
        """Parse and check an index that should describe pack ``pack_id``.

        Raises ``ValueError`` saying what is wrong if it is not a well-formed v1 index of that
        pack (entries out of the pack's bounds included). A newer format version raises
        ``ValueError`` starting with ``"newer"``.
        """
        try:
            doc: Any = json.loads(data)
        except (ValueError, RecursionError) as err:  # RecursionError: [[[[...]]]] nesting
            raise ValueError(f"not JSON: {err}") from None
        if not isinstance(doc, dict) or doc.get("format") != INDEX_FORMAT_NAME:
            raise ValueError("not a gha-mlops pack index")
        version = doc.get("version")
        if not isinstance(version, int):
            raise ValueError("no format version")
        if version > INDEX_VERSION:
            raise ValueError(f"newer format version {version} (this gha-mlops reads "
                             f"{INDEX_VERSION})")
        if doc.get("pack") != pack_id or doc.get("sha256") != pack_id:
            raise ValueError(f"it describes pack {doc.get('pack')!r}, not {pack_id!r}")
        size = doc.get("size")
        raw = doc.get("entries")
        if (not isinstance(size, int) or isinstance(size, bool) or size < 0
                or not isinstance(raw, list)):
            raise ValueError("size or entries missing")
        entries = []
        for item in raw:
            if (not isinstance(item, list) or len(item) != 3 or not isinstance(item[0], str)
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in item[1:])):
                raise ValueError(f"malformed entry {item!r}")
            digest, offset, length = item
            _check_digest(digest)
            if offset < 0 or length < 0 or offset + length > size:
                raise ValueError(f"entry {digest} lies outside the pack")
            if length > MAX_PACKED_OBJECT:
                raise ValueError(f"entry {digest} has {length} bytes, more than the "
                                 f"{MAX_PACKED_OBJECT} a packed object may have")
            entries.append(PackEntry(digest, offset, length))
        return cls(pack_id, size, tuple(entries))


def plan_packs(objects: Sequence[tuple[str, int]], target: int) -> list[list[str]]:
    """Group ``(digest, size)`` into packs of about ``target`` bytes, keeping their order (so
    the files of one directory sit together and a subset of it is a few contiguous ranges)."""
    groups: list[list[str]] = []
    current: list[str] = []
    filled = 0
    for digest, size in objects:
        if current and filled + size > target:
            groups.append(current)
            current, filled = [], 0
        current.append(digest)
        filled += size
    if current:
        groups.append(current)
    return groups


def pack_target(total: int, jobs: int, *, pack_size: int = PACK_SIZE) -> int:
    """The pack size for a push of ``total`` small bytes: enough packs to keep ``jobs``
    threads busy, each between :data:`MIN_PACK_SIZE` and ``pack_size``."""
    return max(min(MIN_PACK_SIZE, pack_size), min(pack_size, -(-total // max(1, jobs))))


def write_pack(sources: Iterable[tuple[str, Path]], tmp_dir: Path) -> tuple[Path, PackIndex]:
    """Concatenate the files ``(digest, path)`` into a new temp file in ``tmp_dir``, hashing
    on the way: ``(temp path, index)``. The caller uploads and then removes the file."""
    fd, tmp = temp_file(tmp_dir, "pack-", ".tmp")
    h = hashlib.sha256()
    entries = []
    offset = 0
    try:
        with os.fdopen(fd, "wb") as out:
            for digest, path in sources:
                with open(path, "rb") as fh:
                    data = fh.read()
                h.update(data)
                out.write(data)
                entries.append(PackEntry(digest, offset, len(data)))
                offset += len(data)
    except BaseException:
        os.unlink(tmp)
        raise
    return Path(tmp), PackIndex(h.hexdigest(), offset, tuple(entries))


@dataclass(frozen=True)
class ReadPlan:
    """One ranged GET of a pack: bytes ``[start, end)``, holding ``entries``."""

    start: int
    end: int
    entries: tuple[PackEntry, ...]


def plan_reads(needed: Iterable[PackEntry], pack_size: int, *, gap: int = RANGE_GAP,
               max_read: int = MAX_READ,
               whole_fraction: float = WHOLE_PACK_FRACTION) -> list[ReadPlan]:
    """The ranged GETs that fetch ``needed`` entries of one pack.

    Entries closer than ``gap`` bytes share a GET; when ``whole_fraction`` of the pack is
    needed every gap is bridged (the whole pack is read, in GETs of at most ``max_read``
    bytes). A GET never exceeds ``max_read`` unless one entry alone does.
    """
    entries = sorted(set(needed), key=lambda e: (e.offset, e.length))
    if not entries:
        return []
    wanted = sum(e.length for e in entries)
    if pack_size and wanted >= whole_fraction * pack_size:
        gap = pack_size
    plans: list[ReadPlan] = []
    start, end, group = entries[0].offset, entries[0].offset + entries[0].length, [entries[0]]
    for e in entries[1:]:
        e_end = e.offset + e.length
        if e.offset - end <= gap and max(end, e_end) - start <= max_read:
            end = max(end, e_end)
            group.append(e)
        else:
            plans.append(ReadPlan(start, end, tuple(group)))
            start, end, group = e.offset, e_end, [e]
    plans.append(ReadPlan(start, end, tuple(group)))
    return plans
