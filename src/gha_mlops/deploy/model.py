"""The state of an environment, as read from its hosts.

An environment has two *slots*, ``a`` and ``b``: each runs at most one backend container (one
version of the model) on every host. The router (an nginx container per host) sends
``weight`` percent of the traffic to the ``canary`` slot and the rest to the ``stable`` one,
and its configuration carries a :class:`RouterState` record, so what serves where is read from
the hosts, not from a local file. A rollout in progress is marked in the record
(:attr:`RouterState.rollout`); a lock container per environment names the deploy that holds it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Slot = Literal["a", "b"]
SLOTS: tuple[Slot, Slot] = ("a", "b")
LABEL_PREFIX = "io.gha-mlops.deploy."
HISTORY_LIMIT = 10  # previous stable releases the router record keeps (rollback targets)


def other(slot: Slot) -> Slot:
    """The slot that is not ``slot``."""
    return "b" if slot == "a" else "a"


@dataclass(frozen=True)
class Release:
    """A version of a model as an image: ``image`` is the reference containers are created
    from (``repo@sha256:...`` when the registry recorded a pushed digest, else the local image
    id ``sha256:...``), ``image_id`` the image's id (its config digest), the same on every
    host."""

    model: str
    version: str
    image: str
    image_id: str

    def to_json(self) -> dict[str, str]:
        return {"model": self.model, "version": self.version, "image": self.image,
                "image_id": self.image_id}

    def label(self) -> str:
        """``digits 1.2.0`` for messages."""
        return f"{self.model} {self.version}"


@dataclass(frozen=True)
class PredictionLog:
    """Where a backend writes its prediction log (docs/monitoring.md): ``location`` is an
    ``s3://bucket/prefix`` URL or an absolute directory on the Docker host (a local host
    only: the directory is mounted into the container, which runs as the directory's
    owner); ``sample`` the share of instances logged; ``env`` the AWS variables the server
    needs for S3 (taken from the deploying process: credentials, region, endpoint)."""

    location: str
    sample: float = 0.1
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_s3(self) -> bool:
        return self.location.startswith("s3://")


@dataclass(frozen=True)
class Rollout:
    """The mark of a rollout in progress: who started it (``owner``, ``host:pid``), when
    (unix seconds) and the step reached (its index in the environment's steps, -1 before
    the first shift)."""

    owner: str
    started: float
    step: int = -1


@dataclass(frozen=True)
class RouterState:
    """The record a router's configuration carries. ``stable``/``canary`` are the releases in
    their slots (None: empty), ``weight`` the percent of traffic to the canary (0..100),
    ``history`` the previous stable releases, newest first (at most :data:`HISTORY_LIMIT`),
    ``generation`` a counter raised on every write (the router answers it, so a writer knows
    when a reload is live)."""

    env: str
    stable_slot: Slot | None = None
    stable: Release | None = None
    canary_slot: Slot | None = None
    canary: Release | None = None
    weight: int = 0
    rollout: Rollout | None = None
    history: tuple[Release, ...] = ()
    generation: int = 0


@dataclass(frozen=True)
class Backend:
    """A backend container found on a host: its slot, the release its labels name, its
    port, the container id and Docker's state of it (``running``, ``exited``, ...)."""

    slot: Slot
    release: Release
    port: int
    container_id: str
    status: str


@dataclass(frozen=True)
class LockInfo:
    """Who holds an environment: ``owner`` (``hostname:pid``), ``hostname``, ``pid``,
    ``started`` and ``expires`` (unix seconds; a lock past ``expires`` is stale), and
    ``what`` (``digits 1.3.0``) for messages."""

    owner: str
    hostname: str
    pid: int
    started: float
    expires: float
    what: str = ""


@dataclass(frozen=True)
class HostState:
    """What one host says about an environment: its router's record (None: no router yet,
    or one whose record is missing), whether the router runs, the backends, the lock."""

    host: str
    router: RouterState | None
    router_running: bool
    backends: tuple[Backend, ...] = field(default_factory=tuple)
    lock: LockInfo | None = None

    def backend(self, slot: Slot) -> Backend | None:
        return next((b for b in self.backends if b.slot == slot), None)
