"""``gha-mlops demo`` as one service call: write the example project, make it a git
repository (unless one versions it already), put its data set in the project's dataset remote,
and run it; the outcome is a typed :class:`DemoOutcome` for the command to show."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gha_mlops.demo import project_files, seed_remote, write_project
from gha_mlops.errors import missing_extra
from gha_mlops.pipeline.engine import Reporter, RunOptions, run_pipeline
from gha_mlops.pipeline.loading import load
from gha_mlops.runs.record import ModelRef, RunRecord

if TYPE_CHECKING:
    from gha_mlops.data.service import StoreOpener
    from gha_mlops.demo.release import Release, ReleaseTo

HEADLINE = ("test_accuracy", "macro_f1")
"""The metrics of ``metrics/eval.json`` the demo shows."""


@dataclass(frozen=True)
class Setup:
    """The project as written: ``written`` files of the example's ``total``, and whether the
    data set was put in the project's dataset remote just now."""

    written: int
    total: int
    seeded: bool


@dataclass(frozen=True)
class DemoOutcome:
    """The project set up and, unless the demo only wrote it, the run's record."""

    setup: Setup
    record: RunRecord | None = None
    release: Release | None = None

    @property
    def ran(self) -> list[str]:
        return [s.name for s in self.record.stages if s.status == "ran"] if self.record else []

    @property
    def cached(self) -> list[str]:
        return [s.name for s in self.record.stages if s.came_from_cache] if self.record else []

    @property
    def headline(self) -> list[tuple[str, Any]]:
        metrics = self.record.metrics.get("metrics/eval.json", {}) if self.record else {}
        return [(key, metrics[key]) for key in HEADLINE if key in metrics]

    @property
    def model(self) -> ModelRef | None:
        return self.record.model if self.record else None

    @property
    def kernels(self) -> str | None:
        """Whether the stages that ran pinned their CPU kernels (portable mode), in words;
        None when nothing ran (fully cached)."""
        if self.record is None:
            return None
        reports = [(s.raw.get("runtime") or {}).get("cpu_dispatch") for s in self.record.stages]
        dispatch = [d for d in reports if isinstance(d, Mapping)]
        if not dispatch:
            return None
        machine = self.record.env.get("cpu", {}).get("machine", "")
        if all(d.get("portable") is True for d in dispatch):
            return (f"portable: the same model on any {machine} machine with these packages "
                    "(docs/reproduce.md)")
        levels = sorted({str(d.get("aten_capability")) for d in dispatch})
        return f"native to this CPU ({', '.join(levels)}): portable mode was off"


def demo(directory: Path, *, reset: bool, run: bool, environ: Mapping[str, str],
         open_store: StoreOpener, jobs: int = 1, reporter: Reporter | None = None,
         prepared: Callable[[Setup], None] | None = None,
         release_to: ReleaseTo | None = None) -> DemoOutcome:
    """Write the example into ``directory`` (files already there are kept unless ``reset``),
    make it a git repository, seed its dataset remote (opened with ``open_store``), tell
    ``prepared``, and run it when ``run``. With ``release_to`` (the image engine, wheel cache
    and signature deriver), register the run's model and package it
    (:mod:`gha_mlops.demo.release`). Raises the missing-extra error before writing
    anything when ``run`` and torch is not installed."""
    if run and importlib.util.find_spec("torch") is None:
        raise missing_extra("torch", "torch")
    written = write_project(directory, overwrite=reset)
    _git_init(directory)
    setup = Setup(len(written), len(project_files()), seed_remote(directory, open_store))
    if prepared is not None:
        prepared(setup)
    if not run:
        return DemoOutcome(setup)
    pipeline = load(directory / "mlops.yaml")
    result = run_pipeline(pipeline, RunOptions(environ=environ, jobs=jobs, open_store=open_store),
                          reporter)
    record = RunRecord.from_json(result.record)
    if release_to is None:
        return DemoOutcome(setup, record)
    from gha_mlops.demo.release import release

    return DemoOutcome(setup, record, release(directory, record, release_to))


def _git_init(directory: Path) -> None:
    """Make the example a git repository with one commit, unless a repository around it
    already versions it (one that ignores the directory does not count)."""
    from gha_mlops import git

    if not git.available():
        return
    if git.is_inside_work_tree(directory) and not git.is_ignored(directory):
        return
    git.init_and_commit(directory, "gha-mlops example project",
                        name="gha-mlops demo", email="demo@gha-mlops.invalid")
