"""docs/serving.md says what the server does: each HTTP request it shows is sent to a real
server and answered as shown, its Python example runs, the metrics it names exist."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.oip_fixtures import RunningServer, running_server, write_model_dir

DOC = Path(__file__).resolve().parents[2] / "docs/serving.md"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)


def _fences(lang: str) -> list[str]:
    return [body for kind, body in _FENCE.findall(DOC.read_text()) if kind == lang]


def _exchanges() -> list[tuple[str, str]]:
    blocks = _fences("http")
    assert len(blocks) % 2 == 0 and len(blocks) >= 8
    return list(zip(blocks[::2], blocks[1::2], strict=True))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("tiny"), name="tiny", version="1.0.0")


@pytest.fixture(scope="module")
def server(folder: Path) -> Iterator[RunningServer]:
    with running_server(folder) as running:
        yield running


@pytest.mark.parametrize(("request_text", "response_text"), _exchanges(),
                         ids=[r.splitlines()[0] for r, _ in _exchanges()])
def test_each_request_shown_gets_the_answer_shown(
        server: RunningServer, request_text: str, response_text: str) -> None:
    head, _, body = request_text.partition("\n\n")
    method, path, _ = head.splitlines()[0].split(" ")
    headers = dict(line.split(": ", 1) for line in head.splitlines()[1:])
    conn = http.client.HTTPConnection(*server.host_port, timeout=10)
    conn.request(method, path, body=body.encode() or None, headers=headers)
    got = conn.getresponse()
    got_body = json.loads(got.read())
    conn.close()
    want_head, _, want_body = response_text.partition("\n\n")
    status_line, *want_headers = want_head.splitlines()
    assert f"HTTP/1.1 {got.status} {got.reason}" == status_line
    for line in want_headers:
        name, value = line.split(": ", 1)
        assert got.getheader(name) == value
    assert got_body == json.loads(want_body)


def test_the_python_example_runs_and_prints_what_it_says(server: RunningServer) -> None:
    (code,) = _fences("python")
    expected = re.search(r"print\(.*\)  # (.*)$", code, re.M)
    assert expected is not None
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code.replace("127.0.0.1:8080", server.url.removeprefix("http://")), {})
    assert out.getvalue().strip() == expected.group(1)


def _served(server: RunningServer) -> set[str]:
    conn = http.client.HTTPConnection(*server.host_port, timeout=10)
    conn.request("GET", "/metrics")
    served = set(re.findall(r"^# TYPE (\w+)", conn.getresponse().read().decode(), re.M))
    conn.close()
    return served


def test_the_metrics_named_are_the_metrics_served(server: RunningServer, folder: Path,
                                                  tmp_path: Path) -> None:
    named = set(re.findall(r"`(oip_\w+)", DOC.read_text()))
    assert named == {n for n in _served(server) if n.startswith("oip_")}
    # The model's own and the log's (gha_mlops_*): each one named is served with --log (the
    # value histogram needs a model with one float per instance, which tiny has not).
    with running_server(folder, "--log", str(tmp_path)) as logging:
        served = _served(logging) | {"gha_mlops_prediction_value"}
    assert set(re.findall(r"`(gha_mlops_\w+)", DOC.read_text())) <= served


def test_the_model_json_shown_has_the_fields_the_server_reads() -> None:
    shown = [json.loads(block) for block in _fences("json")]
    assert set(shown[0]) == {"name", "version", "platform", "inputs", "outputs", "sha256",
                             "run_id", "commit"}
