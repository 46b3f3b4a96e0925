"""``gha-mlops summary``: a run record as Markdown, for ``$GITHUB_STEP_SUMMARY``."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from gha_mlops.config import DEFAULT_CONFIG, STATE_DIR
from gha_mlops.reporting.run_summary import STEP_SUMMARY_LIMIT, SummaryOptions

# Room left in the step summary for what may follow (the CLI's error note, later steps' text).
_SUMMARY_RESERVE = 8 * 1024


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
    from gha_mlops._fs import atomic_write_text
    from gha_mlops.gha import Actions, log_block, log_text
    from gha_mlops.reporting.run_summary import render_run_summary

    environ = os.environ
    record, workspace = _load(run, config)
    repo_url, run_url = _urls(environ)
    options = SummaryOptions(repo_url=repo_url, run_url=run_url,
                             declared_plots=_declared_plots(config, record))
    markdown = render_run_summary(record, workspace, options)
    if output is not None:
        atomic_write_text(output, markdown)
    actions = Actions(environ)
    target = environ.get("GITHUB_STEP_SUMMARY")
    if actions.active and target:
        limit = max(STEP_SUMMARY_LIMIT - _size(Path(target)) - _SUMMARY_RESERVE, 4096)
        shortened = len(markdown.encode()) > limit
        if shortened:
            markdown = render_run_summary(record, workspace,
                                          dataclasses.replace(options, limit_bytes=limit))
        actions.summary(markdown)
        click.echo(f"wrote the summary of run {log_text(record['id'])} to the step summary"
                   + (" (shortened to fit its size limit)" if shortened else "")
                   + (f" and to {log_text(output)}" if output is not None else ""))
    elif output is not None:
        click.echo(f"wrote the summary of run {log_text(record['id'])} to {log_text(output)}")
    else:
        # Markdown keeps code spans raw; printed to a job's log, no line may be a command.
        click.echo(log_block(markdown), nl=False)


def _load(run: str, config: Path) -> tuple[dict[str, Any], Path]:
    """The record of RUN (resolved as `runs show` does, or read from a file) and the
    workspace that holds its files."""
    from gha_mlops.errors import UsageError
    from gha_mlops.pipeline.records import RunStore
    from gha_mlops.reporting.run_summary import load_record_file

    if run.endswith(".json"):
        path = Path(run)
        if not path.is_file():
            raise UsageError(f"no run record file {run}",
                             hint="give a record file, a run id, `latest` or `latest~N`")
        return load_record_file(path), _workspace_of(path) or config.absolute().parent
    workspace = config.absolute().parent
    return RunStore(workspace / STATE_DIR / "runs").load(run), workspace


def _workspace_of(record_file: Path) -> Path | None:
    """The workspace of ``<workspace>/.gha-mlops/runs/<id>.json``, where the run's metrics and
    plots sit beside the record (also in an artifact that holds the run's files)."""
    parent = record_file.absolute().parent
    if parent.name == "runs" and parent.parent.name == STATE_DIR:
        return parent.parent.parent
    return None


def _declared_plots(config: Path, record: Mapping[str, Any]) -> dict[str, str]:
    """Plot path -> stage, from ``config`` when it is the file the run was made from (so a
    plot of a stage that failed is listed as missing rather than silently absent)."""
    from gha_mlops.config import load_pipeline
    from gha_mlops.errors import GhaMlopsError

    recorded = (record.get("config") or {}).get("sha256")
    try:
        current = hashlib.sha256(config.read_bytes()).hexdigest()
    except OSError:
        return {}
    if current != recorded:
        return {}
    try:
        pipeline = load_pipeline(config)
    except GhaMlopsError:  # the summary of a recorded run does not need a loadable config
        return {}
    return {o.path: s.name for s in pipeline.stages.values() for o in s.outs if o.kind == "plot"}


def _urls(environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The repository's URL (to link the commit) and the workflow run's (its artifacts)."""
    server, repo = environ.get("GITHUB_SERVER_URL"), environ.get("GITHUB_REPOSITORY")
    repo_url = f"{server.rstrip('/')}/{repo}" if server and repo else None
    run_id = environ.get("GITHUB_RUN_ID")
    run_url = f"{repo_url}/actions/runs/{run_id}" if repo_url and run_id else None
    return repo_url, run_url


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
