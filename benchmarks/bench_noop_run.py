"""No-op run of a 3-stage pipeline over 200 input files: `gha-mlops run` vs `dvc repro`.

Both tools get the same workspace layout and the same three stages; each is run once to
populate its caches, then timed on runs where nothing changed (goal: <= 0.12 s median).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--files", type=int, default=200)
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
                                                        cwd=ours_ws, runs=args.runs), 0.12)
    theirs = report("dvc repro (no-op)", time_command([dvc, "repro", "-q"], cwd=dvc_ws,
                                                      runs=args.runs))
    print(f"ratio gha-mlops / dvc: {ours / theirs:.2f}  (dvc is {theirs / ours:.1f}x slower)")


if __name__ == "__main__":
    main()
