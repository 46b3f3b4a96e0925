"""``gha-mlops data ...``: versioned datasets. Each command calls one operation of
:mod:`gha_mlops.data.service` (``data gc``: :mod:`gha_mlops.pipeline.gc`) and prints its
result; the commands that talk to a remote are in :mod:`gha_mlops.cli.data.sync`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from gha_mlops import bootstrap
from gha_mlops.cli._progress import human
from gha_mlops.cli._render import short
from gha_mlops.cli.data._shared import (
    dir_option,
    echo,
    link_option,
    names_argument,
    placed,
    to_option,
)
from gha_mlops.cli.data.sync import fetch_cmd, pull_cmd, push_cmd
from gha_mlops.gha.safe import log_json, log_text

_json = click.option("--json", "as_json", is_flag=True)


@click.group()
def data() -> None:
    """Versioned datasets: pointers in git, contents in the cache and in remotes."""


@data.command("add")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", "-n", help="Dataset name (default: the file or directory name).")
@click.option("--source", metavar="URL", help="For a downloaded file: the https:// URL it "
              "came from, so `data pull` can fetch it again (verified by hash).")
@dir_option
@link_option
def add_cmd(path: Path, name: str | None, source: str | None, workspace: Path,
            link: str) -> None:
    """Hash PATH (a file or directory), cache it and write PATH.lock.yaml to commit."""
    from gha_mlops.data.service import Workspace, add

    result = add(Workspace(workspace, link=link), path, name=name, source=source)
    ds = result.dataset
    echo(f"{'added' if result.changed else 'unchanged'} dataset {ds.name}: {ds.path} "
         f"({ds.files} files, {human(ds.size)}) version {short(ds.version, 16)} in "
         f"{result.seconds:.2f} s, {result.new_objects} new objects cached")
    echo(f"commit the pointer: git add {ds.pointer} "
         f"{str(Path(ds.path).parent / '.gitignore').removeprefix('./')}")


@data.command("ls")
@dir_option
@_json
def ls_cmd(workspace: Path, as_json: bool) -> None:
    """List the datasets of the workspace."""
    from gha_mlops.data.service import Workspace

    datasets = Workspace(workspace).datasets()
    if as_json:
        click.echo(log_json(json.dumps([ds.__dict__ for ds in datasets.values()], indent=2)))
        return
    echo(f"{'NAME':<20} {'VERSION':<18} {'FILES':>7} {'SIZE':>10}  PATH" if datasets else
         "no datasets: add one with `gha-mlops data add PATH`")
    for ds in datasets.values():
        echo(f"{ds.name:<20} {short(ds.version, 16):<18} {ds.files:>7} "
             f"{human(ds.size):>10}  {ds.path}")


@data.command("status")
@names_argument
@dir_option
@click.option("--remote", "-r", "remote", is_flag=False, flag_value="", default=None,
              help="Also count the objects a remote lacks (the default remote if no NAME).")
@_json
def status_cmd(names: tuple[str, ...], workspace: Path, remote: str | None,
               as_json: bool) -> None:
    """Which datasets are missing or modified in the workspace, or missing from the cache
    (and, with --remote, from a remote)."""
    from gha_mlops.data.service import Workspace, status_named

    rows = status_named(Workspace(workspace), names, remote=remote,
                        opener=bootstrap.object_stores())
    if as_json:
        click.echo(log_json(json.dumps([r.to_json() for r in rows], indent=2)))
        return
    for r in rows:
        cache = "cached" if r.cache_missing == 0 else f"{r.cache_missing} objects not cached"
        echo(f"{r.dataset.name:<20} workspace: {r.workspace:<9} cache: {cache}" + (
            "" if r.remote_missing is None else "   remote: has it" if r.remote_missing == 0
            else f"   remote: {r.remote_missing} objects not pushed"))
        for f in r.modified_files:
            echo(f"    changed: {r.dataset.path}/{log_text(f)}")
    if any(r.workspace != "ok" or r.cache_missing for r in rows):
        echo("hint: `gha-mlops data pull NAME` restores the pinned version; "
             "`gha-mlops data add PATH` pins the current one")


@data.command("verify")
@names_argument
@dir_option
def verify_cmd(names: tuple[str, ...], workspace: Path) -> None:
    """Re-hash cached objects and workspace files and compare them with the pointers."""
    from gha_mlops.data.service import Workspace, verify_named

    count = verify_named(Workspace(workspace), names)
    echo(f"verified {count} datasets: every byte matches its version")


@data.command("checkout")
@names_argument
@dir_option
@to_option
@link_option
def checkout_cmd(names: tuple[str, ...], workspace: Path, to: Path | None, link: str) -> None:
    """Put the pinned version of datasets in place from the local cache."""
    from gha_mlops.data.service import Workspace, checkout_all

    ws = Workspace(workspace, link=link)
    checkout_all(ws, ws.select(names), to=to, placed=placed)


@data.command("gc")
@dir_option
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@click.option("--keep-days", default=30.0, show_default=True,
              help="Keep what run records of this many recent days name.")
def gc_cmd(workspace: Path, dry_run: bool, keep_days: float) -> None:
    """Remove cache objects no dataset pointer, run-cache entry or recent run names."""
    from gha_mlops.data.service import Workspace
    from gha_mlops.pipeline.gc import gc

    result = gc(Workspace(workspace), dry_run=dry_run, keep_days=keep_days)
    echo(f"{'would remove' if dry_run else 'removed'} {result.removed} objects "
         f"({human(result.freed)}), kept {result.kept}")


for _command in (push_cmd, fetch_cmd, pull_cmd):
    data.add_command(_command)
