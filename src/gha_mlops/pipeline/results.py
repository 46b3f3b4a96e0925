"""What a run is asked to do, what it and its stages come to, and where it tells a user.

The values the engine's parts share (:mod:`.engine` composes :mod:`.decide`, :mod:`.inputs`,
:mod:`.execute`, :mod:`.schedule` and :mod:`.assemble`); :mod:`.engine` re-exports the public
ones, which is where callers import them from.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from gha_mlops.config import STATE_DIR, Pipeline
from gha_mlops.errors import UnsafePathError
from gha_mlops.store.hashing import Hasher
from gha_mlops.store.objects import ContentCache

if TYPE_CHECKING:
    from gha_mlops.data.service import StoreOpener

# The statuses of a stage that let the stages after it run.
OK_STATUSES = ("ran", "cached", "restored")


class Reporter(Protocol):
    """Where the engine tells a user what happens. Called from worker threads."""

    def stage_started(self, stage: str, cmd: str) -> None:
        """A stage's command is about to run."""

    def stage_finished(self, stage: str, status: str, seconds: float, detail: str | None) -> None:
        """A stage ended as ran, cached, restored, failed, interrupted or skipped."""

    def stage_line(self, stage: str, line: str) -> None:
        """One line of a stage's output when stages run in parallel (-j > 1)."""

    def note(self, line: str) -> None:
        """Something the run did besides stages (e.g. it fetched a dataset)."""


class SilentReporter:
    """A :class:`Reporter` that tells nobody anything."""

    def stage_started(self, stage: str, cmd: str) -> None:
        pass

    def stage_finished(self, stage: str, status: str, seconds: float, detail: str | None) -> None:
        pass

    def stage_line(self, stage: str, line: str) -> None:
        pass

    def note(self, line: str) -> None:
        pass


@dataclass(frozen=True)
class RunOptions:
    """How to run. ``environ`` is the environment stage commands inherit (the CLI passes
    ``os.environ``); ``kind`` is ``run`` or ``reproduction``; ``open_store`` opens a data
    remote's object store when a stage needs a pinned dataset the cache lacks (the CLI passes
    :func:`gha_mlops.bootstrap.object_stores`; tests a fake; None: such a stage fails saying
    no remote can be opened)."""

    environ: Mapping[str, str]
    force: bool = False
    targets: tuple[str, ...] = ()
    jobs: int = 1
    wait: float = 0.0
    kind: str = "run"
    extra: Mapping[str, Any] = field(default_factory=dict)
    open_store: StoreOpener | None = None


@dataclass
class StageResult:
    """One stage of a run as its record tells it; filled in as the stage is settled."""

    name: str
    status: str
    cmd: str = ""
    signature: str | None = None
    deps: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    outs: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    runtime: dict[str, Any] = field(default_factory=dict)
    produced_by: str | None = None
    seconds: float = 0.0
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.name, "status": self.status, "cmd": self.cmd,
            "signature": self.signature,
            "deps": self.deps, "params": self.params, "outs": self.outs,
            "duration_s": round(self.seconds, 3),
        }
        if self.produced_by:
            doc["produced_by_run"] = self.produced_by
        if self.runtime:
            doc["runtime"] = self.runtime
        if self.error:
            doc["error"] = self.error
        return doc


@dataclass(frozen=True)
class RunResult:
    """A finished run: its record and where it was written."""

    record: dict[str, Any]
    record_path: Path

    @property
    def run_id(self) -> str:
        return str(self.record["id"])


class StageFailure(Exception):
    """The stage failed for the reason in ``message`` (its record's ``error``); the run goes
    on with the stages that do not depend on it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RunFlags:
    """What any part of one run, in any thread, may raise for the whole run: that it was
    interrupted, and the first output path found leading out of the workspace (the run then
    exits with that error's code once its record is written)."""

    def __init__(self) -> None:
        self.interrupted = threading.Event()
        self.unsafe: UnsafePathError | None = None
        self._lock = threading.Lock()

    def note_unsafe(self, err: UnsafePathError) -> None:
        """Keep ``err`` unless an earlier one was noted (the first is the one reported)."""
        with self._lock:
            self.unsafe = self.unsafe or err


class RunContext(NamedTuple):
    """What every part of one run works on and with: the pipeline, how it was asked to run,
    where it reports, the run's id, the workspace's object store and hasher, and its flags.
    (A named tuple: a frozen dataclass costs ~0.5 ms more to define, on every run.)"""

    pipeline: Pipeline
    options: RunOptions
    reporter: Reporter
    run_id: str
    cache: ContentCache
    hasher: Hasher
    flags: RunFlags

    @property
    def root(self) -> Path:
        """The workspace."""
        return self.pipeline.root

    @property
    def state(self) -> Path:
        """The workspace's ``.gha-mlops``."""
        return self.pipeline.root / STATE_DIR

    @property
    def tmp(self) -> Path:
        """The run's own scratch space and journal, removed when it ends."""
        return self.state / "tmp" / "runs" / self.run_id
