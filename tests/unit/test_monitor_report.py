"""The check's report: verdict JSON, Markdown (feature names escaped), deterministic plots,
no plots without matplotlib."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from gha_mlops.monitor.check import (
    NOT_IN_REFERENCE,
    CheckResult,
    Histogram,
    Performance,
    Untested,
)
from gha_mlops.monitor.drift import FeatureDrift
from gha_mlops.monitor.hysteresis import AlarmState, HysteresisConfig, Window, step
from gha_mlops.monitor.report import (
    SCHEMA,
    SCORES_PLOT,
    draw_plots,
    render_markdown,
    verdict_bytes,
    verdict_json,
    write_report,
)

T0 = 1_773_100_800.0
EVIL = "<img src=x onerror=alert(1)>|@octocat ![p](http://e.vil) `x`\n# head"


def result(*, rows: int = 5000, enough: bool = True) -> CheckResult:
    alarm = HysteresisConfig(min_samples=1000)
    state = AlarmState()
    for i, score in enumerate((0.1, 0.75, 0.75)):
        state, verdict = step(state, Window(T0 + i * 3600, score, rows if enough else 10),
                              alarm, now=T0 + i * 3600)
    feats = (FeatureDrift(EVIL, "numerical", "wasserstein", 0.4, 0.1, True, 2000, rows),
             FeatureDrift("age", "numerical", "wasserstein", 0.02, 0.1, False, 2000, rows),
             FeatureDrift("city", "categorical", "jensenshannon", 0.3, 0.1, True, 2000, rows),
             FeatureDrift("zip", "categorical", "jensenshannon", 0.01, 0.1, False, 2000, rows))
    hists = (Histogram(EVIL, "numerical", (0.0, 1.0, 2.0), (), (0.5, 0.5), (0.1, 0.9)),
             Histogram("city", "categorical", (), ("Paris", "$\\alpha$", "other"),
                       (0.5, 0.3, 0.2), (0.2, 0.3, 0.5)))
    return CheckResult(
        model="m", version="1.2.0", start=T0 + 3600, end=T0 + 7200, now=T0 + 7200, rows=rows,
        files=3, skipped={"bad-json": 2, "file-corrupt": 1},
        features=feats if enough else (),
        predictions=(FeatureDrift("y", "categorical", "jensenshannon", 0.05, 0.1, False,
                                  2000, rows),) if enough else (),
        untested=(Untested("new<b>", NOT_IN_REFERENCE),), share=0.5 if enough else None,
        share_threshold=0.5, dataset_drifted=enough,
        enough_data=enough, performance=Performance(T0, T0 + 7200, 2 * rows, 40, 30, 12),
        histograms=hists if enough else (), window=state.windows[-1], verdict=verdict,
        state=state, alarm=alarm)


def test_verdict_json_has_the_contract() -> None:
    doc = verdict_json(result())
    assert doc["schema"] == SCHEMA and doc["model"] == "m" and doc["version"] == "1.2.0"
    assert doc["window"] == {"start": "2026-03-10T01:00:00Z", "end": "2026-03-10T02:00:00Z",
                             "seconds": 3600.0}
    assert doc["rows"] == 5000 and doc["skipped"] == {"bad-json": 2, "file-corrupt": 1}
    assert doc["features"][0] == {"name": EVIL, "kind": "numerical", "test": "wasserstein",
                                  "score": 0.4, "threshold": 0.1, "drifted": True,
                                  "reference_rows": 2000, "current_rows": 5000}
    assert doc["dataset_drift"] == {"share": 0.5, "threshold": 0.5, "drifted": True,
                                    "features_tested": 4, "features_drifted": 2}
    assert doc["prediction_drift"][0]["name"] == "y"
    assert doc["performance"]["accuracy"] == 0.75 and doc["performance"]["labelled"] == 40
    alarm = doc["alarm"]
    assert (alarm["status"], alarm["tripped"], alarm["dispatch"]) == ("drift", True, True)
    assert "2 of the last 3 windows" in alarm["reason"]
    assert doc["untested"] == [{"name": "new<b>", "reason": NOT_IN_REFERENCE}]
    assert json.loads(verdict_bytes(result())) == doc  # strict JSON (no NaN)
    assert verdict_bytes(result()) == verdict_bytes(result())


def test_not_enough_data_claims_nothing() -> None:
    low = result(rows=10, enough=False)
    doc = verdict_json(low)
    assert doc["dataset_drift"] is None and doc["features"] == []
    assert doc["alarm"]["status"] == "not enough data" and doc["alarm"]["score"] is None
    text = render_markdown(low)
    assert "Not enough data" in text and "No drift is claimed" in text
    assert "Dataset drift" not in text


def test_markdown_escapes_every_name() -> None:
    text = render_markdown(result())
    assert "<img" not in text and "@octocat" not in text and "![p]" not in text
    assert "new<b>" not in text and "\n# head" not in text
    assert "&lt;img src=x" in text
    assert "**Dataset drift**: 2 of 4 features drifted" in text
    assert "accuracy 0.75 on 40 labelled rows" in text and "12 of this window's" in text
    assert "bad\\-json 2" in text or "bad-json 2" in text
    rows = [line for line in text.splitlines() if line.startswith("| <code>")]
    assert all(line.count(" | ") == 5 for line in rows)  # no cell broke out of its row


def test_plots_are_deterministic_and_named_safely(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    plots, warning = draw_plots(result())
    assert warning is None
    assert list(plots) == ["drift-01-img-src-x-onerror-alert-1-octocat-p-http.png",
                           "drift-02-city.png", SCORES_PLOT]
    again, _ = draw_plots(result())
    for name, (_title, data) in plots.items():
        assert data.startswith(b"\x89PNG") and data == again[name][1]
    written = write_report(result(), tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(written.files)
    report = (tmp_path / "out" / "report.md").read_text()
    assert f"]({SCORES_PLOT})" in report and "](drift-02-city.png)" in report
    assert json.loads((tmp_path / "out" / "verdict.json").read_text())["schema"] == SCHEMA


def test_without_matplotlib_the_report_says_so(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m.startswith("matplotlib")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    written = write_report(result(), tmp_path)
    assert written.warning is not None and "gha-mlops[report]" in written.warning
    assert written.files == ("report.md", "verdict.json")
    assert "No plots" in (tmp_path / "report.md").read_text()


def test_a_cleared_alarm_says_so() -> None:
    res = result()
    state, verdict = step(res.state, Window(T0 + 4 * 3600, 0.0, 5000), res.alarm,
                          now=T0 + 4 * 3600)
    text = render_markdown(replace(res, state=state, verdict=verdict))
    assert "The alarm cleared with this window." in text
