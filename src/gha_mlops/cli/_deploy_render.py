"""What ``gha-mlops deploy`` prints and tells GitHub: progress lines, the outcome (text, step
outputs, the step summary), the status, and the GitHub Deployment with its statuses."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from gha_mlops._closing import Closing
from gha_mlops.errors import GhaMlopsError, UsageError
from gha_mlops.gha import Actions
from gha_mlops.gha.safe import log_json, log_text, markdown_code, markdown_text

if TYPE_CHECKING:
    from gha_mlops.config.model import RegistryConfig
    from gha_mlops.deploy.model import Release
    from gha_mlops.deploy.rollout import Outcome, Status
    from gha_mlops.registry import ModelVersion


def closing(hosts: Sequence[Closing]) -> contextlib.ExitStack:
    """A context that closes every host on the way out."""
    stack = contextlib.ExitStack()
    for host in hosts:
        stack.callback(host.close)
    return stack


def line(text: str) -> None:
    """A progress line on stderr."""
    click.echo(log_text(text), err=True)


def only_model(registry: RegistryConfig | None) -> str:
    """The registry's one model, when no model is named."""
    models = sorted(registry.models) if registry is not None else []
    if len(models) != 1:
        raise UsageError("name the model to deploy", hint="models in the registry: "
                         + (", ".join(models) or "none") + " (or set deploy.model)")
    return models[0]


def pushed_image(mv: ModelVersion) -> str:
    """``repo@sha256:...`` of the version's last pushed image (``package --push``)."""
    from gha_mlops.packaging.image import split_reference

    if not mv.lineage.images:
        raise UsageError(
            f"{mv.name} {mv.version} has no pushed image recorded",
            hint=f"gha-mlops package {mv.name}@{mv.version} --tag REGISTRY/PATH/ --push (the "
                 "hosts pull it by digest), or --image REF for an image already on the hosts")
    last = mv.lineage.images[-1]
    return f"{split_reference(last.image)[0]}@{last.digest}"


def stage_mover(workspace: Path, stage: str, *, push: bool) -> Callable[[Release], None]:
    """What runs once a release serves: the registry's ``stage`` moved to it (read afresh:
    another deploy may have moved it while this one waited), unless it holds it already."""
    def move(release: Release) -> None:
        from gha_mlops.registry import open_registry

        reg = open_registry(workspace)
        if stage not in reg.version(release.model, release.version).stages:
            reg.promote(release.model, release.version, stage, push=push)
    return move


def expected_labels(mv: ModelVersion) -> dict[str, str]:
    """The labels an image of ``mv`` carries (gha_mlops.packaging.service.labels_for)."""
    from gha_mlops.packaging.service import LABEL_PREFIX

    return {f"{LABEL_PREFIX}name": mv.name, f"{LABEL_PREFIX}version": mv.version}


def outcome(environ: Mapping[str, str], done: Outcome, *, stage: str) -> None:
    """The result: stdout lines, the step outputs, the step summary."""
    for note in done.notes:
        line(note)
    verb = "rolled out" if done.changed else "unchanged:"
    click.echo(click.style(verb, fg="green", bold=True) + f" {log_text(done.release.label())} "
               f"serves {log_text(done.env)} at {log_text(done.url)} ({stage})")
    if done.previous is not None:
        click.echo(f"  replaced {log_text(done.previous.label())}")
    for step in done.steps:
        click.echo(f"  {step.weight:3d}%: " + "; ".join(log_text(g.detail) for g in step.gates))
    if done.golden is not None:
        click.echo(f"  golden requests: {done.golden.cases} answered as expected")
    if done.changed:
        click.echo(f"  took {done.elapsed_s:.1f} s ({done.baked_s:.1f} s baking); all traffic "
                   f"on it after {done.switch_s:.1f} s")
    actions = Actions(environ)
    actions.set_output("version", done.release.version)
    actions.set_output("image", done.release.image)
    actions.set_output("url", done.url)
    rows = "".join(f"| {s.weight}% | {s.bake_s:.1f} s | "
                   + "<br>".join(markdown_text(g.detail) for g in s.gates)
                   + f" | {'pass' if s.passed else 'FAIL'} |\n" for s in done.steps)
    actions.summary(
        f"### Deployed {markdown_text(done.release.label())} to {markdown_text(done.env)}\n\n"
        f"Image {markdown_code(done.release.image)}; URL {markdown_text(done.url)}\n\n"
        + (f"| traffic | bake | gates | verdict |\n| --- | --- | --- | --- |\n{rows}\n"
           if rows else "") + "".join(f"- {markdown_text(n)}\n" for n in done.notes))


def failure_summary(environ: Mapping[str, str], env: str, what: str,
                    err: GhaMlopsError) -> None:
    steps = getattr(err, "steps", ())
    rows = "".join(f"| {s.weight}% | " + "<br>".join(markdown_text(g.detail) for g in s.gates)
                   + f" | {'pass' if s.passed else 'FAIL'} |\n" for s in steps)
    Actions(environ).summary(
        f"### Deploy of {markdown_text(what)} to {markdown_text(env)} failed\n\n"
        f"{markdown_text(err.message)}\n\n"
        + (f"| traffic | gates | verdict |\n| --- | --- | --- |\n{rows}\n" if rows else "")
        + "".join(f"- {markdown_text(n)}\n" for n in err.notes))


def status(state: Status, notes: list[str], *, as_json: bool) -> None:
    from dataclasses import asdict

    for note in notes:
        line(note)
    if as_json:
        click.echo(log_json(json.dumps({
            "env": state.env, "url": state.url,
            "record": asdict(state.record) if state.record is not None else None,
            "hosts": [{"host": h, "state": s} for h, s in state.hosts]}, indent=2)))
        return
    record = state.record
    if record is None or (record.stable is None and record.canary is None):
        click.echo(f"{log_text(state.env)}: nothing deployed")
    else:
        serving = (f"{record.stable.label()} ({100 - record.weight}%)"
                   if record.stable is not None else "nothing")
        click.echo(f"{log_text(state.env)}: {log_text(serving)} at {log_text(state.url)}")
        if record.canary is not None:
            click.echo(f"  rollout: {log_text(record.canary.label())} at {record.weight}%")
        if record.history:
            click.echo("  rollback to: " + log_text(record.history[0].label()))
    for host, text in state.hosts:
        click.echo(f"  {log_text(host)}: {log_text(text)}")
