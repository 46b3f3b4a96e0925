"""The webhook endpoint over a real loopback socket, fed GitHub's own example payloads (npm
@octokit/webhooks-examples), and every kind of bad delivery the issue names."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gha_mlops.runners.intake import Intake, IntakeServer, job_from_payload
from gha_mlops.runners.observe import Metrics
from gha_mlops.runners.state import State

EXAMPLES = Path(".ci/npm/node_modules/@octokit/webhooks-examples/api.github.com/index.json")
SECRET = b"It's a Secret to Everybody, 0123456789"


def examples(event: str) -> list[dict[str, Any]]:
    assert EXAMPLES.exists(), "run `make npm-deps` (npm ci --prefix .ci/npm) first"
    for entry in json.loads(EXAMPLES.read_text()):
        if entry["name"] == event:
            return list(entry["examples"])
    raise AssertionError(f"no examples for {event}")


def example(action: str) -> dict[str, Any]:
    return next(e for e in examples("workflow_job") if e["action"] == action)


def sign(body: bytes, secret: bytes = SECRET) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class Endpoint:
    def __init__(self, tmp: Path, max_body: int = 64 * 1024) -> None:
        self.state = State(tmp / "state.db")
        self.intake = Intake(secret=SECRET, path="/webhook", max_body=max_body,
                             first_delivery=self.state.first_delivery, metrics=Metrics())
        self.server = IntakeServer(self.intake, "127.0.0.1", 0,
                                   health=lambda: (True, "ok")).start()

    def post(self, body: bytes, *, event: str = "workflow_job", delivery: str | None = None,
             signature: str | None = None, extra: dict[str, str] | None = None
             ) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=5)
        headers = {"Content-Type": "application/json", "X-GitHub-Event": event,
                   "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
                   "X-Hub-Signature-256": signature if signature is not None else sign(body),
                   **(extra or {})}
        conn.request("POST", "/webhook", body=body, headers=headers)
        resp = conn.getresponse()
        text = resp.read().decode()
        conn.close()
        return resp.status, text

    def raw(self, data: bytes, *, shut: bool = True) -> bytes:
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=15) as s:
            s.sendall(data)
            if shut:
                s.shutdown(socket.SHUT_WR)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
            return out


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[Endpoint]:
    ep = Endpoint(tmp_path)
    yield ep
    ep.server.stop()
    ep.state.close()


@pytest.mark.parametrize("action", ["queued", "in_progress", "completed", "waiting"])
def test_githubs_example_payloads_are_accepted(endpoint: Endpoint, action: str) -> None:
    payload = example(action)
    body = json.dumps(payload).encode()
    assert endpoint.post(body) == (202, "accepted\n")
    job, _delivery = endpoint.intake.events.get_nowait()
    assert job.id == payload["workflow_job"]["id"]
    assert job.labels == tuple(payload["workflow_job"]["labels"])
    assert job.repo == payload["repository"]["full_name"]


def test_every_example_parses(endpoint: Endpoint) -> None:
    for payload in examples("workflow_job"):
        job = job_from_payload(payload)
        assert job.status == payload["workflow_job"]["status"]


def test_a_forged_signature_is_refused(endpoint: Endpoint) -> None:
    body = json.dumps(example("queued")).encode()
    assert endpoint.post(body, signature=sign(body, b"wrong secret"))[0] == 401
    assert endpoint.post(body, signature="")[0] == 401
    assert endpoint.post(body, signature="sha1=abc")[0] == 401
    tampered = body.replace(b'"queued"', b'"completed"', 1)
    assert endpoint.post(tampered, signature=sign(body))[0] == 401
    assert endpoint.intake.events.empty()


def test_a_replayed_delivery_is_acknowledged_and_dropped(endpoint: Endpoint) -> None:
    body = json.dumps(example("queued")).encode()
    assert endpoint.post(body, delivery="d-1")[0] == 202
    assert endpoint.post(body, delivery="d-1") == (200, "already received\n")
    assert endpoint.intake.events.qsize() == 1


def test_an_oversized_body_is_refused_unread(tmp_path: Path) -> None:
    ep = Endpoint(tmp_path, max_body=1024)
    try:
        head = (b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n"
                b"X-GitHub-Event: workflow_job\r\n\r\n")
        answer = ep.raw(head, shut=False)
        assert answer.startswith(b"HTTP/1.1 413")
        assert b"over the limit of 1024 bytes" in answer
    finally:
        ep.server.stop()
        ep.state.close()


def test_a_truncated_body_is_refused(endpoint: Endpoint) -> None:
    body = json.dumps(example("queued")).encode()
    head = (f"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
            f"X-GitHub-Event: workflow_job\r\nX-GitHub-Delivery: d-t\r\n"
            f"X-Hub-Signature-256: {sign(body)}\r\n\r\n").encode()
    answer = endpoint.raw(head + body[: len(body) // 2])
    assert answer.startswith(b"HTTP/1.1 400")
    assert b"the body ended after" in answer
    assert endpoint.intake.events.empty()


def test_no_content_length_is_refused(endpoint: Endpoint) -> None:
    answer = endpoint.raw(b"POST /webhook HTTP/1.1\r\nHost: x\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 411")


@pytest.mark.parametrize(("body", "message"), [
    (b"{not json", "not a workflow_job payload"),
    (b"[1, 2]", "not a workflow_job payload"),
    (json.dumps({"action": "queued", "workflow_job": {"id": "7"}}).encode(),
     "repository: expected dict"),
    (json.dumps({"action": "queued", "repository": {"full_name": "o/r"},
                 "workflow_job": {"id": 1, "run_id": 2, "status": "queued",
                                  "labels": "gpu"}}).encode(), "labels: expected list"),
])
def test_non_json_and_malformed_payloads_are_refused(endpoint: Endpoint, body: bytes,
                                                     message: str) -> None:
    status, text = endpoint.post(body)
    assert status == 400 and message in text
    assert endpoint.intake.events.empty()


def test_unknown_events_and_actions_are_acknowledged_and_ignored(endpoint: Endpoint) -> None:
    ping = json.dumps(next(iter(examples("ping")))).encode()
    assert endpoint.post(ping, event="ping") == (200, "pong\n")
    push = json.dumps(next(iter(examples("push")))).encode()
    status, text = endpoint.post(push, event="push")
    assert status == 202 and "ignored: event 'push'" in text
    odd = dict(example("queued"), action="requested")
    status, text = endpoint.post(json.dumps(odd).encode())
    assert status == 202 and "ignored: action 'requested'" in text
    assert endpoint.intake.events.empty()


def test_a_full_queue_answers_503(tmp_path: Path) -> None:
    ep = Endpoint(tmp_path)
    ep.intake.events.maxsize = 1
    try:
        body = json.dumps(example("queued")).encode()
        assert ep.post(body)[0] == 202
        status, text = ep.post(body)
        assert status == 503 and "reconcile loop" in text
    finally:
        ep.server.stop()
        ep.state.close()


def test_metrics_and_health(endpoint: Endpoint) -> None:
    body = json.dumps(example("queued")).encode()
    endpoint.post(body, signature="sha256=00")
    conn = http.client.HTTPConnection("127.0.0.1", endpoint.server.port, timeout=5)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    assert 'gha_mlops_runners_webhooks_total{outcome="bad_signature"} 1.0' in text
    assert 'gha_mlops_runners_errors_total{kind="webhook_bad_signature"} 1.0' in text
    conn.request("GET", "/healthz")
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (200, b"ok\n")
    conn.request("GET", "/nope")
    resp = conn.getresponse()
    assert resp.status == 404
    resp.read()
    conn.close()


def test_keep_alive_serves_many_deliveries_on_one_connection(endpoint: Endpoint) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", endpoint.server.port, timeout=5)
    payload = example("queued")
    for i in range(50):
        payload["workflow_job"]["id"] = 1000 + i
        body = json.dumps(payload).encode()
        conn.request("POST", "/webhook", body=body, headers={
            "X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": f"k-{i}",
            "X-Hub-Signature-256": sign(body)})
        resp = conn.getresponse()
        assert resp.status == 202
        resp.read()
    conn.close()
    assert endpoint.intake.events.qsize() == 50


def test_a_delivery_refused_for_a_full_queue_is_taken_when_redelivered(tmp_path: Path) -> None:
    ep = Endpoint(tmp_path)
    ep.intake.events.maxsize = 1
    try:
        body = json.dumps(example("queued")).encode()
        assert ep.post(body, delivery="first")[0] == 202
        assert ep.post(body, delivery="again")[0] == 503
        ep.intake.events.get_nowait()  # the worker catches up
        assert ep.post(body, delivery="again")[0] == 202  # GitHub's redelivery keeps the id
    finally:
        ep.server.stop()
        ep.state.close()


def test_get_on_the_webhook_path_says_post(endpoint: Endpoint) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", endpoint.server.port, timeout=5)
    conn.request("GET", "/webhook")
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (405, b"POST webhooks here\n")
    conn.close()
