"""In-memory fakes of the deploy ports, for fast tests of rollout logic (they ship in the
package, as the other fakes do): :class:`FakeHost` implements
:class:`~gha_mlops.deploy.ports.DeployHost` (routers keep the real rendered nginx.conf and
are read back through :func:`gha_mlops.deploy.router.parse_state`), and :class:`FakeChecks`
answers readiness, metrics and golden replays per image id, as a test sets them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from gha_mlops.deploy import router
from gha_mlops.deploy.errors import DeployError, DeployTargetError
from gha_mlops.deploy.gates import MetricsSample
from gha_mlops.deploy.golden import GoldenReport, GoldenSet
from gha_mlops.deploy.model import Backend, HostState, LockInfo, PredictionLog, Release, Slot


@dataclass
class FakeHost:
    """A Docker host in memory. ``images`` maps a reference to ``(id, labels)``;
    ``files`` maps an image id to the files its containers hold; set ``reachable`` False to
    make every call fail as an unreachable daemon does; ``logs`` keeps the prediction log each
    backend was started with."""

    url: str
    address: str = "127.0.0.1"
    images: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)
    reachable: bool = True
    backends: dict[tuple[str, Slot], Backend] = field(default_factory=dict)
    routers: dict[str, str] = field(default_factory=dict)
    locks: dict[str, LockInfo] = field(default_factory=dict)
    logs: dict[tuple[str, Slot], PredictionLog | None] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    fail_on: Callable[[str], bool] = lambda call: False

    def _call(self, what: str) -> None:
        self.calls.append(what)
        if not self.reachable or self.fail_on(what):
            raise DeployTargetError(f"Docker is not reachable at {self.url} ({what})")

    def read(self, env: str) -> HostState:
        self._call("read")
        conf = self.routers.get(env)
        record = router.parse_state(conf, where=self.url) if conf is not None else None
        backends = tuple(b for (e, _), b in sorted(self.backends.items()) if e == env)
        return HostState(self.url, record, conf is not None, backends, self.locks.get(env))

    def ensure_image(self, image: str) -> tuple[str, dict[str, str]]:
        self._call("ensure_image")
        if image in self.images:
            return self.images[image]
        for image_id, labels in self.images.values():
            if image_id == image:
                return image_id, labels
        raise DeployTargetError(f"{image} is not on {self.url} and cannot be pulled")

    def start_backend(self, env: str, slot: Slot, release: Release, *, port: int, bind: str,
                      workers: int, log: PredictionLog | None = None) -> Backend:
        self._call(f"start {slot} {release.version}")
        self.logs[(env, slot)] = log
        backend = Backend(slot, release, port, f"{env}-{slot}-{release.version}", "running")
        self.backends[(env, slot)] = backend
        return backend

    def read_file(self, env: str, slot: Slot, path: str, *, limit: int) -> bytes | None:
        self._call("read_file")
        backend = self.backends.get((env, slot))
        if backend is None:
            raise DeployTargetError(f"no backend in slot {slot} on {self.url}")
        return self.files.get(backend.release.image_id, {}).get(path)

    def backend_logs(self, env: str, slot: Slot, *, tail: int = 30) -> str:
        return ""

    def remove_backend(self, env: str, slot: Slot, *, grace: float) -> None:
        self._call(f"remove {slot}")
        self.backends.pop((env, slot), None)

    def apply_router(self, env: str, conf: str, generation: int, *, image: str,
                     port: int) -> None:
        self._call(f"router {generation}")
        router.parse_state(conf, where=self.url)
        self.routers[env] = conf

    def remove_router(self, env: str) -> None:
        self._call("remove router")
        self.routers.pop(env, None)

    def acquire_lock(self, env: str, lock: LockInfo, *, image: str) -> LockInfo | None:
        self._call("lock")
        held = self.locks.get(env)
        if held is not None:
            return held
        self.locks[env] = lock
        return None

    def release_lock(self, env: str, lock: LockInfo) -> None:
        self._call("unlock")
        if self.locks.get(env) == lock:
            del self.locks[env]

    def break_lock(self, env: str, stale: LockInfo) -> bool:
        self._call("break lock")
        if self.locks.get(env) == stale:
            del self.locks[env]
            return True
        return False

    def close(self) -> None:
        pass

    def __enter__(self) -> FakeHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class FakeChecks:
    """Backends answer per port: ``ready`` (True by default), ``golden_failures`` and each
    scrape adds ``requests_per_scrape`` requests of which ``error_rate`` failed."""

    hosts: list[FakeHost]
    env: str
    never_ready: set[str] = field(default_factory=set)  # image ids
    wrong_golden: set[str] = field(default_factory=set)
    error_rate: dict[str, float] = field(default_factory=dict)
    requests_per_scrape: float = 50.0
    _counts: dict[str, tuple[float, float]] = field(default_factory=dict)

    def _image_at(self, url: str) -> str:
        port = int(url.rsplit(":", 1)[1])
        for host in self.hosts:
            if url.startswith(f"http://{host.address}:"):
                for (env, _), backend in host.backends.items():
                    if env == self.env and backend.port == port:
                        return backend.release.image_id
        raise DeployError(f"{url}: connection refused")

    def wait_ready(self, url: str, *, timeout: float, alive: Callable[[], bool]) -> float:
        if self._image_at(url) in self.never_ready:
            raise DeployError(f"{url} was not ready after {timeout:g} s")
        return 0.5

    def scrape(self, url: str) -> MetricsSample:
        image = self._image_at(url)
        requests, errors = self._counts.get(url, (0.0, 0.0))
        requests += self.requests_per_scrape
        errors += self.requests_per_scrape * self.error_rate.get(image, 0.0)
        self._counts[url] = (requests, errors)
        buckets = ((0.01, requests), (float("inf"), requests))
        return MetricsSample(requests, errors, buckets)

    def golden(self, url: str, model: str, golden: GoldenSet) -> GoldenReport:
        wrong = self._image_at(url) in self.wrong_golden
        return GoldenReport(len(golden.cases), ("case 0: output differs",) if wrong else ())
