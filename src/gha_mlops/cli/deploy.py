"""``gha-mlops deploy``: roll a packaged model out to an environment, say what serves there,
roll back, render KServe manifests. The rollout is :mod:`gha_mlops.deploy.rollout`'s."""

from __future__ import annotations

import os
from pathlib import Path

import click

from gha_mlops import bootstrap
from gha_mlops.cli import _deploy_render as render
from gha_mlops.cli._deploy_github import Announcer
from gha_mlops.errors import GhaMlopsError, UsageError

_WORKSPACE = click.option("--workspace", "-C", "workspace", default=".", show_default=True,
                          type=click.Path(file_okay=False, path_type=Path),
                          help="The workspace (the directory of mlops.yaml).")
_ENV = click.option("--env", "env_name", required=True, metavar="ENV",
                    help="The environment, a name under deploy.environments in mlops.yaml.")
_PUSH = click.option("--push", is_flag=True,
                     help="Push the moved stage tag to origin (as `model promote --push`).")
_GITHUB = click.option("--github-deployment", is_flag=True,
                       help="Create a GitHub Deployment and post its statuses (in Actions: "
                       "GITHUB_TOKEN with `deployments: write`).")
_WAIT = click.option("--wait", "wait_s", type=click.FloatRange(0, 86400), default=0.0,
                     metavar="SECONDS", help="Wait this long for another deploy of the "
                     "environment to finish (default: fail at once, exit 75).")


class _DefaultGroup(click.Group):
    """``deploy NAME ...`` runs the ``start`` command; ``deploy status|rollback|render`` the
    others (so no model may be named like them)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["start", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_DefaultGroup)
def deploy() -> None:
    """Deploy a model to an environment: gha-mlops deploy [NAME] (--version V | --stage S)
    --env ENV.

    The new version starts beside the serving one, must become ready and answer the golden
    requests its image carries, then takes the rollout's steps of traffic (e.g. 10, 50,
    100 %), each baked and judged on its own metrics (error rate, p99 latency). Any failure
    sends all traffic back to the serving version and exits 11. Only a successful rollout
    moves the registry's stage. See docs/deploy.md.
    """


@deploy.command("start")
@click.argument("model", required=False)
@click.option("--version", default=None, help="The version to deploy (X.Y.Z).")
@click.option("--stage", default=None, help="Deploy the version at this registry stage.")
@_ENV
@click.option("--image", default=None, metavar="REF", help="Deploy this image (its labels "
              "must name the version) instead of the pushed digest the registry recorded.")
@_WAIT
@_PUSH
@_GITHUB
@_WORKSPACE
def start(model: str | None, version: str | None, stage: str | None, env_name: str,
          image: str | None, wait_s: float, push: bool, github_deployment: bool,
          workspace: Path) -> None:
    """Roll MODEL out (the default command: `deploy NAME ...` is `deploy start NAME ...`)."""
    from gha_mlops.deploy.rollout import Rollouts
    from gha_mlops.registry import open_registry

    if (version is None) == (stage is None):
        raise UsageError("give exactly one of --version V or --stage S",
                         hint="e.g. gha-mlops deploy digits --stage staging --env production")
    deploy_cfg, env = bootstrap.deploy_environment(workspace, env_name, progress=render.line)
    reg = open_registry(workspace)
    name = model or deploy_cfg.model or render.only_model(reg.config())
    mv = reg.resolve(f"{name}@{version}" if version else f"{name}#{stage}")
    ref = image or render.pushed_image(mv)
    github = Announcer.create(os.environ, enabled=github_deployment)
    with github, render.closing(env.hosts):
        github.start(env, mv, ref)
        try:
            outcome = Rollouts(env, wait_s=wait_s).deploy(
                mv.name, mv.version, ref, render.expected_labels(mv),
                then=render.stage_mover(workspace, env.config.stage, push=push))
        except GhaMlopsError as err:
            github.finish(False, err.message, env.url)
            render.failure_summary(os.environ, env.name, f"{mv.name} {mv.version}", err)
            raise
        github.finish(True, f"{mv.name} {mv.version} serves {env.name}", outcome.url)
    render.outcome(os.environ, outcome, stage=env.config.stage)


@deploy.command()
@_ENV
@_WAIT
@_PUSH
@_GITHUB
@_WORKSPACE
def rollback(env_name: str, wait_s: float, push: bool, github_deployment: bool,
             workspace: Path) -> None:
    """Send all traffic back to the version that served before the current one (its
    recorded image digest: nothing is rebuilt), and move the registry's stage back."""
    from gha_mlops.deploy.rollout import Rollouts
    from gha_mlops.registry import open_registry

    _, env = bootstrap.deploy_environment(workspace, env_name, progress=render.line)
    reg = open_registry(workspace)
    github = Announcer.create(os.environ, enabled=github_deployment)
    with github, render.closing(env.hosts):
        try:
            outcome = Rollouts(env, wait_s=wait_s).rollback(
                then=render.stage_mover(workspace, env.config.stage, push=push))
            github.start(env, reg.version(outcome.release.model, outcome.release.version),
                         outcome.release.image)
        except GhaMlopsError as err:
            github.finish(False, err.message, env.url)
            render.failure_summary(os.environ, env.name, "rollback", err)
            raise
        github.finish(True, f"rolled back to {outcome.release.label()}", outcome.url)
    render.outcome(os.environ, outcome, stage=env.config.stage)


@deploy.command()
@_ENV
@click.option("--json", "as_json", is_flag=True, help="Print the state as JSON.")
@click.option("--no-settle", is_flag=True, help="Only read: leave an unfinished rollout "
              "nobody holds as it is (default: settle it back to the stable version).")
@_WORKSPACE
def status(env_name: str, as_json: bool, no_settle: bool, workspace: Path) -> None:
    """Say what serves in ENV, host by host, with the router's weights."""
    from gha_mlops.deploy.rollout import Rollouts

    _, env = bootstrap.deploy_environment(workspace, env_name, progress=render.line)
    with render.closing(env.hosts):
        rollouts = Rollouts(env)
        state = rollouts.status(settle=not no_settle)
    render.status(state, rollouts.notes, as_json=as_json)


def _add_render() -> None:
    from gha_mlops.cli._deploy_kserve import render as render_command

    deploy.add_command(render_command)


_add_render()
