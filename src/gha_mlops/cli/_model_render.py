"""What ``gha-mlops model`` prints: text tables and JSON (pure functions of registry state)."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gha_mlops.cli._render import format_metric
from gha_mlops.gha import Actions
from gha_mlops.gha.safe import log_json, log_text

if TYPE_CHECKING:
    from gha_mlops.registry import ModelVersion, Written
    from gha_mlops.registry.index import Event, ModelState

# The options every `model` command shares.
ws_option = click.option("--workspace", "-w", default=".", show_default=True,
                   type=click.Path(file_okay=False, path_type=Path),
                   help="The workspace (the directory of mlops.yaml), in a git repository.")
push_option = click.option("--push", is_flag=True, help="Push the new tag to --remote (after "
                     "checking the remote has no other tag of that name; never forced).")
remote_option = click.option("--remote", default="origin", show_default=True,
                       help="The git remote --push pushes to.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def echo_json(doc: Any) -> None:
    """``doc`` as JSON: indented when small; compact when large (json's indented encoder is
    pure Python: 75 ms for the 400 versions of a model, more than the rest of the command)."""
    text = json.dumps(doc, sort_keys=True)
    if len(text) < 64 * 1024:
        text = json.dumps(doc, indent=2, sort_keys=True)
    click.echo(log_json(text))


def _when(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def model_json(state: ModelState) -> dict[str, Any]:
    """A model as ``model list --json`` gives it (compare ``gto show --json``)."""
    return {"name": state.name, "latest": state.latest, "stages": dict(state.holders),
            "deprecated": state.deprecated,
            "versions_active": sum(1 for v in state.versions.values() if v.active)}


def version_json(mv: ModelVersion) -> dict[str, Any]:
    lineage = mv.lineage
    return {"name": mv.name, "version": mv.version, "tag": mv.tag, "commit": mv.commit,
            "stages": list(mv.stages), "deprecated": mv.deprecated,
            "created_at": _when(mv.created_at),
            "lineage": {**lineage.to_json(),
                        "images": [{"image": i.image, "digest": i.digest}
                                   for i in lineage.images],
                        "profile": None if lineage.profile is None else {
                            "sha256": lineage.profile.sha256, "rows": lineage.profile.rows},
                        "problem": lineage.problem}}


def history_json(events: Sequence[Event]) -> list[dict[str, Any]]:
    """Events oldest first, named as ``gto history`` names them."""
    names = {"register": "registration", "deregister": "deregistration",
             "assign": "assignment", "unassign": "unassignment", "deprecate": "deprecation"}
    return [{"timestamp": _when(e.time), "event": names[e.event.action],
             "version": e.version if e.event.action != "deprecate" else None,
             "stage": e.event.stage, "commit": e.commit, "tag": e.tag, "author": e.author,
             "author_email": e.email} for e in events]


def print_list(models: Sequence[ModelState]) -> None:
    if not models:
        click.echo("no models registered yet: gha-mlops model register NAME")
        return
    click.echo(f"{'MODEL':<24} {'LATEST':<10} STAGES")
    for m in models:
        stages = ", ".join(f"{s}={v}" for s, v in m.holders.items()) or "-"
        mark = " [deprecated]" if m.deprecated else ""
        click.echo(log_text(f"{m.name:<24} {m.latest or '-':<10} {stages}{mark}"))


def print_model(state: ModelState, versions: Sequence[ModelVersion]) -> None:
    mark = " (deprecated)" if state.deprecated else ""
    click.echo(log_text(f"{state.name}{mark}"))
    click.echo(f"  {'VERSION':<10} {'STAGES':<16} {'RUN':<24} {'COMMIT':<12} CREATED")
    for v in versions:
        stages = ",".join(v.stages) or ("deprecated" if v.deprecated else "-")
        run = v.lineage.run_id or "(lineage unknown)"
        click.echo(log_text(f"  {v.version:<10} {stages:<16} {run:<24} {v.commit[:12]:<12} "
                            f"{_when(v.created_at)}"))


def print_version(mv: ModelVersion) -> None:
    lin = mv.lineage
    click.echo(log_text(f"{mv.name} {mv.version}  tag {mv.tag}  commit {mv.commit}"))
    click.echo(log_text(f"  stages:    {', '.join(mv.stages) or '-'}"
                        + ("  [deprecated]" if mv.deprecated else "")))
    if not lin.known:
        click.echo(log_text(f"  lineage:   unknown ({lin.problem})"))
        return
    click.echo(log_text(f"  run:       {lin.run_id}"))
    click.echo(log_text(f"  model:     {lin.model_path}  sha256 {lin.model_sha256}"))
    for name, version in lin.datasets.items():
        click.echo(log_text(f"  data:      {name} {version[:16]}"))
    click.echo(f"  params:    {lin.params_hash[:16]}")
    metrics = ", ".join(f"{k}={format_metric(v)}" for k, v in list(lin.metrics.items())[:8])
    click.echo(log_text(f"  metrics:   {metrics or '-'}"))
    sig = lin.signature
    click.echo(log_text(f"  signature: {json.dumps(sig)[:200] if sig else 'not derived'}"))
    for image in lin.images:
        click.echo(log_text(f"  image:     {image.image}@{image.digest}"))
    if lin.profile is not None:
        click.echo(f"  profile:   {lin.profile.rows} rows, sha256 {lin.profile.sha256[:16]}")


def print_history(events: Sequence[Event]) -> None:
    for row in history_json(events):
        what = row["version"] or ""
        if row["stage"]:
            what += f" {row['stage']}"
        click.echo(log_text(f"{row['timestamp']}  {row['event']:<15} {what:<24} {row['tag']}"))


def print_written(written: Written, extra_notes: Sequence[str] = ()) -> None:
    """Say what was tagged; in GitHub Actions also set the step outputs ``version`` (the
    version written or moved) and ``tag`` (the last tag made)."""
    actions = Actions(os.environ)
    if written.version is not None:
        actions.set_output("version", written.version.version)
    if written.tags:
        actions.set_output("tag", written.tags[-1])
    for tag in written.tags:
        click.echo(log_text(f"tagged {tag}" + (" and pushed it" if written.pushed else "")))
    if written.bump_reason:
        click.echo(log_text(f"version rule: {written.bump_reason}"))
    for note in (*written.notes, *extra_notes):
        click.echo(log_text(f"note: {note}"), err=True)
