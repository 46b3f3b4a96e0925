"""A run record as GitHub-flavoured Markdown, for a job's step summary.

:func:`render_run_summary` takes a run record (a typed
:class:`~gha_mlops.runs.record.RunRecord`, or what ``gha-mlops runs show --json`` prints) and
the workspace that holds the run's files and returns Markdown: a headline, the metrics, the
stages, the datasets, the parameter overrides and the plots. It reads only files the record
names, and uses a file's content only when its sha256 is the one recorded, so a summary never
shows another run's numbers as this run's.

CSV plots become Mermaid ``xychart-beta`` line charts (GitHub renders Mermaid in Markdown);
images cannot be embedded from disk in a step summary, so they are listed as artifacts.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from gha_mlops.gha.safe import html_text

# Re-exported: these helpers lived here first (the explicit ``as`` keeps them public).
from gha_mlops.reporting._markdown import format_duration as format_duration
from gha_mlops.reporting._markdown import format_number as format_number
from gha_mlops.reporting._markdown import format_size as format_size
from gha_mlops.reporting._markdown import markdown_table as markdown_table
from gha_mlops.reporting._markdown import md_code as md_code
from gha_mlops.reporting._markdown import md_text as md_text
from gha_mlops.reporting._markdown import table_lines
from gha_mlops.runs.record import RunRecord

STEP_SUMMARY_LIMIT = 1024 * 1024
"""GitHub's limit on one step's summary, in bytes; a larger one is not shown at all."""

SUMMARY_RESERVE = 8 * 1024
"""Bytes left free in the step summary for what may follow (the CLI's error note, later
steps' text)."""


def summary_room_bytes(path: Path) -> int:
    """The bytes a step summary ``path`` still has room for, :data:`SUMMARY_RESERVE` kept
    free (negative when it is full already; a file that cannot be read counts as empty)."""
    try:
        used = path.stat().st_size
    except OSError:
        used = 0
    return STEP_SUMMARY_LIMIT - used - SUMMARY_RESERVE


MAX_CHART_POINTS = 100
"""The most x values a chart gets; longer series are downsampled evenly."""

# (line colour, the emoji square that names it in the legend under the chart): xychart-beta
# draws no legend of its own, so the palette is fixed and the legend is written beside it.
_PALETTE = (("#2563eb", "🟦"), ("#ea580c", "🟧"), ("#16a34a", "🟩"), ("#dc2626", "🟥"),
            ("#9333ea", "🟪"), ("#92400e", "🟫"), ("#ca8a04", "🟨"), ("#111827", "⬛"))
_MAX_CHARTS_PER_FILE = 4
_CATEGORY_LABELS = 20  # more x values than this: a numeric axis when x is evenly spaced
_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp", ".bmp"})
_DELIMITERS = {".csv": ",", ".tsv": "\t"}
_INLINE_GROUP = 8  # a nested group with more values than this goes to a collapsible section
_MAX_MATRIX = 50
_NOTE_RESERVE = 1024

_RUN_MARK = {"succeeded": "✅", "failed": "❌", "interrupted": "⚠️"}
_STAGE_MARK = {"ran": "✅", "cached": "💾", "restored": "♻️", "failed": "❌", "skipped": "⏭️",
               "interrupted": "⚠️"}


@dataclass(frozen=True)
class SummaryOptions:
    """What the summary knows besides the record.

    ``repo_url`` (``https://github.com/OWNER/REPO``) links the commit; ``run_url`` (the
    workflow run's page) is where the artifacts are; ``declared_plots`` maps plot paths that
    ``mlops.yaml`` declares to their stage, so plots of stages that did not finish are listed
    too; ``limit_bytes`` caps the size of the Markdown (see :data:`STEP_SUMMARY_LIMIT`).
    """

    repo_url: str | None = None
    run_url: str | None = None
    declared_plots: Mapping[str, str] = field(default_factory=dict)
    limit_bytes: int | None = None


# --------------------------------------------------------------------------- blocks


@dataclass(frozen=True)
class _Block:
    """A piece of the summary. When the whole does not fit, a block is left out, or, if it
    has ``rows`` (of a table), cut short: ``head`` + the rows that fit + ``tail``."""

    title: str
    head: str
    rows: tuple[str, ...] = ()
    tail: str = ""

    def text(self, rows: Sequence[str] | None = None) -> str:
        body = "\n".join([self.head, *(self.rows if rows is None else rows)])
        return body + self.tail


def _table_block(title: str, before: str, header: Sequence[str],
                 rows: Iterable[Sequence[str]], align: str = "", after: str = "") -> _Block:
    lines = table_lines(header, rows, align)
    head = "\n".join([before, *lines[:2]]) if before else "\n".join(lines[:2])
    return _Block(title, head, tuple(lines[2:]), after)


def _assemble(blocks: Sequence[_Block], limit: int | None, run_id: str) -> str:
    full = "\n\n".join(b.text() for b in blocks) + "\n"
    if limit is None or len(full.encode()) <= limit:
        return full
    budget = limit - _NOTE_RESERVE
    # Whole blocks, smallest first, so that as many sections as possible stay (the headline,
    # the stages); the room left goes to cutting the tables that did not fit, in order.
    sizes = [len(b.text().encode()) + 2 for b in blocks]
    keep: set[int] = set()
    used = 0
    for i in sorted(range(len(blocks)), key=lambda i: (sizes[i], i)):
        if used + sizes[i] <= budget:
            keep.add(i)
            used += sizes[i]
    out: list[str] = []
    left_out: list[str] = []
    cut: list[str] = []
    more = "\n\n_… {} more rows left out to fit the step summary's size limit._"
    for i, block in enumerate(blocks):
        if i in keep:
            out.append(block.text())
            continue
        kept: list[str] = []
        size = len(block.head.encode()) + len(block.tail.encode()) + len(more) + 12
        for row in block.rows:
            if used + size + len(row.encode()) + 1 > budget:
                break
            kept.append(row)
            size += len(row.encode()) + 1
        if kept:
            dropped = len(block.rows) - len(kept)
            out.append("\n".join([block.head, *kept]) + more.format(dropped) + block.tail)
            used += size
            cut.append(block.title)
        else:
            left_out.append(block.title)
    parts = []
    if left_out:
        parts.append("left out: " + _titles(left_out))
    if cut:
        parts.append("cut short: " + _titles(cut))
    out.append(f"> [!NOTE]\n> This summary was shortened to {limit // 1024} KiB, as GitHub shows "
               f"at most {STEP_SUMMARY_LIMIT // 1024} KiB of a step's summary "
               f"({'; '.join(parts)}). The whole summary: "
               f"{md_code(f'gha-mlops summary {run_id} --output summary.md', in_table=False)}.")
    return "\n\n".join(out) + "\n"


def _titles(titles: Sequence[str], most: int = 8) -> str:
    shown = [md_text(t if len(t) <= 60 else t[:57] + "...") for t in titles[:most]]
    more = f" and {len(titles) - most} more" if len(titles) > most else ""
    return ", ".join(shown) + more


# --------------------------------------------------------------------------- the summary


def render_run_summary(record: RunRecord | Mapping[str, Any], workspace: Path,
                       options: SummaryOptions | None = None) -> str:
    """The Markdown summary of ``record``, whose files are looked up under ``workspace``.

    A plain JSON document is read leniently (:meth:`RunRecord.from_json`): the summary shows
    what it holds, escaped, and leaves out what does not fit. Deterministic for the same
    record and files. With ``options.limit_bytes`` the result is at most that many UTF-8
    bytes (for limits of a few KiB or more): sections that do not fit are left out or cut
    short, and a note at the end says which.
    """
    rec = RunRecord.coerce(record, lenient=True)
    opts = options or SummaryOptions()
    blocks = [_headline(rec, opts)]
    blocks += _metrics(rec, workspace)
    blocks += _stages(rec)
    blocks += _datasets(rec)
    blocks += _overrides(rec)
    blocks += _plots(rec, workspace, opts)
    return _assemble(blocks, opts.limit_bytes, rec.id)


def load_record_file(path: Path) -> dict[str, Any]:
    """A run record read from a JSON file (e.g. one downloaded from another job's artifact),
    validated by :func:`gha_mlops.runs.store.read_record` (a UsageError names the file)."""
    from gha_mlops.runs.store import read_record

    return read_record(path).to_json()


def _headline(record: RunRecord, opts: SummaryOptions) -> _Block:
    status = record.status or "unknown"
    kind = record.kind or "run"
    rows: list[list[str]] = []
    git = record.git
    if git is not None and git.commit:
        cell = md_code(git.commit[:12])
        if opts.repo_url:
            # The commit comes from the record (maybe another job's artifact): quoted, it
            # cannot end the link's destination.
            cell = f"[{cell}]({opts.repo_url}/commit/{quote(git.commit, safe='')})"
        if git.branch:
            cell += f" on {md_code(git.branch)}"
        if git.dirty:
            cell += " (with uncommitted changes)"
        rows.append(["Commit", cell])
    if record.duration_s is not None:
        rows.append(["Duration", format_duration(record.duration_s)])
    counts: dict[str, int] = {}
    for stage in record.stages:
        counts[stage.status] = counts.get(stage.status, 0) + 1
    if counts:
        rows.append(["Stages", ", ".join(f"{n} {md_text(s)}" for s, n in counts.items())])
    if record.model is not None and record.model.sha256:
        rows.append(["Model", md_code(record.model.path)])
        rows.append(["Model sha256", md_code(record.model.sha256)])
    if record.started_at:
        rows.append(["Started", md_text(record.started_at)])
    reproduces = record.options.get("reproduces")
    if reproduces:
        rows.append(["Reproduces", md_code(reproduces)])
    mark = _RUN_MARK.get(status, "❔")
    title = f"## {mark} gha-mlops {md_text(kind)} {md_text(status)}"
    return _table_block("headline", title + "\n", [md_text(kind.capitalize()),
                        md_code(record.id)], rows)


# --------------------------------------------------------------------------- metrics


def _natural(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that puts ``2`` before ``10``."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", text) if p)


def _split_metrics(values: Mapping[str, Any]) -> tuple[list[str], dict[str, list[str]]]:
    """Keys for the main table, and groups (by first key part) for collapsible sections."""
    groups: dict[str, list[str]] = {}
    for key in values:
        groups.setdefault(key.split(".", 1)[0], []).append(key)
    inline: list[str] = []
    nested: dict[str, list[str]] = {}
    for name, keys in groups.items():
        flat = all(k.count(".") <= 1 for k in keys) and len(keys) <= _INLINE_GROUP
        if flat:
            inline += keys
        else:
            nested[name] = keys
    return inline, nested


def _metrics(record: RunRecord, workspace: Path) -> list[_Block]:
    if not record.metrics:
        return []
    blocks = [_Block("metrics", "### Metrics")]
    for file, values in record.metrics.items():
        inline, nested = _split_metrics(values)
        rows = [[md_code(k), format_number(values[k])] for k in inline]
        output = record.outputs.get(file)
        data, problem = _run_file_json(workspace, file, output.sha256 if output else None)
        after = f"\n\n_{problem}_" if problem else ""
        if rows:
            blocks.append(_table_block(f"metrics of {file}", "", [md_code(file), "Value"],
                                       rows, "lr", after))
        elif after:
            blocks.append(_Block(f"metrics of {file}", f"{md_code(file, in_table=False)}"
                                 + after))
        for name, keys in nested.items():
            blocks.append(_group_block(file, name, keys, values))
        if data is not None:
            blocks += [_list_block(file, key, value) for key, value in _lists(data)]
    return blocks


def _details(summary: str) -> str:
    # The <summary> line is raw HTML (an HTML block up to the next blank line): Markdown is
    # not parsed there, so what goes in it is escaped with html_text, not md_text.
    return f"<details><summary>{summary}</summary>\n"


def _group_block(file: str, name: str, keys: Sequence[str], values: Mapping[str, Any]) -> _Block:
    summary = f"{html_text(file)}: <code>{html_text(name)}</code> ({len(keys)} values)"
    parts = [k.split(".") for k in keys]
    if all(len(p) == 3 for p in parts):
        # group.row.column, e.g. per_class.3.f1: one row per class, one column per score
        row_names = sorted({p[1] for p in parts}, key=_natural)
        col_names = list(dict.fromkeys(p[2] for p in parts))
        rows = [[md_code(r), *[format_number(values[f"{name}.{r}.{c}"])
                               if f"{name}.{r}.{c}" in values else "" for c in col_names]]
                for r in row_names]
        return _table_block(f"{name} of {file}", _details(summary),
                            [md_code(name), *[md_code(c) for c in col_names]], rows,
                            "l" + "r" * len(col_names), "\n\n</details>")
    rows = [[md_code(k), format_number(values[k])] for k in sorted(keys, key=_natural)]
    return _table_block(f"{name} of {file}", _details(summary), ["Metric", "Value"], rows,
                        "lr", "\n\n</details>")


def _lists(data: Any, prefix: str = "") -> list[tuple[str, list[Any]]]:
    """Every list in a metrics document, with its dotted key (run records leave lists out)."""
    found: list[tuple[str, list[Any]]] = []
    if isinstance(data, Mapping):
        for key, value in data.items():
            name = f"{prefix}{key}"
            if isinstance(value, list):
                found.append((name, value))
            elif isinstance(value, Mapping):
                found += _lists(value, name + ".")
    return found


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _list_block(file: str, key: str, value: list[Any]) -> _Block:
    title = f"{key} of {file}"
    rows_ok = all(isinstance(r, list) for r in value) and value
    if rows_ok and all(len(r) == len(value[0]) and all(_is_number(x) for x in r) for r in value):
        n_rows, n_cols = len(value), len(value[0])
        if n_rows <= _MAX_MATRIX and 0 < n_cols <= _MAX_MATRIX:
            summary = f"{html_text(file)}: <code>{html_text(key)}</code> ({n_rows} x {n_cols})"
            rows = [[f"**{i}**", *[format_number(x) for x in r]] for i, r in enumerate(value)]
            return _table_block(title, _details(summary),
                                [md_code(key), *[str(j) for j in range(n_cols)]], rows,
                                "l" + "r" * n_cols, "\n\n</details>")
    if value and all(_is_number(x) for x in value) and len(value) <= _MAX_MATRIX:
        summary = f"{html_text(file)}: <code>{html_text(key)}</code> ({len(value)} values)"
        rows = [[str(i), format_number(x)] for i, x in enumerate(value)]
        return _table_block(title, _details(summary), ["Index", md_code(key)], rows, "rr",
                            "\n\n</details>")
    text = json.dumps(value, ensure_ascii=False)
    if len(text) > 4000:
        text = text[:4000] + " …"
    summary = f"{html_text(file)}: <code>{html_text(key)}</code> (a list of {len(value)})"
    return _Block(title, _details(summary) + "\n" + _fenced(text, "json") + "\n\n</details>")


def _fenced(text: str, lang: str = "") -> str:
    fence = "```"
    while fence in text:
        fence += "`"
    return f"{fence}{lang}\n{text}\n{fence}"


def _run_file(workspace: Path, rel: str, digest: object) -> tuple[bytes | None, str | None]:
    """The bytes of ``workspace/rel`` when they are this run's, else why not (``None`` for
    a file the record gives no digest or no safe path). Only the workspace is read, not its
    cache: the summary describes the files a run left in its workspace."""
    from gha_mlops.runs.files import RunFileError, read_run_file

    if not digest:
        return None, None
    try:
        return read_run_file(workspace, rel, str(digest), cache=False).data, None
    except RunFileError as err:
        return None, None if err.reason == "unsafe" else err.message


def _run_file_json(workspace: Path, rel: str, digest: object) -> tuple[Any, str | None]:
    data, problem = _run_file(workspace, rel, digest)
    if data is None:
        # A missing metrics file only hides its lists; say so only when one differs.
        return None, (problem + ": lists in it, such as a confusion matrix, are not shown"
                      if problem and "not this run's" in problem else None)
    try:
        return json.loads(data), None
    except ValueError:
        return None, None


# --------------------------------------------------------------------------- stages and data


def _stages(record: RunRecord) -> list[_Block]:
    if not record.stages:
        return []
    rows = []
    for s in record.stages:
        note = s.error or ""
        if not note and s.produced_by_run and s.came_from_cache:
            note = f"outputs of run {s.produced_by_run}"
        rows.append([md_code(s.name),
                     f"{_STAGE_MARK.get(s.status, '❔')} {md_text(s.status)}",
                     f"{s.duration_s:.1f}" if s.duration_s is not None else "",
                     md_text(note)])
    return [_table_block("stages", "### Stages\n", ["Stage", "Status", "Seconds", "Note"],
                         rows, "llrl")]


def _datasets(record: RunRecord) -> list[_Block]:
    # The record types datasets only as objects: a value of another type is not shown.
    datasets = {n: ds for n, ds in (record.datasets or {}).items() if isinstance(ds, Mapping)}
    if not datasets:
        return []
    rows = []
    for name, ds in datasets.items():
        remote = ds.get("remote") or {}
        if remote:
            where = md_code(remote.get("name", "?"))
            if remote.get("url"):
                where += f" ({md_code(remote['url'])})"
        elif ds.get("source"):
            where = md_code(ds["source"])
        else:
            where = "-"
        size = ds.get("size")
        rows.append([md_code(name), md_code(str(ds.get("version") or "-")[:12]),
                     md_text(ds.get("files", "")),
                     format_size(size) if isinstance(size, int) else "", where])
    return [_table_block("datasets", "### Datasets\n",
                         ["Dataset", "Version", "Files", "Size", "Remote"], rows, "llrrl")]


def _overrides(record: RunRecord) -> list[_Block]:
    # Not record.overrides, which is a mapping only: a list of KEY=VALUE strings is shown too.
    overrides = record.params.get("overrides")
    if isinstance(overrides, list):  # KEY=VALUE strings, as given to --set
        pairs = [tuple(str(o).split("=", 1)) for o in overrides]
        items = [(p[0], p[1] if len(p) > 1 else "") for p in pairs]
    elif isinstance(overrides, Mapping):
        items = [(str(k), json.dumps(v, ensure_ascii=False)) for k, v in overrides.items()]
    else:
        return []
    if not items:
        return []
    rows = [[md_code(k), md_code(v)] for k, v in items]
    return [_table_block("parameter overrides", "### Parameter overrides\n",
                         ["Parameter", "Value"], rows)]


# --------------------------------------------------------------------------- plots


def _plot_files(record: RunRecord, declared: Mapping[str, str]
                ) -> list[tuple[str, str, str | None]]:
    """``(path, stage, sha256 or None)`` of every plot file, directories expanded."""
    found: dict[str, tuple[str, str | None]] = {}
    for path, entry in record.outputs.items():
        if entry.kind != "plot":
            continue
        stage = entry.stage or "?"
        if entry.files is not None:
            for name, digest in sorted(entry.files.items()):
                found[f"{path}/{name}"] = (stage, digest)
        else:
            found[path] = (stage, entry.sha256)
    for path, stage in declared.items():
        if path not in found and not any(p.startswith(path + "/") for p in found):
            found[path] = (stage, None)
    return [(path, stage, digest) for path, (stage, digest) in found.items()]


def _plots(record: RunRecord, workspace: Path, opts: SummaryOptions) -> list[_Block]:
    plots = _plot_files(record, opts.declared_plots)
    if not plots:
        return []
    statuses = {s.name: s.status for s in record.stages}
    blocks = [_Block("plots", "### Plots")]
    listed: list[str] = []
    artifacts = (f"[the run's artifacts]({opts.run_url})" if opts.run_url
                 else "the run's artifacts")
    for path, stage, digest in plots:
        suffix = PurePosixPath(path).suffix.lower()
        origin = f"stage {md_code(stage, in_table=False)}"
        if digest is None:
            listed.append(f"- {md_code(path, in_table=False)}: not produced by this run "
                          f"({origin} {md_text(statuses.get(stage) or 'not run')})")
            continue
        if suffix in _DELIMITERS:
            data, problem = _run_file(workspace, path, digest)
            charts, problem = (_csv_charts(data, path, _DELIMITERS[suffix])
                               if data is not None else ([], problem))
            if charts:
                blocks += [_Block(f"chart of {path}", c) for c in charts]
                continue
            listed.append(f"- {md_code(path, in_table=False)} ({origin}): not drawn, "
                          f"{md_text(problem or 'no data')}")
        elif suffix in _IMAGE_SUFFIXES:
            listed.append(f"- {md_code(path, in_table=False)}: an image ({origin}, sha256 "
                          f"{md_code(digest[:12], in_table=False)})")
        else:
            listed.append(f"- {md_code(path, in_table=False)} ({origin})")
    if listed:
        blocks.append(_Block("plot files", "Plot files not drawn here are in " + artifacts
                             + " (a step summary cannot embed images from disk):\n\n"
                             + "\n".join(listed)))
    return blocks


@dataclass(frozen=True)
class _Table:
    names: list[str]
    rows: list[list[str]]
    skipped_rows: int


def _read_table(text: str, delimiter: str) -> _Table | None:
    rows = [r for r in csv.reader(io.StringIO(text), delimiter=delimiter)
            if any(c.strip() for c in r)]
    if not rows:
        return None
    header = [c.strip() for c in rows[0]]
    if all(_number(c) is not None for c in header):  # no header row
        header = [f"column {i + 1}" for i in range(len(header))]
    else:
        rows = rows[1:]
    good = [r for r in rows if len(r) == len(header)]
    return _Table(header, good, len(rows) - len(good))


def _number(cell: str) -> float | None:
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _csv_charts(data: bytes, rel: str, delimiter: str) -> tuple[list[str], str | None]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        return [], f"unreadable ({err})"
    table = _read_table(text, delimiter)
    if table is None or not table.rows:
        return [], "it has no data rows"
    if len(table.names) < 2:
        return [], "it has a single column (x = the first column, lines = the others)"
    columns = [[r[i].strip() for r in table.rows] for i in range(len(table.names))]
    series: list[tuple[str, list[float]]] = []
    not_numeric: list[str] = []
    for name, cells in zip(table.names[1:], columns[1:], strict=True):
        values = [_number(c) for c in cells]
        if all(v is not None for v in values):
            series.append((name, [v for v in values if v is not None]))
        else:
            not_numeric.append(name)
    if not series:
        return [], "no column after the first holds only numbers"
    notes = []
    if not_numeric:
        notes.append("not drawn (cells that are not numbers): "
                     + ", ".join(md_code(n, in_table=False) for n in not_numeric))
    if table.skipped_rows:
        notes.append(f"{table.skipped_rows} rows with a different number of cells were skipped")
    chunk = len(_PALETTE)
    groups = [series[i:i + chunk] for i in range(0, len(series), chunk)]
    if len(groups) > _MAX_CHARTS_PER_FILE:
        rest = sum(len(g) for g in groups[_MAX_CHARTS_PER_FILE:])
        notes.append(f"{rest} more columns not drawn")
        groups = groups[:_MAX_CHARTS_PER_FILE]
    charts = []
    for n, group in enumerate(groups, 1):
        title = rel if len(groups) == 1 else f"{rel} ({n}/{len(groups)})"
        chart = mermaid_line_chart(title, table.names[0], columns[0], group)
        if n == len(groups) and notes:
            chart += "\n\n" + "; ".join(notes) + "."
        charts.append(chart)
    return charts, None


def _sample(n: int, most: int = MAX_CHART_POINTS) -> list[int]:
    """Indices of at most ``most`` evenly spread points of ``n``, first and last included."""
    if n <= most:
        return list(range(n))
    return sorted({round(i * (n - 1) / (most - 1)) for i in range(most)})


def mermaid_string(text: str, most: int = 80) -> str:
    """``text`` as a quoted Mermaid string: one line, no double quotes, no backticks."""
    clean = " ".join(text.replace('"', "'").replace("`", "'").split())
    if len(clean) > most:
        clean = clean[:most - 1] + "…"
    return f'"{clean}"'


def _plain_number(value: float) -> str:
    """A number Mermaid's parser reads: no exponent, at most 6 significant digits."""
    text = f"{value:.6g}"
    if "e" in text:
        text = format(Decimal(text), "f")
    return text


def _evenly_spaced(xs: Sequence[float]) -> bool:
    steps = [b - a for a, b in itertools.pairwise(xs)]
    if not steps or min(steps) <= 0:
        return False
    mean = sum(steps) / len(steps)
    return all(abs(s - mean) <= 0.01 * mean for s in steps)


def mermaid_line_chart(title: str, x_name: str, x_values: Sequence[str],
                       series: Sequence[tuple[str, Sequence[float]]]) -> str:
    """A fenced Mermaid ``xychart-beta`` with one line per series (at most 8), downsampled
    to :data:`MAX_CHART_POINTS` points, and a legend under it naming each line's colour."""
    if len(series) > len(_PALETTE):
        raise ValueError(f"at most {len(_PALETTE)} lines per chart")
    keep = _sample(len(x_values))
    xs = [x_values[i] for i in keep]
    numeric = [_number(x) for x in xs]
    palette = ", ".join(color for color, _ in _PALETTE[:len(series)])
    lines = [
        '%%{init: {"themeVariables": {"xyChart": {"plotColorPalette": "' + palette + '"}}}}%%',
        "xychart-beta",
        f"    title {mermaid_string(title)}",
    ]
    xs_num = [v for v in numeric if v is not None]
    if (len(xs) > _CATEGORY_LABELS and len(xs_num) == len(xs)
            and _evenly_spaced([_number(x) or 0.0 for x in x_values])):
        lines.append(f"    x-axis {mermaid_string(x_name)} {_plain_number(xs_num[0])} --> "
                     f"{_plain_number(xs_num[-1])}")
    else:
        labels = ", ".join(mermaid_string(x, 24) for x in xs)
        lines.append(f"    x-axis {mermaid_string(x_name)} [{labels}]")
    if len(series) == 1:
        lines.append(f"    y-axis {mermaid_string(series[0][0])}")
    for _name, values in series:
        lines.append("    line [" + ", ".join(_plain_number(values[i]) for i in keep) + "]")
    marks = [mark for _, mark in _PALETTE[:len(series)]]
    legend = " · ".join(f"{mark} {md_code(name, in_table=False)}"
                        for (name, _), mark in zip(series, marks, strict=True))
    sampled = (f" ({len(keep)} of {len(x_values)} points)" if len(keep) < len(x_values)
               else "")
    return f"{_fenced(chr(10).join(lines), 'mermaid')}\n\n{legend}{sampled}"
