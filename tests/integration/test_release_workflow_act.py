"""release.yml run end to end by act on this host, called from a consumer repository the way
docs/release.md shows: pipeline.yml trains and uploads the run, release.yml downloads it,
registers the model (an annotated tag in GTO's grammar), pushes the tag to the repository's
remote (a bare repository that git's ``url.<base>.insteadOf`` puts in the place of
``https://github.com/<owner>/<repo>``, the origin the checkout sets) and promotes the version to
a stage. Third-party actions are the stand-ins of tests/standins."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import git
from tests.integration._act import Act, ActResult, resolve_self_references, snapshot_repo

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
SELF = "gha-mlops/gha-mlops"
REF = "0123456789abcdef0123456789abcdef01234567"
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
      model: line
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


def _commit(repo: Path) -> None:
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "snapshot")


@pytest.fixture(scope="module")
def gha_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout as a repository of its own, `$/` resolved as the runner resolves it."""
    dest = snapshot_repo(REPO, tmp_path_factory.mktemp("gha") / "gha-mlops")
    resolve_self_references(dest, SELF, REF)
    _commit(dest)
    return dest


def _consumer(tmp: Path) -> tuple[Path, Path, dict[str, str]]:
    """examples/tiny with a registry section and the caller workflow; its remote, a bare
    repository at ``<server>/<owner>/<repo>``; and the environment (git configuration) that
    sends the steps' git from github.com to that server."""
    repo = tmp / "consumer"
    shutil.copytree(REPO / "examples/tiny", repo, ignore=shutil.ignore_patterns(".gha-mlops"))
    config = repo / "mlops.yaml"
    config.write_text(config.read_text() + REGISTRY)
    (repo / ".github/workflows").mkdir(parents=True)
    (repo / ".github/workflows/release.yml").write_text(CALLER % {"ref": REF})
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


def test_the_caller_in_the_docs_is_the_one_tested() -> None:
    """docs/release.md shows this test's caller (less what only a test needs)."""
    doc = (REPO / "docs/release.md").read_text()
    assert "uses: <owner>/gha-mlops/.github/workflows/release.yml@v1" in doc
    for line in ("needs: train", "run: ${{ needs.train.outputs.run-id }}", "stage: staging",
                 "id-token: write", "attestations: write", "packages: write"):
        assert line in doc, line
