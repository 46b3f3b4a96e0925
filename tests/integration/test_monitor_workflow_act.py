"""monitor.yml run by act on this host, called from a consumer repository as monitor.yml's
header shows (a dispatch stands in for the schedule), with the real gha-mlops CLI installed by
the setup action from this checkout and the GitHub emulator as the API. The prediction log is
a folder on the runner, with a window that drifted from the reference profile: the first run
trips the alarm, opens the model's drift issue and dispatches its retraining workflow, and
sets the step and job outputs; the alarm state it left beside the log is what the second run
starts from, so the second run updates the same issue and dispatches nothing. The report is
uploaded as an artifact. Third-party actions are the stand-ins of tests/standins."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from gha_mlops.monitor.features import tensor_columns
from gha_mlops.monitor.predlog_writer import BatchWriter
from gha_mlops.monitor.profile import build_profile, dump_profile
from gha_mlops.testing.github_emulator import GitHubEmulator
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
CONSUMER = "octo-org/digits"
SCHEMA = {"inputs": {"x": ["FP64", [-1, 2]]}, "outputs": {"y": ["INT64", [-1]]}}

CONFIG = """
registry:
  stages: [dev, prod]
  models:
    digits:
      path: models/line.json
monitor:
  models:
    digits:
      log: %(log)s
      window: 1h
      alarm: {high: 0.5, low: 0.3, k: 1, n: 1, m: 1, cooldown: 7d, min_samples: 100}
      retrain: {workflow: retrain.yml, ref: main, reason_input: reason}
"""

CALLER = """\
name: monitor
on:
  workflow_dispatch:
permissions: {}
jobs:
  monitor:
    uses: gha-mlops/gha-mlops/.github/workflows/monitor.yml@%(ref)s
    permissions:
      contents: read
      issues: write
      actions: write
    with:
      model: digits
      version: 1.0.0
      profile: profile.json
      runs-on: '["self-hosted"]'
  after:
    needs: monitor
    runs-on: ubuntu-latest
    permissions: {}
    steps:
      - env:
          STATUS: ${{ needs.monitor.outputs.status }}
          TRIPPED: ${{ needs.monitor.outputs.tripped }}
          DISPATCH: ${{ needs.monitor.outputs.dispatch }}
          VERDICT: ${{ needs.monitor.outputs.verdict }}
        run: |
          printf '%%s\\n' "$STATUS" "$TRIPPED" "$DISPATCH" > "$ACT_HARNESS_OUT/outputs"
          printf '%%s' "$VERDICT" > "$ACT_HARNESS_OUT/verdict.json"
"""


def _profile() -> bytes:
    rng = np.random.default_rng(7)
    x = rng.normal(0.0, 1.0, size=(2000, 2))
    return dump_profile(build_profile(tensor_columns({"x": x}),
                                      predictions=tensor_columns({"y": (x[:, 0] > 0) * 1})))


def _log(root: Path, now: float) -> None:
    """A window that drifted: both features moved by three standard deviations."""
    rng = np.random.default_rng(8)
    x = rng.normal(3.0, 1.0, size=(400, 2))
    with BatchWriter(root, "digits", "1.0.0", SCHEMA) as w:
        for i in range(400):
            w.add(f"req-{i}", {"x": x[i]}, {"y": int(x[i, 0] > 0)}, now - 1800 + 4 * i)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Act, Path, dict[str, str], Path]:
    """The consumer (examples/tiny with registry: and monitor: sections, the reference
    profile and the caller), its remote (a bare repository git's insteadOf puts at
    https://github.com/<owner>/<repo>), the environment that redirects the steps' git there,
    the log folder on the runner, and one Act whose runs share the venv."""
    tmp = tmp_path_factory.mktemp("monitor-act")
    gha = self_snapshot(REPO, tmp / "gha")
    logs = tmp / "logs"
    _log(logs, time.time())
    consumer = tmp / "consumer"
    shutil.copytree(REPO / "examples/tiny", consumer,
                    ignore=shutil.ignore_patterns(".gha-mlops"))
    config = consumer / "mlops.yaml"
    config.write_text(config.read_text() + CONFIG % {"log": logs})
    (consumer / "profile.json").write_bytes(_profile())
    (consumer / ".github/workflows").mkdir(parents=True)
    (consumer / ".github/workflows/monitor.yml").write_text(CALLER % {"ref": SELF_REF})
    commit_snapshot(consumer)
    server = tmp / "server"
    remote = server / CONSUMER
    remote.parent.mkdir(parents=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(consumer), str(remote)], check=True)
    redirect = {"GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": f"url.{server.as_uri()}/.insteadOf",
                "GIT_CONFIG_VALUE_0": "https://github.com/"}
    act = Act(tmp / "act", consumer, repository=CONSUMER, repos={SELF_REPOSITORY: gha})
    return act, consumer, redirect, logs


def _run(setup: tuple[Act, Path, dict[str, str], Path], gh: GitHubEmulator) -> ActResult:
    act, consumer, redirect, _ = setup
    return act.run(consumer / ".github/workflows/monitor.yml", "workflow_dispatch",
                   payload={"inputs": {}}, secrets={"GITHUB_TOKEN": gh.token},
                   env={**redirect, "GITHUB_API_URL": gh.url}, timeout=840)


def test_a_drifted_window_opens_one_issue_and_one_dispatch_and_the_state_lasts(
        setup: tuple[Act, Path, dict[str, str], Path]) -> None:
    logs = setup[3]
    state = logs / "digits/monitor/alarm.json"
    with GitHubEmulator() as gh:
        repo = gh.create_repo(CONSUMER)
        repo.commit({"README.md": "# digits\n"})
        repo.add_workflow("retrain.yml", inputs={"reason": {"required": False}})
        first = _run(setup, gh)
        saved = state.read_bytes() if state.exists() else b""
        issues_after_first = [(i.number, i.state) for i in gh.issues(CONSUMER)]
        second = _run(setup, gh)
        issues = gh.issues(CONSUMER)
        dispatches = gh.dispatches(CONSUMER)
        violations = gh.take_violations()
    assert first.ok, first.log[-12000:]
    assert second.ok, second.log[-12000:]
    assert violations == []
    # The step outputs of the action, and the job outputs through the reusable workflow.
    assert first.output("monitor", "check", "status") == "drift"
    assert first.output("monitor", "check", "tripped") == "true"
    assert first.output("monitor", "check", "dispatch") == "true"
    assert (first.out_dir / "outputs").read_text().split() == ["drift", "true", "true"]
    verdict = json.loads((first.out_dir / "verdict.json").read_text())
    assert verdict["model"] == "digits" and verdict["rows"] == 400
    # One issue, opened by the first run and updated (not duplicated) by the second; one
    # dispatch of the retraining workflow, with the reason.
    assert len(issues_after_first) == 1 and issues_after_first[0][1] == "open"
    [issue] = issues
    assert issue.number == issues_after_first[0][0] and issue.state == "open"
    [dispatch] = dispatches
    assert dispatch.path == ".github/workflows/retrain.yml" and dispatch.ref == "main"
    assert "digits" in dispatch.inputs["reason"]
    # The alarm state was written beside the log by the first run and read by the second,
    # which found the dispatch recorded and did not dispatch again.
    assert saved and json.loads(saved)
    assert second.output("monitor", "check", "dispatch") == "false"
    assert second.output("monitor", "check", "tripped") == "true"
    assert state.read_bytes() != saved
    # The report went up as an artifact, whatever the verdict.
    assert (first.artifact("gha-mlops-monitor-digits") / "report.md").is_file()
    assert "Traceback" not in first.log + second.log
