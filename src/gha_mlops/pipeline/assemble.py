"""A run's record: assembled from its stages when it ends, journaled as it goes so that a
run whose process dies still gets one, made from its journal by the next run.

A stage's processes die with the run, even one killed with ``kill -9`` (:mod:`._procs`); the
next run stops what a dead run left running and records it as interrupted
(:func:`recover_dead_runs`).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gha_mlops import __version__
from gha_mlops._fs import atomic_write_json, resolve_inside
from gha_mlops.config._remotes import choose_remote
from gha_mlops.config.loader import DATA_PREFIX
from gha_mlops.errors import GhaMlopsError
from gha_mlops.pipeline.environment import (
    git_info,
    installed_packages,
    recorded_variables,
    system_info,
)
from gha_mlops.pipeline.records import RECORD_SCHEMA, RunStore, fill_stage_fields, iso_time
from gha_mlops.pipeline.results import OK_STATUSES, Reporter, RunContext, StageResult
from gha_mlops.pipeline.secrets import scrub, secret_values
from gha_mlops.store.hashing import is_tree, sha256_file
from gha_mlops.store.objects import remove_path

if TYPE_CHECKING:
    from gha_mlops.data.pointer import Dataset


class Recorder:
    """Writes the journal of the run ``ctx`` to its ``tmp`` and assembles its record.

    ``datasets`` gives the workspace's pinned datasets as far as the run found them;
    ``env_lock`` the digest of the environment lock. :meth:`begin` is called when the run
    starts, with the dict its stages' results go into.
    """

    def __init__(self, ctx: RunContext, *, datasets: Callable[[], Mapping[str, Dataset] | None],
                 env_lock: Callable[[], str | None]) -> None:
        self.ctx = ctx
        self.p = ctx.pipeline
        self.root = ctx.root
        self._datasets = datasets
        self._env_lock = env_lock
        # Once per run (the environment stage commands inherit does not change during it).
        self._secrets = secret_values(ctx.options.environ)
        self._results: Mapping[str, StageResult] = {}
        self._started = 0.0
        self._lock = threading.Lock()
        # stage -> (status, seconds) as journaled; None until the head is written
        self._journaled: dict[str, tuple[str, float]] | None = None
        self._early: dict[str, StageResult] = {}

    def begin(self, started: float, results: Mapping[str, StageResult]) -> None:
        """The run started at ``started``; ``results`` fills in as its stages settle."""
        self._started = started
        self._results = results

    def journal(self, finished: StageResult | None) -> None:
        """Keep ``tmp/runs/<id>/`` able to tell what this run did should its process die:
        the record's head (``record.json``, written before the first command) and a line per
        finished stage (``stages.jsonl``, a ``ran`` one before the run cache names this run
        as its producer). The next run makes a dead run's journal its record
        (:func:`recover_dead_runs`). O(1) per stage; a no-op run writes nothing."""
        secrets = self._secrets
        with self._lock:
            if self._journaled is None:
                if finished is not None:  # a stage done before the first command
                    self._early[finished.name] = finished
                    return
                head = self._head(self._started, time.time(), "interrupted", git_info(self.root))
                head["env"] = self._env_entry()
                doc = {"record": head, "model": self.p.model, "started": self._started}
                atomic_write_json(self.ctx.tmp / "record.json", scrub(doc, secrets))
                self._journaled = {}
                pending = list({**self._results, **self._early}.values())
            elif finished is None or self._journaled.get(finished.name) == (
                    finished.status, finished.seconds):
                return
            else:
                pending = [finished]
            lines = b"".join(json.dumps(scrub(self._stage_parts(s), secrets)).encode() + b"\n"
                             for s in pending)
            with open(self.ctx.tmp / "stages.jsonl", "ab") as fh:
                fh.write(lines)
            self._journaled.update((s.name, (s.status, s.seconds)) for s in pending)

    def record(self, stages: Sequence[StageResult], started: float, finished: float, *,
               interrupted: bool) -> dict[str, Any]:
        """The run's record, from its ``stages`` in pipeline order; secrets scrubbed."""
        statuses = {s.status for s in stages}
        if "interrupted" in statuses or interrupted:
            status = "interrupted"
        elif statuses - set(OK_STATUSES):
            status = "failed"
        else:
            status = "succeeded"
        record = self._head(started, finished, status, git_info(self.root))
        fill_stage_fields(record, [self._stage_parts(s) for s in stages], self.p.model)
        record["env"] = self._env_entry()
        return dict(scrub(record, self._secrets))

    def _head(self, started: float, finished: float, status: str,
              git: dict[str, Any] | None) -> dict[str, Any]:
        """The fields of the record that do not come from its stages (but ``env``)."""
        params_path = self.root / self.p.params_file
        head: dict[str, Any] = {
            "schema": RECORD_SCHEMA,
            "id": self.ctx.run_id,
            "kind": self.ctx.options.kind,
            "status": status,
            "started_at": iso_time(started),
            "finished_at": iso_time(finished),
            "duration_s": round(finished - started, 3),
            "gha_mlops_version": __version__,
            "workspace": str(self.root),
            "config": {"path": self.p.config_file.name, "sha256": self.p.config_sha256},
            "options": {"force": self.ctx.options.force, "targets": list(self.ctx.options.targets),
                        "jobs": self.ctx.options.jobs, **self.ctx.options.extra},
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
        if self._datasets():
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
                entry["files"] = self.ctx.cache.tree_files(digest)
            outputs[path] = entry
        parts: dict[str, Any] = {
            "stage": s.to_json(), "outputs": outputs, "metrics": s.metrics,
            "runtime": s.runtime, "deps": s.deps, "params": s.params,
            "data": {d: h for d, h in s.deps.items() if self.p.producer_of(d) is None},
        }
        used = {d[len(DATA_PREFIX):] for d in s.deps if d.startswith(DATA_PREFIX)}
        datasets = self._datasets()
        if used and datasets:
            parts["datasets"] = {
                n: {"version": ds.version, "path": ds.path, "pointer": ds.pointer,
                    "files": ds.files, "size": ds.size, "source": ds.source,
                    "remote": self._remote_entry()}
                for n, ds in datasets.items() if n in used}
        return parts

    def _env_entry(self) -> dict[str, Any]:
        env_lock = None
        if self.p.env_lock:
            env_lock = {"path": self.p.env_lock, "sha256": self._env_lock()}
        return {
            "lock": env_lock,
            **system_info(self.ctx.state / "tmp"),
            "packages": installed_packages(self.ctx.state / "tmp"),
            "variables": recorded_variables(self.ctx.options.environ),
        }

    def _remote_entry(self) -> dict[str, Any] | None:
        """Where the run's datasets are kept (the default remote), so a reproduction can
        fetch the versions it needs."""
        try:
            remote = choose_remote(self.p.remotes, self.p.default_remote, None)
        except GhaMlopsError:
            return None
        return {k: v for k, v in vars(remote).items() if v is not None}


def recover_dead_runs(state: Path, store: RunStore, *, run_id: str,
                      environ: Mapping[str, str], reporter: Reporter) -> None:
    """Deal with runs whose process died (``kill -9``, a crash, a lost machine), under the
    lock and before anything else: a run that ended normally removed its tmp folder, and
    holding the lock means no other run is alive, so every folder left in ``tmp/runs``
    belongs to a dead one. What its stages left running is stopped (it would write behind
    this run's back); its last snapshot becomes its record, status ``interrupted``, recorded
    by this run (``run_id``), so that any ``produced_by_run`` naming it resolves."""
    runs_tmp = state / "tmp" / "runs"
    try:
        dead = sorted(os.listdir(runs_tmp))
    except (FileNotFoundError, NotADirectoryError):
        return
    if not dead:
        return
    # Everything found there is removed: it must not be a way out (a checkout can carry
    # a symlink in .gha-mlops).
    resolve_inside(state, "tmp/runs", what="the folder of unfinished runs in .gha-mlops,")
    # Imported only after a dead run: a no-op run never needs it.
    from gha_mlops.pipeline._procs import stop_leftovers

    secrets = secret_values(environ)
    for dead_id in dead:
        folder = runs_tmp / dead_id
        left = stop_leftovers(folder / "procs", dead_id)
        running = [scrub(StageResult(x.stage, "interrupted", cmd=x.cmd, error="interrupted: "
                                     "the run's process died while it ran").to_json(),
                         secrets) for x in left]
        adopted = store.adopt_journal(folder, dead_id, recorded_by=run_id, running=running)
        remove_path(folder)
        stopped = sum(x.stopped for x in left)
        what = [f"stopped {stopped} process(es) of its stages that were still running"
                ] if stopped else []
        what += ["recorded it as interrupted"] if adopted else []
        if what:
            reporter.note(f"run {dead_id} ended without its gha-mlops process "
                          f"(killed or crashed): {'; '.join(what)}")
