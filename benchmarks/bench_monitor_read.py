"""Reading the prediction log: rows per second of ``read_window`` over a directory.

Goal (issue 16, ``monitor check`` >= 10x Evidently on 1,000,000 rows x 50 features): the
read of such a window well under 10 s, and >= 150,000 rows/s on one core. The log is written
once by ``BatchWriter(sample=1.0)`` (1,000 rows a batch, as served) into
``benchmarks/.work/monitor_read/`` and kept for later runs: 45 FP32 features and 5
categorical string features as scalar tensors, one FP32 output. Each figure is the median of
3 reads; wall time with the reader's fetch threads, and the process's CPU time (every thread:
what one core would take). ``--one-core`` pins the process to one CPU; ``--before REV``
also times the reader of that git revision (once: it is slow) on the same log.

    .venv/bin/python benchmarks/bench_monitor_read.py [--rows 1000000] [--one-core]
        [--before 0cb20e2]
"""

from __future__ import annotations

import argparse
import calendar
import importlib.util
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from gha_mlops.monitor import predlog
from gha_mlops.monitor.predlog_writer import BatchWriter

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / ".work" / "monitor_read"
T0 = float(calendar.timegm((2026, 3, 10, 0, 0, 0)))
SPAN = 24 * 3600.0  # the rows spread over a day: 24 hour folders
NUMERIC, CATEGORICAL = 45, 5
SCHEMA = {"inputs": {**{f"num{i}": ["FP32", [-1]] for i in range(NUMERIC)},
                     **{f"cat{i}": ["BYTES", [-1]] for i in range(CATEGORICAL)}},
          "outputs": {"score": ["FP32", [-1]]}}


def write_log(root: Path, rows: int) -> None:
    """``rows`` requests through the writer, as the server logs them (unless already there)."""
    done = root / f"done-{rows}"
    if done.exists():
        return
    rng = np.random.default_rng(7)
    numbers = rng.normal(size=(rows, NUMERIC)).astype(np.float32)
    levels = np.array(["red", "green", "blue", "cyan", "magenta", "yellow"])
    cats = levels[rng.integers(0, len(levels), size=(rows, CATEGORICAL))]
    start = time.perf_counter()
    with BatchWriter(root, "bench", "v1", SCHEMA, max_rows=1000, max_pending=1024,
                     sample=1.0) as w:
        for i in range(rows):
            inputs: dict[str, Any] = {f"num{j}": float(numbers[i, j]) for j in range(NUMERIC)}
            inputs.update({f"cat{j}": str(cats[i, j]) for j in range(CATEGORICAL)})
            w.add(f"req-{i:08d}", inputs, {"score": float(numbers[i, 0])}, T0 + i * SPAN / rows)
            if i % 20_000 == 0:
                w.flush(None)  # never drop a batch: the benchmark needs every row
    assert w.written_rows == rows, (w.written_rows, w.dropped_rows)
    done.write_text("")
    print(f"wrote {rows:,} rows in {time.perf_counter() - start:.0f} s", file=sys.stderr)


def time_read(reader: ModuleType, root: Path, rows: int, runs: int) -> dict[str, float]:
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        win = reader.read_window(root, "bench", start=T0, end=T0 + SPAN)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        assert win.rows == rows and not win.skipped, (win.rows, win.skipped)
        del win
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    return {"wall_s": wall, "cpu_s": cpu, "rows_per_s_wall": rows / wall,
            "rows_per_s_cpu": rows / cpu}


def reader_at(rev: str) -> ModuleType:
    """The predlog module of git revision ``rev``, loaded beside the current one."""
    source = subprocess.run(["git", "show", f"{rev}:src/gha_mlops/monitor/predlog.py"],
                            cwd=REPO, check=True, capture_output=True).stdout
    path = WORK / f"predlog_{rev}.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location(f"predlog_{rev}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--one-core", action="store_true")
    parser.add_argument("--before", metavar="REV")
    args = parser.parse_args()
    root = WORK / f"log-{args.rows}"
    root.mkdir(parents=True, exist_ok=True)
    write_log(root, args.rows)
    if args.one_core:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print(f"{args.rows:,} rows x {NUMERIC + CATEGORICAL} features, cpus "
          f"{sorted(os.sched_getaffinity(0))}, isal {importlib.util.find_spec('isal') is not None}")
    rows = [("this tree", time_read(predlog, root, args.rows, 3))]
    if args.before:
        rows.append((args.before, time_read(reader_at(args.before), root, args.rows, 1)))
    for name, r in rows:
        print(f"{name:<12} wall {r['wall_s']:6.2f} s  {r['rows_per_s_wall']:>9,.0f} rows/s   "
              f"cpu {r['cpu_s']:6.2f} s  {r['rows_per_s_cpu']:>9,.0f} rows/s")
    if args.before:
        print(f"speed-up (cpu): {rows[1][1]['cpu_s'] / rows[0][1]['cpu_s']:.1f}x")
    goal = rows[0][1]["rows_per_s_cpu"] >= 150_000
    print(f"goal >= 150,000 rows/s on one core (cpu): {'met' if goal else 'NOT met'}")


if __name__ == "__main__":
    main()
