"""The runner simulator (benchmarks/sim_runners.py) on a small trace: the real scaler serves
every job and loses none through lost webhooks, failed launches and runners dying mid-job; the
baselines run too."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest

SIM_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "sim_runners.py"


def load_sim() -> ModuleType:
    if str(SIM_PATH.parent) not in sys.path:  # it imports its sibling _common, as a script
        sys.path.insert(0, str(SIM_PATH.parent))
    spec = importlib.util.spec_from_file_location("sim_runners", SIM_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sim() -> ModuleType:
    return load_sim()


def test_gha_mlops_serves_every_job_of_a_small_trace(sim: ModuleType) -> None:
    # Failure rates well above the defaults, so each fault happens in a small trace.
    p = replace(sim.QUICK, seed=3, launch_fail=0.1, die=0.05, webhook_loss=0.1)
    r = sim.simulate("gha-mlops", p)
    assert r.jobs == p.jobs
    assert r.lost == 0 and r.served == p.jobs, r.lost_why
    assert r.launch_failures > 0 and r.webhooks_lost > 0 and r.deaths > 0
    assert r.reruns == r.deaths  # each job whose runner died was re-run once
    assert len(r.waits) == p.jobs + r.reruns  # every attempt started
    assert r.paid >= r.busy > 0
    assert not r.notes  # the scaler's state is clean at the end


def test_a_run_is_deterministic(sim: ModuleType) -> None:
    p = replace(sim.QUICK, jobs=20, bursts=2, seed=5)
    a, b = (sim.simulate("gha-mlops", p) for _ in range(2))
    assert (a.waits, a.paid, a.busy, a.launches) == (b.waits, b.paid, b.busy, b.launches)


@pytest.mark.parametrize("strategy", ["per-job+5m-idle", "cron-5m"])
def test_the_baselines_run(sim: ModuleType, strategy: str) -> None:
    p = replace(sim.QUICK, seed=3)
    r = sim.simulate(strategy, p)
    assert r.jobs == p.jobs and r.served + r.lost == p.jobs and r.served > 0
    assert r.paid >= r.busy > 0 and r.launches > 0
    assert r.reruns == 0  # baselines never re-run: a job whose runner died is lost
    assert r.lost == sum(r.lost_why.values())


def test_the_report_prints(sim: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert sim.main(["--quick", "--runs", "1", "--jobs", "12", "--bursts", "2"]) == 0
    out = capsys.readouterr().out
    for name in ("gha-mlops", "per-job+5m-idle", "cron-5m", "paid/busy", "goals"):
        assert name in out
