"""The Docker hosts adapter against a real dockerd: real backends of the packaged tiny model,
a real nginx (Debian's) routing real traffic.

One environment (``t-hosts``) is set up once for the module: version 1.0.0 in slot a
(stable), 2.0.0 in slot b (canary at 10 %). Tests that change its router put it back.
Everything the module started is removed by label at the end.
"""

from __future__ import annotations

import http.client
import http.server
import importlib.util
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from gha_mlops.deploy.docker_hosts import CONF_DIR, DockerHost, container_name, default_address
from gha_mlops.deploy.errors import DeployTargetError
from gha_mlops.deploy.model import LABEL_PREFIX, LockInfo, Release, RouterState
from gha_mlops.deploy.router import GENERATION_PATH, render
from gha_mlops.errors import ExitCode, MissingExtraError
from gha_mlops.packaging.image import DockerImages, wait_ready
from gha_mlops.testing.load import ConstantLoad
from tests.integration.package_helpers import free_port

if TYPE_CHECKING:
    from tests.integration.deploy_fixtures import OipImage
    from tests.integration.docker_fixtures import Dockerd
    from tests.integration.registry_fixtures import OciRegistry

pytest_plugins = ["tests.integration.docker_fixtures", "tests.integration.serving_fixtures",
                  "tests.integration.registry_fixtures", "tests.integration.deploy_fixtures"]

REPO = Path(__file__).resolve().parents[2]
ENV = "t-hosts"
EMPTY_ENV = "t-hosts-empty"
RETRY_ENV = "t-hosts-retry"
BODY = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                               "data": [1.0, 2.0, 3.0, 4.0]}]}).encode()


@dataclass
class Env:
    """The module's environment: where its router and backends listen, its current state."""

    host: DockerHost
    router_image: str
    port: int
    backend_ports: tuple[int, int]
    v1: Release
    v2: Release
    state: RouterState

    def apply(self, state: RouterState) -> None:
        self.host.apply_router(ENV, self.conf(state), state.generation,
                               image=self.router_image, port=self.port)
        self.state = state

    def conf(self, state: RouterState) -> str:
        return render(state, listen="127.0.0.1", port=self.port, backend_host="127.0.0.1",
                      backend_ports=self.backend_ports)

    def infer_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2/models/tiny/infer"


def _release(image: OipImage) -> Release:
    return Release(model=image.model, version=image.version, image=image.image,
                   image_id=image.image_id)


def _get(port: int, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST" if body else "GET", path, body=body,
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _remove_ours(dockerd: Dockerd) -> None:
    api = dockerd.client().api
    for env in (ENV, EMPTY_ENV, RETRY_ENV):
        for summary in api.containers(all=True, filters={"label": f"{LABEL_PREFIX}env={env}"}):
            api.remove_container(summary["Id"], force=True)


@pytest.fixture(scope="module")
def env(dockerd: Dockerd, oip_images: dict[str, OipImage], router_image: str) -> Iterator[Env]:
    host = DockerHost(dockerd.base_url, "")
    ports = (free_port(), free_port())
    deployed = Env(host, router_image, free_port(), ports, _release(oip_images["1.0.0"]),
                   _release(oip_images["2.0.0"]), RouterState(ENV))
    try:
        for slot, release, port in (("a", deployed.v1, ports[0]), ("b", deployed.v2, ports[1])):
            host.start_backend(ENV, slot, release, port=port, bind="127.0.0.1", workers=1)
        for port in ports:
            wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", timeout=60)
        deployed.apply(RouterState(ENV, "a", deployed.v1, "b", deployed.v2, weight=10,
                                   generation=1))
        yield deployed
    finally:
        host.close()
        _remove_ours(dockerd)


def test_weights_split_real_traffic_and_read_reconstructs_the_state(env: Env) -> None:
    versions = Counter(json.loads(_get(env.port, "/v2/models/tiny/infer", BODY)[1])
                       ["model_version"] for _ in range(200))
    # nginx's smooth weighted round robin: 90/10 per worker, give or take a cycle.
    assert versions["1.0.0"] + versions["2.0.0"] == 200
    assert 14 <= versions["2.0.0"] <= 26, versions

    state = env.host.read(ENV)
    assert state.host == env.host.url and state.router == env.state and state.router_running
    assert [(b.slot, b.release, b.port, b.status) for b in state.backends] == [
        ("a", env.v1, env.backend_ports[0], "running"),
        ("b", env.v2, env.backend_ports[1], "running")]
    assert state.lock is None


def test_reloads_under_constant_load_lose_no_request(env: Env) -> None:
    start = env.state
    steps = [replace(start, weight=w, generation=start.generation + i)
             for i, w in enumerate((50, 100, 0, 10), start=1)]
    with ConstantLoad(env.infer_url(), BODY, rate=150) as load:
        time.sleep(0.5)
        for state in steps:
            env.apply(state)
            assert _get(env.port, GENERATION_PATH) == (200, str(state.generation).encode())
            time.sleep(0.4)
    report = load.report()
    assert report.failed == 0, report
    assert report.sent > 200 and set(report.versions) == {"1.0.0", "2.0.0"}, report


def test_weight_100_sends_everything_to_the_canary(env: Env) -> None:
    start = env.state
    try:
        env.apply(replace(start, weight=100, generation=start.generation + 1))
        versions = Counter(json.loads(_get(env.port, "/v2/models/tiny/infer", BODY)[1])
                           ["model_version"] for _ in range(20))
        assert versions == {"2.0.0": 20}
    finally:
        env.apply(replace(start, generation=start.generation + 2))


def test_a_conf_nginx_refuses_leaves_the_running_one_serving(env: Env,
                                                              dockerd: Dockerd) -> None:
    before = env.state
    bad = replace(before, weight=50, generation=before.generation + 1)
    conf = env.conf(bad).replace("keepalive 32;", "keepalive_bogus 32;")
    with pytest.raises(DeployTargetError) as caught:
        env.host.apply_router(ENV, conf, bad.generation, image=env.router_image, port=env.port)
    assert "keepalive_bogus" in caught.value.message and env.host.url in caught.value.message
    assert _get(env.port, GENERATION_PATH) == (200, str(before.generation).encode())
    assert _get(env.port, "/v2/models/tiny/infer", BODY)[0] == 200
    assert env.host.read(ENV).router == before
    listing = _exec(dockerd, ["ls", CONF_DIR])
    assert listing.split() == ["nginx.conf"]  # the refused file is gone


def _exec(dockerd: Dockerd, cmd: list[str]) -> str:
    api = dockerd.client().api
    exec_id = api.exec_create(container_name(ENV, "router"), cmd)["Id"]
    return bytes(api.exec_start(exec_id)).decode()


def test_an_empty_environment_answers_503_and_a_stopped_router_is_recreated(
        env: Env, dockerd: Dockerd) -> None:
    port = free_port()
    empty = RouterState(EMPTY_ENV)
    conf = render(empty, listen="127.0.0.1", port=port, backend_host="127.0.0.1",
                  backend_ports=(free_port(), free_port()))
    env.host.apply_router(EMPTY_ENV, conf, 0, image=env.router_image, port=port)
    status, body = _get(port, "/v2/models/tiny/infer", BODY)
    assert (status, json.loads(body)) == (
        503, {"error": f"no model is deployed in environment {EMPTY_ENV}"})
    name = container_name(EMPTY_ENV, "router")
    dockerd.client().api.stop(name, timeout=1)
    assert env.host.read(EMPTY_ENV).router_running is False
    assert env.host.read(EMPTY_ENV).router == empty  # a stopped router's record is read too
    env.host.apply_router(EMPTY_ENV, conf.replace('"0"', '"7"'), 7, image=env.router_image,
                          port=port)
    assert env.host.read(EMPTY_ENV).router_running
    env.host.remove_router(EMPTY_ENV)
    env.host.remove_router(EMPTY_ENV)  # none is fine
    assert env.host.read(EMPTY_ENV).router is None


def test_the_lock_is_taken_once_and_released_or_broken_only_by_its_holder(env: Env) -> None:
    now = time.time()
    first = LockInfo(owner="ci-1:100", hostname="ci-1", pid=100, started=now,
                     expires=now + 600, what="tiny 2.0.0")
    second = LockInfo(owner="ci-2:200", hostname="ci-2", pid=200, started=now + 1,
                      expires=now + 601, what="tiny 3.0.0")
    host = env.host
    assert host.acquire_lock(ENV, first, image=env.router_image) is None
    try:
        assert host.acquire_lock(ENV, second, image=env.router_image) == first
        assert host.read(ENV).lock == first
        host.release_lock(ENV, second)  # not the holder: nothing happens
        assert host.break_lock(ENV, second) is False
        assert host.read(ENV).lock == first
        host.release_lock(ENV, first)
        assert host.read(ENV).lock is None
        assert host.acquire_lock(ENV, second, image=env.router_image) is None
        assert host.break_lock(ENV, second) is True
        assert host.read(ENV).lock is None
    finally:
        host.break_lock(ENV, first)
        host.break_lock(ENV, second)


def test_read_file_returns_regular_files_within_the_limit_only(env: Env) -> None:
    data = env.host.read_file(ENV, "a", "/model/model.json", limit=64 * 1024)
    assert data is not None and json.loads(data)["version"] == "1.0.0"
    with pytest.raises(DeployTargetError, match="larger than 100 bytes"):
        env.host.read_file(ENV, "a", "/model/model.onnx", limit=100)
    assert env.host.read_file(ENV, "a", "/model", limit=1 << 20) is None  # a directory
    assert env.host.read_file(ENV, "a", "/bin", limit=1 << 20) is None  # a symlink
    assert env.host.read_file(ENV, "a", "/model/golden.json.missing", limit=10) is None
    with pytest.raises(DeployTargetError, match="there is no container gha-mlops-t-nothing-a"):
        env.host.read_file("t-nothing", "a", "/model/model.json", limit=10)
    # The connection dropped after the refused read is replaced transparently.
    assert env.host.read_file(ENV, "b", "/model/model.json", limit=64 * 1024) is not None
    assert isinstance(env.host.backend_logs(ENV, "a", tail=50), str)
    assert env.host.backend_logs("t-nothing", "a") == ""


def test_images_are_looked_up_or_pulled_by_digest_with_a_clear_error(
        env: Env, dockerd: Dockerd, oci_registry: OciRegistry) -> None:
    image_id, labels = env.host.ensure_image(env.v1.image)
    assert image_id == env.v1.image_id
    assert labels["io.gha-mlops.model.version"] == "1.0.0"
    pushed = f"{oci_registry.host}/deploy-hosts/tiny:1.0.0"
    api = dockerd.client().api
    api.tag(env.v1.image, pushed)
    with DockerImages(base_url=dockerd.base_url) as images:
        digest = images.push(pushed)
    api.remove_image(pushed)  # the tag and the digest reference go; the layers stay
    by_digest = f"{oci_registry.host}/deploy-hosts/tiny@{digest}"
    assert env.host.ensure_image(by_digest)[0] == env.v1.image_id  # pulled
    missing = "127.0.0.1:9/tiny@sha256:" + "0" * 64
    with pytest.raises(DeployTargetError) as caught:
        env.host.ensure_image(missing)
    assert "127.0.0.1:9" in caught.value.message and "docker login 127.0.0.1:9" in str(
        caught.value.hint)
    with pytest.raises(DeployTargetError, match="cannot be pulled"):
        env.host.ensure_image("sha256:" + "1" * 64)


@pytest.mark.parametrize("url", ["tcp://127.0.0.1:{port}", "unix:///tmp/gha-mlops-no.sock"])
def test_an_unreachable_daemon_is_a_deploy_target_error_naming_it(url: str) -> None:
    url = url.format(port=free_port())
    with DockerHost(url, "") as host, pytest.raises(DeployTargetError) as caught:
        host.read("staging")
    assert url in caught.value.message and "reading environment staging" in caught.value.message
    assert caught.value.exit_code == ExitCode.DEPLOY_TARGET == 12


def test_a_tcp_daemon_url_reaches_the_same_daemon(env: Env, dockerd: Dockerd) -> None:
    with _TcpToUnix(str(dockerd.socket)) as port, DockerHost(f"tcp://127.0.0.1:{port}",
                                                                 "") as host:
        assert host.address == "127.0.0.1"
        assert host.read(ENV) == replace(env.host.read(ENV), host=host.url)


class _TcpToUnix:
    """A TCP listener on loopback whose connections are piped to a unix socket (the test
    daemon's), one thread per direction; everything is closed and joined on exit."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.threads = [threading.Thread(target=self._accept)]

    def __enter__(self) -> int:
        self.threads[0].start()
        return int(self.server.getsockname()[1])

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            with self.lock:
                self.sockets += [client, upstream]
            upstream.connect(self.target)
            for src, dst in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=_pipe, args=(src, dst))
                with self.lock:
                    self.threads.append(thread)
                thread.start()

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        self.server.close()
        self.threads[0].join()
        for sock in self.sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self.threads[1:]:
            thread.join()
        for sock in self.sockets:
            sock.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _documented_labels() -> dict[str, set[str]]:
    """docs/deploy-hosts.md's label table: role -> the labels it lists for that role."""
    text = (REPO / "docs" / "deploy-hosts.md").read_text()
    table = text.split("## Labels", 1)[1].split("\n\n", 2)[1]
    roles: dict[str, set[str]] = {}
    for row in table.splitlines()[2:]:
        label, on = (cell.strip() for cell in row.strip("|").split("|")[:2])
        for role in on.split(", "):
            roles.setdefault(role, set()).add(label.strip("`"))
    return roles


def test_docs_list_the_labels_each_container_carries(env: Env, dockerd: Dockerd) -> None:
    now = time.time()
    lock = LockInfo(owner="me:1", hostname="me", pid=1, started=now, expires=now + 60)
    assert env.host.acquire_lock(ENV, lock, image=env.router_image) is None
    try:
        # The filter docs/deploy-hosts.md tells users to run, through the SDK.
        found = dockerd.client().api.containers(
            all=True, filters={"label": "io.gha-mlops.deploy.env=" + ENV})
        by_role = {s["Labels"][f"{LABEL_PREFIX}role"]: set(s["Labels"]) for s in found
                   if s["Names"][0] != "/" + container_name(ENV, "b")}
        ours = {role: {k for k in keys if k.startswith(LABEL_PREFIX)}
                for role, keys in by_role.items()}
        assert ours == _documented_labels()
        assert sorted(s["Names"][0] for s in found) == [
            f"/gha-mlops-{ENV}-{role}" for role in ("a", "b", "lock", "router")]
    finally:
        env.host.release_lock(ENV, lock)


@pytest.mark.parametrize(("url", "address"), [
    ("unix:///var/run/docker.sock", "127.0.0.1"), ("tcp://10.0.0.5:2375", "10.0.0.5"),
    ("ssh://deploy@gpu-1.internal", "gpu-1.internal"), ("ssh://gpu-2:2222", "gpu-2")])
def test_the_address_defaults_to_the_daemon_urls_host(url: str, address: str) -> None:
    assert default_address(url) == address
    if url.startswith("ssh://") and importlib.util.find_spec("paramiko") is None:
        # The SDK's ssh transport needs paramiko: said up front, not as an unreachable host.
        with pytest.raises(MissingExtraError, match="paramiko") as caught:
            DockerHost(url, "")
        assert caught.value.exit_code == ExitCode.MISSING_EXTRA
        return
    assert DockerHost(url, "").address == address  # nothing is contacted yet
    assert DockerHost(url, "192.0.2.1").address == "192.0.2.1"


@pytest.mark.parametrize("url", ["http://h:2375", "/var/run/docker.sock", "npipe:////./pipe/x"])
def test_a_url_of_no_known_scheme_is_refused_with_the_forms_that_work(url: str) -> None:
    with pytest.raises(DeployTargetError) as caught:
        DockerHost(url, "")
    assert "unix:///" in str(caught.value.hint) and "ssh://" in str(caught.value.hint)


class _Failing(http.server.BaseHTTPRequestHandler):
    """A backend whose every answer is a 500 (a new version that fails requests)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.hits += 1  # type: ignore[attr-defined]
        self.send_response(500)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("fault", ["500", "refused"])
def test_a_request_one_backend_fails_is_answered_by_the_other(env: Env, fault: str) -> None:
    failing = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    failing.hits = 0  # type: ignore[attr-defined]
    port = int(failing.server_address[1])
    if fault == "refused":
        failing.server_close()  # nothing listens on the port any more
    else:
        threading.Thread(target=failing.serve_forever, daemon=True).start()
    state = RouterState(RETRY_ENV, "a", env.v1, "b", env.v2, weight=50, generation=1)
    router_port = free_port()
    conf = render(state, listen="127.0.0.1", port=router_port, backend_host="127.0.0.1",
                  backend_ports=(env.backend_ports[0], port))
    try:
        env.host.apply_router(RETRY_ENV, conf, 1, image=env.router_image, port=router_port)
        answers = [_get(router_port, "/v2/models/tiny/infer", BODY) for _ in range(20)]
        assert [status for status, _ in answers] == [200] * 20
        assert {json.loads(body)["model_version"] for _, body in answers} == {"1.0.0"}
        if fault == "500":
            assert failing.hits >= 5  # type: ignore[attr-defined]  # it was tried
    finally:
        env.host.remove_router(RETRY_ENV)
        if fault == "500":
            failing.shutdown()
            failing.server_close()
