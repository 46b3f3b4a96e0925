"""The autoscaler's decisions, as one pure function.

``decide(world)`` maps what is (pools, jobs and their labels, our runners and their states,
the machines the backend has, the runners GitHub has, the clock) to what to do (launch N in a
pool, drain a runner, remove a machine, deregister a runner, re-run a job) and what cannot be
done (jobs no pool serves). It does no I/O, reads no clock and keeps no state, so every rule is
a row of a table test, and the simulator in ``benchmarks/`` runs the very same code.

The rules, which the field's autoscalers taught us:

* Never over the maximum: every runner not yet ``gone`` counts towards its pool's ``max``,
  warm (idle) ones, booting ones and ones whose job just finished included.
* Never kill a busy runner: only idle runners are drained (deregistered first; GitHub answers
  422 when a job got to it meanwhile, and then it stays). The one exception is a machine past
  its expiry (below).
* No orphans: a machine no runner of ours owns is removed once older than the grace period; a
  runner of ours whose machine is gone is deregistered and forgotten; a registration whose
  runner we never launched (the process died in between) is deregistered.
* No lost jobs: demand is every queued job, from webhooks and from the reconcile listing alike;
  a job whose runner died mid-job, or whose machine went away under it (its host restarted or
  was lost, a spot interruption), is re-run once.
* Adopt by the machine's real state: after a restart, a machine created but never started is
  started at once when its runner is still wanted, else removed at once (never held as
  "booting" until ``register_timeout``).
* Act on notice: a runner whose machine's host gave notice (``Machine.notice``: a spot
  interruption warning) takes no new job. Idle, booting or finished, it is drained at once and
  not counted available, so its replacement launches in the same pass; busy, its job goes on
  (it may finish in the two minutes) and its pool asks for one more runner, for the re-run the
  job will likely need. When the machine then goes, its job is lost to "its spot instance was
  interrupted" and re-run once.
* Nothing outlives its expiry: a machine past ``Machine.expires_at`` (a cloud machine's launch
  + max_lifetime + grace) is removed whatever its runner does and whatever GitHub says, its
  runner forgotten, and its job, if any, not re-run (it outlived the pool's max lifetime); an
  orphan past its expiry is removed without waiting for the grace period.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gha_mlops.github.port import GhRunner
from gha_mlops.runners.backends.base import CREATED, EXITED, LOST, Machine
from gha_mlops.runners.config import Pool

# Runner states, in the order a runner lives them.
RESERVED = "reserved"  # a slot is taken under the pool's max; nothing exists yet
LAUNCHING = "launching"  # registered with GitHub (JIT config), machine being started
BOOTING = "booting"  # machine started, runner not seen online yet
IDLE = "idle"  # online, waiting for a job
BUSY = "busy"  # running a job
DONE = "done"  # its job finished; the ephemeral runner exits, its machine goes away
DRAINING = "draining"  # being deregistered and removed
GONE = "gone"  # machine destroyed, registration gone (history only)

ALIVE = (RESERVED, LAUNCHING, BOOTING, IDLE, BUSY, DONE, DRAINING)
AVAILABLE = (RESERVED, LAUNCHING, BOOTING, IDLE)  # can still take a queued job
STARTING = (RESERVED, LAUNCHING)

# Why a job is re-run (the cause the log, the metrics and the state name).
RUNNER_DIED = "its runner died mid-job"
MACHINE_WENT_AWAY = "its machine went away"
SPOT_INTERRUPTED = "its spot instance was interrupted"  # a lost machine that had notice
LOST_TO_MACHINE = (MACHINE_WENT_AWAY, SPOT_INTERRUPTED)  # causes outside the job's control
EXPIRED = "past its expiry (max_lifetime + grace)"
# How close to a backend outage a finished runner's machine must vanish for its job's end
# (cancelled, failed) to be put down to the outage rather than to the job itself.
OUTAGE_WINDOW = 60.0


@dataclass(frozen=True)
class JobView:
    id: int
    repo: str
    labels: frozenset[str]  # lower-cased runs-on labels
    status: str  # queued | in_progress | completed
    queued_at: float
    runner_name: str | None = None
    lost: bool = False  # its runner died mid-job; re-run it once it is completed
    rerun_done: bool = False  # this job (or an earlier attempt of it) was re-run already
    conclusion: str | None = None


@dataclass(frozen=True)
class RunnerView:
    name: str
    pool: str
    state: str
    created_at: float
    state_since: float
    boot_id: str  # the scaler process that reserved it
    github_id: int | None = None
    machine_id: str | None = None
    job_id: int | None = None


@dataclass(frozen=True)
class World:
    pools: Sequence[Pool]
    jobs: Sequence[JobView]
    runners: Sequence[RunnerView]
    now: float
    boot_id: str  # this scaler process
    grace: float = 120.0
    # What the backends and GitHub report; None when not listed this time (the fast path
    # after a webhook does not list): the rules that need them then wait for a full pass.
    machines: Sequence[Machine] | None = None
    gh_runners: Sequence[GhRunner] | None = None
    # Free GPUs: one count, or one per host where a backend spans several (a runner's GPUs
    # are all on one host, so 1 + 1 free on two hosts do not take a 2-GPU runner);
    # None: not limited (or unknown).
    free_gpus: int | tuple[int, ...] | None = None
    prefix: str = ""  # the names of our runners start with this
    # The last time listing the backends failed (a daemon down or restarting, a host
    # unreachable), None if never: machines that vanished across it went away under their
    # runners rather than with them. ``pool_outages`` says it per pool, as (the first, the
    # last) failed listing of the pool's backend in a row (the scaler knows which backend
    # failed); a pool it does not name had none.
    outage_at: float | None = None
    pool_outages: Mapping[str, tuple[float, float]] | None = None
    # Pools whose backend could not be listed this pass (``machines`` holds the others'):
    # their runners are not judged by machines missing from it.
    unlisted_pools: frozenset[str] = frozenset()
    # The pools ``free_gpus`` limits (those of the backends that report GPU capacity, the
    # Docker hosts); None: every pool that asks for GPUs.
    gpu_pools: frozenset[str] | None = None
    # Runners whose machine an earlier listing showed under notice (the scaler remembers):
    # one whose machine then vanished without being reported lost went to the interruption.
    noticed_before: frozenset[str] = frozenset()


@dataclass
class Decision:
    launch: dict[str, int] = field(default_factory=dict)  # pool -> how many
    # pool -> how many of its launches replace runners whose machine got notice under a job
    # (LaunchSpec.replaces_interrupted: a cloud backend may launch them on-demand).
    replacements: dict[str, int] = field(default_factory=dict)
    drain: list[tuple[str, str]] = field(default_factory=list)  # (runner, why)
    remove_machines: list[tuple[str, str]] = field(default_factory=list)  # (machine id, why)
    deregister: list[tuple[int, str, str]] = field(default_factory=list)  # (gh id, name, why)
    adopt: list[tuple[str, str]] = field(default_factory=list)  # (runner, machine id)
    forget: list[tuple[str, str]] = field(default_factory=list)  # (runner, why): -> gone
    lost: list[tuple[str, int, str]] = field(default_factory=list)  # (runner, job, cause)
    start: list[tuple[str, str]] = field(default_factory=list)  # (runner, machine id)
    rerun: list[int] = field(default_factory=list)  # job ids
    unservable: list[tuple[int, tuple[str, ...]]] = field(default_factory=list)
    queued: dict[str, int] = field(default_factory=dict)  # pool -> queued jobs it serves
    # (runner, machine id, job id or None): machines removed past their expiry; the runner
    # is in ``forget`` too, and its job is not re-run.
    expired: list[tuple[str, str, int | None]] = field(default_factory=list)


def wants_self_hosted(pools: Sequence[Pool], labels: frozenset[str]) -> bool:
    """Whether a job asks for a runner like ours: it names ``self-hosted`` or a label one of
    the pools adds. Jobs for GitHub-hosted runners (``ubuntu-latest`` ...) are not ours."""
    return bool(labels & _own_labels(pools))


def _own_labels(pools: Sequence[Pool]) -> frozenset[str]:
    return frozenset().union(*(p.labels for p in pools)) - {"linux", "x64"}


def pool_for(pools: Sequence[Pool], labels: frozenset[str]) -> Pool | None:
    """The pool that serves a job with these ``runs-on`` labels: the one whose labels include
    all of them, the most specific (fewest labels) first, then the first declared."""
    fits = [p for p in pools if p.serves(labels)]
    return min(fits, key=lambda p: len(p.labels)) if fits else None


def decide(world: World) -> Decision:
    d = Decision()
    alive = [r for r in world.runners if r.state in ALIVE]
    demand = _demand(world, d)
    noticed = _reconcile(world, alive, demand, d)
    # Runners whose machine is gone free their slot; ones being drained keep it until their
    # machine is destroyed (a drain GitHub refuses leaves the runner where it is).
    settled = {name for name, _ in d.forget} | {name for name, _, _ in d.lost}
    by_pool: dict[str, list[RunnerView]] = defaultdict(list)
    for r in alive:
        if r.name not in settled:
            by_pool[r.pool].append(r)
    hosts = _gpu_hosts(world.free_gpus)
    for pool in world.pools:
        mine = by_pool.get(pool.name, [])
        # A busy runner under notice will likely lose its job: one more runner for the re-run
        # (kept, not drained as surplus, while the notice lasts).
        doomed = sum(1 for r in mine if r.state == BUSY and r.name in noticed)
        wanted = demand.get(pool.name, 0) + doomed
        available = _drain(world, pool, mine, wanted, noticed, d)
        limited = hosts is not None and (world.gpu_pools is None
                                         or pool.name in world.gpu_pools)
        if hosts is not None and limited and pool.gpus:
            # GPUs promised to runners that do not hold them yet
            for _ in range(sum(1 for r in mine if r.state in STARTING)):
                _place(hosts, pool.gpus, promised=True)
        want = wanted + pool.min_idle - available
        n = max(0, min(want, pool.max - len(mine)))
        if n and pool.gpus and hosts is not None and limited:
            n = next((i for i in range(n) if not _place(hosts, pool.gpus)), n)
        if n:
            d.launch[pool.name] = n
            if doomed:
                d.replacements[pool.name] = min(n, doomed)
    _reruns(world, d)
    return d


def _gpu_hosts(free: int | tuple[int, ...] | None) -> list[int] | None:
    if free is None:
        return None
    return [free] if isinstance(free, int) else list(free)


def _place(hosts: list[int], gpus: int, *, promised: bool = False) -> bool:
    """Take ``gpus`` from the host they fit best (the fewest free that still hold them);
    False when none holds them. A ``promised`` runner (its launch under way, its host not
    known here) is taken from the host with the most free even when they do not fit there:
    the count stays conservative, never optimistic."""
    fits = [i for i, free in enumerate(hosts) if free >= gpus]
    if fits:
        hosts[min(fits, key=lambda i: hosts[i])] -= gpus
        return True
    if promised and hosts:
        hosts[max(range(len(hosts)), key=lambda i: hosts[i])] -= gpus
    return False


def _demand(world: World, d: Decision) -> dict[str, int]:
    demand: dict[str, int] = defaultdict(int)
    own = _own_labels(world.pools)
    # Jobs share a few label sets: whether a set is ours and which pool serves it is worked
    # out once per set (a pass stays cheap with thousands queued).
    seen: dict[frozenset[str], tuple[bool, Pool | None]] = {}
    for job in world.jobs:
        if job.status != "queued":
            continue
        entry = seen.get(job.labels)
        if entry is None:
            entry = seen[job.labels] = (bool(job.labels & own),
                                        pool_for(world.pools, job.labels))
        ours, pool = entry
        if not ours:
            continue
        if pool is None:
            d.unservable.append((job.id, tuple(sorted(job.labels))))
            continue
        demand[pool.name] += 1
    d.queued = {p.name: demand.get(p.name, 0) for p in world.pools}
    d.unservable.sort()
    return demand


def _drain(world: World, pool: Pool, mine: Sequence[RunnerView], demand: int,
           noticed: Mapping[str, str], d: Decision) -> int:
    """Drain what the pool no longer needs, and what is under notice; returns how many
    runners stay available."""
    now = world.now
    available = 0
    idle: list[RunnerView] = []
    booting_deadline = now - pool.register_timeout
    lingering_deadline = now - world.grace
    for r in mine:
        state = r.state
        notice = noticed.get(r.name)
        if notice is not None and state not in (BUSY, DRAINING):
            # Not available whatever its state: the pool launches its replacement now. A
            # launch still in flight here is drained once it has noted its machine.
            if state in (IDLE, BOOTING, DONE) or (
                    state == LAUNCHING and r.boot_id != world.boot_id):
                d.drain.append((r.name, notice))  # (adopted first, in the same pass)
            continue
        if state == IDLE:
            idle.append(r)
        elif state == BOOTING and r.state_since <= booting_deadline:
            age = now - r.state_since
            d.drain.append((r.name, f"never came online in {human_duration(age)} "
                            f"(register_timeout {human_duration(pool.register_timeout)})"))
            continue
        elif state == DONE and r.state_since <= lingering_deadline:
            d.drain.append((r.name, f"finished its job {human_duration(now - r.state_since)} "
                            "ago but its machine is still there"))
        elif state == DRAINING and r.state_since <= lingering_deadline:
            d.drain.append((r.name, "an earlier drain did not finish"))
        if state in AVAILABLE:
            available += 1
    surplus = available - demand - pool.min_idle
    for r in sorted(idle, key=lambda r: r.state_since):
        if now - r.created_at >= pool.max_lifetime:
            why = f"reached its maximum lifetime ({human_duration(pool.max_lifetime)})"
        elif surplus > 0 and now - r.state_since >= pool.idle_timeout:
            why = (f"idle for {human_duration(now - r.state_since)} "
                   f"(idle_timeout {human_duration(pool.idle_timeout)})")
        else:
            continue
        d.drain.append((r.name, why))
        surplus -= 1
        available -= 1
    return available


def _reconcile(world: World, alive: Sequence[RunnerView], demand: dict[str, int],
               d: Decision) -> dict[str, str]:
    """Compare our state with the backend's machines and GitHub's runners (when listed);
    returns the runners whose machine is under notice (runner -> the notice)."""
    pools = {p.name for p in world.pools}
    noticed: dict[str, str] = {}
    for r in alive:
        if r.pool not in pools and r.state == IDLE:
            d.drain.append((r.name, f"its pool {r.pool!r} is no longer configured"))
    if world.machines is not None:
        noticed = _reconcile_machines(world, alive, world.machines, demand, d)
    if world.gh_runners is not None:
        _reconcile_registrations(world, alive, world.gh_runners, d)
    return noticed


def _reconcile_machines(world: World, alive: Sequence[RunnerView],
                        machines: Sequence[Machine], demand: dict[str, int],
                        d: Decision) -> dict[str, str]:
    by_runner = {r.name: r for r in alive}
    seen: set[str] = set()
    stalled: list[tuple[RunnerView, Machine]] = []
    lost: dict[str, str] = {}  # runner -> cause: its host stopped its machine under it
    noticed: dict[str, str] = {}
    for m in machines:
        r = by_runner.get(m.runner_name)
        if m.state == EXITED:
            d.remove_machines.append((m.id, "its runner exited"))
            continue
        if m.state == LOST:
            d.remove_machines.append((m.id, "its host stopped it under its runner"))
            lost[m.runner_name] = SPOT_INTERRUPTED if interrupted(m) else MACHINE_WENT_AWAY
            continue  # its runner is handled below as one whose machine is gone
        if m.expires_at is not None and m.expires_at <= world.now:
            _expired(m, r, d)  # even an orphan younger than the grace period
            if r is not None:
                seen.add(r.name)
            continue
        if r is None:
            if world.now - m.created_at >= world.grace:
                d.remove_machines.append((m.id, f"orphan: no runner {m.runner_name!r} in the "
                                          "state (older than the grace period)"))
            continue
        seen.add(r.name)
        if m.notice:
            noticed[r.name] = m.notice
        # A launch in flight in this process notes its machine itself.
        in_flight = r.boot_id == world.boot_id and r.state in STARTING
        if m.state == CREATED and not in_flight:
            stalled.append((r, m))  # created, then the scaler died before starting it
        elif r.machine_id is None and not in_flight:
            d.adopt.append((r.name, m.id))  # started, then the scaler died before noting it
    _start_or_remove(world, alive, stalled, demand, d)
    for r in alive:
        if r.name not in seen and r.pool not in world.unlisted_pools:
            cause = lost.get(r.name) or (
                SPOT_INTERRUPTED if r.name in world.noticed_before else None)
            _machine_gone(world, r, cause, d)
    return noticed


def interrupted(m: Machine) -> bool:
    """Whether a machine is going (or, lost, went) to a spot interruption: it has notice, or
    its backend's detail says so (EC2's state reason ``Server.SpotInstanceTermination``)."""
    return bool(m.notice) or "SpotInstanceTermination" in m.detail


def _expired(m: Machine, r: RunnerView | None, d: Decision) -> None:
    d.remove_machines.append((m.id, EXPIRED))
    if r is None:
        return
    job = r.job_id if r.state == BUSY else None
    d.expired.append((r.name, m.id, job))
    d.forget.append((r.name, f"its machine was {EXPIRED}" + (
        f"; its job {job} is not re-run (it outlived the pool's max lifetime)"
        if job is not None else "")))


def _outage(world: World, pool: str) -> tuple[float | None, float | None]:
    """The first and last failed listing of ``pool``'s backend in its latest outage."""
    if world.pool_outages is None:
        return world.outage_at, world.outage_at
    return world.pool_outages.get(pool, (None, None))


def _machine_gone(world: World, r: RunnerView, lost: str | None, d: Decision) -> None:
    """What to do with a runner of ours whose machine is not there, or was ``lost`` (the
    cause): its host stopped it (or, ``world.outage_at``, the backend was unreachable
    meanwhile)."""
    if r.state in STARTING and not lost:
        if r.boot_id != world.boot_id:
            d.forget.append((r.name, "its launch was interrupted (the autoscaler "
                             "restarted) and no machine exists"))
        return
    first, last = _outage(world, r.pool)
    if r.state == BUSY and r.job_id is not None:
        went_away = lost or (MACHINE_WENT_AWAY if last is not None and
                             last >= r.state_since else None)
        d.lost.append((r.name, r.job_id, went_away or RUNNER_DIED))
    elif r.state == DONE and r.job_id is not None and (lost or (
            first is not None and last is not None
            and first - OUTAGE_WINDOW <= r.state_since <= last + OUTAGE_WINDOW)):
        # Its job ended as its host went down (the runner saw its machine stop: cancelled):
        # the scaler asks GitHub, and a job that succeeded is not re-run.
        d.lost.append((r.name, r.job_id, lost or MACHINE_WENT_AWAY))
    elif r.state == DONE:
        d.forget.append((r.name, "its job is done and its machine exited"))
    else:
        d.forget.append((r.name, f"its machine {'went away' if lost else 'is gone'} "
                         f"(it was {r.state})"))


def _start_or_remove(world: World, alive: Sequence[RunnerView],
                     stalled: Sequence[tuple[RunnerView, Machine]], demand: dict[str, int],
                     d: Decision) -> None:
    """Machines created and never started (the scaler died in between): each is started at
    once while its pool wants more runners than it has otherwise, else removed at once with
    its runner, so its slot is free now rather than after ``register_timeout``."""
    if not stalled:
        return
    names = {r.name for r, _ in stalled}
    pools = {p.name: p for p in world.pools}
    wanted = {p.name: demand.get(p.name, 0) + p.min_idle - sum(
        1 for r in alive if r.pool == p.name and r.state in AVAILABLE and r.name not in names)
        for p in world.pools}
    for r, m in sorted(stalled, key=lambda rm: rm[0].created_at):
        if r.pool in pools and r.github_id is not None and wanted[r.pool] > 0 \
                and not m.notice:  # a machine under notice is not worth starting
            wanted[r.pool] -= 1
            d.start.append((r.name, m.id))
            continue
        why = "created but never started (the autoscaler restarted), and no job needs it"
        d.remove_machines.append((m.id, why))
        d.forget.append((r.name, f"its machine was {why}"))


def _reconcile_registrations(world: World, alive: Sequence[RunnerView],
                             registered: Sequence[GhRunner], d: Decision) -> None:
    ours = {r.name: r for r in alive}
    forgotten = {name for name, _ in d.forget} | {name for name, _, _ in d.lost}
    for g in registered:
        if not world.prefix or not g.name.startswith(world.prefix):
            continue  # not one of ours: never touch other runners
        r = ours.get(g.name)
        if g.busy:
            continue  # GitHub would refuse (422); an ephemeral runner leaves after its job
        if r is None or g.name in forgotten:
            d.deregister.append((g.id, g.name, "registered but no machine of ours runs it"))


def _reruns(world: World, d: Decision) -> None:
    for job in world.jobs:
        if job.lost and not job.rerun_done and job.status == "completed" \
                and job.conclusion != "success":
            d.rerun.append(job.id)


def human_duration(seconds: float) -> str:
    """``42s``, ``5.5m``, ``1.2h``: durations in log lines and ``runners status``."""
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    if seconds >= 60:
        return f"{seconds / 60:.1f}m"
    return f"{seconds:.0f}s"
