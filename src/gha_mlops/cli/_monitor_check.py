"""``gha-mlops monitor check MODEL``: one window of the model's prediction log against its
reference profile; the verdict printed, as JSON, in the step summary and the step outputs;
with ``--act`` the drift issue and the retraining dispatch. The check is
:func:`gha_mlops.monitor.check.run_check`; the report :mod:`gha_mlops.monitor.report`.

Exit 0 for every verdict, drift included (a drift is news, not a failure of the command:
branch on the ``status`` / ``dispatch`` outputs); 2 for a bad command line, config or
alarm state; the house's codes otherwise (docs/exit-codes.md).
"""

from __future__ import annotations

import json
import math
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gha_mlops.errors import UsageError, quoted

if TYPE_CHECKING:
    from gha_mlops.config.model import MonitorModel
    from gha_mlops.monitor.check import CheckResult
    from gha_mlops.monitor.profile import Profile


def parse_window(value: str) -> float:
    """Seconds of ``--window`` ("24h", "90m", "7d", "3600"), a minute to 366 days."""
    from gha_mlops.config._monitor import WINDOW_S, parse_duration

    try:
        seconds = parse_duration(float(value) if value.replace(".", "", 1).isdigit()
                                 else value)
    except ValueError as err:
        raise UsageError(f"--window {quoted(value)}: {err}",
                         hint="e.g. --window 24h, 90m or 7d") from None
    if not WINDOW_S[0] <= seconds <= WINDOW_S[1]:
        raise UsageError(f"--window {quoted(value)} is {seconds:g} s, expected 1 minute to "
                         "366 days", hint="e.g. --window 24h")
    return seconds


def parse_time(value: str) -> float:
    """Unix seconds of ``--end``: unix seconds, or an ISO 8601 time (UTC unless it says)."""
    try:
        t = float(value)
    except ValueError:
        try:
            when = datetime.fromisoformat(value.strip())
        except ValueError:
            raise UsageError(f"--end {quoted(value)} is not a time",
                             hint="give unix seconds or ISO 8601, e.g. 2026-03-10T00:00:00Z"
                             ) from None
        t = (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()
    if not math.isfinite(t) or not 0 <= t <= 253402300799:
        raise UsageError(f"--end {quoted(value)} is outside 1970 to 9999",
                         hint="e.g. --end 2026-03-10T00:00:00Z")
    return t


def monitored_model(workspace: Path, name: str) -> MonitorModel:
    """``monitor.models.<name>`` of the workspace's mlops.yaml; a UsageError naming the
    file when it has no ``monitor:`` or no such model."""
    from gha_mlops.config import DEFAULT_CONFIG, load_pipeline

    config_file = workspace / DEFAULT_CONFIG
    monitor = load_pipeline(config_file).monitor
    models = monitor.models if monitor is not None else {}
    if name not in models:
        raise UsageError(
            f"{config_file} does not monitor {quoted(name)}"
            + ("" if monitor is not None else " (it has no `monitor:` section)"),
            hint="monitored models: " + (", ".join(sorted(models)) or "none") + "; declare "
                 f"it as `monitor: {{models: {{{name}: {{log: logs/predictions}}}}}}` "
                 "(docs/monitoring.md)", file=config_file)
    return models[name]


def _reference(workspace: Path, model: MonitorModel, version: str | None,
               profile_file: Path | None) -> tuple[str, Profile]:
    """The version judged and its reference profile. ``--version`` with ``--profile``
    needs no registry; otherwise the registry names the version (given, at the model's
    stage, or the newest) and its lineage the profile."""
    from gha_mlops.monitor import reference
    from gha_mlops.monitor.profile import load_profile

    if version is not None and profile_file is not None:
        try:
            data = profile_file.read_bytes()
        except OSError as err:
            raise UsageError(f"cannot read --profile {profile_file}: {err.strerror}",
                             hint="give the profile.json of the packaged model") from None
        return version, load_profile(data, where=str(profile_file))
    mv = reference.monitored_version(workspace, model.name, version=version, stage=model.stage)
    return mv.version, reference.load_reference(workspace, mv, profile_file=profile_file)


def _act(model: MonitorModel, result: CheckResult, report_md: str, location: Any,
         now: float) -> list[str]:
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
                      report_md=report_md, now=now, run_url=run_url)
    if done.state != result.state:
        location.save(done.state)
    if done.errors:
        for note in done.notes:
            click.echo(log_text(note), err=True)
        raise GitHubError("acting on the drift verdict failed: " + "; ".join(done.errors),
                          hint="the alarm state is saved; the next check retries what is "
                               "owed")
    return list(done.notes)


@click.command("check")
@click.argument("model")
@click.option("--window", "window", default=None, metavar="DURATION",
              help="The window checked, ending at --end: 24h, 90m, 7d (default: the "
                   "model's monitor window, 24h).")
@click.option("--end", "end", default=None, metavar="TIME",
              help="When the window ends: ISO 8601 (UTC unless it says) or unix seconds "
                   "(default: now).")
@click.option("--version", default=None, help="The version judged (default: the one at the "
              "model's monitor stage, else the newest registered).")
@click.option("--log", "log", default=None, metavar="LOCATION",
              help="The prediction log: a folder or s3://bucket/prefix (default: the "
                   "model's monitor log).")
@click.option("--profile", "profile_file", default=None, metavar="FILE",
              type=click.Path(dir_okay=False, path_type=Path),
              help="The reference profile (default: the one the version's lineage names).")
@click.option("--state", "state_file", default=None, metavar="FILE",
              type=click.Path(dir_okay=False, path_type=Path),
              help="The drift alarm's state (default: <log>/<model>/monitor/alarm.json).")
@click.option("--output", "output", default=None, metavar="DIR",
              type=click.Path(file_okay=False, path_type=Path),
              help="Write report.md, verdict.json and the plots here.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@click.option("--act", is_flag=True, help="Act on the verdict: the drift issue and the "
              "retraining dispatch (GITHUB_TOKEN, GITHUB_REPOSITORY).")
@click.option("--workspace", "-C", "workspace", default=".", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="The workspace (the directory of mlops.yaml).")
def check(model: str, window: str | None, end: str | None, version: str | None,
          log: str | None, profile_file: Path | None, state_file: Path | None,
          output: Path | None, as_json: bool, act: bool, workspace: Path) -> None:
    """Check MODEL's prediction log for drift over a window against its reference profile.

    Exit 0 for every verdict (ok, watch, drift, cooldown, not enough data): read the
    verdict from the output, --json or the step outputs. See docs/monitoring.md.
    """
    from gha_mlops.monitor.check import CheckRequest, run_check

    now = time.time()
    cfg = monitored_model(workspace, model)
    window_s = parse_window(window) if window is not None else cfg.window_s
    judged, profile = _reference(workspace, cfg, version, profile_file)
    result, location = run_check(CheckRequest(
        workspace=workspace, model=cfg, version=judged, profile=profile,
        end=parse_time(end) if end is not None else now, window_s=window_s, log=log,
        state_file=state_file), now=now)
    try:
        _render(result, cfg, location, output=output, as_json=as_json, act=act, now=now)
    finally:
        location.close()


def _render(result: CheckResult, cfg: MonitorModel, location: Any, *, output: Path | None,
            as_json: bool, act: bool, now: float) -> None:
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
        notes += _act(cfg, result, summary, location, now)
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
