"""Helpers for the side-by-side benchmarks: timing whole commands, venv discovery, output."""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / ".work"
GHA_MLOPS = REPO / ".venv" / "bin" / "gha-mlops"
DVC_VENV = WORK / "dvc-venv"
DVC = DVC_VENV / "bin" / "dvc"


def ensure_dvc() -> Path:
    """DVC in its own venv (never in ours: it would change what we measure)."""
    if not DVC.exists():
        print("installing dvc into", DVC_VENV, file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(DVC_VENV)], check=True)
        subprocess.run([str(DVC_VENV / "bin/pip"), "install", "-q", "dvc"], check=True)
    return DVC


def time_command(argv: Sequence[str], *, cwd: Path | None = None, runs: int = 10,
                 warmup: int = 2, env: dict[str, str] | None = None) -> list[float]:
    """Wall seconds of ``argv`` over ``runs`` runs after ``warmup`` unmeasured ones."""
    # Measure what users get: pip-installed packages have bytecode. A developer shell with
    # PYTHONDONTWRITEBYTECODE=1 would make every start recompile our modules instead.
    full_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    full_env.update(env or {})
    times = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        proc = subprocess.run(list(argv), cwd=cwd, env=full_env, capture_output=True)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n"
                             f"{proc.stdout.decode()}\n{proc.stderr.decode()}")
        if i >= warmup:
            times.append(elapsed)
    return times


def report(name: str, times: list[float], goal: float | None = None) -> float:
    med = statistics.median(times)
    line = (f"{name:<34} median {med * 1000:8.1f} ms   min {min(times) * 1000:7.1f} ms   "
            f"max {max(times) * 1000:7.1f} ms   n={len(times)}")
    if goal is not None:
        line += f"   goal <= {goal * 1000:.0f} ms: {'met' if med <= goal else 'NOT met'}"
    print(line)
    return med


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)
