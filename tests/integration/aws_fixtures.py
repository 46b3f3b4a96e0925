"""AWS for the tests, for real: a moto server on loopback (EC2, SSM, SQS, EventBridge, ...) and
a fault-injecting HTTP proxy in front of it.

moto never runs out of capacity, never throttles and never returns a partial fleet, so the
proxy (stdlib ``http.server`` + ``http.client``, loopback) forwards boto3's requests to moto
unchanged except where a test programmed a fault for an action:

- ``fail(action, code, message, status=400, times=1)``: the next ``times`` calls of ``action``
  are answered with a real error response (EC2's Query-API XML
  ``<Response><Errors><Error><Code>..``; a JSON-protocol service such as SSM/SQS/EventBridge,
  called with ``X-Amz-Target``, gets its JSON ``{"__type": code, "message": ...}``) without
  reaching moto;
- ``partial_fleet(keep, errors, times=1)``: the next ``times`` ``CreateFleet`` calls reach moto
  asking for only ``keep`` instances (so moto's truth matches the answer: nothing launched that
  the response does not name), and the response gets an ``errorSet`` item per error.

Every call is recorded (``calls()``), faulted or not. boto3 is pointed at ``proxy.endpoint``
with ``endpoint_url``; nothing of boto3 is patched. Use in a test module::

    from tests.integration.aws_fixtures import aws_env, fault_proxy, moto_server  # noqa: F401
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import xml.sax.saxutils
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host",
                  "proxy-connection", "te", "trailer", "upgrade",
                  "server", "date"})  # send_response() writes its own


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class MotoServer:
    """A moto server process on 127.0.0.1 (every service moto has, one endpoint)."""

    endpoint: str
    log: Path

    def reset(self) -> None:
        """Forget every resource (moto's own reset API): a clean account for the next test."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass


@contextlib.contextmanager
def moto_process(log: Path) -> Iterator[str]:
    """``python -m moto.server`` on a free loopback port, its output in ``log``: its endpoint
    once it answers; stopped after."""
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                 "-p", str(port)], stdout=out, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"moto server exited:\n{log.read_text()}"
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                assert time.monotonic() < deadline, f"moto never answered:\n{log.read_text()}"
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """``python -m moto.server`` on a free loopback port for the module; stopped after."""
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with moto_process(log) as endpoint:
        yield MotoServer(endpoint, log)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy credentials and a region; no profile file, no instance metadata, no endpoint from
    the environment (each client names its endpoint_url)."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_RETRY_MODE",
                 "AWS_MAX_ATTEMPTS", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL_EC2"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@dataclass(frozen=True)
class Call:
    """One request the proxy saw: its action, the status it answered (moto's, for ``"lose"``;
    0 for ``"drop"``), and which programmed fault met it (``"error"``, ``"partial"``,
    ``"drop"``, ``"lose"``; ``"idempotent"``: answered from a ClientToken seen before),
    ``""`` for none."""

    action: str
    status: int
    fault: str = ""


@dataclass(frozen=True)
class FleetError:
    """An ``errorSet`` item a partial fleet gets."""

    code: str
    message: str = ""
    instance_type: str = ""
    subnet_id: str = ""
    lifecycle: str = "spot"


@dataclass
class _Fault:
    kind: str  # "error" | "partial" | "drop" | "lose"
    remaining: int
    status: int = 400
    code: str = ""
    message: str = ""
    keep: int = 0
    errors: tuple[FleetError, ...] = ()


class FaultProxy:
    """The proxy's programming and log; thread-safe (boto3 may call from several threads)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urllib.parse.urlsplit(upstream)
        self.endpoint = ""  # set once listening
        self._lock = threading.Lock()
        self._faults: dict[str, list[_Fault]] = {}
        self._calls: list[Call] = []
        self._tokens: dict[tuple[str, str], tuple[bytes, int, list[tuple[str, str]], bytes]] = {}

    def fail(self, action: str, code: str, message: str = "", *, status: int = 400,
             times: int = 1) -> None:
        """Answer the next ``times`` calls of ``action`` with error ``code`` (HTTP ``status``:
        400 for client errors and throttling, 500/503 for server ones)."""
        self._add(action, _Fault("error", times, status, code, message or f"{code} (injected)"))

    def partial_fleet(self, keep: int, errors: Sequence[FleetError], *, times: int = 1) -> None:
        """The next ``times`` CreateFleet calls launch only ``keep`` instances and report
        ``errors`` for the rest."""
        self._add("CreateFleet", _Fault("partial", times, keep=keep, errors=tuple(errors)))

    def drop(self, action: str, *, reached: bool = False, times: int = 1) -> None:
        """Close the connection of the next ``times`` calls of ``action`` without an answer
        (botocore raises ``ConnectionClosedError``; its standard mode retries it). With
        ``reached``, the call reaches moto first and only the answer is lost: the fleet was
        launched although the caller saw an error (adopt by tag; never launch twice)."""
        self._add(action, _Fault("lose" if reached else "drop", times))

    def calls(self, action: str | None = None) -> list[Call]:
        """Every call seen so far (of ``action`` only, if given), oldest first."""
        with self._lock:
            return [c for c in self._calls if action is None or c.action == action]

    def pending(self) -> int:
        """Programmed faults not used yet (a test can assert its faults were all reached)."""
        with self._lock:
            return sum(f.remaining for faults in self._faults.values() for f in faults)

    def _add(self, action: str, fault: _Fault) -> None:
        with self._lock:
            self._faults.setdefault(action, []).append(fault)

    def take(self, action: str) -> _Fault | None:
        """The fault to apply to this call of ``action``, used up once per call."""
        with self._lock:
            queue = self._faults.get(action, [])
            while queue and queue[0].remaining <= 0:
                queue.pop(0)
            if not queue:
                return None
            queue[0].remaining -= 1
            return queue[0]

    def remembered(self, action: str, token: str
                   ) -> tuple[bytes, int, list[tuple[str, str]], bytes] | None:
        """(request body, status, headers, body) of the first successful call of ``action``
        with ``ClientToken`` ``token``."""
        with self._lock:
            return self._tokens.get((action, token))

    def remember(self, action: str, token: str,
                 answer: tuple[bytes, int, list[tuple[str, str]], bytes]) -> None:
        with self._lock:
            self._tokens.setdefault((action, token), answer)

    def record(self, call: Call) -> None:
        with self._lock:
            self._calls.append(call)


def _action(headers: dict[str, str], body: bytes) -> str:
    target = headers.get("x-amz-target", "")
    if target:  # JSON protocol: "AmazonSSM.GetParameter"
        return target.rsplit(".", 1)[-1]
    if "x-www-form-urlencoded" in headers.get("content-type", ""):
        values = urllib.parse.parse_qs(body.decode("utf-8", "replace")).get("Action", [""])
        return values[0]
    return ""


_IDEMPOTENT = frozenset({"CreateFleet", "RunInstances"})


def _client_token(action: str, body: bytes) -> str:
    if action not in _IDEMPOTENT:
        return ""
    values = urllib.parse.parse_qs(body.decode("utf-8", "replace")).get("ClientToken", [""])
    return values[0]


def _error_body(fault: _Fault, json_type: str) -> tuple[bytes, str]:
    """The error as the protocol of the request has it: ``json_type`` is the request's JSON
    content type (``application/x-amz-json-1.0`` for SQS, 1.1 for SSM/EventBridge), "" for
    EC2's Query API."""
    if json_type:
        body = json.dumps({"__type": fault.code, "message": fault.message}).encode()
        return body, json_type
    esc = xml.sax.saxutils.escape
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>'
            f"{esc(fault.code)}</Code><Message>{esc(fault.message)}</Message></Error></Errors>"
            f"<RequestID>{uuid.uuid4()}</RequestID></Response>").encode(), "text/xml"


def _fewer(body: bytes, keep: int) -> bytes:
    """A CreateFleet request body asking for at most ``keep`` instances."""
    pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    out = [(k, str(min(int(v), keep)) if k.startswith("TargetCapacitySpecification.")
            and k.endswith("TargetCapacity") else v) for k, v in pairs]
    return urllib.parse.urlencode(out).encode()


def _with_errors(body: bytes, errors: Sequence[FleetError]) -> bytes:
    """A CreateFleet response with ``errors`` as its ``errorSet`` (moto's, if any, replaced)."""
    esc = xml.sax.saxutils.escape
    items = "".join(
        f"<item><errorCode>{esc(e.code)}</errorCode><errorMessage>{esc(e.message)}"
        f"</errorMessage><lifecycle>{esc(e.lifecycle)}</lifecycle><launchTemplateAndOverrides>"
        f"<overrides><instanceType>{esc(e.instance_type)}</instanceType><subnetId>"
        f"{esc(e.subnet_id)}</subnetId></overrides></launchTemplateAndOverrides></item>"
        for e in errors)
    text = body.decode("utf-8")
    start, end = text.find("<errorSet"), text.find("</errorSet>")
    if start >= 0 and end >= 0:
        text = text[:start] + text[end + len("</errorSet>"):]
    elif start >= 0:  # an empty <errorSet/>
        text = text[:start] + text[text.index(">", start) + 1:]
    close = text.rindex("</CreateFleetResponse>")
    return (text[:close] + f"<errorSet>{items}</errorSet>" + text[close:]).encode()


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass  # the call log is the record; stderr stays quiet

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            action = _action(headers, body)
            fault = proxy.take(action) if action else None
            if fault is not None and fault.kind == "error":
                json_type = headers.get("content-type", "application/x-amz-json-1.1") \
                    if "x-amz-target" in headers else ""
                data, ctype = _error_body(fault, json_type)
                proxy.record(Call(action, fault.status, "error"))
                self._answer(fault.status, [("Content-Type", ctype)], data)
                return
            token = _client_token(action, body)
            seen = proxy.remembered(action, token) if token else None
            if seen is not None and fault is None:
                self._repeat(action, body, seen)
                return
            if fault is not None and fault.kind == "drop":
                proxy.record(Call(action, 0, "drop"))
                self.close_connection = True
                return
            if fault is not None and fault.kind == "partial":
                body = _fewer(body, fault.keep)
            status, reply_headers, data = self._forward(headers, body)
            if token and status == 200:
                proxy.remember(action, token, (body, status, reply_headers, data))
            if fault is not None and fault.kind == "lose":
                proxy.record(Call(action, status, "lose"))
                self.close_connection = True
                return
            if fault is not None and status == 200:
                data = _with_errors(data, fault.errors)
            proxy.record(Call(action, status, fault.kind if fault else ""))
            self._answer(status, reply_headers, data)

        def _repeat(self, action: str, body: bytes,
                    seen: tuple[bytes, int, list[tuple[str, str]], bytes]) -> None:
            """EC2's idempotency, which moto lacks: a ClientToken seen before returns the first
            answer (same parameters) or IdempotentParameterMismatch (other ones)."""
            if seen[0] == body:
                proxy.record(Call(action, seen[1], "idempotent"))
                self._answer(seen[1], seen[2], seen[3])
                return
            fault = _Fault("error", 0, 400, "IdempotentParameterMismatch",
                           "The client token was already used with other parameters.")
            proxy.record(Call(action, 400, "idempotent"))
            self._answer(400, [("Content-Type", "text/xml")], _error_body(fault, "")[0])

        def _forward(self, headers: dict[str, str], body: bytes
                     ) -> tuple[int, list[tuple[str, str]], bytes]:
            up = proxy.upstream
            conn = http.client.HTTPConnection(up.hostname or "127.0.0.1", up.port, timeout=60)
            try:
                sent = {k: v for k, v in headers.items() if k not in _HOP}
                sent["Host"] = up.netloc
                sent["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=sent)
                resp = conn.getresponse()
                data = resp.read()
                kept = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP]
                return resp.status, kept, data
            finally:
                conn.close()

        def _answer(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
            self.send_response(status)
            for key, value in headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any

    return Handler


def spot_interruption_warning(instance_id: str, *, region: str = "us-east-1",
                              account: str = "123456789012",
                              action_time: str = "2026-01-01T00:02:00Z") -> dict[str, object]:
    """The EventBridge event "EC2 Spot Instance Interruption Warning" for ``instance_id``, as
    an SQS target receives it (the message body is this, as JSON)."""
    return {
        "version": "0", "id": str(uuid.uuid4()),
        "detail-type": "EC2 Spot Instance Interruption Warning", "source": "aws.ec2",
        "account": account, "time": action_time, "region": region,
        "resources": [f"arn:aws:ec2:{region}:{account}:instance/{instance_id}"],
        "detail": {"instance-id": instance_id, "instance-action": "terminate"},
    }


@contextlib.contextmanager
def stub_endpoint(answer: Callable[[bytes], tuple[int, str, bytes]]) -> Iterator[str]:
    """An "AWS" on loopback that answers every POST with ``answer(body)`` -> (status,
    content type, data): for answers moto never gives (garbage, hostile fields). Yields its
    URL for ``endpoint_url``."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            status, content_type, data = answer(
                self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="stub-aws", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def fault_proxy(moto_server: MotoServer) -> Iterator[FaultProxy]:
    """A fresh fault proxy in front of the module's moto server (no faults, empty log)."""
    proxy = FaultProxy(moto_server.endpoint)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(proxy))
    server.daemon_threads = True
    proxy.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="fault-proxy", daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
