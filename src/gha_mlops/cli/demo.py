"""``gha-mlops demo``: the embedded example, end to end (:func:`gha_mlops.demo.run.demo`)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import click

from gha_mlops import bootstrap
from gha_mlops.cli._demo_release import show_release
from gha_mlops.cli._render import TerminalReporter, format_metric
from gha_mlops.demo import DATASET
from gha_mlops.demo.release import ReleaseTo
from gha_mlops.demo.run import DemoOutcome, Setup
from gha_mlops.demo.run import demo as run_demo

DEFAULT_DIR = "gha-mlops-demo"


@click.command()
@click.argument("directory", default=DEFAULT_DIR, type=click.Path(file_okay=False, path_type=Path))
@click.option("--reset", is_flag=True, help="Overwrite example files you have changed in DIR.")
@click.option("--no-run", is_flag=True, help="Only write the project; do not run it.")
@click.option("--jobs", "-j", default=1, show_default=True, type=click.IntRange(1, 64))
def demo(directory: Path, reset: bool, no_run: bool, jobs: int) -> None:
    """Write the example project (8x8 handwritten digits, a small CNN) into DIRECTORY and run it.

    The digits data set is a versioned dataset: git holds its pointer, and the data sits in
    the project's dataset remote (DIRECTORY/demo-remote/), from which the run fetches it.
    Files you already have in DIRECTORY are kept unless --reset; running it again therefore
    shows the pipeline fully cached. The project is made a git repository (unless it is inside
    one already), so its runs record a commit and `gha-mlops reproduce` checks it out.
    """
    shown = _display(directory)

    def prepared(setup: Setup) -> None:
        kept = setup.total - setup.written
        click.echo(f"example project in {shown}/ ({setup.written} files written"
                   + (f", {kept} already there kept as they are" if kept and not reset else "")
                   + (f", {kept} already up to date" if kept and reset else "") + ")")
        if setup.seeded:
            click.echo(f"dataset {DATASET} put in the project's dataset remote "
                       f"{shown}/demo-remote/ (a directory standing in for a shared disk or a "
                       "bucket)")

    outcome = run_demo(directory, reset=reset, run=not no_run, environ=dict(os.environ),
                       open_store=bootstrap.object_stores(),
                       jobs=jobs, reporter=TerminalReporter(), prepared=prepared,
                       release_to=ReleaseTo(bootstrap.image_engine(os.environ),
                                            bootstrap.wheel_cache(os.environ),
                                            bootstrap.signature_deriver()[0]))
    if no_run:
        click.echo(f"run it with: cd {shlex.quote(shown)} && gha-mlops run")
        return
    _show(outcome, shown)


def _show(outcome: DemoOutcome, shown: str) -> None:
    record = outcome.record
    assert record is not None
    click.echo("")
    click.echo(click.style("demo finished", bold=True) + f" in {record.duration_s or 0:.1f} s")
    click.echo(f"  stages run     {', '.join(outcome.ran) or 'none'}")
    click.echo(f"  from cache     {', '.join(outcome.cached) or 'none'}"
               + ("   (fully cached: nothing changed)" if not outcome.ran else ""))
    for key, value in outcome.headline:
        click.echo(f"  {key:<14} {format_metric(value)}")
    if outcome.model:
        click.echo(f"  model sha256   {outcome.model.sha256}  ({outcome.model.path})")
    if outcome.kernels:
        click.echo(f"  CPU kernels    {outcome.kernels}")
    click.echo(f"  run id         {record.id}")
    cd = f"cd {shlex.quote(shown)}"
    if outcome.release is not None:
        show_release(outcome.release, cd)
    click.echo("")
    click.echo("next, try:")
    click.echo(f"  {cd} && gha-mlops runs show latest      # the run record: data, params, env, outputs")
    click.echo(f"  {cd} && gha-mlops reproduce latest      # re-run from scratch, prove bit-identical")
    click.echo(f"  edit {shown}/params.yaml (train.epochs), then: {cd} && gha-mlops run   # only affected stages rerun")


def _display(path: Path) -> str:
    """``path`` relative to the current directory when it lies below it, else absolute
    (``cd ../../tmp/demo`` reads worse than ``cd /tmp/demo``)."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path.absolute())
    return str(path.absolute()) if rel.startswith("..") else rel
