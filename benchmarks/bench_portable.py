"""What portable determinism costs: the demo's train stage with the CPU kernels pinned to the
architecture's baseline (the default) vs native dispatch (``GHA_MLOPS_DETERMINISM=native``).

The demo project is written and its `prepare` stage run once; then `python src/train.py` runs
in it with the environment `gha-mlops run` gives a stage, alternating the two modes so that
a busy machine slows both alike. Wall time of the whole process (torch's import included,
as a stage pays it) and the model hash of each mode are printed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import GHA_MLOPS, WORK

# Variables that would change what is measured if the shell running this had them set.
_DISPATCH = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS",
             "NPY_ENABLE_CPU_FEATURES", "NPY_DISABLE_CPU_FEATURES", "GHA_MLOPS_DETERMINISM",
             "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="runs of each mode")
    args = parser.parse_args()
    project = WORK / "portable-demo"
    shutil.rmtree(project, ignore_errors=True)
    subprocess.run([str(GHA_MLOPS), "demo", str(project), "--no-run"], check=True,
                   capture_output=True)
    subprocess.run([str(GHA_MLOPS), "run", "-q", "-s", "prepare"], cwd=project, check=True,
                   capture_output=True)
    base = {k: v for k, v in os.environ.items() if k not in _DISPATCH}
    base.update({"GHA_MLOPS_SEED": "42", "PYTHONHASHSEED": "42",
                 "GHA_MLOPS_PARAMS": str(project / "params.yaml")})
    python = str(Path(GHA_MLOPS).parent / "python")
    modes = {"native": {"GHA_MLOPS_DETERMINISM": "native"}, "portable": {}}
    times: dict[str, list[float]] = {m: [] for m in modes}
    models: dict[str, set[str]] = {m: set() for m in modes}
    for i in range(args.runs):
        for mode, extra in modes.items():
            start = time.perf_counter()
            subprocess.run([python, "src/train.py"], cwd=project, env={**base, **extra},
                           check=True, capture_output=True)
            times[mode].append(time.perf_counter() - start)
            digest = hashlib.sha256((project / "models/model.pt").read_bytes()).hexdigest()
            models[mode].add(digest)
            print(f"run {i} {mode:<8} {times[mode][-1]:6.2f} s  model {digest[:16]}")
    native, portable = (statistics.median(times[m]) for m in modes)
    print(f"train stage, median of {args.runs}: native {native:.2f} s, portable "
          f"{portable:.2f} s ({(portable / native - 1) * 100:+.0f} %); models: native "
          f"{', '.join(sorted(h[:16] for h in models['native']))}, portable "
          f"{', '.join(sorted(h[:16] for h in models['portable']))}", file=sys.stdout)


if __name__ == "__main__":
    main()
