"""``deploy:`` in mlops.yaml: every default, the typed value (also from the validated-config
cache), the documented example, and one clear error per class of mistake, naming the key, its
line and what to write instead."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gha_mlops.config import load_pipeline
from gha_mlops.config.model import (
    DeployConfig,
    DeployEnvironment,
    DeployGates,
    DeployHostConfig,
)
from gha_mlops.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
HEAD = """\
stages:
  train:
    cmd: echo
    outs: [package]
registry:
  models:
    digits:
      path: package/model.onnx
"""
# One environment with only what is required, at lines 9..15.
MINIMAL = """\
deploy:
  environments:
    staging:
      stage: staging
      port: 8080
      hosts:
        - docker: unix:///var/run/docker.sock
"""


def _load(tmp_path: Path, text: str) -> DeployConfig | None:
    (tmp_path / "mlops.yaml").write_text(text)
    (tmp_path / ".gha-mlops").mkdir(exist_ok=True)  # so the validated config is cached
    return load_pipeline(tmp_path / "mlops.yaml").deploy


def test_every_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    found = _load(tmp_path, HEAD + MINIMAL)
    staging = DeployEnvironment(
        name="staging", stage="staging",
        hosts=(DeployHostConfig("unix:///var/run/docker.sock", "127.0.0.1"),),
        port=8080, backend_ports=(8081, 8082), listen="0.0.0.0", bind="127.0.0.1",
        workers=1, steps=(10, 50, 100), bake_s=10.0, ready_timeout_s=60.0, drain_s=5.0,
        gates=DeployGates(max_error_rate=0.01, max_p99_ms=None, min_requests=0),
        golden=True, url=None, production=False)
    assert found == DeployConfig(model="digits", router_image="nginx:1.27-bookworm",
                                 environments={"staging": staging})
    assert found is not None and found.environments["staging"].source == "mlops.yaml:11"
    # Loaded again, from the validated-config cache: the same value, the same source.
    cached = json.loads((tmp_path / ".gha-mlops" / "tmp" / "config.json").read_text())
    assert cached["deploy"]["environments"]["staging"]["line"] == 11
    again = load_pipeline(tmp_path / "mlops.yaml").deploy
    assert again == found
    assert again is not None and again.environments["staging"].source == "mlops.yaml:11"


def test_no_section_is_no_deploy(tmp_path: Path) -> None:
    assert _load(tmp_path, HEAD) is None


def test_each_host_form_and_its_default_address(tmp_path: Path) -> None:
    hosts = """\
        - docker: unix:///run/user/1000/docker.sock
        - docker: tcp://10.0.0.7:2376
        - docker: ssh://deploy@gpu-1.example.com:2222
        - docker: ssh://[fd00::5]
          address: 192.168.1.5
"""
    found = _load(tmp_path, HEAD + MINIMAL.replace(
        "        - docker: unix:///var/run/docker.sock\n", hosts))
    assert found is not None
    assert found.environments["staging"].hosts == (
        DeployHostConfig("unix:///run/user/1000/docker.sock", "127.0.0.1"),
        DeployHostConfig("tcp://10.0.0.7:2376", "10.0.0.7"),
        DeployHostConfig("ssh://deploy@gpu-1.example.com:2222", "gpu-1.example.com"),
        DeployHostConfig("ssh://[fd00::5]", "192.168.1.5"),
    )


def _doc_example() -> str:
    doc = (REPO / "docs" / "deploy-config.md").read_text()
    found = re.search(r"<!-- example: loaded by tests/unit/test_deploy_config.py -->\n"
                      r"```yaml\n(.*?)```", doc, re.S)
    assert found, "docs/deploy-config.md lost its checked example"
    return found.group(1)


def test_the_documented_example_loads(tmp_path: Path) -> None:
    (tmp_path / "mlops.yaml").write_text(_doc_example())
    found = load_pipeline(tmp_path / "mlops.yaml").deploy
    assert found is not None and found.model == "digits"
    assert list(found.environments) == ["staging", "production"]
    staging, production = found.environments["staging"], found.environments["production"]
    assert staging.bake_s == 10.0 and staging.steps == (10, 50, 100)
    assert staging.gates == DeployGates(max_error_rate=0.01, max_p99_ms=250, min_requests=20)
    assert staging.url == "https://staging.example.com" and not staging.production
    assert production.production and production.steps == (5, 25, 50, 100)
    assert production.bake_s == 120.0 and production.drain_s == 0.5
    assert production.ready_timeout_s == 90.0 and production.workers == 2
    assert [h.address for h in production.hosts] == ["10.0.1.11", "10.0.1.12"]
    assert production.backend_ports == (9001, 9002)


def _env(body: str) -> str:
    """``HEAD`` and a ``deploy:`` whose staging environment is MINIMAL plus ``body`` (keys
    indented as the environment's)."""
    return HEAD + MINIMAL + body


# (the file, words of the message, words of the hint). The line of the mistake is the one
# marked `# <-`.
MISTAKES = {
    "environment name": (HEAD + MINIMAL + "    Staging_1:  # <-\n      stage: staging\n"
                         "      port: 9090\n      hosts: [{docker: 'tcp://h:2375'}]\n",
                         "environment name 'Staging_1' is not allowed", "lower-case"),
    "no environment": (HEAD + "deploy:  # <-\n  environments: {}\n",
                       "there are no environments", "staging: {stage: staging"),
    "unknown stage": (HEAD + MINIMAL.replace("stage: staging", "stage: live  # <-"),
                      "'live' is not one of the registry's stages", "'dev', 'staging', 'prod'"),
    "no registry": (HEAD.split("registry:")[0] + MINIMAL.replace("deploy:", "deploy:  # <-"),
                    "a deployment needs a `registry:` section", "under `registry:`"),
    "unknown model": (HEAD + MINIMAL.replace("deploy:\n", "deploy:\n  model: digit  # <-\n"),
                      "no model named 'digit' in registry.models", "'digits'"),
    "which model": (HEAD + "    other:\n      path: package/other.onnx\n"
                    + MINIMAL.replace("deploy:", "deploy:  # <-"),
                    "which model to deploy is not said", "one of 'digits', 'other'"),
    "no host": (HEAD + MINIMAL.replace(
        "      hosts:\n        - docker: unix:///var/run/docker.sock\n",
        "      hosts: []  # <-\n"), "needs at least one host", "`hosts` takes"),
    "docker URL": (HEAD + MINIMAL.replace("docker: unix:///var/run/docker.sock",
                                          "docker: http://h:2375  # <-"),
                   "'http://h:2375' is not a Docker daemon URL", "tcp://HOST:PORT"),
    "host twice": (_env("        - docker: 'unix:///var/run/../run/docker.sock'  # <-\n"),
                   "is listed twice (as hosts[0])", "remove one"),
    "one machine twice": (_env("        - docker: ssh://deploy@127.0.0.1  # <-\n"),
                          "is reached at '127.0.0.1', as hosts[0] is", "each machine once"),
    "address": (_env("          address: 'not a host'  # <-\n"),
                "'not a host' is not a host name or an IP address", "`address` takes"),
    "port range": (HEAD + MINIMAL.replace("port: 8080", "port: 80800  # <-"),
                   "must be at most 65535, got an integer 80800", "`port` takes"),
    "ports differ": (_env("      backend_ports: [8081, 8080]  # <-\n"),
                     "must all differ, got 8080 and [8081, 8080]", "three different ports"),
    "ports between environments": (
        HEAD + MINIMAL + "    production:\n      stage: prod\n      port: 8082  # <-\n"
        "      hosts: [{docker: 'tcp://127.0.0.1:2375'}]\n",
        "port 8082 is also used by environment 'staging' on the host at '127.0.0.1'",
        "different ports"),
    "listen address": (_env("      listen: localhost  # <-\n"),
                       "'localhost' is not an IP address", "`listen` takes"),
    "workers": (_env("      workers: 0  # <-\n"), "must be at least 1", "`workers` takes"),
    "steps": (_env("      steps: [10, 50]  # <-\n"),
              "[10, 50] is not a rollout (strictly increasing, ending at 100)",
              "`steps` takes"),
    "duration form": (_env("      bake: 10 minutes  # <-\n"),
                      "expected a number of seconds or a duration such as '10s'",
                      "`bake` takes"),
    "duration bounds": (_env("      ready_timeout: 2h  # <-\n"),
                        "7200 s is outside 1..1800 s", "from 1 to 1800 s"),
    "gate bounds": (_env("      gates: {max_error_rate: 1.5}  # <-\n"),
                    "must be at most 1", "a number from 0 to 1"),
    "unknown gate": (_env("      gates:\n        max_p95_ms: 200  # <-\n"),
                     "unknown key 'max_p95_ms'", "did you mean 'max_p99_ms'?"),
    "url": (_env("      url: ftp://staging.example.com  # <-\n"),
            "'ftp://staging.example.com' is not an http(s) URL", "`url` takes"),
    "boolean": (_env("      production: 'yes'  # <-\n"),
                "expected true or false, got a string 'yes'", "`production` takes"),
    "router image": (HEAD + MINIMAL.replace("deploy:\n", "deploy:\n  router_image: Nginx "
                                            "Latest  # <-\n"),
                     "'Nginx Latest' is not a Docker image reference", "nginx:1.27-bookworm"),
    "unknown key": (_env("      prot: 8081  # <-\n"),
                    "unknown key 'prot'", "did you mean 'port'? allowed keys: stage, hosts"),
    "missing key": (HEAD + MINIMAL.replace("      port: 8080\n", "").replace(
        "    staging:", "    staging:  # <-"), "missing required key 'port'", "`port` takes"),
}


@pytest.mark.parametrize("case", list(MISTAKES))
def test_a_mistake_is_named_with_its_line_and_a_hint(tmp_path: Path, case: str) -> None:
    text, words, hint = MISTAKES[case]
    marked = [i for i, line in enumerate(text.splitlines(), start=1) if "# <-" in line]
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    err = caught.value
    assert words in err.message, (err.message, err.notes)
    assert err.hint is not None and hint in err.hint, err.hint
    assert err.message.startswith("deploy"), err.message  # the key path comes first
    assert err.line == marked[0], (err.line, err.message)


@pytest.mark.parametrize(("docker", "words"), [
    ("unix://var/run/docker.sock", "three slashes"),
    ("tcp://10.0.0.7", "tcp://HOST:PORT"),
    ("tcp://10.0.0.7:99999", "valid host and port"),
    ("ssh://deploy:hunter2@host", "holds a password"),
    ("ssh://bad_host!", "names no valid host"),
    ("tcp://h:2375/v1.41", "has a path"),
    ("'unix:///x.sock\\n'", "control characters"),
])
def test_each_docker_url_rule(tmp_path: Path, docker: str, words: str) -> None:
    text = HEAD + MINIMAL.replace("unix:///var/run/docker.sock", docker.replace("'", '"'))
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    assert words in caught.value.message and caught.value.line == 15


@pytest.mark.parametrize(("steps", "words"), [
    ("[50, 10, 100]", "not a rollout"), ("[10, 10, 100]", "not a rollout"),
    ("[0, 100]", "must be at least 1"), ("[10, 101]", "must be at most 100"),
    ("[]", "expected at least 1 item"), (str([*range(1, 11), 100]), "at most 10 items"),
])
def test_each_steps_rule(tmp_path: Path, steps: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, _env(f"      steps: {steps}\n"))
    assert words in caught.value.message and caught.value.line == 16


@pytest.mark.parametrize(("duration", "seconds"), [
    ("500ms", 0.5), ("2m", 120.0), ("1.5s", 1.5), ("30", 30.0), ("0.25", 0.25),
])
def test_durations_in_seconds(tmp_path: Path, duration: str, seconds: float) -> None:
    found = _load(tmp_path, _env(f"      drain: {duration}\n"))
    assert found is not None and found.environments["staging"].drain_s == seconds
