"""The rollout's logic on in-memory hosts (gha_mlops.testing.fake_deploy): steps, gates,
rollback, recovery of a half-done rollout on every host, hosts that disagree, the lock, a
host that goes away. The same code runs against a real dockerd and nginx in
tests/integration/test_deploy_rollout.py."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import replace
from pathlib import Path

import pytest

from gha_mlops.config.model import DeployEnvironment, DeployGates, DeployHostConfig
from gha_mlops.deploy.environment import Environment
from gha_mlops.deploy.errors import DeployBusyError, DeployError, DeployTargetError
from gha_mlops.deploy.golden import IMAGE_PATH
from gha_mlops.deploy.model import LockInfo, PredictionLog, Release, Rollout
from gha_mlops.deploy.rollout import Rollouts
from gha_mlops.testing.fake_deploy import FakeChecks, FakeHost

ENV = "staging"
LABELS = "io.gha-mlops.model."
GOLDEN = json.dumps({"format": "gha-mlops.golden/1", "atol": 1e-5, "rtol": 1e-4,
                     "cases": [{"inputs": [[[1.0]]], "outputs": [[[2.0]]]}]}).encode()


def _image(host: FakeHost, version: str, image_id: str | None = None) -> str:
    ref = f"reg/tiny@sha256:{version.replace('.', '') * 8}"
    image_id = image_id or f"sha256:id{version}"
    host.images[ref] = (image_id, {f"{LABELS}name": "tiny", f"{LABELS}version": version})
    host.files[image_id] = {IMAGE_PATH: GOLDEN}
    return ref


def _rollouts(hosts: list[FakeHost], **config: object) -> tuple[Rollouts, FakeChecks]:
    cfg = DeployEnvironment(
        name=ENV, stage="staging",
        hosts=tuple(DeployHostConfig(h.url, h.address) for h in hosts), port=9000,
        backend_ports=(9001, 9002), bake_s=2.0, gates=DeployGates(max_error_rate=0.05))
    cfg = replace(cfg, **config)  # type: ignore[arg-type]
    checks = FakeChecks(hosts, ENV)
    for host in hosts:
        host.images.setdefault("nginx", ("sha256:nginx", {}))
    env = Environment(cfg, hosts, "nginx", checks, sleep=lambda s: None)
    clock = iter(float(i) for i in range(10_000))
    return Rollouts(env, clock=lambda: next(clock)), checks


def _deploy(rollouts: Rollouts, version: str) -> object:
    ref = next(r for r in rollouts.env.hosts[0].images if version.replace(".", "") in r)
    return rollouts.deploy("tiny", version, ref, {f"{LABELS}version": version})


@pytest.fixture
def hosts() -> list[FakeHost]:
    found = [FakeHost("tcp://h1:2375", "10.0.0.1"), FakeHost("tcp://h2:2375", "10.0.0.2")]
    for host in found:
        for version in ("1.0.0", "1.1.0"):
            _image(host, version)
    return found


def test_a_rollout_steps_through_the_weights_and_retires_the_old_version(
        hosts: list[FakeHost]) -> None:
    rollouts, _ = _rollouts(hosts)
    first = _deploy(rollouts, "1.0.0")
    assert [s.weight for s in first.steps] == [100]  # type: ignore[attr-defined]
    second = _deploy(rollouts, "1.1.0")
    assert [s.weight for s in second.steps] == [10, 50, 100]  # type: ignore[attr-defined]
    assert second.previous.version == "1.0.0"  # type: ignore[attr-defined]
    for host in hosts:
        state = host.read(ENV)
        assert state.router.stable.version == "1.1.0" and state.router.canary is None
        assert [b.release.version for b in state.backends] == ["1.1.0"]
        assert state.router.history[0].version == "1.0.0" and state.lock is None
    again = _deploy(rollouts, "1.1.0")
    assert not again.changed  # type: ignore[attr-defined]


@pytest.mark.parametrize("fault", ["never_ready", "wrong_golden", "errors"])
def test_a_failed_check_sends_traffic_back_and_removes_the_new_version(
        hosts: list[FakeHost], fault: str) -> None:
    rollouts, checks = _rollouts(hosts)
    _deploy(rollouts, "1.0.0")
    if fault == "errors":
        checks.error_rate["sha256:id1.1.0"] = 0.5
    else:
        getattr(checks, fault).add("sha256:id1.1.0")
    with pytest.raises(DeployError) as failed:
        _deploy(rollouts, "1.1.0")
    assert "traffic went back to tiny 1.0.0" in failed.value.notes
    if fault == "errors":
        assert "at 10%" in failed.value.message and "error rate" in failed.value.message
    for host in hosts:
        state = host.read(ENV)
        assert state.router.stable.version == "1.0.0" and state.router.canary is None
        assert state.router.weight == 0 and state.router.rollout is None
        assert [b.release.version for b in state.backends] == ["1.0.0"]
        assert state.lock is None


def test_an_image_whose_labels_name_another_version_is_refused(hosts: list[FakeHost]) -> None:
    rollouts, _ = _rollouts(hosts)
    ref = _image(hosts[0], "1.0.0")
    with pytest.raises(DeployError, match=r"is not tiny 2\.0\.0"):
        rollouts.deploy("tiny", "2.0.0", ref, {f"{LABELS}version": "2.0.0"})
    assert not hosts[0].backends


def test_a_half_done_rollout_is_settled_back_on_every_host(hosts: list[FakeHost]) -> None:
    rollouts, _ = _rollouts(hosts)
    _deploy(rollouts, "1.0.0")
    # What a deploy killed with -9 at 50 % leaves: every router sends half the traffic to
    # 1.1.0 in slot b, and the lock names a process of this machine that is gone.
    record = hosts[0].read(ENV).router
    assert record is not None and record.stable_slot == "a"
    release = Release("tiny", "1.1.0", _image(hosts[0], "1.1.0"), "sha256:id1.1.0")
    for host in hosts:
        host.start_backend(ENV, "b", release, port=9002, bind="127.0.0.1", workers=1)
    rollouts.env.write(replace(record, canary_slot="b", canary=release, weight=50,
                               rollout=Rollout("gone:1", 0.0, 1)))
    dead = LockInfo(f"{socket.gethostname()}:999999", socket.gethostname(), 999999, 0.0,
                    4e9, "tiny 1.1.0")
    hosts[0].locks[ENV] = dead
    status = rollouts.status()
    assert any("took over the lock of" in n and "is gone" in n for n in rollouts.notes)
    assert any("unfinished rollout of tiny 1.1.0 at 50%" in n for n in rollouts.notes)
    assert status.record.stable.version == "1.0.0" and status.record.canary is None
    for host in hosts:
        assert [b.release.version for b in host.read(ENV).backends] == ["1.0.0"]
        assert host.read(ENV).router.weight == 0


def test_a_host_that_missed_the_final_write_catches_up(hosts: list[FakeHost]) -> None:
    rollouts, _ = _rollouts(hosts)
    _deploy(rollouts, "1.0.0")
    _deploy(rollouts, "1.1.0")
    # host 2 lost its router's record and its backend (a rebuilt machine)
    hosts[1].routers.clear()
    hosts[1].backends.clear()
    rollouts.status()
    state = hosts[1].read(ENV)
    assert state.router.stable.version == "1.1.0"
    assert [b.release.version for b in state.backends] == ["1.1.0"]


def test_a_live_holder_makes_a_second_deploy_fail_clearly(hosts: list[FakeHost]) -> None:
    rollouts, _ = _rollouts(hosts)
    holder = LockInfo("ci-7:4242", "ci-7", 4242, 1.0e9, 4.0e9, "tiny 1.0.0")
    hosts[0].locks[ENV] = holder
    with pytest.raises(DeployBusyError) as busy:
        _deploy(rollouts, "1.1.0")
    assert "is being deployed by ci-7:4242" in busy.value.message
    assert "tiny 1.0.0" in busy.value.message and busy.value.exit_code == 75
    assert hosts[0].locks[ENV] == holder
    expired = replace(holder, expires=1.0)
    hosts[0].locks[ENV] = expired
    _deploy(rollouts, "1.1.0")
    assert any("lease ran out" in n for n in rollouts.notes)


def test_rollback_starts_the_recorded_previous_release(hosts: list[FakeHost]) -> None:
    rollouts, _ = _rollouts(hosts)
    with pytest.raises(DeployError, match="nothing is deployed"):
        rollouts.rollback()
    _deploy(rollouts, "1.0.0")
    with pytest.raises(DeployError, match="no earlier one"):
        rollouts.rollback()
    _deploy(rollouts, "1.1.0")
    back = rollouts.rollback()
    assert back.release.version == "1.0.0" and back.previous.version == "1.1.0"
    assert back.release.image.startswith("reg/tiny@sha256:")
    for host in hosts:
        state = host.read(ENV)
        assert state.router.stable.version == "1.0.0" and state.router.history == ()
        assert [b.release.version for b in state.backends] == ["1.0.0"]


def test_a_host_gone_mid_rollout_is_exit_12_and_the_others_go_back(
        hosts: list[FakeHost]) -> None:
    rollouts, _ = _rollouts(hosts)
    _deploy(rollouts, "1.0.0")
    hosts[1].fail_on = lambda call: call == "router 6"

    def gone(call: str) -> bool:
        if call == "router 6":
            hosts[1].reachable = False
        return call == "router 6"

    hosts[1].fail_on = gone
    with pytest.raises(DeployTargetError) as lost:
        _deploy(rollouts, "1.1.0")
    assert lost.value.exit_code == 12
    assert any("tcp://h2:2375 could not be reached" in n for n in lost.value.notes)
    state = hosts[0].read(ENV)
    assert state.router.canary is None and state.router.stable.version == "1.0.0"
    assert os.getpid()  # the lock on host 1 was given back
    assert state.lock is None


def test_backends_start_with_their_models_prediction_log(hosts: list[FakeHost]) -> None:
    rollouts, _ = _rollouts(hosts)
    log = PredictionLog("s3://logs/pred", 0.5, {"AWS_REGION": "eu-west-1"})
    rollouts.env = replace(rollouts.env, logs={"tiny": log})
    _deploy(rollouts, "1.0.0")
    for host in hosts:
        assert list(host.logs.values()) == [log]
    rollouts.env = replace(rollouts.env, logs={"other-model": log})
    _deploy(rollouts, "1.1.0")
    assert all(host.logs[(ENV, b.slot)] is None
               for host in hosts for b in host.read(ENV).backends)


def test_the_deploy_reads_each_models_log_from_the_monitor_section(tmp_path: Path) -> None:
    from gha_mlops.bootstrap import prediction_logs

    root = tmp_path
    (root / "mlops.yaml").write_text(
        "stages:\n  train:\n    cmd: python t.py\n    outs: [m]\n"
        "registry:\n  models:\n    digits: {path: m/a.onnx}\n    churn: {path: m/b.onnx}\n"
        "monitor:\n  models:\n    digits: {log: logs/pred, sample: 0.5}\n"
        "    churn: {log: 's3://bucket/churn'}\n")
    environ = {"AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "s", "HOME": "/root",
               "AWS_ENDPOINT_URL": "http://127.0.0.1:5000", "AWS_SESSION_TOKEN": ""}
    found = prediction_logs(root, environ)
    assert found == {
        "digits": PredictionLog(str((root / "logs" / "pred").resolve()), 0.5),
        "churn": PredictionLog("s3://bucket/churn", 0.1, {
            "AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "s",
            "AWS_ENDPOINT_URL": "http://127.0.0.1:5000"})}
