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
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.docker_fixtures import DEBIAN_MIRROR, Dockerd, _need, _remove_tree
from tests.integration.package_helpers import tiny_onnx
from tests.integration.serving_fixtures import cache_dir

ROUTER_IMAGE = "gha-mlops-test/router:bookworm"
ROUTER_DEBOOTSTRAP_ARGS = ("--variant=minbase", "--include=nginx", "bookworm")
OIP_REPOSITORY = "gha-mlops-test/tiny"
OIP_MODEL = "tiny"
OIP_VERSIONS = ("1.0.0", "2.0.0")


def debootstrap_tarball(args: tuple[str, ...], name: str) -> Path:
    """A rootfs made by ``debootstrap ARGS`` as a tarball, from the cache (keyed by the
    arguments and the mirror) or made now; apt's downloads and lists are left out."""
    cache = cache_dir()
    key = hashlib.sha256(json.dumps([list(args), DEBIAN_MIRROR]).encode()).hexdigest()
    tarball = cache / f"{name}-{key[:16]}.tar"
    if tarball.exists():
        return tarball
    _need(shutil.which("debootstrap") is not None, "debootstrap is not installed")
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=cache))
    try:
        rootfs = work / "rootfs"
        proc = subprocess.run(["debootstrap", *args, str(rootfs), DEBIAN_MIRROR],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            pytest.fail(f"debootstrap failed (exit {proc.returncode}; it needs {DEBIAN_MIRROR}):"
                        f"\n{(proc.stdout + proc.stderr)[-4000:]}", pytrace=False)
        for leftovers in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / leftovers).glob("*"):
                if path.is_file():
                    path.unlink()
        partial = work / "rootfs.tar"
        subprocess.run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."],
                       check=True, capture_output=True)
        os.replace(partial, tarball)  # atomic: a tarball in the cache is always whole
    finally:
        _remove_tree(work)
    return tarball


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
