"""`runners check --live` for ec2 pools (ec2_check.verify) against a real moto server, through
the fault proxy: a runners.yaml loaded as the CLI loads it, an account set up with boto3 as a
user would, and each line read as a person reads it. Permission and throttling answers come
from the proxy (moto does not evaluate IAM policies the way AWS does: see test_runners_aws_doc).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gha_mlops.runners.backends.ec2_check import verify
from gha_mlops.runners.backends.ec2_clients import Ec2Clients, make_clients
from gha_mlops.runners.config import RunnersConfig, load_config
from gha_mlops.testing.github_emulator import GitHubEmulator
from tests.integration.aws_fixtures import (  # noqa: F401
    FaultProxy,
    MotoServer,
    aws_env,
    fault_proxy,
    free_port,
    moto_server,
    stub_endpoint,
)

pytest.importorskip("boto3")
pytestmark = pytest.mark.usefixtures("aws_env")
pytest_plugins = ["tests.integration.github_fixtures"]

CONFIG = """\
id: box-1
github: {{repo: octo/demo, token_env: TOKEN}}
webhook: {{secret_env: SECRET}}
backends:
  ec2:
    region: us-east-1
    endpoint_url: "{endpoint}"
    interruption_queue: "{queue}"
pools:
{pools}
"""
EVENTS_POLICY = {"Version": "2012-10-17", "Statement": [{
    "Sid": "events", "Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"},
    "Action": "sqs:SendMessage", "Resource": "*"}]}


@dataclass(frozen=True)
class Account:
    """What a user set up in moto's account (the default VPC's subnets and group, images)."""

    clients: Ec2Clients
    subnets: dict[str, str]  # availability zone -> subnet id
    group: str
    x86: str
    arm: str


@pytest.fixture
def account(moto_server: MotoServer,  # noqa: F811
            fault_proxy: FaultProxy) -> Iterator[Account]:  # noqa: F811
    moto_server.reset()
    clients = make_clients("us-east-1", endpoint_url=moto_server.endpoint, environ=os.environ)
    ec2 = clients.ec2
    subnets = {s["AvailabilityZone"]: s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]}
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]
    group = ec2.create_security_group(GroupName="runners", Description="no inbound",
                                      VpcId=vpc["VpcId"])["GroupId"]
    images = ec2.describe_images(Filters=[{"Name": "state", "Values": ["available"]}])["Images"]
    x86 = next(i["ImageId"] for i in images if i.get("Architecture") == "x86_64")
    arm = next(i["ImageId"] for i in images if i.get("Architecture") == "arm64")
    clients.ssm.put_parameter(Name="/gha-mlops/runner-ami", Value=x86, Type="String")
    url = clients.sqs.create_queue(QueueName="gha-spot")["QueueUrl"]
    clients.sqs.set_queue_attributes(QueueUrl=url,
                                     Attributes={"Policy": json.dumps(EVENTS_POLICY)})
    yield Account(clients, subnets, group, x86, arm)


def _config(tmp_path: Path, proxy: FaultProxy, pools: str, queue: str = "gha-spot"
            ) -> RunnersConfig:
    path = tmp_path / "runners.yaml"
    path.write_text(CONFIG.format(endpoint=proxy.endpoint, queue=queue, pools=pools))
    return load_config(path, {"TOKEN": "t", "SECRET": "s" * 32})


def _verify(cfg: RunnersConfig, **kwargs: Any) -> list[tuple[bool, str]]:
    assert cfg.ec2 is not None
    clients = make_clients(cfg.ec2.region, endpoint_url=cfg.ec2.endpoint_url,
                           environ=os.environ)
    return verify(clients, cfg.ec2, {p.name: p for p in cfg.pools}, **kwargs)


def _pool(name: str, ec2: str) -> str:
    return f"  - {{name: {name}, labels: [{name}], backend: ec2, max: 2, gpus: 1, ec2: {ec2}}}\n"


def _failed(lines: list[tuple[bool, str]]) -> list[str]:
    return [text for ok, text in lines if not ok]


def test_a_good_account_answers_every_key(tmp_path: Path, account: Account,
                                          fault_proxy: FaultProxy) -> None:  # noqa: F811
    a, b, e = account.subnets["us-east-1a"], account.subnets["us-east-1b"], \
        account.subnets["us-east-1e"]
    template = account.clients.ec2.create_launch_template(
        LaunchTemplateName="gha-runner", LaunchTemplateData={
            "ImageId": account.x86, "MetadataOptions": {
                "HttpTokens": "required", "InstanceMetadataTags": "enabled",
                "HttpPutResponseHopLimit": 2}})["LaunchTemplate"]["LaunchTemplateId"]
    cfg = _config(tmp_path, fault_proxy, _pool(
        "gpu", f"{{instance_types: [g5.xlarge, g6.xlarge], subnets: [{a}, {e}], "
               f"security_groups: [{account.group}], ami: 'resolve:ssm:/gha-mlops/runner-ami'}}")
        + _pool("tpl", f"{{instance_types: [g4dn.xlarge], subnets: [{a}, {b}], "
                       f"launch_template: {template}}}"))
    lines = _verify(cfg, owner="box-1")
    assert _failed(lines) == [], lines
    text = "\n".join(line for _, line in lines)
    assert "credentials: account 123456789012 as arn:aws:sts::123456789012:user/moto" in text
    assert f"pool gpu: ec2.subnets[1] {e}: us-east-1e in vpc-" in text
    assert f"pool gpu: ec2.security_groups[0] {account.group}: runners in vpc-" in text
    assert f"pool gpu: ec2.ami resolve:ssm:/gha-mlops/runner-ami: {account.x86}" in text
    # g5.xlarge is not offered in us-east-1e (moto's offerings, like AWS's): said, not failed
    assert "pool gpu: ec2.instance_types[0] g5.xlarge: x86_64; not in us-east-1e" in text
    assert f"pool gpu: launch (RunInstances dry run: g5.xlarge in {a}): permitted" in text
    assert f"pool tpl: ec2.launch_template {template} version $Default: version 1, IMDSv2 " \
           "required" in text
    assert f"pool tpl: launch (RunInstances dry run: g4dn.xlarge in {a}): permitted" in text
    assert "pool tpl: launch (CreateFleet dry run: spot, 2 type x subnet overrides): " \
           "permitted, parameters accepted" in text
    assert "pool gpu: managed launch template (CreateLaunchTemplate dry run): permitted" in text
    assert len(fault_proxy.calls("CreateFleet")) == 1
    templates = account.clients.ec2.describe_launch_templates()["LaunchTemplates"]
    assert [t["LaunchTemplateName"] for t in templates] == ["gha-runner"]  # none made
    assert "interruption queue gha-spot: arn:aws:sqs:us-east-1:123456789012:gha-spot, " \
           "EventBridge may send to it" in text
    assert len(fault_proxy.calls("RunInstances")) == 2
    assert not account.clients.ec2.describe_instances()["Reservations"]  # nothing launched


def test_every_missing_or_wrong_thing_is_named_with_its_key(
        tmp_path: Path, account: Account, fault_proxy: FaultProxy) -> None:  # noqa: F811
    ec2 = account.clients.ec2
    other = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    foreign = ec2.create_security_group(GroupName="elsewhere", Description="x",
                                        VpcId=other)["GroupId"]
    template = ec2.create_launch_template(LaunchTemplateName="imds-v1", LaunchTemplateData={
        "ImageId": account.x86, "MetadataOptions": {"HttpTokens": "optional"}})
    a = account.subnets["us-east-1a"]
    cfg = _config(tmp_path, fault_proxy, _pool(
        "gpu", f"{{instance_types: [g5.xlarge, zz9.xlarge, g5g.xlarge], subnets: [{a}, "
               f"subnet-0123456789abcdef0], security_groups: [{foreign}], ami: {account.x86}}}")
        + _pool("nope", "{instance_types: [g5.xlarge], subnets: [" + a + "], "
                "ami: 'resolve:ssm:/missing/ami', launch_template: imds-v1}")
        + _pool("gone", "{instance_types: [g5.xlarge], subnets: [" + a + "], "
                "ami: ami-0123456789abcdef0, launch_template: no-such-template}"),
        queue="no-such-queue")
    assert template["LaunchTemplate"]["LaunchTemplateName"] == "imds-v1"
    failed = "\n".join(_failed(_verify(cfg)))
    assert "pool gpu: ec2.subnets[1] subnet-0123456789abcdef0: not found in us-east-1 " \
           "(InvalidSubnetID.NotFound" in failed
    assert f"pool gpu: ec2.security_groups[0] {foreign}: in {other}, not in the subnets' " \
           "VPC" in failed
    assert "pool gpu: ec2.instance_types[1] zz9.xlarge: not offered in us-east-1" in failed
    assert f"pool gpu: ec2.instance_types[2] g5g.xlarge: runs arm64, but the AMI {account.x86}" \
           " is x86_64" in failed
    assert "pool gpu: launch" not in failed  # not tried while the config is wrong
    assert "pool nope: ec2.launch_template imds-v1 version $Default: MetadataOptions " \
           "HttpTokens is optional, needs 'required'; InstanceMetadataTags is not set" in failed
    assert "pool nope: ec2.ami resolve:ssm:/missing/ami: not found in us-east-1 " \
           "(ParameterNotFound" in failed
    assert "pool gone: ec2.launch_template no-such-template version $Default: not found in " \
           "us-east-1 (InvalidLaunchTemplateName.NotFoundException" in failed
    assert "pool gone: ec2.ami ami-0123456789abcdef0: not found in us-east-1 " \
           "(InvalidAMIID.NotFound" in failed and "fix ami in runners.yaml" in failed
    assert "interruption queue no-such-queue: not found in us-east-1 " \
           "(AWS.SimpleQueueService.NonExistentQueue" in failed
    assert "docs/runners-aws.md: the interruption queue" in failed


def test_a_refused_permission_names_the_action_to_grant(
        tmp_path: Path, account: Account, fault_proxy: FaultProxy) -> None:  # noqa: F811
    a, b = account.subnets["us-east-1a"], account.subnets["us-east-1b"]
    cfg = _config(tmp_path, fault_proxy, _pool(
        "gpu", f"{{instance_types: [g5.xlarge], subnets: [{a}, {b}], ami: "
               "'resolve:ssm:/gha-mlops/runner-ami'}"))
    fault_proxy.fail("RunInstances", "UnauthorizedOperation", "You are not authorized to "
                     "perform this operation. Encoded authorization failure message: abc")
    fault_proxy.fail("GetParameter", "AccessDeniedException", "not authorized")
    failed = _failed(_verify(cfg, owner="box-1"))
    assert failed == [
        "pool gpu: ec2.ami resolve:ssm:/gha-mlops/runner-ami: GetParameter not permitted "
        "(AccessDeniedException: not authorized): grant ssm:GetParameter to the autoscaler's "
        "IAM role (docs/runners-aws.md: the IAM policy)"], failed
    lines = _verify(cfg, owner="box-1")  # a second run: the dry run is reached now
    (refused,) = _failed(lines)
    assert refused.startswith(f"pool gpu: launch (RunInstances dry run: g5.xlarge in {a}): "
                              "RunInstances not permitted (UnauthorizedOperation: You are not")
    assert refused.endswith("grant ec2:RunInstances to the autoscaler's IAM role "
                            "(docs/runners-aws.md: the IAM policy)")
    assert fault_proxy.pending() == 0


def test_throttling_and_a_missing_endpoint_are_lines_not_tracebacks(
        tmp_path: Path, account: Account, fault_proxy: FaultProxy) -> None:  # noqa: F811
    a, b = account.subnets["us-east-1a"], account.subnets["us-east-1b"]
    pools = _pool("gpu", f"{{instance_types: [g5.xlarge], subnets: [{a}, {b}], "
                         f"ami: {account.x86}}}")
    cfg = _config(tmp_path, fault_proxy, pools)
    fault_proxy.fail("DescribeImages", "RequestLimitExceeded", "Request limit exceeded.")
    (throttled,) = _failed(_verify(cfg))
    assert throttled.startswith(f"pool gpu: ec2.ami {account.x86}: DescribeImages answered "
                                "RequestLimitExceeded")
    assert "(retry-later)" in throttled and throttled.endswith("run the check again")

    unreachable = tmp_path / "down"
    unreachable.mkdir()
    cfg = load_config(_write(unreachable, pools, f"http://127.0.0.1:{free_port()}"),
                      {"TOKEN": "t", "SECRET": "s" * 32})
    lines = _verify(cfg)
    assert len(lines) == 1 and not lines[0][0]
    assert lines[0][1].startswith("credentials: GetCallerIdentity failed: Could not connect")


def test_a_queue_eventbridge_may_not_send_to_is_refused(
        tmp_path: Path, account: Account, fault_proxy: FaultProxy) -> None:  # noqa: F811
    url = account.clients.sqs.create_queue(QueueName="no-policy")["QueueUrl"]
    queue_url = url.replace(url.split("/", 3)[2], fault_proxy.endpoint.split("/")[2])
    a = account.subnets["us-east-1a"]
    pools = _pool("gpu", f"{{instance_types: [g5.xlarge], subnets: [{a}], ami: {account.x86}}}")
    cfg = _config(tmp_path, fault_proxy, pools, queue=queue_url)
    lines = _verify(cfg)
    assert _failed(lines) == [
        f"interruption queue {queue_url}: arn:aws:sqs:us-east-1:123456789012:no-policy: its "
        "policy does not let EventBridge (events.amazonaws.com) send messages "
        "(sqs:SendMessage), so no warning arrives: set the queue policy from "
        "docs/runners-aws.md"]
    assert "pool gpu: ec2.subnets: all in one availability zone (us-east-1a); hint:" in \
        "\n".join(text for _, text in lines)


def _write(where: Path, pools: str, endpoint: str) -> Path:
    path = where / "runners.yaml"
    path.write_text(CONFIG.format(endpoint=endpoint, queue="gha-spot", pools=pools))
    return path


HOSTILE = {
    "GetCallerIdentity": (
        '<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
        "<GetCallerIdentityResult><Arn>arn:aws:iam::123456789012:user/x\nFAKE: ok</Arn>"
        "<UserId>X</UserId><Account>12345</Account></GetCallerIdentityResult>"
        "</GetCallerIdentityResponse>"),
    "DescribeSubnets": (
        '<DescribeSubnetsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><subnetSet>'
        "<item><subnetId>subnet-0123456789abcdef0</subnetId><availabilityZone>us-east-1a\n"
        "(True, 'forged')</availabilityZone><vpcId>" + "v" * 5000 + "</vpcId><state>"
        "available</state></item></subnetSet></DescribeSubnetsResponse>"),
    "DescribeImages": "<not xml",
    "DescribeInstanceTypeOfferings": (
        '<DescribeInstanceTypeOfferingsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
        "<instanceTypeOfferingSet><item><instanceType>g5.xlarge</instanceType><location>"
        "us-east-1</location></item></instanceTypeOfferingSet>"
        "</DescribeInstanceTypeOfferingsResponse>"),
}


@pytest.fixture
def hostile_endpoint() -> Iterator[str]:
    """An "AWS" that answers each action above with its text (anything else: a 500)."""
    import urllib.parse

    def answer(body: bytes) -> tuple[int, str, bytes]:
        action = urllib.parse.parse_qs(body.decode()).get("Action", [""])[0]
        data = HOSTILE.get(action, "<Response><Errors><Error><Code>InternalError</Code>"
                                   "</Error></Errors></Response>")
        return 200 if action in HOSTILE else 500, "text/xml", data.encode()

    with stub_endpoint(answer) as url:
        yield url


def test_hostile_answers_are_bounded_single_lines(tmp_path: Path, hostile_endpoint: str) -> None:
    pools = _pool("gpu", "{instance_types: [g5.xlarge], subnets: [subnet-0123456789abcdef0], "
                         "ami: ami-0123456789abcdef0}")
    path = tmp_path / "runners.yaml"
    path.write_text(CONFIG.format(endpoint=hostile_endpoint, queue="q", pools=pools)
                    .replace('    interruption_queue: "q"\n', ""))
    lines = _verify(load_config(path, {"TOKEN": "t", "SECRET": "s" * 32}))
    assert all("\n" not in text and len(text) < 1500 for _, text in lines), lines
    assert lines[0] == (False, "credentials: account 12345 as <unknown> (region us-east-1)")
    assert (False, "pool gpu: ec2.subnets[0] subnet-0123456789abcdef0: the answer names no "
            "valid zone or VPC (is backends.ec2.endpoint_url AWS?)") in lines
    (image,) = [text for ok, text in lines if "ec2.ami" in text and not ok]
    assert image.startswith("pool gpu: ec2.ami ami-0123456789abcdef0: DescribeImages failed: "
                            "Unable to parse response")  # a line, not a traceback
    assert "pool gpu: launch" not in "\n".join(text for _, text in lines)


def test_the_cli_prints_each_line_and_exits_10(tmp_path: Path, account: Account,
                                               fault_proxy: FaultProxy,  # noqa: F811
                                               github: GitHubEmulator) -> None:
    """`gha-mlops runners check --live` as a user runs it: GitHub asked, then AWS."""
    a = account.subnets["us-east-1a"]
    pools = _pool("gpu", f"{{instance_types: [g5.xlarge], subnets: [{a}, "
                         f"subnet-0123456789abcdef0], ami: {account.x86}}}")
    path = tmp_path / "runners.yaml"
    path.write_text(CONFIG.format(endpoint=fault_proxy.endpoint, queue="gha-spot", pools=pools)
                    .replace("token_env: TOKEN}", f'token_env: TOKEN, api_url: "{github.url}"}}'))
    env = {"TOKEN": github.token, "SECRET": "s" * 32, "PATH": "", "HOME": str(tmp_path),
           **{k: v for k, v in os.environ.items() if k.startswith("AWS_")}}
    proc = subprocess.run([sys.executable, "-m", "gha_mlops", "runners", "check", "--live",
                           "-c", str(path)], capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    assert proc.returncode == 10, proc.stdout + proc.stderr
    assert "  GitHub: answers; 0 self-hosted runner(s) registered in octo/demo" in proc.stdout
    assert "  backend ec2: ok: credentials: account 123456789012 as " in proc.stdout
    assert f"  backend ec2: ok: pool gpu: ec2.subnets[0] {a}: us-east-1a in vpc-" in proc.stdout
    assert "  backend ec2: FAILED: pool gpu: ec2.subnets[1] subnet-0123456789abcdef0: not " \
           "found in us-east-1 (InvalidSubnetID.NotFound" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
