"""``gha-mlops monitor check MODEL``: one window of the model's prediction log against its
reference profile; the verdict printed, as JSON, in the step summary and the step outputs;
with ``--act`` the drift issue and the retraining dispatch. The check is
:func:`gha_mlops.monitor.check.run_check`; the report :mod:`gha_mlops.monitor.report`.

Exit 0 for every verdict, drift included (a drift is news, not a failure of the command:
branch on the ``status`` / ``dispatch`` outputs); 2 for a bad command line, config or
alarm state; the house's codes otherwise (docs/exit-codes.md).
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import click

from gha_mlops.errors import UsageError, quoted

if TYPE_CHECKING:
    pass


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
@click.option("--app-token", is_flag=True, help="GITHUB_TOKEN is a GitHub App's token: a "
              "retraining pull request it opens runs CI (one opened with Actions' own "
              "token does not).")
@click.option("--workspace", "-C", "workspace", default=".", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="The workspace (the directory of mlops.yaml).")
def check(model: str, window: str | None, end: str | None, version: str | None,
          log: str | None, profile_file: Path | None, state_file: Path | None,
          output: Path | None, as_json: bool, act: bool, app_token: bool,
          workspace: Path) -> None:
    """Check MODEL's prediction log for drift over a window against its reference profile.

    Exit 0 for every verdict (ok, watch, drift, cooldown, not enough data): read the
    verdict from the output, --json or the step outputs. See docs/monitoring.md.
    """
    from gha_mlops import bootstrap
    from gha_mlops.cli._monitor_render import render
    from gha_mlops.monitor.check import CheckRequest, run_check
    from gha_mlops.monitor.reference import reference_for

    now = time.time()
    cfg = bootstrap.monitor_model(workspace, model)
    window_s = parse_window(window) if window is not None else cfg.window_s
    judged, profile = reference_for(workspace, model, stage=cfg.stage, version=version,
                                    profile_file=profile_file)
    result, location = run_check(CheckRequest(
        workspace=workspace, model=cfg, version=judged, profile=profile,
        end=parse_time(end) if end is not None else now, window_s=window_s, log=log,
        state_file=state_file), now=now)
    try:
        render(result, cfg, location, output=output, as_json=as_json, act=act,
               app_token=app_token, now=now)
    finally:
        location.close()
