"""One error root for everything a user can get wrong, and the exit codes it maps to.

Every error carries a message (what is wrong), a hint (what to do next) and optionally the
file and line it concerns, so the CLI boundary can print it, and in GitHub Actions annotate it,
without a traceback. :class:`ExitCode` is the one table of exit codes (docs/exit-codes.md
lists it for users): every error class takes its code from there, and no two meanings share
one.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any


@enum.unique
class ExitCode(enum.IntEnum):
    """Every exit code of ``gha-mlops``, one meaning each. Users script on these numbers:
    never renumber one, only add new ones."""

    OK = 0  # the command did what it was asked
    FAILURE = 1  # a stage or a promotion gate failed, or an error with no code of its own
    USAGE = 2  # bad configuration, command line or state file, or nothing to compare with
    MISSING_EXTRA = 3  # an optional dependency is not installed
    REPRODUCTION = 4  # a reproduction could not start, or its results differ from the record
    ENVIRONMENT_DRIFT = 5  # the environment differs from the one recorded
    DATA_REMOTE = 6  # a data remote cannot be used (credentials, bucket, network, object)
    DATA_INTEGRITY = 7  # bytes did not hash to their digest; nothing entered the cache
    UNSAFE_PATH = 8  # a path to write, remove or restore leads out of the workspace
    GITHUB = 9  # a GitHub API call failed (permission, rate limit, not found, ...)
    RUNNER_BACKEND = 10  # a runner backend (Docker, ...) call failed
    DEPLOY_FAILED = 11  # a rollout failed a check (ready, golden, gate) and was rolled back
    DEPLOY_TARGET = 12  # a deploy target (Docker host, router) could not be used
    INTERNAL = 70  # EX_SOFTWARE: a bug in gha-mlops; the traceback went to a file
    WORKSPACE_BUSY = 75  # EX_TEMPFAIL: another gha-mlops process holds the workspace
    INTERRUPTED = 130  # Ctrl-C or SIGTERM (a cancelled job); partial outputs rolled back


class GhaMlopsError(Exception):
    """Root of every error that is the user's to fix (bad input, a busy workspace, ...)."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        file: str | Path | None = None,
        line: int | None = None,
        column: int | None = None,
        notes: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.file = str(file) if file is not None else None
        self.line = line
        self.column = column
        self.notes = list(notes or [])

    def location(self) -> str:
        """``file:line:column`` as far as known, or ``""``."""
        if self.file is None:
            return ""
        loc = self.file
        if self.line is not None:
            loc += f":{self.line}"
            if self.column is not None:
                loc += f":{self.column}"
        return loc


class ConfigError(GhaMlopsError):
    """``mlops.yaml`` or the params file is malformed or inconsistent."""

    exit_code = ExitCode.USAGE


class UsageError(GhaMlopsError):
    """The command line asks for something that does not exist (an unknown stage or run)."""

    exit_code = ExitCode.USAGE


class WorkspaceBusyError(GhaMlopsError):
    """Another gha-mlops process holds the workspace lock."""

    exit_code = ExitCode.WORKSPACE_BUSY


class StageFailedError(GhaMlopsError):
    """A stage's command exited non-zero; its dependants did not run.

    ``result`` holds the engine's result (with the run record) of the failed run.
    """

    exit_code = ExitCode.FAILURE
    result: Any = None


class InterruptedRunError(GhaMlopsError):
    """The run was interrupted (Ctrl-C or SIGTERM); partial outputs were rolled back."""

    exit_code = ExitCode.INTERRUPTED


class MissingExtraError(GhaMlopsError):
    """An optional dependency is not installed; the hint names the pip command."""

    exit_code = ExitCode.MISSING_EXTRA


class ReproductionError(GhaMlopsError):
    """A reproduction could not be started, or its results differ from the record."""

    exit_code = ExitCode.REPRODUCTION


class EnvironmentDriftError(ReproductionError):
    """The current environment differs from the recorded one."""

    exit_code = ExitCode.ENVIRONMENT_DRIFT


class UnsafePathError(GhaMlopsError):
    """A path the command would write, remove or restore leaves the workspace once its
    symlinks are resolved (or is not a plain relative path), so nothing was done there."""

    exit_code = ExitCode.UNSAFE_PATH


def quoted(value: object, limit: int = 80) -> str:
    """``value`` for an error message about hostile input: quoted by ``ascii`` (no control or
    non-ASCII character reaches the terminal) and cut to ``limit`` characters."""
    text = ascii(value)
    return text if len(text) <= limit else text[:limit] + "..."


def missing_extra(module: str, extra: str) -> MissingExtraError:
    """The error to raise when an optional import fails."""
    return MissingExtraError(
        f"this needs the Python package {module!r}, which is not installed",
        hint=f"pip install 'gha-mlops[{extra}]'",
    )


class RemoteError(GhaMlopsError):
    """A data remote cannot be used as asked: an unknown scheme, missing or rejected
    credentials, an absent bucket, denied access, an unreachable endpoint, an object missing
    from the remote. The message names the remote URL; the hint says what to change."""

    exit_code = ExitCode.DATA_REMOTE


class DataIntegrityError(GhaMlopsError):
    """Bytes did not hash to the digest they were stored or fetched under. Nothing was put in
    the cache; the message names the object, its source, and the expected and actual hashes."""

    exit_code = ExitCode.DATA_INTEGRITY
