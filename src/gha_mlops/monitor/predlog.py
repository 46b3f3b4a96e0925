"""Reading the prediction log (the format is described in :mod:`.predlog_writer`).

The log is read from a directory (a :class:`~pathlib.Path`, or a
:class:`~gha_mlops.data.stores.LocalStore`) or from an object store
(:class:`~gha_mlops.data.ports.ObjectStore`: ``open_store("s3://bucket/prefix")``). Only the
hour folders (prefixes) a window overlaps are listed; files are fetched and gunzipped by a
small thread pool (zlib and the network release the GIL) while the calling thread parses.

Everything read is hostile: a row of another model, version or schema, a corrupt line (bad
JSON, wrong types, a non-finite time, a line over :data:`MAX_LINE_BYTES`), a corrupt gzip
file, a file or object over :data:`MAX_OBJECT_BYTES` (never read whole) or inflating past
:data:`MAX_INFLATED_BYTES`, a file whose real path leaves the root (a symlink) is skipped and
COUNTED by reason in :attr:`LogWindow.skipped`, never fatal: the caller decides what counts as
enough data. A bad call (a window that is not a finite interval, a bad model name) raises
:class:`PredLogError`; a store that cannot be reached raises its
:class:`~gha_mlops.errors.RemoteError`. Reasons that start with ``file-`` count files; the
others count lines. Rows are judged one by one: whether a row is kept never depends on its
neighbours (except that the first row fixes a dynamic dimension, as documented).

Speed: each line is decoded by msgspec straight into a struct typed by the window's schema
(the types, the id's length, the model and version, the exact tensor names, the integer ranges
are checked in C); only a line that fails is looked at again by the slow path, which names
its reason. Columns are then converted with one numpy call per group of scalar tensors.
"""

from __future__ import annotations

import calendar
import contextlib
import gc
import json
import math
import os
import stat
import zlib
from collections import Counter
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from gha_mlops.errors import ExitCode, GhaMlopsError
from gha_mlops.monitor.predlog_writer import (
    FEEDBACK_DIR,
    FORMAT,
    MAX_ID_CHARS,
    NAME,
    check_schema,
    hour_path,
)

if TYPE_CHECKING:
    from concurrent.futures import Future

    import numpy as np

    from gha_mlops.data.ports import ObjectStore

#: Where a log lives: a directory, or an object store (an S3 prefix, a LocalStore).
Source = Union[Path, str, "os.PathLike[str]", "ObjectStore"]

MAX_LINE_BYTES = 1 << 20  # a longer line is skipped ("oversized-line")
MAX_FILE_LINES = 1_000_000  # a file with more lines is cut there ("file-too-long")
MAX_OBJECT_BYTES = 256 << 20  # a larger file/object is skipped unread ("file-too-large")
MAX_INFLATED_BYTES = 512 << 20  # a gzip that inflates past this is skipped ("file-too-large")
MAX_LABEL_CHARS = 1024
_WORKERS_DIR = 2  # fetch + gunzip threads for a directory (the CPU is the limit)
_WORKERS_STORE = 8  # for an object store (the round trips are)
_AHEAD = 2  # files fetched ahead per worker: bounds the memory held in flight
_NUMPY = {"BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32",
          "UINT64": "uint64", "INT8": "int8", "INT16": "int16", "INT32": "int32",
          "INT64": "int64", "FP16": "float16", "FP32": "float32", "FP64": "float64",
          "BYTES": "str"}
# Which kinds of array JSON values become (numpy's dtype.kind) each datatype accepts: no
# silent float -> int or number -> string casts.
_ACCEPTS = {"BOOL": "b", "BYTES": "U"} | {k: "iu" for k in _NUMPY if "INT" in k} | {
    "FP16": "iuf", "FP32": "iuf", "FP64": "iuf"}
_INT_RANGE = {f"{s}INT{b}": ((0, 2**b - 1) if s else (-(2 ** (b - 1)), 2 ** (b - 1) - 1))
              for s in ("", "U") for b in (8, 16, 32, 64)}


class PredLogError(GhaMlopsError):
    """A bad call to the reader (not bad data: that is skipped and counted)."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class LogWindow:
    """The rows of a window, oldest file first. ``inputs``/``outputs`` map each tensor name
    to an array with one row per instance (``rows`` first); ``times`` are unix seconds;
    ``skipped`` maps a reason to a count (``file-*`` reasons count files, the rest lines);
    ``files`` is the number of files read. ``rows == 0`` means no data: the caller says
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


# ------------------------------------------------------------------------------ sources


@dataclass(frozen=True)
class _File:
    """One log file: its name (sorts by time), version, hour (unix hours) and key (the
    POSIX path below the source's root); ``size`` when the listing gave it."""

    name: str
    version: str
    hour: int
    key: str
    size: int | None = None


def _hours_of(start: float, end: float) -> range:
    """The unix hours whose ``[h, h + 1)`` hour overlaps ``[start, end)``, in years 1970 to
    9998 (the path holds four digits of year)."""
    lo = max(math.floor(start / 3600), 0)
    hi = min(math.ceil(end / 3600) - 1, int(calendar.timegm((9999, 1, 1, 0, 0, 0)) // 3600) - 1)
    return range(lo, hi + 1)


class _Dir:
    """A log in a directory: folders are listed level by level (pruned to the window), a
    file is opened only when its real path stays inside the root."""

    workers = _WORKERS_DIR

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.real_root = os.path.realpath(root)

    def listdir(self, rel: str) -> list[str]:
        try:
            return os.listdir(self.root / rel)
        except OSError:
            return []

    def hour_folders(self, base: str, start: float, end: float) -> Iterator[tuple[int, str]]:
        """``(hour, folder)`` of every ``YYYY/MM/DD/HH`` folder under ``base`` whose hour
        overlaps ``[start, end)``: pruned level by level, so a window never lists the rest."""

        def listed(folder: str, width: int) -> list[str]:
            return sorted(n for n in self.listdir(folder) if len(n) == width and n.isdigit())

        def overlaps(lo: float, hi: float) -> bool:
            return lo < end and hi > start

        def t(y: int, mo: int = 1, d: int = 1, h: int = 0) -> float:
            return float(calendar.timegm((y, mo, d, h, 0, 0)))

        for ys in listed(base, 4):
            y = int(ys)
            if not 1970 <= y <= 9998 or not overlaps(t(y), t(y + 1)):
                continue
            for ms in listed(f"{base}/{ys}", 2):
                mo = int(ms)
                if not 1 <= mo <= 12 or not overlaps(t(y, mo), t(y + mo // 12, mo % 12 + 1)):
                    continue
                for ds in listed(f"{base}/{ys}/{ms}", 2):
                    d = int(ds)
                    if not 1 <= d <= 31 or not overlaps(t(y, mo, d), t(y, mo, d) + 86400):
                        continue
                    for hs in listed(f"{base}/{ys}/{ms}/{ds}", 2):
                        h = int(hs)
                        lo = t(y, mo, d, h)
                        if h <= 23 and overlaps(lo, lo + 3600):
                            yield int(lo // 3600), f"{base}/{ys}/{ms}/{ds}/{hs}"

    def files(self, base: str, start: float, end: float) -> Iterator[tuple[int, str, int | None]]:
        """``(hour, key, size)`` of every entry in the hour folders under ``base``."""
        for hour, folder in self.hour_folders(base, start, end):
            for name in self.listdir(folder):
                yield hour, f"{folder}/{name}", None

    def versions(self, model: str) -> list[str]:
        return [n for n in self.listdir(model) if NAME.fullmatch(n) and n != FEEDBACK_DIR]

    def fetch(self, key: str, size: int | None, limit: int = MAX_OBJECT_BYTES) -> bytes | str:
        """The bytes of ``key`` (at most ``limit``), or the reason it is skipped."""
        real = os.path.realpath(self.root / key)
        if not real.startswith(self.real_root.rstrip(os.sep) + os.sep):
            return "file-outside-root"
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        except OSError:
            return "file-unreadable"
        with open(fd, "rb") as fh:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return "file-not-regular"
            if info.st_size > MAX_OBJECT_BYTES:
                return "file-too-large"
            try:
                data = fh.read(min(limit, MAX_OBJECT_BYTES) + 1)
            except OSError:
                return "file-unreadable"
        if len(data) > MAX_OBJECT_BYTES:  # it grew since fstat
            return "file-too-large"
        return data


class _Store:
    """A log in an object store: one LIST per hour (per day, month or year for a long
    window) under the model's prefix, never the whole bucket; sizes from the listing are
    checked before a GET, which asks for at most :data:`MAX_OBJECT_BYTES` + 1 bytes."""

    workers = _WORKERS_STORE

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def files(self, base: str, start: float, end: float) -> Iterator[tuple[int, str, int | None]]:
        hours = _hours_of(start, end)
        if not hours:
            return
        # The finest prefixes that keep the LISTs few: hours for two days, days for two
        # months, months for two years, years beyond.
        n = len(hours)
        if n > 2 * 366 * 24:
            first, last = (int(hour_path(h * 3600)[:4]) for h in (hours[0], hours[-1]))
            prefixes = [f"{y:04d}" for y in range(first, last + 1)]
        else:
            width = 13 if n <= 48 else 10 if n <= 62 * 24 else 7
            prefixes = sorted({hour_path(h * 3600)[:width] for h in hours})
        for prefix in prefixes:
            for key, size in self.store.list(f"{base}/{prefix}/"):
                hour = _parse_hour(key[len(base) + 1:].split("/"))
                if hour is not None and hours.start <= hour < hours.stop:
                    yield hour, key, size

    def versions(self, model: str) -> list[str]:
        """The versions under ``model/``. A store that lists folders (``list_dirs``) is asked
        for them; otherwise the model's keys are listed (one request per 1,000)."""
        list_dirs = getattr(self.store, "list_dirs", None)
        if callable(list_dirs):
            names = {str(n).strip("/") for n in list_dirs(f"{model}/")}
        else:
            names = {key[len(model) + 1:].split("/", 1)[0]
                     for key, _size in self.store.list(f"{model}/")}
        return [n for n in names if NAME.fullmatch(n) and n != FEEDBACK_DIR]

    def fetch(self, key: str, size: int | None, limit: int = MAX_OBJECT_BYTES) -> bytes | str:
        if size is not None and size > MAX_OBJECT_BYTES:
            return "file-too-large"
        try:
            data = self.store.read_range(key, 0, min(limit, MAX_OBJECT_BYTES) + 1)
        except (KeyError, ValueError):  # gone since the listing; a key the store refuses
            return "file-unreadable"
        if len(data) > MAX_OBJECT_BYTES:
            return "file-too-large"
        return data


def _parse_hour(parts: list[str]) -> int | None:
    """The unix hour of ``[YYYY, MM, DD, HH, name]``, or None if it is not that form."""
    if len(parts) != 5 or not all(len(p) == w and p.isdigit()
                                  for p, w in zip(parts, (4, 2, 2, 2), strict=False)):
        return None
    y, mo, d, h = (int(p) for p in parts[:4])
    if not (1970 <= y <= 9998 and 1 <= mo <= 12 and 1 <= d <= 31 and h <= 23):
        return None
    lo = calendar.timegm((y, mo, d, h, 0, 0))
    if hour_path(lo) != "/".join(parts[:4]):  # 2026/02/31 is not a day
        return None
    return int(lo // 3600)


def _open_source(source: Source) -> _Dir | _Store:
    if isinstance(source, (str, os.PathLike)):
        return _Dir(Path(source))
    from gha_mlops.data.stores import LocalStore

    if isinstance(source, LocalStore):  # a directory: keep the symlink protection
        return _Dir(source.root)
    if not (callable(getattr(source, "list", None))
            and callable(getattr(source, "read_range", None))):
        raise PredLogError(f"{source!r} is neither a directory nor an object store",
                           hint="give a Path, or open_store('s3://bucket/prefix')")
    return _Store(source)


# ------------------------------------------------------------------------------ bytes


def _zlib() -> Any:
    """ISA-L's inflate when installed (``isal``: about 3x zlib's speed), else zlib's."""
    try:
        from isal import isal_zlib  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return zlib
    return isal_zlib


def _inflate(raw: bytes, limit: int, *, head: bool = False) -> tuple[bytes, str | None]:
    """``raw`` gunzipped (every member), at most ``limit`` bytes, and what went wrong:
    ``file-corrupt`` (what inflated before the damage is returned), ``file-too-large``
    (unless ``head``: then the first ``limit`` bytes are all that is wanted)."""
    out: list[bytes] = []
    total = 0
    data = raw
    lib = _zlib()
    while True:
        d = lib.decompressobj(31)
        try:
            chunk = d.decompress(data, limit - total + 1)
        except (zlib.error, lib.error):
            return b"".join(out), "file-corrupt"
        out.append(chunk)
        total += len(chunk)
        if total > limit:
            return (b"".join(out)[:limit], None) if head else (b"", "file-too-large")
        if not d.eof:  # cut short
            return b"".join(out), "file-corrupt"
        data = d.unused_data
        if not data.strip(b"\0"):  # the end (gzip allows zero padding)
            return b"".join(out), None
        if not data.startswith(b"\x1f\x8b"):
            return b"".join(out), "file-corrupt"


def _split(buf: bytes, cut: bool, skipped: Counter[str]) -> list[bytes]:
    """The lines of ``buf`` (without their newline); ``cut`` when the file ended early, so
    its last unfinished line is dropped. Oversized lines are skipped and counted; a file of
    more than :data:`MAX_FILE_LINES` lines is cut there (``file-too-long``)."""
    lines = buf.split(b"\n")
    last = lines.pop()  # after the last newline: b"" or a line without one
    if last and not cut:
        if len(last) > MAX_LINE_BYTES:
            skipped["oversized-line"] += 1
        else:
            lines.append(last)
    if len(lines) > MAX_FILE_LINES:
        lines = lines[:MAX_FILE_LINES]
        skipped["file-too-long"] += 1
    if len(buf) >= MAX_LINE_BYTES:  # only then can one line be too long
        long = sum(1 for line in lines if len(line) >= MAX_LINE_BYTES)
        if long:
            skipped["oversized-line"] += long
            lines = [line for line in lines if len(line) < MAX_LINE_BYTES]
    return lines


def _fetch_lines(src: _Dir | _Store, key: str, size: int | None,
                 ) -> tuple[bytes | None, list[str]]:
    """Run on a worker: the inflated bytes of ``key`` and the file reasons met on the way
    (None bytes: skipped whole)."""
    raw = src.fetch(key, size)
    if isinstance(raw, str):
        return None, [raw]
    if not key.endswith(".gz"):
        return raw, []
    buf, why = _inflate(raw, MAX_INFLATED_BYTES)
    if why == "file-too-large":
        return None, [why]
    return buf, [why] if why else []


def _fetched(src: _Dir | _Store, items: Sequence[tuple[str, int | None]],
             ) -> Generator[tuple[bytes | None, list[str]], None, None]:
    """``_fetch_lines`` of each item, in order, fetched ahead by a small thread pool; only
    as far ahead as the caller consumes (closing the generator stops the rest)."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    if not items:
        return
    pool = ThreadPoolExecutor(max_workers=min(src.workers, len(items)),
                              thread_name_prefix="predlog-read")
    pending: deque[Future[tuple[bytes | None, list[str]]]] = deque()
    try:
        it = iter(items)
        for key, size in it:
            pending.append(pool.submit(_fetch_lines, src, key, size))
            if len(pending) >= src.workers * _AHEAD:
                break
        while pending:
            result = pending.popleft().result()
            for key, size in it:
                pending.append(pool.submit(_fetch_lines, src, key, size))
                break
            yield result
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True)


# ------------------------------------------------------------------------------ rows


def _json(line: bytes) -> Any:
    try:
        return json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than it goes
        return None


def _finite_time(t: Any) -> bool:
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        return False
    try:
        return math.isfinite(t)
    except OverflowError:  # an int of 400 digits
        return False


def _id_time_problem(row: Any) -> str | None:
    """Why a parsed line of the log or the feedback is not a row with an id and a time."""
    if not isinstance(row, dict):
        return "bad-json" if row is None else "bad-row"
    rid, t = row.get("id"), row.get("t")  # type: Any, Any
    if not isinstance(rid, str) or not 0 < len(rid) <= MAX_ID_CHARS:
        return "bad-id"
    if not _finite_time(t):
        return "bad-time"
    return None


def _row_problem(row: Any, header: Mapping[str, Any], hour: int, schema: Mapping[str, Any],
                 ) -> str | None:
    """Why ``row`` (a parsed line) cannot be used, or None (its values are judged apart)."""
    problem = _id_time_problem(row)
    if problem is not None:
        return problem
    if row.get("model") != header["model"]:
        return "other-model"
    if row.get("version") != header["version"]:
        return "other-version"
    if int(row["t"] // 3600) != hour:
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


@dataclass(frozen=True)
class _Tensor:
    """One tensor of the schema as the reader handles it."""

    side: str
    name: str
    index: int  # its field's place in the side's struct (tensor names need not be
    datatype: str  # identifiers: the fields are f0, f1, ... renamed to them)
    dims: tuple[int, ...]  # the shape less the batch dimension

    @property
    def field(self) -> str:
        return f"f{self.index}"

    @property
    def scalar(self) -> bool:
        """One number per instance: read with its datatype's group in one numpy call."""
        return not self.dims and self.datatype != "BYTES"


@dataclass
class _Plan:
    """The window's schema turned into typed decoders (one per version) and column groups."""

    schema: dict[str, dict[str, list[Any]]]
    model: str
    tensors: list[_Tensor]
    shapes: dict[tuple[str, str], list[int]]
    decoders: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, schema: dict[str, dict[str, list[Any]]], model: str) -> _Plan:
        tensors = []
        for side in ("inputs", "outputs"):
            # Scalars first, grouped by datatype: each group is one slice of a row's tuple.
            specs = sorted(schema[side].items(), key=lambda kv: (
                len(kv[1][1]) > 1 or kv[1][0] == "BYTES", kv[1][0]))
            tensors += [_Tensor(side, name, i, spec[0], tuple(spec[1][1:]))
                        for i, (name, spec) in enumerate(specs)]
        return cls(schema, model, tensors, {(t.side, t.name): list(t.dims) for t in tensors})

    def decoder(self, version: str) -> Any:
        """A msgspec decoder of one line of ``version`` into a typed row struct."""
        if version not in self.decoders:
            self.decoders[version] = _row_decoder(self, version)
        return self.decoders[version]


def _import_msgspec() -> Any:
    try:
        import msgspec
    except ImportError as err:
        from gha_mlops.errors import missing_extra

        raise missing_extra("msgspec", "monitor") from err
    return msgspec


def _value_type(datatype: str, dims: tuple[int, ...]) -> Any:
    """The msgspec type of one instance's value: what the slow path would accept."""
    from typing import Annotated

    msgspec = _import_msgspec()
    base: Any
    if datatype == "BOOL":
        base = bool
    elif datatype == "BYTES":
        base = str
    elif datatype.startswith("FP"):
        base = float  # an overflow of FP16/FP32 is found when the column is cast
    else:
        lo, hi = _INT_RANGE[datatype]
        base = Annotated[int, msgspec.Meta(ge=lo, le=hi)]
    for d in reversed(dims):
        base = list[base] if d == -1 else Annotated[list[base], msgspec.Meta(
            min_length=d, max_length=d)]
    return base


def _row_decoder(plan: _Plan, version: str) -> Any:
    from typing import Annotated, Literal

    msgspec = _import_msgspec()
    sides = {}
    for side in ("inputs", "outputs"):
        ts = [t for t in plan.tensors if t.side == side]
        sides[side] = msgspec.defstruct(
            f"_{side}", [(t.field, _value_type(t.datatype, t.dims)) for t in ts],
            rename={t.field: t.name for t in ts}, forbid_unknown_fields=True, gc=False)
    row = msgspec.defstruct("_Row", [
        ("id", Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS)]),
        ("t", float), ("model", Literal[plan.model]), ("version", Literal[version]),
        ("inputs", sides["inputs"]), ("outputs", sides["outputs"])], gc=False)
    return msgspec.json.Decoder(row)


def _decode_rows(lines: list[bytes], decoder: Any, header: Mapping[str, Any], hour: int,
                 schema: Mapping[str, Any], start: float, end: float,
                 skipped: Counter[str]) -> list[Any]:
    """The typed rows of ``lines``; a line the typed decoder refuses is parsed again with
    the standard library to count it by its reason (or kept: a NaN in a float tensor)."""
    msgspec = _import_msgspec()
    errors = (msgspec.DecodeError, msgspec.ValidationError)
    try:
        return list(map(decoder.decode, lines))  # the common case: every line is fine
    except errors:
        pass
    rows = []
    row_type = decoder.type
    for line in lines:
        try:
            rows.append(decoder.decode(line))
            continue
        except errors:
            obj = _json(line)
        why = _row_problem(obj, header, hour, schema)
        if why is not None:
            skipped[why] += 1
            continue
        try:  # NaN and Infinity (standard JSON has none) end here
            rows.append(msgspec.convert(obj, row_type))
        except errors:
            if start <= obj["t"] < end:  # a row outside the window is not asked for
                skipped["bad-value"] += 1
    return rows


@dataclass
class _Part:
    """The usable rows of one file, as columns."""

    ids: list[str]
    times: np.ndarray
    columns: dict[tuple[str, str], np.ndarray]


def _file_part(lines: list[bytes], header: Mapping[str, Any], hour: int, plan: _Plan,
               start: float, end: float, skipped: Counter[str]) -> _Part | None:
    """The rows of one file's ``lines`` (its header line gone) in ``[start, end)``."""
    import operator

    import numpy as np

    rows = _decode_rows(lines, plan.decoder(header["version"]), header, hour, plan.schema,
                        start, end, skipped)
    if not rows:
        return None
    times = np.fromiter(map(operator.attrgetter("t"), rows), np.float64, len(rows))
    finite = np.isfinite(times)
    wrong_hour = finite & (np.floor_divide(times, 3600.0) != hour)
    for why, mask in (("bad-time", ~finite), ("time-outside-file-hour", wrong_hour)):
        if mask.any():
            skipped[why] += int(mask.sum())
    keep = finite & ~wrong_hour & (times >= start) & (times < end)
    if not keep.all():
        rows = [r for r, k in zip(rows, keep.tolist(), strict=True) if k]
        times = times[keep]
    while rows:
        columns, bad = _columns(rows, plan)
        if bad is None:
            return _Part([r.id for r in rows], times, columns)
        skipped["bad-value"] += int(bad.sum())
        rows = [r for r, b in zip(rows, bad.tolist(), strict=True) if not b]
        times = times[~bad]
    return None


def _columns(rows: list[Any], plan: _Plan,
             ) -> tuple[dict[tuple[str, str], np.ndarray], np.ndarray | None]:
    """The columns of ``rows`` (typed structs), or the mask of the rows that do not fit: a
    float out of an FP16/FP32 range, a dynamic dimension other than the first row's."""
    import itertools
    import operator

    import numpy as np

    astuple = _import_msgspec().structs.astuple
    n = len(rows)
    bad = np.zeros(n, dtype=bool)
    out: dict[tuple[str, str], np.ndarray] = {}
    for side in ("inputs", "outputs"):
        # A struct's fields as a tuple (one C call) beat one getattr per value.
        tuples = list(map(astuple, map(operator.attrgetter(side), rows)))
        scalars: dict[str, list[_Tensor]] = {}
        for t in plan.tensors:
            if t.side != side:
                continue
            if t.scalar:
                scalars.setdefault(t.datatype, []).append(t)
                continue
            values = list(map(operator.itemgetter(t.index), tuples))
            if not t.dims:  # strings, as the typed decoder checked: one call
                out[side, t.name] = np.array(values, dtype=str)
                continue
            arr = _convert(values, t.datatype, plan.shapes[side, t.name])
            if arr is None:  # which rows: those that do not fit alone, else not the first's
                shape = plan.shapes[side, t.name]
                alone = [_convert([v], t.datatype, shape) is None for v in values]
                if not any(alone):
                    first = np.shape(values[0])
                    alone = [np.shape(v) != first for v in values]
                bad |= np.asarray(alone, dtype=bool)
                continue
            out[side, t.name] = arr
        for datatype, ts in scalars.items():  # one numpy call for a group of scalars
            wide = "float64" if datatype.startswith("FP") else _NUMPY[datatype]
            lo, hi = ts[0].index, ts[-1].index + 1  # contiguous: see _Plan.of
            flat = (map(operator.itemgetter(lo), tuples) if len(ts) == 1 else
                    itertools.chain.from_iterable(map(operator.itemgetter(slice(lo, hi)),
                                                      tuples)))
            block = np.fromiter(flat, wide, n * len(ts)).reshape(n, len(ts))
            if datatype in ("FP16", "FP32"):  # a finite float64 that overflows is refused
                with np.errstate(over="ignore"):
                    cast = block.astype(_NUMPY[datatype])
                bad |= (np.isinf(cast) & np.isfinite(block)).any(axis=1)
                block = cast
            for j, t in enumerate(ts):  # views: the window's concatenation copies them
                out[side, t.name] = block[:, j]
    if bad.any():
        return {}, bad
    for t in plan.tensors:  # the first rows read fix the dynamic dimensions
        plan.shapes[t.side, t.name] = list(out[t.side, t.name].shape[1:])
    return out, None


# ------------------------------------------------------------------------------ windows


def _versions(src: _Dir | _Store, model: str, version: str | None) -> list[str]:
    if version is not None:
        if not NAME.fullmatch(version) or version == FEEDBACK_DIR:
            raise PredLogError(f"version {version!r} is not a valid version name",
                               hint=f"a version matches {NAME.pattern}")
        return [version]
    return sorted(src.versions(model))


def _log_files(src: _Dir | _Store, model: str, versions: list[str], start: float,
               end: float) -> list[_File]:
    """Every batch file in the hours the window overlaps, in the order of their names
    (time first), hidden (temp) files left out."""
    found = []
    for version in versions:
        for hour, key, size in src.files(f"{model}/{version}", start, end):
            name = key.rpartition("/")[2]
            if name.endswith(".jsonl.gz") and not name.startswith("."):
                found.append(_File(name, version, hour, key, size))
    return sorted(found, key=lambda f: (f.name, f.version, f.hour, f.key))


_PROBE_BYTES = 64 << 10


def _header_of(src: _Dir | _Store, f: _File) -> Any:
    """The parsed first line of ``f`` (None if unreadable): a ranged read first, the
    whole file only when the header line is longer than what that inflated to."""
    for limit in (_PROBE_BYTES, MAX_OBJECT_BYTES):
        raw = src.fetch(f.key, f.size, limit)
        if isinstance(raw, str):
            return None
        buf, _why = _inflate(raw, MAX_LINE_BYTES + 1, head=True)
        line, newline, _rest = buf.partition(b"\n")
        if newline or len(raw) <= limit:  # a whole line, or the whole file
            return _json(line) if len(line) < MAX_LINE_BYTES else None
    return None


def _newest_schema(src: _Dir | _Store, model: str, files: list[_File],
                   ) -> dict[str, dict[str, list[Any]]] | None:
    """The schema of the newest file with a good header: the window is read in it."""
    for f in reversed(files):
        header = _header_of(src, f)
        if _header_problem(header, model, f.version) is None:
            return check_schema(header["schema"])
    return None


def _file_lines(f: _File, buf: bytes | None, reasons: list[str], model: str,
                schema: Mapping[str, Any] | None, skipped: Counter[str],
                seen: dict[tuple[bytes, str], tuple[Any, str | None]],
                ) -> tuple[dict[str, Any], list[bytes]] | None:
    """The header and row lines of a fetched file, or None when it is skipped whole
    (counted with its reason)."""
    if buf is None:
        skipped.update(reasons)
        return None
    cut = "file-corrupt" in reasons
    lines = _split(buf, cut, skipped)
    if not lines:
        skipped["file-corrupt" if cut else "file-bad-header"] += 1
        return None
    known = seen.get((lines[0], f.version))  # one writer's files share their header line
    if known is None:
        header = _json(lines[0])
        problem = _header_problem(header, model, f.version)
        if problem is None and check_schema(header["schema"]) != schema:
            problem = "file-other-schema"
        if len(seen) < 64:
            seen[lines[0], f.version] = known = (header, problem)
    else:
        header, problem = known
    if problem is not None:  # the rest of the file is never looked at
        skipped[problem] += 1
        return None
    if cut:
        skipped["file-corrupt"] += 1
    return header, lines[1:]


def read_window(source: Source, model: str, *, start: float, end: float,
                version: str | None = None, max_rows: int = 5_000_000,
                schema: Mapping[str, Any] | None = None) -> LogWindow:
    """The logged rows of ``model`` with ``start <= t < end`` under ``source`` (the sink's
    directory, or an object store such as ``open_store("s3://bucket/prefix")``).

    Only the hour folders (prefixes) overlapping the window are listed and read. Without
    ``version``, every version's rows are read. The window's schema is ``schema`` when
    given, else the newest readable file's; a file with another one is skipped whole
    (``file-other-schema``). At most ``max_rows`` rows are read, oldest files first; the
    rest is counted (``over-max-rows`` lines, ``file-over-max-rows`` files). Bad data is
    skipped and counted, never raised: see the module's docstring.
    """
    import itertools

    _check_window(model, start, end)
    if not 0 < max_rows <= 100_000_000:
        raise PredLogError(f"max_rows {max_rows} is out of range", hint="1 to 100,000,000")
    src = _open_source(source)
    skipped: Counter[str] = Counter()
    files = _log_files(src, model, _versions(src, model, version), start, end)
    want = check_schema(schema) if schema is not None else _newest_schema(src, model, files)
    plan = _Plan.of(want, model) if want is not None else None
    parts: list[_Part] = []
    rows = read = 0
    seen_versions: set[str] = set()
    seen: dict[tuple[bytes, str], tuple[Any, str | None]] = {}
    fetched = _fetched(src, [(f.key, f.size) for f in files])
    with contextlib.closing(fetched), _paused_gc():
        for i, (f, (buf, reasons)) in enumerate(zip(files, fetched, strict=False)):
            read += buf is not None
            got = _file_lines(f, buf, reasons, model, want, skipped, seen)
            if got is None or plan is None:
                continue
            part = _file_part(got[1], got[0], f.hour, plan, start, end, skipped)
            if part is None:
                continue
            room = max_rows - rows
            if len(part.ids) > room:
                skipped["over-max-rows"] += len(part.ids) - room
                part = _Part(part.ids[:room], part.times[:room],
                             {k: v[:room] for k, v in part.columns.items()})
            parts.append(part)
            rows += len(part.ids)
            seen_versions.add(f.version)
            if rows >= max_rows:  # the newer files are counted, not read
                if len(files) > i + 1:
                    skipped["file-over-max-rows"] += len(files) - i - 1
                break
    if not parts or want is None:
        return _empty(skipped, read, want)
    import numpy as np

    def cat(side: str) -> dict[str, np.ndarray]:
        return {n: np.concatenate([p.columns[side, n] for p in parts]) for n in want[side]}

    return LogWindow(
        rows=rows, ids=tuple(itertools.chain.from_iterable(p.ids for p in parts)),
        inputs=cat("inputs"), outputs=cat("outputs"),
        times=np.concatenate([p.times for p in parts]), skipped=dict(skipped), files=read,
        schema=want, versions=tuple(sorted(seen_versions)))


@contextlib.contextmanager
def _paused_gc() -> Iterator[None]:
    """The cyclic GC off while a window is read: the read allocates millions of short-lived
    tuples that can hold no cycle, and the collector would walk every live object of the
    process once per ~70,000 of them (10% of the read). It is back on, as it was, after."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _empty(skipped: Counter[str], files: int, schema: dict[str, dict[str, list[Any]]] | None,
           ) -> LogWindow:
    import numpy as np

    return LogWindow(rows=0, ids=(), inputs={}, outputs={}, times=np.zeros(0),
                     skipped=dict(skipped), files=files, schema=schema)


# ------------------------------------------------------------------------------ feedback


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


def _label_problem(row: Any, hour: int) -> str | None:
    problem = _id_time_problem(row)
    if problem is not None:
        return problem
    if int(row["t"] // 3600) != hour:
        return "time-outside-file-hour"
    if not _label_ok(row.get("label")):
        return "bad-label"
    return None


def read_feedback(source: Source, model: str, *, start: float, end: float) -> Feedback:
    """The labels of ``model`` whose ``t`` lies in ``[start, end)``: request id -> label,
    the one with the latest ``t`` winning when an id has several (on a tie, the later file
    and line). Files are ``<model>/feedback/YYYY/MM/DD/HH/*.jsonl[.gz]`` under ``source``
    (a directory or an object store, as for :func:`read_window`); only the hours the window
    overlaps are listed and read; bad lines and files are skipped and counted as for
    :func:`read_window`."""
    _check_window(model, start, end)
    src = _open_source(source)
    skipped: Counter[str] = Counter()
    found = []
    for hour, key, size in src.files(f"{model}/{FEEDBACK_DIR}", start, end):
        name = key.rpartition("/")[2]
        if not name.startswith(".") and (name.endswith(".jsonl") or name.endswith(".jsonl.gz")):
            found.append((name, hour, key, size))
    found.sort()
    best: dict[str, tuple[float, Any]] = {}
    read = 0
    fetched = _fetched(src, [(key, size) for _name, _hour, key, size in found])
    try:
        for (_name, hour, _key, _size), (buf, reasons) in zip(found, fetched, strict=True):
            skipped.update(reasons)
            if buf is None:
                continue
            read += 1
            for line in _split(buf, "file-corrupt" in reasons, skipped):
                row = _json(line)
                why = _label_problem(row, hour)
                if why is not None:
                    skipped[why] += 1
                    continue
                rid, t = row["id"], row["t"]
                if start <= t < end and (rid not in best or t >= best[rid][0]):
                    best[rid] = (float(t), row["label"])
    finally:
        fetched.close()
    return Feedback({rid: label for rid, (_t, label) in best.items()}, dict(skipped), read)


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


# ------------------------------------------------------------------------------ small files


def _small_key(key: str) -> str:
    parts = key.split("/") if isinstance(key, str) else []
    if not 1 <= len(parts) <= 16 or not all(NAME.fullmatch(p) for p in parts):
        raise PredLogError(f"key {key!r} is not a relative path of plain names",
                           hint=f"each part of the key matches {NAME.pattern}")
    return key


def read_small(source: Source, key: str, limit: int) -> bytes | None:
    """The bytes of the small file ``key`` beside the log (``<model>/monitor/alarm.json``),
    or None when there is none. A file larger than ``limit`` is never read whole: it raises
    :class:`PredLogError`, as does a directory's file reached through a symlink leading out
    of the root or one that is not a regular file."""
    _small_key(key)
    if not 0 < limit <= MAX_OBJECT_BYTES:
        raise PredLogError(f"limit {limit} is out of range", hint=f"1 to {MAX_OBJECT_BYTES}")
    src = _open_source(source)
    if isinstance(src, _Dir):
        try:
            os.lstat(src.root / key)
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None
        data = src.fetch(key, None, limit)
        where = str(src.root / key)
    else:
        size = src.store.size(key)
        if size is None:
            return None
        where = f"{src.store.url}/{key}"
        if size > limit:
            data = "file-too-large"
        else:
            try:
                data = src.store.read_range(key, 0, limit + 1)
            except KeyError:
                return None
    if isinstance(data, bytes) and len(data) > limit:
        data = "file-too-large"
    if isinstance(data, str):
        why = {"file-too-large": f"is larger than {limit} bytes",
               "file-outside-root": "leads out of the log's directory (a symlink)",
               "file-not-regular": "is not a regular file"}.get(data, "cannot be read")
        raise PredLogError(f"{where} {why}",
                           hint="it is not a file gha-mlops wrote: move it away and run again")
    return data


def write_small(source: Source, key: str, data: bytes) -> None:
    """Store ``data`` as ``key`` beside the log, whole or not at all: a temp file and a
    rename in a directory (which must not lead out of the root), one PUT in a store."""
    _small_key(key)
    src = _open_source(source)
    if isinstance(src, _Store):
        src.store.upload_bytes(key, data)
        return
    from gha_mlops._fs import atomic_write_bytes

    path = src.root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    real = os.path.realpath(path.parent)
    if real != src.real_root and not real.startswith(src.real_root.rstrip(os.sep) + os.sep):
        raise PredLogError(f"{path.parent} leads out of the log's directory {src.root}",
                           hint="remove the symlink, or give the directory it leads to")
    atomic_write_bytes(path, data)
