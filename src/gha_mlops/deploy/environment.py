"""One environment across its hosts: read its state, write a router record everywhere, and
bring every host back to one consistent record (recovery after a crash or a lost host).

Every write goes to every host with the same, raised ``generation``, so the host with the
highest generation holds the latest record. Recovery takes that record: a finished one is
made true on every host (a host that missed the last write catches up), an unfinished one
(a rollout mark or a canary) is settled back to its stable release, never left half-weighted.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from gha_mlops.config.model import DeployEnvironment
from gha_mlops.deploy import router
from gha_mlops.deploy.errors import DeployError
from gha_mlops.deploy.gates import MetricsSample
from gha_mlops.deploy.golden import GoldenReport, GoldenSet
from gha_mlops.deploy.model import (
    SLOTS,
    Backend,
    HostState,
    PredictionLog,
    Release,
    RouterState,
    Slot,
)
from gha_mlops.deploy.ports import DeployHost

Progress = Callable[[str], None]
# After a router stops sending a backend traffic, nginx's old workers finish the requests
# they hold; the backend is stopped only after this pause (and then drains its own).
SETTLE_S = 0.3


class Checks(Protocol):
    """How a rollout talks to a backend over HTTP (:class:`gha_mlops.deploy.probe`); tests
    may pass a fake."""

    def wait_ready(self, url: str, *, timeout: float, alive: Callable[[], bool]) -> float: ...

    def scrape(self, url: str) -> MetricsSample: ...

    def golden(self, url: str, model: str, golden: GoldenSet) -> GoldenReport: ...


class HttpChecks:
    """The real checks, over HTTP (:mod:`gha_mlops.deploy.probe`, :mod:`.golden`)."""

    def wait_ready(self, url: str, *, timeout: float, alive: Callable[[], bool]) -> float:
        from gha_mlops.deploy.probe import wait_ready

        return wait_ready(url, timeout=timeout, alive=alive)

    def scrape(self, url: str) -> MetricsSample:
        from gha_mlops.deploy.probe import scrape

        return scrape(url)

    def golden(self, url: str, model: str, golden: GoldenSet) -> GoldenReport:
        from gha_mlops.deploy.golden import check_golden

        return check_golden(url, model, golden)


def _silent(line: str) -> None:
    pass


@dataclass
class Environment:
    """An environment (its config), its hosts, the router image and the checks."""

    config: DeployEnvironment
    hosts: Sequence[DeployHost]
    router_image: str
    checks: Checks
    progress: Progress = _silent
    sleep: Callable[[float], None] = time.sleep
    # The prediction log of each model's backends, by model name (monitor.models.<name>.log).
    logs: Mapping[str, PredictionLog] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.name

    def port_of(self, slot: Slot) -> int:
        return self.config.backend_ports[SLOTS.index(slot)]

    def backend_url(self, host: DeployHost, slot: Slot) -> str:
        return f"http://{_bracketed(host.address)}:{self.port_of(slot)}"

    def router_url(self, host: DeployHost) -> str:
        return f"http://{_bracketed(host.address)}:{self.config.port}"

    @property
    def url(self) -> str:
        """The environment's URL: the configured one, else the first host's router."""
        return self.config.url or self.router_url(self.hosts[0])

    # -- reading and writing ------------------------------------------------------------------

    def states(self) -> list[HostState]:
        return [host.read(self.name) for host in self.hosts]

    def write(self, record: RouterState, hosts: Sequence[DeployHost] | None = None) -> RouterState:
        """``record`` (with the generation raised) as every host's router; the record."""
        record = replace(record, generation=record.generation + 1)
        backend_host = "127.0.0.1" if self.config.bind in ("0.0.0.0", "::") else self.config.bind
        conf = router.render(record, listen=self.config.listen, port=self.config.port,
                             backend_host=backend_host,
                             backend_ports=self.config.backend_ports)
        for host in hosts if hosts is not None else self.hosts:
            host.apply_router(self.name, conf, record.generation, image=self.router_image,
                              port=self.config.port)
        return record

    # -- backends ---------------------------------------------------------------------------

    def start(self, release: Release, slot: Slot,
              hosts: Sequence[DeployHost] | None = None) -> float:
        """Start ``release`` in ``slot`` on every host (or ``hosts``) and wait until each is
        ready; the seconds the slowest took. A DeployError names the host and the logs."""
        chosen = list(hosts if hosts is not None else self.hosts)
        for host in chosen:
            host.start_backend(self.name, slot, release, port=self.port_of(slot),
                               bind=self.config.bind, workers=self.config.workers,
                               log=self.logs.get(release.model))
        slowest = 0.0
        for host in chosen:
            try:
                took = self.checks.wait_ready(
                    self.backend_url(host, slot), timeout=self.config.ready_timeout_s,
                    alive=functools.partial(self._running, host, slot))
            except DeployError as err:
                logs = host.backend_logs(self.name, slot, tail=20).strip()
                raise DeployError(f"{release.label()} did not become ready on {host.url}: "
                                  f"{err.message}",
                                  hint="read the container's last lines below",
                                  notes=[logs] if logs else None) from err
            slowest = max(slowest, took)
        return slowest

    def _running(self, host: DeployHost, slot: Slot) -> bool:
        """Whether the slot's container still runs (one that crashes and restarts does not:
        the server could not start)."""
        backend = host.read(self.name).backend(slot)
        return backend is not None and backend.status in ("running", "created")

    def remove(self, slot: Slot, hosts: Sequence[DeployHost] | None = None) -> None:
        for host in hosts if hosts is not None else self.hosts:
            host.remove_backend(self.name, slot, grace=self.config.drain_s)

    # -- recovery ---------------------------------------------------------------------------

    def recover(self) -> tuple[RouterState | None, list[str]]:
        """Bring every host to one settled record (see the module's docstring); the record
        (None: nothing deployed anywhere) and notes saying what was found and done."""
        states = self.states()
        latest = latest_record(states)
        if latest is None:
            return None, []
        notes: list[str] = []
        target = latest
        if latest.canary is not None or latest.rollout is not None:
            notes.append(unfinished(latest))
            target = settle(latest)
        stale = [s for s in states if not _matches(s, target)]
        if not stale:
            return latest, notes
        pairs = [(next(h for h in self.hosts if h.url == s.host), s) for s in stale]
        for host, state in pairs:
            self._start_stable(host, state, target)
        record = self.write(target)
        self.sleep(SETTLE_S)
        for host, state in pairs:
            for backend in state.backends:
                if backend.slot != target.stable_slot:
                    host.remove_backend(self.name, backend.slot, grace=self.config.drain_s)
        if not notes:
            notes.append("a host had missed the last change of the environment; it now "
                         "serves what the others serve")
        return record, notes

    def _start_stable(self, host: DeployHost, state: HostState, target: RouterState) -> None:
        """Start ``target``'s stable release on ``host`` when it is missing or another there,
        before any router is rewritten, so a router never points at nothing."""
        keep = target.stable_slot
        if keep is not None and target.stable is not None \
                and not _serves(state.backend(keep), target.stable):
            self.progress(f"{host.url}: starting {target.stable.label()} again")
            self.start(target.stable, keep, hosts=[host])


def _bracketed(address: str) -> str:
    """An address as a URL holds it (an IPv6 one in brackets)."""
    return f"[{address}]" if ":" in address else address


def latest_record(states: Sequence[HostState]) -> RouterState | None:
    """The record with the highest generation among the hosts' routers (None: none)."""
    records = [s.router for s in states if s.router is not None]
    return max(records, key=lambda r: r.generation) if records else None


def settle(record: RouterState) -> RouterState:
    """``record`` back to its stable release alone: no canary, no weight, no rollout mark."""
    return replace(record, canary=None, canary_slot=None, weight=0, rollout=None)


def unfinished(record: RouterState) -> str:
    """A line saying what unfinished rollout ``record`` shows."""
    what = record.canary.label() if record.canary is not None else "a new version"
    back = record.stable.label() if record.stable is not None else "nothing (no earlier version)"
    who = (f", started by {record.rollout.owner} at "
           f"{time.strftime('%H:%M:%S UTC', time.gmtime(record.rollout.started))}"
           if record.rollout is not None else "")
    return (f"found an unfinished rollout of {what} at {record.weight}%{who}: traffic goes "
            f"back to {back}")


def _serves(backend: Backend | None, release: Release) -> bool:
    return (backend is not None and backend.status == "running"
            and backend.release.image_id == release.image_id)


def _matches(state: HostState, target: RouterState) -> bool:
    """Whether ``state`` already is ``target``: the same record (but its generation), a
    running router, the stable backend serving, no other backend."""
    if state.router is None or not state.router_running:
        return False
    if replace(state.router, generation=0) != replace(target, generation=0):
        return False
    slots = {b.slot for b in state.backends}
    if target.stable_slot is None or target.stable is None:
        return not slots
    return slots == {target.stable_slot} and _serves(state.backend(target.stable_slot),
                                                      target.stable)
