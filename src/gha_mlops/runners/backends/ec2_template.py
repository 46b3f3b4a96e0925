"""The launch template an ec2 pool launches from: the user's own (``launch_template``), or one
the autoscaler manages, named ``gha-mlops-{owner}-{pool}``.

The managed template holds what every instance of the pool shares: the image, security
groups, instance profile, root volume (gp3, deleted with the instance), shutdown =
terminate (a runner that powers off is gone, not a stopped instance billing for its disk),
IMDSv2 required with a hop limit of 2 (a container on the instance reaches it; no more) and
instance tags in the metadata (the agent reads its runner name and parameter from its tags).
It has no user data at all: the AMI runs ``gha-mlops runners agent``, which takes the runner's
just-in-time config from SSM. The volume's owner tags are set here, because CreateFleet tags
instances only.

Each version's description carries a hash of its data: a change of the pool's settings (or
of the AMI an SSM parameter names) makes a new version on the next launch, and an unchanged
pool reuses the latest. The launch names that version number, never ``$Latest``, so what was
checked is what is launched. An ``ami`` of the form ``resolve:ssm:/name`` is resolved here
(moto does not resolve it; resolving it ourselves also makes a new AMI a new version).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from gha_mlops.runners.backends.base import LABEL_OWNER, LABEL_POOL, BackendError
from gha_mlops.runners.backends.ec2_clients import (
    AMI_ID,
    Ec2Clients,
    client_error,
    transport_errors,
)
from gha_mlops.runners.backends.ec2_errors import (
    SERVER,
    Classification,
    Verdict,
    classify,
    clean_message,
)
from gha_mlops.runners.backends.ec2_fleet import fatal_error
from gha_mlops.runners.config import Ec2Pool

VERSION_PREFIX = "gha-mlops settings "
CACHE_S = 600.0  # how long a pool's template (and its resolved AMI) is reused unchecked
_DEVICE = re.compile(r"^/dev/[a-z0-9/]{1,32}$")
_MISSING_TEMPLATE = ("InvalidLaunchTemplateName.NotFoundException",
                     "InvalidLaunchTemplateId.NotFound")

T = TypeVar("T")


class AwsCallError(Exception):
    """An AWS call failed; ``classification`` judges it (a connection failure is a
    RETRY_LATER with ``connection`` set: the request may have reached AWS)."""

    def __init__(self, classification: Classification, *, connection: bool = False) -> None:
        super().__init__(classification.summary())
        self.classification = classification
        self.connection = connection


def call(operation: str, fn: Callable[[], T], *, lifecycle: str = "") -> T:
    """``fn()`` (one boto3 call named ``operation``), its failure as :class:`AwsCallError`."""
    from botocore.exceptions import (  # type: ignore[import-untyped]
        ClientError,
        NoCredentialsError,
    )

    try:
        return fn()
    except ClientError as err:
        code, message = client_error(err)
        raise AwsCallError(classify(code, message, operation=operation,
                                    lifecycle=lifecycle)) from None
    except NoCredentialsError:
        raise AwsCallError(Classification(
            Verdict.FATAL, "NoCredentials", "no AWS credentials found", operation,
            "give the autoscaler credentials: an instance profile, AWS_PROFILE, or "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in its environment")) from None
    except transport_errors() as err:  # refused, reset, timed out; not AWS's answer
        raise AwsCallError(Classification(
            Verdict.RETRY_LATER, "Connection", clean_message(str(err)), operation,
            "AWS did not answer (network, endpoint_url); retrying", SERVER, known=True),
            connection=True) from None


def template_name(owner: str, pool: str) -> str:
    return f"gha-mlops-{owner}-{pool}"


def template_data(pool: Ec2Pool, *, image_id: str, root_device: str,
                  volume_tags: Mapping[str, str]) -> dict[str, Any]:
    """The managed template's ``LaunchTemplateData`` (no user data: see the module)."""
    ebs: dict[str, Any] = {"VolumeType": "gp3", "DeleteOnTermination": True}
    if pool.root_volume_gb:
        ebs["VolumeSize"] = pool.root_volume_gb
    data: dict[str, Any] = {
        "ImageId": image_id,
        "InstanceInitiatedShutdownBehavior": "terminate",
        "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 2,
                            "HttpEndpoint": "enabled", "InstanceMetadataTags": "enabled"},
        "BlockDeviceMappings": [{"DeviceName": root_device, "Ebs": ebs}],
        "TagSpecifications": [{"ResourceType": "volume", "Tags": [
            {"Key": k, "Value": v} for k, v in volume_tags.items()]}],
    }
    if pool.security_groups:
        data["SecurityGroupIds"] = list(pool.security_groups)
    if pool.instance_profile:
        key = "Arn" if pool.instance_profile.startswith("arn:") else "Name"
        data["IamInstanceProfile"] = {key: pool.instance_profile}
    return data


def settings_hash(data: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TemplateChoice:
    """CreateFleet's ``LaunchTemplateSpecification`` and, for a user's template with an
    ``ami``, the image id every override sets."""

    spec: Mapping[str, str]
    ami_override: str | None = None


class Templates:
    """The pools' launch templates, looked up or made on first use and reused for
    :data:`CACHE_S` (thread-safe: concurrent launches of one pool make one version)."""

    def __init__(self, owner: str, tags: Mapping[str, str],
                 clock: Callable[[], float] = time.time) -> None:
        self.owner = owner
        self.tags = dict(tags)
        self.clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, TemplateChoice]] = {}

    def choose(self, clients: Ec2Clients, pool_name: str, pool: Ec2Pool) -> TemplateChoice:
        """The template to launch ``pool`` from; :class:`AwsCallError` when AWS fails,
        :class:`BackendError` (not retryable) when the pool's AMI is not usable."""
        with self._lock:
            cached = self._cache.get(pool_name)
            if cached is not None and self.clock() - cached[0] < CACHE_S:
                return cached[1]
            choice = self._choose(clients, pool_name, pool)
            self._cache[pool_name] = (self.clock(), choice)
            return choice

    def forget(self, pool_name: str) -> None:
        """Look the pool's template up again next time (after a launch error about it)."""
        with self._lock:
            self._cache.pop(pool_name, None)

    def _choose(self, clients: Ec2Clients, pool_name: str, pool: Ec2Pool) -> TemplateChoice:
        image = resolve_ami(clients, pool_name, pool.ami) if pool.ami else None
        if pool.launch_template:
            key = "LaunchTemplateId" if pool.launch_template.startswith("lt-") else \
                "LaunchTemplateName"
            return TemplateChoice({key: pool.launch_template,
                                   "Version": pool.launch_template_version}, image)
        assert image is not None  # config.py: a pool without a template has an ami
        owner_tags = {**self.tags, LABEL_OWNER: self.owner, LABEL_POOL: pool_name}
        data = template_data(pool, image_id=image,
                             root_device=root_device(clients, pool_name, image),
                             volume_tags=owner_tags)
        name = template_name(self.owner, pool_name)
        version = self._version(clients, name, data, owner_tags)
        return TemplateChoice({"LaunchTemplateName": name, "Version": str(version)})

    def _version(self, clients: Ec2Clients, name: str, data: Mapping[str, Any],
                 owner_tags: Mapping[str, str]) -> int:
        ec2 = clients.ec2
        description = VERSION_PREFIX + settings_hash(data)
        for _ in range(2):  # a second look when another process created it meanwhile
            try:
                answer = call("DescribeLaunchTemplateVersions", lambda: ec2.
                              describe_launch_template_versions(LaunchTemplateName=name,
                                                                Versions=["$Latest"]))
            except AwsCallError as err:
                if err.classification.code not in _MISSING_TEMPLATE:
                    raise
            else:
                latest = (answer.get("LaunchTemplateVersions") or [{}])[0]
                if latest.get("VersionDescription") == description:
                    return int(latest["VersionNumber"])
                made = call("CreateLaunchTemplateVersion", lambda: ec2.
                            create_launch_template_version(
                                LaunchTemplateName=name, VersionDescription=description,
                                LaunchTemplateData=dict(data)))
                return int(made["LaunchTemplateVersion"]["VersionNumber"])
            try:
                created = call("CreateLaunchTemplate", lambda: ec2.create_launch_template(
                    LaunchTemplateName=name, VersionDescription=description,
                    LaunchTemplateData=dict(data), TagSpecifications=[{
                        "ResourceType": "launch-template",
                        "Tags": [{"Key": k, "Value": v} for k, v in owner_tags.items()]}]))
            except AwsCallError as err:
                if "AlreadyExists" not in err.classification.code:
                    raise
                continue
            return int(created["LaunchTemplate"]["LatestVersionNumber"])
        raise AwsCallError(classify("InternalError", f"launch template {name} changed under "
                                    "us twice", operation="CreateLaunchTemplate"))


def resolve_ami(clients: Ec2Clients, pool: str, ami: str) -> str:
    """An ``ami-...`` as it is; ``resolve:ssm:/name`` through SSM (its value must be an AMI
    id: the parameter is input too)."""
    if not ami.startswith("resolve:ssm:"):
        return ami
    name = ami.removeprefix("resolve:ssm:")
    try:
        answer = call("GetParameter", lambda: clients.ssm.get_parameter(Name=name))
    except AwsCallError as err:
        if err.classification.code == "ParameterNotFound":
            raise BackendError(f"pool {pool!r}: the SSM parameter {name!r} its `ec2.ami` "
                               "names does not exist in this region",
                               hint="create it, or write the AMI id itself (ami-...)",
                               retryable=False) from None
        raise
    parameter = answer.get("Parameter") if isinstance(answer, Mapping) else None
    value = parameter.get("Value") if isinstance(parameter, Mapping) else None
    if not isinstance(value, str) or not AMI_ID.fullmatch(value.strip()):
        shown = clean_message(value)[:80] if isinstance(value, str) else type(value).__name__
        raise BackendError(f"pool {pool!r}: the SSM parameter {name!r} holds {shown!r}, not "
                           "an AMI id", hint="put the AMI id (ami-...) in it", retryable=False)
    return value.strip()


def root_device(clients: Ec2Clients, pool: str, image: str) -> str:
    """The AMI's root device name (the root volume's size is set on it)."""
    answer = call("DescribeImages", lambda: clients.ec2.describe_images(ImageIds=[image]))
    images = answer.get("Images") if isinstance(answer, Mapping) else None
    first = images[0] if isinstance(images, list) and images else None
    device = first.get("RootDeviceName") if isinstance(first, Mapping) else None
    if first is None:
        raise fatal_error(pool, classify("InvalidAMIID.NotFound", f"no image {image}",
                                         operation="DescribeImages"))
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise BackendError(f"pool {pool!r}: the AMI {image} names no usable root device",
                           hint="use an EBS-backed AMI (docs/runners-aws.md: building the AMI)",
                           retryable=False)
    return device


__all__ = ["AwsCallError", "TemplateChoice", "Templates", "call",
           "resolve_ami", "root_device", "settings_hash", "template_data", "template_name"]
