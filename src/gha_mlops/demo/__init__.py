"""The embedded example project that ``gha-mlops demo`` writes out and runs.

The project (``project/`` beside this module: ``mlops.yaml``, ``params.yaml``, the stage
scripts, the dataset pointer ``data/digits.csv.gz.lock.yaml``, ...) is copied verbatim. The
digits data set itself (``data/digits.csv.gz`` beside this module) is not: :func:`seed_remote`
puts it in the project's dataset remote (``demo-remote/``, a directory standing in for a shared
disk or a bucket), and ``gha-mlops run`` fetches the pinned version from there, as it would in
a team's repository. Everything is read as package data, so it works from a wheel or a zip as
well as from a source checkout.
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
    from gha_mlops.data.service import StoreOpener

    if sys.version_info >= (3, 11):
        from importlib.resources.abc import Traversable
    else:
        from importlib.abc import Traversable

# Package files that are not part of the project, should a build or a run leave them there.
_SKIP_DIRS = frozenset({"__pycache__", ".gha-mlops", ".mypy_cache", ".pytest_cache", ".ruff_cache"})
_SKIP_SUFFIXES = (".pyc", ".pyo")

DATASET = "digits"
REMOTE = "demo"


def project_files() -> dict[PurePosixPath, Traversable]:
    """Every file of the example project: its path in the project -> the packaged file."""
    files = dict(_walk(resources.files(__name__) / "project", PurePosixPath()))
    return dict(sorted(files.items()))


def dataset_bytes() -> bytes:
    """The digits data set as packaged (the version the project's pointer pins)."""
    return (resources.files(__name__) / "data" / "digits.csv.gz").read_bytes()


def seed_remote(project: Path, open_store: StoreOpener) -> bool:
    """Put the packaged digits data in the project's ``demo`` remote (opened with
    ``open_store``) unless it holds the pinned version already; True when it was put there.
    The workspace cache is left alone, so the first run fetches the data from the remote, as
    on a fresh clone."""
    import hashlib
    import tempfile

    from gha_mlops.data import transfer
    from gha_mlops.data.service import Workspace, resolve_remote
    from gha_mlops.store.objects import ContentCache

    ws = Workspace(project)
    dataset = ws.datasets().get(DATASET)
    data = dataset_bytes()
    version = hashlib.sha256(data).hexdigest()
    if dataset is None or dataset.version != version:
        return False  # the user re-pinned the data: their remote, their business
    remote = resolve_remote(ws, REMOTE)
    if "://" not in remote.url:
        (ws.root / remote.url).mkdir(parents=True, exist_ok=True)
    index_dir = ws.state / "remotes" / REMOTE
    with open_store(remote, root=ws.root) as store:
        if not transfer.missing_on_remote(store, {version}, index_dir=index_dir):
            return False
        with tempfile.TemporaryDirectory(prefix="gha-mlops-demo-") as tmp:
            cache = ContentCache(Path(tmp) / "cache")
            cache.put_verified_bytes(data, version)
            transfer.push(store, cache, [version], index_dir=index_dir)
    return True


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
