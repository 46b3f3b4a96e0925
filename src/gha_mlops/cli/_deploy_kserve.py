"""``gha-mlops deploy render --target kserve``: KServe manifests of a version, validated
offline, written to a directory (rendering only: nothing is applied to a cluster)."""

from __future__ import annotations

from pathlib import Path

import click

from gha_mlops import bootstrap
from gha_mlops.cli import _deploy_render as render_out
from gha_mlops.errors import GhaMlopsError, UsageError
from gha_mlops.gha.safe import log_text


@click.command("render")
@click.argument("model", required=False)
@click.option("--target", type=click.Choice(["kserve"]), required=True,
              help="What to render for: KServe InferenceService manifests.")
@click.option("--version", default=None, help="The version to render (X.Y.Z).")
@click.option("--stage", default=None, help="Render the version at this registry stage.")
@click.option("--env", "env_name", required=True, metavar="ENV",
              help="The environment whose rollout steps become canary steps.")
@click.option("--image", default=None, metavar="REF",
              help="The image (default: the pushed digest the registry recorded).")
@click.option("--namespace", default=None, help="The Kubernetes namespace (default: none).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The directory to write the manifests to (created).")
@click.option("--workspace", "-C", "workspace", default=".", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="The workspace (the directory of mlops.yaml).")
def render(model: str | None, target: str, version: str | None, stage: str | None,
           env_name: str, image: str | None, namespace: str | None, out: Path,
           workspace: Path) -> None:
    """Write KServe manifests for a version: one InferenceService per rollout step
    (canaryTrafficPercent), validated offline. Rendering only: apply them with kubectl."""
    from gha_mlops.deploy.kserve import render_kserve, validate_manifests, write_manifests
    from gha_mlops.registry import open_registry

    if (version is None) == (stage is None):
        raise UsageError("give exactly one of --version V or --stage S")
    deploy_cfg, env = bootstrap.deploy_config(workspace, env_name)
    reg = open_registry(workspace)
    name = model or deploy_cfg.model or render_out.only_model(reg.config())
    mv = reg.resolve(f"{name}@{version}" if version else f"{name}#{stage}")
    files = render_kserve(mv.name, mv.version, image or render_out.pushed_image(mv), env,
                          namespace=namespace)
    problems = validate_manifests(files)
    if problems:
        raise GhaMlopsError("the rendered manifests do not validate: " + problems[0],
                            hint="this is a bug in gha-mlops (please report it)",
                            notes=problems[1:])
    for path in write_manifests(files, out):
        click.echo(f"wrote {log_text(path)}")
    click.echo("rendering only: apply them in order with `kubectl apply -f FILE` "
               "(docs/kserve.md)")
