"""The constant-rate load generator against small loopback HTTP servers: it keeps its rate
(200 req/s here), its schedule does not wait for slow answers, every way a request can fail
is counted by name, and only the stale keep-alive race is sent again."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from gha_mlops.testing.load import ConstantLoad

BODY = b'{"inputs": []}'


@contextmanager
def serving(answer: Callable[[BaseHTTPRequestHandler, int], None]) -> Iterator[str]:
    """A keep-alive HTTP/1.1 server on loopback whose POSTs ``answer(handler, n)`` answers
    (``n``: the request's number); its URL."""
    count = iter(range(10**9))
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                n = next(count)
            answer(self, n)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v2/models/m/infer"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def send(handler: BaseHTTPRequestHandler, status: int, doc: Any, *,
         close_silently: bool = False) -> None:
    """One write for head and body: split writes would meet Nagle's algorithm and delayed
    ACKs (40 ms a request), and measure the test server instead of the load generator."""
    body = json.dumps(doc).encode()
    handler.wfile.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    if close_silently:  # like an nginx reload dropping an idle kept-alive connection
        handler.close_connection = True


def _versioned(handler: BaseHTTPRequestHandler, n: int) -> None:
    send(handler, 200, {"model_name": "m", "model_version": "1.1" if n % 4 else "1.0"})


def test_it_keeps_200_requests_a_second_and_counts_versions() -> None:
    with serving(_versioned) as url, ConstantLoad(url, BODY, rate=200) as load:
        time.sleep(1.5)
    report = load.report()
    assert 270 <= report.sent <= 305, report
    assert report.ok == report.sent and report.failed == 0 and report.resent == 0
    assert report.statuses == {"200": report.sent}
    assert sum(report.versions.values()) == report.sent and report.versions["1.0"] >= 60
    assert 180 <= report.achieved_rate <= 205
    assert 0 < report.p50_ms <= report.p99_ms < 100  # it keeps up: no request waits long


def test_a_slow_answer_does_not_slow_the_schedule() -> None:
    def slow(handler: BaseHTTPRequestHandler, n: int) -> None:
        time.sleep(0.25)
        _versioned(handler, n)

    with serving(slow) as url, ConstantLoad(url, BODY, rate=40, connections=16) as load:
        time.sleep(1.0)
    report = load.report()
    # a closed loop on one connection would send 4; this one keeps the schedule
    assert report.sent >= 36 and report.failed == 0, report
    assert report.p50_ms >= 250
    with serving(slow) as url, ConstantLoad(url, BODY, rate=40, connections=1) as load:
        time.sleep(1.0)
    # one connection cannot keep up: the requests wait, and the wait is latency
    assert load.report().p99_ms >= 600


def test_every_failure_is_counted_by_its_status_or_error() -> None:
    def flaky(handler: BaseHTTPRequestHandler, n: int) -> None:
        if n % 2:
            send(handler, 503, {"error": "overloaded"})
        else:
            _versioned(handler, n)

    with serving(flaky) as url, ConstantLoad(url, BODY, rate=50) as load:
        time.sleep(0.5)
    report = load.report()
    assert report.statuses.keys() == {"200", "503"} and report.failed == report.statuses["503"]
    assert report.first_errors[0] == '503: {"error": "overloaded"}'
    assert sum(report.versions.values()) == report.ok  # an error answer has no version

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with ConstantLoad(f"http://127.0.0.1:{port}/", BODY, rate=50) as load:
        time.sleep(0.3)
    refused = load.report()
    assert refused.sent > 0 and refused.statuses == {"error:ConnectionRefusedError": refused.sent}

    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        with ConstantLoad(url, BODY, rate=20, timeout=0.3, connections=4) as load:
            time.sleep(0.5)
    hung = load.report()
    assert set(hung.statuses) == {"error:TimeoutError"} and hung.ok == 0
    assert hung.first_errors[0] == "error:TimeoutError: timed out"


def test_only_the_stale_keep_alive_race_is_sent_again() -> None:
    def dropping(handler: BaseHTTPRequestHandler, n: int) -> None:
        send(handler, 200, {"model_version": "1"}, close_silently=True)

    with serving(dropping) as url, ConstantLoad(url, BODY, rate=50, connections=2) as load:
        time.sleep(0.6)
    report = load.report()
    assert report.failed == 0 and report.ok == report.sent and report.resent > 0, report

    def hanging_up(handler: BaseHTTPRequestHandler, n: int) -> None:
        handler.close_connection = True  # no answer at all, on a fresh connection too

    with serving(hanging_up) as url, ConstantLoad(url, BODY, rate=50) as load:
        time.sleep(0.3)
    lost = load.report()
    assert lost.ok == 0 and lost.resent == 0
    assert set(lost.statuses) <= {"error:RemoteDisconnected", "error:ConnectionResetError"}


def test_nonsense_settings_are_refused() -> None:
    for kwargs in ({"rate": 0}, {"rate": float("nan")}, {"rate": 1, "connections": 0}):
        with pytest.raises(ValueError, match="ConstantLoad"):
            ConstantLoad("http://127.0.0.1:1/", BODY, **kwargs)
    with pytest.raises(ValueError, match="not an http"):
        ConstantLoad("ftp://x/", BODY, rate=1)
