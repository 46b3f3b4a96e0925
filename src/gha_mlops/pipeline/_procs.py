"""Stage processes die with the run that started them.

A stage's command runs in a process group of its own (so Ctrl-C can stop all of it, and
nothing else). Three mechanisms make sure no part of it outlives its ``gha-mlops`` process,
even one killed with ``kill -9`` (which no handler sees):

1. *Parent-death signal.* The stage's shell asks the kernel (``PR_SET_PDEATHSIG``) to be
   killed when the thread that started it dies. It only reaches that one process, which is
   why there is more.
2. *A guard.* A tiny separate process, started with the first stage of a run, is told each
   stage's process group over a pipe. When the pipe ends without the groups being taken off
   the list (the runner died), it kills those groups at once.
3. *A durable record.* Each running stage's group is written to
   ``.gha-mlops/tmp/runs/<run id>/procs/<stage>.json`` (pid, process group, kernel start time,
   run id). Should the guard have died too, the next ``gha-mlops run`` kills what is left
   under the workspace lock before it does anything (:func:`stop_leftovers`).

The command does not start before the guard knows its group and its record is written: the
stage's shell first waits for a line on its stdin (:data:`_GATE`), which the runner sends once
both are done. A runner killed in between closes that pipe, and the shell exits without
running the command, so no stage can run unrecorded.

When a stage's command ends, what it left running in its group is stopped too: a background
process writing an output after the stage was hashed would make the cache lie.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gha_mlops._fs import atomic_write_json

# How long the next run waits for the processes it killed to be gone (SIGKILL is not
# instant for a process in the middle of a write to a slow disk).
REAP_WAIT_S = 5.0

_PR_SET_PDEATHSIG = 1

# The guard reads "+PGID" / "-PGID" lines; at end of input it SIGKILLs the groups still listed.
# -I -S: no site-packages, no user paths, nothing from the environment: it starts in ~10 ms.
_GUARD_CODE = """\
import os, signal, sys
live = set()
for line in sys.stdin:
    op, pg = line[:1], line[1:]
    try:
        (live.add if op == "+" else live.discard)(int(pg))
    except ValueError:
        pass
for pg in live:
    try:
        os.killpg(pg, signal.SIGKILL)
    except OSError:
        pass
"""
GUARD_MARK = "gha-mlops-stage-guard"


def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` on Linux, loaded in the parent: a child between fork and exec must
    not load libraries (another thread may have held the loader's lock at the fork)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    fn.restype = ctypes.c_int
    return fn


def _die_with(parent: int, prctl: Callable[..., int]) -> Callable[[], None]:
    """The ``preexec_fn`` of a stage: SIGKILL me when the thread that forked me ends. The
    runner may have died between the fork and the prctl (then no signal would ever come):
    the parent pid tells, and the child gives up before it runs anything."""

    def setup() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(125)

    return setup


def start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), which tells a process from
    a later one that got the same pid; None when there is no such process."""
    p = _proc(pid)
    return p.start if p is not None else None


@dataclass(frozen=True)
class _Proc:
    pid: int
    pgid: int
    start: int
    zombie: bool


def _proc(pid: int) -> _Proc | None:
    """``/proc/<pid>/stat``: fields counted after ``(comm)``, which may hold spaces and
    parentheses, so the split is at its last ``)``: state, ppid, pgrp, ... starttime (22)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return _Proc(pid, int(fields[2]), int(fields[19]), fields[0] in (b"Z", b"X"))
    except (OSError, IndexError, ValueError):
        return None


def _all_procs() -> list[_Proc]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            p = _proc(int(name))
            if p is not None:
                found.append(p)
    return found


class StageProcesses:
    """Starts stage commands so that they die with this process, and keeps their durable
    record in ``procs_dir`` (created on first use). One per run; thread-safe.

    Stages must be started from a thread that lives at least as long as the stage (the
    parent-death signal follows the forking *thread*): the engine starts each stage in the
    thread that then waits for it.
    """

    def __init__(self, procs_dir: Path, run_id: str) -> None:
        self.dir = procs_dir
        self.run_id = run_id
        self._lock = threading.Lock()
        self._guard: subprocess.Popen[bytes] | None = None
        self._prctl_fn: Callable[..., int] | None = None
        self._loaded = False

    def start(self, name: str, cmd: str, *, cwd: Path, env: Mapping[str, str],
              stdout: int | None, stderr: int | None) -> subprocess.Popen[bytes]:
        """Start ``/bin/sh -c cmd`` in a new session (its own process group), guarded and
        recorded before the command runs (see the module's docstring)."""
        with self._lock:
            if not self._loaded:
                self._prctl_fn, self._loaded = _prctl(), True
                self._guard = _start_guard()
                self.dir.mkdir(parents=True, exist_ok=True)
        prctl = self._prctl_fn
        proc = subprocess.Popen(
            ["/bin/sh", "-c", _GATE, "/bin/sh", cmd], cwd=cwd, env=env, start_new_session=True,
            stdin=subprocess.PIPE, stdout=stdout, stderr=stderr,
            preexec_fn=_die_with(os.getpid(), prctl) if prctl else None,
        )
        # The guard first (a pipe write): the durable record is for when the guard died too.
        self._tell_guard(f"+{proc.pid}\n")
        try:
            atomic_write_json(self.dir / f"{name}.json", {
                "run_id": self.run_id, "stage": name, "cmd": cmd, "pid": proc.pid, "pgid": proc.pid,
                "start": start_time(proc.pid), "runner": os.getpid()})
        except BaseException:
            _close_gate(proc)  # end of file: the shell exits without running the command
            signal_group(proc.pid, signal.SIGKILL)  # and in case: unrecorded is unguarded
            self.finish(name, proc)
            raise
        _open_gate(proc)
        return proc

    def finish(self, name: str, proc: subprocess.Popen[bytes], *,
               stopping: threading.Event | None = None, grace: float = 0.0) -> int:
        """Wait for the stage's command to end, stop what it left running in its group, reap
        it and forget its record; the exit status as Popen gives it. When ``stopping`` is
        set (the run is being interrupted), the rest of the group first gets ``grace``
        seconds to end by itself, as the shell did. Ctrl-C while waiting propagates with the
        command still running."""
        wait_exited(proc.pid)
        if stopping is not None and stopping.is_set():
            wait_group_gone(proc.pid, grace)
        # The command's zombie holds its pid, so the group id cannot be reused until the
        # wait below: this kills what the command left behind and nothing else.
        signal_group(proc.pid, signal.SIGKILL)
        rc = proc.wait()
        try:
            os.killpg(proc.pid, 0)
        except (ProcessLookupError, PermissionError):
            pass  # the common case: nothing was left, one system call
        else:  # members still exist, dying or zombies: wait (bounded) for those that run
            _wait_gone(_group_members(proc.pid), REAP_WAIT_S)
        self._tell_guard(f"-{proc.pid}\n")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.dir / f"{name}.json")
        return rc

    def close(self) -> None:
        """End the guard (every stage finished; it has nothing left to kill)."""
        guard, self._guard = self._guard, None
        if guard is None:
            return
        if guard.stdin is not None:
            with contextlib.suppress(OSError):
                guard.stdin.close()
        try:
            guard.wait(5)
        except subprocess.TimeoutExpired:
            guard.kill()
            guard.wait()

    def _tell_guard(self, line: str) -> None:
        guard = self._guard
        if guard is None or guard.stdin is None:
            return
        with self._lock, contextlib.suppress(OSError, ValueError):
            guard.stdin.write(line.encode())
            guard.stdin.flush()


# The stage's shell: wait for the runner's line, then run the command in the same process
# (exec: the same pid and group, `$$` as before) with stdin from /dev/null, as a stage always
# had. End of file instead of the line (the runner died first): exit without running it.
_GATE = 'IFS= read -r _ || exit 111; exec </dev/null; exec /bin/sh -c "$1"'


def _open_gate(proc: subprocess.Popen[bytes]) -> None:
    """Let the stage's command start (see :data:`_GATE`)."""
    assert proc.stdin is not None
    # A broken pipe: the shell is gone already, and finish() reports how it ended.
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.write(b"\n")
    _close_gate(proc)


def _close_gate(proc: subprocess.Popen[bytes]) -> None:
    if proc.stdin is not None:
        with contextlib.suppress(OSError):  # a broken pipe while flushing: the shell is gone
            proc.stdin.close()


def _start_guard() -> subprocess.Popen[bytes] | None:
    """The guard process: its own session (a terminal's Ctrl-C does not reach it) and no
    parent-death signal (it must outlive a runner killed hard)."""
    try:
        return subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _GUARD_CODE, GUARD_MARK],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
    except OSError:
        return None  # the durable record and the next run still stop leftovers


def wait_exited(pid: int, timeout: float | None = None) -> bool:
    """Wait until child ``pid`` has exited, without reaping it; False on timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.0005
    while True:
        flags = os.WEXITED | os.WNOWAIT | (0 if deadline is None else os.WNOHANG)
        try:
            if os.waitid(os.P_PID, pid, flags) is not None:
                return True
        except ChildProcessError:
            return True  # already reaped
        if deadline is not None:
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def wait_group_gone(pgid: int, timeout: float) -> bool:
    """Wait until the group led by child ``pgid`` has nothing running: the leader exited (not
    reaped) and every other member gone; False on timeout. Used when a stage was asked to
    stop: what its shell started gets the same grace as the shell."""
    deadline = time.monotonic() + timeout
    if not wait_exited(pgid, timeout):
        return False
    while _group_members(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_members(pgid: int) -> list[_Proc]:
    return [p for p in _all_procs() if p.pgid == pgid and not p.zombie]


def _wait_gone(procs: Sequence[_Proc], timeout: float) -> bool:
    """Wait until none of ``procs`` runs any more (gone, or a zombie); True if there were
    any. Bounded: a process stuck in the kernel cannot hold a run forever."""
    deadline = time.monotonic() + timeout
    pending = list(procs)
    while pending:
        pending = [p for p in pending if (q := _proc(p.pid)) is not None
                   and q.start == p.start and not q.zombie]
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(0.01)
    return bool(procs)


# ---------------------------------------------------------------------- after a dead runner


@dataclass(frozen=True)
class Leftover:
    """A stage that was running when its run's process died, and how many of its processes
    :func:`stop_leftovers` found still running and killed."""

    stage: str
    cmd: str
    stopped: int


def stop_leftovers(procs_dir: Path, run_id: str) -> list[Leftover]:
    """Kill what still runs of the stages recorded in ``procs_dir`` (a run whose process
    died), wait until it is gone (bounded) and remove the records: one :class:`Leftover`
    per recorded stage. Caller holds the lock.

    A process is taken for the stage's only when it is in the recorded group and either
    carries the run's ``GHA_MLOPS_RUN_ID`` in its environment, or the group's leader is the
    recorded one (same pid *and* kernel start time) and carries it: a group id can be reused
    after the group ended, and the next owner is not ours to kill. The environment is what
    makes a record planted in a checkout unable to name someone else's processes.
    """
    try:
        names = sorted(os.listdir(procs_dir))
    except (FileNotFoundError, NotADirectoryError):
        return []
    found: list[Leftover] = []
    table: list[_Proc] | None = None
    for name in names:
        path = procs_dir / name
        rec = _read_record(path)
        if rec is not None and name.endswith(".json"):
            table = table if table is not None else _all_procs()
            victims = _victims(rec, table, run_id)
            for p in victims:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(p.pid, signal.SIGKILL)
            _wait_gone(victims, REAP_WAIT_S)
            found.append(Leftover(name[:-len(".json")], str(rec.get("cmd", "")), len(victims)))
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return found


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        rec = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not (isinstance(rec, dict) and isinstance(rec.get("pgid"), int) and rec["pgid"] > 1
            and isinstance(rec.get("start"), int)):
        return None
    return rec


def _victims(rec: Mapping[str, Any], table: Sequence[_Proc], run_id: str) -> list[_Proc]:
    pgid, start = int(rec["pgid"]), int(rec["start"])
    marker = f"GHA_MLOPS_RUN_ID={run_id}".encode()
    leader_ours = any(p.pid == pgid and p.start == start and p.pgid == pgid
                      and marker in _environ(p.pid) for p in table)
    out = []
    for p in table:
        if p.pgid != pgid or p.zombie or p.start < start or p.pid == os.getpid():
            continue
        if leader_ours or marker in _environ(p.pid):
            out.append(p)
    return out


def _environ(pid: int) -> list[bytes]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return fh.read().split(b"\0")
    except OSError:
        return []
