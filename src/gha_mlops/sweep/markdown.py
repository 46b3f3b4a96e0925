"""The selection of a sweep as Markdown, for the step summary and the terminal."""

from __future__ import annotations

import json

from gha_mlops.reporting.run_summary import markdown_table, md_code, md_text
from gha_mlops.sweep.select import Selection


def ranking_markdown(selection: Selection) -> str:
    """The selection as Markdown: the best leg, the ranking table, the skipped legs (every
    name and value escaped for where it stands)."""
    best = selection.best
    key = selection.metric_key
    lines = [f"### 🏆 Sweep: best leg by {md_code(selection.metric, in_table=False)} "
             f"({selection.direction})", "",
             f"**{md_text(best.leg)}**: {md_code(key, in_table=False)} = "
             f"{_value(best.value)}, run {md_code(best.run_id or '-', in_table=False)}", ""]
    rows = [[str(n), md_code(c.leg), _value(c.value), md_code(c.run_id or "-"),
             md_text(", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}"
                               for k, v in c.overrides.items()) or "-")]
            for n, c in enumerate(selection.ranking, 1)]
    lines.append(markdown_table(["Rank", "Leg", md_code(key), "Run", "Overrides"], rows,
                                "rlrll"))
    if selection.skipped:
        lines += ["", "Not ranked:", ""]
        lines += [f"- {md_code(c.leg, in_table=False)}: {md_text(c.reason)}"
                  for c in selection.skipped]
    return "\n".join(lines)


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.10g}"
