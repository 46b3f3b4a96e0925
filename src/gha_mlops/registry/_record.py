"""A run record's share of a lineage: the model output, datasets, params and metrics."""

from __future__ import annotations

import math
from pathlib import PurePosixPath

from gha_mlops.errors import quoted
from gha_mlops.registry.errors import RegistryError
from gha_mlops.registry.lineage import Lineage, params_hash
from gha_mlops.runs.record import RunRecord

DATA_PREFIX = "data:"
# A run's plain dependencies (``record.data``) mix data files with the code and environment
# files of its stages. Code is not data: the version rule makes a code change a patch, and
# the lineage's commit pins the code anyway. These suffixes and names count as code.
CODE_SUFFIXES = frozenset((
    ".py", ".pyi", ".pyx", ".ipynb", ".sh", ".bash", ".zsh", ".ps1", ".r", ".jl", ".js",
    ".mjs", ".ts", ".c", ".cc", ".cpp", ".cxx", ".h", ".hpp", ".cu", ".java", ".kt",
    ".scala", ".go", ".rs", ".rb", ".pl", ".lua", ".sql", ".lock", ".toml", ".cfg", ".ini"))
CODE_NAMES = frozenset(("dockerfile", "makefile", "containerfile"))


def is_code(path: str) -> bool:
    """Whether a plain dependency ``path`` is code or environment, not data."""
    name = PurePosixPath(path).name.lower()
    return (PurePosixPath(name).suffix in CODE_SUFFIXES or name in CODE_NAMES
            or (name.startswith("requirements") and name.endswith(".txt")))


def model_output_sha256(record: RunRecord, path: str) -> str:
    """The sha256 of the file ``path`` among the run's outputs: an output itself, or a file
    inside an output folder. :class:`RegistryError` when the run has no such file."""
    out = record.outputs.get(path)
    if out is not None and not out.is_tree:
        return out.sha256
    for base, output in record.outputs.items():
        if output.files and path.startswith(base + "/"):
            inner = output.files.get(str(PurePosixPath(path).relative_to(base)))
            if inner is not None:
                return inner
    listed = ", ".join(quoted(p, 60) for p in list(record.outputs)[:8]) or "none"
    raise RegistryError(
        f"run {record.id} has no output {path} (the model path of the registry), so there is "
        "no model to register",
        hint=f"its outputs: {listed}; run the pipeline with the stage that writes {path}, "
             "or fix `registry.models.<name>.path` in mlops.yaml")


def lineage_of(record: RunRecord, model_path: str, *, commit: str,
               signature: dict[str, object] | None) -> Lineage:
    """The lineage of the model ``model_path`` of ``record``, tagged at ``commit``."""
    datasets: dict[str, str] = {}
    for name, entry in (record.datasets or {}).items():
        version = entry.get("version") if hasattr(entry, "get") else None
        datasets[f"{DATA_PREFIX}{name}"] = str(version) if version is not None else "?"
    for path, digest in record.data.items():
        if not path.startswith(DATA_PREFIX) and not is_code(path):
            datasets[path] = digest
    metrics = {k: float(v) for k, v in record.flat_metrics().items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    return Lineage(run_id=record.id, commit=commit, model_path=model_path,
                   model_sha256=model_output_sha256(record, model_path), datasets=datasets,
                   params_hash=params_hash(record.param_values), metrics=metrics,
                   signature=signature)
