"""``gha-mlops sweep plan`` and ``gha-mlops sweep select``: options in, one call to
:mod:`gha_mlops.sweep`, its result out."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from gha_mlops.sweep.plan import MAX_MATRIX_LEGS

if TYPE_CHECKING:
    from gha_mlops.sweep.select import Selection


@click.group()
def sweep() -> None:
    """Parameter sweeps: a matrix of pipeline runs with different params, and the best one.

    \b
    In a workflow:
      plan job:    gha-mlops sweep plan --grid sweep.yaml      -> output `matrix`
      leg jobs:    strategy.matrix: ${{ fromJSON(needs.plan.outputs.matrix) }}
                   gha-mlops run --set KEY=VALUE ...           (one --set per line of matrix.set)
                   upload the run record as artifact run-${{ matrix.leg }}
      select job:  download the run-* artifacts into DIR
                   gha-mlops sweep select --metric M --direction max DIR
    """


@sweep.command("plan")
@click.option("--grid", "grid_file", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE", help="The grid, YAML or JSON: params keys to lists of values.")
@click.option("--grid-json", metavar="JSON", help="The grid inline, as JSON.")
@click.option("--max-legs", type=click.IntRange(1, MAX_MATRIX_LEGS), metavar="N",
              help=f"Refuse a grid of more than N legs (GitHub's limit: {MAX_MATRIX_LEGS}).")
def plan(grid_file: Path | None, grid_json: str | None, max_legs: int | None) -> None:
    """Print the GitHub Actions matrix of a parameter grid.

    A grid maps dotted params keys to lists of values (`train.lr: [0.01, 0.001]`); the legs
    are every combination, plus the explicit legs listed under `include:`. Prints
    {"include": [{"leg": ID, "set": "KEY=VALUE\\n..."}, ...]} on stdout and, in GitHub
    Actions, sets the step outputs `matrix` and `legs` (the count).
    """
    from gha_mlops.gha import Actions, log_block, log_json, log_text
    from gha_mlops.sweep.plan import plan_grid

    result = plan_grid(grid_file, grid_json, max_legs=max_legs)
    for warning in result.warnings:
        click.echo(click.style("warning: ", fg="yellow", bold=True) + log_block(warning),
                   err=True)
    matrix = json.dumps(result.matrix(), ensure_ascii=False, separators=(",", ":"))
    click.echo(log_json(matrix))  # the same JSON, and never a workflow command in the log
    for leg in result.legs:
        click.echo(f"{log_text(leg.id)}: " + log_text(" ".join(leg.set_lines.splitlines())),
                   err=True)
    actions = Actions(os.environ)
    if actions.active:
        actions.set_output("matrix", matrix)
        actions.set_output("legs", str(len(result.legs)))


@sweep.command("select")
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path), metavar="DIR_OR_FILES...")
@click.option("--metric", "-m", required=True, metavar="METRIC",
              help="KEY, or FILE:KEY (metrics/eval.json:test_accuracy) when several metrics "
              "files have KEY.")
@click.option("--direction", "-d", required=True, type=click.Choice(["max", "min"]),
              help="Whether the best value is the largest or the smallest.")
@click.option("--json", "as_json", is_flag=True, help="Print the selection as JSON.")
def select(paths: tuple[Path, ...], metric: str, direction: str, as_json: bool) -> None:
    """Rank the legs' run records by METRIC and select the best.

    Run records (.gha-mlops/runs/<id>.json) are searched recursively in each DIR; a record's
    leg is the directory it was downloaded into (artifact `run-<leg>`). Runs that did not
    succeed or lack the metric are skipped, with the reason. Ties go to the earlier leg. In
    GitHub Actions: outputs `best-leg`, `best-run-id`, `best-value`, `best-overrides`,
    `ranking`, `skipped`, `metric`, and the ranking in the step summary.
    """
    from gha_mlops.gha import Actions, log_block, log_json
    from gha_mlops.sweep.select import select_legs

    selection = select_legs(list(paths), metric, direction)
    if as_json:
        click.echo(log_json(json.dumps(selection.to_json(), indent=2, ensure_ascii=False)))
    else:
        click.echo(log_block(ranking_markdown(selection)))
    actions = Actions(os.environ)
    if actions.active:
        for name, value in selection.step_outputs().items():
            actions.set_output(name, value)
        actions.summary(ranking_markdown(selection))


def ranking_markdown(selection: Selection) -> str:
    """The selection as Markdown: the best leg, the ranking table, the skipped legs (every
    name and value escaped for where it stands)."""
    from gha_mlops.reporting.run_summary import markdown_table, md_code, md_text

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
