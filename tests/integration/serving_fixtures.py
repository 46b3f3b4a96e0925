"""What the packaging tests and benchmark build serving images from:

- ``serving_base``: a slimmer base than docker_fixtures' ``base_image`` (Docker Hub cannot be
  reached here, so no ``python:3.11-slim``): the same cached debootstrap rootfs, filtered
  (docs, man pages, locales, apt lists and the Python stdlib's test suite, idlelib, tkinter,
  ensurepip, lib2to3 dropped) and imported as ``gha-mlops-test/serving-base:bookworm``;
- ``wheel_cache``: where the wheels for the image's Python are kept between sessions (the
  first session downloads them with pip, as ``gha-mlops package`` does);

(``tests.integration.package_helpers`` has the tiny ONNX model the tests serve.)

    pytest_plugins = ["tests.integration.docker_fixtures", "tests.integration.serving_fixtures"]
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

import pytest

from tests.integration.docker_fixtures import Dockerd, _rootfs_tarball

SERVING_BASE = "gha-mlops-test/serving-base:bookworm"
_DROPPED = (
    "usr/share/doc/", "usr/share/man/", "usr/share/info/", "usr/share/locale/",
    "usr/share/lintian/", "var/cache/apt/", "var/lib/apt/lists/", "var/log/",
    "usr/lib/python3.11/test/", "usr/lib/python3.11/idlelib/", "usr/lib/python3.11/tkinter/",
    "usr/lib/python3.11/ensurepip/", "usr/lib/python3.11/lib2to3/",
    "usr/lib/python3.11/turtledemo/", "usr/lib/python3.11/pydoc_data/",
)
_FILTER_VERSION = "1"


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gha-mlops-tests"


def _dropped(name: str) -> bool:
    path = name[2:] if name.startswith("./") else name
    return any(path.startswith(prefix) or path + "/" == prefix for prefix in _DROPPED)


def slim_rootfs() -> Path:
    """The debootstrap rootfs tarball, filtered (see the module docstring); cached."""
    source = _rootfs_tarball()
    key = hashlib.sha256(f"{source.name}:{_FILTER_VERSION}:{_DROPPED}".encode()).hexdigest()
    slim = source.with_name(f"serving-rootfs-{key[:16]}.tar")
    if slim.exists():
        return slim
    partial = slim.with_suffix(f".{os.getpid()}.partial")
    with tarfile.open(source) as src, tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as dst:
        for member in src:
            if _dropped(member.name):
                continue
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    os.replace(partial, slim)
    return slim


def import_serving_base(dockerd: Dockerd) -> str:
    api = dockerd.client().api
    repository, tag = SERVING_BASE.split(":")
    api.import_image_from_file(str(slim_rootfs()), repository=repository, tag=tag)
    return SERVING_BASE


@pytest.fixture(scope="session")
def serving_base(dockerd: Dockerd) -> str:
    """``gha-mlops-test/serving-base:bookworm`` on the test daemon."""
    return import_serving_base(dockerd)


@pytest.fixture(scope="session")
def wheel_cache() -> Path:
    path = cache_dir() / "serving-wheels"
    path.mkdir(parents=True, exist_ok=True)
    return path
