"""``gha-mlops reproduce``."""

from __future__ import annotations

import os
from pathlib import Path

import click

from gha_mlops.cli._render import TerminalReporter, short
from gha_mlops.config import STATE_DIR
from gha_mlops.errors import ReproductionError
from gha_mlops.gha import Actions
from gha_mlops.gha.safe import log_text
from gha_mlops.pipeline.records import RunStore
from gha_mlops.pipeline.reproduce import reproduce_run
from gha_mlops.store.lock import WorkspaceLock


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
    store = RunStore(workspace / STATE_DIR / "runs")
    record = store.load(run)
    click.echo(f"reproducing run {log_text(record['id'])} "
               f"({'commit ' + short(record['git']['commit']) if record.get('git') and record['git'].get('commit') else 'no git commit'}"
               f"{', dirty tree' if (record.get('git') or {}).get('dirty') else ''})")
    rep = reproduce_run(record, workspace.absolute(), environ=dict(os.environ),
                        allow_env_drift=allow_env_drift, keep=keep, jobs=jobs,
                        reporter=TerminalReporter(quiet=quiet))
    assert rep.result is not None
    new = dict(rep.result.record)
    new["verdict"] = {
        "reproduces": record["id"],
        "identical": rep.identical,
        "method": rep.method,
        "env_drift": rep.env_drift,
        "differences": [d.__dict__ for d in rep.differences],
    }
    with WorkspaceLock(workspace / STATE_DIR, wait=60, what="reproduce"):
        store.write(new)
    actions = Actions(os.environ)
    actions.set_output("verdict", "bit-identical" if rep.identical else "differs")
    actions.set_output("reproduction-id", new["id"])
    if rep.env_drift:
        click.echo(click.style(f"note: environment drift allowed ({len(rep.env_drift)} "
                               "differences)", fg="yellow"))
    if keep:
        click.echo(f"scratch workspace kept at {rep.workspace}")
    if rep.identical:
        click.echo(click.style("bit-identical", fg="green", bold=True)
                   + f": {rep.compared_outputs} outputs and {rep.compared_metrics} metrics match "
                   f"run {log_text(record['id'])} (reproduction recorded as {new['id']})")
        return
    lines = []
    for d in rep.differences:
        lines.append(f"{d.what} {d.name}: recorded {d.recorded}, reproduced {d.reproduced}")
    raise ReproductionError(
        f"run {record['id']} did not reproduce: {len(rep.differences)} differences "
        f"(of {rep.compared_outputs} outputs and {rep.compared_metrics} metrics)",
        hint="look for unseeded randomness, non-deterministic ops or undeclared inputs; "
        "`gha-mlops reproduce --keep` keeps the scratch workspace to compare files",
        notes=lines)
