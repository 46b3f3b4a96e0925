"""Cold start: `gha-mlops --version` vs `dvc --version` (goal: <= 0.08 s median)."""

from __future__ import annotations

import argparse

from _common import GHA_MLOPS, ensure_dvc, report, time_command


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    ours = report("gha-mlops --version", time_command([str(GHA_MLOPS), "--version"],
                                                      runs=args.runs), goal=0.08)
    theirs = report("dvc --version", time_command([str(ensure_dvc()), "--version"],
                                                  runs=args.runs))
    print(f"ratio gha-mlops / dvc: {ours / theirs:.2f}  (dvc is {theirs / ours:.1f}x slower)")


if __name__ == "__main__":
    main()
