"""DockerHosts over fakes of the port, one per host: placement (spread, pack, tie-breaks, CPU
only), concurrent launches, a host that fails a launch, a host that goes down (kept, then
lost once after down_after, then back), and machine ids routed by host."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gha_mlops.errors import ConfigError
from gha_mlops.runners.backends.base import (
    EXITED,
    LOST,
    RUNNING,
    BackendError,
    Health,
    LaunchSpec,
    Machine,
)
from gha_mlops.runners.backends.docker_hosts import DockerHosts
from gha_mlops.runners.config import DockerHost, load_config
from gha_mlops.runners.policy import BUSY, GONE
from gha_mlops.runners.scaler import Scaler
from gha_mlops.runners.state import State
from gha_mlops.testing.fake_runners import FakeRunnersGitHub


class FakeHost:
    """One Docker host as the port shows it: GPU ids allocated under its own lock (as
    DockerBackend does), a daemon that can be ``up`` or not, and counters for the tests."""

    name = "docker"

    def __init__(self, gpus: tuple[str, ...] = (), delay: float = 0.0,
                 clock: Callable[[], float] = lambda: 1.0) -> None:
        self.gpus = gpus
        self.clock = clock
        self.delay = delay  # between the call and the allocation: a slow daemon
        self.up = True
        self.machines: dict[str, Machine] = {}
        self.lost: list[Machine] = []  # reported once by the next list()
        self.fail: BackendError | None = None
        self.refused = 0  # launches refused for want of a free GPU
        self.lists = 0
        self.hang: threading.Event | None = None  # list() waits for it: a host cut off
        self.destroyed: list[str] = []
        self.asked: list[str] = []  # start and destroy calls, done or not
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def _reach(self, what: str) -> None:
        if not self.up:
            raise BackendError(f"{what}: cannot reach the Docker daemon", retryable=True)

    def launch(self, spec: LaunchSpec) -> Machine:
        self._reach("launching")
        if self.fail is not None:
            raise self.fail
        time.sleep(self.delay)
        with self._lock:
            used = {g for m in self.machines.values() for g in m.gpus}
            free = [g for g in self.gpus if g not in used]
            if len(free) < spec.gpus:
                self.refused += 1
                raise BackendError(f"{len(free)} GPU(s) free", retryable=True)
            m = Machine(f"c{next(self._ids)}", spec.runner_name, spec.pool, RUNNING, self.clock(),
                        gpus=tuple(free[:spec.gpus]))
            self.machines[m.id] = m
            return m

    def list(self) -> list[Machine]:
        self.lists += 1
        if self.hang is not None:
            self.hang.wait(10)
        self._reach("listing")
        lost, self.lost = self.lost, []
        return list(self.machines.values()) + lost

    def start(self, machine_id: str) -> Machine:
        self.asked.append(f"start {machine_id}")
        self._reach("starting")
        return self.machines[machine_id]

    def destroy(self, machine_id: str) -> None:
        self.asked.append(f"destroy {machine_id}")
        self._reach("destroying")
        self.destroyed.append(machine_id)
        self.machines.pop(machine_id, None)

    def health(self) -> Health:
        raise AssertionError("DockerHosts answers health() from its own listings")

    def close(self) -> None:
        pass

    def __enter__(self) -> FakeHost:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def rig(*inventories: tuple[str, ...], placement: str = "spread", delay: float = 0.0,
        down_after: float = 60.0,
        list_timeout: float = 5.0) -> tuple[DockerHosts, dict[str, FakeHost], Clock]:
    names = "abcdefgh"[:len(inventories)]
    fakes = {n: FakeHost(gpus, delay) for n, gpus in zip(names, inventories, strict=True)}
    clock = Clock()
    hosts = [DockerHost(n, f"unix:///tmp/{n}.sock", fakes[n].gpus, "host", "nvidia", {})
             for n in names]
    backend = DockerHosts("box", hosts, placement=placement, down_after=down_after,
                          list_timeout=list_timeout, clock=clock, make=lambda h: fakes[h.name])
    return backend, fakes, clock


_names = itertools.count(1)


def spec(gpus: int = 1) -> LaunchSpec:
    return LaunchSpec(f"box-gpu-{next(_names)}", "gpu", "runner:1", "jit", gpus=gpus)


def hosts_of(machines: list[Machine]) -> str:
    return "".join(m.id.split("/")[0] for m in machines)


# -- placement ------------------------------------------------------------------------------

@pytest.mark.parametrize(("placement", "gpus", "order"), [
    # a has 2 GPUs, b has 4. spread: most free first; a tie (2 and 2, 1 and 1) goes to the
    # host with fewer of our runners.
    ("spread", 1, "bbabab"),
    # pack: the fewest free that still fit, so a fills up before b is touched.
    ("pack", 1, "aabbbb"),
    ("spread", 2, "bab"),
    ("pack", 2, "abb"),
    # CPU only: spread evens out the runners (a tie goes to the host listed first) ...
    ("spread", 0, "ababab"),
    # ... and pack puts them all on one.
    ("pack", 0, "aaaaaa"),
])
def test_placement(placement: str, gpus: int, order: str) -> None:
    backend, _, _ = rig(("0", "1"), ("0", "1", "2", "3"), placement=placement)
    assert hosts_of([backend.launch(spec(gpus)) for _ in order]) == order


def test_spread_breaks_a_tie_in_free_gpus_by_fewer_runners_before_config_order() -> None:
    backend, _, _ = rig(("0", "1", "2", "3"), ("0", "1"))
    # The third launch finds 2 free on each: b, listed second, has none of our runners yet.
    assert hosts_of([backend.launch(spec()) for _ in range(6)]) == "aababa"


def test_a_tie_in_everything_goes_to_the_host_listed_first() -> None:
    for placement in ("spread", "pack"):
        backend, _, _ = rig(("0",), ("0",), ("0",), placement=placement)
        assert hosts_of([backend.launch(spec())]) == "a"


def test_gpus_held_at_the_last_listing_count_and_launches_need_no_extra_listing() -> None:
    backend, fakes, _ = rig(("0", "1"), ("0", "1"))
    fakes["a"].machines["old"] = Machine("old", "box-gpu-0", "gpu", RUNNING, 1.0, gpus=("0",))
    assert [m.id for m in backend.list()] == ["a/old"]
    lists = fakes["a"].lists + fakes["b"].lists
    assert hosts_of([backend.launch(spec()) for _ in range(3)]) == "bab"
    assert fakes["a"].lists + fakes["b"].lists == lists, "placement used the last listing"
    assert backend.health().capacity == {"gpus": 0}


def test_health_gives_each_answering_hosts_free_gpus_and_their_sum() -> None:
    backend, _, _ = rig(("0", "1"), ("0", "1"), ("0",))
    backend.launch(spec(2))
    backend.launch(spec())
    health = backend.health()
    assert health.gpus_by_host == {"a": 0, "b": 1, "c": 1} and health.capacity == {"gpus": 2}


def test_counts_gone_stale_are_looked_at_again_before_giving_up() -> None:
    backend, fakes, _ = rig(("0",), ("0",))
    first, second = backend.launch(spec()), backend.launch(spec())
    fakes["b"].machines.clear()  # its runner finished and --rm removed it, unseen yet
    third = backend.launch(spec())
    assert hosts_of([first, second, third]) == "abb"


def test_no_host_with_free_gpus_is_retryable_and_names_every_host() -> None:
    backend, fakes, _ = rig(("0",), ("0",))
    backend.launch(spec())
    backend.launch(spec())
    fakes["b"].up = False
    backend.list()
    with pytest.raises(BackendError) as err:
        backend.launch(spec())
    assert err.value.retryable
    assert "a: 0 of 1 GPU(s) free" in err.value.message
    assert "b: down since" in err.value.message and "cannot reach" in err.value.message


def test_a_runner_wanting_more_gpus_than_any_host_has_is_not_retryable() -> None:
    backend, fakes, _ = rig(("0", "1"), ("0", "1", "2"))
    with pytest.raises(BackendError, match=r"wants 4 GPU\(s\), and no Docker host has that "
                                           r"many \(the most: 3\)") as err:
        backend.launch(spec(4))
    assert not err.value.retryable
    assert fakes["a"].lists == fakes["b"].lists == 0


def test_a_host_that_fails_a_launch_retryably_is_passed_over() -> None:
    backend, fakes, _ = rig(("0", "1"), ("0",))
    fakes["a"].fail = BackendError("the daemon is restarting", retryable=True)
    assert hosts_of([backend.launch(spec())]) == "b"
    with pytest.raises(BackendError) as err:
        backend.launch(spec())
    assert err.value.retryable
    assert "a: launch failed: the daemon is restarting" in err.value.message
    assert "b: 0 of 1 GPU(s) free" in err.value.message


def test_a_launch_failing_for_good_is_raised_naming_the_host() -> None:
    backend, fakes, _ = rig(("0", "1"), ("0",))
    fakes["a"].fail = BackendError("the image 'runner:1' is not there", retryable=False)
    with pytest.raises(BackendError, match="is not there") as err:
        backend.launch(spec())
    assert not err.value.retryable and err.value.notes == ["on Docker host 'a'"]
    assert fakes["b"].machines == {}


def test_concurrent_launches_never_oversubscribe_a_host() -> None:
    # Slow daemons: the choice is made long before a host allocates. Unless each choice
    # reserves its GPUs, eight threads all pick the host with the most free and are refused.
    backend, fakes, _ = rig(("0", "1"), ("0", "1", "2"), delay=0.05)
    backend.list()

    def launch(_: int) -> Machine | BackendError:
        try:
            return backend.launch(spec())
        except BackendError as err:
            return err

    with ThreadPoolExecutor(max_workers=8) as ex:
        results = list(ex.map(launch, range(8)))
    launched = [r for r in results if isinstance(r, Machine)]
    assert sorted(hosts_of(launched)) == list("aabbb")
    assert all(isinstance(r, BackendError) and r.retryable for r in results
               if not isinstance(r, Machine))
    assert fakes["a"].refused == fakes["b"].refused == 0, "no host was asked for too much"
    for fake in fakes.values():
        held = [g for m in fake.machines.values() for g in m.gpus]
        assert len(held) == len(set(held))


# -- a host down ----------------------------------------------------------------------------

def test_a_host_down_is_kept_as_it_was_then_lost_once_and_its_launches_go_elsewhere() -> None:
    backend, fakes, clock = rig(("0", "1"), ("0", "1"), down_after=60)
    on_a = backend.launch(spec())
    backend.launch(spec())  # b
    fakes["a"].up = False
    before = backend.list()
    assert [m.state for m in before] == [RUNNING, RUNNING]
    assert hosts_of(before) == "ab", "a blip shows the host's runners as they were"
    health = backend.health()
    assert health.ok and "down: a: down since" in health.detail
    assert health.capacity == {"gpus": 1}, "only the hosts that answer count"
    assert hosts_of([backend.launch(spec())]) == "b"
    with pytest.raises(BackendError, match="a: down since"):
        backend.launch(spec())

    clock.t += 59
    assert [m.state for m in backend.list() if m.id == on_a.id] == [RUNNING]
    clock.t += 1
    lost = [m for m in backend.list() if m.id.startswith("a/")]
    assert [(m.id, m.state) for m in lost] == [(on_a.id, LOST)]
    assert "has not answered for 60s" in lost[0].detail
    assert [m for m in backend.list() if m.id.startswith("a/")] == [], "reported lost once"
    # The scaler removes the lost machine: its host cannot be reached, and that is fine.
    backend.destroy(on_a.id)


def test_a_host_back_lists_what_it_still_runs_and_not_what_was_lost_already() -> None:
    backend, fakes, clock = rig(("0",), ("0",), down_after=10)
    survivor, gone = backend.launch(spec()), backend.launch(spec(0))
    assert hosts_of([survivor, gone]) == "ab"
    fakes["a"].up = False
    fakes["b"].up = False
    with pytest.raises(BackendError, match="no Docker host answers: a: down since"):
        backend.list()
    assert not backend.health().ok
    clock.t += 10
    with pytest.raises(BackendError):  # a is due to be reported lost: that waits ...
        backend.list()
    fakes["b"].up = True  # ... for a listing that gets through
    fakes["b"].machines.clear()  # b's daemon restarted: its container went with it ...
    fakes["b"].lost.append(replace_state(gone, LOST))  # ... and the daemon says so
    listed = backend.list()
    assert sorted((m.id, m.state) for m in listed) == sorted([(gone.id, LOST),
                                                               (survivor.id, LOST)])
    fakes["a"].up = True
    fakes["a"].lost.append(replace_state(survivor, LOST))  # lost already: not again
    back = backend.list()
    # a's container runs on (a network partition): it is listed again, and the scaler, which
    # forgot its runner, removes it as an orphan after the grace period.
    assert [(m.id, m.state) for m in back] == [(survivor.id, RUNNING)]
    backend.destroy(survivor.id)
    assert fakes["a"].destroyed == [survivor.id.split("/")[1]]


def replace_state(m: Machine, state: str) -> Machine:
    return Machine(m.id.split("/")[1], m.runner_name, m.pool, state, m.created_at, m.gpus)


def test_a_host_that_hangs_is_down_for_now_and_does_not_hold_up_the_others() -> None:
    backend, fakes, _ = rig(("0",), ("0",), list_timeout=0.5)
    m = backend.launch(spec())
    fakes["a"].hang = gate = threading.Event()  # a powered-off host: connections hang
    started = time.monotonic()
    assert [(x.id, x.state) for x in backend.list()] == [(m.id, RUNNING)]
    assert time.monotonic() - started < 2, "the pass went on without a"
    assert "a: down since" in backend.health().detail
    assert "no answer in 0.5s" in backend.health().detail
    assert hosts_of([backend.launch(spec(0))]) == "b"
    started = time.monotonic()
    backend.list()
    assert time.monotonic() - started < 0.3, "a hung host holds up one pass, not each"
    assert fakes["a"].lists == 2, "no second listing of a while the first hangs"
    gate.set()  # a answers at last: it is up again
    deadline = time.monotonic() + 5
    while "down" in backend.health().detail and time.monotonic() < deadline:
        time.sleep(0.01)
    assert backend.health().detail == "2 of 2 Docker hosts answer"


def test_a_blip_shorter_than_down_after_loses_nothing() -> None:
    backend, fakes, clock = rig(("0",), ("0",), down_after=60)
    m = backend.launch(spec())
    fakes["a"].up = False
    backend.list()
    clock.t += 30
    fakes["a"].up = True
    assert [(x.id, x.state) for x in backend.list()] == [(m.id, RUNNING)]
    clock.t += 60
    fakes["a"].up = False
    assert [(x.id, x.state) for x in backend.list()] == [(m.id, RUNNING)], \
        "down_after counts from the latest failure, not the first ever"


def test_a_lost_host_reports_its_running_machines_lost_not_the_exited_ones() -> None:
    backend, fakes, clock = rig((), (), down_after=5)
    fakes["a"].machines["done"] = Machine("done", "r1", "cpu", EXITED, 1.0)
    fakes["a"].machines["busy"] = Machine("busy", "r2", "cpu", RUNNING, 1.0)
    assert sorted(m.state for m in backend.list()) == [EXITED, RUNNING]
    fakes["a"].up = False
    backend.list()
    clock.t += 5
    assert [(m.id, m.state) for m in backend.list()] == [("a/busy", LOST)]


# -- ids ------------------------------------------------------------------------------------

def test_ids_name_the_host_and_calls_are_routed_by_it() -> None:
    backend, fakes, _ = rig(("0",), ("0",))
    m = backend.launch(spec())
    assert m.id == "a/c1"
    assert backend.start("a/c1").id == "a/c1"
    for foreign in ("i-0123456789abcdef0", "z/c1", "a/", "/c1", ""):
        backend.destroy(foreign)  # not ours: the scaler asks every backend
    assert fakes["a"].destroyed == fakes["b"].destroyed == []
    with pytest.raises(BackendError, match="no Docker host of this pool has it") as err:
        backend.start("i-0123456789abcdef0")
    assert not err.value.retryable
    backend.destroy("a/c1")
    assert fakes["a"].destroyed == ["c1"] and backend.list() == []


def test_destroying_on_a_down_host_what_was_not_reported_lost_is_retried() -> None:
    backend, fakes, _ = rig(("0",), ("0",))
    m = backend.launch(spec())
    fakes["a"].up = False
    backend.list()
    with pytest.raises(BackendError, match="destroying machine a/c1: Docker host a is down "
                                           "since") as err:
        backend.destroy(m.id)
    assert err.value.retryable
    with pytest.raises(BackendError, match="starting machine a/c1: Docker host a is down"):
        backend.start(m.id)
    assert fakes["a"].asked == [], "a host known down is not asked (its client may hang)"
    fakes["a"].up = True
    backend.list()
    backend.destroy(m.id)
    assert fakes["a"].destroyed == ["c1"]


@pytest.mark.parametrize(("names", "placement", "says"), [
    ([], "spread", "need distinct names"),
    (["a", "a"], "spread", "need distinct names"),
    (["a/b"], "spread", "need distinct names"),
    (["a"], "fill", "placement 'fill' is not one of spread, pack"),
])
def test_bad_hosts_or_placement_are_config_errors(names: list[str], placement: str,
                                                  says: str) -> None:
    hosts = [DockerHost(n, None, (), "bridge", "nvidia", {}) for n in names]
    with pytest.raises(ConfigError, match=says):
        DockerHosts("box", hosts, placement=placement,
                    make=lambda h: FakeHost())


# -- through the real scaler ----------------------------------------------------------------

CONFIG = """
id: gm
github: {repo: octo/demo, token_env: TOKEN}
webhook: {secret_env: SECRET}
state: state.db
reconcile_interval: 30s
grace_period: 2m
backends:
  docker:
    hosts: [{name: a, host: "unix:///a.sock"}, {name: b, host: "unix:///b.sock"}]
pools:
  - {name: cpu, labels: [train], image: runner:test, max: 2}
"""


def test_a_host_lost_under_a_job_gets_it_rerun_once_and_its_survivor_removed_as_an_orphan(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "runners.yaml").write_text(CONFIG)
    config = load_config(tmp_path / "runners.yaml", {"TOKEN": "t", "SECRET": "s" * 32})
    clock = Clock()
    fakes = {h.name: FakeHost(clock=clock) for h in config.docker_hosts}
    hosts = DockerHosts(config.id, config.docker_hosts, down_after=60, clock=clock,
                        make=lambda h: fakes[h.name])
    gh = FakeRunnersGitHub(clock=clock)
    state = State(tmp_path / "state.db", clock=clock)
    scaler = Scaler(config, state, gh, {"docker": hosts}, clock=clock, launch_workers=0)

    def state_of(name: str) -> str:
        view = state.runner(name)
        return view.state if view is not None else "none"

    def passes(n: int, seconds: float = 31) -> None:
        for _ in range(n):
            clock.t += seconds
            scaler.reconcile(full=True)

    job = gh.queue(("self-hosted", "train"))
    scaler.on_job_event(job)
    scaler.reconcile(full=False)
    (runner,) = [r.name for r in state.runners()]
    assert list(fakes["a"].machines) == ["c1"]
    gh.connect(runner)
    assert gh.assign(runner) is not None
    scaler.on_job_event(gh.jobs[job.id])
    fakes["a"].up = False  # host a goes, its runner mid-job
    passes(2)  # found down, then down for 31 s
    assert state_of(runner) == BUSY, "a blip: nothing is lost yet"
    with caplog.at_level(logging.WARNING, "gha_mlops.runners"):
        passes(1)  # down for 62 s: lost
        assert state_of(runner) == GONE
        assert f"job {job.id} lost: its machine went away" in caplog.text
        gh.finish(job.id, "failure")  # GitHub gives up on the runner that went
        scaler.on_job_event(gh.jobs[job.id])
        passes(2)
    assert gh.calls.count("rerun_job") == 1
    assert f"re-ran job {job.id}: its machine went away" in caplog.text
    assert len(fakes["b"].machines) == 1, "the re-run's runner went to b, the host that answers"

    # a answers again, its container still running (it was cut off, not stopped): the
    # scaler forgot that runner, so the container is an orphan, removed once older than the
    # grace period (2 min; it is older already: at the first listing). Its job, if GitHub
    # still ran it, was re-run once already and is not re-run again.
    fakes["a"].up = True
    with caplog.at_level(logging.INFO, "gha_mlops.runners"):
        passes(1, seconds=1)
    assert fakes["a"].destroyed == ["c1"]
    assert f"orphan: no runner {runner!r} in the state" in caplog.text
    assert gh.calls.count("rerun_job") == 1


def test_the_live_check_asks_each_host_and_names_the_one_down() -> None:
    """`runners check --live`: a line per host, asked now; a host down fails its line."""
    from gha_mlops.runners.backends.base import Health

    backend, fakes, _ = rig(("0", "1"), ("0",))

    def answers(fake: FakeHost) -> Callable[[], Health]:
        def health() -> Health:
            if not fake.up:
                return Health(False, "cannot reach the Docker daemon at unix:///tmp/b.sock")
            return Health(True, "ok", {"gpus": len(fake.gpus)})
        return health

    for fake in fakes.values():
        fake.health = answers(fake)  # type: ignore[method-assign]
    fakes["b"].up = False
    assert backend.verify() == [
        (True, "host a (unix:///tmp/a.sock): answers; 2 of 2 GPU(s) free"),
        (False, "host b (unix:///tmp/b.sock): cannot reach the Docker daemon at "
                "unix:///tmp/b.sock")]
