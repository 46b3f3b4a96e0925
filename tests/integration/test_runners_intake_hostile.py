"""The webhook endpoint against hostile input, over a real loopback socket: one test per class
of attack (valid-signed odd fields, one bad event in a batch, malformed headers, a lone
surrogate that reaches `runners status`, bursts of new connections, slow clients)."""

from __future__ import annotations

import http.client
import json
import logging
import os
import select
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gha_mlops.github.port import GhJob
from gha_mlops.runners.config import load_config
from gha_mlops.runners.intake import Intake, IntakeServer
from gha_mlops.runners.observe import LOG, Metrics
from gha_mlops.runners.service import Service
from gha_mlops.runners.state import State
from gha_mlops.testing.fake_runners import FakeBackend, FakeRunnersGitHub
from tests.integration.test_runners_intake import SECRET, Endpoint, example, sign

MARK = '"__ODD__"'


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[Endpoint]:
    ep = Endpoint(tmp_path)
    yield ep
    ep.server.stop()
    ep.state.close()


class Records(logging.Handler):
    """The autoscaler's log records, whatever its logger's propagation."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _with(path: str, raw: str) -> bytes:
    """GitHub's queued example with the field at ``path`` (a.b) set to the raw JSON ``raw``."""
    payload: Any = example("queued")
    *parents, last = path.split(".")
    node = payload
    for key in parents:
        node = node[key]
    node[last] = "__ODD__"
    return json.dumps(payload).replace(MARK, raw, 1).encode()


@pytest.mark.parametrize(("body", "field"), [
    (_with("workflow_job.run_attempt", "[1]"), "workflow_job.run_attempt"),
    (_with("workflow_job.run_attempt", "1e400"), "workflow_job.run_attempt"),
    (_with("workflow_job.run_attempt", "true"), "workflow_job.run_attempt"),
    (_with("workflow_job.id", str(2**70)), "workflow_job.id"),
    (_with("workflow_job.id", "1" + "0" * 5000), "workflow_job.id"),
    (_with("workflow_job.run_id", '"5"'), "workflow_job.run_id"),
    (_with("workflow_job.labels", '["gpu", 7]'), "workflow_job.labels"),
    (_with("workflow_job.labels", json.dumps(["x" * 5000])), "workflow_job.labels[0]"),
    (_with("workflow_job.name", json.dumps("n" * 30_000)), "workflow_job.name"),
    (_with("workflow_job.name", '"a\\ud800b"'), "workflow_job.name"),
    (_with("workflow_job.conclusion", "{}"), "workflow_job.conclusion"),
    (_with("workflow_job.created_at", '"yesterday"'), "workflow_job.created_at"),
    (_with("repository.full_name", '"../../etc/passwd"'), "repository.full_name"),
    (_with("workflow_job.steps", "[" * 20_000 + "]" * 20_000), "nested too deeply"),
    (_with("workflow_job.steps", "NaN"), "NaN is not JSON"),
], ids=["attempt-list", "attempt-1e400", "attempt-bool", "id-70-bits", "id-5000-digits",
        "run_id-string", "labels-int", "label-huge", "name-huge", "name-surrogate",
        "conclusion-object", "time-unparsed", "repo-path", "deep-nesting", "nan"])
def test_odd_signed_fields_are_refused_naming_the_field(
        endpoint: Endpoint, capfd: pytest.CaptureFixture[str], body: bytes,
        field: str) -> None:
    status, text = endpoint.post(body, delivery="odd-1")
    assert status == 400, text
    assert field in text
    assert endpoint.intake.events.empty()
    assert "Traceback" not in capfd.readouterr().err
    # Refused before its delivery id was taken: a corrected redelivery is taken.
    good = json.dumps(example("queued")).encode()
    assert endpoint.post(good, delivery="odd-1") == (202, "accepted\n")


def test_an_unknown_status_is_not_stored(endpoint: Endpoint) -> None:
    status, text = endpoint.post(_with("workflow_job.status", '"exploded"'))
    assert (status, text) == (202, "ignored: status 'exploded'\n")
    assert endpoint.intake.events.empty()


class PoisonState(State):
    """Our own fake state: writing a job whose id is in ``poison`` fails (as a disk or a
    driver error would); ``gate`` holds the first write until the test has queued the rest,
    so that they are applied in one batch."""

    def __init__(self, path: Path, poison: set[int]) -> None:
        super().__init__(path)
        self.poison = poison
        self.gate = threading.Event()

    def _upsert(self, db: sqlite3.Connection, job: GhJob, at: float) -> Any:
        self.gate.wait(timeout=10)
        if job.id in self.poison:
            raise sqlite3.OperationalError("injected: disk I/O error")
        return super()._upsert(db, job, at)


def _queued(job_id: int) -> bytes:
    return json.dumps({"action": "queued", "repository": {"full_name": "octo/demo"},
                       "workflow_job": {"id": job_id, "run_id": 1, "status": "queued",
                                        "labels": ["self-hosted", "gpu"]}}).encode()


def _wait_for(what: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def failures(logged: Records) -> int:
    return sum(1 for r in list(logged.records) if getattr(r, "delivery", None) == "d-666"
               and r.levelname == "ERROR")


def test_one_bad_event_fails_alone_and_its_redelivery_is_taken(
        tmp_path: Path) -> None:
    (tmp_path / "runners.yaml").write_text("""
github: {repo: octo/demo, token_env: TOKEN}
webhook: {secret_env: SECRET}
pools: [{name: gpu, labels: [gpu], image: img, max: 100}]
""")
    config = load_config(tmp_path / "runners.yaml",
                         {"TOKEN": "t", "SECRET": SECRET.decode()})
    state = PoisonState(config.state_path, poison={666})
    logged = Records()
    LOG.addHandler(logged)
    service = Service.build(config, github=FakeRunnersGitHub(),
                            backends={"docker": FakeBackend()}, port=0, state=state).start()
    ep = Endpoint.__new__(Endpoint)
    ep.server = service.server
    try:
        for n, job_id in enumerate([1, 2, 666, 3, 4]):
            assert ep.post(_queued(job_id), delivery=f"d-{job_id}")[0] == 202, n
        _wait_for(lambda: service.intake.events.qsize() == 4)  # the first is being written
        state.gate.set()
        _wait_for(lambda: all(state.job(i) for i in (1, 2, 3, 4)))
        assert state.job(666) is None
        assert failures(logged) == 1
        assert ep.post(_queued(2), delivery="d-2") == (200, "already received\n")
        # The failed one's redelivery is taken again (and fails again while poisoned) ...
        assert ep.post(_queued(666), delivery="d-666") == (202, "accepted\n")
        _wait_for(lambda: failures(logged) == 2)
        state.poison.clear()
        # ... and once the fault is gone, applied.
        assert ep.post(_queued(666), delivery="d-666") == (202, "accepted\n")
        _wait_for(lambda: state.job(666) is not None)
    finally:
        LOG.removeHandler(logged)
        state.gate.set()
        service.stop()


def _raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


@pytest.mark.parametrize("headers", [
    b"Content-Length: \xb2\r\n",  # superscript two (latin-1): str.isdigit() says yes
    "Content-Length: \u0661\u0662\r\n".encode(),  # Arabic-Indic digits
    "Content-Length: \uff11\uff12\r\n".encode(),  # fullwidth digits
    b"Content-Length: +12\r\n",
    b"Content-Length: 2\r\nContent-Length: 2\r\n",
    b"Content-Length: 2\r\nX-GitHub-Delivery: " + b"d" * 300 + b"\r\n",
    b"Content-Length: 2\r\nX-GitHub-Delivery: a b\xff\r\n",
], ids=["superscript", "arabic-indic", "fullwidth", "plus", "twice", "delivery-long",
        "delivery-binary"])
def test_malformed_headers_are_refused(endpoint: Endpoint, capfd: pytest.CaptureFixture[str],
                                       headers: bytes) -> None:
    answer = _raw(endpoint.server.port, b"POST /webhook HTTP/1.1\r\nHost: x\r\n"
                  b"X-GitHub-Event: workflow_job\r\n" + headers + b"\r\n{}")
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert "Traceback" not in capfd.readouterr().err
    assert endpoint.intake.events.empty()


def test_a_lone_surrogate_label_is_refused_and_status_still_prints(
        endpoint: Endpoint, tmp_path: Path) -> None:
    body = _with("workflow_job.labels", json.dumps(["self-hosted", "gpu\ud800"]))
    status, text = endpoint.post(body)
    assert status == 400 and "workflow_job.labels[1]" in text
    assert endpoint.intake.events.empty()
    # A state written before this check (or by the reconcile loop) may hold one: the
    # status command shows it escaped instead of crashing.
    db = tmp_path / "old" / "state.db"
    old = State(db)
    old.upsert_job(GhJob(id=9, repo="octo/demo", run_id=1, run_attempt=1, name="t",
                         status="queued", labels=("self-hosted", "gpu\ud800", "\x1b[31m")))
    old.close()
    cfg = tmp_path / "runners.yaml"
    cfg.write_text(f"""
github: {{repo: octo/demo, token_env: TOKEN}}
webhook: {{secret_env: SECRET}}
state: {db}
pools: [{{name: gpu, labels: [gpu], image: img, max: 1}}]
""")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONIOENCODING"}
    proc = subprocess.run([sys.executable, "-m", "gha_mlops", "runners", "status", "-c",
                           str(cfg)], capture_output=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    out = proc.stdout.decode()
    assert "gpu\\ud800" in out and "\x1b" not in out


def _connect_and_ask(port: int, barrier: threading.Barrier, out: list[str], i: int) -> None:
    barrier.wait()
    try:
        out[i] = _raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                      )[:12].decode()
    except OSError as err:
        out[i] = type(err).__name__


def test_a_burst_of_new_connections_is_answered(endpoint: Endpoint) -> None:
    n = 200
    barrier = threading.Barrier(n)
    out = ["not run"] * n
    threads = [threading.Thread(target=_connect_and_ask,
                                args=(endpoint.server.port, barrier, out, i))
               for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert out == ["HTTP/1.1 200"] * n, {o: out.count(o) for o in set(out)}


@pytest.fixture
def quick(tmp_path: Path) -> Iterator[Endpoint]:
    """An endpoint whose requests must arrive within 1 s, serving 4 connections at most."""
    ep = Endpoint.__new__(Endpoint)
    ep.state = State(tmp_path / "state.db")
    ep.intake = Intake(secret=SECRET, path="/webhook", max_body=64 * 1024,
                       first_delivery=ep.state.first_delivery, metrics=Metrics())
    ep.server = IntakeServer(ep.intake, "127.0.0.1", 0, health=lambda: (True, "ok"),
                             request_deadline=1.0, max_connections=4).start()
    yield ep
    ep.server.stop()
    ep.state.close()


def _closed(s: socket.socket) -> bool:
    """Whether the server closed ``s`` (what it said before, if anything, is read and
    dropped)."""
    if not select.select([s], [], [], 0)[0]:
        return False
    try:
        return s.recv(65536) == b""
    except OSError:
        return True


@pytest.mark.parametrize("where", ["head", "body"])
def test_a_trickling_client_is_cut_off_at_the_deadline(quick: Endpoint, where: str) -> None:
    body = json.dumps(example("queued")).encode()
    head = (f"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
            f"X-GitHub-Event: workflow_job\r\nX-GitHub-Delivery: slow\r\n"
            f"X-Hub-Signature-256: {sign(body)}\r\n").encode()
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", quick.server.port), timeout=5) as s:
        trickle = head  # the head never ends
        if where == "body":
            s.sendall(head + b"\r\n")
            trickle = body
        served = False
        closed_after = None
        for i in range(40):  # a byte every 0.1 s: 4 s at most
            try:
                s.sendall(trickle[i:i + 1])
            except OSError:
                closed_after = time.monotonic() - start
                break
            if i == 3:  # meanwhile, another client is served at once
                t = time.monotonic()
                assert quick.post(body) == (202, "accepted\n")
                served = time.monotonic() - t < 0.5
            time.sleep(0.1)
            if _closed(s):
                closed_after = time.monotonic() - start
                break
    assert served
    assert closed_after is not None and closed_after < 2.0, closed_after


def test_connections_past_the_cap_are_answered_503_and_slots_come_back(
        quick: Endpoint) -> None:
    idle = [socket.create_connection(("127.0.0.1", quick.server.port), timeout=5)
            for _ in range(4)]
    try:
        time.sleep(0.2)  # accepted: they hold the 4 slots
        answer = _raw(quick.server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 503"), answer
        time.sleep(1.5)  # past their deadline: closed, slots free
        conn = http.client.HTTPConnection("127.0.0.1", quick.server.port, timeout=5)
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        for s in idle:
            s.close()
