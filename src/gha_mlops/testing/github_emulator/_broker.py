"""The runner stand-in protocol: what a just-in-time runner does with the Actions service,
reduced to five calls below ``{root_url}/_runner/`` (not GitHub's REST API, not validated):

    POST   /_runner/session            open the session (once per JIT config): runner online
    POST   /_runner/acquire?wait=S     long poll (at most 5 s) for a job: 200 {"job": ...} or 204
    POST   /_runner/heartbeat          the busy runner is alive
    POST   /_runner/complete           {"job_id", "conclusion"}: the job ends, the runner goes
    DELETE /_runner/session            leave without a job: runner offline

Every call carries ``Authorization: RunnerSession <token>`` (the ``token`` of the JIT config).
Unknown token 401; a removed runner 410 (the stand-in exits); a JIT config used twice 409.
A busy runner silent for ``timeout`` seconds loses its job (completed, failure) and its
registration, as GitHub does when it loses a runner mid-job; the watch runs in a thread.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ._state import Job, Runner, Store

MAX_WAIT = 5.0
_CONCLUSIONS = frozenset(
    {"success", "failure", "neutral", "cancelled", "skipped", "timed_out", "action_required"}
)

Answer = tuple[int, Any]  # status, JSON body (None: no body)


class RunnerBroker:
    """Serves ``/_runner/...`` and watches busy runners' heartbeats."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.timeout = 3.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._routes: dict[
            tuple[str, str], Callable[[Runner, Mapping[str, list[str]], Any], Answer]
        ] = {
            ("POST", "acquire"): self._acquire,
            ("POST", "heartbeat"): self._heartbeat,
            ("POST", "complete"): self._complete,
            ("DELETE", "session"): self._leave,
        }

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="github-runner-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self.store.changed:
            self.store.changed.notify_all()  # wakes long polls
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            with self.store.lock:
                self.expire(time.monotonic())

    def expire(self, now: float) -> None:
        """Fail the job of every busy runner silent for ``timeout`` and remove the runner; an
        idle runner not seen for ``timeout`` past a long poll goes offline."""
        for runner in list(self.store.runners.values()):
            if runner.busy and now - runner.last_heartbeat > self.timeout:
                self._fail(runner)
            elif runner.status == "online" and now - runner.last_seen > self.timeout + MAX_WAIT:
                runner.status = "offline"

    def _fail(self, runner: Runner) -> None:
        job = self.store.jobs.get(runner.job_id or 0)
        if job is not None and job.status != "completed":
            self.store.finish_job(job, "failure")
        self.store.remove_runner(runner)

    # -- requests ---------------------------------------------------------------------------

    def handle(
        self,
        method: str,
        path: str,
        query: Mapping[str, list[str]],
        headers: Mapping[str, str],
        raw: bytes,
    ) -> Answer:
        action = path.removeprefix("/_runner/").strip("/")
        scheme, _, token = headers.get("authorization", "").partition(" ")
        body: Any = None
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError:
                return 400, {"message": "the body is not JSON"}
        with self.store.lock:
            runner = (
                self.store.runner_sessions.get(token.strip()) if scheme == "RunnerSession" else None
            )
            if runner is None:
                return 401, {"message": "Bad credentials"}
            if runner.deleted:
                return 410, {"message": f"runner {runner.name} was removed"}
            runner.last_seen = time.monotonic()
            if runner.session == "open":
                runner.status = "online"
            if (method, action) == ("POST", "session"):
                return self._open(runner)
            route = self._routes.get((method, action))
            if route is None:
                return 404, {"message": "Not Found"}
            if runner.session != "open":
                return 409, {"message": f"runner {runner.name} has no open session"}
            return route(runner, query, body)

    def _open(self, runner: Runner) -> Answer:
        if runner.session != "new":
            return 409, {"message": f"the JIT config of runner {runner.name} was used already"}
        runner.session, runner.status = "open", "online"
        return 200, {"runner_id": runner.id}

    def _acquire(self, runner: Runner, query: Mapping[str, list[str]], body: Any) -> Answer:
        try:
            wait = min(max(float(query.get("wait", ["0"])[-1]), 0.0), MAX_WAIT)
        except ValueError:
            return 400, {"message": "wait must be a number of seconds"}
        deadline = time.monotonic() + wait
        while True:
            if runner.deleted:
                return 410, {"message": f"runner {runner.name} was removed"}
            job = self.store.jobs.get(runner.job_id) if runner.job_id else self._next_job(runner)
            if job is not None:
                if runner.job_id is None:
                    self.store.start_job(job, runner)
                runner.last_seen = time.monotonic()
                return 200, {"job": _job_view(job)}
            left = deadline - time.monotonic()
            if left <= 0 or self._stop.is_set():
                runner.last_seen = time.monotonic()
                return 204, None
            self.store.changed.wait(left)

    def _next_job(self, runner: Runner) -> Job | None:
        labels = {label.lower() for label in runner.labels}
        for job in sorted(self.store.jobs.values(), key=lambda j: j.id):
            if (
                job.status == "queued"
                and runner.serves(job.repo)
                and {label.lower() for label in job.labels} <= labels
            ):
                return job
        return None

    def _heartbeat(self, runner: Runner, query: Mapping[str, list[str]], body: Any) -> Answer:
        runner.last_heartbeat = time.monotonic()
        return 200, {"job_id": runner.job_id}

    def _complete(self, runner: Runner, query: Mapping[str, list[str]], body: Any) -> Answer:
        if not isinstance(body, dict) or body.get("conclusion") not in _CONCLUSIONS:
            return 400, {"message": f"conclusion must be one of {sorted(_CONCLUSIONS)}"}
        if runner.job_id is None or body.get("job_id") != runner.job_id:
            return 409, {"message": f"runner {runner.name} is not running job {body.get('job_id')}"}
        job = self.store.jobs[runner.job_id]
        self.store.finish_job(job, body["conclusion"])
        self.store.remove_runner(runner)
        return 200, {"job_id": job.id}

    def _leave(self, runner: Runner, query: Mapping[str, list[str]], body: Any) -> Answer:
        if runner.busy:
            self._fail(runner)
        else:
            runner.session, runner.status = "closed", "offline"
            self.store.changed.notify_all()
        return 204, None


def _job_view(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "repo": job.repo,
        "run_id": job.run_id,
        "run_attempt": job.run_attempt,
        "name": job.name,
        "labels": list(job.labels),
        "duration": job.duration,
        "conclusion": job.planned_conclusion,
    }
