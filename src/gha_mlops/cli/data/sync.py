"""``gha-mlops data push / fetch / pull``: datasets between the cache and a remote."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from gha_mlops import bootstrap
from gha_mlops.cli._progress import TransferLines, human
from gha_mlops.cli.data import _shared as shared

if TYPE_CHECKING:
    from gha_mlops.data.service import Transfer, Workspace

_remote = click.option("--remote", "-r", help="Remote name from mlops.yaml "
                       "(default: default_remote, or the only one).")
_jobs = click.option("--jobs", "-j", default=16, show_default=True,
                     type=click.IntRange(1, 128), help="Parallel transfers.")


def _summary(verb: str, done: Transfer, where: str) -> str:
    s = done.stats
    rate = s.bytes / s.seconds if s.seconds else 0.0
    return (f"{verb} {s.objects} objects ({human(s.bytes)}) in {s.packs} packs, "
            f"{s.requests} requests, {s.seconds:.2f} s ({human(rate)}/s) {where} for "
            f"{len(done.datasets)} datasets")


@click.command("push")
@shared.names_argument
@shared.dir_option
@_remote
@_jobs
def push_cmd(names: tuple[str, ...], workspace: Path, remote: str | None, jobs: int) -> None:
    """Upload datasets to a remote; only objects the remote lacks are sent, small ones packed."""
    from gha_mlops.data.service import Workspace, push_named

    with TransferLines("pushed") as lines:
        done = push_named(Workspace(workspace), names, remote, jobs=jobs, listener=lines,
                          opener=bootstrap.object_stores())
    to = f"to {done.remote.name} ({done.remote.url})" if done.remote else ""
    shared.echo(_summary("pushed", done, to))


def _fetch(ws: Workspace, names: tuple[str, ...], remote: str | None, jobs: int) -> Transfer:
    from gha_mlops.data.service import fetch_named

    with TransferLines("fetched") as lines:
        done = fetch_named(ws, names, remote, jobs=jobs, listener=lines,
                           opener=bootstrap.object_stores())
    source = done.remote.name if done.remote else "sources"
    shared.echo(_summary("fetched", done, f"from {source}"))
    return done


@click.command("fetch")
@shared.names_argument
@shared.dir_option
@_remote
@_jobs
def fetch_cmd(names: tuple[str, ...], workspace: Path, remote: str | None, jobs: int) -> None:
    """Download datasets into the local cache (verified), without touching the workspace."""
    from gha_mlops.data.service import Workspace

    _fetch(Workspace(workspace), names, remote, jobs)


@click.command("pull")
@shared.names_argument
@shared.dir_option
@_remote
@_jobs
@shared.to_option
@shared.link_option
def pull_cmd(names: tuple[str, ...], workspace: Path, remote: str | None, jobs: int,
             to: Path | None, link: str) -> None:
    """Fetch datasets and put their pinned version in place (or under --to DIR)."""
    from gha_mlops.data.service import Workspace, checkout_all

    ws = Workspace(workspace, link=link)
    done = _fetch(ws, names, remote, jobs)
    checkout_all(ws, done.datasets, to=to, placed=shared.placed, what="data pull")
