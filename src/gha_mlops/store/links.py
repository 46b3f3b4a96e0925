"""Putting a cached object in place without copying its bytes, where the filesystem allows.

*Reflinks* (copy-on-write clones: Btrfs, XFS with reflink=1, bcachefs, ZFS 2.2+, overlayfs over
those) share the blocks until either side is written, so they are as safe as copies and cost
no space or time; they are tried first for every large file, and a filesystem that refuses is
remembered, so the attempt costs one failed ioctl per pair of filesystems. *Hard links* share
the file itself: cache objects are read-only, so an edit in place fails instead of corrupting
the cache, except for root, whom permissions do not stop; they are therefore only used when
asked for (``--link hardlink``).
"""

from __future__ import annotations

import os
import sys
import threading

LINK_MODES = ("auto", "copy", "hardlink")
"""auto: reflink where the filesystem can, else copy. copy: always copy. hardlink: hard link
(same filesystem), else as auto."""

_FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
_refused: set[tuple[int, int]] = set()
_lock = threading.Lock()


def clone_into(src: str, dst_fd: int, dst_dir: str) -> bool:
    """Make the open, empty file ``dst_fd`` (in directory ``dst_dir``) a reflink of ``src``.

    False, leaving ``dst_fd`` empty, where reflinks are not possible (other platforms, other
    filesystems, two filesystems)."""
    if not sys.platform.startswith("linux"):
        return False
    import fcntl

    pair = (os.stat(src).st_dev, os.stat(dst_dir).st_dev)
    if pair in _refused:
        return False
    src_fd = os.open(src, os.O_RDONLY)
    try:
        fcntl.ioctl(dst_fd, _FICLONE, src_fd)
        return True
    except OSError:  # EOPNOTSUPP, EXDEV, EINVAL, ENOTTY...: copy instead
        with _lock:
            _refused.add(pair)
        os.ftruncate(dst_fd, 0)
        return False
    finally:
        os.close(src_fd)


def place(src: str, dst: str, mode: str = "auto") -> str:
    """Create file ``dst`` (it must not exist) with the content of cache object ``src``:
    a hard link (mode ``hardlink``), a reflink, or a copy; returns which (``hardlink``,
    ``reflink`` or ``copy``). Links and clones keep ``src``'s read-only mode; copies get 0644.

    ``dst`` is created with ``O_EXCL | O_NOFOLLOW`` (and ``link(2)`` never follows it): an
    existing file or symlink there raises ``FileExistsError``, so nothing is written through
    a link someone placed at ``dst``.
    """
    if mode == "hardlink":
        try:
            os.link(src, dst)
            return "hardlink"
        except FileExistsError:
            raise
        except OSError:  # another filesystem, or one without hard links
            pass
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        if mode != "copy" and clone_into(src, fd, os.path.dirname(dst) or "."):
            kind = "reflink"
        else:
            _copy_into(src, fd)
            kind = "copy"
        os.fchmod(fd, 0o644)  # a clone or copy is an independent file: the user's to edit
    except BaseException:
        os.close(fd)
        os.unlink(dst)
        raise
    os.close(fd)
    return kind


def _copy_into(src: str, out: int) -> None:
    """Copy file ``src`` into the open, empty file ``out``: ``sendfile`` (no copies through
    user space, as ``shutil.copyfile`` does on Linux), else plain reads and writes."""
    with open(src, "rb") as fin:
        offset = 0
        try:
            while n := os.sendfile(out, fin.fileno(), offset, 1 << 30):
                offset += n
            return
        except OSError:
            if offset:  # failed midway: not a matter of sendfile being unsupported
                raise
        while chunk := fin.read(1 << 20):
            view = memoryview(chunk)
            while view:
                view = view[os.write(out, view):]
