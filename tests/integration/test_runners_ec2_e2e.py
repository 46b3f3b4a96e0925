"""EC2 runners end to end, for real where it can be: a moto server (EC2, SSM, SQS) behind the
fault proxy, the GitHub emulator, the instance harness (tests/integration/ec2_instances.py:
an IMDSv2 stand-in and the real ``gha-mlops runners agent`` per instance, running the
runner stand-in that registers with the emulator) and the real ``gha-mlops runners serve``
process with a ``backend: ec2`` pool.

Every service test ends with the claims that matter: every job served, no instance running
that no job needs, no SSM parameter left, no job queued, no registration left.
"""

from __future__ import annotations

import json
import secrets
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gha_mlops.runners.backends.base import LABEL_OWNER, LABEL_POOL, LABEL_RUNNER
from gha_mlops.runners.backends.ec2_clients import TAG_INTERRUPTION, TAG_PARAMETER
from gha_mlops.testing.github_emulator import GitHubEmulator
from tests.integration.aws_fixtures import (  # noqa: F401
    FaultProxy,
    MotoServer,
    aws_env,
    fault_proxy,
    moto_server,
)
from tests.integration.ec2_instances import REGION, Ec2Instances, ec2_instances
from tests.integration.test_runners_e2e import REPO, jobs_done, wait_until

boto3 = pytest.importorskip("boto3")
pytest_plugins = ["tests.integration.github_fixtures"]
pytestmark = pytest.mark.usefixtures("aws_env")

LABELS = ["self-hosted", "train"]


class Aws:
    """boto3 clients at moto's own endpoint (the test's view of the account, no faults)."""

    def __init__(self, moto: MotoServer) -> None:
        self.ec2 = boto3.client("ec2", endpoint_url=moto.endpoint, region_name=REGION)
        self.ssm = boto3.client("ssm", endpoint_url=moto.endpoint, region_name=REGION)
        self.sqs = boto3.client("sqs", endpoint_url=moto.endpoint, region_name=REGION)

    def ami(self) -> str:
        return str(self.ec2.describe_images()["Images"][0]["ImageId"])

    def subnet(self) -> str:
        return str(self.ec2.describe_subnets()["Subnets"][0]["SubnetId"])

    def security_group(self) -> str:
        groups = self.ec2.describe_security_groups(GroupNames=["default"])["SecurityGroups"]
        return str(groups[0]["GroupId"])

    def parameters(self, prefix: str = "/") -> list[str]:
        found = self.ssm.get_parameters_by_path(Path=prefix, Recursive=True)["Parameters"]
        return [p["Name"] for p in found]


@pytest.fixture
def aws(moto_server: MotoServer) -> Iterator[Aws]:  # noqa: F811
    moto_server.reset()
    yield Aws(moto_server)


def jit_config(gh: GitHubEmulator, name: str) -> str:
    """A runner registered in the emulator the way the autoscaler does it: its JIT config."""
    request = urllib.request.Request(
        f"{gh.url}/repos/{REPO}/actions/runners/generate-jitconfig", method="POST",
        data=json.dumps({"name": name, "runner_group_id": 1, "labels": LABELS}).encode(),
        headers={"Authorization": f"token {gh.token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return str(json.loads(resp.read())["encoded_jit_config"])


def launch_by_hand(aws: Aws, owner: str, runner: str, jit: str | None) -> str:
    """An instance as the backend launches one (owner/runner/parameter tags, the JIT config
    in a SecureString), without the backend: the agent and the harness on their own."""
    parameter = f"/gha-mlops/{owner}/{runner}"
    if jit is not None:
        aws.ssm.put_parameter(Name=parameter, Value=jit, Type="SecureString")
    tags = {LABEL_OWNER: owner, LABEL_RUNNER: runner, LABEL_POOL: "cpu",
            TAG_PARAMETER: parameter}
    found = aws.ec2.run_instances(
        ImageId=aws.ami(), MinCount=1, MaxCount=1, InstanceType="m5.large",
        TagSpecifications=[{"ResourceType": "instance",
                            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}])
    return str(found["Instances"][0]["InstanceId"])


def state(aws: Aws, iid: str) -> str:
    found = aws.ec2.describe_instances(InstanceIds=[iid])["Reservations"]
    return str(found[0]["Instances"][0]["State"]["Name"])


@pytest.fixture
def owner() -> str:
    return "t" + secrets.token_hex(3)


@pytest.fixture
def harness(tmp_path: Path, moto_server: MotoServer, fault_proxy: FaultProxy,  # noqa: F811
            aws: Aws, owner: str) -> Iterator[Ec2Instances]:
    with ec2_instances(moto_server.endpoint, fault_proxy.endpoint, owner, tmp_path) as h:
        yield h


# -- the agent and the harness on their own (no autoscaler) --------------------------------


def test_an_instance_runs_its_runner_once_and_powers_off(
        harness: Ec2Instances, aws: Aws, github: GitHubEmulator, owner: str,
        fault_proxy: FaultProxy) -> None:  # noqa: F811
    github.runner_timeout = 3.0
    name = f"{owner}-cpu-000001"
    fault_proxy.fail("GetParameter", "ThrottlingException", "Rate exceeded", times=2)
    job = github.repo(REPO).queue_job(LABELS, duration=0.5)
    iid = launch_by_hand(aws, owner, name, jit_config(github, name))
    wait_until("the job to complete", lambda: jobs_done(github, [job]), 60)
    assert github.job(job).conclusion == "success" and github.job(job).runner_name == name
    wait_until("the instance to power off", lambda: state(aws, iid) == "terminated", 30)
    assert aws.parameters() == [], "the JIT config was read once and deleted"
    calls = [(c.action, c.fault) for c in fault_proxy.calls() if c.action.endswith("Parameter")]
    assert calls == [("GetParameter", "error")] * 2 + [("GetParameter", ""),
                                                       ("DeleteParameter", "")], calls
    wait_until("the harness to let it go", lambda: iid in harness.ended, 10)
    assert '"runner ' + name in harness.logs() or name in harness.logs()


def test_an_instance_whose_parameter_is_gone_powers_off_at_once(
        harness: Ec2Instances, aws: Aws, owner: str) -> None:
    iid = launch_by_hand(aws, owner, f"{owner}-cpu-000002", None)
    wait_until("the instance to power off", lambda: state(aws, iid) == "terminated", 30)
    wait_until("the harness to let it go", lambda: iid in harness.ended, 10)
    text = harness.logs()
    assert "was read already" in text and "running" in text, text


def test_the_notice_in_metadata_tags_the_instance_and_the_runner_dies_with_it(
        harness: Ec2Instances, aws: Aws, github: GitHubEmulator, owner: str) -> None:
    github.runner_timeout = 2.0
    name = f"{owner}-cpu-000003"
    job = github.repo(REPO).queue_job(LABELS, duration=30)
    iid = launch_by_hand(aws, owner, name, jit_config(github, name))
    wait_until("the job to start", lambda: github.job(job).status == "in_progress", 60)
    harness.interrupt(iid, after=1.5, action_time="2026-12-06T03:02:00Z")
    wait_until("the job to fail with its machine", lambda: jobs_done(github, [job]), 30)
    assert github.job(job).conclusion == "failure"
    tags = {t["Key"]: t["Value"] for t in aws.ec2.describe_instances(
        InstanceIds=[iid])["Reservations"][0]["Instances"][0]["Tags"]}
    assert tags[TAG_INTERRUPTION] == "2026-12-06T03:02:00Z imds"
    assert state(aws, iid) == "terminated" and harness.ended.get(iid) == -signal.SIGKILL

