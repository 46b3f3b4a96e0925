"""``gha-mlops monitor collect MODEL --into DATASET``: labelled feedback of a window of the
prediction log into a new version of a directory dataset (:mod:`gha_mlops.monitor.collect`)."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gha_mlops.errors import UsageError

if TYPE_CHECKING:
    from gha_mlops.monitor.collect import CollectResult


@contextlib.contextmanager
def log_source(workspace: Path, location: str) -> Iterator[Any]:
    """The log at ``location``, as ``monitor check`` opens it (a folder relative to the
    workspace, or an ``s3://`` store, closed after use)."""
    from gha_mlops.monitor.check import open_log

    source = open_log(location, workspace)
    try:
        yield source
    finally:
        if not isinstance(source, Path):
            source.close()


@click.command("collect")
@click.argument("model")
@click.option("--into", "into", default=None, metavar="DATASET", help="The directory dataset "
              "to append to (default: monitor.models.MODEL.collect_into).")
@click.option("--window", default=None, metavar="DURATION", help="The window that ends at "
              "--end: 90m, 24h, 7d (default: the model's window, else 24h).")
@click.option("--end", default=None, metavar="TIME", help="The end of the window, UTC "
              "(2026-03-10T12:00Z, 2026-03-10 or unix seconds; default: now).")
@click.option("--log", "log", default=None, metavar="LOCATION", help="The prediction log: "
              "a folder or s3://bucket/prefix (default: the model's log).")
@click.option("--version", "version", default=None, metavar="V", help="Collect only the "
              "rows this model version served (default: every version).")
@click.option("--max-rows", type=click.IntRange(1, 5_000_000), default=1_000_000,
              show_default=True, help="Append at most this many rows; the next collect "
              "takes the rest.")
@click.option("--remote", default=None, metavar="NAME", help="Push to this remote (default: "
              "the default one).")
@click.option("--no-push", is_flag=True, help="Re-add the dataset, but do not push it.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--workspace", "-C", "workspace", default=".", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="The workspace (the directory of mlops.yaml).")
def collect(model: str, into: str | None, window: str | None, end: str | None,
            log: str | None, version: str | None, max_rows: int, remote: str | None,
            no_push: bool, as_json: bool, workspace: Path) -> None:
    """Append the labelled predictions of MODEL's window to a dataset.

    Rows of the prediction log whose request id got a label (feedback read up to now: labels
    arrive late) are appended as one CSV file (id,t,version,<features>,label) to the
    directory dataset, once each: ids collected before are skipped. The dataset is then
    re-added and pushed, so the next run that depends on data:DATASET records the new
    version. See docs/monitoring.md.
    """
    from gha_mlops import bootstrap
    from gha_mlops.cli._monitor_check import parse_time, parse_window
    from gha_mlops.config.model import MonitorModel
    from gha_mlops.data.service import Workspace
    from gha_mlops.monitor.collect import collect as run_collect

    # With both --log and --into, an undeclared model is collected as given.
    cfg = bootstrap.monitor_model(
        workspace, model, also="; or give both --log and --into",
        fallback=MonitorModel(name=model, log=log, collect_into=into)
        if log is not None and into is not None else None)
    dataset = into or cfg.collect_into
    if dataset is None:
        raise UsageError(f"no dataset to collect {model} into",
                         hint=f"give --into DATASET, or set monitor.models.{model}."
                              "collect_into in mlops.yaml")
    now = time.time()
    stop = parse_time(end) if end is not None else now
    span = parse_window(window) if window is not None else cfg.window_s
    with log_source(workspace, log or cfg.log) as source:
        result = run_collect(Workspace(workspace), cfg, source, start=stop - span, end=stop,
                             into=dataset, version=version, max_rows=max_rows,
                             labels_until=now + 3600, push=not no_push, remote=remote,
                             opener=bootstrap.object_stores())
    _render(result, as_json=as_json)


def _render(res: CollectResult, *, as_json: bool) -> None:
    from dataclasses import asdict

    from gha_mlops.gha.runtime import Actions
    from gha_mlops.gha.safe import log_text, markdown_code, markdown_text

    if as_json:
        click.echo(json.dumps(asdict(res), indent=2, sort_keys=True, default=dict))
    else:
        what = (f"collected {res.rows} rows into {log_text(res.dataset)} ({log_text(res.file)})"
                if res.rows else f"nothing new to collect into {log_text(res.dataset)}")
        click.echo(f"{what}: {res.labelled} of the window's {res.window_rows} rows have a "
                   f"label, {res.already} were collected before")
        if res.left:
            click.echo(f"  {res.left} more rows wait for the next collect (--max-rows)")
        for kind, counts in (("log", res.log_skipped), ("feedback", res.feedback_skipped)):
            if counts:
                click.echo(f"  skipped in the {kind}: " + ", ".join(
                    f"{n} {reason}" for reason, n in sorted(counts.items())))
        pushed = f", pushed to {log_text(res.remote)}" if res.remote else ", not pushed"
        click.echo(f"  dataset {log_text(res.dataset)} is at {res.version[:12]}{pushed}")
    actions = Actions(os.environ)
    actions.set_output("rows", str(res.rows))
    actions.set_output("dataset", res.dataset)
    actions.set_output("version", res.version)
    actions.summary(
        f"### Feedback of {markdown_text(res.model)} collected into "
        f"{markdown_text(res.dataset)}\n\n{res.rows} new labelled rows"
        + (f" in {markdown_code(res.file)}" if res.file else "")
        + f"; dataset version {markdown_code(res.version[:12])}"
        + (f", pushed to {markdown_text(res.remote)}" if res.remote else "") + "\n")
