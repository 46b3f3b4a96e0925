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
import datetime
import gzip
import hashlib
import hmac
import http.client
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
from urllib.parse import quote, urlsplit

FORMAT = "gha-mlops.predlog/1"
FEEDBACK_DIR = "feedback"  # a reserved name: no version may be called so
MAX_ID_CHARS = 128
MAX_LABEL_CHARS = 1024  # the reader (predlog.read_feedback) skips longer string labels
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


_ENCODE = json.JSONEncoder(separators=(",", ":"), default=str).encode
# printf formats that give back the very same float32 / float64 when read: about twice as
# fast as float.__repr__ (which json.dumps uses), and the request thread pays for it.
_FLOAT_FORMATS = {4: "%.9g", 8: "%.17g"}
# One printf template per (format, shape): formatting the whole array in one call is three
# times as fast as float.__repr__ per value (which json.dumps uses), and the request thread
# pays for it. Bounded: a few shapes per model.
_TEMPLATES: dict[tuple[str, tuple[int, ...]], str] = {}
_MAX_TEMPLATES, _MAX_TEMPLATE_VALUES = 256, 1 << 16


def _float_json(value: Any) -> str | None:
    """A float32/float64 array (numpy, by duck typing) as nested JSON lists giving back the
    very same values, or None when ``value`` is something else or holds a non-finite value
    (json.dumps writes those)."""
    dtype, shape = getattr(value, "dtype", None), getattr(value, "shape", None)
    if getattr(dtype, "kind", None) != "f" or not isinstance(shape, tuple):
        return None
    fmt = _FLOAT_FORMATS.get(getattr(dtype, "itemsize", 0))
    ravel = getattr(value, "ravel", None)
    if fmt is None or not callable(ravel):
        return None
    flat = ravel().tolist()
    if not math.isfinite(math.fsum(flat)):  # NaN or inf inside (or a sum over 1.8e308)
        return None
    template = _TEMPLATES.get((fmt, shape))
    if template is None:
        template = _nested([fmt] * len(flat), shape) if shape else fmt
        if len(_TEMPLATES) < _MAX_TEMPLATES and len(flat) <= _MAX_TEMPLATE_VALUES:
            _TEMPLATES[fmt, shape] = template
    return template % tuple(flat)


def _nested(texts: list[str], shape: tuple[int, ...]) -> str:
    if len(shape) == 1:
        return "[" + ",".join(texts) + "]"
    step = len(texts) // shape[0] if shape[0] else 0
    return "[" + ",".join(_nested(texts[i * step:(i + 1) * step], shape[1:])
                          for i in range(shape[0])) + "]"


def _key_json(key: Any) -> str:
    if not isinstance(key, str):  # a tensor name; JSON object keys are strings
        raise TypeError(f"a tensor name must be a string, not {type(key).__name__}")
    return _ENCODE(key)


def _value_json(value: Any) -> str:
    text = _float_json(value)
    return _ENCODE(_plain(value)) if text is None else text


@dataclass
class _Batch:
    hour: int
    first_t: float  # names the file
    opened: float  # monotonic, for max_age_s
    rows: list[bytes]  # encoded lines


class _Batching:
    """The machinery both writers share: encoded lines appended under a lock, cut into
    batches (``max_rows`` rows, ``max_age_s`` old, or a line of another hour), a queue of
    ``max_pending`` cut batches that one background thread gzips and hands to the sink.
    A batch that finds the queue full is dropped and counted; a sink that raises is counted
    in :attr:`write_errors` (:attr:`last_error` says why) and its rows in
    :attr:`dropped_rows`. Subclasses say what a file starts with and where it goes."""

    def __init__(self, sink: str | os.PathLike[str] | Sink, *, max_rows: int,
                 max_age_s: float, max_pending: int, clock: Callable[[], float],
                 thread_name: str) -> None:
        if not 1 <= max_rows <= 1_000_000 or not 1 <= max_pending <= 1024:
            raise ValueError("max_rows must be 1..1e6 and max_pending 1..1024")
        if not 0.0 < max_age_s <= 3600.0:
            raise ValueError("max_age_s must be in (0, 3600]")
        self._sink: Sink = (sink if hasattr(sink, "put")  # type: ignore[assignment]
                            else DirectorySink(sink))
        self.max_rows, self.max_age_s = max_rows, max_age_s
        self._clock = clock
        self._token = os.urandom(4).hex()  # tells apart writers with one pid on many hosts
        self._seq = 0
        self._lock = threading.Lock()
        self._batch: _Batch | None = None
        self._queue: queue.Queue[_Batch | None] = queue.Queue(maxsize=max_pending)
        self._closed = False
        self.written_rows = self.files_written = 0
        self.dropped_rows = self.write_errors = self.bad_rows = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._thread.start()

    def _header_bytes(self) -> bytes:
        return b""

    def _key(self, name: str, first_t: float) -> str:
        raise NotImplementedError

    def _append(self, line: bytes, t: float) -> None:
        """Append one encoded line of time ``t`` to the open batch (never blocks on I/O)."""
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
        """Flush, then stop the background thread. Later additions drop their row."""
        self.flush(timeout)
        with self._lock:
            self._closed = True
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return  # the sink is stuck: the daemon thread dies with the process
        self._thread.join(timeout)

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
        key = self._key(name, first_t)
        try:
            # zlib and the sink's write release the GIL: the request thread runs meanwhile.
            data = gzip.compress(self._header_bytes() + b"".join(batch.rows), compresslevel=5,
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


class BatchWriter(_Batching):
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
    not a string of 1 to 128 characters, a time that is not unix seconds in years 1970 to
    9999, a value JSON cannot hold) in :attr:`bad_rows`. :meth:`add` never raises. After
    :meth:`close`, ``written_rows + dropped_rows + bad_rows == rows_sampled``.
    """

    def __init__(self, sink: str | os.PathLike[str] | Sink, model: str, version: str,
                 schema: Mapping[str, Any], *, max_rows: int = 1000, max_age_s: float = 5.0,
                 sample: float = 1.0, seed: int | None = None, max_pending: int = 4,
                 clock: Callable[[], float] = time.time) -> None:
        self.model = check_name(model, "model")
        self.version = check_name(version, "version")
        if version == FEEDBACK_DIR:
            raise ValueError(f"version {version!r} is reserved for the feedback folder")
        if not 0.0 <= sample <= 1.0:
            raise ValueError("sample must be in [0, 1]")
        self.schema = check_schema(schema)
        self.sample = sample
        self._random = random.Random(seed)
        self.rows_seen = self.rows_sampled = 0
        self._names = f',"model":{_ENCODE(model)},"version":{_ENCODE(version)}'
        self._header = json.dumps({"format": FORMAT, "model": model, "version": version,
                                   "sample": sample, "schema": self.schema},
                                  separators=(",", ":")).encode() + b"\n"
        super().__init__(sink, max_rows=max_rows, max_age_s=max_age_s,
                         max_pending=max_pending, clock=clock, thread_name="predlog-writer")

    def _header_bytes(self) -> bytes:
        return self._header

    def _key(self, name: str, first_t: float) -> str:
        return f"{self.model}/{self.version}/{hour_path(first_t)}/{name}"

    def sampled(self) -> bool:
        """Draw the sampling decision for one row and count it (``rows_seen``, and
        ``rows_sampled`` when True): a caller may draw first and build the row only when
        it is kept, then hand it to :meth:`add` with ``presampled=True``."""
        with self._lock:
            self.rows_seen += 1
            if self.sample < 1.0 and self._random.random() >= self.sample:
                return False
            self.rows_sampled += 1
            return True

    def add(self, request_id: str, inputs: Mapping[str, Any], outputs: Mapping[str, Any],
            t: float | None = None, *, presampled: bool = False) -> None:
        """Log one instance (sampled at :attr:`sample`); never blocks on I/O, never raises.
        ``t`` defaults to the clock. Values may be nested lists, scalars or anything with
        ``tolist()`` (numpy arrays); they are encoded at once, so the caller may reuse them.
        A row that cannot be logged (closed writer) is counted as dropped. ``presampled``:
        the caller has drawn :meth:`sampled` for this row already and it came out True."""
        if t is None:
            t = self._clock()
        if not presampled and not self.sampled():
            return
        try:
            if (not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_ID_CHARS
                    or isinstance(t, bool) or not 0 <= t < _YEAR_10000):
                raise ValueError("a bad id or time")  # readers would skip the row
            line = self.encode_row(request_id, t, inputs, outputs)
        except (TypeError, ValueError, RecursionError):  # also circular values, odd keys
            with self._lock:
                self.bad_rows += 1
            return
        self._append(line, t)

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def encode_row(self, request_id: str, t: float, inputs: Mapping[str, Any],
                   outputs: Mapping[str, Any]) -> bytes:
        """One row as its JSON line (unknown objects become their ``str``). Float arrays
        take a faster path (:func:`_float_json`) than ``json.dumps``: the same values."""
        return "".join((
            '{"id":', _ENCODE(request_id), ',"t":', _ENCODE(t), self._names, ',"inputs":{',
            ",".join(f"{_key_json(k)}:{_value_json(v)}" for k, v in inputs.items()),
            '},"outputs":{',
            ",".join(f"{_key_json(k)}:{_value_json(v)}" for k, v in outputs.items()),
            "}}\n")).encode()


def label_ok(label: Any) -> bool:
    """Whether the reader keeps ``label``: a string of at most :data:`MAX_LABEL_CHARS`
    characters, an int (a bool is one) or a finite float (predlog's ``_label_ok``)."""
    if isinstance(label, str):
        return len(label) <= MAX_LABEL_CHARS
    if isinstance(label, float):
        return math.isfinite(label)
    return isinstance(label, int)


def id_ok(request_id: Any) -> bool:
    """Whether ``request_id`` is one the reader keeps: a string of 1 to 128 characters."""
    return isinstance(request_id, str) and 0 < len(request_id) <= MAX_ID_CHARS


class FeedbackWriter(_Batching):
    """Batched, non-blocking feedback: :meth:`add` appends one ``{"id", "label", "t"}`` line;
    batches go to ``<model>/feedback/YYYY/MM/DD/HH/<ms>-<pid>-<writer>-<seq>.jsonl.gz``
    (the layout :func:`predlog.read_feedback` reads), cut as :class:`BatchWriter` cuts them.
    A label the reader would skip is refused (False, counted in :attr:`bad_rows`)."""

    def __init__(self, sink: str | os.PathLike[str] | Sink, model: str, *,
                 max_rows: int = 1000, max_age_s: float = 5.0, max_pending: int = 4,
                 clock: Callable[[], float] = time.time) -> None:
        self.model = check_name(model, "model")
        super().__init__(sink, max_rows=max_rows, max_age_s=max_age_s,
                         max_pending=max_pending, clock=clock, thread_name="feedback-writer")

    def _key(self, name: str, first_t: float) -> str:
        return f"{self.model}/{FEEDBACK_DIR}/{hour_path(first_t)}/{name}"

    def add(self, request_id: str, label: Any, t: float | None = None) -> bool:
        """Queue one label for ``request_id``; False (and counted) when the reader would
        not keep it. Never blocks on I/O, never raises."""
        if t is None:
            t = self._clock()
        try:
            if (not id_ok(request_id) or not label_ok(label) or isinstance(t, bool)
                    or not 0 <= t < _YEAR_10000):
                raise ValueError("a bad id, label or time")
            line = json.dumps({"id": request_id, "label": label, "t": t},
                              allow_nan=False).encode() + b"\n"
        except (TypeError, ValueError):
            with self._lock:
                self.bad_rows += 1
            return False
        self._append(line, t)
        return True

    def __enter__(self) -> FeedbackWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


# ---------------------------------------------------------------------------- S3

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX = re.compile(r"([A-Za-z0-9._+=-]+/)*")  # "" or segments ending in '/'
_REGION = re.compile(r"[a-z]{2}(-[a-z0-9]+){1,4}")
S3_ATTEMPTS = 4  # one try and three retries, on 5xx answers and connection errors
S3_TIMEOUT_S = 10.0


class S3Error(Exception):
    """A PUT the store refused (4xx), or that still failed after the retries."""


@dataclass(frozen=True)
class S3Location:
    """Where an S3 sink writes: the bucket, a key prefix ("" or ending in '/'), the region,
    and the endpoint (None: AWS itself, virtual-hosted ``<bucket>.s3.<region>.amazonaws.com``
    over HTTPS, path-style for a bucket name with dots, which the certificate does not
    cover; a custom endpoint such as moto or MinIO is addressed path-style)."""

    bucket: str
    prefix: str
    region: str
    endpoint: str | None = None

    @classmethod
    def parse(cls, url: str, environ: Mapping[str, str]) -> S3Location:
        """``s3://bucket[/prefix]`` with the region from ``AWS_REGION`` or
        ``AWS_DEFAULT_REGION`` (default us-east-1) and the endpoint from ``AWS_ENDPOINT_URL``;
        ValueError saying what is wrong."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not _BUCKET.fullmatch(parts.netloc) or ".." in parts.netloc:
            raise ValueError(f"{url!r} is not s3://BUCKET[/PREFIX] with a valid bucket name "
                             "(3-63 lower-case letters, digits, '.', '-')")
        prefix = parts.path.strip("/")
        prefix = prefix + "/" if prefix else ""
        if parts.query or parts.fragment or not _PREFIX.fullmatch(prefix) or any(
                seg in (".", "..") for seg in prefix.split("/")):
            raise ValueError(f"{url!r}: the prefix must be '/'-separated names of letters, "
                             "digits, '.', '_', '+', '=', '-'")
        region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        if not _REGION.fullmatch(region):
            raise ValueError(f"AWS_REGION {region!r} is not a region name like us-east-1")
        endpoint = environ.get("AWS_ENDPOINT_URL") or None
        if endpoint is not None:
            ep = urlsplit(endpoint)
            if ep.scheme not in ("http", "https") or not ep.hostname or ep.path not in ("", "/"):
                raise ValueError(f"AWS_ENDPOINT_URL {endpoint!r} must be http(s)://HOST[:PORT]")
        return cls(parts.netloc, prefix, region, endpoint)


class S3Sink:
    """A :class:`Sink` on an S3 bucket: one signed (AWS Signature Version 4) PUT per batch,
    standard library only. An object appears whole or not at all (S3 PUT semantics).
    Credentials are given (see :meth:`from_env`). A 5xx answer or a connection error is
    retried ``S3_ATTEMPTS - 1`` times with a doubling backoff from ``backoff_s``; a 4xx
    answer, or the last failure, raises :class:`S3Error` (the writer counts it)."""

    def __init__(self, where: S3Location, access_key: str, secret_key: str,
                 session_token: str | None = None, *, backoff_s: float = 0.2,
                 clock: Callable[[], float] = time.time) -> None:
        if not access_key or not secret_key:
            raise ValueError("an S3 sink needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        self.where = where
        self._access, self._secret, self._token = access_key, secret_key, session_token
        self.backoff_s, self._clock = backoff_s, clock
        if where.endpoint is None and "." not in where.bucket:
            self._https, self._host = True, f"{where.bucket}.s3.{where.region}.amazonaws.com"
            self._base = ""
        elif where.endpoint is None:  # a dotted name breaks the *.s3 certificate: path-style
            self._https, self._host = True, f"s3.{where.region}.amazonaws.com"
            self._base = "/" + where.bucket
        else:
            ep = urlsplit(where.endpoint)
            self._https, self._host = ep.scheme == "https", ep.netloc
            self._base = "/" + where.bucket

    @classmethod
    def from_env(cls, url: str, environ: Mapping[str, str]) -> S3Sink:
        """The sink for ``s3://bucket[/prefix]`` with credentials from ``AWS_ACCESS_KEY_ID``,
        ``AWS_SECRET_ACCESS_KEY`` and ``AWS_SESSION_TOKEN``; ValueError naming what is
        missing or wrong."""
        return cls(S3Location.parse(url, environ), environ.get("AWS_ACCESS_KEY_ID", ""),
                   environ.get("AWS_SECRET_ACCESS_KEY", ""),
                   environ.get("AWS_SESSION_TOKEN") or None)

    def url(self, key: str) -> str:
        """Where ``key`` lands (for messages)."""
        return f"s3://{self.where.bucket}/{self.where.prefix}{key}"

    def signed_headers(self, path: str, data: bytes, now: float) -> dict[str, str]:
        """The headers of a SigV4-signed PUT of ``data`` to ``path`` (already URI-encoded)."""
        stamp = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
        amz_date, day = stamp.strftime("%Y%m%dT%H%M%SZ"), stamp.strftime("%Y%m%d")
        headers = {"host": self._host, "x-amz-content-sha256": hashlib.sha256(data).hexdigest(),
                   "x-amz-date": amz_date}
        if self._token:
            headers["x-amz-security-token"] = self._token
        names = sorted(headers)
        canonical = "\n".join(["PUT", path, "", *(f"{n}:{headers[n].strip()}" for n in names),
                               "", ";".join(names), headers["x-amz-content-sha256"]])
        scope = f"{day}/{self.where.region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                             hashlib.sha256(canonical.encode()).hexdigest()])
        key = ("AWS4" + self._secret).encode()
        for part in (day, self.where.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={self._access}/{scope}, "
                                    f"SignedHeaders={';'.join(names)}, Signature={signature}")
        return headers

    def put(self, key: str, data: bytes) -> None:
        path = self._base + "/" + quote(self.where.prefix + key, safe="/-_.~")
        kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        failure = ""
        for attempt in range(S3_ATTEMPTS):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            conn = kind(self._host, timeout=S3_TIMEOUT_S)
            try:
                conn.request("PUT", path, body=data,
                             headers=self.signed_headers(path, data, self._clock()))
                answer = conn.getresponse()
                body = answer.read(2048)
            except (OSError, http.client.HTTPException) as err:
                failure = f"{type(err).__name__}: {err}"
                continue
            finally:
                conn.close()
            if answer.status < 300:
                return
            failure = f"HTTP {answer.status}: {_s3_message(body)}"
            if answer.status < 500:
                break  # refused (credentials, bucket, policy): retrying will not help
        raise S3Error(f"PUT {self.url(key)} failed: {failure}")


def _s3_message(body: bytes) -> str:
    """The <Code> and <Message> of an S3 error document, else its first bytes."""
    text = body.decode("utf-8", "replace")
    found = [m.group(1) for tag in ("Code", "Message")
             if (m := re.search(f"<{tag}>([^<]{{0,300}})</{tag}>", text))]
    return ": ".join(found) or text[:200]


def open_sink(target: str, environ: Mapping[str, str]) -> Sink:
    """The sink for ``target``: ``s3://bucket[/prefix]`` (see :class:`S3Sink`), else a local
    directory (created now, so a missing permission shows at start); ValueError if unusable."""
    if target.startswith("s3://"):
        return S3Sink.from_env(target, environ)
    try:
        os.makedirs(target, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot create the log directory {target!r}: {err.strerror}") from err
    if not os.access(target, os.W_OK | os.X_OK):
        raise ValueError(f"the log directory {target!r} is not writable by uid {os.getuid()}")
    return DirectorySink(target)
