"""The instance agent against the IMDSv2 stand-in (loopback) and a fake of its AWS port: what
it reads, what it hands the runner and how, the notice it tags once, and that a broken
instance powers off (--on-exit) while a stopped agent does not."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gha_mlops.runners.agent import (
    Agent,
    AgentError,
    AgentOptions,
    Imds,
    check_jit_config,
    parse_notice,
)
from gha_mlops.runners.backends.base import LABEL_RUNNER, BackendError
from gha_mlops.runners.backends.ec2_clients import TAG_INTERRUPTION, TAG_PARAMETER
from tests.integration.imds_standin import ImdsStandin, imds_standin

IID = "i-0123456789abcdef0"
JIT = "eyJydW5uZXJfaWQiOiAxfQ=="
TAGS = {LABEL_RUNNER: "box-cpu-0a1b2c", TAG_PARAMETER: "/gha-mlops/box/box-cpu-0a1b2c"}
# The runner: writes what it was given (argv, the config from the environment) and exits
# with $CODE after $SLEEP seconds.
RUNNER = """import json, os, sys, time
json.dump({"argv": sys.argv[1:], "jit": os.environ.get("GHA_MLOPS_JITCONFIG")},
          open(sys.argv[1], "w"))
time.sleep(float(os.environ.get("SLEEP", "0")))
sys.exit(int(os.environ.get("CODE", "0")))
"""


class FakeAws:
    def __init__(self, value: str = JIT, *, tag_failures: int = 0) -> None:
        self.value, self.tag_failures = value, tag_failures
        self.taken: list[str] = []
        self.tags: list[tuple[str, str, str]] = []
        self.regions: list[str] = []

    def take_parameter(self, name: str) -> tuple[str, str]:
        self.taken.append(name)
        if self.value == "":
            raise BackendError("the SSM parameter is missing", retryable=False)
        return self.value, ""

    def tag(self, instance_id: str, key: str, value: str) -> None:
        if self.tag_failures:
            self.tag_failures -= 1
            raise BackendError("CreateTags: RequestLimitExceeded (retry-later)")
        self.tags.append((instance_id, key, value))


@pytest.fixture
def imds() -> Iterator[ImdsStandin]:
    with imds_standin(IID, tags=TAGS) as standin:
        yield standin


class Run:
    def __init__(self, tmp: Path, imds: ImdsStandin, aws: FakeAws, **env: str) -> None:
        self.seen, self.exited = tmp / "seen.json", tmp / "on-exit"
        script = tmp / "runner.py"
        script.write_text(RUNNER)
        self.options = AgentOptions(
            imds=imds.endpoint, runner_cmd=(sys.executable, str(script), str(self.seen)),
            poll_s=0.05, on_exit=(sys.executable, "-c", f"open({str(self.exited)!r}, 'w')"))
        self.agent = Agent(self.options, Imds(imds.endpoint, sleep=lambda s: None),
                           self._aws, {"PATH": "/usr/bin:/bin", **env}, boot_attempts=2)
        self.aws = aws

    def _aws(self, region: str) -> FakeAws:
        self.aws.regions.append(region)
        return self.aws

    def given(self) -> dict[str, object]:
        data: dict[str, object] = json.loads(self.seen.read_text())
        return data


def test_reads_its_runner_once_hands_the_config_by_environment_and_powers_off(
        tmp_path: Path, imds: ImdsStandin) -> None:
    run = Run(tmp_path, imds, FakeAws())
    assert run.agent.run() == 0
    assert run.aws.regions == ["us-east-1"] and run.aws.taken == [TAGS[TAG_PARAMETER]]
    given = run.given()
    assert given["jit"] == JIT and JIT not in json.dumps(given["argv"]), "not in /proc"
    assert run.exited.exists(), "--on-exit ran: the instance powers off"
    assert imds.requests[0][:2] == ("PUT", "/latest/api/token"), "IMDSv2: a token first"
    assert all(status != 401 for _, _, status in imds.requests)
    assert run.aws.tags == [], "no notice, no tag"


def test_the_first_interruption_notice_tags_the_instance_once(
        tmp_path: Path, imds: ImdsStandin) -> None:
    imds.notify("2026-12-06T03:02:00Z")
    run = Run(tmp_path, imds, FakeAws(tag_failures=1), SLEEP="0.6")
    assert run.agent.run() == 0
    # The first CreateTags was refused (throttled): the next poll tagged it, then no more.
    assert run.aws.tags == [(IID, TAG_INTERRUPTION, "2026-12-06T03:02:00Z imds")]
    assert run.exited.exists()


def test_an_expired_token_is_renewed(tmp_path: Path, imds: ImdsStandin) -> None:
    run = Run(tmp_path, imds, FakeAws(), SLEEP="0.4")
    imds_client = run.agent.imds
    assert imds_client.get("/latest/meta-data/instance-id") == IID.encode()
    imds.expire_tokens()
    assert imds_client.get("/latest/meta-data/instance-id") == IID.encode()
    assert [s for _, _, s in imds.requests].count(401) == 1


@pytest.mark.parametrize("break_it", ["runner tag", "parameter tag", "parameter gone",
                                      "instance id", "huge", "not base64", "no token"])
def test_an_instance_that_cannot_serve_says_why_and_powers_off(
        tmp_path: Path, imds: ImdsStandin, break_it: str) -> None:
    aws = FakeAws("" if break_it == "parameter gone" else
                  "not base64; rm -rf /" if break_it == "not base64" else JIT)
    tags = dict(TAGS)
    if break_it == "runner tag":
        del tags[LABEL_RUNNER]
    if break_it == "parameter tag":
        del tags[TAG_PARAMETER]
    imds._tags = tags
    if break_it == "instance id":
        imds.raw["/latest/meta-data/instance-id"] = (200, b"i-123; rm -rf /")
    if break_it == "huge":
        imds.raw["/latest/meta-data/placement/region"] = (200, b"x" * 100_000)
    if break_it == "no token":
        imds.raw["/latest/api/token"] = (403, b"")
    run = Run(tmp_path, imds, aws)
    with pytest.raises(AgentError) as err:
        run.agent.run()
    expected = {"runner tag": LABEL_RUNNER, "parameter tag": TAG_PARAMETER,
                "parameter gone": "missing", "instance id": "instance id",
                "huge": "more than 4096 bytes", "not base64": "just-in-time config",
                "no token": "no IMDSv2 session token"}[break_it]
    assert expected in err.value.message
    assert "rm -rf" not in err.value.message or break_it == "instance id"
    assert not run.seen.exists(), "no runner started"
    assert run.exited.exists(), "a broken instance must not sit and bill"


def test_metadata_that_never_answers_is_an_error_not_a_hang(tmp_path: Path) -> None:
    with imds_standin(IID, tags=TAGS) as standin:
        endpoint = standin.endpoint
    imds = ImdsStandin(IID)
    imds.endpoint = endpoint  # nothing listens there any more
    run = Run(tmp_path, imds, FakeAws())
    with pytest.raises(AgentError, match="does not answer"):
        run.agent.run()
    assert run.exited.exists()


def test_a_failed_runner_is_reported_and_the_instance_still_powers_off(
        tmp_path: Path, imds: ImdsStandin) -> None:
    run = Run(tmp_path, imds, FakeAws(), CODE="3")
    assert run.agent.run() == 3
    assert run.exited.exists()


def test_a_stopped_agent_stops_its_runner_and_does_not_power_off(
        tmp_path: Path, imds: ImdsStandin) -> None:
    run = Run(tmp_path, imds, FakeAws())
    stopper = tmp_path / "stopper.py"
    stopper.write_text("import os, signal, time\nos.kill(os.getppid(), signal.SIGINT)\n"
                       "time.sleep(30)\n")
    agent = Agent(AgentOptions(imds=imds.endpoint, runner_cmd=(sys.executable, str(stopper)),
                               poll_s=0.05, on_exit=run.options.on_exit),
                  run.agent.imds, run._aws, {})
    with pytest.raises(KeyboardInterrupt):
        agent.run()
    assert not run.exited.exists()


@pytest.mark.parametrize(("body", "why"), [
    (b'{"action": "terminate", "time": "2026-12-06T03:02:00Z"}', ""),
    (b'{"action": "hibernate", "time": "2026-12-06T03:02:00.123Z"}', ""),
    (b'{"action": "reboot", "time": "2026-12-06T03:02:00Z"}', "action"),
    (b'{"action": "stop", "time": "soon; rm -rf /"}', "time"),
    (b'{"action": "stop"}', "time"),
    (b"[1]", "not a JSON object"),
    (b"\xff\xfe", "not JSON"),
    (b"{" * 5000, "bytes"),
])
def test_the_notice_is_checked(body: bytes, why: str) -> None:
    if not why:
        assert parse_notice(body).tag_value().endswith(" imds")
        return
    with pytest.raises(ValueError, match=why):
        parse_notice(body)


def test_an_unreadable_notice_is_logged_once_and_not_tagged(
        tmp_path: Path, imds: ImdsStandin, caplog: pytest.LogCaptureFixture) -> None:
    imds.raw["/latest/meta-data/spot/instance-action"] = (200, b"<html>captive portal</html>")
    run = Run(tmp_path, imds, FakeAws(), SLEEP="0.5")
    with caplog.at_level("WARNING", logger="gha_mlops.runners"):
        assert run.agent.run() == 0
    assert run.aws.tags == []
    said = [r for r in caplog.records if "unreadable notice" in r.getMessage()]
    assert len(said) == 1, "logged once, not every poll"


@pytest.mark.parametrize("value", ["", "a b", "x" * 9000, "abc\n", "$(id)"])
def test_the_jit_config_must_be_base64_and_bounded(value: str) -> None:
    with pytest.raises(AgentError):
        check_jit_config(value, "/p")
    assert check_jit_config(JIT, "/p") == JIT


def test_the_imds_endpoint_is_an_endpoint() -> None:
    for bad in ("169.254.169.254", "file:///etc/passwd", "http://h/latest", "http://h/?x"):
        with pytest.raises(AgentError):
            Imds(bad)
    assert Imds("http://169.254.169.254/").base == "http://169.254.169.254"


def test_a_redirect_is_not_followed(tmp_path: Path, imds: ImdsStandin) -> None:
    imds.raw["/latest/meta-data/instance-id"] = (302, b"")
    with pytest.raises(AgentError, match="HTTP 302"):
        Imds(imds.endpoint).get("/latest/meta-data/instance-id")


@pytest.mark.parametrize(("args", "said"), [
    (["--poll", "0"], "--poll '0' is outside"),
    (["--poll", "soon"], "expected a duration"),
    (["--runner-cmd", ""], "--runner-cmd is empty"),
    (["--on-exit", "'unclosed"], "No closing quotation"),
    (["--imds", "file:///etc/passwd"], "is not an endpoint"),
])
def test_the_command_line_is_checked_before_anything_runs(
        args: list[str], said: str, capsys: pytest.CaptureFixture[str]) -> None:
    from gha_mlops.cli import main

    with pytest.raises(SystemExit) as exit_:
        # --on-exit "" first: whatever happens, this test never powers the machine off.
        main(["runners", "agent", "--on-exit", "", "--imds", "http://127.0.0.1:9", *args])
    assert exit_.value.code == 10 and said in capsys.readouterr().err
