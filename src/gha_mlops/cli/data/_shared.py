"""What the ``data`` commands share: options, and printing to the job log."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from gha_mlops.gha.safe import log_block

if TYPE_CHECKING:
    from gha_mlops.data.pointer import Dataset


def echo(text: str) -> None:
    """Print to the job log: dataset paths and the names of files in them come from the
    workspace (a pull request), so no line of theirs may read as a workflow command."""
    click.echo(log_block(text))


def placed(ds: Dataset, dest: Path) -> None:
    """A dataset was put in place (``data checkout``, ``data pull``)."""
    echo(f"{ds.name}: {dest}")


link_option = click.option(
    "--link", type=click.Choice(["auto", "copy", "hardlink"]), default="auto",
    show_default=True,
    help="How files move between the cache and the workspace: auto = reflink (copy-on-write "
    "clone) where the filesystem can, else copy; hardlink = share the file (read-only; saves "
    "space and time on large data, but see docs/data.md before using it as root).")
dir_option = click.option("--dir", "-C", "workspace", default=".", show_default=True,
                          type=click.Path(file_okay=False, path_type=Path),
                          help="The workspace (the directory of mlops.yaml).")
names_argument = click.argument("names", nargs=-1)
to_option = click.option("--to", type=click.Path(file_okay=False, path_type=Path),
                         help="Put the data under this directory instead of its own path "
                         "(inside the workspace, it may not lead out of it through a "
                         "symlink).")
