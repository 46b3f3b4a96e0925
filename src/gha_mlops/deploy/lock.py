"""One deploy per environment at a time: a lock container on the environment's first host.

Docker refuses a second container of the same name, so creating the lock is atomic across
machines. The lock names its holder (``hostname:pid``) and when it expires (the longest the
rollout can take, plus a margin). A holder that is gone is found and the lock broken: one on
this machine whose process no longer runs (``deploy`` killed with -9), or any holder past its
expiry. A live holder makes the next deploy wait (``--wait``) or fail with exit 75, naming it.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from gha_mlops.deploy.errors import DeployBusyError, DeployTargetError
from gha_mlops.deploy.model import LockInfo
from gha_mlops.deploy.ports import DeployHost

POLL_S = 1.0


def me(what: str, *, lease_s: float, now: float | None = None) -> LockInfo:
    """The LockInfo of this process, for ``lease_s`` seconds from ``now``."""
    host = socket.gethostname()
    start = time.time() if now is None else now
    return LockInfo(owner=f"{host}:{os.getpid()}", hostname=host, pid=os.getpid(),
                    started=start, expires=start + lease_s, what=what)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def stale(holder: LockInfo, *, now: float) -> str | None:
    """Why ``holder`` no longer holds the lock (None: it does)."""
    if holder.expires < now:
        return f"its lease ran out at {_when(holder.expires)}"
    if holder.hostname == socket.gethostname() and holder.pid != os.getpid() \
            and not pid_alive(holder.pid):
        return f"process {holder.pid} on this machine is gone"
    return None


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp))


@dataclass
class EnvLock:
    """``with EnvLock(host, env, lock, image=...):`` holds the environment, waiting up to
    ``wait_s`` for a live holder; ``notes`` says what was found (a broken stale lock)."""

    host: DeployHost
    env: str
    lock: LockInfo
    image: str
    wait_s: float = 0.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time
    notes: list[str] = field(default_factory=list)

    def __enter__(self) -> EnvLock:
        deadline = self.clock() + self.wait_s
        while True:
            holder = self.host.acquire_lock(self.env, self.lock, image=self.image)
            if holder is None:
                return self
            why = stale(holder, now=self.clock())
            if why is not None:
                if self.host.break_lock(self.env, holder):
                    self.notes.append(f"took over the lock of {holder.owner} "
                                      f"({holder.what or 'a deploy'}): {why}")
                continue
            if self.clock() >= deadline:
                raise DeployBusyError(
                    f"environment {self.env} is being deployed by {holder.owner} since "
                    f"{_when(holder.started)} ({holder.what or 'a deploy'})",
                    hint="wait for it to finish (a workflow's concurrency group queues "
                         "deploys), or pass --wait SECONDS to wait here")
            self.sleep(POLL_S)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.host.release_lock(self.env, self.lock)
        except DeployTargetError:
            if exc is None:
                raise
            # The host is gone and an error is on its way out already: that error says so.
            # The lock stays; its holder (this process) will be gone, so the next deploy on
            # this machine, or any after the lease, takes it over.
