"""Talking to one backend (an OIP server) over HTTP: readiness, model metadata, metrics and
inference. Standard library only (http.client), one short-lived connection per call.

Every failure is a :class:`~gha_mlops.deploy.errors.DeployError` naming the URL and what
failed (refused, timed out, a status with the server's own error message, an answer that is
not what the protocol says), never an ``OSError`` or a traceback. Answers are read bounded:
a backend cannot make the deploying machine hold more than a few MiB.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

from gha_mlops.deploy.errors import DeployError
from gha_mlops.deploy.gates import MAX_METRICS_BYTES, MetricsSample, parse_metrics

MAX_ANSWER_BYTES = 16 * 1024 * 1024  # an inference answer (the router's default body limit)
MAX_SMALL_BYTES = 1024 * 1024  # health, metadata
_ALIVE_EVERY = 0.5  # seconds between alive() checks while waiting (it may be a Docker call)
_HINT = "look at the backend's logs (gha-mlops deploy status --env ENV names the container)"


class _Answer:
    """A status, the body (at most the limit asked for) and the URL, for messages."""

    def __init__(self, url: str, status: int, body: bytes) -> None:
        self.url, self.status, self.body = url, status, body

    def json_object(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.body)
        except (ValueError, RecursionError) as err:
            raise DeployError(f"{self.url}: the answer is not JSON ({_excerpt(self.body)})",
                              hint=_HINT) from err
        if not isinstance(doc, dict):
            raise DeployError(f"{self.url}: the answer is JSON but not an object "
                              f"({_excerpt(self.body)})", hint=_HINT)
        return doc

    def server_error(self) -> str:
        """The server's ``{"error": ...}`` message, else the start of its body."""
        try:
            doc = json.loads(self.body)
        except (ValueError, RecursionError):
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            return _excerpt(doc["error"].encode())
        return _excerpt(self.body)


def _excerpt(body: bytes, limit: int = 200) -> str:
    text = body[:limit].decode("utf-8", "replace").replace("\n", " ").strip()
    return text + ("..." if len(body) > limit else "") if text else "empty body"


def _split(base_url: str) -> tuple[type[http.client.HTTPConnection], str, int | None, str]:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DeployError(f"{base_url!r} is not an http:// or https:// URL",
                          hint="a backend's URL is http://ADDRESS:PORT")
    try:
        port = parts.port
    except ValueError as err:
        raise DeployError(f"{base_url!r}: the port is not a number 0..65535") from err
    kind = http.client.HTTPSConnection if parts.scheme == "https" else \
        http.client.HTTPConnection
    return kind, parts.hostname, port, parts.path.rstrip("/")


def _request(base_url: str, method: str, path: str, *, timeout: float, limit: int,
             body: bytes | None = None) -> _Answer:
    """One request on a fresh connection; DeployError naming the URL on any transport
    failure or an answer over ``limit`` bytes."""
    kind, host, port, prefix = _split(base_url)
    url = base_url.rstrip("/") + path
    conn = kind(host, port, timeout=timeout)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    deadline = time.monotonic() + timeout
    try:
        conn.request(method, prefix + path, body=body, headers=headers)
        response = conn.getresponse()
        data = _read(response, limit, deadline)
    except TimeoutError as err:
        raise DeployError(f"{url}: no answer within {timeout:g} s", hint=_HINT) from err
    except (OSError, http.client.HTTPException) as err:
        raise DeployError(f"{url}: {method} failed: {_why(err)}", hint=_HINT) from err
    finally:
        conn.close()
    if len(data) > limit:
        raise DeployError(f"{url}: the answer is over {limit} bytes", hint=_HINT)
    return _Answer(url, response.status, data)


def _read(response: http.client.HTTPResponse, limit: int, deadline: float) -> bytes:
    """At most ``limit + 1`` bytes of the body, within ``deadline``: the socket timeout
    bounds each read, not a server trickling a byte at a time."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        if time.monotonic() > deadline:
            raise TimeoutError("the answer kept arriving past the timeout")
        chunk = response.read1(min(64 * 1024, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _why(err: BaseException) -> str:
    text = str(err) or "connection closed without an answer"
    return f"{type(err).__name__}: {text}"[:300]


def wait_ready(base_url: str, *, timeout: float, alive: Callable[[], bool] | None = None,
               interval: float = 0.05) -> float:
    """Poll ``GET /v2/health/ready`` until it answers 200; the seconds it took.

    DeployError when ``timeout`` seconds pass first (naming the last thing seen: refused,
    503, ...), or as soon as ``alive()`` (asked every half second, and once more before
    giving up) says the backend's process is gone: waiting for a dead container is pointless.
    """
    start = time.monotonic()
    end = start + timeout
    next_alive = start
    last = "no answer yet"
    while True:
        now = time.monotonic()
        if alive is not None and (now >= next_alive or now >= end) and not alive():
            raise DeployError(
                f"{base_url}: the backend stopped before it became ready ({last})",
                hint="its logs say why (a model it cannot load, a port in use, ...)")
        next_alive = now + _ALIVE_EVERY if now >= next_alive else next_alive
        if now >= end:
            raise DeployError(
                f"{base_url}: not ready within {timeout:g} s (last: {last})",
                hint="raise ready_timeout for the environment if the model takes long to "
                     "load; else " + _HINT)
        try:
            answer = _request(base_url, "GET", "/v2/health/ready",
                              timeout=max(0.05, min(2.0, end - now)), limit=MAX_SMALL_BYTES)
        except DeployError as err:
            last = err.message
        else:
            if answer.status == 200:
                return time.monotonic() - start
            last = f"/v2/health/ready answered {answer.status}: {answer.server_error()}"
        time.sleep(max(0.0, min(interval, end - time.monotonic())))


def model_metadata(base_url: str, model: str, *, timeout: float = 5) -> dict[str, Any]:
    """``GET /v2/models/<model>``: the model's metadata (name, versions, inputs, outputs);
    DeployError on any status but 200 or an answer that is not a JSON object."""
    answer = _request(base_url, "GET", f"/v2/models/{quote(model, safe='')}",
                      timeout=timeout, limit=MAX_SMALL_BYTES)
    if answer.status != 200:
        raise DeployError(f"{answer.url}: model metadata answered {answer.status}: "
                          f"{answer.server_error()}", hint=_HINT)
    return answer.json_object()


def scrape(base_url: str, *, timeout: float = 2) -> MetricsSample:
    """``GET /metrics``, parsed (:func:`gha_mlops.deploy.gates.parse_metrics`); DeployError
    on any status but 200 or more than 1 MiB."""
    answer = _request(base_url, "GET", "/metrics", timeout=timeout, limit=MAX_METRICS_BYTES)
    if answer.status != 200:
        raise DeployError(f"{answer.url}: answered {answer.status}: {answer.server_error()}",
                          hint=_HINT)
    return parse_metrics(answer.body.decode("utf-8", "replace"), where=answer.url)


def infer(base_url: str, model: str, doc: dict[str, Any], *, timeout: float = 10
          ) -> dict[str, Any]:
    """``POST /v2/models/<model>/infer`` with ``doc`` as JSON; the answer's JSON object.
    DeployError on any status but 200 (with the server's own message) or a transport
    failure."""
    try:
        body = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as err:  # NaN, infinity or a non-JSON value: a bug of ours
        raise DeployError(f"{base_url}: the inference request cannot be JSON: {err}") from err
    answer = _request(base_url, "POST", f"/v2/models/{quote(model, safe='')}/infer",
                      timeout=timeout, limit=MAX_ANSWER_BYTES, body=body)
    if answer.status != 200:
        raise DeployError(f"{answer.url}: answered {answer.status}: {answer.server_error()}",
                          hint=_HINT)
    return answer.json_object()
