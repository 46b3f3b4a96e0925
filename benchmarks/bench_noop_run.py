"""No-op runs: `gha-mlops run` where nothing changed, against `dvc repro`, and in the demo.

1. A 3-stage pipeline over 200 input files: both tools get the same workspace layout and the
   same three stages; each is run once to populate its caches, then timed on runs where
   nothing changed.
2. The demo's workspace (`gha-mlops demo DIR --no-run`, run once): a pinned dataset (a
   `data:` dependency) and a directory remote, so a no-op also reads the dataset pointer and
   names the remote in its record; it must not pay for the network stack it does not use.

Goal for each gha-mlops no-op: <= 70 ms median (a bare `python -c pass` takes ~10 ms).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from _common import GHA_MLOPS, WORK, ensure_dvc, report, time_command

STAGES = {
    "prepare": ("mkdir -p prepared && cat data/*.txt > prepared/all.txt", ["data"],
                ["prepared"]),
    "train": ("mkdir -p models && sha256sum prepared/all.txt > models/model.bin",
              ["prepared"], ["models/model.bin"]),
    "evaluate": ("wc -c models/model.bin > eval.txt", ["models/model.bin"], ["eval.txt"]),
}


def make_workspace(root: Path, files: int) -> None:
    if root.exists():
        shutil.rmtree(root)
    (root / "data").mkdir(parents=True)
    for i in range(files):
        (root / "data" / f"f{i:04d}.txt").write_text(f"sample {i}\n" * 20)
    (root / "params.yaml").write_text("train:\n  lr: 0.1\n")


def gha_yaml() -> str:
    lines = ["seed: 0", "stages:"]
    for name, (cmd, deps, outs) in STAGES.items():
        lines += [f"  {name}:", f"    cmd: {cmd}", f"    deps: {deps}", f"    outs: {outs}"]
    return "\n".join(lines) + "\n"


def dvc_yaml() -> str:
    lines = ["stages:"]
    for name, (cmd, deps, outs) in STAGES.items():
        lines += [f"  {name}:", f"    cmd: {cmd}", f"    deps: {deps}", f"    outs: {outs}"]
    return "\n".join(lines) + "\n"


GOAL = 0.07


def demo_noop(runs: int) -> None:
    """Time the no-op run in the demo's workspace (its first run trains: needs torch)."""
    demo_ws = WORK / "noop-demo"
    if demo_ws.exists():
        shutil.rmtree(demo_ws)
    subprocess.run([str(GHA_MLOPS), "demo", str(demo_ws), "--no-run"], check=True,
                   capture_output=True)
    first = subprocess.run([str(GHA_MLOPS), "run", "-q"], cwd=demo_ws, capture_output=True,
                           text=True, check=False)
    if first.returncode != 0:
        print("demo workspace: the first run failed (is the demo extra installed?), not "
              "timed:\n" + first.stderr[-2000:], file=sys.stderr)
        return
    report("gha-mlops run (no-op, demo)", time_command([str(GHA_MLOPS), "run", "-q"],
                                                       cwd=demo_ws, runs=runs), GOAL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--no-demo", action="store_true",
                        help="Skip the demo workspace (its first run trains a model).")
    args = parser.parse_args()

    ours_ws = WORK / "noop-gha-mlops"
    make_workspace(ours_ws, args.files)
    (ours_ws / "mlops.yaml").write_text(gha_yaml())
    subprocess.run([str(GHA_MLOPS), "run", "-q"], cwd=ours_ws, check=True,
                   capture_output=True)

    dvc = str(ensure_dvc())
    dvc_ws = WORK / "noop-dvc"
    make_workspace(dvc_ws, args.files)
    (dvc_ws / "dvc.yaml").write_text(dvc_yaml())
    subprocess.run(["git", "init", "-q"], cwd=dvc_ws, check=True)
    subprocess.run([dvc, "init", "-q"], cwd=dvc_ws, check=True)
    subprocess.run([dvc, "config", "core.analytics", "false"], cwd=dvc_ws, check=True)
    subprocess.run([dvc, "repro", "-q"], cwd=dvc_ws, check=True, capture_output=True)

    ours = report("gha-mlops run (no-op)", time_command([str(GHA_MLOPS), "run", "-q"],
                                                        cwd=ours_ws, runs=args.runs), GOAL)
    theirs = report("dvc repro (no-op)", time_command([dvc, "repro", "-q"], cwd=dvc_ws,
                                                      runs=args.runs))
    print(f"ratio gha-mlops / dvc: {ours / theirs:.2f}  (dvc is {theirs / ours:.1f}x slower)")
    if not args.no_demo:
        demo_noop(args.runs)


if __name__ == "__main__":
    main()
