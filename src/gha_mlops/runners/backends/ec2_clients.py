"""The AWS clients of the EC2 backend, made one way for every caller (the backend, its live
check, the instance agent).

Credentials come from ``environ`` where it holds them (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``; ``AWS_PROFILE``), else from boto3's default
chain (an instance profile, SSO, ``~/.aws``): the autoscaler on an EC2 host needs no keys.
botocore's own retries are off (one attempt per call): :mod:`~gha_mlops.runners.backends.
ec2_errors` classifies every error and the backend decides when to try again, so a throttled
account is not hammered by two layers of retries. Timeouts are bounded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gha_mlops.errors import missing_extra

# Tags of an EC2 runner instance (its volumes and SSM parameter carry the owner tags too),
# besides base.LABEL_OWNER / LABEL_RUNNER / LABEL_POOL / LABEL_GPUS:
TAG_EXPIRES = "dev.gha-mlops.expires"  # unix seconds (integer): terminated after this
TAG_PARAMETER = "dev.gha-mlops.parameter"  # the SSM SecureString holding its JIT config
TAG_INTERRUPTION = "dev.gha-mlops.interruption"  # set on a spot interruption notice: the
# action time (ISO 8601) and where it came from, e.g. "2026-12-06T03:02:00Z imds"
TAG_LIFECYCLE = "dev.gha-mlops.lifecycle"  # "spot" or "on-demand", as launched

# AWS's identifiers, as every EC2 piece checks them (config, backend, live check, notices,
# agent): use ``fullmatch`` (``$`` would let a trailing newline through).
INSTANCE_ID = re.compile(r"i-[0-9a-f]{8,17}")
AMI_ID = re.compile(r"ami-[0-9a-f]{8,17}")
REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")

CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 30
_KEYS = {"aws_access_key_id": "AWS_ACCESS_KEY_ID",
         "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
         "aws_session_token": "AWS_SESSION_TOKEN"}


@dataclass(frozen=True)
class Ec2Clients:
    """boto3 clients (typed ``Any``: boto3 ships no stubs here) for one region."""

    region: str
    ec2: Any
    ssm: Any
    sqs: Any
    sts: Any


def make_clients(region: str, *, endpoint_url: str | None = None,
                 environ: Mapping[str, str] | None = None) -> Ec2Clients:
    """The EC2, SSM, SQS and STS clients for ``region`` (at ``endpoint_url`` when given: a
    test's moto server or fault proxy, LocalStack), credentials as the module says."""
    try:
        import boto3  # type: ignore[import-untyped]
        from botocore.config import Config  # type: ignore[import-untyped]
    except ImportError:
        raise missing_extra("boto3", "aws") from None
    env = environ or {}
    keys = {arg: env[name] for arg, name in _KEYS.items() if env.get(name)}
    session = boto3.session.Session(region_name=region, profile_name=(
        env.get("AWS_PROFILE") or None) if not keys else None, **keys)
    config = Config(retries={"total_max_attempts": 1, "mode": "standard"},
                    connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
                    max_pool_connections=16)

    def client(service: str) -> Any:
        return session.client(service, endpoint_url=endpoint_url, config=config)

    return Ec2Clients(region, client("ec2"), client("ssm"), client("sqs"), client("sts"))


def transport_errors() -> tuple[type[Exception], ...]:
    """The botocore errors that are not AWS's answer: the transport's (refused, reset, timed
    out, no credentials: ``BotoCoreError``) and an answer that is not AWS's at all
    (``ResponseParserError``, which is no ``BotoCoreError``). ``except transport_errors()``."""
    from botocore.exceptions import BotoCoreError  # type: ignore[import-untyped]
    from botocore.parsers import ResponseParserError  # type: ignore[import-untyped]

    return (BotoCoreError, ResponseParserError)


def client_error(err: Exception, *, limit: int = 1000) -> tuple[str, str]:
    """A botocore ``ClientError``'s (code, message) as AWS sent them, bounded to ``limit``
    characters; ``""`` for what is missing or not a string (the answer is input)."""
    response = getattr(err, "response", None)
    error = response.get("Error") if isinstance(response, Mapping) else None
    error = error if isinstance(error, Mapping) else {}
    code, message = error.get("Code"), error.get("Message")
    return (code[:limit] if isinstance(code, str) else "",
            message[:limit] if isinstance(message, str) else "")


__all__ = ["AMI_ID", "INSTANCE_ID", "REGION", "TAG_EXPIRES", "TAG_INTERRUPTION", "TAG_LIFECYCLE", "TAG_PARAMETER", "Ec2Clients",
           "client_error", "make_clients", "transport_errors"]
