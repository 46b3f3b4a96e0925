"""The interruption queue for real: a moto server's SQS and EventBridge, reached by boto3
through the fault proxy (ec2_clients.make_clients, botocore retries off).

An EventBridge rule routes the spot warning to the queue (moto delivers PutEvents to an SQS
target, as AWS does); SqsNotices polls it, deletes what is not a notice, and deletes the
notices handled. A missing queue and a failing SQS are a BackendError naming the queue.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from gha_mlops.runners.backends.base import BackendError
from gha_mlops.runners.backends.ec2_clients import make_clients
from gha_mlops.runners.backends.ec2_notices import Notice, SqsNotices
from tests.integration.aws_fixtures import (  # noqa: F401
    FaultProxy,
    MotoServer,
    aws_env,
    fault_proxy,
    moto_server,
    spot_interruption_warning,
)

pytest.importorskip("boto3")

ID = "i-0123456789abcdef0"
RULE = {"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning"]}


@pytest.fixture
def clients(moto_server: MotoServer, fault_proxy: FaultProxy,  # noqa: F811
            aws_env: None) -> Iterator[Any]:  # noqa: F811
    moto_server.reset()
    yield make_clients("us-east-1", endpoint_url=fault_proxy.endpoint,
                       environ={"AWS_ACCESS_KEY_ID": "testing",
                                "AWS_SECRET_ACCESS_KEY": "testing"})


def queue_with_rule(clients: Any, name: str = "gha-spot") -> str:
    """The documented set-up: a queue and a rule sending the spot warning to it."""
    url: str = clients.sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = clients.sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events = events_client(clients)
    events.put_rule(Name="gha-spot", EventPattern=json.dumps(RULE))
    events.put_targets(Rule="gha-spot", Targets=[{"Id": "queue", "Arn": arn}])
    return url


def events_client(clients: Any) -> Any:
    """EventBridge at the same endpoint (make_clients makes no events client: only the test
    puts events)."""
    import boto3

    return boto3.client("events", region_name="us-east-1",
                        endpoint_url=clients.sqs.meta.endpoint_url)


def put_event(clients: Any, event: dict[str, Any]) -> None:
    """PutEvents as EC2 would emit it (moto accepts source aws.ec2 from a client)."""
    answer = events_client(clients).put_events(Entries=[{
        "Source": event["source"], "DetailType": event["detail-type"],
        "Detail": json.dumps(event["detail"]), "Resources": event["resources"],
        "Time": event["time"]}])
    assert answer["FailedEntryCount"] == 0


def test_a_warning_put_on_the_bus_reaches_the_queue_and_is_a_notice(clients: Any) -> None:
    queue_with_rule(clients)
    put_event(clients, spot_interruption_warning(ID, action_time="2026-12-06T03:00:00Z"))
    # Another EC2 event: the rule does not route it.
    put_event(clients, {**spot_interruption_warning(ID), "detail-type": "EC2 Instance "
                        "State-change Notification"})
    notices = SqsNotices(clients.sqs, "gha-spot")  # by name: GetQueueUrl once
    got = notices.poll()
    assert [(n.instance_id, n.action_time, n.source) for n in got] == [
        (ID, "2026-12-06T03:02:00Z", "eventbridge")]
    assert got[0].receipt and notices.ignored == 0
    assert notices.delete(got) == 1
    assert notices.poll() == []


def test_a_warning_fanned_out_through_sns_is_read_from_its_envelope(clients: Any) -> None:
    """EventBridge -> SNS topic -> SQS without raw delivery: the body is SNS's envelope. (The
    moto server answers PutEvents with a 500 for a rule whose target is a topic, so the event
    is published to the topic as EventBridge would; SNS -> SQS delivery is moto's.)"""
    import boto3

    sns = boto3.client("sns", region_name="us-east-1",
                       endpoint_url=clients.sqs.meta.endpoint_url)
    url = clients.sqs.create_queue(QueueName="gha-spot")["QueueUrl"]
    arn = clients.sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    topic = sns.create_topic(Name="spot")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    sns.publish(TopicArn=topic, Message=json.dumps(
        spot_interruption_warning(ID, action_time="2026-12-06T03:00:00Z")))
    notices = SqsNotices(clients.sqs, url)
    got = notices.poll()
    assert [(n.instance_id, n.action_time) for n in got] == [(ID, "2026-12-06T03:02:00Z")]
    assert notices.ignored == 0


def test_hostile_bodies_are_deleted_and_counted(clients: Any,
                                                fault_proxy: FaultProxy) -> None:  # noqa: F811
    url = queue_with_rule(clients)
    junk = ["not json", "{}", json.dumps({**spot_interruption_warning(ID), "source": "me"}),
            json.dumps(spot_interruption_warning("i-nothex!")), "[" * 5000 + "]" * 5000]
    for body in junk:
        clients.sqs.send_message(QueueUrl=url, MessageBody=body)
    # A warning sent straight to the queue (an SQS target's body is the event's JSON).
    clients.sqs.send_message(QueueUrl=url, MessageBody=json.dumps(
        spot_interruption_warning(ID, action_time="2026-12-06T03:00:00Z")))
    notices = SqsNotices(clients.sqs, url)  # by URL: no GetQueueUrl
    got: list[Notice] = []
    for _ in range(5):  # moto hands out up to 10 a receive; gather them all
        got += notices.poll(max_batches=1)
    assert [n.instance_id for n in got] == [ID]
    assert notices.ignored == len(junk)
    assert fault_proxy.calls("GetQueueUrl") == []
    assert notices.delete(got) == 1
    attrs = clients.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "0"
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "0"  # junk deleted, not hidden


def test_a_missing_queue_names_it_with_the_hint(clients: Any) -> None:
    missing = r"'gha-nope' \(backends.ec2.interruption_queue\) does not exist"
    with pytest.raises(BackendError, match=missing) as err:
        SqsNotices(clients.sqs, "gha-nope").poll()
    assert err.value.retryable and "EventBridge rule" in (err.value.hint or "")
    url = clients.sqs.create_queue(QueueName="gone")["QueueUrl"]
    clients.sqs.delete_queue(QueueUrl=url)
    with pytest.raises(BackendError, match=r"interruption_queue\) does not exist"):
        SqsNotices(clients.sqs, url).poll()


def test_an_sqs_error_is_a_retryable_backend_error(clients: Any,
                                                   fault_proxy: FaultProxy) -> None:  # noqa: F811
    url = queue_with_rule(clients)
    fault_proxy.fail("ReceiveMessage", "AccessDenied", "not allowed", status=403)
    with pytest.raises(BackendError, match="ReceiveMessage failed: AccessDenied") as err:
        SqsNotices(clients.sqs, url).poll()
    assert err.value.retryable and "sqs:ReceiveMessage" in (err.value.hint or "")
    assert fault_proxy.pending() == 0
    # times=2: make_clients' Config(retries={"max_attempts": 1}) still lets botocore retry a
    # 5xx once (botocore reads max_attempts as retries; total_max_attempts is the total).
    fault_proxy.fail("ReceiveMessage", "ServiceUnavailable", status=503, times=2)
    with pytest.raises(BackendError, match="ServiceUnavailable") as err:
        SqsNotices(clients.sqs, url).poll()
    assert err.value.retryable
