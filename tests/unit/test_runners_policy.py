"""The autoscaler's policy, rule by rule: each row is a world and the decision it must give."""

from __future__ import annotations

import copy
import time
from dataclasses import replace

import pytest

from gha_mlops.github.port import GhRunner
from gha_mlops.runners.backends.base import Machine
from gha_mlops.runners.config import DEFAULT_LABELS, Pool
from gha_mlops.runners.policy import (
    BOOTING,
    BUSY,
    DONE,
    DRAINING,
    EXPIRED,
    GONE,
    IDLE,
    LAUNCHING,
    MACHINE_WENT_AWAY,
    RESERVED,
    RUNNER_DIED,
    SPOT_INTERRUPTED,
    JobView,
    RunnerView,
    World,
    decide,
    pool_for,
)

NOW = 10_000.0
BOOT = "boot-now"


def pool(name: str = "gpu", labels: tuple[str, ...] = ("gpu",), **kw: object) -> Pool:
    base = dict(backend="docker", image="img", min_idle=0, max=4, cpus=None, memory_mb=None,
                gpus=0, idle_timeout=300.0, max_lifetime=6 * 3600.0, register_timeout=180.0,
                env={})
    base.update(kw)
    return Pool(name=name, labels=frozenset({*DEFAULT_LABELS, *labels}), **base)  # type: ignore[arg-type]


def job(id: int, labels: tuple[str, ...] = ("self-hosted", "gpu"), status: str = "queued",
        **kw: object) -> JobView:
    return JobView(id=id, repo="octo/demo", labels=frozenset(labels), status=status,
                   queued_at=NOW - 10, **kw)  # type: ignore[arg-type]


def runner(name: str, state: str, pool: str = "gpu", *, age: float = 60.0,
           since: float | None = None, boot: str = BOOT, **kw: object) -> RunnerView:
    return RunnerView(name=f"gm-{name}", pool=pool, state=state, created_at=NOW - age,
                      state_since=NOW - (age if since is None else since), boot_id=boot,
                      **kw)  # type: ignore[arg-type]


def machine(runner_name: str, *, age: float = 60.0, state: str = "running",
            id: str | None = None) -> Machine:
    return Machine(id or f"m-{runner_name}", f"gm-{runner_name}", "gpu", state, NOW - age)


def world(pools: list[Pool] | None = None, jobs: list[JobView] | None = None,
          runners: list[RunnerView] | None = None, **kw: object) -> World:
    return World(pools=pools or [pool()], jobs=jobs or [], runners=runners or [], now=NOW,
                 boot_id=BOOT, grace=120.0, prefix="gm-", **kw)  # type: ignore[arg-type]


# -- launching ---------------------------------------------------------------------------------

LAUNCH_TABLE = [
    # (description, world, expected launches)
    ("nothing queued, no min idle", world(), {}),
    ("one queued job, one launch", world(jobs=[job(1)]), {"gpu": 1}),
    ("three queued, max 4", world(jobs=[job(i) for i in range(3)]), {"gpu": 3}),
    ("ten queued, capped at max 4", world(jobs=[job(i) for i in range(10)]), {"gpu": 4}),
    ("min idle 2 with no jobs", world(pools=[pool(min_idle=2)]), {"gpu": 2}),
    ("min idle is counted in max",
     world(pools=[pool(min_idle=2, max=3)], jobs=[job(1), job(2)]), {"gpu": 3}),
    ("a booting runner covers a job", world(jobs=[job(1)], runners=[runner("a", BOOTING)]),
     {}),
    ("a reserved runner covers a job", world(jobs=[job(1)], runners=[runner("a", RESERVED)]),
     {}),
    ("busy runners are not supply, but count in max",
     world(jobs=[job(i) for i in range(4)],
           runners=[runner("a", BUSY), runner("b", BUSY), runner("c", BUSY)]), {"gpu": 1}),
    ("a full pool launches nothing",
     world(jobs=[job(1)], runners=[runner(x, BUSY) for x in "abcd"]), {}),
    ("done and draining runners count in max",
     world(jobs=[job(1), job(2)], runners=[runner("a", DONE), runner("b", DRAINING),
                                           runner("c", BUSY), runner("d", BUSY)]), {}),
    ("gone runners do not count",
     world(jobs=[job(1)], runners=[runner(x, GONE) for x in "abcd"]), {"gpu": 1}),
    ("jobs in progress are not demand", world(jobs=[job(1, status="in_progress")]), {}),
    ("free GPUs limit GPU pools",
     world(pools=[pool(gpus=2)], jobs=[job(i) for i in range(4)], free_gpus=5), {"gpu": 2}),
    ("GPUs promised to starting runners are not free",
     world(pools=[pool(gpus=1)], jobs=[job(i) for i in range(4)], free_gpus=3,
           runners=[runner("a", LAUNCHING), runner("b", BUSY)]), {"gpu": 2}),
    ("hosted-runner jobs are not ours", world(jobs=[job(1, labels=("ubuntu-latest",))]), {}),
    # Per host: a runner's GPUs are all on one host.
    ("1 + 1 free GPUs on two hosts take no 2-GPU runner",
     world(pools=[pool(gpus=2)], jobs=[job(1), job(2)], free_gpus=(1, 1)), {}),
    ("each host takes what fits on it",
     world(pools=[pool(gpus=2)], jobs=[job(i) for i in range(4)], free_gpus=(3, 2, 1)),
     {"gpu": 2}),
    ("a pool whose runners fit nowhere does not starve the next pool",
     world(pools=[pool(gpus=2), pool("small", ("small",), gpus=1)],
           jobs=[job(1), job(2, ("self-hosted", "small")), job(3, ("self-hosted", "small"))],
           free_gpus=(1, 1)), {"small": 2}),
    ("a small runner takes the host it fits best, leaving room for a big one",
     world(pools=[pool("small", ("small",), gpus=1), pool(gpus=2)],
           jobs=[job(1), job(2, ("self-hosted", "small"))], free_gpus=(2, 1)),
     {"small": 1, "gpu": 1}),
    ("a starting runner's GPUs are taken from the host they fit best",
     world(pools=[pool(gpus=2)], jobs=[job(i) for i in range(3)], free_gpus=(2, 4),
           runners=[runner("a", LAUNCHING)]), {"gpu": 2}),
    ("a starting runner that fits nowhere is counted on the freest host",
     world(pools=[pool(gpus=2)], jobs=[job(i) for i in range(3)], free_gpus=(1, 3),
           runners=[runner("a", LAUNCHING)]), {}),
]


@pytest.mark.parametrize(("what", "w", "expected"), LAUNCH_TABLE, ids=[r[0] for r in LAUNCH_TABLE])
def test_launches(what: str, w: World, expected: dict[str, int]) -> None:
    assert decide(w).launch == expected


def test_a_job_goes_to_the_most_specific_pool_that_has_all_its_labels() -> None:
    cpu = pool("cpu", ("big",))
    gpu = pool("gpu", ("big", "gpu"))
    a100 = pool("a100", ("big", "gpu", "a100", "nvlink"))
    pools = [a100, cpu, gpu]
    assert pool_for(pools, frozenset({"self-hosted", "big"})) is cpu
    assert pool_for(pools, frozenset({"self-hosted", "gpu"})) is gpu
    assert pool_for(pools, frozenset({"self-hosted", "a100"})) is a100
    assert pool_for(pools, frozenset({"self-hosted", "tpu"})) is None
    d = decide(world(pools=pools, jobs=[job(1, ("self-hosted", "big")),
                                        job(2, ("self-hosted", "GPU".lower(), "big")),
                                        job(3, ("self-hosted", "a100"))]))
    assert d.launch == {"cpu": 1, "gpu": 1, "a100": 1}
    assert d.queued == {"a100": 1, "cpu": 1, "gpu": 1}


def test_a_job_no_pool_serves_is_reported_not_dropped() -> None:
    d = decide(world(jobs=[job(7, ("self-hosted", "tpu")), job(8)]))
    assert d.unservable == [(7, ("self-hosted", "tpu"))]
    assert d.launch == {"gpu": 1}


# -- draining ----------------------------------------------------------------------------------

DRAIN_TABLE = [
    ("idle past the timeout, no demand",
     world(runners=[runner("a", IDLE, since=301)]), ["gm-a"]),
    ("idle but not long enough", world(runners=[runner("a", IDLE, since=299)]), []),
    ("idle past the timeout but kept warm by min idle",
     world(pools=[pool(min_idle=1)], runners=[runner("a", IDLE, since=900)]), []),
    ("only the surplus above min idle goes, the longest idle first",
     world(pools=[pool(min_idle=1)], runners=[runner("a", IDLE, since=400),
                                              runner("b", IDLE, since=900)]), ["gm-b"]),
    ("idle past the timeout but a job waits for it",
     world(jobs=[job(1)], runners=[runner("a", IDLE, since=900)]), []),
    ("a busy runner is never drained, however old",
     world(runners=[runner("a", BUSY, age=10 * 3600, since=10 * 3600)]), []),
    ("an idle runner past its maximum lifetime goes even when warm",
     world(pools=[pool(min_idle=1)], runners=[runner("a", IDLE, age=7 * 3600, since=10)]),
     ["gm-a"]),
    ("never came online within the register timeout",
     world(runners=[runner("a", BOOTING, since=181)]), ["gm-a"]),
    ("still booting within the timeout", world(runners=[runner("a", BOOTING, since=100)]), []),
    ("finished but its machine lingers past the grace period",
     world(runners=[runner("a", DONE, since=200)]), ["gm-a"]),
    ("an interrupted drain is retried", world(runners=[runner("a", DRAINING, since=200)]),
     ["gm-a"]),
    ("an idle runner of a pool no longer configured",
     world(runners=[runner("a", IDLE, pool="old", since=5)]), ["gm-a"]),
]


@pytest.mark.parametrize(("what", "w", "expected"), DRAIN_TABLE, ids=[r[0] for r in DRAIN_TABLE])
def test_drains(what: str, w: World, expected: list[str]) -> None:
    assert [name for name, _ in decide(w).drain] == expected


def test_a_drained_runner_is_replaced_only_when_min_idle_wants_it_and_max_allows() -> None:
    d = decide(world(pools=[pool(min_idle=1, max=1)],
                     runners=[runner("a", IDLE, age=7 * 3600, since=10)]))
    assert [n for n, _ in d.drain] == ["gm-a"]
    assert d.launch == {}  # its slot is taken until its machine is gone
    d = decide(world(pools=[pool(min_idle=1, max=2)],
                     runners=[runner("a", IDLE, age=7 * 3600, since=10)]))
    assert d.launch == {"gpu": 1}


# -- reconciling with the backend and GitHub ---------------------------------------------------


def test_orphan_machines_are_removed_after_the_grace_period() -> None:
    d = decide(world(machines=[machine("x", age=121), machine("y", age=30)]))
    assert [m for m, _ in d.remove_machines] == ["m-x"]


def test_exited_machines_are_removed() -> None:
    d = decide(world(runners=[runner("a", BUSY, job_id=1)],
                     machines=[machine("a", state="exited")]))
    assert [m for m, _ in d.remove_machines] == ["m-a"]


def test_a_machine_started_before_a_crash_is_adopted() -> None:
    r = runner("a", LAUNCHING, boot="old-process", github_id=5)
    d = decide(world(runners=[r], machines=[machine("a", age=5)]))
    assert d.adopt == [("gm-a", "m-a")]
    assert d.remove_machines == []


def test_a_launch_interrupted_before_the_machine_started_is_forgotten() -> None:
    d = decide(world(runners=[runner("a", LAUNCHING, boot="old-process", github_id=5)],
                     machines=[]))
    assert [n for n, _ in d.forget] == ["gm-a"]


def test_a_launch_in_flight_in_this_process_is_left_alone() -> None:
    d = decide(world(jobs=[job(1)], runners=[runner("a", LAUNCHING, github_id=5)], machines=[]))
    assert d.forget == [] and d.launch == {}


def test_a_runner_whose_machine_vanished_is_forgotten_and_a_busy_one_is_lost() -> None:
    d = decide(world(runners=[runner("a", IDLE), runner("b", BUSY, job_id=42),
                              runner("c", DONE)], machines=[]))
    assert sorted(n for n, _ in d.forget) == ["gm-a", "gm-c"]
    assert d.lost == [("gm-b", 42, RUNNER_DIED)]


def test_registrations_without_a_runner_of_ours_are_deregistered() -> None:
    gh = [GhRunner(1, "gm-old", "offline", False), GhRunner(2, "gm-busy", "online", True),
          GhRunner(3, "someone-elses", "online", False), GhRunner(4, "gm-a", "online", False)]
    d = decide(world(runners=[runner("a", IDLE)], gh_runners=gh))
    assert d.deregister == [(1, "gm-old", "registered but no machine of ours runs it")]


def test_a_lost_job_is_rerun_once_when_github_has_finished_it() -> None:
    jobs = [job(1, status="completed", lost=True, conclusion="failure"),
            job(2, status="completed", lost=True, conclusion="failure", rerun_done=True),
            job(3, status="in_progress", lost=True),
            job(4, status="completed", lost=True, conclusion="success")]
    assert decide(world(jobs=jobs)).rerun == [1]


def _busy_world(now: float = NOW) -> World:
    """A world on which every rule has something to say (so comparing two decisions on it
    compares launches, drains, removals, deregistrations, adoptions, forgets, lost jobs,
    re-runs and unservable jobs, not two empty decisions), at the clock ``now``: every
    timestamp in it is placed relative to ``now``."""
    w = world(
        pools=[pool(gpus=1, max=10), pool("cpu", ("big",), min_idle=1)],
        jobs=[*(job(i) for i in range(5)), job(7, ("self-hosted", "tpu")),
              job(8, status="completed", lost=True, conclusion="failure")],
        runners=[runner("idle", IDLE, since=400), runner("old", IDLE, age=7 * 3600, since=10),
                 runner("boot", BOOTING, since=181), runner("busy", BUSY, job_id=3),
                 runner("gone-busy", BUSY, job_id=4), runner("done", DONE, since=200),
                 runner("crashed", LAUNCHING, boot="old-process", github_id=9),
                 runner("vanished", IDLE), runner("cpu-idle", IDLE, pool="cpu", since=900)],
        machines=[machine("idle"), machine("old"), machine("boot"), machine("busy"),
                  machine("done"), machine("crashed", age=5), machine("cpu-idle"),
                  machine("orphan", age=121), machine("young-orphan", age=30),
                  machine("exited", state="exited")],
        gh_runners=[GhRunner(1, "gm-stale", "offline", False),
                    GhRunner(2, "someone-elses", "online", False)],
        free_gpus=3)
    return _shifted(w, now - NOW)


def _shifted(w: World, dt: float) -> World:
    """``w`` lived ``dt`` seconds later: the clock and every timestamp in it moved by ``dt``."""
    return replace(
        w, now=w.now + dt,
        jobs=[replace(j, queued_at=j.queued_at + dt) for j in w.jobs],
        runners=[replace(r, created_at=r.created_at + dt, state_since=r.state_since + dt)
                 for r in w.runners],
        machines=[replace(m, created_at=m.created_at + dt) for m in w.machines or ()])


def test_the_decision_is_deterministic() -> None:
    w = world(jobs=[job(i) for i in range(6)], runners=[runner("a", IDLE, since=400)],
              machines=[machine("zz", age=500)])
    assert decide(w) == decide(replace(w))
    # Pure: the decision is a function of the world and of nothing else. The busy world makes
    # every rule fire, so the comparisons below are between full decisions.
    w = _busy_world()
    before = copy.deepcopy(w)
    d = decide(w)
    assert all((d.launch, d.drain, d.remove_machines, d.deregister, d.adopt, d.forget, d.lost,
                d.rerun, d.unservable))
    assert w == before, "decide() changed the world it was given"
    # No hidden state: again, and on an equal world that shares no object with this one.
    assert decide(w) == d
    assert decide(copy.deepcopy(before)) == d
    assert w == before


def test_the_decision_reads_the_clock_in_the_world_and_no_other() -> None:
    # The test worlds live at NOW, decades before the real clock: a policy that reads
    # time.time() (or monotonic()) would find every runner ancient there and decide otherwise
    # than on the same world moved to the real present.
    real_now = time.time()
    assert abs(real_now - NOW) > 10 * 365 * 86400
    at_now = decide(_busy_world(NOW))
    assert decide(_busy_world(real_now)) == at_now
    assert decide(_busy_world(NOW + 1e9)) == at_now
    # ...and it does read the world's clock: two seconds on, an idle runner crosses its
    # idle_timeout and goes.
    w = world(runners=[runner("a", IDLE, since=299)])
    assert decide(w).drain == []
    assert [n for n, _ in decide(replace(w, now=NOW + 2)).drain] == ["gm-a"]


def test_a_runner_that_moved_on_before_its_machine_was_noted_gets_it_adopted() -> None:
    # Killed after the container started; the restarted scaler learnt from GitHub that the
    # runner is busy before it listed the machines.
    d = decide(world(runners=[runner("a", BUSY, boot="old-process", job_id=3)],
                     machines=[machine("a", age=5)]))
    assert d.adopt == [("gm-a", "m-a")] and d.lost == []


# -- adopting by the machine's real state; jobs lost to the machine under them ----------------

def test_a_machine_created_but_never_started_is_started_while_a_job_wants_it() -> None:
    # Killed between create and start: the restart starts it at once (not "booting" until
    # register_timeout), and launches nothing more for the one queued job.
    r = runner("a", LAUNCHING, boot="old-process", github_id=5)
    d = decide(world(jobs=[job(1)], runners=[r], machines=[machine("a", age=5, state="created")]))
    assert d.start == [("gm-a", "m-a")]
    assert d.adopt == [] and d.remove_machines == [] and d.forget == [] and d.launch == {}


def test_a_machine_created_but_never_started_that_no_job_wants_is_removed_at_once() -> None:
    # Its slot is freed in this pass, not after register_timeout.
    r = runner("a", LAUNCHING, boot="old-process", github_id=5)
    d = decide(world(runners=[r], machines=[machine("a", age=5, state="created")]))
    assert d.start == [] and d.adopt == []
    assert d.remove_machines == [("m-a", "created but never started (the autoscaler "
                                  "restarted), and no job needs it")]
    assert [n for n, _ in d.forget] == ["gm-a"]


def test_only_as_many_created_machines_start_as_jobs_want_and_the_slot_is_reused() -> None:
    stale = [runner(x, LAUNCHING, boot="old-process", github_id=i, age=10 - i)
             for i, x in enumerate("abc")]
    d = decide(world(pools=[pool(max=3)], jobs=[job(1), job(2)], runners=stale,
                     machines=[machine(x, age=5, state="created") for x in "abc"]))
    assert [n for n, _ in d.start] == ["gm-a", "gm-b"]  # the oldest first
    assert [m for m, _ in d.remove_machines] == ["m-c"] and d.launch == {}
    # A runner adopted as booting by an older release: also started, not held.
    held = runner("h", BOOTING, boot="old-process", github_id=9, machine_id="m-h")
    d = decide(world(jobs=[job(1)], runners=[held],
                     machines=[machine("h", age=90, state="created")]))
    assert d.start == [("gm-h", "m-h")] and d.drain == []


def test_a_created_machine_of_a_launch_in_flight_here_is_left_alone() -> None:
    d = decide(world(jobs=[job(1)], runners=[runner("a", LAUNCHING, github_id=5)],
                     machines=[machine("a", age=0, state="created")]))
    assert (d.start, d.adopt, d.remove_machines, d.forget, d.launch) == ([], [], [], [], {})


def test_a_created_machine_without_a_registration_is_removed() -> None:
    d = decide(world(jobs=[job(1)], runners=[runner("a", RESERVED, boot="old-process")],
                     machines=[machine("a", age=5, state="created")]))
    assert d.start == [] and [m for m, _ in d.remove_machines] == ["m-a"]
    assert d.launch == {"gpu": 1}  # its slot went back, and the job gets a fresh runner


def test_a_job_whose_machine_its_host_stopped_is_lost_to_the_machine() -> None:
    d = decide(world(runners=[runner("b", BUSY, job_id=42), runner("c", DONE, job_id=43),
                              runner("i", IDLE)],
                     machines=[machine(x, state="lost") for x in "bci"]))
    assert sorted(m for m, _ in d.remove_machines) == ["m-b", "m-c", "m-i"]
    assert d.lost == [("gm-b", 42, MACHINE_WENT_AWAY), ("gm-c", 43, MACHINE_WENT_AWAY)]
    assert d.forget == [("gm-i", "its machine went away (it was idle)")]


def test_machines_that_vanished_across_a_backend_outage_went_away_with_their_jobs() -> None:
    busy = runner("b", BUSY, job_id=42, since=30)
    done = runner("c", DONE, job_id=43, since=5)
    long_done = runner("d", DONE, job_id=44, since=600)
    # The daemon restarted (a listing failed 3 s ago) and the machines are gone.
    d = decide(world(runners=[busy, done, long_done], machines=[], outage_at=NOW - 3))
    assert d.lost == [("gm-b", 42, MACHINE_WENT_AWAY), ("gm-c", 43, MACHINE_WENT_AWAY)]
    assert [n for n, _ in d.forget] == ["gm-d"]  # finished long before: not the outage's
    # An outage before the job started says nothing of it: its runner died.
    d = decide(world(runners=[busy], machines=[], outage_at=NOW - 100))
    assert d.lost == [("gm-b", 42, RUNNER_DIED)]
    # No outage: a finished runner's machine that exited is just forgotten.
    d = decide(world(runners=[done], machines=[]))
    assert d.lost == [] and [n for n, _ in d.forget] == ["gm-c"]


def test_a_pool_whose_backend_could_not_be_listed_is_not_judged_by_its_missing_machines(
        ) -> None:
    """One backend failing (EC2 throttled) does not blind the others: the listed pools are
    reconciled, the unlisted pool's runners wait for a listing that gets through."""
    pools = [pool(), pool("cloud", ("cloud",))]
    busy_cloud = runner("c", BUSY, pool="cloud", job_id=42, since=30)
    done_gpu = runner("g", DONE, job_id=43, since=600)
    d = decide(world(pools=pools, runners=[busy_cloud, done_gpu], machines=[],
                     unlisted_pools=frozenset({"cloud"}), pool_outages={"cloud": (NOW - 3, NOW - 3)}))
    assert d.lost == []  # the cloud runner's machine was not listed, not gone
    assert [n for n, _ in d.forget] == ["gm-g"]  # the docker pool goes on being reconciled
    # Once its backend answers again without the machine: gone across the outage.
    d = decide(world(pools=pools, runners=[busy_cloud, done_gpu], machines=[],
                     pool_outages={"cloud": (NOW - 3, NOW - 3)}))
    assert d.lost == [("gm-c", 42, MACHINE_WENT_AWAY)]
    # A long outage: a job that ended (its runner saw its machine stop) anywhere within it.
    finished = runner("c", DONE, pool="cloud", job_id=42, since=150)
    d = decide(world(pools=pools, runners=[finished], machines=[],
                     pool_outages={"cloud": (NOW - 200, NOW - 3)}))
    assert d.lost == [("gm-c", 42, MACHINE_WENT_AWAY)]
    d = decide(world(pools=pools, runners=[finished], machines=[],
                     pool_outages={"cloud": (NOW - 60, NOW - 3)}))  # ended well before it
    assert d.lost == [] and [n for n, _ in d.forget] == ["gm-c"]
    # An outage of another pool's backend says nothing of this one's runner: it died.
    d = decide(world(pools=pools, runners=[runner("g2", BUSY, job_id=44, since=30)],
                     machines=[], pool_outages={"cloud": (NOW - 3, NOW - 3)}))
    assert d.lost == [("gm-g2", 44, RUNNER_DIED)]


# -- notice (a spot interruption warning) and expiry ------------------------------------------

NOTICE = "spot interruption notice for 2026-12-06T03:02:00Z (imds)"


def noticed(runner_name: str, **kw: object) -> Machine:
    return replace(machine(runner_name, **kw), notice=NOTICE)  # type: ignore[arg-type]


def expiring(runner_name: str, at: float, **kw: object) -> Machine:
    return replace(machine(runner_name, **kw), expires_at=NOW + at)  # type: ignore[arg-type]


NOTICE_TABLE = [
    # (description, world, expected drains, expected launches)
    ("an idle runner under notice is drained at once and replaced for the waiting job",
     world(jobs=[job(1)], runners=[runner("a", IDLE, since=5)], machines=[noticed("a")]),
     ["gm-a"], {"gpu": 1}),
    ("an idle runner under notice is not kept warm by min idle: it is replaced",
     world(pools=[pool(min_idle=1)], runners=[runner("a", IDLE, since=5)],
           machines=[noticed("a")]), ["gm-a"], {"gpu": 1}),
    ("a booting runner under notice is drained and replaced",
     world(jobs=[job(1)], runners=[runner("a", BOOTING, since=5)], machines=[noticed("a")]),
     ["gm-a"], {"gpu": 1}),
    ("a finished runner under notice is drained without waiting for the grace period",
     world(runners=[runner("a", DONE, since=5, job_id=3)], machines=[noticed("a")]),
     ["gm-a"], {}),
    ("a launch of an earlier process under notice: adopted and drained, and replaced",
     world(jobs=[job(1)], runners=[runner("a", LAUNCHING, boot="old", github_id=5)],
           machines=[noticed("a", age=5)]), ["gm-a"], {"gpu": 1}),
    ("a launch in flight here under notice: drained once it noted its machine, replaced now",
     world(jobs=[job(1)], runners=[runner("a", LAUNCHING, github_id=5)],
           machines=[noticed("a", age=1)]), [], {"gpu": 1}),
    ("a busy runner under notice keeps its job, and a runner boots for its re-run",
     world(runners=[runner("a", BUSY, job_id=3)], machines=[noticed("a")]), [], {"gpu": 1}),
    ("... once: the replacement booting covers it",
     world(runners=[runner("a", BUSY, job_id=3), runner("b", BOOTING, since=5)],
           machines=[noticed("a"), machine("b")]), [], {}),
    ("... and never over the pool's max",
     world(pools=[pool(max=1)], runners=[runner("a", BUSY, job_id=3)],
           machines=[noticed("a")]), [], {}),
    ("a runner being drained under notice: nothing more",
     world(runners=[runner("a", DRAINING, since=5)], machines=[noticed("a")]), [], {}),
    ("no notice, no drain (the control row)",
     world(jobs=[job(1)], runners=[runner("a", IDLE, since=5)], machines=[machine("a")]),
     [], {}),
    ("a notice waits for a pass that lists the machines (machines=None: nothing known)",
     world(jobs=[job(1)], runners=[runner("a", IDLE, since=5)]), [], {}),
]


@pytest.mark.parametrize(("what", "w", "drains", "launches"), NOTICE_TABLE,
                         ids=[r[0] for r in NOTICE_TABLE])
def test_notices(what: str, w: World, drains: list[str], launches: dict[str, int]) -> None:
    d = decide(w)
    assert [name for name, _ in d.drain] == drains
    assert all(why == NOTICE for _, why in d.drain)  # the log says why: the notice itself
    assert d.launch == launches
    assert d.lost == [] and d.forget == [] and d.remove_machines == []
    # Only the runner booted for a busy noticed runner's job replaces it (a cloud backend
    # may launch it on-demand: ec2.rerun_on_demand); an idle one's replacement is ordinary.
    assert d.replacements == ({"gpu": 1} if "boots for its re-run" in what else {})


def test_an_adopted_launch_under_notice_is_adopted_before_it_is_drained() -> None:
    d = decide(world(runners=[runner("a", LAUNCHING, boot="old", github_id=5)],
                     machines=[noticed("a", age=5)]))
    assert d.adopt == [("gm-a", "m-a")] and [n for n, _ in d.drain] == ["gm-a"]


def test_a_created_machine_under_notice_is_removed_not_started() -> None:
    r = runner("a", LAUNCHING, boot="old", github_id=5)
    d = decide(world(jobs=[job(1)], runners=[r],
                     machines=[noticed("a", age=5, state="created")]))
    assert d.start == [] and [m for m, _ in d.remove_machines] == ["m-a"]
    assert d.launch == {"gpu": 1}


LOST_TABLE = [
    # (description, machine, runner state, expected cause)
    ("a lost machine that had notice: interrupted", noticed("b", state="lost"), BUSY,
     SPOT_INTERRUPTED),
    ("a lost machine whose detail says spot termination: interrupted",
     replace(machine("b", state="lost"), detail="Server.SpotInstanceTermination: Spot "
             "instance termination"), BUSY, SPOT_INTERRUPTED),
    ("a lost machine without either: went away", machine("b", state="lost"), BUSY,
     MACHINE_WENT_AWAY),
    ("a finished job's machine lost after notice: interrupted (GitHub decides)",
     noticed("b", state="lost"), DONE, SPOT_INTERRUPTED),
]


@pytest.mark.parametrize(("what", "m", "state", "cause"), LOST_TABLE,
                         ids=[r[0] for r in LOST_TABLE])
def test_a_job_lost_with_its_interrupted_machine_says_so(what: str, m: Machine, state: str,
                                                         cause: str) -> None:
    d = decide(world(runners=[runner("b", state, job_id=42, since=5)], machines=[m]))
    assert d.lost == [("gm-b", 42, cause)] and [i for i, _ in d.remove_machines] == [m.id]


EXPIRY_TABLE = [
    # (description, runner or None, machine, removed?, job not re-run)
    ("a busy runner's machine past its expiry: removed, job not re-run",
     runner("a", BUSY, job_id=7, machine_id="m-a"), expiring("a", -1), True, 7),
    ("an idle runner's machine past its expiry", runner("a", IDLE, since=5, machine_id="m-a"), expiring("a", -1),
     True, None),
    ("a pending machine past its expiry (booting runner)", runner("a", BOOTING, since=5, machine_id="m-a"),
     expiring("a", -1, state="pending"), True, None),
    ("a runner under notice past its expiry: removed, not drained",
     runner("a", BUSY, job_id=7, machine_id="m-a"), replace(expiring("a", -1), notice=NOTICE), True, 7),
    ("exactly at its expiry", runner("a", IDLE, since=5, machine_id="m-a"), expiring("a", 0), True, None),
    ("not yet at its expiry", runner("a", IDLE, since=5, machine_id="m-a"), expiring("a", 1), False, None),
    ("an orphan past its expiry, within the grace period", None, expiring("x", -1, age=5),
     True, None),
    ("an orphan not past its expiry, within the grace period", None, expiring("x", 60, age=5),
     False, None),
]


@pytest.mark.parametrize(("what", "r", "m", "removed", "job_id"), EXPIRY_TABLE,
                         ids=[r[0] for r in EXPIRY_TABLE])
def test_expiry(what: str, r: RunnerView | None, m: Machine, removed: bool,
                job_id: int | None) -> None:
    d = decide(world(runners=[r] if r else [], machines=[m]))
    assert d.remove_machines == ([(m.id, EXPIRED)] if removed else [])
    assert d.lost == [] and d.drain == [] and d.adopt == []
    if r is not None and removed:
        (forgotten, why), = d.forget
        assert forgotten == r.name and EXPIRED in why
        assert d.expired == [(r.name, m.id, job_id)]
        assert (f"its job {job_id} is not re-run" in why) == (job_id is not None)
    else:
        assert d.forget == [] and d.expired == []


def test_an_expired_machine_frees_its_slot_for_the_waiting_job() -> None:
    d = decide(world(pools=[pool(max=1)], jobs=[job(1)],
                     runners=[runner("a", BUSY, job_id=7)], machines=[expiring("a", -1)]))
    assert d.launch == {"gpu": 1}


def test_free_gpus_limit_only_the_pools_of_backends_that_report_them() -> None:
    cloud = pool("cloud", ("cloud",), backend="ec2", gpus=1)
    jobs = [job(1), job(2, ("self-hosted", "cloud")), job(3, ("self-hosted", "cloud"))]
    w = world(pools=[pool(gpus=1), cloud], jobs=jobs, free_gpus=0)
    assert decide(w).launch == {}  # None: every GPU pool limited (the simulator's world)
    assert decide(replace(w, gpu_pools=frozenset({"gpu"}))).launch == {"cloud": 2}


def test_the_runner_kept_for_a_noticed_jobs_rerun_is_not_surplus() -> None:
    w = world(runners=[runner("a", BUSY, job_id=3), runner("b", IDLE, since=900)],
              machines=[noticed("a"), machine("b")])
    assert decide(w).drain == [] and decide(w).launch == {}
    # Without the notice the idle runner is surplus past its idle_timeout.
    w = replace(w, machines=[machine("a"), machine("b")])
    assert [n for n, _ in decide(w).drain] == ["gm-b"]


def test_a_noticed_runner_whose_machine_vanished_unreported_lost_it_to_the_interruption() -> None:
    busy, done = runner("b", BUSY, job_id=42), runner("c", DONE, job_id=43, since=5)
    w = world(runners=[busy, done], machines=[], noticed_before=frozenset({"gm-b", "gm-c"}))
    assert decide(w).lost == [("gm-b", 42, SPOT_INTERRUPTED), ("gm-c", 43, SPOT_INTERRUPTED)]
    w = replace(w, noticed_before=frozenset())  # no notice seen: its runner died
    d = decide(w)
    assert d.lost == [("gm-b", 42, RUNNER_DIED)] and [n for n, _ in d.forget] == ["gm-c"]
