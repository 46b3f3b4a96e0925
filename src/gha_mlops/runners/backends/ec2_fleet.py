"""The pure pieces of the EC2 backend: the tags an instance carries and how they are read back,
the ``CreateFleet`` request, the machine state of an instance, and what a launch does next
after an error (fail over to on-demand, wait, or stop and say what to fix).

Nothing here talks to AWS or reads a clock: :mod:`~gha_mlops.runners.backends.ec2` does the
I/O and these functions decide, so they are table-tested like ``runners.policy.decide``.

Tags read back from AWS are input like any other (another tool, a person with the console,
a bug may have written them): every value is bounded and checked, and a bad one reads as
missing rather than crashing ``list()``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

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
    Machine,
)
from gha_mlops.runners.backends.ec2_clients import (
    INSTANCE_ID,
    TAG_EXPIRES,
    TAG_INTERRUPTION,
    TAG_LIFECYCLE,
    TAG_PARAMETER,
)
from gha_mlops.runners.backends.ec2_errors import Classification, Verdict, clean_message
from gha_mlops.runners.config import Ec2Pool

SPOT, ON_DEMAND = "spot", "on-demand"
SPOT_TERMINATION = "Server.SpotInstanceTermination"  # an instance's StateReason.Code
MAX_TAG_VALUE = 256
_RUNNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_POOL = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")
_GPU_IDS = re.compile(r"^(\d{1,3}(,\d{1,3}){0,63})?$")
_MAX_EXPIRES = 4102444800  # 2100-01-01: a later expiry tag is not one we wrote

# EC2's instance states as machine states; "shutting-down"/"terminated" are decided in
# machine_state() (lost under an interruption, else exited / gone).
_STATES = {"pending": PENDING, "running": RUNNING, "stopping": EXITED, "stopped": EXITED}


def is_instance_id(value: str) -> bool:
    """Whether ``value`` looks like an EC2 instance id (the scaler asks every backend to
    destroy its machines: ids of other backends are not ours)."""
    return bool(INSTANCE_ID.fullmatch(value))


def parameter_name(prefix: str, owner: str, runner: str) -> str:
    """Where the runner's JIT config lives: ``{prefix}/{owner}/{runner}``."""
    return f"{prefix}/{owner}/{runner}"


def expires_at(now: float, max_lifetime: float, grace: float) -> int:
    """The expiry tag's value: launch time + the pool's max lifetime + its grace (whole
    seconds, rounded up so that an instance never expires early)."""
    return int(-(-(now + max_lifetime + grace) // 1))


def instance_tags(owner: str, runner: str, pool: str, gpus: int, *, expires: int,
                  parameter: str, lifecycle: str, extra: Mapping[str, str]
                  ) -> list[dict[str, str]]:
    """The tags of a runner instance (``Name`` shows the runner in the console). The
    config's own ``tags`` come first so that ours win a clash (config.py forbids it anyway)."""
    ours = {LABEL_OWNER: owner, LABEL_RUNNER: runner, LABEL_POOL: pool,
            LABEL_GPUS: ",".join(str(i) for i in range(gpus)), TAG_EXPIRES: str(expires),
            TAG_PARAMETER: parameter, TAG_LIFECYCLE: lifecycle, "Name": runner}
    return [{"Key": k, "Value": v} for k, v in {**extra, **ours}.items()]


def parameter_tags(owner: str, runner: str, pool: str, *, expires: int,
                   extra: Mapping[str, str]) -> list[dict[str, str]]:
    """The tags of the runner's SSM parameter (the owner tag lets the IAM policy scope it)."""
    ours = {LABEL_OWNER: owner, LABEL_RUNNER: runner, LABEL_POOL: pool,
            TAG_EXPIRES: str(expires)}
    return [{"Key": k, "Value": v} for k, v in {**extra, **ours}.items()]


def client_token(owner: str, runner: str, lifecycle: str) -> str:
    """CreateFleet's idempotency token for this runner and lifecycle: the same call retried
    after a lost answer launches nothing twice, and the on-demand fallback (another
    lifecycle) is a new request. 64 characters at most (EC2's limit)."""
    digest = hashlib.sha256(f"{owner}\0{runner}\0{lifecycle}".encode()).hexdigest()
    return f"gha-mlops-{digest[:48]}"


def overrides(pool: Ec2Pool, ami: str | None = None) -> list[dict[str, Any]]:
    """Every instance type in every subnet (EC2 picks by the allocation strategy); the
    list's order is the priority for ``capacity-optimized-prioritized``. ``ami``: an image
    id that overrides the pool's own launch template's."""
    out: list[dict[str, Any]] = []
    for n, (instance_type, subnet) in enumerate(
            (t, s) for t in pool.instance_types for s in pool.subnets):
        item: dict[str, Any] = {"InstanceType": instance_type, "SubnetId": subnet}
        if pool.spot_allocation == "capacity-optimized-prioritized":
            item["Priority"] = float(n)
        if ami:
            item["ImageId"] = ami
        out.append(item)
    return out


def fleet_request(pool: Ec2Pool, template: Mapping[str, str], *, lifecycle: str,
                  tags: Sequence[Mapping[str, str]], token: str,
                  ami_override: str | None = None) -> dict[str, Any]:
    """The ``CreateFleet`` (type ``instant``, one instance) keyword arguments. The instance's
    tags are applied by EC2 at its creation: a crash between launch and tagging cannot leak
    an untagged instance. (The volume's owner tags come from the launch template: CreateFleet
    tags instances and the fleet only.)"""
    return {
        "Type": "instant",
        "TargetCapacitySpecification": {"TotalTargetCapacity": 1,
                                        "DefaultTargetCapacityType": lifecycle},
        "SpotOptions": {"AllocationStrategy": pool.spot_allocation},
        "OnDemandOptions": {"AllocationStrategy": "lowest-price"},
        "LaunchTemplateConfigs": [{"LaunchTemplateSpecification": dict(template),
                                   "Overrides": overrides(pool, ami_override)}],
        "TagSpecifications": [{"ResourceType": "instance", "Tags": [dict(t) for t in tags]}],
        "ClientToken": token,
    }


def first_lifecycle(capacity: str, *, replacement: bool = False,
                    rerun_on_demand: bool = False) -> str:
    """The lifecycle of a launch's first try: spot unless the pool is on-demand only, or the
    launch replaces a runner whose spot instance got notice under a job
    (``LaunchSpec.replaces_interrupted``) and the pool asks such replacements on-demand
    (``ec2.rerun_on_demand``, which ``capacity: spot`` forbids)."""
    if capacity == ON_DEMAND or (replacement and rerun_on_demand and capacity != SPOT):
        return ON_DEMAND
    return SPOT


def fails_over(capacity: str, lifecycle: str, verdict: Verdict) -> bool:
    """Whether a launch that failed with ``verdict`` tries on-demand at once: only a spot
    try, only for FAIL_OVER (spot capacity or a spot limit), only where the pool allows it."""
    return lifecycle == SPOT and verdict is Verdict.FAIL_OVER and \
        capacity == "spot-then-on-demand"


# -- errors as the user reads them ------------------------------------------------------------

# Most specific first: "iaminstanceprofile" contains "ami", "InvalidGroup" means groups.
_KEYS = (("instanceprofile", "instance_profile"), ("launchtemplate", "launch_template"),
         ("keypair", "launch_template"), ("securitygroup", "security_groups"),
         ("invalidgroup", "security_groups"), ("subnet", "subnets"),
         ("instancetype", "instance_types"), ("amiid", "ami"), ("imageid", "ami"),
         ("ami-", "ami"))


def config_key(classification: Classification) -> str:
    """The ``pools[].ec2`` key a FATAL error is about (``""`` when it names none): what the
    user opens runners.yaml to fix."""
    text = (classification.code + " " + classification.message).lower().replace(" ", "")
    return next((key for needle, key in _KEYS if needle in text), "")


def fatal_error(pool: str, c: Classification) -> BackendError:
    """A launch that cannot succeed until the pool's configuration (or the credentials)
    change: the message names the pool, the key and EC2's own words."""
    key = config_key(c)
    where = f"; fix `ec2.{key}` of pool {pool!r} in runners.yaml" if key else ""
    return BackendError(f"pool {pool!r} cannot launch: {c.summary()}{where}", hint=c.hint,
                        retryable=False)


def spot_gone_error(pool: str, codes: Sequence[str]) -> BackendError:
    """A ``spot`` pool with no spot capacity in any type and subnet: it waits."""
    return BackendError(
        f"no spot capacity for pool {pool!r} in any of its instance types and subnets "
        f"({', '.join(sorted(set(codes))) or 'no instance launched'}); the pool waits and "
        "retries", hint="add instance types or subnets (other availability zones) to the "
        "pool, or allow `capacity: spot-then-on-demand`", retryable=True)


# -- instances read back ---------------------------------------------------------------------

def tag_map(instance: Mapping[str, Any]) -> dict[str, str]:
    """An instance's tags as a dict; keys and values bounded (longer values read as "")."""
    out: dict[str, str] = {}
    tags = instance.get("Tags")
    for tag in tags if isinstance(tags, list) else []:
        if not isinstance(tag, Mapping):
            continue
        key, value = tag.get("Key"), tag.get("Value")
        if isinstance(key, str) and isinstance(value, str) and len(key) <= 128:
            out[key] = value if len(value) <= MAX_TAG_VALUE else ""
    return out


def read_runner(tags: Mapping[str, str]) -> str:
    value = tags.get(LABEL_RUNNER, "")
    return value if _RUNNER.fullmatch(value) else ""


def read_pool(tags: Mapping[str, str]) -> str:
    value = tags.get(LABEL_POOL, "")
    return value if _POOL.fullmatch(value) else ""


def read_gpus(tags: Mapping[str, str]) -> tuple[str, ...]:
    value = tags.get(LABEL_GPUS, "")
    return tuple(value.split(",")) if value and _GPU_IDS.fullmatch(value) else ()


def read_expires(tags: Mapping[str, str]) -> float | None:
    value = tags.get(TAG_EXPIRES, "")
    if not value.isdigit() or len(value) > 12:
        return None
    seconds = int(value)
    return float(seconds) if 0 < seconds < _MAX_EXPIRES else None


def read_parameter(tags: Mapping[str, str], prefix: str, owner: str) -> str:
    """The SSM parameter the instance's tag names, only when it is one of this autoscaler's
    own (``{prefix}/{owner}/{runner}``): a tag naming another parameter must not make
    destroy() delete it."""
    value = tags.get(TAG_PARAMETER, "")
    head, _, runner = value.rpartition("/")
    return value if head == f"{prefix}/{owner}" and _RUNNER.fullmatch(runner) else ""


def read_notice(tags: Mapping[str, str]) -> str:
    """The interruption tag (``"<action time> <source>"``) as Machine.notice, or ""."""
    value = clean_message(tags.get(TAG_INTERRUPTION, ""))[:MAX_TAG_VALUE]
    if not value:
        return ""
    when, _, source = value.rpartition(" ")
    if not when:
        when, source = value, "unknown source"
    return f"spot interruption notice for {when} ({source})"


def interruption_tag(action_time: str, source: str) -> str:
    """The interruption tag's value: the action time (or "unknown-time") and the source."""
    when = action_time if re.fullmatch(r"[0-9T:.+Z-]{1,40}", action_time or "") else \
        "unknown-time"
    return f"{when} {source}"


def _text(value: object, limit: int = 64) -> str:
    return clean_message(value)[:limit] if isinstance(value, str) else ""


def _launch_time(instance: Mapping[str, Any]) -> float:
    value = instance.get("LaunchTime")
    return value.timestamp() if isinstance(value, datetime) else 0.0


@dataclass(frozen=True)
class Seen:
    """One instance of ours as DescribeInstances shows it, before the backend's memory of what
    it destroyed and which losses it reported decides its final state."""

    machine: Machine
    ec2_state: str
    interrupted: bool  # an interruption tag, or EC2 says spot took it
    parameter: str  # its SSM parameter ("" when the tag is missing or not ours)


def seen_instance(instance: Mapping[str, Any], prefix: str, owner: str) -> Seen | None:
    """A DescribeInstances item as a :class:`Seen` (None without an instance id)."""
    instance_id = instance.get("InstanceId")
    if not isinstance(instance_id, str) or not INSTANCE_ID.fullmatch(instance_id):
        return None
    tags = tag_map(instance)
    state_field = instance.get("State")
    ec2_state = _text(state_field.get("Name"), 32) if isinstance(state_field, Mapping) else ""
    reason = instance.get("StateReason")
    reason_code = _text(reason.get("Code")) if isinstance(reason, Mapping) else ""
    placement = instance.get("Placement")
    zone = _text(placement.get("AvailabilityZone")) if isinstance(placement, Mapping) else ""
    lifecycle = _text(instance.get("InstanceLifecycle"), 16) or \
        _text(tags.get(TAG_LIFECYCLE, ""), 16) or ON_DEMAND
    detail = " ".join(part for part in (
        _text(instance.get("InstanceType"), 32), lifecycle, _text(instance.get("SubnetId")),
        zone, ec2_state, f"({reason_code})" if reason_code else "") if part)
    notice = read_notice(tags)
    machine = Machine(id=instance_id, runner_name=read_runner(tags), pool=read_pool(tags),
                      state=_STATES.get(ec2_state, EXITED), created_at=_launch_time(instance),
                      gpus=read_gpus(tags), detail=detail, expires_at=read_expires(tags),
                      notice=notice)
    return Seen(machine, ec2_state, bool(notice) or reason_code == SPOT_TERMINATION,
                read_parameter(tags, prefix, owner))


def machine_state(seen: Seen, *, destroyed_by_us: bool, lost_reported: bool) -> str | None:
    """The state list() reports, or None to omit the instance: a shutting-down or terminated
    instance that spot took (and this process did not destroy) is LOST once; afterwards a
    shutting-down one is EXITED and a terminated one is gone."""
    if seen.ec2_state not in ("shutting-down", "terminated"):
        return seen.machine.state
    if seen.interrupted and not destroyed_by_us and not lost_reported:
        return LOST
    return EXITED if seen.ec2_state == "shutting-down" else None


__all__ = ["ON_DEMAND", "SPOT", "Seen", "client_token", "config_key", "expires_at",
           "fails_over", "fatal_error", "first_lifecycle", "fleet_request", "instance_tags",
           "interruption_tag", "is_instance_id", "machine_state", "overrides", "parameter_name",
           "parameter_tags", "read_expires", "read_notice", "read_parameter", "seen_instance",
           "spot_gone_error", "tag_map"]
