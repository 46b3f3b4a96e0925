"""Shared fixtures: small shell-only workspaces (no torch) and a way to call the real CLI."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from gha_mlops.pipeline.engine import RunOptions, RunResult, run_pipeline
from gha_mlops.pipeline.loading import load
from gha_mlops.store.objects import ContentCache

CLI = [sys.executable, "-m", "gha_mlops"]

# Property tests explore new examples on a developer's machine; in CI (CI=true) they run a
# fixed, derandomized set, so a submission never fails on an example no one has seen.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")


def pytest_configure(config: pytest.Config) -> None:
    """Tests of Ctrl-C need SIGINT to be deliverable. A shell starts background jobs (`make
    test &`, some CI wrappers) with SIGINT ignored, and an ignored signal stays ignored in
    every child: restore Python's handler, so the suite and the CLIs it starts behave as in a
    terminal."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# The whole suite, with its images, daemons and virtual environments, took up to 5.6 GB of
# /tmp at once on 2026-12-06 (its venv apart). With too little room every test after the first
# failed write errors, and the report shows hundreds of errors instead of their one cause.
MIN_FREE_BYTES = 4 << 30


def pytest_sessionstart(session: pytest.Session) -> None:
    """Stop before the first test when /tmp is nearly full, saying so (a run of a few chosen
    tests, `pytest tests/unit/...`, is not held to it)."""
    if session.config.args_source != pytest.Config.ArgsSource.TESTPATHS:
        return
    free = shutil.disk_usage("/tmp").free
    if free < MIN_FREE_BYTES:
        pytest.exit(f"only {free / 2**30:.1f} GiB free under /tmp: the whole suite needs "
                    f"about 6 GiB (at least {MIN_FREE_BYTES >> 30} GiB to start); free some "
                    "space (old pytest-of-* and gha-mlops-* directories) and run again",
                    returncode=3)


@dataclass
class Workspace:
    root: Path

    def write(self, rel: str, text: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def read(self, rel: str) -> str:
        return (self.root / rel).read_text()

    def run(self, **options: Any) -> RunResult:
        """Run the pipeline in-process (the engine, without the CLI)."""
        pipeline = load(self.root / "mlops.yaml")
        environ = options.pop("environ", {"PATH": os.environ.get("PATH", "")})
        return run_pipeline(pipeline, RunOptions(environ=environ, **options))

    def statuses(self, result: RunResult) -> dict[str, str]:
        return {s["name"]: s["status"] for s in result.record["stages"]}

    def count(self, stage: str) -> int:
        """How many times ``stage`` really executed (each command appends to a counter)."""
        path = self.root / f".count-{stage}"
        return len(path.read_text().splitlines()) if path.exists() else 0

    def cli(self, *args: str, env: Mapping[str, str] | None = None,
            check: bool = False, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        full_env = dict(os.environ)
        full_env.pop("GITHUB_ACTIONS", None)
        full_env.update(env or {})
        proc = subprocess.run([*CLI, *args], cwd=self.root, env=full_env, capture_output=True,
                              text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc


THREE_STAGES = """\
seed: 7
params: params.yaml
env:
  lock: requirements.lock
model: models/model.bin
stages:
  prepare:
    cmd: >-
      echo x >> .count-prepare && mkdir -p prepared && cat data/*.txt > prepared/all.txt && echo "$GHA_MLOPS_SEED" > prepared/seed.txt
    deps: [data]
    params: [prepare.scale]
    outs: [prepared]
  train:
    cmd: >-
      echo x >> .count-train && mkdir -p models metrics && cat prepared/all.txt prepared/seed.txt > models/model.bin && printf '{"accuracy": 0.9, "loss": {"final": 0.25}}' > metrics/train.json
    deps: [prepared]
    params: [train.lr]
    outs: [models/model.bin]
    metrics: [metrics/train.json]
  report:
    cmd: echo x >> .count-report && wc -c models/model.bin > report.txt
    deps: [models/model.bin]
    outs: [report.txt]
"""


def cache_object(workspace_root: Path, data: bytes) -> Path:
    """Put ``data`` in the content cache of the workspace at ``workspace_root`` (where the
    engine keeps every output) and return the object's path."""
    import hashlib

    digest = hashlib.sha256(data).hexdigest()
    cache = ContentCache(workspace_root / ".gha-mlops" / "cache")
    cache.put_verified_bytes(data, digest)
    return cache.object_path(digest)


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """A three-stage shell pipeline (prepare -> train -> report) over two data files."""
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    ws.write("mlops.yaml", THREE_STAGES)
    ws.write("params.yaml", "prepare:\n  scale: 1\ntrain:\n  lr: 0.1\n  epochs: 3\n")
    ws.write("requirements.lock", "numpy==2.0.0\n")
    ws.write("data/a.txt", "alpha\n")
    ws.write("data/b.txt", "beta\n")
    return ws


@pytest.fixture
def git_workspace(workspace: Workspace) -> Workspace:
    """The same workspace as a git repository with everything committed."""
    _git(workspace.root, "init", "-q")
    workspace.write(".gitignore", ".count-*\nprepared/\nmodels/\nmetrics/\nreport.txt\n")
    _git(workspace.root, "add", "-A")
    _git(workspace.root, "commit", "-q", "-m", "initial")
    return workspace


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout


git: Callable[..., str] = _git


@pytest.fixture(scope="session")
def have_git() -> None:
    assert shutil.which("git"), "git is required by the tests (make test installs it)"
