"""Seeds, determinism switches and the report that tells the run record what was in force."""

from __future__ import annotations

import json
import os
import platform
import random
import sys
import warnings
from pathlib import Path
from typing import Any

from gha_mlops.errors import ConfigError
from gha_mlops.train._atomic import atomic_write_text
from gha_mlops.train._imports import optional, required
from gha_mlops.train._portable import dispatch_report

SEED_ENV = "GHA_MLOPS_SEED"
REPORT_ENV = "GHA_MLOPS_STAGE_REPORT"
DEFAULT_SEED = 0
# cuBLAS needs a fixed workspace to be deterministic; it reads this when CUDA starts.
CUBLAS_WORKSPACE_CONFIG = ":4096:8"
_MAX_SEED = 2**32  # numpy's legacy seeding accepts [0, 2**32)


def resolve_seed(seed: int | None = None) -> int:
    """The seed to use: ``seed`` if given, else ``$GHA_MLOPS_SEED``, else 0.

    Raises :class:`~gha_mlops.errors.ConfigError` if the variable is not an integer and
    ``ValueError`` if the seed is outside ``[0, 2**32)``.
    """
    if seed is None:
        raw = os.environ.get(SEED_ENV, "").strip()
        if not raw:
            return DEFAULT_SEED
        try:
            seed = int(raw)
        except ValueError as err:
            raise ConfigError(
                f"{SEED_ENV}={raw!r} is not an integer",
                hint=f"set {SEED_ENV} to a whole number in [0, {_MAX_SEED}), or unset it",
            ) from err
    if isinstance(seed, bool) or not 0 <= seed < _MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, {_MAX_SEED}), got {seed!r}")
    return seed


def seed_everything(seed: int | None = None) -> dict[str, Any]:
    """Seed Python's ``random``, numpy's global RNG and torch (CPU and every GPU).

    The seed is ``seed`` if given, else ``$GHA_MLOPS_SEED`` (set by ``gha-mlops run``), else 0.
    numpy and torch are seeded only if installed. Returns ``{"seed": int, "seeded": [names]}``.
    """
    value = resolve_seed(seed)
    seeded = ["random"]
    random.seed(value)
    np = optional("numpy")
    if np is not None:
        np.random.seed(value)
        seeded.append("numpy")
    torch = optional("torch")
    if torch is not None:
        torch.manual_seed(value)
        torch.cuda.manual_seed_all(value)  # a no-op without CUDA; lazy, so it starts nothing
        seeded.append("torch")
    return {"seed": value, "seeded": seeded}


def deterministic(seed: int | None = None, *, threads: int | None = None) -> dict[str, Any]:
    """Make this process's torch work repeatable, and report the settings in force.

    Seeds everything (:func:`seed_everything`), turns on
    ``torch.use_deterministic_algorithms(True)`` (an op with no deterministic implementation
    then raises instead of silently varying), sets ``cudnn.deterministic`` and turns off
    ``cudnn.benchmark``, sets ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` unless already set (call this
    before any CUDA work: cuBLAS reads it once), and pins ``torch.set_num_threads(threads)`` if
    given: float sums are split per thread, so a different thread count can change the last
    bits of a result.

    Returns a JSON-able report: ``seed``, ``seeded`` (the RNGs seeded), ``python``,
    ``machine``, ``numpy``, ``torch``, ``cuda`` and ``cudnn`` (versions, None without CUDA),
    ``gpus`` (device names), ``num_threads``, ``determinism`` (the flags in force:
    ``use_deterministic_algorithms``, ``cudnn_deterministic``, ``cudnn_benchmark``) and
    ``cublas_workspace_config`` and ``cpu_dispatch`` (the CPU kernel dispatch in force,
    whether :func:`~gha_mlops.train.portable` pinned it; see
    :func:`~gha_mlops.train.dispatch_report`). If ``$GHA_MLOPS_STAGE_REPORT`` is
    set (``gha-mlops run`` sets it for each stage) the report is merged into the JSON object
    in that file, which the engine copies into the run record.
    """
    if threads is not None and (isinstance(threads, bool) or threads < 1):
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    # Before importing torch, so that even a CUDA context made at import sees it.
    cublas_was_set = "CUBLAS_WORKSPACE_CONFIG" in os.environ
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG)
    torch = required("torch")
    if not cublas_was_set and torch.cuda.is_initialized():
        warnings.warn(
            "CUDA was initialised before deterministic() set CUBLAS_WORKSPACE_CONFIG; "
            "call deterministic() first thing in the script",
            RuntimeWarning,
            stacklevel=2,
        )
    seeded = seed_everything(seed)
    _use_deterministic_algorithms(torch)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    if threads is not None:
        torch.set_num_threads(threads)
    report = _environment_report(torch)
    report.update(seeded)
    write_stage_report(report)
    return report


def _use_deterministic_algorithms(torch: Any) -> None:
    """``torch.use_deterministic_algorithms(True)``, without its 1.5 s import when possible.

    The public function imports ``torch._inductor.config`` (over a second per stage, longer
    than a small model trains) only to set ``deterministic`` there. Unless something has
    already imported it, the same setting is made through the environment variable that
    config reads when it is first imported, and only the switch itself is flipped now.
    """
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if "torch._inductor.config" in sys.modules or setter is None:
        torch.use_deterministic_algorithms(True)
        return
    os.environ["TORCHINDUCTOR_DETERMINISTIC"] = "1"
    setter(True, warn_only=False)


def _environment_report(torch: Any) -> dict[str, Any]:
    """What decides whether two runs can be bit-identical: versions, hardware, flags."""
    np = optional("numpy")
    cudnn = torch.backends.cudnn
    gpus: list[str] = []
    if torch.cuda.is_available():
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "numpy": None if np is None else np.__version__,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": cudnn.version() if cudnn.is_available() else None,
        "gpus": gpus,
        "num_threads": torch.get_num_threads(),
        "determinism": {
            "use_deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        },
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        # The CPU kernels in force: what `reproduce` compares before it runs anything.
        "cpu_dispatch": dispatch_report(torch),
    }


def write_stage_report(values: dict[str, Any]) -> Path | None:
    """Merge ``values`` into the JSON object at ``$GHA_MLOPS_STAGE_REPORT``, if it is set.

    Later values win over earlier ones for the same key. The file is rewritten atomically.
    Returns the path written, or None when the variable is unset (a script run by hand).
    """
    raw = os.environ.get(REPORT_ENV, "")
    if not raw:
        return None
    path = Path(raw)
    merged: dict[str, Any] = {}
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        previous = None  # nothing written yet in this stage (or not ours): start afresh
    if isinstance(previous, dict):
        merged.update(previous)
    merged.update(values)
    atomic_write_text(path, json.dumps(merged, sort_keys=True, indent=2) + "\n")
    return path


def dataloader_kwargs(seed: int | None = None) -> dict[str, Any]:
    """Keyword arguments that make a ``torch.utils.data.DataLoader`` repeatable.

    Returns ``{"generator": ..., "worker_init_fn": ...}``: a ``torch.Generator`` seeded with
    ``seed`` (else ``$GHA_MLOPS_SEED``, else 0) drives shuffling and the per-worker seeds, and
    the worker function seeds ``random`` and numpy in each worker from
    ``torch.initial_seed()``, which torch derives from that generator. Use as
    ``DataLoader(ds, shuffle=True, **dataloader_kwargs())``.
    """
    torch = required("torch")
    generator = torch.Generator()
    generator.manual_seed(resolve_seed(seed))
    return {"generator": generator, "worker_init_fn": seed_worker}


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed ``random`` and numpy from the worker's torch seed.

    torch seeds each worker itself (base seed + worker id) but leaves the other RNGs as forked
    from the parent, so every worker would draw the same numpy numbers without this.
    """
    worker_seed = required("torch").initial_seed() % _MAX_SEED
    random.seed(worker_seed)
    np = optional("numpy")
    if np is not None:
        np.random.seed(worker_seed)
