"""How the cache puts files in place: copies, hard links (asked for), reflinks (where the
filesystem can: a loop-mounted XFS image gives a real copy-on-write filesystem)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gha_mlops.store import links as _links
from gha_mlops.store.objects import SMALL_OBJECT, ContentCache

BIG = SMALL_OBJECT + 12345  # large files take the link/clone path


def _big(path: Path, seed: int = 1) -> bytes:
    data = bytes((i * seed) % 251 for i in range(BIG))
    path.write_bytes(data)
    return data


def test_copy_mode_gives_an_independent_writable_file(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path / "cache", link="copy")
    data = _big(tmp_path / "a.bin")
    digest, new = cache.add_file(tmp_path / "a.bin")
    assert new
    cache.checkout(digest, tmp_path / "out.bin")
    out = tmp_path / "out.bin"
    assert out.read_bytes() == data
    assert out.stat().st_ino != cache.object_path(digest).stat().st_ino
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert stat.S_IMODE(cache.object_path(digest).stat().st_mode) == 0o444


def test_auto_mode_falls_back_to_a_copy_where_reflinks_are_refused(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path / "cache")  # auto
    data = _big(tmp_path / "a.bin")
    digest, _ = cache.add_file(tmp_path / "a.bin")
    cache.checkout(digest, tmp_path / "out.bin")
    out = tmp_path / "out.bin"
    out.write_bytes(b"edited")  # whatever the filesystem did, the cache keeps its bytes
    assert cache.object_path(digest).read_bytes() == data


def test_hardlink_mode_shares_the_file_and_keeps_it_read_only(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path / "cache", link="hardlink")
    src = tmp_path / "a.bin"
    data = _big(src)
    digest, new = cache.add_file(src)
    obj = cache.object_path(digest)
    assert new and obj.read_bytes() == data
    assert src.stat().st_ino == obj.stat().st_ino  # added without a copy
    assert stat.S_IMODE(src.stat().st_mode) == 0o444  # the object must never change

    small = tmp_path / "small.txt"
    small.write_text("tiny\n")
    small_digest, _ = cache.add_file(small)
    for d, name in ((digest, "out.bin"), (small_digest, "out.txt")):
        cache.checkout(d, tmp_path / name)
        assert (tmp_path / name).stat().st_ino == cache.object_path(d).stat().st_ino

    again, new_again = cache.add_file(tmp_path / "out.bin")  # already cached: nothing to do
    assert (again, new_again) == (digest, False)


def test_hardlink_mode_rejects_bytes_that_do_not_match(tmp_path: Path) -> None:
    from gha_mlops.store.objects import ObjectMismatch

    cache = ContentCache(tmp_path / "cache", link="hardlink")
    _big(tmp_path / "a.bin")
    with pytest.raises(ObjectMismatch):
        cache.add_file(tmp_path / "a.bin", expected="0" * 64)
    assert not cache.objects.exists() or not any(cache.objects.rglob("*"))
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) != 0o444


def test_an_unknown_link_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="link must be one of"):
        ContentCache(tmp_path, link="symlink")


@pytest.fixture()
def xfs(tmp_path: Path) -> Iterator[Path]:
    """A loop-mounted XFS filesystem with reflinks (needs root; mkfs.xfs comes from xfsprogs,
    which `make test` installs)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a loop filesystem needs root (CI runs the suite as root)")
    if shutil.which("mkfs.xfs") is None:
        pytest.fail("mkfs.xfs is missing: install xfsprogs (`.ci/system-deps` does)")
    image, mnt = tmp_path / "xfs.img", tmp_path / "mnt"
    with image.open("wb") as fh:
        fh.truncate(320 << 20)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True)
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def _shared_extents(path: Path) -> bool:
    out = subprocess.run(["xfs_io", "-r", "-c", "fiemap -v", str(path)], check=True,
                         capture_output=True, text=True).stdout
    # FIEMAP_EXTENT_SHARED is 0x2000 in the flags column.
    flags = [int(line.split()[-1], 16) for line in out.splitlines()[2:] if line.strip()]
    return bool(flags) and all(f & 0x2000 for f in flags)


def test_reflinks_on_a_copy_on_write_filesystem(xfs: Path) -> None:
    cache = ContentCache(xfs / "cache")  # auto
    data = _big(xfs / "a.bin", seed=7)
    digest, _ = cache.add_file(xfs / "a.bin")
    obj = cache.object_path(digest)
    assert _shared_extents(obj)  # cached without copying a block

    out = xfs / "out.bin"
    assert _links.place(str(obj), str(out)) == "reflink"
    assert _shared_extents(out) and out.stat().st_ino != obj.stat().st_ino
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    with out.open("r+b") as fh:  # writing the clone copies on write: the object is intact
        fh.write(b"changed")
    assert obj.read_bytes() == data

    cache.checkout(digest, xfs / "checked-out.bin")
    assert _shared_extents(xfs / "checked-out.bin")
