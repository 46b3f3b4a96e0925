"""``gha-mlops runners agent``: what runs on an EC2 runner instance at boot."""

from __future__ import annotations

import os

import click

from gha_mlops.runners.agent import DEFAULT_IMDS, DEFAULT_RUNNER_CMD


@click.command()
@click.option("--imds", default=DEFAULT_IMDS, show_default=True,
              help="The instance metadata endpoint (IMDSv2 only).")
@click.option("--runner-cmd", default=DEFAULT_RUNNER_CMD, show_default=True,
              help="The runner's wrapper (shell words, run without a shell); it gets the "
              "just-in-time config in $GHA_MLOPS_JITCONFIG.")
@click.option("--poll", default="5s", show_default=True,
              help="How often to look for a spot interruption notice.")
@click.option("--on-exit", default="poweroff", show_default=True,
              help="Run when the runner exits or the agent cannot serve one ('' for nothing).")
@click.option("--endpoint-url", default=None,
              help="An AWS-compatible endpoint for SSM and EC2 (tests); default: AWS's own.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def agent(imds: str, runner_cmd: str, poll: str, on_exit: str, endpoint_url: str | None,
          log_level: str) -> None:
    """Serve this EC2 instance's one runner: read its config from SSM once (deleting it),
    run it, tag the instance on a spot interruption notice, power off when it exits.

    Logs are JSON lines on stderr. Exit 10 when the instance cannot serve its runner
    (no tag, no parameter, no metadata), 1 when the runner failed.
    """
    from gha_mlops.errors import ExitCode
    from gha_mlops.runners.agent import AgentError, AgentOptions, run_agent, split_command
    from gha_mlops.runners.config import parse_duration
    from gha_mlops.runners.observe import setup_logging

    setup_logging(log_level)
    try:
        poll_s = parse_duration(poll)
    except ValueError as err:
        raise AgentError(f"--poll {poll!r}: {err}", hint="e.g. --poll 5s") from None
    if not 0.05 <= poll_s <= 300:
        raise AgentError(f"--poll {poll!r} is outside 50ms..5m",
                         hint="the notice comes two minutes ahead: poll every few seconds")
    command = split_command(runner_cmd, "--runner-cmd")
    if not command:
        raise AgentError("--runner-cmd is empty", hint=f"e.g. {DEFAULT_RUNNER_CMD}")
    options = AgentOptions(imds=imds, runner_cmd=command, poll_s=poll_s,
                           on_exit=split_command(on_exit, "--on-exit"),
                           endpoint_url=endpoint_url or None)
    code = run_agent(options, dict(os.environ))
    if code != 0:
        raise SystemExit(ExitCode.FAILURE)
