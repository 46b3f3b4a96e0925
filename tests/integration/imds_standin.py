"""An instance-metadata stand-in for the tests: one per instance, stdlib ``http.server`` on
loopback, IMDSv2 only (as the autoscaler's launch template requires).

- ``PUT /latest/api/token`` with ``X-aws-ec2-metadata-token-ttl-seconds`` (1..21600) gives a
  token; a GET without a live token is 401, as on EC2 with ``HttpTokens=required``;
- ``/latest/meta-data/instance-id``, ``placement/region``, ``tags/instance`` (the keys, one a
  line) and ``tags/instance/<key>``;
- ``/latest/meta-data/spot/instance-action``: 404 until :meth:`ImdsStandin.notify`, then
  ``{"action": "terminate", "time": ...}``.

Tags come from ``tags`` given, or are read from moto (``describe_instances`` at its own
endpoint) on each request when ``moto_endpoint`` is given: a tag set later is seen, as on
EC2. Tests can also make it misbehave: ``raw[path] = (status, body)`` answers a path so.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

META = "/latest/meta-data"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # an agent killed mid-request (EC2 took its machine) is what the tests do


class ImdsStandin:
    """One instance's metadata; :attr:`endpoint` is what ``--imds`` takes."""

    def __init__(self, instance_id: str, *, region: str = "us-east-1",
                 tags: Mapping[str, str] | None = None,
                 tag_source: Callable[[], Mapping[str, str]] | None = None) -> None:
        self.instance_id, self.region = instance_id, region
        self._tags = dict(tags or {})
        self._tag_source = tag_source
        self._lock = threading.Lock()
        self._tokens: dict[str, float] = {}  # token -> expiry (monotonic)
        self._notice: dict[str, str] | None = None
        self.raw: dict[str, tuple[int, bytes]] = {}
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self.endpoint = ""
        self._server: _Server | None = None

    def notify(self, action_time: str, action: str = "terminate") -> None:
        """The spot interruption notice appears (two minutes ahead, on EC2)."""
        with self._lock:
            self._notice = {"action": action, "time": action_time}

    def expire_tokens(self) -> None:
        """Every token stops working (a test of the agent's renewal)."""
        with self._lock:
            self._tokens.clear()

    def tags(self) -> dict[str, str]:
        return dict(self._tag_source()) if self._tag_source else dict(self._tags)

    def answer(self, method: str, path: str, headers: Mapping[str, str]) -> tuple[int, bytes]:
        """(status, body) for one request; the HTTP handler only transports this."""
        if path in self.raw:
            return self.raw[path]
        if path == "/latest/api/token":
            if method != "PUT":
                return 405, b""
            try:
                ttl = int(headers.get("x-aws-ec2-metadata-token-ttl-seconds", ""))
            except ValueError:
                return 400, b""
            if not 1 <= ttl <= 21600:
                return 400, b""
            token = secrets.token_urlsafe(32)
            with self._lock:
                self._tokens[token] = time.monotonic() + ttl
            return 200, token.encode()
        if method != "GET":
            return 405, b""
        with self._lock:
            live = self._tokens.get(headers.get("x-aws-ec2-metadata-token", ""), 0.0)
            notice = self._notice
        if live < time.monotonic():
            return 401, b""
        return self._meta(path, notice)

    def _meta(self, path: str, notice: dict[str, str] | None) -> tuple[int, bytes]:
        if path == f"{META}/instance-id":
            return 200, self.instance_id.encode()
        if path == f"{META}/placement/region":
            return 200, self.region.encode()
        if path == f"{META}/spot/instance-action":
            return (404, b"") if notice is None else (200, json.dumps(notice).encode())
        tags = self.tags()
        if path == f"{META}/tags/instance":
            return 200, "\n".join(sorted(tags)).encode()
        prefix = f"{META}/tags/instance/"
        if path.startswith(prefix) and path[len(prefix):] in tags:
            return 200, tags[path[len(prefix):]].encode()
        return 404, b""

    def start(self) -> ImdsStandin:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, body = standin.answer(self.command, self.path, headers)
                standin.requests.append((self.command, self.path, status))
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_POST = _any

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name=f"imds-{self.instance_id}",
                         daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def moto_tags(ec2: Any, instance_id: str) -> Callable[[], dict[str, str]]:
    """A tag source reading ``instance_id``'s tags from moto (an EC2 client at moto's own
    endpoint, not the fault proxy: the instance's metadata is not subject to API faults)."""
    def read() -> dict[str, str]:
        found = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        instance = found[0]["Instances"][0] if found else {}
        return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
    return read


@contextmanager
def imds_standin(instance_id: str = "i-0123456789abcdef0", **kwargs: Any
                 ) -> Iterator[ImdsStandin]:
    """A started stand-in, stopped after."""
    standin = ImdsStandin(instance_id, **kwargs).start()
    try:
        yield standin
    finally:
        standin.stop()
