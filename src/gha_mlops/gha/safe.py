"""User-chosen text made safe for each place it is shown: the job log, Markdown, plot titles.

Metric, stage, dataset and parameter names, paths, branch names and ``--set`` values are
chosen by whoever writes ``mlops.yaml``, the metrics files or the branch, and reach places
that interpret text:

- **the job log** (stdout and stderr of a step). The runner reads each line (split at CR, LF
  or CRLF) as a workflow command when, after trimming leading whitespace, it starts with
  ``::``, or when ``##[`` occurs anywhere in it (the legacy form; see actions/runner,
  ``ActionCommand.TryParseV2`` and ``TryParse``). :func:`log_text` makes a string one line
  that is neither, showing control characters instead of obeying them;
- **Markdown** (the step summary, the pull-request report). :func:`markdown_text` makes a
  string inert inline text: what renders is the text, never HTML, a link, an image, emphasis,
  a code span, math, a heading, a list or a new table cell; :func:`markdown_code` and
  :func:`markdown_name` put it in code font; :func:`html_text` is for the raw HTML of a
  ``<details><summary>`` line, where Markdown is not parsed; bare ``https://`` addresses are
  still linked by GitHub, showing their own target;
- **matplotlib titles**: :func:`plot_title` keeps ``$`` from starting mathtext.

Workflow-command data and properties (annotations, ``::add-mask::``) are escaped by
:func:`gha_mlops.gha.runtime.escape_data` and :func:`~gha_mlops.gha.runtime.escape_property`.
Everything here is pure and total: any ``str`` (lone surrogates included) gives a result.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = [
    "html_text",
    "log_block",
    "log_json",
    "log_text",
    "markdown_code",
    "markdown_name",
    "markdown_quote",
    "markdown_text",
    "plot_title",
]

# Every character Python or the runner (.NET ReadLine: CR, LF, CRLF) may take as a line end.
_LINE_BREAK = re.compile(r"\r\n|[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]")
# Characters that are invisible or move the text rather than show it: C0 and C1 controls,
# DEL, the bidirectional overrides ("Trojan Source"), line and paragraph separators, BOM,
# and lone surrogates (which no UTF-8 stream can even encode).
_HIDDEN = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029"
                     "\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]")

# The same, but for the line breaks and indentation of JSON laid out with ``indent``.
_JSON_HIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029"
                          "\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]")


def _shown(char: str) -> str:
    """A visible stand-in for a hidden character: the Unicode control picture of a C0
    control (``␊`` for LF, ``␀`` for NUL, ``␛`` for ESC), ``␡`` for DEL, else ``\\uXXXX``."""
    code = ord(char)
    if code < 0x20:
        return chr(0x2400 + code)
    if code == 0x7F:
        return "\u2421"
    return f"\\u{code:04x}"


def _show_hidden(text: str) -> str:
    return _HIDDEN.sub(lambda m: _shown(m.group()), text)


# --------------------------------------------------------------------------- the job log


def log_text(value: object) -> str:
    """``value`` as (part of) one log line that the runner cannot take as a command.

    Line breaks and other control characters are shown (``␊``, ``␍``, ``␛``, ``\\u2028``)
    instead of obeyed, so the result is one line and cannot move the cursor or colour the
    terminal; tabs stay. ``##[`` becomes ``##\\[``, and a leading ``::`` (after whitespace)
    becomes ``\\::``. Text that is none of these is returned unchanged, so normal names read
    as they are; applying it twice changes nothing more."""
    text = _show_hidden(str(value))
    text = text.replace("##[", "##\\[")
    body = text.lstrip()
    if body.startswith("::"):
        text = text[:len(text) - len(body)] + "\\" + body
    return text


def log_block(text: str) -> str:
    """Several log lines (split where the runner splits them: CR, LF, CRLF), each made safe
    by :func:`log_text`. For text that is lines already (a rendered table, a Markdown
    document printed to stdout); escape user values with :func:`log_text` before joining
    them into lines, so that a line break in a value shows rather than starts a line."""
    return "\n".join(log_text(line) for line in re.split(r"\r\n|\r|\n", text))


def log_json(text: str) -> str:
    """JSON text (from :func:`json.dumps`) safe to print to the log, and still the same JSON:
    ``#`` in ``##[`` becomes ``\\u0023``, and hidden characters that ``ensure_ascii=False``
    leaves raw (``\\u2028``, C1 controls, bidi overrides, lone surrogates) become ``\\uXXXX``
    escapes. Both can only occur inside strings, where the escapes mean the same characters.
    ``json.dumps`` escapes CR, LF and other C0 controls itself, and no line it writes starts
    with ``::``."""
    text = _JSON_HIDDEN.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text.replace("##[", "#\\u0023[")


# --------------------------------------------------------------------------- Markdown

_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}
# ASCII punctuation that can open or close inline markup on GitHub: emphasis, strikethrough,
# links and images (``(`` means nothing without an unescaped ``]`` before it), code spans,
# math (``$``), table cells, and ``\`` itself. CommonMark
# renders ``\`` + any ASCII punctuation as the character. (A bare ``https://host`` is still
# linked by GitHub, showing its own address: unlike ``[text](url)`` it cannot disguise it.)
_BACKSLASHED = frozenset("\\`*_{}[]#+!|~$")
# "@&#8203;name": the zero-width space keeps GitHub from turning @name into a mention that
# notifies that user (or team) from a comment.
_MENTION = "@&#8203;"
_ORDERED_LIST = re.compile(r"(\d{1,9})([.)])(?=[ \t]|$)")


def _inline(text: str) -> str:
    out: list[str] = []
    for char in text:
        if char in _ENTITIES:
            out.append(_ENTITIES[char])
        elif char in _BACKSLASHED:
            out.append("\\" + char)
        elif char == "@":
            out.append(_MENTION)
        else:
            out.append(char)
    return "".join(out)


def _line_start(text: str) -> str:
    """Escape what would open a block at the start of a line: indentation (a code block),
    ``-`` or ``=`` (a list, a rule, a setext heading) and ``1.`` or ``1)`` (an ordered list)."""
    stripped = text.lstrip(" \t")
    if len(stripped) < len(text):
        indent = text[:len(text) - len(stripped)]
        text = indent.replace(" ", "&#32;").replace("\t", "&#9;") + stripped
        return text  # after an entity nothing below can start a block
    if text[:1] in ("-", "=") and (len(text) == 1 or text[1] in " \t-="):
        return "\\" + text
    return _ORDERED_LIST.sub(r"\1\\\2", text, count=1) if _ORDERED_LIST.match(text) else text


def markdown_text(value: object, *, breaks: bool = False) -> str:
    """``value`` as inert inline Markdown, anywhere (a paragraph, a table cell, the start of
    a line, a ``> `` quote, a ``<summary>``): ``& < > "`` become entities, Markdown
    punctuation is backslash-escaped, ``@`` cannot mention, and control characters are shown
    (see :func:`log_text`). Line breaks become spaces, or ``<br>`` with ``breaks`` (the only
    tag it ever writes), so the result is one source line. It renders as exactly the text."""
    lines = _LINE_BREAK.split(str(value))
    # Line breaks at either end carry nothing, and a line that starts with <br> would be an
    # HTML block rather than inline text.
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    parts = [_inline(_show_hidden(line.replace("\t", " "))) for line in lines]
    return _line_start(("<br>" if breaks else " ").join(parts))


def markdown_code(value: object, *, in_table: bool = True) -> str:
    """``value`` as a code span on one line (line breaks become spaces, controls are shown).

    In a table cell ``|`` must be escaped even inside a code span (GFM splits cells first,
    taking only ``\\|`` as an escape, so ``\\\\|`` is a backslash and an escaped pipe);
    elsewhere the escape would show."""
    text = _show_hidden(" ".join(_LINE_BREAK.split(str(value))).replace("\t", " ")) or " "
    ticks = "`"
    while ticks in text:
        ticks += "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    span = f"{ticks}{pad}{text}{pad}{ticks}"
    return span.replace("|", "\\|") if in_table else span


def markdown_name(value: object, *, breaks: bool = True) -> str:
    """A name (metric, parameter, file, branch) in code font, ``<code>`` +
    :func:`markdown_text` + ``</code>``: unlike a backtick span, every character in it can be
    escaped, so it is safe in any context. Line breaks become ``<br>`` unless not ``breaks``."""
    return f"<code>{markdown_text(value, breaks=breaks)}</code>"


# What html.escape(quote=True) does, without importing html (and html.entities, ~1.5 ms on
# every command that prints: this module is on the no-op run's path).
_HTML_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;",
                               "'": "&#x27;"})


def html_text(value: object) -> str:
    """``value`` as text inside raw HTML, where Markdown is not parsed (the line of a
    ``<details><summary>...</summary>`` block): ``& < > " '`` become entities, line breaks
    spaces, controls are shown and ``@`` cannot mention. Backslash escapes would show here."""
    text = _show_hidden(" ".join(_LINE_BREAK.split(str(value))).replace("\t", " "))
    return text.translate(_HTML_ESCAPES).replace("@", _MENTION)


def markdown_quote(lines: Iterable[str]) -> str:
    """Markdown ``lines`` (escaped already) as one ``> `` block quote: each line is
    quoted, and a line break inside one is quoted too, so nothing can end the quote early
    (an empty line would)."""
    out: list[str] = []
    for line in lines:
        out += [f"> {part}".rstrip() for part in _LINE_BREAK.split(line)]
    return "\n".join(out)


# --------------------------------------------------------------------------- plot titles


def plot_title(value: object, most: int = 60) -> str:
    """``value`` safe as a matplotlib title or label: one line, at most ``most`` characters
    (before escaping), controls and glyphs outside Latin replaced by ``?`` (the bundled font
    lacks them and would warn), and ``$`` escaped so mathtext never parses it."""
    clean = "".join(c if " " <= c < "\x7f" or "\xa0" <= c < "\u0250" else "?"
                    for c in " ".join(str(value).split()))
    if len(clean) > most:
        clean = clean[:most - 1] + "…"
    return clean.replace("$", r"\$")
