"""The workspace lock: one ``gha-mlops run`` (or reproduce, or gc) at a time per workspace.

An advisory ``flock`` on ``.gha-mlops/lock``: the kernel releases it when the holder dies, even
on ``kill -9``, so a crashed run never leaves the workspace locked. The holder writes who it is
into the lock file so the next one can say what it is waiting for.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from types import TracebackType

from gha_mlops.errors import WorkspaceBusyError


class WorkspaceLock:
    def __init__(self, state_dir: Path, *, wait: float = 0.0, what: str = "run") -> None:
        self.path = state_dir / "lock"
        self.wait = wait
        self.what = what
        self._fd: int | None = None

    def __enter__(self) -> WorkspaceLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_holder(fd)
                    os.close(fd)
                    raise WorkspaceBusyError(
                        f"the workspace is busy: {holder} holds {self.path}",
                        hint="wait for it to finish, or pass --wait SECONDS to queue behind it",
                    ) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "what": self.what,
                                  "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                                 ).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"gha-mlops {info.get('what', 'run')} (pid {info['pid']}, since {info['since']})"
    except (ValueError, KeyError, OSError):
        return "another gha-mlops process"
