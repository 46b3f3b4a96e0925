"""Markdown building blocks shared by the reports: escaping, pipe tables, number formatting.

Everything here is pure text. Two ways to put untrusted text (a metric or parameter name, a
value read from a file) into Markdown:

- :func:`md_text` and :func:`md_code` (used by the step summary) make it literal inside a
  table: HTML special characters, ``|`` and newlines cannot end a cell or open a tag;
- :func:`md_escape` and :func:`md_name` (used by the PR report) also backslash-escape every
  Markdown punctuation character, so neither HTML nor Markdown (emphasis, links, code spans)
  in a name is ever rendered as markup, in a table cell or anywhere else.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

# ASCII punctuation that can start or end Markdown inline markup (CommonMark lets any ASCII
# punctuation be backslash-escaped; these are the ones that matter inline).
_MD_PUNCT = re.compile(r"([\\`*_{}\[\]()#+!|~])")


def md_text(value: object) -> str:
    """``value`` as literal text in a table cell: HTML special characters, ``|`` and newlines
    escaped, so a cell can neither end early nor break the row."""
    text = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "<br>")
    return text.replace("|", "\\|")


def md_code(value: object, *, in_table: bool = True) -> str:
    """``value`` as a code span (on one line). In a table cell ``|`` must be escaped even
    inside a code span (GFM splits cells first); elsewhere the escape would show."""
    text = " ".join(str(value).splitlines()) or " "
    ticks = "`"
    while ticks in text:
        ticks += "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    span = f"{ticks}{pad}{text}{pad}{ticks}"
    return span.replace("|", "\\|") if in_table else span


def md_escape(value: object) -> str:
    """``value`` as inert text anywhere in Markdown (table cells included): ``&``, ``<`` and
    ``>`` become entities, Markdown punctuation (backticks, ``|``, ``*``, ``_``, brackets...)
    is backslash-escaped and line breaks become ``<br>``. What renders is exactly the text."""
    text = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MD_PUNCT.sub(r"\\\1", text)
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "<br>")


def md_name(value: object) -> str:
    """A name (metric, parameter, file) in code font, escaped as :func:`md_escape` does.
    Unlike a backtick code span, the ``<code>`` element lets every character be escaped."""
    return f"<code>{md_escape(value)}</code>"


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
