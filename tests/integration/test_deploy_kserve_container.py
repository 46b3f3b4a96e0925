"""The container that render_kserve writes runs the real packaged image: no cluster here, so
the test daemon runs it the way a kubelet would from the manifest (the image pulled by the
pinned reference, the securityContext's uid, dropped capabilities and no privilege
escalation, the args, the env, the memory limit), and the manifest's probes and an inference
answer on the port. What Kubernetes itself would add (PORT from Knative, the pod network) is
stood in for: PORT is a free port of the daemon's host network, as Knative sets PORT to the
container port."""

from __future__ import annotations

import http.client
import json
import time
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from gha_mlops.config.model import DeployEnvironment, DeployHostConfig
from gha_mlops.deploy.kserve import render_kserve, validate_manifests
from tests.integration.package_helpers import free_port

if TYPE_CHECKING:
    from tests.integration.deploy_fixtures import OipImage
    from tests.integration.docker_fixtures import Dockerd
    from tests.integration.registry_fixtures import OciRegistry

pytest_plugins = ["tests.integration.docker_fixtures", "tests.integration.serving_fixtures",
                  "tests.integration.deploy_fixtures", "tests.integration.registry_fixtures"]

READY_TIMEOUT_S = 60
_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def _bytes(quantity: str) -> int:
    return int(quantity[:-2]) * _UNITS[quantity[-2:]]


def _get(port: int, path: str, body: bytes | None = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST" if body else "GET", path, body=body,
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None
    finally:
        conn.close()


def _probe_until_ok(port: int, probe: dict[str, Any], container: Any) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            if _get(port, probe["httpGet"]["path"])[0] == 200:
                return
        except OSError:
            pass
        container.reload()
        if container.status != "running" or time.monotonic() > deadline:
            pytest.fail(f"{probe['httpGet']['path']} never answered 200 ({container.status}):\n"
                        + container.logs(tail=30).decode(errors="replace"), pytrace=False)
        time.sleep(0.2)


def test_the_rendered_container_runs_the_packaged_image_as_a_kubelet_would(
        dockerd: Dockerd, oip_images: dict[str, OipImage], oci_registry: OciRegistry) -> None:
    image = oip_images["1.0.0"]
    client = dockerd.client()
    repo = f"{oci_registry.host}/kserve-test/{image.model}"
    client.images.get(image.image_id).tag(repo, image.version)
    client.images.push(repo, image.version)
    digest = oci_registry.manifest_digest(f"kserve-test/{image.model}", image.version)
    env = DeployEnvironment(name="staging", stage="staging", steps=(10, 100), port=8080,
                            hosts=(DeployHostConfig("unix:///var/run/docker.sock",
                                                    "127.0.0.1"),),
                            backend_ports=(8081, 8082), workers=2)
    files = render_kserve(image.model, image.version, f"{repo}:{image.version}@{digest}", env)
    assert validate_manifests(files) == []
    spec = yaml.safe_load(files["02-staging-promote.yaml"])["spec"]["predictor"]
    [manifest] = spec["containers"]
    assert manifest["image"] == f"{repo}@{digest}"

    client.images.remove(f"{repo}:{image.version}")  # what the node has: nothing but the ref
    pulled = client.images.pull(manifest["image"])
    assert pulled.id == image.image_id
    context = manifest["securityContext"]
    # runAsNonRoot admits the image only if its USER is a non-zero uid: the one rendered.
    assert pulled.attrs["Config"]["User"] == f"{context['runAsUser']}:{context['runAsGroup']}"
    port = free_port()
    container = client.containers.run(
        manifest["image"], command=manifest["args"], detach=True, network_mode="host",
        name=f"gha-mlops-kserve-test-{port}", labels={"io.gha-mlops.test": "kserve"},
        environment={**{v["name"]: v["value"] for v in manifest["env"]}, "PORT": str(port)},
        user=f"{context['runAsUser']}:{context['runAsGroup']}",
        cap_drop=context["capabilities"]["drop"],
        security_opt=[] if context["allowPrivilegeEscalation"] else ["no-new-privileges"],
        mem_limit=_bytes(manifest["resources"]["limits"]["memory"]))
    try:
        _probe_until_ok(port, manifest["readinessProbe"], container)
        _probe_until_ok(port, manifest["livenessProbe"], container)
        body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                                       "data": [1.0, 2.0, 3.0, 4.0]}]}).encode()
        status, answer = _get(port, f"/v2/models/{image.model}/infer", body)
        assert status == 200, answer
        assert answer["model_version"] == image.version
        assert container.top()["Processes"][0][0] == str(context["runAsUser"])
    finally:
        container.remove(force=True)
