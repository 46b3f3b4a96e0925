"""`gha-mlops report --publish` end to end against the GitHub emulator on loopback.

One workspace with two runs (shell stages writing metrics with a confusion matrix and a
training curve, as tests/integration/test_cli_report.py); each measured command is the real
CLI in its own process: the diff, three plots (metric bars, curves, confusion matrices),
the plots committed to the assets branch (blobs, tree, commit, ref), the sticky comment found
and edited on a pull request with 100 other comments, and a check run. Median of --runs.
Goal (issue 5): <= 1.5 s. The emulator validates every request and response against GitHub's
OpenAPI description in this same machine, so its CPU time counts too. Run:
.venv/bin/python benchmarks/bench_report.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.test_cli_report import GATES, PIPELINE, TRAIN  # noqa: E402

from gha_mlops.github.pygithub import connect  # noqa: E402
from gha_mlops.testing.github_emulator import GitHubEmulator  # noqa: E402

CLI = [str(REPO / ".venv/bin/gha-mlops")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith("GITHUB_") and k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryDirectory() as tmp_s, GitHubEmulator() as gh:
        tmp = Path(tmp_s)
        ws = tmp / "ws"
        ws.mkdir()
        (ws / "mlops.yaml").write_text(PIPELINE + GATES)
        (ws / "params.yaml").write_text("train:\n  acc: 0.95\n  nan: false\n  broken: false\n")
        (ws / "train.py").write_text(TRAIN)
        for extra in ([], ["--set", "train.acc=0.96"]):
            subprocess.run([*CLI, "run", "-q", *extra], cwd=ws, env=base_env, check=True,
                           capture_output=True)
        repo = gh.create_repo("octo/demo")
        repo.commit({"README.md": "x"})
        sha = repo.commit({"train.py": "y"}, branch="feature")
        number = repo.create_pull(head="feature")
        port = connect(gh.token, gh.url)
        for i in range(100):
            port.create_issue_comment("octo/demo", number, f"comment {i}")
        event = tmp / "event.json"
        event.write_text(json.dumps({"pull_request": {"number": number, "head": {"sha": sha}}}))
        summary = tmp / "summary.md"
        env = {**base_env, "GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "pull_request",
               "GITHUB_EVENT_PATH": str(event), "GITHUB_REPOSITORY": "octo/demo",
               "GITHUB_API_URL": gh.url, "GITHUB_SERVER_URL": gh.root_url,
               "GITHUB_TOKEN": gh.token, "GITHUB_STEP_SUMMARY": str(summary)}
        times = []
        for i in range(args.runs + 1):
            summary.write_text("")
            t = time.perf_counter()
            subprocess.run([*CLI, "report", "--baseline", "latest~1", "--publish"], cwd=ws,
                           env=env, check=True, capture_output=True)
            if i:  # the first run writes bytecode caches and creates the comment
                times.append(time.perf_counter() - t)
        assert len(gh.check_runs("octo/demo")) == args.runs + 1
        requests = len(gh.requests)
    med = statistics.median(times)
    print(f"gha-mlops report --publish   median {med:.2f} s  min {min(times):.2f}  "
          f"max {max(times):.2f}  n={len(times)}   goal <= 1.5 s: "
          f"{'met' if med <= 1.5 else 'NOT met'}   ({requests} API requests in all)")


if __name__ == "__main__":
    main()
