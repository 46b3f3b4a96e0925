"""The comparison model: metrics on both sides, directions, NaN and ±inf, params, data,
stages and the model, from run records (and files read beside them)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pytest

from gha_mlops.reporting.compare import (
    RunFiles,
    compare,
    default_direction,
    read_run_files,
)


def _record(run_id: str, metrics: dict[str, Any], **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"id": run_id, "status": "succeeded", "stages": [],
                              "metrics": {"metrics.json": metrics}}
    record.update(extra)
    return record


@pytest.mark.parametrize(("name", "direction"), [
    ("test_accuracy", "higher"), ("f1", "higher"), ("val_loss", "lower"),
    ("mean_absolute_error", "lower"), ("rmse", "lower"), ("MAE", "lower"),
    ("latency_ms", "lower"), ("train_time_s", "lower"), ("auc", "higher"),
])
def test_default_direction(name: str, direction: str) -> None:
    assert default_direction(name) == direction


NAN, INF = math.nan, math.inf


@pytest.mark.parametrize(("key", "base", "head", "change"), [
    ("accuracy", 0.9, 0.95, "better"),
    ("accuracy", 0.9, 0.85, "worse"),
    ("accuracy", 0.9, 0.9, "same"),
    ("loss", 0.3, 0.2, "better"),
    ("loss", 0.3, 0.4, "worse"),
    ("accuracy", None, 0.9, "added"),
    ("accuracy", 0.9, None, "removed"),
    ("accuracy", 0.9, NAN, "worse"),
    ("accuracy", 0.9, INF, "worse"),  # never better, even in the "right" direction
    ("loss", 0.3, -INF, "worse"),
    ("accuracy", NAN, 0.9, "incomparable"),
    ("accuracy", NAN, NAN, "same"),
    ("accuracy", INF, INF, "same"),
])
def test_change_of_a_metric(key: str, base: float | None, head: float | None,
                            change: str) -> None:
    docs = {}
    for side, value in (("base", base), ("head", head)):
        docs[side] = RunFiles(documents={"metrics.json": {} if value is None else {key: value}})
    c = compare(_record("b", {}), _record("h", {}), base_files=docs["base"],
                head_files=docs["head"])
    [m] = c.metrics
    assert m.change == change
    if change in ("better", "worse", "same") and base is not None and head is not None \
            and math.isfinite(base) and math.isfinite(head):
        assert m.delta == pytest.approx(head - base)
    else:
        assert m.delta is None


def test_metrics_by_file_and_key_with_deltas() -> None:
    base = _record("b", {"acc": 0.8, "per_class.0.f1": 0.5, "gone": 1})
    head = _record("h", {"acc": 0.88, "per_class.0.f1": 0.5, "new": 2})
    head["metrics"]["other.json"] = {"acc": 0.1}
    c = compare(base, head)
    by_name = {m.name: m for m in c.metrics}
    assert list(by_name) == ["metrics.json:acc", "metrics.json:per_class.0.f1",
                             "metrics.json:new", "other.json:acc", "metrics.json:gone"]
    acc = by_name["metrics.json:acc"]
    assert acc.delta == pytest.approx(0.08)
    assert acc.relative == pytest.approx(0.1)
    assert by_name["metrics.json:gone"].change == "removed"
    assert by_name["metrics.json:new"].change == "added"
    assert [m.name for m in c.find("acc")] == ["metrics.json:acc", "other.json:acc"]
    assert [m.name for m in c.find("other.json:acc")] == ["other.json:acc"]
    assert c.find("nope") == []


def test_a_zero_baseline_has_no_relative_delta() -> None:
    c = compare(_record("b", {"errors": 0}), _record("h", {"errors": 3}))
    assert c.metrics[0].relative is None
    assert c.metrics[0].change == "worse"


def test_declared_directions_win_over_the_name() -> None:
    base, head = _record("b", {"score": 2.0}), _record("h", {"score": 1.0})
    assert compare(base, head).metrics[0].change == "worse"
    assert compare(base, head, directions={"score": "lower"}).metrics[0].change == "better"
    assert compare(base, head, directions={"metrics.json:score": "lower"}
                   ).metrics[0].change == "better"


def test_odd_records_never_crash() -> None:
    c = compare({}, {"metrics": {"m.json": {"a": "text", "b": True, "c": None}},
                     "stages": ["x", {"name": "s"}], "params": None, "datasets": []})
    assert c.metrics == ()
    assert c.head.other == (("s", "?"),)


def test_params_overrides_datasets_inputs_and_stages() -> None:
    base = _record("b", {}, params={"values": {"train": {"lr": 0.1, "epochs": 3}, "seed": 1},
                                    "overrides": {}},
                   datasets={"digits": {"version": "a" * 64}, "old": {"version": "c" * 64}},
                   data={"train.py": "1" * 64, "raw.csv": "2" * 64},
                   stages=[{"name": "prepare", "status": "ran"},
                           {"name": "train", "status": "ran"}])
    head = _record("h", {}, params={"values": {"train": {"lr": 0.2, "epochs": 3}, "seed": 1.0},
                                    "overrides": {"train.lr": 0.2}},
                   datasets={"digits": {"version": "b" * 64}},
                   data={"train.py": "1" * 64, "raw.csv": "3" * 64},
                   stages=[{"name": "prepare", "status": "restored"},
                           {"name": "train", "status": "failed"}])
    c = compare(base, head)
    assert [(p.name, p.base, p.head) for p in c.params] == [("train.lr", 0.1, 0.2),
                                                            ("seed", 1, 1.0)]
    assert c.head.overrides == (("train.lr", 0.2),)
    assert [(d.name, d.in_base, d.in_head) for d in c.datasets] == [("digits", True, True),
                                                                   ("old", True, False)]
    assert [i.name for i in c.inputs] == ["raw.csv"]
    assert c.base.ran == ("prepare", "train")
    assert c.head.cached == ("prepare",)
    assert c.head.other == (("train", "failed"),)


def test_model_size_and_latency() -> None:
    model = {"path": "model.bin", "sha256": "a" * 64}
    base = _record("b", {"latency_ms": 10.0, "p99_latency": 30.0}, model=model,
                   outputs={"model.bin": {"sha256": "a" * 64, "kind": "out", "size": 2048}})
    head = _record("h", {"latency_ms": 12.0}, model=model)
    c = compare(base, head, head_files=RunFiles(model_size=4096))
    assert (c.base.model_size, c.head.model_size) == (2048, 4096)
    assert not c.model_changed
    assert c.latency is not None and c.latency.key == "latency_ms"
    assert c.latency.change == "worse"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_read_run_files_uses_only_the_runs_bytes(tmp_path: Path) -> None:
    metrics = json.dumps({"acc": float("nan"), "cm": [[1, 0], [0, 1]]}).encode()
    curve = b"epoch,loss\n1,0.5\n"
    (tmp_path / "m.json").write_bytes(metrics)
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "loss.csv").write_bytes(curve)
    (tmp_path / "plots" / "img.png").write_bytes(b"png")
    (tmp_path / "model.bin").write_bytes(b"12345")
    (tmp_path / "stale.json").write_text("{}")
    record = {
        "id": "r", "stages": [], "metrics": {"m.json": {}},
        "model": {"path": "model.bin", "sha256": _sha(b"12345")},
        "outputs": {
            "m.json": {"sha256": _sha(metrics), "kind": "metric"},
            "stale.json": {"sha256": "0" * 64, "kind": "metric"},
            "absent.json": {"sha256": "0" * 64, "kind": "metric"},
            "plots": {"sha256": "tree", "kind": "plot",
                      "files": {"loss.csv": _sha(curve), "img.png": _sha(b"png")}},
            "../escape.json": {"sha256": "0" * 64, "kind": "metric"},
        },
    }
    files = read_run_files(record, tmp_path)
    assert set(files.documents) == {"m.json"}
    assert set(files.curves) == {"plots/loss.csv"}
    assert files.model_size == 5
    assert files.problems == ("stale.json here is not the run's (its sha256 differs)",)
    c = compare(record, record, base_files=files, head_files=files)
    assert math.isnan(c.metrics[0].head or 0.0)
    assert c.matrices[0].name == "m.json:cm"
    assert c.curves[0].path == "plots/loss.csv"
    assert read_run_files(record, None) == RunFiles()
