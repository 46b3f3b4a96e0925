"""Run a pipeline: decide per stage whether to run, restore or skip, execute, cache, record.

A stage is *cached* when the run cache knows its signature and the workspace already holds
those outputs, *restored* when the cache knows it and the outputs are put back from the cache,
and *ran* otherwise. A stage that fails, or is interrupted, leaves no partial outputs: what it
wrote is removed and the outputs it replaced are put back from the cache.

The engine composes its parts: :mod:`.inputs` hashes what a stage reads into its signature,
:mod:`.decide` (pure) decides the outcome from the run cache's entry, :mod:`.execute` restores
or runs (processes, interrupts, back-up and rollback, storing outputs), :mod:`.schedule` orders
the stages (serially or in parallel) and :mod:`.assemble` journals the run and writes its
record.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from gha_mlops.config import STATE_DIR, Pipeline, Stage, ensure_state_dir
from gha_mlops.errors import (
    InterruptedRunError,
    StageFailedError,
    UnsafePathError,
    UsageError,
)
from gha_mlops.pipeline.assemble import Recorder, recover_dead_runs
from gha_mlops.pipeline.decide import Decision, decide, parse_entry
from gha_mlops.pipeline.execute import TERM_GRACE_S, Executor, flatten_metrics
from gha_mlops.pipeline.inputs import StageInputs
from gha_mlops.pipeline.records import RunStore, new_run_id
from gha_mlops.pipeline.results import (
    OK_STATUSES,
    Reporter,
    RunContext,
    RunFlags,
    RunOptions,
    RunResult,
    SilentReporter,
    StageFailure,
    StageResult,
)
from gha_mlops.pipeline.runcache import RunCache
from gha_mlops.pipeline.schedule import Scheduler
from gha_mlops.store.hashing import Hasher, StatCache
from gha_mlops.store.lock import WorkspaceLock
from gha_mlops.store.objects import CacheMiss, ContentCache, ManifestError, remove_path

__all__ = ["OK_STATUSES", "TERM_GRACE_S", "Reporter", "RunOptions", "RunResult",
           "SilentReporter", "StageResult", "flatten_metrics", "run_pipeline"]


def run_pipeline(pipeline: Pipeline, options: RunOptions,
                 reporter: Reporter | None = None, *,
                 recorded: Callable[[RunResult], None] | None = None) -> RunResult:
    """Run ``pipeline`` under the workspace lock and write its run record.

    ``recorded`` is called with the result as soon as the record is written, whatever the
    run's status (succeeded, failed or interrupted), before any error is raised: the place
    to publish the run (e.g. as step outputs) even when it failed.

    Raises :class:`StageFailedError` or :class:`InterruptedRunError` after the record of the
    failed run is written; the error names the record.
    """
    return _Engine(pipeline, options, reporter or SilentReporter(), recorded).run()


class _Engine:
    def __init__(self, pipeline: Pipeline, options: RunOptions, reporter: Reporter,
                 recorded: Callable[[RunResult], None] | None = None) -> None:
        unknown = [t for t in options.targets if t not in pipeline.stages]
        if unknown:
            raise UsageError(
                f"no stage named {unknown[0]!r} in {pipeline.config_file.name}",
                hint="stages are: " + ", ".join(pipeline.stages),
            )
        self.p = pipeline
        self.o = options
        self.reporter = reporter
        self.recorded = recorded
        self.root = pipeline.root
        self.state = self.root / STATE_DIR
        self.cache = ContentCache(self.state / "cache")
        self.runcache = RunCache(self.cache)
        self.stat_cache = StatCache(self.state / "tmp" / "stat.db")
        self.hasher = Hasher(self.root, self.stat_cache)
        self.store = RunStore(self.state / "runs")
        self.flags = RunFlags()
        ctx = RunContext(pipeline, options, reporter, new_run_id(), self.cache, self.hasher,
                         self.flags)
        self.run_id = ctx.run_id
        self.tmp = ctx.tmp
        self.inputs = StageInputs(ctx)
        self.recorder = Recorder(ctx, datasets=lambda: self.inputs.datasets,
                                 env_lock=self.inputs.env_lock_digest)
        self.executor = Executor(ctx, env_lock=self.inputs.env_lock_digest,
                                 before_first_command=lambda: self.recorder.journal(None))

    # ------------------------------------------------------------------ orchestration

    def run(self) -> RunResult:
        ensure_state_dir(self.root)
        selected = self._selected()
        with WorkspaceLock(self.state, wait=self.o.wait, what=self.o.kind):
            recover_dead_runs(self.state, self.store, run_id=self.run_id,
                              environ=self.o.environ, reporter=self.reporter)
            started = time.time()
            results: dict[str, StageResult] = {}
            self.recorder.begin(started, results)
            try:
                Scheduler(self.p.stages, selected, settle=self._stage, reporter=self.reporter,
                          flags=self.flags, stop_running=self.executor.stop_running,
                          ).run(results, self.o.jobs)
            finally:
                self.executor.close()
                self.stat_cache.flush()
                record = self.recorder.record(
                    [results[n] for n in selected if n in results], started, time.time(),
                    interrupted=self.flags.interrupted.is_set())
                path = self.store.write(record)
                remove_path(self.tmp)
        result = RunResult(record, path)
        if self.recorded is not None:
            self.recorded(result)
        self._raise_unless_succeeded(result)
        return result

    def _raise_unless_succeeded(self, result: RunResult) -> None:
        """The error a run that did not succeed ends with; its record is written already."""
        record = result.record
        if record["status"] == "interrupted":
            raise InterruptedRunError(
                "the run was interrupted; stages that were running were rolled back",
                hint=f"the partial run is recorded as {record['id']}; run again to continue "
                "(finished stages are cached)")
        unsafe = self.flags.unsafe
        if unsafe is not None:
            raise UnsafePathError(unsafe.message, hint=f"{unsafe.hint} (run record {record['id']})")
        if record["status"] == "failed":
            failed = [s for s in record["stages"] if s["status"] == "failed"]
            first = failed[0] if failed else {"name": "?", "error": "failed"}
            err = StageFailedError(
                f"stage {first['name']!r} failed: {first.get('error')}",
                hint=f"fix it and run again; stages that succeeded are cached "
                f"(run record {record['id']})")
            err.result = result
            raise err

    def _selected(self) -> list[str]:
        """The stages this run covers, in order: the targets and what they depend on."""
        if not self.o.targets:
            return list(self.p.stages)
        keep = self.p.upstream_closure(set(self.o.targets))
        return [n for n in self.p.stages if n in keep]

    # ------------------------------------------------------------------ one stage

    def _stage(self, stage: Stage) -> StageResult:
        """Settle ``stage``: its result, whatever happened (but Ctrl-C outside a command)."""
        started = time.monotonic()
        res = StageResult(stage.name, "failed", cmd=stage.cmd)
        interrupted = self.flags.interrupted
        try:
            self._settle(stage, res)
        except StageFailure as err:
            res.status = "interrupted" if interrupted.is_set() else "failed"
            res.error = "interrupted" if interrupted.is_set() else err.message
        except CacheMiss as err:
            res.status, res.error = "failed", f"cache object {err} vanished during the run"
        except UnsafePathError as err:
            # The stage fails like any other (its record says why); the run then exits with
            # the unsafe-path error's own code.
            res.status, res.error = "failed", err.message
            self.flags.note_unsafe(err)
        except OSError as err:
            res.status, res.error = "failed", f"{type(err).__name__}: {err}"
        res.seconds = time.monotonic() - started
        with contextlib.suppress(OSError):  # only detail for a killed run's record is lost
            self.recorder.journal(res)
        self.reporter.stage_finished(stage.name, res.status, res.seconds, res.error)
        return res

    def _settle(self, stage: Stage, res: StageResult) -> None:
        """Hash the stage's inputs, decide, and do what was decided."""
        signature = self.inputs.fill(stage, res)
        decision = self._decide(stage, signature)
        if decision.cached is not None:  # cached or restore
            res.outs = dict(decision.cached.outs)
            res.metrics = dict(decision.cached.metrics)
            res.runtime = dict(decision.cached.runtime)
            # Only a run that has a record: `runs show` must know every run a record names.
            producer = decision.cached.run_id
            res.produced_by = producer if self.store.has(producer) else None
            self.executor.restore(stage, decision)
            res.status = "restored" if decision.outcome == "restore" else "cached"
            return
        self.executor.run(stage, res)
        res.status = "ran"
        # Journaled before the run cache names this run as the outputs' producer.
        self.recorder.journal(res)
        self.runcache.save(signature, res.outs, {
            "stage": stage.name, "run_id": self.run_id, "metrics": res.metrics,
            "runtime": res.runtime})

    def _decide(self, stage: Stage, signature: str) -> Decision:
        """Gather what :func:`decide` needs (no more than it will look at) and call it."""
        declared = stage.out_paths
        if self.o.force:
            return decide(force=True, declared=declared, entry=None, all_cached=False,
                          current={})
        entry = self.runcache.read(signature)
        cached = parse_entry(entry, declared)
        try:
            all_cached = cached is not None and all(self.cache.has(d)
                                                    for d in cached.outs.values())
        except ManifestError:
            all_cached = False  # a manifest damaged: the outputs cannot be restored
        current = {p: self.hasher.hash_path(p) for p in declared} if all_cached else {}
        return decide(force=False, declared=declared, entry=entry, all_cached=all_cached,
                      current=current)
