"""The OIP server as a process keeps the prediction log: two workers write one log that a
SIGTERM flushes, /metrics adds up both workers; the server file copied alone beside
predlog_writer.py (the image's layout) logs through PREDLOG; and an S3 log on a real moto
server, read back with boto3 and with read_window / read_feedback."""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gha_mlops.monitor import predlog
from tests.integration.oip_fixtures import SERVER, RunningServer, running_server, write_model_dir
from tests.integration.test_remotes import aws_env, bucket, moto_endpoint  # noqa: F401

PREDLOG_WRITER = SERVER.parent.parent / "monitor" / "predlog_writer.py"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("model"), name="tiny", version="1.0.0")


def _post(server: RunningServer, path: str, doc: dict[str, Any],
          conn: http.client.HTTPConnection | None = None) -> tuple[int, dict[str, Any]]:
    own = conn is None
    conn = conn or http.client.HTTPConnection(*server.host_port, timeout=10)
    try:
        conn.request("POST", path, json.dumps(doc), {"Content-Type": "application/json"})
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        if own:
            conn.close()


def _infer(server: RunningServer, x: np.ndarray, rid: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"inputs": [{"name": "input", "shape": list(x.shape),
                                       "datatype": "FP32", "data": x.ravel().tolist()}]}
    if rid:
        doc["id"] = rid
    status, answer = _post(server, "/v2/models/tiny/infer", doc)
    assert status == 200, answer
    return answer


def _metrics(server: RunningServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    conn = http.client.HTTPConnection(*server.host_port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def _stop(server: RunningServer) -> None:
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=30) == 0


def _window(root: Path) -> predlog.LogWindow:
    return predlog.read_window(root, "tiny", start=0, end=time.time() + 60)


def test_two_workers_log_every_instance_and_sigterm_flushes(model_dir: Path,
                                                            tmp_path: Path) -> None:
    x = np.random.default_rng(3).standard_normal((40, 4)).astype(np.float32)
    # A batch age longer than the test: only the graceful stop writes the files.
    with running_server(model_dir, "--workers", "2", "--log", str(tmp_path), "--log-sample",
                        "1", "--log-batch-age", "600") as server:
        ids = [_infer(server, x[i:i + 1], f"q{i}")["id"] for i in range(40)]
        assert not list(tmp_path.rglob("*.jsonl.gz"))
        deadline = time.monotonic() + 5
        while True:  # each worker publishes its log counters within a second
            m = _metrics(server)
            seen = sum(v for (n, labels), v in m.items()
                       if n == "gha_mlops_predictions_total")
            queued = m["gha_mlops_predlog_rows_total", (("outcome", "dropped"),)]
            if seen == 40 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert seen == 40 and queued == 0
        _stop(server)
    window = _window(tmp_path)
    assert sorted(window.ids) == sorted(ids) == sorted(f"q{i}" for i in range(40))
    order = [ids.index(i) for i in window.ids]
    np.testing.assert_array_equal(window.inputs["input"], x[order])
    pids = {p.name.split("-")[1] for p in tmp_path.rglob("*.jsonl.gz")}
    assert len(pids) == 2  # one writer per worker, its pid in the file name


def test_the_images_layout_loads_the_writer_from_beside_the_server(model_dir: Path,
                                                                   tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    shutil.copy(SERVER, app / "oip_server.py")
    shutil.copy(PREDLOG_WRITER, app / "predlog_writer.py")
    env = {"PATH": "/usr/bin:/bin", "PREDLOG": str(tmp_path / "log"), "PREDLOG_SAMPLE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-I", str(app / "oip_server.py"), "--model-dir", str(model_dir),
         "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    line = proc.stdout.readline()
    server = RunningServer(proc, line.split()[-1])
    try:
        assert line.startswith("ready on"), proc.stderr.read()
        rid = _infer(server, np.ones((2, 4), np.float32))["id"]
        status, answer = _post(server, "/v2/models/tiny/feedback",
                               {"id": f"{rid}:1", "label": 2})
        assert (status, answer) == (200, {"accepted": 1})
        _stop(server)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert _window(tmp_path / "log").ids == (f"{rid}:0", f"{rid}:1")
    labels = predlog.read_feedback(tmp_path / "log", "tiny", start=0, end=time.time() + 60)
    assert dict(labels) == {f"{rid}:1": 2}


def test_the_server_alone_refuses_log_naming_the_missing_writer(model_dir: Path,
                                                                 tmp_path: Path) -> None:
    shutil.copy(SERVER, tmp_path / "oip_server.py")
    proc = subprocess.run([sys.executable, "-I", str(tmp_path / "oip_server.py"),
                           "--model-dir", str(model_dir), "--log", str(tmp_path / "log")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "predlog_writer.py" in proc.stderr, proc.stderr


@pytest.mark.usefixtures("aws_env")
def test_an_s3_log_lands_in_the_bucket_and_reads_back(
        model_dir: Path, tmp_path: Path, moto_endpoint: str, bucket: str,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    x = np.random.default_rng(5).standard_normal((6, 4)).astype(np.float32)
    with running_server(model_dir, "--log", f"s3://{bucket}/serving/logs",
                        "--log-sample", "1") as server:
        batch = _infer(server, x[:4], "batch-1")
        single = _infer(server, x[4:5])
        status, answer = _post(server, "/v2/models/tiny/feedback", {"feedback": [
            {"id": "batch-1:2", "label": 1}, {"id": single["id"], "label": "two"}]})
        assert (status, answer) == (200, {"accepted": 2})
        _stop(server)
    client = boto3.client("s3", endpoint_url=moto_endpoint)
    try:
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
        assert all(k.startswith("serving/logs/tiny/") for k in keys) and len(keys) == 2
        for key in keys:  # what read_window reads: the sink's layout under a folder
            target = tmp_path / "down" / key.removeprefix("serving/logs/")
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, key, str(target))
    finally:
        client.close()
    window = _window(tmp_path / "down")
    assert window.ids == ("batch-1:0", "batch-1:1", "batch-1:2", "batch-1:3", single["id"])
    np.testing.assert_array_equal(window.inputs["input"], x[:5])
    assert batch["id"] == "batch-1"
    labels = predlog.read_feedback(tmp_path / "down", "tiny", start=0, end=time.time() + 60)
    assert dict(labels) == {"batch-1:2": 1, single["id"]: "two"}
