"""`gha-mlops demo` with a Docker daemon: after its run the demo registers the model and
packages it as a serving image, and the example's own query script gets digits back from the
container it prints how to start.

The tests' dockerd has no Docker Hub, so the slim serving base the packaging tests import is
tagged ``python:3.11-slim`` there: the demo's default base, as on a user's machine that has
pulled it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from gha_mlops.packaging.image import wait_ready
from tests.conftest import CLI
from tests.integration.package_helpers import free_port

if TYPE_CHECKING:
    from tests.integration.docker_fixtures import Dockerd

pytest_plugins = ["tests.integration.docker_fixtures", "tests.integration.serving_fixtures",
                  "tests.integration.deploy_fixtures"]
pytestmark = pytest.mark.slow


def test_the_demo_registers_packages_serves_and_deploys_its_model(
        dockerd: Dockerd, serving_base: str, wheel_cache: Path, router_image: str,
        tmp_path: Path) -> None:
    dockerd.client().api.tag(serving_base, "python", "3.11-slim")
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_ACTIONS"}
    env.update(DOCKER_HOST=dockerd.base_url, XDG_CACHE_HOME=str(tmp_path / "cache"))
    # The packaging tests' wheel cache: the wheels for the image's Python are fetched once.
    (tmp_path / "cache" / "gha-mlops").mkdir(parents=True)
    (tmp_path / "cache" / "gha-mlops" / "wheels").symlink_to(wheel_cache)
    proc = subprocess.run([*CLI, "demo", "demo"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "model version  digits 1.0.0, registered: git tag digits@v1.0.0" in proc.stdout
    assert "image          gha-mlops/digits:1.0.0" in proc.stdout
    assert "not packaged" not in proc.stdout
    shown = re.search(r"docker run --rm -d -p 8080:8080 --name digits (\S+)", proc.stdout)
    assert shown and shown.group(1) == "gha-mlops/digits:1.0.0"

    port = free_port()
    container = dockerd.client().containers.run(
        "gha-mlops/digits:1.0.0", detach=True, network_mode="host",
        environment={"PORT": str(port)})
    try:
        wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", timeout=60)
        # The query script the demo points to, with the demo's own test images.
        answer = subprocess.run([sys.executable, "src/query.py", f"127.0.0.1:{port}", "20"],
                                cwd=tmp_path / "demo", capture_output=True, text=True,
                                timeout=60, check=True).stdout
        pairs = re.findall(r"predicted (\d)  true (\d)", answer)
        assert len(pairs) == 20
        assert sum(p == t for p, t in pairs) >= 18  # a 0.99-accurate model
    finally:
        container.remove(force=True)
    _deploy_as_getting_started_says(dockerd, router_image, tmp_path / "demo", env)


def _deploy_as_getting_started_says(dockerd: Dockerd, router_image: str, demo: Path,
                                    env: dict[str, str]) -> None:
    """docs/getting-started.md's deploy of the demo's image to its staging environment, on
    the tests' dockerd and a free port (the router image tagged as the demo's default)."""
    dockerd.client().api.tag(router_image, "nginx", "1.27-bookworm")
    port = free_port()
    config = (demo / "mlops.yaml").read_text()
    (demo / "mlops.yaml").write_text(
        config.replace("unix:///var/run/docker.sock", dockerd.base_url)
        .replace("port: 8080", f"port: {port}\n      backend_ports: [{free_port()}, "
                                 f"{free_port()}]").replace("bake: 10s", "bake: 1s"))
    try:
        deploy = subprocess.run(
            [*CLI, "deploy", "--version", "1.0.0", "--env", "staging", "--image",
             "gha-mlops/digits:1.0.0"], cwd=demo, env=env, capture_output=True, text=True,
            timeout=300, check=False)
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        assert "digits 1.0.0 serves staging" in deploy.stdout
        assert "golden requests: 8 answered as expected" in deploy.stdout
        status = subprocess.run([*CLI, "deploy", "status", "--env", "staging"], cwd=demo,
                                env=env, capture_output=True, text=True, timeout=120,
                                check=True)
        assert f"digits 1.0.0 (100%) at http://127.0.0.1:{port}" in status.stdout
        answer = subprocess.run([sys.executable, "src/query.py", f"127.0.0.1:{port}", "200"],
                                cwd=demo, capture_output=True, text=True, timeout=60,
                                check=True).stdout
        assert len(re.findall(r"predicted (\d)  true (\d)", answer)) == 200
        _monitor_as_getting_started_says(demo, env)
    finally:
        api = dockerd.client().api
        for found in api.containers(all=True,
                                    filters={"label": "io.gha-mlops.deploy.env=staging"}):
            api.remove_container(found["Id"], force=True)


def _monitor_as_getting_started_says(demo: Path, env: dict[str, str]) -> None:
    """The deployed backend logged what it served (monitor.models.digits, sample 1.0):
    `monitor check` reads it against the profile packaged with 1.0.0."""
    deadline = time.monotonic() + 30  # the server writes a batch within 5 s
    log = demo / "logs" / "predictions" / "digits" / "1.0.0"
    while not any(log.rglob("*.jsonl.gz")) and time.monotonic() < deadline:
        time.sleep(0.5)
    check = subprocess.run([*CLI, "monitor", "check", "digits", "--window", "1h", "--json",
                            "--output", "monitor-report"], cwd=demo, env=env,
                           capture_output=True, text=True, timeout=300, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    verdict = json.loads(check.stdout)
    seen = {k: verdict[k] for k in ("version", "rows", "files", "skipped")}
    # 200 test images and the 8 golden requests the rollout replayed (check data as well).
    assert seen == {"version": "1.0.0", "rows": 208, "files": 1, "skipped": {}}, seen
    # The test images come from the reference's own distribution: no verdict of drift.
    assert verdict["alarm"]["status"] in ("ok", "watch"), verdict["alarm"]
    assert (demo / "monitor-report" / "report.md").is_file()
