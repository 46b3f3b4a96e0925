"""The tests' stand-in for EC2's machines: moto keeps the API's truth (instances, tags,
states) but runs nothing, so this harness runs what an instance would.

It watches moto (``describe_instances`` at moto's own endpoint, not through the fault proxy:
EC2's machines are not subject to API faults) for instances of one owner tag that are
``pending`` or ``running``, and for each starts

- an IMDSv2 stand-in (:mod:`tests.integration.imds_standin`) serving the instance's id,
  region and tags (read from moto on each request), and
- the real agent, ``python -m gha_mlops runners agent --imds <stand-in> --endpoint-url
  <the proxy or moto> --runner-cmd <a wrapper over runner/standin/run.sh> --on-exit <terminate
  this instance in moto>``: the runner stand-in registers with the GitHub emulator and takes
  a job; its exit powers the "instance" off, as ``poweroff`` with shutdown behaviour
  terminate does on EC2.

When moto says an instance is terminated (or it is gone), its agent and runner are killed
with SIGKILL (EC2 took the machine away: a runner mid-job stops heartbeating and the emulator
fails its job after ``runner_timeout``). :meth:`Ec2Instances.interrupt` plays a spot
interruption: the notice in the instance's metadata and/or the EventBridge warning in the
SQS queue, then the termination ``after`` seconds later.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

from gha_mlops.runners.backends.base import LABEL_OWNER
from tests.integration.aws_fixtures import spot_interruption_warning
from tests.integration.imds_standin import ImdsStandin, moto_tags

REPO_ROOT = Path(__file__).resolve().parents[2]
STANDIN_RUNNER = REPO_ROOT / "runner" / "standin" / "run.sh"
REGION = "us-east-1"
# What the AMI's wrapper does (runner/entrypoint.sh): the config from the environment to the
# runner's --jitconfig, never on the agent's own command line.
WRAPPER = f"""#!/usr/bin/env bash
set -euo pipefail
cfg=$GHA_MLOPS_JITCONFIG
unset GHA_MLOPS_JITCONFIG
exec {STANDIN_RUNNER} --jitconfig "$cfg"
"""
# A runner that never connects (an instance that never registers): it only waits.
NEVER_REGISTERS = f"{sys.executable} -c 'import time; time.sleep(3600)'"
TERMINATE = """import sys, boto3
boto3.client("ec2", endpoint_url=sys.argv[1], region_name=sys.argv[2]).terminate_instances(
    InstanceIds=[sys.argv[3]])
"""


@dataclass
class Instance:
    """One instance the harness runs: its metadata stand-in, its agent, its agent's log."""

    id: str
    imds: ImdsStandin
    agent: subprocess.Popen[bytes]
    log: Path
    started: float = field(default_factory=time.monotonic)


class Ec2Instances:
    """Runs the instances of ``owner`` that moto has; see the module docstring."""

    def __init__(self, moto_endpoint: str, api_endpoint: str, owner: str, workdir: Path, *,
                 poll: str = "0.2s") -> None:
        import boto3  # type: ignore[import-untyped]

        self.moto_endpoint, self.api_endpoint, self.owner = moto_endpoint, api_endpoint, owner
        self.workdir = workdir
        self.poll = poll
        self.ec2 = boto3.client("ec2", endpoint_url=moto_endpoint, region_name=REGION)
        self.sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name=REGION)
        self.wrapper = workdir / "runner-wrapper.sh"
        self.wrapper.write_text(WRAPPER)
        self.wrapper.chmod(0o755)
        self.terminator = workdir / "terminate.py"
        self.terminator.write_text(TERMINATE)
        self.runner_cmd = str(self.wrapper)  # what instances started from now on run
        self.env: dict[str, str] = {}  # extra variables for the agents started from now on
        self.instances: dict[str, Instance] = {}
        self.seen: list[str] = []  # every instance id ever run, in order
        self.ended: dict[str, int | None] = {}  # instance id -> its agent's exit code
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="ec2-instances", daemon=True)

    # -- what tests call -------------------------------------------------------------------

    def start(self) -> Ec2Instances:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        with self._lock:
            for instance in list(self.instances.values()):
                self._end(instance)

    def live(self) -> list[dict[str, Any]]:
        """The owner's instances moto has pending or running."""
        return self._describe(["pending", "running"])

    def all(self) -> list[dict[str, Any]]:
        """Every instance of the owner, whatever its state."""
        return self._describe(None)

    def terminate(self, instance_id: str) -> None:
        """EC2 takes the machine away (moto's state, then the harness kills its processes)."""
        self.ec2.terminate_instances(InstanceIds=[instance_id])

    def interrupt(self, instance_id: str, *, after: float = 5.0, imds: bool = True,
                  queue_url: str | None = None,
                  action_time: str = "2026-12-06T03:02:00Z") -> threading.Timer:
        """A spot interruption: the notice in the instance's metadata (``imds``) and/or the
        EventBridge warning into ``queue_url``, then the instance terminated ``after``
        seconds later (the returned timer)."""
        if imds:
            with self._lock:
                self.instances[instance_id].imds.notify(action_time)
        if queue_url is not None:
            body = spot_interruption_warning(instance_id, region=REGION, action_time=action_time)
            self.sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(body))
        timer = threading.Timer(after, self.terminate, args=(instance_id,))
        timer.daemon = True
        timer.start()
        return timer

    def logs(self) -> str:
        """Every agent's log (for assertion messages)."""
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')}"
                         for p in sorted(self.workdir.glob("agent-*.log")))

    # -- the watch ---------------------------------------------------------------------------

    def _describe(self, states: list[str] | None) -> list[dict[str, Any]]:
        filters = [{"Name": f"tag:{LABEL_OWNER}", "Values": [self.owner]}]
        if states is not None:
            filters.append({"Name": "instance-state-name", "Values": states})
        out: list[dict[str, Any]] = []
        for page in self.ec2.get_paginator("describe_instances").paginate(Filters=filters):
            for reservation in page["Reservations"]:
                out.extend(reservation["Instances"])
        return out

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            try:
                live = {i["InstanceId"] for i in self.live()}
            except (ClientError, BotoCoreError):  # moto reset between tests: look again
                continue
            with self._lock:
                for iid in sorted(live - set(self.instances)):
                    if iid not in self.ended:
                        self.instances[iid] = self._run(iid)
                        self.seen.append(iid)
                for iid in sorted(set(self.instances) - live):
                    self._end(self.instances.pop(iid))

    def _run(self, iid: str) -> Instance:
        imds = ImdsStandin(iid, region=REGION, tag_source=moto_tags(self.ec2, iid)).start()
        log = self.workdir / f"agent-{iid}.log"
        on_exit = f"{sys.executable} {self.terminator} {self.moto_endpoint} {REGION} {iid}"
        with log.open("wb") as out:
            agent = subprocess.Popen(
                [sys.executable, "-m", "gha_mlops", "runners", "agent", "--imds", imds.endpoint,
                 "--endpoint-url", self.api_endpoint, "--runner-cmd", self.runner_cmd,
                 "--poll", self.poll, "--on-exit", on_exit, "--log-level", "debug"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "STANDIN_BACKOFF_S": "0.1",
                     **self.env})
        return Instance(iid, imds, agent, log)

    def _end(self, instance: Instance) -> None:
        """The machine is gone: everything on it stops at once (SIGKILL, no goodbye)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(instance.agent.pid, signal.SIGKILL)
        self.ended[instance.id] = instance.agent.wait(timeout=10)
        instance.imds.stop()


@contextlib.contextmanager
def ec2_instances(moto_endpoint: str, api_endpoint: str, owner: str, workdir: Path,
                  **kwargs: Any) -> Iterator[Ec2Instances]:
    """A started harness, stopped (every agent killed) after."""
    harness = Ec2Instances(moto_endpoint, api_endpoint, owner, workdir, **kwargs).start()
    try:
        yield harness
    finally:
        harness.stop()
