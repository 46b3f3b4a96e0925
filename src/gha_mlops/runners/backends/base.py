"""The port every runner backend implements (Docker hosts now, cloud spot instances next).

A *machine* is whatever hosts exactly one ephemeral runner: a container on a Docker host, an
instance in the cloud. The autoscaler never assumes more than this interface: it launches a
machine for a runner it has already reserved and registered, lists the machines it owns to
find orphans (each with its real state, so that a restart adopts what it finds by what it is),
starts one that was created and never started, destroys them (idempotently), and asks whether
the backend is healthy.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from gha_mlops._closing import Closing
from gha_mlops.errors import ExitCode, GhaMlopsError

# Labels (container labels, instance tags) every machine carries; list() filters on OWNER.
LABEL_OWNER = "dev.gha-mlops.autoscaler"  # the autoscaler instance id (config `id`)
LABEL_RUNNER = "dev.gha-mlops.runner"  # the runner name
LABEL_POOL = "dev.gha-mlops.pool"
LABEL_GPUS = "dev.gha-mlops.gpus"  # comma-separated GPU ids, "" for none

# The states of a machine (Machine.state), as every backend reports them:
CREATED = "created"  # exists but was never started, and will not start by itself (the
# autoscaler died between creating and starting it): start() it or destroy() it
PENDING = "pending"  # on its way up by itself (a container starting, an instance pending)
RUNNING = "running"  # up: its runner is booting, waiting for a job or running one
EXITED = "exited"  # its runner exited (finished its job, or crashed): destroy it
LOST = "lost"  # stopped under its runner by its host (a host restart, a spot interruption),
# not by the runner finishing: the job it ran, if any, went away with it
STATES = (CREATED, PENDING, RUNNING, EXITED, LOST)
FAILPOINTS_ENV = "GHA_MLOPS_FAILPOINTS"


def armed_failpoints(environ: Mapping[str, str]) -> frozenset[str]:
    """The failpoints ``$GHA_MLOPS_FAILPOINTS`` (comma-separated) arms in ``environ``."""
    return frozenset(name for name in environ.get(FAILPOINTS_ENV, "").split(",") if name)


def failpoint(name: str, armed: Collection[str]) -> None:
    """Crash here with SIGKILL when ``armed`` names this point (for the crash tests: "killed
    between container created and started", "... started and state written")."""
    if name in armed:
        os.kill(os.getpid(), signal.SIGKILL)


class BackendError(GhaMlopsError):
    """A backend call failed (the daemon is down, the image is missing, no capacity ...).

    ``retryable`` says whether trying again later may succeed (a daemon restarting, no free
    GPU) or not (a missing image, a bad option: the pool's configuration must change).
    """

    exit_code = ExitCode.RUNNER_BACKEND

    def __init__(self, message: str, *, hint: str | None = None, retryable: bool = True) -> None:
        super().__init__(message, hint=hint)
        self.retryable = retryable


@dataclass(frozen=True)
class LaunchSpec:
    """One runner's machine, as the scaler asks for it."""

    runner_name: str
    pool: str
    image: str
    jit_config: str  # the encoded just-in-time config (secret: never logged)
    labels: tuple[str, ...] = ()
    cpus: float | None = None  # None: no limit
    memory_mb: int | None = None
    gpus: int = 0
    env: Mapping[str, str] = field(default_factory=dict)
    # The pool's max_lifetime in seconds: a cloud backend tags the machine with an expiry
    # (launch + this + its grace) after which it is terminated whatever GitHub says.
    max_lifetime: float | None = None
    # It replaces a runner whose machine got notice under a job (a spot interruption): it
    # will likely run that job's one re-run. A cloud backend may launch it on-demand where
    # the pool says so (ec2.rerun_on_demand), so that the re-run is not interrupted too.
    replaces_interrupted: bool = False


@dataclass(frozen=True)
class Machine:
    """A machine the backend owns, as list() and launch() report it."""

    id: str  # container id, instance id
    runner_name: str
    pool: str
    state: str  # one of STATES: created | pending | running | exited | lost
    created_at: float  # unix seconds
    gpus: tuple[str, ...] = ()
    detail: str = ""  # e.g. the exit code or the backend's own status text
    # When the backend terminates it whatever GitHub says (a cloud machine's expiry tag);
    # None: no expiry. The policy removes a machine past it.
    expires_at: float | None = None
    # Non-empty: its host gave notice that it goes away soon (a spot interruption warning,
    # e.g. "spot interruption notice (instance metadata) for 2026-12-06T03:02:00Z"): its
    # runner must take no new job; the job it runs is re-run if the machine goes under it.
    notice: str = ""


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str = ""
    # Free capacity the backend knows of, e.g. {"gpus": 3}; empty when unbounded/unknown.
    capacity: Mapping[str, int] = field(default_factory=dict)
    # A backend over several hosts: the free GPUs of each host that answers, by host name
    # (their sum is capacity["gpus"]; a host not named is down); a runner's GPUs must all be
    # on one host.
    gpus_by_host: Mapping[str, int] = field(default_factory=dict)


class RunnerBackend(Closing, Protocol):
    """Machines for runners; owns ``close()`` and is a context manager (:class:`Closing`)."""

    name: str  # "docker", "ec2", ...

    def launch(self, spec: LaunchSpec) -> Machine:
        """Start one machine for ``spec.runner_name``; raise :class:`BackendError` on failure
        (leaving nothing behind where possible: what it cannot clean up, list() will show)."""

    def list(self) -> list[Machine]:
        """Every machine of this autoscaler instance (running or not), from the backend's own
        truth (never from a cache): the scaler compares it with its state to find orphans.
        A machine its host took away under its runner (a daemon restart, a spot
        interruption) is reported ``lost``, at least once, even when the host removed it."""

    def start(self, machine_id: str) -> Machine:
        """Start a machine list() reports as ``created`` (its launch was cut short between
        creating and starting it) and return it as launch() would; one already up is
        returned as it is. Raise :class:`BackendError` when it cannot start (the scaler then
        destroys it), or when it is gone."""

    def destroy(self, machine_id: str) -> None:
        """Stop and remove the machine and free what it held (its GPUs); a machine that is
        already gone is not an error."""

    def health(self) -> Health:
        """Whether the backend can launch now (``ok``, with ``detail`` saying why not) and the
        free capacity it knows of."""

    def close(self) -> None:
        """Let go of connections (the service calls it when it stops); closing twice is
        harmless, and a later call opens new ones."""
