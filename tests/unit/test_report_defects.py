"""Defects a new user found in the report tried locally (issue 12, section 3): a baseline whose
files the head run overwrote (read from the content cache), one verdict wording for
report.md and report.json, which metrics a short list shows first and what it leaves out,
confusion-matrix ticks, and `runs show` with the parameters a run used."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from gha_mlops.cli._render import headline_metrics
from gha_mlops.cli._run_text import describe as _describe
from gha_mlops.config.model import Gate
from gha_mlops.reporting import plots
from gha_mlops.reporting.compare import RunFiles, compare, read_run_files
from gha_mlops.reporting.gates import evaluate_gates
from gha_mlops.reporting.markdown import render
from gha_mlops.reporting.metric_order import headline_order
from gha_mlops.reporting.outcome import outcome
from tests.conftest import cache_object

pytest.importorskip("matplotlib")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()



BASE_METRICS = json.dumps({"acc": 0.9, "cm": [[9, 1], [2, 8]]}).encode()
HEAD_METRICS = json.dumps({"acc": 0.95, "cm": [[10, 0], [1, 9]]}).encode()
BASE_CURVE = b"epoch,loss\n1,0.9\n2,0.7\n"
HEAD_CURVE = b"epoch,loss\n1,0.5\n2,0.3\n"
BASE_PNG = b"\x89PNG\r\n\x1a\nbaseline"


def _record(metrics: bytes, curve: bytes, png: bytes) -> dict[str, Any]:
    return {"id": "base", "status": "succeeded", "stages": [],
            "metrics": {"m.json": json.loads(metrics)},
            "outputs": {"m.json": {"sha256": _sha(metrics), "kind": "metric"},
                        "plots/loss.csv": {"sha256": _sha(curve), "kind": "plot"},
                        "plots/fig.png": {"sha256": _sha(png), "kind": "plot"}}}


@pytest.fixture
def overwritten(tmp_path: Path) -> Path:
    """A workspace where the head run wrote its files over the baseline's (the docs' local
    example): the workspace holds the head's bytes, the cache both runs'."""
    ws = tmp_path / "ws"
    (ws / "plots").mkdir(parents=True)
    (ws / "m.json").write_bytes(HEAD_METRICS)
    (ws / "plots/loss.csv").write_bytes(HEAD_CURVE)
    (ws / "plots/fig.png").write_bytes(b"\x89PNG\r\n\x1a\nhead")
    for data in (BASE_METRICS, HEAD_METRICS, BASE_CURVE, HEAD_CURVE, BASE_PNG):
        cache_object(ws, data)
    return ws


def test_a_baseline_the_head_run_overwrote_is_read_from_the_cache(overwritten: Path) -> None:
    files = read_run_files(_record(BASE_METRICS, BASE_CURVE, BASE_PNG), overwritten)
    assert files.problems == ()
    assert files.documents == {"m.json": json.loads(BASE_METRICS)}
    assert files.curves == {"plots/loss.csv": BASE_CURVE.decode()}
    assert files.images == {"plots/fig.png": BASE_PNG}
    head_record = _record(HEAD_METRICS, HEAD_CURVE, b"\x89PNG\r\n\x1a\nhead")
    head = read_run_files(head_record, overwritten)
    assert head.problems == () and head.images == {"plots/fig.png": b"\x89PNG\r\n\x1a\nhead"}
    c = compare(_record(BASE_METRICS, BASE_CURVE, BASE_PNG), head_record, base_files=files,
                head_files=head)
    assert c.notes == ()
    [matrix] = c.matrices
    assert matrix.base == [[9, 1], [2, 8]] and matrix.head == [[10, 0], [1, 9]]
    [curve] = c.curves
    assert curve.base != curve.head


def test_a_cache_object_is_used_only_with_the_recorded_bytes(overwritten: Path,
                                                             tmp_path: Path) -> None:
    # Damaged: the object's bytes are not its name's.
    cache_object(overwritten, BASE_METRICS).write_bytes(b'{"acc": 1.0}')
    # Planted: a link out of the cache, to a file that does hash right.
    outside = tmp_path / "secret.csv"
    outside.write_bytes(BASE_CURVE)
    link = cache_object(overwritten, BASE_CURVE)
    link.unlink()
    os.symlink(outside, link)
    files = read_run_files(_record(BASE_METRICS, BASE_CURVE, BASE_PNG), overwritten)
    assert files.documents == {} and files.curves == {}
    assert files.images == {"plots/fig.png": BASE_PNG}


def test_when_neither_cache_nor_workspace_has_the_file_the_report_says_so(
        overwritten: Path) -> None:
    record = _record(BASE_METRICS, BASE_CURVE, BASE_PNG)
    cache_object(overwritten, BASE_METRICS).unlink()
    cache_object(overwritten, BASE_CURVE).unlink()
    (overwritten / "plots/fig.png").unlink()
    cache_object(overwritten, BASE_PNG).unlink()
    files = read_run_files(record, overwritten)
    assert files.problems == (
        "m.json here is not the run's (its sha256 differs) and the cache does not hold the "
        "run's copy",
        "plots/loss.csv here is not the run's (its sha256 differs) and the cache does not "
        "hold the run's copy",
        "plots/fig.png is neither in the workspace nor in its cache",
    )
    c = compare(record, record, base_files=files)
    text = render(c, evaluate_gates(c, {}))
    assert "> [!NOTE]\n> Files not used" in text
    assert text.count("the cache does not hold the run") == 2
    assert "plots/fig.png is neither in the workspace nor in its cache" in text.replace("\\", "")


@pytest.mark.parametrize("gates", [{}, {"acc": Gate("acc", min=0.5)},
                                   {"acc": Gate("acc", min=0.99)},
                                   {"acc": Gate("acc", min=0.5), "x": Gate("x", max=1)}])
def test_report_md_and_report_json_state_one_verdict(gates: dict[str, Gate]) -> None:
    from gha_mlops.reporting.pr_report import stored_json as _stored

    record = {"id": "r", "status": "succeeded", "stages": [], "metrics": {"m.json":
                                                                           {"acc": 0.9}}}
    c = compare(record, record)
    verdict = evaluate_gates(c, gates)
    title = render(c, verdict).splitlines()[1]
    stored = json.loads(_stored("r", verdict, {}, repo=None, pr=None, issue=None, sha=None))
    assert title.endswith(f"Model comparison: {stored['headline']}")
    assert stored["passed"] is outcome(verdict).passed
    if not gates:
        assert stored["headline"] == "no gates declared"


def test_headline_order_is_gates_then_top_level_keys_with_files_taking_turns() -> None:
    train = [("train.json", k) for k in ("epochs", "train_accuracy", "train_loss",
                                         "val_accuracy", "val_loss")]
    evaluate = [("eval.json", k) for k in ("macro_f1", "per_class.3.f1", "test_accuracy",
                                           "test_loss")]
    names = [*train, *evaluate]
    ordered = [names[i] for i in headline_order(names)]
    assert ordered[:4] == [("train.json", "epochs"), ("eval.json", "macro_f1"),
                           ("train.json", "train_accuracy"), ("eval.json", "test_accuracy")]
    assert ordered[-1] == ("eval.json", "per_class.3.f1")  # nested keys last
    gated = [names[i] for i in headline_order(names, ["test_loss", "train.json:val_loss"])]
    assert gated[:2] == [("eval.json", "test_loss"), ("train.json", "val_loss")]
    assert sorted(headline_order(names, ["test_loss", "nope"])) == list(range(len(names)))


def test_the_run_summary_shows_the_headline_metrics_and_counts_the_rest() -> None:
    metrics = {"metrics/train.json": {"epochs": 10, "train_accuracy": 0.99, "train_loss": 0.1,
                                      "val_accuracy": 0.98, "val_loss": 0.2, "lr": 0.01},
               "metrics/eval.json": {"macro_f1": 0.97, "per_class.0.f1": 1.0,
                                     "test_accuracy": 0.977, "test_loss": 0.04}}
    lines = headline_metrics(metrics)
    assert any(line.startswith("test_accuracy = 0.977") for line in lines[:6])
    assert lines[-1] == "... and 4 more: gha-mlops runs show --json"
    gated = headline_metrics(metrics, first=["metrics/eval.json:test_loss"])
    assert gated[0].startswith("test_loss = 0.04")


def test_the_metric_chart_says_what_it_leaves_out_and_shows_the_gated_first() -> None:
    base = {"id": "b", "stages": [], "metrics": {"m.json": {
        **{f"per_class.{i}.f1": 0.5 for i in range(15)}, "test_accuracy": 0.8}}}
    head = {"id": "h", "stages": [], "metrics": {"m.json": {
        **{f"per_class.{i}.f1": 0.6 for i in range(15)}, "test_accuracy": 0.9}}}
    charts = plots.report_plots(compare(base, head), first=["test_accuracy"])
    title, _ = charts["metrics.png"]
    assert title == "Metrics that changed (12 of 16 shown; the rest are in the metrics table)"
    # Before, the chart showed the first 12 in file order: per_class.0-11, no test_accuracy.
    assert plots.bar_metrics(compare(base, head))[0].key == "test_accuracy"  # top level
    gated = plots.bar_metrics(compare(base, head), first=["per_class.14.f1"])
    assert [m.key for m in gated[:2]] == ["per_class.14.f1", "test_accuracy"]
    few = {"id": "f", "stages": [], "metrics": {"m.json": {"test_accuracy": 0.8}}}
    small = plots.report_plots(compare(few, {**few, "metrics": {"m.json": {
        "test_accuracy": 0.9}}}))
    assert small["metrics.png"][0] == "Metrics that changed"
    fig = plots.metric_bars_figure([(f"m{i}", 0.0, 1.0) for i in range(16)])
    assert fig.get_supxlabel() == "12 of 16 changed metrics shown; the rest are in the " \
                                  "metrics table"
    assert plots.metric_bars_figure([("a", 0.0, 1.0)]).get_supxlabel() == ""


@pytest.mark.parametrize("shape", [(2, 2), (10, 10), (3, 5), (40, 40)])
def test_confusion_matrix_ticks_label_every_class_at_its_cell(shape: tuple[int, int]) -> None:
    rows, cols = shape
    matrix = [[float(r * cols + c) for c in range(cols)] for r in range(rows)]
    fig = plots.confusion_figure("cm", matrix, matrix)
    for ax in fig.axes:
        assert list(ax.get_xticks()) == list(range(cols))
        assert list(ax.get_yticks()) == list(range(rows))
        assert [t.get_text() for t in ax.get_xticklabels()] == [str(c) for c in range(cols)]
        assert [t.get_text() for t in ax.get_yticklabels()] == [str(r) for r in range(rows)]


def test_runs_show_prints_the_overrides_and_the_params_used_escaped() -> None:
    record = {"id": "20260101-000000-abcdef", "status": "succeeded", "stages": [],
              "duration_s": 1.0, "metrics": {},
              "params": {"file": "params.yaml", "sha256": "a" * 64,
                         "overrides": {"train.lr": 0.02, "train.tag": "::error::x\nowned"},
                         "values": {"train": {"lr": 0.02, "epochs": 10,
                                              "tag": "::error::x\nowned"}}}}
    text = _describe(record)
    lines = text.splitlines()
    assert any(line.startswith("--set") and "train.lr=0.02" in line for line in lines)
    assert "  train.lr = 0.02  (--set)" in lines
    assert "  train.epochs = 10" in lines
    assert not any(line.lstrip().startswith("::") for line in lines)
    assert "owned" in text and "\nowned" not in text


def test_run_files_default_is_still_empty() -> None:
    assert read_run_files({"id": "r"}, None) == RunFiles()
