"""What a rollout needs of one host, as a port: the Docker adapter
(:class:`gha_mlops.deploy.docker_hosts.DockerHost`) implements it against a real daemon;
unit tests use a fake. Every method raises
:class:`~gha_mlops.deploy.errors.DeployTargetError` (never an SDK exception) when the host
cannot be used, naming the host and the call."""

from __future__ import annotations

from typing import Protocol

from gha_mlops._closing import Closing
from gha_mlops.deploy.model import Backend, HostState, LockInfo, PredictionLog, Release, Slot


class DeployHost(Closing, Protocol):
    """One Docker host of an environment. ``url`` is its daemon URL (for messages);
    ``address`` where the deploying machine reaches ports on it."""

    url: str
    address: str

    def read(self, env: str) -> HostState:
        """The environment on this host: the router's record, the backends, the lock."""

    def ensure_image(self, image: str) -> tuple[str, dict[str, str]]:
        """Make ``image`` (``repo@sha256:...``, ``repo:tag`` or an image id) present, pulling
        it when absent; its image id and labels."""

    def start_backend(self, env: str, slot: Slot, release: Release, *, port: int, bind: str,
                      workers: int, log: PredictionLog | None = None) -> Backend:
        """Start a backend of ``release`` in ``slot`` (replacing whatever container is in
        that slot): host network, the server on ``bind:port`` with ``workers`` workers,
        restart policy ``unless-stopped``, labels naming the env, slot and release; with
        ``log``, the server writes its prediction log there."""

    def read_file(self, env: str, slot: Slot, path: str, *, limit: int) -> bytes | None:
        """The file at ``path`` inside the slot's backend container (at most ``limit``
        bytes: larger is a DeployTargetError), None when it has no such file."""

    def backend_logs(self, env: str, slot: Slot, *, tail: int = 30) -> str:
        """The last ``tail`` lines of the slot's backend container's output ("" if none)."""

    def remove_backend(self, env: str, slot: Slot, *, grace: float) -> None:
        """Stop the slot's backend (SIGTERM, then SIGKILL after ``grace`` seconds) and remove
        it; no container there is fine."""

    def apply_router(self, env: str, conf: str, generation: int, *, image: str,
                     port: int) -> None:
        """Make the router of ``env`` serve ``conf``: create and start its container (from
        ``image``, host network) when absent or stopped, else replace its configuration,
        check it (``nginx -t``) and reload gracefully; return once the router answers
        ``generation`` on ``http://address:port/_gha-mlops/generation``. A configuration
        nginx rejects leaves the running one in place (DeployTargetError)."""

    def remove_router(self, env: str) -> None:
        """Stop and remove the router of ``env`` (none is fine)."""

    def acquire_lock(self, env: str, lock: LockInfo, *, image: str) -> LockInfo | None:
        """Take the environment's lock (atomically: a container named after the env, created
        from ``image``, never started); None when taken, else the holder's LockInfo."""

    def release_lock(self, env: str, lock: LockInfo) -> None:
        """Give the lock back if ``lock`` still holds it."""

    def break_lock(self, env: str, stale: LockInfo) -> bool:
        """Remove the lock if ``stale`` still holds it (a dead or expired holder); whether it
        was removed."""
