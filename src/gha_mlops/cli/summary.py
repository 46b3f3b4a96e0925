"""``gha-mlops summary``: a run record as Markdown, for ``$GITHUB_STEP_SUMMARY``."""

from __future__ import annotations

import os
from pathlib import Path

import click

from gha_mlops.config import DEFAULT_CONFIG


@click.command()
@click.argument("run", default="latest")
@click.option("--config", "-c", "config", default=DEFAULT_CONFIG, show_default=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="The pipeline file; its directory is the workspace.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE", help="Write the Markdown to FILE.")
def summary(run: str, config: Path, output: Path | None) -> None:
    """Render a run as GitHub-flavoured Markdown: metrics, stages, datasets and plots.

    RUN is an id, a unique prefix of one, `latest`, `latest~N`, or a run record file
    (.gha-mlops/runs/<id>.json, e.g. from a downloaded artifact). In GitHub Actions the
    Markdown goes to the job's step summary (shortened to fit its 1 MiB limit if need be),
    elsewhere to stdout; --output also writes it, whole, to FILE.
    """
    from gha_mlops import bootstrap
    from gha_mlops.reporting.step_summary import SummaryRequest, write_summary

    environ = os.environ
    write_summary(SummaryRequest(run, config, output), bootstrap.github_context(environ),
                  bootstrap.actions(environ), click.echo)
