"""Re-run a recorded run in a fresh scratch workspace and compare its results with the record.

The scratch workspace is the recorded commit (``git worktree``) when the run came from a clean
commit, otherwise a copy of the workspace's files. Before anything runs, every input the record
names is checked by hash: the config, the params file, the environment lock and each
dependency. The stages then run with the cache bypassed (a separate, empty cache), and every
output hash and metric is compared with the record. Params overrides the run was given
(``gha-mlops run --set``) are applied again, so each leg of a sweep reproduces on its own.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gha_mlops.config import STATE_DIR
from gha_mlops.errors import (
    ConfigError,
    EnvironmentDriftError,
    GhaMlopsError,
    ReproductionError,
    UsageError,
)
from gha_mlops.git import GitError, is_ignored, ls_files, worktree_add, worktree_remove
from gha_mlops.pipeline.engine import Reporter, RunOptions, RunResult, run_pipeline
from gha_mlops.pipeline.environment import installed_packages, system_info
from gha_mlops.pipeline.loading import load
from gha_mlops.runs.record import RunRecord
from gha_mlops.runs.store import RunStore
from gha_mlops.store.hashing import Hasher, StatCache, is_tree
from gha_mlops.store.lock import WorkspaceLock
from gha_mlops.store.objects import ContentCache
from gha_mlops.train._portable import DISPATCH_VARS, normalize_machine, portable_pins

if TYPE_CHECKING:
    from gha_mlops.data.service import StoreOpener

# Packages whose version cannot change a model: tooling around the run, not in it.
_IGNORED_PACKAGES = frozenset({"pip", "setuptools", "wheel", "gha-mlops"})


@dataclass(frozen=True)
class Difference:
    what: str  # "output", "file", "metric"
    name: str
    recorded: Any
    reproduced: Any


@dataclass
class Reproduction:
    """The outcome of reproducing run ``run_id``: how (``method``: ``git-worktree`` or
    ``copy``), where (``workspace``, the scratch one), what differs, and, once recorded, the id
    of the reproduction record (``reproduction_id``)."""

    run_id: str
    workspace: Path
    method: str  # "git-worktree" or "copy"
    result: RunResult | None = None
    differences: list[Difference] = field(default_factory=list)
    compared_outputs: int = 0
    compared_metrics: int = 0
    env_drift: list[str] = field(default_factory=list)
    reproduction_id: str | None = None

    @property
    def identical(self) -> bool:
        return not self.differences

    def verdict(self) -> dict[str, Any]:
        """The ``verdict`` field of the reproduction record."""
        return {"reproduces": self.run_id, "identical": self.identical, "method": self.method,
                "env_drift": self.env_drift,
                "differences": [d.__dict__ for d in self.differences]}

    def error(self) -> ReproductionError:
        """The error that ends ``gha-mlops reproduce`` when the run did not reproduce: every
        difference is a note."""
        return ReproductionError(
            f"run {self.run_id} did not reproduce: {len(self.differences)} differences "
            f"(of {self.compared_outputs} outputs and {self.compared_metrics} metrics)",
            hint="look for unseeded randomness, non-deterministic ops or undeclared inputs; "
            "`gha-mlops reproduce --keep` keeps the scratch workspace to compare files",
            notes=[f"{d.what} {d.name}: recorded {d.recorded}, reproduced {d.reproduced}"
                   for d in self.differences])


def reproduce(ref: str, workspace: Path, *, environ: Mapping[str, str],
              allow_env_drift: bool = False, keep: bool = False, jobs: int = 1,
              reporter: Reporter | None = None,
              announce: Callable[[RunRecord], None] | None = None,
              lock_wait: float = 60.0, open_store: StoreOpener | None = None) -> Reproduction:
    """``gha-mlops reproduce``: reproduce the run ``ref`` names among ``workspace``'s records
    (an id, a unique prefix, ``latest``, ``latest~N``) with :func:`reproduce_run`, then write
    the reproduction's own record (kind ``reproduction``, with the ``verdict``) under the
    workspace lock (waiting up to ``lock_wait`` seconds for it). ``announce`` is told the run
    before anything runs.

    Returns the reproduction whatever the verdict (the caller decides how a difference ends);
    raises as :func:`reproduce_run` does.
    """
    store = RunStore.of(workspace)
    record = store.record(ref)
    if announce is not None:
        announce(record)
    rep = reproduce_run(record, workspace.absolute(), environ=environ,
                        allow_env_drift=allow_env_drift, keep=keep, jobs=jobs, reporter=reporter,
                        open_store=open_store)
    assert rep.result is not None
    new = dict(rep.result.record)
    new["verdict"] = rep.verdict()
    with WorkspaceLock(workspace / STATE_DIR, wait=lock_wait, what="reproduce"):
        store.write(new)
    rep.reproduction_id = str(new["id"])
    return rep


def environment_drift(record: RunRecord, packages: Mapping[str, str],
                      system: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between the recorded and the current environment."""
    drift = []
    env = record.env
    rec_py = _part(env, "python").get("version")
    if rec_py and rec_py != system["python"]["version"]:
        drift.append(f"python: recorded {rec_py}, now {system['python']['version']}")
    rec_machine = _part(env, "cpu").get("machine")
    if rec_machine and rec_machine != system["cpu"]["machine"]:
        drift.append(f"machine: recorded {rec_machine}, now {system['cpu']['machine']}")
    recorded = _part(env, "packages")
    for name in sorted(set(recorded) | set(packages)):
        if name in _IGNORED_PACKAGES:
            continue
        a, b = recorded.get(name), packages.get(name)
        if a != b:
            drift.append(f"{name}: recorded {a or 'not installed'}, now {b or 'not installed'}")
    return drift


@dataclass(frozen=True)
class KernelMismatch:
    """Why this machine will run other CPU kernels than a recorded run did.

    ``factor`` names what differs (``architecture``, ``CPU vendor``, ``instruction sets``,
    ``torch kernels``, ``dispatch variables``, ``OpenBLAS core``); ``message`` says it in one
    line, with whether portable mode was on; ``hint`` what to do; ``notes`` every factor.
    """

    factor: str
    message: str
    hint: str
    notes: tuple[str, ...] = ()


# The variables that choose kernels, compared when portable mode was off. Thread counts are
# left out: scripts commonly pin them themselves (torch.set_num_threads), so the variables
# would raise false alarms; ATEN_CPU_CAPABILITY is judged with the CPU by expected_aten.
# GHA_MLOPS_DETERMINISM is compared too: a run trained with the opt-out (native) reproduces
# only with it.
_KERNEL_VARS = tuple(k for k in DISPATCH_VARS if k != "ATEN_CPU_CAPABILITY"
                     and (k.startswith(("GHA_MLOPS_", "ONEDNN_", "DNNL_", "MKL_", "NPY_",
                                        "OPENBLAS_")) and not k.endswith("_NUM_THREADS")))


def expected_aten(cpu: Mapping[str, Any], environ: Mapping[str, str]) -> str | None:
    """The ATen capability torch picks on a CPU with these facts under ``environ`` (pure).

    Follows torch's own rule: ``ATEN_CPU_CAPABILITY`` when it names a level, else AVX512 with
    avx512vl, avx512bw, avx512dq and fma, AVX2 with avx2 and fma, else DEFAULT. None when the
    facts cannot tell (no flags recorded; SVE, whose level depends on the vector length).
    """
    asked = environ.get("ATEN_CPU_CAPABILITY", "")
    machine = normalize_machine(str(cpu.get("machine") or ""))
    if asked == "default":
        return "DEFAULT"
    flags = cpu.get("flags")
    if not isinstance(flags, list):
        return None
    have = {str(f) for f in flags}
    if machine == "x86_64":
        if asked in ("avx2", "avx512"):
            return asked.upper()
        if {"avx512vl", "avx512bw", "avx512dq", "fma"} <= have:
            return "AVX512"
        return "AVX2" if {"avx2", "fma"} <= have else "DEFAULT"
    if machine == "aarch64" and "sve" not in have:
        return "DEFAULT"
    return None


def _text(value: Any, limit: int = 60) -> str:
    """A recorded value fit for a one-line message: printable, bounded (records are input)."""
    out = "".join(ch if ch.isprintable() else "?" for ch in str(value))
    return out if len(out) <= limit else out[:limit] + "..."


def _part(env: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """``env[key]`` when it is an object, else empty: the record types ``env`` only as an
    object, and a record is input."""
    value = env.get(key)
    return value if isinstance(value, Mapping) else {}


def _recorded_dispatch(record: RunRecord) -> list[Mapping[str, Any]]:
    return [d for s in record.stages
            if isinstance(d := s.runtime.get("cpu_dispatch"), Mapping)]


def kernel_mismatch(record: RunRecord | Mapping[str, Any], here: Mapping[str, Any],
                    environ: Mapping[str, str]) -> KernelMismatch | None:
    """Whether this machine (CPU facts ``here``, as :func:`system_info` gives them) under
    ``environ`` will run other CPU kernels than ``record``'s run did (pure).

    Only runs whose stages reported their CPU dispatch (the :mod:`gha_mlops.train` helpers
    do) are judged; None for the others and when nothing that decides the kernels differs.
    With portable mode on in every stage only the architecture (and a machine's own
    ``OPENBLAS_CORETYPE``) can differ; with it off, the CPU vendor, the instruction sets,
    torch's dispatch level and the dispatch variables each can. A plain JSON document is read
    leniently (:meth:`RunRecord.from_json`): a record edited by hand gets an answer too.
    """
    rec = RunRecord.coerce(record, lenient=True)
    stages = _recorded_dispatch(rec)
    if not stages:
        return None
    run = _text(rec.id)
    cpu = _part(rec.env, "cpu")
    portable = all(d.get("portable") is True for d in stages)
    mode = "portable mode was on" if portable else "portable mode was off"
    found: list[tuple[str, str, str]] = []  # (factor, what differs, what to do)
    rec_arch = normalize_machine(str(cpu.get("machine") or ""))
    here_arch = normalize_machine(str(here.get("machine") or ""))
    if rec_arch and here_arch and rec_arch != here_arch:
        found.append(("architecture",
                      f"this machine is {_text(here_arch)}, run {run} ran on {_text(rec_arch)} "
                      f"and {mode}: kernels differ across architectures, so the model bytes "
                      "will differ", f"reproduce on an {_text(rec_arch)} machine"))
    elif portable:
        found.extend(_portable_factors(stages, here_arch, environ, run))
    else:
        found.extend(_native_factors(stages, cpu, here, environ, run))
    if not found:
        return None
    factor, message, todo = found[0]
    if not portable and factor != "architecture":
        todo += (f", or train with portable mode on so that any {_text(rec_arch or 'such')} "
                 "machine reproduces it (docs/reproduce.md)")
    notes = tuple(f"{f}: {m}" for f, m, _ in found) if len(found) > 1 else ()
    return KernelMismatch(factor, message, f"{todo}; --allow-env-drift runs it anyway", notes)


def _portable_factors(stages: list[Mapping[str, Any]], arch: str, environ: Mapping[str, str],
                      run: str) -> list[tuple[str, str, str]]:
    """Portable mode pins everything but a machine's own OpenBLAS core type."""
    try:
        pinned = portable_pins(arch)["OPENBLAS_CORETYPE"]
    except (ConfigError, KeyError):
        return []
    here_core = environ.get("OPENBLAS_CORETYPE") or pinned
    for d in stages:
        variables = d.get("variables")
        core = variables.get("OPENBLAS_CORETYPE") if isinstance(variables, Mapping) else None
        if core and core != here_core:
            return [("OpenBLAS core",
                     f"this machine runs numpy's OpenBLAS as {_text(here_core)}, run {run} as "
                     f"{_text(core)} (portable mode was on, but keeps a machine's own "
                     "OPENBLAS_CORETYPE): numpy's matrix products may differ",
                     f"reproduce with OPENBLAS_CORETYPE={_text(core)}")]
    return []


def _native_factors(stages: list[Mapping[str, Any]], cpu: Mapping[str, Any],
                    here: Mapping[str, Any], environ: Mapping[str, str],
                    run: str) -> list[tuple[str, str, str]]:
    """Without portable mode, each library picks its kernels from this CPU and the environment."""
    found: list[tuple[str, str, str]] = []
    off = "and portable mode was off: the model bytes will differ"
    like = _describe(cpu)
    rec_vendor, here_vendor = cpu.get("vendor"), here.get("vendor")
    if rec_vendor and here_vendor and rec_vendor != here_vendor:
        found.append(("CPU vendor", f"this machine's CPU is {_text(here_vendor)}, run {run}'s "
                      f"was {_text(rec_vendor)} (MKL and oneDNN pick kernels by vendor) {off}",
                      f"reproduce on a machine like the run's ({like})"))
    rec_flags, here_flags = cpu.get("flags"), here.get("flags")
    if isinstance(rec_flags, list) and isinstance(here_flags, list):
        extra = sorted({str(f) for f in here_flags} - {str(f) for f in rec_flags})
        missing = sorted({str(f) for f in rec_flags} - {str(f) for f in here_flags})
        if extra or missing:
            said = "; ".join(part for part in (
                f"has {_text(' '.join(extra), 120)}" if extra else "",
                f"lacks {_text(' '.join(missing), 120)}" if missing else "") if part)
            found.append(("instruction sets",
                          f"this machine's CPU {said} compared with run {run}'s (oneDNN, MKL "
                          f"and numpy pick kernels by instruction set) {off}",
                          f"reproduce on a machine like the run's ({like})"))
    used = next((str(d["aten_capability"]) for d in stages if d.get("aten_capability")), None)
    here_aten = expected_aten(here, environ)
    if used and here_aten and used != here_aten:
        # On the same CPU the variable alone brings the run's kernels back.
        where = f" on a machine like the run's ({like})" if found else " as the run had it"
        found.append(("torch kernels", f"this machine dispatches {_text(here_aten)} torch "
                      f"kernels, run {run} used {_text(used)} {off}",
                      f"reproduce with ATEN_CPU_CAPABILITY={_text(used).lower()}{where}"))
    recorded_vars = next((d.get("variables") for d in stages
                          if isinstance(d.get("variables"), Mapping)), None)
    if recorded_vars is not None:
        for key in _KERNEL_VARS:
            if recorded_vars.get(key) != environ.get(key):
                found.append(("dispatch variables",
                              f"run {run} ran with {key}="
                              f"{_text(recorded_vars.get(key) or '(unset)')}, this environment "
                              f"has {_text(environ.get(key) or '(unset)')} {off}",
                              f"set {key} as the run had it"))
    return found


def _describe(cpu: Mapping[str, Any]) -> str:
    parts = [_text(cpu.get("vendor") or "?"), f"family {_text(cpu.get('family') or '?')}",
             f"model {_text(cpu.get('model_id') or '?')}",
             f"stepping {_text(cpu.get('stepping') or '?')}"]
    return " ".join(parts)


def reproduce_run(record: RunRecord | Mapping[str, Any], workspace: Path, *,
                  environ: Mapping[str, str], allow_env_drift: bool = False, keep: bool = False,
                  jobs: int = 1, reporter: Reporter | None = None,
                  open_store: StoreOpener | None = None) -> Reproduction:
    """Reproduce ``record`` (a run of ``workspace``; a JSON document is validated first) and
    return the comparison. ``open_store`` opens the remote a pinned dataset is fetched from
    when the cache lacks it (see :class:`~gha_mlops.pipeline.results.RunOptions`).

    Raises :class:`EnvironmentDriftError` when the environment differs and drift is not
    allowed, and :class:`ReproductionError` when the recorded inputs are not available.
    """
    rec = record if isinstance(record, RunRecord) else RunRecord.from_json(record)
    if rec.kind != "run":
        raise ReproductionError(f"{rec.id} is a reproduction record, not a run",
                                hint="reproduce the run it names instead")
    if rec.status != "succeeded":
        raise ReproductionError(
            f"run {rec.id} did not succeed ({rec.status}): "
            "there are no complete results to reproduce",
            hint="pick a successful run from `gha-mlops runs list`")
    drift = _environment_check(rec, workspace, environ, allow_env_drift)
    scratch_root = Path(tempfile.mkdtemp(prefix=f"gha-mlops-reproduce-{rec.id}-"))
    git = rec.git
    worktree_repo: Path | None = None
    try:
        if git is not None and git.commit and not git.dirty and git.root:
            worktree_repo = Path(git.root)
            scratch = _git_worktree(worktree_repo, git.commit, scratch_root / "tree",
                                    git.subdir or ".")
            method = "git-worktree"
        else:
            scratch = _copy_workspace(workspace, scratch_root / "tree", rec)
            method = "copy"
        rep = Reproduction(run_id=rec.id, workspace=scratch, method=method, env_drift=drift)
        cache = ContentCache(workspace / STATE_DIR / "cache")
        _bring_missing_inputs(workspace, scratch, rec)
        _materialize_datasets(workspace, scratch, rec, cache, open_store)
        _check_inputs(scratch, rec, cache)
        rep.result = _rerun(scratch, rec, environ=environ, jobs=jobs, reporter=reporter)
        _compare(rec, rep)
        return rep
    finally:
        if not keep:
            if worktree_repo is not None:
                worktree_remove(worktree_repo, scratch_root / "tree")
            shutil.rmtree(scratch_root, ignore_errors=True)


def _environment_check(rec: RunRecord, workspace: Path, environ: Mapping[str, str],
                       allow_env_drift: bool) -> list[str]:
    """How this machine differs from the run's (the CPU kernels, Python, the packages); an
    :class:`EnvironmentDriftError` when it does and drift is not allowed."""
    facts_cache = workspace / STATE_DIR / "tmp"
    system = system_info(facts_cache)
    # The CPU first: it answers in one line, before minutes of running, why bytes would differ.
    kernels = kernel_mismatch(rec, system["cpu"], environ)
    if kernels is not None and not allow_env_drift:
        raise EnvironmentDriftError(kernels.message, hint=kernels.hint, notes=list(kernels.notes))
    drift = environment_drift(rec, installed_packages(facts_cache), system)
    if kernels is not None:
        drift[:0] = [f"cpu ({kernels.factor}): {kernels.message}"]
    if drift and not allow_env_drift:
        raise EnvironmentDriftError(
            f"the environment differs from the one run {rec.id} used, so bit-identical "
            "results are not expected",
            hint="install the recorded versions (see `gha-mlops runs show RUN --json`, "
            "env.packages), or pass --allow-env-drift to compare anyway",
            notes=drift[:30] + ([f"... and {len(drift) - 30} more"] if len(drift) > 30 else []))
    return drift


def _rerun(scratch: Path, rec: RunRecord, *, environ: Mapping[str, str], jobs: int,
           reporter: Reporter | None) -> RunResult:
    """Run the recorded stages again in ``scratch``, forced (the cache bypassed)."""
    config = scratch / str(rec.config.get("path", "mlops.yaml"))
    # A sweep leg ran with `--set` overrides: the same values, in the same order.
    overrides = rec.params.get("overrides") or {}
    try:
        pipeline = load(config, overrides=overrides)
    except UsageError as err:  # only overrides make a load a usage error
        raise ReproductionError(
            f"the params overrides of run {rec.id} do not apply to its params file: "
            f"{err.message}", hint=err.hint) from None
    stages = tuple(s.name for s in rec.stages)
    return run_pipeline(
        pipeline,
        RunOptions(environ=environ, force=True, targets=stages, jobs=jobs,
                   kind="reproduction", extra={"reproduces": rec.id}),
        reporter,
    )


def _git_worktree(repo: Path, commit: str, dest: Path, subdir: str) -> Path:
    try:
        worktree_add(repo, dest, commit)
    except GitError as err:
        raise ReproductionError(
            f"cannot check out commit {commit[:12]} of {repo}: {err.stderr or err.message}",
            hint=err.hint or "fetch the commit (e.g. `git fetch --unshallow`) and try again",
        ) from None
    return dest / subdir if subdir != "." else dest


def _listed_files(workspace: Path) -> list[str]:
    """Files git would consider part of the project (tracked + untracked, not ignored)."""
    listed = ls_files(workspace)
    if listed is not None and not is_ignored(workspace):
        return listed
    out = []
    for dirpath, dirnames, filenames in os.walk(workspace):
        dirnames[:] = [d for d in dirnames if d not in (STATE_DIR, ".git")]
        for name in filenames:
            out.append(os.path.relpath(os.path.join(dirpath, name), workspace))
    return out


def _copy_workspace(workspace: Path, dest: Path, record: RunRecord) -> Path:
    outputs = list(record.outputs)
    for rel in _listed_files(workspace):
        if any(rel == o or rel.startswith(o + "/") for o in outputs):
            continue  # outputs are what we re-create
        src = workspace / rel
        if src.is_file():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    dest.mkdir(parents=True, exist_ok=True)
    return dest


def _bring_missing_inputs(workspace: Path, scratch: Path, record: RunRecord) -> None:
    """Copy recorded inputs that the checkout lacks (data kept out of git) from the workspace.

    Whatever is copied is checked against the record's hashes afterwards."""
    named = [record.config.get("path", "mlops.yaml"), record.params.get("file"),
             (record.env.get("lock") or {}).get("path")]
    for rel in [*filter(None, named), *(d for d in record.data if not d.startswith("data:"))]:
        if not (scratch / rel).exists() and (workspace / rel).exists():
            src = workspace / rel
            if src.is_dir():
                shutil.copytree(src, scratch / rel)
            else:
                (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, scratch / rel)


def _materialize_datasets(workspace: Path, scratch: Path, record: RunRecord,
                          cache: ContentCache, open_store: StoreOpener | None) -> None:
    """Pin each recorded dataset version in the scratch workspace (its pointer as the run saw
    it) and put exactly that version in place: from the workspace's cache, fetched first (and
    verified) from its source URL or the recorded remote when the cache lacks it."""
    from gha_mlops.data.pointer import Dataset, write_pointer

    hasher = Hasher(scratch, StatCache(None))
    for name, entry in (record.datasets or {}).items():
        ds = Dataset(name=name, path=entry["path"], pointer=entry["pointer"],
                     version=entry["version"], files=entry["files"], size=entry["size"],
                     source=entry.get("source"))
        write_pointer(scratch, ds)
        if hasher.hash_path(ds.path) == ds.version:
            continue
        if not cache.has(ds.version):
            _fetch_recorded(workspace, ds, entry.get("remote"), record.id, open_store)
        cache.checkout(ds.version, scratch / ds.path)


def _fetch_recorded(workspace: Path, ds: Any, remote_entry: Mapping[str, Any] | None,
                    run_id: str, open_store: StoreOpener | None) -> None:
    from gha_mlops.config.model import Remote
    from gha_mlops.data.service import Workspace, fetch

    remote = None
    if not (ds.source and not ds.is_tree):
        if not remote_entry:
            raise ReproductionError(
                f"dataset {ds.name!r} version {ds.version[:12]} that run {run_id} used is "
                "not in the local cache, and the run recorded no remote to fetch it from",
                hint=f"fetch it where it is kept: gha-mlops data pull {ds.name} (with the "
                "pointer at that version), then reproduce again")
        remote = Remote(**remote_entry)
    try:
        fetch(Workspace(workspace), [ds], remote, opener=open_store)
    except GhaMlopsError as err:
        where = f"remote {remote.name} ({remote.url})" if remote else ds.source
        raise ReproductionError(
            f"dataset {ds.name!r} version {ds.version[:12]} that run {run_id} used could not "
            f"be fetched from {where}: {err.message}",
            hint=err.hint or "make that version available on the remote (push it from a "
            "machine whose cache holds it), then reproduce again") from None


def _check_inputs(scratch: Path, record: RunRecord, cache: ContentCache) -> None:
    problems: list[str] = []
    differing = 0
    checks: list[tuple[str, str | None]] = []
    config = record.config
    checks.append((config.get("path", "mlops.yaml"), config.get("sha256")))
    params = record.params
    if params.get("sha256"):
        checks.append((params["file"], params["sha256"]))
    lock = record.env.get("lock")
    if lock:
        checks.append((lock["path"], lock["sha256"]))
    checks.extend((k, v) for k, v in record.data.items() if not k.startswith("data:"))
    checks.extend((ds["path"], ds["version"]) for ds in (record.datasets or {}).values())
    hasher = Hasher(scratch, StatCache(None))
    for rel, expected in checks:
        if expected is None:
            continue
        got = hasher.hash_path(rel)
        if got == expected:
            continue
        differing += 1
        problems.append(f"{rel}: recorded {expected[:16]}, "
                        f"{'now ' + got[:16] if got else 'missing'}")
        old = cache.manifest_if_known(expected) if is_tree(expected) else None
        if old is not None and got is not None and is_tree(got):
            before = {e["path"]: e["sha256"] for e in old}
            after = {e["path"]: e["sha256"]
                     for e in json.loads(hasher.manifests[got])}
            for name in sorted(set(before) | set(after)):
                if before.get(name) != after.get(name):
                    state = ("added" if name not in before else
                             "removed" if name not in after else "changed")
                    problems.append(f"  {rel}/{name}: {state}")
    if problems:
        raise ReproductionError(
            f"the inputs of run {record.id} are not available as recorded: "
            f"{differing} differ",
            hint="restore the files the run used (e.g. `git checkout` the data or code), "
            "then reproduce again",
            notes=problems)


def _compare(record: RunRecord, rep: Reproduction) -> None:
    assert rep.result is not None
    new = RunRecord.from_json(rep.result.record)
    for path, entry in record.outputs.items():
        rep.compared_outputs += 1
        other = new.outputs.get(path)
        got = other.sha256 if other else None
        if got == entry.sha256:
            continue
        rep.differences.append(Difference("output", path, entry.sha256, got))
        if entry.is_tree and other and other.files is not None:
            a, b = entry.files or {}, other.files
            for name in sorted(set(a) | set(b)):
                if a.get(name) != b.get(name):
                    rep.differences.append(
                        Difference("file", f"{path}/{name}", a.get(name), b.get(name)))
    for file, values in record.metrics.items():
        for key, value in values.items():
            rep.compared_metrics += 1
            got = new.metrics.get(file, {}).get(key)
            if got != value:
                rep.differences.append(Difference("metric", f"{file}:{key}", value, got))
