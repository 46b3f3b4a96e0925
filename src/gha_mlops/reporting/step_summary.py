"""``gha-mlops summary`` as a service: a run's summary to the step summary, a file or stdout.

:func:`write_summary` resolves the run, renders it (:func:`~gha_mlops.reporting.run_summary.
render_run_summary`), and writes it where the environment says: the job's step summary in
GitHub Actions (shortened to fit what is left of its 1 MiB), else stdout; ``output`` also
gets it whole.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

from gha_mlops._fs import atomic_write_text
from gha_mlops.gha.runtime import Actions
from gha_mlops.gha.safe import log_block, log_text
from gha_mlops.reporting.context import Echo, GitHubContext
from gha_mlops.reporting.run_summary import (
    SummaryOptions,
    render_run_summary,
    summary_room_bytes,
)
from gha_mlops.runs.record import RunRecord
from gha_mlops.runs.refs import resolve


@dataclass(frozen=True)
class SummaryRequest:
    """What ``gha-mlops summary`` was asked: the run, the pipeline file (its folder is the
    workspace) and where else to write the Markdown."""

    run: str = "latest"
    config: Path = Path("mlops.yaml")
    output: Path | None = None


def write_summary(request: SummaryRequest, context: GitHubContext, actions: Actions,
                  echo: Echo) -> None:
    """Render the run ``request.run`` names and write it (see the module documentation);
    ``echo`` prints what was done, or the Markdown itself outside Actions."""
    workspace = request.config.absolute().parent
    located = resolve(request.run, workspace)
    record, files = located.record, located.files_root or workspace
    repo_url, run_url = _urls(context)
    options = SummaryOptions(repo_url=repo_url, run_url=run_url,
                             declared_plots=_declared_plots(request.config, record))
    markdown = render_run_summary(record, files, options)
    output = request.output
    if output is not None:
        atomic_write_text(output, markdown)
    if actions.active and context.step_summary is not None:
        limit = max(summary_room_bytes(context.step_summary), 4096)
        shortened = len(markdown.encode()) > limit
        if shortened:
            markdown = render_run_summary(record, files,
                                          dataclasses.replace(options, limit_bytes=limit))
        actions.summary(markdown)
        echo(f"wrote the summary of run {log_text(record.id)} to the step summary"
             + (" (shortened to fit its size limit)" if shortened else "")
             + (f" and to {log_text(output)}" if output is not None else ""))
    elif output is not None:
        echo(f"wrote the summary of run {log_text(record.id)} to {log_text(output)}")
    else:
        # Markdown keeps code spans raw; printed to a job's log, no line may be a command.
        echo(log_block(markdown), nl=False)


def _declared_plots(config: Path, record: RunRecord) -> dict[str, str]:
    """Plot path -> stage, from ``config`` when it is the file the run was made from (so a
    plot of a stage that failed is listed as missing rather than silently absent)."""
    from gha_mlops.config import load_pipeline
    from gha_mlops.errors import GhaMlopsError

    try:
        current = hashlib.sha256(config.read_bytes()).hexdigest()
    except OSError:
        return {}
    if current != record.config.get("sha256"):
        return {}
    try:
        pipeline = load_pipeline(config)
    except GhaMlopsError:  # the summary of a recorded run does not need a loadable config
        return {}
    return {o.path: s.name for s in pipeline.stages.values() for o in s.outs if o.kind == "plot"}


def _urls(context: GitHubContext) -> tuple[str | None, str | None]:
    """The repository's URL (to link the commit) and the workflow run's (its artifacts)."""
    server, repo = context.server_url, context.repository
    repo_url = f"{server.rstrip('/')}/{repo}" if server and repo else None
    run_url = f"{repo_url}/actions/runs/{context.run_id}" if repo_url and context.run_id else None
    return repo_url, run_url

