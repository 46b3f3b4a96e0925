"""boto3's EC2 client through the fault proxy to a real moto server: programmed errors arrive as
botocore ClientErrors with their codes (throttling retried by botocore's own standard retry
mode), a partial CreateFleet is read by ec2_errors.fleet_outcome, and everything else reaches
moto (instances launched with tags, found by tag)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gha_mlops.runners.backends.base import LABEL_OWNER, LABEL_POOL
from gha_mlops.runners.backends.ec2_errors import Verdict, classify, fleet_outcome
from tests.integration.aws_fixtures import (  # noqa: F401
    FaultProxy,
    FleetError,
    MotoServer,
    aws_env,
    fault_proxy,
    moto_server,
    spot_interruption_warning,
)

boto3 = pytest.importorskip("boto3")
botocore_config = pytest.importorskip("botocore.config")
botocore_exceptions = pytest.importorskip("botocore.exceptions")

pytestmark = pytest.mark.usefixtures("aws_env")


def _ec2(proxy: FaultProxy, attempts: int = 1) -> Any:
    config = botocore_config.Config(retries={"mode": "standard", "total_max_attempts": attempts})
    return boto3.client("ec2", endpoint_url=proxy.endpoint, region_name="us-east-1",
                        config=config)


def _template(ec2: Any) -> tuple[str, list[str]]:
    """A launch template on one of moto's AMIs, and the default VPC's subnets."""
    ami = ec2.describe_images()["Images"][0]["ImageId"]
    name = "gha-mlops-test"
    try:
        ec2.create_launch_template(LaunchTemplateName=name,
                                   LaunchTemplateData={"ImageId": ami,
                                                       "InstanceType": "g5.xlarge"})
    except botocore_exceptions.ClientError as err:
        if err.response["Error"]["Code"] != "InvalidLaunchTemplateName.AlreadyExistsException":
            raise
    subnets = [s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]]
    return name, subnets[:2]


def _fleet(ec2: Any, count: int, pool: str, token: str = "") -> dict[str, Any]:
    name, subnets = _template(ec2)
    overrides = [{"InstanceType": t, "SubnetId": s} for t in ("g5.xlarge", "g4dn.xlarge")
                 for s in subnets]
    tags = [{"Key": LABEL_OWNER, "Value": "test-scaler"}, {"Key": LABEL_POOL, "Value": pool}]
    response: dict[str, Any] = ec2.create_fleet(
        Type="instant",
        LaunchTemplateConfigs=[{"LaunchTemplateSpecification": {"LaunchTemplateName": name,
                                                                "Version": "$Latest"},
                                "Overrides": overrides}],
        TargetCapacitySpecification={"TotalTargetCapacity": count,
                                     "DefaultTargetCapacityType": "spot"},
        SpotOptions={"AllocationStrategy": "price-capacity-optimized"},
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        **({"ClientToken": token} if token else {}))
    return response


def _running_in_pool(ec2: Any, pool: str) -> set[str]:
    found = ec2.describe_instances(Filters=[
        {"Name": f"tag:{LABEL_OWNER}", "Values": ["test-scaler"]},
        {"Name": f"tag:{LABEL_POOL}", "Values": [pool]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]}])
    return {i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]}


@pytest.mark.parametrize(("action", "code", "status"), [
    ("CreateFleet", "InsufficientInstanceCapacity", 400),
    ("CreateFleet", "MaxSpotInstanceCountExceeded", 400),
    ("RunInstances", "InvalidAMIID.NotFound", 400),
    ("DescribeInstances", "Unavailable", 503),
    ("TerminateInstances", "UnauthorizedOperation", 403),
])
def test_a_programmed_error_is_a_client_error_with_its_code(
        fault_proxy: FaultProxy, action: str, code: str, status: int) -> None:  # noqa: F811
    ec2 = _ec2(fault_proxy)
    fault_proxy.fail(action, code, "injected by the test", status=status)
    calls = {"CreateFleet": lambda: _fleet(ec2, 1, "p"),
             "RunInstances": lambda: ec2.run_instances(ImageId="ami-x", MinCount=1, MaxCount=1),
             "DescribeInstances": lambda: ec2.describe_instances(),
             "TerminateInstances": lambda: ec2.terminate_instances(InstanceIds=["i-1"])}
    with pytest.raises(botocore_exceptions.ClientError) as caught:
        calls[action]()
    error = caught.value.response
    assert (error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]) == (code, status)
    assert error["Error"]["Message"] == "injected by the test"
    assert fault_proxy.calls(action)[-1].fault == "error" and fault_proxy.pending() == 0
    assert classify(code, operation=action).code == code  # what the backend will judge


def test_throttling_is_retried_by_botocore_and_logged(fault_proxy: FaultProxy) -> None:  # noqa: F811
    ec2 = _ec2(fault_proxy, attempts=3)
    fault_proxy.fail("DescribeInstances", "RequestLimitExceeded", "Request limit exceeded.",
                     times=2)
    ec2.describe_instances()  # the third try reaches moto
    seen = [(c.status, c.fault) for c in fault_proxy.calls("DescribeInstances")]
    assert seen == [(400, "error"), (400, "error"), (200, "")]
    fault_proxy.fail("DescribeInstances", "RequestLimitExceeded", times=3)
    with pytest.raises(botocore_exceptions.ClientError) as caught:
        ec2.describe_instances()  # out of tries: the backend sees the code
    assert caught.value.response["Error"]["Code"] == "RequestLimitExceeded"
    assert classify("RequestLimitExceeded", operation="DescribeInstances").verdict \
        is Verdict.RETRY_LATER


def test_unprogrammed_calls_reach_moto(fault_proxy: FaultProxy,  # noqa: F811
                                       moto_server: MotoServer) -> None:  # noqa: F811
    moto_server.reset()
    ec2 = _ec2(fault_proxy)
    response = _fleet(ec2, 3, "gpu")
    outcome = fleet_outcome(response, requested=3)
    launched = {i.instance_id for i in outcome.instances}
    assert len(launched) == 3 and not outcome.partial and outcome.verdict() is None
    assert _running_in_pool(ec2, "gpu") == launched
    ec2.terminate_instances(InstanceIds=sorted(launched))
    assert _running_in_pool(ec2, "gpu") == set()
    assert {c.fault for c in fault_proxy.calls()} == {""}


def test_a_partial_fleet_launches_only_what_it_reports(fault_proxy: FaultProxy,  # noqa: F811
                                                       moto_server: MotoServer) -> None:  # noqa: F811
    moto_server.reset()
    ec2 = _ec2(fault_proxy)
    fault_proxy.partial_fleet(1, [
        FleetError("InsufficientInstanceCapacity", "There is no Spot capacity available",
                   "g5.xlarge", "subnet-a"),
        FleetError("Unsupported", "g4dn.xlarge is not supported in us-east-1e <&>",
                   "g4dn.xlarge", "subnet-b")])
    outcome = fleet_outcome(_fleet(ec2, 3, "partial"), requested=3)
    assert outcome.partial and len(outcome.instances) == 1 and outcome.shortfall == 2
    spot = outcome.errors[Verdict.FAIL_OVER][0]
    assert (spot.classification.code, spot.instance_type, spot.subnet_id, spot.lifecycle) == \
        ("InsufficientInstanceCapacity", "g5.xlarge", "subnet-a", "spot")
    fatal = outcome.errors[Verdict.FATAL][0]
    assert fatal.classification.message.endswith("us-east-1e <&>")
    assert outcome.verdict() is Verdict.FAIL_OVER
    # moto's truth matches the answer: no instance launched that the response did not name.
    assert _running_in_pool(ec2, "partial") == {outcome.instances[0].instance_id}
    assert [c.fault for c in fault_proxy.calls("CreateFleet")] == ["partial"]


def test_spot_gone_in_every_type_launches_nothing(fault_proxy: FaultProxy,  # noqa: F811
                                                  moto_server: MotoServer) -> None:  # noqa: F811
    moto_server.reset()
    ec2 = _ec2(fault_proxy)
    fault_proxy.partial_fleet(0, [FleetError("InsufficientInstanceCapacity", "no spot", t, s)
                                  for t in ("g5.xlarge", "g4dn.xlarge") for s in ("a", "b")])
    outcome = fleet_outcome(_fleet(ec2, 2, "none"), requested=2)
    assert outcome.instances == () and not outcome.partial and outcome.shortfall == 2
    assert len(outcome.errors[Verdict.FAIL_OVER]) == 4 and outcome.verdict() is Verdict.FAIL_OVER
    assert _running_in_pool(ec2, "none") == set()
    _fleet(ec2, 1, "none")  # the fault was used up: the next call launches
    assert len(_running_in_pool(ec2, "none")) == 1


def test_a_lost_answer_leaves_the_fleet_launched(fault_proxy: FaultProxy,  # noqa: F811
                                                 moto_server: MotoServer) -> None:  # noqa: F811
    """The double-launch hazard: CreateFleet acted, its answer never came back."""
    moto_server.reset()
    ec2 = _ec2(fault_proxy)
    fault_proxy.drop("CreateFleet")
    with pytest.raises(botocore_exceptions.ConnectionClosedError):
        _fleet(ec2, 1, "dropped")
    assert _running_in_pool(ec2, "dropped") == set()  # dropped before moto: nothing launched
    fault_proxy.drop("CreateFleet", reached=True)
    with pytest.raises(botocore_exceptions.ConnectionClosedError):
        _fleet(ec2, 2, "lost", token="launch-1")
    launched = _running_in_pool(ec2, "lost")
    assert len(launched) == 2  # launched although the caller saw an error
    # EC2's ClientToken idempotency (given by the proxy): the retry gets the same fleet.
    again = fleet_outcome(_fleet(ec2, 2, "lost", token="launch-1"))
    assert {i.instance_id for i in again.instances} == launched == _running_in_pool(ec2, "lost")
    with pytest.raises(botocore_exceptions.ClientError) as caught:
        _fleet(ec2, 3, "lost", token="launch-1")
    assert caught.value.response["Error"]["Code"] == "IdempotentParameterMismatch"
    assert [(c.status, c.fault) for c in fault_proxy.calls("CreateFleet")] == \
        [(0, "drop"), (200, "lose"), (200, "idempotent"), (400, "idempotent")]


def test_json_protocol_services_pass_through_and_fail_on_demand(
        fault_proxy: FaultProxy) -> None:  # noqa: F811
    """SSM (the runner's JIT config), SQS and EventBridge (interruption warnings) reach moto,
    and a programmed fault answers in their JSON protocol."""
    def client(service: str) -> Any:
        return boto3.client(service, endpoint_url=fault_proxy.endpoint, region_name="us-east-1",
                            config=botocore_config.Config(retries={"total_max_attempts": 1}))
    ssm, sqs, events = client("ssm"), client("sqs"), client("events")
    ssm.put_parameter(Name="/gha-mlops/jit/r1", Value="secret", Type="SecureString")
    got = ssm.get_parameter(Name="/gha-mlops/jit/r1", WithDecryption=True)
    assert got["Parameter"]["Value"] == "secret"
    fault_proxy.fail("GetParameter", "ParameterNotFound", "gone")
    with pytest.raises(botocore_exceptions.ClientError) as caught:
        ssm.get_parameter(Name="/gha-mlops/jit/r1")
    assert caught.value.response["Error"]["Code"] == "ParameterNotFound"

    queue = sqs.create_queue(QueueName="interruptions")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    events.put_rule(Name="spot", EventPattern=json.dumps(
        {"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning"]}))
    events.put_targets(Rule="spot", Targets=[{"Id": "q", "Arn": arn}])
    warning = spot_interruption_warning("i-0abc")
    events.put_events(Entries=[{"Source": warning["source"], "DetailType": warning["detail-type"],
                                "Detail": json.dumps(warning["detail"]),
                                "Resources": warning["resources"]}])
    messages = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=0).get("Messages", [])
    assert [json.loads(m["Body"])["detail"]["instance-id"] for m in messages] == ["i-0abc"]
    fault_proxy.fail("ReceiveMessage", "AWS.SimpleQueueService.NonExistentQueue", "no queue")
    with pytest.raises(botocore_exceptions.ClientError) as caught:
        sqs.receive_message(QueueUrl=queue)
    assert caught.value.response["Error"]["Code"] == "AWS.SimpleQueueService.NonExistentQueue"
    assert [c.fault for c in fault_proxy.calls() if c.fault] == ["error", "error"]
