"""`gha-mlops runners check`: a configuration said in lines without a secret in them; with a
live check, GitHub and each backend asked through their ports (fakes here), and what fails
named with its exit code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gha_mlops.github.port import GitHubError
from gha_mlops.runners.backends.base import Health
from gha_mlops.runners.check import check
from gha_mlops.runners.config import load_config
from gha_mlops.testing.fake_runners import FakeBackend, FakeRunnersGitHub
from tests.unit.test_runners_config import ENV, GOOD, PEM, write


class _Down(FakeBackend):
    def health(self) -> Health:
        return Health(False, "Docker is not reachable at unix:///nope.sock")


def test_the_configuration_in_lines_without_its_secrets(tmp_path: Path) -> None:
    report = check(load_config(write(tmp_path, GOOD), ENV))
    text = "\n".join(report.lines)
    assert report.ok
    assert "autoscaler 'box-1' for org octo (repositories octo/ml, octo/vision)" in text
    assert "GitHub App 42 (installation 7)" in text
    assert ("  pool a100: labels a100, gpu, linux, self-hosted, x64; docker "
            "ghcr.io/octo/runner:2.330.0; max 4; min_idle 1; 1 GPU(s) each; 8 CPUs; 32768 MiB; "
            "idle 600 s, lifetime 21600 s") in report.lines
    assert ENV["HOOK_SECRET"] not in text and "BEGIN RSA" not in text and PEM not in text


def test_a_live_check_asks_github_and_the_backends(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD), ENV)
    report = check(cfg, github=FakeRunnersGitHub(), backends={"docker": FakeBackend(gpus=4)})
    assert report.ok
    assert "  GitHub: answers; 0 self-hosted runner(s) registered in org octo" in report.lines
    assert "  backend docker: answers (ok; 4 gpus free)" in report.lines

    github = FakeRunnersGitHub()
    github.faults.add("list_runners", GitHubError("GitHub refused: 403 Resource not accessible",
                                                  status=403))
    report = check(cfg, github=github, backends={"docker": _Down()})
    assert not report.ok and report.github_problem is not None
    assert report.backend_problems == {"docker": "Docker is not reachable at unix:///nope.sock"}
    assert any(line.startswith("  GitHub: FAILED") for line in report.lines)


def test_the_command_names_a_mistake_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("    max: 4\n", "    max: -4\n"))
    proc = subprocess.run([sys.executable, "-m", "gha_mlops", "runners", "check", "-c",
                           str(path)], capture_output=True, text=True, env={**ENV, "PATH": ""},
                          check=False)
    assert proc.returncode == 2, proc.stderr
    assert "runners.yaml:" in proc.stderr and "max" in proc.stderr
    good = subprocess.run([sys.executable, "-m", "gha_mlops", "runners", "check", "-c",
                           str(write(tmp_path, GOOD))], capture_output=True, text=True,
                          env={**ENV, "PATH": ""}, check=False)
    assert good.returncode == 0, good.stderr
    assert "pool cpu: labels" in good.stdout


class _Verifying(FakeBackend):
    """A cloud backend's deeper live check (what the EC2 backend's verify() returns)."""

    def verify(self) -> list[tuple[bool, str]]:
        return [(True, "credentials: account 123456789012"),
                (False, "pool cloud: ec2.subnets[1] subnet-1a2b3c4d: not found")]


def test_cloud_pools_and_hosts_are_described_and_verified(tmp_path: Path) -> None:
    from tests.unit.test_runners_config_cloud import CLOUD, CLOUD_ENV

    cfg = load_config(write(tmp_path, CLOUD), CLOUD_ENV)
    report = check(cfg)
    text = "\n".join(report.lines)
    assert ("  docker: 2 hosts, placement pack: box-a unix:///run/a.sock (2 GPU(s)); box-b "
            "ssh://ml@box-b (4 GPU(s))") in report.lines
    assert ("  ec2: region eu-west-1; JIT configs under /gha-mlops/box-1/; interruption queue "
            "gha-mlops-spot") in report.lines
    assert ("ec2 spot (price-capacity-optimized) over g5.xlarge, g6.xlarge, g4dn.xlarge x 2 "
            "subnet(s), resolve:ssm:/gha-mlops/runner-ami, expiry lifetime + 3600 s;") in text
    on_demand = CLOUD.replace("capacity: spot", "capacity: spot-then-on-demand\n      "
                              "rerun_on_demand: true")
    text = "\n".join(check(load_config(write(tmp_path, on_demand), CLOUD_ENV)).lines)
    assert "expiry lifetime + 3600 s, interrupted jobs' replacements on-demand;" in text
    live = check(cfg, github=FakeRunnersGitHub(), backends={"ec2": _Verifying()})
    assert "  backend ec2: ok: credentials: account 123456789012" in live.lines
    assert "  backend ec2: FAILED: pool cloud: ec2.subnets[1] subnet-1a2b3c4d: not found" \
        in live.lines
    assert live.backend_problems == {"ec2": "pool cloud: ec2.subnets[1] subnet-1a2b3c4d: "
                                     "not found"}
