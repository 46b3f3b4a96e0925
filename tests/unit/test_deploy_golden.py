"""Golden requests: the document packaging writes (from numpy arrays, without numpy in the
module), its hostile validation (one test per class of bad file), and the replay against a
stand-in backend that speaks the protocol's metadata and infer routes (the real OIP server's
replay is in tests/integration/test_deploy_probe.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from gha_mlops.deploy.errors import DeployError
from gha_mlops.deploy.golden import (
    FORMAT,
    MAX_BYTES,
    MAX_CASES,
    GoldenCase,
    GoldenSet,
    check_golden,
    golden_doc,
    load_golden,
)

META = {"name": "m", "versions": ["1"], "platform": "onnxruntime_onnx",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 3]},
                    {"name": "label", "datatype": "INT64", "shape": [-1]}]}
Answer = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]


class Backend:
    """A stand-in OIP backend on loopback: metadata from ``meta``, infer answered by
    ``answer`` (the request document -> status and answer); the requests it got."""

    def __init__(self) -> None:
        self.meta: dict[str, Any] = META
        self.answer: Answer = lambda doc: (200, {})
        self.requests: list[dict[str, Any]] = []
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, doc: Any) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                ok = self.path == "/v2/models/m"
                self._send(200 if ok else 404, backend.meta if ok else {"error": "no"})

            def do_POST(self) -> None:
                doc = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                backend.requests.append(doc)
                self._send(*backend.answer(doc))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def backend() -> Iterator[Backend]:
    server = Backend()
    yield server
    server.close()


def _model(doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The "true" model: logits = [x0, x1, x0 + x1] * 0.1, label = argmax."""
    x0, x1 = doc["inputs"][0]["data"]
    logits = [x0 * 0.1, x1 * 0.1, (x0 + x1) * 0.1]
    return 200, {"model_name": "m", "model_version": "1", "outputs": [
        {"name": "label", "datatype": "INT64", "shape": [1], "data": [logits.index(max(logits))]},
        {"name": "logits", "datatype": "FP32", "shape": [1, 3], "data": logits}]}


X = np.array([[1.0, 2.0], [3.0, -4.0], [np.nan, 1.0], [0.5, 0.5]], dtype=np.float32)


def _golden(cases: int = 3, atol: float = 1e-5, rtol: float = 1e-4) -> GoldenSet:
    logits = np.stack([X[:, 0] * 0.1, X[:, 1] * 0.1, (X[:, 0] + X[:, 1]) * 0.1], axis=1)
    doc = golden_doc([X], [logits, logits.argmax(axis=1)], atol=atol, rtol=rtol, cases=cases)
    return load_golden(json.dumps(doc).encode(), where="golden.json")


def test_golden_doc_takes_rows_as_batches_of_one_and_skips_what_json_cannot_carry() -> None:
    golden = _golden(cases=8)
    assert len(golden.cases) == 3  # 4 rows, the one with NaN skipped
    assert golden.cases[1] == GoldenCase(inputs=([[3.0, -4.0]],), outputs=(
        [[pytest.approx(0.3), pytest.approx(-0.4), pytest.approx(-0.1)]], [0]))
    assert (golden.atol, golden.rtol) == (1e-5, 1e-4)
    assert len(_golden(cases=1).cases) == 1
    big = np.zeros((10, 300_000), dtype=np.float32)  # ~1.2 MB of JSON a row
    doc = golden_doc([big], [big[:, :1]], atol=0, rtol=0)
    assert 1 <= len(doc["cases"]) < 10 and len(json.dumps(doc)) <= MAX_BYTES
    loaded = subprocess.run(  # pure Python: packaging's caller may have numpy, this need not
        [sys.executable, "-c", "import sys, gha_mlops.deploy.golden; "
         "print('numpy' in sys.modules)"], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "False"


def _file(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"format": FORMAT, "atol": 0.001, "rtol": 0,
                           "cases": [{"inputs": [[[1, 2]]], "outputs": [[[0.1, 0.2, 0.3]], [2]]}]}
    doc.update(changes)
    return doc


def _case(inputs: Any, outputs: Any = None) -> dict[str, Any]:
    return _file(cases=[{"inputs": inputs, "outputs": outputs or [[[0.1]], [1]]}])


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(("data", "message"), [
    (b" " * (MAX_BYTES + 1), "over the limit"),
    (b"{not json", "not JSON"),
    (b"\xff\xfe\xfa", "not JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "not JSON"),               # recursion in the parser
    (json.dumps(_case([_nested(40)])).encode(), "deeper than 16"),
    (json.dumps(_file(format="gha-mlops.golden/9")).encode(), "expected a JSON object with format"),
    (json.dumps([1, 2]).encode(), "expected a JSON object with format"),
    (json.dumps(_file(atol=-1)).encode(), "atol must be a number >= 0"),
    (json.dumps(_file(rtol="0.1")).encode(), "rtol must be a number >= 0"),
    (json.dumps(_file(cases=[_file()["cases"][0]] * (MAX_CASES + 1))).encode(),
     f"at most {MAX_CASES} cases"),
    (json.dumps(_case([[[1, 2], [3]]])).encode(), r"cases\[0\].inputs\[0\]: not a rectangular"),
    (json.dumps(_case([[[1, [2]]]])).encode(), r"holds \[2\] \(list\).*no mixed depths"),
    (json.dumps(_case([[[1, "a"]]])).encode(), "mixes number and string"),
    (json.dumps(_case([[[1, None]]])).encode(), "holds None"),
    (json.dumps(_case([[{"a": 1}]])).encode(), "holds {'a': 1}"),
    (b'{"format": "gha-mlops.golden/1", "atol": 0, "rtol": 0, "cases": [{"inputs": '
     b'[[[NaN]]], "outputs": [[1]]}]}', "holds nan"),
    (json.dumps(_case(5)).encode(), "expected a non-empty list"),
    (json.dumps(_case([[]])).encode(), "holds no values"),
    (json.dumps(_file(cases=[_file()["cases"][0], {"inputs": [[1], [2]], "outputs": [[1]]}])
                ).encode(), r"cases\[1\]: has 2 inputs and 1 outputs; the first case has 1 and 2"),
])
def test_a_malformed_golden_file_is_refused_naming_where_and_what(data: bytes,
                                                                  message: str) -> None:
    with pytest.raises(DeployError, match=message) as caught:
        load_golden(data, where="img:/model/golden.json")
    assert caught.value.message.startswith("img:/model/golden.json")
    assert caught.value.hint and "golden: false" in caught.value.hint


def test_a_golden_set_that_matches_passes_and_the_requests_follow_the_metadata(
        backend: Backend) -> None:
    backend.answer = _model
    report = check_golden(backend.url, "m", _golden())
    assert (report.cases, report.failures, report.failed, report.passed) == (3, (), 0, True)
    assert backend.requests[1] == {"id": "golden-1", "inputs": [
        {"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [3.0, -4.0]}]}


def test_a_wrong_answer_is_a_failure_line_with_the_case_the_index_and_the_numbers(
        backend: Backend) -> None:
    def off(doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        status, answer = _model(doc)
        logits = answer["outputs"][1]["data"]
        if doc["id"] == "golden-0":
            logits[2] += 0.001  # beyond atol 1e-5 + rtol 1e-4 * 0.3
        if doc["id"] == "golden-1":
            logits[0] += 2e-5  # within 1e-5 + 1e-4 * 0.3
            answer["outputs"][0]["data"] = [1]  # an integer is exact
        if doc["id"] == "golden-2":
            answer["outputs"][1]["shape"] = [3]
        return status, answer

    backend.answer = off
    report = check_golden(backend.url, "m", _golden())
    assert report.failed == 3
    assert report.failures == (
        "case 0: output 'logits' differs at [0, 2]: got 0.301, want 0.300000012 "
        "(atol 1e-05, rtol 0.0001)",
        "case 1: output 'label' differs at [0]: got 1, want 0",
        "case 2: output 'logits' has shape [3], want [1, 3]")
    loose = _golden(atol=1.0)
    assert check_golden(backend.url, "m", loose).failures == (
        "case 1: output 'label' differs at [0]: got 1, want 0",
        "case 2: output 'logits' has shape [3], want [1, 3]")


def test_a_refused_or_lost_request_is_a_failure_naming_the_case(backend: Backend) -> None:
    backend.answer = lambda doc: (500, {"error": "inference failed: boom"})
    report = check_golden(backend.url, "m", _golden())
    assert report.failures[0] == (f"case 0: the request failed: {backend.url}/v2/models/m/"
                                  "infer: answered 500: inference failed: boom")
    backend.answer = lambda doc: (200, {"outputs": "nope"})
    assert check_golden(backend.url, "m", _golden()).failures[0] == (
        "case 0: output 'logits' is missing from the answer")
    golden = _golden()
    url = backend.url
    backend.close()
    with pytest.raises(DeployError, match=f"^{url}/v2/models/m: GET failed: Connection"):
        check_golden(url, "m", golden)


def test_failure_lines_are_bounded_and_a_different_model_is_one_line(backend: Backend) -> None:
    backend.answer = lambda doc: (503, {"error": "x" * 10_000})
    many = GoldenSet(tuple(_golden().cases[:1]) * 40, 0, 0)
    report = check_golden(backend.url, "m", many)
    assert (report.cases, report.failed, len(report.failures)) == (40, 40, 6)
    assert report.failures[-1] == "... and 35 more failures"
    assert all(len(line) <= 400 for line in report.failures)
    backend.meta = {**META, "outputs": META["outputs"][:1]}
    assert check_golden(backend.url, "m", _golden()).failures == (
        "the golden set has 1 inputs and 2 outputs per case; model 'm' has 1 and 1: it is "
        "not the model the golden requests were recorded for",)
    backend.meta = {**META, "inputs": "x"}
    with pytest.raises(DeployError, match="metadata's inputs is not a list"):
        check_golden(backend.url, "m", _golden())
