"""Helpers for the scripts that ``gha-mlops run`` runs as pipeline stages.

A stage script reads its parameters and seed from what the engine passes it, makes its torch
work repeatable, and writes outputs whose bytes depend only on their content, so that a cached
or reproduced run can be checked by hash::

    from gha_mlops.train import params, portable

    portable(threads=params("compute.threads"))  # before torch: pins the CPU kernels

    from gha_mlops.train import deterministic, write_metrics

    report = deterministic(threads=params("compute.threads"))
    cfg = params("train")
    ...
    write_metrics("metrics/train.json", {"val_accuracy": acc})

:func:`portable` makes the bytes the same on every machine of the architecture (x86-64 or
aarch64), not only on this one: it pins each CPU kernel dispatcher (torch, oneDNN, MKL, numpy,
OpenBLAS) to the architecture's baseline, so it must run before torch or numpy is imported.

Every helper also works when the script is run by hand, outside the engine: the seed falls back
to 0, the params file to ``params.yaml`` in the current directory, and the report and lineage
files are skipped. torch, numpy and matplotlib are imported only by the helpers that need them,
so importing this module is cheap and works without them. :func:`export_onnx` writes a
model as a checked ONNX file with the same bytes on every run (it needs the ``package`` extra:
onnx, onnxscript, onnxruntime).

Environment set by the engine for each stage: ``GHA_MLOPS_SEED``, ``GHA_MLOPS_PARAMS``,
``GHA_MLOPS_STAGE_REPORT`` and ``GHA_MLOPS_LINEAGE`` (read here), plus ``GHA_MLOPS_STAGE``,
``GHA_MLOPS_RUN_ID``, ``GHA_MLOPS_WORKSPACE`` and ``PYTHONHASHSEED``.
"""

from __future__ import annotations

from gha_mlops.train._atomic import atomic_write_bytes, atomic_write_text
from gha_mlops.train._onnx import ExportMismatchError, export_onnx
from gha_mlops.train._outputs import save_figure, save_torch, save_torchscript, write_metrics
from gha_mlops.train._params import ParamsKeyError, lineage, params, params_path
from gha_mlops.train._portable import dispatch_report, portable, portable_environment
from gha_mlops.train._progress import progress
from gha_mlops.train._seeding import (
    dataloader_kwargs,
    deterministic,
    resolve_seed,
    seed_everything,
    seed_worker,
    write_stage_report,
)

__all__ = [
    "ExportMismatchError",
    "ParamsKeyError",
    "atomic_write_bytes",
    "atomic_write_text",
    "dataloader_kwargs",
    "deterministic",
    "dispatch_report",
    "export_onnx",
    "lineage",
    "params",
    "params_path",
    "portable",
    "portable_environment",
    "progress",
    "resolve_seed",
    "save_figure",
    "save_torch",
    "save_torchscript",
    "seed_everything",
    "seed_worker",
    "write_metrics",
    "write_stage_report",
]
