"""The report's Markdown: the marker, escaping of hostile names and values, the sections and
trimming to GitHub's comment limit."""

from __future__ import annotations

import re
from typing import Any

from gha_mlops.config.model import Gate
from gha_mlops.reporting._markdown import md_escape, md_name
from gha_mlops.reporting.compare import RunFiles, compare
from gha_mlops.reporting.gates import Verdict, evaluate_gates
from gha_mlops.reporting.markdown import COMMENT_LIMIT, marker, render, sanitize_report_id

HOSTILE = ["<img src=x onerror=alert(1)>", "| **bold** |", "`tick` & [link](http://x)",
           "line\nbreak", "<script>alert(1)</script>", "_under_ ~strike~"]


def _record(run_id: str, metrics: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": run_id, "status": "succeeded", "stages": [{"name": "train", "status": "ran"}],
            "metrics": {"metrics.json": metrics}, **extra}


def _cells(line: str) -> list[str]:
    """The cells of a GFM table row: split on pipes that are not backslash-escaped."""
    return re.split(r"(?<!\\)\|", line.strip())[1:-1]


def test_escape_leaves_no_markup() -> None:
    for text in HOSTILE:
        escaped = md_escape(text)
        assert "<" not in escaped.replace("<br>", "")
        assert not re.search(r"(?<!\\)[|`*_\[\]~]", escaped), escaped
        assert "\n" not in escaped
    assert md_escape("a & b") == "a &amp; b"
    assert md_name("x|y") == "<code>x\\|y</code>"


def test_hostile_names_and_values_are_never_markup() -> None:
    base = _record("b", dict.fromkeys(HOSTILE, 1.0),
                   params={"values": {name: name for name in HOSTILE}})
    head = _record("h<b>", dict.fromkeys(HOSTILE, 2.0),
                   params={"values": {name: name + "!" for name in HOSTILE}},
                   stages=[{"name": HOSTILE[0], "status": HOSTILE[1]}])
    c = compare(base, head)
    gates = {HOSTILE[0]: Gate(HOSTILE[0], max=1.5)}
    text = render(c, evaluate_gates(c, gates), report_id=HOSTILE[0],
                  images={HOSTILE[1]: "a b(1).png"})
    assert "<img" not in text and "<script" not in text and "**bold**" not in text
    assert "[link](" not in text
    assert "![\\| \\*\\*bold\\*\\* \\|](a%20b%281%29.png)" in text
    header = next(line for line in text.splitlines() if line.startswith("| Metric"))
    assert len(_cells(header)) == 6
    rows = [line for line in text.splitlines() if line.startswith("| <code>")]
    assert rows
    widths = {len(_cells(line)) for line in rows if "metrics.json:" in line}
    assert widths == {6}, widths  # no name or value added or removed a cell


def test_marker_and_report_id() -> None:
    assert marker("pr-12") == "<!-- gha-mlops-report:pr-12 -->"
    assert sanitize_report_id("a b--c -->x") == "a-b-c-x"
    assert sanitize_report_id("<!-- -->") == "default"
    assert sanitize_report_id("x" * 300) == "x" * 100
    c = compare(_record("b", {"a": 1}), _record("h", {"a": 1}))
    text = render(c, Verdict(), report_id="weird -->id")
    assert text.startswith("<!-- gha-mlops-report:weird-id -->\n")
    assert text.count("-->") == 1


def test_sections_and_verdicts() -> None:
    base = _record("b", {"acc": 0.9, "loss": 0.3, "same": 1},
                   params={"values": {"lr": 0.1}, "overrides": {}},
                   datasets={"digits": {"version": "a" * 64}},
                   model={"path": "m.bin", "sha256": "a" * 64})
    head = _record("h", {"acc": 0.95, "loss": 0.3, "same": 1, "new": 2},
                   params={"values": {"lr": 0.2}, "overrides": {"lr": 0.2}},
                   datasets={"digits": {"version": "b" * 64}},
                   model={"path": "m.bin", "sha256": "b" * 64},
                   stages=[{"name": "train", "status": "cached"}], status="failed")
    c = compare(base, head, head_files=RunFiles(model_size=1536))
    ok = render(c, evaluate_gates(c, {"acc": Gate("acc", min_delta=0)}))
    assert "## ✅ Model comparison: the gate passes" in ok
    assert "| <code>metrics.json:acc</code> | 0.9 | 0.95 | +0.05 | +5.56% | 🟢 better |" in ok
    assert "2 unchanged metrics" in ok
    assert "🆕 added" in ok
    assert "The head run failed" in ok
    assert "1.5 KiB" in ok
    assert "<summary>Parameters: 1 changed</summary>" in ok
    assert "<summary>Data versions: 1 changed</summary>" in ok
    assert "💾 cached" in ok
    bad = render(c, evaluate_gates(c, {"acc": Gate("acc", min=0.99), "loss": Gate("loss",
                                                                             max=1)}))
    assert "## ❌ Model comparison: 1 of 2 gates failed" in bad
    gate_rows = [line for line in bad.splitlines() if "❌ fail" in line or "✅ pass" in line]
    assert "❌ fail" in gate_rows[0]  # failed gates first
    assert "acc is 0.95, below the minimum 0.99 by 0.04" in gate_rows[0]
    assert "no gates declared" in render(c, Verdict())


def _big() -> tuple[Any, Verdict]:
    many = {f"metric_{i:05d}_{'x' * 40}": float(i) for i in range(3000)}
    base = _record("b", many, params={"values": {f"p{i}": i for i in range(2000)}})
    head = _record("h", {k: v + 1 for k, v in many.items()},
                   params={"values": {f"p{i}": i + 1 for i in range(2000)}})
    c = compare(base, head)
    return c, evaluate_gates(c, {"metric_00001_" + "x" * 40: Gate("metric_00001_" + "x" * 40,
                                                                  max=0)})


def test_trimmed_to_the_comment_limit_with_a_note_and_link() -> None:
    c, verdict = _big()
    full = render(c, verdict, limit=None)
    assert len(full) > COMMENT_LIMIT
    text = render(c, verdict, full_report_url="https://example.com/run/1#summary")
    assert len(text) <= COMMENT_LIMIT
    assert text.startswith("<!-- gha-mlops-report:default -->")
    assert "## ❌ Model comparison: the gate failed" in text
    assert "### Gates" in text and "above the maximum 0" in text
    assert "more rows left out" in text
    assert "[The full report](https://example.com/run/1#summary)" in text
    assert "(left out: stages, parameters; cut short: metrics)" in text
    assert text.rstrip().endswith("#summary).")
    small = render(c, verdict, limit=5000)
    assert len(small) <= 5000
    assert "### Gates" in small
    tiny = render(c, verdict, limit=800)
    assert len(tiny) <= 800


def test_within_the_limit_nothing_is_trimmed() -> None:
    c = compare(_record("b", {"a": 1}), _record("h", {"a": 2}))
    text = render(c, Verdict())
    assert text == render(c, Verdict(), limit=None)
    assert "shortened" not in text
