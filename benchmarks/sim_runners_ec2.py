"""Runner autoscaling on cloud GPU capacity, simulated: gha-mlops vs the field's EC2 strategies.

The same discrete-event machinery as ``sim_runners.py`` (its engine, trace, random streams,
ledger and the real :class:`~gha_mlops.runners.scaler.Scaler`), with EC2's economics and
faults added:

* **prices**: per instance type, an on-demand and a spot price per hour, billed per second
  with a 60 s minimum (``TYPES``: us-east-1 on-demand list prices; spot prices typical of the
  spot price history; both are assumptions, not quotes);
* **capacity shortages**: each type's spot capacity goes away for periods (a Poisson process
  per type), and once per trace every type's spot capacity is gone at once
  (``--global-shortage`` seconds);
* **spot interruptions**: each spot instance gets a lifetime drawn from its type's hazard
  (interruptions per instance-hour; about 5 % averaged over the types), with the two-minute
  notice before it;
* **boot times** of minutes (lognormal, median 3 min).

Strategies, side by side on the same bursty GPU trace and the same random streams (the k-th
boot time, the k-th spot instance's lifetime, the shortage windows are the same for all):

* ``gha-mlops``: the real Scaler, State and ``decide`` (through ``sim_runners.GhaMlopsSim``)
  on a real ``backend: ec2`` pool of runners.yaml (three types, ``capacity:
  spot-then-on-demand``, ``spot_allocation: price-capacity-optimized``, ``max_lifetime``,
  ``expiry_grace``; ``--capacity spot`` to compare). **Real** (the product's code decides):
  ephemeral runners, launches for the demand, idle scale-down, the drain on an interruption
  notice (an idle or booting runner is drained at the next full pass; a busy one keeps its
  job and the pool gets one more runner of demand, so its replacement boots during the two
  minutes), the re-run once of a job whose instance went under it, the removal of an
  instance past its expiry (its job not re-run), GitHub's registrations reconciled.
  **Modelled** (what AWS and the real EC2 backend do, in :class:`Ec2Backend`, the simulated
  backend behind the same port): the fleet request, following the pool's ``capacity`` as
  the real backend does (one spot request over all types, the allocation strategy choosing
  among those with capacity; none: on-demand at once, the cheapest type, or with ``spot`` a
  retryable error the scaler backs off from); the expiry tag (``Machine.expires_at``); the
  notice, which the real backend reads from the instance's tag (the agent writes it from
  instance metadata) or the SQS warning at ``list()`` and reports as ``Machine.notice``, so
  the policy sees it at its next full pass (``reconcile_interval``), not at once; the
  reclaimed instance, listed ``lost``; GitHub failing the job on it
  ``--interrupted-fail-after`` later. The policy's drain of a runner that already took a
  job is refused (GitHub's 422), as in the real scaler.
* ``terraform-style`` (the Terraform AWS runner module's defaults): a launch per queued-job
  webhook, ``lowest-price`` over the same types, spot only (no on-demand failover): a launch
  refused for capacity is retried by SQS ``--tf-retries`` times ``--tf-retry-delay`` apart,
  then dropped; reusable runners removed after 5 minutes idle; no interruption handling: the
  job on an interrupted instance fails and is not re-run.
* ``cml-style`` (``cml runner launch --cloud-spot --single``): each workflow first runs a
  launch job on a GitHub-hosted runner (``--cml-launch-delay``), which requests one spot
  instance of one type (the cheapest); a capacity refusal fails the workflow (the user sees
  it); on the interruption notice the whole workflow is re-run (a new launch, a new instance,
  the job from the start), every time.
* ``on-demand``: the real Scaler on the same pool with ``capacity: on-demand`` (the cheapest
  type; no shortage, no interruption: the reference price).

Reported per strategy (median of ``--runs`` seeds): jobs lost (no attempt succeeded by the
end), jobs a user saw fail (no attempt succeeded and one failed: the run ended red), of them
from interruptions, dollars, paid/busy (billed instance-seconds over seconds jobs ran), queue
wait p50/p95 (queued -> started, every attempt); and how the notices were handled (runners
drained on one and how long after it, instances reclaimed while still idle or booting, jobs
started after a notice, instances removed past expiry, how long re-runs waited). Goals
(issue 17): 0 lost, 0 user-visible failures from interruptions, cost >= 40 % below on-demand
only, paid/busy <= 1.15.

Run: .venv/bin/python benchmarks/sim_runners_ec2.py [--quick] [--runs 5] [--seed 1]
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from _common import percentile
from sim_runners import (
    CONFIG_HEAD,
    ENV,
    Draws,
    Engine,
    GhaMlopsSim,
    Ledger,
    Params,
    Result,
    SimBackend,
    TraceJob,
    make_trace,
    med,
    run_real_scaler,
)

from gha_mlops.github.port import GhJob
from gha_mlops.runners.backends.base import (
    LOST,
    PENDING,
    RUNNING,
    BackendError,
    LaunchSpec,
    Machine,
)
from gha_mlops.runners.backends.ec2_fleet import first_lifecycle
from gha_mlops.runners.config import Ec2Pool, RunnersConfig, load_config
from gha_mlops.testing.fake_runners import FakeBackend

STRATEGIES = ("gha-mlops", "terraform-style", "cml-style", "on-demand")
MIN_BILLED = 60.0  # EC2 Linux: per-second billing, 60 s minimum


@dataclass(frozen=True)
class InstanceType:
    name: str
    on_demand: float  # $ per hour
    spot: float  # $ per hour
    hazard: float  # spot interruptions per instance-hour


# One GPU (16-24 GB) each; a job runs as long on any of them (the trace has one duration).
TYPES = (
    InstanceType("g4dn.xlarge", 0.526, 0.2104, 0.06),  # the cheapest, the most reclaimed
    InstanceType("g6.xlarge", 0.8048, 0.2900, 0.04),
    InstanceType("g5.xlarge", 1.006, 0.4000, 0.05),
)


@dataclass(frozen=True)
class Ec2Params(Params):
    jobs: int = 200
    bursts: int = 8
    span: float = 3 * 3600.0
    duration_median: float = 1200.0  # GPU jobs: 20 min median
    duration_sigma: float = 0.6
    boot_median: float = 180.0  # an instance from launch to runner online: 2-4 min
    boot_sigma: float = 0.2
    max_runners: int = 60
    register_timeout: float = 600.0
    drain: float = 4 * 3600.0
    hazard_scale: float = 1.0  # multiplies every type's interruption rate
    notice: float = 120.0  # the spot interruption notice
    interrupted_fail_after: float = 30.0  # GitHub fails a job this long after its instance
    shortages_per_hour: float = 0.3  # per type: spot capacity gone for a while
    shortage_min: float = 600.0
    shortage_max: float = 2400.0
    global_shortage: float = 1200.0  # once per trace, no spot capacity in any type (s)
    max_lifetime: float = 6 * 3600.0  # the pool's: an idle runner this old is drained
    expiry_grace: float = 3600.0  # expiry tag = launch + max_lifetime + this: then removed
    capacity: str = "spot-then-on-demand"  # gha-mlops's pool (on-demand only: "on-demand")
    spot_allocation: str = "price-capacity-optimized"
    rerun_on_demand: int = 0  # 1: the pool's ec2.rerun_on_demand (a noticed job's replacement
    # runner launched on-demand, so its re-run is not interrupted too)
    tf_retries: int = 3
    tf_retry_delay: float = 30.0
    tf_scale_down: float = 300.0
    cml_launch_delay: float = 60.0


QUICK = Ec2Params(jobs=40, bursts=3, span=1800.0, duration_median=600.0, max_runners=30,
                  drain=3600.0, global_shortage=600.0)


# -- the cloud ---------------------------------------------------------------------------------


class Capacity:
    """When each type's spot capacity is gone: windows drawn once per seed (the same for every
    strategy)."""

    def __init__(self, p: Ec2Params) -> None:
        rng = random.Random(f"shortage-{p.seed}")
        horizon = p.span + p.drain
        self.windows: dict[str, list[tuple[float, float]]] = {}
        for it in TYPES:
            out, t = [], 0.0
            while p.shortages_per_hour > 0:
                t += rng.expovariate(p.shortages_per_hour / 3600)
                if t >= horizon:
                    break
                out.append((t, t + rng.uniform(p.shortage_min, p.shortage_max)))
            self.windows[it.name] = out
        self.everywhere: tuple[float, float] | None = None
        if p.global_shortage > 0:
            start = rng.uniform(0, max(0.0, p.span - p.global_shortage))
            self.everywhere = (start, start + p.global_shortage)

    def spot(self, it: InstanceType, t: float) -> bool:
        """Whether ``it`` has spot capacity at sim time ``t``."""
        if self.everywhere and self.everywhere[0] <= t < self.everywhere[1]:
            return False
        return not any(a <= t < b for a, b in self.windows[it.name])


def price_capacity_optimized(available: list[InstanceType]) -> InstanceType:
    """The deepest pools (interruption rate within 1.5x of the best), then the cheapest."""
    best = min(t.hazard for t in available)
    return min((t for t in available if t.hazard <= 1.5 * best), key=lambda t: t.spot)


def lowest_price(available: list[InstanceType]) -> InstanceType:
    return min(available, key=lambda t: t.spot)


CHEAPEST_ON_DEMAND = min(TYPES, key=lambda t: t.on_demand)


class Ec2Draws(Draws):
    """``Draws`` plus the k-th spot instance's lifetime (a unit exponential, scaled by its
    type's hazard, so the k-th spot instance of every strategy shares the draw)."""

    def __init__(self, p: Ec2Params) -> None:
        super().__init__(p)
        self.scale = p.hazard_scale
        self._life = random.Random(f"interrupt-{p.seed}")

    def spot_life(self, it: InstanceType) -> float:
        unit = self._life.expovariate(1.0)
        rate = it.hazard * self.scale
        return unit * 3600 / rate if rate > 0 else math.inf


# -- results -----------------------------------------------------------------------------------


@dataclass
class Ec2Result(Result):
    dollars: float = 0.0
    user_failed: int = 0  # no attempt succeeded and one failed: the run ended red
    user_failed_interrupt: int = 0  # ... and an attempt of it was interrupted
    interruptions: int = 0  # spot instances reclaimed
    interrupted_jobs: int = 0  # attempts that were running on one
    notices: int = 0
    doomed_starts: int = 0  # attempts started on an instance after its notice
    drained_on_notice: int = 0  # idle/booting runners the policy removed after a notice
    notice_to_drain: list[float] = field(default_factory=list)  # seconds, each of those
    undrained: int = 0  # instances reclaimed while their runner was idle or booting
    expired: int = 0  # instances the policy removed past their expiry tag
    expired_jobs: int = 0  # attempts running on one of those
    rerun_waits: list[float] = field(default_factory=list)  # re-runs after an interruption
    fallbacks: int = 0  # on-demand launches because no type had spot capacity
    refused: int = 0  # launches refused for capacity
    spot_hours: float = 0.0
    od_hours: float = 0.0
    versus_on_demand: float = math.nan  # dollars / on-demand's dollars, same seed

    @property
    def wait_p50(self) -> float:
        return percentile(self.waits, 50)

    @property
    def boot_share(self) -> float:
        return sum(self.boots) / self.busy if self.busy else math.nan

    def goals(self) -> dict[str, bool]:
        return {"0 lost": self.lost == 0,
                "0 failed from interruptions": self.user_failed_interrupt == 0,
                "cost>=40% below on-demand": self.versus_on_demand <= 0.60,
                "paid/busy<=1.15": self.ratio <= 1.15}


class Ec2Ledger(Ledger):
    """``Ledger`` that also prices every instance (per second, 60 s minimum) and tells the
    failures a user saw from the ones recovered."""

    def __init__(self, strategy: str, trace: list[TraceJob], engine: Engine) -> None:
        super().__init__(strategy, trace, engine)
        self.result: Ec2Result = Ec2Result(strategy, jobs=len(trace))
        self.kind: dict[str, tuple[InstanceType, bool]] = {}  # instance -> (type, spot)
        self.interrupted: Counter[int] = Counter()
        self.launch_failed: set[int] = set()  # workflows failed by a refused launch (CML)
        self.expired: set[int] = set()  # jobs whose instance was removed past its expiry

    def instance(self, name: str, it: InstanceType, spot: bool) -> None:
        self.kind[name] = (it, spot)

    def machine_gone(self, name: str) -> None:
        start = self.launched_at.get(name)
        super().machine_gone(name)
        if start is None:
            return
        ran = self.engine.now - start
        billed = max(MIN_BILLED, ran)
        self.result.paid += billed - ran  # the base ledger counted the seconds it ran
        it, spot = self.kind[name]
        self.result.dollars += billed / 3600 * (it.spot if spot else it.on_demand)
        if spot:
            self.result.spot_hours += ran / 3600
        else:
            self.result.od_hours += ran / 3600

    def interrupted_job(self, name: str, idx: int) -> None:
        self.job_ended(name, idx, ok=False)
        self.interrupted[idx] += 1
        self.result.interrupted_jobs += 1

    def expired_job(self, name: str, idx: int) -> None:
        self.job_ended(name, idx, ok=False)
        self.expired.add(idx)
        self.result.expired_jobs += 1

    def close(self) -> Ec2Result:
        super().close()
        r = self.result
        failed = {i for i in range(r.jobs) if i not in self.succeeded
                  and (self.died[i] or i in self.launch_failed)}
        r.user_failed = len(failed)
        r.user_failed_interrupt = sum(1 for i in failed if self.interrupted[i])
        for i in set(range(r.jobs)) - self.succeeded:  # name the cloud's causes
            if i in self.launch_failed and not self.started[i]:
                self._relabel("never started", "its launch was refused (no spot capacity): "
                              "the workflow failed")
            elif i in self.expired:
                self._relabel("its runner died; not re-run", "its instance passed its expiry "
                              "(max_lifetime + expiry_grace) under it; not re-run")
            elif self.interrupted[i] and self.attempts[i] == 1:
                self._relabel("its runner died; not re-run",
                              "its spot instance was reclaimed; not re-run")
        return r

    def _relabel(self, old: str, new: str) -> None:
        why = self.result.lost_why
        why[old] -= 1
        why[new] += 1
        if why[old] <= 0:
            del why[old]


# -- gha-mlops (and on-demand only): the real scaler -------------------------------------------

EC2_CONFIG = CONFIG_HEAD + """backends:
  ec2: {{region: us-east-1, subnets: [subnet-0123456789abcdef0],
         security_groups: [sg-0123456789abcdef0]}}
pools:
  - name: gpu
    backend: ec2
    labels: [gpu]
    max: {max}
    idle_timeout: {idle}s
    register_timeout: {register}s
    max_lifetime: {lifetime}s
    ec2: {{instance_types: [{types}], ami: ami-0123456789abcdef0, capacity: {capacity},
           spot_allocation: {allocation}, expiry_grace: {grace}s,
           rerun_on_demand: {rerun}}}
"""
ALLOCATIONS: dict[str, Callable[[list[InstanceType]], InstanceType]] = {
    "price-capacity-optimized": price_capacity_optimized, "lowest-price": lowest_price,
    "capacity-optimized": lambda types: min(types, key=lambda t: t.hazard)}
TYPE_BY_NAME = {t.name: t for t in TYPES}


class Ec2Backend(SimBackend):
    """The simulated EC2 behind the real backend port: what AWS does, not what the autoscaler
    decides. ``launch`` is one ``CreateFleet`` as the real EC2 backend makes it, following the
    pool's ``capacity`` the same way: one spot request over all its types (the pool's
    ``spot_allocation`` picks among those with capacity), and when no type has any, with
    ``spot-then-on-demand`` the on-demand request at once (the cheapest type: lowest-price),
    with ``spot`` a retryable :class:`BackendError` (the scaler backs off). Machines carry
    ``expires_at`` (launch + max_lifetime + expiry_grace, the real backend's expiry tag), an
    interruption notice is ``Machine.notice`` (what the real backend's ``list()`` reports from
    the instance's tag or the SQS warning) and a reclaimed instance is listed ``lost``."""

    name = "ec2"
    sim: Ec2GhaSim

    def launch(self, spec: LaunchSpec) -> Machine:
        if self.sim.draws.launch_fails():  # throttled or a 5xx: before any capacity answer
            self.sim.ledger.result.launch_failures += 1
            raise BackendError(f"simulated RequestLimitExceeded for {spec.runner_name}")
        pool = self.sim.pools[spec.pool]
        assert pool.ec2 is not None, f"pool {pool.name} is not an ec2 pool"
        self.sim.pending = self.sim.choose(pool.ec2, spec.replaces_interrupted)
        machine = FakeBackend.launch(self, spec)
        lifetime = spec.max_lifetime if spec.max_lifetime is not None else pool.max_lifetime
        machine = self.machines[machine.id] = replace(
            machine, state=PENDING,  # as CreateFleet answers; running once it has booted
            expires_at=machine.created_at + lifetime + pool.ec2.expiry_grace)
        self.sim.machine_started(spec.runner_name)
        return machine

    def running(self, runner: str) -> None:
        m = self.machine_of(runner)
        if m is not None and m.state == PENDING:
            self.machines[m.id] = replace(m, state=RUNNING)

    def notify(self, runner: str, notice: str) -> None:
        """The interruption warning reached the backend: ``list()`` reports it from now on."""
        m = self.machine_of(runner)
        if m is not None:
            self.machines[m.id] = replace(m, notice=notice)

    def destroy(self, machine_id: str) -> None:
        machine = self.machines.get(machine_id)
        if machine is not None:
            self.sim.destroying(machine)
        super().destroy(machine_id)


class Ec2GhaSim(GhaMlopsSim):
    ledger_class = Ec2Ledger
    backend_class = Ec2Backend
    ledger: Ec2Ledger
    backend: Ec2Backend

    def __init__(self, p: Ec2Params, trace: list[TraceJob], tmp: Path, *, strategy: str,
                 capacity: str) -> None:
        self.capacity_policy = capacity
        super().__init__(p, trace, tmp, strategy=strategy)
        self.p: Ec2Params = p
        self.draws: Ec2Draws = Ec2Draws(p)
        self.capacity = Capacity(p)
        self.pools = {pool.name: pool for pool in self.config.pools}
        self.pending: tuple[InstanceType, bool] = (CHEAPEST_ON_DEMAND, False)
        self.job_of: dict[str, int] = {}  # runner -> GitHub job id it runs
        self.noticed: dict[str, float] = {}  # runner -> when its notice came
        self.after_interruption: set[int] = set()  # re-runs of jobs whose instance went

    def make_config(self, tmp: Path) -> RunnersConfig:
        p = self.p
        assert isinstance(p, Ec2Params)
        path = tmp / "runners.yaml"
        path.write_text(EC2_CONFIG.format(
            state=tmp / "state.db", reconcile=p.reconcile_interval, max=p.max_runners,
            idle=p.idle_timeout, register=p.register_timeout, lifetime=p.max_lifetime,
            types=", ".join(t.name for t in TYPES), capacity=self.capacity_policy,
            allocation=p.spot_allocation, grace=p.expiry_grace,
            rerun="true" if p.rerun_on_demand and self.capacity_policy != "spot" else "false"))
        return load_config(path, ENV)

    def choose(self, ec2: Ec2Pool, replacement: bool = False) -> tuple[InstanceType, bool]:
        """The type and market of one launch under the pool's capacity policy (see
        :class:`Ec2Backend`), its first try chosen by the real backend's rule
        (``first_lifecycle``: on-demand for the replacement of a runner whose instance got
        notice under a job, with ``--rerun-on-demand``); raises :class:`BackendError` for
        ``spot`` with no capacity."""
        types = [TYPE_BY_NAME[name] for name in ec2.instance_types]
        if first_lifecycle(ec2.capacity, replacement=replacement,
                           rerun_on_demand=ec2.rerun_on_demand) == "spot":
            available = [t for t in types if self.capacity.spot(t, self.engine.now)]
            if available:
                return ALLOCATIONS[ec2.spot_allocation](available), True
            self.ledger.result.refused += 1
            if ec2.capacity == "spot":
                raise BackendError("simulated: no spot capacity in any of the pool's types",
                                   retryable=True)
            self.ledger.result.fallbacks += 1
        return min(types, key=lambda t: t.on_demand), False

    def machine_started(self, name: str) -> None:
        it, spot = self.pending
        self.ledger.instance(name, it, spot)
        super().machine_started(name)
        if spot:
            life = self.draws.spot_life(it)
            if math.isfinite(life):
                self.engine.after(life - self.p.notice, self._notice, name)
                self.engine.after(life, self._reclaim, name)

    def _booted(self, name: str) -> None:
        self.backend.running(name)
        super()._booted(name)

    def _notice(self, name: str) -> None:
        """The two-minute warning: the backend reports it on the machine; the real policy
        decides (nothing here drains, kicks or stops the runner)."""
        if name in self.gone:
            return
        self.ledger.result.notices += 1
        self.noticed[name] = self.engine.now
        self.backend.notify(name, f"spot interruption notice (simulated) at "
                            f"{self.engine.now + self.p.notice:.0f}")

    def destroying(self, machine: Machine) -> None:
        """The scaler destroys ``machine``: count what the real policy did and why."""
        name, r = machine.runner_name, self.ledger.result
        if machine.notice and machine.state != LOST and name not in self.job_of:
            r.drained_on_notice += 1
            r.notice_to_drain.append(self.engine.now - self.noticed[name])
        if machine.expires_at is not None and machine.expires_at <= self.engine.clock():
            r.expired += 1

    def _reclaim(self, name: str) -> None:
        """EC2 takes the instance: its runner dies with it, the backend lists it ``lost``
        and GitHub fails the job it ran a little later; the rest is the real scaler's."""
        if name in self.gone:
            return
        r = self.ledger.result
        r.interruptions += 1
        if name not in self.job_of:
            r.undrained += 1  # noticed two minutes ago and still idle or booting
        job_id = self.job_of.pop(name, None)
        self.backend.lose(name)
        self.gh.disconnect(name)
        self.machine_gone(name)  # billing stops; the scaler's destroy later is a no-op here
        if job_id is not None:
            self.ledger.interrupted_job(name, self.attempts[job_id].idx)
            self.engine.after(self.p.interrupted_fail_after, self._github_fails, job_id)

    def machine_gone(self, name: str) -> None:
        job_id = self.job_of.pop(name, None)
        if job_id is not None and name not in self.gone:
            # Destroyed under its job: only the expiry does that (the policy never drains a
            # busy runner); the job fails as when its instance is reclaimed.
            self.ledger.expired_job(name, self.attempts[job_id].idx)
            self.gh.disconnect(name)
            self.engine.after(self.p.interrupted_fail_after, self._github_fails, job_id)
        super().machine_gone(name)

    def rerun_queued(self, old_id: int, new_id: int) -> None:
        super().rerun_queued(old_id, new_id)
        if self.ledger.interrupted[self.attempts[old_id].idx]:
            self.after_interruption.add(new_id)

    def _start(self, name: str, job: GhJob) -> None:
        self.job_of[name] = job.id
        self.ledger.result.doomed_starts += name in self.noticed
        if job.id in self.after_interruption:
            self.ledger.result.rerun_waits.append(self.engine.now
                                                  - self.attempts[job.id].queued_at)
        super()._start(name, job)

    def _finish(self, name: str, job_id: int) -> None:
        if self.job_of.get(name) == job_id:  # else its instance was reclaimed first
            del self.job_of[name]
            super()._finish(name, job_id)

    def _die(self, name: str, job_id: int) -> None:
        if self.job_of.get(name) == job_id:
            del self.job_of[name]
            super()._die(name, job_id)


# -- the field's strategies --------------------------------------------------------------------


class CloudBaseline:
    """What both baselines share: the engine, the streams, the ledger, instances that boot and
    may be reclaimed."""

    def __init__(self, strategy: str, p: Ec2Params, trace: list[TraceJob]) -> None:
        self.p = p
        self.trace = trace
        self.engine = Engine()
        self.draws = Ec2Draws(p)
        self.capacity = Capacity(p)
        self.ledger = Ec2Ledger(strategy, trace, self.engine)
        self.alive: set[str] = set()
        self.job_of: dict[str, int] = {}  # instance -> trace index it runs
        self.noticed: set[str] = set()
        self._names = itertools.count(1)

    def _instance(self, it: InstanceType, on_booted: Callable[[str], None]) -> str:
        name = f"i{next(self._names)}"
        self.alive.add(name)
        self.ledger.instance(name, it, True)
        self.ledger.machine_up(name)
        self.engine.after(self.draws.boot(), self._booted, name, on_booted)
        life = self.draws.spot_life(it)
        if math.isfinite(life):
            self.engine.after(life - self.p.notice, self._notice, name)
            self.engine.after(life, self._reclaim, name)
        return name

    def _booted(self, name: str, then: Callable[[str], None]) -> None:
        if name in self.alive:
            then(name)

    def _run(self, name: str, idx: int, queued_at: float, dies: float | None) -> None:
        self.job_of[name] = idx
        self.ledger.result.doomed_starts += name in self.noticed
        self.ledger.job_started(name, idx, queued_at)
        duration = self.trace[idx].duration
        if dies is None:
            self.engine.after(duration, self._ended, name, idx, True)
        else:
            self.engine.after(duration * dies, self._ended, name, idx, False)

    def _ended(self, name: str, idx: int, ok: bool) -> None:
        if self.job_of.get(name) != idx:
            return  # its instance was reclaimed first
        del self.job_of[name]
        self.ledger.job_ended(name, idx, ok=ok)
        self._job_done(name, ok)

    def _remove(self, name: str) -> None:
        self.alive.discard(name)
        self.ledger.machine_gone(name)

    def _notice(self, name: str) -> None:
        if name in self.alive:  # ignored: the instance may still take a job
            self.ledger.result.notices += 1
            self.noticed.add(name)

    def _reclaim(self, name: str) -> None:
        if name not in self.alive:
            return
        self.ledger.result.interruptions += 1
        idx = self.job_of.pop(name, None)
        if idx is not None:
            self.ledger.interrupted_job(name, idx)
        else:
            self.ledger.result.undrained += 1
        self._remove(name)

    def _job_done(self, name: str, ok: bool) -> None:
        raise NotImplementedError

    def _done(self) -> bool:
        return (len(self.ledger.succeeded) == len(self.trace) and not self.alive
                and self.engine.now > self.trace[-1].at)

    def _arrive(self, tj: TraceJob) -> None:
        raise NotImplementedError

    def run(self) -> Ec2Result:
        for tj in self.trace:
            self.engine.at(tj.at, self._arrive, tj)
        self.engine.run(self.trace[-1].at + self.p.drain, self._done)
        r = self.ledger.close()
        r.boots = list(self.draws.boots)
        return r


class TerraformSim(CloudBaseline):
    """A launch per queued-job webhook, lowest-price spot, reusable runners removed after
    ``tf_scale_down`` idle, no interruption handling, no on-demand failover."""

    def __init__(self, p: Ec2Params, trace: list[TraceJob]) -> None:
        super().__init__("terraform-style", p, trace)
        self.queue: deque[tuple[int, float, float | None]] = deque()
        self.idle: dict[str, float] = {}

    def _arrive(self, tj: TraceJob) -> None:
        self.queue.append((tj.idx, self.engine.now, tj.dies_at))
        self.ledger.queued(tj.idx)
        if self.idle:
            self._take(next(iter(self.idle)))
        delay = self.draws.webhook()
        if delay is None:
            self.ledger.result.webhooks_lost += 1
        else:
            self.engine.after(delay, self._launch, 0)

    def _launch(self, tries: int) -> None:
        if len(self.alive) >= self.p.max_runners:
            return
        if self.draws.launch_fails():  # throttled: the SDK retries
            self.ledger.result.launch_failures += 1
            self.engine.after(2.0, self._launch, tries)
            return
        available = [t for t in TYPES if self.capacity.spot(t, self.engine.now)]
        if not available:
            self.ledger.result.refused += 1
            if tries < self.p.tf_retries:  # the SQS message comes back
                self.engine.after(self.p.tf_retry_delay, self._launch, tries + 1)
            return
        self._instance(lowest_price(available), self._take)

    def _take(self, name: str) -> None:
        self.idle.pop(name, None)
        if not self.queue:
            self.idle[name] = self.engine.now
            self.engine.after(self.p.tf_scale_down, self._idle_check, name, self.engine.now)
            return
        idx, queued_at, dies = self.queue.popleft()
        self._run(name, idx, queued_at, dies)

    def _job_done(self, name: str, ok: bool) -> None:
        if ok:
            self._take(name)
        else:
            self._remove(name)

    def _idle_check(self, name: str, since: float) -> None:
        if self.idle.get(name) == since:
            del self.idle[name]
            self._remove(name)

    def _reclaim(self, name: str) -> None:
        self.idle.pop(name, None)
        super()._reclaim(name)


class CmlSim(CloudBaseline):
    """Per workflow: a launch job on a hosted runner, one spot instance of the cheapest type
    for its one job; a refused launch fails the workflow; the interruption notice re-runs the
    whole workflow (each time)."""

    TYPE = min(TYPES, key=lambda t: t.spot)

    def __init__(self, p: Ec2Params, trace: list[TraceJob]) -> None:
        super().__init__("cml-style", p, trace)
        self.attempt_of: dict[str, tuple[int, float, float | None]] = {}

    def _arrive(self, tj: TraceJob) -> None:
        self._attempt(tj.idx, tj.dies_at)

    def _attempt(self, idx: int, dies: float | None) -> None:
        self.ledger.queued(idx)
        self.engine.after(self.p.cml_launch_delay, self._request, idx, self.engine.now, dies)

    def _request(self, idx: int, queued_at: float, dies: float | None) -> None:
        if self.draws.launch_fails():  # throttled: the provider retries
            self.ledger.result.launch_failures += 1
            self.engine.after(2.0, self._request, idx, queued_at, dies)
            return
        if not self.capacity.spot(self.TYPE, self.engine.now):
            self.ledger.result.refused += 1
            self.ledger.launch_failed.add(idx)
            return
        name = self._instance(self.TYPE, self._start)
        self.attempt_of[name] = (idx, queued_at, dies)

    def _start(self, name: str) -> None:
        idx, queued_at, dies = self.attempt_of[name]
        self._run(name, idx, queued_at, dies)

    def _job_done(self, name: str, ok: bool) -> None:
        self._remove(name)  # --single: the instance goes after its job

    def _notice(self, name: str) -> None:
        if name not in self.alive:
            return
        self.ledger.result.notices += 1
        idx, _, _ = self.attempt_of[name]
        job = self.job_of.pop(name, None)
        if job is not None:
            self.ledger.interrupted_job(name, idx)
        self._remove(name)
        self.ledger.result.reruns += 1
        self._attempt(idx, self.draws.rerun_dies())


# -- driving it --------------------------------------------------------------------------------


def simulate(strategy: str, p: Ec2Params) -> Ec2Result:
    """One run of one strategy on the trace of ``p.seed``."""
    trace = make_trace(p)
    started = time.perf_counter()
    result: Result
    if strategy in ("gha-mlops", "on-demand"):
        capacity = p.capacity if strategy == "gha-mlops" else "on-demand"
        result = run_real_scaler(p, lambda tmp: Ec2GhaSim(p, trace, tmp, strategy=strategy,
                                                          capacity=capacity))
    elif strategy == "terraform-style":
        result = TerraformSim(p, trace).run()
    elif strategy == "cml-style":
        result = CmlSim(p, trace).run()
    else:
        raise ValueError(f"unknown strategy {strategy!r}; one of {', '.join(STRATEGIES)}")
    assert isinstance(result, Ec2Result)
    result.wall = time.perf_counter() - started
    return result


def report(p: Ec2Params, runs: dict[str, list[Ec2Result]]) -> None:
    n = len(next(iter(runs.values())))
    print(f"trace: {p.jobs} GPU jobs in {p.bursts} bursts over {p.span / 3600:.1f} h; "
          f"durations lognormal median {p.duration_median / 60:.0f} min sigma "
          f"{p.duration_sigma}; boot median {p.boot_median / 60:.1f} min; max {p.max_runners} "
          f"runners; spot shortages {p.shortages_per_hour:g}/h per type "
          f"({p.shortage_min / 60:.0f}-{p.shortage_max / 60:.0f} min) plus "
          f"{p.global_shortage / 60:.0f} min with none in any type; interruptions x"
          f"{p.hazard_scale:g} of "
          + ", ".join(f"{t.name} ${t.spot:.3f}/${t.on_demand:.3f} {t.hazard:.0%}/h"
                      for t in TYPES)
          + f"; gha-mlops pool: capacity {p.capacity}, {p.spot_allocation}"
          + (", rerun_on_demand" if p.rerun_on_demand else "") + ", reconcile every "
          f"{p.reconcile_interval:g}s; seeds {p.seed}..{p.seed + n - 1}; median of {n} run(s)")
    print()
    head = (f"{'strategy':<16}{'served':>7}{'lost':>5}{'failed':>7}{'(intr)':>7}{'intr':>5}"
            f"{'OD fb':>6}{'doomed':>7}{'dollars':>9}{'vs OD':>7}{'paid/busy':>10}{'boot/busy':>10}"
            f"{'wait p50':>10}{'wait p95':>10}{'spot h':>8}{'OD h':>7}{'wall s':>7}")
    print(head)
    print("-" * len(head))
    for name, rs in runs.items():
        def m(get: Callable[[Ec2Result], float], rs: list[Ec2Result] = rs) -> float:
            return med([float(get(r)) for r in rs])
        print(f"{name:<16}{m(lambda r: r.served):>7.0f}{m(lambda r: r.lost):>5.0f}"
              f"{m(lambda r: r.user_failed):>7.0f}{m(lambda r: r.user_failed_interrupt):>7.0f}"
              f"{m(lambda r: r.interruptions):>5.0f}{m(lambda r: r.fallbacks):>6.0f}"
              f"{m(lambda r: r.doomed_starts):>7.0f}"
              f"{m(lambda r: r.dollars):>9.2f}{m(lambda r: r.versus_on_demand):>7.2f}"
              f"{m(lambda r: r.ratio):>10.3f}{m(lambda r: r.boot_share):>10.3f}"
              f"{m(lambda r: r.wait_p50):>9.0f}s{m(lambda r: r.wait_p95):>9.0f}s"
              f"{m(lambda r: r.spot_hours):>8.1f}{m(lambda r: r.od_hours):>7.1f}"
              f"{m(lambda r: r.wall):>7.2f}")
    print("failed: jobs whose run ended red (no attempt succeeded, one failed); (intr): of them, "
          "after an interruption; intr: instances reclaimed; OD fb: on-demand launches for "
          "want of spot; doomed: jobs started on an instance after its interruption notice; vs OD: dollars / on-demand only's on the same seed; boot/busy: "
          "boot seconds over busy ones (the part of paid/busy no scaler can avoid)")
    print()
    print("goals (each: met in k of the runs)")
    for name, rs in runs.items():
        met = {g: sum(r.goals()[g] for r in rs) for g in rs[0].goals()}
        verdict = "ALL MET" if all(k == len(rs) for k in met.values()) else "missed"
        print(f"  {name:<16}" + "   ".join(f"{g} {k}/{len(rs)}" for g, k in met.items())
              + f"   -> {verdict}")
    print()
    print("interruption notices (median per run; delays and waits over all runs): notices, "
          "idle/booting runners drained on one (and how long after it), instances reclaimed "
          "while idle or booting, jobs started after a notice; instances removed past their "
          "expiry; how long re-runs of interrupted jobs waited")
    for name, rs in runs.items():
        delays = [t for r in rs for t in r.notice_to_drain]
        delay = (f"p50 {percentile(delays, 50):.0f}s max {max(delays):.0f}s" if delays
                 else "-")
        drained = _med(rs, "drained_on_notice")
        waits = [t for r in rs for t in r.rerun_waits]
        rerun = f"; their re-runs waited p50 {percentile(waits, 50):.0f}s" if waits else ""
        print(f"  {name:<16}notices {_med(rs, 'notices'):.0f}, drained {drained:.0f} ({delay}), "
              f"reclaimed undrained {_med(rs, 'undrained'):.0f}, started after a notice "
              f"{_med(rs, 'doomed_starts'):.0f}; expired {_med(rs, 'expired'):.0f}{rerun}")
    print()
    print("paid/busy - 1 = boot/busy + the rest (runners idle, instances past their job, the "
          "60 s minimum), medians:")
    for name, rs in runs.items():
        ratio, boot = med([r.ratio for r in rs]), med([r.boot_share for r in rs])
        rest = ratio - 1 - boot
        print(f"  {name:<16}{ratio - 1:.3f} = {boot:.3f} + {0.0 if abs(rest) < 5e-4 else rest:.3f}")
    print()
    print("lost jobs, why (all runs together)")
    for name, rs in runs.items():
        why: Counter[str] = sum((r.lost_why for r in rs), Counter())
        print(f"  {name:<16}" + ("; ".join(f"{k}: {v}" for k, v in why.most_common())
                                 or "none"))


def _med(rs: list[Ec2Result], attr: str) -> float:
    return med([float(getattr(r, attr)) for r in rs])


def parse(argv: list[str] | None) -> tuple[Ec2Params, int, list[str]]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a small trace (40 jobs, 3 bursts over 30 min, 10 min jobs)")
    parser.add_argument("--runs", type=int, default=5, help="seeds to run (median reported)")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    base = QUICK if "--quick" in (argv if argv is not None else sys.argv[1:]) else Ec2Params()
    for f in fields(Ec2Params):
        default = getattr(base, f.name)
        parser.add_argument("--" + f.name.replace("_", "-"), type=type(default),
                            default=default, help=f"(default {default})")
    args = parser.parse_args(argv)
    p = replace(base, **{f.name: getattr(args, f.name) for f in fields(Ec2Params)})
    return p, args.runs, [s.strip() for s in args.strategies.split(",") if s.strip()]


def main(argv: list[str] | None = None) -> int:
    p, n, strategies = parse(argv)
    runs: dict[str, list[Ec2Result]] = {s: [] for s in strategies}
    started = time.perf_counter()
    for i in range(n):
        seed_p = replace(p, seed=p.seed + i)
        got = {s: simulate(s, seed_p) for s in strategies}
        reference = got["on-demand"].dollars if "on-demand" in got else None
        for s, r in got.items():
            if reference:
                r.versus_on_demand = r.dollars / reference
            runs[s].append(r)
    report(p, runs)
    print(f"\nwall time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
