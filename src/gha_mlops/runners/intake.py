"""The webhook endpoint: ``workflow_job`` deliveries in, jobs onto a queue, an answer at once.

Checks, in this order, before anything is parsed: the path and method, a ``Content-Length``
no larger than the limit (413 without reading a byte more), the whole body (a truncated one is
400), its HMAC-SHA256 signature over the raw bytes compared in constant time (401), the event
(``ping`` answers pong, other events are acknowledged and ignored), the delivery id (a replay or
a redelivery of one already seen is acknowledged and dropped), then the JSON and the fields we
use (400 naming the field). Accepted events go onto a bounded queue that one worker applies to
the state; when the queue is full the answer is 503 and the reconcile loop picks the job up.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from gha_mlops.github.port import GhJob
from gha_mlops.runners.observe import Metrics, log

ACTIONS = ("queued", "in_progress", "completed", "waiting")
_TIMEOUT = 10.0  # seconds a client may take to send its request (slow clients are cut off)


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


POST_ONLY = Answer(405, b"POST webhooks here\n")


class BadPayload(ValueError):
    pass


def job_from_payload(payload: Any) -> GhJob:
    """The job a ``workflow_job`` payload describes; :class:`BadPayload` names what is off."""
    if not isinstance(payload, dict):
        raise BadPayload("the body is not a JSON object")
    job = _field(payload, "workflow_job", dict)
    repo = _field(_field(payload, "repository", dict), "full_name", str)
    labels = _field(job, "labels", list)
    if not all(isinstance(x, str) for x in labels):
        raise BadPayload("workflow_job.labels: expected a list of strings")
    runner = job.get("runner_name")
    return GhJob(
        id=_field(job, "id", int), repo=repo, run_id=_field(job, "run_id", int),
        run_attempt=int(job.get("run_attempt") or 1), name=str(job.get("name") or ""),
        status=_field(job, "status", str), labels=tuple(labels),
        conclusion=job.get("conclusion") if isinstance(job.get("conclusion"), str) else None,
        runner_name=runner if isinstance(runner, str) and runner else None,
        created_at=job.get("created_at"), started_at=job.get("started_at"),
        completed_at=job.get("completed_at"))


def _field(obj: Mapping[str, Any], key: str, kind: type) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadPayload(f"{key}: expected {kind.__name__}, got {type(value).__name__}")
    return value


class Intake:
    """The endpoint's logic, independent of the HTTP server (tests call :meth:`handle`)."""

    def __init__(self, *, secret: bytes, path: str, max_body: int,
                 first_delivery: Callable[[str], bool], metrics: Metrics,
                 queue_size: int = 10_000) -> None:
        self.secret = secret
        self.path = path
        self.max_body = max_body
        self.first_delivery = first_delivery
        self.metrics = metrics
        self.events: queue.Queue[tuple[GhJob, str]] = queue.Queue(maxsize=queue_size)

    def _reject(self, status: int, outcome: str, message: str, **fields: object) -> Answer:
        self.metrics.webhooks.labels(outcome).inc()
        if status >= 400:
            self.metrics.errors.labels(f"webhook_{outcome}").inc()
            log(30, f"webhook refused ({status}): {message}", **fields)
        return Answer(status, (message + "\n").encode())

    def check_head(self, method: str, path: str, headers: Mapping[str, str]) -> Answer | int:
        """Before the body is read: an answer, or the number of bytes to read."""
        if path.split("?", 1)[0] != self.path:
            return Answer(404, b"not found\n")
        if method != "POST":
            return POST_ONLY
        length = headers.get("content-length")
        if length is None or not length.strip().isdigit():
            return self._reject(411, "no_length", "a Content-Length is required")
        n = int(length)
        if n > self.max_body:
            return self._reject(413, "too_large", f"the body ({n} bytes) is over the "
                                f"limit of {self.max_body} bytes")
        return n

    def handle_body(self, headers: Mapping[str, str], body: bytes, expected: int) -> Answer:
        delivery = headers.get("x-github-delivery", "")
        if len(body) < expected:
            return self._reject(400, "truncated", f"the body ended after {len(body)} of "
                                f"{expected} bytes", delivery=delivery or None)
        given = headers.get("x-hub-signature-256", "")
        digest = hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(given.encode(), f"sha256={digest}".encode()):
            return self._reject(401, "bad_signature", "the X-Hub-Signature-256 signature "
                                "does not match the body (check the webhook secret)",
                                delivery=delivery or None)
        event = headers.get("x-github-event", "")
        if event == "ping":
            return self._reject(200, "ping", "pong")
        if event != "workflow_job":
            return self._reject(202, "ignored_event", f"ignored: event {event!r}")
        if not delivery:
            return self._reject(400, "no_delivery", "an X-GitHub-Delivery id is required")
        try:
            payload = json.loads(body)
            if not isinstance(payload, dict):
                raise BadPayload("the body is not a JSON object")
            action = payload.get("action")
            if action not in ACTIONS:
                return self._reject(202, "ignored_action", f"ignored: action {action!r}",
                                    delivery=delivery)
            job = job_from_payload(payload)
        except (ValueError, UnicodeDecodeError) as err:
            return self._reject(400, "bad_payload", f"not a workflow_job payload: {err}",
                                delivery=delivery)
        # Back-pressure: with a backlog, answer a little later (a few ms, still far from
        # GitHub's 10 s) so the worker that applies events gets the interpreter's time.
        backlog = self.events.qsize()
        if backlog >= 1000:
            time.sleep(min(0.02, backlog / 1_000_000))
        # A full queue is refused before the delivery id is recorded, so that a redelivery
        # of it (GitHub keeps the id) is taken then, not dropped as a duplicate.
        if self.events.full():
            return self._overloaded(delivery)
        if not self.first_delivery(delivery):
            return self._reject(200, "duplicate", "already received", delivery=delivery)
        try:
            self.events.put_nowait((job, delivery))
        except queue.Full:  # filled meanwhile by another request thread (rare)
            return self._overloaded(delivery)
        self.metrics.webhooks.labels("accepted").inc()
        return Answer(202, b"accepted\n")

    def _overloaded(self, delivery: str) -> Answer:
        return self._reject(503, "overloaded", "the event queue is full; the reconcile loop "
                            "will pick this job up", delivery=delivery)


class IntakeServer:
    """The HTTP server: ``POST <path>`` (webhooks), ``GET /metrics``, ``GET /healthz``."""

    def __init__(self, intake: Intake, host: str, port: int, *,
                 health: Callable[[], tuple[bool, str]]) -> None:
        self.intake = intake
        self.health = health
        handler = type("Handler", (_Handler,), {"server_ref": self})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

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


class _Handler(BaseHTTPRequestHandler):
    server_ref: IntakeServer
    protocol_version = "HTTP/1.1"
    timeout = _TIMEOUT
    disable_nagle_algorithm = True  # the answer's headers and body go out at once

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
        head = self.server_ref.intake.check_head("POST", self.path, headers)
        if isinstance(head, Answer):
            self._send(head, close=head.status in (411, 413))
            return
        try:
            body = self.rfile.read(head)
        except OSError:  # the client stalled past the timeout or went away
            body = b""
        answer = self.server_ref.intake.handle_body(headers, body, head)
        self._send(answer, close=len(body) < head)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the intake logs what matters, as JSON
