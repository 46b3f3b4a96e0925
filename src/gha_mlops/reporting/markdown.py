"""A :class:`Comparison` and its gate :class:`Verdict` as a GitHub-flavoured Markdown report,
the body of a sticky pull-request comment.

:func:`render` is pure. The report starts with a hidden marker,
``<!-- gha-mlops-report:{report_id} -->``, by which a later run finds the comment to update,
then the verdict, the gates, the metrics, the model, the plots (images the caller has put
somewhere: a mapping of title -> URL or relative path) and, collapsed, the parameters, data
versions and stages of both runs.

Every name and value that comes from a run (metric and parameter names, values, stage names)
is escaped with :func:`md_escape`, so HTML or Markdown in them is shown, never rendered.

GitHub refuses comments over 65,536 characters: with ``limit``, sections are cut short or left
out, least valuable first (stages, data, parameters, plots, the unchanged metrics...), and a
note says so, linking ``full_report_url`` when given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from gha_mlops.reporting._markdown import (
    format_number,
    format_size,
    md_escape,
    md_name,
    table_lines,
)
from gha_mlops.reporting.compare import Change, Comparison, MetricDiff, Side, ValueChange
from gha_mlops.reporting.gates import GateResult, Verdict
from gha_mlops.reporting.outcome import outcome

COMMENT_LIMIT = 65536
"""The most characters GitHub accepts in an issue or pull-request comment."""

MARKER_PREFIX = "gha-mlops-report:"

_CHANGE_MARK: dict[Change, str] = {
    "better": "🟢 better", "worse": "🔴 worse", "same": "⚪ same", "added": "🆕 added",
    "removed": "🚫 removed", "incomparable": "⚠️ n/a",
}
_GATE_MARK = {"pass": "✅ pass", "fail": "❌ fail", "skipped": "⏭️ skipped"}
_NOTE_RESERVE = 700


def sanitize_report_id(report_id: str) -> str:
    """``report_id`` reduced to letters, digits, ``.``, ``_`` and single ``-`` (at most 100
    characters), so it can sit inside an HTML comment; ``default`` when nothing is left."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", report_id)
    clean = re.sub(r"-{2,}", "-", clean).strip("-")[:100]
    return clean or "default"


def marker(report_id: str) -> str:
    """The hidden HTML comment that identifies a report's comment."""
    return f"<!-- {MARKER_PREFIX}{sanitize_report_id(report_id)} -->"


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class _Section:
    """A part of the report. ``value`` orders trimming (lowest is cut first); ``rows`` of a
    table may be cut short, leaving ``head`` + the first rows + a count + ``tail``."""

    title: str
    value: int
    head: str
    rows: tuple[str, ...] = ()
    tail: str = ""
    required: bool = False

    def text(self, keep: int | None = None) -> str:
        rows = self.rows if keep is None else self.rows[:keep]
        body = "\n".join([self.head, *rows])
        if keep is not None and keep < len(self.rows):
            body += (f"\n\n_… {len(self.rows) - keep} more rows left out to fit GitHub's "
                     "comment size limit._")
        return body + self.tail


def _table(title: str, value: int, before: str, header: Sequence[str],
           rows: Sequence[Sequence[str]], align: str = "", after: str = "") -> _Section:
    lines = table_lines(header, rows, align)
    head = "\n".join([before, *lines[:2]]) if before else "\n".join(lines[:2])
    return _Section(title, value, head, tuple(lines[2:]), after)


def render(comparison: Comparison, verdict: Verdict, *, report_id: str = "default",
           images: Mapping[str, str] | None = None, limit: int | None = COMMENT_LIMIT,
           full_report_url: str | None = None) -> str:
    """The report as Markdown, at most ``limit`` characters (``None``: no limit).

    ``images`` maps a title to a URL or a path relative to where the Markdown will be read;
    ``full_report_url`` is linked from the note that says the report was shortened.
    """
    sections = [
        _Section("verdict", 100, "\n".join(
            [marker(report_id), _verdict_line(verdict), "", _runs_line(comparison),
             *_warnings(comparison)]), required=True),
        *_gates(verdict),
        *_metrics(comparison),
        *_model(comparison),
        *_images(images or {}),
        *_params(comparison),
        *_data(comparison),
        *_stages(comparison),
    ]
    return _assemble(sections, limit, full_report_url)


def _verdict_line(verdict: Verdict) -> str:
    return outcome(verdict).title


def _run_ref(side: Side) -> str:
    ref = f"run {md_name(side.id)}"
    if side.commit:
        ref += f" at {md_name(side.commit[:12])}"
        if side.branch:
            ref += f" on {md_name(side.branch)}"
        if side.dirty:
            ref += " (with uncommitted changes)"
    return ref


def _runs_line(c: Comparison) -> str:
    return f"Head {_run_ref(c.head)} against baseline {_run_ref(c.base)}."


def _warnings(c: Comparison) -> list[str]:
    lines: list[str] = []
    for label, side in (("head", c.head), ("baseline", c.base)):
        if side.status != "succeeded":
            lines.append(f"> [!WARNING]\n> The {label} run {md_escape(side.status)}: its "
                         "metrics may be missing or incomplete.")
    if c.notes:
        lines.append("> [!NOTE]\n> Files not used (the record's numbers are shown; the "
                     "matrices and plots in them are not):\n"
                     + "\n".join(f"> - {md_escape(n)}" for n in c.notes))
    return ["", *lines] if lines else []


def _num(value: float | None) -> str:
    return "—" if value is None else md_escape(format_number(value))


def _signed(value: float | None) -> str:
    if value is None:
        return ""
    return ("+" if value > 0 else "") + md_escape(format_number(value))


def _percent(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value * 100:+.2f}%"


def _gates(verdict: Verdict) -> list[_Section]:
    if not verdict.results:
        return []
    # Failed gates first: they are what the reader must see, also when rows are cut.
    ordered = sorted(verdict.results, key=lambda r: r.passed)
    rows = [_gate_row(r) for r in ordered]
    return [_table("gates", 90, "### Gates\n", ["Gate", "Result", "Baseline", "Head", "Rules",
                                                "Why"], rows, "llrrll")]


def _gate_row(r: GateResult) -> list[str]:
    m = r.metric
    return [md_name(r.gate.metric), _GATE_MARK[r.status], _num(m.base if m else None),
            _num(m.head if m else None), md_escape(r.rules),
            "<br>".join(md_escape(x) for x in r.reasons)]


def _metric_row(m: MetricDiff) -> list[str]:
    return [md_name(m.name), _num(m.base), _num(m.head), _signed(m.delta), _percent(m.relative),
            _CHANGE_MARK[m.change]]


def _metrics(c: Comparison) -> list[_Section]:
    if not c.metrics:
        return [_Section("metrics", 80, "### Metrics\n\nNeither run recorded any metrics.")]
    changed = [m for m in c.metrics if m.change != "same"]
    same = [m for m in c.metrics if m.change == "same"]
    header = ["Metric", "Baseline", "Head", "Δ", "Δ %", ""]
    sections = [_table("metrics", 80, "### Metrics\n", header,
                       [_metric_row(m) for m in changed] if changed else [["_no changes_"]],
                       "lrrrrl")]
    if same:
        sections.append(_table("unchanged metrics", 40, f"<details><summary>{len(same)} "
                               "unchanged metrics</summary>\n", header,
                               [_metric_row(m) for m in same], "lrrrrl", "\n\n</details>"))
    return sections


def _model(c: Comparison) -> list[_Section]:
    b, h = c.base, c.head
    rows: list[list[str]] = []
    if b.model_sha256 or h.model_sha256:
        rows.append(["Path", md_name(b.model_path or "—"), md_name(h.model_path or "—")])
        rows.append(["sha256", md_name((b.model_sha256 or "—")[:16]),
                     md_name((h.model_sha256 or "—")[:16])
                     + (" (unchanged)" if not c.model_changed else "")])
    if b.model_size is not None or h.model_size is not None:
        rows.append(["Size", _size(b.model_size), _size(h.model_size)])
    latency = c.latency
    if latency is not None:
        rows.append([f"Latency ({md_name(latency.key)})", _num(latency.base),
                     _num(latency.head) + f" {_CHANGE_MARK[latency.change]}"])
    if not rows:
        return []
    return [_table("model", 70, "### Model\n", ["", "Baseline", "Head"], rows, "lll")]


def _size(nbytes: int | None) -> str:
    return "—" if nbytes is None else format_size(nbytes)


def _image_url(url: str) -> str:
    return quote(url, safe=":/?#@!$&'*+,;=%~")


def _images(images: Mapping[str, str]) -> list[_Section]:
    if not images:
        return []
    parts = [f"**{md_escape(title)}**\n\n![{md_escape(title)}]({_image_url(url)})"
             for title, url in images.items()]
    return [_Section("plots", 50, "### Plots\n\n" + "\n\n".join(parts))]


def _value(value: Any, present: bool) -> str:
    if not present:
        return "—"
    text = format_number(value) if isinstance(value, (int, float)) else _json(value)
    return md_name(text if len(text) <= 200 else text[:199] + "…")


def _json(value: Any) -> str:
    import json

    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        return str(value)


def _change_rows(changes: Sequence[ValueChange]) -> list[list[str]]:
    return [[md_name(ch.name), _value(ch.base, ch.in_base), _value(ch.head, ch.in_head)]
            for ch in changes]


def _details(title: str, body_title: str, value: int, header: Sequence[str],
             rows: list[list[str]], before: str = "") -> _Section:
    return _table(title, value, f"<details><summary>{body_title}</summary>\n\n{before}",
                  header, rows, "l" * len(header), "\n\n</details>")


def _params(c: Comparison) -> list[_Section]:
    sections: list[_Section] = []
    if c.params:
        n = len(c.params)
        sections.append(_details("parameters", f"Parameters: {n} changed", 30,
                                 ["Parameter", "Baseline", "Head"], _change_rows(c.params)))
    base_over, head_over = dict(c.base.overrides), dict(c.head.overrides)
    if base_over or head_over:
        keys = [*head_over, *(k for k in base_over if k not in head_over)]
        rows = [[md_name(k), _value(base_over.get(k), k in base_over),
                 _value(head_over.get(k), k in head_over)] for k in keys]
        sections.append(_details("overrides", "Parameter overrides (<code>--set</code>)", 29,
                                 ["Parameter", "Baseline", "Head"], rows))
    return sections


def _data(c: Comparison) -> list[_Section]:
    sections: list[_Section] = []
    if c.datasets:
        sections.append(_details("datasets", f"Data versions: {len(c.datasets)} changed", 25,
                                 ["Dataset", "Baseline", "Head"], _version_rows(c.datasets)))
    if c.inputs:
        sections.append(_details("inputs", f"Inputs (data and code): {len(c.inputs)} changed",
                                 15, ["File", "Baseline sha256", "Head sha256"],
                                 _version_rows(c.inputs)))
    return sections


def _version_rows(changes: Sequence[ValueChange]) -> list[list[str]]:
    def short(value: Any, present: bool) -> str:
        return md_name(str(value)[:12]) if present and value is not None else "—"

    return [[md_name(ch.name), short(ch.base, ch.in_base), short(ch.head, ch.in_head)]
            for ch in changes]


def _stages(c: Comparison) -> list[_Section]:
    def cell(side: Side, name: str) -> str:
        if name in side.ran:
            return "✅ ran"
        if name in side.cached:
            return "💾 cached"
        status = dict(side.other).get(name)
        return md_escape(status) if status else "—"

    names: list[str] = []
    for side in (c.head, c.base):
        for name in [*side.ran, *side.cached, *(n for n, _ in side.other)]:
            if name not in names:
                names.append(name)
    if not names:
        return []
    summary = (f"Stages: head ran {len(c.head.ran)}, reused {len(c.head.cached)}; "
               f"baseline ran {len(c.base.ran)}, reused {len(c.base.cached)}")
    rows = [[md_name(n), cell(c.base, n), cell(c.head, n)] for n in names]
    return [_details("stages", summary, 10, ["Stage", "Baseline", "Head"], rows)]


# --------------------------------------------------------------------------- the size limit


def _rows_that_fit(section: _Section, target: int) -> int:
    """The most rows (fewer than all) with which ``section`` is at most ``target`` long."""
    if len(section.rows) < 2:
        return 0
    size = len(section.text(0))  # head, tail and the "rows left out" line
    keep = 0
    for row in section.rows[:-1]:
        size += len(row) + 1
        if size > target:
            break
        keep += 1
    return keep


def _assemble(sections: Sequence[_Section], limit: int | None,
              full_report_url: str | None) -> str:
    def join(texts: Sequence[str]) -> str:
        return "\n\n".join(t for t in texts if t) + "\n"

    texts = [s.text() for s in sections]
    full = join(texts)
    if limit is None or len(full) <= limit:
        return full
    budget = limit - _NOTE_RESERVE
    left_out: list[str] = []
    cut: list[str] = []
    for i in sorted(range(len(sections)), key=lambda i: (sections[i].value, -i)):
        size = len(join(texts))
        if size <= budget:
            break
        section = sections[i]
        if section.required:
            continue
        excess = size - budget
        target = len(texts[i]) - excess
        keep = _rows_that_fit(section, target)
        if keep > 0:
            texts[i] = section.text(keep)
            cut.append(section.title)
        else:
            texts[i] = ""
            left_out.append(section.title)
    parts = []
    if left_out:
        parts.append("left out: " + ", ".join(left_out))
    if cut:
        parts.append("cut short: " + ", ".join(cut))
    where = (f" [The full report]({_image_url(full_report_url)})." if full_report_url
             else " The full report is in the step summary and the job's artifacts.")
    note = (f"> [!NOTE]\n> This report was shortened to fit GitHub's {limit:,}-character "
            f"comment limit ({'; '.join(parts) or 'cut'}).{where}")
    text = join([*texts, note])
    if len(text) > limit:  # only for limits too small to hold the required sections
        text = text[:max(limit - len(note) - 3, 0)] + "\n\n" + note + "\n"
        text = text[:limit]
    return text
