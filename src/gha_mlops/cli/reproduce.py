"""``gha-mlops reproduce``: options in, :func:`gha_mlops.pipeline.reproduce.reproduce`, the
verdict out (and, in GitHub Actions, as step outputs)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from gha_mlops import bootstrap
from gha_mlops.cli._render import TerminalReporter, short
from gha_mlops.gha import Actions
from gha_mlops.gha.safe import log_text
from gha_mlops.pipeline.reproduce import reproduce as reproduce_run
from gha_mlops.runs.record import RunRecord


@click.command()
@click.argument("run", default="latest")
@click.option("--dir", "-C", "workspace", default=".", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="The workspace (the directory of mlops.yaml).")
@click.option("--allow-env-drift", is_flag=True,
              help="Run and compare even though installed packages or the CPU kernels "
              "(architecture, CPU, instruction sets, dispatch levels) differ from the record.")
@click.option("--keep", is_flag=True, help="Keep the scratch workspace for inspection.")
@click.option("--jobs", "-j", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--quiet", "-q", is_flag=True, help="Print only the verdict.")
def reproduce(run: str, workspace: Path, allow_env_drift: bool, keep: bool, jobs: int,
              quiet: bool) -> None:
    """Re-run RUN from its record in a scratch workspace and compare every output.

    RUN is an id, a unique prefix, `latest` (default) or `latest~N`. The scratch workspace is
    the recorded commit (git worktree) when the run came from a clean commit, else a copy of
    this workspace; inputs are checked against the recorded hashes first, and the cache is
    bypassed. Before anything runs, this machine's CPU kernels are compared with the run's:
    a run trained in portable mode reproduces on any machine of its architecture, one
    trained without on a machine that dispatches the same kernels (exit 5 otherwise, naming
    what differs). Exit 0 when every output and metric is bit-identical.
    """
    rep = reproduce_run(run, workspace, environ=dict(os.environ),
                        allow_env_drift=allow_env_drift, keep=keep, jobs=jobs,
                        reporter=TerminalReporter(quiet=quiet), announce=_announce,
                        open_store=bootstrap.object_stores())
    actions = Actions(os.environ)
    actions.set_output("verdict", "bit-identical" if rep.identical else "differs")
    actions.set_output("reproduction-id", rep.reproduction_id or "")
    if rep.env_drift:
        click.echo(click.style(f"note: environment drift allowed ({len(rep.env_drift)} "
                               "differences)", fg="yellow"))
    if keep:
        click.echo(f"scratch workspace kept at {rep.workspace}")
    if not rep.identical:
        raise rep.error()
    click.echo(click.style("bit-identical", fg="green", bold=True)
               + f": {rep.compared_outputs} outputs and {rep.compared_metrics} metrics match "
               f"run {log_text(rep.run_id)} (reproduction recorded as {rep.reproduction_id})")


def _announce(record: RunRecord) -> None:
    git = record.git
    where = f"commit {short(git.commit)}" if git and git.commit else "no git commit"
    click.echo(f"reproducing run {log_text(record.id)} ({where}"
               f"{', dirty tree' if git and git.dirty else ''})")
