"""The demo pipeline end to end after install: wall time of `gha-mlops demo` in a fresh
directory (goal: <= 30 s on 2 cores, >= 97 % test accuracy), then a second, cached run."""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import time

from _common import GHA_MLOPS, WORK


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    walls, cached, accuracies, models = [], [], [], set()
    for i in range(args.runs):
        target = WORK / f"demo-{i}"
        shutil.rmtree(target, ignore_errors=True)
        start = time.perf_counter()
        subprocess.run([str(GHA_MLOPS), "demo", str(target)], check=True, capture_output=True)
        walls.append(time.perf_counter() - start)
        start = time.perf_counter()
        subprocess.run([str(GHA_MLOPS), "run", "-q"], cwd=target, check=True,
                       capture_output=True)
        cached.append(time.perf_counter() - start)
        record = json.loads(subprocess.run(
            [str(GHA_MLOPS), "runs", "show", "latest~1", "--json"], cwd=target, check=True,
            capture_output=True, text=True).stdout)
        accuracies.append(record["metrics"]["metrics/eval.json"]["test_accuracy"])
        models.add(record["model"]["sha256"])
        print(f"run {i}: demo {walls[-1]:.2f} s, cached re-run {cached[-1]:.2f} s, "
              f"test accuracy {accuracies[-1]:.4f}, model {record['model']['sha256'][:16]}")
    print(f"demo wall: median {statistics.median(walls):.2f} s (goal <= 30 s: "
          f"{'met' if statistics.median(walls) <= 30 else 'NOT met'}); "
          f"cached re-run median {statistics.median(cached):.2f} s; "
          f"test accuracy min {min(accuracies):.4f} (goal >= 0.97: "
          f"{'met' if min(accuracies) >= 0.97 else 'NOT met'}); "
          f"distinct model hashes across fresh runs: {len(models)}")


if __name__ == "__main__":
    main()
