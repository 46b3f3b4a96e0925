"""What ``gha-mlops monitor check`` shows and does with a result: the report (``--output``),
``--act`` (the drift issue and the retraining dispatch, through the GitHub port), the verdict
printed (text or ``--json``), the step summary and the step outputs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gha_mlops.errors import UsageError

if TYPE_CHECKING:
    from gha_mlops.config.model import MonitorModel
    from gha_mlops.monitor.check import CheckResult


def render(result: CheckResult, cfg: MonitorModel, location: Any, *, output: Path | None,
           as_json: bool, act: bool, app_token: bool, now: float) -> None:
    """The report where it was asked for, then ``--act``, then the outputs."""
    from gha_mlops.gha.safe import log_json, log_text
    from gha_mlops.monitor import report

    notes: list[str] = []
    if output is not None:
        written = report.write_report(result, output)
        notes += [written.warning] if written.warning else []
        notes.append(f"report: {output / 'report.md'} ({len(written.files)} files)")
    summary = report.render_markdown(result, plots_note=(
        f"Plots: in {output}." if output is not None else None))
    if act:
        notes += _act(cfg, result, summary, location, now, app_token)
    for note in notes:
        click.echo(log_text(note), err=True)
    doc = report.verdict_json(result)
    if as_json:
        click.echo(log_json(json.dumps(doc, indent=2, allow_nan=False)))
    else:
        _text(result)
    from gha_mlops.gha import Actions

    actions = Actions(os.environ)
    actions.summary(summary)
    verdict = result.verdict
    actions.set_output("verdict", json.dumps(doc, separators=(",", ":"), allow_nan=False))
    actions.set_output("status", verdict.status)
    actions.set_output("tripped", str(verdict.tripped).lower())
    actions.set_output("dispatch", str(verdict.dispatch).lower())


def _text(result: CheckResult) -> None:
    from gha_mlops.gha.safe import log_text
    from gha_mlops.monitor.report import iso

    v = result.verdict
    click.echo(f"{log_text(result.model)} {log_text(result.version)}: "
               + click.style(v.status, bold=True)
               + f" ({iso(result.start)} to {iso(result.end)}, {result.rows} rows)")
    click.echo(f"  alarm: {log_text(v.reason)}" + ("; dispatch a retraining" if v.dispatch
                                                    else ""))
    if result.share is not None:
        drifted = [f.name for f in result.features if f.drifted]
        click.echo(f"  {len(drifted)} of {len(result.features)} features drifted"
                   + (": " + ", ".join(log_text(n) for n in drifted[:10]) if drifted else "")
                   + (" ..." if len(drifted) > 10 else ""))
    perf = result.performance
    if perf is not None and perf.accuracy is not None:
        click.echo(f"  accuracy {perf.accuracy:.4g} on {perf.labelled} labelled rows")
    for u in result.untested[:10]:
        click.echo(f"  not tested: {log_text(u.name)} ({u.reason})")
    if result.skipped:
        click.echo("  skipped: " + ", ".join(f"{k} {n}" for k, n in result.skipped.items()))


def _act(model: MonitorModel, result: CheckResult, report_md: str, location: Any,
         now: float, app_token: bool) -> list[str]:
    """Write the verdict to GitHub (the drift issue; the retraining when owed), then store
    the state that comes back (the dispatch recorded). A GitHub failure is raised only
    after that state is stored: a dispatch that failed stays owed for the next run."""
    from gha_mlops import bootstrap
    from gha_mlops.gha.safe import log_text
    from gha_mlops.github.port import GitHubError
    from gha_mlops.monitor.act import act_on

    repo = os.environ.get("GITHUB_REPOSITORY")
    if not repo:
        raise UsageError("--act needs GITHUB_REPOSITORY (owner/name)",
                         hint="run it in GitHub Actions, or set GITHUB_REPOSITORY and "
                              "GITHUB_TOKEN")
    run_id = os.environ.get("GITHUB_RUN_ID")
    run_url = (f"{bootstrap.github_server_url(os.environ)}/{repo}/actions/runs/{run_id}"
               if run_id else None)
    with bootstrap.github(os.environ, need="--act") as port:
        done = act_on(port, repo, model, verdict=result.verdict, state=result.state,
                      report_md=report_md, now=now, run_url=run_url, app_token=app_token)
    if done.state != result.state:
        location.save(done.state)
    if done.errors:
        for note in done.notes:
            click.echo(log_text(note), err=True)
        raise GitHubError("acting on the drift verdict failed: " + "; ".join(done.errors),
                          hint="the alarm state is saved; the next check retries what is "
                               "owed")
    return list(done.notes)
