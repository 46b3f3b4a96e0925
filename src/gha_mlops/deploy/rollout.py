"""The use cases: deploy a release step by step, roll back one version, say what serves.

    deploy:   lock -> recover -> start the new version in the free slot -> ready -> golden
              requests -> per step: shift traffic, bake, judge the gates on the new
              version's own metrics -> it becomes stable, the old backend drains away
    any failure: traffic back to the stable version (still running: no rebuild, no pull),
              the new backend removed, a DeployError naming the check and the numbers
    rollback: lock -> recover -> the previous release (its image digest, from the router's
              record) started again -> ready -> golden -> all traffic to it

The registry's stage moves only after a successful rollout (or rollback); that is the
caller's (:mod:`gha_mlops.cli.deploy`), since it owns the registry.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from gha_mlops.deploy.environment import SETTLE_S, Environment, latest_record
from gha_mlops.deploy.errors import DeployBusyError, DeployError, DeployTargetError
from gha_mlops.deploy.gates import GateResult, MetricsSample, Window, host_window, judge
from gha_mlops.deploy.golden import IMAGE_PATH, MAX_BYTES, GoldenReport, load_golden
from gha_mlops.deploy.lock import EnvLock, me
from gha_mlops.deploy.model import HISTORY_LIMIT, Release, Rollout, RouterState, Slot, other

POLL_S = 1.0  # how often a bake reads the new version's metrics


def _nothing(release: Release) -> None:
    pass


@dataclass(frozen=True)
class Step:
    """One step of a rollout: the percent of traffic the new version got, the bake, the
    metrics window and the gates' verdicts."""

    weight: int
    bake_s: float
    window: Window | None
    gates: tuple[GateResult, ...]

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)


@dataclass(frozen=True)
class Outcome:
    """What a deploy or rollback did: the release now serving, the one it replaced, the
    steps, golden requests, notes (recovery, lock), timings (``elapsed_s`` from start to the
    end, ``baked_s`` spent baking, ``switch_s`` from start until all traffic reached the new
    version), and whether anything changed (False: the release already served)."""

    env: str
    release: Release
    previous: Release | None
    url: str
    steps: tuple[Step, ...] = ()
    golden: GoldenReport | None = None
    notes: tuple[str, ...] = ()
    elapsed_s: float = 0.0
    baked_s: float = 0.0
    switch_s: float = 0.0
    changed: bool = True


@dataclass(frozen=True)
class Status:
    """What serves in an environment, host by host (``gha-mlops deploy status``)."""

    env: str
    url: str
    record: RouterState | None
    hosts: tuple[tuple[str, str], ...]  # (host URL, a line about it)


class RolloutFailed(DeployError):
    """A check failed and traffic went back; ``steps`` holds the steps run so far."""

    def __init__(self, message: str, *, steps: tuple[Step, ...] = (), **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.steps = steps


@dataclass
class Rollouts:
    """The use cases on one environment."""

    env: Environment
    wait_s: float = 0.0
    clock: Callable[[], float] = time.monotonic
    notes: list[str] = field(default_factory=list)

    def _lock(self, what: str) -> EnvLock:
        cfg = self.env.config
        lease = (cfg.ready_timeout_s + len(cfg.steps) * (cfg.bake_s + 10) + cfg.drain_s
                 + 600 + self.wait_s)
        return EnvLock(self.env.hosts[0], self.env.name, me(what, lease_s=lease),
                       image=self.env.router_image, wait_s=self.wait_s)

    @contextlib.contextmanager
    def _held(self, what: str) -> Iterator[RouterState | None]:
        """Hold the environment (its lock) with every host settled to one record; yields
        that record (None: nothing deployed)."""
        for host in self.env.hosts:
            host.ensure_image(self.env.router_image)
        with self._lock(what) as lock:
            record, notes = self.env.recover()
            self.notes[:] = lock.notes + notes
            yield record

    # -- deploy -----------------------------------------------------------------------------

    def deploy(self, model: str, version: str, image: str, expect_labels: dict[str, str],
               *, then: Callable[[Release], None] = _nothing) -> Outcome:
        """Roll ``image`` (model ``model`` at ``version``) out (see the module's docstring);
        ``then(release)`` runs once it serves (also when it already did), still holding the
        environment: where the caller moves the registry's stage."""
        start = self.clock()
        with self._held(f"{model} {version}") as record:
            release = self._release(model, version, image, expect_labels)
            stable = record.stable if record is not None else None
            if stable is not None and stable.image_id == release.image_id:
                then(stable)
                return Outcome(self.env.name, stable, None, self.env.url,
                               notes=(*self.notes, f"{stable.label()} already serves "
                                      f"{self.env.name}: nothing to do"), changed=False)
            base = record or RouterState(env=self.env.name)
            outcome = self._roll(base, release, start)
            then(outcome.release)
            return outcome

    def _release(self, model: str, version: str, image: str,
                 expect: dict[str, str]) -> Release:
        """The release, its image present on every host with one id and the labels the
        registry's version says it must carry."""
        ids = set()
        for host in self.env.hosts:
            image_id, labels = host.ensure_image(image)
            wrong = {k: labels.get(k) for k, v in expect.items() if labels.get(k) != v}
            if wrong:
                raise DeployError(
                    f"the image {image} on {host.url} is not {model} {version}: its labels say "
                    + ", ".join(f"{k}={v!r}" for k, v in sorted(wrong.items())),
                    hint="deploy the image `gha-mlops package` built for this version")
            ids.add(image_id)
        if len(ids) != 1:
            raise DeployError(f"the image {image} has different ids on the hosts: "
                              + ", ".join(sorted(ids)),
                              hint="deploy by digest (package --push records it)")
        image_id = ids.pop()
        # A tag can be moved to other bytes later; the record (what a rollback starts again)
        # keeps a digest reference, or else the image's id.
        pinned = image if "@sha256:" in image else image_id
        return Release(model=model, version=version, image=pinned, image_id=image_id)

    def _roll(self, base: RouterState, release: Release, start: float) -> Outcome:
        slot: Slot = other(base.stable_slot) if base.stable_slot else "a"
        mark = Rollout(owner=me("", lease_s=0).owner, started=time.time())
        record = self.env.write(replace(base, canary_slot=slot, canary=release, weight=0,
                                        rollout=mark))
        steps: list[Step] = []
        baked = 0.0
        switch = 0.0
        try:
            self.env.progress(f"starting {release.label()} in slot {slot}")
            took = self.env.start(release, slot)
            self.env.progress(f"ready in {took:.2f} s; replaying golden requests")
            golden = self._golden(release, slot)
            weights = self.env.config.steps if base.stable is not None else (100,)
            for index, weight in enumerate(weights):
                record = self.env.write(replace(record, weight=weight,
                                                rollout=replace(mark, step=index)))
                if weight == 100:
                    switch = self.clock() - start
                self.env.progress(f"{weight}% of traffic to {release.label()}; baking "
                                  f"{self.env.config.bake_s:g} s")
                step = self._bake(slot, weight)
                steps.append(step)
                baked += step.bake_s
                if not step.passed:
                    failed = "; ".join(g.detail for g in step.gates if not g.passed)
                    raise RolloutFailed(f"{release.label()} failed a gate at {weight}%: "
                                        f"{failed}", steps=tuple(steps))
        except BaseException as err:
            self._abort(record, slot, err)
            raise
        history = ((base.stable,) if base.stable else ()) + base.history
        final = RouterState(env=self.env.name, stable_slot=slot, stable=release,
                            history=history[:HISTORY_LIMIT], generation=record.generation)
        self.env.write(final)
        if base.stable_slot is not None:
            self.env.sleep(SETTLE_S)
            self.env.remove(base.stable_slot)
        return Outcome(self.env.name, release, base.stable, self.env.url, steps=tuple(steps),
                       golden=golden, notes=tuple(self.notes),
                       elapsed_s=self.clock() - start, baked_s=baked, switch_s=switch)

    def _abort(self, record: RouterState, slot: Slot, err: BaseException) -> None:
        """After a failure: traffic back to the stable release, the new backend removed, on
        every host that can still be reached. A host that cannot keeps its record; the next
        deploy, rollback or status finds it and settles it."""
        back = replace(record, canary=None, canary_slot=None, weight=0, rollout=None)
        target = back.stable.label() if back.stable else "no version (the router answers 503)"
        self.env.progress(f"rolling back: all traffic to {target}")
        reachable = []
        for host in self.env.hosts:
            try:
                self.env.write(back, hosts=[host])
                reachable.append(host)
            except DeployTargetError:
                continue
        self.env.sleep(SETTLE_S)
        for host in list(reachable):
            try:
                host.remove_backend(self.env.name, slot, grace=self.env.config.drain_s)
            except DeployTargetError:
                reachable.remove(host)
        if isinstance(err, DeployError):
            err.notes.append(f"traffic went back to {target}")
        if len(reachable) < len(self.env.hosts):
            lost = ", ".join(h.url for h in self.env.hosts if h not in reachable)
            note = (f"{lost} could not be reached: it keeps its last routing until the next "
                    f"`gha-mlops deploy`, `deploy rollback` or `deploy status --env "
                    f"{self.env.name}` settles it")
            if isinstance(err, DeployTargetError | DeployError):
                err.notes.append(note)

    def _golden(self, release: Release, slot: Slot) -> GoldenReport | None:
        if not self.env.config.golden:
            return None
        report = None
        for host in self.env.hosts:
            data = host.read_file(self.env.name, slot, IMAGE_PATH, limit=MAX_BYTES)
            if data is None:
                self.notes.append(f"the image of {release.label()} holds no golden requests "
                                  f"({IMAGE_PATH}): package it with registry check_data")
                return None
            golden = load_golden(data, where=f"{release.image}:{IMAGE_PATH}")
            report = self.env.checks.golden(self.env.backend_url(host, slot), release.model,
                                            golden)
            if report.failures:
                raise RolloutFailed(
                    f"{release.label()} answered {report.failed} of {report.cases} "
                    f"golden requests wrongly on {host.url}",
                    hint="the served model is not the one evaluated: check the export and "
                         "the image", notes=list(report.failures))
        return report

    def _bake(self, slot: Slot, weight: int) -> Step:
        """Bake ``bake_s`` seconds, reading the new backends' metrics every second; stops
        early when a gate fails with enough evidence."""
        bake = self.env.config.bake_s
        gates = self.env.config.gates
        before = self._scrape(slot)
        begin = self.clock()
        while True:
            elapsed = self.clock() - begin
            final = elapsed >= bake
            if not final:
                self.env.sleep(min(POLL_S, bake - elapsed))
            current = host_window(before, self._scrape(slot))
            results = judge(current, gates, final=final)
            if final or not all(r.passed for r in results):
                return Step(weight, self.clock() - begin, current, tuple(results))

    def _scrape(self, slot: Slot) -> list[MetricsSample]:
        samples = []
        for host in self.env.hosts:
            url = self.env.backend_url(host, slot)
            try:
                samples.append(self.env.checks.scrape(url))
            except DeployError as err:
                raise RolloutFailed(f"the new version stopped answering on {host.url}: "
                                    f"{err.message}") from err
        return samples

    # -- rollback ---------------------------------------------------------------------------

    def rollback(self, *, then: Callable[[Release], None] = _nothing) -> Outcome:
        """All traffic back to the release before the stable one (its recorded image);
        ``then(release)`` as for :meth:`deploy`."""
        start = self.clock()
        with self._held("rollback") as record:
            if record is None or record.stable is None or record.stable_slot is None:
                raise DeployError(f"nothing is deployed in {self.env.name}: nothing to roll "
                                  "back", hint="deploy a version first")
            if not record.history:
                raise DeployError(f"{record.stable.label()} is the only version deployed in "
                                  f"{self.env.name}: there is no earlier one to go back to",
                                  hint="deploy another version instead")
            previous, current = record.history[0], record.stable
            slot = other(record.stable_slot)
            self.env.progress(f"starting {previous.label()} ({previous.image}) in slot {slot}")
            try:
                self.env.start(previous, slot)
                golden = self._golden(previous, slot)
            except BaseException:
                self.env.remove(slot)
                raise
            final = RouterState(env=self.env.name, stable_slot=slot, stable=previous,
                                history=record.history[1:], generation=record.generation)
            self.env.write(final)
            switch = self.clock() - start
            self.env.sleep(SETTLE_S)
            self.env.remove(record.stable_slot)
            then(previous)
            return Outcome(self.env.name, previous, current, self.env.url, golden=golden,
                           notes=tuple(self.notes), elapsed_s=self.clock() - start,
                           switch_s=switch)

    # -- status -----------------------------------------------------------------------------

    def status(self, *, settle: bool = True) -> Status:
        """What serves where; with ``settle``, an unfinished rollout nobody holds is settled
        first (under the lock, so a running deploy is left alone)."""
        if settle:
            try:
                with self._held("status"):
                    pass
            except DeployBusyError as busy:
                self.notes.append(f"{busy.message}: shown as it is now")
        states = self.env.states()
        lines = []
        for state in states:
            served = ", ".join(f"{b.slot}={b.release.label()} ({b.status}, port {b.port})"
                               for b in state.backends) or "no backend"
            router = "router running" if state.router_running else "router not running"
            lines.append((state.host, f"{router}; {served}"))
        return Status(self.env.name, self.env.url, latest_record(states), tuple(lines))
