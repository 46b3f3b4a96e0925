"""The Docker adapter of :class:`~gha_mlops.deploy.ports.DeployHost`: an environment's
containers on one Docker host, through the Docker SDK's low-level client.

On a host, an environment ``ENV`` is at most four containers, all on the host network and
all labelled ``io.gha-mlops.deploy.env=ENV`` (docs/deploy-hosts.md):

- ``gha-mlops-ENV-a`` and ``gha-mlops-ENV-b``: the backends (the packaged image, its server
  on ``bind:port``), labelled with the slot and the release they serve;
- ``gha-mlops-ENV-router``: nginx with the configuration of :mod:`gha_mlops.deploy.router`
  in /etc/gha-mlops/nginx.conf, whose state record this adapter reads back;
- ``gha-mlops-ENV-lock``: created, never started; its labels name the deploy holding the
  environment. Docker refuses a second container of one name, which makes taking it atomic.

Daemon URLs: ``unix:///path``, ``tcp://HOST:PORT`` (plain, no TLS: use it over a trusted
network or a tunnel) and ``ssh://[USER@]HOST[:PORT]`` (through the ``ssh`` client, so the
user's keys and ssh config apply). The SDK is imported lazily; every SDK or transport
failure is a :class:`~gha_mlops.deploy.errors.DeployTargetError` naming the daemon URL and
the call. What a container hands back (its files, labels, logs) is read as hostile: bounded
and typed.
"""

from __future__ import annotations

import http.client
import importlib.util
import io
import math
import socket
import tarfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from gha_mlops.deploy import router
from gha_mlops.deploy.errors import DeployTargetError
from gha_mlops.deploy.model import (
    LABEL_PREFIX,
    SLOTS,
    Backend,
    HostState,
    LockInfo,
    PredictionLog,
    Release,
    RouterState,
    Slot,
)
from gha_mlops.errors import MissingExtraError, missing_extra, quoted

if TYPE_CHECKING:
    from docker import APIClient
    from docker.errors import APIError

    from gha_mlops.config.model import DeployEnvironment

SCHEMES = ("unix", "tcp", "ssh")
CONF_DIR = "/etc/gha-mlops"
CONF_PATH = f"{CONF_DIR}/nginx.conf"
LOG_MOUNT = "/predlog"  # where a directory prediction log is mounted in a backend
ROUTER_READY_S = 10.0  # how long apply_router waits for the router to answer the generation
GENERATION_ANSWERS = 3  # answers of the new generation in a row that make a reload live
GENERATION_POLL_S = 0.02
TAR_SLACK = 64 * 1024  # archive bytes beyond a file's limit: tar headers and padding
LOG_CHARS = 4000  # of a container's output quoted in an error
LOCK_TRIES = 3  # create, or find the holder, while another deploy takes and drops the lock
GONE_TIMEOUT_S = 10.0


def _require_sdk() -> None:
    try:
        import docker  # noqa: F401
    except ImportError:
        raise missing_extra("docker", "deploy") from None


def _require_ssh_transport() -> None:
    """The Docker SDK's ssh transport imports paramiko, even when it runs the ``ssh``
    client (as here): without it, every call would fail as if the host were unreachable."""
    if importlib.util.find_spec("paramiko") is None:
        raise MissingExtraError(
            "ssh:// Docker hosts need the Python package 'paramiko' (the Docker SDK's ssh "
            "transport), which is not installed",
            hint="pip install 'gha-mlops[deploy]' (it has paramiko); or reach the daemon at "
                 "tcp:// through a tunnel")


def default_address(url: str) -> str:
    """Where the deploying machine reaches ports on the host of daemon ``url``: the URL's
    host for ``tcp://`` and ``ssh://``, ``127.0.0.1`` for ``unix://``."""
    parts = urlsplit(url)
    if parts.scheme in ("tcp", "ssh") and parts.hostname:
        return parts.hostname
    return "127.0.0.1"


def container_name(env: str, role: str) -> str:
    """``gha-mlops-ENV-ROLE``: a slot (``a``, ``b``), ``router`` or ``lock``."""
    return f"gha-mlops-{env}-{role}"


def _label(key: str) -> str:
    return LABEL_PREFIX + key


def _check_env(env: str) -> None:
    if not router.ENV_NAME.fullmatch(env):
        raise DeployTargetError(f"{quoted(env)} is not an environment name",
                                hint="environment names are lower-case letters, digits and "
                                     "dashes (mlops.yaml deploy.environments)")


class DockerHost:
    """One Docker host, at daemon ``url``; ``address`` is where its ports are reached from
    here (empty: :func:`default_address`). ``timeout``: seconds one daemon call may take."""

    def __init__(self, url: str, address: str = "", *, timeout: float = 60) -> None:
        _require_sdk()
        if urlsplit(url).scheme not in SCHEMES or "://" not in url:
            raise DeployTargetError(
                f"the Docker host {quoted(url)} is not a daemon URL",
                hint="write unix:///var/run/docker.sock, tcp://HOST:PORT or ssh://USER@HOST")
        if urlsplit(url).scheme == "ssh":
            _require_ssh_transport()
        self.url = url
        self.address = address or default_address(url)
        self.timeout = timeout
        self._client: APIClient | None = None
        self._client_lock = threading.Lock()

    # -- the port: reading -------------------------------------------------------------------

    def read(self, env: str) -> HostState:
        _check_env(env)
        what = f"reading environment {env}"
        with self._translated(what):
            summaries = self._api(what).containers(
                all=True, filters={"label": f"{_label('env')}={env}"})
        backends: dict[Slot, Backend] = {}
        state: RouterState | None = None
        running = False
        lock: LockInfo | None = None
        for summary in summaries:
            labels = summary.get("Labels") or {}
            name = str((summary.get("Names") or ["/?"])[0]).lstrip("/")
            role = labels.get(_label("role"))
            if role == "backend":
                backend = _backend(labels, summary, where=f"{self.url}: container {name}")
                if backend.slot in backends:
                    raise DeployTargetError(
                        f"{self.url}: two backend containers of environment {env} in slot "
                        f"{backend.slot}", hint=f"remove the one not named "
                        f"{container_name(env, backend.slot)} (docker rm -f)")
                backends[backend.slot] = backend
            elif role == "router":
                running = summary.get("State") == "running"
                state = self._router_state(env, str(summary["Id"]), name)
            elif role == "lock":
                lock = _lock(labels, where=f"{self.url}: container {name}")
        return HostState(host=self.url, router=state, router_running=running,
                         backends=tuple(backends[s] for s in SLOTS if s in backends),
                         lock=lock)

    def _router_state(self, env: str, container: str, name: str) -> RouterState | None:
        where = f"{self.url}: {name}:{CONF_PATH}"
        # A router removed since the listing (another deploy recreating it) has no record.
        data = self._read_archive(container, CONF_PATH, limit=router.MAX_CONF_BYTES,
                                  what=f"reading the configuration of router {name}",
                                  gone_ok=True)
        if data is None:
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise DeployTargetError(f"{where}: not UTF-8 text",
                                    hint="remove the router container; deploy again") from None
        state = router.parse_state(text, where=where)
        if state.env != env:
            raise DeployTargetError(f"{where}: the state record is environment {state.env}'s, "
                                    f"not {env}'s", hint="remove the router container")
        return state

    def read_file(self, env: str, slot: Slot, path: str, *, limit: int) -> bytes | None:
        _check_env(env)
        name = container_name(env, slot)
        return self._read_archive(name, path, limit=limit, what=f"reading {path} from {name}")

    def backend_logs(self, env: str, slot: Slot, *, tail: int = 30) -> str:
        from docker.errors import NotFound

        _check_env(env)
        name = container_name(env, slot)
        what = f"reading the logs of {name}"
        with self._translated(what):
            try:
                output = self._api(what).logs(name, stdout=True, stderr=True, tail=max(1, tail))
            except NotFound:
                return ""
        return bytes(output)[-LOG_CHARS:].decode("utf-8", "replace")

    # -- the port: images and backends ----------------------------------------------------

    def ensure_image(self, image: str) -> tuple[str, dict[str, str]]:
        from docker.errors import ImageNotFound

        what = f"looking up the image {image}"
        with self._translated(what):
            try:
                doc = self._api(what).inspect_image(image)  # type: ignore[no-untyped-call]
            except ImageNotFound:
                doc = None
        if doc is None:
            self._pull(image)
            with self._translated(what):
                doc = self._api(what).inspect_image(image)  # type: ignore[no-untyped-call]
        labels = (doc.get("Config") or {}).get("Labels") or {}
        return str(doc["Id"]), {str(k): str(v) for k, v in labels.items()}

    def _pull(self, image: str) -> None:
        from docker.errors import APIError

        if image.startswith("sha256:"):
            raise DeployTargetError(
                f"the image {image} is not on the Docker host {self.url}, and an image id "
                "cannot be pulled", hint="push the image to a registry (gha-mlops package "
                "--push) so that every host can pull it by digest")
        registry = _registry_of(image)
        hint = (f"check that the host reaches {registry} and is logged in to it "
                f"(on the host: docker login {'' if registry == 'Docker Hub' else registry})")
        what = f"pulling {image} from {registry}"
        with self._translated(what):
            try:
                for line in self._api(what).pull(image, stream=True, decode=True):
                    error = line.get("error") or (line.get("errorDetail") or {}).get("message")
                    if error:
                        raise DeployTargetError(f"{what} on the Docker host {self.url} failed: "
                                                f"{error}", hint=hint)
            except APIError as err:
                raise DeployTargetError(f"{what} on the Docker host {self.url} failed: "
                                        f"{err.explanation or err}", hint=hint) from err

    def start_backend(self, env: str, slot: Slot, release: Release, *, port: int, bind: str,
                      workers: int, log: PredictionLog | None = None) -> Backend:
        _check_env(env)
        name = container_name(env, slot)
        what = f"starting {release.label()} as {name}"
        self._remove(name, what, grace=0)
        labels = {_label("env"): env, _label("role"): "backend", _label("slot"): slot,
                  _label("model"): release.model, _label("version"): release.version,
                  _label("image"): release.image, _label("image-id"): release.image_id,
                  _label("port"): str(port)}
        command = ["--host", bind, "--workers", str(workers)]
        environment = {"PORT": str(port)}
        extra: dict[str, Any] = {}
        if log is not None:
            extra = self._log_mount(log)
            command += ["--log", log.location if log.is_s3 else LOG_MOUNT,
                        "--log-sample", repr(log.sample)]
            environment.update(log.env)
            labels[_label("log")] = log.location
        api = self._api(what)
        with self._translated(what):
            host_config = api.create_host_config(
                network_mode="host", restart_policy={"Name": "unless-stopped"},
                binds=extra.get("binds"))
            created = api.create_container(
                release.image, name=name, command=command, environment=environment,
                labels=labels, host_config=host_config, detach=True, user=extra.get("user"))
        container = str(created["Id"])
        try:
            with self._translated(what):
                api.start(container)
                status = str((api.inspect_container(container).get("State") or {})
                             .get("Status") or "")
        except DeployTargetError:
            self._remove(container, f"removing {name}, which did not start", grace=0)
            raise
        return Backend(slot=slot, release=release, port=port, container_id=container,
                       status=status)

    def _log_mount(self, log: PredictionLog) -> dict[str, Any]:
        """The mount and user of a directory log: only on a local daemon (the directory is
        this machine's), an absolute directory (made when missing); the container runs as its
        owner so the server can write there without the directory being opened to everyone."""
        if log.is_s3:
            return {}
        hint = ("log to s3://bucket/prefix from remote Docker hosts, or give an absolute "
                "directory on this machine for a local one")
        if urlsplit(self.url).scheme != "unix":
            raise DeployTargetError(f"the prediction log {quoted(log.location)} is a directory, "
                                    f"but the Docker host {self.url} is not this machine",
                                    hint=hint)
        path = Path(log.location)
        try:
            if not path.is_absolute():
                raise NotADirectoryError(log.location)
            path.mkdir(mode=0o750, parents=True, exist_ok=True)
            owner = path.stat()
        except OSError as err:
            raise DeployTargetError(f"the prediction log {quoted(log.location)} is not a "
                                    f"directory this machine can make ({err})", hint=hint) from err
        return {"binds": {str(path): {"bind": LOG_MOUNT, "mode": "rw"}},
                "user": f"{owner.st_uid}:{owner.st_gid}"}

    def remove_backend(self, env: str, slot: Slot, *, grace: float) -> None:
        _check_env(env)
        name = container_name(env, slot)
        self._remove(name, f"removing {name}", grace=grace)

    # -- the port: the router --------------------------------------------------------------

    def apply_router(self, env: str, conf: str, generation: int, *, image: str,
                     port: int) -> None:
        _check_env(env)
        name = container_name(env, "router")
        what = f"updating router {name}"
        info = self._inspect(name, what)
        if info is not None and (info.get("State") or {}).get("Status") != "running":
            # Exited, dead or restarting: a new container with the new configuration.
            self._remove(name, f"removing the stopped router {name}", grace=0)
            info = None
        if info is None:
            self._create_router(env, name, conf, image)
        else:
            self._reload_router(name, conf, generation)
        self._wait_generation(name, generation, port)

    def _create_router(self, env: str, name: str, conf: str, image: str) -> None:
        self.ensure_image(image)
        what = f"creating router {name} from {image}"
        api = self._api(what)
        with self._translated(what):
            host_config = api.create_host_config(
                network_mode="host", restart_policy={"Name": "unless-stopped"})
            created = api.create_container(
                image, name=name, entrypoint=["nginx", "-c", CONF_PATH], command=[],
                labels={_label("env"): env, _label("role"): "router"},
                host_config=host_config, detach=True)
        container = str(created["Id"])
        try:
            with self._translated(what):
                # A directory entry makes /etc/gha-mlops in the created container.
                api.put_archive(container, "/etc",
                                _tar([("gha-mlops", None), ("gha-mlops/nginx.conf", conf)]))
                api.start(container)
        except DeployTargetError:
            self._remove(container, f"removing router {name}, which did not start", grace=0)
            raise

    def _reload_router(self, name: str, conf: str, generation: int) -> None:
        what = f"reloading router {name}"
        new = f"nginx.conf.{generation}.new"
        with self._translated(what):
            self._api(what).put_archive(name, CONF_DIR, _tar([(new, conf)]))
        code, output = self._exec(name, ["nginx", "-t", "-q", "-c", f"{CONF_DIR}/{new}"], what)
        if code != 0:
            self._exec(name, ["rm", "-f", f"{CONF_DIR}/{new}"], what)
            raise DeployTargetError(
                f"{self.url}: nginx in {name} refused the new configuration: {output.strip()}",
                hint="the router keeps serving its running configuration; check the "
                     "environment's listen, port and backend_ports in mlops.yaml")
        for cmd in (["mv", "-f", f"{CONF_DIR}/{new}", CONF_PATH],
                    ["nginx", "-s", "reload", "-c", CONF_PATH]):
            code, output = self._exec(name, cmd, what)
            if code != 0:
                raise DeployTargetError(f"{self.url}: `{' '.join(cmd)}` in {name} exited "
                                        f"{code}: {output.strip()}",
                                        hint="read the router's logs: docker logs " + name)

    def _wait_generation(self, name: str, generation: int, port: int) -> None:
        """Poll the router until it answers ``generation`` (the reload is live), failing
        early when its container stopped. The answer must come :data:`GENERATION_ANSWERS`
        times in a row: for a moment after a reload, nginx's old workers still accept a
        connection or two with the old configuration."""
        want = str(generation)
        deadline = time.monotonic() + ROUTER_READY_S
        next_check = time.monotonic() + 0.5
        last = "no answer"
        in_a_row = 0
        while True:
            last = self._generation(port) or last
            in_a_row = in_a_row + 1 if last == f"generation {want}" else 0
            if in_a_row >= GENERATION_ANSWERS:
                return
            now = time.monotonic()
            if now >= next_check or now >= deadline:
                next_check = now + 0.5
                info = self._inspect(name, f"checking router {name}")
                status = (info or {}).get("State", {}).get("Status")
                if status != "running" or now >= deadline:
                    raise DeployTargetError(
                        f"{self.url}: router {name} did not answer generation {want} on "
                        f"{self.address}:{port} within {ROUTER_READY_S:g} s (container "
                        f"{status or 'gone'}; last: {last})",
                        hint=f"its logs are below; check that {self.address}:{port} is "
                             "reachable from here and that no other process has the port",
                        notes=[self._logs(name)])
            time.sleep(GENERATION_POLL_S)

    def _generation(self, port: int) -> str | None:
        """What the router answers on the generation path, for messages; None: no answer."""
        conn = http.client.HTTPConnection(self.address, port, timeout=2)
        try:
            conn.request("GET", router.GENERATION_PATH)
            response = conn.getresponse()
            body = response.read(64).decode("ascii", "replace").strip()
            return f"generation {body}" if response.status == 200 else f"HTTP {response.status}"
        except (OSError, http.client.HTTPException) as err:
            return f"{type(err).__name__}: {err}"
        finally:
            conn.close()

    def remove_router(self, env: str) -> None:
        _check_env(env)
        name = container_name(env, "router")
        self._remove(name, f"removing router {name}", grace=0)

    # -- the port: the lock --------------------------------------------------------------------

    def acquire_lock(self, env: str, lock: LockInfo, *, image: str) -> LockInfo | None:
        from docker.errors import APIError, ImageNotFound

        _check_env(env)
        name = container_name(env, "lock")
        what = f"taking the lock {name}"
        labels = {_label("env"): env, _label("role"): "lock", _label("owner"): lock.owner,
                  _label("hostname"): lock.hostname, _label("pid"): str(lock.pid),
                  _label("started"): repr(lock.started), _label("expires"): repr(lock.expires),
                  _label("what"): lock.what}
        api = self._api(what)
        for _ in range(LOCK_TRIES):
            with self._translated(what):
                try:
                    api.create_container(
                        image, name=name, entrypoint=["true"], command=[], labels=labels,
                        host_config=api.create_host_config(network_mode="none"))
                    return None
                except ImageNotFound:
                    self.ensure_image(image)
                    continue
                except APIError as err:
                    if err.status_code != 409:
                        raise
            holder = self._lock_holder(name, what)
            if holder is not None:
                return holder
        raise DeployTargetError(f"{self.url}: {what}: another deploy kept taking and "
                                f"releasing it", hint="try again")

    def _lock_holder(self, name: str, what: str) -> LockInfo | None:
        info = self._inspect(name, what)
        if info is None:
            return None
        return _lock((info.get("Config") or {}).get("Labels") or {},
                     where=f"{self.url}: container {name}")

    def release_lock(self, env: str, lock: LockInfo) -> None:
        self.break_lock(env, lock)

    def break_lock(self, env: str, stale: LockInfo) -> bool:
        _check_env(env)
        name = container_name(env, "lock")
        what = f"releasing the lock {name}"
        info = self._inspect(name, what)
        if info is None:
            return False
        try:
            held = _lock((info.get("Config") or {}).get("Labels") or {}, where=name)
        except DeployTargetError:
            return False  # not a lock this adapter wrote: leave it to a person
        if (held.owner, held.started) != (stale.owner, stale.started):
            return False
        # By id: a lock another deploy took since the inspect has another id and stays.
        self._remove(str(info["Id"]), what, grace=0)
        return True

    # -- containers -----------------------------------------------------------------------

    def _inspect(self, container: str, what: str) -> dict[str, Any] | None:
        from docker.errors import NotFound

        with self._translated(what):
            try:
                return dict(self._api(what).inspect_container(container))
            except NotFound:
                return None

    def _remove(self, container: str, what: str, *, grace: float) -> None:
        """Stop (SIGTERM, SIGKILL after ``grace`` s) and remove ``container``; gone is fine,
        and one already being removed is waited for."""
        from docker.errors import APIError, NotFound

        api = self._api(what)
        with self._translated(what):
            try:
                if grace > 0:
                    api.stop(container, timeout=math.ceil(grace))
                api.remove_container(container, force=True)
                return
            except NotFound:
                return
            except APIError as err:
                if err.status_code != 409:  # 409: a removal is in progress
                    raise
        deadline = time.monotonic() + GONE_TIMEOUT_S
        while self._inspect(container, what) is not None:
            if time.monotonic() > deadline:
                raise DeployTargetError(f"{self.url}: {what}: still being removed after "
                                        f"{GONE_TIMEOUT_S:g} s", hint="try again")
            time.sleep(0.1)

    def _exec(self, container: str, cmd: Sequence[str], what: str) -> tuple[int, str]:
        """Run ``cmd`` in ``container``; its exit code and the end of its output."""
        api = self._api(what)
        with self._translated(f"{what}: {' '.join(cmd)}"):
            exec_id = api.exec_create(container, list(cmd), stdout=True, stderr=True)["Id"]
            output = bytes(api.exec_start(exec_id))
            code = api.exec_inspect(exec_id).get("ExitCode")
        return (code if isinstance(code, int) else -1,
                output[-LOG_CHARS:].decode("utf-8", "replace"))

    def _logs(self, container: str) -> str:
        from docker.errors import NotFound

        what = f"reading the logs of {container}"
        try:
            with self._translated(what):
                output = self._api(what).logs(container, stdout=True, stderr=True, tail=30)
        except NotFound:
            return f"(no container {container})"
        except DeployTargetError as err:
            return f"(its logs could not be read: {err.message})"
        return bytes(output)[-LOG_CHARS:].decode("utf-8", "replace")

    def _read_archive(self, container: str, path: str, *, limit: int, what: str,
                      gone_ok: bool = False) -> bytes | None:
        """The regular file at ``path`` in ``container`` (None: no such file, not a regular
        file, or with ``gone_ok`` no such container), read through the archive API with at
        most ``limit`` bytes of file and :data:`TAR_SLACK` of archive around it taken from
        the daemon."""
        from docker.errors import NotFound

        api = self._api(what)
        with self._translated(what):
            try:
                chunks, _stat = api.get_archive(container, path, chunk_size=64 * 1024)
            except NotFound as err:
                if not gone_ok and "no such container" in str(err.explanation or "").lower():
                    raise DeployTargetError(f"{self.url}: {what}: there is no container "
                                            f"{container}", hint="deploy again") from err
                return None
            reader = _CappedReader(chunks, limit + TAR_SLACK)
            try:
                data = _first_file(reader, limit, where=f"{self.url}: {container}:{path}")
            finally:
                if not reader.drain():
                    # The daemon's answer was not read to its end: this connection cannot
                    # be reused, so let every pooled one go.
                    self.close()
                chunks.close()
        return data

    # -- the daemon ---------------------------------------------------------------------------

    def _api(self, what: str) -> APIClient:
        """The SDK's client, made on first use (making it asks the daemon its API version:
        a daemon that cannot be reached fails ``what``, the call that needed it)."""
        with self._client_lock:
            if self._client is None:
                import docker

                self._check_socket(what)
                with self._translated(what):
                    self._client = docker.APIClient(
                        base_url=self.url, timeout=max(1, math.ceil(self.timeout)),
                        use_ssh_client=self.url.startswith("ssh://"))
            return self._client

    def _check_socket(self, what: str) -> None:
        """For ``unix://``: connect once with the standard library first. The SDK leaks a
        socket per refused connection (https://github.com/docker/docker-py/pull/3356), and
        a missing socket or a missing permission says itself better this way."""
        path = urlsplit(self.url).path
        if urlsplit(self.url).scheme != "unix":
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            try:
                sock.connect(path)
            except OSError as err:
                raise DeployTargetError(
                    f"{what}: cannot reach the Docker daemon at {self.url}: "
                    f"{err.strerror or err}", hint=_reach_hint(self.url)) from None

    def close(self) -> None:
        """Close the connections to the daemon (a later call opens new ones)."""
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def __enter__(self) -> DockerHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        """SDK and transport errors as a DeployTargetError naming the daemon and the call."""
        import requests
        import urllib3
        from docker.errors import APIError, DockerException

        try:
            yield
        except APIError as err:
            raise self._api_error(what, err) from err
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError,
                DockerException, OSError) as err:  # refused, reset, timed out, no ssh
            raise DeployTargetError(
                f"{what}: cannot reach the Docker daemon at {self.url}: {err}",
                hint=_reach_hint(self.url)) from err

    def _api_error(self, what: str, err: APIError) -> DeployTargetError:
        explanation = str(err.explanation or err)
        return DeployTargetError(
            f"{what}: the Docker daemon at {self.url} answered {err.status_code}: "
            f"{explanation}",
            hint="see docs/deploy-hosts.md for what gha-mlops keeps on a host"
            if err.status_code != 409 else "a container of that name exists already: "
            "`gha-mlops deploy status` shows the environment")


def open_hosts(env: DeployEnvironment) -> list[DockerHost]:
    """The hosts of ``env``, in its order (the first holds the lock); nothing is contacted
    until a call needs it."""
    return [DockerHost(host.docker, host.address) for host in env.hosts]


def _reach_hint(url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme == "unix":
        return "check that dockerd runs on this machine and that this user may use its " \
               "socket (the docker group)"
    if scheme == "ssh":
        return "check that `ssh` reaches the host with this user's keys and that `docker` " \
               "is on the remote user's PATH"
    return "check that dockerd listens on that address and port and that this machine " \
           "reaches it"


def _registry_of(image: str) -> str:
    """The registry a reference pulls from (Docker Hub when its first part is no host)."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "Docker Hub"


def _tar(entries: Sequence[tuple[str, str | None]]) -> bytes:
    """A tar of directories (``None``) and UTF-8 text files, root-owned, world-readable."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, text in entries:
            info = tarfile.TarInfo(name)
            info.mtime = int(time.time())
            if text is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                data = text.encode("utf-8")
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class _CappedReader(io.RawIOBase):
    """A file over the daemon's chunks that refuses to read past ``cap`` bytes."""

    def __init__(self, chunks: Iterator[bytes], cap: int) -> None:
        super().__init__()
        self._chunks = chunks
        self._cap = cap
        self._taken = 0
        self._buffer = b""
        self._ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        view = memoryview(target).cast("B")
        while not self._buffer and not self._ended:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._ended = True
                break
            self._taken += len(chunk)
            if self._taken > self._cap:
                raise _TooLarge
            self._buffer = bytes(chunk)
        count = min(len(view), len(self._buffer))
        view[:count] = self._buffer[:count]
        self._buffer = self._buffer[count:]
        return count

    def drain(self) -> bool:
        """Read to the end within the cap; whether the end was reached."""
        try:
            while self.readinto(bytearray(64 * 1024)):
                pass
        except _TooLarge:
            return False
        return True


class _TooLarge(Exception):
    pass


def _first_file(reader: _CappedReader, limit: int, *, where: str) -> bytes | None:
    """The first member of the tar ``reader`` streams when it is a regular file of at most
    ``limit`` bytes; None when it is anything else (a link, a directory)."""
    too_large = DeployTargetError(f"{where}: the file is larger than {limit} bytes",
                                  hint="a deployable image keeps it small")
    try:
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            member = tar.next()
            if member is None or not member.isreg():
                return None
            if member.size > limit:
                raise too_large
            extracted = tar.extractfile(member)
            return extracted.read(limit + 1) if extracted is not None else None
    except _TooLarge:
        raise too_large from None
    except tarfile.TarError as err:
        raise DeployTargetError(f"{where}: the daemon's archive cannot be read: {err}",
                                hint="check the Docker daemon's version and logs") from err


def _text_label(labels: Mapping[str, Any], key: str, where: str) -> str:
    value = labels.get(_label(key))
    if not isinstance(value, str) or not value or len(value) > router.MAX_FIELD_CHARS:
        raise DeployTargetError(f"{where}: its label {_label(key)} is {quoted(value)}, "
                                "expected a short non-empty string",
                                hint="remove the container (docker rm -f) and deploy again")
    return value


def _number_label(labels: Mapping[str, Any], key: str, where: str, *, low: float,
                  high: float) -> float:
    text = _text_label(labels, key, where)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and low <= value <= high):
        raise DeployTargetError(f"{where}: its label {_label(key)} is {quoted(text)}, "
                                f"expected a number in {low:g}..{high:g}",
                                hint="remove the container (docker rm -f) and deploy again")
    return value


def _backend(labels: Mapping[str, Any], summary: Mapping[str, Any], *, where: str) -> Backend:
    slot_text = _text_label(labels, "slot", where)
    slot = next((s for s in SLOTS if s == slot_text), None)
    if slot is None:
        raise DeployTargetError(f"{where}: its label {_label('slot')} is {quoted(slot_text)}, "
                                "expected a or b", hint="remove the container (docker rm -f)")
    port = _number_label(labels, "port", where, low=1, high=65535)
    if port != int(port):
        raise DeployTargetError(f"{where}: its port label {port} is not an integer",
                                hint="remove the container (docker rm -f)")
    release = Release(model=_text_label(labels, "model", where),
                      version=_text_label(labels, "version", where),
                      image=_text_label(labels, "image", where),
                      image_id=_text_label(labels, "image-id", where))
    return Backend(slot=slot, release=release, port=int(port),
                   container_id=str(summary.get("Id", "")),
                   status=str(summary.get("State") or ""))


def _lock(labels: Mapping[str, Any], *, where: str) -> LockInfo:
    pid = _number_label(labels, "pid", where, low=0, high=2**31)
    return LockInfo(owner=_text_label(labels, "owner", where),
                    hostname=_text_label(labels, "hostname", where),
                    pid=int(pid),
                    started=_number_label(labels, "started", where, low=0, high=1e12),
                    expires=_number_label(labels, "expires", where, low=0, high=1e12),
                    what=str(labels.get(_label("what")) or "")[:router.MAX_FIELD_CHARS])
