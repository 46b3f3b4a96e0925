"""The AWS EC2 adapter of :class:`~gha_mlops.runners.backends.base.RunnerBackend`: one
instance per ephemeral runner, launched by ``CreateFleet`` (type ``instant``) over the pool's
instance types x subnets, spot first where the pool's capacity policy says so.

What keeps it from leaking or double-launching:

- The runner's just-in-time config goes to an SSM SecureString
  ``{parameter_prefix}/{owner}/{runner}`` (never user data, which the instance metadata
  serves to anything on the box); the agent on the instance reads it once and deletes it.
- Every instance carries its tags from its creation (CreateFleet's TagSpecifications): the
  owner, runner, pool, its expiry (launch + max lifetime + grace), its parameter and its
  lifecycle. ``list()`` asks EC2 by the owner tag and nothing else, so a restarted
  autoscaler adopts what it finds; the policy terminates what is past expiry.
- ``CreateFleet`` carries a ClientToken derived from the runner and the lifecycle: a call
  whose answer was lost is retried with it and EC2 answers the first launch again.
- Parameters whose instance is gone (a launch that failed after writing one, an agent that
  never ran) are swept every :data:`SWEEP_EVERY_S`.

Spot interruptions arrive through the instance's own tag (the agent sets it from instance
metadata) and, with ``interruption_queue``, the EventBridge warning read from SQS; either
sets :attr:`Machine.notice`. boto3 is imported lazily (``gha-mlops[aws]``).
"""

from __future__ import annotations

import builtins
import functools
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from logging import ERROR, INFO, WARNING
from typing import TYPE_CHECKING, Any

from gha_mlops.runners.backends.base import (
    LABEL_OWNER,
    LOST,
    PENDING,
    BackendError,
    Health,
    LaunchSpec,
    Machine,
    RunnerBackend,
)
from gha_mlops.runners.backends.ec2_clients import TAG_INTERRUPTION, Ec2Clients, make_clients
from gha_mlops.runners.backends.ec2_errors import (
    Classification,
    FleetInstance,
    Verdict,
    fleet_outcome,
    not_an_error,
)
from gha_mlops.runners.backends.ec2_fleet import (
    ON_DEMAND,
    Seen,
    client_token,
    expires_at,
    fails_over,
    fatal_error,
    first_lifecycle,
    fleet_request,
    instance_tags,
    interruption_tag,
    is_instance_id,
    machine_state,
    parameter_name,
    parameter_tags,
    read_notice,
    seen_instance,
    spot_gone_error,
    tag_map,
)
from gha_mlops.runners.backends.ec2_template import (
    AwsCallError,
    TemplateChoice,
    Templates,
    call,
)
from gha_mlops.runners.config import METADATA_TAG_KEY, Ec2Settings, Pool
from gha_mlops.runners.observe import log

if TYPE_CHECKING:
    from gha_mlops.runners.backends.ec2_notices import SqsNotices

# Every AWS API action the autoscaler's EC2 backend and the instance agent call (the IAM
# policy in docs/runners-aws.md must allow each; its test checks).
API_ACTIONS: frozenset[str] = frozenset({
    # the backend
    "ec2:CreateFleet", "ec2:RunInstances", "ec2:CreateTags", "ec2:DescribeInstances",
    "ec2:TerminateInstances", "ec2:DescribeImages", "ec2:CreateLaunchTemplate",
    "ec2:CreateLaunchTemplateVersion", "ec2:DescribeLaunchTemplateVersions",
    "iam:PassRole", "ssm:PutParameter", "ssm:AddTagsToResource", "ssm:GetParameter",
    "ssm:DeleteParameter", "ssm:DeleteParameters", "ssm:DescribeParameters",
    "sqs:GetQueueUrl", "sqs:ReceiveMessage", "sqs:DeleteMessage",
    # the agent on the instance (its instance profile): its parameter, its own tag
    # (ssm:GetParameter, ssm:DeleteParameter and ec2:CreateTags above)
})

SWEEP_EVERY_S = 600.0  # the SSM parameter sweep, at most this often
SWEEP_AGE_S = 900.0  # a parameter younger than this may belong to a launch in progress
QUEUE_LOG_EVERY_S = 600.0
LAUNCH_TRIES = 3  # CreateFleet tries with one token when the answer did not come back
MAX_INSTANCES = 10_000  # read from DescribeInstances per list(); the rest are not ours to see


@dataclass(frozen=True)
class _Attempt:
    """One CreateFleet: the instance launched, or the verdict and what EC2 said."""

    lifecycle: str
    instance: FleetInstance | None
    verdict: Verdict | None
    errors: tuple[Classification, ...]


class Ec2Backend(RunnerBackend):
    """Runners on EC2 instances of the ec2 ``pools`` (name -> pool, each with ``.ec2``), for
    autoscaler ``owner``, in ``settings.region``. ``clients``: made on first use from
    ``environ`` (the CLI's environment; never the process's own) unless given."""

    name = "ec2"

    def __init__(self, owner: str, settings: Ec2Settings, pools: Mapping[str, Pool], *,
                 environ: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.time, clients: Ec2Clients | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.owner = owner
        self.settings = settings
        self.pools = dict(pools)
        self.environ = dict(environ or {})
        self.clock = clock
        self._sleep = sleep
        self._clients = clients
        self._clients_lock = threading.Lock()
        self.templates = Templates(owner, settings.tags, clock)
        self._lock = threading.Lock()  # the process memory below
        self._destroyed: set[str] = set()  # instance ids this process terminated
        self._lost: set[str] = set()  # instance ids reported LOST once already
        self._unknown: dict[str, int] = {}  # pool -> consecutive launches failed unknown
        self._list_problem = ""
        self._queue_problem = ""
        self._queue_logged = float("-inf")
        self._notices: SqsNotices | None = None
        self._last_sweep = float("-inf")

    # -- clients ------------------------------------------------------------------------------

    def clients(self) -> Ec2Clients:
        with self._clients_lock:
            if self._clients is None:
                self._clients = make_clients(self.settings.region,
                                             endpoint_url=self.settings.endpoint_url,
                                             environ=self.environ)
            return self._clients

    def close(self) -> None:
        """Forget the clients (boto3 closes their connections as they go)."""
        with self._clients_lock:
            self._clients, self._notices = None, None

    # -- launch ------------------------------------------------------------------------------

    def launch(self, spec: LaunchSpec) -> Machine:
        pool = self.pools.get(spec.pool)
        if pool is None or pool.ec2 is None:
            raise BackendError(f"pool {spec.pool!r} is not an ec2 pool of this autoscaler",
                               hint="a bug in gha-mlops: please report it", retryable=False)
        self._check_tags(spec.pool)
        now = self.clock()
        lifetime = spec.max_lifetime if spec.max_lifetime is not None else pool.max_lifetime
        expires = expires_at(now, lifetime, pool.ec2.expiry_grace)
        parameter = parameter_name(self.settings.parameter_prefix, self.owner,
                                   spec.runner_name)
        self._put_parameter(spec, parameter, expires)
        try:
            return self._launch_instance(spec, pool, expires, parameter, now)
        except BackendError as err:
            problem = self._delete_parameter(parameter)
            if problem:
                err.notes.append(f"its SSM parameter {parameter} could not be deleted "
                                 f"({problem}): the sweep removes it later")
            raise

    def _check_tags(self, pool: str) -> None:
        bad = [key for key in self.settings.tags if not METADATA_TAG_KEY.fullmatch(key)]
        if bad:
            raise BackendError(
                f"pool {pool!r}: the tag key(s) {', '.join(map(repr, bad))} of backends.ec2.tags "
                "cannot be used on instances whose tags are in their metadata",
                hint="use letters, digits and + = . , _ : @ - only (no spaces, no '/')",
                retryable=False)

    def _put_parameter(self, spec: LaunchSpec, name: str, expires: int) -> None:
        ssm = self.clients().ssm
        tags = parameter_tags(self.owner, spec.runner_name, spec.pool, expires=expires,
                              extra=self.settings.tags)
        try:
            try:
                call("PutParameter", lambda: ssm.put_parameter(
                    Name=name, Type="SecureString", Value=spec.jit_config, Tags=tags,
                    Tier="Intelligent-Tiering"))
            except AwsCallError as err:
                if err.classification.code != "ParameterAlreadyExists":
                    raise
                # A retried launch of this runner: its own parameter, rewritten (AWS takes
                # no Tags with Overwrite; the first write tagged it).
                call("PutParameter", lambda: ssm.put_parameter(
                    Name=name, Type="SecureString", Value=spec.jit_config, Overwrite=True,
                    Tier="Intelligent-Tiering"))
        except AwsCallError as err:
            raise self._error(spec.pool, err.classification, "writing the runner's config "
                              f"to SSM parameter {name}") from None

    def _launch_instance(self, spec: LaunchSpec, pool: Pool, expires: int, parameter: str,
                         now: float) -> Machine:
        assert pool.ec2 is not None
        try:
            template = self.templates.choose(self.clients(), spec.pool, pool.ec2)
        except AwsCallError as err:
            raise self._error(spec.pool, err.classification, "preparing the launch "
                              "template") from None
        capacity = pool.ec2.capacity
        lifecycle = first_lifecycle(capacity, replacement=spec.replaces_interrupted,
                                    rerun_on_demand=pool.ec2.rerun_on_demand)
        if lifecycle == ON_DEMAND and capacity != ON_DEMAND:
            log(INFO, f"launching on-demand: runner {spec.runner_name} replaces one whose spot "
                "instance got notice under its job (its re-run should not be interrupted "
                "again)", pool=spec.pool, runner=spec.runner_name)
        attempt = self._fleet(spec, pool, template, lifecycle, expires, parameter)
        if attempt.instance is None and attempt.verdict is not None and \
                fails_over(capacity, attempt.lifecycle, attempt.verdict):
            codes = ", ".join(sorted({c.code for c in attempt.errors if c.code}))
            log(INFO, f"no spot capacity for pool {spec.pool} in any of its types "
                f"({codes or 'no instance'}); trying on-demand", pool=spec.pool,
                runner=spec.runner_name)
            attempt = self._fleet(spec, pool, template, ON_DEMAND, expires, parameter)
            if attempt.instance is not None:
                log(WARNING, f"no spot capacity for pool {spec.pool} in any of its types "
                    f"({codes or 'no instance'}); launched on-demand", pool=spec.pool,
                    runner=spec.runner_name, machine=attempt.instance.instance_id)
        if attempt.instance is None:
            raise self._failed(spec.pool, capacity, attempt)
        with self._lock:
            self._unknown.pop(spec.pool, None)
        got = attempt.instance
        return Machine(id=got.instance_id, runner_name=spec.runner_name, pool=spec.pool,
                       state=PENDING, created_at=now,
                       gpus=tuple(str(i) for i in range(spec.gpus)),
                       detail=" ".join(x for x in (got.instance_type, got.lifecycle or
                                                   attempt.lifecycle, got.subnet_id) if x),
                       expires_at=float(expires))

    def _fleet(self, spec: LaunchSpec, pool: Pool, template: TemplateChoice, lifecycle: str,
               expires: int, parameter: str) -> _Attempt:
        assert pool.ec2 is not None
        ec2 = self.clients().ec2
        tags = instance_tags(self.owner, spec.runner_name, spec.pool, spec.gpus,
                             expires=expires, parameter=parameter, lifecycle=lifecycle,
                             extra=self.settings.tags)
        request = fleet_request(pool.ec2, template.spec, lifecycle=lifecycle, tags=tags,
                                token=client_token(self.owner, spec.runner_name, lifecycle),
                                ami_override=template.ami_override)
        for n in range(LAUNCH_TRIES):
            try:
                response = call("CreateFleet", lambda: ec2.create_fleet(**request),
                                lifecycle=lifecycle)
                break
            except AwsCallError as err:
                if err.connection and n + 1 < LAUNCH_TRIES:
                    self._sleep(0.5 * (n + 1))  # same token: a launch that went through
                    continue  # is answered again, not repeated
                if err.classification.verdict is Verdict.FATAL:
                    self.templates.forget(spec.pool)
                return _Attempt(lifecycle, None, err.classification.verdict,
                                (err.classification,))
        outcome = fleet_outcome(response if isinstance(response, Mapping) else {},
                                requested=1)
        errors = tuple(e.classification for items in outcome.errors.values() for e in items)
        if outcome.instances:
            first, extra = outcome.instances[0], outcome.instances[1:]
            if extra:  # asked for one: never keep more
                self._terminate([i.instance_id for i in extra], spec.pool)
            if errors:
                log(INFO, f"pool {spec.pool}: {lifecycle} instance launched after "
                    f"{len(errors)} of its types/subnets failed ("
                    + ", ".join(sorted({c.code for c in errors})) + ")", pool=spec.pool,
                    runner=spec.runner_name, machine=first.instance_id)
            return _Attempt(lifecycle, first, None, errors)
        return _Attempt(lifecycle, None, outcome.verdict() or Verdict.RETRY_LATER, errors)

    def _failed(self, pool: str, capacity: str, attempt: _Attempt) -> BackendError:
        """The error of a launch that got no instance, by the last attempt's verdict."""
        errors = attempt.errors
        if attempt.verdict is Verdict.FATAL:
            fatal = next((c for c in errors if c.verdict is Verdict.FATAL), errors[0])
            return fatal_error(pool, fatal)
        if attempt.verdict is Verdict.FAIL_OVER and attempt.lifecycle != ON_DEMAND:
            return spot_gone_error(pool, [c.code for c in errors if c.code])
        if not errors:
            return BackendError(f"pool {pool!r}: CreateFleet launched no instance and said "
                                "no why", hint="retrying later", retryable=True)
        first = next((c for c in errors if c.verdict is not Verdict.FATAL), errors[0])
        return self._error(pool, first, f"launching the runner's {attempt.lifecycle} instance")

    def _error(self, pool: str, c: Classification, doing: str) -> BackendError:
        """``c`` as the BackendError the scaler acts on; counts unknown codes per pool."""
        if c.verdict is Verdict.FATAL:
            return fatal_error(pool, c)
        if not c.known and c.backoff is not None and c.backoff.max_tries is not None:
            with self._lock:
                tries = self._unknown.get(pool, 0)
                self._unknown[pool] = tries + 1
            if c.backoff.exhausted(tries):
                return BackendError(
                    f"pool {pool!r}: {doing} failed {tries + 1} times in a row with "
                    f"{c.code or 'an error without a code'}, which gha-mlops does not know: "
                    f"{c.summary()}", hint="read EC2's message; if the pool's config is at "
                    "fault fix it, else report the code to gha-mlops", retryable=False)
        else:
            with self._lock:
                self._unknown.pop(pool, None)
        return BackendError(f"pool {pool!r}: {doing} failed: {c.summary()}", hint=c.hint,
                            retryable=True)

    # -- list ------------------------------------------------------------------------------

    def list(self) -> list[Machine]:
        try:
            found = self._describe()
        except AwsCallError as err:
            problem = f"listing the instances of autoscaler {self.owner!r} failed: " \
                      f"{err.classification.summary()}"
            self._list_problem = problem
            raise BackendError(problem, hint=err.classification.hint,
                               retryable=err.classification.verdict is not Verdict.FATAL
                               ) from None
        self._list_problem = ""
        seen = [s for s in (seen_instance(i, self.settings.parameter_prefix, self.owner)
                            for i in found) if s is not None]
        notices = self._intake(seen)
        machines: builtins.list[Machine] = []
        with self._lock:
            for s in seen:
                notice = notices.get(s.machine.id, "")
                if notice:
                    s = replace(s, machine=replace(s.machine, notice=notice), interrupted=True)
                state = machine_state(s, destroyed_by_us=s.machine.id in self._destroyed,
                                      lost_reported=s.machine.id in self._lost)
                if state is None:
                    continue
                detail = s.machine.detail + (" (spot interruption)" if state == LOST else "")
                if state == LOST:
                    self._lost.add(s.machine.id)
                machines.append(replace(s.machine, state=state, detail=detail))
        self._maybe_sweep(seen)
        return machines

    def _describe(self) -> builtins.list[Mapping[str, Any]]:
        ec2 = self.clients().ec2

        def pages() -> builtins.list[Mapping[str, Any]]:
            out: builtins.list[Mapping[str, Any]] = []
            paginator = ec2.get_paginator("describe_instances")
            for page in paginator.paginate(Filters=[{"Name": f"tag:{LABEL_OWNER}",
                                                     "Values": [self.owner]}]):
                for reservation in page.get("Reservations") or []:
                    for instance in reservation.get("Instances") or []:
                        # The filter is AWS's; the owner tag is checked here again (an
                        # endpoint that ignores filters must not hand us others' instances).
                        if isinstance(instance, Mapping) and len(out) < MAX_INSTANCES and \
                                tag_map(instance).get(LABEL_OWNER) == self.owner:
                            out.append(instance)
            return out

        return call("DescribeInstances", pages)

    def _intake(self, seen: Iterable[Seen]) -> dict[str, str]:
        """The EventBridge warnings in the interruption queue about our instances: each tagged
        (a restart still knows), then every message read deleted. instance id -> notice."""
        queue = self.settings.interruption_queue
        if not queue:
            return {}
        from gha_mlops.runners.backends.ec2_notices import SqsNotices

        ours = {s.machine.id: s for s in seen}
        out: dict[str, str] = {}
        try:
            if self._notices is None:
                self._notices = SqsNotices(self.clients().sqs, queue)
            notices = self._notices.poll()
            tagged_all = True
            for notice in notices:
                s = ours.get(notice.instance_id)
                if s is None:
                    continue
                value = interruption_tag(notice.action_time, notice.source)
                if not s.machine.notice:
                    tagged_all &= self._tag_interruption(notice.instance_id, value)
                out[notice.instance_id] = s.machine.notice or read_notice(
                    {TAG_INTERRUPTION: value})
            if tagged_all:  # else they come back after the visibility timeout
                self._notices.delete(notices)
        except BackendError as err:
            self._queue_failed(err)
            return out
        self._queue_problem = ""
        return out

    def _tag_interruption(self, instance_id: str, value: str) -> bool:
        ec2 = self.clients().ec2
        try:
            call("CreateTags", lambda: ec2.create_tags(
                Resources=[instance_id], Tags=[{"Key": TAG_INTERRUPTION, "Value": value}]))
        except AwsCallError as err:
            log(WARNING, f"could not tag the interruption notice on {instance_id}: "
                f"{err.classification.summary()}", machine=instance_id)
            return False
        return True

    def _queue_failed(self, err: BackendError) -> None:
        self._queue_problem = err.message
        now = self.clock()
        if now - self._queue_logged >= QUEUE_LOG_EVERY_S:
            self._queue_logged = now
            log(ERROR, f"interruption queue: {err.message}", hint=err.hint)

    # -- the parameter sweep -----------------------------------------------------------------

    def _maybe_sweep(self, seen: Iterable[Seen]) -> None:
        now = self.clock()
        if now - self._last_sweep < SWEEP_EVERY_S:
            return
        self._last_sweep = now
        live = {s.parameter or parameter_name(self.settings.parameter_prefix, self.owner,
                                              s.machine.runner_name)
                for s in seen if s.ec2_state not in ("shutting-down", "terminated")}
        try:
            swept = self.sweep_parameters(live, now)
        except AwsCallError as err:
            log(WARNING, f"the SSM parameter sweep failed: {err.classification.summary()}",
                hint=err.classification.hint)
            return
        if swept:
            log(INFO, f"swept {len(swept)} SSM parameter(s) whose instance is gone: "
                + ", ".join(swept[:10]) + (" ..." if len(swept) > 10 else ""))

    def sweep_parameters(self, live: set[str], now: float) -> builtins.list[str]:
        """Delete the parameters under ``{prefix}/{owner}/`` older than :data:`SWEEP_AGE_S`
        that no live instance names (in ``live``); returns their names."""
        ssm = self.clients().ssm
        path = f"{self.settings.parameter_prefix}/{self.owner}/"

        def names() -> builtins.list[str]:
            out: builtins.list[str] = []
            paginator = ssm.get_paginator("describe_parameters")
            for page in paginator.paginate(ParameterFilters=[
                    {"Key": "Name", "Option": "BeginsWith", "Values": [path]}]):
                for p in page.get("Parameters") or []:
                    name, modified = p.get("Name"), p.get("LastModifiedDate")
                    if not isinstance(name, str) or not name.startswith(path) or \
                            name in live or not hasattr(modified, "timestamp"):
                        continue
                    if now - modified.timestamp() >= SWEEP_AGE_S:
                        out.append(name)
            return out

        stale = call("DescribeParameters", names)
        for start in range(0, len(stale), 10):  # DeleteParameters takes 10 at most
            chunk = stale[start:start + 10]
            call("DeleteParameters", functools.partial(ssm.delete_parameters, Names=chunk))
        return stale

    # -- start, destroy, health ---------------------------------------------------------------

    def start(self, machine_id: str) -> Machine:
        """EC2 instances start by themselves: the machine as list() shows it."""
        found = next((m for m in self.list() if m.id == machine_id), None)
        if found is None:
            raise BackendError(f"starting machine {machine_id}: no instance {machine_id} of "
                               f"autoscaler {self.owner!r} exists",
                               hint="it is gone; nothing to start", retryable=False)
        return found

    def destroy(self, machine_id: str) -> None:
        if not is_instance_id(machine_id):
            return  # another backend's machine
        what = f"destroying instance {machine_id}"
        ec2 = self.clients().ec2
        try:
            answer = call("DescribeInstances", lambda: ec2.describe_instances(
                InstanceIds=[machine_id]))
        except AwsCallError as err:
            if err.classification.code == "InvalidInstanceID.NotFound":
                return
            raise self._plain(what, err.classification) from None
        items = [i for r in answer.get("Reservations") or [] for i in r.get("Instances") or []]
        if not items:
            return
        seen = seen_instance(items[0], self.settings.parameter_prefix, self.owner)
        owner = tag_map(items[0]).get(LABEL_OWNER)
        if seen is None or owner != self.owner:
            raise BackendError(f"{what}: it is not a runner of autoscaler {self.owner!r} "
                               f"(its owner tag is {str(owner)[:64]!r})",
                               hint="destroy only the machines list() returns",
                               retryable=False)
        with self._lock:
            self._destroyed.add(machine_id)
        if seen.ec2_state != "terminated":
            self._terminate([machine_id], seen.machine.pool, what)
        if seen.parameter:
            problem = self._delete_parameter(seen.parameter)
            if problem:
                log(WARNING, f"{what}: its SSM parameter {seen.parameter} could not be "
                    f"deleted ({problem}); the sweep removes it later", machine=machine_id)

    def _terminate(self, ids: builtins.list[str], pool: str, what: str = "") -> None:
        ec2 = self.clients().ec2
        try:
            call("TerminateInstances", lambda: ec2.terminate_instances(InstanceIds=ids))
        except AwsCallError as err:
            if not not_an_error(err.classification.code, operation="TerminateInstances"):
                raise self._plain(what or f"terminating {', '.join(ids)} of pool {pool!r}",
                                  err.classification) from None

    def _delete_parameter(self, name: str) -> str:
        """Delete SSM parameter ``name``; "" when done (or gone already), else the problem."""
        ssm = self.clients().ssm
        try:
            call("DeleteParameter", lambda: ssm.delete_parameter(Name=name))
        except AwsCallError as err:
            if not not_an_error(err.classification.code, operation="DeleteParameter"):
                return err.classification.summary()
        return ""

    @staticmethod
    def _plain(what: str, c: Classification) -> BackendError:
        return BackendError(f"{what}: {c.summary()}", hint=c.hint,
                            retryable=c.verdict is not Verdict.FATAL)

    def health(self) -> Health:
        """Cheap: no AWS call. Not ok while the last list() failed; the detail names the
        region and a problem with the interruption queue."""
        detail = f"EC2 in {self.settings.region}"
        if self._queue_problem:
            detail += f"; interruption queue: {self._queue_problem}"
        if self._list_problem:
            return Health(ok=False, detail=f"{detail}; {self._list_problem}")
        return Health(ok=True, detail=detail)

    def verify(self) -> builtins.list[tuple[bool, str]]:
        """``runners check --live``: the account checked against the pools (ec2_check)."""
        from gha_mlops.runners.backends.ec2_check import verify

        return verify(self.clients(), self.settings, self.pools, owner=self.owner)


__all__ = ["API_ACTIONS", "Ec2Backend"]
