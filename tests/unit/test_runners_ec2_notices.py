"""parse_message: the EventBridge spot warning (plain or SNS-wrapped) -> Notice; anything
else -> None, never an exception (the queue's bodies are hostile)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gha_mlops.runners.backends.base import BackendError
from gha_mlops.runners.backends.ec2_notices import (
    MAX_BODY_CHARS,
    REBALANCE_KIND,
    Notice,
    SqsNotices,
    parse_message,
)

ID = "i-0123456789abcdef0"


def warning(**over: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "version": "0", "id": "7bf73129-1428-4cd3-a780-95db273d1602",
        "detail-type": "EC2 Spot Instance Interruption Warning", "source": "aws.ec2",
        "account": "123456789012", "time": "2026-12-06T03:00:00Z", "region": "us-east-1",
        "resources": [f"arn:aws:ec2:us-east-1:123456789012:instance/{ID}"],
        "detail": {"instance-id": ID, "instance-action": "terminate"},
    }
    event.update(over)
    return event


def sns(message: str) -> str:
    return json.dumps({"Type": "Notification", "MessageId": "m-1",
                       "TopicArn": "arn:aws:sns:us-east-1:123456789012:spot",
                       "Message": message, "Timestamp": "2026-12-06T03:00:01.000Z"})


def test_the_warning_is_a_notice_two_minutes_after_the_event() -> None:
    assert parse_message(json.dumps(warning())) == Notice(ID, "2026-12-06T03:02:00Z", "")


@pytest.mark.parametrize(("time", "action"), [
    ("2026-12-06T03:00:00.123Z", "2026-12-06T03:02:00Z"),
    ("2026-12-06T04:00:00+01:00", "2026-12-06T03:02:00Z"),
    ("2026-12-31T23:59:00Z", "2027-01-01T00:01:00Z"),
])
def test_times_are_read_with_their_zone_and_written_in_utc(time: str, action: str) -> None:
    notice = parse_message(json.dumps(warning(time=time)))
    assert notice is not None and notice.action_time == action


def test_the_sns_wrapped_warning_is_read_once() -> None:
    inner = json.dumps(warning())
    assert parse_message(sns(inner)) == Notice(ID, "2026-12-06T03:02:00Z", "")
    assert parse_message(sns(sns(inner))) is None  # wrapped twice: not a form AWS sends


def test_the_rebalance_recommendation_only_when_asked() -> None:
    body = json.dumps(warning(**{"detail-type": "EC2 Instance Rebalance Recommendation",
                                 "detail": {"instance-id": ID}}))
    assert parse_message(body) is None
    assert parse_message(body, rebalance=True) == Notice(ID, "", "", kind=REBALANCE_KIND)


HOSTILE: list[tuple[str, object]] = [
    ("not json", "spot!"),
    ("not a str", b"{}"),
    ("json list", "[1, 2]"),
    ("empty object", "{}"),
    ("too big", json.dumps(warning(padding="x" * MAX_BODY_CHARS))),
    ("nested past the parser", "[" * 100_000 + "]" * 100_000),
    ("other source", json.dumps(warning(source="my.app"))),
    ("other detail-type", json.dumps(warning(**{"detail-type": "EC2 Instance State-change "
                                                                "Notification"}))),
    ("detail-type case", json.dumps(warning(**{"detail-type": "ec2 spot instance "
                                                                "interruption warning"}))),
    ("no detail", json.dumps(warning(detail=None))),
    ("detail a list", json.dumps(warning(detail=[ID]))),
    ("id upper case", json.dumps(warning(detail={"instance-id": ID.upper()}))),
    ("id too short", json.dumps(warning(detail={"instance-id": "i-0123"}))),
    ("id too long", json.dumps(warning(detail={"instance-id": "i-" + "0" * 18}))),
    ("id with a newline", json.dumps(warning(detail={"instance-id": ID + "\n"}))),
    ("id not a str", json.dumps(warning(detail={"instance-id": 12345678}))),
    ("no time", json.dumps({k: v for k, v in warning().items() if k != "time"})),
    ("time without a zone", json.dumps(warning(time="2026-12-06T03:00:00"))),
    ("time not a date", json.dumps(warning(time="2026-02-30T03:00:00Z"))),
    ("time year 9999", json.dumps(warning(time="9999-12-31T23:59:00Z"))),
    ("time a number", json.dumps(warning(time=1765000000))),
    ("time zone +25:00", json.dumps(warning(time="2026-12-06T03:00:00+25:00"))),
    ("sns message not a str", json.dumps({"Type": "Notification", "Message": warning()})),
    ("sns message junk", sns("not json")),
]


@pytest.mark.parametrize("body", [b for _, b in HOSTILE], ids=[n for n, _ in HOSTILE])
def test_anything_else_is_none(body: object) -> None:
    assert parse_message(body) is None


@pytest.mark.parametrize("queue", ["", "a b", "x" * 81, "ftp://q/x", "name;rm", "q\n"])
def test_a_queue_that_is_neither_a_url_nor_a_name_is_refused(queue: str) -> None:
    with pytest.raises(BackendError, match="interruption_queue") as err:
        SqsNotices(object(), queue)
    assert not err.value.retryable


@pytest.mark.parametrize("queue", ["gha-spot", "spot_queue.fifo",
                                   "https://sqs.us-east-1.amazonaws.com/123456789012/gha-spot",
                                   "http://127.0.0.1:5000/123456789012/gha-spot"])
def test_urls_and_names_are_accepted(queue: str) -> None:
    assert SqsNotices(object(), queue).queue == queue
