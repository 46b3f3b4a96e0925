"""The instance side of an EC2 runner: ``gha-mlops runners agent``, run at boot by the AMI's
systemd unit.

What it does, in order:

1. asks instance metadata (IMDSv2 only: a session token from ``PUT /latest/api/token``, then
   GETs carrying it) for the instance id, its region and two of its tags: the runner it
   serves (``dev.gha-mlops.runner``) and the SSM parameter holding that runner's
   just-in-time config (``dev.gha-mlops.parameter``);
2. reads that SecureString once and deletes it at once (a JIT config never sits where a job
   or a second read could find it; it never travels in user data);
3. runs the runner command with the config in ``$GHA_MLOPS_JITCONFIG`` (not on its command
   line, which /proc shows to every process): the command is a wrapper such as
   runner/entrypoint.sh that hands it to ``run.sh --jitconfig``;
4. every poll, looks at ``spot/instance-action``: on the first interruption notice it tags
   its own instance ``dev.gha-mlops.interruption = "<time> imds"`` so that the autoscaler
   drains the runner (it takes no new job) and re-runs a job the interruption kills;
5. when the runner exits (one job, ephemeral) it runs ``--on-exit`` (``poweroff``: the launch
   template makes a shutdown a termination), and so it does when anything before fails (a
   missing tag or parameter, IMDS silent, AWS refusing): a broken instance must not sit and
   bill. Only a stop by signal (the machine shutting down, an operator) skips it.

Every byte from IMDS and SSM is input: bounded, decoded strictly and checked against the
form it must have; anything else is an :class:`AgentError` saying what and where.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from logging import ERROR, INFO, WARNING
from typing import TYPE_CHECKING, Protocol

from gha_mlops.errors import ExitCode, GhaMlopsError, quoted
from gha_mlops.runners.backends.base import LABEL_RUNNER, BackendError
from gha_mlops.runners.backends.ec2_clients import (
    INSTANCE_ID,
    REGION,
    TAG_INTERRUPTION,
    TAG_PARAMETER,
)
from gha_mlops.runners.observe import log

if TYPE_CHECKING:  # urllib.request costs `gha-mlops runners ...` 40 ms: loaded when used
    import urllib.request

DEFAULT_IMDS = "http://169.254.169.254"
# runner/entrypoint.sh as the AMI installs it: reads $GHA_MLOPS_JITCONFIG, drops to the
# `runner` user and execs the runner's run.sh --jitconfig.
DEFAULT_RUNNER_CMD = "/usr/local/bin/gha-mlops-runner-entrypoint"
JITCONFIG_ENV = "GHA_MLOPS_JITCONFIG"
# What the instance profile's role must allow (docs/runners-aws.md's runner policy).
API_ACTIONS = frozenset({"ssm:GetParameter", "ssm:DeleteParameter", "ec2:CreateTags"})

TOKEN_TTL_S = 21600  # IMDSv2's longest; the token is renewed a minute before it ends
MAX_IMDS_BYTES = 4096  # an id, a region, a tag value, the notice: all far smaller
IMDS_TIMEOUT_S = 2.0
BOOT_ATTEMPTS = 10  # IMDS comes up with the instance; a second apart
MAX_JIT_CHARS = 8192
ON_EXIT_TIMEOUT_S = 120
STOP_RUNNER_S = 10  # SIGTERM to SIGKILL when the agent itself is stopped

_TOKEN = re.compile(r"[A-Za-z0-9_=+/.-]{1,256}")
_RUNNER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_PARAMETER = re.compile(r"/?[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")
_JIT = re.compile(r"[A-Za-z0-9+/=_-]+")
_ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z")
_ACTIONS = frozenset({"terminate", "stop", "hibernate"})
_IMDS_HINT = ("the agent runs on an EC2 instance launched by the autoscaler (IMDSv2 with "
              "HttpEndpoint enabled and InstanceMetadataTags enabled, as its launch template "
              "sets); --imds names another endpoint for tests")


class AgentError(GhaMlopsError):
    """The instance cannot serve its runner (metadata, its tags, its parameter)."""

    exit_code = ExitCode.RUNNER_BACKEND


@dataclass(frozen=True)
class AgentOptions:
    """The ``runners agent`` command line, parsed."""

    imds: str = DEFAULT_IMDS
    runner_cmd: tuple[str, ...] = (DEFAULT_RUNNER_CMD,)
    poll_s: float = 5.0
    on_exit: tuple[str, ...] = ("poweroff",)  # () for nothing
    endpoint_url: str | None = None  # AWS's own endpoints when None


@dataclass(frozen=True)
class Identity:
    """Who this instance is, from its metadata."""

    instance_id: str
    region: str
    runner: str
    parameter: str


@dataclass(frozen=True)
class Notice:
    """A spot interruption notice: what EC2 will do (terminate, stop, hibernate) and when."""

    action: str
    time: str  # ISO 8601, UTC

    def tag_value(self) -> str:
        """The interruption tag's value: the action time and where it was heard."""
        return f"{self.time} imds"


def parse_notice(body: bytes) -> Notice:
    """``spot/instance-action``'s answer, ``{"action": "terminate", "time":
    "2026-12-06T03:02:00Z"}``, checked; ValueError naming what is wrong."""
    if len(body) > MAX_IMDS_BYTES:
        raise ValueError(f"{len(body)} bytes, more than {MAX_IMDS_BYTES}")
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError("not JSON") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    action, when = data.get("action"), data.get("time")
    if not isinstance(action, str) or action not in _ACTIONS:
        raise ValueError(f"action {quoted(action)} is not one of {', '.join(sorted(_ACTIONS))}")
    if not isinstance(when, str) or not _ISO_TIME.fullmatch(when):
        raise ValueError(f"time {quoted(when)} is not an ISO 8601 UTC time")
    return Notice(action, when)


def check_jit_config(value: str, parameter: str) -> str:
    """The JIT config as the runner takes it (base64, bounded), or AgentError."""
    if len(value) > MAX_JIT_CHARS or not _JIT.fullmatch(value):
        raise AgentError(f"the SSM parameter {quoted(parameter)} does not hold a runner's "
                         f"just-in-time config (base64, at most {MAX_JIT_CHARS} characters)",
                         hint="the autoscaler writes it there; check what else writes under "
                         "its parameter_prefix")
    return value


def _opener() -> urllib.request.OpenerDirector:
    """An opener that never takes a proxy from the environment and never follows a redirect
    (IMDS never redirects: a 3xx is an error, the token goes nowhere else)."""
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    return urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect)


class Imds:
    """An IMDSv2 client (stdlib; never through a proxy from the environment, no redirects)."""

    def __init__(self, base: str, *, timeout: float = IMDS_TIMEOUT_S,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        parts = urllib.parse.urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname or \
                parts.path.strip("/") or parts.query or parts.fragment:
            raise AgentError(f"--imds {quoted(base)} is not an endpoint such as "
                             f"{DEFAULT_IMDS}", hint="give scheme, host and port only")
        self.base = f"{parts.scheme}://{parts.netloc}"
        self._timeout, self._sleep, self._clock = timeout, sleep, clock
        self._opener = _opener()
        self._token, self._token_until = "", 0.0

    def get(self, path: str, *, attempts: int = 1) -> bytes | None:
        """The body at ``path`` (``/latest/meta-data/...``), None when IMDS answers 404;
        AgentError for anything else, or when IMDS does not answer in ``attempts`` tries."""
        for renewed in (False, True):
            token = self._session(attempts)
            status, body = self._send("GET", path, {"X-aws-ec2-metadata-token": token},
                                      attempts)
            if status == 401 and not renewed:
                self._token = ""  # expired or revoked: one new session, then give up
                continue
            break
        if status == 404:
            return None
        if status != 200:
            raise AgentError(f"instance metadata answered HTTP {status} for {path}",
                             hint=_IMDS_HINT)
        return body

    def text(self, path: str, what: str, form: re.Pattern[str], *, attempts: int = 1) -> str:
        """The value at ``path`` as text of ``form``; AgentError naming ``what`` if it is
        missing or malformed."""
        body = self.get(path, attempts=attempts)
        if body is None:
            raise AgentError(f"instance metadata has no {what} ({path})", hint=_IMDS_HINT)
        try:
            value = body.decode("ascii").strip()
        except UnicodeDecodeError:
            value = ""
        if not form.fullmatch(value):
            raise AgentError(f"instance metadata's {what} ({path}) is not of the form "
                             f"{form.pattern}: {quoted(body[:80])}", hint=_IMDS_HINT)
        return value

    def _session(self, attempts: int) -> str:
        if self._token and self._clock() < self._token_until:
            return self._token
        status, body = self._send("PUT", "/latest/api/token",
                                  {"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_S)},
                                  attempts)
        token = body.decode("ascii", "replace").strip()
        if status != 200 or not _TOKEN.fullmatch(token):
            raise AgentError(f"instance metadata gave no IMDSv2 session token (HTTP {status})",
                             hint=_IMDS_HINT)
        self._token, self._token_until = token, self._clock() + TOKEN_TTL_S - 60
        return token

    def _send(self, method: str, path: str, headers: Mapping[str, str],
              attempts: int) -> tuple[int, bytes]:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(self.base + path, headers=dict(headers),
                                         method=method)
        problem = ""
        for attempt in range(max(1, attempts)):
            if attempt:
                self._sleep(1.0)
            try:
                with self._opener.open(request, timeout=self._timeout) as resp:
                    return resp.status, _bounded(resp.read(MAX_IMDS_BYTES + 1))
            except urllib.error.HTTPError as err:
                with err:
                    return err.code, _bounded(err.read(MAX_IMDS_BYTES + 1))
            except (urllib.error.URLError, OSError) as err:
                problem = str(getattr(err, "reason", err))
        raise AgentError(f"instance metadata at {self.base} does not answer: {problem}",
                         hint=_IMDS_HINT)


def _bounded(body: bytes) -> bytes:
    if len(body) > MAX_IMDS_BYTES:
        raise AgentError(f"instance metadata answered more than {MAX_IMDS_BYTES} bytes",
                         hint=_IMDS_HINT)
    return body


def read_identity(imds: Imds, *, attempts: int = BOOT_ATTEMPTS) -> Identity:
    """The instance id, region, runner name and parameter name, from IMDS."""
    meta = "/latest/meta-data"
    instance_id = imds.text(f"{meta}/instance-id", "instance id", INSTANCE_ID,
                            attempts=attempts)
    region = imds.text(f"{meta}/placement/region", "region", REGION)
    tags = []
    for key, form in ((LABEL_RUNNER, _RUNNER), (TAG_PARAMETER, _PARAMETER)):
        path = f"{meta}/tags/instance/{key}"
        if imds.get(path) is None:
            raise AgentError(f"instance {instance_id} has no tag {key} in its metadata: it was "
                             "not launched by the gha-mlops autoscaler, or its launch template "
                             "does not enable InstanceMetadataTags", hint="nothing to serve "
                             "here; the instance powers off (--on-exit)")
        tags.append(imds.text(path, f"tag {key}", form))
    return Identity(instance_id, region, tags[0], tags[1])


class InstancePort(Protocol):
    """The instance's own AWS calls (``backends.ec2_instance.InstanceAws``, or a fake)."""

    def take_parameter(self, name: str) -> tuple[str, str]:
        """``(value, problem)``: the SecureString's value, deleted at once (``problem`` says
        why it could not be deleted, ``""`` when it was); BackendError when unreadable."""

    def tag(self, instance_id: str, key: str, value: str) -> None:
        """Tag the instance; BackendError when EC2 refuses."""


class Agent:
    """One run of the agent on one instance: :meth:`run` returns the runner's exit code."""

    def __init__(self, options: AgentOptions, imds: Imds,
                 aws: Callable[[str], InstancePort], environ: Mapping[str, str], *,
                 boot_attempts: int = BOOT_ATTEMPTS) -> None:
        self.options, self.imds, self._aws, self.environ = options, imds, aws, environ
        self._boot_attempts = boot_attempts
        self._unreadable = ""  # the last unreadable notice logged (each kind once)

    def run(self) -> int:
        """Serve the instance's runner; ``--on-exit`` after, whatever happened, except when
        the agent is stopped by a signal (KeyboardInterrupt, re-raised)."""
        stopped = False
        try:
            return self._serve()
        except KeyboardInterrupt:
            stopped = True
            raise
        except GhaMlopsError as err:
            log(ERROR, f"agent: {err.message}", hint=err.hint)
            raise
        finally:
            if not stopped:
                self._on_exit()

    def _serve(self) -> int:
        me = read_identity(self.imds, attempts=self._boot_attempts)
        log(INFO, f"agent: instance {me.instance_id} in {me.region} serves runner {me.runner}",
            runner=me.runner, machine=me.instance_id)
        aws = self._aws(me.region)
        try:
            value, problem = aws.take_parameter(me.parameter)
        except BackendError as err:
            raise AgentError(err.message, hint=err.hint) from None
        jit = check_jit_config(value, me.parameter)
        if problem:
            log(WARNING, f"agent: read the runner's config but could not delete its parameter "
                f"(the autoscaler's sweep will): {problem}", runner=me.runner)
        env = {k: v for k, v in self.environ.items() if k != JITCONFIG_ENV}
        env[JITCONFIG_ENV] = jit
        try:
            proc = subprocess.Popen(list(self.options.runner_cmd), env=env)
        except OSError as err:
            raise AgentError(f"cannot run the runner command {quoted(' '.join(self.options.runner_cmd))}: "
                             f"{err.strerror or err}", hint="--runner-cmd names the wrapper "
                             "that runs the runner (the AMI installs it)") from None
        log(INFO, f"agent: runner {me.runner} started (pid {proc.pid})", runner=me.runner)
        try:
            code = self._watch(proc, me, aws)
        except KeyboardInterrupt:
            _stop(proc)
            raise
        log(INFO if code == 0 else WARNING, f"agent: runner {me.runner} exited with {code}",
            runner=me.runner, machine=me.instance_id)
        return code

    def _watch(self, proc: subprocess.Popen[bytes], me: Identity, aws: InstancePort) -> int:
        told = False
        while True:
            try:
                return proc.wait(timeout=None if told else self.options.poll_s)
            except subprocess.TimeoutExpired:
                told = self._notice(me, aws)

    def _notice(self, me: Identity, aws: InstancePort) -> bool:
        """Look for the interruption notice; True once the instance is tagged with it."""
        try:
            body = self.imds.get("/latest/meta-data/spot/instance-action")
            if body is None:
                return False
            notice = parse_notice(body)
        except (AgentError, ValueError) as err:
            why = err.message if isinstance(err, AgentError) else f"unreadable notice: {err}"
            if why != self._unreadable:
                self._unreadable = why
                log(WARNING, f"agent: spot/instance-action: {why}", runner=me.runner)
            return False
        log(WARNING, f"agent: spot interruption notice (instance metadata): {notice.action} at "
            f"{notice.time}; tagging {me.instance_id} so that the autoscaler drains runner "
            f"{me.runner}", runner=me.runner, machine=me.instance_id)
        try:
            aws.tag(me.instance_id, TAG_INTERRUPTION, notice.tag_value())
        except BackendError as err:
            log(ERROR, f"agent: could not tag the interruption (next poll tries again): "
                f"{err.message}", runner=me.runner, hint=err.hint)
            return False
        return True

    def _on_exit(self) -> None:
        command = self.options.on_exit
        if not command:
            return
        log(INFO, f"agent: running {quoted(' '.join(command))}")
        try:
            done = subprocess.run(list(command), check=False, timeout=ON_EXIT_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as err:
            log(ERROR, f"agent: --on-exit {quoted(' '.join(command))} failed: {err}")
            return
        if done.returncode != 0:
            log(ERROR, f"agent: --on-exit {quoted(' '.join(command))} exited with "
                f"{done.returncode}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the runner (it closes its session, or cancels its job), SIGKILL if it stays."""
    proc.terminate()
    try:
        proc.wait(timeout=STOP_RUNNER_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_agent(options: AgentOptions, environ: Mapping[str, str]) -> int:
    """The agent with the real adapters (IMDS at ``options.imds``, AWS through
    ``ec2_clients.make_clients`` with ``environ``'s credentials, else the instance
    profile's); the runner's exit code."""
    from gha_mlops.runners.backends.ec2_clients import make_clients
    from gha_mlops.runners.backends.ec2_instance import InstanceAws

    def aws(region: str) -> InstancePort:
        return InstanceAws(make_clients(region, endpoint_url=options.endpoint_url,
                                        environ=environ))

    return Agent(options, Imds(options.imds), aws, environ).run()


def split_command(text: str, option: str) -> tuple[str, ...]:
    """A command line given as one option (shell words, no shell), or AgentError."""
    import shlex

    try:
        words = tuple(shlex.split(text))
    except ValueError as err:
        raise AgentError(f"{option} {quoted(text)}: {err}", hint="quote it as a shell "
                         "would") from None
    return words


__all__ = ["API_ACTIONS", "DEFAULT_IMDS", "DEFAULT_RUNNER_CMD", "JITCONFIG_ENV", "Agent",
           "AgentError", "AgentOptions", "Identity", "Imds", "InstancePort", "Notice",
           "check_jit_config", "parse_notice", "read_identity", "run_agent", "split_command"]
