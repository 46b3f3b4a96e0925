"""EC2 runners end to end, for real where it can be: a moto server (EC2, SSM, SQS) behind the
fault proxy, the GitHub emulator, the instance harness (tests/integration/ec2_instances.py:
an IMDSv2 stand-in and the real ``gha-mlops runners agent`` per instance, running the
runner stand-in that registers with the emulator) and the real ``gha-mlops runners serve``
process with a ``backend: ec2`` pool.

Every service test ends with the claims that matter: every job served, no instance running
that no job needs, no SSM parameter left, no job queued, no registration left.
"""

from __future__ import annotations

import json
import secrets
import signal
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gha_mlops.runners.backends.base import LABEL_OWNER, LABEL_POOL, LABEL_RUNNER, BackendError
from gha_mlops.runners.backends.ec2_clients import TAG_INTERRUPTION, TAG_PARAMETER, make_clients
from gha_mlops.runners.backends.ec2_instance import ATTEMPTS, InstanceAws
from gha_mlops.testing.github_emulator import GitHubEmulator
from tests.integration.aws_fixtures import (  # noqa: F401
    FaultProxy,
    FleetError,
    MotoServer,
    aws_env,
    fault_proxy,
    moto_server,
)
from tests.integration.ec2_instances import (
    NEVER_REGISTERS,
    REGION,
    Ec2Instances,
    ec2_instances,
)
from tests.integration.test_runners_e2e import REPO, Service, jobs_done, wait_until

boto3 = pytest.importorskip("boto3")
pytest_plugins = ["tests.integration.github_fixtures"]
pytestmark = pytest.mark.usefixtures("aws_env")

LABELS = ["self-hosted", "train"]


class Aws:
    """boto3 clients at moto's own endpoint (the test's view of the account, no faults)."""

    def __init__(self, moto: MotoServer) -> None:
        self.ec2 = boto3.client("ec2", endpoint_url=moto.endpoint, region_name=REGION)
        self.ssm = boto3.client("ssm", endpoint_url=moto.endpoint, region_name=REGION)
        self.sqs = boto3.client("sqs", endpoint_url=moto.endpoint, region_name=REGION)

    def ami(self) -> str:
        return str(self.ec2.describe_images()["Images"][0]["ImageId"])

    def subnet(self) -> str:
        return str(self.ec2.describe_subnets()["Subnets"][0]["SubnetId"])

    def security_group(self) -> str:
        groups = self.ec2.describe_security_groups(GroupNames=["default"])["SecurityGroups"]
        return str(groups[0]["GroupId"])

    def parameters(self, prefix: str = "/") -> list[str]:
        found = self.ssm.get_parameters_by_path(Path=prefix, Recursive=True)["Parameters"]
        return [p["Name"] for p in found]


@pytest.fixture
def aws(moto_server: MotoServer) -> Iterator[Aws]:  # noqa: F811
    moto_server.reset()
    yield Aws(moto_server)


def jit_config(gh: GitHubEmulator, name: str) -> str:
    """A runner registered in the emulator the way the autoscaler does it: its JIT config."""
    request = urllib.request.Request(
        f"{gh.url}/repos/{REPO}/actions/runners/generate-jitconfig", method="POST",
        data=json.dumps({"name": name, "runner_group_id": 1, "labels": LABELS}).encode(),
        headers={"Authorization": f"token {gh.token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return str(json.loads(resp.read())["encoded_jit_config"])


def launch_by_hand(aws: Aws, owner: str, runner: str, jit: str | None) -> str:
    """An instance as the backend launches one (owner/runner/parameter tags, the JIT config
    in a SecureString), without the backend: the agent and the harness on their own."""
    parameter = f"/gha-mlops/{owner}/{runner}"
    if jit is not None:
        aws.ssm.put_parameter(Name=parameter, Value=jit, Type="SecureString")
    tags = {LABEL_OWNER: owner, LABEL_RUNNER: runner, LABEL_POOL: "cpu",
            TAG_PARAMETER: parameter}
    found = aws.ec2.run_instances(
        ImageId=aws.ami(), MinCount=1, MaxCount=1, InstanceType="m5.large",
        TagSpecifications=[{"ResourceType": "instance",
                            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}])
    return str(found["Instances"][0]["InstanceId"])


def state(aws: Aws, iid: str) -> str:
    found = aws.ec2.describe_instances(InstanceIds=[iid])["Reservations"]
    return str(found[0]["Instances"][0]["State"]["Name"])


@pytest.fixture
def owner() -> str:
    return "t" + secrets.token_hex(3)


@pytest.fixture
def harness(tmp_path: Path, moto_server: MotoServer, fault_proxy: FaultProxy,  # noqa: F811
            aws: Aws, owner: str) -> Iterator[Ec2Instances]:
    with ec2_instances(moto_server.endpoint, fault_proxy.endpoint, owner, tmp_path) as h:
        yield h


# -- the agent and the harness on their own (no autoscaler) --------------------------------


def test_an_instance_runs_its_runner_once_and_powers_off(
        harness: Ec2Instances, aws: Aws, github: GitHubEmulator, owner: str,
        fault_proxy: FaultProxy) -> None:  # noqa: F811
    github.runner_timeout = 3.0
    name = f"{owner}-cpu-000001"
    fault_proxy.fail("GetParameter", "ThrottlingException", "Rate exceeded", times=2)
    job = github.repo(REPO).queue_job(LABELS, duration=0.5)
    iid = launch_by_hand(aws, owner, name, jit_config(github, name))
    wait_until("the job to complete", lambda: jobs_done(github, [job]), 60)
    assert github.job(job).conclusion == "success" and github.job(job).runner_name == name
    wait_until("the instance to power off", lambda: state(aws, iid) == "terminated", 30)
    assert aws.parameters() == [], "the JIT config was read once and deleted"
    calls = [(c.action, c.fault) for c in fault_proxy.calls() if c.action.endswith("Parameter")]
    assert calls == [("GetParameter", "error")] * 2 + [("GetParameter", ""),
                                                       ("DeleteParameter", "")], calls
    wait_until("the harness to let it go", lambda: iid in harness.ended, 10)
    assert '"runner ' + name in harness.logs() or name in harness.logs()


def test_an_instance_whose_parameter_is_gone_powers_off_at_once(
        harness: Ec2Instances, aws: Aws, owner: str) -> None:
    iid = launch_by_hand(aws, owner, f"{owner}-cpu-000002", None)
    wait_until("the instance to power off", lambda: state(aws, iid) == "terminated", 30)
    wait_until("the harness to let it go", lambda: iid in harness.ended, 10)
    text = harness.logs()
    assert "was read already" in text and "running" in text, text


def test_the_notice_in_metadata_tags_the_instance_and_the_runner_dies_with_it(
        harness: Ec2Instances, aws: Aws, github: GitHubEmulator, owner: str) -> None:
    github.runner_timeout = 2.0
    name = f"{owner}-cpu-000003"
    job = github.repo(REPO).queue_job(LABELS, duration=30)
    iid = launch_by_hand(aws, owner, name, jit_config(github, name))
    wait_until("the job to start", lambda: github.job(job).status == "in_progress", 60)
    harness.interrupt(iid, after=1.5, action_time="2026-12-06T03:02:00Z")
    wait_until("the job to fail with its machine", lambda: jobs_done(github, [job]), 30)
    assert github.job(job).conclusion == "failure"
    tags = {t["Key"]: t["Value"] for t in aws.ec2.describe_instances(
        InstanceIds=[iid])["Reservations"][0]["Instances"][0]["Tags"]}
    assert tags[TAG_INTERRUPTION] == "2026-12-06T03:02:00Z imds"
    assert state(aws, iid) == "terminated" and harness.ended.get(iid) == -signal.SIGKILL




def _instance_aws(proxy: FaultProxy) -> InstanceAws:
    return InstanceAws(make_clients(REGION, endpoint_url=proxy.endpoint,
                                    environ={"AWS_ACCESS_KEY_ID": "testing",
                                             "AWS_SECRET_ACCESS_KEY": "testing"}),
                       sleep=lambda s: None)


def test_the_instance_calls_say_what_to_grant_and_a_failed_delete_is_not_fatal(
        aws: Aws, fault_proxy: FaultProxy) -> None:  # noqa: F811
    aws.ssm.put_parameter(Name="/gha-mlops/t/r", Value="abc=", Type="SecureString")
    calls = _instance_aws(fault_proxy)
    fault_proxy.fail("GetParameter", "AccessDeniedException", "not authorized to perform "
                     "ssm:GetParameter")
    with pytest.raises(BackendError) as err:
        calls.take_parameter("/gha-mlops/t/r")
    assert "AccessDeniedException" in err.value.message and "ssm:GetParameter" in \
        str(err.value.hint) and len(fault_proxy.calls("GetParameter")) == 1, "not retried"
    fault_proxy.fail("DeleteParameter", "AccessDeniedException", "no")
    assert calls.take_parameter("/gha-mlops/t/r") == ("abc=", "DeleteParameter: "
                                                      "AccessDeniedException (access denied): no")
    assert aws.parameters() == ["/gha-mlops/t/r"], "left for the autoscaler's sweep"
    fault_proxy.fail("CreateTags", "RequestLimitExceeded", times=ATTEMPTS)
    with pytest.raises(BackendError, match="RequestLimitExceeded"):
        calls.tag("i-0123456789abcdef0", TAG_INTERRUPTION, "x imds")
    assert len(fault_proxy.calls("CreateTags")) == ATTEMPTS, "retried, then given up"


# -- the autoscaler with an ec2 pool ---------------------------------------------------------


class Ec2Service(Service):
    """`gha-mlops runners serve` with one ec2 pool (endpoint: the fault proxy)."""

    def __init__(self, workdir: Path, gh: GitHubEmulator, aws: Aws, proxy: FaultProxy,
                 owner: str, *, queue: str | None = None, max_runners: int = 2,
                 register_timeout: str = "20s", max_lifetime: str = "10m",
                 expiry_grace: str = "1h", capacity: str = "spot-then-on-demand") -> None:
        super().__init__(workdir, gh, "unused://", "unused")
        self.id = owner
        queue_line = f'\n    interruption_queue: "{queue}"' if queue else ""
        self.config.write_text(f"""
id: {owner}
github: {{repo: {REPO}, api_url: "{gh.url}", token_env: GH_TOKEN}}
webhook: {{secret_env: HOOK_SECRET, listen: "127.0.0.1:0"}}
state: state.db
reconcile_interval: 1s
grace_period: 3s
backends:
  ec2:
    region: {REGION}
    endpoint_url: "{proxy.endpoint}"{queue_line}
    subnets: [{aws.subnet()}]
    security_groups: [{aws.security_group()}]
pools:
  - name: cloud
    backend: ec2
    labels: [train]
    max: {max_runners}
    idle_timeout: 3s
    register_timeout: {register_timeout}
    max_lifetime: {max_lifetime}
    ec2: {{instance_types: [m5.large, c5.large], ami: {aws.ami()}, capacity: {capacity},
          expiry_grace: {expiry_grace}}}
""")


@pytest.fixture
def serve(tmp_path: Path, github: GitHubEmulator, aws: Aws, fault_proxy: FaultProxy,  # noqa: F811
          owner: str, harness: Ec2Instances) -> Iterator[Callable[..., Ec2Service]]:
    github.runner_timeout = 2.0
    made: list[Ec2Service] = []

    def make(**kwargs: Any) -> Ec2Service:
        svc = Ec2Service(tmp_path, github, aws, fault_proxy, owner, **kwargs)
        made.append(svc)
        return svc

    yield make
    for svc in made:
        if svc.proc is not None and svc.proc.poll() is None:
            svc.stop()


def assert_clean(aws: Aws, gh: GitHubEmulator, harness: Ec2Instances, svc: Ec2Service) -> None:
    """No instance running that no job needs, no parameter, no job queued, no registration."""
    wait_until("no job queued", lambda: all(
        j.status == "completed" for j in gh.jobs(REPO)), 60)
    wait_until("every instance to be terminated", lambda: not harness.live(), 30)
    wait_until("every parameter to be gone", lambda: not aws.parameters(), 30)
    wait_until("every registration to be gone", lambda: not gh.runners(REPO), 30)
    assert svc.proc is not None and svc.proc.poll() is None, svc.text()


def test_a_burst_is_served_by_spot_instances_and_nothing_is_left(
        serve: Callable[..., Ec2Service], github: GitHubEmulator, aws: Aws,
        harness: Ec2Instances, fault_proxy: FaultProxy) -> None:  # noqa: F811
    svc = serve().start()
    ids = [github.repo(REPO).queue_job(LABELS, duration=1.0) for _ in range(4)]
    wait_until("the burst to be served", lambda: jobs_done(github, ids), 90)
    jobs = [github.job(i) for i in ids]
    assert [j.conclusion for j in jobs] == ["success"] * 4, harness.logs()
    assert len({j.runner_name for j in jobs}) == 4, "one instance per job"
    assert_clean(aws, github, harness, svc)
    lifecycles = {i["InstanceId"]: i.get("InstanceLifecycle", "on-demand")
                  for i in harness.all()}
    assert len(lifecycles) == 4 and set(lifecycles.values()) == {"spot"}, lifecycles
    assert len(fault_proxy.calls("CreateFleet")) == 4


def instance_of(harness: Ec2Instances, runner: str) -> dict[str, Any]:
    found = [i for i in harness.all() if {"Key": LABEL_RUNNER, "Value": runner} in i["Tags"]]
    assert len(found) == 1, f"runner {runner}: {len(found)} instances"
    return found[0]


def tags_of(instance: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


def test_killed_between_create_fleet_and_state_the_restart_adopts_by_tag(
        serve: Callable[..., Ec2Service], github: GitHubEmulator, aws: Aws,
        harness: Ec2Instances, fault_proxy: FaultProxy) -> None:  # noqa: F811
    svc = serve()
    svc.start(GHA_MLOPS_FAILPOINTS="after-launch")
    ids = [github.repo(REPO).queue_job(LABELS, duration=1.0) for _ in range(2)]
    assert svc.proc is not None and svc.proc.wait(timeout=60) == -signal.SIGKILL
    before = len(harness.all())  # launched by CreateFleet, never written in the state
    assert before >= 1
    svc.start()
    wait_until("both jobs to be served", lambda: jobs_done(github, ids), 90)
    assert [github.job(i).conclusion for i in ids] == ["success"] * 2, harness.logs()
    assert_clean(aws, github, harness, svc)
    runners = [tags_of(i)[LABEL_RUNNER] for i in harness.all()]
    assert len(runners) == len(set(runners)) == 2, f"one instance per runner: {runners}"
    launched = [c for c in fault_proxy.calls("CreateFleet") if c.fault != "idempotent"]
    assert len(launched) == 2, launched
    assert svc._find("adopted a machine started before a restart") is not None, svc.text()
    print(f"\n{before} instance(s) launched before the kill, adopted by tag after it")


def _interrupted_mid_job(serve: Callable[..., Ec2Service], github: GitHubEmulator, aws: Aws,
                         harness: Ec2Instances, *, imds: bool) -> tuple[Ec2Service, str]:
    queue = aws.sqs.create_queue(QueueName="gha-spot")["QueueUrl"]
    svc = serve(queue="gha-spot").start()
    job = github.repo(REPO).queue_job(LABELS, duration=4)
    wait_until("the job to start", lambda: github.job(job).status == "in_progress", 60)
    first = github.job(job).runner_name
    assert first is not None
    iid = instance_of(harness, first)["InstanceId"]
    harness.interrupt(iid, after=1.5, imds=imds, queue_url=None if imds else queue)
    wait_until("the job to fail with its instance", lambda: jobs_done(github, [job]), 30)
    assert github.job(job).conclusion == "failure"
    again = wait_until("the re-run", lambda: [
        j for j in github.jobs(REPO) if j.run_attempt == 2], 30)[0]
    wait_until("the re-run to be served", lambda: jobs_done(github, [again.id]), 60)
    assert github.job(again.id).conclusion == "success", harness.logs()
    assert github.job(again.id).runner_name != first
    assert len([j for j in github.jobs(REPO) if j.run_id == again.run_id]) == 2, "once only"
    msgs = [str(x.get("msg", "")) for x in svc.lines()]
    drained = [i for i, m in enumerate(msgs) if m.startswith("spot interruption notice: "
                                                            "runner draining")]
    failed = msgs.index("job completed: failure")
    assert drained and drained[0] < failed, "drained on notice, before the job was lost"
    assert any(m == "runner launched" for m in msgs[drained[0]:failed]), \
        "the re-run's runner was booting before the job was lost"
    assert f"re-ran job {job}: its spot instance was interrupted" in msgs, svc.text()
    assert_clean(aws, github, harness, svc)
    return svc, tags_of(instance_of(harness, first)).get(TAG_INTERRUPTION, "")


def test_an_interruption_noticed_in_metadata_drains_and_the_job_is_rerun_once(
        serve: Callable[..., Ec2Service], github: GitHubEmulator, aws: Aws,
        harness: Ec2Instances) -> None:
    _, tag = _interrupted_mid_job(serve, github, aws, harness, imds=True)
    assert tag == "2026-12-06T03:02:00Z imds"


def test_an_interruption_heard_only_through_sqs_is_handled_the_same(
        serve: Callable[..., Ec2Service], github: GitHubEmulator, aws: Aws,
        harness: Ec2Instances) -> None:
    _, tag = _interrupted_mid_job(serve, github, aws, harness, imds=False)
    assert tag.endswith("eventbridge"), tag
    assert "spot interruption notice" not in harness.logs(), "the agent was not told"


def test_an_instance_that_never_registers_is_terminated_after_register_timeout(
        serve: Callable[..., Ec2Service], github: GitHubEmulator, aws: Aws,
        harness: Ec2Instances) -> None:
    harness.runner_cmd = NEVER_REGISTERS
    svc = serve(register_timeout="4s").start()
    job = github.repo(REPO).queue_job(LABELS, duration=0.5)
    stuck = wait_until("the first instance", lambda: harness.seen[:1], 30)[0]
    harness.runner_cmd = str(harness.wrapper)  # the replacement boots a working runner
    wait_until("the job to be served", lambda: jobs_done(github, [job]), 60)
    assert github.job(job).conclusion == "success"
    assert svc._find("drained: never came online") is not None, svc.text()
    assert stuck not in {i["InstanceId"] for i in harness.live()}
    assert_clean(aws, github, harness, svc)


def test_an_instance_past_its_expiry_is_terminated_whatever_its_runner_does(
        serve: Callable[..., Ec2Service], github: GitHubEmulator, aws: Aws,
        harness: Ec2Instances) -> None:
    svc = serve(max_lifetime="2s", expiry_grace="1s").start()
    job = github.repo(REPO).queue_job(LABELS, duration=60)
    wait_until("the job to start", lambda: github.job(job).status == "in_progress", 60)
    iid = instance_of(harness, str(github.job(job).runner_name))["InstanceId"]
    wait_until("the expired instance to be terminated", lambda: iid not in {
        i["InstanceId"] for i in harness.live()}, 30)
    # The instance is gone as soon as TerminateInstances answers; the line follows it.
    wait_until("the removal to be logged",
               lambda: svc._find("removed machine: past its expiry") is not None, 10)
    assert svc._find(f"job {job} is not re-run: its machine was past its expiry") is not None
    wait_until("its job to end", lambda: jobs_done(github, [job]), 30)
    assert [j.run_attempt for j in github.jobs(REPO)] == [1], "an expired job is not re-run"
    assert_clean(aws, github, harness, svc)


def test_spot_gone_in_every_type_is_served_on_demand(
        serve: Callable[..., Ec2Service], github: GitHubEmulator, aws: Aws,
        harness: Ec2Instances, fault_proxy: FaultProxy) -> None:  # noqa: F811
    subnet = aws.subnet()
    fault_proxy.partial_fleet(0, [FleetError("InsufficientInstanceCapacity", "no spot", t,
                                             subnet) for t in ("m5.large", "c5.large")])
    svc = serve().start()
    job = github.repo(REPO).queue_job(LABELS, duration=0.5)
    wait_until("the job to be served", lambda: jobs_done(github, [job]), 60)
    assert github.job(job).conclusion == "success", harness.logs()
    instance = instance_of(harness, str(github.job(job).runner_name))
    assert instance.get("InstanceLifecycle", "on-demand") == "on-demand"
    assert svc._find("no spot capacity for pool cloud in any of its types "
                     "(InsufficientInstanceCapacity); launched on-demand") is not None
    assert fault_proxy.pending() == 0
    assert_clean(aws, github, harness, svc)


def test_a_missing_queue_is_said_and_the_pool_still_serves(
        serve: Callable[..., Ec2Service], github: GitHubEmulator, aws: Aws,
        harness: Ec2Instances) -> None:
    svc = serve(queue="gha-no-such-queue").start()
    job = github.repo(REPO).queue_job(LABELS, duration=0.5)
    wait_until("the job to be served", lambda: jobs_done(github, [job]), 60)
    assert github.job(job).conclusion == "success", harness.logs()
    line = svc._find("interruption queue: SQS queue 'gha-no-such-queue'")
    assert line is not None and line["level"] == "error", svc.text()
    assert_clean(aws, github, harness, svc)
