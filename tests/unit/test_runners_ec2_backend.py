"""The EC2 backend's pure pieces, as tables: the fleet's overrides and request, the tags
written and read back (hostile values read as missing), the machine state of an instance,
the fall-back decision, the errors the user reads, and the managed launch template's data."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
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
)
from gha_mlops.runners.backends.ec2 import API_ACTIONS
from gha_mlops.runners.backends.ec2_clients import (
    TAG_EXPIRES,
    TAG_INTERRUPTION,
    TAG_LIFECYCLE,
    TAG_PARAMETER,
)
from gha_mlops.runners.backends.ec2_errors import Verdict, classify
from gha_mlops.runners.backends.ec2_fleet import (
    client_token,
    config_key,
    expires_at,
    fails_over,
    fatal_error,
    first_lifecycle,
    fleet_request,
    instance_tags,
    interruption_tag,
    is_instance_id,
    machine_state,
    overrides,
    read_expires,
    read_notice,
    read_parameter,
    seen_instance,
    spot_gone_error,
)
from gha_mlops.runners.backends.ec2_template import (
    settings_hash,
    template_data,
)
from gha_mlops.runners.config import METADATA_TAG_KEY, Ec2Pool

POOL = Ec2Pool(instance_types=("g5.xlarge", "g6.xlarge"),
               subnets=("subnet-0123456789abcdef0", "subnet-0123456789abcdef1"),
               security_groups=("sg-0123456789abcdef0",), ami="ami-0123456789abcdef0",
               launch_template=None, launch_template_version="$Default",
               instance_profile="arn:aws:iam::123456789012:instance-profile/runner",
               root_volume_gb=100, capacity="spot-then-on-demand",
               spot_allocation="price-capacity-optimized", expiry_grace=3600.0)


def test_overrides_are_every_type_in_every_subnet() -> None:
    got = overrides(POOL)
    assert [(o["InstanceType"], o["SubnetId"]) for o in got] == [
        (t, s) for t in POOL.instance_types for s in POOL.subnets]
    assert all("Priority" not in o and "ImageId" not in o for o in got)
    prioritized = overrides(replace(POOL, spot_allocation="capacity-optimized-prioritized"),
                            ami="ami-0123456789abcdef9")
    assert [o["Priority"] for o in prioritized] == [0.0, 1.0, 2.0, 3.0]
    assert {o["ImageId"] for o in prioritized} == {"ami-0123456789abcdef9"}


def test_fleet_request_is_instant_one_instance_tagged_at_creation() -> None:
    tags = instance_tags("box", "box-1", "gpu", 2, expires=1_800_000_000,
                         parameter="/gha-mlops/box/box-1", lifecycle="spot",
                         extra={"team": "ml", "Name": "theirs"})
    got = fleet_request(POOL, {"LaunchTemplateName": "t", "Version": "3"}, lifecycle="spot",
                        tags=tags, token="tok")
    assert got["Type"] == "instant" and got["ClientToken"] == "tok"
    assert got["TargetCapacitySpecification"] == {"TotalTargetCapacity": 1,
                                                  "DefaultTargetCapacityType": "spot"}
    assert got["SpotOptions"] == {"AllocationStrategy": "price-capacity-optimized"}
    assert got["TagSpecifications"][0]["ResourceType"] == "instance"
    as_dict = {t["Key"]: t["Value"] for t in got["TagSpecifications"][0]["Tags"]}
    assert as_dict == {"team": "ml", "Name": "box-1", LABEL_OWNER: "box",
                       LABEL_RUNNER: "box-1", LABEL_POOL: "gpu", LABEL_GPUS: "0,1",
                       TAG_EXPIRES: "1800000000", TAG_PARAMETER: "/gha-mlops/box/box-1",
                       TAG_LIFECYCLE: "spot"}
    assert "UserData" not in str(got)


def test_client_token_is_stable_per_runner_and_lifecycle() -> None:
    token = client_token("box", "box-1", "spot")
    assert token == client_token("box", "box-1", "spot") and len(token) <= 64
    assert len({token, client_token("box", "box-1", "on-demand"),
                client_token("box", "box-2", "spot"), client_token("bo", "xbox-1", "spot")}
               ) == 4


@pytest.mark.parametrize(("now", "lifetime", "grace", "want"), [
    (1000.0, 3600.0, 600.0, 5200), (1000.2, 0.0, 0.0, 1001), (0.0, 21600.0, 3600.0, 25200)])
def test_expiry_never_early(now: float, lifetime: float, grace: float, want: int) -> None:
    assert expires_at(now, lifetime, grace) == want


@pytest.mark.parametrize(("capacity", "lifecycle", "verdict", "want"), [
    ("spot-then-on-demand", "spot", Verdict.FAIL_OVER, True),
    ("spot-then-on-demand", "spot", Verdict.RETRY_LATER, False),  # throttled: not capacity
    ("spot-then-on-demand", "spot", Verdict.FATAL, False),
    ("spot-then-on-demand", "on-demand", Verdict.FAIL_OVER, False),  # no second fallback
    ("spot", "spot", Verdict.FAIL_OVER, False),
    ("on-demand", "on-demand", Verdict.FAIL_OVER, False),
])
def test_fails_over_only_from_spot_capacity_where_allowed(
        capacity: str, lifecycle: str, verdict: Verdict, want: bool) -> None:
    assert fails_over(capacity, lifecycle, verdict) is want


def test_first_lifecycle() -> None:
    assert [first_lifecycle(c) for c in ("spot", "spot-then-on-demand", "on-demand")] == [
        "spot", "spot", "on-demand"]
    # The replacement of a runner whose spot instance got notice under a job: on-demand only
    # where the pool asks it (rerun_on_demand) and allows on-demand at all.
    replacement = [first_lifecycle(c, replacement=True, rerun_on_demand=True)
                   for c in ("spot", "spot-then-on-demand", "on-demand")]
    assert replacement == ["spot", "on-demand", "on-demand"]
    assert first_lifecycle("spot-then-on-demand", replacement=True) == "spot"
    assert first_lifecycle("spot-then-on-demand", rerun_on_demand=True) == "spot"


@pytest.mark.parametrize(("code", "message", "key"), [
    ("InvalidSubnetID.NotFound", "The subnet ID 'subnet-1' does not exist", "subnets"),
    ("InvalidAMIID.NotFound", "The image id '[ami-1]' does not exist", "ami"),
    ("InvalidParameterValue", "Value (x) for parameter iamInstanceProfile.name is invalid",
     "instance_profile"),
    ("InvalidGroup.NotFound", "The security group 'sg-1' does not exist", "security_groups"),
    ("InvalidLaunchTemplateName.NotFoundException", "not found", "launch_template"),
    ("UnauthorizedOperation", "You are not authorized", ""),
])
def test_fatal_errors_name_the_key_to_fix(code: str, message: str, key: str) -> None:
    c = classify(code, message, operation="CreateFleet", lifecycle="spot")
    assert config_key(c) == key
    err = fatal_error("gpu", c)
    assert not err.retryable and "pool 'gpu'" in err.message and code in err.message
    assert (f"`ec2.{key}`" in err.message) is bool(key)


def test_spot_gone_waits_and_says_what_helps() -> None:
    err = spot_gone_error("gpu", ["InsufficientInstanceCapacity"] * 3)
    assert err.retryable and "InsufficientInstanceCapacity)" in err.message
    assert "spot-then-on-demand" in (err.hint or "")


NOW = dt.datetime(2026, 12, 6, 2, 0, tzinfo=dt.timezone.utc)


def _instance(state: str = "running", reason: str = "", **tags: str) -> dict[str, Any]:
    base = {LABEL_OWNER: "box", LABEL_RUNNER: "box-1", LABEL_POOL: "gpu", LABEL_GPUS: "0",
            TAG_EXPIRES: "1800000000", TAG_PARAMETER: "/gha-mlops/box/box-1"}
    base.update(tags)
    return {"InstanceId": "i-0123456789abcdef0", "InstanceType": "g5.xlarge",
            "InstanceLifecycle": "spot", "SubnetId": "subnet-0123456789abcdef0",
            "Placement": {"AvailabilityZone": "us-east-1a"}, "LaunchTime": NOW,
            "State": {"Name": state}, "StateReason": {"Code": reason},
            "Tags": [{"Key": k, "Value": v} for k, v in base.items()]}


def test_an_instance_read_back() -> None:
    seen = seen_instance(_instance(), "/gha-mlops", "box")
    assert seen is not None
    m = seen.machine
    assert (m.id, m.runner_name, m.pool, m.state, m.gpus) == (
        "i-0123456789abcdef0", "box-1", "gpu", RUNNING, ("0",))
    assert m.created_at == NOW.timestamp() and m.expires_at == 1_800_000_000.0
    assert m.detail == "g5.xlarge spot subnet-0123456789abcdef0 us-east-1a running"
    assert seen.parameter == "/gha-mlops/box/box-1" and not seen.interrupted


@pytest.mark.parametrize(("tags", "field", "want"), [
    ({LABEL_RUNNER: "box 1; rm -rf"}, "runner_name", ""),
    ({LABEL_RUNNER: "x" * 300}, "runner_name", ""),
    ({LABEL_POOL: "GPU!"}, "pool", ""),
    ({LABEL_GPUS: "0,a"}, "gpus", ()),
    ({TAG_EXPIRES: "-5"}, "expires_at", None),
    ({TAG_EXPIRES: "99999999999999"}, "expires_at", None),
    ({TAG_EXPIRES: "1e9"}, "expires_at", None),
    ({TAG_INTERRUPTION: "\x1b[31mred 2026"}, "notice",
     "spot interruption notice for [31mred (2026)"),
])
def test_hostile_tags_read_as_missing(tags: dict[str, str], field: str, want: Any) -> None:
    seen = seen_instance(_instance(**tags), "/gha-mlops", "box")
    assert seen is not None and getattr(seen.machine, field) == want


def test_hostile_instances_do_not_crash() -> None:
    assert seen_instance({"InstanceId": "i-../../etc"}, "/p", "box") is None
    assert seen_instance({}, "/p", "box") is None
    junk = seen_instance({"InstanceId": "i-0123456789abcdef0", "Tags": "x", "State": [],
                          "LaunchTime": "yesterday", "Placement": 3}, "/p", "box")
    assert junk is not None and junk.machine.state == EXITED and junk.machine.runner_name == ""


def test_the_parameter_tag_must_be_under_our_own_path() -> None:
    assert read_parameter({TAG_PARAMETER: "/gha-mlops/box/r"}, "/gha-mlops", "box") == \
        "/gha-mlops/box/r"
    for bad in ("/gha-mlops/other/r", "/prod/db-password", "/gha-mlops/box/../x",
                "gha-mlops/box/r"):
        assert read_parameter({TAG_PARAMETER: bad}, "/gha-mlops", "box") == ""


def test_expiry_and_notice_readers() -> None:
    assert read_expires({TAG_EXPIRES: "1800000000"}) == 1_800_000_000.0
    assert read_expires({}) is None
    assert read_notice({TAG_INTERRUPTION: "2026-12-06T03:02:00Z imds"}) == \
        "spot interruption notice for 2026-12-06T03:02:00Z (imds)"
    assert read_notice({}) == ""
    assert interruption_tag("2026-12-06T03:02:00Z", "eventbridge") == \
        "2026-12-06T03:02:00Z eventbridge"
    assert interruption_tag("", "eventbridge") == "unknown-time eventbridge"
    assert interruption_tag("<script>", "eventbridge") == "unknown-time eventbridge"


@pytest.mark.parametrize(("state", "reason", "tags", "destroyed", "reported", "want"), [
    ("pending", "", {}, False, False, PENDING),
    ("running", "", {}, False, False, RUNNING),
    ("stopping", "", {}, False, False, EXITED),
    ("stopped", "", {}, False, False, EXITED),
    ("shutting-down", "", {}, False, False, EXITED),  # its runner powered it off
    ("terminated", "", {}, False, False, None),
    ("terminated", "Server.SpotInstanceTermination", {}, False, False, LOST),
    ("shutting-down", "", {TAG_INTERRUPTION: "2026-12-06T03:02:00Z imds"}, False, False, LOST),
    ("terminated", "Server.SpotInstanceTermination", {}, True, False, None),  # we did it
    ("terminated", "Server.SpotInstanceTermination", {}, False, True, None),  # said once
    ("shutting-down", "Server.SpotInstanceTermination", {}, False, True, EXITED),
    ("running", "", {TAG_INTERRUPTION: "2026-12-06T03:02:00Z imds"}, False, False, RUNNING),
])
def test_machine_state(state: str, reason: str, tags: dict[str, str], destroyed: bool,
                       reported: bool, want: str | None) -> None:
    seen = seen_instance(_instance(state, reason, **tags), "/gha-mlops", "box")
    assert seen is not None
    assert machine_state(seen, destroyed_by_us=destroyed, lost_reported=reported) == want


def test_instance_ids() -> None:
    assert is_instance_id("i-0123456789abcdef0") and is_instance_id("i-1c8088fa")
    assert not is_instance_id("0123456789abcdef" * 4) and not is_instance_id("i-XYZ")


def test_managed_template_data() -> None:
    data = template_data(POOL, image_id="ami-0123456789abcdef0", root_device="/dev/sda1",
                         volume_tags={LABEL_OWNER: "box"})
    assert data["MetadataOptions"] == {"HttpTokens": "required", "HttpPutResponseHopLimit": 2,
                                       "HttpEndpoint": "enabled",
                                       "InstanceMetadataTags": "enabled"}
    assert data["InstanceInitiatedShutdownBehavior"] == "terminate" and "UserData" not in data
    assert data["IamInstanceProfile"] == {"Arn": POOL.instance_profile}
    assert data["BlockDeviceMappings"][0]["Ebs"] == {
        "VolumeType": "gp3", "DeleteOnTermination": True, "VolumeSize": 100}
    assert data["TagSpecifications"] == [{"ResourceType": "volume", "Tags": [
        {"Key": LABEL_OWNER, "Value": "box"}]}]
    named = template_data(replace(POOL, instance_profile="runner", root_volume_gb=None,
                                  security_groups=()), image_id="ami-0123456789abcdef0",
                          root_device="/dev/xvda", volume_tags={})
    assert named["IamInstanceProfile"] == {"Name": "runner"} and "SecurityGroupIds" not in named
    assert "VolumeSize" not in named["BlockDeviceMappings"][0]["Ebs"]
    assert settings_hash(data) == settings_hash(dict(reversed(list(data.items()))))
    assert settings_hash(data) != settings_hash(named)


def test_metadata_tag_keys() -> None:
    ok = ("dev.gha-mlops.runner", "team", "a+b=c,d_e:f@g-h")
    assert all(METADATA_TAG_KEY.fullmatch(key) for key in ok)
    assert not any(METADATA_TAG_KEY.fullmatch(key)
                   for key in ("cost center", "a/b", "team\n", "é", "x" * 129))


def test_api_actions_name_service_and_action() -> None:
    assert {"ec2:CreateFleet", "ec2:TerminateInstances", "ssm:PutParameter",
            "ssm:GetParameter", "ssm:DeleteParameter", "sqs:ReceiveMessage",
            "iam:PassRole"} <= API_ACTIONS
    assert all(a.split(":")[0] in ("ec2", "ssm", "sqs", "iam") for a in API_ACTIONS)


def test_api_actions_cover_the_instance_agent() -> None:
    from gha_mlops.runners.agent import API_ACTIONS as AGENT

    assert AGENT <= API_ACTIONS
