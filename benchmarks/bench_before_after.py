"""Before/after: the same benchmarks on two revisions of gha-mlops, alternated in one sitting.

A refactor must keep every figure. This runs each benchmark script of ``--before`` (a
checkout of the older revision: ``git worktree add /tmp/before REV``) and of this checkout in
turn, ``--rounds`` times, so a machine that gets busier or quieter affects both alike, and
prints the median of each figure per side. Both sides use this checkout's ``.venv`` (its
packages), each with its own source on ``PYTHONPATH`` and its own benchmark scripts.

    git worktree add /tmp/before cf0a06a
    git worktree add /tmp/after HEAD
    .venv/bin/python benchmarks/bench_before_after.py --before /tmp/before --after /tmp/after

Figures are read from the lines the scripts print: ``<name> median <x> ms|s``, and the
``operation  gha-mlops`` table of bench_data_transfer.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BENCHES: dict[str, list[str]] = {
    "startup": ["bench_startup.py", "--runs", "20"],
    "noop": ["bench_noop_run.py", "--runs", "15"],
    "transfer": ["bench_data_transfer.py", "--skip-dvc", "--skip-hash", "--runs", "1"],
    "report": ["bench_report.py", "--runs", "5"],
}
# Installed, not checked in: linked from this checkout into --before.
SHARED = (".venv", ".ci/npm/node_modules", "benchmarks/.work/dvc-venv")
_MEDIAN = re.compile(r"^(?P<name>\S.*?)\s+median\s+(?P<value>[0-9.]+)\s*(?P<unit>ms|s)\b")
_TRANSFER = re.compile(r"^(?P<name>add|status|push|pull|fetch)\s+(?P<value>[0-9.]+)s")


def figures(output: str) -> dict[str, float]:
    """``{figure name: seconds}`` from a benchmark's output."""
    found = {}
    for line in output.splitlines():
        m = _MEDIAN.match(line.strip())
        if m:
            scale = 1e-3 if m["unit"] == "ms" else 1.0
            found[m["name"].strip()] = float(m["value"]) * scale
            continue
        m = _TRANSFER.match(line.strip())
        if m:
            found[f"data {m['name']}"] = float(m["value"])
    return found


def run_side(tree: Path, argv: list[str]) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(tree / "src")
    proc = subprocess.run([sys.executable, str(tree / "benchmarks" / argv[0]), *argv[1:]],
                          cwd=tree / "benchmarks", env=env, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{tree}: {argv[0]} failed:\n{proc.stdout[-2000:]}\n"
                         f"{proc.stderr[-2000:]}")
    return figures(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, default=REPO,
                        help="the newer checkout (default: this one). Put both on the same "
                        "kind of path: where a workspace lies (inside a git repository or "
                        "not, its disk) changes the figures of data transfers")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=sorted(BENCHES), action="append")
    args = parser.parse_args()
    before, after = args.before.resolve(), args.after.resolve()
    for tree in (before, after):
        for shared in SHARED:  # what is installed, not checked in: the same for both sides
            link = tree / shared
            if not link.exists() and (REPO / shared).exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(REPO / shared)
    sides = {"before": before, "after": after}
    results: dict[tuple[str, str], list[float]] = defaultdict(list)
    for bench in args.only or list(BENCHES):
        for i in range(args.rounds):
            for side, tree in (sides.items() if i % 2 == 0 else reversed(sides.items())):
                for name, value in run_side(tree, BENCHES[bench]).items():
                    results[(name, side)].append(value)
                    print(f"{bench} round {i + 1} {side}: {name} {value * 1000:.1f} ms",
                          file=sys.stderr, flush=True)
    names = sorted({name for name, _ in results}, key=str)
    print(f"{'figure':<36}{'before':>12}{'after':>12}{'after/before':>14}")
    for name in names:
        b, a = results.get((name, "before")), results.get((name, "after"))
        if not b or not a:
            continue
        mb, ma = statistics.median(b), statistics.median(a)
        print(f"{name:<36}{mb * 1000:>10.1f}ms{ma * 1000:>10.1f}ms{ma / mb:>14.2f}")


if __name__ == "__main__":
    main()
