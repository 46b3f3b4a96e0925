"""What the deploy tests run on the test daemon, as session fixtures:

- ``router_image``: Debian's nginx (no Docker Hub here, so no ``nginx:1.27-bookworm``): a
  ``debootstrap --variant=minbase --include=nginx bookworm`` rootfs, cached under
  :func:`tests.integration.serving_fixtures.cache_dir` keyed by the arguments and the mirror
  (only the first session pays for debootstrap), imported as
  ``gha-mlops-test/router:bookworm``;
- ``oip_images`` (and ``oip_image``, its 1.0.0): the packaged serving image of the tiny
  ONNX model (:func:`tests.integration.package_helpers.tiny_onnx`), built as ``gha-mlops
  package`` builds it (packaging.build's context, packaging.image's build) in two versions,
  1.0.0 and 2.0.0, that differ only in the model's last layer (model.json's version), so a
  test tells them apart by the ``model_version`` of their answers.

    pytest_plugins = ["tests.integration.docker_fixtures", "tests.integration.serving_fixtures",
                      "tests.integration.deploy_fixtures"]
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.docker_fixtures import Dockerd, debootstrap_tarball
from tests.integration.package_helpers import tiny_onnx

ROUTER_IMAGE = "gha-mlops-test/router:bookworm"
ROUTER_DEBOOTSTRAP_ARGS = ("--variant=minbase", "--include=nginx", "bookworm")
OIP_REPOSITORY = "gha-mlops-test/tiny"
OIP_MODEL = "tiny"
OIP_VERSIONS = ("1.0.0", "2.0.0")


@pytest.fixture(scope="session")
def router_image(dockerd: Dockerd) -> str:
    """``gha-mlops-test/router:bookworm``: Debian bookworm minbase with its nginx package."""
    tarball = debootstrap_tarball(ROUTER_DEBOOTSTRAP_ARGS, "rootfs-nginx")
    repository, tag = ROUTER_IMAGE.split(":")
    dockerd.client().api.import_image_from_file(str(tarball), repository=repository, tag=tag)
    return ROUTER_IMAGE


@dataclass(frozen=True)
class OipImage:
    """A packaged serving image on the test daemon: its reference, image id and version."""

    image: str
    image_id: str
    model: str
    version: str


@pytest.fixture(scope="session")
def oip_images(dockerd: Dockerd, serving_base: str, wheel_cache: Path,
               tmp_path_factory: pytest.TempPathFactory) -> dict[str, OipImage]:
    """The tiny model's serving image in versions 1.0.0 and 2.0.0 (see the module docstring),
    by version."""
    from gha_mlops.packaging import build
    from gha_mlops.packaging.image import DockerImages
    from gha_mlops.packaging.service import SERVER

    work = tmp_path_factory.mktemp("oip-image")
    model = work / "model.onnx"
    signature = tiny_onnx(model)
    images: dict[str, OipImage] = {}
    with DockerImages(base_url=dockerd.base_url) as engine:
        target = engine.python_of(serving_base)
        wheels = build.fetch_wheels(target, wheel_cache, build.host_pins())
        doc = {"name": OIP_MODEL, "version": OIP_VERSIONS[0], "platform": "onnxruntime_onnx",
               **signature, "sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
               "run_id": "run-1", "commit": "0" * 40}
        context = build.make_context(work / "context", base=serving_base, target=target,
                                     wheels=wheels, server=SERVER, model_onnx=model,
                                     model_json=doc,
                                     subject={"name": OIP_MODEL, "version": OIP_VERSIONS[0]})
        for version in OIP_VERSIONS:
            # One context, the model's manifest rewritten: the daemon's cache gives every
            # layer but the model's, as it does for a retrained model.
            (context.path / "model" / "model.json").write_text(
                json.dumps({**doc, "version": version}, indent=2, sort_keys=True) + "\n")
            tag = f"{OIP_REPOSITORY}:{version}"
            image_id = engine.build(context.path, tag=tag, labels={
                "io.gha-mlops.model.name": OIP_MODEL, "io.gha-mlops.model.version": version})
            images[version] = OipImage(tag, image_id, OIP_MODEL, version)
    return images


@pytest.fixture(scope="session")
def oip_image(oip_images: dict[str, OipImage]) -> OipImage:
    """The tiny model's serving image, version 1.0.0 (see ``oip_images``)."""
    return oip_images[OIP_VERSIONS[0]]
