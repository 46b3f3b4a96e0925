"""Reading the prediction log (the format is described in :mod:`.predlog_writer`).

Everything read is hostile: a row of another model, version or schema, a corrupt line (bad
JSON, wrong types, a non-finite time, a line over :data:`MAX_LINE_BYTES`), a corrupt gzip
file, a file whose real path leaves the root (a symlink) is skipped and COUNTED by reason in
:attr:`LogWindow.skipped`, never fatal: the caller decides what counts as enough data. Only
a bad call (a window that is not a finite interval, a bad model name) raises
:class:`PredLogError`. Reasons that start with ``file-`` count files; the others count lines.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import stat
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gha_mlops.errors import ExitCode, GhaMlopsError
from gha_mlops.monitor.predlog_writer import (
    FEEDBACK_DIR,
    FORMAT,
    MAX_ID_CHARS,
    NAME,
    check_schema,
)

if TYPE_CHECKING:
    import numpy as np

MAX_LINE_BYTES = 1 << 20  # a longer line is skipped ("oversized-line")
MAX_FILE_LINES = 1_000_000  # a file with more lines is cut there ("file-too-long")
MAX_LABEL_CHARS = 1024
_NUMPY = {"BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32",
          "UINT64": "uint64", "INT8": "int8", "INT16": "int16", "INT32": "int32",
          "INT64": "int64", "FP16": "float16", "FP32": "float32", "FP64": "float64",
          "BYTES": "str"}
# Which kinds of array JSON values become (numpy's dtype.kind) each datatype accepts: no
# silent float -> int or number -> string casts.
_ACCEPTS = {"BOOL": "b", "BYTES": "U"} | {k: "iu" for k in _NUMPY if "INT" in k} | {
    "FP16": "iuf", "FP32": "iuf", "FP64": "iuf"}


class PredLogError(GhaMlopsError):
    """A bad call to the reader (not bad data: that is skipped and counted)."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class LogWindow:
    """The rows of a window, oldest file first. ``inputs``/``outputs`` map each tensor name
    to an array with one row per instance (``rows`` first); ``times`` are unix seconds;
    ``skipped`` maps a reason to a count (``file-*`` reasons count files, the rest lines);
    ``files`` is the number of files opened. ``rows == 0`` means no data: the caller says
    "not enough data", never a verdict. ``schema`` is the one every row conforms to (None
    when no file was read)."""

    rows: int
    ids: tuple[str, ...]
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    times: np.ndarray
    skipped: dict[str, int]
    files: int
    schema: dict[str, dict[str, list[Any]]] | None = None
    versions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Joined:
    """Rows of a window that have a label: ``rows`` indexes the window's arrays (a request id
    logged twice matches twice), ``ids`` and ``labels`` are aligned with it."""

    ids: tuple[str, ...]
    labels: np.ndarray
    rows: np.ndarray


def _check_window(model: str, start: float, end: float) -> None:
    if not isinstance(model, str) or not NAME.fullmatch(model):
        raise PredLogError(f"model {model!r} is not a valid model name",
                           hint=f"a model name matches {NAME.pattern}")
    if not (math.isfinite(start) and math.isfinite(end) and start <= end):
        raise PredLogError(f"window [{start}, {end}) is not a finite interval",
                           hint="give start <= end, both unix seconds")


def _hours(base: Path, start: float, end: float) -> Iterator[tuple[int, Path]]:
    """``(hour, folder)`` of every ``YYYY/MM/DD/HH`` folder under ``base`` whose hour
    overlaps ``[start, end)``: pruned level by level, so a window never lists the rest."""
    import calendar

    def listed(folder: Path, width: int) -> list[str]:
        try:
            return sorted(n for n in os.listdir(folder) if len(n) == width and n.isdigit())
        except OSError:
            return []

    def overlaps(lo: float, hi: float) -> bool:
        return lo < end and hi > start

    def t(y: int, mo: int = 1, d: int = 1, h: int = 0) -> float:
        return float(calendar.timegm((y, mo, d, h, 0, 0)))

    for ys in listed(base, 4):
        y = int(ys)
        if not 1970 <= y <= 9998 or not overlaps(t(y), t(y + 1)):
            continue
        for ms in listed(base / ys, 2):
            mo = int(ms)
            if not 1 <= mo <= 12 or not overlaps(t(y, mo), t(y + mo // 12, mo % 12 + 1)):
                continue
            for ds in listed(base / ys / ms, 2):
                d = int(ds)
                if not 1 <= d <= 31 or not overlaps(t(y, mo, d), t(y, mo, d) + 86400):
                    continue
                for hs in listed(base / ys / ms / ds, 2):
                    h = int(hs)
                    lo = t(y, mo, d, h)
                    if h <= 23 and overlaps(lo, lo + 3600):
                        yield int(lo // 3600), base / ys / ms / ds / hs


@dataclass
class _Reader:
    """One pass over the files of a window; collects rows and counts what it skips."""

    real_root: str
    skipped: Counter[str] = field(default_factory=Counter)
    files: int = 0

    def open_lines(self, path: Path) -> Iterator[bytes] | None:
        """The lines of ``path`` (gzip when its name ends ``.gz``), or None when it is not a
        regular file inside the root (counted). Oversized lines are skipped and counted."""
        real = os.path.realpath(path)
        if not real.startswith(self.real_root.rstrip(os.sep) + os.sep):
            self.skipped["file-outside-root"] += 1
            return None
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        except OSError:
            self.skipped["file-unreadable"] += 1
            return None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            self.skipped["file-not-regular"] += 1
            return None
        self.files += 1
        return self._lines(open(fd, "rb"), str(path).endswith(".gz"))

    def _lines(self, raw: Any, gz: bool) -> Iterator[bytes]:
        with raw, (gzip.GzipFile(fileobj=raw) if gz else raw) as fh:
            try:
                for _ in range(MAX_FILE_LINES):
                    line = fh.readline(MAX_LINE_BYTES + 1)
                    if not line:
                        return
                    if len(line) > MAX_LINE_BYTES:
                        self.skipped["oversized-line"] += 1
                        while line and not line.endswith(b"\n"):  # drain the rest of it
                            line = fh.readline(MAX_LINE_BYTES)
                        continue
                    yield line
                if fh.readline(1):
                    self.skipped["file-too-long"] += 1
            except (OSError, EOFError, zlib.error):  # BadGzipFile is an OSError
                self.skipped["file-corrupt"] += 1


def _json(line: bytes) -> Any:
    try:
        return json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than it goes
        return None


def _row_problem(row: Any, header: Mapping[str, Any], hour: int, schema: Mapping[str, Any],
                 ) -> str | None:
    """Why ``row`` (a parsed line) cannot be used, or None."""
    if not isinstance(row, dict):
        return "bad-json" if row is None else "bad-row"
    rid, t = row.get("id"), row.get("t")
    if not isinstance(rid, str) or not 0 < len(rid) <= MAX_ID_CHARS:
        return "bad-id"
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
        return "bad-time"
    if row.get("model") != header["model"]:
        return "other-model"
    if row.get("version") != header["version"]:
        return "other-version"
    if int(t // 3600) != hour:
        return "time-outside-file-hour"
    for side in ("inputs", "outputs"):
        values = row.get(side)
        if not isinstance(values, dict) or values.keys() != schema[side].keys():
            return "other-schema"
    return None


def _all_str(value: Any) -> bool:
    if isinstance(value, list):
        return all(_all_str(v) for v in value)
    return isinstance(value, str)


def _convert(values: list[Any], datatype: str, shape: list[int]) -> np.ndarray | None:
    """``values`` (one per row) as one array of ``datatype`` with rows of ``shape`` (the
    schema's shape less the batch dimension, -1 any), or None if any row does not fit."""
    import numpy as np

    try:
        arr = np.asarray(values)
    except (ValueError, TypeError, OverflowError):  # ragged, or a mix numpy cannot hold
        return None
    if arr.dtype.kind not in _ACCEPTS[datatype] or arr.ndim != len(shape) + 1:
        return None
    if any(d not in (-1, got) for d, got in zip(shape, arr.shape[1:], strict=True)):
        return None
    if datatype == "BYTES":  # numpy turns [5, "a"] into strings: look at the leaves
        return arr if _all_str(values) else None
    try:
        with np.errstate(over="raise"):
            out = arr.astype(_NUMPY[datatype], casting="unsafe")
        # An int out of the datatype's range wraps when cast: refuse it instead.
        if out.dtype.kind in "iu" and not np.array_equal(out, arr):
            return None
    except (OverflowError, FloatingPointError):
        return None
    return out


@dataclass
class _Stage:
    """The rows of one file, held until the file ends and its columns are converted."""

    ids: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    values: dict[tuple[str, str], list[Any]] = field(default_factory=dict)


def _header_problem(header: Any, model: str, version: str) -> str | None:
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        return "file-bad-header"
    if header.get("model") != model:
        return "file-other-model"
    if header.get("version") != version:
        return "file-other-version"
    try:
        check_schema(header.get("schema"))  # type: ignore[arg-type]
    except ValueError:
        return "file-bad-header"
    return None


def _columns(stage: _Stage, schema: Mapping[str, Any], shapes: dict[tuple[str, str], list[int]],
             skipped: Counter[str]) -> tuple[_Stage, dict[tuple[str, str], np.ndarray]]:
    """A file's rows whose values fit their datatype and shape (and the shape earlier files
    fixed for a dynamic dimension), with their columns converted; the others are counted."""
    import numpy as np

    cols: dict[tuple[str, str], np.ndarray] = {}
    for key, values in stage.values.items():
        datatype = schema[key[0]][key[1]][0]
        arr = _convert(values, datatype, shapes[key])
        if arr is None:  # find the rows at fault, one by one, and drop only those
            bad = {i for i, v in enumerate(values) if _convert([v], datatype, shapes[key]) is None}
            if not bad:  # each fits alone: rows disagree on a dynamic dimension; first wins
                first = np.shape(values[0])
                bad = {i for i, v in enumerate(values) if np.shape(v) != first}
            skipped["bad-value"] += len(bad)
            sub = _subset(stage, [i for i in range(len(values)) if i not in bad])
            return _columns(sub, schema, shapes, skipped) if sub.ids else (sub, {})
        cols[key] = arr
        shapes[key] = list(arr.shape[1:])  # the first file fixes the dynamic dimensions
    return stage, cols


def _subset(stage: _Stage, keep: list[int]) -> _Stage:
    return _Stage([stage.ids[i] for i in keep], [stage.times[i] for i in keep],
                  {k: [v[i] for i in keep] for k, v in stage.values.items()})


def _log_files(base: Path, versions: list[str], start: float, end: float,
               ) -> list[tuple[str, str, int, Path]]:
    """``(name, version, hour, path)`` of every batch file in the hours the window overlaps,
    in the order of their names (time first), hidden (temp) files left out."""
    found = []
    for version in versions:
        for hour, folder in _hours(base / version, start, end):
            try:
                names = os.listdir(folder)
            except OSError:
                continue
            found += [(n, version, hour, folder / n) for n in names
                      if n.endswith(".jsonl.gz") and not n.startswith(".")]
    return sorted(found)


def _versions(base: Path, version: str | None) -> list[str]:
    if version is not None:
        if not NAME.fullmatch(version) or version == FEEDBACK_DIR:
            raise PredLogError(f"version {version!r} is not a valid version name",
                               hint=f"a version matches {NAME.pattern}")
        return [version]
    try:
        return sorted(n for n in os.listdir(base) if NAME.fullmatch(n) and n != FEEDBACK_DIR)
    except OSError:
        return []


def _newest_schema(reader: _Reader, model: str, files: list[tuple[str, str, int, Path]],
                   ) -> dict[str, dict[str, list[Any]]] | None:
    """The schema of the newest file with a good header: the window is read in it."""
    probe = _Reader(reader.real_root)  # its counts are not the window's
    for _name, version, _hour, path in reversed(files):
        lines = probe.open_lines(path)
        if lines is None:
            continue
        header = _json(next(lines, b""))
        lines.close()  # type: ignore[attr-defined]
        if _header_problem(header, model, version) is None:
            return check_schema(header["schema"])
    return None


def _read_file(reader: _Reader, path: Path, model: str, version: str, hour: int,
               schema: Mapping[str, Any], start: float, end: float) -> _Stage | None:
    """The usable rows of one batch file in ``[start, end)``; None if it cannot be read."""
    corrupt = reader.skipped["file-corrupt"]
    lines = reader.open_lines(path)
    if lines is None:
        return None
    first = next(lines, None)
    if first is None and reader.skipped["file-corrupt"] > corrupt:
        return None  # counted once, as corrupt
    header = _json(first or b"")
    problem = _header_problem(header, model, version)
    if problem is None and check_schema(header["schema"]) != schema:
        problem = "file-other-schema"
    if problem is not None:
        lines.close()  # type: ignore[attr-defined]
        reader.skipped[problem] += 1
        return None
    stage = _Stage(values={(side, name): [] for side in ("inputs", "outputs")
                           for name in schema[side]})
    for line in lines:
        row = _json(line)
        why = _row_problem(row, header, hour, schema)
        if why is not None:
            reader.skipped[why] += 1
            continue
        if not start <= row["t"] < end:
            continue  # outside the window: not asked for, not skipped
        stage.ids.append(row["id"])
        stage.times.append(float(row["t"]))
        for (side, name), column in stage.values.items():
            column.append(row[side][name])
    return stage


def read_window(root: Path, model: str, *, start: float, end: float,
                version: str | None = None, max_rows: int = 5_000_000,
                schema: Mapping[str, Any] | None = None) -> LogWindow:
    """The logged rows of ``model`` with ``start <= t < end`` under the sink folder ``root``.

    Only the hour folders overlapping the window are listed and opened. Without ``version``,
    every version's rows are read. The window's schema is ``schema`` when given, else the
    newest readable file's; a file with another one is skipped whole (``file-other-schema``).
    At most ``max_rows`` rows are read, oldest files first; the rest is counted
    (``over-max-rows`` lines, ``file-over-max-rows`` files). Bad data is skipped and counted,
    never raised: see the module's docstring.
    """
    import numpy as np

    _check_window(model, start, end)
    if not 0 < max_rows <= 100_000_000:
        raise PredLogError(f"max_rows {max_rows} is out of range", hint="1 to 100,000,000")
    reader = _Reader(os.path.realpath(root))
    base = Path(root) / model
    files = _log_files(base, _versions(base, version), start, end)
    want = check_schema(schema) if schema is not None else _newest_schema(reader, model, files)
    if want is None:  # no file with a readable header: count what is there and stop
        for _name, version_, hour, path in files:  # each is counted with its reason
            _read_file(reader, path, model, version_, hour, {}, start, end)
        return _empty(reader, None)
    shapes = {(side, name): list(spec[1][1:]) for side in ("inputs", "outputs")
              for name, spec in want[side].items()}
    ids: list[str] = []
    times: list[np.ndarray] = []
    cols: dict[tuple[str, str], list[np.ndarray]] = {k: [] for k in shapes}
    seen_versions: set[str] = set()
    for _name, version_, hour, path in files:
        if len(ids) >= max_rows:
            reader.skipped["file-over-max-rows"] += 1
            continue
        stage = _read_file(reader, path, model, version_, hour, want, start, end)
        if stage is None or not stage.ids:
            continue
        stage, converted = _columns(stage, want, shapes, reader.skipped)
        room = max_rows - len(ids)
        if len(stage.ids) > room:
            reader.skipped["over-max-rows"] += len(stage.ids) - room
        n = min(room, len(stage.ids))
        if n == 0:
            continue
        seen_versions.add(version_)
        ids += stage.ids[:n]
        times.append(np.asarray(stage.times[:n], dtype=np.float64))
        for key, arr in converted.items():
            cols[key].append(arr[:n])
    if not ids:
        return _empty(reader, want)
    return LogWindow(
        rows=len(ids), ids=tuple(ids),
        inputs={n: np.concatenate(cols["inputs", n]) for n in want["inputs"]},
        outputs={n: np.concatenate(cols["outputs", n]) for n in want["outputs"]},
        times=np.concatenate(times), skipped=dict(reader.skipped), files=reader.files,
        schema=want, versions=tuple(sorted(seen_versions)))


def _empty(reader: _Reader, schema: dict[str, dict[str, list[Any]]] | None) -> LogWindow:
    import numpy as np

    return LogWindow(rows=0, ids=(), inputs={}, outputs={}, times=np.zeros(0),
                     skipped=dict(reader.skipped), files=reader.files, schema=schema)


class Feedback(Mapping[str, Any]):
    """Labels by request id (a read-only mapping), with what reading them skipped."""

    def __init__(self, labels: dict[str, Any], skipped: dict[str, int], files: int) -> None:
        self._labels = labels
        self.skipped = skipped
        self.files = files

    def __getitem__(self, key: str) -> Any:
        return self._labels[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._labels)

    def __len__(self) -> int:
        return len(self._labels)


def _label_ok(label: Any) -> bool:
    if isinstance(label, str):
        return len(label) <= MAX_LABEL_CHARS
    if isinstance(label, float):
        return math.isfinite(label)
    return isinstance(label, int)  # bool is an int


def read_feedback(root: Path, model: str, *, start: float, end: float) -> Feedback:
    """The labels of ``model`` whose ``t`` lies in ``[start, end)``: request id -> label,
    the one with the latest ``t`` winning when an id has several (on a tie, the later file
    and line). Files are ``<model>/feedback/YYYY/MM/DD/HH/*.jsonl[.gz]``; only the hours the
    window overlaps are opened; bad lines and files are skipped and counted as for
    :func:`read_window`."""
    _check_window(model, start, end)
    reader = _Reader(os.path.realpath(root))
    found: list[tuple[str, int, Path]] = []
    for hour, folder in _hours(Path(root) / model / FEEDBACK_DIR, start, end):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        found += [(n, hour, folder / n) for n in names if not n.startswith(".")
                  and (n.endswith(".jsonl") or n.endswith(".jsonl.gz"))]
    best: dict[str, tuple[float, Any]] = {}
    for _name, hour, path in sorted(found):
        lines = reader.open_lines(path)
        for line in lines or ():
            row = _json(line)
            if not isinstance(row, dict):
                reader.skipped["bad-json" if row is None else "bad-row"] += 1
                continue
            rid, t, label = row.get("id"), row.get("t"), row.get("label")
            if not isinstance(rid, str) or not 0 < len(rid) <= MAX_ID_CHARS:
                reader.skipped["bad-id"] += 1
            elif isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
                reader.skipped["bad-time"] += 1
            elif int(t // 3600) != hour:
                reader.skipped["time-outside-file-hour"] += 1
            elif not _label_ok(label):
                reader.skipped["bad-label"] += 1
            elif start <= t < end and (rid not in best or t >= best[rid][0]):
                best[rid] = (float(t), label)
    return Feedback({rid: label for rid, (_t, label) in best.items()}, dict(reader.skipped),
                    reader.files)


def join_feedback(window: LogWindow, labels: Mapping[str, Any]) -> Joined:
    """The rows of ``window`` whose request id has a label in ``labels``, in window order."""
    import numpy as np

    rows = [i for i, rid in enumerate(window.ids) if rid in labels]
    ids = tuple(window.ids[i] for i in rows)
    values = [labels[rid] for rid in ids]
    # Labels of mixed types stay Python objects: numpy would turn [1, "a"] into strings.
    mixed = len({type(v) for v in values}) > 1
    return Joined(ids=ids, labels=np.asarray(values, dtype=object if mixed else None)
                  if values else np.zeros(0),
                  rows=np.asarray(rows, dtype=np.int64))
