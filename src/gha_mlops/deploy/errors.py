"""The errors of deployment, each with its exit code (docs/exit-codes.md)."""

from __future__ import annotations

from gha_mlops.errors import ExitCode, GhaMlopsError


class DeployError(GhaMlopsError):
    """A rollout failed a check (readiness, golden requests, a gate) and traffic went back to
    the previous version; the message names the check and the numbers."""

    exit_code = ExitCode.DEPLOY_FAILED


class DeployTargetError(GhaMlopsError):
    """A deploy target could not be used: a Docker host or its router is unreachable, or
    refused a call. The message names the host (its daemon URL) and the call."""

    exit_code = ExitCode.DEPLOY_TARGET


class DeployBusyError(GhaMlopsError):
    """Another deploy holds the environment's lock; the message names the holder."""

    exit_code = ExitCode.WORKSPACE_BUSY
