"""The size of the PR report's Markdown with the tables laid out by tabulate (issue 13) next
to the hand-built layout it replaced (``table_lines`` of the last commit before it, or of
the revision given).

tabulate pads every cell to its column's width by default; the reports turn that off, so a
report must come out byte for byte as before: this prints both sizes and whether the texts
are equal, for a demo-sized comparison, a hostile one and one far over GitHub's 65,536
character comment limit (rendered both untrimmed and trimmed). Run:
.venv/bin/python benchmarks/bench_report_tables.py [--rev GIT_REVISION]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.unit.test_report_markdown import HOSTILE, _big, _record  # noqa: E402

from gha_mlops.config.model import Gate  # noqa: E402
from gha_mlops.reporting import markdown  # noqa: E402
from gha_mlops.reporting.compare import compare  # noqa: E402
from gha_mlops.reporting.gates import evaluate_gates  # noqa: E402


def _old_table_lines(rev: str) -> Callable[..., list[str]]:
    source = subprocess.run(["git", "show", f"{rev}:src/gha_mlops/reporting/_markdown.py"],
                            cwd=REPO, check=True, capture_output=True, text=True).stdout
    module = types.ModuleType("_old_markdown")
    exec(compile(source, "_old_markdown.py", "exec"), module.__dict__)
    table_lines: Callable[..., list[str]] = module.table_lines
    return table_lines


def _cases() -> dict[str, tuple[Any, Any]]:
    demo_b = _record("b", {"test_accuracy": 0.9425, "test_loss": 0.1931, "train_loss": 0.12},
                     params={"values": {"train.lr": 0.01, "train.epochs": 5}})
    demo_h = _record("h", {"test_accuracy": 0.9512, "test_loss": 0.1702, "train_loss": 0.10},
                     params={"values": {"train.lr": 0.02, "train.epochs": 5}})
    demo = compare(demo_b, demo_h)
    hostile = compare(_record("b", dict.fromkeys(HOSTILE, 1.0)),
                      _record("h", dict.fromkeys(HOSTILE, 2.0),
                              stages=[{"name": HOSTILE[0], "status": HOSTILE[1]}]))
    return {
        "demo-sized": (demo, evaluate_gates(demo, {"test_accuracy": Gate("test_accuracy",
                                                                         min=0.9)})),
        "hostile": (hostile, evaluate_gates(hostile, {HOSTILE[0]: Gate(HOSTILE[0], max=1.5)})),
        "big (3000 metrics)": _big(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rev", default="44b1250bdb828877ce42f106540209f50e2f7ed5",
                        help="a revision with the hand-built layout (before issue 13)")
    args = parser.parse_args()
    old, new = _old_table_lines(args.rev), markdown.table_lines
    for name, (comparison, verdict) in _cases().items():
        for limit in (None, markdown.COMMENT_LIMIT):
            markdown.table_lines = new
            after = markdown.render(comparison, verdict, limit=limit)
            markdown.table_lines = old
            before = markdown.render(comparison, verdict, limit=limit)
            markdown.table_lines = new
            print(f"{name:20} limit={limit!s:6} before {len(before):7} chars  "
                  f"after {len(after):7} chars  identical: {before == after}")


if __name__ == "__main__":
    main()
