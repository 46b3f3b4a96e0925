"""One pool over several Docker hosts: :class:`DockerHosts` is the ``docker`` backend of a
``runners.yaml`` whose ``backends.docker`` lists ``hosts:``, one
:class:`~gha_mlops.runners.backends.docker.DockerBackend` per host behind the same
:class:`~gha_mlops.runners.backends.base.RunnerBackend` port.

Machine ids are ``{host name}/{container id}``; every call routes on the host name. An id
with no host prefix of ours (an EC2 instance id, a host no longer configured) is not ours:
destroy() ignores it, as the scaler asks every backend to destroy every machine.

Placement (``placement: spread | pack``) picks, among the hosts that answered at the last
listing and have the GPUs a runner wants free, the one with the most free GPUs (spread) or
the fewest that still fit (pack); a CPU-only runner goes to the host with the fewest of our
runners (spread) or the most (pack); ties go to the host listed first. The counts come from
the last listing plus the launches made since (no extra daemon call per launch), and a
launch reserves its GPUs on its host before it asks the host, so concurrent launches never
pick more GPUs than a host has. A host that refuses a launch with a retryable error is
looked at again and the next host is tried.

A host whose daemon cannot be listed (or does not answer within ``list_timeout``: a host
powered off must not hold up the others) is *down*: nothing is placed on it, nothing is
asked of it (start/destroy fail retryably at once), and its machines are
reported as the last good listing saw them for ``down_after`` seconds (a blip must not
re-run jobs that still run), then once as ``lost`` (the scaler re-runs their jobs, as for a
daemon restart) and forgotten. list() raises only when every host is down. A host that comes
back lists what it still runs: a runner the scaler has forgotten meanwhile is an orphan to
it and is removed after its grace period.
"""

from __future__ import annotations

import builtins
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from logging import INFO, WARNING

from gha_mlops.errors import ConfigError
from gha_mlops.runners.backends.base import (
    EXITED,
    LOST,
    BackendError,
    Health,
    LaunchSpec,
    Machine,
    RunnerBackend,
)
from gha_mlops.runners.config import DockerHost
from gha_mlops.runners.observe import log

PLACEMENTS = ("spread", "pack")
SEP = "/"  # between the host name and the container id in a machine id
FRESH_S = 2.0  # health() lists again the hosts not listed (or tried) for this long
NEVER = float("-inf")


@dataclass
class _Host:
    """What this process knows of one host. Guarded by :attr:`DockerHosts._lock`."""

    index: int
    config: DockerHost
    backend: RunnerBackend
    # Its machines (container ids as the host knows them) at the last good listing, plus
    # the ones launched or started since.
    machines: dict[str, Machine] = field(default_factory=dict)
    listed_at: float | None = None  # the clock at the last good listing; None: never listed
    observed_at: float = NEVER  # the clock at the last listing, good or not
    down_since: float | None = None  # the clock at the first failed listing in a row
    reason: str = ""  # why its last listing failed
    declared: bool = False  # its machines were reported lost (down past down_after)
    forgotten: set[str] = field(default_factory=set)  # ids reported lost while it was down
    pending: list[Machine] = field(default_factory=list)  # lost ones to report at list()
    reserved_gpus: int = 0  # GPUs of launches in flight on it
    launching: int = 0  # launches in flight on it
    generation: int = 0  # bumped by every launch or start, to keep them across a listing
    since: dict[str, int] = field(default_factory=dict)  # machine id -> its generation
    listing: threading.Event | None = None  # set when the listing in flight ends
    listing_since: float = 0.0  # time.monotonic() when it began

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def up(self) -> bool:
        return self.listed_at is not None and self.down_since is None

    def free_gpus(self) -> int:
        """Inventory GPUs no machine of ours holds and no launch in flight has reserved."""
        held = {g for m in self.machines.values() if m.state != LOST for g in m.gpus}
        return sum(g not in held for g in self.config.gpus) - self.reserved_gpus

    def runners(self) -> int:
        return self.launching + sum(m.state not in (EXITED, LOST)
                                    for m in self.machines.values())


class DockerHosts(RunnerBackend):
    """Runners as containers spread over (or packed onto) several Docker hosts.

    ``make`` builds each host's backend (default: a :class:`DockerBackend` of ``owner`` with
    the host's daemon, GPUs, network, driver and env, and ``environ`` for what the CLI read);
    ``clock`` times how long a host has been down; a host whose listing takes longer than
    ``list_timeout`` seconds counts as down meanwhile. Raises :class:`ConfigError` for no hosts,
    a host name with ``/`` or twice, or an unknown ``placement``.
    """

    name = "docker"

    def __init__(self, owner: str, hosts: Sequence[DockerHost], *, placement: str = "spread",
                 environ: Mapping[str, str] | None = None, down_after: float = 60.0,
                 list_timeout: float = 15.0, clock: Callable[[], float] = time.time,
                 make: Callable[[DockerHost], RunnerBackend] | None = None) -> None:
        names = [h.name for h in hosts]
        if not hosts or len(set(names)) != len(names) or any(SEP in n or not n for n in names):
            raise ConfigError(f"docker backend: the hosts {names} need distinct names "
                              f"without {SEP!r}", hint="name each host once, e.g. gpu-box-1")
        if placement not in PLACEMENTS:
            raise ConfigError(f"docker backend: placement {placement!r} is not one of "
                              f"{', '.join(PLACEMENTS)}", hint="use spread or pack")
        self.owner = owner
        self.placement = placement
        self.down_after = down_after
        self.list_timeout = list_timeout
        self.clock = clock
        build = make or (lambda h: _docker_backend(owner, h, environ or {}))
        self._hosts = [_Host(i, h, build(h)) for i, h in enumerate(hosts)]
        self._by_name = {h.name: h for h in self._hosts}
        self._lock = threading.Lock()

    # -- the port ---------------------------------------------------------------------------

    def launch(self, spec: LaunchSpec) -> Machine:
        """Place and launch ``spec`` (see the module's docstring). A retryable failure on a
        host moves on to the next; when none is left, a retryable :class:`BackendError`
        gives every host's reason. A non-retryable one (a missing image) is raised as is."""
        if spec.gpus > max(len(h.config.gpus) for h in self._hosts):
            raise self._no_host(spec, {})
        self._observe([h for h in self._hosts if h.observed_at == NEVER])
        tried: dict[str, str] = {}
        looked_again = False
        while True:
            with self._lock:
                host = self._choose(spec, tried)
                if host is not None:
                    host.reserved_gpus += spec.gpus
                    host.launching += 1
            if host is None:
                if looked_again:
                    raise self._no_host(spec, tried)
                # The counts may be stale (a runner finished since): look once, then decide.
                looked_again = True
                self._observe([h for h in self._hosts if h.up and h.name not in tried])
                continue
            try:
                machine = host.backend.launch(spec)
            except BackendError as err:
                self._settle(host, spec)
                if not err.retryable:
                    err.notes.append(f"on Docker host {host.name!r}")
                    raise
                tried[host.name] = f"launch failed: {err.message}"
                self._observe([host])  # what it really holds (or that it is down)
                continue
            return self._settle(host, spec, machine)

    def list(self) -> builtins.list[Machine]:
        """Every host's machines (see the module's docstring for a host that is down);
        raises a retryable :class:`BackendError` only when no host answers."""
        self._observe(self._hosts)
        out: builtins.list[Machine] = []
        with self._lock:
            if all(not h.up for h in self._hosts):
                # Before any report: what is due (lost machines) waits for a listing that
                # gets through, rather than going out with an error nobody reads.
                raise BackendError(
                    "listing the runners: no Docker host answers: " + self._reasons(),
                    hint="check that dockerd runs on the hosts and that this user may reach "
                         "them; this is retried", retryable=True)
            now = self.clock()
            for host in self._hosts:
                out.extend(_outer(host, m) for m in self._report(host, now))
        return out

    def start(self, machine_id: str) -> Machine:
        host, inner = self._route(machine_id)
        if host is None:
            raise BackendError(f"starting machine {machine_id}: no Docker host of this pool "
                               "has it", hint="it is gone; nothing to start", retryable=False)
        self._reachable(host, f"starting machine {machine_id}")
        machine = host.backend.start(inner)
        with self._lock:
            self._remember(host, machine)
        return _outer(host, machine)

    def destroy(self, machine_id: str) -> None:
        """Destroy it on its host. An id of no host of ours is not ours: nothing to do. On a
        host that does not answer, one reported lost is nothing to do either (when the host
        answers again, what still runs there is an orphan the policy removes); another is a
        retryable :class:`BackendError` at once (not after the daemon client's timeout)."""
        host, inner = self._route(machine_id)
        if host is None:
            return
        with self._lock:
            if host.down_since is not None and inner in host.forgotten:
                return
        self._reachable(host, f"destroying machine {machine_id}")
        host.backend.destroy(inner)
        with self._lock:
            host.machines.pop(inner, None)
            host.since.pop(inner, None)

    def _reachable(self, host: _Host, what: str) -> None:
        """Raise a retryable :class:`BackendError` when ``host`` is down: a call to a daemon
        that does not answer would hold the scaler's pass for the client's timeout."""
        with self._lock:
            if host.down_since is None:
                return
            why = _down(host)
        raise BackendError(f"{what}: Docker host {host.name} is {why}",
                           hint="it is retried when the host answers again", retryable=True)

    def health(self) -> Health:
        """``ok`` while at least one host answers; ``detail`` names the hosts that do not;
        ``capacity["gpus"]`` is the free GPUs of the hosts that answer, all together, and
        ``gpus_by_host`` each one's (the scaler launches a 2-GPU runner only where one host
        has 2 free, not on 1 + 1)."""
        now = self.clock()
        self._observe([h for h in self._hosts if now - h.observed_at > FRESH_S])
        with self._lock:
            up = [h for h in self._hosts if h.up]
            down = [h for h in self._hosts if not h.up]
            detail = f"{len(up)} of {len(self._hosts)} Docker hosts answer"
            if down:
                detail += "; down: " + self._reasons()
            gpus = any(h.config.gpus for h in self._hosts)
            free = {h.name: max(0, h.free_gpus()) for h in up} if gpus else {}
        return Health(ok=bool(up), detail=detail,
                      capacity={"gpus": sum(free.values())} if gpus else {}, gpus_by_host=free)

    def verify(self) -> builtins.list[tuple[bool, str]]:
        """``runners check --live``: a line per host, each asked now (its daemon answers and
        its free GPUs, or why not); a host down is a failed line."""
        lines = []
        for host in self._hosts:
            health = host.backend.health()
            where = f"host {host.name} ({host.config.host or 'the local daemon'})"
            free = health.capacity.get("gpus")
            lines.append((health.ok, f"{where}: " + (
                "answers" + (f"; {free} of {len(host.config.gpus)} GPU(s) free"
                             if free is not None else "") if health.ok else health.detail)))
        return lines

    def close(self) -> None:
        for host in self._hosts:
            host.backend.close()

    # -- placement --------------------------------------------------------------------------

    def _choose(self, spec: LaunchSpec, tried: Mapping[str, str]) -> _Host | None:
        """The host for ``spec`` by the placement, or None (the caller holds the lock)."""
        fits = [h for h in self._hosts if h.up and h.name not in tried
                and h.free_gpus() >= spec.gpus]
        if not fits:
            return None
        sign = 1 if self.placement == "pack" else -1
        if spec.gpus:  # spread: most free, then fewest runners; pack: fewest free, then most
            return min(fits, key=lambda h: (sign * h.free_gpus(), -sign * h.runners(),
                                            h.index))
        return min(fits, key=lambda h: (-sign * h.runners(), h.index))

    def _no_host(self, spec: LaunchSpec, tried: Mapping[str, str]) -> BackendError:
        biggest = max(len(h.config.gpus) for h in self._hosts)
        what = f"launching runner {spec.runner_name!r} of pool {spec.pool!r}"
        if spec.gpus > biggest:
            return BackendError(
                f"{what}: it wants {spec.gpus} GPU(s), and no Docker host has that many "
                f"(the most: {biggest})", retryable=False,
                hint="lower the pool's gpus, or list more GPUs on one host")
        with self._lock:
            reasons = []
            for h in self._hosts:
                why = tried.get(h.name) or (
                    _down(h) if not h.up else
                    f"{max(0, h.free_gpus())} of {len(h.config.gpus)} GPU(s) free")
                reasons.append(f"{h.name}: {why}")
        return BackendError(f"{what}: no Docker host can take it now ({'; '.join(reasons)})",
                            hint="it can start when a runner holding GPUs is done or a host "
                                 "is back; this is retried", retryable=True)

    def _settle(self, host: _Host, spec: LaunchSpec, machine: Machine | None = None) -> Machine:
        """Release a launch's reservation and note its machine (when it has one)."""
        with self._lock:
            host.reserved_gpus -= spec.gpus
            host.launching -= 1
            if machine is not None:
                self._remember(host, machine)
        return _outer(host, machine) if machine is not None else _NONE

    @staticmethod
    def _remember(host: _Host, machine: Machine) -> None:
        host.generation += 1
        host.machines[machine.id] = machine
        host.since[machine.id] = host.generation

    # -- listing ----------------------------------------------------------------------------

    def _observe(self, hosts: Sequence[_Host]) -> None:
        """List ``hosts`` in parallel and note what each answered, or that it is down. One
        that has not answered within ``list_timeout`` counts as down for now (its listing
        goes on in the background and is noted when it ends; no second one is started
        meanwhile): a host powered off or cut off must not hold up the others' pass for
        the daemon client's own timeout (a minute)."""
        waits: builtins.list[tuple[_Host, threading.Event, float]] = []
        with self._lock:
            for host in hosts:
                if host.listing is None:
                    host.listing, host.listing_since = threading.Event(), time.monotonic()
                    threading.Thread(target=self._observe_one, args=(host, host.listing),
                                     name=f"docker-host-{host.name}", daemon=True).start()
                waits.append((host, host.listing, host.listing_since))
        for host, done, since in waits:
            # A listing in flight since an earlier call is waited for only what is left of
            # its time: a hung host holds up one pass, not every pass.
            if not done.wait(max(0.0, since + self.list_timeout - time.monotonic())):
                with self._lock:
                    if host.listing is done:
                        self._down(host, f"no answer in {self.list_timeout:g}s")

    def _observe_one(self, host: _Host, done: threading.Event) -> None:
        try:
            self._note_listing(host)
        finally:
            with self._lock:
                host.listing = None
            done.set()

    def _note_listing(self, host: _Host) -> None:
        with self._lock:
            generation = host.generation
            host.observed_at = self.clock()
        try:
            listed = host.backend.list()
        except BackendError as err:
            with self._lock:
                self._down(host, err.message)
            return
        with self._lock:
            if host.down_since is not None:
                log(INFO, f"Docker host {host.name} answers again: {len(listed)} machine(s) "
                    "of ours on it")
            forgotten, host.forgotten = host.forgotten, set()
            host.pending.extend(m for m in listed if m.state == LOST and m.id not in forgotten)
            # Launches noted after this listing began may not be in it: keep them.
            kept = {i: m for i, m in host.machines.items() if host.since.get(i, 0) > generation}
            host.machines = {m.id: m for m in listed if m.state != LOST} | kept
            host.since = {i: host.since[i] for i in kept}
            host.listed_at, host.down_since, host.declared = self.clock(), None, False

    def _down(self, host: _Host, reason: str) -> None:
        """Note that ``host`` does not answer (the caller holds the lock)."""
        host.reason = reason
        if host.down_since is None:
            host.down_since = self.clock()
            log(WARNING, f"Docker host {host.name} does not answer: its runners are kept as "
                f"they were for {self.down_after:g}s, nothing is placed on it: {reason}")

    def _report(self, host: _Host, now: float) -> builtins.list[Machine]:
        """What list() says of ``host`` (the caller holds the lock)."""
        out, host.pending = host.pending, []
        if host.down_since is None or host.declared:
            return out + ([] if host.declared else builtins.list(host.machines.values()))
        if now - host.down_since < self.down_after:
            return out + builtins.list(host.machines.values())
        detail = (f"Docker host {host.name} has not answered for {self.down_after:g}s "
                  f"({host.reason}): presumed gone with its host")
        lost = [replace(m, state=LOST, detail=detail) for m in host.machines.values()
                if m.state != EXITED]
        log(WARNING, f"Docker host {host.name} down for {now - host.down_since:.0f}s: its "
            f"{len(lost)} runner(s) are lost (a job one ran is re-run once)")
        host.forgotten = set(host.machines)
        host.machines, host.since, host.declared = {}, {}, True
        return out + lost

    def _reasons(self) -> str:
        return "; ".join(f"{h.name}: {_down(h)}" for h in self._hosts if not h.up)

    def _route(self, machine_id: str) -> tuple[_Host | None, str]:
        name, sep, inner = machine_id.partition(SEP)
        host = self._by_name.get(name) if sep and inner else None
        return host, inner


_NONE = Machine("", "", "", LOST, 0.0)  # what _settle returns for a failed launch (unused)


def host_of(machine_id: str) -> str:
    """The host name in a machine id of :class:`DockerHosts` (``HOST/CONTAINER``), or ""."""
    head, sep, _ = machine_id.partition(SEP)
    return head if sep else ""


def _outer(host: _Host, machine: Machine) -> Machine:
    return replace(machine, id=f"{host.name}{SEP}{machine.id}")


def _down(host: _Host) -> str:
    if host.down_since is None:
        return "not listed yet"
    since = time.strftime("%H:%M:%S", time.gmtime(host.down_since))
    return f"down since {since} UTC ({host.reason})"


def _docker_backend(owner: str, h: DockerHost, environ: Mapping[str, str]) -> RunnerBackend:
    from gha_mlops.runners.backends.docker import DockerBackend

    return DockerBackend(owner, base_url=h.host, gpus=h.gpus, network=h.network,
                         extra_env=h.env, gpu_driver=h.gpu_driver, environ=environ)
