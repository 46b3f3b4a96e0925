"""Portable determinism: every CPU kernel dispatcher pinned to a level all machines of the
architecture have, so that the same script gives the same bytes on any of them.

Each library picks its kernels from the CPU's instruction sets when it first needs them:
torch's ATen (``DEFAULT``/``AVX2``/``AVX512``), oneDNN (convolutions, SSE4.1 up to AMX), MKL
(matrix products), numpy's SIMD loops and OpenBLAS. Each choice changes the order of float
operations, so the demo trains three different models at ``default``, ``avx2`` and ``avx512``.
Portable mode asks each for its baseline through the environment variables it reads, and
fixes the thread counts, since a float sum split over another number of threads rounds
differently. The variables are read once, when each library loads or first dispatches, so
they must be in place before ``import torch`` (which imports numpy): call :func:`portable`
first thing in a stage script, or have the engine start the stage with
:func:`portable_environment` applied.
"""

from __future__ import annotations

import ctypes
import glob
import os
import platform
import sys
from collections.abc import Mapping
from typing import Any

from gha_mlops.errors import ConfigError
from gha_mlops.train._imports import optional, required

# Set by portable mode next to the pins: the stage report says "portable" only when it is
# there and every pin still holds.
MODE_ENV = "GHA_MLOPS_DETERMINISM"
MODE_PORTABLE = "portable"
# The opt-out: GHA_MLOPS_DETERMINISM=native makes portable() leave the dispatch as it finds
# it (to measure what portable mode costs, or to train at full speed where reproducing on
# other machines does not matter); recorded like any other dispatch variable.
MODE_NATIVE = "native"

# The baseline of each architecture. x86-64: SSE4.2 is the level every x86-64 CPU sold in
# the last fifteen years has (numpy 2's own baseline, x86-64-v2); aarch64: Advanced SIMD
# (NEON), which every ARMv8-A core has. MKL only exists on x86-64.
_PINS: dict[str, dict[str, str]] = {
    "x86_64": {
        "ATEN_CPU_CAPABILITY": "default",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        # COMPATIBLE: MKL's code path that gives the same results on every x86-64 CPU
        # (Intel or AMD); the instruction cap keeps MKL from choosing a wider one anyway.
        "MKL_CBWR": "COMPATIBLE",
        "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
        "NPY_ENABLE_CPU_FEATURES": "X86_V2",  # numpy's baseline only: no dispatched loops
        "OPENBLAS_CORETYPE": "Nehalem",
    },
    "aarch64": {
        "ATEN_CPU_CAPABILITY": "default",  # not SVE256
        "ONEDNN_MAX_CPU_ISA": "ADVANCED_SIMD",  # not SVE
        "NPY_ENABLE_CPU_FEATURES": "ASIMD",
        "OPENBLAS_CORETYPE": "ARMV8",
    },
}
_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}
# What torch reports as its capability once pinned.
PORTABLE_ATEN = "DEFAULT"
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# numpy refuses to start when both of its feature variables are set.
_CONFLICTING = ("NPY_DISABLE_CPU_FEATURES",)
# Every variable that can change which CPU kernels run: recorded as found in each stage.
DISPATCH_VARS = (
    MODE_ENV, "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_CBWR",
    "MKL_ENABLE_INSTRUCTIONS", "NPY_ENABLE_CPU_FEATURES", "NPY_DISABLE_CPU_FEATURES",
    "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", *_THREAD_VARS,
)
# Modules that read the variables when they load: once imported, it is too late.
_DISPATCHING_MODULES = ("torch", "numpy")


def normalize_machine(machine: str) -> str:
    """``platform.machine()`` as one name per architecture (``x86_64``, ``aarch64``, ...)."""
    name = machine.strip().lower()
    return _ALIASES.get(name, name)


def portable_pins(machine: str) -> dict[str, str]:
    """The dispatch variables portable mode sets on ``machine`` (threads aside).

    Raises :class:`~gha_mlops.errors.ConfigError` for an architecture with no known baseline.
    """
    arch = normalize_machine(machine)
    if arch not in _PINS:
        raise ConfigError(
            f"portable determinism knows no baseline for the {machine or 'unknown'} "
            "architecture",
            hint=f"run on {' or '.join(sorted(_PINS))}, or turn portable mode off",
        )
    return dict(_PINS[arch])


def portable_environment(environ: Mapping[str, str], *, machine: str | None = None,
                         threads: int = 1) -> dict[str, str]:
    """``environ`` as portable mode needs it to be when a stage process starts.

    A pure function: returns a new mapping with the pins of ``machine`` (default: this one),
    the thread variables set to ``threads``, ``GHA_MLOPS_DETERMINISM=portable``, and
    ``NPY_DISABLE_CPU_FEATURES`` removed. A ``OPENBLAS_CORETYPE`` already in ``environ`` is
    kept: machines set it where OpenBLAS's own choice computes wrong results, and the kept
    value is recorded, so a reproduction elsewhere is checked against it.
    """
    _check_threads(threads)
    env = {k: v for k, v in environ.items() if k not in _CONFLICTING}
    for key, value in portable_pins(machine or platform.machine()).items():
        if key == "OPENBLAS_CORETYPE" and environ.get(key):
            continue
        env[key] = value
    for key in _THREAD_VARS:
        env[key] = str(threads)
    env[MODE_ENV] = MODE_PORTABLE
    return env


def _check_threads(threads: int) -> None:
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")


def portable(threads: int = 1) -> dict[str, Any]:
    """Pin every CPU kernel dispatcher to this architecture's baseline; call before torch.

    Sets the variables of :func:`portable_environment` in this process, overriding any
    ``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``, ``MKL_*`` or ``NPY_*`` the environment
    asked for, then imports torch, fixes its intra- and inter-op threads to ``threads``,
    turns NNPACK off (it picks its kernels from the CPU and has no switch) and checks that
    torch dispatches at ``DEFAULT``. Returns the report (also merged into
    ``$GHA_MLOPS_STAGE_REPORT``): ``cpu_dispatch`` (what is in force, see
    :func:`dispatch_report`) and ``portable`` (``asked``: the pins; ``overridden``: what the
    environment had asked for instead).

    Raises :class:`~gha_mlops.errors.ConfigError` when torch or numpy was imported before a
    pin could be set (the libraries read them when they load, so it would be too late): call
    ``gha_mlops.train.portable()`` before importing torch or numpy. Re-executing the script
    instead would repeat whatever it did before the call, so this refuses rather than guess.
    When the engine already started the process with the pins, nothing needs setting and any
    import order is fine. With ``GHA_MLOPS_DETERMINISM=native`` in the environment it pins
    nothing (the opt-out) and only reports the dispatch in force.
    """
    _check_threads(threads)
    if os.environ.get(MODE_ENV) == MODE_NATIVE:
        return _native()
    wanted = portable_environment(os.environ, threads=threads)
    changes = {k: v for k, v in wanted.items() if os.environ.get(k) != v}
    removed = sorted(k for k in os.environ if k not in wanted)
    loaded = [m for m in _DISPATCHING_MODULES if m in sys.modules]
    if (changes or removed) and loaded:
        # The fix is in the message too: a stage script shows it as a traceback, hint-less.
        raise ConfigError(
            f"portable determinism was asked for after {' and '.join(loaded)} "
            f"{'were' if len(loaded) > 1 else 'was'} imported, so the CPU kernel dispatch "
            f"may already be fixed ({', '.join(sorted([*changes, *removed]))} not yet as "
            "needed): call gha_mlops.train.portable() before importing torch or numpy",
            hint="move the portable() call above the imports of torch and numpy in the "
            "script (see docs/training-helpers.md)",
        )
    overridden = {k: os.environ[k] for k in sorted([*changes, *removed]) if k in os.environ}
    for key in removed:
        del os.environ[key]
    os.environ.update(changes)
    torch = required("torch")
    _pin_torch(torch, threads)
    dispatch = dispatch_report(torch)
    if dispatch["aten_capability"] != PORTABLE_ATEN:
        raise ConfigError(
            f"torch dispatches {dispatch['aten_capability']} kernels although portable mode "
            f"pinned {PORTABLE_ATEN}: a torch kernel ran before portable() was called; call "
            "gha_mlops.train.portable() before importing torch or numpy",
            hint="call gha_mlops.train.portable() first thing in the script",
        )
    from gha_mlops.train._seeding import write_stage_report

    report = {
        "cpu_dispatch": dispatch,
        "portable": {"asked": {k: wanted[k] for k in DISPATCH_VARS if k in wanted},
                     "overridden": overridden, "threads": threads},
    }
    write_stage_report(report)
    return report


def _native() -> dict[str, Any]:
    """``GHA_MLOPS_DETERMINISM=native``: pin nothing, record what is in force."""
    from gha_mlops.train._seeding import write_stage_report

    report = {"cpu_dispatch": dispatch_report(required("torch")),
              "portable": {"skipped": f"{MODE_ENV}={MODE_NATIVE}"}}
    write_stage_report(report)
    return report


def _pin_torch(torch: Any, threads: int) -> None:
    torch.set_num_threads(threads)
    if torch.get_num_interop_threads() != threads:
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError as err:  # the inter-op pool has started: it cannot change now
            raise ConfigError(
                f"torch's inter-op thread pool already runs "
                f"{torch.get_num_interop_threads()} threads, not {threads}",
                hint="call gha_mlops.train.portable() before any torch work",
            ) from err
    torch.backends.nnpack.set_flags(False)


def dispatch_report(torch: Any) -> dict[str, Any]:
    """What decides the CPU kernels of this process, as now in force.

    ``portable`` (portable mode on and every pin holding), ``aten_capability`` (torch's
    dispatch level; asking fixes it, so call this after the pins are set), thread counts,
    ``mkldnn``/``nnpack`` switches, the dispatch ``variables`` found in the environment, the
    BLAS/oneDNN/OpenMP builds torch reports, and numpy's SIMD dispatch and OpenBLAS core.
    """
    env = {k: os.environ[k] for k in DISPATCH_VARS if k in os.environ}
    nnpack = getattr(torch._C, "_get_nnpack_enabled", None)
    report: dict[str, Any] = {
        "portable": _pins_hold(env),
        "aten_capability": str(torch.backends.cpu.get_cpu_capability()),
        "num_threads": torch.get_num_threads(),
        "num_interop_threads": torch.get_num_interop_threads(),
        "mkldnn": bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled),
        "nnpack": bool(nnpack()) if nnpack is not None else None,
        "variables": env,
        "libraries": torch_libraries(torch.__config__.show()),
    }
    report.update(numpy_dispatch())
    return report


def _pins_hold(env: Mapping[str, str]) -> bool:
    if env.get(MODE_ENV) != MODE_PORTABLE:
        return False
    try:
        pins = portable_pins(platform.machine())
    except ConfigError:
        return False
    return all(env.get(k) == v for k, v in pins.items() if k != "OPENBLAS_CORETYPE")


def torch_libraries(config: str) -> dict[str, str]:
    """The BLAS, oneDNN and OpenMP builds named in ``torch.__config__.show()`` (pure)."""
    found: dict[str, str] = {}
    for raw in config.splitlines():
        line = raw.strip().lstrip("- ").strip()
        if "Math Kernel Library Version" in line:
            found["mkl"] = line.split("Version", 1)[1].split("Product")[0].strip(" -")
        elif line.startswith(("Intel(R) MKL-DNN", "oneDNN")):
            found["onednn"] = line.split("(Git", 1)[0].split()[-1]
        elif line.startswith("OpenMP"):
            found["openmp"] = line.split("(", 1)[0].strip()
        elif "BLAS_INFO=" in line:
            found["blas"] = line.split("BLAS_INFO=", 1)[1].split(",", 1)[0]
    return found


def numpy_dispatch() -> dict[str, Any]:
    """numpy's SIMD levels in force and the OpenBLAS core it runs, as far as it tells.

    Empty when numpy is not installed. The OpenBLAS core is read from the library numpy
    ships (``numpy.libs``), the same way threadpoolctl does, without needing it.
    """
    np = optional("numpy")
    if np is None:
        return {}
    # numpy >= 2 keeps its C core in numpy._core, numpy 1 in numpy.core.
    umath = (optional("numpy._core._multiarray_umath")
             or optional("numpy.core._multiarray_umath"))
    features = getattr(umath, "__cpu_features__", {}) or {}
    dispatch = getattr(umath, "__cpu_dispatch__", []) or []
    out: dict[str, Any] = {"numpy": {
        "version": np.__version__,
        "simd_baseline": list(getattr(umath, "__cpu_baseline__", []) or []),
        "simd_dispatch": [f for f in dispatch if features.get(f)],
    }}
    openblas = _openblas_info(os.path.dirname(np.__file__))
    if openblas:
        out["numpy"]["openblas"] = openblas
    return out


def _openblas_info(numpy_dir: str) -> dict[str, str] | None:
    for lib in sorted(glob.glob(os.path.join(numpy_dir, os.pardir, "numpy.libs", "*openblas*"))):
        try:
            handle = ctypes.CDLL(lib)
        except OSError:
            continue
        info: dict[str, str] = {}
        for key, suffixes in (("coretype", ("get_corename64_", "get_corename")),
                              ("config", ("get_config64_", "get_config"))):
            for prefix in ("scipy_openblas_", "openblas_"):
                for suffix in suffixes:
                    func = getattr(handle, prefix + suffix, None)
                    if func is not None:
                        func.restype = ctypes.c_char_p
                        value = func()
                        info[key] = value.decode("ascii", "replace").strip() if value else ""
                        break
                if key in info:
                    break
        if info:
            return info
    return None
