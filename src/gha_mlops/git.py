"""The one place that runs ``git``: the few questions and commands gha-mlops asks of it.

Every call goes through :func:`_run`, which passes an argument list (never a shell), puts
``--`` before every path or revision that came from outside, closes stdin, sets a timeout,
turns off credential prompts (``GIT_TERMINAL_PROMPT=0``) and the index refresh of read-only
commands (``GIT_OPTIONAL_LOCKS=0``, so a run never holds ``index.lock`` while its user
commits), and passes ``-c core.quotepath=off``. Output holding paths is read NUL-separated
(``-z``), so a name with a newline, a quote or bytes that are not UTF-8 comes back whole.

Queries whose callers treat "no git here" as normal (git not installed, a directory outside
any repository) answer ``None`` or ``False``; everything else that goes wrong raises
:class:`GitError`, whose message says what failed and, when git is missing, to install it.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from gha_mlops.errors import GhaMlopsError

QUERY_TIMEOUT = 60.0  # seconds: a status of a large repository on a slow disk still fits
CHECKOUT_TIMEOUT = 1800.0  # seconds: a worktree of a large repository writes every file
_OID = r"[0-9a-f]{40}(?:[0-9a-f]{24})?"  # a full SHA-1 or SHA-256 object name


class GitError(GhaMlopsError):
    """A git command could not run or failed. ``stderr`` holds git's own words (stripped;
    ``""`` when git did not run)."""

    def __init__(self, message: str, *, hint: str | None = None, stderr: str = "") -> None:
        super().__init__(message, hint=hint)
        self.stderr = stderr


class GitNotInstalledError(GitError):
    """There is no ``git`` executable on ``PATH``."""


class Status(NamedTuple):
    """What ``git status`` says of a work tree. (A named tuple, not a dataclass: the run
    record imports this module on every run, and a dataclass costs ~0.5 ms to define.)"""

    commit: str | None  # HEAD's object name; None before the first commit
    branch: str | None  # None on a detached HEAD
    # Paths (from the repository root) that differ from HEAD, untracked ones included and
    # ignored ones not; a name that is not UTF-8 shows its odd bytes as ``\\xNN``.
    changed: tuple[str, ...]


def _run(args: Sequence[str], cwd: Path | None, *,
         timeout: float | None = None) -> subprocess.CompletedProcess[bytes]:
    """``git ARGS`` run in ``cwd``, whatever its exit status (output as bytes).

    Raises :class:`GitNotInstalledError` when there is no git, and :class:`GitError` when it
    cannot start in ``cwd`` or runs past ``timeout`` (default :data:`QUERY_TIMEOUT`)."""
    timeout = QUERY_TIMEOUT if timeout is None else timeout
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"}
    try:
        return subprocess.run(["git", "-c", "core.quotepath=off", *args], cwd=cwd, env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        raise GitError(f"`git {args[0]}` in {cwd or '.'} did not finish within {timeout:g} s",
                       hint="check that the repository's disk responds, then try again"
                       ) from None
    except OSError as err:
        if err.filename == "git":  # not the cwd: the executable is what is missing
            raise GitNotInstalledError(
                "git is not installed (no `git` on PATH)",
                hint="install git (e.g. `apt-get install git`) or add it to PATH") from None
        raise GitError(f"cannot run git in {cwd or '.'}: {err.strerror}") from None


def _text(raw: bytes) -> str:
    """git's bytes as text for records and messages (odd bytes shown, never an error)."""
    return raw.decode("utf-8", "backslashreplace")


def _paths(raw: bytes) -> list[str]:
    """NUL-separated paths as ``str`` naming the same files (``os.fsdecode``)."""
    return [os.fsdecode(p) for p in raw.split(b"\0") if p]


def available() -> bool:
    """True when a ``git`` executable runs."""
    try:
        _run(["--version"], None)
    except GitError:
        return False
    return True


def toplevel(path: Path) -> Path | None:
    """The nearest directory at or above ``path`` holding ``.git`` (a directory, or a file
    for worktrees and submodules), or None: what ``git rev-parse --show-toplevel`` says,
    without starting a process (the run record asks on every run)."""
    here = path.resolve()
    for candidate in (here, *here.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


def status(directory: Path) -> Status | None:
    """Commit, branch and changed paths of the work tree holding ``directory``, from one
    ``git status --porcelain=v2 --branch --untracked-files=normal -z``.

    None outside a repository or without git. Raises :class:`GitError` past the timeout."""
    try:
        proc = _run(["status", "--porcelain=v2", "--branch", "--untracked-files=normal",
                     "-z"], directory)
    except GitNotInstalledError:
        return None
    if proc.returncode != 0:
        return None
    commit = branch = None
    changed: list[str] = []
    entries = iter(proc.stdout.split(b"\0"))
    for entry in entries:
        if entry.startswith(b"# branch.oid "):
            oid = _text(entry.split(b" ", 2)[2])
            commit = None if oid == "(initial)" else oid
        elif entry.startswith(b"# branch.head "):
            head = _text(entry.split(b" ", 2)[2])
            branch = None if head == "(detached)" else head
        elif entry[:2] in (b"1 ", b"2 ", b"u "):
            # Ordinary, renamed and unmerged entries have 8, 9 and 10 fields before the
            # path (which may hold spaces); a rename's next entry is its old path.
            fields = {b"1": 8, b"2": 9, b"u": 10}[entry[:1]]
            changed.append(_text(entry.split(b" ", fields)[-1]))
            if entry[:1] == b"2":
                next(entries, None)
        elif entry[:2] in (b"? ", b"! "):
            changed.append(_text(entry[2:]))
    return Status(commit=commit, branch=branch, changed=tuple(changed))


def is_ignored(directory: Path) -> bool:
    """True when ``directory`` lies in a git repository that ignores it (its files are in
    no commit). False outside a repository or without git."""
    try:
        return _run(["check-ignore", "-q", "--", "."], directory).returncode == 0
    except GitNotInstalledError:
        return False


def is_inside_work_tree(directory: Path) -> bool:
    """True when git takes ``directory`` to be inside a repository (ignored or not)."""
    try:
        return _run(["rev-parse", "--is-inside-work-tree"], directory).returncode == 0
    except GitNotInstalledError:
        return False


def has_config(directory: Path, key: str) -> bool:
    """True when git's configuration, as seen from ``directory``, sets ``key``."""
    try:
        return _run(["config", "--get", key], directory).returncode == 0
    except GitNotInstalledError:
        return False


def ls_files(directory: Path, patterns: Sequence[str] = ()) -> list[str] | None:
    """Files git takes as part of the project under ``directory`` (tracked, and untracked
    but not ignored), relative to it, optionally only those matching the pathspecs
    ``patterns``. None outside a repository or without git (a caller then walks the tree).
    Raises :class:`GitError` past the timeout."""
    try:
        proc = _run(["ls-files", "-z", "--cached", "--others", "--exclude-standard", "--",
                     *patterns], directory)
    except GitNotInstalledError:
        return None
    return _paths(proc.stdout) if proc.returncode == 0 else None


def init_and_commit(directory: Path, message: str, *, name: str, email: str) -> bool:
    """Make ``directory`` a repository holding everything in it as one commit; ``name`` and
    ``email`` sign it only where git has no identity configured. True when it worked."""
    try:
        ident = [] if has_config(directory, "user.email") else [
            "-c", f"user.name={name}", "-c", f"user.email={email}"]
        return all(_run(args, directory).returncode == 0 for args in (
            ["init", "-q"], ["add", "-A"], [*ident, "commit", "-q", "-m", message]))
    except GitError:
        return False


def worktree_add(repo: Path, dest: Path, commit: str) -> None:
    """Check ``commit`` (a full object name) out, detached, as a new worktree of ``repo``
    at ``dest``. Raises :class:`GitError` (git's words in ``stderr``) when it cannot."""
    if not re.fullmatch(_OID, commit):
        raise GitError(f"{commit[:80]!r} is not a full commit id",
                       stderr="not a full commit id")
    proc = _run(["worktree", "add", "--detach", "--", str(dest), commit], repo,
                timeout=CHECKOUT_TIMEOUT)
    if proc.returncode != 0:
        err = _text(proc.stderr).strip()
        raise GitError(f"`git worktree add` failed in {repo}: {err}", stderr=err)


def worktree_remove(repo: Path, dest: Path) -> bool:
    """Remove the worktree ``dest`` of ``repo``, changes and all; never raises (it cleans
    up after work that may itself have failed). True when git removed it."""
    try:
        return _run(["worktree", "remove", "--force", "--", str(dest)], repo).returncode == 0
    except GitError:
        return False
