"""``gha-mlops model``: the model registry in git tags (docs/registry.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

import click

from gha_mlops import bootstrap
from gha_mlops.cli import _model_render as ui

if TYPE_CHECKING:
    from gha_mlops.registry import Registry
    from gha_mlops.registry.grammar import Bump



def _open(workspace: Path) -> Registry:
    from gha_mlops.registry import open_registry

    return open_registry(workspace)


@click.group()
def model() -> None:
    """The model registry in git tags, GTO's grammar: versions, stages, lineage."""


@model.command()
@click.argument("name")
@click.option("--run", "run", default="latest", show_default=True,
              help="The run whose model is registered: an id, a unique prefix, `latest~N` "
                   "or a record file.")
@click.option("--version", "version", metavar="X.Y.Z", help="The version [default: the "
              "highest version bumped by the rule of docs/registry.md].")
@click.option("--bump", type=click.Choice(["major", "minor", "patch"]),
              help="Bump the highest version this way instead of by the rule.")
@ui.push_option
@ui.remote_option
@ui.ws_option
def register(name: str, run: str, version: str | None, bump: str | None, push: bool,
             remote: str, workspace: Path) -> None:
    """Register the model NAME of a run as a new version (tag NAME@vX.Y.Z)."""
    if version and bump:
        raise click.UsageError("give --version or --bump, not both")
    derive, note = bootstrap.signature_deriver()
    written = _open(workspace).register(name, run, version=version, bump=cast("Bump | None", bump),
                                        signature_of=derive, push=push, remote=remote)
    ui.print_written(written, extra_notes=(note,) if note else ())


@model.command()
@click.argument("name")
@click.argument("version")
@click.option("--stage", required=True, help="A stage of registry.stages in mlops.yaml.")
@ui.push_option
@ui.remote_option
@ui.ws_option
def promote(name: str, version: str, stage: str, push: bool, remote: str,
            workspace: Path) -> None:
    """Assign STAGE to NAME VERSION (tag NAME#STAGE#N)."""
    ui.print_written(_open(workspace).promote(name, version, stage, push=push, remote=remote))


@model.command()
@click.argument("name")
@click.option("--stage", required=True, help="The stage to take from its version.")
@ui.push_option
@ui.remote_option
@ui.ws_option
def demote(name: str, stage: str, push: bool, remote: str, workspace: Path) -> None:
    """Unassign STAGE from the version holding it (tag NAME#STAGE!#N)."""
    ui.print_written(_open(workspace).demote(name, stage, push=push, remote=remote))


@model.command()
@click.argument("name")
@click.argument("version", required=False)
@ui.push_option
@ui.remote_option
@ui.ws_option
def deprecate(name: str, version: str | None, push: bool, remote: str,
              workspace: Path) -> None:
    """Deprecate NAME VERSION (tag NAME@vX.Y.Z!#N), or the model (tag NAME@deprecated#N)."""
    ui.print_written(_open(workspace).deprecate(name, version, push=push, remote=remote))


@model.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include deprecated models.")
@ui.json_option
@ui.ws_option
def list_models(show_all: bool, as_json: bool, workspace: Path) -> None:
    """The models: latest version and the version at each stage."""
    state = _open(workspace).state
    models = [m for m in state.values() if show_all or not m.deprecated]
    if as_json:
        ui.echo_json([ui.model_json(m) for m in models])
    else:
        ui.print_list(models)


@model.command()
@click.argument("ref", metavar="NAME[@VERSION|#STAGE]")
@click.option("--all", "show_all", is_flag=True, help="Include deprecated versions.")
@ui.json_option
@ui.ws_option
def show(ref: str, show_all: bool, as_json: bool, workspace: Path) -> None:
    """A model's versions, or one version with its lineage and images."""
    from gha_mlops.registry.grammar import semver_key

    reg = _open(workspace)
    if "@" in ref or "#" in ref:
        mv = reg.resolve(ref)
        ui.echo_json(ui.version_json(mv)) if as_json else ui.print_version(mv)
        return
    state = reg.model(ref)
    # Highest version first, as `gto show NAME`; notes (images) only for one version.
    versions = [reg.version(ref, v.version, images=False) for v in sorted(
        state.versions.values(), key=lambda v: semver_key(v.version), reverse=True)
        if show_all or v.active]
    if as_json:
        ui.echo_json({**ui.model_json(state), "versions": [ui.version_json(v) for v in versions]})
    else:
        ui.print_model(state, versions)


@model.command()
@click.argument("name")
@ui.json_option
@ui.ws_option
def history(name: str, as_json: bool, workspace: Path) -> None:
    """The model's events (register, promote, demote, deprecate), oldest first."""
    events = _open(workspace).history(name)
    ui.echo_json(ui.history_json(events)) if as_json else ui.print_history(events)
