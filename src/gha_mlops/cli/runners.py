"""``gha-mlops runners``: the self-hosted runner autoscaler (serve) and its state (status)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click

_CONFIG_HELP = "The autoscaler's configuration (see docs/runners.md)."


@click.group()
def runners() -> None:
    """Ephemeral self-hosted runners on your GPU hosts, brought up for queued jobs."""


@runners.command()
@click.option("--config", "-c", "config", default="runners.yaml", show_default=True,
              type=click.Path(dir_okay=False, path_type=Path), help=_CONFIG_HELP)
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--port", type=int, default=None,
              help="Listen on this port instead of the one in `webhook.listen` (0: any).")
def serve(config: Path, log_level: str, port: int | None) -> None:
    """Serve workflow_job webhooks and keep each pool's runners as its jobs need.

    Logs are JSON lines on stderr; metrics are at /metrics; SIGTERM stops it (running jobs
    are not touched; the next start picks everything up from the state file).
    """
    from gha_mlops import bootstrap
    from gha_mlops.runners.config import load_config
    from gha_mlops.runners.observe import setup_logging

    setup_logging(log_level)
    environ = dict(os.environ)  # read here, once; the service reads only this mapping
    cfg = load_config(config, environ)
    bootstrap.runner_service(cfg, environ, port=port).serve_forever()


@runners.command()
@click.option("--config", "-c", "config", default="runners.yaml", show_default=True,
              type=click.Path(dir_okay=False, path_type=Path), help=_CONFIG_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def status(config: Path, as_json: bool) -> None:
    """Print the pools, their runners and the queued jobs, from the autoscaler's state."""
    from gha_mlops.runners import status as st
    from gha_mlops.runners.config import load_config

    cfg = load_config(config, dict(os.environ), need_secrets=False)
    data = st.snapshot(cfg, time.time(), config_path=str(config))
    click.echo(json.dumps(data, indent=2) if as_json else st.render(data))


@runners.command()
@click.option("--config", "-c", "config", default="runners.yaml", show_default=True,
              type=click.Path(dir_okay=False, path_type=Path), help=_CONFIG_HELP)
@click.option("--live", is_flag=True, help="Also ask GitHub (the scope's runners) and each "
              "backend the pools use whether they answer: the Docker daemons and their GPUs; "
              "for EC2 the credentials, subnets, AMI, launch template and queue.")
def check(config: Path, live: bool) -> None:
    """Check runners.yaml (and its secrets) without serving: exit 2 with every mistake and
    its line, else what it sets up. With --live, GitHub failing is exit 9, a backend 10."""
    from gha_mlops import bootstrap
    from gha_mlops.errors import ExitCode
    from gha_mlops.runners.check import check as run_check
    from gha_mlops.runners.config import load_config

    environ = dict(os.environ)
    cfg = load_config(config, environ)
    if not live:
        report = run_check(cfg)
    else:
        with bootstrap.runner_github(cfg) as github:
            backends = bootstrap.runner_backends(cfg, environ)
            try:
                report = run_check(cfg, github=github, backends=backends)
            finally:
                for backend in backends.values():
                    backend.close()
    for line in report.lines:
        click.echo(line)
    if report.github_problem is not None:
        raise SystemExit(ExitCode.GITHUB)
    if report.backend_problems:
        raise SystemExit(ExitCode.RUNNER_BACKEND)


from gha_mlops.cli._runners_agent import agent  # noqa: E402  (the instance side: its own module)

runners.add_command(agent)
