"""Every Markdown table the reports write (laid out by tabulate through
``_markdown.markdown_table``/``table_lines``) keeps a hostile cell in one cell: a pipe, a
line break or HTML in a name or value neither adds, removes nor moves a cell, and nothing in
it renders. Tables are read by a real CommonMark parser with GFM tables (markdown-it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.token import Token

from gha_mlops.config.model import Gate
from gha_mlops.reporting._markdown import markdown_table, table_lines
from gha_mlops.reporting.compare import compare
from gha_mlops.reporting.gates import evaluate_gates
from gha_mlops.reporting.markdown import render
from gha_mlops.reporting.run_summary import render_run_summary

MD = MarkdownIt("commonmark").enable("table")
HOSTILE = "a | b\nc <img src=x onerror=alert(1)>"


def _tables(markdown: str) -> list[list[list[Token]]]:
    """Every table of ``markdown`` as rows of cells, each cell the inline token parsed."""
    tables: list[list[list[Token]]] = []
    row: list[Token] | None = None
    in_cell = False
    for token in MD.parse(markdown):
        if token.type == "table_open":
            tables.append([])
        elif token.type == "tr_open":
            row = []
            tables[-1].append(row)
        elif token.type in ("th_open", "td_open"):
            in_cell = True
        elif token.type in ("th_close", "td_close"):
            in_cell = False
        elif token.type == "inline" and in_cell and row is not None:
            row.append(token)
    return tables


def _assert_one_cell_each(markdown: str, *, tables: int) -> list[list[list[Token]]]:
    """The ``markdown`` has at least ``tables`` tables, each row with its header's number
    of cells, and no HTML in a cell but the line breaks and ``<code>`` the escaping writes."""
    found = _tables(markdown)
    assert len(found) >= tables, markdown
    for table in found:
        assert {len(r) for r in table} == {len(table[0])}, [[c.content for c in r]
                                                            for r in table]
        for cell in (c for r in table for c in r):
            for child in cell.children or []:
                if child.type == "html_inline":
                    assert child.content in ("<br>", "<code>", "</code>"), cell.content
                assert child.type not in ("image", "link_open"), cell.content
    return found


def _texts(table: list[list[Token]]) -> list[list[str]]:
    return [["".join(ch.content for ch in c.children or [] if ch.type in ("text", "code_inline"))
             for c in row] for row in table]


def test_the_table_helper_keeps_a_raw_hostile_cell_in_one_cell() -> None:
    # A cell built without the md_* escapes (a bug elsewhere) still cannot end its cell or
    # its row: table_lines escapes the table's own syntax, a bare pipe and a line break, and
    # tabulate's ("\x01", its SEPARATING_LINE, would turn the row into a line).
    text = markdown_table(["k", "v"], [["a | b", "x\ny\r\nz"], ["ok", "1"],
                                       ["\x01", "s"], ["t", " \x01 "]], "lr")
    [table] = _assert_one_cell_each(text, tables=1)
    assert len(table) == 5
    assert _texts(table)[1:] == [["a | b", "xyz"], ["ok", "1"], ["␁", "s"], ["t", "␁"]]
    assert len(table_lines(["k"], [["1\n2\n3"]])) == 3  # header, separator, one row


def _record(run_id: str, value: float, **extra: Any) -> dict[str, Any]:
    return {"id": run_id, "status": "succeeded",
            "stages": [{"name": HOSTILE, "status": HOSTILE}],
            "metrics": {"metrics.json": {HOSTILE: value, "acc": value}},
            "params": {"values": {HOSTILE: HOSTILE + str(value)}},
            "datasets": {HOSTILE: {"version": HOSTILE + str(value), "files": 1}},
            "model": {"path": HOSTILE, "sha256": "ab" * 32}, **extra}


def test_every_table_of_the_pr_report_keeps_a_hostile_cell_in_one_cell() -> None:
    c = compare(_record("b", 1.0), _record("h", 2.0))
    verdict = evaluate_gates(c, {HOSTILE: Gate(HOSTILE, max=1.5), "acc": Gate("acc", min=0)})
    text = render(c, verdict, report_id=HOSTILE, limit=None)
    found = _assert_one_cell_each(text, tables=5)
    first_cells = [row[0] for table in found for row in _texts(table)[1:]]
    assert first_cells.count(HOSTILE.replace("\n", "")) >= 4, first_cells


def test_every_table_of_the_run_summary_keeps_a_hostile_cell_in_one_cell(
        tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text(json.dumps({HOSTILE: 1.0, "acc": 0.5}))
    record = {"id": "r1", "kind": "run", "status": "failed", "git": {"branch": HOSTILE},
              "stages": [{"name": HOSTILE, "status": "failed", "error": HOSTILE}],
              "params": {"overrides": {HOSTILE: HOSTILE}},
              "metrics": {"metrics.json": {HOSTILE: 1.0, "acc": 0.5}},
              "datasets": {HOSTILE: {"version": HOSTILE, "files": HOSTILE,
                                     "source": HOSTILE}},
              "model": {"path": HOSTILE, "sha256": HOSTILE}}
    text = render_run_summary(record, tmp_path)
    found = _assert_one_cell_each(text, tables=4)
    cells = [cell for table in found for row in _texts(table) for cell in row]
    assert sum(HOSTILE.replace("\n", " ") in c or HOSTILE.replace("\n", "") in c
               for c in cells) >= 5, cells
