#!/usr/bin/env python3
"""The tests' stand-in for GitHub's runner, which cannot be downloaded where the tests run.

``run.sh --jitconfig CONFIG``, where CONFIG is the base64 of a JSON object
``{"runner_id", "name", "labels", "url", "token"}``. It speaks this protocol with the GitHub
emulator (every request carries ``Authorization: RunnerSession <token>``):

    POST   {url}/_runner/session         open the session: 200; 401/409/410 -> exit 1
    POST   {url}/_runner/acquire?wait=5  200 {"job": {...}}; 204 none yet (ask again);
                                         410 the runner was deregistered -> exit 0
    POST   {url}/_runner/heartbeat       {"job_id"} every 0.5 s while the job "runs" (it
                                         sleeps the job's `duration`); 404/410 cancel it
    POST   {url}/_runner/complete        {"job_id", "conclusion"}, then exit 0: ephemeral,
                                         one job per runner, as GitHub's with a JIT config
    DELETE {url}/_runner/session         on SIGTERM before a job, then exit 0

Around the job it runs $ACTIONS_RUNNER_HOOK_JOB_STARTED and $ACTIONS_RUNNER_HOOK_JOB_COMPLETED
with bash and the job's GITHUB_* variables, as GitHub's runner does. Connection errors and 5xx
answers are retried with backoff, then it exits 1. One line per step on stdout.

Python standard library only (json, urllib: Debian's `python3`, not `python3-minimal`).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ATTEMPTS = 5  # per request, on connection errors and 5xx answers
BACKOFF_S = float(os.environ.get("STANDIN_BACKOFF_S", "0.25"))  # doubled on each retry
HEARTBEAT_S = 0.5
ACQUIRE_WAIT_S = 5
REFUSALS = {401: "bad credentials", 409: "the runner has a session already",
            410: "the runner was deregistered"}


class Terminated(BaseException):
    """SIGTERM arrived. Raised by the handler, so a blocking request or sleep stops at once;
    a BaseException, so no ``except Exception`` on the way swallows it."""


class Fatal(Exception):
    """The runner cannot go on: exit 1 with this message."""


def say(message: str) -> None:
    print(f"standin: {message}", flush=True)


def on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


class Session:
    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def request(self, method: str, path: str, body: object = None, *, timeout: float = 10,
                attempts: int = ATTEMPTS) -> tuple[int, Any]:
        """``(status, decoded JSON body or None)``; retries connection errors and 5xx."""
        data = None if body is None else json.dumps(body).encode()
        problem = ""
        for attempt in range(attempts):
            if attempt:
                delay = BACKOFF_S * 2**attempt
                say(f"{method} {path}: {problem}; retrying in {delay:g} s")
                time.sleep(delay)
            req = urllib.request.Request(
                self.url + path, data=data, method=method,
                headers={"Authorization": f"RunnerSession {self.token}",
                         "Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=timeout) as resp:
                    status, raw = resp.status, resp.read()
            except urllib.error.HTTPError as err:
                status, raw = err.code, err.read()
            except (urllib.error.URLError, OSError) as err:  # refused, reset, timed out
                problem = str(getattr(err, "reason", err))
                continue
            if status >= 500:
                problem = f"HTTP {status}"
                continue
            try:
                return status, json.loads(raw) if raw else None
            except ValueError:
                return status, None
        raise Fatal(f"{method} {self.url}{path}: {problem} ({attempts} attempts)")


def run_hook(event: str, variable: str, env: dict[str, str]) -> None:
    script = os.environ.get(variable)
    if not script:
        say(f"{event} hook: none (${variable} is not set)")
        return
    say(f"{event} hook: {script}")
    code = subprocess.run(["bash", script], env=env, check=False).returncode
    say(f"{event} hook exited {code}")


def run_job(session: Session, name: str, job: dict[str, Any]) -> int:
    job_id = job["id"]
    conclusion = str(job.get("conclusion", "success"))
    say(f"job {job_id} ({job.get('name', '')}) of {job.get('repo', '')}, run "
        f"{job.get('run_id', '')}: started")
    temp = Path.home() / "_work" / "_temp"
    temp.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, RUNNER_NAME=name, RUNNER_TEMP=str(temp),
               GITHUB_REPOSITORY=str(job.get("repo", "")), GITHUB_JOB=str(job.get("name", "")),
               GITHUB_RUN_ID=str(job.get("run_id", "")),
               GITHUB_RUN_ATTEMPT=str(job.get("run_attempt", 1)))
    try:
        run_hook("job-started", "ACTIONS_RUNNER_HOOK_JOB_STARTED", env)
        (temp / f"job-{job_id}.tmp").write_text("what a step leaves behind\n")
        deadline = time.monotonic() + float(job.get("duration", 0))
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(HEARTBEAT_S, left))
            status, _ = session.request("POST", "/_runner/heartbeat", {"job_id": job_id})
            if status in (404, 410):
                say(f"job {job_id}: cancelled (heartbeat answered {status})")
                conclusion = "cancelled"
                break
    except Terminated:
        say(f"job {job_id}: SIGTERM, cancelling it")
        conclusion = "cancelled"
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # finish the job's bookkeeping regardless
    run_hook("job-completed", "ACTIONS_RUNNER_HOOK_JOB_COMPLETED", env)
    say(f"temp files left: {sum(1 for _ in temp.iterdir())}")
    status, _ = session.request("POST", "/_runner/complete",
                                {"job_id": job_id, "conclusion": conclusion})
    if status != 200:
        raise Fatal(f"completing job {job_id} was refused: HTTP {status}")
    say(f"job {job_id} completed: {conclusion}; exiting (ephemeral runner)")
    return 0


def serve(config: dict[str, Any]) -> int:
    name = str(config["name"])
    session = Session(str(config["url"]), str(config["token"]))
    try:
        say(f"runner {name} (id {config['runner_id']}, labels "
            f"{','.join(config.get('labels', []))}): opening a session at {session.url}")
        status, _ = session.request("POST", "/_runner/session", {
            "runner_id": config["runner_id"], "name": name, "labels": config.get("labels", [])})
        if status != 200:
            raise Fatal(f"the session was refused: HTTP {status} "
                        f"({REFUSALS.get(status, 'unexpected answer')})")
        say("session open; waiting for a job")
        while True:
            status, body = session.request("POST", f"/_runner/acquire?wait={ACQUIRE_WAIT_S}",
                                           timeout=ACQUIRE_WAIT_S + 10)
            if status == 200 and isinstance(body, dict) and isinstance(body.get("job"), dict):
                break
            if status == 410:
                say("the runner was deregistered; exiting")
                return 0
            if status != 204:
                raise Fatal(f"acquiring a job: unexpected HTTP {status}")
    except Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        say("SIGTERM before a job: closing the session")
        try:
            session.request("DELETE", "/_runner/session", attempts=2)
        except Fatal as err:
            say(f"could not close the session: {err}")
        return 0
    return run_job(session, name, body["job"])


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "--jitconfig":
        say("usage: run.sh --jitconfig CONFIG")
        return 2
    try:
        config = json.loads(base64.b64decode(argv[1], validate=True))
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
        missing = {"runner_id", "name", "url", "token"} - set(config)
        if missing:
            raise ValueError(f"missing {', '.join(sorted(missing))}")
    except (ValueError, TypeError) as err:
        say(f"error: the --jitconfig is not base64 of the JSON config: {err}")
        return 1
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return serve(config)
    except Fatal as err:
        say(f"error: {err}")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
