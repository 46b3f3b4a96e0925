"""release.yml run end to end by act on this host, called from a consumer repository the way
docs/release.md shows: pipeline.yml trains and uploads the run, release.yml downloads it,
registers the model (an annotated tag in GTO's grammar), pushes the tag to the repository's
remote (a bare repository that git's ``url.<base>.insteadOf`` puts in the place of
``https://github.com/<owner>/<repo>``, the origin the checkout sets) and promotes the version to
a stage. Without packaging first (no Docker needed); then the whole release: the image built by
a real dockerd, pushed to a real OCI registry on loopback (Debian's docker-registry), attested,
its digest noted on the version and the note pushed, so a fresh clone's `model show` names it.
Third-party actions are the stand-ins of tests/standins."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import git
from tests.integration._act import (
    SELF_REF,
    SELF_REPOSITORY,
    Act,
    ActResult,
    commit_snapshot,
    self_snapshot,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
pytest_plugins = ["tests.integration.docker_fixtures", "tests.integration.registry_fixtures",
                  "tests.integration.serving_fixtures"]

REPO = Path(__file__).resolve().parents[2]
SELF = SELF_REPOSITORY
REF = SELF_REF
CONSUMER = "octo-org/line-model"

REGISTRY = """
registry:
  stages: [dev, staging, prod]
  models:
    line:
      path: models/line.json
      description: the line fitted to data/points.csv
"""

CALLER = """\
name: release
on:
  workflow_dispatch:
permissions: {}
jobs:
  train:
    permissions:
      contents: read
    uses: gha-mlops/gha-mlops/.github/workflows/pipeline.yml@%(ref)s
  release:
    needs: train
    permissions:
      contents: write
      packages: write
      id-token: write
      attestations: write
      actions: read
    uses: gha-mlops/gha-mlops/.github/workflows/release.yml@%(ref)s
    with:
      model: %(model)s
      run: ${{ needs.train.outputs.run-id }}
      stage: staging
      package: false
      extras: ""
  check:
    needs: [train, release]
    runs-on: ubuntu-latest
    permissions: {}
    steps:
      - env:
          RUN_ID: ${{ needs.train.outputs.run-id }}
          VERSION: ${{ needs.release.outputs.version }}
          TAG: ${{ needs.release.outputs.tag }}
        run: |
          printf '%%s' "$RUN_ID" > "$ACT_HARNESS_OUT/run-id"
          printf '%%s' "$VERSION" > "$ACT_HARNESS_OUT/version"
          printf '%%s' "$TAG" > "$ACT_HARNESS_OUT/tag"
"""


_commit = commit_snapshot


@pytest.fixture(scope="module")
def gha_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout as a repository of its own, `$/` resolved as the runner resolves it."""
    return self_snapshot(REPO, tmp_path_factory.mktemp("gha"))


def _consumer(tmp: Path, model: str = "line") -> tuple[Path, Path, dict[str, str]]:
    """examples/tiny with a registry section and the caller workflow; its remote, a bare
    repository at ``<server>/<owner>/<repo>``; and the environment (git configuration) that
    sends the steps' git from github.com to that server."""
    repo = tmp / "consumer"
    shutil.copytree(REPO / "examples/tiny", repo, ignore=shutil.ignore_patterns(".gha-mlops"))
    config = repo / "mlops.yaml"
    config.write_text(config.read_text() + REGISTRY)
    (repo / ".github/workflows").mkdir(parents=True)
    (repo / ".github/workflows/release.yml").write_text(CALLER % {"ref": REF, "model": model})
    _commit(repo)
    server = tmp / "server"
    remote = server / CONSUMER
    remote.parent.mkdir(parents=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(remote)], check=True)
    redirect = {"GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": f"url.{server.as_uri()}/.insteadOf",
                "GIT_CONFIG_VALUE_0": "https://github.com/"}
    return repo, remote, redirect


@pytest.fixture(scope="module")
def released(gha_repo: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[ActResult, Path, Path]:
    tmp = tmp_path_factory.mktemp("release")
    consumer, remote, redirect = _consumer(tmp)
    act = Act(tmp / "act", consumer, repository=CONSUMER, repos={SELF: gha_repo})
    result = act.run(consumer / ".github/workflows/release.yml", "workflow_dispatch",
                     payload={"inputs": {}}, env=redirect,
                     secrets={"GITHUB_TOKEN": "ghs_standin"}, timeout=840)
    return result, consumer, remote


def test_the_release_registers_the_run_and_pushes_the_version_tag(
        released: tuple[ActResult, Path, Path]) -> None:
    result, consumer, remote = released
    assert result.ok, result.log[-12000:]
    run_id = (result.out_dir / "run-id").read_text()
    assert (result.out_dir / "version").read_text() == "1.0.0"
    assert (result.out_dir / "tag").read_text() == "line@v1.0.0"
    # Annotated, on the remote, carrying the lineage of the run the pipeline job uploaded.
    assert git(remote, "cat-file", "-t", "line@v1.0.0").strip() == "tag"
    message = git(remote, "tag", "-l", "--format=%(contents)", "line@v1.0.0")
    assert run_id and run_id in message
    # The consumer's own repository (what the checkout read) got nothing pushed into it.
    assert git(consumer, "tag", "-l").strip() == ""


def test_the_release_promotes_the_version_to_the_stage(
        released: tuple[ActResult, Path, Path]) -> None:
    result, _, remote = released
    assert result.ok, result.log[-12000:]
    stage_tags = git(remote, "tag", "-l", "line#staging#*").split()
    assert stage_tags == ["line#staging#1"]
    assert (git(remote, "rev-parse", "line#staging#1^{commit}")
            == git(remote, "rev-parse", "line@v1.0.0^{commit}"))


def test_without_packaging_no_registry_is_logged_in_to_nor_anything_attested(
        released: tuple[ActResult, Path, Path]) -> None:
    result, _, _ = released
    assert result.ok, result.log[-12000:]
    assert not (result.out_dir / "docker-login.jsonl").exists()
    assert not (result.out_dir / "attest-build-provenance.jsonl").exists()


def test_a_model_not_in_mlops_yaml_fails_the_release_with_an_annotation_and_pushes_nothing(
        gha_repo: Path, tmp_path: Path) -> None:
    consumer, remote, redirect = _consumer(tmp_path, model="no-such-model")
    act = Act(tmp_path / "act", consumer, repository=CONSUMER, repos={SELF: gha_repo})
    result = act.run(consumer / ".github/workflows/release.yml", "workflow_dispatch",
                     payload={"inputs": {}}, env=redirect,
                     secrets={"GITHUB_TOKEN": "ghs_standin"}, timeout=840)
    assert not result.ok
    errors = [line for line in result.log.splitlines() if "::error" in line]
    assert any("no-such-model" in line for line in errors), result.log[-8000:]
    assert "Traceback" not in result.log
    assert git(remote, "tag", "-l").strip() == ""
    assert not (result.out_dir / "version").exists()  # the check job never ran


def test_the_caller_in_the_docs_is_the_one_tested() -> None:
    """docs/release.md shows this test's caller (less what only a test needs)."""
    doc = (REPO / "docs/release.md").read_text()
    assert "uses: <owner>/gha-mlops/.github/workflows/release.yml@v1" in doc
    for line in ("needs: train", "run: ${{ needs.train.outputs.run-id }}", "stage: staging",
                 "id-token: write", "attestations: write", "packages: write"):
        assert line in doc, line


# ---------------------------------------------------------------------------------------------
# The whole release: the image built by a real dockerd, pushed to a real OCI registry on
# loopback, attested (stand-in), its digest noted on the version and the note pushed.

IMAGE_CALLER = """\
name: release
on:
  workflow_dispatch:
permissions: {}
jobs:
  train:
    permissions:
      contents: read
    uses: gha-mlops/gha-mlops/.github/workflows/pipeline.yml@%(ref)s
    with:
      extras: package
  release:
    needs: train
    permissions:
      contents: write
      packages: write
      id-token: write
      attestations: write
      actions: read
    uses: gha-mlops/gha-mlops/.github/workflows/release.yml@%(ref)s
    with:
      model: tiny
      run: ${{ needs.train.outputs.run-id }}
      registry: %(registry)s/Octo-Org
      base-image: %(base)s
      stage: prod
  check:
    needs: [train, release]
    runs-on: ubuntu-latest
    permissions: {}
    steps:
      - env:
          RUN_ID: ${{ needs.train.outputs.run-id }}
          VERSION: ${{ needs.release.outputs.version }}
          IMAGE: ${{ needs.release.outputs.image }}
          DIGEST: ${{ needs.release.outputs.digest }}
        run: |
          printf '%%s' "$RUN_ID" > "$ACT_HARNESS_OUT/run-id"
          printf '%%s' "$VERSION" > "$ACT_HARNESS_OUT/version"
          printf '%%s' "$IMAGE" > "$ACT_HARNESS_OUT/image"
          printf '%%s' "$DIGEST" > "$ACT_HARNESS_OUT/digest"
"""

TINY_MLOPS = """\
model: models/model.onnx
stages:
  train:
    cmd: python src/train.py
    deps: [src/train.py, src/model.onnx]
    outs: [models/model.onnx, checks]
    metrics: [metrics/train.json]
registry:
  stages: [dev, staging, prod]
  models:
    tiny:
      path: models/model.onnx
      check_data: checks/x.npy
"""

TINY_TRAIN = """\
\"\"\"Stands in for training: the model is the committed ONNX file.\"\"\"
import json
import shutil
from pathlib import Path

import numpy as np

Path("models").mkdir(exist_ok=True)
Path("metrics").mkdir(exist_ok=True)
Path("checks").mkdir(exist_ok=True)
shutil.copyfile("src/model.onnx", "models/model.onnx")
# The evaluation data: golden requests and the reference profile are made of it.
np.save("checks/x.npy", np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32))
Path("metrics/train.json").write_text(json.dumps({"accuracy": 0.9}))
"""


def _image_consumer(tmp: Path, registry: str, base: str) -> tuple[Path, Path, dict[str, str]]:
    from tests.integration.package_helpers import tiny_onnx

    repo = tmp / "consumer"
    (repo / "src").mkdir(parents=True)
    tiny_onnx(repo / "src/model.onnx")
    (repo / "src/train.py").write_text(TINY_TRAIN)
    (repo / "mlops.yaml").write_text(TINY_MLOPS)
    (repo / ".gitignore").write_text(".gha-mlops/\n/models/\n/metrics/\n/checks/\n")
    (repo / ".github/workflows").mkdir(parents=True)
    (repo / ".github/workflows/release.yml").write_text(
        IMAGE_CALLER % {"ref": REF, "registry": registry, "base": base})
    _commit(repo)
    server = tmp / "server"
    remote = server / CONSUMER
    remote.parent.mkdir(parents=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(remote)], check=True)
    redirect = {"GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": f"url.{server.as_uri()}/.insteadOf",
                "GIT_CONFIG_VALUE_0": "https://github.com/"}
    return repo, remote, redirect


@pytest.fixture(scope="module")
def image_release(gha_repo: Path, tmp_path_factory: pytest.TempPathFactory,
                  dockerd: Any, serving_base: str, wheel_cache: Path, oci_registry: Any
                  ) -> tuple[ActResult, Path]:
    tmp = tmp_path_factory.mktemp("image-release")
    consumer, remote, env = _image_consumer(tmp, oci_registry.host, serving_base)
    # `gha-mlops package` keeps the wheels for the image's Python under
    # $XDG_CACHE_HOME/gha-mlops/wheels: the packaging tests' cache, shared.
    xdg = tmp / "xdg"
    (xdg / "gha-mlops").mkdir(parents=True)
    (xdg / "gha-mlops/wheels").symlink_to(wheel_cache)
    env = {**env, "DOCKER_HOST": dockerd.base_url, "XDG_CACHE_HOME": str(xdg)}
    act = Act(tmp / "act", consumer, repository=CONSUMER, repos={SELF: gha_repo})
    result = act.run(consumer / ".github/workflows/release.yml", "workflow_dispatch",
                     payload={"inputs": {}}, env=env,
                     secrets={"GITHUB_TOKEN": "ghs_standin"}, timeout=840)
    return result, remote


def test_the_release_pushes_the_image_and_attests_the_pushed_digest(
        image_release: tuple[ActResult, Path], oci_registry: Any) -> None:
    result, _ = image_release
    assert result.ok, result.log[-12000:]
    host = oci_registry.host
    assert (result.out_dir / "version").read_text() == "1.0.0"
    # Lowercased: registries take lowercase repository names only.
    assert (result.out_dir / "image").read_text() == f"{host}/octo-org/tiny:1.0.0"
    digest = (result.out_dir / "digest").read_text()
    assert digest == oci_registry.manifest_digest("octo-org/tiny", "1.0.0")
    [login] = [json.loads(x) for x in (result.out_dir / "docker-login.jsonl").read_text()
               .splitlines()]
    assert login["registry"] == host
    [attest] = [json.loads(x) for x in (result.out_dir / "attest-build-provenance.jsonl")
                .read_text().splitlines()]
    assert attest["subject-name"] == f"{host}/octo-org/tiny"
    assert attest["subject-digest"] == digest
    assert attest["push-to-registry"] is True


def test_the_image_digest_reaches_the_remote_as_a_note_and_the_stage_tag_follows(
        image_release: tuple[ActResult, Path], tmp_path: Path) -> None:
    result, remote = image_release
    assert result.ok, result.log[-12000:]
    digest = (result.out_dir / "digest").read_text()
    assert git(remote, "tag", "-l", "tiny#prod#*").split() == ["tiny#prod#1"]
    # A fresh clone that fetches the notes sees the image in the version's lineage.
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(remote), str(clone)], check=True)
    git(clone, "fetch", "-q", "origin", "refs/notes/*:refs/notes/*")
    shown = subprocess.run([sys.executable, "-m", "gha_mlops", "model", "show", "tiny@1.0.0",
                            "--json"], cwd=clone, capture_output=True, text=True, check=True)
    images = json.loads(shown.stdout)["lineage"]["images"]
    assert [i["digest"] for i in images] == [digest], images
    # And the reference profile of its check data: monitoring finds it in the clone.
    assert json.loads(shown.stdout)["lineage"]["profile"]["rows"] == 64
    from gha_mlops.monitor.reference import load_reference
    from gha_mlops.registry import open_registry

    profile = load_reference(clone, open_registry(clone).resolve("tiny@1.0.0"))
    assert [f.name for f in profile.features] == [f"input[{i}]" for i in range(4)]
