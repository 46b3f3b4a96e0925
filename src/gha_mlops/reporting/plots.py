"""The report's charts as PNG bytes: metric bars, training curves, confusion matrices.

matplotlib is an optional dependency (the ``report`` extra; ``torch`` has it too), imported only when a chart is
drawn; without it :func:`~gha_mlops.errors.missing_extra` names the install. Charts are drawn
through the object-oriented API on a fresh :class:`matplotlib.figure.Figure` with the Agg
canvas, never ``pyplot``, so nothing is shared between calls or threads. The PNG carries no
``Software`` text or timestamp: the same data gives the same bytes (with the same matplotlib
and fonts).
"""

from __future__ import annotations

import csv
import functools
import io
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gha_mlops.errors import missing_extra
from gha_mlops.gha.safe import plot_title
from gha_mlops.reporting.metric_order import headline_order

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from gha_mlops.reporting.compare import Comparison, MetricDiff

BASE_COLOR = "#94a3b8"
HEAD_COLOR = "#2563eb"
MAX_BARS = 12
"""The most metrics in one bar chart (one small panel each)."""
MAX_CURVES = 6
_MAX_MATRIX = 40
_ANNOTATE_CELLS = 15
_DPI = 100


def _figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise missing_extra("matplotlib", "report") from err
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _grid(count: int, max_cols: int, width: float, height: float,
          title: str) -> tuple[Figure, list[Any]]:
    """A titled figure with ``count`` panels of ``width`` x ``height`` inches, at most
    ``max_cols`` a row; the panels to draw on (spare cells of the last row are hidden)."""
    cols = min(count, max_cols)
    rows = math.ceil(count / cols)
    fig = _figure(width * cols, height * rows + 0.4)
    fig.suptitle(label(title, 80))
    axes = list(fig.subplots(rows, cols, squeeze=False).flat)
    for ax in axes[count:]:
        ax.set_axis_off()
    return fig, axes[:count]


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    return buf.getvalue()


def label(text: str, most: int = 60) -> str:
    """``text`` safe as a matplotlib label (see :func:`gha_mlops.gha.safe.plot_title`): ``$``
    escaped (it would start mathtext), controls and glyphs outside Latin replaced by ``?``
    (the bundled font lacks them and would warn), one line, at most ``most`` characters."""
    return plot_title(text, most)


def _value_text(value: float | None) -> str:
    if value is None:
        return "missing"
    return f"{value:.4g}" if math.isfinite(value) else str(value)


# --------------------------------------------------------------------------- metric bars


def metric_bars(metrics: Sequence[tuple[str, float | None, float | None]],
                title: str = "Metrics: baseline vs head") -> bytes:
    """:func:`metric_bars_figure` as PNG bytes."""
    return _png(metric_bars_figure(metrics, title))


def metric_bars_figure(metrics: Sequence[tuple[str, float | None, float | None]],
                       title: str = "Metrics: baseline vs head") -> Figure:
    """One small panel per metric ``(name, baseline, head)``, each with a baseline and a head
    bar, labelled with the values; a missing or non-finite value has no bar and is written
    out (``missing``, ``nan``, ``inf``). At most :data:`MAX_BARS` panels, the first ones
    (put the headline metrics first): when there are more, a caption under the panels says
    how many of how many are shown."""
    items = list(metrics)[:MAX_BARS]
    if not items:
        raise ValueError("no metrics to draw")
    fig, panels = _grid(len(items), 4, 3.0, 2.6, title)
    for ax, (name, base, head) in zip(panels, items, strict=True):
        values = [base, head]
        heights = [v if v is not None and math.isfinite(v) else 0.0 for v in values]
        bars = ax.bar([0, 1], heights, color=[BASE_COLOR, HEAD_COLOR], width=0.6)
        ax.set_xticks([0, 1], ["baseline", "head"])
        ax.set_title(label(name, 40), fontsize=9)
        for bar, value in zip(bars, values, strict=True):
            ax.annotate(_value_text(value), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8, xytext=(0, 2),
                        textcoords="offset points")
        ax.margins(y=0.2)
        ax.tick_params(labelsize=8)
    if len(metrics) > len(items):
        fig.supxlabel(bars_caption(len(items), len(metrics)), fontsize=9)
    return fig


def bars_caption(shown: int, total: int) -> str:
    """What the metric chart leaves out, e.g. "12 of 16 changed metrics shown; the rest are
    in the metrics table"."""
    return f"{shown} of {total} changed metrics shown; the rest are in the metrics table"


# --------------------------------------------------------------------------- curves


@dataclass(frozen=True)
class CurveTable:
    """A CSV plot file: the first column is x, each other all-numeric column a series."""

    x_name: str
    x: tuple[float, ...]
    series: Mapping[str, tuple[float, ...]]


def parse_curves(text: str) -> CurveTable | None:
    """``text`` (CSV or TSV, with or without a header row) as a :class:`CurveTable`, or
    None when it has no numeric x column and no numeric series. Rows with a different
    number of cells, or an x that is not a number, are skipped; NaN cells stay NaN."""
    sample = text[:4096]
    delimiter = "\t" if sample.count("\t") > sample.count(",") else ","
    rows = [r for r in csv.reader(io.StringIO(text), delimiter=delimiter)
            if any(c.strip() for c in r)]
    if not rows:
        return None
    header = [c.strip() for c in rows[0]]
    if all(_float(c) is not None for c in header):
        header = [f"column {i + 1}" for i in range(len(header))]
    else:
        rows = rows[1:]
    rows = [r for r in rows if len(r) == len(header) and _float(r[0]) is not None]
    if len(header) < 2 or not rows:
        return None
    xs = tuple(float(r[0]) for r in rows)
    series: dict[str, tuple[float, ...]] = {}
    for i, name in enumerate(header[1:], 1):
        values = [_float(r[i]) for r in rows]
        if all(v is not None for v in values):
            series[name or f"column {i + 1}"] = tuple(v for v in values if v is not None)
    return CurveTable(header[0] or "x", xs, series) if series else None


def _float(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def training_curves(title: str, base: CurveTable | None, head: CurveTable | None) -> bytes:
    """One panel per series (at most :data:`MAX_CURVES`), the baseline dashed and grey, the
    head solid and blue, over the first column."""
    tables = [t for t in (base, head) if t is not None]
    if not tables:
        raise ValueError("no curves to draw")
    names = list(dict.fromkeys(n for t in (head, base) if t for n in t.series))[:MAX_CURVES]
    fig, panels = _grid(len(names), 3, 4.2, 3.0, title)
    for ax, name in zip(panels, names, strict=True):
        _curve(ax, base, name, "baseline", BASE_COLOR, "--")
        _curve(ax, head, name, "head", HEAD_COLOR, "-")
        ax.set_title(label(name, 40), fontsize=9)
        ax.set_xlabel(label(tables[0].x_name, 30), fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return _png(fig)


def _curve(ax: Axes, table: CurveTable | None, name: str, side: str, color: str,
           style: str) -> None:
    if table is None or name not in table.series:
        return
    ax.plot(table.x, table.series[name], style, color=color, label=side, linewidth=1.5)


# --------------------------------------------------------------------------- matrices


def confusion_matrices(name: str, base: Sequence[Sequence[float]] | None,
                       head: Sequence[Sequence[float]] | None) -> bytes:
    """:func:`confusion_figure` as PNG bytes."""
    return _png(confusion_figure(name, base, head))


def confusion_figure(name: str, base: Sequence[Sequence[float]] | None,
                     head: Sequence[Sequence[float]] | None) -> Figure:
    """The baseline's and the head's matrix side by side (a missing one is an empty panel),
    cells annotated when the matrix is small. Rows are true classes, columns predictions;
    every class is labelled by its index, on its own row and column (matplotlib's automatic
    ticks would label every other class, or fall between classes on a small matrix)."""
    panels = [("baseline", base), ("head", head)]
    if base is None and head is None:
        raise ValueError("no matrix to draw")
    fig = _figure(8.4, 4.2)
    fig.suptitle(label(name, 80))
    axes = fig.subplots(1, 2, squeeze=False)
    for ax, (side, matrix) in zip(axes.flat, panels, strict=True):
        ax.set_title(side, fontsize=9)
        if matrix is None or not matrix or len(matrix) > _MAX_MATRIX:
            ax.set_axis_off()
            ax.text(0.5, 0.5, "no matrix" if not matrix else "too large to draw",
                    ha="center", va="center", transform=ax.transAxes)
            continue
        data = [[x if math.isfinite(x) else math.nan for x in row] for row in matrix]
        ax.imshow(data, cmap="Blues", interpolation="nearest")
        _class_ticks(ax, len(data), len(data[0]))
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        if len(data) <= _ANNOTATE_CELLS and len(data[0]) <= _ANNOTATE_CELLS:
            finite = [x for row in data for x in row if math.isfinite(x)]
            middle = (max(finite) + min(finite)) / 2 if finite else 0.0
            for r, row in enumerate(data):
                for c, x in enumerate(row):
                    ax.text(c, r, f"{x:.3g}", ha="center", va="center", fontsize=7,
                            color="white" if math.isfinite(x) and x > middle else "black")
    return fig


def _class_ticks(ax: Axes, rows: int, cols: int) -> None:
    """A tick and a label for every row and column, at the integer cell centres."""
    ax.set_xticks(range(cols), [str(c) for c in range(cols)])
    ax.set_yticks(range(rows), [str(r) for r in range(rows)])
    # Up to 40 classes in a 4-inch panel: smaller labels so that neighbours do not overlap.
    ax.tick_params(labelsize=7 if max(rows, cols) <= 20 else 5, length=2)


# --------------------------------------------------------------------------- a report's plots


# -- monitoring's drift report (gha_mlops.monitor.report)

_REF_COLOR = "#94a3b8"
_CUR_COLOR = "#2563eb"


def shares_png(title: str, *, edges: Sequence[float], labels: Sequence[str],
               reference: Sequence[float], current: Sequence[float]) -> bytes:
    """Reference against current shares of one column: steps on the bin ``edges`` of a
    numerical column, or bars over the ``labels`` of a categorical one (``edges`` empty)."""
    fig = _figure(6.0, 3.2)
    ax = fig.subplots()
    if edges:
        ax.stairs(reference, list(edges), fill=True, color=_REF_COLOR, alpha=0.7,
                  label="reference")
        ax.stairs(current, list(edges), color=_CUR_COLOR, linewidth=1.5, label="current")
    else:
        xs = range(len(labels))
        ax.bar([x - 0.2 for x in xs], reference, width=0.4, color=_REF_COLOR,
               label="reference")
        ax.bar([x + 0.2 for x in xs], current, width=0.4, color=_CUR_COLOR, label="current")
        ax.set_xticks(list(xs), [label(lab, 12) for lab in labels], rotation=45, ha="right",
                      fontsize=7)
    ax.set_title(label(title, 70), fontsize=10)
    ax.set_ylabel("share of rows")
    ax.legend(fontsize=8)
    return _png(fig)


def scores_png(title: str, *, hours: Sequence[float], scores: Sequence[float],
               enough: Sequence[bool], high: float, low: float, xlabel: str) -> bytes:
    """A drift alarm's window scores over time (``hours``), the ``high`` and ``low`` lines;
    a window without ``enough`` samples is a hollow marker at 0."""
    fig = _figure(6.0, 3.0)
    ax = fig.subplots()
    ax.plot([x for x, e in zip(hours, enough, strict=True) if e],
            [s for s, e in zip(scores, enough, strict=True) if e], "o-", color=_CUR_COLOR,
            label="share of drifted features")
    few = [x for x, e in zip(hours, enough, strict=True) if not e]
    if few:
        ax.plot(few, [0.0] * len(few), "o", mfc="none", color=_REF_COLOR,
                label="not enough data")
    ax.axhline(high, color="#dc2626", linestyle="--", label="high")
    ax.axhline(low, color="#16a34a", linestyle=":", label="low")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel(xlabel)
    ax.set_title(label(title, 70), fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    return _png(fig)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:60] or "plot"


def report_plots(comparison: Comparison, *, part: int = 0, parts: int = 1,
                 first: Sequence[str] = ()) -> dict[str, tuple[str, bytes]]:
    """Every chart of a comparison: file name -> (title, PNG bytes). The metric bars show
    the metrics that differ (up to :data:`MAX_BARS`, in
    :func:`~gha_mlops.reporting.metric_order.headline_order`, ``first`` being the gated
    metrics; the title says when some are left out), then one chart per CSV plot file and
    one per matrix. With ``parts`` > 1 only every ``parts``-th chart from ``part`` is drawn
    (the names stay those of the whole set), so several processes can share the work.
    Raises :class:`~gha_mlops.errors.MissingExtraError` without matplotlib."""
    specs: list[tuple[str, str, Callable[[], bytes]]] = []
    taken: dict[str, None] = {}

    def add(name: str, title: str, draw: Callable[[], bytes]) -> None:
        name = _unique(taken, name)
        taken[name] = None
        specs.append((name, title, draw))

    changed = bar_metrics(comparison, first)
    if changed:
        title = "Metrics that changed"
        if len(changed) > MAX_BARS:
            title += f" ({MAX_BARS} of {len(changed)} shown; the rest are in the metrics table)"
        add("metrics.png", title,
            lambda: metric_bars([(m.name, m.base, m.head) for m in changed]))
    for pair in comparison.curves:
        base = parse_curves(pair.base) if pair.base is not None else None
        head = parse_curves(pair.head) if pair.head is not None else None
        if base is not None or head is not None:
            add(f"curve-{_slug(pair.path)}.png", pair.path,
                functools.partial(training_curves, pair.path, base, head))
    for matrix in comparison.matrices:
        add(f"matrix-{_slug(matrix.name)}.png", matrix.name,
            functools.partial(confusion_matrices, matrix.name, _floats(matrix.base),
                              _floats(matrix.head)))
    return {name: (title, draw()) for i, (name, title, draw) in enumerate(specs)
            if i % parts == part}


def bar_metrics(comparison: Comparison, first: Sequence[str] = ()) -> list[MetricDiff]:
    """The metrics that changed, in the order the metric chart draws them (it has room for
    the first :data:`MAX_BARS`): headline first, ``first`` being the gated metrics (see
    :func:`~gha_mlops.reporting.metric_order.headline_order`)."""
    changed = [m for m in comparison.metrics if m.change != "same"]
    return [changed[i] for i in headline_order([(m.file, m.key) for m in changed], first)]


def _floats(matrix: Any) -> list[list[float]] | None:
    return None if matrix is None else [[float(x) for x in row] for row in matrix]


def _unique(taken: Mapping[str, Any], name: str) -> str:
    stem, n = name[:-4], 2
    while name in taken:
        name = f"{stem}-{n}.png"
        n += 1
    return name
