"""The content-addressed cache under ``.gha-mlops/cache``.

``objects/ab/cdef...`` holds file contents by sha256 (tree manifests are objects too, named by
their ``.dir`` hash); ``runs/ab/<signature>.json`` maps a stage signature to the hashes of the
outputs it produced, so returning to an earlier signature restores instead of re-running.

Every write is a temp file plus a rename, and an object is only ever renamed into place after
its bytes were hashed on the way in, so a reader never sees a partial or mislabelled object.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gha_mlops._fs import atomic_write_json, temp_dir, temp_file
from gha_mlops.pipeline.hashing import CHUNK, Hasher, is_tree, walk_files


class CacheMiss(Exception):
    """An object the caller expected is not in the cache (internal; callers decide to re-run)."""


class ContentCache:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "objects"
        self.runs = root / "runs"
        self.tmp = root / "tmp"

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

    def manifest_if_known(self, digest: str) -> list[dict[str, Any]] | None:
        try:
            return self.manifest(digest)
        except (OSError, ValueError):
            return None

    def manifest(self, digest: str) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = json.loads(self.object_path(digest).read_bytes())
        return data

    def _put_stream(self, src: Path) -> str:
        """Copy ``src`` into the cache, hashing on the way; returns its sha256."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        fd, tmp = temp_file(self.tmp, "", ".part")
        try:
            h = hashlib.sha256()
            with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
                while chunk := fin.read(CHUNK):
                    h.update(chunk)
                    fout.write(chunk)
            digest = h.hexdigest()
            dest = self.object_path(digest)
            if dest.exists():
                os.unlink(tmp)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(tmp, 0o444)
                os.replace(tmp, dest)
            return digest
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def store_manifest(self, digest: str, manifest: bytes) -> None:
        """Keep a tree's manifest (not its files): enough to say later which files changed."""
        self._put_bytes(manifest, digest)

    def _put_bytes(self, data: bytes, digest: str) -> None:
        dest = self.object_path(digest)
        if not dest.exists():
            self.tmp.mkdir(parents=True, exist_ok=True)
            fd, tmp = temp_file(self.tmp, "", ".part")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(tmp, 0o444)
            os.replace(tmp, dest)

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
            shutil.copyfile(self.object_path(digest), tmp)
            os.chmod(tmp, 0o644)
            _replace(tmp, dest)
            return
        tmpdir = temp_dir(dest.parent, f".{dest.name}.")
        try:
            for entry in self.manifest(digest):
                target = tmpdir / entry["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.object_path(entry["sha256"]), target)
            _replace(tmpdir, dest)
        except BaseException:
            shutil.rmtree(tmpdir, ignore_errors=True)
            raise

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
