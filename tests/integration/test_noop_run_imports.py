"""A no-op `gha-mlops run` imports only what it uses.

A workspace with a `data:` dependency and a directory remote makes the no-op read a dataset
pointer and name the remote in its record; neither needs the network stack or an SDK, which
cost more than the whole no-op should (benchmarks/bench_noop_run.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

CONFIG = """\
remotes:
  shelf:
    url: ../remote
stages:
  count:
    cmd: wc -c data/numbers.csv > count.txt
    deps: ["data:numbers"]
    outs: [count.txt]
"""

NOT_NEEDED = ("http.client", "ssl", "urllib.request", "boto3")

# The CLI's entry point, in process, then the modules it left behind.
PROBE = textwrap.dedent("""
    import json, sys
    from gha_mlops.cli import main
    try:
        main(["run", "-q"])
    except SystemExit as done:
        assert not done.code, done.code
    print(json.dumps(sorted(sys.modules)))
""")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("GITHUB_ACTIONS", "CI")}


def gha(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gha_mlops", *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, check=False, timeout=120)


def test_a_noop_run_with_a_dataset_and_a_remote_imports_no_network_stack(
        tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "data").mkdir(parents=True)
    (tmp_path / "remote").mkdir()
    (ws / "mlops.yaml").write_text(CONFIG)
    (ws / "data/numbers.csv").write_text("1,2,3\n")
    for args in (("data", "add", "data/numbers.csv"), ("data", "push"), ("run", "-q")):
        proc = gha(ws, *args)
        assert proc.returncode == 0, (args, proc.stderr)
    probe = subprocess.run([sys.executable, "-c", PROBE], cwd=ws, env=_env(),
                           capture_output=True, text=True, check=False, timeout=120)
    assert probe.returncode == 0, probe.stderr
    lines = probe.stdout.strip().splitlines()
    assert "came from the cache" in probe.stdout, probe.stdout  # it was a no-op
    modules = set(json.loads(lines[-1]))
    assert "gha_mlops.pipeline.engine" in modules  # the probe did run the pipeline
    loaded = [m for m in NOT_NEEDED if m in modules]
    assert not loaded, f"a no-op run imported {loaded}"
