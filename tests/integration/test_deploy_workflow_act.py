"""deploy.yml run by act on this host, called from a consumer repository as
docs/release-train.md shows, with the real gha-mlops CLI (installed by the setup action from
this checkout). Not a rollout (the rollout's own tests run it on a real dockerd): what only the
workflow does. The checkout with the tags, the image notes fetched from a remote that has none,
the SSH key loaded into an agent of the job from the environment's secrets and the agent
stopped again, the action's command line reaching `gha-mlops deploy`, and a deploy to an
environment mlops.yaml lacks failing the job with exit 2 and an annotation naming it, before
any GitHub Deployment or host is touched; a key without known hosts is refused before the
deploy. Third-party actions are the stand-ins of tests/standins."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration._act import (
    SELF_REF,
    SELF_REPOSITORY,
    Act,
    ActResult,
    commit_snapshot,
    self_snapshot,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
CONSUMER = "octo-org/line-model"

CONFIG = """
registry:
  stages: [dev, staging, prod]
  models:
    line:
      path: models/line.json
deploy:
  model: line
  environments:
    staging:
      stage: staging
      hosts:
        - docker: unix:///nonexistent/docker.sock
      port: 18080
"""

CALLER = """\
name: deploy
on:
  workflow_dispatch:
permissions: {}
jobs:
  deploy:
    uses: gha-mlops/gha-mlops/.github/workflows/deploy.yml@%(ref)s
    permissions:
      contents: write
      deployments: write
    with:
      environment: production
      model: line
      version: 1.0.0
      runs-on: '["self-hosted"]'
      extras: github
    secrets:
      DEPLOY_SSH_KEY: ${{ secrets.DEPLOY_SSH_KEY }}
      DEPLOY_SSH_KNOWN_HOSTS: ${{ secrets.DEPLOY_SSH_KNOWN_HOSTS }}
  check:
    needs: deploy
    runs-on: ubuntu-latest
    permissions: {}
    steps:
      - run: touch "$ACT_HARNESS_OUT/check-ran"
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Act, Path, dict[str, str], Path]:
    """The consumer (examples/tiny with registry: and deploy: sections and the caller), its
    remote (a bare repository git's insteadOf puts at https://github.com/<owner>/<repo>), the
    environment that redirects the steps' git there, and one Act whose runs share the venv."""
    tmp = tmp_path_factory.mktemp("deploy-act")
    gha = self_snapshot(REPO, tmp / "gha")
    consumer = tmp / "consumer"
    shutil.copytree(REPO / "examples/tiny", consumer,
                    ignore=shutil.ignore_patterns(".gha-mlops"))
    config = consumer / "mlops.yaml"
    config.write_text(config.read_text() + CONFIG)
    (consumer / ".github/workflows").mkdir(parents=True)
    (consumer / ".github/workflows/deploy.yml").write_text(CALLER % {"ref": SELF_REF})
    commit_snapshot(consumer)
    server = tmp / "server"
    remote = server / CONSUMER
    remote.parent.mkdir(parents=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(consumer), str(remote)], check=True)
    redirect = {"GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": f"url.{server.as_uri()}/.insteadOf",
                "GIT_CONFIG_VALUE_0": "https://github.com/"}
    act = Act(tmp / "act", consumer, repository=CONSUMER, repos={SELF_REPOSITORY: gha})
    return act, consumer, redirect, tmp


def _key(tmp: Path) -> str:
    key = tmp / "id_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deploy",
                        "-f", str(key)], check=True)
    return key.read_text()


def _run(setup: tuple[Act, Path, dict[str, str], Path], secrets: dict[str, str],
         home: Path) -> ActResult:
    act, consumer, redirect, _ = setup
    home.mkdir(parents=True, exist_ok=True)
    # HOME of the steps: the job's known_hosts lands here, not in this machine's ~/.ssh.
    return act.run(consumer / ".github/workflows/deploy.yml", "workflow_dispatch",
                   payload={"inputs": {}}, env={**redirect, "HOME": str(home)},
                   secrets={"GITHUB_TOKEN": "ghs_standin", **secrets}, timeout=840)


def _agents() -> set[int]:
    found = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"ssh-agent") and any(b"gha-mlops-ssh-agent" in a
                                                          for a in argv):
            found.add(int(cmdline.parent.name))
    return found


def test_a_deploy_to_an_unknown_environment_fails_with_exit_2_and_stops_the_agent(
        setup: tuple[Act, Path, dict[str, str], Path]) -> None:
    tmp = setup[3]
    before = _agents()
    known = "10.0.1.11 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ"
    result = _run(setup, {"DEPLOY_SSH_KEY": _key(tmp),
                          "DEPLOY_SSH_KNOWN_HOSTS": known}, tmp / "home-1")
    assert not result.ok
    steps = result.step_results("deploy")
    assert steps.get("ssh") == "success", (steps, result.log[-8000:])
    assert steps.get("deploy") == "failure", steps
    log = result.log
    errors = [line for line in log.splitlines() if "::error" in line]
    assert any("production" in line for line in errors), log[-8000:]
    assert "exit status 2" in log, log[-8000:]
    assert "Traceback" not in log
    # The agent was started for the job and stopped by the always() step; the host key was
    # written to the job's HOME, once.
    assert _agents() == before
    assert (tmp / "home-1/.ssh/known_hosts").read_text() == known + "\n"
    assert not (result.out_dir / "check-ran").exists()


def test_a_key_without_known_hosts_is_refused_before_the_deploy(
        setup: tuple[Act, Path, dict[str, str], Path]) -> None:
    tmp = setup[3]
    result = _run(setup, {"DEPLOY_SSH_KEY": _key(tmp)}, tmp / "home-2")
    assert not result.ok
    steps = result.step_results("deploy")
    assert steps.get("ssh") == "failure", steps
    # The deploy step never ran (act still runs its Post stage, which does nothing).
    assert "Run Main gha-mlops/gha-mlops/actions/deploy" not in result.log
    assert "no environment 'production'" not in result.log
    assert "DEPLOY_SSH_KNOWN_HOSTS is empty" in result.log
    assert "KEY-----" not in result.log.replace("***", "")  # the key is never printed
    assert os.path.exists(tmp / "home-2") and not (tmp / "home-2/.ssh").exists()
