"""`gha-mlops deploy` end to end on a real dockerd: two versions of a model packaged and
pushed to a real registry, a real nginx router (Debian's package) in front, a constant load
through the router for the whole of every rollout. Each test counts the requests that failed:
none may, whatever goes wrong with the new version (never ready, wrong golden answers, 5xx
answers, slow answers), with the deploy (killed with -9, a second one at once) or with the
Docker host (gone in the middle of a rollout)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from gha_mlops.testing.load import ConstantLoad, LoadReport
from tests.conftest import Workspace
from tests.integration.deploy_helpers import (
    IDENT,
    MODEL,
    derived_image,
    environment_yaml,
    infer_body,
    make_workspace,
    ok,
    remove_env,
)

if TYPE_CHECKING:
    from gha_mlops.testing.github_emulator import GitHubEmulator
    from tests.integration.docker_fixtures import Dockerd
    from tests.integration.registry_fixtures import OciRegistry

pytest_plugins = ["tests.integration.docker_fixtures", "tests.integration.registry_fixtures",
                  "tests.integration.serving_fixtures", "tests.integration.deploy_fixtures",
                  "tests.integration.github_fixtures"]

RATE = 150.0


@pytest.fixture(scope="module")
def deploy_ws(tmp_path_factory: pytest.TempPathFactory, dockerd: Dockerd, serving_base: str,
              wheel_cache: Path, oci_registry: OciRegistry) -> Workspace:
    return make_workspace(tmp_path_factory.mktemp("deploy") / "ws", dockerd, serving_base,
                          wheel_cache, oci_registry.host)


@pytest.fixture
def env_name(request: pytest.FixtureRequest, dockerd: Dockerd) -> Iterator[str]:
    name = "e" + str(abs(hash(request.node.name)) % 10**8)
    yield name
    remove_env(dockerd, name)


class Deployer:
    """The CLI on the workspace, with the deploy section of one environment."""

    def __init__(self, ws: Workspace, dockerd: Dockerd, env: str) -> None:
        self.ws, self.dockerd, self.env = ws, dockerd, env
        self.base = (ws.root / "mlops.yaml").read_text().split("deploy:\n")[0]

    def configure(self, section: str) -> None:
        self.ws.write("mlops.yaml", self.base + section)
        config = section.split("port: ", 1)[1]
        self.port = int(config.split("\n", 1)[0])

    def __call__(self, *args: str, timeout: float = 180,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self.ws.cli("deploy", *args, timeout=timeout,
                           env={"DOCKER_HOST": self.dockerd.base_url, **IDENT, **(env or {})})

    def background(self, *args: str) -> subprocess.Popen[str]:
        from tests.conftest import CLI

        env = {**os.environ, "DOCKER_HOST": self.dockerd.base_url, **IDENT}
        env.pop("GITHUB_ACTIONS", None)
        return subprocess.Popen([*CLI, "deploy", *args], cwd=self.ws.root, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def load(self, rate: float = RATE) -> ConstantLoad:
        return ConstantLoad(f"http://127.0.0.1:{self.port}/v2/models/{MODEL}/infer",
                            infer_body(), rate=rate)

    def record(self) -> dict[str, object]:
        shown = ok(self("status", "--env", self.env, "--json", "--no-settle"))
        return dict(json.loads(shown.stdout)["record"] or {})

    def stage_holder(self) -> str:
        shown = json.loads(ok(self.ws.cli("model", "show", f"{MODEL}#staging", "--json")).stdout)
        return str(shown["version"])

    def wait_for(self, predicate: object, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():  # type: ignore[operator]
                return
            time.sleep(0.2)
        raise AssertionError("timed out waiting")


def _no_failures(report: LoadReport) -> None:
    assert report.sent > 50, report
    assert report.failed == 0, (report.statuses, report.first_errors)


@pytest.fixture
def deployer(deploy_ws: Workspace, dockerd: Dockerd, router_image: str,
             env_name: str) -> Deployer:
    d = Deployer(deploy_ws, dockerd, env_name)
    d.configure(environment_yaml(env_name, dockerd, router_image))
    return d


def test_rollout_and_rollback_under_load_lose_no_request(
        deployer: Deployer, github: GitHubEmulator, tmp_path: Path) -> None:
    env = deployer.env
    first = ok(deployer(MODEL, "--version", "1.0.0", "--env", env))
    assert "tiny 1.0.0 serves" in first.stdout
    assert deployer.stage_holder() == "1.0.0"
    actions = _in_actions(github, tmp_path)
    with deployer.load() as load:
        done = ok(deployer(MODEL, "--version", "1.1.0", "--env", env, "--github-deployment",
                           env=actions))
    _reported_to_github_and_actions(github, actions, env, deployer.port)
    report = load.report()
    _no_failures(report)
    assert set(report.versions) == {"1.0.0", "1.1.0"}, report.versions
    assert "replaced tiny 1.0.0" in done.stdout and "10%" in done.stdout
    record = deployer.record()
    assert record["stable"]["version"] == "1.1.0" and record["canary"] is None  # type: ignore[index]
    assert record["stable"]["image"].startswith(f"{deployer_registry(deployer)}")  # type: ignore[index]
    assert deployer.stage_holder() == "1.1.0"
    with deployer.load() as load:
        back = ok(deployer("rollback", "--env", env))
    _no_failures(load.report())
    assert "tiny 1.0.0 serves" in back.stdout
    assert deployer.record()["stable"]["version"] == "1.0.0"  # type: ignore[index]
    assert deployer.stage_holder() == "1.0.0"


def _in_actions(github: GitHubEmulator, tmp_path: Path) -> dict[str, str]:
    """The environment of a GitHub Actions step whose token reaches the emulator."""
    (tmp_path / "summary.md").write_text("")
    (tmp_path / "output").write_text("")
    return {"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "octo/demo",
            "GITHUB_SHA": github.repo("octo/demo").refs["refs/heads/main"],
            "GITHUB_RUN_ID": "77", "GITHUB_SERVER_URL": "https://github.example",
            "GITHUB_API_URL": github.url, "GITHUB_TOKEN": github.token,
            "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
            "GITHUB_OUTPUT": str(tmp_path / "output")}


def _reported_to_github_and_actions(github: GitHubEmulator, actions: dict[str, str],
                                    env: str, port: int) -> None:
    """One Deployment of tiny 1.1.0 with in_progress then success statuses, the step
    outputs and the summary's table of steps."""
    [deployment] = github.deployments("octo/demo")
    assert deployment.environment == env and deployment.payload["version"] == "1.1.0"  # type: ignore[index]
    states = [(s.state, s.environment_url, s.log_url) for s in deployment.statuses]
    run = "https://github.example/octo/demo/actions/runs/77"
    assert states == [("in_progress", "", run),
                      ("success", f"http://127.0.0.1:{port}", run)], states
    outputs = Path(actions["GITHUB_OUTPUT"]).read_text()
    assert "version<<" in outputs and "1.1.0" in outputs and f"127.0.0.1:{port}" in outputs
    summary = Path(actions["GITHUB_STEP_SUMMARY"]).read_text()
    assert "### Deployed tiny 1.1.0" in summary and "| 10% |" in summary, summary
    assert summary.count("| pass |") == 3, summary


def deployer_registry(deployer: Deployer) -> str:
    """The registry host the workspace's images were pushed to (the digest refs start so)."""
    shown = json.loads(ok(deployer.ws.cli("model", "show", f"{MODEL}@1.0.0", "--json")).stdout)
    return str(shown["lineage"]["images"][0]["image"]).split("/")[0]


FAULTS = {
    "never-ready": ({"entrypoint": ["/bin/sh", "-c", "sleep 3600", "x"]}, "did not become ready"),
    "wrong-golden": ({"golden": {"format": "gha-mlops.golden/1", "atol": 1e-5, "rtol": 1e-4,
                                 "cases": [{"inputs": [[[0.0, 0.0, 0.0, 0.0]]],
                                            "outputs": [[[9.0, 9.0, 9.0]]]}]}},
                     "golden requests wrongly"),
    "errors": ({"fault": "errors"}, "error rate"),
    "slow": ({"fault": "slow"}, "p99"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_failing_new_version_is_rolled_back_and_no_request_fails(
        deployer: Deployer, dockerd: Dockerd, router_image: str, fault: str) -> None:
    env = deployer.env
    deployer.configure(environment_yaml(
        env, dockerd, router_image, bake="3s", ready="5s",
        gates="{max_error_rate: 0.05, max_p99_ms: 40}"))
    ok(deployer(MODEL, "--version", "1.0.0", "--env", env))
    options, expected = FAULTS[fault]
    image = derived_image(dockerd, _pushed(deployer, "1.1.0"), f"faulty/{fault}:1",
                          **options)  # type: ignore[arg-type]
    with deployer.load(rate=60) as load:
        failed = deployer(MODEL, "--version", "1.1.0", "--image", image, "--env", env)
    assert failed.returncode == 11, failed.stdout + failed.stderr
    assert expected in failed.stderr and "traffic went back to tiny 1.0.0" in failed.stderr
    _no_failures(load.report())
    record = deployer.record()
    assert record["stable"]["version"] == "1.0.0" and record["canary"] is None  # type: ignore[index]
    assert deployer.stage_holder() == "1.0.0"


def _pushed(deployer: Deployer, version: str) -> str:
    shown = json.loads(ok(deployer.ws.cli("model", "show", f"{MODEL}@{version}",
                                          "--json")).stdout)
    image = shown["lineage"]["images"][-1]
    return f"{image['image'].rpartition(':')[0]}@{image['digest']}"


def test_a_deploy_killed_mid_rollout_is_settled_then_finished(
        deployer: Deployer, dockerd: Dockerd, router_image: str) -> None:
    env = deployer.env
    deployer.configure(environment_yaml(env, dockerd, router_image, bake="4s"))
    ok(deployer(MODEL, "--version", "1.0.0", "--env", env))
    with deployer.load() as load:
        proc = deployer.background(MODEL, "--version", "1.1.0", "--env", env)
        deployer.wait_for(lambda: deployer.record().get("weight") == 50)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        halfway = deployer.record()
        assert halfway["canary"]["version"] == "1.1.0"  # type: ignore[index]
        shown = ok(deployer("status", "--env", env))
        assert "found an unfinished rollout of tiny 1.1.0 at 50%" in shown.stderr
        assert "took over the lock" in shown.stderr
        settled = deployer.record()
        assert settled["canary"] is None and settled["stable"]["version"] == "1.0.0"  # type: ignore[index]
        ok(deployer(MODEL, "--version", "1.1.0", "--env", env))
    _no_failures(load.report())
    assert deployer.record()["stable"]["version"] == "1.1.0"  # type: ignore[index]
    backends = dockerd.client().api.containers(
        all=True, filters={"label": [f"io.gha-mlops.deploy.env={env}",
                                     "io.gha-mlops.deploy.role=backend"]})
    assert len(backends) == 1, backends


def test_a_second_deploy_at_once_fails_clearly_or_waits(
        deployer: Deployer, dockerd: Dockerd, router_image: str) -> None:
    env = deployer.env
    deployer.configure(environment_yaml(env, dockerd, router_image, bake="3s"))
    ok(deployer(MODEL, "--version", "1.0.0", "--env", env))
    first = deployer.background(MODEL, "--version", "1.1.0", "--env", env)
    deployer.wait_for(lambda: deployer.record().get("canary") is not None)
    second = deployer(MODEL, "--version", "1.1.0", "--env", env)
    assert second.returncode == 75, second.stdout + second.stderr
    assert f"environment {env} is being deployed by" in second.stderr
    assert "tiny 1.1.0" in second.stderr and "--wait" in second.stderr
    waited = ok(deployer(MODEL, "--version", "1.1.0", "--env", env, "--wait", "120"))
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, out + err
    assert "already serves" in waited.stderr + waited.stdout


class Forwarder:
    """tcp://127.0.0.1:PORT -> the dockerd's unix socket: a Docker host that can go away."""

    def __init__(self, socket_path: str) -> None:
        self.path = socket_path
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.alive = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.alive:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if not self.alive:
                client.close()
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.path)
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.alive = False
        self.server.close()
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


def test_the_docker_host_going_away_mid_rollout_is_exit_12_and_settled_later(
        deployer: Deployer, dockerd: Dockerd, router_image: str) -> None:
    env = deployer.env
    forwarder = Forwarder(dockerd.base_url.removeprefix("unix://"))
    section = environment_yaml(env, dockerd, router_image, bake="3s")
    deployer.configure(section.replace(dockerd.base_url, f"tcp://127.0.0.1:{forwarder.port}"))
    ok(deployer(MODEL, "--version", "1.0.0", "--env", env))
    with deployer.load() as load:
        proc = deployer.background(MODEL, "--version", "1.1.0", "--env", env)
        deployer.wait_for(lambda: deployer.record().get("weight") == 10)
        forwarder.cut()
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 12, out + err
        assert f"tcp://127.0.0.1:{forwarder.port}" in err
        back = Forwarder(dockerd.base_url.removeprefix("unix://"))
        deployer.configure(section.replace(dockerd.base_url, f"tcp://127.0.0.1:{back.port}"))
        shown = ok(deployer("status", "--env", env))
        assert "found an unfinished rollout of tiny 1.1.0 at 10%" in shown.stderr
    _no_failures(load.report())
    assert deployer.record()["stable"]["version"] == "1.0.0"  # type: ignore[index]
    back.cut()


def test_unknown_environment_stage_or_both_flags_are_usage_errors(deployer: Deployer) -> None:
    unknown = deployer(MODEL, "--version", "1.0.0", "--env", "nope")
    assert unknown.returncode == 2 and "there is no environment 'nope'" in unknown.stderr
    assert deployer.env in unknown.stderr
    stage = deployer(MODEL, "--stage", "prod", "--env", deployer.env)
    assert stage.returncode == 2 and "no version of tiny is at stage 'prod'" in stage.stderr
    both = deployer(MODEL, "--stage", "prod", "--version", "1.0.0", "--env", deployer.env)
    assert both.returncode == 2 and "exactly one of" in both.stderr
    for proc in (unknown, stage, both):
        assert "Traceback" not in proc.stderr


def test_render_kserve_pins_the_recorded_digest_and_validates(deployer: Deployer,
                                                              tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    rendered = ok(deployer.ws.cli("deploy", "render", "--target", "kserve", "--env",
                                  deployer.env, "--version", "1.1.0", "--out", str(out)))
    assert "rendering only" in rendered.stdout
    files = sorted(p.name for p in out.iterdir())
    assert files == [f"01-{deployer.env}-canary-10.yaml", f"02-{deployer.env}-canary-50.yaml",
                     f"03-{deployer.env}-promote.yaml"]
    text = (out / files[0]).read_text()
    assert f"image: {_pushed(deployer, '1.1.0')}" in text
    assert "canaryTrafficPercent: 10" in text
    assert "canaryTrafficPercent:" not in (out / files[-1]).read_text()
