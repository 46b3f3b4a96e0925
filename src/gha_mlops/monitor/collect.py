"""Labelled feedback into a dataset: the service behind ``gha-mlops monitor collect``.

The rows of a window of the prediction log whose request id has a label (feedback arrives
late, so labels are read from the window's start up to ``labels_until``, normally now) are
appended to a directory dataset as ONE new CSV file, then the dataset is re-added (its
pointer names the new version) and pushed to its remote. The next ``gha-mlops run`` whose
stage depends on ``data:NAME`` records that version.

The file (UTF-8, ``\\n`` line ends, RFC 4180 quoting) is
``<model>-<start>-<end>-<sha256:12>.csv`` (times ``YYYYMMDDTHHMMSSZ``, UTC) with the header
``id,t,version,<feature columns>,label``: the request id, the unix time of the prediction,
the model version that served it, the input tensors as feature columns
(:func:`gha_mlops.monitor.features.tensor_columns`: ``x`` or ``x[0]``, ``x[1]``...), and
the label. Numbers are written in their shortest round-trip form (``nan``, ``inf``
included), booleans ``True``/``False``. A feature column named like one of the four fixed
columns is written ``input:NAME``. Rows are sorted by time, then id: the same rows give the
same bytes. ``pandas.concat(map(pandas.read_csv, sorted(glob("data/feedback/*.csv"))))``
reads a dataset back.

Nothing is collected twice: the request ids in every file of the same model already in the
dataset are skipped (a second collect of a window adds nothing and says so). Nothing is
lost: the file is written atomically before the dataset is re-added and pushed; when either
fails, the rows stay in the folder and a rerun (which finds nothing new) re-adds and pushes.
Two collects into one dataset take turns (a lock under ``.gha-mlops/collect/``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gha_mlops._fs import atomic_write_bytes, resolve_inside
from gha_mlops.data import service as data
from gha_mlops.errors import ExitCode, GhaMlopsError, UsageError, quoted
from gha_mlops.monitor.features import tensor_columns
from gha_mlops.monitor.predlog import (
    LogWindow,
    Source,
    join_feedback,
    read_feedback,
    read_window,
)
from gha_mlops.monitor.predlog_writer import MAX_ID_CHARS
from gha_mlops.store.lock import WorkspaceLock

if TYPE_CHECKING:
    import numpy as np

    from gha_mlops.config.model import MonitorModel
    from gha_mlops.data.pointer import Dataset

MAX_ROWS = 1_000_000  # rows one collect appends by default; the rest waits for the next
READ_MAX_ROWS = 5_000_000  # log rows one collect reads (read_window's bound)
FIXED = ("id", "t", "version", "label")
_FILE = re.compile(r"(?P<model>.+)-(?P<start>\d{8}T\d{6}Z)-(?P<end>\d{8}T\d{6}Z)"
                   r"-(?P<digest>[0-9a-f]{12})\.csv")


class CollectError(GhaMlopsError):
    """The dataset cannot take collected rows (not a tracked directory, a damaged file of
    earlier collects), or the call is bad: the user's to fix, exit 2."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class CollectResult:
    """What one collect did. ``rows``: rows appended (0: nothing new); ``file``: the new
    file, workspace-relative (None when nothing was written); ``labelled``: rows of the
    window that have a label; ``already``: of those, rows whose request id the dataset held
    already (or that the window held twice); ``left``: new rows over ``max_rows``, left for
    the next collect; ``version``/``previous``: the dataset's version after and before;
    ``remote``: where it was pushed (None: not pushed); ``uploaded``: objects sent;
    ``log_skipped``/``feedback_skipped``: what reading skipped, by reason."""

    model: str
    dataset: str
    file: str | None
    rows: int
    window_rows: int
    labelled: int
    already: int
    left: int
    version: str
    previous: str
    remote: str | None
    uploaded: int
    log_skipped: Mapping[str, int]
    feedback_skipped: Mapping[str, int]
    versions: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Rows:
    """The new rows, ready to write: header and cells (strings), sorted."""

    header: list[str]
    cells: list[list[str]]
    left: int
    labelled: int
    already: int


def collect(ws: data.Workspace, model_cfg: MonitorModel, source: Source, *, start: float,
            end: float, into: str, version: str | None = None, max_rows: int = MAX_ROWS,
            labels_until: float | None = None, push: bool = True, remote: str | None = None,
            opener: data.StoreOpener | None = None) -> CollectResult:
    """Append the labelled rows of ``[start, end)`` of ``model_cfg.name``'s log under
    ``source`` (a folder or an object store, as :func:`read_window` reads it) to the
    directory dataset ``into`` as one new file, re-add the dataset and, with ``push``, push
    it to ``remote`` (None: the default one) through ``opener``. ``version`` limits the rows
    to one model version (default: every version, in the newest one's schema). Labels are
    read from ``start`` to ``labels_until`` (at least ``end``). At most ``max_rows`` rows
    are appended, the oldest first. A folder missing (or older than its pointer) is fetched
    first. The log's bad data is skipped and counted in the result, never raised."""
    if not 0 < max_rows <= READ_MAX_ROWS:
        raise UsageError(f"--max-rows {max_rows} is out of range",
                         hint=f"give 1 to {READ_MAX_ROWS:,}")
    ds = _tracked_directory(ws, into)
    lock = WorkspaceLock(ws.open_state() / "collect" / ds.name, wait=data.LOCK_WAIT,
                         what=f"monitor collect into {ds.name}")
    with lock:
        folder = _present(ws, ds, remote, opener)
        have = collected_ids(folder, model_cfg.name, ds.path)
        win = read_window(source, model_cfg.name, start=start, end=end, version=version,
                          max_rows=READ_MAX_ROWS)
        until = max(end, labels_until if labels_until is not None else end)
        labels = read_feedback(source, model_cfg.name, start=start, end=until)
        versions = _row_versions(source, model_cfg.name, win, start, end, version)
        new = _new_rows(win, versions, labels, have, max_rows)
        written = None
        if new.cells:
            body = _csv_bytes(new.header, new.cells)
            name = (f"{model_cfg.name}-{_stamp(start)}-{_stamp(end)}-"
                    f"{hashlib.sha256(body).hexdigest()[:12]}.csv")
            atomic_write_bytes(folder / name, body)
            written = f"{ds.path}/{name}"
        added = _finish(ws, ds, written, push=push, remote=remote, opener=opener)
    pushed_to, uploaded, version_now = added
    return CollectResult(
        model=model_cfg.name, dataset=ds.name, file=written, rows=len(new.cells),
        window_rows=win.rows, labelled=new.labelled, already=new.already, left=new.left,
        version=version_now, previous=ds.version, remote=pushed_to, uploaded=uploaded,
        log_skipped=dict(win.skipped), feedback_skipped=dict(labels.skipped),
        versions=win.versions)


def _tracked_directory(ws: data.Workspace, name: str) -> Dataset:
    """The dataset ``name``, which must be a tracked directory."""
    found = ws.datasets().get(name)
    if found is None:
        raise CollectError(
            f"no dataset named {quoted(name)} in {ws.root}",
            hint=f"track a folder for it first: mkdir -p data/{name} && gha-mlops data add "
                 f"data/{name} (then commit its pointer, data/{name}.lock.yaml)")
    if not found.is_tree:
        raise CollectError(
            f"dataset {quoted(name)} ({found.pointer}) is a single file; collected rows are "
            "appended to a directory dataset as new files",
            hint=f"collect into a directory dataset: mkdir -p data/{name}-feedback && "
                 f"gha-mlops data add data/{name}-feedback, then --into {name}-feedback")
    return found


def _present(ws: data.Workspace, ds: Dataset, remote: str | None,
             opener: data.StoreOpener | None) -> Path:
    """The dataset's folder in the workspace, checked out first when it is missing (a fresh
    clone has the pointer only). A folder that differs from the pointer is kept as it is:
    it may hold the rows of a collect whose add or push failed."""
    folder = resolve_inside(ws.root, ds.path, what=f"dataset {ds.name} ({ds.pointer}) path")
    if folder.is_dir():
        if ws.hasher.hash_path(ds.path) != ds.version:
            _restore_pinned(ws, ds, remote, opener)
        return folder
    if folder.exists() or folder.is_symlink():
        raise CollectError(f"{ds.path} (dataset {ds.name}) is not a directory",
                           hint=f"remove it and run `gha-mlops data pull {ds.name}`")
    _in_cache(ws, ds, remote, opener)
    data.checkout_all(ws, [ds], what="monitor collect")
    return folder


def _in_cache(ws: data.Workspace, ds: Dataset, remote: str | None,
              opener: data.StoreOpener | None) -> None:
    if ws.cache.absent(data.objects_of(ws, ds) or [ds.version]):
        data.fetch_named(ws, [ds.name], remote, opener=opener)


def _restore_pinned(ws: data.Workspace, ds: Dataset, remote: str | None,
                    opener: data.StoreOpener | None) -> None:
    """Put back the files of the pinned version that the folder lacks (a folder older than
    its pointer, after a `git pull` without `data pull`): re-adding the folder without them
    would drop rows others collected. Files the folder has are left as they are."""
    _in_cache(ws, ds, remote, opener)
    tree = data.tree_of(ws, ds)
    for rel, sha in (tree.files() if tree is not None else {}).items():
        target = resolve_inside(ws.root, f"{ds.path}/{rel}", what=f"dataset {ds.name} file")
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, ws.cache.object_path(sha).read_bytes())


def collected_ids(folder: Path, model: str, where: str) -> set[str]:
    """The request ids in the files earlier collects of ``model`` wrote to ``folder``
    (``where`` names it in messages). Such a file that is not a regular file or not the
    CSV collect writes is an error: skipping it could collect its rows twice."""
    ids: set[str] = set()
    for name in sorted(os.listdir(folder)):
        found = _FILE.fullmatch(name)
        if found is None or found["model"] != model:
            continue
        path = folder / name
        if not path.is_file() or path.is_symlink():
            raise CollectError(f"{where}/{name} is not a regular file",
                               hint="remove it: collected files are plain CSV files")
        ids |= _ids_of(path, f"{where}/{name}")
    return ids


def _ids_of(path: Path, where: str) -> set[str]:
    ids: set[str] = set()
    hint = ("this file was not written by `gha-mlops monitor collect`, or was edited: restore "
            "it (`gha-mlops data pull`), or remove it and collect its window again")
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh, strict=True)
            head = next(reader, None)
            if not head or head[0] != "id":
                raise CollectError(f"{where} does not start with the header id,t,version,...",
                                   hint=hint)
            for row in reader:
                if not row or not 0 < len(row[0]) <= MAX_ID_CHARS:
                    raise CollectError(f"{where}:{reader.line_num}: expected a request id of "
                                       f"1 to {MAX_ID_CHARS} characters", hint=hint)
                ids.add(row[0])
    except (csv.Error, UnicodeDecodeError) as err:
        raise CollectError(f"{where} is not a readable CSV file: {err}", hint=hint) from None
    except OSError as err:
        raise CollectError(f"cannot read {where}: {err.strerror}", hint=hint) from None
    return ids


def _row_versions(source: Source, model: str, win: LogWindow, start: float, end: float,
                  version: str | None) -> list[str]:
    """The model version of each row of ``win``. The window is read across versions; when
    more than one contributed, each is read again alone (in the same schema) to tell which
    row is whose."""
    if version is not None or len(win.versions) <= 1:
        return [version or (win.versions[0] if win.versions else "")] * win.rows
    by_row: dict[tuple[str, float], str] = {}
    for v in win.versions:
        part = read_window(source, model, start=start, end=end, version=v,
                           max_rows=READ_MAX_ROWS, schema=win.schema)
        for rid, t in zip(part.ids, part.times.tolist(), strict=True):
            by_row.setdefault((rid, t), v)
    return [by_row.get((rid, t), "") for rid, t in zip(win.ids, win.times.tolist(), strict=True)]


def _new_rows(win: LogWindow, versions: Sequence[str], labels: Mapping[str, Any],
              have: set[str], max_rows: int) -> _Rows:
    """The labelled rows of ``win`` whose id ``have`` lacks (once each, the oldest), sorted
    by time and id, at most ``max_rows``; as CSV cells."""
    joined = join_feedback(win, labels)
    times = win.times.tolist()
    order = sorted(joined.rows.tolist(), key=lambda i: (times[i], win.ids[i]))
    keep: list[int] = []
    seen: set[str] = set()
    for i in order:
        rid = win.ids[i]
        if rid not in have and rid not in seen:
            seen.add(rid)
            keep.append(i)
    already = len(order) - len(keep)
    left = max(0, len(keep) - max_rows)
    keep = keep[:max_rows]
    if not keep:
        return _Rows([], [], 0, len(order), already)
    import numpy as np

    columns = tensor_columns(win.inputs)
    header = ["id", "t", "version"]
    for name in columns:
        column = f"input:{name}" if name in FIXED else name
        if column in header:  # a tensor named like a renamed one, e.g. input:t
            raise CollectError(f"the feature column {quoted(name)} cannot be told apart from "
                               f"the column {quoted(column)}", hint="rename the model's "
                               "input tensor: id, t, version and label are collect's own")
        header.append(column)
    header.append("label")
    index = np.asarray(keep, dtype=np.int64)
    cells = [_strings(col[index]) for col in columns.values()]
    rows = [[win.ids[i], repr(float(times[i])), versions[i], *(c[k] for c in cells),
             _label(labels[win.ids[i]])] for k, i in enumerate(keep)]
    return _Rows(header, rows, left, len(order), already)


def _strings(values: np.ndarray) -> list[str]:
    """Each value as text: numbers in their dtype's shortest round-trip form."""
    out: list[str] = values.astype(str).tolist()
    return out


def _label(label: Any) -> str:
    if isinstance(label, float):
        return repr(label)
    return str(label)  # a str as it is; True/False; an int in decimal


def _csv_bytes(header: list[str], rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _stamp(t: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(t))


def _finish(ws: data.Workspace, ds: Dataset, written: str | None, *, push: bool,
            remote: str | None, opener: data.StoreOpener | None,
            ) -> tuple[str | None, int, str]:
    """Re-add the dataset (its pointer then names the folder as it is) and push it; a
    failure says that the rows are kept and how to finish. Run even when nothing new was
    written: a collect whose add or push failed is finished by the next one."""
    kept = (f"the collected rows are kept in {written}" if written else
            "no rows were lost")
    again = ("run the same `gha-mlops monitor collect` again once fixed: it adds no row "
             "twice and finishes the add and the push")
    try:
        added = data.add(ws, ws.root / ds.path, name=ds.name)
    except GhaMlopsError as err:
        err.notes += [f"{kept}, but the dataset {ds.name} was not re-added", again]
        raise
    if not push:
        return None, 0, added.dataset.version
    try:
        moved = data.push_named(ws, [ds.name], remote, opener=opener)
    except GhaMlopsError as err:
        err.notes += [f"{kept} and {ds.pointer} names them, but the push failed", again
                      + f" (or `gha-mlops data push {ds.name}`)"]
        raise
    name = moved.remote.name if moved.remote is not None else None
    return name, moved.stats.objects, added.dataset.version


__all__ = ["MAX_ROWS", "CollectError", "CollectResult", "collect", "collected_ids"]
