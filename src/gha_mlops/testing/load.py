"""A constant-rate (open loop) HTTP load generator, for tests and benchmarks of a rollout.

Open loop: request ``i`` is due at ``start + i / rate`` whatever happened to the ones
before it, so a slow or failing server does not slow the schedule down (a closed loop, which
waits for each answer, would hide an outage as a drop in rate). ``connections`` threads each
hold one persistent HTTP/1.1 connection (``http.client``) and take the next due request;
latency is measured from the time a request was *due*, so a request that had to wait for a
free connection counts its wait.

A request that cannot connect, times out or loses its connection is a failure named
``error:<ExceptionType>``. One exception, as browsers and HTTP client libraries do: when a
request is sent on a kept-alive connection that the server had already closed (an idle
connection dropped by nginx on a reload) and nothing at all came back, it is sent once more
on a new connection; those are counted in :attr:`LoadReport.resent`.

    with ConstantLoad("http://127.0.0.1:8080/v2/models/m/infer", body, rate=200) as load:
        ...  # the rollout
    report = load.report()   # sent, ok, failed, statuses, versions, p99_ms, ...
"""

from __future__ import annotations

import http.client
import itertools
import json
import math
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from urllib.parse import urlsplit

MAX_ERRORS_KEPT = 10
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
          ConnectionAbortedError)


@dataclass(frozen=True)
class LoadReport:
    """What a load sent and got: ``sent`` requests (each counted once, in ``ok`` for a 2xx
    answer or else in ``failed``), ``statuses`` (``"200"``, ``"503"``, ``"error:TimeoutError"``
    ... -> count), ``versions`` (the ``model_version`` of JSON answers -> count), the
    ``first_errors`` (at most 10 lines), latency percentiles of the 2xx answers (ms, from the
    time each request was due; 0 without any), the ``achieved_rate`` (sent per second of
    load) and ``resent`` (requests sent again after a stale keep-alive connection)."""

    sent: int
    ok: int
    failed: int
    statuses: dict[str, int]
    versions: dict[str, int]
    first_errors: tuple[str, ...]
    p50_ms: float
    p99_ms: float
    achieved_rate: float
    resent: int = 0


@dataclass
class _Tally:
    statuses: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    sent: int = 0
    ok: int = 0
    resent: int = 0


def _percentile(values: list[float], q: float) -> float:
    """Nearest rank (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _version(body: bytes) -> str | None:
    if not body.startswith(b"{"):
        return None
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None
    version = doc.get("model_version") if isinstance(doc, dict) else None
    return version if isinstance(version, str) else None


class ConstantLoad:
    """POST ``body`` to ``url`` at ``rate`` requests per second from ``__enter__`` until
    ``__exit__`` (requests in flight then finish, within ``timeout``; those not yet due are
    not sent). :meth:`report` may be called during the load or after it."""

    def __init__(self, url: str, body: bytes, *, rate: float, timeout: float = 5.0,
                 content_type: str = "application/json", connections: int = 8) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"ConstantLoad: {url!r} is not an http:// or https:// URL")
        if not (math.isfinite(rate) and rate > 0) or not 1 <= connections <= 1024 \
                or not timeout > 0:
            raise ValueError("ConstantLoad: rate and timeout must be > 0, connections "
                             f"1..1024 (got {rate}, {timeout}, {connections})")
        self._kind = http.client.HTTPSConnection if parts.scheme == "https" else \
            http.client.HTTPConnection
        self._host, self._port = parts.hostname, parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._body, self._rate, self._timeout = body, rate, timeout
        self._headers = {"Content-Type": content_type}
        self._connections = connections
        self._slots = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._tally = _Tally()
        self._threads: list[threading.Thread] = []
        self._start = self._end = 0.0

    def __enter__(self) -> ConstantLoad:
        self._start = time.monotonic()
        self._threads = [threading.Thread(target=self._run, name=f"load-{i}", daemon=True)
                         for i in range(self._connections)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._end = time.monotonic()
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2 * self._timeout + 1)

    def _next_due(self) -> float:
        with self._lock:
            return self._start + next(self._slots) / self._rate

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while True:
            due = self._next_due()
            if self._stop.wait(max(0.0, due - time.monotonic())):
                break
            conn = self._one(conn, due)
        if conn is not None:
            conn.close()

    def _one(self, conn: http.client.HTTPConnection | None, due: float
             ) -> http.client.HTTPConnection | None:
        """Send one request (again once on a stale kept-alive connection); record it; the
        connection to use next (None after a failure: a new one is made)."""
        resent = False
        while True:
            reused = conn is not None
            if conn is None:
                conn = self._kind(self._host, self._port, timeout=self._timeout)
            try:
                conn.request("POST", self._path, body=self._body, headers=self._headers)
                response = conn.getresponse()
            except _STALE as err:
                conn.close()
                conn = None
                if reused and not resent:  # no byte of an answer came back: send it again
                    resent = True
                    continue
                self._record(due, f"error:{type(err).__name__}", b"", resent, str(err))
                return None
            except (OSError, http.client.HTTPException) as err:
                conn.close()
                self._record(due, f"error:{type(err).__name__}", b"", resent, str(err))
                return None
            try:
                body = response.read()
            except (OSError, http.client.HTTPException) as err:  # an answer cut short
                conn.close()
                self._record(due, f"error:{type(err).__name__}", b"", resent, str(err))
                return None
            self._record(due, str(response.status), body, resent, "")
            if response.will_close:
                conn.close()
                return None
            return conn

    def _record(self, due: float, status: str, body: bytes, resent: bool, error: str) -> None:
        latency = (time.monotonic() - due) * 1000
        version = _version(body) if status.startswith("2") else None
        with self._lock:
            tally = self._tally
            tally.sent += 1
            tally.resent += resent
            tally.statuses[status] = tally.statuses.get(status, 0) + 1
            if status.startswith("2"):
                tally.ok += 1
                tally.latencies.append(latency)
            elif len(tally.errors) < MAX_ERRORS_KEPT:
                detail = error or body[:200].decode("utf-8", "replace")
                tally.errors.append(f"{status}: {detail}".strip())
            if version is not None:
                tally.versions[version] = tally.versions.get(version, 0) + 1

    def report(self) -> LoadReport:
        """The counts so far (final once the ``with`` block has ended)."""
        with self._lock:
            tally = self._tally
            end = self._end or time.monotonic()
            elapsed = end - self._start if self._start else 0.0
            latencies = list(tally.latencies)
            return LoadReport(
                sent=tally.sent, ok=tally.ok, failed=tally.sent - tally.ok,
                statuses=dict(tally.statuses), versions=dict(tally.versions),
                first_errors=tuple(tally.errors),
                p50_ms=_percentile(latencies, 0.50), p99_ms=_percentile(latencies, 0.99),
                achieved_rate=tally.sent / elapsed if elapsed > 0 else 0.0,
                resent=tally.resent)
