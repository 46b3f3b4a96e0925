"""EC2 error classification as a table, the backoff, and CreateFleet responses read, hostile ones
included (pure: no AWS, no clock)."""

from __future__ import annotations

import pytest

from gha_mlops.runners.backends.ec2_errors import (
    MAX_CODE_CHARS,
    MAX_FLEET_ITEMS,
    MAX_MESSAGE_CHARS,
    THROTTLED,
    UNKNOWN_MAX_TRIES,
    Backoff,
    Verdict,
    classify,
    fleet_outcome,
    not_an_error,
)

R, F, X = Verdict.RETRY_LATER, Verdict.FAIL_OVER, Verdict.FATAL

TABLE = [
    # code, lifecycle, verdict, a word the hint must contain
    ("InsufficientInstanceCapacity", "spot", F, "on-demand"),
    ("InsufficientInstanceCapacity", "on-demand", R, "retrying"),
    ("InsufficientInstanceCapacity", "", R, "retrying"),
    ("MaxSpotInstanceCountExceeded", "spot", F, "spot quota"),
    ("MaxSpotInstanceCountExceeded", "", F, "spot quota"),
    ("SpotMaxPriceTooLow", "spot", F, "price"),
    ("InstanceLimitExceeded", "", R, "Service Quotas"),
    ("VcpuLimitExceeded", "on-demand", R, "Service Quotas"),
    ("RequestLimitExceeded", "", R, "throttled"),
    ("InternalError", "", R, "server"),
    ("ServiceUnavailable", "", R, "unavailable"),
    ("Unavailable", "", R, "unavailable"),
    ("InsufficientFreeAddressesInSubnet", "", R, "subnet"),
    ("Unsupported", "spot", X, "availability zone"),
    ("InvalidParameterValue", "", X, "runners.yaml"),
    ("InvalidSubnetID.NotFound", "", X, "subnets"),
    ("InvalidAMIID.NotFound", "", X, "ami"),
    ("InvalidAMIID.Malformed", "", X, "ami"),
    ("UnauthorizedOperation", "", X, "IAM policy"),
    ("InvalidLaunchTemplateName.NotFoundException", "", X, "launch-template"),
    ("InvalidLaunchTemplateId.VersionNotFound", "", X, "launch-template"),
    ("InvalidGroup.NotFound", "", X, "security-groups"),
    ("AuthFailure", "", X, "credentials"),
    ("OptInRequired", "", X, "subscribe"),
    ("InvalidInstanceID.NotFound", "", R, "eventually consistent"),
    ("IdempotentParameterMismatch", "", X, "bug"),
]


@pytest.mark.parametrize(("code", "lifecycle", "verdict", "word"), TABLE)
def test_every_known_code(code: str, lifecycle: str, verdict: Verdict, word: str) -> None:
    judged = classify(code, "the message", operation="CreateFleet", lifecycle=lifecycle)
    assert (judged.verdict, judged.code, judged.known) == (verdict, code, True)
    assert word in judged.hint
    # FATAL never waits; everything else says how long to wait.
    assert (judged.backoff is None) == (verdict is X)
    assert judged.summary() == f"CreateFleet: {code} ({verdict.value}): the message"


@pytest.mark.parametrize(("code", "verdict", "bounded"), [
    ("InvalidFooBar.NotFound", X, False),      # AWS's naming: a config error
    ("InvalidVolume.ZoneMismatch", X, False),
    ("SomethingNew.Malformed", X, False),
    ("InsufficientGpuCapacity", R, False),    # capacity, comes back
    ("FancyQuotaLimitExceeded", R, False),
    ("TotallyNewCode", R, True),              # unknown: retried a bounded number of times
    ("", R, True),                            # missing
])
def test_unknown_codes_by_pattern_or_bounded(code: str, verdict: Verdict, bounded: bool) -> None:
    judged = classify(code, operation="RunInstances")
    assert (judged.verdict, judged.known) == (verdict, False)
    assert judged.backoff is not None or verdict is X
    if bounded:
        assert judged.backoff is not None and judged.backoff.max_tries == UNKNOWN_MAX_TRIES
        assert not judged.backoff.exhausted(UNKNOWN_MAX_TRIES - 1)
        assert judged.backoff.exhausted(UNKNOWN_MAX_TRIES)


def test_known_retries_are_unbounded_capacity_comes_back() -> None:
    judged = classify("InsufficientInstanceCapacity", operation="CreateFleet")
    assert judged.backoff is not None and not judged.backoff.exhausted(10_000)


def test_throttling_backs_off_exponentially_with_full_jitter() -> None:
    b = classify("RequestLimitExceeded", operation="CreateFleet").backoff
    assert b == THROTTLED
    ceilings = [b.delay(n, 0.999999) for n in range(10)]
    assert ceilings[:4] == pytest.approx([1.0, 2.0, 4.0, 8.0], rel=1e-4)
    assert max(ceilings) == pytest.approx(b.cap_s, rel=1e-4)  # capped
    assert b.delay(3, 0.0) == 0.0 and b.delay(3, 0.5) == pytest.approx(4.0)  # jitter
    assert b.delay(10**9, 2.0) == b.cap_s and b.delay(-5, -1.0) == 0.0  # clamped, no overflow
    assert Backoff(1.0, 5.0, max_tries=2).exhausted(2)


def test_hostile_codes_and_messages_are_bounded_and_cleaned() -> None:
    huge = classify("RequestLimitExceeded", "x" * 10_000_000, operation="CreateFleet")
    assert len(huge.message) == MAX_MESSAGE_CHARS and huge.verdict is R
    dirty = classify("Unsupported", "a\x1b[31mred\nline\u202etxt\x00", operation="CreateFleet")
    assert dirty.message == "a [31mred line txt"
    for code in ("A" * (MAX_CODE_CHARS + 1), "Invalid<script>", "Invalid\nNotFound", "9Lives"):
        judged = classify(code, operation="CreateFleet")
        assert (judged.code, judged.verdict, judged.known) == ("<invalid>", R, False)
    wrong_types = classify(None, 42, operation=None)  # type: ignore[arg-type]
    assert (wrong_types.code, wrong_types.message, wrong_types.operation) == ("", "", "EC2")
    assert classify("InternalError", operation="Create\nFleet").operation == "EC2"


def _item(ids: list[str], itype: str = "g5.xlarge", subnet: str = "subnet-1",
          lifecycle: str = "spot") -> dict[str, object]:
    return {"InstanceIds": ids, "InstanceType": itype, "Lifecycle": lifecycle,
            "LaunchTemplateAndOverrides": {"Overrides": {"InstanceType": itype,
                                                         "SubnetId": subnet}}}


def _error(code: str, itype: str = "g5.xlarge", subnet: str = "subnet-2",
           lifecycle: str = "spot") -> dict[str, object]:
    return {"ErrorCode": code, "ErrorMessage": f"{code} for {itype}", "Lifecycle": lifecycle,
            "LaunchTemplateAndOverrides": {"Overrides": {"InstanceType": itype,
                                                         "SubnetId": subnet}}}


def test_partial_fleet_is_counted_and_its_errors_judged() -> None:
    out = fleet_outcome({"FleetId": "fleet-1", "Instances": [_item(["i-1", "i-2"])],
                         "Errors": [_error("InsufficientInstanceCapacity"),
                                    _error("Unsupported", "p4d.24xlarge", "subnet-3")]},
                        requested=3)
    assert out.fleet_id == "fleet-1" and out.partial and out.shortfall == 1
    assert [(i.instance_id, i.instance_type, i.subnet_id, i.lifecycle) for i in out.instances] \
        == [("i-1", "g5.xlarge", "subnet-1", "spot"), ("i-2", "g5.xlarge", "subnet-1", "spot")]
    assert [e.classification.code for e in out.errors[F]] == ["InsufficientInstanceCapacity"]
    fatal = out.errors[X][0]
    assert (fatal.instance_type, fatal.subnet_id) == ("p4d.24xlarge", "subnet-3")
    assert out.verdict() is F  # spot capacity is short: fail over


@pytest.mark.parametrize(("response", "requested", "partial", "verdict"), [
    ({"Instances": [_item(["i-1"])], "Errors": []}, 1, False, None),     # all launched
    ({"Instances": [_item(["i-1"])]}, 2, True, R),                      # silent shortfall
    ({"Errors": [_error("InvalidAMIID.NotFound")]}, 1, False, X),       # broken config
    ({"Errors": [_error("InsufficientInstanceCapacity", lifecycle="on-demand")]}, 1, False, R),
    ({"Instances": [_item(["i-1"])], "Errors": [_error("Unsupported")]}, 2, True, R),
    ({"Errors": [_error("Unsupported"), _error("RequestLimitExceeded")]}, 1, False, R),
])
def test_the_fleets_next_step(response: dict[str, object], requested: int, partial: bool,
                              verdict: Verdict | None) -> None:
    out = fleet_outcome(response, requested=requested)
    assert (out.partial, out.verdict()) == (partial, verdict)


def test_hostile_fleet_responses_read_as_absent_and_bounded() -> None:
    assert fleet_outcome({}).verdict() is None
    junk = fleet_outcome({"FleetId": 7, "Instances": "nope", "Errors": [1, None, "x"]})
    assert (junk.fleet_id, junk.instances, dict(junk.errors)) == ("", (), {})
    mistyped = fleet_outcome({"Instances": [{"InstanceIds": [None, 3, "", "i-ok"],
                                             "LaunchTemplateAndOverrides": "bad"},
                                            {"InstanceIds": "i-not-a-list"}],
                              "Errors": [{"ErrorCode": ["x"], "ErrorMessage": {"a": 1}}]})
    assert [i.instance_id for i in mistyped.instances] == ["i-ok"]
    assert mistyped.instances[0].instance_type == ""
    assert mistyped.errors[R][0].classification.code == ""  # missing: unknown, bounded retry
    many = fleet_outcome({"Instances": [_item([f"i-{n}" for n in range(MAX_FLEET_ITEMS + 5)])],
                          "Errors": [_error("InternalError")] * (MAX_FLEET_ITEMS + 7)})
    assert len(many.instances) == MAX_FLEET_ITEMS
    assert len(many.errors[R]) == MAX_FLEET_ITEMS and many.dropped == 12


def test_an_instance_profile_error_names_the_instance_profile() -> None:
    judged = classify("InvalidParameterValue", "Value (gha-runner) for parameter "
                      "iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name",
                      operation="CreateFleet")
    assert judged.verdict is X and "instance-profile" in judged.hint
    assert "instance-profile" not in classify("InvalidParameterValue", "bad volume size",
                                              operation="CreateFleet").hint


def test_eventual_consistency_is_retried_a_bounded_number_of_times() -> None:
    judged = classify("InvalidInstanceID.NotFound", operation="CreateTags")
    assert judged.backoff is not None and judged.backoff.exhausted(5)


@pytest.mark.parametrize(("code", "operation", "benign"), [
    ("DryRunOperation", "CreateFleet", True),
    ("InvalidInstanceID.NotFound", "TerminateInstances", True),   # destroy is idempotent
    ("ParameterNotFound", "DeleteParameter", True),
    ("InvalidInstanceID.NotFound", "DescribeInstances", False),   # not visible yet: classify
    ("UnauthorizedOperation", "TerminateInstances", False),
    ("ParameterNotFound", "GetParameter", False),
])
def test_what_is_not_an_error(code: str, operation: str, benign: bool) -> None:
    assert not_an_error(code, operation=operation) is benign
