"""A real OCI registry on loopback as a pytest fixture. Import it where needed:

    pytest_plugins = ["tests.integration.registry_fixtures"]

``oci_registry`` runs Debian's ``docker-registry`` (the CNCF distribution server,
/usr/bin/docker-registry) with ``docker-registry serve CONFIG.yml``: listening on
127.0.0.1 on a free port, storing blobs under a temporary folder, stopped and removed at the
end of the session. A Docker daemon pushes to it over plain HTTP without configuration, since
dockerd treats 127.0.0.0/8 as an insecure registry.

No docker-registry is a failure, not a skip: ``make test`` installs it (.ci/system-deps).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.package_helpers import free_port

REGISTRY_BIN = "docker-registry"
START_TIMEOUT_S = 30
# What a Docker or OCI client accepts for a manifest: the registry answers the digest of the
# manifest as pushed (Docker-Content-Digest) whatever its media type.
MANIFEST_ACCEPT = ", ".join((
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
))


class OciRegistry:
    """One ``docker-registry serve`` process: ``host`` (``127.0.0.1:PORT``, the prefix of
    image names pushed to it), ``url``, ``manifest_digest()``, ``stop()``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.log_path = root / "registry.log"
        self.config = root / "config.yml"
        self.config.write_text(
            "version: 0.1\n"
            "log:\n  level: info\n  formatter: text\n"
            "storage:\n"
            f"  filesystem:\n    rootdirectory: {root / 'data'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n")
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen([REGISTRY_BIN, "serve", str(self.config)],
                                          stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self._proc.poll() is not None:
                pytest.fail(f"docker-registry exited {self._proc.returncode} at start:\n"
                            f"{self.log_tail()}", pytrace=False)
            try:
                with urllib.request.urlopen(f"{self.url}/v2/", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"docker-registry did not answer in {START_TIMEOUT_S} s:\n"
                            f"{self.log_tail()}", pytrace=False)
            time.sleep(0.05)

    def manifest_digest(self, name: str, reference: str) -> str:
        """``Docker-Content-Digest`` of ``GET /v2/<name>/manifests/<reference>``."""
        request = urllib.request.Request(f"{self.url}/v2/{name}/manifests/{reference}",
                                         headers={"Accept": MANIFEST_ACCEPT})
        with urllib.request.urlopen(request, timeout=10) as response:
            json.load(response)  # a manifest, whole
            return str(response.headers["Docker-Content-Digest"])

    def tags(self, name: str) -> list[str]:
        with urllib.request.urlopen(f"{self.url}/v2/{name}/tags/list", timeout=10) as response:
            return list(json.load(response).get("tags") or [])

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def oci_registry() -> Iterator[OciRegistry]:
    """A running loopback registry for the session (see the module's docstring)."""
    if shutil.which(REGISTRY_BIN) is None:
        pytest.fail("docker-registry is not installed: `make test` installs it "
                    "(.ci/system-deps)", pytrace=False)
    root = Path(tempfile.mkdtemp(prefix="gha-mlops-registry-", dir="/tmp"))
    registry = OciRegistry(root)
    try:
        registry.start()
        yield registry
    finally:
        registry.stop()
        shutil.rmtree(root, ignore_errors=True)
