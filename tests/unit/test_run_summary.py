"""A run record rendered as Markdown for the step summary: escaping, tables, the sections,
charts of CSV plots and the size limit."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from gha_mlops.errors import UsageError
from gha_mlops.reporting.run_summary import (
    MAX_CHART_POINTS,
    SummaryOptions,
    format_duration,
    format_number,
    format_size,
    load_record_file,
    markdown_table,
    md_code,
    md_text,
    mermaid_line_chart,
    mermaid_string,
    render_run_summary,
)

# --------------------------------------------------------------------------- helpers


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cells(row: str) -> list[str]:
    """The cells of a GFM table row: split on pipes that are not escaped."""
    assert row.startswith("|") and row.endswith("|"), row
    return re.split(r"(?<!\\)\|", row[1:-1])


def _tables(markdown: str) -> list[list[list[str]]]:
    """Every table in ``markdown`` (outside code fences), as rows of cells."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] | None = None
    fenced = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("|"):
            if current is None:
                current = []
                tables.append(current)
            current.append(_cells(line))
        else:
            current = None
    return tables


def _assert_well_formed(markdown: str) -> None:
    """Tables have a separator row and the header's number of cells in every row; fences and
    <details> are balanced."""
    for table in _tables(markdown):
        assert len(table) >= 2
        assert all(re.fullmatch(r"\s*:?-+:?\s*", c) for c in table[1]), table[1]
        assert {len(row) for row in table} == {len(table[0])}, table
    assert markdown.count("<details>") == markdown.count("</details>")
    assert len(re.findall(r"^```", markdown, re.M)) % 2 == 0


def _chart(markdown: str) -> str:
    match = re.search(r"```mermaid\n(.*?)\n```", markdown, re.S)
    assert match, markdown
    return match.group(1)


EVAL = {"test_accuracy": 0.9925651, "test_loss": 0.031571, "test_size": 269,
        "loss": {"final": 0.25}, "per_class": {str(c): {"f1": 0.9 + c / 100, "support": 27}
                                               for c in range(12)},
        "confusion_matrix": [[5, 1], [0, 6]], "labels": ["cat", "dog"]}
HISTORY = "epoch,train_loss,val_acc,note\n" + "".join(
    f"{e},{1 / e:.6f},{0.5 + e / 40:.6f},ok\n" for e in range(1, 11))


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        elif not isinstance(value, list):
            out[f"{prefix}{key}"] = value
    return out


@pytest.fixture
def run(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    """A record like the engine writes, and a workspace holding its metrics and plots."""
    ws = tmp_path / "ws"
    files = {"metrics/eval.json": json.dumps(EVAL).encode(),
             "metrics/train.json": b'{"epochs": 10}',
             "plots/history.csv": HISTORY.encode(),
             "plots/confusion.png": b"\x89PNG fake"}
    for rel, data in files.items():
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_bytes(data)
    kinds = {"metrics/eval.json": "metric", "metrics/train.json": "metric"}
    record = {
        "id": "20261122-081500-3fa9c1", "kind": "run", "status": "failed",
        "started_at": "2026-11-22T08:15:00.000Z", "duration_s": 75.2,
        "git": {"commit": "0493017ce413aebab8d7741e7654e5d81e779f2a", "branch": "main",
                "dirty": True},
        "config": {"path": "mlops.yaml", "sha256": "c" * 64},
        "params": {"file": "params.yaml", "values": {}, "overrides": {"train.lr": 0.01,
                                                                     "train.opt": "adam"}},
        "stages": [
            {"name": "prepare", "status": "cached", "duration_s": 0.01,
             "produced_by_run": "20261121-000000-aaaaaa"},
            {"name": "train", "status": "ran", "duration_s": 61.25},
            {"name": "report", "status": "failed", "duration_s": 1.5,
             "error": "`a | b` failed (exit code 1)\nsee the log"},
            {"name": "publish", "status": "skipped", "duration_s": 0,
             "error": "not run: upstream stage 'report' failed"},
        ],
        "outputs": {rel: {"sha256": _sha(data), "kind": kinds.get(rel, "plot"),
                          "stage": "train"} for rel, data in files.items()},
        "metrics": {"metrics/eval.json": _flatten(EVAL), "metrics/train.json": {"epochs": 10}},
        "model": {"path": "models/model.bin", "sha256": "ab" * 32},
        "datasets": {"digits": {"version": "09f66e6debdee2cd2b5a" + "0" * 44, "files": 3,
                                "size": 57523, "path": "data/digits",
                                "remote": {"name": "nas", "url": "s3://bucket/data"}}},
    }
    return record, ws


# --------------------------------------------------------------------------- Markdown helpers


@pytest.mark.parametrize(("text", "expected"), [
    ("plain", "plain"),
    ("a|b", "a\\|b"),
    ("two\nlines", "two<br>lines"),
    ("crlf\r\nend", "crlf<br>end"),
    ("<script>&", "&lt;script&gt;&amp;"),
])
def test_md_text_cannot_break_a_table_cell(text: str, expected: str) -> None:
    assert md_text(text) == expected


@pytest.mark.parametrize(("text", "in_table", "expected"), [
    ("train.lr", True, "`train.lr`"),
    ("a|b", True, "`a\\|b`"),
    ("a|b", False, "`a|b`"),
    ("has `tick`", True, "`` has `tick` ``"),
    ("a `b", True, "``a `b``"),
    ("`edge", True, "`` `edge ``"),
    ("multi\nline", True, "`multi line`"),
    ("", True, "` `"),
])
def test_md_code(text: str, in_table: bool, expected: str) -> None:
    assert md_code(text, in_table=in_table) == expected


def test_markdown_table_aligns_and_pads_short_rows() -> None:
    table = markdown_table(["a", "b", "c"], [["1"], ["1", "2", "3", "extra"]], "lrc")
    assert table.splitlines() == ["| a | b | c |", "| --- | --: | :-: |", "| 1 |  |  |",
                                  "| 1 | 2 | 3 |"]


@pytest.mark.parametrize(("value", "expected"), [
    (1, "1"), (269, "269"), (True, "true"), (0.9925651, "0.992565"), (0.25, "0.25"),
    (1.0, "1"), (1e-7, "1e-07"), (123456789.0, "1.23457e+08"), (float("nan"), "nan"),
])
def test_format_number(value: Any, expected: str) -> None:
    assert format_number(value) == expected


@pytest.mark.parametrize(("seconds", "expected"), [
    (0.04, "0.0 s"), (19.84, "19.8 s"), (75.2, "1 min 15 s"), (3725, "1 h 02 min"),
])
def test_format_duration(seconds: float, expected: str) -> None:
    assert format_duration(seconds) == expected


@pytest.mark.parametrize(("nbytes", "expected"), [
    (0, "0 B"), (1023, "1023 B"), (57523, "56.2 KiB"), (5 << 30, "5.0 GiB"),
])
def test_format_size(nbytes: int, expected: str) -> None:
    assert format_size(nbytes) == expected


# --------------------------------------------------------------------------- the sections


def test_headline(run: tuple[dict[str, Any], Path]) -> None:
    record, ws = run
    md = render_run_summary(record, ws, SummaryOptions(repo_url="https://github.com/o/r"))
    head = md.split("### ", 1)[0]
    assert head.startswith("## ❌ gha-mlops run failed\n")
    assert "| Run | `20261122-081500-3fa9c1` |" in head
    assert ("[`0493017ce413`](https://github.com/o/r/commit/"
            "0493017ce413aebab8d7741e7654e5d81e779f2a) on `main` (with uncommitted changes)"
            in head)
    assert "| Duration | 1 min 15 s |" in head
    assert "| Stages | 1 cached, 1 ran, 1 failed, 1 skipped |" in head
    assert f"| Model sha256 | `{'ab' * 32}` |" in head


def test_metrics_main_table_keeps_nested_groups_out(run: tuple[dict[str, Any], Path]) -> None:
    record, ws = run
    md = render_run_summary(record, ws)
    main = md.split("### Metrics", 1)[1].split("<details>", 1)[0]
    assert "| `metrics/eval.json` | Value |" in main
    assert "| `test_accuracy` | 0.992565 |" in main
    assert "| `test_size` | 269 |" in main
    assert "| `loss.final` | 0.25 |" in main  # a small group stays in the main table
    assert "per_class" not in main
    # per_class.N.score: one row per class (2 before 10), one column per score
    per_class = md.split("<code>per_class</code> (24 values)</summary>", 1)[1]
    per_class = per_class.split("</details>", 1)[0]
    assert "| `per_class` | `f1` | `support` |" in per_class
    rows = [r for r in per_class.splitlines() if r.startswith("| `")][1:]
    assert [r.split("`")[1] for r in rows] == [str(c) for c in range(12)]
    assert "| `2` | 0.92 | 27 |" in per_class
    _assert_well_formed(md)


def test_lists_of_the_run_metrics_file_are_shown_collapsed(
        run: tuple[dict[str, Any], Path]) -> None:
    record, ws = run
    md = render_run_summary(record, ws)
    matrix = md.split("<code>confusion_matrix</code> (2 x 2)</summary>", 1)[1]
    assert "| `confusion_matrix` | 0 | 1 |" in matrix
    assert "| **0** | 5 | 1 |" in matrix and "| **1** | 0 | 6 |" in matrix
    assert '```json\n["cat", "dog"]\n```' in md  # a list that is not numbers


def test_a_metrics_file_changed_since_the_run_is_not_read(
        run: tuple[dict[str, Any], Path]) -> None:
    record, ws = run
    (ws / "metrics/eval.json").write_text(json.dumps({**EVAL, "confusion_matrix": [[9]]}))
    md = render_run_summary(record, ws)
    assert "confusion_matrix" not in md
    assert "metrics/eval.json in the workspace is not this run's" in md
    assert "| `test_accuracy` | 0.992565 |" in md  # the record's numbers are still shown


def test_stages_table(run: tuple[dict[str, Any], Path]) -> None:
    record, ws = run
    md = render_run_summary(record, ws)
    stages = next(t for t in _tables(md) if t[0][0].strip() == "Stage")
    assert [[c.strip() for c in row] for row in stages[2:]] == [
        ["`prepare`", "💾 cached", "0.0", "outputs of run 20261121-000000-aaaaaa"],
        ["`train`", "✅ ran", "61.2", ""],
        ["`report`", "❌ failed", "1.5", "\\`a \\| b\\` failed (exit code 1)<br>see the log"],
        ["`publish`", "⏭️ skipped", "0.0", "not run: upstream stage 'report' failed"],
    ]


def test_datasets_and_overrides(run: tuple[dict[str, Any], Path]) -> None:
    record, ws = run
    md = render_run_summary(record, ws)
    assert ("| `digits` | `09f66e6debde` | 3 | 56.2 KiB | `nas` (`s3://bucket/data`) |"
            in md)
    overrides = md.split("### Parameter overrides", 1)[1]
    assert "| `train.lr` | `0.01` |" in overrides
    assert '| `train.opt` | `"adam"` |' in overrides


def test_sections_without_data_are_left_out(run: tuple[dict[str, Any], Path]) -> None:
    record, ws = run
    for key in ("datasets", "metrics", "outputs"):
        record.pop(key)
    record["params"].pop("overrides")
    md = render_run_summary(record, ws)
    for heading in ("### Metrics", "### Datasets", "### Parameter overrides", "### Plots"):
        assert heading not in md
    assert "### Stages" in md


def test_csv_plot_becomes_a_mermaid_line_chart(run: tuple[dict[str, Any], Path]) -> None:
    record, ws = run
    md = render_run_summary(record, ws)
    chart = _chart(md)
    lines = chart.splitlines()
    assert lines[1] == "xychart-beta"
    assert '"plotColorPalette": "#2563eb, #ea580c"' in lines[0]
    assert '    title "plots/history.csv"' in lines
    assert '    x-axis "epoch" ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"]' in lines
    line_rows = [ln for ln in lines if ln.startswith("    line [")]
    assert len(line_rows) == 2  # train_loss and val_acc; `note` is not numeric
    assert line_rows[0].startswith("    line [1, 0.5, 0.333333, 0.25,")
    after = md.split("```", 4)[-1]
    assert "🟦 `train_loss` · 🟧 `val_acc`" in md
    assert "not drawn (cells that are not numbers): `note`" in after


def test_images_are_listed_as_artifacts(run: tuple[dict[str, Any], Path]) -> None:
    record, ws = run
    md = render_run_summary(record, ws, SummaryOptions(run_url="https://github.com/o/r/"
                                                       "actions/runs/7"))
    plots = md.split("### Plots", 1)[1]
    assert "[the run's artifacts](https://github.com/o/r/actions/runs/7)" in plots
    png = _sha(b"\x89PNG fake")[:12]
    assert f"- `plots/confusion.png`: an image (stage `train`, sha256 `{png}`)" in plots
    assert "![" not in md  # no image is embedded from disk


def test_declared_plots_the_run_did_not_produce_are_listed(
        run: tuple[dict[str, Any], Path]) -> None:
    record, ws = run
    md = render_run_summary(record, ws, SummaryOptions(
        declared_plots={"plots/report.csv": "report", "plots/history.csv": "train"}))
    assert "- `plots/report.csv`: not produced by this run (stage `report` failed)" in md
    assert md.count("plots/history.csv") == 1  # produced, so charted once, not listed


@pytest.mark.parametrize(("change", "reason"), [
    ("modified", "in the workspace is not this run's"),
    ("missing", "is not in the workspace"),
])
def test_a_csv_plot_that_is_not_the_runs_is_not_charted(
        run: tuple[dict[str, Any], Path], change: str, reason: str) -> None:
    record, ws = run
    if change == "modified":
        (ws / "plots/history.csv").write_text("epoch,x\n1,2\n")
    else:
        (ws / "plots/history.csv").unlink()
    md = render_run_summary(record, ws)
    assert "```mermaid" not in md
    assert f"- `plots/history.csv` (stage `train`): not drawn, plots/history.csv {reason}" in md


def test_plot_directories_are_expanded(run: tuple[dict[str, Any], Path]) -> None:
    record, ws = run
    (ws / "plots/dir").mkdir()
    (ws / "plots/dir/a.csv").write_text("step,v\n1,2\n2,3\n")
    record["outputs"] = {"plots/dir": {"sha256": "f" * 64 + ".dir", "kind": "plot",
                                       "stage": "train",
                                       "files": {"a.csv": _sha(b"step,v\n1,2\n2,3\n")}}}
    md = render_run_summary(record, ws)
    assert '    title "plots/dir/a.csv"' in _chart(md)


# --------------------------------------------------------------------------- charts


def test_long_series_are_downsampled_with_a_numeric_axis() -> None:
    xs = [str(i) for i in range(1000)]
    chart = mermaid_line_chart("loss", "step", xs, [("loss", [float(i) for i in range(1000)])])
    body = _chart(chart)
    assert '    x-axis "step" 0 --> 999' in body
    values = body.split("    line [", 1)[1].rstrip("]").split(", ")
    assert len(values) == MAX_CHART_POINTS
    assert values[0] == "0" and values[-1] == "999"
    assert '    y-axis "loss"' in body  # one line: the axis names it
    assert f"({MAX_CHART_POINTS} of 1000 points)" in chart


def test_unevenly_spaced_x_keeps_labels() -> None:
    xs = [str(2 ** i) for i in range(30)]
    chart = _chart(mermaid_line_chart("t", "x", xs, [("a", [1.0] * 30), ("b", [2.0] * 30)]))
    assert '    x-axis "x" ["1", "2", "4",' in chart
    assert "y-axis" not in chart


def test_chart_text_is_escaped_and_numbers_have_no_exponent() -> None:
    chart = mermaid_line_chart('say "hi"\n```', 'e"poch', ["a b", 'c"'],
                               [("tiny", [1e-7, 2.5e7])])
    body = _chart(chart)
    assert "title \"say 'hi' '''\"" in body
    assert 'x-axis "e\'poch" ["a b", "c\'"]' in body
    assert "line [0.0000001, 25000000]" in body
    assert chart.count("```") == 2


@pytest.mark.parametrize(("text", "expected"), [
    ("plain", '"plain"'), ('q"uote', "\"q'uote\""), ("a\nb", '"a b"'),
    ("x" * 100, '"' + "x" * 79 + '…"'),
])
def test_mermaid_string(text: str, expected: str) -> None:
    assert mermaid_string(text) == expected


def test_at_most_eight_lines_per_chart() -> None:
    with pytest.raises(ValueError, match="at most 8"):
        mermaid_line_chart("t", "x", ["1"], [(str(i), [1.0]) for i in range(9)])


def test_wide_csv_is_split_over_several_charts(run: tuple[dict[str, Any], Path]) -> None:
    record, ws = run
    text = "x," + ",".join(f"c{i}" for i in range(10)) + "\n1," + ",".join(["1"] * 10) + "\n"
    (ws / "plots/history.csv").write_text(text)
    record["outputs"]["plots/history.csv"]["sha256"] = _sha(text.encode())
    md = render_run_summary(record, ws)
    assert md.count("```mermaid") == 2
    assert '"plots/history.csv (1/2)"' in md and '"plots/history.csv (2/2)"' in md


def test_csv_without_a_header_row(run: tuple[dict[str, Any], Path]) -> None:
    record, ws = run
    text = "1,0.5\n2,0.25\n"
    (ws / "plots/history.csv").write_text(text)
    record["outputs"]["plots/history.csv"]["sha256"] = _sha(text.encode())
    body = _chart(render_run_summary(record, ws))
    assert 'x-axis "column 1" ["1", "2"]' in body and "line [0.5, 0.25]" in body


# --------------------------------------------------------------------------- size limit


def test_a_summary_over_the_limit_is_shortened_with_a_note(
        run: tuple[dict[str, Any], Path]) -> None:
    record, ws = run
    record = copy.deepcopy(record)
    record["metrics"]["metrics/eval.json"].update({f"m{i:05d}": i / 7 for i in range(5000)})
    full = render_run_summary(record, ws)
    assert len(full.encode()) > 100_000
    limit = 20_000
    short = render_run_summary(record, ws, SummaryOptions(limit_bytes=limit))
    assert len(short.encode()) <= limit
    assert short.startswith("## ❌ gha-mlops run failed")
    assert "more rows left out to fit the step summary's size limit" in short
    assert "> [!NOTE]\n> This summary was shortened to 19 KiB, as GitHub shows at most" in short
    assert "cut short: metrics of metrics/eval.json" in short
    assert "gha-mlops summary 20261122-081500-3fa9c1 --output summary.md" in short
    assert "### Stages" in short  # later, smaller sections still fit
    _assert_well_formed(short)


def test_a_summary_under_the_limit_is_unchanged(run: tuple[dict[str, Any], Path]) -> None:
    record, ws = run
    full = render_run_summary(record, ws)
    assert render_run_summary(record, ws, SummaryOptions(limit_bytes=len(full.encode()))) == full
    assert render_run_summary(record, ws) == full  # deterministic
    _assert_well_formed(full)


# --------------------------------------------------------------------------- record files


def test_load_record_file(tmp_path: Path, run: tuple[dict[str, Any], Path]) -> None:
    record, _ = run
    good = tmp_path / "r.json"
    good.write_text(json.dumps(record))
    assert load_record_file(good)["id"] == record["id"]
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(UsageError, match="is not valid JSON"):
        load_record_file(bad)
    other = tmp_path / "metrics.json"
    other.write_text('{"accuracy": 1}')
    with pytest.raises(UsageError, match="is not a gha-mlops run record"):
        load_record_file(other)
