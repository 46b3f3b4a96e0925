"""``gha-mlops data ...``: versioned datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from gha_mlops.cli._progress import TransferLines, human
from gha_mlops.cli._render import short
from gha_mlops.errors import GhaMlopsError, UsageError
from gha_mlops.gha.safe import log_block, log_json, log_text

if TYPE_CHECKING:
    from gha_mlops.data.pointer import Dataset
    from gha_mlops.data.service import Workspace
    from gha_mlops.data.transfer import TransferStats

def _echo(text: str) -> None:
    """Print to the job log: dataset paths and the names of files in them come from the
    workspace (a pull request), so no line of theirs may read as a workflow command."""
    click.echo(log_block(text))


def _echo_json(text: str) -> None:
    click.echo(log_json(text))


_link_option = click.option(
    "--link", type=click.Choice(["auto", "copy", "hardlink"]), default="auto",
    show_default=True,
    help="How files move between the cache and the workspace: auto = reflink (copy-on-write "
    "clone) where the filesystem can, else copy; hardlink = share the file (read-only; saves "
    "space and time on large data, but see docs/data.md before using it as root).")

_dir_option = click.option(
    "--dir", "-C", "workspace", default=".", show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The workspace (the directory of mlops.yaml).")


@click.group()
def data() -> None:
    """Versioned datasets: pointers in git, contents in the cache and in remotes."""


@data.command("add")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", "-n", help="Dataset name (default: the file or directory name).")
@click.option("--source", metavar="URL", help="For a downloaded file: the https:// URL it "
              "came from, so `data pull` can fetch it again (verified by hash).")
@_dir_option
@_link_option
def add_cmd(path: Path, name: str | None, source: str | None, workspace: Path,
            link: str) -> None:
    """Hash PATH (a file or directory), cache it and write PATH.lock.yaml to commit."""
    from gha_mlops.data.service import Workspace, add
    from gha_mlops.store.lock import WorkspaceLock

    ws = Workspace(workspace, link=link)
    with WorkspaceLock(ws.open_state(), wait=60, what="data add"):
        result = add(ws, path, name=name, source=source)
    ds = result.dataset
    verb = "added" if result.changed else "unchanged"
    _echo(f"{verb} dataset {ds.name}: {ds.path} ({ds.files} files, {human(ds.size)}) "
               f"version {short(ds.version, 16)} in {result.seconds:.2f} s, "
               f"{result.new_objects} new objects cached")
    _echo(f"commit the pointer: git add {ds.pointer} "
               f"{str(Path(ds.path).parent / '.gitignore').removeprefix('./')}")


@data.command("ls")
@_dir_option
@click.option("--json", "as_json", is_flag=True)
def ls_cmd(workspace: Path, as_json: bool) -> None:
    """List the datasets of the workspace."""
    from gha_mlops.data.service import Workspace

    datasets = Workspace(workspace).datasets()
    if as_json:
        _echo_json(json.dumps([ds.__dict__ for ds in datasets.values()], indent=2))
        return
    if not datasets:
        _echo("no datasets: add one with `gha-mlops data add PATH`")
        return
    _echo(f"{'NAME':<20} {'VERSION':<18} {'FILES':>7} {'SIZE':>10}  PATH")
    for ds in datasets.values():
        _echo(f"{ds.name:<20} {short(ds.version, 16):<18} {ds.files:>7} "
                   f"{human(ds.size):>10}  {ds.path}")


@data.command("status")
@click.argument("names", nargs=-1)
@_dir_option
@click.option("--remote", "-r", "remote", is_flag=False, flag_value="", default=None,
              help="Also count the objects a remote lacks (the default remote if no NAME).")
@click.option("--json", "as_json", is_flag=True)
def status_cmd(names: tuple[str, ...], workspace: Path, remote: str | None,
               as_json: bool) -> None:
    """Which datasets are missing or modified in the workspace, or missing from the cache
    (and, with --remote, from a remote)."""
    from gha_mlops.data.service import Workspace, resolve_remote, status

    ws = Workspace(workspace)
    target = resolve_remote(ws, remote or None) if remote is not None else None
    rows = status(ws, ws.select(names), target)
    if as_json:
        _echo_json(json.dumps([r.to_json() for r in rows], indent=2))
        return
    for r in rows:
        cache = "cached" if r.cache_missing == 0 else f"{r.cache_missing} objects not cached"
        line = f"{r.dataset.name:<20} workspace: {r.workspace:<9} cache: {cache}"
        if r.remote_missing is not None:
            line += ("   remote: has it" if r.remote_missing == 0 else
                     f"   remote: {r.remote_missing} objects not pushed")
        _echo(line)
        for f in r.modified_files:
            _echo(f"    changed: {r.dataset.path}/{log_text(f)}")
    if any(r.workspace != "ok" or r.cache_missing for r in rows):
        _echo("hint: `gha-mlops data pull NAME` restores the pinned version; "
                   "`gha-mlops data add PATH` pins the current one")


@data.command("verify")
@click.argument("names", nargs=-1)
@_dir_option
def verify_cmd(names: tuple[str, ...], workspace: Path) -> None:
    """Re-hash cached objects and workspace files and compare them with the pointers."""
    from gha_mlops.data.service import Workspace, verify

    ws = Workspace(workspace)
    datasets = ws.select(names)
    problems = verify(ws, datasets)
    if not problems:
        _echo(f"verified {len(datasets)} datasets: every byte matches its version")
        return
    raise GhaMlopsError(
        f"{len(problems)} problems found",
        hint="a corrupted cache object can be deleted and fetched again (`gha-mlops data "
        "pull`); a modified workspace file is restored by `gha-mlops data pull` or pinned "
        "anew by `gha-mlops data add`",
        notes=[f"{p.dataset}: {p.where} {p.item}: expected {p.expected[:16]}, got "
               f"{(p.actual or 'missing')[:16]}" for p in problems])


@data.command("checkout")
@click.argument("names", nargs=-1)
@_dir_option
@click.option("--to", type=click.Path(file_okay=False, path_type=Path),
              help="Put the data under this directory instead of its own path (inside the "
              "workspace, it may not lead out of it through a symlink).")
@_link_option
def checkout_cmd(names: tuple[str, ...], workspace: Path, to: Path | None, link: str) -> None:
    """Put the pinned version of datasets in place from the local cache."""
    from gha_mlops.data.service import Workspace, checkout

    ws = Workspace(workspace, link=link)
    for ds in ws.select(names):
        dest = checkout(ws, ds, to=to)
        _echo(f"{ds.name}: {dest}")


@data.command("gc")
@_dir_option
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@click.option("--keep-days", default=30.0, show_default=True,
              help="Keep what run records of this many recent days name.")
def gc_cmd(workspace: Path, dry_run: bool, keep_days: float) -> None:
    """Remove cache objects no dataset pointer, run-cache entry or recent run names."""
    from gha_mlops.data.service import Workspace
    from gha_mlops.pipeline.gc import gc
    from gha_mlops.store.lock import WorkspaceLock

    ws = Workspace(workspace)
    with WorkspaceLock(ws.open_state(), wait=60, what="data gc"):
        result = gc(ws, dry_run=dry_run, keep_days=keep_days)
    verb = "would remove" if dry_run else "removed"
    _echo(f"{verb} {result.removed} objects ({human(result.freed)}), kept {result.kept}")


def _summary(verb: str, s: TransferStats, remote: str) -> str:
    rate = s.bytes / s.seconds if s.seconds else 0.0
    return (f"{verb} {s.objects} objects ({human(s.bytes)}) in {s.packs} packs, "
            f"{s.requests} requests, {s.seconds:.2f} s ({human(rate)}/s) {remote}")


_remote_option = click.option("--remote", "-r", help="Remote name from mlops.yaml "
                              "(default: default_remote, or the only one).")
_jobs_option = click.option("--jobs", "-j", default=16, show_default=True,
                            type=click.IntRange(1, 128), help="Parallel transfers.")


@data.command("push")
@click.argument("names", nargs=-1)
@_dir_option
@_remote_option
@_jobs_option
def push_cmd(names: tuple[str, ...], workspace: Path, remote: str | None, jobs: int) -> None:
    """Upload datasets to a remote; only objects the remote lacks are sent, small ones packed."""
    from gha_mlops.data.service import Workspace, push, resolve_remote

    ws = Workspace(workspace)
    target = resolve_remote(ws, remote)
    datasets = ws.select(names)
    with TransferLines("pushed") as lines:
        stats = push(ws, datasets, target, jobs=jobs, listener=lines)
    _echo(_summary("pushed", stats, f"to {target.name} ({target.url}) for "
                        f"{len(datasets)} datasets"))


def _fetch(names: tuple[str, ...], workspace: Path, remote: str | None,
           jobs: int, link: str = "auto") -> tuple[Workspace, list[Dataset]]:
    from gha_mlops.data.service import Workspace, fetch, resolve_remote

    ws = Workspace(workspace, link=link)
    datasets = ws.select(names)
    needs_remote = any(not (ds.source and not ds.is_tree) for ds in datasets)
    target = None
    if needs_remote:
        try:
            target = resolve_remote(ws, remote)
        except UsageError:  # no remote declared: the datasets may all be in the cache
            if remote is not None:
                raise
    with TransferLines("fetched") as lines:
        stats = fetch(ws, datasets, target, jobs=jobs, listener=lines)
    _echo(_summary("fetched", stats, f"from {target.name if target else 'sources'} for "
                        f"{len(datasets)} datasets"))
    return ws, list(datasets)


@data.command("fetch")
@click.argument("names", nargs=-1)
@_dir_option
@_remote_option
@_jobs_option
def fetch_cmd(names: tuple[str, ...], workspace: Path, remote: str | None, jobs: int) -> None:
    """Download datasets into the local cache (verified), without touching the workspace."""
    _fetch(names, workspace, remote, jobs)


@data.command("pull")
@click.argument("names", nargs=-1)
@_dir_option
@_remote_option
@_jobs_option
@click.option("--to", type=click.Path(file_okay=False, path_type=Path),
              help="Put the data under this directory instead of its own path (inside the "
              "workspace, it may not lead out of it through a symlink).")
@_link_option
def pull_cmd(names: tuple[str, ...], workspace: Path, remote: str | None, jobs: int,
             to: Path | None, link: str) -> None:
    """Fetch datasets and put their pinned version in place (or under --to DIR)."""
    from gha_mlops.data.service import checkout
    from gha_mlops.store.lock import WorkspaceLock

    ws, datasets = _fetch(names, workspace, remote, jobs, link)
    with WorkspaceLock(ws.open_state(), wait=60, what="data pull"):
        for ds in datasets:
            _echo(f"{ds.name}: {checkout(ws, ds, to=to)}")
