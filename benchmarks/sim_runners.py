"""Runner autoscaling, simulated: gha-mlops's scaler vs two common baselines on a bursty trace.

A discrete-event simulation (a fake clock and an event heap; nothing sleeps) replays the same
trace of ``workflow_job`` arrivals against three strategies:

* ``gha-mlops``: the real :class:`~gha_mlops.runners.scaler.Scaler` with the real
  :class:`~gha_mlops.runners.state.State` (a temporary SQLite file) and the real ``decide``;
  :class:`FakeRunnersGitHub` stands for GitHub and a simulated backend (a
  :class:`FakeBackend` subclass) boots machines. Webhooks reach the scaler after a small
  delay and some are lost; a full reconcile pass runs every ``reconcile_interval`` of sim time
  and a fast pass whenever the scaler is kicked (as its ``run`` loop does).
* ``per-job+5m-idle``: every queued job launches a runner (up to the maximum); runners are
  reused and terminated after 5 minutes idle.
* ``cron-5m``: every queued job launches a runner (up to the maximum); runners are reused and
  idle ones are removed only at cron ticks every 5 minutes.

Every strategy sees the same trace (arrivals, durations, which job's runner dies mid-job and
when) and the same random streams for boot times (the k-th machine boots in the same time),
launch failures and webhook delays and losses. Baselines do not re-run a job whose runner died:
it is lost. gha-mlops re-runs it once (its policy); a job is *lost* when no attempt of it
succeeded by the end (the trace plus ``--drain``).

Run: .venv/bin/python benchmarks/sim_runners.py [--quick] [--runs 5] [--seed 1]
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import logging
import math
import random
import statistics
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from _common import percentile

from gha_mlops.github.port import GhJob
from gha_mlops.runners import state as state_module
from gha_mlops.runners.backends.base import BackendError, LaunchSpec, Machine
from gha_mlops.runners.config import RunnersConfig, load_config
from gha_mlops.runners.scaler import Scaler
from gha_mlops.runners.state import State
from gha_mlops.testing.fake_runners import FakeBackend, FakeRunnersGitHub

LABELS = ("self-hosted", "gpu")
STRATEGIES = ("gha-mlops", "per-job+5m-idle", "cron-5m")
T0 = 1_700_000_000.0  # sim epoch (unix seconds): the scaler and the state see real-looking times


@dataclass(frozen=True)
class Params:
    jobs: int = 500
    bursts: int = 10
    span: float = 3600.0  # the trace's length (s): bursts start at random times in it
    burst_spread: float = 10.0  # jobs of a burst arrive within this many seconds
    duration_median: float = 480.0  # job duration, lognormal (s)
    duration_sigma: float = 0.5
    boot_median: float = 30.0  # machine launch -> runner online, lognormal (s)
    boot_sigma: float = 0.25
    launch_fail: float = 0.02  # launch calls that fail (the backend raises)
    die: float = 0.01  # job attempts whose runner dies mid-job
    fail_after: float = 600.0  # GitHub fails a job this long after its runner died (s)
    webhook_delay: float = 1.0  # mean webhook delivery delay (s): 0.2 s + exponential
    webhook_loss: float = 0.01
    max_runners: int = 100
    idle_timeout: float = 300.0  # gha-mlops pool idle_timeout and the first baseline's
    register_timeout: float = 180.0  # gha-mlops pool: a runner not online by then is drained
    cron: float = 300.0  # the second baseline's scale-down period
    reconcile_interval: float = 30.0
    drain: float = 7200.0  # the sim runs this long after the last arrival at most
    seed: int = 1


QUICK = Params(jobs=60, bursts=3, span=900.0, duration_median=180.0, max_runners=40,
               drain=3600.0)


# -- the trace ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TraceJob:
    idx: int
    at: float  # seconds after the start
    duration: float
    dies_at: float | None  # fraction of the duration at which its first runner dies


def make_trace(p: Params) -> list[TraceJob]:
    rng = random.Random(f"trace-{p.seed}")
    starts = sorted(rng.uniform(0, max(0.0, p.span - p.burst_spread)) for _ in range(p.bursts))
    per, extra = divmod(p.jobs, p.bursts)
    times: list[float] = []
    for i, start in enumerate(starts):
        times += [start + rng.uniform(0, p.burst_spread) for _ in range(per + (i < extra))]
    times.sort()
    out = []
    for i, at in enumerate(times):
        duration = p.duration_median * math.exp(rng.gauss(0, p.duration_sigma))
        dies = rng.uniform(0.05, 0.95) if rng.random() < p.die else None
        out.append(TraceJob(i, at, duration, dies))
    return out


def peak_demand(p: Params) -> int:
    """Runners the trace needs at its peak if every job got one at once (boot: the median)."""
    edges = sorted(e for tj in make_trace(p)
                   for e in ((tj.at, 1), (tj.at + p.boot_median + tj.duration, -1)))
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


class Draws:
    """The environment's random draws, one stream per kind, so that every strategy gets the
    same k-th boot time, the same k-th launch failure and the same k-th lost webhook."""

    def __init__(self, p: Params) -> None:
        self.p = p
        self._boot = random.Random(f"boot-{p.seed}")
        self._launch = random.Random(f"launch-{p.seed}")
        self._hook = random.Random(f"hook-{p.seed}")
        self._die = random.Random(f"die-{p.seed}")
        self.boots: list[float] = []

    def boot(self) -> float:
        t = self.p.boot_median * math.exp(self._boot.gauss(0, self.p.boot_sigma))
        self.boots.append(t)
        return t

    def launch_fails(self) -> bool:
        return self._launch.random() < self.p.launch_fail

    def webhook(self) -> float | None:
        """The delay of one webhook, or None when it is lost."""
        lost = self._hook.random() < self.p.webhook_loss
        delay = 0.2 + self._hook.expovariate(1 / max(1e-3, self.p.webhook_delay - 0.2))
        return None if lost else delay

    def rerun_dies(self) -> float | None:
        return self._die.uniform(0.05, 0.95) if self._die.random() < self.p.die else None


# -- the engine --------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


class Engine:
    def __init__(self) -> None:
        self.clock = Clock()
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = itertools.count()

    @property
    def now(self) -> float:
        return self.clock.t - T0

    def at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._heap, (T0 + when, next(self._seq), fn, args))

    def after(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        self.at(self.now + max(0.0, delay), fn, *args)

    def run(self, until: float, done: Callable[[], bool]) -> None:
        while self._heap and self._heap[0][0] <= T0 + until:
            t, _, fn, args = heapq.heappop(self._heap)
            self.clock.t = t
            fn(*args)
            if done():
                return
        self.clock.t = max(self.clock.t, T0 + until) if self._heap else self.clock.t


# -- results -----------------------------------------------------------------------------------


@dataclass
class Result:
    strategy: str
    jobs: int = 0
    served: int = 0
    lost: int = 0
    waits: list[float] = field(default_factory=list)  # queued -> started, every attempt
    boots: list[float] = field(default_factory=list)
    paid: float = 0.0  # machine-seconds, launched -> gone
    busy: float = 0.0  # seconds jobs ran on them
    launches: int = 0
    launch_failures: int = 0
    deaths: int = 0
    reruns: int = 0
    webhooks_lost: int = 0
    peak: int = 0  # most machines at once
    end: float = 0.0  # sim seconds when it ended
    wall: float = 0.0
    passes: dict[str, list[float]] = field(default_factory=dict)  # kind -> wall seconds
    lost_why: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    @property
    def wait_mean(self) -> float:
        return statistics.fmean(self.waits) if self.waits else math.nan

    @property
    def wait_p95(self) -> float:
        return percentile(self.waits, 95)

    @property
    def boot_mean(self) -> float:
        return statistics.fmean(self.boots) if self.boots else math.nan

    @property
    def ratio(self) -> float:
        return self.paid / self.busy if self.busy else math.inf

    def goals(self) -> dict[str, bool]:
        return {"0 lost": self.lost == 0, "paid/busy<=1.10": self.ratio <= 1.10,
                "wait<=boot+5s": self.wait_mean <= self.boot_mean + 5.0}



class Ledger:
    """What every strategy records the same way: attempts of the trace's jobs, machines."""

    def __init__(self, strategy: str, trace: list[TraceJob], engine: Engine) -> None:
        self.engine = engine
        self.result = Result(strategy, jobs=len(trace))
        self.succeeded: set[int] = set()  # trace indices with a successful attempt
        self.launched_at: dict[str, float] = {}
        self.ran_at: dict[str, float] = {}  # runner -> when its current job started
        self.attempts: Counter[int] = Counter()  # trace index -> attempts queued
        self.started: Counter[int] = Counter()
        self.died: Counter[int] = Counter()

    def queued(self, idx: int) -> None:
        self.attempts[idx] += 1

    def machine_up(self, name: str) -> None:
        self.launched_at[name] = self.engine.now
        self.result.launches += 1
        self.result.peak = max(self.result.peak, len(self.launched_at))

    def machine_gone(self, name: str) -> None:
        start = self.launched_at.pop(name, None)
        if start is not None:
            self.result.paid += self.engine.now - start

    def job_started(self, name: str, idx: int, queued_at: float) -> None:
        self.ran_at[name] = self.engine.now
        self.started[idx] += 1
        self.result.waits.append(self.engine.now - queued_at)

    def job_ended(self, name: str, idx: int, *, ok: bool) -> None:
        self.result.busy += self.engine.now - self.ran_at.pop(name)
        if ok:
            self.succeeded.add(idx)
        else:
            self.died[idx] += 1
            self.result.deaths += 1

    def close(self) -> Result:
        for name in list(self.launched_at):
            self.machine_gone(name)  # still running at the end: paid until then
        for name in list(self.ran_at):
            self.result.busy += self.engine.now - self.ran_at.pop(name)
        r = self.result
        r.served = len(self.succeeded)
        r.lost = r.jobs - r.served
        r.end = self.engine.now
        for idx in set(range(r.jobs)) - self.succeeded:
            if not self.started[idx]:
                why = "never started"
            elif self.died[idx] and self.attempts[idx] == 1:
                why = "its runner died; not re-run"
            elif self.died[idx] >= 2:
                why = f"its runner died in each of {self.died[idx]} attempts"
            elif self.started[idx] > self.died[idx]:
                why = "still running at the end"
            else:
                why = "re-run but the new attempt never started"
            r.lost_why[why] += 1
        return r


# -- gha-mlops: the real scaler ----------------------------------------------------------------

# The simulated autoscaler's runners.yaml up to its backends and pools (sim_runners_ec2 too).
CONFIG_HEAD = """
id: sim
github: {{repo: octo/demo, token_env: TOKEN}}
webhook: {{secret_env: SECRET}}
state: {state}
reconcile_interval: {reconcile}s
grace_period: 2m
"""
CONFIG = CONFIG_HEAD + """pools:
  - {{name: gpu, labels: [gpu], image: runner:sim, max: {max}, idle_timeout: {idle}s,
     register_timeout: {register}s}}
"""
ENV = {"TOKEN": "t0ken", "SECRET": "s" * 32}


def scaler_config(p: Params, tmp: Path) -> RunnersConfig:
    path = tmp / "runners.yaml"
    path.write_text(CONFIG.format(state=tmp / "state.db", reconcile=p.reconcile_interval,
                                  max=p.max_runners, idle=p.idle_timeout,
                                  register=p.register_timeout))
    return load_config(path, ENV)


@contextlib.contextmanager
def deterministic_names(seed: int) -> Iterator[None]:
    """Runner names come from ``secrets.token_hex``; the sim swaps in a seeded generator so
    that a run is reproducible (nothing else about the scaler changes)."""
    rng = random.Random(f"names-{seed}")

    class _Secrets:
        @staticmethod
        def token_hex(n: int = 32) -> str:
            return rng.randbytes(n).hex()

    namespace = vars(state_module)
    real = namespace["secrets"]
    namespace["secrets"] = _Secrets
    try:
        yield
    finally:
        namespace["secrets"] = real


class SimGitHub(FakeRunnersGitHub):
    """The fake GitHub, telling the sim when the scaler re-runs a job (a new attempt)."""

    def __init__(self, sim: GhaMlopsSim) -> None:
        super().__init__(clock=sim.engine.clock, rate_limit=10**9)
        self.sim = sim

    def rerun_job(self, repo: str, job_id: int) -> None:
        before = set(self.jobs)
        super().rerun_job(repo, job_id)
        for new in set(self.jobs) - before:
            self.sim.rerun_queued(job_id, new)


class SimBackend(FakeBackend):
    """Machines that take a boot time to come online; some launches fail."""

    def __init__(self, sim: GhaMlopsSim) -> None:
        super().__init__(clock=sim.engine.clock)
        self.sim = sim

    def launch(self, spec: LaunchSpec) -> Machine:
        if self.sim.draws.launch_fails():
            self.sim.ledger.result.launch_failures += 1
            raise BackendError(f"simulated launch failure of {spec.runner_name}")
        machine = super().launch(spec)
        self.sim.machine_started(spec.runner_name)
        return machine

    def destroy(self, machine_id: str) -> None:
        machine = self.machines.get(machine_id)
        super().destroy(machine_id)
        if machine is not None:
            self.sim.machine_gone(machine.runner_name)

    def exit(self, runner: str) -> None:
        super().exit(runner)
        self.sim.machine_gone(runner)


class _KickingScaler(Scaler):
    """The real scaler; ``kick`` (wake the loop) schedules a fast pass in sim time."""

    on_kick: Callable[[], None] = staticmethod(lambda: None)

    def kick(self) -> None:
        super().kick()
        self.on_kick()


@dataclass
class Attempt:
    idx: int  # the trace job it is an attempt of
    queued_at: float
    duration: float
    dies_at: float | None


class GhaMlopsSim:
    """The real scaler in sim time. Subclasses (``sim_runners_ec2.py``) swap in their own
    ledger, backend and runners.yaml through ``ledger_class``, ``backend_class`` (its
    ``name`` is the backend the pools name) and :meth:`make_config`."""

    PASS_DELAY = 0.01  # from a kick to the loop's pass (another thread in the service)
    ledger_class: type[Ledger] = Ledger
    backend_class: type[SimBackend] = SimBackend

    def __init__(self, p: Params, trace: list[TraceJob], tmp: Path, *,
                 strategy: str = "gha-mlops") -> None:
        self.p = p
        self.trace = trace
        self.engine = Engine()
        self.draws = Draws(p)
        self.ledger = self.ledger_class(strategy, trace, self.engine)
        self.gh = SimGitHub(self)
        self.backend = self.backend_class(self)
        self.state = State(tmp / "state.db", clock=self.engine.clock)
        self.config = self.make_config(tmp)
        self.scaler = _KickingScaler(self.config, self.state, self.gh,
                                     {self.backend.name: self.backend},
                                     clock=self.engine.clock, launch_workers=0)
        self.scaler.on_kick = self._kicked
        self.attempts: dict[int, Attempt] = {}  # GitHub job id -> attempt
        self.idle: dict[str, None] = {}  # online runners without a job, oldest first
        self.gone: set[str] = set()
        self._pass_pending = False
        self._in_pass = False
        self._kicked_in_pass = False
        self._last_full = -math.inf
        self.passes: dict[str, list[float]] = {"fast": [], "full": []}

    def make_config(self, tmp: Path) -> RunnersConfig:
        """The scaler's runners.yaml (one docker pool); subclasses write their own."""
        return scaler_config(self.p, tmp)

    # the scaler's loop

    def _kicked(self) -> None:
        if self._in_pass:
            self._kicked_in_pass = True
        elif not self._pass_pending:
            self._pass_pending = True
            self.engine.after(self.PASS_DELAY, self._pass)

    def _timer(self) -> None:
        self._pass()
        self.engine.at(self._last_full + self.p.reconcile_interval, self._timer)

    def _pass(self) -> None:
        self._pass_pending = False
        full = self.engine.now - self._last_full >= self.p.reconcile_interval
        if full:
            self._last_full = self.engine.now
        self._in_pass = True
        t = time.perf_counter()
        try:
            self.scaler.reconcile(full=full)
        finally:
            self._in_pass = False
        self.passes["full" if full else "fast"].append(time.perf_counter() - t)
        if self._kicked_in_pass:  # the wake event was set during the pass: pass again
            self._kicked_in_pass = False
            self._kicked()

    # GitHub's side

    def _webhook(self, job_id: int) -> None:
        snapshot = self.gh.jobs[job_id]
        delay = self.draws.webhook()
        if delay is None:
            self.ledger.result.webhooks_lost += 1
            return
        self.engine.after(delay, self._deliver, snapshot)

    def _deliver(self, job: GhJob) -> None:
        self.scaler.on_job_event(job)

    def _arrive(self, tj: TraceJob) -> None:
        job = self.gh.queue(LABELS)
        self.attempts[job.id] = Attempt(tj.idx, self.engine.now, tj.duration, tj.dies_at)
        self.ledger.queued(tj.idx)
        self._webhook(job.id)
        self._assign_idle()

    def rerun_queued(self, old_id: int, new_id: int) -> None:
        old = self.attempts[old_id]
        self.ledger.result.reruns += 1
        self.attempts[new_id] = Attempt(old.idx, self.engine.now, old.duration,
                                        self.draws.rerun_dies())
        self.ledger.queued(old.idx)
        self._webhook(new_id)
        self.engine.after(0, self._assign_idle)  # the scaler's pass is still running

    def _assign_idle(self) -> None:
        """GitHub hands queued jobs to idle runners that match (here: all of ours)."""
        for name in list(self.idle):
            job = self.gh.assign(name)
            if job is None:
                return
            del self.idle[name]
            self._start(name, job)

    # the machines' side

    def machine_started(self, name: str) -> None:
        self.ledger.machine_up(name)
        self.engine.after(self.draws.boot(), self._booted, name)

    def machine_gone(self, name: str) -> None:
        if name not in self.gone:
            self.gone.add(name)
            self.idle.pop(name, None)
            self.ledger.machine_gone(name)

    def _booted(self, name: str) -> None:
        if name in self.gone:
            return  # removed while booting
        if self.gh.runner_by_name(name) is None:  # deregistered meanwhile: the runner exits
            self.backend.exit(name)
            return
        self.gh.connect(name)
        job = self.gh.assign(name)
        if job is None:
            self.idle[name] = None
        else:
            self._start(name, job)

    def _start(self, name: str, job: GhJob) -> None:
        a = self.attempts[job.id]
        self.ledger.job_started(name, a.idx, a.queued_at)
        self._webhook(job.id)
        if a.dies_at is None:
            self.engine.after(a.duration, self._finish, name, job.id)
        else:
            self.engine.after(a.duration * a.dies_at, self._die, name, job.id)

    def _finish(self, name: str, job_id: int) -> None:
        self.gh.finish(job_id)
        self.ledger.job_ended(name, self.attempts[job_id].idx, ok=True)
        self._webhook(job_id)
        self.backend.exit(name)  # ephemeral: the runner exits after its one job

    def _die(self, name: str, job_id: int) -> None:
        self.ledger.job_ended(name, self.attempts[job_id].idx, ok=False)
        self.backend.exit(name)
        self.gh.disconnect(name)
        self.engine.after(self.p.fail_after, self._github_fails, job_id)

    def _github_fails(self, job_id: int) -> None:
        self.gh.finish(job_id, "failure")
        self._webhook(job_id)

    # running it

    def _done(self) -> bool:
        # Ends once every job succeeded, no machine is left and the scaler's state agrees.
        return (len(self.ledger.succeeded) == len(self.trace) and not self.ledger.launched_at
                and self.engine.now > self.trace[-1].at and not self.state.runners())

    def run(self) -> Result:
        for tj in self.trace:
            self.engine.at(tj.at, self._arrive, tj)
        self.engine.at(0.0, self._timer)
        until = (self.trace[-1].at if self.trace else 0.0) + self.p.drain
        self.engine.run(until, self._done)
        r = self.ledger.close()
        r.boots = list(self.draws.boots)
        r.passes = self.passes
        in_state = {v.state for v in self.state.runners()}
        if in_state:
            r.notes.append(f"runners left in the state: {sorted(in_state)}")
        return r


# -- the baselines -----------------------------------------------------------------------------


class BaselineSim:
    """One launch per queued job (up to the maximum), runners reused; scale-down either after
    ``idle_timeout`` idle (``per-job+5m-idle``) or at cron ticks (``cron-5m``). A failed
    launch is tried again 2 s later; a lost webhook launches nothing; a job whose runner died
    is not re-run."""

    RETRY = 2.0

    def __init__(self, strategy: str, p: Params, trace: list[TraceJob]) -> None:
        self.strategy = strategy
        self.p = p
        self.trace = trace
        self.engine = Engine()
        self.draws = Draws(p)
        self.ledger = Ledger(strategy, trace, self.engine)
        self.queue: deque[tuple[int, float, float | None]] = deque()  # (idx, queued, dies)
        self.idle: dict[str, float] = {}  # runner -> idle since
        self.alive: set[str] = set()  # launched, not gone
        self._names = itertools.count(1)

    def _arrive(self, tj: TraceJob) -> None:
        self.queue.append((tj.idx, self.engine.now, tj.dies_at))
        self.ledger.queued(tj.idx)
        if self.idle:  # GitHub hands it to an idle runner at once
            self._take(next(iter(self.idle)))
        delay = self.draws.webhook()
        if delay is None:
            self.ledger.result.webhooks_lost += 1
        else:
            self.engine.after(delay, self._launch)

    def _launch(self) -> None:
        if len(self.alive) >= self.p.max_runners:
            return
        if self.draws.launch_fails():
            self.ledger.result.launch_failures += 1
            self.engine.after(self.RETRY, self._launch)
            return
        name = f"r{next(self._names)}"
        self.alive.add(name)
        self.ledger.machine_up(name)
        self.engine.after(self.draws.boot(), self._take, name)

    def _take(self, name: str) -> None:
        """The runner is free (booted, or done with a job): take the oldest queued job."""
        self.idle.pop(name, None)
        if not self.queue:
            self.idle[name] = self.engine.now
            if self.strategy == "per-job+5m-idle":
                self.engine.after(self.p.idle_timeout, self._idle_check, name, self.engine.now)
            return
        idx, queued_at, dies = self.queue.popleft()
        self.ledger.job_started(name, idx, queued_at)
        duration = self.trace[idx].duration
        if dies is None:
            self.engine.after(duration, self._finish, name, idx)
        else:
            self.engine.after(duration * dies, self._die, name, idx)

    def _finish(self, name: str, idx: int) -> None:
        self.ledger.job_ended(name, idx, ok=True)
        self._take(name)

    def _die(self, name: str, idx: int) -> None:
        self.ledger.job_ended(name, idx, ok=False)
        self._remove(name)

    def _remove(self, name: str) -> None:
        self.idle.pop(name, None)
        self.alive.discard(name)
        self.ledger.machine_gone(name)

    def _idle_check(self, name: str, since: float) -> None:
        if self.idle.get(name) == since:
            self._remove(name)

    def _cron(self) -> None:
        for name in list(self.idle):
            self._remove(name)
        self.engine.after(self.p.cron, self._cron)

    def _done(self) -> bool:
        return (len(self.ledger.succeeded) == len(self.trace) and not self.alive
                and self.engine.now > self.trace[-1].at)

    def run(self) -> Result:
        for tj in self.trace:
            self.engine.at(tj.at, self._arrive, tj)
        if self.strategy == "cron-5m":
            self.engine.at(self.p.cron, self._cron)
        until = (self.trace[-1].at if self.trace else 0.0) + self.p.drain
        self.engine.run(until, self._done)
        r = self.ledger.close()
        r.boots = list(self.draws.boots)
        return r


# -- driving it --------------------------------------------------------------------------------


def run_real_scaler(p: Params, make: Callable[[Path], GhaMlopsSim]) -> Result:
    """Run a :class:`GhaMlopsSim` (``make`` builds it in a temporary directory) with the
    scaler's log quiet and its runner names seeded; close its scaler and state after."""
    scaler_log = logging.getLogger("gha_mlops.runners")
    level = scaler_log.level
    scaler_log.setLevel(logging.CRITICAL)  # its INFO/WARNING lines would flood stderr
    try:
        with tempfile.TemporaryDirectory(prefix="sim-runners-") as tmp, \
                deterministic_names(p.seed):
            sim = make(Path(tmp))
            try:
                return sim.run()
            finally:
                sim.scaler.close()
                sim.state.close()
    finally:
        scaler_log.setLevel(level)


def simulate(strategy: str, p: Params) -> Result:
    """One run of one strategy on the trace of ``p.seed``."""
    trace = make_trace(p)
    started = time.perf_counter()
    if strategy == "gha-mlops":
        result = run_real_scaler(p, lambda tmp: GhaMlopsSim(p, trace, tmp))
    elif strategy in STRATEGIES:
        result = BaselineSim(strategy, p, trace).run()
    else:
        raise ValueError(f"unknown strategy {strategy!r}; one of {', '.join(STRATEGIES)}")
    result.wall = time.perf_counter() - started
    return result


def med(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return statistics.median(finite) if finite else math.nan


def report(p: Params, runs: dict[str, list[Result]]) -> None:
    n = len(next(iter(runs.values())))
    peaks = [peak_demand(replace(p, seed=p.seed + i)) for i in range(n)]
    print(f"trace: {p.jobs} jobs in {p.bursts} bursts over {p.span / 60:.0f} min (each within "
          f"{p.burst_spread:.0f} s); durations lognormal median {p.duration_median / 60:.1f} "
          f"min sigma {p.duration_sigma}; boot lognormal median {p.boot_median:.0f} s sigma "
          f"{p.boot_sigma}; launch failures {p.launch_fail:.0%}, runners dying mid-job "
          f"{p.die:.0%} (GitHub fails the job {p.fail_after / 60:.0f} min later), webhooks "
          f"lost {p.webhook_loss:.0%} (mean delay {p.webhook_delay:.1f} s); max {p.max_runners}"
          f" runners; seeds {p.seed}..{p.seed + n - 1}; median of {n} run(s)")
    print(f"trace peak demand (runners in use if every job got one on arrival): median "
          f"{statistics.median(peaks):.0f} (per seed {', '.join(map(str, peaks))})"
          + (f" > max {p.max_runners}: capacity binds, waits include waiting for a slot"
             if statistics.median(peaks) > p.max_runners else ""))
    print()
    head = (f"{'strategy':<17}{'served':>7}{'lost':>6}{'wait mean':>11}{'wait p95':>10}"
            f"{'wait max':>10}{'boot mean':>11}{'paid min':>10}{'busy min':>10}{'paid/busy':>10}"
            f"{'launches':>9}{'peak':>6}{'wall s':>8}")
    print(head)
    print("-" * len(head))
    for name, rs in runs.items():
        def m(get: Callable[[Result], float], rs: list[Result] = rs) -> float:
            return med([get(r) for r in rs])
        print(f"{name:<17}{m(lambda r: r.served):>7.0f}{m(lambda r: r.lost):>6.0f}"
              f"{m(lambda r: r.wait_mean):>10.1f}s{m(lambda r: r.wait_p95):>9.1f}s"
              f"{m(lambda r: max(r.waits, default=math.nan)):>9.1f}s"
              f"{m(lambda r: r.boot_mean):>10.1f}s{m(lambda r: r.paid / 60):>10.0f}"
              f"{m(lambda r: r.busy / 60):>10.0f}{m(lambda r: r.ratio):>10.3f}"
              f"{m(lambda r: r.launches):>9.0f}{m(lambda r: r.peak):>6.0f}"
              f"{m(lambda r: r.wall):>8.2f}")
    print()
    print("goals (each: met in k of the runs): 0 lost; paid/busy <= 1.10; "
          "mean wait <= mean boot + 5 s")
    for name, rs in runs.items():
        met = {g: sum(r.goals()[g] for r in rs) for g in rs[0].goals()}
        verdict = "ALL MET" if all(k == len(rs) for k in met.values()) else "missed"
        print(f"  {name:<17}" + "   ".join(f"{g} {k}/{len(rs)}" for g, k in met.items())
              + f"   -> {verdict}")
    print()
    print("failures injected (median per run): launches failed, runners died, webhooks lost, "
          "jobs re-run")
    for name, rs in runs.items():
        print(f"  {name:<17}{m_(rs, 'launch_failures'):>5.0f}{m_(rs, 'deaths'):>5.0f}"
              f"{m_(rs, 'webhooks_lost'):>5.0f}{m_(rs, 'reruns'):>5.0f}")
    print()
    print("lost jobs, why (all runs together)")
    for name, rs in runs.items():
        why: Counter[str] = sum((r.lost_why for r in rs), Counter())
        print(f"  {name:<17}" + ("; ".join(f"{k}: {v}" for k, v in why.most_common())
                                 or "none"))
    g = runs.get("gha-mlops")
    if g:
        fast = [t for r in g for t in r.passes.get("fast", [])]
        full = [t for r in g for t in r.passes.get("full", [])]
        print()
        print("gha-mlops scaler passes (wall time, all runs): "
              f"fast {len(fast)} mean {ms(statistics.fmean(fast) if fast else 0)} p99 "
              f"{ms(percentile(fast, 99))} max {ms(max(fast, default=0))}; "
              f"full {len(full)} mean {ms(statistics.fmean(full) if full else 0)} p99 "
              f"{ms(percentile(full, 99))} max {ms(max(full, default=0))}")
        for r in g:
            for note in r.notes:
                print(f"  note: {note}")


def m_(rs: list[Result], attr: str) -> float:
    return med([float(getattr(r, attr)) for r in rs])


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a small trace (60 jobs, 3 bursts over 15 min, 3 min jobs)")
    parser.add_argument("--runs", type=int, default=5, help="seeds to run (median reported)")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    base = QUICK if "--quick" in (argv if argv is not None else sys.argv[1:]) else Params()
    for f in fields(Params):
        flag = "--" + f.name.replace("_", "-")
        parser.add_argument(flag, type=type(getattr(base, f.name)),
                            default=getattr(base, f.name),
                            help=f"(default {getattr(base, f.name)})")
    args = parser.parse_args(argv)
    p = replace(base, **{f.name: getattr(args, f.name) for f in fields(Params)})
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    runs: dict[str, list[Result]] = {s: [] for s in strategies}
    started = time.perf_counter()
    for i in range(args.runs):
        for s in strategies:
            runs[s].append(simulate(s, replace(p, seed=p.seed + i)))
    report(p, runs)
    print(f"\nwall time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
