"""``gha-mlops runs list`` and ``gha-mlops runs show``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from gha_mlops.cli._render import format_metric, short
from gha_mlops.cli._run_text import describe
from gha_mlops.gha.safe import log_block, log_json, log_text
from gha_mlops.runs.store import RunStore

_dir_option = click.option(
    "--dir", "-C", "workspace", default=".", show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The workspace (the directory of mlops.yaml).")


@click.group()
def runs() -> None:
    """List and show run records (.gha-mlops/runs)."""


@runs.command("list")
@_dir_option
@click.option("--json", "as_json", is_flag=True, help="A JSON list of run summaries.")
@click.option("--all", "show_all", is_flag=True, help="Include reproduction records.")
def list_runs(workspace: Path, as_json: bool, show_all: bool) -> None:
    """List recorded runs, oldest first."""
    entries = [e for e in RunStore.of(workspace).list()
               if show_all or e.get("kind", "run") == "run"]
    if as_json:
        click.echo(log_json(json.dumps(entries, indent=2, sort_keys=True)))
        return
    if not entries:
        click.echo("no runs recorded yet: run `gha-mlops run`")
        return
    click.echo(f"{'RUN':<24} {'STATUS':<11} {'RAN':>3} {'CACHED':>6}  {'MODEL':<12}  METRICS")
    for e in entries:
        top = sorted(e["metrics"].items(), key=lambda kv: kv[0].count("."))[:3]
        metrics = ", ".join(f"{log_text(k)}={log_text(format_metric(v))}" for k, v in top)
        kind = "" if e.get("kind", "run") == "run" else f" [{log_text(e['kind'])}]"
        click.echo(log_text(f"{log_text(e['id']):<24} {log_text(e['status']):<11} "
                            f"{e['stages_ran']:>3} {e['stages_cached']:>6}  "
                            f"{log_text(short(e.get('model_sha256'))):<12}  {metrics}{kind}"))


@runs.command("show")
@click.argument("run", default="latest")
@_dir_option
@click.option("--json", "as_json", is_flag=True, help="The whole run record as JSON.")
def show_run(run: str, workspace: Path, as_json: bool) -> None:
    """Show one run: RUN is an id, a unique prefix of one, `latest` or `latest~N`."""
    record = RunStore.of(workspace).record(run)
    if as_json:
        click.echo(log_json(json.dumps(record.to_json(), indent=2, sort_keys=True)))
        return
    click.echo(describe(record))


@runs.command("files")
@click.argument("run", default="latest")
@_dir_option
@click.option("--github-output", "output_name", metavar="NAME",
              help="In GitHub Actions, also set step output NAME to the list (one per line).")
def run_files(run: str, workspace: Path, output_name: str | None) -> None:
    """The files of a run that exist here, one absolute path per line: its record, then every
    declared output, metrics and plots file (what an artifact of the run should hold)."""
    import os

    from gha_mlops.gha import Actions

    store = RunStore.of(workspace)
    record = store.record(run)
    root = workspace.absolute()
    paths = [store.path(record.id).absolute()]
    paths += [root / rel for rel in record.outputs]
    existing = [str(p) for p in paths if p.exists()]
    text = "\n".join(existing)
    click.echo(log_block(text))
    if output_name:
        Actions(os.environ).set_output(output_name, text)
