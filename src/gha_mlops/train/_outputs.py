"""Writers for stage outputs whose bytes depend only on their content.

A cached or reproduced run is checked by hashing its outputs, so an output that embeds a time,
a temporary file name or a library's random id would fail the check for no real reason.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping
from typing import Any

from gha_mlops.train._atomic import atomic_write_bytes, atomic_write_text
from gha_mlops.train._imports import required

PathLike = str | os.PathLike[str]


def write_metrics(path: PathLike, metrics: Mapping[str, Any]) -> None:
    """Write ``metrics`` as JSON: keys sorted, indented by 2, a trailing newline, atomically.

    Parent directories are created. numpy scalars and arrays and torch tensors are turned into
    plain numbers and lists. Raises ``ValueError`` naming the entry if a value is NaN or
    infinite (not valid JSON, and no gate can compare it) and ``TypeError`` for a value that
    has no JSON form.
    """
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a mapping, got {type(metrics).__name__}")
    plain = _plain(metrics, "metrics")
    atomic_write_text(path, json.dumps(plain, sort_keys=True, indent=2, allow_nan=False) + "\n")


def _plain(value: Any, where: str) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(
                f"{where} is {value}: metrics must be finite numbers "
                "(NaN and infinity are not JSON and cannot be compared)"
            )
        return value
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays, torch tensors
    if callable(tolist):
        return _plain(tolist(), where)
    raise TypeError(f"{where} is a {type(value).__name__}, which has no JSON form")


def save_figure(fig: Any, path: PathLike, *, dpi: float | None = None) -> None:
    """Render a matplotlib ``Figure`` to PNG with the Agg renderer and write it atomically.

    Uses no pyplot state (build the figure with ``matplotlib.figure.Figure()``). The PNG
    carries no "Software" version text and no time, so the same figure drawn by the same
    matplotlib gives the same bytes. ``dpi`` defaults to the figure's own.
    """
    buf = io.BytesIO()
    # backend="agg": whatever canvas the figure has (pyplot's, a GUI one), render with Agg,
    # the renderer whose output is stable; the figure's own canvas is left as it was.
    fig.savefig(
        buf,
        format="png",
        backend="agg",
        dpi="figure" if dpi is None else dpi,
        metadata={"Software": None},
    )
    atomic_write_bytes(path, buf.getvalue())


def save_torch(obj: Any, path: PathLike) -> None:
    """``torch.save(obj)`` to ``path``, atomically, with bytes that depend only on ``obj``.

    ``torch.save`` to a path names the zip's top folder after the file, so saving to a
    temporary file and renaming it would put the random temporary name into the bytes.
    Saving to memory names it ``archive`` every time; the zip entries carry a fixed date and
    the serialization id is derived from the content (checked with torch 2.13).
    """
    torch = required("torch")
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def save_torchscript(module: Any, path: PathLike) -> None:
    """``torch.jit.save(module)`` to ``path``, atomically, without the debug records.

    TorchScript writes a ``*.debug_pkl`` next to each code file with the source ranges and,
    for traced modules, the Python call stack as absolute file paths (the script's and the
    torch install's), so the same model saved from another directory or machine would differ.
    Those records are only used for error messages; the archive is rewritten without them
    with torch's own zip writer (which keeps its alignment and a content-derived id). Loads
    with ``torch.jit.load`` as usual.
    """
    torch = required("torch")
    buf = io.BytesIO()
    torch.jit.save(module, buf)
    reader = torch._C.PyTorchFileReader(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    writer = torch._C.PyTorchFileWriter(out)
    for name in reader.get_all_records():
        # The writer derives a fresh serialization id from what it writes.
        if name.endswith(".debug_pkl") or name == ".data/serialization_id":
            continue
        data = reader.get_record(name)
        writer.write_record(name, data, len(data))
    writer.write_end_of_file()
    atomic_write_bytes(path, out.getvalue())
