"""The Docker adapter of packaging: build, inspect, push and run serving images.

The only packaging module that imports the Docker SDK (lazily: ``pip install
'gha-mlops[package]'``). Every failure is a :class:`~gha_mlops.packaging.build.PackageError`
that names the daemon (and the registry, for a push) and says what to do.

Builds go through the daemon's classic builder with ``network_mode="none"``: the context
holds everything (see :mod:`gha_mlops.packaging.build`), so a base image that is not on the
daemon is an error rather than a pull. Pushes read every status line of the stream, since
the daemon reports a refused push there, not in the HTTP status.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gha_mlops.errors import missing_extra, quoted
from gha_mlops.packaging.build import PROBE, PackageError, PythonTarget

if TYPE_CHECKING:
    from docker import APIClient

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
LOG_TAIL = 30  # build output lines an error quotes
MAX_PROBE_OUTPUT = 4096


@dataclass(frozen=True)
class ImageFacts:
    """What ``docker image inspect`` says about an image, as packaging needs it."""

    id: str
    size: int
    user: str
    labels: dict[str, str]
    healthcheck: tuple[str, ...]
    layers: tuple[str, ...]
    repo_digests: tuple[str, ...]
    env: tuple[str, ...]


def split_reference(image: str) -> tuple[str, str]:
    """``("reg:5000/digits", "1.2.0")`` of ``"reg:5000/digits:1.2.0"`` (tag ``latest`` when
    none; a ``:`` before the last ``/`` is a registry's port, not a tag)."""
    name, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:
        return image, "latest"
    return name, tag


class DockerImages:
    """Serving images on the Docker daemon at ``base_url`` (``None``: the one ``environ``
    names, as the ``docker`` CLI finds it: ``$DOCKER_HOST``, ``$DOCKER_TLS_VERIFY``,
    ``$DOCKER_CERT_PATH``; empty: the local socket). Never reads ``os.environ`` itself."""

    def __init__(self, *, base_url: str | None = None,
                 environ: Mapping[str, str] | None = None, timeout: float = 600) -> None:
        try:
            import docker  # noqa: F401
        except ImportError:
            raise missing_extra("docker", "package") from None
        self.base_url = base_url
        self.environ = dict(environ or {})
        self.daemon_url = base_url or self.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
        self.timeout = timeout
        self._api_client: APIClient | None = None

    # -- the daemon ---------------------------------------------------------------------------

    def _api(self) -> APIClient:
        """The SDK's client, made on first use (making it asks the daemon its API version)."""
        if self._api_client is None:
            import docker

            try:
                # The SDK reads os.environ when handed an empty environment: without one, the
                # daemon is named (the local socket) rather than looked up.
                if self.base_url is None and self.environ:
                    self._api_client = docker.from_env(timeout=int(self.timeout),
                                                       environment=self.environ).api
                else:
                    self._api_client = docker.APIClient(base_url=self.daemon_url,
                                                        timeout=int(self.timeout))
            except docker.errors.DockerException as err:
                raise self._unreachable(err) from err
        return self._api_client

    def _unreachable(self, err: BaseException) -> PackageError:
        return PackageError(f"Docker is not reachable at {self.daemon_url}: {err}",
                            hint="start it or set DOCKER_HOST (and check that this user may "
                                 "use its socket: the docker group)")

    @contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        """SDK and transport errors as :class:`PackageError` saying what failed and why."""
        import requests
        from docker.errors import APIError, DockerException

        try:
            yield
        except APIError as err:
            raise PackageError(f"{what}: the Docker daemon at {self.daemon_url} answered "
                               f"{err.status_code}: {err.explanation or err}") from err
        except requests.exceptions.RequestException as err:  # refused, reset, timed out
            raise self._unreachable(err) from err
        except DockerException as err:
            raise PackageError(f"{what}: {err}") from err

    def close(self) -> None:
        """Close the connection to the daemon (a later call opens a new one)."""
        client, self._api_client = self._api_client, None
        if client is not None:
            client.close()

    def __enter__(self) -> DockerImages:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- images -------------------------------------------------------------------------------

    def require(self, image: str, *, role: str = "base image") -> None:
        """A :class:`PackageError` unless ``image`` is on the daemon (nothing is pulled)."""
        from docker.errors import ImageNotFound

        api = self._api()
        with self._translated(f"looking up the {role} {image}"):
            try:
                api.inspect_image(image)  # type: ignore[no-untyped-call]
            except ImageNotFound:
                raise PackageError(
                    f"the {role} {quoted(image)} is not on the Docker daemon at "
                    f"{self.daemon_url}",
                    hint=f"docker pull {image} (or build it), or name another with --base"
                ) from None

    def python_of(self, base: str) -> PythonTarget:
        """The Python of ``base``, from a throwaway container of it (no network, removed)."""
        self.require(base)
        api = self._api()
        what = f"asking the base image {base} for its Python"
        with self._translated(what):
            created = api.create_container(
                base, command=["python3", "-c", PROBE], entrypoint=[], user="0",
                host_config=api.create_host_config(network_mode="none"),
                network_disabled=True)
            container = created["Id"]
            try:
                api.start(container)
                status = api.wait(container, timeout=120)
                output = api.logs(container, stdout=True, stderr=True)[:MAX_PROBE_OUTPUT]
            finally:
                api.remove_container(container, force=True)
        text = output.decode("utf-8", "replace").strip()
        if status.get("StatusCode") != 0:
            raise PackageError(f"{what}: `python3 -c ...` exited {status.get('StatusCode')}: "
                               f"{quoted(text[-300:], 320)}",
                               hint="use a base image with python3 on its PATH "
                                    "(e.g. python:3.11-slim)")
        try:
            doc = json.loads(text.splitlines()[-1])
        except (ValueError, IndexError):
            doc = None
        return PythonTarget.from_probe(doc, base=base)

    def build(self, context: Path, *, tag: str, labels: Mapping[str, str]) -> str:
        """Build ``context`` (its Dockerfile) as ``tag`` with ``labels``; the image id. No
        network and no pull; intermediate containers are removed even on failure."""
        api = self._api()
        what = f"building {tag}"
        log: list[str] = []
        image_id = ""
        with self._translated(what):
            for chunk in api.build(path=str(context), tag=tag, labels=dict(labels), rm=True,
                                   forcerm=True, pull=False, network_mode="none", decode=True):
                if "stream" in chunk:
                    log.extend(str(chunk["stream"]).splitlines())
                    del log[:-LOG_TAIL]
                if "error" in chunk:
                    tail = "\n".join(log)
                    raise PackageError(f"{what} failed: {chunk['error']}",
                                       hint="the build's last lines are below",
                                       notes=[tail] if tail else None)
                aux = chunk.get("aux")
                if isinstance(aux, dict) and isinstance(aux.get("ID"), str):
                    image_id = aux["ID"]
        if not image_id:
            image_id = self.inspect(tag).id
        return image_id

    def inspect(self, image: str) -> ImageFacts:
        """The facts of ``image`` (an id or a reference)."""
        with self._translated(f"inspecting {image}"):
            doc: dict[str, Any] = self._api().inspect_image(image)  # type: ignore[no-untyped-call]
        config = doc.get("Config") or {}
        health = (config.get("Healthcheck") or {}).get("Test") or ()
        return ImageFacts(
            id=doc["Id"], size=int(doc.get("Size") or 0), user=str(config.get("User") or ""),
            labels=dict(config.get("Labels") or {}), healthcheck=tuple(health),
            layers=tuple((doc.get("RootFS") or {}).get("Layers") or ()),
            repo_digests=tuple(doc.get("RepoDigests") or ()), env=tuple(config.get("Env") or ()))

    def push(self, image: str) -> str:
        """Push ``image`` to the registry its name says; the manifest digest the registry
        stored (``sha256:...``). A refused, unauthorised or unreachable push is a
        :class:`PackageError` with the daemon's words."""
        repository, tag = split_reference(image)
        what = f"pushing {image}"
        digest = ""
        with self._translated(what):
            for line in self._api().push(repository, tag=tag, stream=True, decode=True):
                error = line.get("error") or (line.get("errorDetail") or {}).get("message")
                if error:
                    raise PackageError(
                        f"{what} failed: {error}",
                        hint="check that the registry is reachable from the Docker daemon and "
                             "that you are logged in to it (docker login " +
                             repository.split("/")[0] + ")")
                aux = line.get("aux")
                if isinstance(aux, dict) and str(aux.get("Digest", "")).startswith("sha256:"):
                    digest = str(aux["Digest"])
        if not digest:
            found = [d.split("@", 1)[1] for d in self.inspect(image).repo_digests
                     if d.split("@", 1)[0] == repository]
            if not found:
                raise PackageError(f"{what}: the daemon reported no digest",
                                   hint="push again; check the registry's logs")
            digest = found[0]
        return digest

    # -- containers (a check, the tests and the benchmark) ------------------------------------

    def start(self, image: str, *, port: int, network_mode: str = "host") -> str:
        """Start ``image`` serving on ``port`` (its ``PORT``); the container id."""
        api = self._api()
        with self._translated(f"starting {image}"):
            created = api.create_container(
                image, environment={"PORT": str(port)},
                host_config=api.create_host_config(network_mode=network_mode))
            api.start(created["Id"])
        return str(created["Id"])

    def health(self, container: str) -> str:
        """The container's health status (``starting``, ``healthy``, ``unhealthy``, ``""``)."""
        with self._translated(f"inspecting container {container}"):
            state = self._api().inspect_container(container).get("State") or {}
        return str((state.get("Health") or {}).get("Status") or "")

    def logs(self, container: str) -> str:
        with self._translated(f"reading the logs of {container}"):
            return bytes(self._api().logs(container)).decode("utf-8", "replace")

    def remove(self, container: str) -> None:
        """Stop and remove the container (gone already is fine)."""
        from docker.errors import NotFound

        with self._translated(f"removing container {container}"), suppress(NotFound):
            self._api().remove_container(container, force=True)


def wait_ready(url: str, *, timeout: float = 60, interval: float = 0.02) -> float:
    """Poll ``url`` (``.../v2/health/ready``) until it answers 200; the seconds it took. A
    :class:`PackageError` when it does not within ``timeout`` (the deploy probe's wait)."""
    from gha_mlops.deploy.errors import DeployError
    from gha_mlops.deploy.probe import wait_ready as probe_ready

    try:
        return probe_ready(url.removesuffix("/v2/health/ready"), timeout=timeout,
                           interval=interval)
    except DeployError as err:
        raise PackageError(err.message, hint="read the container's logs (docker logs)") from err
