"""``gha-mlops runners check --live`` for the ec2 pools: does the account hold what
``runners.yaml`` names, and may the autoscaler's credentials use it?

:func:`verify` asks AWS, read-only, one question per key of each ec2 pool, and answers with
one line per question: ``(True, "pool gpu: ec2.subnets[0] subnet-0abc: us-east-1a in vpc-1")``
or ``(False, "pool gpu: ec2.subnets[1] subnet-0def: not found in us-east-1
(InvalidSubnetID.NotFound): ...")``. Every line names the pool and the key; a False line says
what to fix. The one call that could change something, ``RunInstances``, is made with
``DryRun=True`` (``DryRunOperation`` means the permission and the parameters are good); an
endpoint that ignored the flag has what it launched terminated at once.

Every AWS error goes through :func:`~gha_mlops.runners.backends.ec2_errors.classify`; a
permission error names the IAM action to grant. Answers are hostile (a proxy, a compatible
endpoint): fields of the wrong type read as missing, and text shown is bounded and stripped
of control characters. Nothing raises but a bug: an unreachable endpoint or missing
credentials is a False line too. No secret is shown (the caller's ARN and account are not
secrets).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gha_mlops.runners.backends.base import LABEL_OWNER
from gha_mlops.runners.backends.ec2_clients import AMI_ID, transport_errors
from gha_mlops.runners.backends.ec2_errors import Verdict, classify, clean_message, not_an_error

if TYPE_CHECKING:
    from gha_mlops.runners.backends.ec2_clients import Ec2Clients
    from gha_mlops.runners.config import Ec2Pool, Ec2Settings, Pool

Line = tuple[bool, str]

# The IAM actions verify() may call (sts:GetCallerIdentity needs no permission;
# TerminateInstances only for an endpoint that launched despite DryRun). The autoscaler's
# policy in docs/runners-aws.md allows each (tests/unit/test_runners_aws_doc.py checks).
API_ACTIONS: frozenset[str] = frozenset({
    "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups", "ec2:DescribeImages",
    "ec2:DescribeLaunchTemplateVersions", "ec2:DescribeInstanceTypeOfferings",
    "ec2:DescribeInstanceTypes", "ec2:RunInstances", "ec2:CreateFleet",
    "ec2:CreateLaunchTemplate", "ec2:TerminateInstances",
    "ssm:GetParameter", "sqs:GetQueueUrl", "sqs:GetQueueAttributes",
})

DOCS = "docs/runners-aws.md"
MAX_SHOWN = 300  # characters of an AWS message in one line
MAX_POLICY_CHARS = 64 * 1024  # an SQS queue policy is at most 20 KiB: more is not one
_SERVICES = {"ec2": "ec2", "ssm": "ssm", "sqs": "sqs", "sts": "sts"}
_PERMISSION = frozenset({"UnauthorizedOperation", "AccessDenied", "AccessDeniedException",
                         "UnauthorizedAccess", "AuthorizationError"})
_NOT_FOUND_HINTS = {
    "ParameterNotFound": "create the parameter, or fix the pool's ami (resolve:ssm:/path)",
    "InvalidInstanceType": "fix the pool's instance_types (e.g. g5.xlarge)",
    "AWS.SimpleQueueService.NonExistentQueue": (
        f"create the queue and the EventBridge rule that feeds it ({DOCS}: the interruption "
        "queue), or fix backends.ec2.interruption_queue"),
    "QueueDoesNotExist": (
        f"create the queue and the EventBridge rule that feeds it ({DOCS}: the interruption "
        "queue), or fix backends.ec2.interruption_queue"),
}
_ACCOUNT = re.compile(r"^\d{12}$")
_WORD = re.compile(r"^[A-Za-z0-9._:/+=@-]{1,256}$")


@dataclass(frozen=True)
class _Answer:
    """One AWS call's outcome: ``data`` when it answered, else ``problem`` (a line's tail)."""

    data: Mapping[str, Any] = field(default_factory=dict)
    problem: str = ""
    code: str = ""

    @property
    def ok(self) -> bool:
        return not self.problem


def _text(value: object, limit: int = 256) -> str:
    """A string from an answer, bounded and safe to print; anything else reads as ""."""
    return clean_message(value)[:limit] if isinstance(value, str) else ""


def _word(value: object) -> str:
    """An id, name or ARN from an answer ("" when it does not look like one)."""
    return value if isinstance(value, str) and _WORD.fullmatch(value) else ""


def _items(value: object) -> list[Mapping[str, Any]]:
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) \
        else []


class _Asker:
    """Makes the calls, turning every failure into the tail of a line."""

    def __init__(self, clients: Ec2Clients) -> None:
        self.clients = clients
        self.region = clients.region
        self._cache: dict[tuple[str, str, str], _Answer] = {}

    def __call__(self, service: str, operation: str, **kwargs: Any) -> _Answer:
        key = (service, operation, json.dumps(kwargs, sort_keys=True, default=str))
        if key not in self._cache:
            self._cache[key] = self._ask(service, operation, kwargs)
        return self._cache[key]

    def _ask(self, service: str, operation: str, kwargs: Mapping[str, Any]) -> _Answer:
        from botocore.exceptions import ClientError  # type: ignore[import-untyped]

        client = getattr(self.clients, service)
        method = getattr(client, re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower())
        try:
            data = method(**kwargs)
        except ClientError as err:
            error = err.response.get("Error") if isinstance(err.response, Mapping) else None
            error = error if isinstance(error, Mapping) else {}
            raw = error.get("Code")
            code = raw if isinstance(raw, str) else ""
            return _Answer(problem=self._judge(service, operation, code, error.get("Message")),
                           code=code)
        # No credentials, an endpoint unreachable, a bad parameter; or an answer that is not
        # AWS's (ResponseParserError is no BotoCoreError).
        except transport_errors() as err:
            return _Answer(problem=f"{operation} failed: {_text(str(err), MAX_SHOWN)}",
                           code=type(err).__name__)
        return _Answer(data=data if isinstance(data, Mapping) else {})

    def _judge(self, service: str, operation: str, code: str, message: object) -> str:
        if not_an_error(code, operation=operation):
            return ""  # not reached for DryRunOperation: see _dry_run
        judged = classify(code, _text(message, 2000), operation=operation)
        said = f"{judged.code or '<no code>'}: {judged.message[:MAX_SHOWN]}" \
            if judged.message else judged.code or "<no code>"
        if judged.code in _PERMISSION:
            return (f"{operation} not permitted ({said}): grant {_SERVICES[service]}:"
                    f"{operation} to the autoscaler's IAM role ({DOCS}: the IAM policy)")
        if judged.code in _NOT_FOUND_HINTS:
            return f"not found in {self.region} ({said}): {_NOT_FOUND_HINTS[judged.code]}"
        if judged.verdict is Verdict.FATAL:
            found = "not found" if "NotFound" in judged.code else "rejected"
            return f"{found} in {self.region} ({said}): {judged.hint}"
        return f"{operation} answered {said} ({judged.verdict.value}): {judged.hint}; run " \
               "the check again"


def verify(clients: Ec2Clients, settings: Ec2Settings, pools: Mapping[str, Pool], *,
           owner: str = "") -> list[Line]:
    """Check the account against every ec2 pool of ``pools`` (others are skipped) and the
    interruption queue of ``settings``: one ``(ok, line)`` per thing checked, the caller's
    identity first. ``owner``: the autoscaler's id, for the dry-run launch's ownership tag
    (the IAM policy's ``aws:RequestTag`` condition is then tested too). Read-only; never
    raises for anything AWS answers or fails to answer."""
    ask = _Asker(clients)
    identity = ask("sts", "GetCallerIdentity")
    if not identity.ok:
        return [(False, f"credentials: {identity.problem} (check the autoscaler's role or "
                        "AWS_* environment, and backends.ec2.region/endpoint_url)")]
    account = _text(identity.data.get("Account"), 12)
    arn = _word(identity.data.get("Arn")) or "<unknown>"
    lines: list[Line] = [(bool(_ACCOUNT.fullmatch(account)),
                          f"credentials: account {account or '<unknown>'} as {arn} "
                          f"(region {clients.region})")]
    for name, pool in pools.items():
        if pool.ec2 is not None:
            lines += _PoolCheck(ask, name, pool.ec2, owner).run()
    lines += _queue(ask, settings)
    return lines


@dataclass
class _PoolCheck:
    """The lines of one ec2 pool, in the order the keys appear in ``runners.yaml``."""

    ask: _Asker
    pool: str
    ec2: Ec2Pool
    owner: str
    lines: list[Line] = field(default_factory=list)
    azs: dict[str, str] = field(default_factory=dict)  # subnet -> its availability zone
    vpcs: set[str] = field(default_factory=set)
    image: str = ""
    architecture: str = ""

    def say(self, ok: bool, text: str) -> None:
        self.lines.append((ok, f"pool {self.pool}: {text}"))

    def run(self) -> list[Line]:
        self._subnets()
        self._security_groups()
        if self.ec2.launch_template is not None:
            self._template()
        if self.ec2.ami is not None:
            self._ami()
        self._instance_types()
        if all(ok for ok, _ in self.lines):
            self._dry_run()
            if self.owner and self.ec2.launch_template is not None:
                self._dry_fleet()
            elif self.owner:
                self._dry_template()
        return self.lines

    def _subnets(self) -> None:
        for j, subnet in enumerate(self.ec2.subnets):
            key = f"ec2.subnets[{j}] {subnet}"
            got = self.ask("ec2", "DescribeSubnets", SubnetIds=[subnet])
            found = [s for s in _items(got.data.get("Subnets")) if s.get("SubnetId") == subnet]
            if not got.ok or not found:
                self.say(False, f"{key}: {got.problem or f'not found in {self.ask.region}'}")
                continue
            az, vpc = _word(found[0].get("AvailabilityZone")), _word(found[0].get("VpcId"))
            if not az or not vpc:
                self.say(False, f"{key}: the answer names no valid zone or VPC (is "
                         "backends.ec2.endpoint_url AWS?)")
                continue
            self.azs[subnet] = az
            self.vpcs.add(vpc)
            state = _text(found[0].get("State"), 32)
            self.say(state in ("available", ""), f"{key}: {az} in {vpc}"
                     + (f" ({state})" if state != "available" else ""))
        if len(self.vpcs) > 1:
            self.say(False, f"ec2.subnets: in several VPCs ({', '.join(sorted(self.vpcs))}): a "
                     "security group belongs to one VPC; list subnets of one VPC per pool")
        zones = set(self.azs.values())
        if len(zones) == 1 and len(self.azs) == len(self.ec2.subnets):
            self.say(True, f"ec2.subnets: all in one availability zone ({zones.pop()}); hint: "
                     "spot capacity is per zone: list a subnet in each of several zones so "
                     "the fleet can launch where there is some")

    def _security_groups(self) -> None:
        for j, group in enumerate(self.ec2.security_groups):
            key = f"ec2.security_groups[{j}] {group}"
            got = self.ask("ec2", "DescribeSecurityGroups", GroupIds=[group])
            found = [g for g in _items(got.data.get("SecurityGroups"))
                     if g.get("GroupId") == group]
            if not got.ok or not found:
                self.say(False, f"{key}: {got.problem or f'not found in {self.ask.region}'}")
                continue
            vpc = _word(found[0].get("VpcId"))
            if self.vpcs and vpc not in self.vpcs:
                self.say(False, f"{key}: in {vpc or '<no vpc>'}, not in the subnets' VPC "
                         f"{', '.join(sorted(self.vpcs))}: use a group of that VPC")
            else:
                self.say(True, f"{key}: {_text(found[0].get('GroupName'), 64)} in {vpc}")
        if not self.ec2.security_groups and self.ec2.launch_template is None:
            self.say(True, "ec2.security_groups: none given: instances get their VPC's "
                     "default group (runners need no inbound rule)")

    def _ami(self) -> None:
        ami = self.ec2.ami or ""
        key = f"ec2.ami {ami}"
        image = ami
        if ami.startswith("resolve:ssm:"):
            got = self.ask("ssm", "GetParameter", Name=ami.removeprefix("resolve:ssm:"))
            parameter = got.data.get("Parameter")
            value = parameter.get("Value") if isinstance(parameter, Mapping) else None
            if not got.ok:
                self.say(False, f"{key}: {got.problem}")
                return
            if not isinstance(value, str) or not AMI_ID.fullmatch(value):
                self.say(False, f"{key}: the parameter does not hold an AMI id (ami-...): "
                         "store the AMI's id in it")
                return
            image = value
        self._image(key, image)

    def _image(self, key: str, image: str) -> None:
        got = self.ask("ec2", "DescribeImages", ImageIds=[image])
        found = [i for i in _items(got.data.get("Images")) if i.get("ImageId") == image]
        if not got.ok or not found:
            self.say(False, f"{key}: {got.problem or f'{image} not found in {self.ask.region}'}"
                     + ("" if got.problem else ": the AMI must be in the backend's region (copy "
                        "it with aws ec2 copy-image) and shared with the account"))
            return
        self.image = image
        self.architecture = _text(found[0].get("Architecture"), 32)
        state = _text(found[0].get("State"), 32) or "available"
        name = _text(found[0].get("Name"), 128)
        arch = self.architecture or "no architecture said"
        self.say(state == "available", f"{key}: {image} {name!r} ({arch}, {state})")

    def _template(self) -> None:
        template = self.ec2.launch_template or ""
        key = f"ec2.launch_template {template} version {self.ec2.launch_template_version}"
        which = {"LaunchTemplateId": template} if re.fullmatch(r"^lt-[0-9a-f]+$", template) \
            else {"LaunchTemplateName": template}
        got = self.ask("ec2", "DescribeLaunchTemplateVersions", **which,
                       Versions=[self.ec2.launch_template_version])
        versions = _items(got.data.get("LaunchTemplateVersions"))
        if not got.ok or not versions:
            self.say(False, f"{key}: {got.problem or 'no such version'}")
            return
        data = versions[0].get("LaunchTemplateData")
        data = data if isinstance(data, Mapping) else {}
        options = data.get("MetadataOptions")
        options = options if isinstance(options, Mapping) else {}
        wrong = [f"{name} is {_text(options.get(name), 16) or 'not set'}, needs {want!r}"
                 for name, want in (("HttpTokens", "required"),
                                    ("InstanceMetadataTags", "enabled"))
                 if options.get(name) != want]
        number = versions[0].get("VersionNumber")
        if wrong:
            self.say(False, f"{key}: MetadataOptions {'; '.join(wrong)}: the agent reads its "
                     "runner name and parameter from the instance's tags through IMDSv2 "
                     "(InstanceMetadataTags) and IMDSv1 must be off (HttpTokens required): "
                     "set them in a new template version")
        else:
            self.say(True, f"{key}: version {number}, IMDSv2 required, tags in metadata")
        if self.ec2.ami is None:
            image = data.get("ImageId")
            if isinstance(image, str) and AMI_ID.fullmatch(image):
                self._image(f"{key}: ImageId", image)
            elif not wrong:
                self.say(True, f"{key}: ImageId {_text(image, 128) or 'not set'} (not checked "
                         "here)")

    def _instance_types(self) -> None:
        types = list(self.ec2.instance_types)
        offered = self.ask("ec2", "DescribeInstanceTypeOfferings", LocationType="region",
                           Filters=[{"Name": "instance-type", "Values": types}])
        in_region = {_word(o.get("InstanceType"))
                     for o in _items(offered.data.get("InstanceTypeOfferings"))}
        if not offered.ok:
            self.say(False, f"ec2.instance_types: {offered.problem}")
            return
        zones = set(self.azs.values())
        by_zone: dict[str, set[str]] = {}
        if zones:
            in_zones = self.ask("ec2", "DescribeInstanceTypeOfferings",
                                LocationType="availability-zone",
                                Filters=[{"Name": "instance-type", "Values": types},
                                         {"Name": "location", "Values": sorted(zones)}])
            if not in_zones.ok:
                self.say(False, f"ec2.instance_types (by zone): {in_zones.problem}")
                zones = set()
            for o in _items(in_zones.data.get("InstanceTypeOfferings")):
                by_zone.setdefault(_word(o.get("InstanceType")), set()).add(
                    _word(o.get("Location")))
        known = [t for t in types if t in in_region]
        described = self.ask("ec2", "DescribeInstanceTypes", InstanceTypes=known) if known \
            else _Answer()
        info = {_word(t.get("InstanceType")): t
                for t in _items(described.data.get("InstanceTypes"))}
        for j, name in enumerate(types):
            key = f"ec2.instance_types[{j}] {name}"
            if name not in in_region:
                self.say(False, f"{key}: not offered in {self.ask.region}: remove it or pick a "
                         "type the region has (aws ec2 describe-instance-type-offerings)")
                continue
            self._one_type(key, info.get(name, {}), by_zone.get(name, set()) if zones
                           else None)

    def _one_type(self, key: str, info: Mapping[str, Any], zones: set[str] | None) -> None:
        processor = info.get("ProcessorInfo")
        archs = processor.get("SupportedArchitectures") if isinstance(processor, Mapping) \
            else None
        archs = [a for a in archs if isinstance(a, str)] if isinstance(archs, list) else []
        usage = info.get("SupportedUsageClasses")
        usage = [u for u in usage if isinstance(u, str)] if isinstance(usage, list) else []
        if self.architecture and archs and self.architecture not in archs:
            self.say(False, f"{key}: runs {', '.join(archs)}, but the AMI {self.image} is "
                     f"{self.architecture}: an AMI serves one architecture; give this type "
                     "its own pool with an AMI built for it")
            return
        if usage and "spot" not in usage and self.ec2.capacity != "on-demand":
            self.say(False, f"{key}: not sold as spot: remove it, or use capacity: on-demand")
            return
        if zones is not None and not zones:
            self.say(False, f"{key}: not offered in any of the pool's zones "
                     f"({', '.join(sorted(set(self.azs.values())))}): remove it or add a "
                     "subnet in a zone that has it")
            return
        missing = sorted(set(self.azs.values()) - (zones or set()))
        self.say(True, f"{key}: {', '.join(archs) or 'architecture not said'}"
                 + (f"; not in {', '.join(missing)} (the fleet uses the other zones)"
                    if zones is not None and missing else ""))

    def _dry_run(self) -> None:
        """``RunInstances`` with ``DryRun``: the first type in the first subnet, as the pool
        launches (its image or template, groups, profile, IMDSv2, the ownership tag)."""
        kwargs: dict[str, Any] = {
            "DryRun": True, "MinCount": 1, "MaxCount": 1,
            "InstanceType": self.ec2.instance_types[0], "SubnetId": self.ec2.subnets[0],
            "InstanceInitiatedShutdownBehavior": "terminate"}
        if self.ec2.launch_template is not None:
            which = "LaunchTemplateId" if self.ec2.launch_template.startswith("lt-") \
                else "LaunchTemplateName"
            kwargs["LaunchTemplate"] = {which: self.ec2.launch_template,
                                        "Version": self.ec2.launch_template_version}
        else:
            kwargs["MetadataOptions"] = {"HttpTokens": "required",
                                         "InstanceMetadataTags": "enabled"}
        if self.image:
            kwargs["ImageId"] = self.image
        if self.ec2.security_groups:
            kwargs["SecurityGroupIds"] = list(self.ec2.security_groups)
        profile = self.ec2.instance_profile
        if profile:
            kwargs["IamInstanceProfile"] = {"Arn" if profile.startswith("arn:") else "Name":
                                            profile}
        if self.owner:
            kwargs["TagSpecifications"] = [{"ResourceType": "instance", "Tags": [
                {"Key": LABEL_OWNER, "Value": self.owner}]}]
        self._dry(f"launch (RunInstances dry run: {kwargs['InstanceType']} in "
                  f"{kwargs['SubnetId']})", "RunInstances", kwargs)

    def _dry_fleet(self) -> None:
        """``CreateFleet`` with ``DryRun`` from the pool's own template, as the backend
        launches: type instant, every type x subnet, the first lifecycle, the owner tag."""
        template = self.ec2.launch_template or ""
        which = "LaunchTemplateId" if template.startswith("lt-") else "LaunchTemplateName"
        overrides = [{"InstanceType": t, "SubnetId": s, **({"ImageId": self.image}
                                                           if self.ec2.ami else {})}
                     for t in self.ec2.instance_types for s in self.ec2.subnets]
        lifecycle = "on-demand" if self.ec2.capacity == "on-demand" else "spot"
        kwargs: dict[str, Any] = {
            "DryRun": True, "Type": "instant",
            "TargetCapacitySpecification": {"TotalTargetCapacity": 1,
                                            "DefaultTargetCapacityType": lifecycle},
            "LaunchTemplateConfigs": [{"LaunchTemplateSpecification": {
                which: template, "Version": self.ec2.launch_template_version},
                "Overrides": overrides}],
            "TagSpecifications": [{"ResourceType": "instance", "Tags": [
                {"Key": LABEL_OWNER, "Value": self.owner}]}]}
        if lifecycle == "spot":
            kwargs["SpotOptions"] = {"AllocationStrategy": self.ec2.spot_allocation}
        self._dry(f"launch (CreateFleet dry run: {lifecycle}, {len(overrides)} type x subnet "
                  "overrides)", "CreateFleet", kwargs)

    def _dry_template(self) -> None:
        """``CreateLaunchTemplate`` with ``DryRun`` and the owner tag: the backend manages
        this pool's template, and makes it on the first launch."""
        data: dict[str, Any] = {"MetadataOptions": {"HttpTokens": "required",
                                                    "InstanceMetadataTags": "enabled"}}
        if self.image:
            data["ImageId"] = self.image
        self._dry("managed launch template (CreateLaunchTemplate dry run)",
                  "CreateLaunchTemplate", {
                      "DryRun": True, "LaunchTemplateName": f"gha-mlops-{self.owner}-"
                      f"{self.pool}-check", "LaunchTemplateData": data,
                      "TagSpecifications": [{"ResourceType": "launch-template", "Tags": [
                          {"Key": LABEL_OWNER, "Value": self.owner}]}]})

    def _dry(self, what: str, operation: str, kwargs: Mapping[str, Any]) -> None:
        got = self.ask("ec2", operation, **kwargs)
        if got.code == "DryRunOperation":
            self.say(True, f"{what}: permitted, parameters accepted")
        elif not got.ok:
            self.say(False, f"{what}: {got.problem}")
        else:
            self._done_anyway(what, got.data)

    def _done_anyway(self, what: str, data: Mapping[str, Any]) -> None:
        """An endpoint that ignored DryRun: terminate what it launched, and say so."""
        ids = [_word(x.get("InstanceId")) for x in _items(data.get("Instances"))]
        for item in _items(data.get("Instances")):  # CreateFleet's shape
            found = item.get("InstanceIds")
            ids += [_word(i) for i in found] if isinstance(found, list) else []
        ids = [i for i in ids if i.startswith("i-")]
        if ids:
            self.ask("ec2", "TerminateInstances", InstanceIds=ids)
        made = f"launched {', '.join(ids)} (terminated)" if ids else "went ahead (a launch " \
            "template made by it is left: delete it)"
        self.say(False, f"{what}: the endpoint ignored DryRun and {made}: check "
                 "backends.ec2.endpoint_url")


def _queue(ask: _Asker, settings: Ec2Settings) -> list[Line]:
    queue = settings.interruption_queue
    if not queue:
        return [(True, "interruption queue: none (backends.ec2.interruption_queue): spot "
                       "notices come from the instances' agents only; the EventBridge queue "
                       f"also covers an instance whose agent died ({DOCS})")]
    key = f"interruption queue {queue}"
    url = queue
    if not queue.startswith(("https://", "http://")):
        got = ask("sqs", "GetQueueUrl", QueueName=queue)
        if not got.ok:
            return [(False, f"{key}: {got.problem}")]
        url = _text(got.data.get("QueueUrl"), 1024)
    attributes = ask("sqs", "GetQueueAttributes", QueueUrl=url,
                     AttributeNames=["QueueArn", "Policy"])
    if not attributes.ok:
        return [(False, f"{key}: {attributes.problem}")]
    values = attributes.data.get("Attributes")
    values = values if isinstance(values, Mapping) else {}
    arn = _word(values.get("QueueArn")) or url
    if not _lets_eventbridge_send(values.get("Policy")):
        return [(False, f"{key}: {arn}: its policy does not let EventBridge "
                        "(events.amazonaws.com) send messages (sqs:SendMessage), so no warning "
                        f"arrives: set the queue policy from {DOCS}")]
    return [(True, f"{key}: {arn}, EventBridge may send to it")]


def _lets_eventbridge_send(policy: object) -> bool:
    """Whether an SQS queue ``policy`` (JSON text) has an Allow statement for the principal
    ``events.amazonaws.com`` and ``sqs:SendMessage`` (conditions are AWS's to judge)."""
    if not isinstance(policy, str) or len(policy) > MAX_POLICY_CHARS:
        return False
    try:
        document = json.loads(policy)
    except ValueError:
        return False
    statements = document.get("Statement") if isinstance(document, Mapping) else None
    statements = [statements] if isinstance(statements, Mapping) else statements

    def listed(value: object) -> list[str]:
        items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        return [v.lower() for v in items if isinstance(v, str)]

    for statement in _items(statements):
        principal = statement.get("Principal")
        services = listed(principal.get("Service")) if isinstance(principal, Mapping) else []
        actions = listed(statement.get("Action"))
        if statement.get("Effect") == "Allow" and "events.amazonaws.com" in services and \
                any(a in ("sqs:sendmessage", "sqs:*", "*") for a in actions):
            return True
    return False


__all__ = ["API_ACTIONS", "DOCS", "Line", "verify"]
