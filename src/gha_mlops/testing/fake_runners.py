"""In-memory fakes of the autoscaler's two ports, for unit tests and the simulator: a GitHub
that registers runners, queues and assigns jobs (:class:`FakeRunnersGitHub`) and a backend
that starts machines (:class:`FakeBackend`). Both implement our own Protocols; neither patches
an SDK. Faults are injected with ``fail_next``."""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from gha_mlops.github.port import (
    GhJob,
    GhRunner,
    GitHubError,
    JitConfig,
    RateBudget,
    RunnerBusyError,
    RunnersPort,
)
from gha_mlops.runners.backends.base import (
    CREATED,
    LOST,
    RUNNING,
    BackendError,
    Health,
    LaunchSpec,
    Machine,
    RunnerBackend,
)


@dataclass
class _Faults:
    pending: dict[str, list[Exception]] = field(default_factory=dict)

    def add(self, method: str, err: Exception, times: int = 1) -> None:
        self.pending.setdefault(method, []).extend([err] * times)

    def check(self, method: str) -> None:
        errs = self.pending.get(method)
        if errs:
            raise errs.pop(0)


class FakeRunnersGitHub(RunnersPort):
    """A repository's (or organization's) runners and jobs, as the RunnersPort sees them."""

    def __init__(self, repo: str = "octo/demo", *, clock: Callable[[], float] = time.time,
                 rate_limit: int = 5000) -> None:
        self.repo = repo
        self.clock = clock
        self.runners: dict[int, GhRunner] = {}
        self.jobs: dict[int, GhJob] = {}
        self.calls: list[str] = []
        self.faults = _Faults()
        self._ids = itertools.count(1000)
        self._lock = threading.RLock()
        self._limit = rate_limit
        self._used = 0
        self._reset = clock() + 3600
        self.closed = False

    def close(self) -> None:
        """Remember that the service let go (``closed``)."""
        self.closed = True

    def fail_next(self, method: str, err: Exception | None = None, times: int = 1) -> None:
        self.faults.add(method, err or GitHubError(f"{method}: 502 Bad Gateway", status=502),
                        times)

    def exhaust_rate_limit(self, reset_in: float = 60.0) -> None:
        """Spend the rate limit: every call fails (403) until ``reset_in`` seconds from now."""
        self._used = self._limit
        self._reset = self.clock() + reset_in

    def _call(self, method: str) -> None:
        self.calls.append(method)
        if self.clock() >= self._reset:
            self._used, self._reset = 0, self.clock() + 3600
        if self._used >= self._limit:
            raise GitHubError(f"{method}: 403 API rate limit exceeded", status=403)
        self._used += 1
        self.faults.check(method)

    # -- RunnersPort ------------------------------------------------------------------------

    def generate_jitconfig(self, name: str, labels: tuple[str, ...], *,
                           runner_group_id: int = 1, work_folder: str = "_work") -> JitConfig:
        with self._lock:
            self._call("generate_jitconfig")
            if any(r.name == name for r in self.runners.values()):
                raise GitHubError(f"a runner named {name} exists already", status=409)
            rid = next(self._ids)
            self.runners[rid] = GhRunner(rid, name, "offline", False, tuple(labels))
            blob = json.dumps({"runner_id": rid, "name": name, "labels": list(labels)})
            return JitConfig(rid, name, base64.b64encode(blob.encode()).decode())

    def list_runners(self) -> list[GhRunner]:
        with self._lock:
            self._call("list_runners")
            return list(self.runners.values())

    def delete_runner(self, runner_id: int) -> None:
        with self._lock:
            self._call("delete_runner")
            r = self.runners.get(runner_id)
            if r is None:
                return
            if r.busy:
                raise RunnerBusyError(f"runner {r.name} is still running a job", status=422)
            del self.runners[runner_id]

    def queued_jobs(self) -> list[GhJob]:
        with self._lock:
            self._call("queued_jobs")
            return [j for j in self.jobs.values() if j.status == "queued"]

    def get_job(self, repo: str, job_id: int) -> GhJob:
        with self._lock:
            self._call("get_job")
            if job_id not in self.jobs:
                raise GitHubError(f"job {job_id}: 404 Not Found", status=404)
            return self.jobs[job_id]

    def rerun_job(self, repo: str, job_id: int) -> None:
        with self._lock:
            self._call("rerun_job")
            job = self.jobs[job_id]
            if job.status != "completed":
                raise GitHubError("the workflow run is not completed yet", status=403)
            new = replace(job, id=next(self._ids), run_attempt=job.run_attempt + 1,
                          status="queued", conclusion=None, runner_name=None,
                          started_at=None, completed_at=None)
            self.jobs[new.id] = new

    def rate_budget(self) -> RateBudget | None:
        return RateBudget(remaining=max(0, self._limit - self._used), limit=self._limit,
                          reset=self._reset)

    # -- what GitHub itself does ------------------------------------------------------------

    def queue(self, labels: tuple[str, ...], *, name: str = "train") -> GhJob:
        with self._lock:
            jid = next(self._ids)
            job = GhJob(id=jid, repo=self.repo, run_id=jid, run_attempt=1, name=name,
                        status="queued", labels=labels)
            self.jobs[jid] = job
            return job

    def runner_by_name(self, name: str) -> GhRunner | None:
        return next((r for r in self.runners.values() if r.name == name), None)

    def connect(self, name: str) -> None:
        """The runner process started and connected: it is online."""
        with self._lock:
            r = self.runner_by_name(name)
            if r is not None:
                self.runners[r.id] = replace(r, status="online")

    def assign(self, name: str) -> GhJob | None:
        """Give the oldest queued job this runner can take to it (what GitHub does)."""
        with self._lock:
            r = self.runner_by_name(name)
            if r is None or r.status != "online" or r.busy:
                return None
            labels = {x.lower() for x in r.labels}
            for job in sorted(self.jobs.values(), key=lambda j: j.id):
                if job.status == "queued" and {x.lower() for x in job.labels} <= labels:
                    job = replace(job, status="in_progress", runner_name=name)
                    self.jobs[job.id] = job
                    self.runners[r.id] = replace(r, busy=True)
                    return job
            return None

    def finish(self, job_id: int, conclusion: str = "success") -> GhJob:
        """The job ends; its ephemeral runner is removed."""
        with self._lock:
            job = replace(self.jobs[job_id], status="completed", conclusion=conclusion)
            self.jobs[job_id] = job
            r = self.runner_by_name(job.runner_name or "")
            if r is not None:
                del self.runners[r.id]
            return job

    def disconnect(self, name: str) -> None:
        """The runner's process died: it goes offline (its job, if any, stays in progress
        until :meth:`finish` fails it, as GitHub does minutes later)."""
        with self._lock:
            r = self.runner_by_name(name)
            if r is not None:
                self.runners[r.id] = replace(r, status="offline", busy=False)


class FakeBackend(RunnerBackend):
    """Machines that exist as soon as they are launched (boot times are the simulator's)."""

    name = "docker"

    def __init__(self, *, clock: Callable[[], float] = time.time, gpus: int | None = None,
                 on_launch: Callable[[LaunchSpec], None] | None = None) -> None:
        self.clock = clock
        self.machines: dict[str, Machine] = {}
        self.specs: dict[str, LaunchSpec] = {}
        self.launched: list[tuple[float, str]] = []  # (when, runner)
        self.destroyed: list[str] = []
        self.started: list[str] = []  # machines start() started
        self.faults = _Faults()
        self.gpus = gpus
        self.on_launch = on_launch
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.closed = False

    def fail_next(self, method: str, err: Exception | None = None, times: int = 1) -> None:
        self.faults.add(method, err or BackendError(f"{method}: the daemon is restarting"),
                        times)

    def launch(self, spec: LaunchSpec) -> Machine:
        if self.on_launch is not None:
            self.on_launch(spec)
        with self._lock:
            self.faults.check("launch")
            if self.gpus is not None and spec.gpus > self.free_gpus():
                raise BackendError(f"no free GPU for {spec.runner_name}", retryable=True)
            mid = f"m{next(self._ids)}"
            m = Machine(mid, spec.runner_name, spec.pool, "running", self.clock(),
                        gpus=tuple(str(i) for i in range(spec.gpus)))
            self.machines[mid] = m
            self.specs[mid] = spec
            self.launched.append((self.clock(), spec.runner_name))
            return m

    def create(self, spec: LaunchSpec) -> Machine:
        """What a launch cut short between creating and starting leaves: a machine in state
        ``created`` (the crash tests' "killed after create")."""
        m = self.launch(spec)
        with self._lock:
            m = self.machines[m.id] = replace(m, state=CREATED)
            return m

    def start(self, machine_id: str) -> Machine:
        with self._lock:
            self.faults.check("start")
            m = self.machines.get(machine_id)
            if m is None:
                raise BackendError(f"starting machine {machine_id}: it is gone",
                                   retryable=False)
            if m.state == CREATED:
                m = self.machines[machine_id] = replace(m, state=RUNNING)
                self.started.append(machine_id)
            return m

    def lose(self, runner: str) -> None:
        """Its host stopped the machine under its runner (a daemon restart, a spot
        interruption): list() reports it ``lost`` until it is destroyed."""
        with self._lock:
            m = self.machine_of(runner)
            if m is not None:
                self.machines[m.id] = replace(m, state=LOST)

    def list(self) -> list[Machine]:
        with self._lock:
            self.faults.check("list")
            return list(self.machines.values())

    def destroy(self, machine_id: str) -> None:
        with self._lock:
            self.faults.check("destroy")
            if self.machines.pop(machine_id, None) is not None:
                self.destroyed.append(machine_id)

    def health(self) -> Health:
        capacity = {"gpus": self.free_gpus()} if self.gpus is not None else {}
        return Health(True, "ok", capacity)

    def close(self) -> None:
        """Remember that the service let go (``closed``)."""
        self.closed = True

    def free_gpus(self) -> int:
        used = sum(len(m.gpus) for m in self.machines.values())
        return (self.gpus or 0) - used

    def machine_of(self, runner: str) -> Machine | None:
        return next((m for m in self.machines.values() if m.runner_name == runner), None)

    def exit(self, runner: str) -> None:
        """The machine's runner exited (after its job, or it crashed): the machine is gone."""
        with self._lock:
            m = self.machine_of(runner)
            if m is not None:
                del self.machines[m.id]
