"""The Docker adapter of :class:`~gha_mlops.runners.backends.base.RunnerBackend`: one container
per ephemeral runner on one Docker host (a GPU box).

A container is created from the pool's image (runner/Dockerfile builds one) with the runner's
just-in-time config in ``GHA_MLOPS_JITCONFIG``, the pool's CPU and memory limits (no swap),
``--init``, ``--rm`` (a finished runner leaves nothing) and the labels of
:mod:`~gha_mlops.runners.backends.base`, which are the whole state this adapter keeps: list()
asks the daemon, and the GPUs a container holds are read back from its label, so GPU
allocation survives a restart of the autoscaler.

GPUs come from the host's inventory (``gpus``: indexes or UUIDs as ``nvidia-smi -L`` shows
them), given to one container at a time through a Docker device request (``--gpus
device=...``) for ``gpu_driver``; ``NVIDIA_VISIBLE_DEVICES`` is set to the same ids (``void``
without GPUs), so an image that says ``all`` cannot see more on a host whose default runtime
is nvidia. Allocation counts only this autoscaler's containers (``owner``): give autoscalers
that share a host disjoint inventories.

The Docker SDK is imported lazily (``pip install 'gha-mlops[runners]'``). Every failure is a
:class:`~gha_mlops.runners.backends.base.BackendError` that names the daemon, the pool and
the image as they matter, and says whether retrying can help.
"""

from __future__ import annotations

import builtins
import math
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from gha_mlops.errors import ConfigError, missing_extra
from gha_mlops.runners.backends.base import (
    CREATED,
    EXITED,
    LABEL_GPUS,
    LABEL_OWNER,
    LABEL_POOL,
    LABEL_RUNNER,
    LOST,
    PENDING,
    RUNNING,
    BackendError,
    Health,
    LaunchSpec,
    Machine,
    RunnerBackend,
    armed_failpoints,
    failpoint,
)

if TYPE_CHECKING:
    from docker import APIClient
    from docker.errors import APIError

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
JITCONFIG_ENV = "GHA_MLOPS_JITCONFIG"
# Docker's container states, as the machine states of the port. A container in Docker's
# "created" never started (launch() was cut short between create and start): it will not
# start by itself.
STATES = {"created": CREATED, "running": RUNNING, "restarting": PENDING, "paused": RUNNING,
          "removing": EXITED, "exited": EXITED, "dead": EXITED}
GONE_TIMEOUT_S = 10.0  # how long destroy() waits for a removal already in progress
NO_DRIVER = "could not select device driver"


def _require_sdk() -> None:
    try:
        import docker  # noqa: F401
    except ImportError:
        raise missing_extra("docker", "runners") from None


def allocate_gpus(inventory: Sequence[str], in_use: Sequence[str] | set[str], wanted: int, *,
                  pool: str) -> tuple[str, ...]:
    """The first ``wanted`` GPUs of ``inventory`` not ``in_use``, or a :class:`BackendError`:
    retryable when they are busy, not when the host does not have that many at all."""
    if wanted <= 0:
        return ()
    if wanted > len(inventory):
        have = f"{len(inventory)} ({', '.join(inventory)})" if inventory else "none configured"
        raise BackendError(
            f"pool {pool!r} wants {wanted} GPU(s) per runner, but this Docker host has {have}",
            hint="lower the pool's gpus, or list the host's GPUs in the docker backend's gpus",
            retryable=False)
    busy = set(in_use)
    free = [gpu for gpu in inventory if gpu not in busy]
    if len(free) < wanted:
        raise BackendError(
            f"pool {pool!r} wants {wanted} GPU(s), {len(free)} of {len(inventory)} free "
            f"(in use: {', '.join(g for g in inventory if g in busy)})",
            hint="it can start when a runner holding GPUs is done", retryable=True)
    return tuple(free[:wanted])


def _split(label: str | None) -> tuple[str, ...]:
    return tuple(part for part in (label or "").split(",") if part)


def _machine(summary: Mapping[str, Any]) -> Machine:
    """A container of ``GET /containers/json`` as a :class:`Machine`."""
    labels = summary.get("Labels") or {}
    names = summary.get("Names") or ["/"]
    return Machine(id=summary["Id"], runner_name=labels.get(LABEL_RUNNER) or names[0][1:],
                   pool=labels.get(LABEL_POOL, ""),
                   state=STATES.get(summary.get("State", ""), EXITED),
                   created_at=float(summary.get("Created", 0)),
                   gpus=_split(labels.get(LABEL_GPUS)), detail=summary.get("Status", ""))


class DockerBackend(RunnerBackend):
    """Runners as containers on the Docker daemon at ``base_url`` (``None``: the one
    ``environ`` names, as the ``docker`` CLI finds it: ``$DOCKER_HOST``, ``$DOCKER_TLS_VERIFY``,
    ``$DOCKER_CERT_PATH``, ``$DOCKER_CONTEXT``; ``environ`` empty or ``None``: the local
    socket). The process's own environment is never read here: the CLI passes it in."""

    name = "docker"

    def __init__(self, owner: str, *, base_url: str | None = None, gpus: Sequence[str] = (),
                 network: str = "bridge", extra_env: Mapping[str, str] | None = None,
                 gpu_driver: str = "nvidia", stop_timeout: float = 10,
                 timeout: float = 60, environ: Mapping[str, str] | None = None) -> None:
        _require_sdk()
        bad = [gpu for gpu in gpus if not gpu or "," in gpu or gpu.strip() != gpu]
        if bad or len(set(gpus)) != len(gpus):
            raise ConfigError(f"docker backend: the GPU inventory {list(gpus)} has "
                              f"{'bad ids ' + repr(bad) if bad else 'duplicates'}",
                              hint="list each GPU once, by index or UUID (nvidia-smi -L)")
        self.owner = owner
        self.base_url = base_url
        self.environ = dict(environ or {})
        self.daemon_url = base_url or self.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
        self.gpus = tuple(gpus)
        self.network = network
        self.extra_env = dict(extra_env or {})
        self.gpu_driver = gpu_driver
        self.stop_timeout = stop_timeout
        self.timeout = timeout
        # "after-create" kills this process between creating and starting a container (the
        # chaos tests' failpoint; $GHA_MLOPS_FAILPOINTS in the environment the CLI passes in).
        self.failpoints = armed_failpoints(self.environ)
        self._api_client: APIClient | None = None
        self._client_lock = threading.Lock()
        # The containers list() saw up last time, and when: one that is gone now with no
        # trace of its removal on the daemon went away with the daemon (see list()).
        self._up: dict[str, Machine] = {}  # launch() and start() add theirs
        self._up_lock = threading.Lock()
        # Held from reading the GPUs in use to creating the container that takes some.
        self._alloc_lock = threading.Lock()

    # -- the port ---------------------------------------------------------------------------

    def launch(self, spec: LaunchSpec) -> Machine:
        what = f"launching runner {spec.runner_name!r} of pool {spec.pool!r}"
        with self._alloc_lock:
            gpus = allocate_gpus(self.gpus, self._gpus_in_use(what), spec.gpus, pool=spec.pool)
            container_id = self._create(spec, gpus, what)
        failpoint("after-create", self.failpoints)
        try:
            with self._translated(what, spec.image):
                self._api().start(container_id)
        except BackendError as err:
            self._discard(container_id, err)
            raise
        return self._started(container_id, spec.runner_name, spec.pool, gpus, what)

    def start(self, machine_id: str) -> Machine:
        what = f"starting machine {machine_id}"
        found = self._summaries(what, id=machine_id)
        if not found:
            raise BackendError(f"{what}: no container {machine_id} of autoscaler "
                               f"{self.owner!r} exists", hint="it is gone; nothing to start",
                               retryable=False)
        machine = _machine(found[0])
        if machine.state != CREATED:
            return machine
        with self._translated(what):
            self._api().start(machine_id)
        return self._started(machine_id, machine.runner_name, machine.pool, machine.gpus, what)

    def _started(self, container_id: str, runner: str, pool: str, gpus: tuple[str, ...],
                 what: str) -> Machine:
        """The machine of a container just started, as the daemon reports it now."""
        try:
            found = self._summaries(what, id=container_id)
        except BackendError as err:  # it did start: report it rather than fail the launch
            found, state, detail = [], RUNNING, f"started; its state is unknown: {err.message}"
        else:
            state, detail = EXITED, "exited and removed already"
        machine = _machine(found[0]) if found else Machine(
            id=container_id, runner_name=runner, pool=pool, state=state,
            created_at=time.time(), gpus=gpus, detail=detail)
        if machine.state in (RUNNING, PENDING):
            with self._up_lock:
                self._up[machine.id] = machine
        return machine

    def list(self) -> list[Machine]:
        """The containers, and, once, a ``lost`` machine for each container seen up at the
        previous call that is gone now although this daemon removed no such container since:
        the daemon restarted (or was replaced) under it. Its removal by its own runner's
        exit (``--rm``) or by destroy() leaves a ``destroy`` event, and a restarted daemon
        has none of the old one's events."""
        with self._up_lock:
            now = time.time()
            machines = [_machine(summary) for summary in self._summaries("listing the runners")]
            listed = {m.id for m in machines}
            gone = [m for mid, m in self._up.items() if mid not in listed]
            lost: builtins.list[Machine] = []
            if gone:
                removed = self._removed_since(min(m.created_at for m in gone) - 1, now)
                lost = [replace(m, state=LOST, detail="gone, and the daemon has no trace of "
                                "its removal: the daemon restarted under it")
                        for m in gone if m.id not in removed]
            self._up = {m.id: m for m in machines if m.state in (RUNNING, PENDING)}
        return machines + lost

    def _removed_since(self, since: float, until: float) -> set[str]:
        """The ids of this autoscaler's containers the daemon removed in [since, until]
        (its event log; a daemon keeps the last 256 events of its own life only)."""
        what = "reading the daemon's container events"
        api: Any = self._api()  # the stubs want whole seconds; the daemon takes nanoseconds
        with self._translated(what):
            events = api.events(
                since=f"{max(0.0, since):.9f}", until=f"{until:.9f}", decode=True,
                filters={"type": "container", "event": "destroy",
                         "label": f"{LABEL_OWNER}={self.owner}"})
            return {str(e.get("id") or (e.get("Actor") or {}).get("ID") or "")
                    for e in events if isinstance(e, dict)}

    def destroy(self, machine_id: str) -> None:
        from docker.errors import APIError, NotFound

        what = f"destroying machine {machine_id}"
        api = self._api()
        with self._translated(what):
            try:
                owner = (api.inspect_container(machine_id)["Config"].get("Labels") or {}).get(
                    LABEL_OWNER)
                if owner != self.owner:
                    raise BackendError(
                        f"{what}: container {machine_id} is not a runner of autoscaler "
                        f"{self.owner!r} (its {LABEL_OWNER} label is {owner!r})",
                        hint="destroy only the machines list() returns", retryable=False)
                api.stop(machine_id, timeout=math.ceil(self.stop_timeout))
                api.remove_container(machine_id, force=True)
            except NotFound:
                return
            except APIError as err:
                if err.status_code != 409:  # 409: --rm is removing it already
                    raise
            self._wait_gone(machine_id, what)

    def health(self) -> Health:
        try:
            with self._translated("pinging the daemon"):
                self._api().ping()
            in_use = set(self._gpus_in_use("checking the GPUs in use"))
        except BackendError as err:
            return Health(ok=False, detail=err.message)
        free = {"gpus": sum(gpu not in in_use for gpu in self.gpus)} if self.gpus else {}
        return Health(ok=True, detail=f"Docker daemon at {self.daemon_url}", capacity=free)

    def close(self) -> None:
        """Close the connections to the daemon (a later call opens new ones)."""
        with self._client_lock:
            client, self._api_client = self._api_client, None
        if client is not None:
            client.close()

    # -- steps ------------------------------------------------------------------------------

    def _create(self, spec: LaunchSpec, gpus: tuple[str, ...], what: str) -> str:
        from docker.types import DeviceRequest

        api = self._api()
        env = {**self.extra_env, **spec.env,
               "NVIDIA_VISIBLE_DEVICES": ",".join(gpus) or "void",
               "RUNNER_NAME": spec.runner_name, "RUNNER_LABELS": ",".join(spec.labels),
               JITCONFIG_ENV: spec.jit_config}
        limits: dict[str, Any] = {}
        if spec.cpus is not None:
            limits["nano_cpus"] = round(spec.cpus * 1e9)
        if spec.memory_mb is not None:
            limits["mem_limit"] = limits["memswap_limit"] = spec.memory_mb * 1024 * 1024
        if gpus:
            limits["device_requests"] = [DeviceRequest(
                driver=self.gpu_driver, device_ids=list(gpus), capabilities=[["gpu"]])]
        with self._translated(what, spec.image):
            host_config = api.create_host_config(auto_remove=True, init=True,
                                                 network_mode=self.network, **limits)
            created = api.create_container(
                spec.image, name=spec.runner_name, environment=env, detach=True,
                labels={LABEL_OWNER: self.owner, LABEL_RUNNER: spec.runner_name,
                        LABEL_POOL: spec.pool, LABEL_GPUS: ",".join(gpus)},
                host_config=host_config, stop_timeout=math.ceil(self.stop_timeout))
        return str(created["Id"])

    def _discard(self, container_id: str, err: BackendError) -> None:
        """Remove a container that did not start; if that fails too, say so in ``err``."""
        from docker.errors import NotFound

        try:
            with self._translated(f"removing container {container_id}"), suppress(NotFound):
                self._api().remove_container(container_id, force=True)
        except BackendError as cleanup:
            err.notes.append(f"the container {container_id} is left behind ({cleanup.message});"
                             " list() shows it and destroy() removes it")

    def _wait_gone(self, container_id: str, what: str) -> None:
        from docker.errors import NotFound

        deadline = time.monotonic() + GONE_TIMEOUT_S
        while time.monotonic() < deadline:
            with self._translated(what):
                try:
                    self._api().inspect_container(container_id)
                except NotFound:
                    return
            time.sleep(0.1)
        raise BackendError(f"{what}: the container is still being removed after "
                           f"{GONE_TIMEOUT_S:g} s", retryable=True)

    def _summaries(self, what: str, **filters: str) -> builtins.list[dict[str, Any]]:
        with self._translated(what):
            return list(self._api().containers(
                all=True, filters={"label": f"{LABEL_OWNER}={self.owner}", **filters}))

    def _gpus_in_use(self, what: str) -> set[str]:
        if not self.gpus:
            return set()
        return {gpu for summary in self._summaries(what)
                for gpu in _split((summary.get("Labels") or {}).get(LABEL_GPUS))}

    # -- the daemon -------------------------------------------------------------------------

    def _api(self) -> APIClient:
        """The SDK's client, made on first use (making it asks the daemon its API version)."""
        with self._client_lock:
            if self._api_client is None:
                import docker

                try:
                    # The SDK reads os.environ when handed an empty environment: without
                    # one, the daemon is named (the local socket) rather than looked up.
                    if self.base_url is None and self.environ:
                        client = docker.from_env(timeout=int(self.timeout),
                                                 environment=self.environ)
                        self._api_client = client.api
                    else:
                        self._api_client = docker.APIClient(base_url=self.daemon_url,
                                                            timeout=int(self.timeout))
                except docker.errors.DockerException as err:
                    raise self._unreachable("connecting", err) from err
            return self._api_client

    def _unreachable(self, what: str, err: BaseException) -> BackendError:
        return BackendError(
            f"{what}: cannot reach the Docker daemon at {self.daemon_url}: {err}",
            hint="check that dockerd is running there and that this user may use its socket "
                 "(the docker group); this is retried", retryable=True)

    @contextmanager
    def _translated(self, what: str, image: str | None = None) -> Iterator[None]:
        """SDK and transport errors as :class:`BackendError` saying what failed and why."""
        import requests
        from docker.errors import APIError, ImageNotFound

        try:
            yield
        except ImageNotFound as err:
            raise BackendError(
                f"{what}: the image {image!r} is not on the Docker host {self.daemon_url}",
                hint=f"build it on that host: docker build -t {image} runner/ (or fix the "
                     "pool's image)", retryable=False) from err
        except APIError as err:
            raise self._api_error(what, err) from err
        except requests.exceptions.RequestException as err:  # refused, reset, timed out
            raise self._unreachable(what, err) from err

    def _api_error(self, what: str, err: APIError) -> BackendError:
        explanation = str(err.explanation or err)
        if NO_DRIVER in explanation:
            return BackendError(
                f"{what}: the Docker daemon at {self.daemon_url} has no GPU device driver "
                f"{self.gpu_driver!r}: {explanation}",
                hint="install the NVIDIA Container Toolkit on the host and restart dockerd, or "
                     "set the docker backend's gpu_driver", retryable=False)
        if err.status_code == 409:
            return BackendError(f"{what}: {explanation}",
                                hint="a container of that name exists already: destroy it "
                                     "(list() shows it when it is this autoscaler's)",
                                retryable=False)
        return BackendError(
            f"{what}: the Docker daemon at {self.daemon_url} answered "
            f"{err.status_code}: {explanation}", retryable=err.is_server_error())
