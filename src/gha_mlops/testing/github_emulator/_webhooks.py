"""``workflow_job`` webhooks: every job transition is POSTed, signed, to the configured URL
from one background thread (in order, never blocking the API), built from the matching
``@octokit/webhooks-examples`` payload with the job's fields filled in."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import queue
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

from ._actions import job_fields
from ._spec import load_workflow_job_examples
from ._state import Job, Store

DELIVERY_TIMEOUT = 10.0  # seconds GitHub waits for a receiver


@dataclass(frozen=True)
class Delivery:
    """One attempt to deliver a webhook: ``status`` is the receiver's HTTP status, None when
    the delivery was dropped on purpose (``drop_webhooks``) or the receiver was unreachable
    (``error`` says why). A redelivery keeps the delivery id and the body."""

    id: str
    event: str
    action: str
    job_id: int
    status: int | None
    redelivery: bool = False
    dropped: bool = False
    error: str | None = None
    body: bytes = field(default=b"", repr=False)


_Item = tuple[str, Job] | Delivery


class Webhooks:
    """The webhook sender: ``configure`` it, hand it job transitions (``on_job``), ``flush``
    to wait until everything handed over is delivered."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.url: str | None = None
        self.secret = ""
        self.drop = 0
        self._examples: dict[str, dict[str, Any]] = {}
        self._deliveries: list[Delivery] = []
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._idle = threading.Condition()
        self._pending = 0
        self._thread: threading.Thread | None = None
        self._api_url = self._root_url = ""
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def configure(self, url: str, secret: str) -> None:
        self._examples = load_workflow_job_examples()
        self.url, self.secret = url, secret

    def start(self, api_url: str, root_url: str) -> None:
        self._api_url, self._root_url = api_url, root_url
        self._thread = threading.Thread(target=self._run, name="github-webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=DELIVERY_TIMEOUT + 1)
            self._thread = None

    @property
    def deliveries(self) -> list[Delivery]:
        with self._idle:
            return list(self._deliveries)

    def on_job(self, action: str, job: Job) -> None:
        """A job changed (called under the store's lock: only queues it)."""
        if self.url is not None:
            self._put((action, job))

    def redeliver(self, delivery_id: str) -> None:
        with self._idle:
            found = [d for d in self._deliveries if d.id == delivery_id]
        if not found:
            raise KeyError(f"no webhook delivery {delivery_id}")
        self._put(dataclasses.replace(found[0], redelivery=True, dropped=False))

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every queued delivery has been attempted."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self._pending} webhook deliveries still pending")
                self._idle.wait(left)

    def _put(self, item: _Item) -> None:
        with self._idle:
            self._pending += 1
        self._queue.put(item)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            delivery = self._attempt(item)
            with self._idle:
                self._deliveries.append(delivery)
                self._pending -= 1
                self._idle.notify_all()

    def _attempt(self, item: _Item) -> Delivery:
        if isinstance(item, Delivery):
            return self._send(item)
        action, job = item
        delivery = Delivery(str(uuid.uuid4()), "workflow_job", action, job.id, None)
        try:
            body = json.dumps(self._payload(action, job)).encode()
        except Exception as err:  # an emulator bug: recorded, never the end of the thread
            return dataclasses.replace(delivery, error=f"could not build the payload: {err!r}")
        return self._send(dataclasses.replace(delivery, body=body))

    def _send(self, delivery: Delivery) -> Delivery:
        if self.drop > 0 and not delivery.redelivery:
            self.drop -= 1
            return dataclasses.replace(delivery, dropped=True)
        signature = hmac.new(self.secret.encode(), delivery.body, hashlib.sha256).hexdigest()
        request = urllib.request.Request(
            str(self.url),
            data=delivery.body,
            method="POST",
            headers={
                "X-GitHub-Event": delivery.event,
                "X-GitHub-Delivery": delivery.id,
                "X-Hub-Signature-256": f"sha256={signature}",
                "Content-Type": "application/json",
                "User-Agent": "GitHub-Hookshot/emulator",
            },
        )
        try:
            with self._opener.open(request, timeout=DELIVERY_TIMEOUT) as resp:
                return dataclasses.replace(delivery, status=resp.status)
        except urllib.error.HTTPError as err:
            return dataclasses.replace(delivery, status=err.code)
        except OSError as err:
            return dataclasses.replace(delivery, error=str(err))

    def _payload(self, action: str, job: Job) -> dict[str, Any]:
        example = self._examples[action]
        text = json.dumps(example)
        text = text.replace(example["repository"]["full_name"], job.repo)
        text = text.replace("https://api.github.com", self._api_url)
        text = text.replace("https://github.com", self._root_url)
        payload: dict[str, Any] = json.loads(text)
        owner, _, name = job.repo.partition("/")
        with self.store.lock:
            repo = self.store.repo(owner, name)
            run = dataclasses.replace(self.store.runs[job.run_id])
            is_org = self.store.org(owner) is not None
        payload["workflow_job"].update(job_fields(self._api_url, self._root_url, job, run))
        payload["repository"].update(
            id=repo.id if repo else 0,
            name=name,
            full_name=job.repo,
            private=bool(repo and repo.private),
        )
        payload["repository"]["owner"].update(
            login=owner,
            type="Organization" if is_org else "User",
            url=f"{self._api_url}/users/{owner}",
            html_url=f"{self._root_url}/{owner}",
        )
        return payload
