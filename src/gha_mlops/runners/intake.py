"""The webhook endpoint: ``workflow_job`` deliveries in, jobs onto a queue, an answer at once.

Checks, in this order, before anything is parsed: the path and method, the headers' shapes
(``Content-Length`` ASCII digits and no larger than the limit: 413 without reading a byte
more; no ``Transfer-Encoding``; ``X-GitHub-Delivery`` short printable ASCII), the whole body
within the request's deadline (a truncated one is 400), its HMAC-SHA256 signature over the raw
bytes compared in constant time (401), the event (``ping`` answers pong, other events are
acknowledged and ignored), then the JSON (UTF-8, bounded numbers, no NaN, not nested past
the parser's limit) and every field we use, validated into a typed, frozen :class:`JobEvent`
(400 naming the field), and only then the delivery id (a replay, or a redelivery of one
applied or being applied, is acknowledged and dropped). Accepted events go onto a bounded
queue that one worker applies to the state; when the queue is full the answer is 503 and
the reconcile loop picks the job up.

The server bounds what a connection can hold: each request (head and body) must arrive
within ``request_deadline`` seconds of the connection waiting for it, however it trickles;
at most ``max_connections`` are served at once (beyond that: 503 and close); the listening
backlog is :data:`BACKLOG` (capped by the kernel's ``net.core.somaxconn``) so a burst of new
connections waits in the kernel instead of being dropped.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import io
import json
import math
import queue
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple

from gha_mlops.github.port import GhJob
from gha_mlops.runners.observe import LOG, Metrics, log

ACTIONS = ("queued", "in_progress", "completed", "waiting")
STATUSES = ("queued", "in_progress", "completed", "waiting")  # others are ignored (202)
_TIMEOUT = 10.0  # seconds a write may block (a client that does not read is cut off)
REQUEST_DEADLINE = 10.0  # seconds for a whole request (head and body) to arrive
MAX_CONNECTIONS = 512  # connections served at once; more are answered 503
BACKLOG = 1024  # connections the kernel queues before they are accepted

MAX_ID = 2**63 - 1  # ids are SQLite INTEGERs: signed 64 bits
MAX_ATTEMPT = 10_000
MAX_LABELS = 100
MAX_LABEL = 256  # characters in one label
MAX_NAME = 1024  # characters in a job name
MAX_RUNNER_NAME = 256
MAX_TIME = 64  # characters in a timestamp
_INT_DIGITS = 20  # a JSON integer literal longer than this is no id (kept as HugeNumber)
_DELIVERY = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII, no spaces
_EVENT = re.compile(r"[a-z_]{1,64}")
_SIGNATURE = re.compile(r"sha256=[0-9a-f]{64}")
# ASCII digits only: str.isdigit() also takes superscripts (which int() then refuses) and
# int() takes every script's digits.
_LENGTH = re.compile(r"[0-9]{1,15}")
_TOKEN = re.compile(r"[a-z_]{1,32}")  # status, conclusion
# owner: letters, digits and single hyphens inside, up to 39; name: letters, digits, . _ -
_REPO = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/(?!\.\.?$)[A-Za-z0-9._-]{1,100}")
# Lone surrogates (JSON escapes like \ud800 make them) cannot be encoded, stored as text or
# printed; control characters would reach operators' terminals through `runners status`.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


POST_ONLY = Answer(405, b"POST webhooks here\n")
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
         b"Content-Length: 32\r\nConnection: close\r\n\r\ntoo many connections; try again\n")


class BadPayload(ValueError):
    pass


class JobEvent(NamedTuple):
    """An accepted ``workflow_job`` delivery: the job, every field validated, and its id."""

    job: GhJob
    delivery: str


class HugeNumber:
    """A JSON integer literal too long to be any id or count we read (kept unparsed, so
    neither a 4,300-digit ``int()`` nor a later overflow happens; no field takes one)."""

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal


def _bounded_int(literal: str) -> int | HugeNumber:
    if len(literal.lstrip("-")) > _INT_DIGITS:
        return HugeNumber(literal)
    return int(literal)


def _no_constant(name: str) -> Any:
    raise BadPayload(f"{name} is not JSON")


def parse_json(body: bytes) -> Any:
    """The body as JSON: strict UTF-8, no NaN/Infinity, integers past 20 digits kept as
    :class:`HugeNumber`; :class:`BadPayload` for anything else (deep nesting included)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadPayload(f"the body is not UTF-8 ({err.reason} at byte {err.start})") from None
    try:
        return json.loads(text, parse_int=_bounded_int, parse_constant=_no_constant)
    except RecursionError:
        raise BadPayload("the body is nested too deeply") from None
    except json.JSONDecodeError as err:
        raise BadPayload(f"the body is not JSON ({err.msg} at {err.pos})") from None


def job_from_payload(payload: Any) -> GhJob:
    """The job a ``workflow_job`` payload describes, every field we use checked for type,
    range and size; :class:`BadPayload` names the first field that is off."""
    if not isinstance(payload, dict):
        raise BadPayload("the body is not a JSON object")
    job = _field(payload, "workflow_job", dict)
    repo = _field(_field(payload, "repository", dict), "full_name", str,
                  path="repository.full_name")
    if not _REPO.fullmatch(repo):
        raise BadPayload("repository.full_name: expected OWNER/NAME")
    return GhJob(
        id=_int(job, "id", MAX_ID), repo=repo, run_id=_int(job, "run_id", MAX_ID),
        run_attempt=_int(job, "run_attempt", MAX_ATTEMPT, default=1),
        name=_text(job, "name", MAX_NAME) or "",
        status=_token(job, "status", required=True) or "",
        labels=_labels(job),
        conclusion=_token(job, "conclusion"),
        runner_name=_text(job, "runner_name", MAX_RUNNER_NAME) or None,
        created_at=_time(job, "created_at"), started_at=_time(job, "started_at"),
        completed_at=_time(job, "completed_at"))


def _field(obj: Mapping[str, Any], key: str, kind: type, *, path: str | None = None) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadPayload(f"{path or key}: expected {kind.__name__}, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    return "a number too large" if isinstance(value, HugeNumber) else type(value).__name__


def _int(job: Mapping[str, Any], key: str, top: int, *, default: int | None = None) -> int:
    """An integer in 1..top (bool is an int in Python: refused)."""
    value = job.get(key)
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
        got = value if isinstance(value, int) and not isinstance(value, bool) else None
        raise BadPayload(f"workflow_job.{key}: expected an integer in 1..{top}, got "
                         + (str(got) if got is not None and len(str(got)) <= 20
                            else _kind(value)))
    return value


def _text(job: Mapping[str, Any], key: str, limit: int) -> str | None:
    """An optional string of at most ``limit`` printable characters (null: None)."""
    value = job.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadPayload(f"workflow_job.{key}: expected a string, got {_kind(value)}")
    _printable(value, f"workflow_job.{key}", limit)
    return value


def _printable(value: str, path: str, limit: int) -> None:
    if len(value) > limit:
        raise BadPayload(f"{path}: longer than {limit} characters")
    if _UNPRINTABLE.search(value):
        raise BadPayload(f"{path}: control characters or lone surrogates are not allowed")


def _token(job: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = job.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise BadPayload(f"workflow_job.{key}: expected a word of a-z and _"
                         + ("" if required else " or null"))
    return value


def _labels(job: Mapping[str, Any]) -> tuple[str, ...]:
    labels = _field(job, "labels", list, path="workflow_job.labels")
    if len(labels) > MAX_LABELS:
        raise BadPayload(f"workflow_job.labels: more than {MAX_LABELS} labels")
    for i, label in enumerate(labels):
        if not isinstance(label, str) or not label:
            raise BadPayload("workflow_job.labels: expected a list of strings, got "
                             f"{_kind(label)} at [{i}]")
        _printable(label, f"workflow_job.labels[{i}]", MAX_LABEL)
    return tuple(labels)


def _time(job: Mapping[str, Any], key: str) -> str | None:
    value = job.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_TIME:
        raise BadPayload(f"workflow_job.{key}: expected an ISO 8601 time or null")
    try:
        datetime.datetime.fromisoformat(value)
    except ValueError:
        raise BadPayload(f"workflow_job.{key}: expected an ISO 8601 time or null") from None
    return value


class Intake:
    """The endpoint's logic, independent of the HTTP server (:meth:`check_head`, then
    :meth:`handle_body`).

    ``first_delivery(id)`` takes a delivery id (False: seen or in flight: a duplicate);
    ``forget_delivery(id)``, when given, gives back one taken but not queued."""

    def __init__(self, *, secret: bytes, path: str, max_body: int,
                 first_delivery: Callable[[str], bool], metrics: Metrics,
                 queue_size: int = 10_000,
                 forget_delivery: Callable[[str], None] | None = None) -> None:
        self.secret = secret
        self.path = path
        self.max_body = max_body
        self.first_delivery = first_delivery
        self.forget_delivery = forget_delivery
        self.metrics = metrics
        self.events: queue.Queue[JobEvent] = queue.Queue(maxsize=queue_size)

    def _reject(self, status: int, outcome: str, message: str, **fields: object) -> Answer:
        self.metrics.webhooks.labels(outcome).inc()
        if status >= 400:
            self.metrics.errors.labels(f"webhook_{outcome}").inc()
            log(30, f"webhook refused ({status}): {message}", **fields)
        return Answer(status, (message + "\n").encode())

    def check_head(self, method: str, path: str, headers: Mapping[str, str],
                   repeated: Collection[str] = ()) -> Answer | int:
        """Before the body is read: an answer, or the number of bytes to read.
        ``repeated``: the (lower-case) header names the request gave more than once."""
        if path.split("?", 1)[0] != self.path:
            return Answer(404, b"not found\n")
        if method != "POST":
            return POST_ONLY
        for name in ("content-length", "x-github-delivery", "x-github-event",
                     "x-hub-signature-256", "transfer-encoding"):
            if name in repeated:
                return self._reject(400, "bad_header", f"the {name} header is given twice")
        if "transfer-encoding" in headers:
            return self._reject(411, "no_length", "a Content-Length is required (no "
                                "Transfer-Encoding)")
        length = headers.get("content-length")
        if length is None:
            return self._reject(411, "no_length", "a Content-Length is required")
        length = length.strip(" \t")
        if not _LENGTH.fullmatch(length):
            return self._reject(400, "bad_header", "Content-Length: expected up to 15 ASCII "
                                "digits")
        n = int(length)
        if n > self.max_body:
            return self._reject(413, "too_large", f"the body ({n} bytes) is over the "
                                f"limit of {self.max_body} bytes")
        delivery = headers.get("x-github-delivery")
        if delivery is not None and not _DELIVERY.fullmatch(delivery):
            # Not logged: an unsigned request's header is nothing to write to our logs.
            return self._reject(400, "bad_header", "X-GitHub-Delivery: expected up to 128 "
                                "printable ASCII characters")
        return n

    def handle_body(self, headers: Mapping[str, str], body: bytes, expected: int) -> Answer:
        """The answer to a request whose head :meth:`check_head` let through."""
        delivery = headers.get("x-github-delivery", "")
        if len(body) < expected:
            return self._reject(400, "truncated", f"the body ended after {len(body)} of "
                                f"{expected} bytes", delivery=delivery or None)
        given = headers.get("x-hub-signature-256", "")
        digest = hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        if not _SIGNATURE.fullmatch(given) or not hmac.compare_digest(
                given.encode("ascii"), f"sha256={digest}".encode("ascii")):
            return self._reject(401, "bad_signature", "the X-Hub-Signature-256 signature "
                                "does not match the body (check the webhook secret)",
                                delivery=delivery or None)
        event = headers.get("x-github-event", "")
        if not _EVENT.fullmatch(event):
            return self._reject(400, "bad_header", "X-GitHub-Event: expected an event name "
                                "(a-z and _)", delivery=delivery or None)
        if event == "ping":
            return self._reject(200, "ping", "pong")
        if event != "workflow_job":
            return self._reject(202, "ignored_event", f"ignored: event {event!r}")
        if not delivery:
            return self._reject(400, "no_delivery", "an X-GitHub-Delivery id is required")
        try:
            payload = parse_json(body)
            if not isinstance(payload, dict):
                raise BadPayload("the body is not a JSON object")
            action = payload.get("action")
            if action not in ACTIONS:
                shown = action if isinstance(action, str) and _TOKEN.fullmatch(action) \
                    else "(not a known action)"
                return self._reject(202, "ignored_action", f"ignored: action {shown!r}",
                                    delivery=delivery)
            job = job_from_payload(payload)
        except BadPayload as err:
            return self._reject(400, "bad_payload", f"not a workflow_job payload: {err}",
                                delivery=delivery)
        if job.status not in STATUSES:
            return self._reject(202, "ignored_status", f"ignored: status {job.status!r}",
                                delivery=delivery, job_id=job.id)
        return self._enqueue(JobEvent(job, delivery))

    def _enqueue(self, event: JobEvent) -> Answer:
        # Back-pressure: with a backlog, answer a little later (a few ms, still far from
        # GitHub's 10 s) so the worker that applies events gets the interpreter's time.
        backlog = self.events.qsize()
        if backlog >= 1000:
            time.sleep(min(0.02, backlog / 1_000_000))
        # A full queue is refused before the delivery id is taken, so that a redelivery
        # of it (GitHub keeps the id) is taken then, not dropped as a duplicate.
        if self.events.full():
            return self._overloaded(event.delivery)
        if not self.first_delivery(event.delivery):
            return self._reject(200, "duplicate", "already received", delivery=event.delivery)
        try:
            self.events.put_nowait(event)
        except queue.Full:  # filled meanwhile by another request thread (rare)
            if self.forget_delivery is not None:
                self.forget_delivery(event.delivery)
            return self._overloaded(event.delivery)
        self.metrics.webhooks.labels("accepted").inc()
        return Answer(202, b"accepted\n")

    def _overloaded(self, delivery: str) -> Answer:
        return self._reject(503, "overloaded", "the event queue is full; the reconcile loop "
                            "will pick this job up", delivery=delivery)


def listen_backlog(wanted: int = BACKLOG) -> int:
    """``wanted``, capped by the kernel's ``net.core.somaxconn`` (which caps it anyway)."""
    try:
        return max(1, min(wanted, int(Path("/proc/sys/net/core/somaxconn").read_text())))
    except (OSError, ValueError):
        return wanted


class _HTTPServer(ThreadingHTTPServer):
    """One thread per connection, at most ``max_connections`` of them."""

    daemon_threads = True
    request_queue_size = listen_backlog()

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 *, max_connections: int, on_error: Callable[[str], None]) -> None:
        self._slots = threading.BoundedSemaphore(max_connections)
        self._on_error = on_error
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse(self, request: socket.socket) -> None:
        """503 at once, from the accepting thread (a fresh socket's send never blocks)."""
        self._on_error("busy")
        try:
            request.setblocking(False)
            request.send(_BUSY)
            # Read what already arrived, so that closing sends FIN rather than a reset.
            while request.recv(65536):
                pass
        except OSError:
            pass
        self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Last resort for a bug in a handler: one JSON log line, never a traceback on stderr.
        self._on_error("internal")


class IntakeServer:
    """The HTTP server: ``POST <path>`` (webhooks), ``GET /metrics``, ``GET /healthz``."""

    def __init__(self, intake: Intake, host: str, port: int, *,
                 health: Callable[[], tuple[bool, str]],
                 request_deadline: float = REQUEST_DEADLINE,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        self.intake = intake
        self.health = health
        self.request_deadline = request_deadline
        self._busy_logged = -math.inf
        handler = type("Handler", (_Handler,), {"server_ref": self})
        self.httpd = _HTTPServer((host, port), handler, max_connections=max_connections,
                                 on_error=self._count_error)
        self._thread: threading.Thread | None = None

    def _count_error(self, kind: str) -> None:
        if kind == "internal" and isinstance(sys.exc_info()[1], ConnectionError):
            return  # the client went away mid-request: nothing of ours to report
        self.intake.metrics.errors.labels(f"webhook_{kind}").inc()
        if kind == "busy":
            now = time.monotonic()
            if now - self._busy_logged >= 10.0:  # a flood of connections is not a log flood
                self._busy_logged = now
                log(30, "connections refused (503): too many at once (see "
                    "gha_mlops_runners_errors_total{kind=\"webhook_busy\"})")
        else:
            LOG.error("internal error serving a connection", exc_info=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> IntakeServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="intake",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


class _DeadlineReader(io.RawIOBase):
    """A connection's bytes, each read given only what is left of the request's deadline:
    a client trickling a byte at a time is cut off when the deadline passes, not kept."""

    def __init__(self, sock: socket.socket, handler: _Handler) -> None:
        self._sock = sock
        self._handler = handler

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._handler.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive within its deadline")
        self._sock.settimeout(left)
        return self._sock.recv_into(buffer)


class _Handler(BaseHTTPRequestHandler):
    server_ref: IntakeServer
    protocol_version = "HTTP/1.1"
    timeout = _TIMEOUT
    disable_nagle_algorithm = True  # the answer's headers and body go out at once
    deadline = math.inf

    def setup(self) -> None:
        super().setup()
        plain = self.rfile
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, self))
        plain.close()  # else its reference keeps the socket open after the connection ends

    def handle_one_request(self) -> None:
        # The deadline runs from when the connection waits for a request: an idle
        # keep-alive connection and a slow one are both closed when it passes.
        self.deadline = time.monotonic() + self.server_ref.request_deadline
        super().handle_one_request()

    def _send(self, answer: Answer, *, close: bool = False) -> None:
        # One write for the head and the body: one system call, one packet.
        reason = self.responses.get(answer.status, ("",))[0]
        head = (f"{self.protocol_version} {answer.status} {reason}\r\n"
                f"Server: {self.version_string()}\r\nDate: {self.date_time_string()}\r\n"
                f"Content-Type: {answer.content_type}\r\n"
                f"Content-Length: {len(answer.body)}\r\n")
        if close:
            head += "Connection: close\r\n"
            self.close_connection = True
        self.connection.settimeout(self.timeout)  # reads left it at what their deadline had
        self.wfile.write(head.encode("latin-1") + b"\r\n" + answer.body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            body = self.server_ref.intake.metrics.render()
            self._send(Answer(200, body, "text/plain; version=0.0.4; charset=utf-8"))
        elif path == "/healthz":
            ok, detail = self.server_ref.health()
            self._send(Answer(200 if ok else 503, (detail + "\n").encode()))
        elif path == self.server_ref.intake.path:
            self._send(POST_ONLY)
        else:
            self._send(Answer(404, b"not found\n"))

    def do_POST(self) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        repeated = {k for k in headers if len(self.headers.get_all(k) or ()) > 1}
        head = self.server_ref.intake.check_head("POST", self.path, headers, repeated)
        if isinstance(head, Answer):
            self._send(head, close=head.status in (400, 411, 413))
            return
        try:
            body = self.rfile.read(head)
        except OSError:  # the client stalled past the deadline or went away
            body = b""
        answer = self.server_ref.intake.handle_body(headers, body, head)
        self._send(answer, close=len(body) < head)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the intake logs what matters, as JSON
