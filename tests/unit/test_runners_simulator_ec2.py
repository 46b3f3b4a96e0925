"""The EC2 runner simulator (benchmarks/sim_runners_ec2.py) on small traces.

What is real there is the product's: the Scaler, State and decide() on a ``backend: ec2`` pool,
so these tests fail when the policy stops draining a runner under notice, booting a
replacement for a busy one, removing an instance past its expiry or re-running a job whose
instance went. What is modelled is AWS (capacity, prices, reclaims) and what the real EC2
backend reports through the port (Machine.notice, expires_at, ``lost``), including its
capacity rule (one spot request over all types, then on-demand at once). The field's
strategies show the failure each is known for.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest

from tests.unit.test_runners_simulator import load_sim

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def load_ec2() -> ModuleType:
    load_sim()  # registers sim_runners (and puts benchmarks/ on the path)
    import importlib.util

    spec = importlib.util.spec_from_file_location("sim_runners_ec2",
                                                  BENCH / "sim_runners_ec2.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ec2() -> ModuleType:
    return load_ec2()


def test_gha_mlops_loses_nothing_to_interruptions_or_shortages(ec2: ModuleType) -> None:
    # Interruptions 5x the realistic rate and a 15-minute shortage in every type, so both
    # happen in a 40-job trace (at 20x a job is interrupted twice and lost: the once budget).
    p = replace(ec2.QUICK, seed=3, hazard_scale=5.0, global_shortage=900.0, die=0.0)
    r = ec2.simulate("gha-mlops", p)
    assert r.interrupted_jobs > 0 and r.fallbacks > 0 and r.notices > 0
    assert r.lost == 0 and r.served == p.jobs, r.lost_why
    assert r.user_failed == 0
    assert r.reruns == r.interrupted_jobs  # each interrupted job re-run once
    assert r.od_hours > 0 and r.spot_hours > 0
    assert not r.notes  # the scaler's state is clean at the end


def test_the_baselines_show_their_known_failures(ec2: ModuleType) -> None:
    p = replace(ec2.QUICK, seed=3, hazard_scale=5.0, global_shortage=900.0, die=0.0)
    tf = ec2.simulate("terraform-style", p)
    assert tf.interrupted_jobs > 0 and tf.reruns == 0
    assert tf.user_failed_interrupt == tf.interrupted_jobs == tf.lost  # never re-run
    assert tf.od_hours == 0  # no on-demand failover
    # No spot capacity in any type for the whole trace: Terraform-style's launches are
    # retried and dropped and its jobs wait forever; CML's workflows fail at launch;
    # gha-mlops runs them all on on-demand.
    short = replace(p, global_shortage=p.span)
    tf = ec2.simulate("terraform-style", short)
    assert tf.refused > 0 and tf.lost > 0 and tf.lost_why["never started"] == tf.lost
    cml = ec2.simulate("cml-style", short)
    assert cml.refused > 0 and cml.user_failed == cml.lost == cml.refused
    assert cml.user_failed_interrupt == 0
    g = ec2.simulate("gha-mlops", short)
    assert g.lost == 0 and g.fallbacks > 0
    # And CML's notice re-runs the whole workflow: nothing lost to interruptions.
    cml = ec2.simulate("cml-style", p)
    assert cml.interrupted_jobs > 0 and cml.reruns >= cml.interrupted_jobs
    assert cml.user_failed_interrupt == 0


def test_billing_is_per_second_with_a_60_s_minimum(ec2: ModuleType) -> None:
    p = replace(ec2.QUICK, seed=1, jobs=6, bursts=1, duration_median=20.0,
                duration_sigma=0.0, boot_median=10.0, boot_sigma=0.0, launch_fail=0.0,
                die=0.0, webhook_loss=0.0)
    r = ec2.simulate("on-demand", p)
    assert r.lost == 0 and r.launches >= p.jobs
    price = ec2.CHEAPEST_ON_DEMAND.on_demand
    # Each instance lives ~30 s (boot 10 + job 20 + a pass), billed 60 s.
    assert r.paid == pytest.approx(60.0 * r.launches)
    assert r.dollars == pytest.approx(r.launches * 60.0 / 3600 * price)


def test_same_streams_for_every_strategy(ec2: ModuleType) -> None:
    p = replace(ec2.QUICK, seed=4)
    a, b = ec2.Capacity(p), ec2.Capacity(p)
    assert a.windows == b.windows and a.everywhere == b.everywhere
    d1, d2 = ec2.Ec2Draws(p), ec2.Ec2Draws(p)
    t = ec2.TYPES[0]
    assert [d1.spot_life(t) for _ in range(5)] == [d2.spot_life(t) for _ in range(5)]
    first = ec2.simulate("gha-mlops", replace(p, jobs=15, bursts=1))
    again = ec2.simulate("gha-mlops", replace(p, jobs=15, bursts=1))
    assert (first.waits, first.dollars) == (again.waits, again.dollars)


def test_price_capacity_optimized_prefers_deep_pools(ec2: ModuleType) -> None:
    T = ec2.InstanceType
    cheap_thin, mid_deep, dear_deep = (T("a", 1.0, 0.1, 0.30), T("b", 1.0, 0.2, 0.03),
                                       T("c", 1.0, 0.3, 0.04))
    assert ec2.price_capacity_optimized([cheap_thin, mid_deep, dear_deep]) is mid_deep
    assert ec2.price_capacity_optimized([cheap_thin, dear_deep]) is dear_deep
    assert ec2.price_capacity_optimized([dear_deep]) is dear_deep
    assert ec2.lowest_price([cheap_thin, mid_deep, dear_deep]) is cheap_thin


def test_the_report_prints_every_strategy_and_goal(
        ec2: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert ec2.main(["--quick", "--runs", "1", "--jobs", "10", "--bursts", "2"]) == 0
    out = capsys.readouterr().out
    for word in (*ec2.STRATEGIES, "paid/busy", "wait p95", "dollars", "goals",
                 "cost>=40% below on-demand"):
        assert word in out


def test_the_real_policy_drains_a_noticed_runner(ec2: ModuleType) -> None:
    # The simulated backend only reports the notice (Machine.notice, as the real EC2 backend's
    # list() does); draining is the real decide()'s. Without it, noticed idle/booting runners
    # sit until the instance is reclaimed and take jobs they cannot finish.
    p = replace(ec2.QUICK, seed=3, hazard_scale=20.0, die=0.0)
    g, tf = ec2.simulate("gha-mlops", p), ec2.simulate("terraform-style", p)
    assert g.notices > 0 and g.drained_on_notice > 0
    assert g.undrained == 0  # no noticed runner was still idle or booting two minutes later
    # Seen at the next full pass (list() is where the notice is read), never later.
    assert max(g.notice_to_drain) <= p.reconcile_interval + 1.0
    assert tf.undrained > 0 and tf.doomed_starts > 0  # the notice ignored


def test_a_busy_noticed_runner_gets_its_replacement_early(ec2: ModuleType) -> None:
    # Its job goes on; the policy counts one more runner of demand, so a replacement boots
    # during the two minutes and the re-run waits less than a boot.
    p = replace(ec2.QUICK, seed=3, hazard_scale=20.0, die=0.0)
    g = ec2.simulate("gha-mlops", p)
    assert g.interrupted_jobs > 0 and g.rerun_waits
    assert statistics.median(g.rerun_waits) < 0.7 * p.boot_median, g.rerun_waits


def test_rerun_on_demand_sends_the_interrupted_jobs_replacements_on_demand(
        ec2: ModuleType) -> None:
    # ec2.rerun_on_demand: the real scaler marks the replacement (LaunchSpec.
    # replaces_interrupted) and the real backend rule (first_lifecycle) launches it
    # on-demand: more on-demand hours, no fallback needed for it, nothing lost.
    p = replace(ec2.QUICK, seed=3, hazard_scale=20.0, die=0.0)
    spot, od = ec2.simulate("gha-mlops", p), ec2.simulate("gha-mlops",
                                                          replace(p, rerun_on_demand=1))
    assert spot.interrupted_jobs > 0 and od.interrupted_jobs > 0
    assert od.od_hours > spot.od_hours and od.fallbacks <= spot.fallbacks + 1
    assert od.lost == 0


def test_the_real_policy_removes_an_instance_past_its_expiry(ec2: ModuleType) -> None:
    # 10-minute jobs on instances that expire 4 + 1 minutes after launch: the policy removes
    # each whatever its runner does, and does not re-run the job (it outlived the pool).
    p = replace(ec2.QUICK, seed=1, jobs=4, bursts=1, duration_median=600.0,
                duration_sigma=0.0, hazard_scale=0.0, global_shortage=0.0,
                shortages_per_hour=0.0, die=0.0, launch_fail=0.0, webhook_loss=0.0,
                max_lifetime=240.0, expiry_grace=60.0, drain=1800.0)
    r = ec2.simulate("gha-mlops", p)
    assert r.expired == r.launches == p.jobs and r.expired_jobs == p.jobs
    assert r.reruns == 0 and r.lost == p.jobs
    assert set(r.lost_why) == {"its instance passed its expiry (max_lifetime + expiry_grace) "
                               "under it; not re-run"}
    # Removed at the first full pass past the expiry: billed launch -> expiry (+ a pass).
    assert r.paid <= p.jobs * (300.0 + p.reconcile_interval + 1.0)
    assert not r.notes


def test_capacity_spot_waits_where_spot_then_on_demand_falls_back(ec2: ModuleType) -> None:
    # The simulated fleet follows the pool's capacity policy like the real backend: one spot
    # request over every type, then on-demand at once, or (spot) a retryable error the
    # scaler backs off from until capacity returns.
    p = replace(ec2.QUICK, seed=3, global_shortage=900.0, hazard_scale=0.0, die=0.0)
    fallback = ec2.simulate("gha-mlops", p)
    spot = ec2.simulate("gha-mlops", replace(p, capacity="spot"))
    assert fallback.fallbacks == fallback.refused > 0 and fallback.od_hours > 0
    assert spot.refused > 0 and spot.fallbacks == 0 and spot.od_hours == 0
    assert spot.lost == fallback.lost == 0
    assert spot.wait_p95 > fallback.wait_p95  # its jobs waited for spot capacity
