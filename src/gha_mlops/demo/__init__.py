"""The embedded example project that ``gha-mlops demo`` writes out and runs.

The project (``project/`` beside this module: ``mlops.yaml``, ``params.yaml``, the stage
scripts, ...) is copied verbatim, plus the digits data set from ``data/``. Everything is read
as package data, so it works from a wheel or a zip as well as from a source checkout.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from gha_mlops import _fs
from gha_mlops.errors import UsageError

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from importlib.resources.abc import Traversable
    else:
        from importlib.abc import Traversable

# Package files that are not part of the project, should a build or a run leave them there.
_SKIP_DIRS = frozenset({"__pycache__", ".gha-mlops", ".mypy_cache", ".pytest_cache", ".ruff_cache"})
_SKIP_SUFFIXES = (".pyc", ".pyo")

# Files that live outside project/ (data too large to keep twice) and where they go.
_EXTRA_FILES = {
    "data/digits.csv.gz": "data/digits.csv.gz",
    "data/LICENSE-digits.txt": "data/LICENSE-digits.txt",
}


def project_files() -> dict[PurePosixPath, Traversable]:
    """Every file of the example project: its path in the project -> the packaged file."""
    package = resources.files(__name__)
    files = dict(_walk(package / "project", PurePosixPath()))
    for source, target in _EXTRA_FILES.items():
        node: Traversable = package
        for part in source.split("/"):
            node = node / part
        files[PurePosixPath(target)] = node
    return dict(sorted(files.items()))


def _walk(node: Traversable, rel: PurePosixPath) -> Iterator[tuple[PurePosixPath, Traversable]]:
    for child in node.iterdir():
        if child.is_dir():
            if child.name not in _SKIP_DIRS:
                yield from _walk(child, rel / child.name)
        elif not child.name.endswith(_SKIP_SUFFIXES):
            yield rel / child.name, child


def write_project(dest: Path, *, overwrite: bool = False) -> list[Path]:
    """Write the example project into ``dest`` (created if missing); return the files written.

    A file that already exists in ``dest`` is kept as it is, so the user's edits survive,
    unless ``overwrite``: then it is replaced when its content differs from the example's.
    Each file is written atomically. Raises :class:`~gha_mlops.errors.UsageError` if
    ``dest`` or a path the project needs is taken by something that is not a directory.
    """
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise UsageError(
            f"{dest} exists and is not a directory",
            hint="name a new or existing directory for the example project",
        )
    written: list[Path] = []
    for rel, source in project_files().items():
        target = dest.joinpath(*rel.parts)
        if target.is_dir():
            raise UsageError(
                f"{target} is a directory, but the example project has a file there",
                hint=f"move it away, or write the example into another directory than {dest}",
            )
        if target.exists() and not overwrite:
            continue
        data = source.read_bytes()
        if target.exists() and target.read_bytes() == data:
            continue
        _fs.atomic_write_bytes(target, data)
        written.append(target)
    return written
