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
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gha_mlops.config import STATE_DIR, load_pipeline
from gha_mlops.errors import (
    EnvironmentDriftError,
    GhaMlopsError,
    ReproductionError,
    UsageError,
)
from gha_mlops.pipeline.cache import ContentCache
from gha_mlops.pipeline.engine import Reporter, RunOptions, RunResult, run_pipeline
from gha_mlops.pipeline.environment import ignored_by_git, installed_packages, system_info
from gha_mlops.pipeline.hashing import Hasher, StatCache, is_tree

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
    run_id: str
    workspace: Path
    method: str  # "git-worktree" or "copy"
    result: RunResult | None = None
    differences: list[Difference] = field(default_factory=list)
    compared_outputs: int = 0
    compared_metrics: int = 0
    env_drift: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.differences


def environment_drift(record: Mapping[str, Any], packages: Mapping[str, str],
                      system: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between the recorded and the current environment."""
    drift = []
    env = record.get("env") or {}
    rec_py = (env.get("python") or {}).get("version")
    if rec_py and rec_py != system["python"]["version"]:
        drift.append(f"python: recorded {rec_py}, now {system['python']['version']}")
    rec_machine = (env.get("cpu") or {}).get("machine")
    if rec_machine and rec_machine != system["cpu"]["machine"]:
        drift.append(f"machine: recorded {rec_machine}, now {system['cpu']['machine']}")
    recorded = env.get("packages") or {}
    for name in sorted(set(recorded) | set(packages)):
        if name in _IGNORED_PACKAGES:
            continue
        a, b = recorded.get(name), packages.get(name)
        if a != b:
            drift.append(f"{name}: recorded {a or 'not installed'}, now {b or 'not installed'}")
    return drift


def reproduce_run(record: Mapping[str, Any], workspace: Path, *, environ: Mapping[str, str],
                  allow_env_drift: bool = False, keep: bool = False, jobs: int = 1,
                  reporter: Reporter | None = None) -> Reproduction:
    """Reproduce ``record`` (a run of ``workspace``) and return the comparison.

    Raises :class:`EnvironmentDriftError` when the environment differs and drift is not
    allowed, and :class:`ReproductionError` when the recorded inputs are not available.
    """
    if record.get("kind", "run") != "run":
        raise ReproductionError(f"{record['id']} is a reproduction record, not a run",
                                hint="reproduce the run it names instead")
    if record.get("status") != "succeeded":
        raise ReproductionError(
            f"run {record['id']} did not succeed ({record.get('status')}): "
            "there are no complete results to reproduce",
            hint="pick a successful run from `gha-mlops runs list`")
    facts_cache = workspace / STATE_DIR / "tmp"
    drift = environment_drift(record, installed_packages(facts_cache), system_info(facts_cache))
    if drift and not allow_env_drift:
        raise EnvironmentDriftError(
            f"the environment differs from the one run {record['id']} used, so bit-identical "
            "results are not expected",
            hint="install the recorded versions (see `gha-mlops runs show RUN --json`, "
            "env.packages), or pass --allow-env-drift to compare anyway",
            notes=drift[:30] + ([f"... and {len(drift) - 30} more"] if len(drift) > 30 else []))

    scratch_root = Path(tempfile.mkdtemp(prefix=f"gha-mlops-reproduce-{record['id']}-"))
    git = record.get("git") or {}
    worktree_repo: Path | None = None
    try:
        if git.get("commit") and not git.get("dirty") and git.get("root"):
            worktree_repo = Path(git["root"])
            scratch = _git_worktree(worktree_repo, git["commit"], scratch_root / "tree",
                                    git.get("subdir") or ".")
            method = "git-worktree"
        else:
            scratch = _copy_workspace(workspace, scratch_root / "tree", record)
            method = "copy"
        rep = Reproduction(run_id=record["id"], workspace=scratch, method=method,
                           env_drift=drift)
        cache = ContentCache(workspace / STATE_DIR / "cache")
        _bring_missing_inputs(workspace, scratch, record)
        _materialize_datasets(workspace, scratch, record, cache)
        _check_inputs(scratch, record, cache)

        config = scratch / (record.get("config") or {}).get("path", "mlops.yaml")
        # A sweep leg ran with `--set` overrides: the same values, in the same order.
        overrides = (record.get("params") or {}).get("overrides") or {}
        try:
            pipeline = load_pipeline(config, overrides=overrides)
        except UsageError as err:  # only overrides make a load a usage error
            raise ReproductionError(
                f"the params overrides of run {record['id']} do not apply to its params file: "
                f"{err.message}", hint=err.hint) from None
        stages = tuple(s["name"] for s in record.get("stages", []))
        rep.result = run_pipeline(
            pipeline,
            RunOptions(environ=environ, force=True, targets=stages, jobs=jobs,
                       kind="reproduction", extra={"reproduces": record["id"]}),
            reporter,
        )
        _compare(record, rep)
        return rep
    finally:
        if not keep:
            if worktree_repo is not None:
                subprocess.run(["git", "worktree", "remove", "--force",
                                str(scratch_root / "tree")], cwd=worktree_repo,
                               capture_output=True, check=False)
            shutil.rmtree(scratch_root, ignore_errors=True)


def _git_worktree(repo: Path, commit: str, dest: Path, subdir: str) -> Path:
    proc = subprocess.run(["git", "worktree", "add", "--detach", str(dest), commit],
                          cwd=repo, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ReproductionError(
            f"cannot check out commit {commit[:12]} of {repo}: {proc.stderr.strip()}",
            hint="fetch the commit (e.g. `git fetch --unshallow`) and try again")
    return dest / subdir if subdir != "." else dest


def _listed_files(workspace: Path) -> list[str]:
    """Files git would consider part of the project (tracked + untracked, not ignored)."""
    proc = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                          cwd=workspace, capture_output=True, check=False)
    if proc.returncode == 0 and not ignored_by_git(workspace):
        return [p for p in proc.stdout.decode().split("\0") if p]
    out = []
    for dirpath, dirnames, filenames in os.walk(workspace):
        dirnames[:] = [d for d in dirnames if d not in (STATE_DIR, ".git")]
        for name in filenames:
            out.append(os.path.relpath(os.path.join(dirpath, name), workspace))
    return out


def _copy_workspace(workspace: Path, dest: Path, record: Mapping[str, Any]) -> Path:
    outputs = list((record.get("outputs") or {}).keys())
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


def _bring_missing_inputs(workspace: Path, scratch: Path, record: Mapping[str, Any]) -> None:
    """Copy recorded inputs that the checkout lacks (data kept out of git) from the workspace.

    Whatever is copied is checked against the record's hashes afterwards."""
    named = [(record.get("config") or {}).get("path", "mlops.yaml"),
             (record.get("params") or {}).get("file"),
             ((record.get("env") or {}).get("lock") or {}).get("path")]
    for rel in [*filter(None, named), *(d for d in record.get("data") or {}
                                        if not d.startswith("data:"))]:
        if not (scratch / rel).exists() and (workspace / rel).exists():
            src = workspace / rel
            if src.is_dir():
                shutil.copytree(src, scratch / rel)
            else:
                (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, scratch / rel)


def _materialize_datasets(workspace: Path, scratch: Path, record: Mapping[str, Any],
                          cache: ContentCache) -> None:
    """Pin each recorded dataset version in the scratch workspace (its pointer as the run saw
    it) and put exactly that version in place: from the workspace's cache, fetched first (and
    verified) from its source URL or the recorded remote when the cache lacks it."""
    from gha_mlops.data.pointer import Dataset, write_pointer

    hasher = Hasher(scratch, StatCache(None))
    for name, entry in (record.get("datasets") or {}).items():
        ds = Dataset(name=name, path=entry["path"], pointer=entry["pointer"],
                     version=entry["version"], files=entry["files"], size=entry["size"],
                     source=entry.get("source"))
        write_pointer(scratch, ds)
        if hasher.hash_path(ds.path) == ds.version:
            continue
        if not cache.has(ds.version):
            _fetch_recorded(workspace, ds, entry.get("remote"), record["id"])
        cache.checkout(ds.version, scratch / ds.path)


def _fetch_recorded(workspace: Path, ds: Any, remote_entry: Mapping[str, Any] | None,
                    run_id: str) -> None:
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
        fetch(Workspace(workspace), [ds], remote)
    except GhaMlopsError as err:
        where = f"remote {remote.name} ({remote.url})" if remote else ds.source
        raise ReproductionError(
            f"dataset {ds.name!r} version {ds.version[:12]} that run {run_id} used could not "
            f"be fetched from {where}: {err.message}",
            hint=err.hint or "make that version available on the remote (push it from a "
            "machine whose cache holds it), then reproduce again") from None


def _check_inputs(scratch: Path, record: Mapping[str, Any], cache: ContentCache) -> None:
    problems: list[str] = []
    differing = 0
    checks: list[tuple[str, str | None]] = []
    config = record.get("config") or {}
    checks.append((config.get("path", "mlops.yaml"), config.get("sha256")))
    params = record.get("params") or {}
    if params.get("sha256"):
        checks.append((params["file"], params["sha256"]))
    lock = (record.get("env") or {}).get("lock")
    if lock:
        checks.append((lock["path"], lock["sha256"]))
    checks.extend((k, v) for k, v in (record.get("data") or {}).items()
                  if not k.startswith("data:"))
    checks.extend((ds["path"], ds["version"]) for ds in (record.get("datasets") or {}).values())
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
            f"the inputs of run {record['id']} are not available as recorded: "
            f"{differing} differ",
            hint="restore the files the run used (e.g. `git checkout` the data or code), "
            "then reproduce again",
            notes=problems)


def _compare(record: Mapping[str, Any], rep: Reproduction) -> None:
    assert rep.result is not None
    new = rep.result.record
    for path, entry in (record.get("outputs") or {}).items():
        rep.compared_outputs += 1
        other = (new.get("outputs") or {}).get(path)
        got = other["sha256"] if other else None
        if got == entry["sha256"]:
            continue
        rep.differences.append(Difference("output", path, entry["sha256"], got))
        if is_tree(entry["sha256"]) and other and "files" in other:
            a, b = entry.get("files", {}), other["files"]
            for name in sorted(set(a) | set(b)):
                if a.get(name) != b.get(name):
                    rep.differences.append(
                        Difference("file", f"{path}/{name}", a.get(name), b.get(name)))
    rec_metrics = record.get("metrics") or {}
    new_metrics = new.get("metrics") or {}
    for file, values in rec_metrics.items():
        for key, value in values.items():
            rep.compared_metrics += 1
            got = (new_metrics.get(file) or {}).get(key)
            if got != value:
                rep.differences.append(Difference("metric", f"{file}:{key}", value, got))
