"""Loading and validating a large ``mlops.yaml``: N stages (5,000 and 20,000 by default).

The pipeline has a realistic shape: groups of stages that each prepare one shard (a chain
``prep -> feat -> train``), fan-in stages that read every output of a group, and a final
stage reading every fan-in. Each stage has deps, params, outs and metrics, so the checks of
the stage graph (overlapping outputs, dependency -> producer, cycles, topological order) and
of the params file all see N stages. Timed: ``load_pipeline`` with no validated-config cache
(``validate``: the path of a first run or an edited file; goal for 20,000 stages: < 2 s),
then with the cache a no-op ``gha-mlops run`` reads (``cached``), and apart the questions the
run planner asks of the loaded pipeline (``plan``); median of ``--runs`` runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from gha_mlops.config import load_pipeline  # noqa: E402

GROUP = 50  # shards per fan-in


def make_workspace(root: Path, stages: int) -> None:
    """``mlops.yaml``, ``params.yaml`` and the raw inputs for about ``stages`` stages."""
    lines = ["seed: 0", "stages:"]
    shards = max(1, stages // 3 - stages // (3 * GROUP) - 1)
    fan_ins: list[str] = []
    group: list[str] = []
    count = 0
    (root / "raw").mkdir()
    for s in range(shards):
        (root / "raw" / f"s{s}.csv").write_text("x\n")
        lines += [
            f"  prep-{s}:", f"    cmd: python prep.py {s}",
            f"    deps: [raw/s{s}.csv, prep.py]", "    params: [prep]",
            f"    outs: [work/s{s}/clean.csv]", f"    metrics: [metrics/prep-{s}.json]",
            f"  feat-{s}:", f"    cmd: python feat.py {s}",
            f"    deps: [work/s{s}/clean.csv, feat.py]", "    params: [feat.window]",
            f"    outs: [work/s{s}/features]", f"    metrics: [metrics/feat-{s}.json]",
            f"  train-{s}:", f"    cmd: python train.py {s}",
            f"    deps: [work/s{s}/features/part.parquet, train.py]",
            "    params: [train.lr, train.epochs]",
            f"    outs: [models/m{s}.pt]", f"    metrics: [metrics/train-{s}.json]",
        ]
        count += 3
        group.append(f"models/m{s}.pt")
        if len(group) == GROUP or s == shards - 1:
            g = len(fan_ins)
            lines += [f"  merge-{g}:", f"    cmd: python merge.py {g}",
                      f"    deps: [{', '.join(group)}]", "    params: [merge]",
                      f"    outs: [merged/g{g}.pt]", f"    metrics: [metrics/merge-{g}.json]"]
            fan_ins.append(f"merged/g{g}.pt")
            group = []
            count += 1
    lines += ["  evaluate:", "    cmd: python evaluate.py",
              f"    deps: [{', '.join(fan_ins)}]", "    params: [eval]",
              "    outs: [report/summary.md]", "    metrics: [metrics/eval.json]"]
    count += 1
    (root / "mlops.yaml").write_text("\n".join(lines) + "\n")
    for script in ("prep.py", "feat.py", "train.py", "merge.py", "evaluate.py"):
        (root / script).write_text("")
    (root / "params.yaml").write_text(
        "prep: {drop_na: true}\nfeat: {window: 7}\ntrain: {lr: 0.01, epochs: 5}\n"
        "merge: {how: mean}\neval: {split: test}\n")
    print(f"  {count} stages, mlops.yaml {len(chr(10).join(lines)) / 1e6:.1f} MB",
          file=sys.stderr)


def time_load(root: Path, runs: int) -> tuple[list[float], list[float]]:
    """Seconds per ``load_pipeline`` over ``runs`` runs, and seconds for the questions the run
    planner then asks (what is downstream of a stage, which stage produces each dep)."""
    loads, plans = [], []
    for _ in range(runs):
        start = time.perf_counter()
        pipeline = load_pipeline(root / "mlops.yaml")
        loaded = time.perf_counter()
        pipeline.downstream({next(iter(pipeline.stages))})
        for stage in pipeline.stages.values():
            for dep in stage.deps:
                pipeline.producer_of(dep)
        loads.append(loaded - start)
        plans.append(time.perf_counter() - loaded)
    return loads, plans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stages", type=int, nargs="+", default=[5000, 20000])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    for n in args.stages:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            make_workspace(root, n)
            fresh, plan = time_load(root, args.runs)  # no .gha-mlops/: validated every time
            (root / ".gha-mlops").mkdir()
            load_pipeline(root / "mlops.yaml")  # writes the validated-config cache
            cached, _ = time_load(root, args.runs)
        for what, times in (("validate", fresh), ("cached", cached), ("plan", plan)):
            med = statistics.median(times)
            goal = ("" if n < 20000 or what != "validate"
                    else f"   goal < 2 s: {'met' if med < 2 else 'NOT met'}")
            print(f"{what:<8} {n:>6} stages   median {med:7.3f} s   min {min(times):7.3f} s"
                  f"   max {max(times):7.3f} s   n={len(times)}{goal}")

if __name__ == "__main__":
    main()
