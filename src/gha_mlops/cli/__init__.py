"""The ``gha-mlops`` command line: thin commands over the services, one error boundary.

Subcommands are imported only when invoked, so ``gha-mlops --version`` and ``--help`` start
fast and never import pydantic, torch or the SDKs.
"""

from __future__ import annotations

import importlib
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

import click

from gha_mlops import __version__
from gha_mlops.cli._errors import report_bug, report_error, show_usage_error
from gha_mlops.errors import ExitCode, GhaMlopsError

_COMMANDS = {
    "run": ("gha_mlops.cli.run", "run", "Run the pipeline; stages whose inputs are unchanged come from the cache."),
    "runs": ("gha_mlops.cli.runs", "runs", "List and show run records."),
    "reproduce": ("gha_mlops.cli.reproduce", "reproduce", "Re-run a recorded run in a scratch workspace and prove its outputs are bit-identical."),
    "data": ("gha_mlops.cli.data", "data", "Versioned datasets: add, status, push, pull, verify, gc."),
    "demo": ("gha_mlops.cli.demo", "demo", "Write the embedded example project into DIR and run it."),
    "summary": ("gha_mlops.cli.summary", "summary", "Render a run as Markdown for the GitHub Actions step summary."),
    "sweep": ("gha_mlops.cli.sweep", "sweep", "Parameter sweeps: plan a matrix of runs, select the best one."),
    "report": ("gha_mlops.cli.report", "report", "Compare a run with a baseline run (metrics, params, data, plots) and check the gates."),
    "model": ("gha_mlops.cli.model", "model", "The model registry in git tags: register, promote, demote, deprecate, list, show, history."),
    "package": ("gha_mlops.cli.package", "package", "Build a container image that serves a registered model over the Open Inference Protocol."),
    "deploy": ("gha_mlops.cli.deploy", "deploy", "Roll a packaged model out to an environment behind nginx, gated; status; rollback; KServe manifests."),
    "monitor": ("gha_mlops.cli.monitor", "monitor", "Check a served model's prediction log for drift (with hysteresis), act on it, collect labelled feedback."),
    "runners": ("gha_mlops.cli.runners", "runners", "Ephemeral self-hosted (GPU) runners: the autoscaler service and its status."),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = _COMMANDS.get(cmd_name)
        if spec is None:
            return None
        module = importlib.import_module(spec[0])
        command: click.Command = getattr(module, spec[1])
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help without importing every command module.
        rows = [(name, spec[2]) for name, spec in _COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="gha-mlops",
                      message="%(prog)s %(version)s")
def cli() -> None:
    """gha-mlops: reproducible ML pipelines with GitHub Actions as the control plane.

    \b
    Start with the embedded example:
      gha-mlops demo            write ./gha-mlops-demo and run it
      gha-mlops runs list       the runs recorded there
      gha-mlops reproduce latest
    """


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: run the CLI and turn errors into exit codes."""
    # CI cancels with SIGTERM: treat it like Ctrl-C so stages are rolled back cleanly.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        rc: Any = cli.main(args=list(argv) if argv is not None else None,
                           prog_name="gha-mlops", standalone_mode=False)
    except GhaMlopsError as err:
        rc = report_error(err)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        rc = ExitCode.INTERRUPTED
    except click.ClickException as err:
        rc = show_usage_error(err)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        rc = ExitCode.INTERRUPTED
    except Exception as err:  # the one boundary: anything else is a bug in gha-mlops
        rc = report_bug(err)
    sys.exit(rc if isinstance(rc, int) else 0)


__all__ = ["cli", "main", "report_bug", "report_error"]
