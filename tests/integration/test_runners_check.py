"""`gha-mlops runners check --live` through the real adapters: PyGithub against the GitHub
emulator (the scope's runners listed with the token's permissions) and the Docker backend
against a daemon that is not there (exit 10, named), or GitHub refusing (exit 9, named)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gha_mlops.testing.github_emulator import GitHubEmulator

pytest_plugins = ["tests.integration.github_fixtures"]

CONFIG = """\
id: box-1
github: {{repo: octo/demo, token_env: TOKEN, api_url: "{api}"}}
webhook: {{secret_env: SECRET}}
state: {state}
backends:
  docker: {{host: "unix://{sock}"}}
pools:
  - {{name: gpu, labels: [gpu], max: 2, image: runner:test}}
"""


def _check(tmp_path: Path, github: GitHubEmulator, token: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "runners.yaml"
    config.write_text(CONFIG.format(api=github.url, state=tmp_path / "state.db",
                                    sock=tmp_path / "no-docker.sock"))
    env = {"TOKEN": token, "SECRET": "s" * 40, "PATH": ""}
    return subprocess.run([sys.executable, "-m", "gha_mlops", "runners", "check", "--live",
                           "-c", str(config)], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def test_live_check_names_what_does_not_answer(tmp_path: Path, github: GitHubEmulator) -> None:
    proc = _check(tmp_path, github, github.token)
    assert "  GitHub: answers; 0 self-hosted runner(s) registered in octo/demo" in proc.stdout
    assert "  backend docker: FAILED:" in proc.stdout and "no-docker.sock" in proc.stdout
    assert proc.returncode == 10, proc.stdout + proc.stderr

    github.add_token("ghs_weak", permissions={"actions": "read"})
    refused = _check(tmp_path, github, "ghs_weak")
    assert "  GitHub: FAILED:" in refused.stdout, refused.stdout + refused.stderr
    assert "administration" in refused.stdout
    assert refused.returncode == 9
