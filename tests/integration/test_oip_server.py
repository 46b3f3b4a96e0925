"""The OIP server as a process: an independent client (tritonclient.http) gets the same
results as onnxruntime run directly; hostile clients get 4xx answers and the server goes on
serving; workers share one port and one set of metrics; SIGTERM stops it with status 0."""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton

from tests.integration.oip_fixtures import (
    SERVER,
    SIGNATURE,
    RunningServer,
    running_server,
    write_model_dir,
)

X = np.array([[1, 2, 3, 4], [0.25, -1, 0, 8], [0, 0, 0, 0]], dtype=np.float32)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("model"), name="tiny", version="1.0.0")


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[RunningServer]:
    with running_server(model_dir, "--request-timeout", "1") as running:
        yield running


def _client(server: RunningServer) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=server.url.removeprefix("http://"))


def _direct(model_dir: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(model_dir / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"input": x}), strict=True))


def _triton_infer(client: triton.InferenceServerClient, x: np.ndarray, version: str = "",
                  outputs: tuple[str, ...] = ("output", "label"),
                  binary: bool = False) -> triton.InferResult:
    return client.infer("tiny", [_input(x, binary)], model_version=version,
                        request_id="req-7",
                        outputs=[triton.InferRequestedOutput(n, binary_data=binary)
                                 for n in outputs])


def test_an_independent_client_sees_a_live_ready_model_with_its_signature(
        server: RunningServer) -> None:
    client = _client(server)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny") and client.is_model_ready("tiny", "1.0.0")
    assert not client.is_model_ready("other")
    meta = client.get_model_metadata("tiny")
    assert meta["name"] == "tiny" and meta["versions"] == ["1.0.0"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert {k: meta[k] for k in ("inputs", "outputs")} == SIGNATURE
    assert client.get_model_metadata("tiny", "1.0.0") == meta
    assert client.get_server_metadata()["name"] == "gha-mlops-oip"


@pytest.mark.parametrize("binary", [False, True], ids=["JSON tensors", "binary tensors"])
def test_inference_through_the_client_equals_onnxruntime_run_directly(
        server: RunningServer, model_dir: Path, binary: bool) -> None:
    client = _client(server)
    want = _direct(model_dir, X)
    for version in ("", "1.0.0"):
        result = _triton_infer(client, X, version, binary=binary)
        assert result.get_response()["id"] == "req-7"
        np.testing.assert_array_equal(result.as_numpy("output"), want["output"])
        np.testing.assert_array_equal(result.as_numpy("label"), want["label"])
        assert result.as_numpy("output").dtype == np.float32
    only = _triton_infer(client, X[:1], outputs=("label",), binary=binary)
    assert [o["name"] for o in only.get_response()["outputs"]] == ["label"]


def _raw(server: RunningServer, data: bytes, *, read_for: float = 5.0) -> bytes:
    """Send raw bytes on a fresh connection; whatever comes back until close or ``read_for``."""
    with socket.create_connection(server.host_port, timeout=read_for) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks)


def _post(server: RunningServer, path: str, body: bytes,
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, object]]:
    conn = http.client.HTTPConnection(*server.host_port, timeout=10)
    try:
        conn.request("POST", path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def _still_serves(server: RunningServer) -> None:
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                                   "data": [1, 2, 3, 4]}]}).encode()
    status, doc = _post(server, "/v2/models/tiny/infer", body)
    assert status == 200 and doc["outputs"][1]["data"] == [2], doc  # type: ignore[index]


def _infer_body(**item: object) -> bytes:
    base: dict[str, object] = {"name": "input", "shape": [1, 4], "datatype": "FP32",
                               "data": [1, 2, 3, 4]}
    return json.dumps({"inputs": [{**base, **item}]}).encode()


INFER = "/v2/models/tiny/infer"
HOSTILE_JSON: list[tuple[str, str, bytes, int, str]] = [
    ("wrong shape", INFER, _infer_body(shape=[1, 5]), 400, "does not fit"),
    ("shape and data disagree", INFER, _infer_body(shape=[2, 4]), 400, "needs 8 values"),
    ("wrong datatype", INFER, _infer_body(datatype="FP64"), 400, "datatype"),
    ("wrong input name", INFER, _infer_body(name="pixels"), 400, "no input 'pixels'"),
    ("garbage body", INFER, b"\x00\xff garbage", 400, "not JSON"),
    ("missing fields", INFER, b'{"inputs": [{"name": "input"}]}', 400, "datatype"),
    ("unknown model", "/v2/models/nope/infer", _infer_body(), 404, "no model 'nope'"),
    ("unknown version", "/v2/models/tiny/versions/9/infer", _infer_body(), 404, "version '9'"),
]


@pytest.mark.parametrize(("case", "path", "body", "status", "says"), HOSTILE_JSON,
                         ids=[c[0] for c in HOSTILE_JSON])
def test_a_bad_infer_request_gets_a_json_error_and_the_server_goes_on(
        server: RunningServer, case: str, path: str, body: bytes, status: int,
        says: str) -> None:
    got, doc = _post(server, path, body)
    assert got == status and says in str(doc["error"])
    _still_serves(server)


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def _big_body(server: RunningServer) -> bytes:
    """Headers announcing 100 MB and the first 4 MiB of it: the answer must come without
    the server waiting for (or holding) the rest."""
    return (b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n"
            b"\r\n" + b"[" * (4 << 20))


HOSTILE_HTTP: list[tuple[str, Callable[[RunningServer], bytes], int]] = [
    ("100 MB body", _big_body, 413),
    ("header flood", lambda s: b"GET /v2 HTTP/1.1\r\n" + b"X-A: " + b"a" * 100_000, 431),
    ("many headers", lambda s: b"GET /v2 HTTP/1.1\r\n" + b"X: y\r\n" * 500 + b"\r\n", 431),
    ("chunked body", lambda s: b"POST /v2/models/tiny/infer HTTP/1.1\r\nTransfer-Encoding: "
     b"chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 411),
    ("garbage request line", lambda s: b"\x16\x03\x01 hello there\r\n\r\n", 400),
    ("slow client", lambda s: b"GET /v2 HTTP/1.1\r\nHost: x\r\n", 408),
]


@pytest.mark.parametrize(("case", "make", "status"), HOSTILE_HTTP,
                         ids=[c[0] for c in HOSTILE_HTTP])
def test_a_hostile_http_client_is_refused_and_the_server_goes_on(
        server: RunningServer, case: str, make: Callable[[RunningServer], bytes],
        status: int) -> None:
    start = time.monotonic()
    answer = _raw(server, make(server))
    assert _status(answer) == status, answer[:300]
    assert b"Connection: close" in answer and b'{"error":' in answer
    assert time.monotonic() - start < 5
    _still_serves(server)


def test_a_100_mb_body_sent_whole_gets_413_too(server: RunningServer) -> None:
    """A client that sends it all anyway (http.client does) still reads the answer."""
    try:
        status, doc = _post(server, INFER, b" " * 100_000_000)
    except (BrokenPipeError, ConnectionResetError):
        pytest.fail("the server reset the connection instead of answering 413")
    assert status == 413 and "over the limit" in str(doc["error"])
    _still_serves(server)


def test_keep_alive_and_pipelined_requests_are_answered_in_order(
        server: RunningServer) -> None:
    one = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    body = _infer_body()
    two = (b"POST /v2/models/tiny/infer HTTP/1.1\r\nContent-Length: " + str(len(body)).encode()
           + b"\r\n\r\n" + body)
    three = b"GET /v2/health/ready HTTP/1.1\r\nConnection: close\r\n\r\n"
    answer = _raw(server, one + two + three)
    assert [_status(b"HTTP/1.1 " + part) for part in answer.split(b"HTTP/1.1 ")[1:]] == [
        200, 200, 200]
    assert b'"live":true' in answer and b'"model_name":"tiny"' in answer
    assert answer.endswith(b'{"ready":true}')


def test_metrics_count_requests_errors_and_latency(server: RunningServer) -> None:
    _still_serves(server)
    conn = http.client.HTTPConnection(*server.host_port, timeout=10)
    conn.request("GET", "/metrics")
    response = conn.getresponse()
    text = response.read().decode()
    conn.close()
    assert response.getheader("Content-Type", "").startswith("text/plain; version=0.0.4")
    counts = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
              for line in text.splitlines() if line and not line.startswith("#")}
    assert counts['oip_requests_total{endpoint="infer",code="200"}'] >= 1
    assert counts["oip_inference_duration_seconds_count"] >= 1
    assert counts['oip_model_loaded{model="tiny",version="1.0.0"}'] == 1


def test_workers_share_the_port_and_the_metrics_and_stop_on_sigterm(model_dir: Path) -> None:
    with running_server(model_dir, "--workers", "2") as running:
        client = _client(running)
        assert client.is_server_ready()
        for _ in range(20):  # fresh connections: both workers get some
            np.testing.assert_array_equal(
                triton.InferenceServerClient(url=running.url.removeprefix("http://"))
                .infer("tiny", [_input(X)]).as_numpy("output"),
                _direct(model_dir, X)["output"])
        conn = http.client.HTTPConnection(*running.host_port, timeout=10)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
        assert "oip_workers_loaded 2\n" in text
        assert 'oip_requests_total{endpoint="infer",code="200"} 20\n' in text
        proc = running.proc
    assert proc.returncode == 0


def _input(x: np.ndarray, binary: bool = False) -> triton.InferInput:
    given = triton.InferInput("input", list(x.shape), "FP32")
    given.set_data_from_numpy(x, binary_data=binary)
    return given


def test_sigterm_stops_the_server_with_status_0_without_waiting_for_idle_clients(
        model_dir: Path) -> None:
    with running_server(model_dir) as running:
        proc = running.proc
        idle = http.client.HTTPConnection(*running.host_port, timeout=10)
        idle.request("GET", "/v2/health/live")
        assert idle.getresponse().read() == b'{"live":true}'  # kept alive, now idle
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - start < 3  # idle keep-alive connections do not hold it
        idle.close()


def test_a_model_it_cannot_serve_is_one_error_line_and_status_2(tmp_path: Path) -> None:
    folder = write_model_dir(tmp_path)
    (folder / "model.onnx").write_bytes(b"changed")
    proc = subprocess.run([sys.executable, str(SERVER), "--model-dir", str(folder),
                           "--port", "0"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "sha256" in proc.stderr
    assert "Traceback" not in proc.stderr and "ready on" not in proc.stdout


def test_connections_over_the_limit_get_503_and_the_server_goes_on(model_dir: Path) -> None:
    with running_server(model_dir, "--max-connections", "2") as running:
        idle = [socket.create_connection(running.host_port) for _ in range(2)]
        try:
            time.sleep(0.2)  # the server has accepted both
            answer = _raw(running, b"GET /v2/health/live HTTP/1.1\r\n\r\n")
            assert _status(answer) == 503 and b"--max-connections" in answer
        finally:
            for sock in idle:
                sock.close()
        time.sleep(0.2)
        _still_serves(running)
