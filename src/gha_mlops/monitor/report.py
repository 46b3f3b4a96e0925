"""What ``monitor check`` says: the verdict as JSON (``gha-mlops.monitor-verdict/1``), the
report as Markdown (the step summary and ``report.md``), and its plots as PNG bytes.

Rendering is pure: a :class:`~gha_mlops.monitor.check.CheckResult` becomes text or bytes,
the same result always the same bytes. Feature names, categories and reasons are user data:
every one is escaped for Markdown (:mod:`gha_mlops.gha.safe`) and for plot titles, and a
plot's file name never comes from a feature name. Plots need matplotlib (the ``report``
extra); without it the report goes without plots and says so (:func:`draw_plots` returns
the warning), as the run reports do.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gha_mlops._fs import atomic_write_bytes, atomic_write_text
from gha_mlops.errors import MissingExtraError
from gha_mlops.gha.safe import markdown_name, markdown_text

if TYPE_CHECKING:
    from gha_mlops.monitor.check import CheckResult, Histogram
    from gha_mlops.monitor.drift import FeatureDrift

SCHEMA = "gha-mlops.monitor-verdict/1"
MAX_PLOTS = 12  # drifted features drawn; the rest are named in the report
MAX_TABLE = 200  # feature rows in the Markdown table (the JSON has them all)
SCORES_PLOT = "alarm-scores.png"


def iso(t: float) -> str:
    """Unix seconds as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _num(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _test_json(f: FeatureDrift) -> dict[str, Any]:
    return {"name": f.name, "kind": f.kind, "test": f.test, "score": _num(f.value),
            "threshold": f.threshold, "drifted": f.drifted,
            "reference_rows": f.reference_rows, "current_rows": f.current_rows}


def verdict_json(result: CheckResult) -> dict[str, Any]:
    """The verdict as a JSON document (``verdict.json``, ``--json``)."""
    v, a, perf = result.verdict, result.alarm, result.performance
    return {
        "schema": SCHEMA,
        "model": result.model,
        "version": result.version,
        "window": {"start": iso(result.start), "end": iso(result.end),
                   "seconds": result.end - result.start},
        "checked_at": iso(result.now),
        "rows": result.rows,
        "files": result.files,
        "skipped": dict(result.skipped),
        "enough_data": result.enough_data,
        "features": [_test_json(f) for f in result.features],
        "untested": [{"name": u.name, "reason": u.reason} for u in result.untested],
        "dataset_drift": None if result.share is None else {
            "share": result.share, "threshold": result.share_threshold,
            "drifted": result.dataset_drifted, "features_tested": len(result.features),
            "features_drifted": sum(f.drifted for f in result.features)},
        "prediction_drift": [_test_json(f) for f in result.predictions],
        "performance": None if perf is None else {
            "start": iso(perf.start), "end": iso(perf.end), "rows": perf.rows,
            "labelled": perf.labelled, "correct": perf.correct, "accuracy": perf.accuracy,
            "window_labelled": perf.window_labelled},
        "alarm": {"status": v.status, "tripped": v.tripped, "newly_tripped": v.newly_tripped,
                  "cleared": v.cleared, "dispatch": v.dispatch, "reason": v.reason,
                  "score": result.window.score if result.enough_data else None,
                  "high": a.high, "low": a.low, "k": a.k, "n": a.n, "m": a.m,
                  "min_samples": a.min_samples, "cooldown_s": a.cooldown_s},
    }


def verdict_bytes(result: CheckResult) -> bytes:
    """:func:`verdict_json` as canonical bytes (two-space indent, a final newline)."""
    return (json.dumps(verdict_json(result), indent=2, allow_nan=False) + "\n").encode()


# ----------------------------------------------------------------------------- Markdown


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4g}"


def _tests_table(tests: tuple[FeatureDrift, ...]) -> list[str]:
    lines = ["| feature | kind | test | score | threshold | drift |",
             "| --- | --- | --- | ---: | ---: | --- |"]
    ordered = sorted(tests, key=lambda f: not f.drifted)  # drifted first, else as profiled
    for f in ordered[:MAX_TABLE]:
        lines.append(f"| {markdown_name(f.name)} | {f.kind} | {f.test} | {_fmt(f.value)} | "
                     f"{_fmt(f.threshold)} | {'**drift**' if f.drifted else 'no'} |")
    if len(ordered) > MAX_TABLE:
        lines.append(f"| ... {len(ordered) - MAX_TABLE} more in verdict.json | | | | | |")
    return lines


def render_markdown(result: CheckResult, *, plots: Mapping[str, str] | None = None,
                    plots_note: str | None = None) -> str:
    """The report as Markdown. ``plots`` maps a PNG file name (beside ``report.md``) to its
    title: they are linked as images; ``plots_note`` says why there are none (no
    matplotlib, or the step summary, which cannot show local files)."""
    v = result.verdict
    lines = [f"### Drift check of {markdown_name(result.model)} {markdown_name(result.version)}"
             f": {v.status}", "",
             f"Window {iso(result.start)} to {iso(result.end)}: {result.rows} rows from "
             f"{result.files} files.", "",
             f"**Alarm**: {v.status}{' (tripped)' if v.tripped else ''}; "
             f"{markdown_text(v.reason)}."]
    if v.newly_tripped:
        lines.append("The alarm tripped with this window.")
    if v.cleared:
        lines.append("The alarm cleared with this window.")
    if v.dispatch:
        lines.append("A retraining is to be dispatched (`--act` does it and records it).")
    lines.append("")
    if not result.enough_data:
        lines += [f"Not enough data: {result.rows} rows, {result.alarm.min_samples} needed "
                  "for a verdict, or no feature left to test. No drift is claimed.", ""]
    else:
        drifted = sum(f.drifted for f in result.features)
        lines += [f"**Dataset drift**: {drifted} of {len(result.features)} features drifted "
                  f"(share {_fmt(result.share)}; the dataset drifts at "
                  f"{_fmt(result.share_threshold)}): "
                  + ("**drifted**." if result.dataset_drifted else "not drifted."), "",
                  *_tests_table(result.features), ""]
    if result.predictions:
        lines += ["**Prediction drift**", "", *_tests_table(result.predictions), ""]
    lines += _performance_lines(result)
    if result.untested:
        lines += ["**Not tested**: " + "; ".join(
            f"{markdown_name(u.name)} ({u.reason})" for u in result.untested[:MAX_TABLE])
            + (f"; ... {len(result.untested) - MAX_TABLE} more" if len(result.untested)
               > MAX_TABLE else ""), ""]
    if result.skipped:
        lines += ["**Skipped** (by the log reader): " + ", ".join(
            f"{markdown_text(k)} {n}" for k, n in result.skipped.items())
            + " (`file-` reasons count files, the others lines).", ""]
    for name, title in (plots or {}).items():
        lines += [f"![{markdown_text(title)}]({name})", ""]
    if plots_note:
        lines += [markdown_text(plots_note), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _performance_lines(result: CheckResult) -> list[str]:
    perf = result.performance
    if perf is None:
        return []
    if not perf.labelled:
        return [f"**Performance**: no labelled row yet among the {perf.rows} rows from "
                f"{iso(perf.start)} to {iso(perf.end)} (labels are joined as they arrive; "
                "the next check counts them).", ""]
    return [f"**Performance**: accuracy {_fmt(perf.accuracy)} on {perf.labelled} labelled "
            f"rows of the {perf.rows} from {iso(perf.start)} to {iso(perf.end)} (this "
            f"window and the one before it); {perf.window_labelled} of this window's "
            f"{result.rows} rows have a label so far.", ""]


# -------------------------------------------------------------------------------- plots


def histogram_png(hist: Histogram) -> bytes:
    """Reference against current shares of one drifted column, as PNG bytes."""
    from gha_mlops.reporting.plots import shares_png

    return shares_png(f"{hist.name}: reference vs current", edges=hist.edges,
                      labels=hist.labels, reference=hist.reference, current=hist.current)


def scores_png(result: CheckResult) -> bytes:
    """The drift score of the alarm's windows (oldest first) with the high and low lines;
    windows with too few samples are hollow markers at 0."""
    from gha_mlops.reporting.plots import scores_png as draw

    windows = result.state.windows
    return draw(f"{result.model} {result.version}: drift alarm",
                hours=[(w.end - result.end) / 3600 for w in windows],  # before this window
                scores=[w.score for w in windows],
                enough=[w.samples >= result.alarm.min_samples for w in windows],
                high=result.alarm.high, low=result.alarm.low,
                xlabel=f"hours before {iso(result.end)}")


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")[:40].strip("-") or "feature"


def draw_plots(result: CheckResult) -> tuple[dict[str, tuple[str, bytes]], str | None]:
    """The report's plots, file name -> (title, PNG), and a warning: without matplotlib no
    plots, and the warning says what to install. File names are ``drift-NN-<slug>.png``
    (NN the place among the drifted features) and :data:`SCORES_PLOT`."""
    plots: dict[str, tuple[str, bytes]] = {}
    try:
        for i, hist in enumerate(result.histograms[:MAX_PLOTS]):
            plots[f"drift-{i + 1:02d}-{_slug(hist.name)}.png"] = (
                f"{hist.name}: reference vs current", histogram_png(hist))
        if result.state.windows:
            plots[SCORES_PLOT] = ("drift score of the alarm's windows", scores_png(result))
    except MissingExtraError as err:
        return {}, f"No plots: {err.message} ({err.hint})."
    return plots, None


@dataclass(frozen=True)
class Written:
    """What :func:`write_report` wrote: the folder, its files, the plots' warning."""

    folder: Path
    files: tuple[str, ...]
    warning: str | None


def write_report(result: CheckResult, folder: Path) -> Written:
    """Write ``report.md``, ``verdict.json`` and the plots into ``folder`` (created), each
    file atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    plots, warning = draw_plots(result)
    for name, (_title, data) in plots.items():
        atomic_write_bytes(folder / name, data)
    atomic_write_bytes(folder / "verdict.json", verdict_bytes(result))
    atomic_write_text(folder / "report.md", render_markdown(
        result, plots={n: t for n, (t, _) in plots.items()}, plots_note=warning))
    return Written(folder, ("report.md", "verdict.json", *plots), warning)


__all__ = ["SCHEMA", "Written", "draw_plots", "histogram_png", "iso", "render_markdown",
           "scores_png", "verdict_bytes", "verdict_json", "write_report"]
