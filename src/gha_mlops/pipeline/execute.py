"""Doing what was decided for a stage: restore outputs from the cache, or run its command.

Running a stage backs up the outputs it will replace (into the object store), starts its
command (:mod:`._procs`: its processes die with the run), waits for it, and stores the outputs
it wrote. A stage that fails, or is interrupted, leaves no partial outputs: what it wrote is
removed and the outputs it replaced are put back from the cache. Outputs are written, removed
and restored only where their real path (symlinks resolved) lies inside the workspace.
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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gha_mlops._fs import atomic_write_json, atomic_write_text, resolve_inside
from gha_mlops.config import Stage
from gha_mlops.errors import UnsafePathError
from gha_mlops.pipeline.decide import Decision
from gha_mlops.pipeline.results import RunContext, StageFailure, StageResult
from gha_mlops.store.objects import remove_path

if TYPE_CHECKING:
    from gha_mlops.pipeline._procs import StageProcesses

# How long a stage's processes get to end by themselves after Ctrl-C before they are killed.
TERM_GRACE_S = 10.0


class Executor:
    """Restores and runs the stages of the run ``ctx``; thread-safe.

    ``before_first_command`` is called before each command starts (the engine journals the
    run then: a run exists from its first command on, even if killed); ``env_lock`` gives the
    digest of the environment lock for the stage's lineage file.
    """

    def __init__(self, ctx: RunContext, *, env_lock: Callable[[], str | None],
                 before_first_command: Callable[[], None]) -> None:
        self.ctx = ctx
        self.p = ctx.pipeline
        self.root = ctx.root
        self._env_lock = env_lock
        self._before_first_command = before_first_command
        # Imported with the first command: a no-op run never needs it.
        self._children: StageProcesses | None = None
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._procs_lock = threading.Lock()
        self._params_file: Path | None = None
        self._params_lock = threading.Lock()

    # ------------------------------------------------------------------ outputs

    def inside(self, stage: Stage, path: str) -> Path:
        """The real path of output ``path``; :class:`UnsafePathError` if a symlink in it
        leads out of the workspace (the engine would remove, restore or cache a file there)."""
        return resolve_inside(self.root, path, what=f"stage {stage.name!r} output")

    def restore(self, stage: Stage, decision: Decision) -> None:
        """Put back from the object store the outputs ``decision`` names."""
        if decision.cached is None:
            return
        for path in decision.restore:
            self.inside(stage, path)
            self.ctx.cache.checkout(decision.cached.outs[path], self.root / path, inside=self.root)

    def run(self, stage: Stage, res: StageResult) -> None:
        """Run ``stage``'s command and store its outputs in ``res.outs`` (and the metrics they
        hold in ``res.metrics``); on any failure or interrupt, roll the outputs back and
        re-raise (:class:`StageFailure` for the stage's own failures)."""
        for path in stage.out_paths:  # all of them before any is touched
            self.inside(stage, path)
        backups = self._back_up(stage)
        try:
            self._command(stage, res)
            self._store_outputs(stage, res)
        except BaseException:
            self._rollback(stage, backups)
            raise

    def _back_up(self, stage: Stage) -> dict[str, str]:
        """Store the outputs the command will replace and remove them: path -> digest."""
        backups: dict[str, str] = {}
        for path in stage.out_paths:
            digest = self.ctx.hasher.hash_path(path)
            if digest is not None:
                self.ctx.cache.store(self.ctx.hasher, path, digest)
                backups[path] = digest
                remove_path(self.root / path)
        return backups

    def _store_outputs(self, stage: Stage, res: StageResult) -> None:
        for out in stage.outs:
            self.inside(stage, out.path)  # the command may have made it a symlink
            digest = self.ctx.hasher.hash_path(out.path)
            if digest is None:
                raise StageFailure(
                    f"the command succeeded but did not write the declared {out.kind} "
                    f"{out.path!r}")
            self.ctx.cache.store(self.ctx.hasher, out.path, digest)
            res.outs[out.path] = digest
            if out.kind == "metric":
                res.metrics[out.path] = self._read_metrics(out.path)

    def _rollback(self, stage: Stage, backups: Mapping[str, str]) -> None:
        """Remove what the stage wrote and put back what it replaced. An output that the
        command turned into a way out of the workspace is left alone: removing or restoring
        through it would touch files outside."""
        for path in stage.out_paths:
            try:
                self.inside(stage, path)
            except UnsafePathError as err:
                self.ctx.flags.note_unsafe(UnsafePathError(
                    f"{err.message}: left as the stage's command made it, not rolled back "
                    "through the link", hint=err.hint))
                continue
            remove_path(self.root / path)
            if path in backups:
                self.ctx.cache.checkout(backups[path], self.root / path, inside=self.root)

    def _read_metrics(self, path: str) -> dict[str, Any]:
        full = self.root / path
        if full.is_dir():
            raise StageFailure(f"metrics {path!r} must be a JSON file, not a directory")
        try:
            data = json.loads(full.read_bytes())
        except ValueError as err:
            raise StageFailure(f"metrics file {path!r} is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise StageFailure(f"metrics file {path!r} must hold a JSON object")
        return flatten_metrics(data)

    # ------------------------------------------------------------------ the command

    def _command(self, stage: Stage, res: StageResult) -> None:
        """Run the stage's command to its end; its runtime report goes to ``res.runtime``."""
        self.ctx.tmp.mkdir(parents=True, exist_ok=True)
        self._before_first_command()
        children = self._processes()
        report = self.ctx.tmp / f"{stage.name}.report.json"
        lineage = self.ctx.tmp / f"{stage.name}.lineage.json"
        env_lock = self._env_lock()
        atomic_write_json(lineage, {
            "stage": stage.name, "signature": res.signature, "seed": self.p.seed,
            "params": res.params, "deps": res.deps,
            "env_lock": {"path": self.p.env_lock, "sha256": env_lock} if self.p.env_lock
            else None,
        })
        env = self._environment(stage, report, lineage)
        self.ctx.reporter.stage_started(stage.name, stage.cmd)
        if self.ctx.flags.interrupted.is_set():
            raise StageFailure("interrupted")
        rc = self._start_and_wait(children, stage, env)
        if report.exists():
            try:
                res.runtime = json.loads(report.read_bytes())
            except ValueError:
                res.runtime = {"error": "the stage's runtime report was not valid JSON"}
        if self.ctx.flags.interrupted.is_set():
            raise StageFailure("interrupted")
        if rc != 0:
            why = (f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}")
            raise StageFailure(f"`{stage.cmd}` failed ({why})")

    def _environment(self, stage: Stage, report: Path, lineage: Path) -> dict[str, str]:
        """What the stage's command inherits, with what tells it about its run."""
        env = dict(self.ctx.options.environ)
        env.update({
            "GHA_MLOPS_SEED": str(self.p.seed),
            "GHA_MLOPS_PARAMS": str(self._effective_params()),
            "GHA_MLOPS_STAGE": stage.name,
            "GHA_MLOPS_RUN_ID": self.ctx.run_id,
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
        return env

    def _start_and_wait(self, children: StageProcesses, stage: Stage,
                        env: Mapping[str, str]) -> int:
        """Start the command, pass its lines on (in parallel runs), wait: its exit status."""
        parallel = self.ctx.options.jobs > 1
        held = HeldInterrupts()
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
                    self.ctx.reporter.stage_line(stage.name, raw.decode("utf-8", "replace").rstrip())
            return children.finish(stage.name, proc, stopping=self.ctx.flags.interrupted,
                                    grace=TERM_GRACE_S)
        except KeyboardInterrupt:
            # Serial runs get Ctrl-C here, in the main thread: stop the command before its
            # outputs are rolled back, so nothing writes behind the rollback.
            self.ctx.flags.interrupted.set()
            stop_command(proc)
            children.finish(stage.name, proc)
            raise StageFailure("interrupted") from None
        finally:
            if proc.stdout is not None:
                proc.stdout.close()
            with self._procs_lock:
                self._procs.pop(stage.name, None)

    def _processes(self) -> StageProcesses:
        with self._procs_lock:
            if self._children is None:
                from gha_mlops.pipeline._procs import StageProcesses

                self._children = StageProcesses(self.ctx.tmp / "procs", self.ctx.run_id)
            return self._children

    def stop_running(self, *, first: bool) -> None:
        """Stop every running command (each worker then rolls its stage back): gently on the
        ``first`` Ctrl-C, at once on a second."""
        with self._procs_lock:
            procs = list(self._procs.values())
        for proc in procs:
            if first:
                threading.Thread(target=stop_command, args=(proc,), daemon=True).start()
            else:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)

    def close(self) -> None:
        """End what keeps the run's processes guarded (every stage has finished)."""
        if self._children is not None:
            self._children.close()

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
                path = self.ctx.tmp / "params" / Path(self.p.params_file).name
                atomic_write_text(path, text)
                self._params_file = path
            return self._params_file


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


class HeldInterrupts:
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


def stop_command(proc: subprocess.Popen[bytes]) -> None:
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
