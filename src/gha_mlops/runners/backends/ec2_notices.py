"""Spot interruption warnings from EventBridge, read from an SQS queue (hostile input).

AWS warns two minutes before it reclaims a spot instance. The instance sees it in its own
metadata (``spot/instance-action``, the agent's side); the account sees it as the EventBridge
event "EC2 Spot Instance Interruption Warning", which a rule routes to an SQS queue that the
EC2 backend polls here. The queue holds whatever anyone allowed to send to it sent, so every
message is input: :func:`parse_message` is pure, bounded and never raises; a message that is
not a warning reads as ``None`` and :class:`SqsNotices` deletes it (counted in ``ignored``)
rather than let it come back every minute.

Accepted bodies: the EventBridge event itself (an SQS target's body), and the same event
wrapped once in an SNS notification (``{"Type": "Notification", "Message": "<event JSON>"}``:
EventBridge -> SNS -> SQS fan-out without raw delivery is a common set-up).

"EC2 Instance Rebalance Recommendation" (an earlier, softer signal: the instance is at
elevated risk, and often is not interrupted at all) is accepted only when asked for
(``rebalance=True``), as a notice of kind ``"rebalance"``: by default it reads as ``None``,
because a notice drains the runner and, for a busy one, boots a replacement for a re-run that
may never be needed.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from gha_mlops.runners.backends.base import BackendError
from gha_mlops.runners.backends.ec2_clients import INSTANCE_ID, client_error, transport_errors

SPOT_WARNING = "EC2 Spot Instance Interruption Warning"
REBALANCE = "EC2 Instance Rebalance Recommendation"
INTERRUPTION = "interruption"  # Notice.kind: the two-minute warning
REBALANCE_KIND = "rebalance"  # Notice.kind: the rebalance recommendation (opt-in)
WARNING_LEAD_S = 120  # AWS issues the warning two minutes before the action
MAX_BODY_CHARS = 256 * 1024  # SQS's own message size limit
MAX_RECEIPT_CHARS = 8192
BATCH = 10  # SQS's maximum per ReceiveMessage / DeleteMessageBatch
VISIBILITY_S = 60  # a notice not deleted within this comes back (the next list() takes it)
MISSING_QUEUE = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist",
                           "NonExistentQueue"})
DOCS_HINT = ("create the queue and an EventBridge rule sending "
             f"{{\"source\": [\"aws.ec2\"], \"detail-type\": [\"{SPOT_WARNING}\"]}} to it "
             "(docs/runners-aws.md, \"Spot interruptions\"), or remove "
             "backends.ec2.interruption_queue to rely on the instances' own notices")

_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d{1,9})?"
                   r"(Z|[+-]\d{2}:\d{2})")
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}(?:\.fifo)?")
_QUEUE_URL = re.compile(r"https?://[A-Za-z0-9.:\[\]-]{1,253}(?:/[A-Za-z0-9_.-]{1,80}){1,2}")


@dataclass(frozen=True)
class Notice:
    """One warning about one instance.

    ``action_time``: when AWS acts (ISO 8601 UTC, ``2026-12-06T03:02:00Z``): for the
    EventBridge warning, the event's time plus the two minutes AWS gives; "" when unknown (a
    rebalance recommendation names no time). ``receipt``: the SQS receipt handle to delete the
    message with ("" from :func:`parse_message`, which sees only the body)."""

    instance_id: str
    action_time: str
    receipt: str
    source: str = "eventbridge"
    kind: str = INTERRUPTION


def parse_message(body: object, *, rebalance: bool = False) -> Notice | None:
    """The notice an SQS message ``body`` carries, or ``None`` for anything else (too big,
    not JSON, another event, a bad instance id or time, SNS wrapping nested twice ...).
    Never raises."""
    event = _load(body)
    if event is not None and event.get("Type") == "Notification" and "Message" in event:
        event = _load(event.get("Message"))  # SNS-wrapped, once; never deeper
    if event is None or event.get("source") != "aws.ec2":
        return None
    kind = event.get("detail-type")
    if kind == SPOT_WARNING:
        when = _utc(event.get("time"))
        if when is None:
            return None
        action_time = _iso(when + dt.timedelta(seconds=WARNING_LEAD_S))
        notice_kind = INTERRUPTION
    elif kind == REBALANCE and rebalance:
        action_time, notice_kind = "", REBALANCE_KIND
    else:
        return None
    detail = event.get("detail")
    instance = detail.get("instance-id") if isinstance(detail, dict) else None
    if not isinstance(instance, str) or not INSTANCE_ID.fullmatch(instance):
        return None
    return Notice(instance, action_time, "", kind=notice_kind)


def _load(body: object) -> dict[str, Any] | None:
    if not isinstance(body, str) or len(body) > MAX_BODY_CHARS:
        return None
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):  # not JSON; nested past the parser's stack
        return None
    return value if isinstance(value, dict) else None


def _utc(value: object) -> dt.datetime | None:
    """An ISO 8601 time with its zone, years 2000-2999, as UTC; None for anything else."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    m = _TIME.fullmatch(value)
    if m is None or not 2000 <= int(m.group(1)) <= 2999:
        return None
    zone = m.group(7)
    try:
        year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
        when = dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.timezone.utc)
        if zone != "Z":
            sign = 1 if zone[0] == "+" else -1
            hours, minutes = int(zone[1:3]), int(zone[4:6])
            if hours > 23 or minutes > 59:
                return None
            when -= sign * dt.timedelta(hours=hours, minutes=minutes)
    except ValueError:  # 2026-02-30, 25:00 ...
        return None
    return when


def _iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


class SqsNotices:
    """The interruption queue: :meth:`poll` reads the warnings in it, :meth:`delete` removes
    those handled. ``queue`` is the queue's URL or its name (resolved with GetQueueUrl on
    first use, once). Not thread-safe: one caller (the backend's list()) at a time.

    Every SQS failure (a missing queue, no permission, the endpoint unreachable) raises
    :class:`BackendError` naming the queue, with a hint, ``retryable=True``: the caller logs
    it and goes on with the instances' own notices."""

    def __init__(self, sqs_client: Any, queue: str, *, rebalance: bool = False) -> None:
        if not isinstance(queue, str) or not (_QUEUE_NAME.fullmatch(queue)
                                              or _QUEUE_URL.fullmatch(queue)):
            raise BackendError(
                f"backends.ec2.interruption_queue {str(queue)[:100]!r} is neither an SQS queue "
                "URL nor a queue name", retryable=False,
                hint="give the name (letters, digits, - and _, up to 80) or the URL "
                "https://sqs.<region>.amazonaws.com/<account>/<name>")
        self.sqs = sqs_client
        self.queue = queue
        self.rebalance = rebalance
        self.ignored = 0  # messages that were not notices (deleted)
        self._url = queue if "://" in queue else None

    @property
    def url(self) -> str:
        """The queue's URL (resolved once when configured by name)."""
        if self._url is None:
            answer = self._call("GetQueueUrl", self.sqs.get_queue_url, QueueName=self.queue)
            url = answer.get("QueueUrl") if isinstance(answer, dict) else None
            if not isinstance(url, str) or not _QUEUE_URL.fullmatch(url):
                raise BackendError(f"SQS queue {self.queue!r}: GetQueueUrl answered no usable "
                                   "URL", hint=DOCS_HINT)
            self._url = url
        return self._url

    def poll(self, max_batches: int = 10) -> list[Notice]:
        """The notices waiting in the queue, up to ``max_batches`` x 10 messages (each
        hidden for a minute: delete the handled ones with :meth:`delete`, else they come
        back). Messages that are not notices are deleted here and counted in ``ignored``."""
        url = self.url
        notices: list[Notice] = []
        for _ in range(max(1, max_batches)):
            answer = self._call("ReceiveMessage", self.sqs.receive_message, QueueUrl=url,
                                MaxNumberOfMessages=BATCH, WaitTimeSeconds=0,
                                VisibilityTimeout=VISIBILITY_S)
            messages = answer.get("Messages") if isinstance(answer, dict) else None
            if not isinstance(messages, list) or not messages:
                break
            junk: list[str] = []
            for message in messages[:BATCH]:
                receipt = _receipt(message)
                if receipt is None:
                    continue  # nothing to delete it with: it comes back, and is skipped again
                notice = parse_message(message.get("Body"), rebalance=self.rebalance)
                if notice is None:
                    junk.append(receipt)
                else:
                    notices.append(replace(notice, receipt=receipt))
            if junk:
                self.ignored += len(junk)
                self._delete(junk)
        return notices

    def delete(self, notices: Iterable[Notice]) -> int:
        """Delete the messages of ``notices`` (handled); returns how many SQS deleted (one it
        did not comes back after the visibility timeout and is handled again: harmless)."""
        return self._delete([n.receipt for n in notices if n.receipt])

    def _delete(self, receipts: list[str]) -> int:
        url = self.url
        deleted = 0
        for start in range(0, len(receipts), BATCH):
            chunk = receipts[start:start + BATCH]
            entries = [{"Id": str(i), "ReceiptHandle": r} for i, r in enumerate(chunk)]
            answer = self._call("DeleteMessageBatch", self.sqs.delete_message_batch,
                                QueueUrl=url, Entries=entries)
            ok = answer.get("Successful") if isinstance(answer, dict) else None
            deleted += min(len(chunk), len(ok)) if isinstance(ok, list) else 0
        return deleted

    def _call(self, action: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        from botocore.exceptions import ClientError  # type: ignore[import-untyped]

        try:
            return fn(**kwargs)
        except ClientError as err:
            code, message = client_error(err, limit=300)
            code = code[:100]
            if code in MISSING_QUEUE or code.endswith("QueueDoesNotExist"):
                raise BackendError(f"SQS queue {self.queue!r} (backends.ec2.interruption_queue)"
                                   " does not exist", hint=DOCS_HINT) from err
            raise BackendError(
                f"SQS queue {self.queue!r}: {action} failed: {code}: {message}",
                hint="the autoscaler needs sqs:GetQueueUrl, sqs:ReceiveMessage and "
                "sqs:DeleteMessage on it (docs/runners-aws.md, the IAM policy); "
                + DOCS_HINT) from err
        except transport_errors() as err:  # refused, timed out; an answer not AWS's
            raise BackendError(f"SQS queue {self.queue!r}: {action} failed: {err}",
                               hint="check the network and backends.ec2.region / "
                               "endpoint_url") from err


def _receipt(message: object) -> str | None:
    if not isinstance(message, dict):
        return None
    receipt = message.get("ReceiptHandle")
    if not isinstance(receipt, str) or not receipt or len(receipt) > MAX_RECEIPT_CHARS:
        return None
    return receipt


__all__ = ["INTERRUPTION", "REBALANCE", "REBALANCE_KIND", "SPOT_WARNING", "Notice",
           "SqsNotices", "parse_message"]
