"""Run a pipeline: decide per stage whether to run, restore or skip, execute, cache, record.

A stage is *cached* when the run cache knows its signature and the workspace already holds
those outputs, *restored* when the cache knows it and the outputs are put back from the cache,
and *ran* otherwise. A stage that fails, or is interrupted, leaves no partial outputs: what it
wrote is removed and the outputs it replaced are put back from the cache.

A stage's processes die with the run, even one killed with ``kill -9`` (:mod:`._procs`); the
next run records a killed one as interrupted. Outputs are written, removed and restored only
where their real path (symlinks resolved) lies inside the workspace.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from gha_mlops import __version__
from gha_mlops._fs import atomic_write_json, atomic_write_text, resolve_inside
from gha_mlops.config import STATE_DIR, Pipeline, Stage, ensure_state_dir, param_value
from gha_mlops.config.loader import DATA_PREFIX
from gha_mlops.errors import (
    InterruptedRunError,
    StageFailedError,
    UnsafePathError,
    UsageError,
)
from gha_mlops.pipeline.environment import (
    git_info,
    installed_packages,
    recorded_variables,
    system_info,
)
from gha_mlops.pipeline.records import (
    RECORD_SCHEMA,
    RunStore,
    fill_stage_fields,
    iso_time,
    new_run_id,
)
from gha_mlops.pipeline.runcache import RunCache
from gha_mlops.pipeline.secrets import scrub, secret_values
from gha_mlops.pipeline.signature import stage_signature
from gha_mlops.store.hashing import Hasher, StatCache, is_tree, sha256_file
from gha_mlops.store.lock import WorkspaceLock
from gha_mlops.store.objects import CacheMiss, ContentCache, remove_path

if TYPE_CHECKING:
    from gha_mlops.data.pointer import Dataset
    from gha_mlops.data.transfer import TransferStats
    from gha_mlops.pipeline._procs import StageProcesses

OK_STATUSES = ("ran", "cached", "restored")


class _NoteListener:
    """Reports each dataset a run fetches as one line."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    def started(self, ds: Dataset, objects: int | None, nbytes: int | None) -> None:
        return None

    def finished(self, ds: Dataset, stats: TransferStats, source: str) -> None:
        if stats.objects:
            rate = stats.bytes / stats.seconds / 1e6 if stats.seconds > 0 else 0.0
            self.reporter.note(f"fetched dataset {ds.name} ({ds.version[:12]}, "
                               f"{stats.objects} objects, {stats.bytes / 1e6:.1f} MB) {source} "
                               f"in {stats.seconds:.2f} s ({rate:.1f} MB/s)")
TERM_GRACE_S = 10.0


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
    ``os.environ``); ``kind`` is ``run`` or ``reproduction``."""

    environ: Mapping[str, str]
    force: bool = False
    targets: tuple[str, ...] = ()
    jobs: int = 1
    wait: float = 0.0
    kind: str = "run"
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class StageResult:
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
    record: dict[str, Any]
    record_path: Path

    @property
    def run_id(self) -> str:
        return str(self.record["id"])


class _StageFailure(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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
        self.run_id = new_run_id()
        self.tmp = self.state / "tmp" / "runs" / self.run_id
        # Imported with the first command: a no-op run never needs it.
        self._children: StageProcesses | None = None
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._procs_lock = threading.Lock()
        self._interrupted = threading.Event()
        # Found by the loader already when a stage depends on data:NAME.
        self._datasets: Mapping[str, Dataset] | None = pipeline.datasets
        self._datasets_lock = threading.Lock()
        self._params_file: Path | None = None
        self._params_lock = threading.Lock()
        # What the record would say if this process died now (see _journal).
        self._results: Mapping[str, StageResult] = {}
        self._started = 0.0
        self._snap_lock = threading.Lock()
        # stage -> (status, seconds) as journaled; None until the head is written
        self._journaled: dict[str, tuple[str, float]] | None = None
        self._early: dict[str, StageResult] = {}
        self._unsafe: UnsafePathError | None = None

    # ------------------------------------------------------------------ orchestration

    def run(self) -> RunResult:
        ensure_state_dir(self.root)
        with WorkspaceLock(self.state, wait=self.o.wait, what=self.o.kind):
            self._after_dead_runs()
            started = self._started = time.time()
            results: dict[str, StageResult] = {}
            self._results = results
            try:
                self._schedule(results)
            finally:
                if self._children is not None:
                    self._children.close()
                self.stat_cache.flush()
                record = self._record(results, started, time.time())
                path = self.store.write(record)
                remove_path(self.tmp)
        result = RunResult(record, path)
        if self.recorded is not None:
            self.recorded(result)
        if record["status"] == "interrupted":
            raise InterruptedRunError(
                "the run was interrupted; stages that were running were rolled back",
                hint=f"the partial run is recorded as {record['id']}; run again to continue "
                "(finished stages are cached)")
        if self._unsafe is not None:
            raise UnsafePathError(self._unsafe.message,
                                  hint=f"{self._unsafe.hint} (run record {record['id']})")
        if record["status"] == "failed":
            failed = [s for s in record["stages"] if s["status"] == "failed"]
            first = failed[0] if failed else {"name": "?", "error": "failed"}
            err = StageFailedError(
                f"stage {first['name']!r} failed: {first.get('error')}",
                hint=f"fix it and run again; stages that succeeded are cached "
                f"(run record {record['id']})")
            err.result = result
            raise err
        return result

    def _after_dead_runs(self) -> None:
        """Deal with runs whose process died (``kill -9``, a crash, a lost machine), under the
        lock and before anything else: a run that ended normally removed its tmp folder, and
        holding the lock means no other run is alive, so every folder left in ``tmp/runs``
        belongs to a dead one. What its stages left running is stopped (it would write
        behind this run's back); its last snapshot becomes its record, status
        ``interrupted``, so that any ``produced_by_run`` naming it resolves."""
        runs_tmp = self.state / "tmp" / "runs"
        try:
            dead = sorted(os.listdir(runs_tmp))
        except (FileNotFoundError, NotADirectoryError):
            return
        if not dead:
            return
        # Everything found there is removed: it must not be a way out (a checkout can carry
        # a symlink in .gha-mlops).
        resolve_inside(self.state, "tmp/runs", what="the folder of unfinished runs in .gha-mlops,")
        from gha_mlops.pipeline._procs import stop_leftovers

        for run_id in dead:
            folder = runs_tmp / run_id
            left = stop_leftovers(folder / "procs", run_id)
            running = [scrub(StageResult(x.stage, "interrupted", cmd=x.cmd, error="interrupted: "
                                         "the run's process died while it ran").to_json(),
                             secret_values(self.o.environ)) for x in left]
            adopted = self.store.adopt_journal(folder, run_id, recorded_by=self.run_id,
                                               running=running)
            remove_path(folder)
            stopped = sum(x.stopped for x in left)
            what = [f"stopped {stopped} process(es) of its stages that were still running"
                    ] if stopped else []
            what += ["recorded it as interrupted"] if adopted else []
            if what:
                self.reporter.note(f"run {run_id} ended without its gha-mlops process "
                                   f"(killed or crashed): {'; '.join(what)}")

    def _selected(self) -> list[str]:
        """The stages this run covers, in order: the targets and what they depend on."""
        if not self.o.targets:
            return list(self.p.stages)
        keep = self.p.upstream_closure(set(self.o.targets))
        return [n for n in self.p.stages if n in keep]

    def _schedule(self, results: dict[str, StageResult]) -> None:
        if self.o.jobs <= 1:
            self._schedule_serial(results)
        else:
            self._schedule_parallel(results)

    def _skip_reason(self, stage: Stage, results: Mapping[str, StageResult]) -> str | None:
        bad = [u for u in stage.upstream if u in results and results[u].status not in OK_STATUSES]
        if bad:
            return f"not run: upstream stage {bad[0]!r} {results[bad[0]].status}"
        return None

    def _skip(self, name: str, reason: str, results: dict[str, StageResult]) -> None:
        results[name] = StageResult(name, "skipped", cmd=self.p.stages[name].cmd, error=reason)
        self.reporter.stage_finished(name, "skipped", 0.0, reason)

    def _schedule_serial(self, results: dict[str, StageResult]) -> None:
        """One stage at a time, in the main thread (no thread pool to start: -j 1 is the
        common case and a no-op run should cost as little as possible)."""
        for name in self._selected():
            if self._interrupted.is_set():
                self._skip(name, "not run: the run was interrupted", results)
                continue
            reason = self._skip_reason(self.p.stages[name], results)
            if reason:
                self._skip(name, reason, results)
                continue
            try:
                results[name] = self._stage(self.p.stages[name])
            except KeyboardInterrupt:
                # Outside a command's lifetime (hashing, caching): the stage rolled back.
                self._interrupted.set()
                results[name] = StageResult(name, "interrupted", cmd=self.p.stages[name].cmd,
                                            error="interrupted")
                self.reporter.stage_finished(name, "interrupted", 0.0, "interrupted")

    def _schedule_parallel(self, results: dict[str, StageResult]) -> None:
        from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

        pending = self._selected()
        selected = set(pending)
        running: dict[Future[StageResult], str] = {}
        jobs = self.o.jobs
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            while pending or running:
                try:
                    for name in list(pending):
                        stage = self.p.stages[name]
                        reason = self._skip_reason(stage, results)
                        if reason:
                            pending.remove(name)
                            self._skip(name, reason, results)
                        elif (all(u in results for u in stage.upstream if u in selected)
                              and len(running) < jobs):
                            pending.remove(name)
                            running[pool.submit(self._stage, stage)] = name
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
        first = not self._interrupted.is_set()
        self._interrupted.set()
        for name in pending:
            self._skip(name, "not run: the run was interrupted", results)
        pending.clear()
        with self._procs_lock:
            procs = list(self._procs.values())
        for proc in procs:
            if first:
                threading.Thread(target=_stop, args=(proc,), daemon=True).start()
            else:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)

    # ------------------------------------------------------------------ one stage

    def _stage(self, stage: Stage) -> StageResult:
        started = time.monotonic()
        res = StageResult(stage.name, "failed", cmd=stage.cmd)
        try:
            self._decide_and_execute(stage, res)
        except _StageFailure as err:
            res.status = "interrupted" if self._interrupted.is_set() else "failed"
            res.error = "interrupted" if self._interrupted.is_set() else err.message
        except CacheMiss as err:
            res.status, res.error = "failed", f"cache object {err} vanished during the run"
        except UnsafePathError as err:
            # The stage fails like any other (its record says why); the run then exits with
            # the unsafe-path error's own code.
            res.status, res.error = "failed", err.message
            with self._snap_lock:
                self._unsafe = self._unsafe or err
        except OSError as err:
            res.status, res.error = "failed", f"{type(err).__name__}: {err}"
        res.seconds = time.monotonic() - started
        with contextlib.suppress(OSError):  # only detail for a killed run's record is lost
            self._journal(res)
        self.reporter.stage_finished(stage.name, res.status, res.seconds, res.error)
        return res

    def _decide_and_execute(self, stage: Stage, res: StageResult) -> None:
        for dep in stage.deps:
            if dep.startswith(DATA_PREFIX):
                res.deps[dep] = self._dataset_dep(dep[len(DATA_PREFIX):])
                continue
            digest = self.hasher.hash_path(dep)
            if digest is None:
                raise _StageFailure(f"dependency {dep!r} does not exist")
            if is_tree(digest) and digest in self.hasher.manifests:
                self.cache.store_manifest(digest, self.hasher.manifests[digest])
            res.deps[dep] = digest
        for key in stage.params:
            res.params[key] = param_value(self.p.params, key)
        env_lock = self.hasher.hash_path(self.p.env_lock) if self.p.env_lock else None
        res.signature = stage_signature(
            cmd=stage.cmd, deps=res.deps, params=res.params, env_lock=env_lock,
            seed=self.p.seed, outs=[(o.path, o.kind) for o in stage.outs],
            determinism=self.p.determinism)

        if not self.o.force:
            entry = self.runcache.lookup(res.signature)
            if entry is not None:
                res.outs = dict(entry["outs"])
                res.metrics = entry.get("metrics") or {}
                res.runtime = entry.get("runtime") or {}
                # Only a run that has a record: `runs show` must know every run a record names.
                producer = entry.get("run_id")
                res.produced_by = producer if self.store.has(producer) else None
                res.status = "cached"
                for path, digest in entry["outs"].items():
                    if self.hasher.hash_path(path) != digest:
                        self._inside(stage, path)
                        self.cache.checkout(digest, self.root / path, inside=self.root)
                        res.status = "restored"
                return

        for path in stage.out_paths:  # all of them before any is touched
            self._inside(stage, path)
        backups: dict[str, str] = {}
        for path in stage.out_paths:
            digest = self.hasher.hash_path(path)
            if digest is not None:
                self.cache.store(self.hasher, path, digest)
                backups[path] = digest
                remove_path(self.root / path)
        try:
            self._execute(stage, res)
            for out in stage.outs:
                self._inside(stage, out.path)  # the command may have made it a symlink
                digest = self.hasher.hash_path(out.path)
                if digest is None:
                    raise _StageFailure(
                        f"the command succeeded but did not write the declared {out.kind} "
                        f"{out.path!r}")
                self.cache.store(self.hasher, out.path, digest)
                res.outs[out.path] = digest
                if out.kind == "metric":
                    res.metrics[out.path] = self._read_metrics(out.path)
        except BaseException:
            self._rollback(stage, backups)
            raise
        res.status = "ran"
        # Journaled before the run cache names this run as the outputs' producer.
        self._journal(res)
        self.runcache.save(res.signature, res.outs, {
            "stage": stage.name, "run_id": self.run_id, "metrics": res.metrics,
            "runtime": res.runtime})

    def _dataset_dep(self, name: str) -> str:
        """The pinned version of dataset ``name``, after making sure the workspace holds it.

        Missing data that the cache holds is put in place; data that differs from its pin is
        never overwritten (it may be the user's work in progress): the stage fails instead.
        """
        with self._datasets_lock:
            if self._datasets is None:
                from gha_mlops.data.pointer import find_datasets

                self._datasets = find_datasets(self.root)
        ds = self._datasets.get(name)
        if ds is None:
            raise _StageFailure(f"no dataset named {name!r}")
        digest = self.hasher.hash_path(ds.path)
        if digest == ds.version:
            return ds.version
        if digest is not None:
            raise _StageFailure(
                f"dataset {name!r} at {ds.path} differs from its pinned version "
                f"{ds.version[:12]}: pin the change with `gha-mlops data add {ds.path}` or "
                f"restore the pin with `gha-mlops data checkout {name}`")
        if not self.cache.has(ds.version):
            self._fetch_dataset(ds)
        resolve_inside(self.root, ds.path, what=f"the path of dataset {name!r}")
        self.cache.checkout(ds.version, self.root / ds.path, inside=self.root)
        return ds.version

    def _fetch_dataset(self, ds: Dataset) -> None:
        """Fetch a pinned version the cache lacks: from its source URL or the remote."""
        from gha_mlops.data.service import Workspace, choose_remote, fetch
        from gha_mlops.errors import GhaMlopsError

        with self._datasets_lock:  # one fetch at a time; a second stage finds it cached
            if self.cache.has(ds.version):
                return
            remote = None
            if not (ds.source and not ds.is_tree):
                if not self.p.remotes:
                    raise _StageFailure(
                        f"dataset {ds.name!r} ({ds.version[:12]}) is not here and mlops.yaml "
                        f"declares no remote to fetch it from: run `gha-mlops data pull "
                        f"{ds.name}` where a remote is set up, or declare `remotes:`")
                remote = choose_remote(self.p.remotes, self.p.default_remote, None)
            listener = _NoteListener(self.reporter)
            try:
                fetch(Workspace(self.root), [ds], remote, listener=listener)
            except GhaMlopsError as err:
                raise _StageFailure(f"dataset {ds.name!r} could not be fetched: {err.message}"
                                    + (f" ({err.hint})" if err.hint else "")) from None

    def _inside(self, stage: Stage, path: str) -> Path:
        """The real path of output ``path``; :class:`UnsafePathError` if a symlink in it
        leads out of the workspace (the engine would remove, restore or cache a file there)."""
        return resolve_inside(self.root, path, what=f"stage {stage.name!r} output")

    def _rollback(self, stage: Stage, backups: Mapping[str, str]) -> None:
        """Remove what the stage wrote and put back what it replaced. An output that the
        command turned into a way out of the workspace is left alone: removing or restoring
        through it would touch files outside."""
        for path in stage.out_paths:
            try:
                self._inside(stage, path)
            except UnsafePathError as err:
                kept = UnsafePathError(f"{err.message}: left as the stage's command made it, "
                                       "not rolled back through the link", hint=err.hint)
                with self._snap_lock:
                    self._unsafe = self._unsafe or kept
                continue
            remove_path(self.root / path)
            if path in backups:
                self.cache.checkout(backups[path], self.root / path, inside=self.root)

    def _read_metrics(self, path: str) -> dict[str, Any]:
        full = self.root / path
        if full.is_dir():
            raise _StageFailure(f"metrics {path!r} must be a JSON file, not a directory")
        try:
            data = json.loads(full.read_bytes())
        except ValueError as err:
            raise _StageFailure(f"metrics file {path!r} is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise _StageFailure(f"metrics file {path!r} must hold a JSON object")
        return flatten_metrics(data)

    def _execute(self, stage: Stage, res: StageResult) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._journal(None)  # the run exists from its first command on, even if killed
        children = self._stage_processes()
        report = self.tmp / f"{stage.name}.report.json"
        lineage = self.tmp / f"{stage.name}.lineage.json"
        atomic_write_json(lineage, {
            "stage": stage.name, "signature": res.signature, "seed": self.p.seed,
            "params": res.params, "deps": res.deps,
            "env_lock": ({"path": self.p.env_lock,
                          "sha256": self.hasher.hash_path(self.p.env_lock)}
                         if self.p.env_lock else None),
        })
        env = dict(self.o.environ)
        env.update({
            "GHA_MLOPS_SEED": str(self.p.seed),
            "GHA_MLOPS_PARAMS": str(self._effective_params()),
            "GHA_MLOPS_STAGE": stage.name,
            "GHA_MLOPS_RUN_ID": self.run_id,
            "GHA_MLOPS_WORKSPACE": str(self.root),
            "GHA_MLOPS_STAGE_REPORT": str(report),
            "GHA_MLOPS_LINEAGE": str(lineage),
        })
        env.setdefault("PYTHONHASHSEED", str(self.p.seed))
        if self.p.determinism == "portable":
            # Imported only for portable pipelines: a no-op run never needs it.
            from gha_mlops.train._portable import portable_environment

            env = portable_environment(env)
        bindir = os.path.dirname(sys.executable)
        env["PATH"] = bindir + os.pathsep + env.get("PATH", os.defpath)
        self.reporter.stage_started(stage.name, stage.cmd)
        parallel = self.o.jobs > 1
        if self._interrupted.is_set():
            raise _StageFailure("interrupted")
        held = _HeldInterrupts()
        try:
            # Started in this thread, which waits for it: the parent-death signal follows
            # the thread that forked (see _procs).
            proc = children.start(
                stage.name, stage.cmd, cwd=self.root, env=env,
                stdout=subprocess.PIPE if parallel else None,
                stderr=subprocess.STDOUT if parallel else None,
            )
        except BaseException:
            held.release()
            raise
        with self._procs_lock:
            self._procs[stage.name] = proc
        try:
            # A Ctrl-C that came while the command was starting is raised here, where the
            # command is known and stopped; earlier it would have been left running.
            held.release()
            if parallel and proc.stdout is not None:
                for raw in proc.stdout:
                    self.reporter.stage_line(stage.name, raw.decode("utf-8", "replace").rstrip())
            rc = children.finish(stage.name, proc, stopping=self._interrupted,
                                 grace=TERM_GRACE_S)
        except KeyboardInterrupt:
            # Serial runs get Ctrl-C here, in the main thread: stop the command before its
            # outputs are rolled back, so nothing writes behind the rollback.
            self._interrupted.set()
            _stop(proc)
            children.finish(stage.name, proc)
            raise _StageFailure("interrupted") from None
        finally:
            if proc.stdout is not None:
                proc.stdout.close()
            with self._procs_lock:
                self._procs.pop(stage.name, None)
        if report.exists():
            try:
                res.runtime = json.loads(report.read_bytes())
            except ValueError:
                res.runtime = {"error": "the stage's runtime report was not valid JSON"}
        if self._interrupted.is_set():
            raise _StageFailure("interrupted")
        if rc != 0:
            why = (f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}")
            raise _StageFailure(f"`{stage.cmd}` failed ({why})")

    def _stage_processes(self) -> StageProcesses:
        with self._procs_lock:
            if self._children is None:
                from gha_mlops.pipeline._procs import StageProcesses

                self._children = StageProcesses(self.tmp / "procs", self.run_id)
            return self._children

    def _effective_params(self) -> Path:
        """The params file stage scripts read: the workspace's own, or, when ``--set``
        overrides apply, a run-private copy with them applied (removed with the run's tmp)."""
        if not self.p.overrides:
            return self.root / self.p.params_file
        with self._params_lock:
            if self._params_file is None:
                import yaml

                # PyYAML writes floats that it reads back exactly (JSON's 1e-05 it would read
                # as a string); the key order of the params file is kept.
                text = yaml.safe_dump(_plain(self.p.params), sort_keys=False,
                                      allow_unicode=True, default_flow_style=False)
                path = self.tmp / "params" / Path(self.p.params_file).name
                atomic_write_text(path, text)
                self._params_file = path
            return self._params_file

    # ------------------------------------------------------------------ the record

    def _journal(self, finished: StageResult | None) -> None:
        """Keep ``tmp/runs/<id>/`` able to tell what this run did should its process die:
        the record's head (``record.json``, written before the first command) and a line per
        finished stage (``stages.jsonl``, a ``ran`` one before the run cache names this run
        as its producer). The next run makes a dead run's journal its record
        (``_after_dead_runs``). O(1) per stage; a no-op run writes nothing."""
        secrets = secret_values(self.o.environ)
        with self._snap_lock:
            if self._journaled is None:
                if finished is not None:  # a stage done before the first command
                    self._early[finished.name] = finished
                    return
                head = self._head(self._started, time.time(), "interrupted", git_info(self.root))
                head["env"] = self._env_entry()
                doc = {"record": head, "model": self.p.model, "started": self._started}
                atomic_write_json(self.tmp / "record.json", scrub(doc, secrets))
                self._journaled = {}
                pending = list({**self._results, **self._early}.values())
            elif finished is None or self._journaled.get(finished.name) == (
                    finished.status, finished.seconds):
                return
            else:
                pending = [finished]
            lines = b"".join(json.dumps(scrub(self._stage_parts(s), secrets)).encode() + b"\n"
                             for s in pending)
            with open(self.tmp / "stages.jsonl", "ab") as fh:
                fh.write(lines)
            self._journaled.update((s.name, (s.status, s.seconds)) for s in pending)

    def _record(self, results: Mapping[str, StageResult], started: float,
                finished: float) -> dict[str, Any]:
        stages = [results[n] for n in self._selected() if n in results]
        statuses = {s.status for s in stages}
        if "interrupted" in statuses or self._interrupted.is_set():
            status = "interrupted"
        elif statuses - set(OK_STATUSES):
            status = "failed"
        else:
            status = "succeeded"
        record = self._head(started, finished, status, git_info(self.root))
        fill_stage_fields(record, [self._stage_parts(s) for s in stages], self.p.model)
        record["env"] = self._env_entry()
        return dict(scrub(record, secret_values(self.o.environ)))

    def _head(self, started: float, finished: float, status: str,
              git: dict[str, Any] | None) -> dict[str, Any]:
        """The fields of the record that do not come from its stages (but ``env``)."""
        params_path = self.root / self.p.params_file
        head: dict[str, Any] = {
            "schema": RECORD_SCHEMA,
            "id": self.run_id,
            "kind": self.o.kind,
            "status": status,
            "started_at": iso_time(started),
            "finished_at": iso_time(finished),
            "duration_s": round(finished - started, 3),
            "gha_mlops_version": __version__,
            "workspace": str(self.root),
            "config": {"path": self.p.config_file.name, "sha256": self.p.config_sha256},
            "options": {"force": self.o.force, "targets": list(self.o.targets),
                        "jobs": self.o.jobs, **self.o.extra},
            "git": git,
            "seed": self.p.seed,
            "determinism": self.p.determinism,
            "params": {
                "file": self.p.params_file,
                "sha256": sha256_file(params_path) if params_path.is_file() else None,
                # --set KEY=VALUE of this run, applied over the file (reproduce re-applies them)
                "overrides": dict(self.p.overrides),
            },
        }
        if self._datasets:
            head["datasets"] = {}
        return head

    def _stage_parts(self, s: StageResult) -> dict[str, Any]:
        """One stage's share of the record (see :func:`records.fill_stage_fields`)."""
        kinds = {o.path: o.kind for o in self.p.stages[s.name].outs}
        outputs: dict[str, Any] = {}
        for path, digest in s.outs.items():
            entry: dict[str, Any] = {"sha256": digest, "kind": kinds.get(path, "out"),
                                     "stage": s.name}
            if is_tree(digest):
                entry["files"] = self.cache.tree_files(digest)
            outputs[path] = entry
        parts: dict[str, Any] = {
            "stage": s.to_json(), "outputs": outputs, "metrics": s.metrics,
            "runtime": s.runtime, "deps": s.deps, "params": s.params,
            "data": {d: h for d, h in s.deps.items() if self.p.producer_of(d) is None},
        }
        used = {d[len(DATA_PREFIX):] for d in s.deps if d.startswith(DATA_PREFIX)}
        if used and self._datasets:
            parts["datasets"] = {
                n: {"version": ds.version, "path": ds.path, "pointer": ds.pointer,
                    "files": ds.files, "size": ds.size, "source": ds.source,
                    "remote": self._remote_entry()}
                for n, ds in self._datasets.items() if n in used}
        return parts

    def _env_entry(self) -> dict[str, Any]:
        env_lock = None
        if self.p.env_lock:
            env_lock = {"path": self.p.env_lock,
                        "sha256": self.hasher.hash_path(self.p.env_lock)}
        return {
            "lock": env_lock,
            **system_info(self.state / "tmp"),
            "packages": installed_packages(self.state / "tmp"),
            "variables": recorded_variables(self.o.environ),
        }

    def _remote_entry(self) -> dict[str, Any] | None:
        """Where the run's datasets are kept (the default remote), so a reproduction can
        fetch the versions it needs."""
        from gha_mlops.data.service import choose_remote
        from gha_mlops.errors import GhaMlopsError

        try:
            remote = choose_remote(self.p.remotes, self.p.default_remote, None)
        except GhaMlopsError:
            return None
        return {k: v for k, v in vars(remote).items() if v is not None}


def flatten_metrics(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalar metrics with nested keys joined by dots; lists and strings are left out."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_metrics(value, name + "."))
        elif isinstance(value, bool) or (isinstance(value, (int, float)) and
                                         math.isfinite(value)):
            out[name] = value
    return out


def _plain(value: Any) -> Any:
    """``value`` with every mapping a plain dict (what ``yaml.safe_dump`` can write)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class _HeldInterrupts:
    """Holds Ctrl-C and SIGTERM back while a command is started, from construction until
    :meth:`release`, which then raises the one that came (through the handler that was in
    place). Python runs signal handlers in the main thread only, so elsewhere this does
    nothing. Handlers, unlike a blocked signal mask, are not inherited by the command."""

    _SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.pending: int | None = None
        self._saved: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in self._SIGNALS:
                if signal.getsignal(sig) is not None:  # None: set outside Python, keep it
                    self._saved[sig] = signal.signal(sig, self._hold)

    def _hold(self, signum: int, frame: Any) -> None:
        self.pending = signum

    def release(self) -> None:
        saved, self._saved = self._saved, {}
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        pending, self.pending = self.pending, None
        if pending is None:
            return
        handler = saved.get(pending)
        if callable(handler):
            handler(pending, None)  # e.g. raises KeyboardInterrupt
        elif handler == signal.SIG_DFL:
            os.kill(os.getpid(), pending)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT the command's process group, then SIGKILL it after a grace period (at once on
    a second Ctrl-C). Does not reap: the thread that started the command does
    (:meth:`StageProcesses.finish`, which also stops what the command left behind)."""
    from gha_mlops.pipeline._procs import signal_group, wait_group_gone

    signal_group(proc.pid, signal.SIGINT)
    try:
        if wait_group_gone(proc.pid, TERM_GRACE_S):
            return
    except KeyboardInterrupt:
        pass
    signal_group(proc.pid, signal.SIGKILL)
