"""Property tests of gha_mlops.gha.safe: random and hostile strings at every sink.

Log lines are judged by the runner's rules (a line ends at CR, LF or CRLF; it is a command
when it starts with ``::`` after leading whitespace, or holds ``##[`` anywhere); Markdown is
rendered by a real CommonMark parser (markdown-it, with GFM tables) in the contexts our
writers put text in, and must come out as plain text, equal to what was given.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from markdown_it.token import Token

from gha_mlops.gha import safe
from gha_mlops.gha.safe import (
    html_text,
    log_block,
    log_json,
    log_text,
    markdown_code,
    markdown_name,
    markdown_quote,
    markdown_text,
    plot_title,
)

# Pieces of every known trick: workflow commands (both forms, with their escapes), line and
# paragraph breaks, HTML, links and images, emphasis, code, tables, math, mentions, autolinks,
# block starts (headings, lists, rules, quotes, fences, indentation) and hidden characters.
NASTY = ["::", "::error::pwned", "::add-mask::x", "::set-env name=A::b", "##[", "##[error]x",
         "%0A", "%0D", "%25", "\r\n", "\r", "\n", "\u2028", "\u2029", "\x85", "\v", "\f",
         "\x1c", "<img src=x onerror=alert(1)>", "<", ">", "&", "&amp;", "&#60;", '"', "'",
         "](", "![", "[", "]", "(http://evil/)", "`", "```", "~~~", "|", "\\", "\\|", "$",
         "$$", "*", "**", "_", "~", "#", "# ", "- ", "-", "=", "===", "---", "+ ", "1. ",
         "1) ", "> ", "    ", "\t", " ", "@user", "@org/team", "www.evil.com",
         "https://evil.example/x", ":smile:", "<details>", "</summary>", "<br>", "<!--",
         "\x00", "\x1b[31m", "\x7f", "\x9b", "\u202e", "\u2066", "\ufeff", "\ud800", "\udfff",
         "[x]: http://evil", "[^1]", "<http://evil>", "\\`", "x", "é", "日本"]

nasty = st.lists(st.sampled_from(NASTY) | st.text(max_size=3), max_size=12).map("".join)
# st.text() draws lone surrogates too (category Cs): every function must take any str.
anything = nasty | st.text(alphabet=st.characters(), max_size=40)

# --------------------------------------------------------------------------- logs

RUNNER_LINES = re.compile(r"\r\n|\r|\n")


def _assert_log_safe(out: str) -> None:
    out.encode("utf-8")  # printable to a UTF-8 stream: no lone surrogates left
    assert "##[" not in out
    for line in RUNNER_LINES.split(out):
        # Python's whitespace is a superset of .NET's TrimStart, the runner's.
        assert not line.lstrip().startswith("::"), out


@given(anything)
def test_a_log_line_is_one_line_and_never_a_command(text: str) -> None:
    out = log_text(text)
    _assert_log_safe(out)
    assert not set(out) & {"\r", "\n", "\x00", "\x1b", "\u2028", "\u2029", "\x85"}
    assert log_text(out) == out  # idempotent: escaping twice shows no double escapes


@given(anything)
def test_log_text_is_the_identity_on_harmless_text(text: str) -> None:
    if (not re.search(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029"
                      r"\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]", text)
            and "##[" not in text and not text.lstrip().startswith("::")):
        assert log_text(text) == text


@given(st.lists(anything, max_size=5))
def test_a_log_block_never_holds_a_command(lines: list[str]) -> None:
    # Values joined into lines, and whole texts such as Markdown printed to stdout.
    _assert_log_safe(log_block("\n".join(lines)))
    _assert_log_safe(log_block("".join(log_text(x) for x in lines)))


@given(st.recursive(st.none() | st.booleans() | st.floats() | anything,
                    lambda kids: st.lists(kids, max_size=3)
                    | st.dictionaries(anything, kids, max_size=3), max_leaves=8))
def test_log_json_is_the_same_json_and_no_command(value: Any) -> None:
    import json

    for indent in (None, 2):
        text = json.dumps(value, indent=indent, ensure_ascii=False, allow_nan=True)
        out = log_json(text)
        _assert_log_safe(out)
        # Compared as canonical JSON text: NaN is not equal to itself as a float.
        assert (json.dumps(_paired(json.loads(out)), allow_nan=True)
                == json.dumps(_paired(json.loads(text)), allow_nan=True))


def _paired(value: Any) -> Any:
    """``value`` with each high surrogate followed by a low one read as the one character
    they encode. A JSON reader must do that to the escapes ``\\ud800\\udfff``, so two lone
    surrogates that happen to be adjacent (no UTF-8 text can hold them raw) come back as
    their pair: the one difference log_json cannot avoid, and no text a user can write."""
    if isinstance(value, str):
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    if isinstance(value, list):
        return [_paired(v) for v in value]
    if isinstance(value, dict):
        return {_paired(k): _paired(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------- Markdown

MD = MarkdownIt("commonmark").enable("table")
BLOCK_TEXT = {"paragraph_open", "paragraph_close", "inline"}
TABLE = {"table_open", "thead_open", "tr_open", "th_open", "th_close", "tr_close",
         "thead_close", "tbody_open", "td_open", "td_close", "tbody_close", "table_close"}


def _walk(tokens: list[Token]) -> Iterator[Token]:
    for token in tokens:
        yield token
        yield from _walk(token.children or [])


def _expected(text: str) -> str:
    """What must render: the text on one line, hidden characters shown, no mentions."""
    one_line = re.sub(r"\r\n|[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]", " ", text)
    return safe._show_hidden(one_line.replace("\t", " ")).replace("@", "@\u200b")


def _rendered_text(tokens: list[Token], allowed_html: frozenset[str]) -> str:
    """The text of ``tokens``, asserting that nothing in them is markup but what we allow."""
    out: list[str] = []
    for token in _walk(tokens):
        if token.type == "text":
            out.append(token.content)
        elif token.type == "html_inline":
            assert token.content in allowed_html, token
            out.append(" " if token.content == "<br>" else "")
        elif token.type == "softbreak":
            out.append("\n")
        else:
            assert token.type in BLOCK_TEXT | TABLE, token
    return "".join(out)


def _contexts(escaped: str) -> dict[str, tuple[str, str]]:
    """Where our writers put escaped text: source, and the text around it that renders."""
    return {
        "paragraph": (escaped, ""),
        "after a line": (f"Head\n{escaped}", "Head"),
        "quote": (f"> {escaped}", ""),
        "list item": (f"- {escaped}", ""),
    }


@settings(max_examples=300)
@given(anything, st.booleans())
def test_markdown_text_renders_as_exactly_the_text(text: str, breaks: bool) -> None:
    escaped = markdown_text(text, breaks=breaks)
    assert "\n" not in escaped and "\r" not in escaped
    want = _expected(text).strip()  # surrounding whitespace is the parser's to trim
    html = frozenset({"<br>"}) if breaks else frozenset()
    for name, (source, around) in _contexts(escaped).items():
        tokens = MD.parse(source)
        if name in ("quote", "list item"):
            opener = "blockquote" if name == "quote" else "bullet_list"
            assert tokens[0].type == f"{opener}_open" and tokens[-1].type == f"{opener}_close"
            tokens = [t for t in tokens[1:-1] if t.type not in ("list_item_open",
                                                                "list_item_close")]
        if name == "after a line":
            got = _rendered_text(tokens, html)
            assert [t.type for t in tokens].count("paragraph_open") == 1, name
            assert got == around or got.startswith(around + "\n"), name
            assert got[len(around):].strip() == want, name
            continue
        got = _rendered_text(tokens, html)
        assert got.strip() == want, (name, source)


class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.data: list[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self.tags.append(tag)

    def handle_endtag(self, tag: str) -> None:
        self.tags.append("/" + tag)

    def handle_data(self, data: str) -> None:
        self.data.append(data)

    def handle_comment(self, data: str) -> None:  # pragma: no cover - a failure
        self.tags.append("!--")


@given(anything)
def test_html_text_in_a_details_summary_is_text(text: str) -> None:
    # The <summary> line is an HTML block: Markdown is not parsed there, the browser reads it.
    source = f"<details><summary>{html_text(text)}: <code>{html_text(text)}</code></summary>"
    tokens = MD.parse(source + "\n\nbody\n\n</details>")
    assert [t.type for t in tokens] == ["html_block", "paragraph_open", "inline",
                                        "paragraph_close", "html_block"]
    parser = _Html()
    parser.feed(source)
    parser.close()
    assert parser.tags == ["details", "summary", "code", "/code", "/summary"]
    want = _expected(text)
    assert "".join(parser.data) == f"{want}: {want}"


@given(anything, anything)
def test_markdown_in_a_table_cell_stays_in_its_cell(a: str, b: str) -> None:
    row = f"| {markdown_text(a, breaks=True)} | {markdown_code(b)} | {markdown_name(a)} |"
    tokens = MD.parse("| x | y | z |\n| --- | --- | --- |\n" + row + "\n")
    cells = [t for t in tokens if t.type == "td_open"]
    assert len(cells) == 3, row
    inlines = [t for t in tokens if t.type == "inline"][3:]
    text = _rendered_text([inlines[0]], frozenset({"<br>"}))
    assert text.strip() == _expected(a).strip()
    code = [t for t in _walk([inlines[1]])]
    assert {t.type for t in code} <= {"inline", "code_inline", "text", "html_inline"}
    name = _rendered_text([inlines[2]], frozenset({"<br>", "<code>", "</code>"}))
    assert name.strip() == _expected(a).strip()


@given(anything)
def test_a_code_span_is_one_code_span_outside_tables(text: str) -> None:
    tokens = list(_walk(MD.parse(f"see {markdown_code(text, in_table=False)} here")))
    codes = [t for t in tokens if t.type == "code_inline"]
    assert len(codes) == 1
    assert {t.type for t in tokens} <= BLOCK_TEXT | {"text", "code_inline"}
    want = safe._show_hidden(" ".join(re.split(r"\r\n|[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]",
                                               text)).replace("\t", " "))
    assert codes[0].content.strip(" ") == want.strip(" ") or not want.strip(" ")


@given(st.lists(anything, min_size=1, max_size=4))
def test_a_quote_holds_every_line(lines: list[str]) -> None:
    quoted = markdown_quote([markdown_text(x) for x in lines] + ["a\n\nb"])
    assert all(line.startswith(">") for line in quoted.splitlines())
    tokens = MD.parse(quoted)
    assert tokens[0].type == "blockquote_open" and tokens[-1].type == "blockquote_close"
    assert sum(t.type == "blockquote_open" for t in tokens) == 1


@pytest.mark.parametrize(("text", "expected"), [
    ("accuracy", "accuracy"),
    ("![x](https://evil/)", "\\!\\[x\\](https://evil/)"),
    ("<img src=x>", "&lt;img src=x&gt;"),
    ("two\nlines", "two lines"),
    ("- item", "\\- item"),
    ("1. first", "1\\. first"),
    ("2) second", "2\\) second"),
    ("1.5", "1.5"),
    ("-0.5", "-0.5"),
    ("  indented", "&#32;&#32;indented"),
    ("hi @octocat", "hi @&#8203;octocat"),
])
def test_markdown_text_examples(text: str, expected: str) -> None:
    assert markdown_text(text) == expected


# --------------------------------------------------------------------------- plot titles


@given(anything, st.integers(min_value=2, max_value=100))
def test_plot_titles_are_one_plain_line(text: str, most: int) -> None:
    out = plot_title(text, most)
    out.encode("utf-8")
    assert not re.search(r"[\x00-\x1f\x7f-\x9f]", out)
    # matplotlib parses mathtext when some "$" is not written "\$": none is left unescaped.
    assert out.count("$") == out.count("\\$")
    assert len(out.replace("\\$", "$")) <= most


def test_hostile_plot_titles_draw_as_text() -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    for text in ["$\\frac{1}{0}$", "a $x^ $ b", "\\$x$", "$$", "$\\undefined$", "日本 $x$"]:
        fig = Figure()
        fig.suptitle(plot_title(text))
        fig.canvas.draw()  # mathtext would raise ValueError on these
