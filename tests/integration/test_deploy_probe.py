"""probe, gates, golden and the load generator against the real OIP server process (the file
the serving image runs) on the tiny ONNX model of oip_fixtures: readiness as a rollout waits
for it, golden requests recorded from the model's own arithmetic replayed (a right set
passes, a wrong expected output fails with a line that names it), and the gates' window
over /metrics counting exactly the requests a constant load sent."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gha_mlops.config.model import DeployGates
from gha_mlops.deploy import probe
from gha_mlops.deploy.errors import DeployError
from gha_mlops.deploy.gates import judge, window
from gha_mlops.deploy.golden import check_golden, golden_doc, load_golden
from gha_mlops.testing.load import ConstantLoad
from tests.integration.oip_fixtures import SERVER, B, RunningServer, W, running_server
from tests.integration.oip_fixtures import write_model_dir as tiny_model_dir
from tests.integration.package_helpers import free_port

X = np.array([[1, 2, 3, 4], [0.5, -1, 0, 2], [-3, 0.25, 1, 1]], dtype=np.float32)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[RunningServer]:
    with running_server(model_dir) as running:
        yield running


def test_wait_ready_waits_for_a_loading_server_and_stops_early_for_a_dead_one(
        model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, str(SERVER), "--model-dir", str(model_dir),
                             "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        took = probe.wait_ready(url, timeout=60, alive=lambda: proc.poll() is None)
        assert 0 < took < 60
        assert probe.model_metadata(url, "tiny")["versions"] == ["1.0.0"]
    finally:
        proc.terminate()
        proc.wait(timeout=15)

    (tmp_path / "model.json").write_text("{}")  # a model the server refuses: it exits 2
    dead = subprocess.Popen([sys.executable, str(SERVER), "--model-dir", str(tmp_path),
                             "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    start = time.monotonic()
    with pytest.raises(DeployError, match=f"^{url}: the backend stopped before it became "
                                          "ready"):
        probe.wait_ready(url, timeout=60, alive=lambda: dead.poll() is None)
    assert time.monotonic() - start < 15 and dead.wait(timeout=15) == 2
    with pytest.raises(DeployError, match=rf"^{url}: not ready within 0.3 s \(last: {url}/v2/"
                                          r"health/ready: GET failed: ConnectionRefused"):
        probe.wait_ready(url, timeout=0.3)


def _golden_bytes(**change: float) -> bytes:
    """golden.json for X as packaging records it: the model's outputs, in float32."""
    output = X @ W + B
    doc = golden_doc([X], [output, output.argmax(axis=1)], atol=1e-5, rtol=1e-4)
    for key, value in change.items():  # e.g. case1=0.5: case 1's output[0][2] is off by it
        doc["cases"][int(key[4:])]["outputs"][0][0][2] += value
    return json.dumps(doc).encode()


def test_golden_requests_pass_on_the_model_and_a_wrong_expectation_fails_by_name(
        server: RunningServer) -> None:
    right = load_golden(_golden_bytes(), where="golden.json")
    report = check_golden(server.url, "tiny", right)
    assert (report.cases, report.failures) == (3, ())
    wrong = load_golden(_golden_bytes(case1=0.5), where="golden.json")
    got = float((X[1] @ W + B)[2])
    assert check_golden(server.url, "tiny", wrong).failures == (
        f"case 1: output 'output' differs at [0, 2]: got {got:.9g}, want {got + 0.5:.9g} "
        "(atol 1e-05, rtol 0.0001)",)
    # the example of docs/deploy-gates.md is this model's golden set
    doc = (Path(__file__).resolve().parents[2] / "docs" / "deploy-gates.md").read_text()
    example = doc.split("```json\n", 1)[1].split("```", 1)[0]
    assert check_golden(server.url, "tiny", load_golden(example.encode(), where="doc")
                        ).failures == ()
    with pytest.raises(DeployError, match=f"^{server.url}/v2/models/other: model metadata "
                                          "answered 404: no model 'other'"):
        check_golden(server.url, "other", right)


def test_the_window_counts_exactly_what_a_constant_load_sent(server: RunningServer) -> None:
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                                   "data": [1, 2, 3, 4]}]}).encode()
    before = probe.scrape(server.url)
    with ConstantLoad(f"{server.url}/v2/models/tiny/infer", body, rate=100) as load:
        time.sleep(1.0)
    bad = b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [1]}]}'
    with ConstantLoad(f"{server.url}/v2/models/tiny/infer", bad, rate=50) as refused:
        time.sleep(0.2)
    after = probe.scrape(server.url)
    sent, rejected = load.report(), refused.report()
    assert sent.ok == sent.sent >= 90 and sent.versions == {"1.0.0": sent.sent}
    assert rejected.statuses == {"400": rejected.sent}
    w = window(before, after)
    assert (w.requests, w.server_errors, w.error_rate) == (sent.sent + rejected.sent, 0, 0)
    assert w.p99_ms is not None and 0 < w.p99_ms <= 50  # in the server's smallest buckets
    assert all(r.passed for r in judge(w, DeployGates(max_p99_ms=50, min_requests=50),
                                       final=True))
    with pytest.raises(DeployError, match=r"^http://127\.0\.0\.1:1/metrics: GET failed"):
        probe.scrape("http://127.0.0.1:1")


def _hostile_backend(body_chunks: Iterator[bytes], length: int) -> tuple[str, threading.Thread]:
    """A backend on loopback that answers one request with ``length`` announced bytes, sent
    as ``body_chunks`` come."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n".encode())
                with contextlib.suppress(OSError):  # the client hangs up: that is the point
                    for chunk in body_chunks:
                        conn.sendall(chunk)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}", thread


def test_a_backend_cannot_hold_the_deployer_with_a_slow_or_huge_answer() -> None:
    def trickle() -> Iterator[bytes]:
        for _ in range(100):
            time.sleep(0.1)  # each byte well within the socket timeout
            yield b"#"

    url, thread = _hostile_backend(trickle(), 100)
    start = time.monotonic()
    with pytest.raises(DeployError, match=f"^{url}/metrics: no answer within 0.5 s"):
        probe.scrape(url, timeout=0.5)
    assert time.monotonic() - start < 2
    thread.join(timeout=15)
    url, thread = _hostile_backend(iter([b"#" * (2 << 20)]), 2 << 20)
    with pytest.raises(DeployError, match=f"^{url}/metrics: the answer is over 1048576 bytes"):
        probe.scrape(url)
    thread.join(timeout=15)
