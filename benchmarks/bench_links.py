"""Cache <-> workspace moves of one large file: reflink (auto) vs copy vs hard link.

Needs root (it loop-mounts an XFS image with reflink=1, a copy-on-write filesystem) and
mkfs.xfs (Debian xfsprogs). Times ``ContentCache.add_file`` (which also hashes: a reflink
saves the write, not the read) and ``ContentCache.checkout`` (a reflink or hard link saves
both), and the disk space each mode uses. Run: .venv/bin/python benchmarks/bench_links.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from gha_mlops.store.objects import ContentCache


def used_mb(mnt: Path) -> float:
    st = os.statvfs(mnt)
    return (st.f_blocks - st.f_bfree) * st.f_frsize / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("mkfs.xfs") is None:
        raise SystemExit("needs root and mkfs.xfs (apt-get install xfsprogs)")
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        image, mnt = Path(tmp) / "xfs.img", Path(tmp) / "mnt"
        with image.open("wb") as fh:
            fh.truncate((args.size_mb * 4 + 512) << 20)
        subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True)
        mnt.mkdir()
        subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
        try:
            src = mnt / "data.bin"
            with src.open("wb") as fh:
                for _ in range(args.size_mb):
                    fh.write(os.urandom(1 << 20))
            print(f"one {args.size_mb} MB file on XFS (reflink=1), median of {args.runs} runs")
            for mode in ("copy", "auto", "hardlink"):
                adds, outs, space = [], [], []
                for _ in range(args.runs):
                    work = mnt / f"w-{mode}"
                    shutil.rmtree(work, ignore_errors=True)
                    work.mkdir()
                    shutil.copyfile(src, work / "data.bin") if mode == "hardlink" else None
                    before = used_mb(mnt)
                    cache = ContentCache(work / "cache", link=mode)
                    target = work / "data.bin" if mode == "hardlink" else src
                    t = time.perf_counter()
                    digest, _ = cache.add_file(target)
                    adds.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    cache.checkout(digest, work / "out.bin")
                    outs.append(time.perf_counter() - t)
                    os.sync()
                    space.append(used_mb(mnt) - before)
                    shutil.rmtree(work)
                print(f"  {mode:<9} add {statistics.median(adds):6.3f} s   checkout "
                      f"{statistics.median(outs) * 1000:8.1f} ms   space used "
                      f"{statistics.median(space):7.1f} MB")
        finally:
            subprocess.run(["umount", str(mnt)], check=True)


if __name__ == "__main__":
    main()
