"""What the run ran on: interpreter, OS, CPU, installed packages, git state, relevant variables.

GPU, CUDA, cuDNN and the determinism flags are reported by the stage processes themselves
(:mod:`gha_mlops.train` writes them), because only a process that imported torch knows them.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gha_mlops import git
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
    # Which CPU kernels the libraries pick (see gha_mlops.train.portable).
    "GHA_MLOPS_DETERMINISM", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA",
    "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "NPY_ENABLE_CPU_FEATURES", "NPY_DISABLE_CPU_FEATURES",
    "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
)


def recorded_variables(environ: Mapping[str, str]) -> dict[str, str]:
    return {k: environ[k] for k in _RECORDED_VARS if k in environ and not looks_secret_name(k)}


def installed_packages(cache_dir: Path | None) -> dict[str, str]:
    """``{normalized name: version}`` of the running interpreter's distributions (cached)."""
    packages: dict[str, str] = _interpreter_facts(cache_dir)["packages"]
    return packages


def system_info(cache_dir: Path | None = None) -> dict[str, Any]:
    """Python, OS and CPU facts (cached: ``platform`` reads the interpreter binary, and the
    CPU facts come from ``/proc/cpuinfo``, read once per boot; see :func:`cpu_facts`)."""
    info: dict[str, Any] = _interpreter_facts(cache_dir)["system"]
    return info


def _interpreter_facts(cache_dir: Path | None) -> dict[str, Any]:
    """``{normalized name: version}`` of the running interpreter's distributions.

    Listing distributions costs tens of milliseconds; the result is cached, keyed by the
    interpreter and the modification times of its site-packages directories (installing,
    upgrading or removing a package adds or removes a ``*.dist-info`` entry there).
    """
    # The boot id changes when the machine restarts, the only time its CPU can change (a VM
    # moved to another host restarts too), so the cached CPU facts go with it.
    key_src = [sys.executable, sys.version, *os.uname(), _boot_id()]
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


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return ""


def _normalize(name: str) -> str:
    return "-".join(name.replace("_", "-").replace(".", "-").lower().split())


# The instruction sets that decide which kernels torch, oneDNN, MKL, numpy and OpenBLAS pick:
# recorded so that `reproduce` can tell, before running, that another CPU will pick others.
X86_FLAGS = frozenset({
    "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
    "avx512dq", "avx512cd", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx512ifma",
    "avx512vbmi", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16",
})
ARM_FLAGS = frozenset({
    "asimd", "asimdhp", "asimddp", "asimdfhm", "fphp", "sve", "sve2", "bf16", "i8mm", "sme",
})
_CPUINFO = Path("/proc/cpuinfo")
_CPUINFO_MAX_LINES = 200  # the first processor's block is ~30 lines; never read a whole big box


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """The facts of the first processor in ``/proc/cpuinfo`` text that decide kernels (pure).

    Returns ``model`` (the model name), ``vendor``, ``family``, ``model_id``, ``stepping``
    (on x86; on ARM the implementer, architecture, part and variant/revision stand in) and
    ``flags``: the sorted instruction-set flags of :data:`X86_FLAGS` / :data:`ARM_FLAGS`
    present. Keys the text lacks are None (``flags`` an empty list).
    """
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the end of the first processor's block
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    arm = "cpu implementer" in fields
    flag_text = fields.get("features" if arm else "flags", "")
    wanted = ARM_FLAGS if arm else X86_FLAGS
    stepping = fields.get("stepping")
    if arm and ("cpu variant" in fields or "cpu revision" in fields):
        stepping = f"{fields.get('cpu variant', '?')}/{fields.get('cpu revision', '?')}"
    return {
        "model": fields.get("model name") or fields.get("cpu model") or fields.get("model"),
        "vendor": fields.get("cpu implementer" if arm else "vendor_id"),
        "family": fields.get("cpu architecture" if arm else "cpu family"),
        "model_id": fields.get("cpu part" if arm else "model"),
        "stepping": stepping,
        "flags": sorted(set(flag_text.split()) & wanted),
    }


def _read_cpuinfo() -> str:
    """The first lines of ``/proc/cpuinfo`` (enough for the first processor), or ""."""
    lines: list[str] = []
    try:
        with _CPUINFO.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.strip() and lines:
                    break
                lines.append(line)
                if len(lines) >= _CPUINFO_MAX_LINES:
                    break
    except OSError:
        return ""
    return "".join(lines)


def cpu_facts() -> dict[str, Any]:
    """This machine's CPU: :func:`parse_cpuinfo` of ``/proc/cpuinfo`` plus ``machine`` and
    ``count``. Reads the file each call: use :func:`system_info`, which caches it."""
    facts = parse_cpuinfo(_read_cpuinfo())
    if not facts["model"]:
        # ARM kernels often print no model name; macOS and others have no /proc/cpuinfo.
        facts["model"] = platform.processor() or platform.machine()
    return {**facts, "count": os.cpu_count(), "machine": platform.machine()}


def cpu_model() -> str:
    """The CPU's model name (``model name`` of ``/proc/cpuinfo``), else what platform says."""
    model: str = cpu_facts()["model"]
    return model


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
        "cpu": cpu_facts(),
    }


def git_info(workspace: Path) -> dict[str, Any] | None:
    """Commit, branch, dirty flag and repository root of ``workspace``; None outside git.

    One ``git status --porcelain=v2 --branch`` call gives all of it. Files git ignores do not
    make the tree dirty; untracked files do, since a stage may read them. No git process is
    started outside a repository, and ``status`` (which reads the whole work tree) is not run
    for a workspace its repository ignores.
    """
    top = git.toplevel(workspace)
    if top is None:
        return None
    try:
        # In a repository that ignores this directory its files are in no commit, so naming
        # one would mislead `reproduce`.
        if git.is_ignored(workspace):
            return None
        found = git.status(workspace)
        if found is None:
            return None
    except git.GitError:  # a git that hangs: the record goes without git facts
        return None
    commit, branch, changed = found.commit, found.branch, found.changed
    subdir = os.path.relpath(workspace.resolve(), top)
    return {
        "commit": commit,
        "branch": branch,
        "dirty": bool(changed) or commit is None,
        "changed": list(changed[:50]),
        "root": str(top),
        "subdir": subdir.replace(os.sep, "/"),
    }
