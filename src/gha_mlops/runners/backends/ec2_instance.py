"""The AWS calls a runner instance makes about itself (for :mod:`gha_mlops.runners.agent`):
take its runner's just-in-time config out of SSM (read once, deleted at once) and tag itself
when its spot interruption notice arrives.

The only module of the instance side that touches botocore (the agent speaks to IMDS with
the standard library and to AWS through this adapter). Errors are judged by
:func:`~gha_mlops.runners.backends.ec2_errors.classify`: what may pass (throttling, a 5xx, a
connection reset) is retried a few times with a short backoff, since an instance that gives
up powers itself off; the rest raises :class:`~gha_mlops.runners.backends.base.BackendError`
saying what to fix.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from gha_mlops.errors import quoted
from gha_mlops.runners.backends.base import BackendError
from gha_mlops.runners.backends.ec2_clients import Ec2Clients, client_error, transport_errors
from gha_mlops.runners.backends.ec2_errors import (
    Classification,
    Verdict,
    classify,
    clean_message,
    not_an_error,
)

ATTEMPTS = 5  # per call, for errors that may pass
BACKOFF_S = 0.5  # doubled on each retry, at most BACKOFF_CAP_S
BACKOFF_CAP_S = 8.0
MAX_PARAMETER_CHARS = 8192  # SSM's own limit for an advanced parameter's value
_PERMISSION = ("the instance profile's role must allow ssm:GetParameter and "
               "ssm:DeleteParameter on the autoscaler's parameters, kms:Decrypt for their key, "
               "and ec2:CreateTags on the instance itself (docs/runners-aws.md, IAM)")

T = TypeVar("T")


class InstanceAws:
    """The instance's own AWS calls, through clients made by ``ec2_clients.make_clients``."""

    def __init__(self, clients: Ec2Clients, *, sleep: Callable[[float], None] = time.sleep,
                 attempts: int = ATTEMPTS) -> None:
        self.clients = clients
        self._sleep = sleep
        self._attempts = max(1, attempts)

    def take_parameter(self, name: str) -> tuple[str, str]:
        """``(value, problem)``: the SecureString ``name``'s value (decrypted), deleted
        before returning (``problem`` says why it was not, ``""`` when it was): the JIT
        config is read once. Raise :class:`BackendError` when it is missing (never written,
        or read already: an agent restarted on this instance), empty, too long or not a
        string, or when AWS refuses. A failed delete is not fatal (the autoscaler's sweep
        removes the parameter of an instance that is gone): it is reported, not raised."""
        answer = self._call("GetParameter", lambda: self.clients.ssm.get_parameter(
            Name=name, WithDecryption=True), missing=(
            f"the SSM parameter {quoted(name)} holding this instance's runner config is "
            "missing: it was read already (the agent ran before on this instance) or never "
            "written", "nothing to do on this instance: it powers off, and the autoscaler "
            "launches another for the job"))
        value = _value(answer, name)
        try:
            self._call("DeleteParameter", lambda: self.clients.ssm.delete_parameter(Name=name))
        except BackendError as err:
            return value, err.message
        return value, ""

    def tag(self, instance_id: str, key: str, value: str) -> None:
        """Set tag ``key`` = ``value`` on instance ``instance_id`` (EC2 CreateTags)."""
        self._call("CreateTags", lambda: self.clients.ec2.create_tags(
            Resources=[instance_id], Tags=[{"Key": key, "Value": value}]))

    def _call(self, operation: str, call: Callable[[], T],
              missing: tuple[str, str] | None = None) -> T:
        from botocore.exceptions import ClientError  # type: ignore[import-untyped]

        for attempt in range(self._attempts):
            if attempt:
                self._sleep(min(BACKOFF_S * 2 ** (attempt - 1), BACKOFF_CAP_S))
            try:
                return call()
            except ClientError as err:
                code, message = client_error(err)
                if not_an_error(code, operation=operation):
                    return None  # type: ignore[return-value]  # deleting what is gone
                if code == "ParameterNotFound" and missing is not None:
                    raise BackendError(missing[0], hint=missing[1], retryable=False) from None
                judged = classify(code, message, operation=operation)
                if judged.verdict is not Verdict.RETRY_LATER or _denied(code) or \
                        attempt + 1 == self._attempts:
                    raise _refused(judged) from None
            except transport_errors() as err:  # refused/reset, timeouts, no credentials,
                # or an answer that is not AWS's
                problem = clean_message(str(err))
                if "credentials" in problem.lower() or attempt + 1 == self._attempts:
                    raise BackendError(f"{operation}: {problem}", hint=(
                        "the instance needs an instance profile (its role's credentials come "
                        "from instance metadata) and a way to AWS's endpoints (NAT or VPC "
                        "endpoints for SSM and EC2)")) from None
        raise AssertionError("unreachable")  # pragma: no cover


def _denied(code: str) -> bool:
    """SSM's and KMS's refusals (ec2_errors knows EC2's): no retry makes them pass."""
    return "Unauthorized" in code or "AccessDenied" in code or code.startswith("KMS")


def _refused(judged: Classification) -> BackendError:
    if _denied(judged.code):
        return BackendError(f"{judged.operation}: {judged.code} (access denied): "
                            f"{judged.message}", hint=_PERMISSION, retryable=False)
    return BackendError(judged.summary(), hint=judged.hint if judged.verdict is Verdict.FATAL else
                        "see the message; the instance powers off so that nothing bills")


def _value(answer: Any, name: str) -> str:
    parameter = answer.get("Parameter") if isinstance(answer, dict) else None
    value = parameter.get("Value") if isinstance(parameter, dict) else None
    if not isinstance(value, str) or not value.strip():
        raise BackendError(f"the SSM parameter {quoted(name)} has no value", retryable=False,
                           hint="the autoscaler writes the runner's config there; look for "
                           "a parameter_prefix mismatch or a hand-made parameter")
    if len(value) > MAX_PARAMETER_CHARS:
        raise BackendError(f"the SSM parameter {quoted(name)} holds {len(value)} characters, "
                           f"more than a runner config's {MAX_PARAMETER_CHARS}",
                           retryable=False, hint="it is not the autoscaler's: check its tags")
    return value.strip()


__all__ = ["InstanceAws"]
