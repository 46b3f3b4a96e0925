"""Tensors <-> feature columns: one naming rule shared by the reference profile (written at
packaging time from the check data and the model's outputs) and ``monitor check`` (reading
the prediction log), so a column of the log meets the same column of the reference.

A tensor ``x`` whose instances are scalars (shape ``(rows,)``) or one-element vectors
(``(rows, 1)``) is one column named ``x``; an instance of more elements is flattened
(row-major) into columns ``x[0]`` ... ``x[k-1]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gha_mlops.errors import GhaMlopsError, quoted

if TYPE_CHECKING:
    import numpy as np

MAX_COLUMNS = 10_000  # columns one tensor may become; more is not a tabular model


class FeatureError(GhaMlopsError):
    """A tensor that cannot be read as feature columns."""


def column_names(tensor: str, shape: tuple[int, ...]) -> list[str]:
    """The column names of ``tensor`` whose instances have ``shape`` (the shape without the
    batch dimension)."""
    size = 1
    for dim in shape:
        size *= int(dim)
    if size > MAX_COLUMNS:
        raise FeatureError(f"tensor {quoted(tensor)} has {size} values per instance, more than "
                           f"{MAX_COLUMNS} feature columns",
                           hint="monitor a tabular model, or pick its features with "
                                "monitor.models.<name>.features")
    if size == 1:
        return [tensor]
    return [f"{tensor}[{i}]" for i in range(size)]


def tensor_columns(tensors: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The columns of ``tensors`` (name -> array with the instances first), in the order of
    the tensors and then of the flattened values; each column a 1-D array of ``rows``."""
    import numpy as np

    columns: dict[str, np.ndarray] = {}
    rows: int | None = None
    for name, value in tensors.items():
        arr = np.asarray(value)
        if arr.ndim == 0:
            raise FeatureError(f"tensor {quoted(name)} has no instance dimension",
                               hint="give arrays with the instances (rows) first")
        if rows is not None and arr.shape[0] != rows:
            raise FeatureError(f"tensor {quoted(name)} has {arr.shape[0]} rows, others "
                               f"have {rows}", hint="give every tensor the same rows")
        rows = arr.shape[0]
        names = column_names(name, tuple(arr.shape[1:]))
        flat = arr.reshape(rows, len(names))
        for i, column in enumerate(names):
            if column in columns:
                raise FeatureError(f"two tensors give the column {quoted(column)}",
                                   hint="rename one of the tensors")
            columns[column] = flat[:, i]
    return columns


__all__ = ["FeatureError", "column_names", "tensor_columns"]
