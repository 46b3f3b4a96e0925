"""Terminal rendering shared by the commands (pure formatting plus a stage reporter).

Names and values that users choose (stages, metrics, files, run ids from records) are passed
through :func:`gha_mlops.gha.safe.log_text` before they are printed: in GitHub Actions a log
line that starts with ``::`` or holds ``##[`` is a workflow command, and a line break in a
name would start a new line. A stage's own output is relayed as it is: the stage's command
runs with the job's full power (it can write to the job's stdout and files itself), so
escaping it would protect nothing and would garble its colours and progress bars.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import click

from gha_mlops.gha.safe import log_block, log_text

_MARK = {"ran": ("✓", "green"), "cached": ("=", "blue"), "restored": ("↺", "blue"),
         "failed": ("✗", "red"), "interrupted": ("!", "yellow"), "skipped": ("-", "yellow")}


class TerminalReporter:
    """Prints stage progress; output of parallel stages is prefixed with the stage name."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet
        self._lock = threading.Lock()

    def stage_started(self, stage: str, cmd: str) -> None:
        if not self.quiet:
            with self._lock:
                click.echo(click.style(f"▶ {log_text(stage)}", bold=True)
                           + click.style(f"  {log_text(cmd)}", dim=True))

    def stage_finished(self, stage: str, status: str, seconds: float, detail: str | None) -> None:
        if self.quiet and status in ("ran", "cached", "restored"):
            return
        mark, color = _MARK.get(status, ("?", "white"))
        text = f"{mark} {log_text(stage)} {log_text(status)}"
        if status == "ran":
            text += f" ({seconds:.1f} s)"
        if detail and status not in ("ran", "cached", "restored"):
            text += f": {log_text(detail)}"
        with self._lock:
            click.echo(click.style(text, fg=color), err=status in ("failed", "interrupted"))

    def stage_line(self, stage: str, line: str) -> None:
        with self._lock:
            click.echo(click.style(f"[{log_text(stage)}] ", dim=True) + line)

    def note(self, line: str) -> None:
        if not self.quiet:
            with self._lock:
                click.echo(click.style(f"· {log_text(line)}", dim=True))


def short(digest: str | None, n: int = 12) -> str:
    return digest[:n] if digest else "-"


def format_metric(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def headline_metrics(metrics: Mapping[str, Mapping[str, Any]], limit: int = 6,
                     first: Sequence[str] = ()) -> list[str]:
    """At most ``limit`` metrics, headline first (the gated ones, named in ``first``, then
    top-level keys with the metrics files taking turns: see
    :mod:`gha_mlops.reporting.metric_order`), and a line saying how many are left out."""
    from gha_mlops.reporting.metric_order import headline_order

    rows = [(file, str(key), value) for file, values in metrics.items()
            if isinstance(values, Mapping) for key, value in values.items()]
    order = headline_order([(file, key) for file, key, _ in rows], first)
    shown = [f"{log_text(key)} = {log_text(format_metric(value))}  ({log_text(file)})"
             for file, key, value in (rows[i] for i in order[:limit])]
    if len(rows) > limit:
        shown.append(f"... and {len(rows) - limit} more: gha-mlops runs show --json")
    return shown


def run_summary(record: Mapping[str, Any], first: Sequence[str] = ()) -> str:
    """The lines ``gha-mlops run`` prints at the end: the run, its stages, model and headline
    metrics (``first``: the gated metric names, shown first). Safe to print in Actions: no
    line of it is a workflow command."""
    stages = record.get("stages", [])
    counts: dict[str, int] = {}
    for s in stages:
        counts[s["status"]] = counts.get(s["status"], 0) + 1
    parts = [f"{n} {log_text(status)}" for status, n in counts.items()]
    lines = [f"run {log_text(record['id'])}: {log_text(record['status'])} "
             f"({', '.join(parts) or 'no stages'}) in {record.get('duration_s', 0):.1f} s"]
    if counts and set(counts) <= {"cached"}:
        lines.append("everything was up to date: all stages came from the cache")
    model = record.get("model")
    if model:
        lines.append(f"model {log_text(model['path'])} sha256 {log_text(model['sha256'])}")
    for m in headline_metrics(record.get("metrics") or {}, first=first):
        lines.append(f"  {m}")
    # Values are escaped one by one (a line break in one shows); the lines as a whole once
    # more, in case two values side by side make "##[" together.
    return log_block("\n".join(lines))
