"""A real Docker daemon and the runner images as pytest fixtures. Import them where needed:

    pytest_plugins = ["tests.integration.docker_fixtures"]

``dockerd`` starts a private dockerd for the session (as root, on its own socket and data root
under /tmp, with ``--bridge=none --iptables=false``: containers use ``network_mode="host"`` or
``"none"``); ``base_image`` imports a Debian minbase with python3 made by debootstrap (the
rootfs tarball is cached under ~/.cache/gha-mlops-tests, so only the first session pays for
debootstrap); ``runner_image`` builds runner/Dockerfile's ``standin`` stage on it.

The daemon has a stand-in for the NVIDIA Container Toolkit's prestart hook on its PATH, so it
registers its built-in ``nvidia`` device driver: GPU device requests reach the runtime (the
hook records each container it is called for and lets it start) without a GPU. A device
driver the daemon does not know, e.g. ``gpu_driver="amd"``, fails as on a host without
the toolkit.

No root or no dockerd/debootstrap is a failure, not a skip: ``make test`` installs docker.io
and debootstrap (.ci/system-deps) and must run as root.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

REPO = Path(__file__).resolve().parents[2]
BASE_IMAGE = "gha-mlops-test/base:bookworm"
RUNNER_IMAGE = "gha-mlops-test/runner:standin"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# What goes in the base image; the cache key covers these and the mirror. `python3`, not
# `python3-minimal`: the stand-in runner needs json and urllib.request (http.client), which
# Debian ships in libpython3.11-stdlib.
DEBOOTSTRAP_ARGS = ("--variant=minbase", "--include=python3,ca-certificates", "bookworm")
NVIDIA_HOOK = "nvidia-container-runtime-hook"
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 60


def _need(condition: bool, what: str) -> None:
    if not condition:
        pytest.fail(f"{what}: `make test` installs docker.io and debootstrap "
                    "(.ci/system-deps) and must run as root", pytrace=False)


def _unmount_under(root: Path) -> None:
    """Unmount whatever is mounted at or below ``root`` (deepest first): an overlay or a
    /proc that a killed daemon or debootstrap left behind would make rmtree fail."""
    prefix = str(root.resolve())
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")  # \040 is a space
        if point == prefix or point.startswith(prefix + "/"):
            mounts.append(point)
    for point in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def _remove_tree(root: Path) -> None:
    _unmount_under(root)
    shutil.rmtree(root, ignore_errors=True)


class Dockerd:
    """One private Docker daemon: ``start()``, ``stop()``, ``restart()``, ``client()``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # unix socket paths are limited to 108 bytes: /tmp/gha-mlops-dockerd-XXXXXXXX/docker.sock
        self.socket = root / "docker.sock"
        self.base_url = f"unix://{self.socket}"
        self.log_path = root / "dockerd.log"
        self.hook_log = root / "nvidia-hook.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._clients: list[docker.DockerClient] = []
        bin_dir = root / "bin"
        bin_dir.mkdir()
        hook = bin_dir / NVIDIA_HOOK
        hook.write_text(
            "#!/bin/sh\n"
            "# Stand-in for the NVIDIA Container Toolkit's prestart hook (tests only): runc\n"
            "# passes the container's state on stdin; record it and let the container start.\n"
            "# One record a line: concurrent starts take turns (cat and echo are two writes).\n"
            f"exec 9>>'{self.hook_log}'\n"
            "flock 9\n"
            "{ cat; echo; } >&9\n")
        hook.chmod(0o755)
        (root / "daemon.json").write_text("{}\n")  # not the host's /etc/docker/daemon.json

    def start(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        cmd = ["dockerd", "--iptables=false", "--ip-masq=false", "--bridge=none",
               "--config-file", str(self.root / "daemon.json"), "-H", self.base_url,
               "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
               "--pidfile", str(self.root / "docker.pid")]
        env = dict(os.environ, PATH=f"{self.root / 'bin'}:{os.environ.get('PATH', '')}")
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                          start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self._proc.poll() is not None:
                pytest.fail(f"dockerd exited {self._proc.returncode} at start:\n{self.log_tail()}",
                            pytrace=False)
            if self._ping():
                return
            if time.monotonic() > deadline:
                pytest.fail(f"dockerd did not answer in {START_TIMEOUT_S} s:\n{self.log_tail()}",
                            pytrace=False)
            time.sleep(0.1)

    def _ping(self) -> bool:
        """``GET /_ping`` over the socket (with the standard library: the SDK leaks a socket
        per refused connection, https://github.com/docker/docker-py/pull/3356)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            try:
                sock.connect(str(self.socket))
                sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                return sock.recv(4096).split(b"\r\n")[0].split()[1:2] == [b"200"]
            except OSError:
                return False

    def stop(self) -> None:
        """SIGTERM, as systemd stops it (it stops the containers and its containerd)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # dockerd and the containerd it started
            proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self) -> docker.DockerClient:
        """A new client of this daemon (closed at the end of the session)."""
        client = docker.DockerClient(base_url=self.base_url, timeout=120)
        self._clients.append(client)
        return client

    def nvidia_hook_calls(self) -> list[str]:
        """The ids of the containers the stand-in NVIDIA hook was called for, in order."""
        if not self.hook_log.exists():
            return []
        return [json.loads(line)["id"] for line in self.hook_log.read_text().splitlines()
                if line.strip()]

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self.stop()
        _remove_tree(self.root)


@pytest.fixture(scope="session")
def dockerd() -> Iterator[Dockerd]:
    """A private dockerd for the session (see the module's docstring)."""
    _need(os.geteuid() == 0, "the Docker backend's tests start their own dockerd, as root")
    _need(shutil.which("dockerd") is not None, "dockerd is not installed")
    yield from _private_dockerd()


def _private_dockerd() -> Iterator[Dockerd]:
    """A dockerd of its own (socket, data root, exec root, containerd) until closed."""
    daemon = Dockerd(Path(tempfile.mkdtemp(prefix="gha-mlops-dockerd-", dir="/tmp")))
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.close()


def debootstrap_tarball(args: tuple[str, ...], name: str) -> Path:
    """A rootfs made by ``debootstrap ARGS`` as a tarball, from the cache (keyed by the
    arguments and the mirror) or made now; apt's downloads and lists are left out."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gha-mlops-tests"
    key = hashlib.sha256(json.dumps([list(args), DEBIAN_MIRROR]).encode()).hexdigest()
    tarball = cache / f"{name}-{key[:16]}.tar"
    if tarball.exists():
        return tarball
    _need(shutil.which("debootstrap") is not None, "debootstrap is not installed")
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=cache))
    partial = work / "rootfs.tar"
    try:
        rootfs = work / "rootfs"
        proc = subprocess.run(["debootstrap", *args, str(rootfs), DEBIAN_MIRROR],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            pytest.fail(f"debootstrap failed (exit {proc.returncode}; it needs {DEBIAN_MIRROR}):"
                        f"\n{(proc.stdout + proc.stderr)[-4000:]}", pytrace=False)
        # The downloaded packages and the package lists are a third of the size; not needed.
        for leftovers in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / leftovers).glob("*"):
                if path.is_file():
                    path.unlink()
        subprocess.run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."],
                       check=True, capture_output=True)
        os.replace(partial, tarball)  # atomic: a tarball in the cache is always whole
    finally:
        _remove_tree(work)
    return tarball


def _rootfs_tarball() -> Path:
    """The base image's rootfs as a tarball: from the cache, else made with debootstrap."""
    return debootstrap_tarball(DEBOOTSTRAP_ARGS, "rootfs-bookworm")


@pytest.fixture(scope="session")
def base_image(dockerd: Dockerd) -> str:
    """``gha-mlops-test/base:bookworm``: Debian bookworm minbase + python3 + ca-certificates."""
    tarball = _rootfs_tarball()
    api = dockerd.client().api
    repository, tag = BASE_IMAGE.split(":")
    api.import_image_from_file(str(tarball), repository=repository, tag=tag)
    return BASE_IMAGE


@pytest.fixture(scope="session")
def runner_image(dockerd: Dockerd, base_image: str) -> str:
    """runner/Dockerfile's ``standin`` stage on the base image: the runner image with the
    stand-in for GitHub's runner as /home/runner/run.sh."""
    client = dockerd.client()
    try:
        client.images.build(path=str(REPO / "runner"), target="standin", tag=RUNNER_IMAGE,
                            buildargs={"BASE_IMAGE": base_image}, network_mode="host",
                            rm=True, forcerm=True)
    except docker.errors.BuildError as err:
        log = "".join(str(chunk.get("stream") or chunk.get("error") or "")
                      for chunk in err.build_log)
        pytest.fail(f"building runner/Dockerfile (target standin) failed: {err}\n{log[-4000:]}",
                    pytrace=False)
    return RUNNER_IMAGE


# -- a second daemon: one pool over several Docker hosts ----------------------------------

@pytest.fixture(scope="session")
def second_dockerd(dockerd: Dockerd) -> Iterator[Dockerd]:
    """Another private dockerd beside ``dockerd`` (its own socket, data root, exec root and
    containerd, the same stand-in NVIDIA hook): two Docker hosts on one machine."""
    yield from _private_dockerd()


@pytest.fixture(scope="session")
def second_runner_image(dockerd: Dockerd, second_dockerd: Dockerd, runner_image: str) -> str:
    """``runner_image`` on the second daemon too (``docker save | docker load``, no rebuild)."""
    copy_image(dockerd, second_dockerd, runner_image)
    return runner_image


def copy_image(source: Dockerd, target: Dockerd, image: str) -> None:
    """``docker save IMAGE`` on ``source`` piped into ``docker load`` on ``target``."""
    with tempfile.TemporaryFile() as tar:
        for chunk in source.client().api.get_image(image):
            tar.write(chunk)
        tar.seek(0)
        for _ in target.client().api.load_image(tar):
            pass


def freeze(daemon: Dockerd) -> None:
    """SIGSTOP the daemon: it stops answering while its containers run on (a host cut off
    from the autoscaler's network, a daemon hung); :func:`thaw` lets it go on."""
    assert daemon._proc is not None
    os.kill(daemon._proc.pid, signal.SIGSTOP)


def thaw(daemon: Dockerd) -> None:
    assert daemon._proc is not None
    os.kill(daemon._proc.pid, signal.SIGCONT)
