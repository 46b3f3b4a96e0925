"""predlog_writer's standard-library S3 sink: its signature is botocore's, it retries what
can pass on a retry and no more, and a writer over a failing store counts, never raises.
(The round trip through a real S3 server is tests/integration/test_serving_predlog.py.)"""

from __future__ import annotations

import calendar
import contextlib
import hashlib
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from gha_mlops.monitor import predlog_writer as pw

SCHEMA = {"inputs": {"x": ["FP32", [-1]]}, "outputs": {"y": ["INT64", [-1]]}}


@pytest.mark.parametrize("token", [None, "session-token"])
@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9000", None], ids=["custom", "aws"])
def test_the_signature_is_the_one_botocore_makes(endpoint: str | None,
                                                 token: str | None) -> None:
    where = pw.S3Location("my-bucket", "logs/p/", "eu-west-3", endpoint)
    sink = pw.S3Sink(where, "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    data = b"some gzip bytes \x00\xff"
    key = "logs/p/Model/v1%2Bcpu/k.jsonl.gz"  # as put() quotes "v1+cpu"
    if endpoint:
        url, path = f"{endpoint}/my-bucket/{key}", f"/my-bucket/{key}"
    else:
        url, path = f"https://my-bucket.s3.eu-west-3.amazonaws.com/{key}", f"/{key}"
    request = AWSRequest(method="PUT", url=url, data=data,
                         headers={"x-amz-content-sha256": hashlib.sha256(data).hexdigest()})
    S3SigV4Auth(Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token),
                "s3", "eu-west-3").add_auth(request)
    when = calendar.timegm(time.strptime(request.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ"))
    ours = sink.signed_headers(path, data, float(when))
    assert ours["authorization"] == request.headers["Authorization"]
    assert ours["host"] == url.split("/")[2]


def test_aws_is_addressed_virtual_hosted_unless_the_bucket_has_dots() -> None:
    plain = pw.S3Sink(pw.S3Location("logs", "", "eu-west-1"), "a", "s")
    dotted = pw.S3Sink(pw.S3Location("my.logs", "", "eu-west-1"), "a", "s")
    assert plain.signed_headers("/k", b"", 0.0)["host"] == "logs.s3.eu-west-1.amazonaws.com"
    assert dotted.signed_headers("/my.logs/k", b"", 0.0)["host"] == \
        "s3.eu-west-1.amazonaws.com"


@pytest.mark.parametrize(("url", "env", "want"), [
    ("s3://bucket", {}, pw.S3Location("bucket", "", "us-east-1")),
    ("s3://b.c-d/a/b/", {"AWS_DEFAULT_REGION": "eu-west-1"},
     pw.S3Location("b.c-d", "a/b/", "eu-west-1")),
    ("s3://bucket/p", {"AWS_REGION": "ap-south-2", "AWS_DEFAULT_REGION": "eu-west-1",
                       "AWS_ENDPOINT_URL": "http://127.0.0.1:5000"},
     pw.S3Location("bucket", "p/", "ap-south-2", "http://127.0.0.1:5000")),
])
def test_locations_parse(url: str, env: dict[str, str], want: pw.S3Location) -> None:
    assert pw.S3Location.parse(url, env) == want


@pytest.mark.parametrize(("url", "env"), [
    ("s3://Bucket/x", {}), ("s3://ab", {}), ("s3://b..c/x", {}), ("s3://bucket/../x", {}),
    ("s3://bucket/a b", {}), ("s3://bucket/x?y=1", {}), ("http://bucket/x", {}),
    ("s3://bucket/x", {"AWS_REGION": "us east"}),
    ("s3://bucket/x", {"AWS_ENDPOINT_URL": "ftp://host"}),
    ("s3://bucket/x", {"AWS_ENDPOINT_URL": "http://host/path"}),
])
def test_bad_locations_are_refused(url: str, env: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        pw.S3Location.parse(url, env)


class _Store(http.server.BaseHTTPRequestHandler):
    """Answers PUTs with the statuses queued in ``plan`` (then 200); records what came."""

    plan: ClassVar[list[int]] = []
    seen: ClassVar[list[tuple[str, dict[str, str], bytes]]] = []

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append((self.path, dict(self.headers), body))
        status = type(self).plan.pop(0) if type(self).plan else 200
        reply = (b"<Error><Code>AccessDenied</Code><Message>no</Message></Error>"
                 if status >= 300 else b"")
        self.send_response(status)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def store() -> Iterator[tuple[str, type[_Store]]]:
    handler = type("Store", (_Store,), {"plan": [], "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _sink(endpoint: str) -> pw.S3Sink:
    return pw.S3Sink.from_env("s3://bucket/pre", {
        "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s"})


def test_a_5xx_is_retried_with_backoff_and_the_put_lands(
        store: tuple[str, type[_Store]]) -> None:
    endpoint, handler = store
    handler.plan = [503, 500]
    sink = _sink(endpoint)
    sink.backoff_s = 0.01
    sink.put("m/v/k.jsonl.gz", b"data")
    assert [(p, b) for p, _, b in handler.seen] == [("/bucket/pre/m/v/k.jsonl.gz", b"data")] * 3
    assert all(h["authorization"].startswith("AWS4-HMAC-SHA256 Credential=a/")
               for _, h, _ in handler.seen)


def test_a_4xx_is_not_retried_and_says_what_the_store_said(
        store: tuple[str, type[_Store]]) -> None:
    endpoint, handler = store
    handler.plan = [403]
    with pytest.raises(pw.S3Error, match="PUT s3://bucket/pre/k failed: HTTP 403: "
                                         "AccessDenied: no"):
        _sink(endpoint).put("k", b"x")
    assert len(handler.seen) == 1


def test_an_unreachable_store_is_tried_a_bounded_number_of_times() -> None:
    with socket_closed_port() as port:
        sink = _sink(f"http://127.0.0.1:{port}")
        sink.backoff_s = 0.0
        start = time.monotonic()
        with pytest.raises(pw.S3Error, match="ConnectionRefusedError"):
            sink.put("k", b"x")
        assert time.monotonic() - start < 5


def test_a_writer_over_a_failing_store_counts_and_never_raises(
        store: tuple[str, type[_Store]]) -> None:
    endpoint, handler = store
    handler.plan = [403]
    sink = _sink(endpoint)
    with pw.BatchWriter(sink, "m", "v", SCHEMA, max_rows=2) as writer:
        for i in range(4):
            writer.add(f"r{i}", {"x": 1.0}, {"y": 1})
        assert writer.flush(10)
    assert (writer.write_errors, writer.dropped_rows, writer.written_rows) == (1, 2, 2)
    assert writer.last_error and "AccessDenied" in writer.last_error


@contextlib.contextmanager
def socket_closed_port() -> Iterator[int]:
    """A port of 127.0.0.1 that nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    yield port


def test_open_sink_picks_the_store_or_the_directory(tmp_path: Any) -> None:
    env = {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s"}
    assert isinstance(pw.open_sink("s3://bucket/p", env), pw.S3Sink)
    assert isinstance(pw.open_sink(str(tmp_path / "new" / "dir"), env), pw.DirectorySink)
    assert (tmp_path / "new" / "dir").is_dir()
    with pytest.raises(ValueError, match="AWS_ACCESS_KEY_ID"):
        pw.open_sink("s3://bucket/p", {})
