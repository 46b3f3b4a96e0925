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
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tabulate import TableFormat

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
    """A GFM table, laid out by tabulate: the one table builder of the reports (the PR
    report, the step summary, a sweep's summary). Cells are Markdown already (escape text
    with :func:`md_text`, :func:`md_name` or :func:`md_code`), and each still goes through
    :func:`table_cell`; ``align`` has one letter per column, ``l``, ``r`` or ``c``."""
    return "\n".join(table_lines(header, rows, align))


# A line break in a cell would end the row; a pipe not escaped by a backslash would end the
# cell (GFM splits a row on pipes before it parses anything else, code spans included).
_LINE_BREAK = re.compile(r"\r\n|[\r\n]")
_BARE_PIPE = re.compile(r"(?<!\\)\|")
_SEPARATOR = {"l": "---", "r": "--:", "c": ":-:"}
# Other control characters are shown as their Control Pictures (as gha.safe does): tabulate
# takes a cell that is "\x01" (its SEPARATING_LINE) as an order to draw a line, not a row.
_CONTROLS = {c: 0x2400 + c for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)} | {0x7F: 0x2421}


def table_cell(cell: object) -> str:
    """``cell`` (Markdown, escaped by the ``md_*`` helpers) made safe for one table cell:
    a defence in depth for a cell built without them. Line breaks become ``<br>``, a bare
    ``|`` becomes ``\\|`` and other control characters their pictures (``␁``); text the
    helpers escaped has none of them, so it is unchanged."""
    text = _LINE_BREAK.sub("<br>", str(cell)).translate(_CONTROLS)
    return _BARE_PIPE.sub(r"\\|", text)


def _table_format(align: Sequence[str]) -> TableFormat:
    """tabulate's ``pipe`` format without padding: a cell is written as it is (padding every
    cell to its column's width would only add bytes to a comment with a size limit), and the
    separator carries the alignment, ``---``, ``--:`` or ``:-:``, of each column."""
    from tabulate import DataRow, TableFormat

    def separator(widths: Sequence[int], _aligns: Sequence[str]) -> str:
        return "| " + " | ".join(align[i] for i in range(len(widths))) + " |"

    return TableFormat(lineabove=None, linebelowheader=separator, linebetweenrows=None,
                       linebelow=None, headerrow=DataRow("|", "|", "|"),
                       datarow=DataRow("|", "|", "|"), padding=1, with_header_hide=None)


def table_lines(header: Sequence[str], rows: Iterable[Sequence[str]],
                align: str = "") -> list[str]:
    """The lines of :func:`markdown_table`: header, separator, then one per row. A row with
    fewer cells than ``header`` is filled with empty ones; cells past the header's are
    dropped. Every cell goes through :func:`table_cell`, so none can end early or split."""
    # Imported here: tabulate (and the importlib.metadata it loads) costs ~15 ms, paid only
    # by a command that writes a table, not by every one that imports the reports' modules.
    from tabulate import tabulate

    width = len(header)
    seps = [_SEPARATOR.get(align[i] if i < len(align) else "l", "---") for i in range(width)]
    body = [[table_cell(c) for c in [*row[:width], *[""] * (width - len(row))]]
            for row in rows]
    # No number parsing (a cell is text: "0010" or "1e5" stay as written) and no alignment
    # in tabulate (None: no padding); the separator line says how each column is aligned.
    text = tabulate(body, headers=[table_cell(h) for h in header],
                    tablefmt=_table_format(seps), disable_numparse=True,
                    numalign=None, stralign=None)
    return text.split("\n")


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
