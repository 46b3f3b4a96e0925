"""What to do about an EC2 error: retry later, fail over, or stop and tell the user (pure).

The EC2 backend hands every error code it meets (a ``ClientError`` of any call, each item of
a ``CreateFleet`` response's ``Errors``) to :func:`classify`, and every ``CreateFleet``
response to :func:`fleet_outcome`. Nothing here talks to AWS, reads a clock or draws a
random number: like ``runners.policy.decide``, the same functions run in the benchmarks'
simulator and in table tests.

The three verdicts:

- ``RETRY_LATER``: throttling, a 5xx, on-demand capacity or a quota our own instances hold
  (it comes back as they finish). Carries a :class:`Backoff`; throttling backs off
  exponentially with full jitter so that several autoscalers do not retry in lock step.
- ``FAIL_OVER``: spot capacity or a spot limit. Try on-demand where the pool's capacity
  policy allows it (``spot-then-on-demand``); in a ``spot``-only pool, wait with the backoff.
- ``FATAL``: a configuration or permission error (a bad AMI, subnet, launch template,
  instance profile, security group, no permission): trying again cannot help, so the
  classification says what to fix, and the pool stops launching until the config changes.

Unknown codes (AWS adds codes without notice) follow AWS's naming: ``Invalid*``,
``*.NotFound``, ``*.Malformed``, ``Unauthorized*`` and ``MissingParameter*`` are FATAL;
``Insufficient*`` and ``*LimitExceeded`` are RETRY_LATER. Anything else is RETRY_LATER with a
bounded number of tries (:data:`UNKNOWN_MAX_TRIES`): an unknown transient must not disable a
pool for good, and an unknown permanent error must not loop silently for ever: after the
tries the backend reports it as an error with the code and message.

Input is hostile (a proxy, a future API version, a bug): codes and messages are bounded and
stripped of control characters, and fields of the wrong type read as missing.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

MAX_CODE_CHARS = 100
MAX_MESSAGE_CHARS = 1000
MAX_FLEET_ITEMS = 1000  # instances ids or errors read from one response; the rest are counted
UNKNOWN_MAX_TRIES = 3

_CODE = re.compile(r"[A-Za-z][A-Za-z0-9._-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]+")
_OPERATION = re.compile(r"[A-Z][A-Za-z0-9]{0,63}")


class Verdict(enum.Enum):
    RETRY_LATER = "retry-later"
    FAIL_OVER = "fail-over"
    FATAL = "fatal"


@dataclass(frozen=True)
class Backoff:
    """How long to wait before the next try, and for how many tries (None: no bound)."""

    base_s: float
    cap_s: float
    max_tries: int | None = None

    def delay(self, attempt: int, draw: float) -> float:
        """Seconds to wait before try ``attempt + 1`` (``attempt`` >= 0 tries failed so far).

        Full jitter: ``draw * min(cap, base * 2**attempt)``, ``draw`` in [0, 1) from the
        caller's random source (so this stays pure); values outside are clamped.
        """
        ceiling = min(self.cap_s, self.base_s * float(1 << min(max(attempt, 0), 32)))
        return min(max(draw, 0.0), 1.0) * ceiling

    def exhausted(self, tries: int) -> bool:
        """Whether ``tries`` failed tries used up the bound (never, without one)."""
        return self.max_tries is not None and tries >= self.max_tries


THROTTLED = Backoff(base_s=1.0, cap_s=60.0)
SERVER = Backoff(base_s=5.0, cap_s=120.0)
CAPACITY = Backoff(base_s=30.0, cap_s=300.0)
QUOTA = Backoff(base_s=60.0, cap_s=600.0)
SERVER_BOUNDED = Backoff(base_s=1.0, cap_s=10.0, max_tries=5)
UNKNOWN = Backoff(base_s=10.0, cap_s=120.0, max_tries=UNKNOWN_MAX_TRIES)


@dataclass(frozen=True)
class Classification:
    """One EC2 error, judged. ``hint`` says what happens next or, when FATAL, what to fix."""

    verdict: Verdict
    code: str  # bounded and checked; "" when missing, "<invalid>" when not a code
    message: str  # bounded, control characters replaced
    operation: str
    hint: str
    backoff: Backoff | None = None  # None only when FATAL
    known: bool = True  # False: classified by name pattern or by default

    def summary(self) -> str:
        """One log line: ``CreateFleet: InsufficientInstanceCapacity (fail-over): message``."""
        text = f"{self.operation}: {self.code or '<no code>'} ({self.verdict.value})"
        return f"{text}: {self.message}" if self.message else text


_R, _F, _X = Verdict.RETRY_LATER, Verdict.FAIL_OVER, Verdict.FATAL

_SPOT_ONLY = "try on-demand where the pool's capacity policy allows it, or wait and retry"
_FIX_TEMPLATE = "check the pool's launch-template in runners.yaml (name or id, and version)"

# code -> (verdict, backoff, hint). Capacity codes depend on the lifecycle: see classify().
_TABLE: dict[str, tuple[Verdict, Backoff | None, str]] = {
    # Throttling and server errors: the request was fine, AWS was not.
    "RequestLimitExceeded": (_R, THROTTLED, "EC2 throttled the account; backing off"),
    "Throttling": (_R, THROTTLED, "the API throttled the account; backing off"),
    "ThrottlingException": (_R, THROTTLED, "the API throttled the account; backing off"),
    "RequestThrottled": (_R, THROTTLED, "the API throttled the account; backing off"),
    "InternalError": (_R, SERVER, "an EC2 server error; retrying"),
    "InternalFailure": (_R, SERVER, "an EC2 server error; retrying"),
    "ServiceUnavailable": (_R, SERVER, "EC2 is unavailable; retrying"),
    "Unavailable": (_R, SERVER, "EC2 is unavailable; retrying"),
    "IncorrectInstanceState": (_R, SERVER, "the instance is changing state; retrying"),
    # Eventual consistency: an instance just launched is not visible to every call at once.
    "InvalidInstanceID.NotFound": (_R, SERVER_BOUNDED, "the instance is not visible yet "
                                   "(EC2 is eventually consistent); retrying a few times"),
    "InsufficientFreeAddressesInSubnet": (
        _R, CAPACITY, "a subnet has no free address; add subnets to the pool if it lasts"),
    # Quotas our own instances hold: they come back as instances finish.
    "InstanceLimitExceeded": (
        _R, QUOTA, "the account's instance quota is reached; request an increase in Service "
                   "Quotas or lower the pool's max"),
    "VcpuLimitExceeded": (
        _R, QUOTA, "the account's vCPU quota for this instance family is reached; request an "
                   "increase in Service Quotas (Running On-Demand instances) or lower max"),
    # Spot: on-demand may have what spot lacks.
    "MaxSpotInstanceCountExceeded": (
        _F, CAPACITY, "the account's spot quota is reached; " + _SPOT_ONLY),
    "MaxSpotFleetRequestCountExceeded": (
        _F, CAPACITY, "the account's spot fleet quota is reached; " + _SPOT_ONLY),
    "SpotMaxPriceTooLow": (
        _F, CAPACITY, "the spot price is above the pool's max price; " + _SPOT_ONLY
                      + " (or raise spot-max-price)"),
    # Configuration and permissions: retrying cannot help.
    "InvalidAMIID.NotFound": (_X, None, "the pool's ami does not exist in this region (or is "
                                        "not shared with the account): fix ami in runners.yaml"),
    "InvalidAMIID.Malformed": (_X, None, "the pool's ami is not an AMI id: fix it"),
    "InvalidAMIID.Unavailable": (_X, None, "the pool's ami is being deregistered: use another"),
    "InvalidSubnetID.NotFound": (_X, None, "a subnet of the pool does not exist in this region: "
                                           "fix subnets in runners.yaml"),
    "InvalidSubnetID.Malformed": (_X, None, "a subnet of the pool is not a subnet id: fix it"),
    "InvalidSubnet": (_X, None, "a subnet of the pool cannot be used: fix subnets"),
    "InvalidLaunchTemplateName.NotFoundException": (_X, None, _FIX_TEMPLATE),
    "InvalidLaunchTemplateName.MalformedException": (_X, None, _FIX_TEMPLATE),
    "InvalidLaunchTemplateId.NotFound": (_X, None, _FIX_TEMPLATE),
    "InvalidLaunchTemplateId.Malformed": (_X, None, _FIX_TEMPLATE),
    "InvalidLaunchTemplateId.VersionNotFound": (_X, None, _FIX_TEMPLATE),
    "InvalidGroup.NotFound": (_X, None, "a security group of the pool does not exist in the "
                                        "subnets' VPC: fix security-groups"),
    "InvalidSecurityGroupID.NotFound": (_X, None, "a security group of the pool does not exist: "
                                                  "fix security-groups"),
    "InvalidKeyPair.NotFound": (_X, None, "the launch template names a key pair that does not "
                                          "exist: fix or remove it"),
    "InvalidParameterValue": (_X, None, "EC2 rejected a value of the pool's config (the message "
                                        "names it): fix runners.yaml"),
    "InvalidParameterCombination": (_X, None, "EC2 rejected a combination of the pool's settings "
                                              "(the message names it): fix runners.yaml"),
    "InvalidParameter": (_X, None, "EC2 rejected a setting of the pool: fix runners.yaml"),
    "MissingParameter": (_X, None, "a required setting is missing from the pool: fix it"),
    "Unsupported": (_X, None, "an instance type is not offered in a subnet's availability zone "
                              "(the message names them): remove that type or subnet"),
    "UnsupportedOperation": (_X, None, "EC2 does not support this with the pool's settings "
                                       "(the message says which): fix runners.yaml"),
    "UnauthorizedOperation": (_X, None, "the autoscaler's credentials may not do this: add the "
                                        "permission to its IAM policy (docs/runners-aws.md)"),
    "AccessDenied": (_X, None, "the autoscaler's credentials may not do this: fix its IAM policy"),
    "AuthFailure": (_X, None, "AWS rejected the credentials: check the autoscaler's role/keys"),
    "InvalidClientTokenId": (_X, None, "the access key does not exist: fix the credentials"),
    "SignatureDoesNotMatch": (_X, None, "the secret key is wrong: fix the credentials"),
    "ExpiredToken": (_X, None, "the session credentials expired: renew them"),
    "OptInRequired": (_X, None, "the account is not subscribed to this (e.g. a marketplace AMI "
                                "or an opt-in region): subscribe, or use another AMI/region"),
    "Blocked": (_X, None, "the account is blocked: contact AWS support"),
    "IdempotentParameterMismatch": (_X, None, "a client token was reused with other parameters: "
                                              "a bug in gha-mlops, please report it"),
    "PendingVerification": (_X, None, "the account is still being verified by AWS (can take "
                                      "hours): wait for it, then restart"),
}

_CAPACITY_CODES = frozenset({
    "InsufficientInstanceCapacity", "InsufficientCapacity", "InsufficientHostCapacity",
    "InsufficientReservedInstanceCapacity", "InsufficientCapacityOnHost",
})


def _clean_code(code: object) -> str:
    if not isinstance(code, str) or not code:
        return ""
    if len(code) > MAX_CODE_CHARS or not _CODE.fullmatch(code):
        return "<invalid>"
    return code


def clean_message(message: object) -> str:
    """``message`` bounded to :data:`MAX_MESSAGE_CHARS`, control characters replaced (safe to
    log and to put in an annotation); not a string reads as ``""``."""
    if not isinstance(message, str):
        return ""
    head = message[: MAX_MESSAGE_CHARS * 2]  # bound the regex's work before cleaning
    text = _CONTROL.sub(" ", head).strip()
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def _by_pattern(code: str) -> tuple[Verdict, Backoff | None, str] | None:
    """Unknown codes named the way AWS names their classes."""
    if code.startswith(("Invalid", "Unauthorized", "MissingParameter")) or \
            code.endswith((".NotFound", ".Malformed", "NotFoundException")):
        return _X, None, "EC2 rejected the pool's config or credentials (the message says " \
                         "what): fix runners.yaml or the IAM policy"
    if code.startswith("Insufficient"):
        return _R, CAPACITY, "EC2 lacks capacity; retrying later"
    if code.endswith("LimitExceeded"):
        return _R, QUOTA, "an account limit is reached; request an increase or lower max"
    return None


def classify(code: str, message: str = "", *, operation: str,
             lifecycle: str = "") -> Classification:
    """Judge one EC2 error ``code`` (with its ``message``) met in ``operation`` (the API
    action, e.g. ``"CreateFleet"``). ``lifecycle`` is ``"spot"`` or ``"on-demand"`` where
    known (a ``CreateFleet`` error item says it): capacity is FAIL_OVER for spot (on-demand
    may have it) and RETRY_LATER otherwise (it comes back; the fleet already spreads over
    types and subnets). Never raises; the returned code and message are bounded."""
    clean = _clean_code(code)
    text = clean_message(message)
    op = operation if isinstance(operation, str) and _OPERATION.fullmatch(operation) else "EC2"
    if clean in _CAPACITY_CODES:
        if lifecycle == "spot":
            return Classification(_F, clean, text, op, "no spot capacity for the pool's types "
                                  "and subnets; " + _SPOT_ONLY, CAPACITY)
        return Classification(_R, clean, text, op, "EC2 has no capacity for the pool's types "
                              "in its subnets now; retrying later (more types or subnets help)",
                              CAPACITY)
    entry = _TABLE.get(clean)
    if entry is not None:
        hint = entry[2]
        if clean == "InvalidParameterValue" and "instanceprofile" in text.lower().replace(" ", ""):
            hint = ("the pool's instance-profile does not exist, or the autoscaler may not pass "
                    "its role (iam:PassRole): fix instance-profile or the IAM policy (a profile "
                    "created seconds ago is not usable yet)")
        return Classification(entry[0], clean, text, op, hint, entry[1])
    guessed = _by_pattern(clean) if clean not in ("", "<invalid>") else None
    if guessed is not None:
        return Classification(guessed[0], clean, text, op, guessed[2], guessed[1], known=False)
    return Classification(_R, clean, text, op, f"an error gha-mlops does not know; retrying at "
                          f"most {UNKNOWN_MAX_TRIES} times, then reporting it", UNKNOWN,
                          known=False)


_DELETES = ("Terminate", "Delete", "Cancel", "Deregister")
_GONE = frozenset({"InvalidInstanceID.NotFound", "ParameterNotFound", "InvalidFleetId.NotFound",
                   "InvalidLaunchTemplateId.NotFound",
                   "InvalidLaunchTemplateName.NotFoundException",
                   "AWS.SimpleQueueService.NonExistentQueue", "ResourceNotFoundException"})


def not_an_error(code: str, *, operation: str) -> bool:
    """Whether ``code`` means the call got what it wanted: ``DryRunOperation`` (a dry run that
    would have succeeded: ``runners check --live``), or the resource a destroying call
    (``Terminate*``, ``Delete*``, ``Cancel*``, ``Deregister*``) names is already gone (destroy
    is idempotent). Judge everything else with :func:`classify`."""
    if code == "DryRunOperation":
        return True
    return isinstance(operation, str) and operation.startswith(_DELETES) and code in _GONE


@dataclass(frozen=True)
class FleetInstance:
    instance_id: str
    instance_type: str = ""
    subnet_id: str = ""
    lifecycle: str = ""  # "spot" | "on-demand" | "" (not said)


@dataclass(frozen=True)
class FleetError:
    """One error item of a fleet: the override it concerns and its classification."""

    classification: Classification
    instance_type: str = ""
    subnet_id: str = ""
    lifecycle: str = ""


@dataclass(frozen=True)
class FleetOutcome:
    """A ``CreateFleet`` (type ``instant``) response, read.

    ``partial``: some instances launched, but errors came too, or fewer than requested.
    ``shortfall``: how many fewer than ``requested`` launched (0 when not given).
    ``dropped``: instance ids or error items past :data:`MAX_FLEET_ITEMS`, not read.
    """

    fleet_id: str
    instances: tuple[FleetInstance, ...]
    errors: Mapping[Verdict, tuple[FleetError, ...]] = field(default_factory=dict)
    partial: bool = False
    shortfall: int = 0
    dropped: int = 0

    def verdict(self) -> Verdict | None:
        """The next step for what did not launch: None when nothing failed (RETRY_LATER for a
        silent shortfall); FATAL only when
        every error is FATAL and nothing launched (a broken config); otherwise FAIL_OVER if
        any spot capacity error, else RETRY_LATER (FATAL items of a partly good fleet, e.g. one
        type not offered in one zone, are the backend's to log, not to stop the pool for)."""
        if not any(self.errors.values()):
            return _R if self.shortfall else None
        if self.errors.get(_F):
            return _F
        if self.errors.get(_R) or self.instances:
            return _R
        return _X


def _text(value: object, limit: int = 256) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _items(value: object) -> list[Mapping[str, object]]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def _override(item: Mapping[str, object]) -> tuple[str, str]:
    lto = item.get("LaunchTemplateAndOverrides")
    overrides = lto.get("Overrides") if isinstance(lto, Mapping) else None
    if not isinstance(overrides, Mapping):
        return "", ""
    return _text(overrides.get("InstanceType")), _text(overrides.get("SubnetId"))


def fleet_outcome(response: Mapping[str, object], *, requested: int | None = None,
                  operation: str = "CreateFleet") -> FleetOutcome:
    """Read a ``CreateFleet`` response as boto3 parses it (``FleetId``, ``Instances`` with
    ``InstanceIds``/``InstanceType``/``Lifecycle``/``LaunchTemplateAndOverrides``, ``Errors``
    with ``ErrorCode``/``ErrorMessage``/``Lifecycle``). Missing or mistyped fields read as
    absent; at most :data:`MAX_FLEET_ITEMS` ids and errors are read. ``requested``: the target
    capacity, to count a shortfall without errors as partial. Never raises."""
    instances: list[FleetInstance] = []
    dropped = 0
    for item in _items(response.get("Instances")):
        instance_type, subnet = _override(item)
        instance_type = _text(item.get("InstanceType")) or instance_type
        lifecycle = _text(item.get("Lifecycle"), 32)
        ids = item.get("InstanceIds")
        for instance_id in ids if isinstance(ids, list) else []:
            if not isinstance(instance_id, str) or not instance_id:
                continue
            if len(instances) >= MAX_FLEET_ITEMS:
                dropped += 1
                continue
            instances.append(FleetInstance(instance_id[:64], instance_type, subnet, lifecycle))
    errors: dict[Verdict, list[FleetError]] = {}
    for n, item in enumerate(_items(response.get("Errors"))):
        if n >= MAX_FLEET_ITEMS:
            dropped += 1
            continue
        lifecycle = _text(item.get("Lifecycle"), 32)
        judged = classify(_text(item.get("ErrorCode"), MAX_CODE_CHARS + 1),
                          _text(item.get("ErrorMessage"), MAX_MESSAGE_CHARS * 2),
                          operation=operation, lifecycle=lifecycle)
        instance_type, subnet = _override(item)
        errors.setdefault(judged.verdict, []).append(
            FleetError(judged, instance_type, subnet, lifecycle))
    shortfall = max(0, requested - len(instances)) if requested is not None else 0
    partial = bool(instances) and (bool(errors) or shortfall > 0)
    return FleetOutcome(_text(response.get("FleetId"), 64), tuple(instances),
                        {verdict: tuple(items) for verdict, items in errors.items()},
                        partial, shortfall, dropped)
