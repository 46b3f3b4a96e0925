"""``gha-mlops run``."""

from __future__ import annotations

import os
from pathlib import Path

import click

from gha_mlops.cli._render import TerminalReporter, run_summary
from gha_mlops.config import DEFAULT_CONFIG, load_pipeline
from gha_mlops.errors import StageFailedError
from gha_mlops.pipeline.engine import RunOptions, run_pipeline


@click.command()
@click.option("--config", "-c", "config", default=DEFAULT_CONFIG, show_default=True,
              type=click.Path(dir_okay=False, path_type=Path), help="The pipeline file.")
@click.option("--force", "-f", is_flag=True, help="Run every selected stage, ignoring the cache.")
@click.option("--stage", "-s", "stages", multiple=True, metavar="NAME",
              help="Run only this stage and what it depends on (repeatable).")
@click.option("--jobs", "-j", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Run up to N independent stages in parallel.")
@click.option("--wait", default=0.0, type=click.FloatRange(0), metavar="SECONDS",
              help="If another run holds the workspace, wait up to this long for it.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the summary.")
def run(config: Path, force: bool, stages: tuple[str, ...], jobs: int, wait: float,
        quiet: bool) -> None:
    """Run the pipeline in mlops.yaml.

    A stage runs only when its signature changed: its command, the content of its deps, the
    params it reads, the environment lock or the seed. Outputs of earlier signatures are
    restored from the cache instead of re-running. Every run writes a run record.
    """
    pipeline = load_pipeline(config)
    try:
        result = run_pipeline(
            pipeline,
            RunOptions(environ=dict(os.environ), force=force, targets=stages, jobs=jobs,
                       wait=wait),
            TerminalReporter(quiet=quiet),
        )
    except StageFailedError as err:
        failed = getattr(err, "result", None)
        if failed is not None:
            click.echo(run_summary(failed.record), err=True)
        raise
    click.echo(run_summary(result.record))
