"""Drift of 1,000,000 rows x 50 features: gha_mlops.monitor.drift against Evidently, side by side.

The same data and the same tests (Evidently's defaults on both sides): 30 float features (20
with 10,000 reference rows would take KS, here the reference has as many rows as current, so
normed Wasserstein), 5 float features with 3 distinct values (Jensen-Shannon), 15 string
categories (Jensen-Shannon), with shifts from none to large so that both verdicts occur.
Evidently gets pandas frames with a DataDefinition naming each column's kind, gha-mlops gets
numpy arrays and the same kinds; building either input is not timed. Reported: the median
wall time of each over --repeats runs, the speed-up, and the share of features whose verdicts
agree.

Goal (issue 16): agreement >= 99 % and gha-mlops >= 10x faster.
Run: .venv/bin/python benchmarks/bench_monitor_drift.py [--rows 1000000] [--repeats 3]
(needs ``pip install evidently 'pandas<3'`` in .venv; Evidently 0.7 does not import under
pandas 3).
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time
import warnings
from typing import Any

import numpy as np

from gha_mlops.monitor.drift import dataset_drift

CATEGORIES = np.array([f"cat_{i}" for i in range(12)])


def make_data(
    rows: int, reference_rows: int, seed: int = 16
) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """Reference and current columns, and each one's kind."""
    gen = np.random.default_rng(seed)
    reference: dict[str, Any] = {}
    current: dict[str, Any] = {}
    kinds: dict[str, str] = {}
    shifts = np.linspace(0.0, 0.3, 30)  # from none to ~3x Wasserstein's threshold
    for i, shift in enumerate(shifts):
        name = f"num_{i:02d}"
        reference[name] = gen.normal(size=reference_rows)
        current[name] = gen.normal(shift, 1.0 + shift / 2, size=rows)
        kinds[name] = "numerical"
    for i, tilt in enumerate(np.linspace(0.0, 0.3, 5)):
        name = f"few_{i}"
        reference[name] = gen.choice([0.0, 1.0, 2.0], size=reference_rows)
        current[name] = gen.choice(
            [0.0, 1.0, 2.0], size=rows, p=[1 / 3 - tilt, 1 / 3, 1 / 3 + tilt]
        )
        kinds[name] = "numerical"
    base = np.linspace(2.0, 1.0, CATEGORIES.size)
    base /= base.sum()
    for i, tilt in enumerate(np.linspace(0.0, 0.6, 15)):
        name = f"cat_{i:02d}"
        moved = base * np.exp(tilt * np.linspace(-1.0, 1.0, CATEGORIES.size))
        reference[name] = gen.choice(CATEGORIES, size=reference_rows, p=base)
        current[name] = gen.choice(CATEGORIES, size=rows, p=moved / moved.sum())
        kinds[name] = "categorical"
    return reference, current, kinds


def run_ours(
    reference: dict[str, Any], current: dict[str, Any], kinds: dict[str, str]
) -> tuple[float, dict[str, bool], dict[str, str]]:
    start = time.perf_counter()
    result = dataset_drift(reference, current, kinds=kinds)
    elapsed = time.perf_counter() - start
    return (
        elapsed,
        {f.name: f.drifted for f in result.features},
        {f.name: f.test for f in result.features},
    )


def run_evidently(
    reference: dict[str, Any], current: dict[str, Any], kinds: dict[str, str]
) -> tuple[float, dict[str, bool], dict[str, str]]:
    pd = importlib.import_module("pandas")
    evidently = importlib.import_module("evidently")
    presets = importlib.import_module("evidently.presets")
    ref, cur = pd.DataFrame(reference), pd.DataFrame(current)
    definition = evidently.DataDefinition(
        numerical_columns=[n for n, k in kinds.items() if k == "numerical"],
        categorical_columns=[n for n, k in kinds.items() if k == "categorical"],
    )
    ref_ds = evidently.Dataset.from_pandas(ref, data_definition=definition)
    cur_ds = evidently.Dataset.from_pandas(cur, data_definition=definition)
    start = time.perf_counter()
    snapshot = evidently.Report([presets.DataDriftPreset()]).run(cur_ds, ref_ds)
    elapsed = time.perf_counter() - start
    verdicts: dict[str, bool] = {}
    methods: dict[str, str] = {}
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if not config["type"].endswith("ValueDrift"):
            continue
        method, limit, value = config["method"], config["threshold"], metric["value"]
        if method.startswith("K-S"):
            verdicts[config["column"]] = value <= limit
        elif "p_value" in method:
            verdicts[config["column"]] = value < limit
        else:
            verdicts[config["column"]] = value >= limit
        methods[config["column"]] = method
    return elapsed, verdicts, methods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reference-rows", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--evidently-repeats", type=int, default=None)
    args = parser.parse_args()
    reference_rows = args.reference_rows or args.rows
    reference, current, kinds = make_data(args.rows, reference_rows)
    print(f"{args.rows:,} current rows, {reference_rows:,} reference rows, {len(kinds)} features")
    ours = [run_ours(reference, current, kinds) for _ in range(args.repeats)]
    our_time = statistics.median(t for t, _, _ in ours)
    print(
        f"gha-mlops  median {our_time:8.2f} s  (runs: {', '.join(f'{t:.2f}' for t, _, _ in ours)})"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = [
            run_evidently(reference, current, kinds)
            for _ in range(args.evidently_repeats or args.repeats)
        ]
    their_time = statistics.median(t for t, _, _ in theirs)
    print(
        f"Evidently  median {their_time:8.2f} s  (runs: {', '.join(f'{t:.2f}' for t, _, _ in theirs)})"
    )
    our_verdicts, our_tests = ours[0][1], ours[0][2]
    their_verdicts, their_methods = theirs[0][1], theirs[0][2]
    agree = [n for n in kinds if our_verdicts[n] == their_verdicts.get(n)]
    print(f"speed-up   {their_time / our_time:8.1f}x   (goal >= 10x)")
    print(
        f"agreement  {len(agree)}/{len(kinds)} = {100 * len(agree) / len(kinds):.1f} %   "
        f"(goal >= 99 %); drifted: ours {sum(our_verdicts.values())}, "
        f"Evidently {sum(their_verdicts.values())}"
    )
    for name in kinds:
        if name not in agree:
            print(
                f"  differs: {name}: ours {our_tests[name]} {our_verdicts[name]}, "
                f"Evidently {their_methods.get(name)} {their_verdicts.get(name)}"
            )
    tests = sorted(set(our_tests.values()))
    print("tests used: " + ", ".join(f"{t} x{list(our_tests.values()).count(t)}" for t in tests))


if __name__ == "__main__":
    main()
