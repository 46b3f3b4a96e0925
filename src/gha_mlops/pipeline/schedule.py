"""Which stage is settled when: serially in the main thread, or up to ``jobs`` at a time.

A stage starts once every selected stage it depends on is settled, and is skipped (never
started) when one of them did not end well, or once the run was interrupted. Ctrl-C skips
what has not started and stops what runs; the stage itself rolls back (:mod:`.execute`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from gha_mlops.config import Stage
from gha_mlops.pipeline.results import OK_STATUSES, Reporter, RunFlags, StageResult


class StopRunning(Protocol):
    def __call__(self, *, first: bool) -> None:
        """Stop the commands that run: gently on the ``first`` Ctrl-C, at once after."""


class Scheduler:
    """Settles the ``selected`` stages (names, in pipeline order) of ``stages`` with
    ``settle``, which returns the stage's result and never raises but for Ctrl-C.
    ``stop_running(first=...)`` stops the commands that run when a parallel run is
    interrupted."""

    def __init__(self, stages: Mapping[str, Stage], selected: Sequence[str], *,
                 settle: Callable[[Stage], StageResult], reporter: Reporter, flags: RunFlags,
                 stop_running: StopRunning) -> None:
        self.stages = stages
        self.selected = list(selected)
        self.settle = settle
        self.reporter = reporter
        self.flags = flags
        self.stop_running = stop_running

    def run(self, results: dict[str, StageResult], jobs: int) -> None:
        """Settle every selected stage into ``results`` (by name), ``jobs`` at a time."""
        if jobs <= 1:
            self._serial(results)
        else:
            self._parallel(results, jobs)

    def _skip_reason(self, stage: Stage, results: Mapping[str, StageResult]) -> str | None:
        bad = [u for u in stage.upstream if u in results and results[u].status not in OK_STATUSES]
        if bad:
            return f"not run: upstream stage {bad[0]!r} {results[bad[0]].status}"
        return None

    def _skip(self, name: str, reason: str, results: dict[str, StageResult]) -> None:
        results[name] = StageResult(name, "skipped", cmd=self.stages[name].cmd, error=reason)
        self.reporter.stage_finished(name, "skipped", 0.0, reason)

    def _serial(self, results: dict[str, StageResult]) -> None:
        """One stage at a time, in the main thread (no thread pool to start: -j 1 is the
        common case and a no-op run should cost as little as possible)."""
        for name in self.selected:
            if self.flags.interrupted.is_set():
                self._skip(name, "not run: the run was interrupted", results)
                continue
            reason = self._skip_reason(self.stages[name], results)
            if reason:
                self._skip(name, reason, results)
                continue
            try:
                results[name] = self.settle(self.stages[name])
            except KeyboardInterrupt:
                # Outside a command's lifetime (hashing, caching): the stage rolled back.
                self.flags.interrupted.set()
                results[name] = StageResult(name, "interrupted", cmd=self.stages[name].cmd,
                                            error="interrupted")
                self.reporter.stage_finished(name, "interrupted", 0.0, "interrupted")

    def _parallel(self, results: dict[str, StageResult], jobs: int) -> None:
        from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

        pending = list(self.selected)
        selected = set(pending)
        running: dict[Future[StageResult], str] = {}
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            while pending or running:
                try:
                    for name in list(pending):
                        stage = self.stages[name]
                        reason = self._skip_reason(stage, results)
                        if reason:
                            pending.remove(name)
                            self._skip(name, reason, results)
                        elif (all(u in results for u in stage.upstream if u in selected)
                              and len(running) < jobs):
                            pending.remove(name)
                            running[pool.submit(self.settle, stage)] = name
                    if not running:
                        if pending:  # cannot happen in a DAG; never spin
                            raise AssertionError(f"no runnable stage among {pending}")
                        continue
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in done:
                        results[running.pop(fut)] = fut.result()
                except KeyboardInterrupt:
                    self._interrupt(pending, results)

    def _interrupt(self, pending: list[str], results: dict[str, StageResult]) -> None:
        """Ctrl-C in a parallel run: skip what has not started, stop every running command
        (each worker then rolls its stage back); a second Ctrl-C kills them at once."""
        first = not self.flags.interrupted.is_set()
        self.flags.interrupted.set()
        for name in pending:
            self._skip(name, "not run: the run was interrupted", results)
        pending.clear()
        self.stop_running(first=first)
