"""The writing side of the prediction log: batches of sampled requests, gzipped JSON lines.

Standalone by contract: this file imports only the standard library, because the serving
image copies it next to ``oip_server.py``. It must never import gha_mlops or numpy (values
with a ``tolist()`` method, numpy arrays included, are converted by duck typing).

The format (``gha-mlops.predlog/1``), one batch = one file::

    <model>/<version>/<YYYY>/<MM>/<DD>/<HH>/<unix-ms:13>-<pid:07>-<writer:8hex>-<seq:06>.jsonl.gz

The path's hour (UTC) is the hour of every row's ``t`` in the file: a batch is cut when a row
of another hour arrives, so a reader opens only the hours its window overlaps. Names sort by
the time of the batch's first row (fixed width), then by process, writer and sequence. The
first line is the header ``{"format", "model", "version", "sample", "schema": {"inputs":
{name: [datatype, shape]}, "outputs": {...}}}`` (datatypes and shapes as in the Open Inference
Protocol, the first dimension the batch, ``-1`` dynamic); every other line is one instance:
``{"id", "t", "model", "version", "inputs": {name: nested list}, "outputs": {...}}`` with the
value's shape the schema's shape less its first dimension. Non-finite floats are written as
the tokens ``NaN``/``Infinity`` (Python's JSON); they are allowed only in FP tensors.

Feedback (the true label of a request id, arriving later) lives beside the versions::

    <model>/feedback/<YYYY>/<MM>/<DD>/<HH>/<name>.jsonl[.gz]   lines {"id", "label", "t"}

:func:`write_feedback` writes such a file; a person or a route may drop one there too.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import os
import queue
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

FORMAT = "gha-mlops.predlog/1"
FEEDBACK_DIR = "feedback"  # a reserved name: no version may be called so
MAX_ID_CHARS = 128
_YEAR_10000 = 253402300800.0  # unix seconds; the path holds four digits of year
DATATYPES = frozenset({"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16",
                       "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"})
# A path component: no '/', no leading '.', so no '..' and no hidden temp-file names.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
TENSOR_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/:-]{0,127}")


class Sink(Protocol):
    """Where finished batches go: a directory, or an object store prefix."""

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under the relative POSIX ``key``, whole or not at all (a reader
        must never see half a file). May be slow; it runs on the writer's thread."""


class DirectorySink:
    """A :class:`Sink` on a local directory: temp file in the target folder + rename."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.fspath(root)

    def put(self, key: str, data: bytes) -> None:
        path = os.path.join(self.root, *key.split("/"))
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        # A leading '.' hides the temp file from readers (they skip hidden names).
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.urandom(6).hex()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def check_schema(schema: Mapping[str, Any]) -> dict[str, dict[str, list[Any]]]:
    """``schema`` in its canonical form ``{"inputs": {name: [datatype, [dims]]},
    "outputs": {...}}``; :class:`ValueError` saying what is wrong otherwise."""
    if not isinstance(schema, Mapping) or set(schema) != {"inputs", "outputs"}:
        raise ValueError("schema must be {'inputs': {...}, 'outputs': {...}}")
    canon: dict[str, dict[str, list[Any]]] = {}
    for side in ("inputs", "outputs"):
        tensors = schema[side]
        if not isinstance(tensors, Mapping) or not 0 < len(tensors) <= 1024:
            raise ValueError(f"schema {side} must map 1 to 1024 tensor names to "
                             "[datatype, shape]")
        canon[side] = {}
        for name, spec in tensors.items():
            if not isinstance(name, str) or not TENSOR_NAME.fullmatch(name):
                raise ValueError(f"schema {side}: bad tensor name {name!r}")
            if (not isinstance(spec, (list, tuple)) or len(spec) != 2
                    or spec[0] not in DATATYPES or not isinstance(spec[1], (list, tuple))
                    or not 1 <= len(spec[1]) <= 16
                    or not all(type(d) is int and -1 <= d <= 2**31 for d in spec[1])):
                raise ValueError(f"schema {side} {name!r}: expected [datatype, shape] with "
                                 f"a datatype of {sorted(DATATYPES)} and 1 to 16 int dims "
                                 f"(-1 dynamic, the first the batch), got {spec!r}")
            canon[side][name] = [spec[0], list(spec[1])]
    return canon


def check_name(value: str, what: str) -> str:
    """``value`` if it is a safe path component (see :data:`NAME`); ValueError otherwise."""
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise ValueError(f"{what} {value!r} must match {NAME.pattern} (one path component)")
    return value


def hour_path(t: float) -> str:
    """``YYYY/MM/DD/HH`` (UTC) of the unix time ``t``."""
    return time.strftime("%Y/%m/%d/%H", time.gmtime(t))


def _plain(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)
    return tolist() if callable(tolist) else value


@dataclass
class _Batch:
    hour: int
    first_t: float  # names the file
    opened: float  # monotonic, for max_age_s
    rows: list[bytes]  # encoded lines


class BatchWriter:
    """Sampled, batched, non-blocking prediction logging.

    :meth:`add` takes the request thread's time to sample and, for a sampled row only, to
    encode it as one JSON line and append it to the open batch (a lock held for an append).
    Encoding here, not on the background thread, is deliberate: pure-Python work on another
    thread holds the GIL and delays the request thread by up to the switch interval (5 ms;
    measured: p99 wake-up lateness 0.3 -> 2.8 ms), while the background thread's gzip and
    write release the GIL. A batch is cut when it holds ``max_rows`` rows, is
    ``max_age_s`` old, or a row of another hour arrives; a cut batch goes into a queue of
    ``max_pending`` batches that one background thread encodes, gzips and hands to the sink.
    When that thread falls behind (a slow disk or store), a batch that finds the queue full
    is DROPPED and counted in :attr:`dropped_rows`: the log loses rows, never a request's
    time. A sink that raises is counted in :attr:`write_errors` (:attr:`last_error` says
    why) and its rows in :attr:`dropped_rows`; a row that cannot be logged (an id that is
    not a string of 1 to 128 characters, a time that is not unix seconds in years 1970 to 9999, a value JSON
    cannot hold) in :attr:`bad_rows`. :meth:`add` never raises. After :meth:`close`,
    ``written_rows + dropped_rows + bad_rows == rows_sampled``.
    """

    def __init__(self, sink: str | os.PathLike[str] | Sink, model: str, version: str,
                 schema: Mapping[str, Any], *, max_rows: int = 1000, max_age_s: float = 5.0,
                 sample: float = 1.0, seed: int | None = None, max_pending: int = 4,
                 clock: Callable[[], float] = time.time) -> None:
        self.model = check_name(model, "model")
        self.version = check_name(version, "version")
        if version == FEEDBACK_DIR:
            raise ValueError(f"version {version!r} is reserved for the feedback folder")
        if not 1 <= max_rows <= 1_000_000 or not 1 <= max_pending <= 1024:
            raise ValueError("max_rows must be 1..1e6 and max_pending 1..1024")
        if not (0.0 < max_age_s <= 3600.0 and 0.0 <= sample <= 1.0):
            raise ValueError("max_age_s must be in (0, 3600] and sample in [0, 1]")
        self.schema = check_schema(schema)
        self._sink: Sink = (sink if hasattr(sink, "put")  # type: ignore[assignment]
                            else DirectorySink(sink))
        self.max_rows, self.max_age_s, self.sample = max_rows, max_age_s, sample
        self._clock = clock
        self._random = random.Random(seed)
        self._token = os.urandom(4).hex()  # tells apart writers with one pid on many hosts
        self._seq = 0
        self._lock = threading.Lock()
        self._batch: _Batch | None = None
        self._queue: queue.Queue[_Batch | None] = queue.Queue(maxsize=max_pending)
        self._closed = False
        self.rows_seen = self.rows_sampled = self.written_rows = self.files_written = 0
        self.dropped_rows = self.write_errors = self.bad_rows = 0
        self._header = json.dumps({"format": FORMAT, "model": model, "version": version,
                                   "sample": sample, "schema": self.schema},
                                  separators=(",", ":")).encode() + b"\n"
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="predlog-writer", daemon=True)
        self._thread.start()

    def add(self, request_id: str, inputs: Mapping[str, Any], outputs: Mapping[str, Any],
            t: float | None = None) -> None:
        """Log one instance (sampled at :attr:`sample`); never blocks on I/O, never raises.
        ``t`` defaults to the clock. Values may be nested lists, scalars or anything with
        ``tolist()`` (numpy arrays); they are encoded at once, so the caller may reuse them.
        A row that cannot be logged (closed writer) is counted as dropped."""
        if t is None:
            t = self._clock()
        with self._lock:
            self.rows_seen += 1
            if self.sample < 1.0 and self._random.random() >= self.sample:
                return
            self.rows_sampled += 1
        try:
            if (not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_ID_CHARS
                    or isinstance(t, bool) or not 0 <= t < _YEAR_10000):
                raise ValueError("a bad id or time")  # readers would skip the row
            line = self.encode_row(request_id, t, inputs, outputs)
        except (TypeError, ValueError, RecursionError):  # also circular values, odd keys
            with self._lock:
                self.bad_rows += 1
            return
        with self._lock:
            if self._closed:
                self.dropped_rows += 1
                return
            hour = int(t // 3600)
            batch = self._batch
            if batch is not None and batch.hour != hour:
                self._cut_locked()
                batch = None
            if batch is None:
                batch = self._batch = _Batch(hour, t, time.monotonic(), [])
            batch.rows.append(line)
            if len(batch.rows) >= self.max_rows:
                self._cut_locked()

    def _cut_locked(self) -> None:
        batch, self._batch = self._batch, None
        if batch is None or not batch.rows:
            return
        try:
            self._queue.put_nowait(batch)
        except queue.Full:
            self.dropped_rows += len(batch.rows)

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Cut the open batch and wait until every queued batch is written (or dropped);
        False if ``timeout`` passed first. A batch the full queue refuses is dropped."""
        with self._lock:
            self._cut_locked()
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush, then stop the background thread. Later :meth:`add` calls drop their row."""
        self.flush(timeout)
        with self._lock:
            self._closed = True
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return  # the sink is stuck: the daemon thread dies with the process
        self._thread.join(timeout)

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        while True:
            try:
                batch = self._queue.get(timeout=min(self.max_age_s / 4, 0.5))
            except queue.Empty:
                self._cut_if_old()
                continue
            try:
                if batch is None:
                    return
                self._write(batch)
            finally:
                self._queue.task_done()
            self._cut_if_old()

    def _cut_if_old(self) -> None:
        with self._lock:
            batch = self._batch
            if batch is not None and time.monotonic() - batch.opened >= self.max_age_s:
                self._cut_locked()

    def _write(self, batch: _Batch) -> None:
        first_t = batch.first_t
        self._seq += 1
        name = (f"{int(first_t * 1000):013d}-{os.getpid():07d}-{self._token}-"
                f"{self._seq:06d}.jsonl.gz")
        key = f"{self.model}/{self.version}/{hour_path(first_t)}/{name}"
        try:
            # zlib and the sink's write release the GIL: the request thread runs meanwhile.
            data = gzip.compress(self._header + b"".join(batch.rows), compresslevel=5,
                                 mtime=0)
            self._sink.put(key, data)
        # Why so broad: the sink is the caller's (disk, S3 client, ...) and any failure of
        # it must neither kill this thread nor reach the request path; it is counted.
        except Exception as err:
            with self._lock:
                self.write_errors += 1
                self.dropped_rows += len(batch.rows)
                self.last_error = f"{key}: {type(err).__name__}: {err}"
            return
        with self._lock:
            self.written_rows += len(batch.rows)
            self.files_written += 1

    def encode_row(self, request_id: str, t: float, inputs: Mapping[str, Any],
                   outputs: Mapping[str, Any]) -> bytes:
        """One row as its JSON line (unknown objects become their ``str``)."""
        return json.dumps(
            {"id": request_id, "t": t, "model": self.model, "version": self.version,
             "inputs": {k: _plain(v) for k, v in inputs.items()},
             "outputs": {k: _plain(v) for k, v in outputs.items()}},
            separators=(",", ":"), default=str).encode() + b"\n"


def write_feedback(sink: str | os.PathLike[str] | Sink, model: str,
                   labels: Iterable[tuple[str, Any, float]], *, name: str | None = None) -> str:
    """Write labels ``(request id, label, t)`` as one feedback file; return its key.

    The file goes under the hour of the first label's ``t`` (readers open it for windows
    overlapping that hour and keep each label whose ``t`` lies in the window and that hour).
    A label is a string, a bool, an int or a finite float.
    """
    check_name(model, "model")
    rows = list(labels)
    if not rows:
        raise ValueError("no labels to write")
    for rid, label, t in rows:
        if not isinstance(rid, str) or not 0 < len(rid) <= MAX_ID_CHARS:
            raise ValueError(f"request id {rid!r} must be a string of 1..{MAX_ID_CHARS} chars")
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
            raise ValueError(f"time of {rid!r} must be finite unix seconds")
        if isinstance(label, float) and not math.isfinite(label):
            raise ValueError(f"label of {rid!r} is not finite")
        if not isinstance(label, (str, bool, int, float)):
            raise ValueError(f"label of {rid!r} must be a str, bool, int or float")
    first = rows[0][2]
    hour = int(first // 3600)
    if any(int(t // 3600) != hour for _, _, t in rows):
        raise ValueError("all labels of one feedback file must share one hour of 't'")
    name = check_name(name or f"{int(first * 1000):013d}-{os.getpid():07d}-"
                              f"{os.urandom(4).hex()}.jsonl.gz", "name")
    body = "".join(json.dumps({"id": r, "label": lab, "t": t}, allow_nan=False) + "\n"
                   for r, lab, t in rows).encode("utf-8")
    if name.endswith(".gz"):
        body = gzip.compress(body, mtime=0)
    key = f"{model}/{FEEDBACK_DIR}/{hour_path(first)}/{name}"
    target: Sink = sink if hasattr(sink, "put") else DirectorySink(sink)  # type: ignore
    target.put(key, body)
    return key
