"""``gha-mlops monitor``: watch a served model: ``check`` compares a window of its prediction
log with the reference profile it was packaged with (drift, with hysteresis) and can act on
the verdict; ``collect`` turns labelled feedback into a new version of a dataset. See
docs/monitoring.md."""

from __future__ import annotations

import click


@click.group()
def monitor() -> None:
    """Monitor a served model: drift checks against its reference profile, the drift issue
    and the retraining dispatch, and labelled feedback into a dataset. See
    docs/monitoring.md."""


# The subcommands, one module each (registered here, one line each).
# -- check --
monitor.add_command(__import__("gha_mlops.cli._monitor_check", fromlist=["_"]).check)
# -- collect --
monitor.add_command(__import__("gha_mlops.cli._monitor_collect", fromlist=["_"]).collect)
