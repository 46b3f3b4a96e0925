"""What the run ran on: interpreter, OS, CPU, installed packages, git state, relevant variables.

GPU, CUDA, cuDNN and the determinism flags are reported by the stage processes themselves
(:mod:`gha_mlops.train` writes them), because only a process that imported torch knows them.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gha_mlops._fs import atomic_write_json
from gha_mlops.pipeline.secrets import looks_secret_name

# Variables that can change a result or identify where it ran. Anything secret-named is
# dropped even when it matches.
_RECORDED_VARS = (
    "CI", "GITHUB_ACTIONS", "GITHUB_EVENT_NAME", "GHA_MLOPS_REASON", "GITHUB_REPOSITORY", "GITHUB_SHA", "GITHUB_REF", "GITHUB_RUN_ID",
    "GITHUB_RUN_ATTEMPT", "GITHUB_WORKFLOW", "GITHUB_JOB", "RUNNER_OS", "RUNNER_ARCH",
    "RUNNER_NAME", "PYTHONHASHSEED", "CUBLAS_WORKSPACE_CONFIG", "CUDA_VISIBLE_DEVICES",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_DETERMINISTIC_OPS",
    "NVIDIA_TF32_OVERRIDE", "TORCH_DETERMINISTIC", "SOURCE_DATE_EPOCH", "TZ", "LANG", "LC_ALL",
)


def recorded_variables(environ: Mapping[str, str]) -> dict[str, str]:
    return {k: environ[k] for k in _RECORDED_VARS if k in environ and not looks_secret_name(k)}


def installed_packages(cache_dir: Path | None) -> dict[str, str]:
    """``{normalized name: version}`` of the running interpreter's distributions (cached)."""
    packages: dict[str, str] = _interpreter_facts(cache_dir)["packages"]
    return packages


def system_info(cache_dir: Path | None = None) -> dict[str, Any]:
    """Python, OS and CPU facts (cached: ``platform`` reads the interpreter binary)."""
    info: dict[str, Any] = _interpreter_facts(cache_dir)["system"]
    return info


def _interpreter_facts(cache_dir: Path | None) -> dict[str, Any]:
    """``{normalized name: version}`` of the running interpreter's distributions.

    Listing distributions costs tens of milliseconds; the result is cached, keyed by the
    interpreter and the modification times of its site-packages directories (installing,
    upgrading or removing a package adds or removes a ``*.dist-info`` entry there).
    """
    key_src = [sys.executable, sys.version, *os.uname()]
    for entry in sys.path:
        if not entry.endswith(("site-packages", "dist-packages")):
            continue
        try:
            key_src.append(f"{entry}:{os.stat(entry or '.').st_mtime_ns}")
        except OSError:
            key_src.append(f"{entry}:-")
    key = hashlib.sha256("\0".join(key_src).encode()).hexdigest()
    cache_file = cache_dir / f"packages-{key[:16]}.json" if cache_dir else None
    if cache_file is not None:
        try:
            data = json.loads(cache_file.read_bytes())
            if data.get("key") == key and "system" in data:
                return data  # type: ignore[no-any-return]
        except (OSError, ValueError, KeyError):
            pass
    from importlib import metadata

    packages: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            packages[_normalize(name)] = dist.version
    facts = {"key": key, "packages": dict(sorted(packages.items())), "system": _system()}
    if cache_file is not None:
        for old in cache_file.parent.glob("packages-*.json"):
            old.unlink(missing_ok=True)
        atomic_write_json(cache_file, facts)
    return facts


def _normalize(name: str) -> str:
    return "-".join(name.replace("_", "-").replace(".", "-").lower().split())


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith(("model name", "Model", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _system() -> dict[str, Any]:
    libc = platform.libc_ver()
    return {
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "os": {
            "system": platform.system(),
            "release": platform.release(),
            "platform": platform.platform(),
            "libc": "-".join(x for x in libc if x) or None,
        },
        "cpu": {"model": cpu_model(), "count": os.cpu_count(), "machine": platform.machine()},
    }


def _git_toplevel(workspace: Path) -> Path | None:
    """The nearest directory holding ``.git`` (a directory, or a file for worktrees and
    submodules): what ``git rev-parse --show-toplevel`` says, without another process."""
    here = workspace.resolve()
    for candidate in (here, *here.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


def ignored_by_git(workspace: Path) -> bool:
    """True when ``workspace`` lies in a git repository that ignores it."""
    proc = subprocess.run(["git", "check-ignore", "-q", "."], cwd=workspace,
                          capture_output=True, check=False)
    return proc.returncode == 0


def git_info(workspace: Path) -> dict[str, Any] | None:
    """Commit, branch, dirty flag and repository root of ``workspace``; None outside git.

    One ``git status --porcelain=v2 --branch`` call gives all of it. Files git ignores do not
    make the tree dirty; untracked files do, since a stage may read them.
    """
    try:
        proc = subprocess.run(
            ["git", "status", "--porcelain=v2", "--branch", "--untracked-files=normal"],
            cwd=workspace, capture_output=True, text=True, timeout=60, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0 or ignored_by_git(workspace):
        # Outside git, or in a repository that ignores this directory (its files are then
        # in no commit, so naming one would mislead `reproduce`).
        return None
    commit = branch = None
    changed: list[str] = []
    for line in proc.stdout.splitlines():
        if line.startswith("# branch.oid "):
            oid = line.split(" ", 2)[2]
            commit = None if oid == "(initial)" else oid
        elif line.startswith("# branch.head "):
            head = line.split(" ", 2)[2]
            branch = None if head == "(detached)" else head
        elif line and not line.startswith("#"):
            changed.append(line.rsplit(" ", 1)[-1] if line[0] in "12" else line[2:])
    top = _git_toplevel(workspace)
    subdir = os.path.relpath(workspace.resolve(), top) if top else "."
    return {
        "commit": commit,
        "branch": branch,
        "dirty": bool(changed) or commit is None,
        "changed": changed[:50],
        "root": str(top) if top else None,
        "subdir": subdir.replace(os.sep, "/"),
    }
