"""``gha-mlops demo``: the embedded example, end to end."""

from __future__ import annotations

import importlib.util
import os
import shlex
from pathlib import Path
from typing import Any

import click

from gha_mlops.cli._render import TerminalReporter, format_metric
from gha_mlops.config import load_pipeline
from gha_mlops.errors import missing_extra
from gha_mlops.pipeline.engine import RunOptions, run_pipeline

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
    from gha_mlops.demo import DATASET, project_files, seed_remote, write_project

    if not no_run and importlib.util.find_spec("torch") is None:
        raise missing_extra("torch", "torch")
    written = write_project(directory, overwrite=reset)
    shown = _display(directory)
    kept = len(project_files()) - len(written)
    click.echo(f"example project in {shown}/ ({len(written)} files written"
               + (f", {kept} already there kept as they are" if kept and not reset else "")
               + (f", {kept} already up to date" if kept and reset else "") + ")")
    _git_init(directory)
    if seed_remote(directory):
        click.echo(f"dataset {DATASET} put in the project's dataset remote {shown}/demo-remote/ "
                   "(a directory standing in for a shared disk or a bucket)")
    if no_run:
        click.echo(f"run it with: cd {shlex.quote(shown)} && gha-mlops run")
        return
    pipeline = load_pipeline(directory / "mlops.yaml")
    result = run_pipeline(pipeline, RunOptions(environ=dict(os.environ), jobs=jobs),
                          TerminalReporter())
    record = result.record
    stages = record["stages"]
    ran = [s["name"] for s in stages if s["status"] == "ran"]
    cached = [s["name"] for s in stages if s["status"] in ("cached", "restored")]
    click.echo("")
    click.echo(click.style("demo finished", bold=True) + f" in {record['duration_s']:.1f} s")
    click.echo(f"  stages run     {', '.join(ran) or 'none'}")
    click.echo(f"  from cache     {', '.join(cached) or 'none'}"
               + ("   (fully cached: nothing changed)" if not ran else ""))
    metrics = record.get("metrics", {}).get("metrics/eval.json", {})
    for key in ("test_accuracy", "macro_f1"):
        if key in metrics:
            click.echo(f"  {key:<14} {format_metric(metrics[key])}")
    model = record.get("model") or {}
    if model:
        click.echo(f"  model sha256   {model['sha256']}  ({model['path']})")
    kernels = _kernels(record)
    if kernels:
        click.echo(f"  CPU kernels    {kernels}")
    click.echo(f"  run id         {record['id']}")
    click.echo("")
    click.echo("next, try:")
    cd = f"cd {shlex.quote(shown)}"
    click.echo(f"  {cd} && gha-mlops runs show latest      # the run record: data, params, env, outputs")
    click.echo(f"  {cd} && gha-mlops reproduce latest      # re-run from scratch, prove bit-identical")
    click.echo(f"  edit {shown}/params.yaml (train.epochs), then: {cd} && gha-mlops run   # only affected stages rerun")


def _kernels(record: dict[str, Any]) -> str | None:
    """Whether the stages that ran pinned their CPU kernels (portable mode), in words."""
    reports = [(s.get("runtime") or {}).get("cpu_dispatch") for s in record.get("stages", [])]
    dispatch = [d for d in reports if isinstance(d, dict)]
    if not dispatch:
        return None  # nothing ran (fully cached)
    machine = (record.get("env") or {}).get("cpu", {}).get("machine", "")
    if all(d.get("portable") is True for d in dispatch):
        return (f"portable: the same model on any {machine} machine with these packages "
                "(docs/reproduce.md)")
    levels = sorted({str(d.get("aten_capability")) for d in dispatch})
    return f"native to this CPU ({', '.join(levels)}): portable mode was off"


def _display(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def _git_init(directory: Path) -> None:
    """Make the example a git repository with one commit, unless a repository around it
    already versions it (one that ignores the directory does not count)."""
    from gha_mlops import git

    if not git.available():
        return
    if git.is_inside_work_tree(directory) and not git.is_ignored(directory):
        return
    git.init_and_commit(directory, "gha-mlops example project",
                        name="gha-mlops demo", email="demo@gha-mlops.invalid")
