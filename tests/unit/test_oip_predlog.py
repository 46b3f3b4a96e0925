"""The OIP server's prediction log, in process: an App over the tiny model with a directory
sink; what it logs is read back with the reader (predlog.read_window / read_feedback)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gha_mlops.monitor import predlog, predlog_writer
from gha_mlops.packaging import oip_server as srv
from tests.integration.oip_fixtures import write_model_dir

X = np.array([[1, 2, 3, 4], [0.25, -1, 0, 8], [0, 0, 0, 0]], dtype=np.float32)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> srv.Model:
    return srv.load_model(write_model_dir(tmp_path_factory.mktemp("model")))


def _app(model: srv.Model, log: Path | None, sample: float = 1.0, workers: int = 1,
         ) -> srv.App:
    config = None if log is None else srv.LogConfig(str(log), sample, 1000, 60.0)
    app = srv.App(srv.Metrics(workers), log=config)
    app.set_model(model)
    return app


@pytest.fixture
def app(model: srv.Model, tmp_path: Path) -> Iterator[srv.App]:
    app = _app(model, tmp_path / "log")
    yield app
    app.close()


def _infer(app: srv.App, x: np.ndarray, request_id: Any = None,
           outputs: list[str] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"inputs": [{"name": "input", "shape": list(x.shape),
                                       "datatype": "FP32", "data": x.ravel().tolist()}]}
    if request_id is not None:
        doc["id"] = request_id
    if outputs is not None:
        doc["outputs"] = [{"name": n} for n in outputs]
    answer = app.handle("POST", "/v2/models/tiny/infer", json.dumps(doc).encode())
    assert answer.status == 200, answer.body
    out: dict[str, Any] = json.loads(answer.body)
    return out


def _window(root: Path) -> predlog.LogWindow:
    return predlog.read_window(root, "tiny", start=0, end=time.time() + 60)


def _metrics(app: srv.App) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = app.handle("GET", "/metrics", b"")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.body.decode())
            for s in family.samples}


def test_each_instance_is_one_row_named_by_the_request_id(app: srv.App, tmp_path: Path) -> None:
    one = _infer(app, X[:1], "req-1")
    batch = _infer(app, X, "req-2")
    assert (one["id"], batch["id"]) == ("req-1", "req-2")
    app.close()
    window = _window(tmp_path / "log")
    assert window.ids == ("req-1", "req-2:0", "req-2:1", "req-2:2")
    np.testing.assert_array_equal(window.inputs["input"], np.concatenate([X[:1], X]))
    want = X @ (np.arange(12, dtype=np.float32).reshape(4, 3) / 2) + [0.5, -1.0, 2.0]
    np.testing.assert_allclose(window.outputs["output"][1:], want)
    np.testing.assert_array_equal(window.outputs["label"][1:], want.argmax(axis=1))
    assert window.skipped == {}


@pytest.mark.parametrize("given", [None, "", "x" * 129, "y" * 127],
                         ids=["none", "empty", "too long", "no room for ':<i>'"])
def test_a_missing_or_unusable_id_is_replaced_and_answered(app: srv.App, tmp_path: Path,
                                                          given: str | None) -> None:
    answer = _infer(app, X[:2], given)
    assert answer["id"] != given and 0 < len(answer["id"]) <= 64
    again = _infer(app, X[:2], given)
    assert again["id"] != answer["id"]  # unique per request
    app.close()
    assert _window(tmp_path / "log").ids == (f"{answer['id']}:0", f"{answer['id']}:1",
                                             f"{again['id']}:0", f"{again['id']}:1")


def test_a_request_for_some_outputs_still_logs_them_all(app: srv.App, tmp_path: Path) -> None:
    answer = _infer(app, X[:1], "r", outputs=["output"])
    assert [o["name"] for o in answer["outputs"]] == ["output"]
    app.close()
    window = _window(tmp_path / "log")
    assert set(window.outputs) == {"output", "label"} and window.rows == 1


@pytest.mark.parametrize("sample", [0.0, 0.3])
def test_sampling_keeps_a_fraction_and_counts_the_rest(model: srv.Model, tmp_path: Path,
                                                       sample: float) -> None:
    app = _app(model, tmp_path, sample=sample)
    for i in range(200):
        _infer(app, X[:1], f"r{i}")
    app.close()
    rows = _window(tmp_path).rows
    m = _metrics(app)
    logged = m["gha_mlops_predlog_rows_total", (("outcome", "logged"),)]
    out = m["gha_mlops_predlog_rows_total", (("outcome", "sampled_out"),)]
    assert logged == rows and logged + out == 200
    assert (rows == 0) if sample == 0.0 else 30 <= rows <= 90


def test_without_log_nothing_changes(model: srv.Model) -> None:
    app = _app(model, None)
    answer = _infer(app, X[:1])
    assert "id" not in answer  # OIP: the id is echoed, none is made up
    assert _infer(app, X[:1], "z" * 300)["id"] == "z" * 300
    feedback = app.handle("POST", "/v2/models/tiny/feedback", b'{"id": "a", "label": 1}')
    assert feedback.status == 404 and "--log" in json.loads(feedback.body)["error"]
    assert not any(name.startswith("gha_mlops_predlog") for name, _ in _metrics(app))


def test_metrics_count_classes_and_the_log_in_a_valid_exposition(app: srv.App) -> None:
    _infer(app, X, "a")  # labels 2, 2, 2
    _infer(app, -X[:2], "b")  # labels 0, 0 (the bias wins on zeros: 2)
    app.close()
    m = _metrics(app)
    classes = {dict(k[1])["class"]: v for k, v in m.items()
               if k[0] == "gha_mlops_predictions_total"}
    want = np.concatenate([(X @ (np.arange(12).reshape(4, 3) / 2) + [0.5, -1, 2]),
                           (-X[:2] @ (np.arange(12).reshape(4, 3) / 2) + [0.5, -1, 2])])
    values, counts = np.unique(want.argmax(axis=1), return_counts=True)
    assert classes == {str(v): float(c) for v, c in zip(values, counts, strict=True)}
    assert m["gha_mlops_predlog_rows_total", (("outcome", "logged"),)] == 5
    assert m["gha_mlops_predlog_write_errors_total", ()] == 0


def test_classes_over_the_limit_are_other_and_workers_add_up() -> None:
    metrics = srv.Metrics(2)
    metrics.track((("label", "class"), ("score", "value")), logging=False)
    metrics.use_row(0)
    metrics.observe_outputs({"label": np.arange(70), "score": np.array([0.05, 0.5, 7.0])})
    metrics.use_row(1)
    metrics.track((("label", "class"), ("score", "value")), logging=False)
    metrics.observe_outputs({"label": np.array([69, 69, 69]),
                             "score": np.array([[np.nan], [-3.0]])})
    text = metrics.render("m", "1").decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    classes = {dict(k[1])["class"]: v for k, v in samples.items()
               if k[0] == "gha_mlops_predictions_total"}
    # worker 0 counted 0..63 and 64..69 as other; worker 1 met 69 first. The most frequent
    # 64 of the 65 known classes are shown (69, then 0..62), the rest is other.
    assert classes["69"] == 3 and len(classes) == srv.MAX_CLASSES + 1
    assert "63" not in classes and classes["other"] == 6 + 1
    assert sum(classes.values()) == 73
    bucket = {dict(k[1])["le"]: v for k, v in samples.items()
              if k[0] == "gha_mlops_prediction_value_bucket"}
    assert (bucket["0.0"], bucket["0.1"], bucket["0.5"], bucket["5.0"], bucket["10.0"],
            bucket["+Inf"]) == (1, 2, 3, 3, 4, 4)  # NaN is not counted
    assert samples["gha_mlops_prediction_value_sum", (("output", "score"),)] == \
        pytest.approx(0.05 + 0.5 + 7.0 - 3.0)


def test_tracked_outputs_are_one_int_or_one_float_per_instance() -> None:
    t = srv.Tensor
    assert srv.tracked_outputs((t("a", "INT64", (-1,)), t("b", "FP32", (-1, 1)),
                                t("c", "FP32", (-1, 3)), t("d", "BYTES", (-1,)),
                                t("e", "UINT8", (-1, 1)), t("f", "INT32", ()))) == (
        ("a", "class"), ("b", "value"), ("e", "class"))


def test_feedback_single_and_batched_is_read_back_and_joins(app: srv.App, tmp_path: Path) -> None:
    rid = _infer(app, X[:2])["id"]
    one = app.handle("POST", "/v2/models/tiny/feedback",
                     json.dumps({"id": f"{rid}:0", "label": 2}).encode())
    many = app.handle("POST", "/v2/models/tiny/versions/1.0.0/feedback", json.dumps(
        {"feedback": [{"id": f"{rid}:1", "label": "cat"}, {"id": "other", "label": 1.5}]}
    ).encode())
    assert (one.status, json.loads(one.body)) == (200, {"accepted": 1})
    assert (many.status, json.loads(many.body)) == (200, {"accepted": 2})
    app.close()
    labels = predlog.read_feedback(tmp_path / "log", "tiny", start=0, end=time.time() + 60)
    assert dict(labels) == {f"{rid}:0": 2, f"{rid}:1": "cat", "other": 1.5}
    joined = predlog.join_feedback(_window(tmp_path / "log"), labels)
    assert joined.ids == (f"{rid}:0", f"{rid}:1")
    m = _metrics(app)
    assert m["gha_mlops_feedback_labels_total", (("outcome", "written"),)] == 3


@pytest.mark.parametrize("body", [
    b"not json", b"[1, 2]", b'{"id": "a"}', b'{"id": "a", "label": 1, "x": 2}',
    b'{"id": "", "label": 1}', b'{"id": 5, "label": 1}',
    json.dumps({"id": "i" * 129, "label": 1}).encode(),
    b'{"id": "a", "label": NaN}', b'{"id": "a", "label": Infinity}',
    b'{"id": "a", "label": [1]}', b'{"id": "a", "label": null}',
    json.dumps({"id": "a", "label": "l" * 1025}).encode(),
    b'{"feedback": []}', b'{"feedback": {"id": "a", "label": 1}}',
    json.dumps({"feedback": [{"id": f"a{i}", "label": 1} for i in range(1001)]}).encode(),
    json.dumps({"feedback": [{"id": "a", "label": 1}, {"id": "b", "label": {}}]}).encode(),
    b"[" * 100_000,
], ids=lambda b: b[:30].decode())
def test_hostile_feedback_is_400_and_writes_nothing(app: srv.App, tmp_path: Path,
                                                    body: bytes) -> None:
    answer = app.handle("POST", "/v2/models/tiny/feedback", body)
    assert answer.status == 400 and json.loads(answer.body)["error"]
    app.close()
    assert not (tmp_path / "log" / "tiny" / "feedback").exists()


def test_feedback_route_answers_post_only_and_for_this_model(app: srv.App) -> None:
    assert app.handle("GET", "/v2/models/tiny/feedback", b"").status == 405
    assert app.handle("POST", "/v2/models/other/feedback", b"{}").status == 404


@pytest.mark.parametrize("label", [0, -7, 2**70, True, "x", "", "l" * 1024, 1.5, -0.0,
                                   math.nan, math.inf, "l" * 1025, None, [1], {"a": 1}])
def test_the_route_accepts_a_label_exactly_when_the_reader_keeps_it(label: Any) -> None:
    assert predlog_writer.label_ok(label) == predlog._label_ok(label)


def test_flags_win_over_variables_over_defaults() -> None:
    env = {"PREDLOG": "/var/log/p", "PREDLOG_SAMPLE": "0.5", "PREDLOG_BATCH_ROWS": "10"}
    args = srv.parse_args(["--model-dir", "m"], env)
    assert args.log_config == srv.LogConfig("/var/log/p", 0.5, 10, 5.0, ())
    args = srv.parse_args(["--model-dir", "m", "--log", "/d", "--log-sample", "1",
                           "--log-batch-age", "0.5"], env)
    assert args.log_config == srv.LogConfig("/d", 1.0, 10, 0.5, ())
    assert srv.parse_args(["--model-dir", "m"], {"PREDLOG_SAMPLE": "1"}).log_config is None


@pytest.mark.parametrize(("argv", "env", "words"), [
    (["--log-sample", "1.5"], {"PREDLOG": "/d"}, "--log-sample: 1.5 is out of range"),
    ([], {"PREDLOG": "/d", "PREDLOG_SAMPLE": "lots"}, "PREDLOG_SAMPLE='lots' is not a number"),
    ([], {"PREDLOG": "/d", "PREDLOG_BATCH_ROWS": "0"}, "PREDLOG_BATCH_ROWS='0': 0 is out"),
    (["--log", "s3://Bad_Bucket/x"], {}, "not s3://BUCKET"),
    (["--log", "s3://bucket/p"], {}, "needs AWS_ACCESS_KEY_ID"),
    (["--log", "s3://bucket/p"], {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b",
                                  "AWS_REGION": "mars"}, "AWS_REGION 'mars'"),
])
def test_bad_log_settings_stop_the_start_naming_the_setting(
        argv: list[str], env: dict[str, str], words: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        srv.parse_args(["--model-dir", "m", *argv], env)
    assert stop.value.code == 2 and words in capsys.readouterr().err


def test_an_unwritable_log_directory_is_a_model_error(model: srv.Model, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    app = srv.App(srv.Metrics(1), log=srv.LogConfig(str(tmp_path / "file" / "log")))
    with pytest.raises(srv.ModelError, match="cannot create the log directory"):
        app.set_model(model)
