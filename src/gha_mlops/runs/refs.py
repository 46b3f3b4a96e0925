"""``RUN`` references, resolved in one place.

A command that takes a run (``runs show``, ``summary``, ``report``, ``reproduce``) accepts:

- ``latest``, ``latest~N`` (runs only, newest first), a full run id or a unique prefix of one:
  a record of the workspace (:meth:`~gha_mlops.runs.store.RunStore.resolve`);
- a record file (``*.json``, e.g. from another job's artifact): its files are read from the
  workspace it sits in (``<ws>/.gha-mlops/runs/<id>.json``), else from where the caller says;
- an ``https://`` or ``http://`` URL of a record JSON or an artifact's zip, when the caller
  passes a ``download`` function (the GitHub adapter's, with the token): it is unpacked into
  ``scratch`` and read from there.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from gha_mlops.config._state import STATE_DIR
from gha_mlops.errors import UsageError
from gha_mlops.runs.record import RunRecord
from gha_mlops.runs.store import RUNS_FOLDER, RunStore, read_record, workspace_of

URL_SCHEMES = ("https://", "http://")
MAX_ARCHIVE_MEMBERS = 100_000


@dataclass(frozen=True)
class Located:
    """A resolved run: its record, the file it was read from, and the folder its metrics and
    plots are read from (``files_root``; None for a record file outside any workspace, where
    the caller decides)."""

    record: RunRecord
    path: Path
    files_root: Path | None


def is_record_file(ref: str) -> bool:
    return ref.endswith(".json") or Path(ref).is_file()


def resolve(ref: str, workspace: Path, *, download: Callable[[str], bytes] | None = None,
            scratch: Path | None = None) -> Located:
    """The run ``ref`` names (see the module's docstring), ``workspace`` being the folder of
    ``mlops.yaml``."""
    if ref.startswith(URL_SCHEMES):
        if download is None or scratch is None:
            raise UsageError(f"{ref}: a URL names a run only where the command can download "
                             "it", hint="give a run id, `latest`, or a record file")
        path = unpack(download(ref), scratch, source=ref)
        return Located(read_record(path, what=ref), path, workspace_of(path) or path.parent)
    if is_record_file(ref):
        path = Path(ref)
        return Located(read_record(path), path.absolute(), workspace_of(path))
    store = RunStore.of(workspace)
    record = store.record(ref)
    return Located(record, store.path(record.id), workspace)


def unpack(data: bytes, dest: Path, *, source: str) -> Path:
    """A downloaded run, a zip archive (an artifact of actions/run) or a run record JSON, saved
    in ``dest``; returns the record's path."""
    if data[:4] == b"PK\x03\x04":
        return extract_record(data, dest, source=source)
    try:
        json.loads(data)
    except ValueError as err:
        raise UsageError(f"{source} is neither a zip archive nor JSON: {err}",
                         hint="give the URL of a run record JSON or of an artifact's zip"
                         ) from None
    path = dest / "record.json"
    dest.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def extract_record(archive: bytes, dest: Path, *, source: str) -> Path:
    """Unpack the zip ``archive`` (an artifact of actions/run) into ``dest`` and return the
    run record in it: ``.gha-mlops/runs/<id>.json`` (its metrics and plots lie beside it, as
    in the workspace it came from), else the only JSON file of the archive. Member names that
    leave ``dest`` are refused before anything is written."""
    try:
        with zipfile.ZipFile(io.BytesIO(archive)) as zf:
            names = zf.namelist()
            if len(names) > MAX_ARCHIVE_MEMBERS:
                raise UsageError(f"{source}: the archive holds {len(names)} files, more than "
                                 f"{MAX_ARCHIVE_MEMBERS}",
                                 hint="the artifact was not made by actions/run")
            for name in names:
                parts = PurePosixPath(name).parts
                if name.startswith(("/", "\\")) or ".." in parts or ":" in name:
                    raise UsageError(f"{source}: unsafe path {name!r} in the archive",
                                     hint="the artifact was not made by actions/run")
            zf.extractall(dest)
    except zipfile.BadZipFile as err:
        raise UsageError(f"{source} is not a zip archive: {err}",
                         hint="give a run record JSON or the zip of a gha-mlops-run "
                              "artifact") from None
    records = sorted(p for p in dest.rglob("*.json")
                     if p.parent.name == RUNS_FOLDER and p.parent.parent.name == STATE_DIR)
    if not records:
        records = sorted(dest.rglob("*.json"))
        if len(records) != 1:
            raise UsageError(f"{source} holds no run record ({STATE_DIR}/runs/<id>.json)",
                             hint="upload the run with actions/run (upload: \"true\")")
    if len(records) > 1:
        names_ = ", ".join(str(p.relative_to(dest)) for p in records)
        raise UsageError(f"{source} holds several run records ({names_})",
                         hint="upload one run per artifact, or pass the record file as "
                              "--baseline")
    return records[0]
