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
import shutil
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
    """
    if mode == "hardlink":
        try:
            os.link(src, dst)
            return "hardlink"
        except OSError:  # another filesystem, or one without hard links
            pass
    if mode != "copy":
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            if clone_into(src, fd, os.path.dirname(dst) or "."):
                os.fchmod(fd, 0o644)  # a clone is an independent file: the user's to edit
                return "reflink"
        finally:
            os.close(fd)
        os.unlink(dst)
    shutil.copyfile(src, dst)
    os.chmod(dst, 0o644)
    return "copy"
