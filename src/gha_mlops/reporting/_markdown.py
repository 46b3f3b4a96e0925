"""Markdown building blocks shared by the reports: escaping, pipe tables, number formatting.

Everything here is pure text. Untrusted text (a metric or parameter name, a value read from a
file, a branch) is escaped by :mod:`gha_mlops.gha.safe`, the one module that makes user text
safe for each place it is shown; the names here are the reports' short spellings of it:

- :func:`md_text` and :func:`md_escape`: inert inline text (line breaks become ``<br>``, so a
  table cell can hold them); neither HTML nor Markdown (links, images, emphasis, code spans,
  math, mentions, a new cell) in it is ever rendered;
- :func:`md_code`: a code span; :func:`md_name`: a name in ``<code>``, escaped as md_escape.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from gha_mlops.gha.safe import markdown_code, markdown_name, markdown_text


def md_text(value: object) -> str:
    """``value`` as literal text, in a table cell or anywhere: nothing in it renders as
    markup, a cell can neither end early nor break the row (line breaks become ``<br>``)."""
    return markdown_text(value, breaks=True)


def md_code(value: object, *, in_table: bool = True) -> str:
    """``value`` as a code span (on one line). In a table cell ``|`` must be escaped even
    inside a code span (GFM splits cells first); elsewhere the escape would show."""
    return markdown_code(value, in_table=in_table)


def md_escape(value: object) -> str:
    """``value`` as inert text anywhere in Markdown (table cells included): the same as
    :func:`md_text`, the name the PR report knows it by."""
    return markdown_text(value, breaks=True)


def md_name(value: object) -> str:
    """A name (metric, parameter, file) in code font, escaped as :func:`md_escape` does.
    Unlike a backtick code span, the ``<code>`` element lets every character be escaped."""
    return markdown_name(value)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]],
                   align: str = "") -> str:
    """A GFM table. Cells are Markdown already (escape text with :func:`md_text` or
    :func:`md_code`); ``align`` has one letter per column, ``l``, ``r`` or ``c``."""
    return "\n".join(table_lines(header, rows, align))


def table_lines(header: Sequence[str], rows: Iterable[Sequence[str]],
                align: str = "") -> list[str]:
    """The lines of :func:`markdown_table`: header, separator, then one per row."""
    width = len(header)
    marks = {"l": "---", "r": "--:", "c": ":-:"}
    seps = [marks.get(align[i] if i < len(align) else "l", "---") for i in range(width)]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(seps) + " |"]
    for row in rows:
        cells = [*row[:width], *[""] * (width - len(row))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def format_number(value: Any) -> str:
    """A metric for people: integers exactly, floats to 6 significant digits."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    return str(value)


def format_duration(seconds: float) -> str:
    """``12.3 s``, ``4 min 05 s`` or ``2 h 03 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_size(nbytes: int) -> str:
    """A size in bytes with a binary unit: ``512 B``, ``1.5 KiB``, ``2.0 GiB``."""
    size = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{nbytes} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
