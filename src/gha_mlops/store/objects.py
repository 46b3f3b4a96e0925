"""The content-addressed cache under ``.gha-mlops/cache``.

``objects/ab/cdef...`` holds file contents by sha256 (tree manifests are objects too, named by
their ``.dir`` hash). The run cache beside it (``runs/``) belongs to the pipeline
(:mod:`gha_mlops.pipeline.runcache`).

Every write is a temp file plus a rename, and an object is only ever renamed into place after
its bytes were hashed on the way in, so a reader never sees a partial or mislabelled object.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import itertools
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

from gha_mlops._fs import resolve_inside, temp_dir, temp_file
from gha_mlops.errors import DataIntegrityError, UnsafePathError
from gha_mlops.store.hashing import (
    CHUNK,
    TREE_SUFFIX,
    Hasher,
    is_object_digest,
    is_sha256,
    is_tree,
    relpath_problem,
    sha256_file,
    walk_files,
)
from gha_mlops.store.links import LINK_MODES, clone_into, place

# Files below this size are read whole into memory when cached.
SMALL_OBJECT = 1 << 20
# Bounds on what one manifest may ask for: a manifest from a remote is hostile input, and
# parsing it must not exhaust memory (a real tree of 5 million files has a ~600 MB manifest).
MAX_TREE_ENTRIES = 5_000_000
MAX_MANIFEST_BYTES = 1 << 30
MAX_FILE_SIZE = (1 << 63) - 1
_ENTRY_KEYS = frozenset(("path", "sha256", "size"))


class ManifestError(DataIntegrityError):
    """A tree manifest (``<sha256>.dir``) is not one gha-mlops wrote: its bytes do not hash
    to its name, it is not the JSON list of ``{"path", "sha256", "size"}`` entries, or an
    entry would leave its folder, names no file digest, or clashes with another entry.

    Raised before anything is written: nothing of such a tree is ever materialized or
    enters the cache. ``digest`` names the manifest, ``entry`` the offending entry (its index
    and path, when known), ``problem`` what is wrong and what was expected; callers add the
    dataset and the remote it came from with :meth:`within`.
    """

    def __init__(self, digest: str, problem: str, *, entry: str | None = None,
                 dataset: str | None = None, source: str | None = None,
                 hint: str | None = None) -> None:
        where = f"entry {entry}: " if entry else ""
        prefix = f"dataset {dataset}: " if dataset else ""
        origin = f" from {source}" if source else ""
        super().__init__(
            f"{prefix}tree manifest {digest}{origin} is not one gha-mlops wrote: "
            f"{where}{problem}",
            hint=hint or "delete the manifest from the cache (.gha-mlops/cache/objects/"
                         f"{digest[:2]}/{digest[2:]}) and fetch the dataset again from a "
                         "remote only trusted people can write to")
        self.digest = digest
        self.problem = problem
        self.entry = entry
        self.dataset = dataset
        self.source = source

    def within(self, *, dataset: str | None = None, source: str | None = None,
               hint: str | None = None) -> ManifestError:
        """The same error, naming the dataset and/or the source (remote key) too."""
        return ManifestError(self.digest, self.problem, entry=self.entry,
                             dataset=dataset or self.dataset, source=source or self.source,
                             hint=hint or self.hint)


class TreeEntry(NamedTuple):
    """One file of a tree: ``path`` (safe relative POSIX), its ``sha256`` and ``size``.
    (A named tuple: a manifest has 100,000s of them, and a frozen dataclass costs a
    microsecond more per entry to build.)"""

    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Tree:
    """A parsed and validated tree manifest: entries sorted by path, every path a safe
    relative POSIX path, no duplicates, no path both a file and a folder, every digest a
    file's sha256. Only :func:`parse_manifest` makes one."""

    digest: str
    entries: tuple[TreeEntry, ...]
    # The paths with "/" as NUL, sorted: a folder's descendants follow its name at once
    # ("a" < "a\0b" < "a-x"); NUL cannot occur in a path, so the order is exact.
    keys: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def files(self) -> dict[str, str]:
        """``{relative path: sha256}``."""
        return {e.path: e.sha256 for e in self.entries}

    def digests(self) -> set[str]:
        """The distinct file digests the tree needs."""
        return {e.sha256 for e in self.entries}

    def dirs(self) -> list[str]:
        """The folders holding files (``""`` excluded), sorted; ``makedirs`` adds parents."""
        return sorted({os.path.dirname(e.path) for e in self.entries} - {""})

    def writes_below(self, rel: str) -> bool:
        """True when some entry lies strictly below folder ``rel`` (a relative path)."""
        probe = rel.replace("/", "\0") + "\0"
        i = bisect.bisect_left(self.keys, probe)
        return i < len(self.keys) and self.keys[i].startswith(probe)

    def as_dicts(self) -> list[dict[str, Any]]:
        """The entries as the JSON objects of the manifest (for callers that want dicts)."""
        return [{"path": e.path, "sha256": e.sha256, "size": e.size} for e in self.entries]


def _entry(digest: str, index: int, raw: object) -> TreeEntry:
    """One manifest entry, checked against the schema (raises :class:`ManifestError`)."""
    # The common case in few operations (manifests list 100,000s of entries): exactly the
    # three keys (three non-None values of the right types among three keys), a file digest,
    # a size in range and a safe path; anything else is explained by _refuse.
    if type(raw) is dict and len(raw) == 3:
        path, sha, size = raw.get("path"), raw.get("sha256"), raw.get("size")
        if (type(path) is str and type(sha) is str and type(size) is int
                and 0 <= size <= MAX_FILE_SIZE and is_sha256(sha)
                and relpath_problem(path) is None):
            return TreeEntry(path, sha, size)
    _refuse(digest, index, raw)


def _show(value: object, limit: int = 120) -> str:
    """``repr(value)`` cut to ``limit`` characters: hostile values go into error messages
    (repr escapes control characters; the cut keeps a 4 KB path from flooding the log)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...'"


def _refuse(digest: str, index: int, raw: object) -> NoReturn:
    """Raise the :class:`ManifestError` saying what is wrong with entry ``raw``."""
    if not isinstance(raw, dict):
        raise ManifestError(digest, f"expected an object {{path, sha256, size}}, got "
                                    f"{type(raw).__name__}", entry=f"#{index}")
    path = raw.get("path")
    label = f"#{index} ({_show(path)})" if isinstance(path, str) else f"#{index}"
    if raw.keys() != _ENTRY_KEYS:
        got = ", ".join(sorted(map(str, raw.keys())))
        raise ManifestError(digest, f"expected exactly the keys path, sha256, size; got {got}",
                            entry=label)
    problem = relpath_problem(path)
    if problem is not None:
        raise ManifestError(digest, f"{problem}; expected a relative path inside the tree",
                            entry=label)
    sha = raw["sha256"]
    if not is_sha256(sha):
        raise ManifestError(digest, f"sha256 {_show(sha)} is not 64 lowercase hex digits",
                            entry=label)
    raise ManifestError(digest, f"size {_show(raw['size'])} is not a whole number of bytes "
                                f"(0 to {MAX_FILE_SIZE})", entry=label)


def parse_manifest(digest: str, data: bytes) -> Tree:
    """Parse the bytes of tree manifest ``digest`` into a :class:`Tree`, checking everything:
    the bytes hash to the digest, the JSON has the schema gha-mlops writes, every path stays
    inside the tree, no path is listed twice or is both a file and a folder, and the size
    and entry count are within :data:`MAX_MANIFEST_BYTES` and :data:`MAX_TREE_ENTRIES`.

    This is the one place a manifest is read: whatever passes can be materialized safely.
    Raises :class:`ManifestError` naming the digest, the entry and what was expected.
    """
    if not (is_object_digest(digest) and is_tree(digest)):
        raise ManifestError(digest, "its name is not <64 hex digits>.dir")
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(digest, f"it has {len(data)} bytes, more than the "
                                    f"{MAX_MANIFEST_BYTES} a manifest may have")
    actual = hashlib.sha256(data).hexdigest()
    if actual != digest.removesuffix(TREE_SUFFIX):
        raise ManifestError(digest, f"its bytes hash to {actual}, not to its name")
    try:
        raw: object = json.loads(data)
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        raise ManifestError(digest, f"it is not JSON ({err})") from None
    if not isinstance(raw, list):
        raise ManifestError(digest, f"expected a JSON list of entries, got "
                                    f"{type(raw).__name__}")
    if len(raw) > MAX_TREE_ENTRIES:
        raise ManifestError(digest, f"it lists {len(raw)} files, more than the "
                                    f"{MAX_TREE_ENTRIES} a tree may have")
    entries = sorted((_entry(digest, i, e) for i, e in enumerate(raw)), key=lambda e: e.path)
    keys = sorted(e.path.replace("/", "\0") for e in entries)
    for before, after in itertools.pairwise(keys):
        if after == before or after.startswith(before + "\0"):
            what = "is listed twice" if after == before else "is both a file and a folder"
            raise ManifestError(digest, f"{_show(before.replace(chr(0), '/'))} {what}; expected "
                                        "each path once, files only at the leaves")
    return Tree(digest, tuple(entries), tuple(keys))


class CacheMiss(Exception):
    """An object the caller expected is not in the cache (internal; callers decide to re-run)."""


class ObjectMismatch(Exception):
    """Bytes offered to the cache under a hash do not have that hash (internal: callers turn
    it into a user error naming the object and its source)."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"expected sha256 {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


class ContentCache:
    """``link`` says how large files move between the cache and the workspace (see
    :mod:`gha_mlops.store.links`): ``auto`` (reflink where possible, else copy), ``copy``
    or ``hardlink``."""

    def __init__(self, root: Path, *, link: str = "auto") -> None:
        if link not in LINK_MODES:
            raise ValueError(f"link must be one of {LINK_MODES}, not {link!r}")
        self.link = link
        self.root = root
        self.objects = root / "objects"
        self.tmp = root / "tmp"
        self._dirs: set[Path | str] = set()
        self._objects = str(self.objects)
        self._trees: dict[str, Tree] = {}

    # ----------------------------------------------------------------- objects

    def object_path(self, digest: str) -> Path:
        """Where object ``digest`` lives. ``digest`` must be a digest (64 hex digits, maybe
        ``.dir``): anything else is refused with ``ValueError``, because a string such as
        ``../../etc/passwd`` would name a file outside the cache. Digests from outside are
        checked where they come in; this is the last line of that defence."""
        if not is_object_digest(digest):
            raise ValueError(f"not an object digest: {digest!r}")
        return self.objects / digest[:2] / digest[2:]

    def has(self, digest: str) -> bool:
        """True when the object, and for a tree every file in it, is present.

        A tree whose manifest is malformed raises :class:`ManifestError`: it is there, but
        can never be checked out."""
        if not self.object_path(digest).exists():
            return False
        if is_tree(digest):
            base = self._objects
            exists = os.path.exists
            return all(exists(f"{base}/{d[:2]}/{d[2:]}") for d in self.tree(digest).digests())
        return True

    def absent(self, digests: list[str]) -> list[str]:
        """The digests among ``digests`` whose object is not in the cache (string paths and
        one stat each: this runs over every file of large datasets)."""
        base = self._objects
        return [d for d in digests if not os.path.exists(f"{base}/{d[:2]}/{d[2:]}")]

    def tree(self, digest: str) -> Tree:
        """The validated manifest of tree ``digest`` (see :func:`parse_manifest`): every
        reader of a manifest goes through here. Raises :class:`CacheMiss` when the cache
        lacks it and :class:`ManifestError` when it is malformed. Parsed manifests are kept
        in memory: objects never change."""
        tree = self._trees.get(digest)
        if tree is not None:
            return tree
        if not (is_object_digest(digest) and is_tree(digest)):
            raise ManifestError(digest, "its name is not <64 hex digits>.dir")
        path = self.object_path(digest)
        try:
            size = path.stat().st_size
            if size > MAX_MANIFEST_BYTES:
                raise ManifestError(digest, f"it has {size} bytes, more than the "
                                            f"{MAX_MANIFEST_BYTES} a manifest may have")
            data = path.read_bytes()
        except FileNotFoundError:
            raise CacheMiss(digest) from None
        tree = parse_manifest(digest, data)
        self._trees[digest] = tree
        return tree

    def tree_if_known(self, digest: str) -> Tree | None:
        """:meth:`tree`, or None when the cache lacks the manifest (a malformed one still
        raises :class:`ManifestError`: "unknown" and "hostile" are different answers)."""
        try:
            return self.tree(digest)
        except CacheMiss:
            return None

    def manifest_if_known(self, digest: str) -> list[dict[str, Any]] | None:
        """The entries of :meth:`tree_if_known` as dicts (``path``, ``sha256``, ``size``)."""
        tree = self.tree_if_known(digest)
        return None if tree is None else tree.as_dicts()

    def manifest(self, digest: str) -> list[dict[str, Any]]:
        """The entries of :meth:`tree` as dicts (``path``, ``sha256``, ``size``)."""
        return self.tree(digest).as_dicts()

    def _put_stream(self, src: Path) -> str:
        return self.put_file(src)

    def put_file(self, src: Path | str, expected: str | None = None) -> str:
        """Copy file ``src`` into the cache, hashing on the way; return its sha256.

        With ``expected`` (a plain sha256), bytes that hash differently never enter the cache:
        :class:`ObjectMismatch` is raised and the temp file removed.
        """
        return self.add_file(src, expected)[0]

    def add_file(self, src: Path | str, expected: str | None = None) -> tuple[str, bool]:
        """:meth:`put_file`, also saying whether the object was new to the cache."""
        if self.link == "hardlink":
            self._ensure_dir(self.tmp)
            linked = self._add_hardlink(str(src), expected)
            if linked is not None:
                return linked
        fd = os.open(src, os.O_RDONLY)
        try:
            head = os.read(fd, SMALL_OBJECT)
        finally:
            os.close(fd)
        if len(head) < SMALL_OBJECT:
            # Small file (the many-small-files case): hashed in memory, written only when
            # the cache lacks it, straight into its fan-out directory; plain os calls,
            # because per-file Python overhead is what limits adding 10,000s of files.
            digest = hashlib.sha256(head).hexdigest()
            if expected is not None and digest != expected:
                raise ObjectMismatch(expected, digest)
            return digest, self._write_object(head, digest)
        self._ensure_dir(self.tmp)
        # Created read-only: objects are never modified, and no chmod is needed later.
        fd, tmp = temp_file(self.tmp, "", ".part", mode=0o444)
        try:
            if self.link != "copy" and clone_into(str(src), fd, str(self.tmp)):
                os.close(fd)  # a reflink: no bytes copied; hash what will be installed
                digest = sha256_file(tmp)
            else:
                h = hashlib.sha256()
                with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
                    while chunk := fin.read(CHUNK):
                        h.update(chunk)
                        fout.write(chunk)
                digest = h.hexdigest()
            if expected is not None and digest != expected:
                raise ObjectMismatch(expected, digest)
            return digest, self._install(tmp, digest, chmod=False)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def _add_hardlink(self, src: str, expected: str | None) -> tuple[str, bool] | None:
        """Cache ``src`` by hard-linking it (it becomes read-only, like every object); None
        when it cannot be linked (another filesystem), so the caller copies."""
        digest = sha256_file(src)
        if expected is not None and digest != expected:
            raise ObjectMismatch(expected, digest)
        if self.object_path(digest).exists():
            return digest, False
        tmp = os.path.join(self.tmp, f".{digest}.{os.getpid()}.{id(self)}.link")
        try:
            os.link(src, tmp)
        except OSError:
            return None
        return digest, self._install(tmp, digest)

    def put_verified_bytes(self, data: bytes, expected: str) -> None:
        """Put ``data`` in the cache under ``expected`` after checking it hashes to it
        (for a tree manifest, ``expected`` ends in ``.dir`` and the hash is of the manifest,
        which must also pass :meth:`check_manifest`: a malformed one never enters)."""
        got = hashlib.sha256(data).hexdigest()
        if got != expected.removesuffix(TREE_SUFFIX):
            raise ObjectMismatch(expected, got)
        if is_tree(expected):
            self.check_manifest(expected, data)
        self._put_bytes(data, expected)

    def check_manifest(self, digest: str, data: bytes) -> Tree:
        """Validate manifest bytes arriving for ``digest`` (see :func:`parse_manifest`) before
        they enter the cache; remembered, so reading it back costs no second parse."""
        tree = parse_manifest(digest, data)
        self._trees[digest] = tree
        return tree

    def _ensure_dir(self, path: Path) -> None:
        # Tens of thousands of objects go into 256 fan-out directories: remember which exist.
        if path not in self._dirs:
            path.mkdir(parents=True, exist_ok=True)
            self._dirs.add(path)

    def _install(self, tmp: str, digest: str, *, chmod: bool = True) -> bool:
        dest = self.object_path(digest)
        if dest.exists():
            os.unlink(tmp)
            return False
        self._ensure_dir(dest.parent)
        if chmod:
            os.chmod(tmp, 0o444)
        os.replace(tmp, dest)
        return True

    def store_manifest(self, digest: str, manifest: bytes) -> None:
        """Keep a tree's manifest (not its files): enough to say later which files changed."""
        self._put_bytes(manifest, digest)

    def _put_bytes(self, data: bytes, digest: str) -> None:
        self._write_object(data, digest)

    def _write_object(self, data: bytes, digest: str) -> bool:
        """Write ``data`` as object ``digest`` unless present; True when it was new.

        The temp file is made read-only in the object's own fan-out directory and renamed
        within it: parallel writers neither contend for one temp directory nor pay for renames
        across directories (which ext4 serializes), which is what limits 10,000-object pulls.
        """
        subdir = f"{self._objects}/{digest[:2]}"
        dest = f"{subdir}/{digest[2:]}"
        if os.path.exists(dest):
            return False
        if subdir not in self._dirs:
            os.makedirs(subdir, exist_ok=True)
            self._dirs.add(subdir)
        tmp = f"{subdir}/.{os.urandom(6).hex()}.part"
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(out, view):]
            os.close(out)
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(out)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return True

    def store(self, hasher: Hasher, rel: str, expected: str) -> None:
        """Put workspace path ``rel`` (whose hash is ``expected``) into the cache.

        Files whose object already exists are not copied again. A file that changes while it
        is being stored yields a different hash; that is reported rather than cached wrongly.
        """
        full = hasher.root / rel
        if not is_tree(expected):
            if not self.object_path(expected).exists():
                got = self._put_stream(full)
                if got != expected:
                    raise OSError(f"{rel} changed while it was being cached")
            return
        manifest = hasher.manifests.get(expected)
        if manifest is None:
            digest, manifest = hasher.hash_tree(rel)
            if digest != expected:
                raise OSError(f"{rel} changed while it was being cached")
        for entry in json.loads(manifest):
            if not self.object_path(entry["sha256"]).exists():
                got = self._put_stream(full / entry["path"])
                if got != entry["sha256"]:
                    raise OSError(f"{rel}/{entry['path']} changed while it was being cached")
        # The manifest goes in last: a tree object's presence promises its members.
        self._put_bytes(manifest, expected)

    def checkout(self, digest: str, dest: Path, *, inside: Path | None = None) -> None:
        """Materialize object ``digest`` at ``dest``, replacing what is there, atomically.

        The new file or tree is assembled beside ``dest`` and renamed over it, so ``dest`` is
        at every moment either the old content or the complete new one. A tree's manifest is
        validated whole (:meth:`tree`) before anything is written.

        With ``inside`` (the workspace, or the folder a user named), ``dest`` must stay in it
        once its symlinks are resolved, and an existing tree at ``dest`` must not hold a
        symlink where the new tree has a folder: both raise :class:`UnsafePathError` and
        nothing is written. A symlink at ``dest`` itself (inside) is replaced, not followed.
        """
        if not self.has(digest):
            raise CacheMiss(digest)
        if inside is not None:
            dest = _safe_dest(inside, dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not is_tree(digest):
            tmp = _temp_sibling(dest)
            os.unlink(tmp)  # only its unique name is wanted
            place(str(self.object_path(digest)), str(tmp), self.link)
            _replace(tmp, dest)
            return
        tree = self.tree(digest)
        if inside is not None:
            _refuse_links_in_the_way(tree, dest)
        tmpdir = temp_dir(dest.parent, f".{dest.name}.")
        try:
            self._materialize_tree(tree, str(tmpdir))
            _replace(tmpdir, dest)
        except BaseException:
            shutil.rmtree(tmpdir, ignore_errors=True)
            raise

    def _materialize_tree(self, tree: Tree, root: str) -> None:
        """Copy a tree's files out of the cache under ``root`` (a new, empty, private
        folder): directories first, then the files in a few large batches on parallel
        threads (the copies release the GIL; one task per file would cost more in hand-offs
        than 10,000 small copies take). Files are created with ``O_EXCL | O_NOFOLLOW``: a
        path is never written through a link. An object whose size is not the one the
        manifest gives raises :class:`ManifestError`."""
        for d in tree.dirs():
            os.makedirs(f"{root}/{d}", exist_ok=True)
        entries = list(tree.entries)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW

        def batch(chunk: list[TreeEntry]) -> None:
            for e in chunk:
                digest = e.sha256
                src = f"{self._objects}/{digest[:2]}/{digest[2:]}"
                if e.size < SMALL_OBJECT and self.link != "hardlink":
                    fd = os.open(src, os.O_RDONLY)
                    try:
                        data = os.read(fd, SMALL_OBJECT)
                    finally:
                        os.close(fd)
                    if len(data) != e.size:
                        raise _size_mismatch(tree, e, len(data))
                    out = os.open(f"{root}/{e.path}", flags, 0o644)
                    try:
                        view = memoryview(data)
                        while view:
                            view = view[os.write(out, view):]
                    finally:
                        os.close(out)
                else:
                    actual = os.stat(src).st_size
                    if actual != e.size:
                        raise _size_mismatch(tree, e, actual)
                    place(src, f"{root}/{e.path}", self.link)

        jobs = min(8, (os.cpu_count() or 1) * 2)
        size = max(128, len(entries) // (jobs * 4) + 1)
        chunks = [entries[i:i + size] for i in range(0, len(entries), size)]
        if len(chunks) <= 1:
            for chunk in chunks:
                batch(chunk)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(batch, chunks))

    def tree_files(self, digest: str) -> dict[str, str]:
        """``{relative path: sha256}`` of a cached tree (validated, see :meth:`tree`)."""
        return self.tree(digest).files()


def _size_mismatch(tree: Tree, entry: TreeEntry, actual: int) -> ManifestError:
    return ManifestError(tree.digest, f"object {entry.sha256} has {actual} bytes, the "
                                      f"manifest says {entry.size}", entry=repr(entry.path))


def _safe_dest(inside: Path, dest: Path) -> Path:
    """``dest`` with its folder's symlinks resolved, refusing (:class:`UnsafePathError`) a
    ``dest`` that leaves ``inside``: resolved whole when it is a link (so a link to outside
    is refused), but returned with its own name, so a link there is replaced, not followed."""
    resolve_inside(inside, dest, what="destination")
    return resolve_inside(inside, dest.parent, what="destination folder") / dest.name


def _refuse_links_in_the_way(tree: Tree, dest: Path) -> None:
    """Refuse a symlink in the tree already at ``dest`` where ``tree`` has a folder: the
    user (or a pull request) put it there meaning it to be followed, and gha-mlops never
    writes through a link. Walks the existing tree once without following links."""
    if dest.is_symlink() or not dest.is_dir():
        return
    base = str(dest)
    for dirpath, dirnames, filenames in os.walk(base):
        prefix = os.path.relpath(dirpath, base).replace(os.sep, "/")
        prefix = "" if prefix == "." else prefix + "/"
        for name in (*dirnames, *filenames):
            full = os.path.join(dirpath, name)
            if os.path.islink(full) and tree.writes_below(prefix + name):
                raise UnsafePathError(
                    f"{full} is a symlink (to {os.readlink(full)}) where dataset tree "
                    f"{tree.digest[:16]} has a folder; gha-mlops does not write through links",
                    hint="remove the link (or replace it with a real folder) and run again")
        # Only folders the new tree writes into can hold a link in its way.
        dirnames[:] = [d for d in dirnames if tree.writes_below(prefix + d)]


def _temp_sibling(dest: Path) -> Path:
    fd, tmp = temp_file(dest.parent, f".{dest.name}.")
    os.close(fd)
    return Path(tmp)


def _replace(src: Path, dest: Path) -> None:
    """Rename ``src`` over ``dest``; a directory (or a file where a directory is) goes first.

    Never follows a link: a symlink at ``dest`` is itself replaced, and the old tree is
    moved aside under a fresh private name (not a guessable one a link could sit at)."""
    if dest.is_dir() and not dest.is_symlink():
        old = temp_dir(dest.parent, f".{dest.name}.old-")
        os.replace(dest, old)  # a directory may replace an empty one
        os.replace(src, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        if src.is_dir() and (dest.exists() or dest.is_symlink()):
            os.unlink(dest)
        os.replace(src, dest)


def remove_path(path: Path) -> None:
    """Remove a file or tree if present. A symlink at ``path`` is removed, not followed;
    links in its folders are the caller's to refuse (``_fs.resolve_inside``) beforehand."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def files_of(path: Path) -> list[str]:
    return [rel for rel, _ in walk_files(path)]
