"""Every EC2 module's AWS calls meet an "AWS" that answers garbage (200 with a body that is not
AWS's XML or JSON, the shape of a captive portal or a wrong endpoint_url): each says so in a
BackendError, never a traceback (botocore's ResponseParserError is no BotoCoreError)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gha_mlops.runners.backends.base import BackendError
from gha_mlops.runners.backends.ec2_clients import client_error, make_clients
from gha_mlops.runners.backends.ec2_instance import InstanceAws
from gha_mlops.runners.backends.ec2_notices import SqsNotices
from gha_mlops.runners.backends.ec2_template import AwsCallError, call
from tests.integration.aws_fixtures import stub_endpoint

ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@pytest.fixture
def garbage() -> Iterator[str]:
    page = b"<html><body>Welcome to the hotel wifi<"
    with stub_endpoint(lambda body: (200, "text/html", page)) as url:
        yield url


def test_garbage_answers_are_errors_not_tracebacks(garbage: str) -> None:
    clients = make_clients("us-east-1", endpoint_url=garbage, environ=ENV)
    with pytest.raises(AwsCallError) as called:
        call("DescribeInstances", lambda: clients.ec2.describe_instances())
    assert called.value.classification.operation == "DescribeInstances"
    try:  # SQS speaks JSON: botocore may read the page as an empty answer (no messages)
        assert SqsNotices(clients.sqs, "https://q.example/1/q").poll() == []
    except BackendError as err:
        assert "SQS queue 'https://q.example/1/q'" in err.message
    with pytest.raises(BackendError, match=r"GetParameter|has no value"):
        InstanceAws(clients, sleep=lambda s: None).take_parameter("/gha-mlops/box/r1")


def test_client_error_reads_only_strings_and_bounds_them() -> None:
    fake = Exception()
    fake.response = {"Error": {"Code": "X" * 5000, "Message": ["not", "a", "string"]}}  # type: ignore[attr-defined]
    assert client_error(fake, limit=100) == ("X" * 100, "")
    assert client_error(ValueError("no response")) == ("", "")
