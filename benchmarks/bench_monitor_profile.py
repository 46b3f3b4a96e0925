"""The reference profile's fidelity: drift verdicts from a reference rebuilt out of the profile
against verdicts from the full reference data, and the profile's size.

Goal (issue 16): a compact profile, not the evaluation data, stored with the model, with drift
verdicts as if the full data were there. Seven distributions (normal, lognormal, exponential,
uniform, bimodal, Student t(2), Poisson(20)), a 1,000,000-row reference, windows of 1k, 5k and
100k rows shifted by 0 to 0.3 reference standard deviations: the worst KS statistic and normed
Wasserstein differences, and how many verdicts (KS at the 0.05 level, Wasserstein at 0.1, the
test Evidently's defaults pick for a large reference) differ.

    .venv/bin/python benchmarks/bench_monitor_profile.py
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from gha_mlops.monitor.drift import feature_drift, ks_statistic, wasserstein_normed
from gha_mlops.monitor.profile import build_profile, profile_json, reference_values

N = 1_000_000
SHIFTS = (0.0, 0.02, 0.05, 0.08, 0.1, 0.12, 0.2, 0.3)


def _distributions(rng: np.random.Generator) -> dict[str, Callable[[int], Any]]:
    return {
        "normal": lambda n: rng.normal(0, 1, n),
        "lognormal": lambda n: rng.lognormal(0, 1, n),
        "exponential": lambda n: rng.exponential(1, n),
        "uniform": lambda n: rng.uniform(0, 1, n),
        "bimodal": lambda n: np.where(rng.random(n) < 0.7, rng.normal(0, 1, n),
                                      rng.normal(6, 0.5, n)),
        "student_t2": lambda n: rng.standard_t(2, n),
        "poisson20": lambda n: rng.poisson(20, n).astype(float),
    }


def main() -> None:
    rng = np.random.default_rng(0)
    worst_ks = worst_wd = 0.0
    cases = differ = 0
    start = time.perf_counter()
    for name, draw in _distributions(rng).items():
        full = draw(N)
        rebuilt = reference_values(build_profile({"x": full}).features[0])
        sd = float(full.std())
        for rows in (1_000, 5_000, 100_000):
            for shift in SHIFTS:
                current = draw(rows) + shift * sd
                worst_ks = max(worst_ks, abs(ks_statistic(full, current)
                                             - ks_statistic(rebuilt, current)))
                worst_wd = max(worst_wd, abs(wasserstein_normed(full, current)
                                             - wasserstein_normed(rebuilt, current)))
                for test in ("ks", "wasserstein"):
                    verdicts = {feature_drift("x", ref, current, kind="numerical",
                                              test=test).drifted for ref in (full, rebuilt)}
                    differ += len(verdicts) > 1
                cases += 1
        print(f"{name:12s} worst so far: KS {worst_ks:.5f}, normed Wasserstein {worst_wd:.5f}",
              flush=True)
    columns = {f"f{i}": rng.normal(size=N) for i in range(50)}
    size = len(json.dumps(profile_json(build_profile(columns)), sort_keys=True))
    print(f"{cases} cases x 2 tests: {differ} verdicts differ; "
          f"{time.perf_counter() - start:.0f} s")
    print(f"profile of 50 numerical features x {N:,} rows: {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
