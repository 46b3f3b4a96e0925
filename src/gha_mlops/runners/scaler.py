"""The scaler: keeps the world the policy wants.

One loop thread runs *passes*. A webhook (through :meth:`Scaler.on_job_event`) updates the
state and wakes the loop for a fast pass (policy over the state alone: launch for new demand
within milliseconds). Every ``reconcile_interval`` a full pass first lists GitHub's queued
jobs and registered runners and the backends' machines, so a lost webhook, a restart or a
machine that died is noticed. Launches run on a small thread pool so a burst of jobs does not
wait for containers to start one after another.

Every step is written to the state before the action it enables (see ``state.py``); a failed
call is logged, counted and retried on a later pass, never lost.

A machine's notice (a spot interruption warning) is logged once per machine when a listing
first shows it and counted in ``gha_mlops_runners_interruptions_total{pool}``; what to do
about it (drain, a replacement, the re-run) is the policy's.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from gha_mlops.github.port import GhJob, GhRunner, GitHubError, RunnerBusyError, RunnersPort
from gha_mlops.runners.backends.base import (
    EXITED,
    FAILPOINTS_ENV,
    LOST,
    BackendError,
    LaunchSpec,
    Machine,
    RunnerBackend,
    armed_failpoints,
    failpoint,
)
from gha_mlops.runners.backends.docker_hosts import host_of
from gha_mlops.runners.config import Pool, RunnersConfig
from gha_mlops.runners.observe import Metrics, Snapshot, log
from gha_mlops.runners.policy import (
    BOOTING,
    BUSY,
    DONE,
    DRAINING,
    GONE,
    IDLE,
    LAUNCHING,
    LOST_TO_MACHINE,
    RESERVED,
    RUNNER_DIED,
    STARTING,
    Decision,
    RunnerView,
    World,
    decide,
    interrupted,
)
from gha_mlops.runners.state import State

INFO, WARNING, ERROR = logging.INFO, logging.WARNING, logging.ERROR
HISTORY = 7 * 86400.0  # seconds finished jobs, gone runners and transitions are kept
PRUNE_EVERY = 3600.0
FINISHED_CHECK = 1.0  # seconds between machine listings while a finished runner's machine lingers


__all__ = ["FAILPOINTS_ENV", "Scaler", "armed_failpoints", "failpoint"]  # the failpoints live in backends.base


@dataclass
class _Backoff:
    failures: int = 0
    until: float = 0.0
    reason: str = ""


class Scaler:
    def __init__(self, config: RunnersConfig, state: State, github: RunnersPort,
                 backends: Mapping[str, RunnerBackend], *, metrics: Metrics | None = None,
                 clock: Callable[[], float] = time.time, launch_workers: int = 8,
                 failpoints: Collection[str] = ()) -> None:
        self.config = config
        self.failpoints = frozenset(failpoints)  # see armed_failpoints
        self.state = state
        self.github = github
        self.backends = dict(backends)
        self.metrics = metrics or Metrics()
        self.metrics.watch(self.snapshot)
        self.clock = clock
        self.boot_id = secrets.token_hex(6)
        self.prefix = f"{config.id}-"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pass_lock = threading.Lock()
        # launch_workers=0 launches inline, in the pass (the simulator's deterministic mode).
        self._pool = ThreadPoolExecutor(max_workers=launch_workers,
                                        thread_name_prefix="launch") if launch_workers else None
        self._backoff: dict[str, _Backoff] = {}
        self._reported: set[int] = set()
        self._last_full = 0.0
        self._last_listing = 0.0
        self._last_prune = 0.0
        self._paused_until = 0.0  # GitHub's rate-limit reset while it is spent
        # backend -> the first and the last failed listing of its latest outage
        self._outages: dict[str, tuple[float, float]] = {}
        self._failing: set[str] = set()  # the backends whose last listing failed
        self._unlisted: frozenset[str] = frozenset()  # pools whose backend failed this pass
        # Which backend owns a machine id (from listings and launches): a machine is removed
        # through its own backend only, so one backend being down blocks no other's removals.
        self._owner: dict[str, str] = {}
        self._noticed: set[str] = set()  # machines whose notice was logged and counted
        self._noticed_runners: set[str] = set()  # runners (not gone) whose machine had one
        # The backends that report free GPUs (their pools are the ones World.free_gpus limits).
        self._gpu_backends: frozenset[str] = frozenset({"docker"})
        # The Docker hosts the last full pass found answering; None: all (not listed yet).
        self._hosts_up: frozenset[str] | None = None
        self.last_decision = Decision()

    # -- events -----------------------------------------------------------------------------

    def in_scope(self, repo: str) -> bool:
        if self.config.repo is not None:
            return repo.lower() == self.config.repo.lower()
        owner = repo.split("/", 1)[0].lower()
        if owner != (self.config.org or "").lower():
            return False
        return not self.config.repos or repo.lower() in {r.lower() for r in self.config.repos}

    def on_job_event(self, job: GhJob, *, source: str = "webhook") -> None:
        """Record what GitHub says of a job, and move our runner with it."""
        self.on_job_events([job], source=source)

    def on_job_events(self, jobs: Sequence[GhJob], *, source: str = "webhook",
                      deliveries: Sequence[str] = ()) -> None:
        """:meth:`on_job_event` for many, in one state transaction and one wake-up (the
        event worker applies what queued up while it was busy this way). Each job is
        applied on its own (``deliveries``: one id per job, remembered with it): one that
        fails is logged with its delivery id and skipped, the others go on."""
        ids: list[str | None] = list(deliveries) or [None] * len(jobs)
        mine: list[tuple[GhJob, str | None]] = []
        ignored: list[str] = []
        for job, delivery in zip(jobs, ids, strict=True):
            if self.in_scope(job.repo) and job.status != "waiting":
                mine.append((job, delivery))
            elif delivery is not None:
                ignored.append(delivery)  # nothing to write, but applied: a replay is dropped
        if not mine and not ignored:
            return
        results = self.state.apply_jobs([j for j, _ in mine], [d for _, d in mine],
                                        remember=ignored)
        for (job, delivery), result in zip(mine, results, strict=True):
            if result.error is not None:
                self.metrics.errors.labels("event").inc()
                log(ERROR, f"could not apply a job event ({result.error}); skipped, and "
                    "taken again if GitHub redelivers it", job_id=job.id, repo=job.repo,
                    delivery=delivery)
                continue
            old = result.old
            if old == job.status or (old is not None and job.status == "queued"):
                continue  # stale or repeated news
            if old is None and source != "webhook" and job.status == "queued":
                log(WARNING, "found a queued job no webhook told of", job_id=job.id,
                    repo=job.repo)
            self._follow_safely(job, delivery)
        if mine:
            self.kick()

    def _follow_safely(self, job: GhJob, delivery: str | None) -> None:
        try:
            self._follow(job)
        except Exception as err:  # one event's failure must not cost the others
            self.metrics.errors.labels("internal").inc()
            logging.getLogger("gha_mlops.runners").error(
                "internal error following job %s (delivery %s): %r; the next full pass "
                "catches up", job.id, delivery, err, exc_info=err)

    def _follow(self, job: GhJob) -> None:
        runner = job.runner_name if job.runner_name and \
            job.runner_name.startswith(self.prefix) else None
        if job.status == "in_progress":
            recorded = self.state.job(job.id)  # in play, so from the state's cache
            view = self.state.runner(runner) if runner else None
            if runner and self.state.set_runner(runner, BUSY, job_id=job.id,
                                                only_from=(*STARTING, BOOTING, IDLE, DRAINING)):
                pool = view.pool if view else ""
                queued_at = recorded.queued_at if recorded else self.clock()
                self.metrics.queue_to_running.labels(pool).observe(
                    max(0.0, self.clock() - queued_at))
            log(INFO, "job started", job_id=job.id, runner=job.runner_name, repo=job.repo)
        elif job.status == "completed":
            if runner:
                self.state.set_runner(runner, DONE, job_id=job.id, detail=job.conclusion or "",
                                      only_from=(*STARTING, BOOTING, IDLE, BUSY, DRAINING))
            log(INFO, f"job completed: {job.conclusion}", job_id=job.id,
                runner=job.runner_name, repo=job.repo)
        else:
            log(INFO, "job queued", job_id=job.id, repo=job.repo)

    def kick(self) -> None:
        self._wake.set()

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        """Run passes until :meth:`stop`: a full pass at start and every interval, a fast
        pass whenever an event wakes the loop."""
        while not self._stop.is_set():
            due = self._last_full + self.config.reconcile_interval - self.clock()
            full = due <= 0
            try:
                self.reconcile(full=full)
            except Exception as err:  # never let the loop die: log, count, go on
                self.metrics.errors.labels("internal").inc()
                logging.getLogger("gha_mlops.runners").error(
                    "internal error in a pass: %r", err, exc_info=err)
            if full:
                continue
            self._wake.wait(timeout=max(0.05, self._next_wake(due)))
            self._wake.clear()

    def _next_wake(self, due: float) -> float:
        """Seconds until the loop must look again without being woken: the next full pass,
        a pool's launch backoff running out, or a finished runner's machine to check."""
        now = self.clock()
        wake = [due] + [b.until - now for b in self._backoff.values() if b.until > now]
        if self._paused_until > now:
            wake.append(self._paused_until - now + 0.5)
        if any(r.state == DONE for r in self.state.runners()):
            wake.append(FINISHED_CHECK)
        return min(wake)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def close(self) -> None:
        self.stop()
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def reconcile(self, *, full: bool) -> Decision:
        with self._pass_lock:
            now = self.clock()
            runners = self.state.runners()  # read before listing (see policy.py)
            machines = gh_runners = None
            free_gpus: tuple[int, ...] | None = None
            if full:
                self._last_full = now
                if not self._rate_limited():
                    self._sync_jobs()
                    gh_runners = self._list_github_runners()
                machines, free_gpus = self._list_machines()
                self._last_listing = now
                if gh_runners is not None:
                    runners = self._sync_runners(runners, gh_runners)
            else:
                machines, free_gpus = self._fast_observe(runners, now)
            if machines is not None:
                self._note_notices(machines, runners)
            world = World(pools=self.config.pools, jobs=self.state.jobs(), runners=runners,
                          now=now, boot_id=self.boot_id, grace=self.config.grace_period,
                          machines=machines, gh_runners=gh_runners, free_gpus=free_gpus,
                          prefix=self.prefix, pool_outages=self._pool_outages(),
                          unlisted_pools=self._unlisted if machines is not None
                          else frozenset(),
                          gpu_pools=self._gpu_pools(),
                          noticed_before=frozenset(self._noticed_runners))
            d = decide(world)
            self._apply(d)
            self.last_decision = d
            if full:
                self.metrics.last_reconcile.set(self.clock())
                if now - self._last_prune >= PRUNE_EVERY:
                    self._last_prune = now
                    self.state.prune(older_than=HISTORY)
            return d

    # -- observing --------------------------------------------------------------------------

    def _pool_outages(self) -> dict[str, tuple[float, float]]:
        return {p.name: self._outages[p.backend] for p in self.config.pools
                if p.backend in self._outages}

    def _gpu_pools(self) -> frozenset[str]:
        return frozenset(p.name for p in self.config.pools if p.backend in self._gpu_backends)

    def _fast_observe(self, runners: list[RunnerView],
                      now: float) -> tuple[list[Machine] | None, tuple[int, ...] | None]:
        """What a fast pass knows of the machines: none, unless a runner finished its job
        (then one listing, at most every FINISHED_CHECK seconds, frees its slot as soon as
        its machine is gone instead of at the next full pass); the free GPUs from the state
        (each Docker host's inventory less what runners not gone of the pools it serves hold
        there, by the host in their machine id; one whose host is not known yet is counted
        on the host with the most free; a host the last full pass found down has none)."""
        if any(r.state == DONE for r in runners) and \
                now - self._last_listing >= FINISHED_CHECK:
            self._last_listing = now
            return self._list_machines()
        hosts = self.config.docker_hosts
        if not self.config.gpu_inventory:
            return None, None
        limited = self._gpu_pools()
        gpus = {p.name: p.gpus for p in self.config.pools if p.name in limited}
        up = self._hosts_up
        names = {h.name for h in hosts}
        free = {h.name: len(h.gpus) for h in hosts if up is None or h.name in up}
        if not free:
            return None, (0,)
        for r in runners:
            if r.state in STARTING or not gpus.get(r.pool):
                continue
            host = host_of(r.machine_id or "")  # "" on one host: its ids are container ids
            if host in free:
                free[host] -= gpus[r.pool]
            elif host not in names:  # not known (one host, or no machine yet): the freest
                free[max(free, key=lambda name: free[name])] -= gpus[r.pool]
        return None, tuple(free.values())

    def _github(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except GitHubError as err:
            self.metrics.errors.labels("github").inc()
            log(ERROR, f"GitHub: {what} failed: {err.message}", hint=err.hint)
            return None
        finally:
            budget = self.github.rate_budget()
            if budget is not None:
                self.metrics.rate_remaining.set(budget.remaining)
                self.metrics.rate_limit.set(budget.limit)

    def _sync_jobs(self) -> None:
        queued: list[GhJob] | None = self._github("listing queued jobs",
                                                 self.github.queued_jobs)
        if queued is None:
            return
        listed = {j.id for j in queued}
        self.on_job_events(queued, source="reconcile")
        # Jobs we think are queued or running but GitHub no longer lists as queued: ask.
        stale = [j for j in self.state.jobs()
                 if j.id not in listed and (j.status == "queued" or j.lost)]
        for view in stale[:100]:
            try:
                fresh = self.github.get_job(view.repo, view.id)
            except GitHubError as err:
                if err.status != 404:
                    self.metrics.errors.labels("github").inc()
                    log(ERROR, f"GitHub: reading job {view.id} failed: {err.message}",
                        job_id=view.id, hint=err.hint)
                    continue
                # Its run was deleted (or the repository): nobody will run it; stop asking
                # and stop counting it as demand.
                fresh = GhJob(view.id, view.repo, 0, 1, "", "completed", tuple(view.labels),
                              conclusion="deleted")
                log(WARNING, "a job GitHub no longer knows is dropped", job_id=view.id,
                    repo=view.repo)
            self.on_job_event(fresh, source="reconcile")

    def _read_job(self, repo: str, job_id: int) -> GhJob | None:
        fresh: GhJob | None = self._github(f"reading job {job_id}",
                                           lambda: self.github.get_job(repo, job_id))
        return fresh

    def _list_github_runners(self) -> list[GhRunner] | None:
        result: list[GhRunner] | None = self._github("listing runners",
                                                     self.github.list_runners)
        return result

    def _list_machines(self) -> tuple[list[Machine] | None, tuple[int, ...] | None]:
        """Every backend's machines and the free GPUs they report. A backend that cannot be
        listed (EC2 throttled, a daemon down) does not blind the others: its pools are
        ``self._unlisted`` for this pass (their runners are judged at a later pass), its
        GPUs count as none free; only when every backend fails is nothing known (None)."""
        machines: list[Machine] = []
        owner: dict[str, str] = {}
        free: list[int] | None = None
        gpu_backends: set[str] = set()
        failed: set[str] = set()
        for name, backend in self.backends.items():
            try:
                listed = backend.list()
                health = backend.health()
            except BackendError as err:
                # Machines of its pools that vanish across this went away under their
                # runners (see policy.World.pool_outages).
                now = self.clock()
                first = self._outages[name][0] if name in self._failing else now
                self._outages[name] = (first, now)
                self.metrics.errors.labels("backend").inc()
                log(ERROR, f"backend {name}: listing machines failed: {err.message}")
                failed.add(name)
                continue
            machines.extend(listed)
            owner.update((m.id, name) for m in listed)
            if "gpus" in health.capacity:
                free = (free or []) + list(health.gpus_by_host.values()
                                           or (int(health.capacity["gpus"]),))
                gpu_backends.add(name)
                # The hosts that answer (several), or all (one host, answering).
                self._hosts_up = frozenset(health.gpus_by_host) \
                    if health.gpus_by_host or not health.ok else None
        self._failing = failed
        self._unlisted = frozenset(p.name for p in self.config.pools if p.backend in failed)
        if failed and len(failed) == len(self.backends):
            return None, (0,)
        if failed & self._gpu_backends:  # unknown now: nothing of theirs is free
            gpu_backends |= failed & self._gpu_backends
            self._hosts_up = frozenset()
            free = free or [0]
        self._owner = {**{m: b for m, b in self._owner.items() if b in failed}, **owner}
        self._gpu_backends = frozenset(gpu_backends)
        return machines, (tuple(free) if free is not None else None)

    def _note_notices(self, machines: Sequence[Machine], runners: Sequence[RunnerView]) -> None:
        """Log and count each machine's notice once (and a machine lost to a spot
        interruption whose notice was never seen); forget the machines no longer listed."""
        views = {r.name: r for r in runners}
        self._noticed_runners &= set(views)
        self._noticed_runners.update(m.runner_name for m in machines if m.notice)
        for m in machines:
            if not interrupted(m) or m.id in self._noticed or m.state == EXITED:
                continue
            self._noticed.add(m.id)
            self.metrics.interruptions.labels(m.pool).inc()
            r = views.get(m.runner_name)
            if m.state == LOST:
                log(WARNING, "spot instance interrupted before its notice was seen",
                    runner=m.runner_name, pool=m.pool, machine=m.id, reason=m.detail)
            elif r is not None and r.state == BUSY:
                log(WARNING, "spot interruption notice: runner draining (its job goes on; a "
                    "runner boots for the re-run it will likely need)", runner=r.name,
                    pool=m.pool, machine=m.id, job_id=r.job_id, reason=m.notice)
            else:
                log(WARNING, "spot interruption notice: runner draining",
                    runner=m.runner_name, pool=m.pool, machine=m.id, reason=m.notice)
        self._noticed &= {m.id for m in machines}

    def _sync_runners(self, runners: list[RunnerView],
                      registered: list[GhRunner]) -> list[RunnerView]:
        """Move our runners to what GitHub shows (online -> idle, busy -> busy)."""
        by_name = {g.name: g for g in registered}
        out = []
        for r in runners:
            g = by_name.get(r.name)
            if g is not None and r.github_id is None:
                self.state.set_runner(r.name, r.state, github_id=g.id)
                r = replace(r, github_id=g.id)
            if g is not None and g.status == "online":
                want = BUSY if g.busy else IDLE
                moves = r.state in (BOOTING, LAUNCHING) or (r.state == IDLE and want == BUSY)
                if moves and self.state.set_runner(r.name, want, only_from=(r.state,)):
                    r = replace(r, state=want, state_since=self.clock())
            out.append(r)
        return out

    # -- acting -----------------------------------------------------------------------------

    def _rate_limited(self) -> bool:
        """Whether GitHub's rate limit is spent: then no call is made until it resets (each
        would fail, and hammering a spent limit invites GitHub's secondary limits)."""
        b = self.github.rate_budget()
        if b is None or b.remaining > 0 or b.reset <= self.clock():
            self._paused_until = 0.0
            return False
        if self._paused_until != b.reset:
            self._paused_until = b.reset
            log(WARNING, "GitHub's rate limit is spent until "
                f"{time.strftime('%H:%M:%S', time.gmtime(b.reset))} UTC: no GitHub call until "
                "then (jobs wait, nothing is lost)")
        return True

    def _apply(self, d: Decision) -> None:
        if self._rate_limited():  # only what needs no GitHub call
            d = Decision(adopt=d.adopt, start=d.start, remove_machines=d.remove_machines,
                         unservable=d.unservable, queued=d.queued)
        for name, machine_id in d.adopt:
            view = self.state.runner(name)
            if view is None:
                continue
            state = BOOTING if view.state in STARTING else view.state
            if self.state.set_runner(name, state, machine_id=machine_id, only_from=(view.state,),
                                     detail="adopted after a restart"):
                log(WARNING, "adopted a machine started before a restart", runner=name,
                    machine=machine_id)
        for name, machine_id in d.start:
            self._start(name, machine_id)
        for name, why in d.forget:
            self._forget(name, why)
        for name, job_id, cause in d.lost:
            self._lost(name, job_id, cause)
        for name, why in d.drain:
            self._drain(name, why)
        for name, machine_id, expired_job in d.expired:
            if expired_job is not None:
                log(WARNING, f"job {expired_job} is not re-run: its machine was past its "
                    "expiry (it outlived the pool's max lifetime)", runner=name,
                    machine=machine_id, job_id=expired_job)
        for machine_id, why in d.remove_machines:
            self._destroy(machine_id, why)
        for gh_id, name, why in d.deregister:
            self._deregister(gh_id, name, why)
        for job_id in d.rerun:
            self._rerun(job_id)
        self._report_unservable(d)
        for pool_name, n in d.launch.items():
            pool = self.config.pool(pool_name)
            if pool is not None:
                self._launch(pool, n, replacements=d.replacements.get(pool_name, 0))

    def _start(self, name: str, machine_id: str) -> None:
        """Start a machine created before a restart and never started (its runner is still
        wanted); one that will not start is removed with its runner, freeing the slot."""
        view = self.state.runner(name)
        if view is None:
            return
        pool = self.config.pool(view.pool)
        backend = self.backends.get(pool.backend) if pool is not None else None
        try:
            if backend is None:
                raise BackendError(f"no backend for pool {view.pool!r}", retryable=False)
            machine = backend.start(machine_id)
        except BackendError as err:
            self.metrics.errors.labels("backend").inc()
            why = f"its machine, created before a restart, did not start: {err.message}"
            log(ERROR, why, runner=name, machine=machine_id)
            if self._destroy(machine_id, why, pool.backend if pool is not None else None):
                self._forget(name, why)
            return
        if self.state.set_runner(name, BOOTING, machine_id=machine.id, only_from=(view.state,),
                                 detail="started after a restart (created, never started)"):
            self.metrics.actions.labels("start").inc()
            log(WARNING, "started a machine created but never started before a restart",
                runner=name, machine=machine.id)

    def _forget(self, name: str, why: str) -> None:
        view = self.state.runner(name)
        if view is not None and view.github_id is not None:
            self._deregister(view.github_id, name, why, quiet=True)
        if self.state.set_runner(name, GONE, detail=why):
            log(INFO, f"runner gone ({why})", runner=name)

    def _lost(self, name: str, job_id: int, cause: str = RUNNER_DIED) -> None:
        job = self.state.job(job_id)
        if job is None:
            return
        # The machine is gone while we think it runs a job (or just as its job ended): either
        # it died or its host took it away mid-job, or the job finished and its webhook never
        # came. GitHub knows which.
        fresh = self._read_job(job.repo, job_id)
        if fresh is None:
            return  # ask again on the next pass
        if fresh.status == "completed" and fresh.runner_name == name \
                and fresh.conclusion == "success":
            self.on_job_event(fresh, source="reconcile")
            self._forget(name, "its job finished and its machine exited")
            return
        self.state.mark_lost(job_id, name, cause)
        if cause in LOST_TO_MACHINE:
            self.state.set_runner(name, GONE, detail=f"{cause} under job {job_id}")
            self.metrics.errors.labels("machine_lost").inc()
            log(WARNING, f"job {job_id} lost: {cause}; it will be re-run once when GitHub has "
                "finished it", runner=name, job_id=job_id)
            return
        self.state.set_runner(name, GONE, detail=f"its machine died while running job {job_id}")
        self.metrics.errors.labels("runner_lost").inc()
        log(WARNING, "runner died mid-job; the job will be re-run once when GitHub has "
            "finished it", runner=name, job_id=job_id)

    def _drain(self, name: str, why: str) -> None:
        view = self.state.runner(name)
        if view is None or not self.state.set_runner(
                name, DRAINING, detail=why, only_from=(IDLE, BOOTING, DONE, DRAINING)):
            return
        if view.github_id is not None:
            try:
                self.github.delete_runner(view.github_id)
            except RunnerBusyError:
                self.state.set_runner(name, BUSY, detail="a job reached it while draining",
                                      only_from=(DRAINING,))
                log(INFO, "kept a runner GitHub says is busy", runner=name, reason=why)
                return
            except GitHubError as err:
                self.metrics.errors.labels("github").inc()
                log(ERROR, f"deregistering failed, will retry: {err.message}", runner=name)
                return
        pool = self.config.pool(view.pool)
        if view.machine_id is not None and not self._destroy(
                view.machine_id, why, pool.backend if pool is not None else None):
            return
        self.state.set_runner(name, GONE, detail=why)
        self.metrics.actions.labels("drain").inc()
        log(INFO, f"drained: {why}", runner=name, pool=view.pool)

    def _destroy(self, machine_id: str, why: str, backend: str | None = None) -> bool:
        """Remove a machine through its backend (``backend``, else the one that listed or
        launched it); one whose backend is not known is asked of every backend (each treats
        an id it does not know as already gone)."""
        name = backend if backend in self.backends else self._owner.get(machine_id)
        targets = [name] if name in self.backends else list(self.backends)
        for target in targets:
            try:
                self.backends[target].destroy(machine_id)
            except BackendError as err:
                self.metrics.errors.labels("backend").inc()
                log(ERROR, f"removing a machine failed, will retry: {err.message}",
                    machine=machine_id)
                return False
        self._owner.pop(machine_id, None)
        self.metrics.actions.labels("remove_machine").inc()
        log(INFO, f"removed machine: {why}", machine=machine_id)
        return True

    def _deregister(self, gh_id: int, name: str, why: str, *, quiet: bool = False) -> None:
        try:
            self.github.delete_runner(gh_id)
        except RunnerBusyError:
            return
        except GitHubError as err:
            self.metrics.errors.labels("github").inc()
            log(ERROR, f"deregistering failed, will retry: {err.message}", runner=name)
            return
        self.metrics.actions.labels("deregister").inc()
        if not quiet:
            log(INFO, f"deregistered: {why}", runner=name)

    def _rerun(self, job_id: int) -> None:
        job = self.state.job(job_id)
        if job is None:
            return
        try:
            self.github.rerun_job(job.repo, job_id)
        except GitHubError as err:
            self.metrics.errors.labels("github").inc()
            log(ERROR, f"re-running the job failed, will retry: {err.message}", job_id=job_id,
                repo=job.repo)
            return
        cause = self.state.lost_cause(job_id)
        self.state.mark_rerun(job_id, f"{cause} (runner {job.runner_name})")
        self.metrics.actions.labels("rerun").inc()
        if cause in LOST_TO_MACHINE:  # "re-ran job 7: its spot instance was interrupted"
            log(WARNING, f"re-ran job {job_id}: {cause}", job_id=job_id,
                runner=job.runner_name, repo=job.repo, cause=cause)
            return
        log(WARNING, "re-ran a job whose runner died mid-job", job_id=job_id,
            runner=job.runner_name, repo=job.repo, cause=cause)

    def _report_unservable(self, d: Decision) -> None:
        self._reported &= {job_id for job_id, _ in d.unservable}  # forget the ones gone
        for job_id, labels in d.unservable:
            if job_id not in self._reported:
                self._reported.add(job_id)
                log(WARNING, "no pool serves this job's runs-on labels "
                    f"[{', '.join(labels)}]; pools: " + "; ".join(
                        f"{p.name} [{', '.join(sorted(p.labels))}]" for p in self.config.pools),
                    job_id=job_id)

    def _launch(self, pool: Pool, n: int, *, replacements: int = 0) -> None:
        """Reserve and launch ``n`` runners of ``pool``, the first ``replacements`` of them
        replacing runners whose machine got notice under a job."""
        backoff = self._backoff.get(pool.name)
        if backoff is not None and self.clock() < backoff.until:
            return
        names = self.state.reserve(pool.name, n, pool.max, boot_id=self.boot_id,
                                   prefix=self.prefix)
        for i, name in enumerate(names):
            if self._pool is None:
                self._launch_one(pool, name, i < replacements)
            else:
                self._pool.submit(self._launch_one, pool, name, i < replacements)

    def _launch_one(self, pool: Pool, name: str, replacement: bool = False) -> None:
        started = self.clock()
        labels = tuple(sorted(pool.labels))
        try:
            jit = self.github.generate_jitconfig(
                name, labels, runner_group_id=self.config.runner_group_id)
        except GitHubError as err:
            self._launch_failed(pool, name, None, f"GitHub refused to register it: "
                                f"{err.message}", "github")
            return
        if not self.state.set_runner(name, LAUNCHING, github_id=jit.runner_id,
                                     only_from=(RESERVED,)):
            self._deregister(jit.runner_id, name, "its reservation was dropped", quiet=True)
            return
        spec = LaunchSpec(runner_name=name, pool=pool.name, image=pool.image,
                          jit_config=jit.encoded, labels=labels, cpus=pool.cpus,
                          memory_mb=pool.memory_mb, gpus=pool.gpus, env=pool.env,
                          max_lifetime=pool.max_lifetime,
                          replaces_interrupted=replacement)
        try:
            machine = self.backends[pool.backend].launch(spec)
        except BackendError as err:
            self._launch_failed(pool, name, jit.runner_id, err.message, "backend",
                                retryable=err.retryable)
            return
        self._owner[machine.id] = pool.backend
        failpoint("after-launch", self.failpoints)
        self.state.set_runner(name, BOOTING, machine_id=machine.id, only_from=(LAUNCHING,))
        self._backoff.pop(pool.name, None)
        self.metrics.launch_seconds.labels(pool.name).observe(self.clock() - started)
        self.metrics.actions.labels("launch").inc()
        log(INFO, "runner launched", runner=name, pool=pool.name, machine=machine.id)

    def _launch_failed(self, pool: Pool, name: str, gh_id: int | None, why: str, kind: str,
                       *, retryable: bool = True) -> None:
        self.metrics.errors.labels(kind).inc()
        if gh_id is not None:
            self._deregister(gh_id, name, "its launch failed", quiet=True)
        self.state.set_runner(name, GONE, detail=f"launch failed: {why}")
        b = self._backoff.setdefault(pool.name, _Backoff())
        b.failures += 1
        delay = min(300.0, 2.0 ** b.failures) if retryable else 300.0
        b.until, b.reason = self.clock() + delay, why
        log(ERROR, f"launch failed ({'will retry' if retryable else 'fix the pool'} in "
            f"{delay:.0f}s): {why}", runner=name, pool=pool.name)
        self.kick()

    def backoff(self, pool: str) -> tuple[float, str] | None:
        b = self._backoff.get(pool)
        return (b.until, b.reason) if b and b.until > self.clock() else None

    def snapshot(self) -> Snapshot:
        d = self.last_decision
        return (self.config.pools, d.queued, len(d.unservable), self.state.runners())

