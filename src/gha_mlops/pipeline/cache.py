"""The content-addressed cache under ``.gha-mlops/cache``.

``objects/ab/cdef...`` holds file contents by sha256 (tree manifests are objects too, named by
their ``.dir`` hash); ``runs/ab/<signature>.json`` maps a stage signature to the hashes of the
outputs it produced, so returning to an earlier signature restores instead of re-running.

Every write is a temp file plus a rename, and an object is only ever renamed into place after
its bytes were hashed on the way in, so a reader never sees a partial or mislabelled object.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gha_mlops._fs import atomic_write_json, temp_dir, temp_file
from gha_mlops.pipeline._links import LINK_MODES, clone_into, place
from gha_mlops.pipeline.hashing import CHUNK, TREE_SUFFIX, Hasher, is_tree, sha256_file, walk_files

# Files below this size are read whole into memory when cached.
SMALL_OBJECT = 1 << 20


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
    :mod:`gha_mlops.pipeline._links`): ``auto`` (reflink where possible, else copy), ``copy``
    or ``hardlink``."""

    def __init__(self, root: Path, *, link: str = "auto") -> None:
        if link not in LINK_MODES:
            raise ValueError(f"link must be one of {LINK_MODES}, not {link!r}")
        self.link = link
        self.root = root
        self.objects = root / "objects"
        self.runs = root / "runs"
        self.tmp = root / "tmp"
        self._dirs: set[Path | str] = set()
        self._objects = str(self.objects)

    # ----------------------------------------------------------------- objects

    def object_path(self, digest: str) -> Path:
        return self.objects / digest[:2] / digest[2:]

    def has(self, digest: str) -> bool:
        """True when the object, and for a tree every file in it, is present."""
        if not self.object_path(digest).exists():
            return False
        if is_tree(digest):
            return all(self.object_path(e["sha256"]).exists() for e in self.manifest(digest))
        return True

    def absent(self, digests: list[str]) -> list[str]:
        """The digests among ``digests`` whose object is not in the cache (string paths and
        one stat each: this runs over every file of large datasets)."""
        base = self._objects
        return [d for d in digests if not os.path.exists(f"{base}/{d[:2]}/{d[2:]}")]

    def manifest_if_known(self, digest: str) -> list[dict[str, Any]] | None:
        try:
            return self.manifest(digest)
        except (OSError, ValueError):
            return None

    def manifest(self, digest: str) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = json.loads(self.object_path(digest).read_bytes())
        return data

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
        (for a tree manifest, ``expected`` ends in ``.dir`` and the hash is of the manifest)."""
        got = hashlib.sha256(data).hexdigest()
        if got != expected.removesuffix(TREE_SUFFIX):
            raise ObjectMismatch(expected, got)
        self._put_bytes(data, expected)

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

    def checkout(self, digest: str, dest: Path) -> None:
        """Materialize object ``digest`` at ``dest``, replacing what is there, atomically.

        The new file or tree is assembled beside ``dest`` and renamed over it, so ``dest`` is
        at every moment either the old content or the complete new one.
        """
        if not self.has(digest):
            raise CacheMiss(digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not is_tree(digest):
            tmp = _temp_sibling(dest)
            os.unlink(tmp)  # only its unique name is wanted
            place(str(self.object_path(digest)), str(tmp), self.link)
            _replace(tmp, dest)
            return
        tmpdir = temp_dir(dest.parent, f".{dest.name}.")
        try:
            self._materialize_tree(self.manifest(digest), str(tmpdir))
            _replace(tmpdir, dest)
        except BaseException:
            shutil.rmtree(tmpdir, ignore_errors=True)
            raise

    def _materialize_tree(self, entries: list[dict[str, Any]], root: str) -> None:
        """Copy a tree's files out of the cache under ``root``: directories first, then the
        files in a few large batches on parallel threads (the copies release the GIL; one
        task per file would cost more in hand-offs than 10,000 small copies take)."""
        for d in sorted({os.path.dirname(e["path"]) for e in entries} - {""}):
            os.makedirs(f"{root}/{d}", exist_ok=True)

        def batch(chunk: list[dict[str, Any]]) -> None:
            for e in chunk:
                digest = e["sha256"]
                src = f"{self._objects}/{digest[:2]}/{digest[2:]}"
                if e["size"] < SMALL_OBJECT and self.link != "hardlink":
                    fd = os.open(src, os.O_RDONLY)
                    try:
                        data = os.read(fd, SMALL_OBJECT)
                    finally:
                        os.close(fd)
                    out = os.open(f"{root}/{e['path']}", os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                                  0o644)
                    try:
                        view = memoryview(data)
                        while view:
                            view = view[os.write(out, view):]
                    finally:
                        os.close(out)
                else:
                    place(src, f"{root}/{e['path']}", self.link)

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
        """``{relative path: sha256}`` of a cached tree."""
        return {e["path"]: e["sha256"] for e in self.manifest(digest)}

    # ----------------------------------------------------------------- run cache

    def run_entry_path(self, signature: str) -> Path:
        return self.runs / signature[:2] / f"{signature}.json"

    def lookup_run(self, signature: str) -> dict[str, Any] | None:
        """The outputs recorded for ``signature``, if every one of them is still cached."""
        try:
            entry: dict[str, Any] = json.loads(self.run_entry_path(signature).read_bytes())
        except (OSError, ValueError):
            return None
        outs = entry.get("outs")
        if not isinstance(outs, dict) or not all(self.has(d) for d in outs.values()):
            return None
        return entry

    def save_run(self, signature: str, outs: Mapping[str, str], extra: Mapping[str, Any]) -> None:
        atomic_write_json(self.run_entry_path(signature), {"outs": dict(outs), **extra})


def _temp_sibling(dest: Path) -> Path:
    fd, tmp = temp_file(dest.parent, f".{dest.name}.")
    os.close(fd)
    return Path(tmp)


def _replace(src: Path, dest: Path) -> None:
    """Rename ``src`` over ``dest``; a directory (or a file where a directory is) goes first."""
    if dest.is_dir() and not dest.is_symlink():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
        os.replace(src, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        if src.is_dir() and (dest.exists() or dest.is_symlink()):
            os.unlink(dest)
        os.replace(src, dest)


def remove_path(path: Path) -> None:
    """Remove a file or tree if present."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def files_of(path: Path) -> list[str]:
    return [rel for rel, _ in walk_files(path)]
