"""The Docker runner backend against a real dockerd, with the runner image's stand-in runner
speaking the runner protocol to a loopback server of this module (containers share the host's
network). GPUs go through the daemon's real device-request path; see docker_fixtures for the
stand-in of the NVIDIA hook."""

from __future__ import annotations

import base64
import contextlib
import gc
import json
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import docker.errors
import pytest

from gha_mlops.errors import MissingExtraError
from gha_mlops.runners.backends import base as port
from gha_mlops.runners.backends.base import BackendError, Health, LaunchSpec, Machine
from gha_mlops.runners.backends.docker import DockerBackend, allocate_gpus

if TYPE_CHECKING:
    from tests.integration.docker_fixtures import Dockerd

pytest_plugins = ["tests.integration.docker_fixtures"]

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
RUNNER_DIR = REPO / "runner"


# -- the runner protocol's server side, as small as the stand-in needs -----------------------

class ProtocolServer:
    """Speaks the protocol of runner/standin/runner.py on 127.0.0.1 and records each request
    as ``(method, path, json body, Authorization)``. Jobs put in ``jobs`` are handed out by
    acquire; ``complete`` is answered only once ``release`` is set (so a test can read the
    container's logs before the ephemeral runner exits and the container is removed)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any, str]] = []
        self.jobs: list[dict[str, Any]] = []
        self.statuses: dict[str, int] = {}  # path suffix -> the status to answer instead
        self.release = threading.Event()
        self.release.set()
        self._lock = threading.Condition()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self._handle()

            def do_DELETE(self) -> None:
                self._handle()

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                path = self.path.split("?")[0]
                with server._lock:
                    server.requests.append((self.command, path, body,
                                            self.headers.get("Authorization", "")))
                    server._lock.notify_all()
                status, answer = server.answer(self.command, path, body)
                self.send_response(status)
                data = json.dumps(answer).encode() if answer is not None else b""
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/octo/demo"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        for suffix, status in self.statuses.items():
            if path.endswith(suffix):
                return status, None
        if path.endswith("/_runner/acquire"):
            with self._lock:
                self._lock.wait_for(lambda: bool(self.jobs), timeout=1)
                if not self.jobs:
                    return 204, None
                return 200, {"job": self.jobs.pop(0)}
        if path.endswith("/_runner/complete"):
            self.release.wait(timeout=60)
        return 200, {}

    def jit_config(self, name: str, token: str) -> str:
        return base64.b64encode(json.dumps({
            "runner_id": 1, "name": name, "labels": ["self-hosted", "linux"],
            "url": self.url, "token": token}).encode()).decode()

    def calls(self, method: str, suffix: str) -> list[tuple[str, str, Any, str]]:
        with self._lock:
            return [r for r in self.requests if r[0] == method and r[1].endswith(suffix)]

    def wait_for(self, method: str, suffix: str, timeout: float = 30) -> tuple[str, str, Any, str]:
        with self._lock:
            if not self._lock.wait_for(lambda: self.calls(method, suffix), timeout=timeout):
                raise AssertionError(f"no {method} {suffix} in {timeout} s: {self.requests}")
            return self.calls(method, suffix)[0]


@pytest.fixture
def protocol() -> Iterator[ProtocolServer]:
    server = ProtocolServer()
    yield server
    server.release.set()
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture
def owner(dockerd: Dockerd) -> Iterator[str]:
    """A fresh autoscaler id; its containers are removed after the test."""
    owner = f"test-{uuid.uuid4().hex[:10]}"
    yield owner
    api = dockerd.client().api
    for container in api.containers(all=True, filters={"label": f"{port.LABEL_OWNER}={owner}"}):
        with contextlib.suppress(docker.errors.NotFound):  # --rm may be faster
            api.remove_container(container["Id"], force=True)


NewBackend = Callable[..., DockerBackend]


@pytest.fixture
def new_backend(dockerd: Dockerd, owner: str) -> Iterator[NewBackend]:
    """``new_backend(owner=..., **options)``: a backend of the test's daemon (host network,
    GPUs "0" and "1"), closed after the test."""
    made: list[DockerBackend] = []

    def new(owner: str = owner, **options: Any) -> DockerBackend:
        options = {"network": "host", "gpus": ("0", "1"), "stop_timeout": 5, **options}
        made.append(DockerBackend(owner, base_url=dockerd.base_url, **options))
        return made[-1]

    yield new
    for backend in made:
        backend.close()


@pytest.fixture
def backend(new_backend: NewBackend) -> DockerBackend:
    return new_backend()


def spec_for(protocol: ProtocolServer, image: str, name: str, **fields: Any) -> LaunchSpec:
    fields = {"pool": "gpu", "labels": ("self-hosted", "linux", "gpu"), **fields}
    return LaunchSpec(runner_name=name, image=image,
                      jit_config=protocol.jit_config(name, f"tok-{name}"), **fields)


def eventually(check: Callable[[], T], what: str, timeout: float = 20) -> T:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.1)
    return result


def inspect(dockerd: Dockerd, container_id: str) -> dict[str, Any]:
    return dict(dockerd.client().api.inspect_container(container_id))


# -- launch ---------------------------------------------------------------------------------

# Run inside the container: what the stand-in runner's process is (user, arguments, env).
PROBE = """
import json, os
for pid in filter(str.isdigit, os.listdir("/proc")):
    cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")
    if any(part.endswith(b"runner.py") for part in cmd):
        env = open(f"/proc/{pid}/environ", "rb").read().decode().split("\\0")
        print(json.dumps({"uid": os.stat(f"/proc/{pid}").st_uid,
                          "args": [part.decode() for part in cmd if part],
                          "env": sorted(e.split("=")[0] for e in env if e)}))
"""


def test_launch_runs_the_runner_in_a_container_as_specified(
        dockerd: Dockerd, runner_image: str, new_backend: NewBackend, owner: str,
        protocol: ProtocolServer) -> None:
    backend = new_backend(extra_env={"SITE": "lab-1"})
    name = f"{owner}-cpu-1"
    spec = spec_for(protocol, runner_image, name, pool="cpu", cpus=1.5, memory_mb=256,
                    env={"POOL_VAR": "x"})
    before = time.time()
    machine = backend.launch(spec)

    assert (machine.runner_name, machine.pool, machine.state, machine.gpus) == (
        name, "cpu", "running", ())
    assert before - 2 <= machine.created_at <= time.time() + 1
    info = inspect(dockerd, machine.id)
    assert info["Name"] == f"/{name}"
    assert info["Config"]["Labels"] == {port.LABEL_OWNER: owner, port.LABEL_RUNNER: name,
                                        port.LABEL_POOL: "cpu", port.LABEL_GPUS: ""}
    env = dict(item.split("=", 1) for item in info["Config"]["Env"])
    assert env["GHA_MLOPS_JITCONFIG"] == spec.jit_config
    assert env["RUNNER_NAME"] == name
    assert env["RUNNER_LABELS"] == "self-hosted,linux,gpu"
    assert (env["SITE"], env["POOL_VAR"], env["NVIDIA_VISIBLE_DEVICES"]) == ("lab-1", "x", "void")
    host = info["HostConfig"]
    assert host["NanoCpus"] == 1_500_000_000
    assert host["Memory"] == host["MemorySwap"] == 256 * 1024 * 1024  # no swap
    assert (host["AutoRemove"], host["Init"], host["NetworkMode"]) == (True, True, "host")
    assert not host["DeviceRequests"]

    # The stand-in opened its session with the JIT config's token ...
    _, _, body, auth = protocol.wait_for("POST", "/_runner/session")
    assert auth == f"RunnerSession tok-{name}"
    assert body["name"] == name
    # ... as `runner`, with the config on its command line only, not in its environment.
    container = dockerd.client().containers.get(machine.id)
    probe = container.exec_run(["python3", "-c", PROBE], user="runner")
    assert isinstance(probe.output, bytes), probe
    runner = json.loads(probe.output)
    assert runner["uid"] == 1001
    assert runner["args"][-2:] == ["--jitconfig", spec.jit_config]
    assert "GHA_MLOPS_JITCONFIG" not in runner["env"]
    assert "ACTIONS_RUNNER_HOOK_JOB_STARTED" in runner["env"]

    # destroy() stops it gracefully: the stand-in closes its session on SIGTERM.
    backend.destroy(machine.id)
    protocol.wait_for("DELETE", "/_runner/session", timeout=1)
    assert backend.list() == []


def test_a_runner_takes_one_job_runs_the_hooks_and_leaves_nothing(
        dockerd: Dockerd, runner_image: str, backend: DockerBackend, owner: str,
        protocol: ProtocolServer) -> None:
    protocol.jobs.append({"id": 7, "repo": "octo/demo", "run_id": 42, "run_attempt": 1,
                          "name": "train", "labels": ["gpu"], "duration": 1.2,
                          "conclusion": "success"})
    protocol.release.clear()
    name = f"{owner}-gpu-1"
    machine = backend.launch(spec_for(protocol, runner_image, name, gpus=1))
    assert machine.gpus == ("0",)

    _, _, body, _ = protocol.wait_for("POST", "/_runner/complete")
    assert body == {"job_id": 7, "conclusion": "success"}
    assert len(protocol.calls("POST", "/_runner/heartbeat")) >= 2
    logs = dockerd.client().api.logs(machine.id).decode()
    # The hooks ran around the job with its variables, and saw the GPU the runner got.
    started = f"event=job-started runner={name} repo=octo/demo job=train run=42 attempt=1 gpus=0"
    assert started in logs
    assert "event=job-completed" in logs
    assert "temp files left: 0" in logs  # job-completed emptied RUNNER_TEMP
    assert machine.id in dockerd.nvidia_hook_calls()

    protocol.release.set()  # the runner exits after its one job; --rm removes the container
    eventually(lambda: backend.list() == [], "the finished runner's container is gone")
    assert backend.health().capacity == {"gpus": 2}


def test_the_entrypoint_refuses_to_start_without_a_jit_config(
        dockerd: Dockerd, runner_image: str) -> None:
    container = dockerd.client().containers.run(runner_image, network_mode="none",
                                                detach=True)
    try:
        assert container.wait(timeout=30)["StatusCode"] == 64
        assert "GHA_MLOPS_JITCONFIG is not set" in container.logs().decode()
    finally:
        container.remove(force=True)


@pytest.mark.parametrize(("statuses", "exit_code", "says"), [
    ({"/_runner/session": 409}, 1, "the session was refused: HTTP 409"),
    ({"/_runner/acquire": 410}, 0, "the runner was deregistered; exiting"),
    ({"/_runner/session": 503}, 1, "HTTP 503 (5 attempts)"),
], ids=["session-refused", "deregistered", "server-errors-retried"])
def test_the_stand_in_runner_ends_as_the_protocol_says(
        dockerd: Dockerd, runner_image: str, protocol: ProtocolServer,
        statuses: dict[str, int], exit_code: int, says: str) -> None:
    protocol.statuses = statuses
    container = dockerd.client().containers.run(
        runner_image, network_mode="host", detach=True,
        environment={"GHA_MLOPS_JITCONFIG": protocol.jit_config("r1", "tok"),
                     "STANDIN_BACKOFF_S": "0.01"})
    try:
        assert container.wait(timeout=30)["StatusCode"] == exit_code
        assert says in container.logs().decode()
    finally:
        container.remove(force=True)


# -- list, destroy --------------------------------------------------------------------------

def test_list_shows_only_this_autoscalers_machines(
        runner_image: str, backend: DockerBackend, new_backend: NewBackend, owner: str,
        protocol: ProtocolServer) -> None:
    other_owner = f"{owner}-other"
    other = new_backend(owner=other_owner)
    try:
        mine = backend.launch(spec_for(protocol, runner_image, f"{owner}-1", gpus=1))
        theirs = other.launch(spec_for(protocol, runner_image, f"{other_owner}-1"))
        assert [m.id for m in backend.list()] == [mine.id]
        assert [m.id for m in other.list()] == [theirs.id]
        (listed,) = backend.list()
        assert (listed.runner_name, listed.pool, listed.state, listed.gpus) == (
            f"{owner}-1", "gpu", "running", ("0",))
        assert listed.detail.startswith("Up ")
    finally:
        for machine in other.list():
            other.destroy(machine.id)


def test_destroy_is_idempotent_and_only_touches_its_own(
        dockerd: Dockerd, runner_image: str, backend: DockerBackend, owner: str,
        protocol: ProtocolServer) -> None:
    machine = backend.launch(spec_for(protocol, runner_image, f"{owner}-1"))
    backend.destroy(machine.id)
    backend.destroy(machine.id)
    backend.destroy("0" * 64)
    assert backend.list() == []

    stranger = dockerd.client().containers.create(runner_image, network_mode="none")
    try:
        with pytest.raises(BackendError, match="is not a runner of autoscaler") as err:
            backend.destroy(str(stranger.id))
        assert not err.value.retryable
        stranger.reload()
        assert stranger.status == "created"
    finally:
        stranger.remove(force=True)


# -- GPUs -----------------------------------------------------------------------------------

def test_gpus_are_given_to_one_runner_at_a_time_and_read_back_from_labels(
        dockerd: Dockerd, runner_image: str, backend: DockerBackend, new_backend: NewBackend,
        owner: str, protocol: ProtocolServer) -> None:
    first = backend.launch(spec_for(protocol, runner_image, f"{owner}-1", gpus=1))
    second = backend.launch(spec_for(protocol, runner_image, f"{owner}-2", gpus=1))
    assert {first.gpus, second.gpus} == {("0",), ("1",)}
    for machine in (first, second):
        info = inspect(dockerd, machine.id)
        (request,) = info["HostConfig"]["DeviceRequests"]
        assert request["Driver"] == "nvidia"
        assert request["DeviceIDs"] == list(machine.gpus)
        assert request["Capabilities"] == [["gpu"]]
        assert f"NVIDIA_VISIBLE_DEVICES={machine.gpus[0]}" in info["Config"]["Env"]
        assert machine.id in dockerd.nvidia_hook_calls()
    assert backend.health().capacity == {"gpus": 0}

    with pytest.raises(BackendError, match=r"pool 'gpu' wants 1 GPU\(s\), 0 of 2 free") as err:
        backend.launch(spec_for(protocol, runner_image, f"{owner}-3", gpus=1))
    assert err.value.retryable

    # A restarted autoscaler (a new backend) knows what is in use from the containers.
    restarted = new_backend()
    with pytest.raises(BackendError, match="0 of 2 free"):
        restarted.launch(spec_for(protocol, runner_image, f"{owner}-3", gpus=1))
    restarted.destroy(first.id)
    third = restarted.launch(spec_for(protocol, runner_image, f"{owner}-3", gpus=1))
    assert third.gpus == first.gpus
    assert sorted(m.gpus for m in backend.list()) == [("0",), ("1",)]


def test_concurrent_launches_never_share_a_gpu(
        runner_image: str, new_backend: NewBackend, owner: str,
        protocol: ProtocolServer) -> None:
    backend = new_backend(gpus=("0", "1", "2"))

    def launch(i: int) -> Machine | BackendError:
        try:
            return backend.launch(spec_for(protocol, runner_image, f"{owner}-{i}", gpus=1))
        except BackendError as err:
            return err

    with ThreadPoolExecutor(max_workers=5) as pool:
        results = list(pool.map(launch, range(5)))
    gpus = sorted(r.gpus for r in results if not isinstance(r, BackendError))
    refused = [r for r in results if isinstance(r, BackendError)]
    assert gpus == [("0",), ("1",), ("2",)]
    assert len(refused) == 2 and all(r.retryable for r in refused)


def test_a_pool_wanting_more_gpus_than_the_host_has_is_not_retryable(
        runner_image: str, backend: DockerBackend, owner: str,
        protocol: ProtocolServer) -> None:
    with pytest.raises(BackendError, match=r"wants 3 GPU\(s\) per runner, but this Docker "
                                           r"host has 2 \(0, 1\)") as err:
        backend.launch(spec_for(protocol, runner_image, f"{owner}-1", gpus=3))
    assert not err.value.retryable
    assert backend.list() == []


def test_no_gpu_driver_on_the_host_is_a_clear_error_that_leaves_nothing(
        runner_image: str, new_backend: NewBackend, owner: str,
        protocol: ProtocolServer) -> None:
    # A driver the daemon has not registered fails at start, as "nvidia" does on a host
    # without the NVIDIA Container Toolkit.
    backend = new_backend(gpu_driver="amd")
    with pytest.raises(BackendError, match="has no GPU device driver 'amd'") as err:
        backend.launch(spec_for(protocol, runner_image, f"{owner}-1", gpus=1))
    assert not err.value.retryable
    assert "NVIDIA Container Toolkit" in (err.value.hint or "")
    assert backend.list() == []
    assert backend.health().capacity == {"gpus": 2}


def test_allocation_takes_the_first_free_gpus_in_inventory_order() -> None:
    assert allocate_gpus(("a", "b", "c", "d"), {"b"}, 2, pool="p") == ("a", "c")
    assert allocate_gpus(("a",), set(), 0, pool="p") == ()
    with pytest.raises(BackendError, match="has none configured") as err:
        allocate_gpus((), set(), 1, pool="p")
    assert not err.value.retryable
    with pytest.raises(BackendError, match=r"1 of 2 free \(in use: b\)") as err:
        allocate_gpus(("a", "b"), {"b"}, 2, pool="p")
    assert err.value.retryable


# -- failures -------------------------------------------------------------------------------

def test_a_missing_image_is_not_retryable_and_says_how_to_build_it(
        runner_image: str, backend: DockerBackend, owner: str,
        protocol: ProtocolServer) -> None:
    image = "gha-mlops-test/no-such-runner:1"
    with pytest.raises(BackendError, match=f"pool 'gpu'.*the image '{image}' is not on") as err:
        backend.launch(spec_for(protocol, image, f"{owner}-1", gpus=1))
    assert not err.value.retryable
    assert f"docker build -t {image} runner/" in (err.value.hint or "")
    assert backend.list() == []


def test_a_runner_name_in_use_is_refused(
        runner_image: str, backend: DockerBackend, owner: str,
        protocol: ProtocolServer) -> None:
    first = backend.launch(spec_for(protocol, runner_image, f"{owner}-1"))
    with pytest.raises(BackendError, match="already in use") as err:
        backend.launch(spec_for(protocol, runner_image, f"{owner}-1", gpus=1))
    assert not err.value.retryable
    assert [m.id for m in backend.list()] == [first.id]


def test_the_daemon_is_the_environments_by_default(
        dockerd: Dockerd, owner: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The environment the CLI read is the one used, not the process's own.
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    backend = DockerBackend(owner, gpus=("0",), environ={"DOCKER_HOST": dockerd.base_url})
    try:
        assert backend.daemon_url == dockerd.base_url
        assert backend.health() == Health(ok=True, detail=f"Docker daemon at {dockerd.base_url}",
                                          capacity={"gpus": 1})
    finally:
        backend.close()


# The SDK leaks a socket per refused connection (https://github.com/docker/docker-py/pull/3356):
# the test collects them itself, while their ResourceWarnings are ignored.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_a_daemon_that_is_down_is_retryable_and_recovered_from(
        dockerd: Dockerd, runner_image: str, backend: DockerBackend, new_backend: NewBackend,
        owner: str, protocol: ProtocolServer) -> None:
    assert backend.health().ok  # connected before the daemon goes
    fresh = new_backend()  # not connected yet
    dockerd.stop()
    try:
        for which in (backend, fresh):
            check_daemon_down(which, spec_for(protocol, runner_image, "r1"), dockerd.base_url)
        gc.collect()  # the SDK's leaked sockets, while their warnings are ignored
    finally:
        dockerd.start()
    for which in (backend, fresh):
        assert which.health().ok
    machine = fresh.launch(spec_for(protocol, runner_image, f"{owner}-1"))
    assert [m.id for m in backend.list()] == [machine.id]


def check_daemon_down(backend: DockerBackend, spec: LaunchSpec, url: str) -> None:
    for call, args in ((backend.launch, (spec,)), (backend.list, ()),
                       (backend.destroy, ("0" * 64,))):
        with pytest.raises(BackendError, match=f"cannot reach the Docker daemon at {url}") as err:
            call(*args)
        assert err.value.retryable
    health = backend.health()
    assert not health.ok and url in health.detail


# -- packaging ------------------------------------------------------------------------------

def test_the_sdk_is_imported_lazily_and_its_absence_names_the_extra(
        monkeypatch: pytest.MonkeyPatch) -> None:
    code = ("import sys, gha_mlops.runners.backends.docker; "
            "print('docker' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"
    monkeypatch.setitem(sys.modules, "docker", None)  # as if not installed
    with pytest.raises(MissingExtraError) as err:
        DockerBackend("x")
    assert err.value.hint == "pip install 'gha-mlops[runners]'"


def test_the_runner_scripts_pass_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: .ci/system-deps installs it (`make test`)"
    scripts = sorted(str(p.relative_to(REPO)) for p in RUNNER_DIR.rglob("*.sh"))
    assert len(scripts) == 6  # runner/ec2/setup.sh too (the EC2 AMI)
    proc = subprocess.run([shellcheck, "--external-sources", *scripts], cwd=REPO,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_dockerfile_has_its_stages_in_build_order() -> None:
    text = (RUNNER_DIR / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)\s+AS\s+(\S+)\s*$", text, flags=re.MULTILINE)
    # The classic builder builds every stage up to --target: standin before github, and
    # github (the real runner, needing GitHub) last, as the default target.
    assert stages == [("${BASE_IMAGE}", "base"), ("base", "standin"), ("base", "github")]
    assert re.search(r"^ARG BASE_IMAGE=\S+", text.split("FROM")[0], flags=re.MULTILINE)
    base = text.split("AS base")[1].split("\nFROM ")[0]
    assert not re.search(r"apt-get|curl|wget|ADD\s+https?:", base), "base must build offline"
    github = text.split("AS github")[1]
    for needed in ("ARG RUNNER_VERSION", "ARG RUNNER_SHA256", "sha256sum -c",
                   "actions-runner-linux-x64-${RUNNER_VERSION}.tar.gz",
                   "bin/installdependencies.sh"):
        assert needed in github
    assert Path(RUNNER_DIR / "standin" / "run.sh").stat().st_mode & 0o111
