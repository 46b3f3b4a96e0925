"""The EC2 backend against a real moto server, through the fault proxy (real EC2 error
responses, partial fleets, lost answers with ClientToken idempotency): launch, list by tags,
destroy, the capacity policies, the error classes, the parameter sweep and the interruption
queue. Nothing of boto3 or moto is patched.

moto applies CreateFleet's instance TagSpecifications at creation and honours the overrides
(type and subnet), but ignores a fleet-level "volume" TagSpecification (EC2 documents only
"instance" and "fleet" for instant fleets) and does not copy a launch template's metadata
options or volume size onto the instance: those are checked on the template itself.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gha_mlops.runners.backends.base import (
    EXITED,
    LABEL_GPUS,
    LABEL_OWNER,
    LABEL_POOL,
    LABEL_RUNNER,
    LOST,
    PENDING,
    RUNNING,
    BackendError,
    LaunchSpec,
)
from gha_mlops.runners.backends.ec2 import Ec2Backend
from gha_mlops.runners.backends.ec2_clients import (
    READ_TIMEOUT_S,
    TAG_EXPIRES,
    TAG_INTERRUPTION,
    TAG_LIFECYCLE,
    TAG_PARAMETER,
    Ec2Clients,
)
from gha_mlops.runners.config import Ec2Pool, Ec2Settings, Pool
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

pytestmark = pytest.mark.usefixtures("aws_env")

ENVIRON = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
TYPES = ("g5.xlarge", "g6.xlarge")
LIFETIME, GRACE = 3600.0, 600.0


@pytest.fixture
def proxy(fault_proxy: FaultProxy) -> FaultProxy:  # noqa: F811
    """The module's fault proxy (a fresh one per test)."""
    return fault_proxy


@pytest.fixture
def aws(moto_server: MotoServer,  # noqa: F811
        proxy: FaultProxy) -> Iterator[dict[str, Any]]:
    """A clean moto account; its AMI, subnets and security group; clients straight to moto
    (the test's own look, not through the proxy's log)."""
    moto_server.reset()
    kw = {"endpoint_url": moto_server.endpoint, "region_name": "us-east-1"}
    ec2, ssm, sqs = (boto3.client(s, **kw) for s in ("ec2", "ssm", "sqs"))
    image = ec2.describe_images()["Images"][0]
    subnets = [s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]][:2]
    group = ec2.describe_security_groups()["SecurityGroups"][0]["GroupId"]
    yield {"ec2": ec2, "ssm": ssm, "sqs": sqs, "ami": image["ImageId"],
           "root": image["RootDeviceName"], "subnets": tuple(subnets), "group": group}


def _pool(aws: dict[str, Any], name: str = "gpu", **ec2: Any) -> Pool:
    fields: dict[str, Any] = {
        "instance_types": TYPES, "subnets": aws["subnets"], "security_groups": (aws["group"],),
        "ami": aws["ami"], "launch_template": None, "launch_template_version": "$Default",
        "instance_profile": "runner-profile", "root_volume_gb": 100,
        "capacity": "spot-then-on-demand", "spot_allocation": "price-capacity-optimized",
        "expiry_grace": GRACE}
    fields.update(ec2)
    return Pool(name=name, labels=frozenset({"gpu"}), backend="ec2", image="", min_idle=0,
                max=5, cpus=None, memory_mb=None, gpus=1, idle_timeout=300.0,
                max_lifetime=LIFETIME, register_timeout=600.0, env={}, ec2=Ec2Pool(**fields))


def _clients(proxy: FaultProxy) -> Ec2Clients:
    """The clients as the contract has them: one attempt per call (as make_clients makes
    them: ``total_max_attempts: 1``), so that every retry the proxy sees is the backend's."""
    config = botocore_config.Config(retries={"total_max_attempts": 1, "mode": "standard"},
                                    connect_timeout=5, read_timeout=READ_TIMEOUT_S)
    kw = {"endpoint_url": proxy.endpoint, "region_name": "us-east-1", "config": config,
          **{k.lower(): v for k, v in ENVIRON.items()}}
    return Ec2Clients("us-east-1", *(boto3.client(s, **kw) for s in ("ec2", "ssm", "sqs",
                                                                     "sts")))


def _backend(proxy: FaultProxy, *pools: Pool, owner: str = "box", queue: str | None = None,
             clock: Any = time.time, made: bool = False) -> Ec2Backend:
    """``made``: clients from ec2_clients.make_clients (the CLI's way), else :func:`_clients`."""
    settings = Ec2Settings(region="us-east-1", endpoint_url=proxy.endpoint,
                           interruption_queue=queue, parameter_prefix="/gha-mlops",
                           tags={"team": "ml"})
    return Ec2Backend(owner, settings, {p.name: p for p in pools}, environ=ENVIRON,
                      clock=clock, clients=None if made else _clients(proxy), sleep=lambda s: None)


def _spec(runner: str, pool: str = "gpu") -> LaunchSpec:
    return LaunchSpec(runner_name=runner, pool=pool, image="", jit_config=f"JIT-{runner}",
                      gpus=1)


def _instance(aws: dict[str, Any], instance_id: str) -> dict[str, Any]:
    found = aws["ec2"].describe_instances(InstanceIds=[instance_id])
    item: dict[str, Any] = found["Reservations"][0]["Instances"][0]
    return item


def _tags(item: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in item.get("Tags", [])}


def _alive(aws: dict[str, Any], runner: str) -> list[str]:
    found = aws["ec2"].describe_instances(Filters=[
        {"Name": f"tag:{LABEL_RUNNER}", "Values": [runner]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]}])
    return [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]]


def _parameters(aws: dict[str, Any]) -> set[str]:
    return {p["Name"] for p in aws["ssm"].describe_parameters()["Parameters"]}


def test_launch_tags_the_instance_writes_the_secret_and_manages_the_template(
        aws: dict[str, Any], proxy: FaultProxy) -> None:
    backend = _backend(proxy, _pool(aws))
    before = time.time()
    machine = backend.launch(_spec("box-1"))
    assert machine.id.startswith("i-") and machine.state == PENDING
    assert machine.runner_name == "box-1" and machine.pool == "gpu"
    assert machine.expires_at is not None and \
        before + LIFETIME + GRACE <= machine.expires_at <= time.time() + LIFETIME + GRACE + 1
    item = _instance(aws, machine.id)
    tags = _tags(item)
    assert tags[LABEL_OWNER] == "box" and tags[LABEL_RUNNER] == "box-1"
    assert tags[LABEL_POOL] == "gpu" and tags[LABEL_GPUS] == "0" and tags["Name"] == "box-1"
    assert tags[TAG_EXPIRES] == str(int(machine.expires_at))
    assert tags[TAG_PARAMETER] == "/gha-mlops/box/box-1" and tags[TAG_LIFECYCLE] == "spot"
    assert tags["team"] == "ml"
    assert item["InstanceType"] in TYPES and item["SubnetId"] in aws["subnets"]
    volumes = aws["ec2"].describe_volumes(Filters=[
        {"Name": "attachment.instance-id", "Values": [machine.id]}])["Volumes"]
    assert volumes and all({LABEL_OWNER: "box", LABEL_POOL: "gpu", "team": "ml"}.items()
                           <= _tags(v).items() for v in volumes)
    parameter = aws["ssm"].get_parameter(Name="/gha-mlops/box/box-1",
                                         WithDecryption=True)["Parameter"]
    assert parameter["Type"] == "SecureString" and parameter["Value"] == "JIT-box-1"
    ptags = aws["ssm"].list_tags_for_resource(ResourceType="Parameter",
                                              ResourceId="/gha-mlops/box/box-1")["TagList"]
    assert {"Key": LABEL_OWNER, "Value": "box"} in ptags
    versions = aws["ec2"].describe_launch_template_versions(
        LaunchTemplateName="gha-mlops-box-gpu")["LaunchTemplateVersions"]
    assert len(versions) == 1
    data = versions[0]["LaunchTemplateData"]
    assert data["MetadataOptions"] == {"HttpTokens": "required", "HttpPutResponseHopLimit": 2,
                                       "HttpEndpoint": "enabled",
                                       "InstanceMetadataTags": "enabled"}
    assert "UserData" not in data and data["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert data["ImageId"] == aws["ami"] and data["SecurityGroupIds"] == [aws["group"]]
    assert data["IamInstanceProfile"] == {"Name": "runner-profile"}
    assert data["BlockDeviceMappings"] == [{"DeviceName": aws["root"], "Ebs": {
        "VolumeType": "gp3", "DeleteOnTermination": True, "VolumeSize": 100}}]
    assert "JIT-box-1" not in json.dumps(data, default=str)
    # The same pool again: the same version; changed settings: a new one.
    backend.launch(_spec("box-2"))
    assert len(proxy.calls("CreateLaunchTemplateVersion")) == 0
    _backend(proxy, _pool(aws, root_volume_gb=200)).launch(_spec("box-3"))
    versions = aws["ec2"].describe_launch_template_versions(
        LaunchTemplateName="gha-mlops-box-gpu")["LaunchTemplateVersions"]
    assert sorted(v["VersionNumber"] for v in versions) == [1, 2]
    fleets = proxy.calls("CreateFleet")
    assert len(fleets) == 3 and all(c.status == 200 for c in fleets)


def test_list_finds_instances_by_tags_alone(aws: dict[str, Any],
                                           proxy: FaultProxy) -> None:
    pool = _pool(aws)
    first = _backend(proxy, pool)
    launched = {first.launch(_spec(f"box-{n}")).id for n in range(2)}
    _backend(proxy, pool, owner="other").launch(_spec("other-1"))
    fresh = _backend(proxy, pool, made=True)  # a restarted autoscaler: no memory
    machines = {m.id: m for m in fresh.list()}
    assert set(machines) == launched
    for m in machines.values():
        assert m.state in (PENDING, RUNNING) and m.pool == "gpu" and m.gpus == ("0",)
        assert m.runner_name in ("box-0", "box-1") and m.expires_at and m.created_at > 0
        assert m.notice == "" and "spot" in m.detail


def test_destroy_terminates_deletes_the_parameter_and_refuses_foreign_instances(
        aws: dict[str, Any], proxy: FaultProxy) -> None:
    pool = _pool(aws)
    backend = _backend(proxy, pool)
    machine = backend.launch(_spec("box-1"))
    foreign = _backend(proxy, pool, owner="other").launch(_spec("other-1"))
    backend.destroy(machine.id)
    assert _instance(aws, machine.id)["State"]["Name"] in ("shutting-down", "terminated")
    assert "/gha-mlops/box/box-1" not in _parameters(aws)
    assert [m for m in backend.list() if m.id == machine.id and m.state == LOST] == []
    backend.destroy(machine.id)  # gone already: fine
    backend.destroy("0123456789abcdef" * 4)  # a container id: another backend's
    with pytest.raises(BackendError) as err:
        backend.destroy(foreign.id)
    assert not err.value.retryable and "not a runner of autoscaler 'box'" in err.value.message
    assert _instance(aws, foreign.id)["State"]["Name"] in ("pending", "running")
    assert "/gha-mlops/other/other-1" in _parameters(aws)


def _no_spot(aws: dict[str, Any]) -> list[FleetError]:
    return [FleetError("InsufficientInstanceCapacity", "There is no Spot capacity available",
                       t, s, "spot") for t in TYPES for s in aws["subnets"]]


@pytest.mark.parametrize("how", ["every-override", "spot-quota"])
def test_spot_gone_in_every_type_falls_back_to_on_demand(
        aws: dict[str, Any], proxy: FaultProxy, caplog: pytest.LogCaptureFixture,
        how: str) -> None:
    backend = _backend(proxy, _pool(aws))
    if how == "every-override":  # the fleet answers with an error item per type x subnet
        proxy.partial_fleet(0, _no_spot(aws))
        code, fault = "InsufficientInstanceCapacity", "partial"
    else:  # the whole call refused
        code, fault = "MaxSpotInstanceCountExceeded", "error"
        proxy.fail("CreateFleet", code, "Max spot instance count exceeded")
    with caplog.at_level(logging.WARNING, logger="gha_mlops.runners"):
        machine = backend.launch(_spec("box-1"))
    assert _tags(_instance(aws, machine.id))[TAG_LIFECYCLE] == "on-demand"
    assert [c.fault for c in proxy.calls("CreateFleet")] == [fault, ""]
    assert any("no spot capacity for pool gpu" in r.getMessage() and "launched on-demand"
               in r.getMessage() and code in r.getMessage() for r in caplog.records)


def test_the_replacement_of_an_interrupted_runner_goes_on_demand_where_the_pool_says(
        aws: dict[str, Any], proxy: FaultProxy) -> None:
    """ec2.rerun_on_demand: the runner booted for a noticed job's re-run is on-demand, so
    the one re-run is not interrupted too; other launches, and pools without it, stay spot."""
    asks = _backend(proxy, _pool(aws, rerun_on_demand=True))
    replacement = LaunchSpec(runner_name="box-1", pool="gpu", image="", jit_config="JIT",
                             gpus=1, replaces_interrupted=True)
    machine = asks.launch(replacement)
    assert _tags(_instance(aws, machine.id))[TAG_LIFECYCLE] == "on-demand"
    assert len(proxy.calls("CreateFleet")) == 1  # asked on-demand first, not after spot
    ordinary = asks.launch(_spec("box-2"))
    assert _tags(_instance(aws, ordinary.id))[TAG_LIFECYCLE] == "spot"
    default = _backend(proxy, _pool(aws)).launch(LaunchSpec(
        runner_name="box-3", pool="gpu", image="", jit_config="JIT", gpus=1,
        replaces_interrupted=True))
    assert _tags(_instance(aws, default.id))[TAG_LIFECYCLE] == "spot"


def test_spot_only_pool_waits_and_says_why(aws: dict[str, Any],
                                           proxy: FaultProxy) -> None:
    backend = _backend(proxy, _pool(aws, capacity="spot"))
    proxy.partial_fleet(0, _no_spot(aws))
    with pytest.raises(BackendError) as err:
        backend.launch(_spec("box-1"))
    assert err.value.retryable and "no spot capacity for pool 'gpu'" in err.value.message
    assert "spot-then-on-demand" in (err.value.hint or "")
    assert len(proxy.calls("CreateFleet")) == 1 and _alive(aws, "box-1") == []
    assert "/gha-mlops/box/box-1" not in _parameters(aws)


def test_a_partial_fleet_keeps_the_instance_it_got(aws: dict[str, Any],
                                                  proxy: FaultProxy) -> None:
    backend = _backend(proxy, _pool(aws))
    proxy.partial_fleet(1, _no_spot(aws)[:3])
    machine = backend.launch(_spec("box-1"))
    assert _alive(aws, "box-1") == [machine.id]
    assert len(proxy.calls("CreateFleet")) == 1


def test_throttling_is_retryable_and_cleans_up(aws: dict[str, Any],
                                               proxy: FaultProxy) -> None:
    backend = _backend(proxy, _pool(aws))
    proxy.fail("CreateFleet", "RequestLimitExceeded", "Request limit exceeded.")
    with pytest.raises(BackendError) as err:
        backend.launch(_spec("box-1"))
    assert err.value.retryable and "RequestLimitExceeded" in err.value.message
    assert "throttled" in (err.value.hint or "")
    assert "/gha-mlops/box/box-1" not in _parameters(aws) and _alive(aws, "box-1") == []
    backend.launch(_spec("box-2"))  # and the next launch goes through


def test_a_bad_subnet_is_fatal_and_names_the_key(aws: dict[str, Any],
                                                 proxy: FaultProxy) -> None:
    backend = _backend(proxy, _pool(aws))
    proxy.fail("CreateFleet", "InvalidSubnetID.NotFound",
                     "The subnet ID 'subnet-0123456789abcdef0' does not exist")
    with pytest.raises(BackendError) as err:
        backend.launch(_spec("box-1"))
    assert not err.value.retryable
    assert "`ec2.subnets` of pool 'gpu'" in err.value.message
    assert "subnet-0123456789abcdef0" in err.value.message
    assert "/gha-mlops/box/box-1" not in _parameters(aws)


def test_an_unknown_code_is_retried_three_times_then_reported(
        aws: dict[str, Any], proxy: FaultProxy) -> None:
    backend = _backend(proxy, _pool(aws))
    proxy.fail("CreateFleet", "BrandNewTransientThing", times=4)
    verdicts = []
    for n in range(4):
        with pytest.raises(BackendError) as err:
            backend.launch(_spec(f"box-{n}"))
        verdicts.append(err.value.retryable)
    assert verdicts == [True, True, True, False]
    assert "BrandNewTransientThing" in err.value.message and "4 times" in err.value.message


def test_a_lost_answer_is_retried_with_its_token_and_launches_once(
        aws: dict[str, Any], proxy: FaultProxy) -> None:
    backend = _backend(proxy, _pool(aws))
    proxy.drop("CreateFleet", reached=True)
    machine = backend.launch(_spec("box-1"))
    assert [c.fault for c in proxy.calls("CreateFleet")] == ["lose", "idempotent"]
    assert _alive(aws, "box-1") == [machine.id]


def test_resolve_ssm_ami(aws: dict[str, Any], proxy: FaultProxy) -> None:
    aws["ssm"].put_parameter(Name="/images/runner", Type="String", Value=aws["ami"])
    backend = _backend(proxy, _pool(aws, ami="resolve:ssm:/images/runner"))
    backend.launch(_spec("box-1"))
    data = aws["ec2"].describe_launch_template_versions(
        LaunchTemplateName="gha-mlops-box-gpu")["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert data["ImageId"] == aws["ami"]
    aws["ssm"].put_parameter(Name="/images/bad", Type="String", Value="not-an-ami")
    with pytest.raises(BackendError) as err:
        _backend(proxy, _pool(aws, ami="resolve:ssm:/images/bad")).launch(_spec("box-2"))
    assert not err.value.retryable and "not an AMI id" in err.value.message


def test_the_sweep_deletes_parameters_whose_instance_is_gone(
        aws: dict[str, Any], proxy: FaultProxy) -> None:
    pool = _pool(aws)
    live = _backend(proxy, pool).launch(_spec("box-live"))
    for name in ("/gha-mlops/box/box-crashed", "/gha-mlops/other/other-1"):
        aws["ssm"].put_parameter(Name=name, Type="SecureString", Value="x")
    now = time.time()
    young = _backend(proxy, pool, clock=lambda: now + 60)
    young.list()  # younger than 15 minutes: a launch may be writing it
    assert "/gha-mlops/box/box-crashed" in _parameters(aws)
    later = _backend(proxy, pool, clock=lambda: now + 3600)
    assert [m.id for m in later.list()] == [live.id]
    assert _parameters(aws) == {"/gha-mlops/box/box-live", "/gha-mlops/other/other-1"}


def test_interruption_warnings_from_the_queue(aws: dict[str, Any],
                                              proxy: FaultProxy) -> None:
    url = aws["sqs"].create_queue(QueueName="gha-spot")["QueueUrl"]
    pool = _pool(aws)
    backend = _backend(proxy, pool, queue="gha-spot")
    machine = backend.launch(_spec("box-1"))
    other = backend.launch(_spec("box-2"))
    for body in (spot_interruption_warning(machine.id, action_time="2026-12-06T03:00:00Z"),
                 spot_interruption_warning("i-0123456789abcdef0"), {"not": "an event"}):
        aws["sqs"].send_message(QueueUrl=url, MessageBody=json.dumps(body))
    machines = {m.id: m for m in backend.list()}
    assert "2026-12-06T03:02:00Z" in machines[machine.id].notice
    assert "eventbridge" in machines[machine.id].notice and machines[other.id].notice == ""
    assert _tags(_instance(aws, machine.id))[TAG_INTERRUPTION] == \
        "2026-12-06T03:02:00Z eventbridge"
    left = aws["sqs"].receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                      VisibilityTimeout=0).get("Messages", [])
    assert left == []
    # A restarted autoscaler knows from the tag; when spot takes the instance it is lost,
    # once, then gone.
    fresh = _backend(proxy, pool)
    assert "eventbridge" in {m.id: m for m in fresh.list()}[machine.id].notice
    aws["ec2"].terminate_instances(InstanceIds=[machine.id])
    states = [{m.id: m.state for m in fresh.list()}.get(machine.id) for _ in range(2)]
    assert states[0] == LOST and states[1] in (None, EXITED)


def test_a_missing_queue_never_fails_list(aws: dict[str, Any], proxy: FaultProxy,
                                          caplog: pytest.LogCaptureFixture) -> None:
    backend = _backend(proxy, _pool(aws), queue="no-such-queue")
    machine = backend.launch(_spec("box-1"))
    with caplog.at_level(logging.ERROR, logger="gha_mlops.runners"):
        assert [m.id for m in backend.list()] == [machine.id]
        backend.list()
    assert len([r for r in caplog.records if "interruption queue" in r.getMessage()]) == 1
    health = backend.health()
    assert health.ok and "no-such-queue" in health.detail and "us-east-1" in health.detail
    proxy.fail("DescribeInstances", "InternalError", status=500)
    with pytest.raises(BackendError):
        backend.list()
    assert not backend.health().ok


def test_verify_delegates_to_the_live_check(aws: dict[str, Any], proxy: FaultProxy) -> None:
    lines = _backend(proxy, _pool(aws)).verify()
    assert lines and all(isinstance(ok, bool) and isinstance(text, str) for ok, text in lines)
    assert proxy.calls("GetCallerIdentity")
