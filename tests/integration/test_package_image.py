"""The serving image, built for real: a private dockerd builds it from a base made locally,
the container serves the model to an independent Open Inference Protocol client
(tritonclient), and a real OCI registry (Debian's docker-registry) receives the push.

These tests build from a model folder through the build and image modules;
test_package_cli.py goes through `gha-mlops package` from a registered model.
"""

from __future__ import annotations

import gc
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from gha_mlops.packaging import build
from gha_mlops.packaging.build import PackageError
from gha_mlops.packaging.image import DockerImages, wait_ready
from gha_mlops.packaging.service import SERVER
from tests.integration.package_helpers import free_port, tiny_onnx

if TYPE_CHECKING:
    from tests.integration.docker_fixtures import Dockerd
    from tests.integration.registry_fixtures import OciRegistry

pytest_plugins = ["tests.integration.docker_fixtures", "tests.integration.registry_fixtures",
                  "tests.integration.serving_fixtures"]

LABELS = {"org.opencontainers.image.title": "tiny", "org.opencontainers.image.version": "1.0.0",
          "io.gha-mlops.model.name": "tiny", "io.gha-mlops.model.version": "1.0.0"}


@dataclass
class Built:
    engine: DockerImages
    image: str
    image_id: str
    model: Path
    signature: dict[str, Any]
    context: build.Context


def _build(engine: DockerImages, base: str, wheel_cache: Path, work: Path, *, tag: str,
           bias: float = 0.0) -> Built:
    model = work / f"model-{bias}.onnx"
    signature = tiny_onnx(model)
    if bias:  # a different model: the same graph, other bytes
        import onnx
        from onnx import numpy_helper

        proto = onnx.load(str(model))
        b = proto.graph.initializer[1]
        b.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(b) + np.float32(bias), "b"))
        model.write_bytes(proto.SerializeToString())
    target = engine.python_of(base)
    wheels = build.fetch_wheels(target, wheel_cache, build.host_pins())
    doc = {"name": "tiny", "version": "1.0.0", "platform": "onnxruntime_onnx", **signature,
           "sha256": hashlib.sha256(model.read_bytes()).hexdigest(), "run_id": "run-1",
           "commit": "0" * 40}
    context = build.make_context(work / f"context-{tag.replace(':', '-').replace('/', '-')}",
                                 base=base, target=target, wheels=wheels, server=SERVER,
                                 model_onnx=model, model_json=doc,
                                 subject={"name": "tiny", "version": "1.0.0"})
    image_id = engine.build(context.path, tag=tag, labels=LABELS)
    return Built(engine, tag, image_id, model, signature, context)


@pytest.fixture(scope="module")
def built(dockerd: Dockerd, serving_base: str, wheel_cache: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    with DockerImages(base_url=dockerd.base_url) as engine:
        yield _build(engine, serving_base, wheel_cache, tmp_path_factory.mktemp("image"),
                     tag="gha-mlops/tiny:1.0.0")


def _run_in_image(dockerd: Dockerd, image: str, code: str) -> str:
    client = dockerd.client()
    out = client.containers.run(image, ["-c", code], entrypoint=["python3"], remove=True,
                                network_mode="none")
    return bytes(out).decode()


def test_image_is_slim_non_root_with_healthcheck_labels_and_model_last(
        built: Built, dockerd: Dockerd) -> None:
    facts = built.engine.inspect(built.image)
    assert facts.user == "65532:65532"
    assert LABELS.items() <= facts.labels.items()
    assert facts.healthcheck[0] == "CMD" and "/v2/health/ready" in facts.healthcheck[-1]
    assert facts.size < 300 * 1024 * 1024, facts.size
    history = [h for h in dockerd.client().api.history(built.image) if h["Size"]]
    assert "/model/" in history[0]["CreatedBy"], history[0]  # newest first: the model's COPY


def test_a_new_model_changes_only_the_last_layer_and_rebuilds_are_reproducible(
        built: Built, serving_base: str, wheel_cache: Path, tmp_path: Path) -> None:
    again = _build(built.engine, serving_base, wheel_cache, tmp_path, tag="gha-mlops/tiny:again")
    other = _build(built.engine, serving_base, wheel_cache, tmp_path, tag="gha-mlops/tiny:other",
                   bias=1.0)
    first = built.engine.inspect(built.image).layers
    assert built.engine.inspect(again.image).layers == first
    other_layers = built.engine.inspect(other.image).layers
    assert other_layers[:-1] == first[:-1] and other_layers[-1] != first[-1]


def test_image_holds_no_pip_or_compiler_and_its_sbom_lists_the_runtime(
        built: Built, dockerd: Dockerd) -> None:
    report = json.loads(_run_in_image(dockerd, built.image, (
        "import importlib.util as u, json, shutil, onnxruntime, numpy;"
        "print(json.dumps({'pip': u.find_spec('pip') is not None,"
        "'tools': [t for t in ('pip', 'pip3', 'gcc', 'cc', 'g++', 'make') if shutil.which(t)],"
        "'ort': onnxruntime.__version__, 'numpy': numpy.__version__,"
        "'sbom': json.load(open('/sbom/cyclonedx.json'))}))")))
    assert report["pip"] is False and report["tools"] == []
    sbom = report["sbom"]
    assert sbom["bomFormat"] == "CycloneDX" and sbom["specVersion"] == "1.5"
    listed = {c["name"].lower(): c for c in sbom["components"]}
    assert listed["numpy"]["version"] == report["numpy"]
    assert listed["onnxruntime"]["version"] == report["ort"]
    assert listed["onnxruntime"]["purl"] == f"pkg:pypi/onnxruntime@{report['ort']}"
    assert all(len(c["hashes"][0]["content"]) == 64 for c in listed.values()
               if c["type"] == "library")


@pytest.fixture
def serving(built: Built) -> Iterator[tuple[str, str]]:
    port = free_port()
    container = built.engine.start(built.image, port=port)
    try:
        yield container, f"127.0.0.1:{port}"
    finally:
        built.engine.remove(container)


def test_container_serves_the_open_inference_protocol_to_tritonclient(
        built: Built, serving: tuple[str, str]) -> None:
    import onnxruntime
    import tritonclient.http as httpclient

    container, address = serving
    wait_ready(f"http://{address}/v2/health/ready", timeout=60)
    deadline = time.monotonic() + 30
    while built.engine.health(container) != "healthy":  # the HEALTHCHECK agrees
        assert time.monotonic() < deadline, (built.engine.health(container),
                                             built.engine.logs(container))
        time.sleep(0.5)
    logs = built.engine.logs(container)
    assert f"ready on http://0.0.0.0:{address.rpartition(':')[2]}" in logs
    assert "[W:" not in logs, logs  # no warning at start (onnxruntime's need a HOME)
    client = httpclient.InferenceServerClient(address)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("tiny")
        meta = client.get_model_metadata("tiny")
        assert meta["inputs"] == built.signature["inputs"]
        assert meta["outputs"] == built.signature["outputs"]
        x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
        request = httpclient.InferInput("input", list(x.shape), "FP32")
        # JSON tensors: Triton's binary-data extension is not part of the protocol.
        request.set_data_from_numpy(x, binary_data=False)
        wanted = [httpclient.InferRequestedOutput("output", binary_data=False)]
        got = client.infer("tiny", [request], outputs=wanted).as_numpy("output")
    finally:
        client.close()
    want = onnxruntime.InferenceSession(str(built.model)).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_push_to_a_registry_gives_the_digest_the_registry_serves(
        built: Built, dockerd: Dockerd, oci_registry: OciRegistry) -> None:
    image = f"{oci_registry.host}/tiny:1.0.0"
    dockerd.client().api.tag(built.image, f"{oci_registry.host}/tiny", tag="1.0.0")
    digest = built.engine.push(image)
    assert digest.startswith("sha256:")
    assert oci_registry.manifest_digest("tiny", "1.0.0") == digest
    assert oci_registry.manifest_digest("tiny", digest) == digest


def test_push_to_an_unreachable_registry_is_a_clear_error(built: Built, dockerd: Dockerd) -> None:
    image = f"127.0.0.1:{free_port()}/tiny:1.0.0"
    dockerd.client().api.tag(built.image, image.rpartition(":")[0], tag="1.0.0")
    with pytest.raises(PackageError, match=r"pushing .*tiny:1.0.0 failed: .*") as err:
        built.engine.push(image)
    assert "docker login" in (err.value.hint or "")


# The SDK leaks a socket per refused connection (https://github.com/docker/docker-py/pull/3356):
# the test collects them itself, while their ResourceWarnings are ignored.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_no_daemon_is_a_clear_error(tmp_path: Path) -> None:
    with DockerImages(base_url=f"unix://{tmp_path}/docker.sock") as engine, \
            pytest.raises(PackageError, match="Docker is not reachable at unix://") as err:
        engine.python_of("python:3.11-slim")
    hint = err.value.hint or ""
    del err  # its traceback holds the leaked socket
    gc.collect()
    assert "DOCKER_HOST" in hint


def test_a_base_image_that_is_not_there_is_named(dockerd: Dockerd) -> None:
    with DockerImages(base_url=dockerd.base_url) as engine, \
            pytest.raises(PackageError, match="the base image 'no/such-base:1' is not on"):
        engine.python_of("no/such-base:1")
