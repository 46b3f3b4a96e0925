"""Stand-in for ``docker/login-action`` v4, for tests under ``act`` only.

The real action runs ``docker login`` against ``registry`` (Docker Hub when empty) with
``username`` and ``password`` and logs out in its post step. Under ``act`` the job runs on the
test host, so the stand-in logs in with the host's ``docker`` CLI (``DOCKER_HOST`` as the job
has it) into a docker config of the job's own (``$RUNNER_TEMP/docker-config``, exported as
``DOCKER_CONFIG`` to later steps; never the host user's ``~/.docker``). ECR and
``registry-auth`` are not supported. Every call's inputs (the password only as "given") are
appended to ``$ACT_HARNESS_OUT/docker-login.jsonl`` (else ``$RUNNER_TEMP``) for the test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from standins import env_path, fail, info, inp, set_env


def main() -> None:
    for name in ("ecr", "scope", "registry-auth"):
        if inp(name) and not (name == "ecr" and inp(name) in ("auto", "false")):
            fail(f"stand-in docker/login-action: input '{name}' is not supported")
    registry, username, password = inp("registry"), inp("username"), inp("password")
    if not username or not password:
        fail("Username and password required")
    runner_temp = env_path("RUNNER_TEMP")
    log = Path(os.environ.get("ACT_HARNESS_OUT") or runner_temp) / "docker-login.jsonl"
    with log.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"registry": registry, "username": username,
                             "password-given": True}) + "\n")
    docker = shutil.which("docker")
    if docker is None:
        fail("stand-in docker/login-action: the docker CLI is not on PATH")
    config = Path(os.environ.get("DOCKER_CONFIG") or runner_temp / "docker-config")
    config.mkdir(parents=True, exist_ok=True)
    set_env("DOCKER_CONFIG", str(config))
    info(f"Logging into {registry or 'Docker Hub'}...")
    proc = subprocess.run([docker, "login", "--username", username, "--password-stdin",
                           *([registry] if registry else [])], input=password, text=True,
                          capture_output=True, check=False, env=os.environ.copy())
    if proc.returncode != 0:
        fail(f"Error response from daemon: {proc.stderr.strip() or proc.stdout.strip()}")
    info("Login Succeeded!")


if __name__ == "__main__":
    main()
