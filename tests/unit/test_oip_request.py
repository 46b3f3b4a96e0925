"""The OIP server's pure parts: the HTTP head parser, the infer request validation, the
routes, the metrics text and the model loader's refusals; and its standalone-file contract."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gha_mlops.packaging import oip_server as srv
from tests.integration.oip_fixtures import SERVER, B, W, write_model_dir

LIMITS = srv.Limits(max_headers=5, max_body_bytes=1000)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> srv.Model:
    return srv.load_model(write_model_dir(tmp_path_factory.mktemp("tiny")))


def test_the_file_imports_only_the_standard_library_numpy_and_onnxruntime() -> None:
    """It is copied alone into the image: anything else would fail there, not here."""
    tree = ast.parse(SERVER.read_text())
    roots = {alias.name.split(".")[0] for node in ast.walk(tree)
             if isinstance(node, ast.Import) for alias in node.names}
    roots |= {node.module.split(".")[0] for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) and node.module and not node.level}
    assert not any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(tree))
    assert roots - set(sys.stdlib_module_names) - {"__future__"} == {"numpy", "onnxruntime"}


# ---------------------------------------------------------------- HTTP heads


def test_a_well_formed_head_parses() -> None:
    head = srv.parse_head(b"POST /v2/models/m/infer?x=1 HTTP/1.1\r\nHost: a\r\n"
                          b"Content-Length: 12\r\nExpect: 100-continue", LIMITS)
    assert head == srv.Head("POST", "/v2/models/m/infer?x=1", 12, True, False, True)


@pytest.mark.parametrize(("target", "path"), [
    (b"http://h:1/v2/health/live?a=b", "/v2/health/live?a=b"), (b"HTTP://h", "/"),
    (b"https://h/v2", "/v2"),
])
def test_the_absolute_form_of_a_target_is_read_as_its_path(target: bytes, path: str) -> None:
    assert srv.parse_head(b"GET " + target + b" HTTP/1.1", LIMITS).target == path


@pytest.mark.parametrize(("raw", "keep_alive"), [
    (b"GET / HTTP/1.1", True),
    (b"GET / HTTP/1.1\r\nConnection: close", False),
    (b"GET / HTTP/1.1\r\nConnection: Upgrade, Close", False),
    (b"GET / HTTP/1.0", False),
    (b"GET / HTTP/1.0\r\nConnection: keep-alive", True),
])
def test_keep_alive_follows_the_http_version_and_the_connection_header(
        raw: bytes, keep_alive: bool) -> None:
    assert srv.parse_head(raw, LIMITS).keep_alive is keep_alive


@pytest.mark.parametrize(("raw", "status"), [
    # malformed request lines
    (b"GET /", 400), (b"get / HTTP/1.1", 400), (b"GET x/ HTTP/1.1", 400),
    (b"GET / HTTP/2.0", 400), (b"GET  / HTTP/1.1", 400), (b"GET /\xff HTTP/1.1", 400),
    # header lines a smuggler would use: no colon, space before the colon, folding
    (b"GET / HTTP/1.1\r\nHost", 400), (b"GET / HTTP/1.1\r\nHost : a", 400),
    (b"GET / HTTP/1.1\r\nA: b\r\n c", 400),
    # lengths: not a number, two that disagree, chunked, none for a POST, over the limit
    (b"POST / HTTP/1.1\r\nContent-Length: -1", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked", 411),
    (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked", 411),
    (b"POST / HTTP/1.1", 411),
    (b"POST / HTTP/1.1\r\nContent-Length: 1001", 413),
    (b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999", 413),
    # too many header lines
    (b"GET / HTTP/1.1" + b"\r\nA: b" * 6, 431),
])
def test_a_bad_head_is_refused_with_its_status(raw: bytes, status: int) -> None:
    with pytest.raises(srv.BadRequest) as err:
        srv.parse_head(raw, LIMITS)
    assert err.value.status == status and err.value.message


# ---------------------------------------------------------------- infer requests


def _request(**changes: Any) -> dict[str, Any]:
    item = {"name": "input", "shape": [2, 4], "datatype": "FP32",
            "data": [[1, 2, 3, 4], [0.5, 0, 0, 1]]}
    item.update(changes)
    return {"id": "r-1", "inputs": [item]}


def test_a_valid_request_runs_and_answers_in_the_v2_form(model: srv.Model) -> None:
    x = np.array([[1, 2, 3, 4], [0.5, 0, 0, 1]], dtype=np.float32)
    for data in (x.tolist(), x.ravel().tolist()):  # nested or flat, row-major
        request = srv.parse_infer_request(json.dumps(_request(data=data)).encode(), model)
        answer, blob = srv.infer(model, request)
        assert blob == b"" and answer["model_name"] == "tiny" and answer["id"] == "r-1"
        out, label = answer["outputs"]
        assert out["name"] == "output" and out["datatype"] == "FP32" and out["shape"] == [2, 3]
        np.testing.assert_array_equal(np.array(out["data"]).reshape(2, 3), x @ W + B)
        assert label == {"name": "label", "shape": [2], "datatype": "INT64",
                         "data": (x @ W + B).argmax(axis=1).tolist()}


def test_outputs_asked_for_are_the_only_ones_answered(model: srv.Model) -> None:
    doc = {**_request(), "outputs": [{"name": "label"}]}
    answer, _ = srv.infer(model, srv.parse_infer_request(json.dumps(doc).encode(), model))
    assert [o["name"] for o in answer["outputs"]] == ["label"]


BAD_REQUESTS: list[tuple[str, Any, str]] = [
    ("not JSON", b"{nope", "not JSON"),
    ("nesting bomb", b"[" * 100_000, "not JSON"),
    ("not an object", [1], "JSON object"),
    ("no inputs", {"id": "x"}, "inputs must be a non-empty list"),
    ("id not a string", {**_request(), "id": 3}, "id must be a string"),
    ("input without a name", {"inputs": [{"shape": [1, 4]}]}, "string 'name'"),
    ("unknown input name", _request(name="x"), "no input 'x'"),
    ("input twice", {"inputs": _request()["inputs"] * 2}, "given twice"),
    ("wrong datatype", _request(datatype="INT32"), "datatype 'INT32' is not the model's FP32"),
    ("shape not a list of sizes", _request(shape=[2, "4"]), "non-negative integers"),
    ("negative size", _request(shape=[-2, 4]), "non-negative integers"),
    ("wrong rank", _request(shape=[8]), "does not fit the model's [-1, 4]"),
    ("wrong fixed dimension", _request(shape=[4, 2]), "does not fit"),
    ("data shorter than the shape", _request(data=[1, 2, 3]), "needs 8 values, data has 3"),
    ("nested data of another shape", _request(shape=[1, 4], data=[[1, 2], [3, 4]]),
     "needs 4 values"),
    ("ragged data", _request(data=[[1, 2, 3, 4], [1]]), "not a rectangular array"),
    ("strings for numbers", _request(data=["1"] * 8), "strings"),
    ("booleans for numbers", _request(data=[True] * 8), "booleans"),
    ("data not a list", _request(data="AAAA"), "data must be a list"),
    ("binary data without the header", _request(parameters={"binary_data_size": 32}),
     "does not fit the 0 bytes"),
    ("unknown output", {**_request(), "outputs": [{"name": "z"}]}, "no output ['z']"),
]


@pytest.mark.parametrize(("case", "body", "says"), BAD_REQUESTS,
                         ids=[case for case, _, _ in BAD_REQUESTS])
def test_a_bad_request_is_a_400_that_says_what_is_wrong(
        model: srv.Model, case: str, body: Any, says: str) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(srv.BadRequest) as err:
        srv.parse_infer_request(raw, model)
    assert err.value.status == 400 and says in err.value.message


def test_integers_out_of_range_for_their_datatype_are_refused() -> None:
    with pytest.raises(srv.BadRequest, match=r"out of range for INT8"):
        srv._cast(np.array([1, 300]), "INT8", "input 'x'")


# ---------------------------------------------------------------- routes and metrics


def _call(app: srv.App, method: str, path: str, body: bytes = b"") -> tuple[int, Any]:
    response = app.handle(method, path, body)
    if response.content_type == srv.JSON_TYPE:
        return response.status, json.loads(response.body)
    return response.status, response.body.decode()


def test_the_routes_before_and_after_the_model_is_ready(model: srv.Model) -> None:
    app = srv.App(srv.Metrics(1))
    assert _call(app, "GET", "/v2/health/live") == (200, {"live": True})
    assert _call(app, "GET", "/v2/health/ready")[0] == 503
    assert _call(app, "GET", "/v2/models/tiny/ready")[0] == 503
    app.set_model(model)
    assert _call(app, "GET", "/v2/health/ready")[0] == 200
    assert _call(app, "GET", "/v2") == (200, {"name": "gha-mlops-oip", "version": "1.0",
                                              "extensions": ["binary_tensor_data"]})
    for path in ("/v2/models/tiny", "/v2/models/tiny/versions/1.0.0"):
        assert _call(app, "GET", path) == (200, model.metadata())
    assert _call(app, "GET", "/v2/models/tiny/versions/1.0.0/ready")[0] == 200
    for path in ("/v2/models/other", "/v2/models/tiny/versions/2.0.0/infer", "/v3"):
        status, doc = _call(app, "GET" if "infer" not in path else "POST", path)
        assert status == 404 and "error" in doc
    assert _call(app, "POST", "/v2/health/live")[0] == 405
    assert _call(app, "GET", "/v2/models/tiny/infer")[0] == 405
    status, doc = _call(app, "POST", "/v2/models/tiny/infer",
                        json.dumps(_request()).encode())
    assert status == 200 and doc["outputs"][0]["shape"] == [2, 3]


def test_metrics_sum_every_workers_row_in_the_prometheus_text_form() -> None:
    metrics = srv.Metrics(2)
    metrics.count(srv.ENDPOINTS.index("infer"), 200)
    metrics.observe(0.0007)
    metrics.set_loaded(True)
    metrics.use_row(1)
    metrics.count(srv.ENDPOINTS.index("infer"), 200)
    metrics.count(srv.ENDPOINTS.index("infer"), 400)
    metrics.observe(0.2)
    text = metrics.render("m", 'v"1')
    assert 'oip_requests_total{endpoint="infer",code="200"} 2\n' in text.decode()
    lines = text.decode().splitlines()
    assert 'oip_request_errors_total{endpoint="infer"} 1' in lines
    assert 'oip_inference_duration_seconds_bucket{le="0.0005"} 0' in lines
    assert 'oip_inference_duration_seconds_bucket{le="0.001"} 1' in lines
    assert 'oip_inference_duration_seconds_bucket{le="+Inf"} 2' in lines
    assert "oip_inference_duration_seconds_count 2" in lines
    assert 'oip_model_loaded{model="m",version="v\\"1"} 0' in lines  # worker 1 is not ready
    metrics.set_loaded(True)
    assert 'oip_model_loaded{model="m",version="v\\"1"} 1' in metrics.render("m", 'v"1').decode()


# ---------------------------------------------------------------- the model directory


def _edit_manifest(folder: Path, **changes: Any) -> None:
    doc = json.loads((folder / "model.json").read_text())
    doc.update(changes)
    (folder / "model.json").write_text(json.dumps(doc))


@pytest.mark.parametrize(("change", "says"), [
    ({"sha256": "0" * 64}, "its sha256 is not"),
    ({"name": "../x"}, "name must be a string"),
    ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]}, "does not match"),
    ({"outputs": "nope"}, "outputs must be a list"),
])
def test_a_model_directory_that_does_not_fit_is_refused_with_a_reason(
        tmp_path: Path, change: dict[str, Any], says: str) -> None:
    folder = write_model_dir(tmp_path)
    _edit_manifest(folder, **change)
    with pytest.raises(srv.ModelError, match=says):
        srv.load_model(folder)


def test_a_missing_or_unreadable_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(srv.ModelError, match=r"model\.json: cannot read it as JSON"):
        srv.load_model(tmp_path)
    folder = write_model_dir(tmp_path / "m")
    (folder / "model.onnx").write_bytes(b"not onnx")
    _edit_manifest(folder, sha256=None)
    with pytest.raises(srv.ModelError, match="onnxruntime cannot load it"):
        srv.load_model(folder)


# ---------------------------------------------------------------- binary tensor extension


def _binary_request(x: np.ndarray, doc_changes: dict[str, Any] | None = None,
                    size: int | None = None, extra: bytes = b"") -> tuple[bytes, int]:
    item = {"name": "input", "shape": list(x.shape), "datatype": "FP32",
            "parameters": {"binary_data_size": x.nbytes if size is None else size}}
    header = json.dumps({"inputs": [item], **(doc_changes or {})}).encode()
    return header + x.astype("<f4").tobytes() + extra, len(header)


def test_binary_inputs_and_outputs_round_trip(model: srv.Model) -> None:
    x = np.array([[1, 2, 3, 4], [0.5, 0, 0, 1]], dtype=np.float32)
    body, json_length = _binary_request(x, {"outputs": [
        {"name": "output", "parameters": {"binary_data": True}}, {"name": "label"}]})
    answer, blob = srv.infer(model, srv.parse_infer_request(body, model, json_length))
    out, label = answer["outputs"]
    assert out["parameters"] == {"binary_data_size": 24} and "data" not in out
    np.testing.assert_array_equal(np.frombuffer(blob, "<f4").reshape(2, 3), x @ W + B)
    assert label["data"] == (x @ W + B).argmax(axis=1).tolist()
    everything, json_length = _binary_request(x, {"parameters": {"binary_data_output": True}})
    answer, blob = srv.infer(model, srv.parse_infer_request(everything, model, json_length))
    assert len(blob) == 24 + 16 and all("data" not in o for o in answer["outputs"])


@pytest.mark.parametrize(("size", "extra", "json_length", "says"), [
    (31, b"", None, "needs 32"),                         # size is not shape x itemsize
    (64, b"", None, "does not fit the 32 bytes"),        # size beyond the body
    (32, b"junk", None, "4 bytes of binary data follow"),  # bytes no input claims
    (32, b"", 10**6, "over the body's"),                 # header length beyond the body
])
def test_binary_data_that_does_not_add_up_is_a_400(
        model: srv.Model, size: int, extra: bytes, json_length: int | None, says: str) -> None:
    x = np.ones((2, 4), dtype=np.float32)
    body, header_length = _binary_request(x, size=size, extra=extra)
    with pytest.raises(srv.BadRequest, match=says):
        srv.parse_infer_request(body, model, json_length or header_length)
