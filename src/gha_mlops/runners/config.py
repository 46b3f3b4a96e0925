"""``runners.yaml``: what the autoscaler serves, how it talks to GitHub, and its pools.

Validated up front, every problem named by its key path and line::

    id: gpu-box-1
    github:
      repo: octo/ml            # or `org: octo` (and optionally `repos: [octo/a, octo/b]`)
      app: {id: 12345, private_key_file: /etc/gha-mlops/app.pem}   # or `token_env: GH_TOKEN`
    webhook: {secret_env: GHA_MLOPS_WEBHOOK_SECRET, listen: "0.0.0.0:8080"}
    backends:
      docker: {gpus: ["0", "1", "2", "3"]}
    pools:
      - {name: gpu, labels: [gpu], max: 4, gpus: 1, cpus: 8, memory: 32GiB,
         image: ghcr.io/octo/runner:2.330.0, idle_timeout: 5m, max_lifetime: 6h}

Secrets never live in the file: the webhook secret, a token and the App's private key come from
environment variables or files the file names.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gha_mlops.config._yaml import Loc, Problems, display, parse_yaml, type_name
from gha_mlops.errors import ConfigError
from gha_mlops.runners.backends.ec2_clients import AMI_ID, REGION

# Labels every runner carries (GitHub's defaults for a Linux x64 runner); a job's `runs-on`
# usually names `self-hosted` and these are matched case-insensitively.
DEFAULT_LABELS = ("self-hosted", "linux", "x64")
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib|t|tb|tib)?\s*$", re.I)
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_BYTES = {"b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024**2, "mb": 1000**2,
          "mib": 1024**2, "g": 1024**3, "gb": 1000**3, "gib": 1024**3, "t": 1024**4,
          "tb": 1000**4, "tib": 1024**4}


def parse_duration(value: Any) -> float:
    """Seconds from ``300``, ``"90s"``, ``"5m"``, ``"6h"``, ``"1d"``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 300, 90s, 5m or 6h")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = _DURATION.fullmatch(str(value))
        if not m:
            raise ValueError(f"expected a duration such as 300, 90s, 5m or 6h, got {value!r}")
        seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def parse_bytes(value: Any) -> int:
    """Bytes from ``1048576``, ``"512KiB"``, ``"32GiB"``, ``"16G"`` (binary units)."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 512MiB or 32GiB")
    if isinstance(value, int):
        return value
    m = _SIZE.fullmatch(str(value))
    if not m:
        raise ValueError(f"expected a size such as 512MiB or 32GiB, got {value!r}")
    return int(float(m.group(1)) * _BYTES[(m.group(2) or "b").lower()])


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AppSchema(_Strict):
    id: int = Field(ge=1)
    private_key_file: str | None = None
    private_key_env: str | None = None
    installation_id: int | None = Field(default=None, ge=1)


class GitHubSchema(_Strict):
    repo: str | None = None
    org: str | None = None
    repos: list[str] = Field(default_factory=list)
    api_url: str = "https://api.github.com"
    app: AppSchema | None = None
    token_env: str | None = None
    runner_group_id: int = Field(default=1, ge=1)


class WebhookSchema(_Strict):
    secret_env: str | None = None
    secret_file: str | None = None
    listen: str = "127.0.0.1:8080"
    path: str = "/webhook"
    max_body: int | str = "1MiB"


def _gpu_ids(v: Any) -> Any:
    return [str(x) for x in v] if isinstance(v, list) else v


class DockerHostSchema(_Strict):
    name: str
    host: str | None = None
    gpus: list[str] = Field(default_factory=list)
    network: str = "bridge"
    gpu_driver: str = "nvidia"
    env: dict[str, str] = Field(default_factory=dict)

    _gpus = field_validator("gpus", mode="before")(classmethod(lambda cls, v: _gpu_ids(v)))


class DockerSchema(_Strict):
    host: str | None = None  # None: DOCKER_HOST or the default socket
    gpus: list[str] = Field(default_factory=list)
    network: str = "bridge"
    gpu_driver: str = "nvidia"
    env: dict[str, str] = Field(default_factory=dict)
    hosts: list[DockerHostSchema] = Field(default_factory=list)  # several hosts, one pool
    placement: Literal["spread", "pack"] = "spread"
    down_after: float | str = "60s"  # a host not answering this long: its runners are lost
    list_timeout: float | str = "15s"  # a host that does not answer a listing in this is down

    _gpus = field_validator("gpus", mode="before")(classmethod(lambda cls, v: _gpu_ids(v)))


class Ec2Schema(_Strict):
    """``backends.ec2``: the account side, and defaults for every ec2 pool."""

    region: str
    endpoint_url: str | None = None  # an AWS-compatible endpoint (tests); None: AWS's own
    interruption_queue: str | None = None  # SQS queue (URL or name) of EventBridge warnings
    parameter_prefix: str = "/gha-mlops"
    tags: dict[str, str] = Field(default_factory=dict)
    subnets: list[str] = Field(default_factory=list)
    security_groups: list[str] = Field(default_factory=list)
    instance_profile: str | None = None


class BackendsSchema(_Strict):
    docker: DockerSchema | None = None
    ec2: Ec2Schema | None = None


class Ec2PoolSchema(_Strict):
    instance_types: list[str] = Field(min_length=1)
    ami: str | None = None
    launch_template: str | None = None
    launch_template_version: str | int = "$Default"
    subnets: list[str] | None = None
    security_groups: list[str] | None = None
    instance_profile: str | None = None
    root_volume: int | str | None = None
    capacity: Literal["spot", "spot-then-on-demand", "on-demand"] = "spot-then-on-demand"
    spot_allocation: Literal["price-capacity-optimized", "capacity-optimized",
                             "capacity-optimized-prioritized", "lowest-price",
                             "diversified"] = "price-capacity-optimized"
    expiry_grace: float | str = "1h"
    rerun_on_demand: bool = False


class PoolSchema(_Strict):
    name: str
    labels: list[str] = Field(min_length=1)
    backend: Literal["docker", "ec2"] = "docker"
    image: str | None = None
    min_idle: int = Field(default=0, ge=0)
    max: int = Field(ge=1)
    cpus: float | None = Field(default=None, gt=0)
    memory: int | str | None = None
    gpus: int = Field(default=0, ge=0)
    idle_timeout: float | str = "5m"
    max_lifetime: float | str = "6h"
    register_timeout: float | str | None = None  # 3m for docker, 10m for ec2 (boot)
    env: dict[str, str] = Field(default_factory=dict)
    ec2: Ec2PoolSchema | None = None


class RunnersSchema(_Strict):
    id: str = "gha-mlops"
    github: GitHubSchema
    webhook: WebhookSchema = Field(default_factory=WebhookSchema)
    state: str = "runners.db"
    reconcile_interval: float | str = "30s"
    grace_period: float | str = "2m"
    backends: BackendsSchema = Field(default_factory=BackendsSchema)
    pools: list[PoolSchema] = Field(min_length=1)


# -- the validated config the service uses --------------------------------------------------

CAPACITY_POLICIES = ("spot", "spot-then-on-demand", "on-demand")
REGISTER_TIMEOUT = {"docker": 180.0, "ec2": 600.0}  # an instance boots in minutes
_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]{0,15}\.[a-z0-9-]{1,16}$")
_AWS_ID = {"subnets": re.compile(r"^subnet-[0-9a-f]{8,17}$"),
           "security_groups": re.compile(r"^sg-[0-9a-f]{8,17}$")}
_SSM_NAME = re.compile(r"^resolve:ssm:/[A-Za-z0-9_./-]{1,1000}$")
_TEMPLATE = re.compile(r"^(lt-[0-9a-f]{8,17}|[A-Za-z0-9()./_-]{3,128})$")
_TEMPLATE_VERSION = re.compile(r"^(\$Default|\$Latest|[1-9][0-9]{0,8})$")
_PROFILE = re.compile(r"^(arn:aws[a-z-]*:iam::\d{12}:instance-profile/[\w+=,.@/-]{1,128}"
                      r"|[\w+=,.@-]{1,128})$")
# A tag key EC2 can serve from instance metadata (no spaces, no "/": EC2 refuses the launch
# otherwise); checked in the config and again by the backend before launching.
METADATA_TAG_KEY = re.compile(r"[A-Za-z0-9+=.,_:@-]{1,128}")
_PREFIX = re.compile(r"^(/[A-Za-z0-9_.-]{1,64}){1,5}$")


@dataclass(frozen=True)
class Ec2Pool:
    """An ec2 pool's instances (``pools[].ec2``, with ``backends.ec2``'s defaults applied)."""

    instance_types: tuple[str, ...]  # diversification: the fleet's overrides are types x subnets
    subnets: tuple[str, ...]
    security_groups: tuple[str, ...]
    ami: str | None  # "ami-..." or "resolve:ssm:/..." (an SSM parameter); None: the template's
    launch_template: str | None  # "lt-..." or a name; None: the autoscaler manages one
    launch_template_version: str  # "$Default", "$Latest" or a number
    instance_profile: str | None  # name or ARN
    root_volume_gb: int | None  # None: the AMI's size
    capacity: str  # one of CAPACITY_POLICIES
    spot_allocation: str  # CreateFleet's SpotOptions.AllocationStrategy
    expiry_grace: float  # seconds; the expiry tag = launch + max_lifetime + this
    # The runner launched for a job whose spot instance got notice (it will likely run the
    # job's one re-run) goes on-demand, so that the re-run is not interrupted too.
    rerun_on_demand: bool = False


@dataclass(frozen=True)
class Ec2Settings:
    """``backends.ec2``: one region per autoscaler."""

    region: str
    endpoint_url: str | None
    interruption_queue: str | None  # SQS queue URL or name; None: instance notices only
    parameter_prefix: str  # JIT configs live at {prefix}/{autoscaler id}/{runner name}
    tags: Mapping[str, str]  # added to every instance, volume and parameter


@dataclass(frozen=True)
class DockerHost:
    """One Docker host of the docker backend (the single-host form is one named "default")."""

    name: str
    host: str | None  # None: $DOCKER_HOST or the local socket
    gpus: tuple[str, ...]
    network: str
    gpu_driver: str
    env: Mapping[str, str]


@dataclass(frozen=True)
class Pool:
    name: str
    labels: frozenset[str]  # lower-cased, defaults included
    backend: str
    image: str
    min_idle: int
    max: int
    cpus: float | None
    memory_mb: int | None
    gpus: int
    idle_timeout: float
    max_lifetime: float
    register_timeout: float
    env: Mapping[str, str]
    ec2: Ec2Pool | None = None  # set exactly when backend == "ec2"

    def serves(self, job_labels: frozenset[str]) -> bool:
        return job_labels <= self.labels


@dataclass(frozen=True)
class GitHubAuth:
    token: str | None = None
    app_id: int | None = None
    private_key: str | None = None
    installation_id: int | None = None


@dataclass(frozen=True)
class RunnersConfig:
    id: str
    path: Path
    repo: str | None
    org: str | None
    repos: tuple[str, ...]
    api_url: str
    auth: GitHubAuth
    runner_group_id: int
    webhook_secret: bytes
    listen_host: str
    listen_port: int
    webhook_path: str
    max_body: int
    state_path: Path
    reconcile_interval: float
    grace_period: float
    docker: DockerSchema
    pools: tuple[Pool, ...]
    docker_hosts: tuple[DockerHost, ...] = ()  # the docker backend's hosts (one or several)
    placement: str = "spread"  # over docker_hosts: "spread" (most free GPUs) or "pack"
    host_down_after: float = 60.0  # seconds a host may not answer before its runners are lost
    host_list_timeout: float = 15.0  # seconds a host's listing may take before it is down
    ec2: Ec2Settings | None = None

    @property
    def gpu_inventory(self) -> int:
        """The GPUs the docker backend's hosts list, all together."""
        return sum(len(h.gpus) for h in self.docker_hosts)

    @property
    def scope(self) -> str:
        return self.repo or f"org {self.org}"

    def pool(self, name: str) -> Pool | None:
        return next((p for p in self.pools if p.name == name), None)


def load_config(path: Path, env: Mapping[str, str], *,
                need_secrets: bool = True) -> RunnersConfig:
    """Read and check ``runners.yaml``; secrets are read from ``env`` (the environment the
    CLI read; tests pass a mapping of their own) or the files named.
    ``need_secrets=False`` (``runners status``) does not require them."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{display(path)} does not exist",
                          hint="write one (see docs/runners.md) or pass --config PATH") from None
    except OSError as err:
        raise ConfigError(f"cannot read {display(path)}: {err.strerror}") from None
    raw = parse_yaml(path, data)
    problems = Problems(path, data)
    if not isinstance(raw, dict):
        problems.add((), f"expected a mapping with `github:` and `pools:`, got {type_name(raw)}",
                     "see docs/runners.md for an example")
        problems.raise_if_any()
    try:
        cfg = RunnersSchema.model_validate(raw)
    except ValidationError as err:
        _schema_problems(problems, err.errors())
        problems.raise_if_any()
        raise AssertionError("unreachable") from err
    built = _Builder(problems, path, env, need_secrets).build(cfg)
    problems.raise_if_any()
    return built


class _Builder:
    def __init__(self, problems: Problems, path: Path, env: Mapping[str, str],
                 need_secrets: bool) -> None:
        self.problems = problems
        self.path = path
        self.env = env
        self.need_secrets = need_secrets

    def build(self, cfg: RunnersSchema) -> RunnersConfig:
        p = self.problems
        if not NAME.fullmatch(cfg.id):
            p.add(("id",), f"{cfg.id!r} is not a valid id",
                  "use 1-31 lower-case letters, digits and '-' (it prefixes runner names)")
        gh = cfg.github
        if (gh.repo is None) == (gh.org is None):
            p.add(("github",), "name exactly one scope: `repo: owner/name` or `org: name`",
                  "runners registered for a repository serve only its jobs; for an "
                  "organization, every repository's (see docs/runners.md)", key=True)
        if gh.repo is not None and not re.fullmatch(r"^[\w.-]+/[\w.-]+$", gh.repo):
            p.add(("github", "repo"), f"{gh.repo!r} is not `owner/name`")
        if gh.repos and gh.org is None:
            p.add(("github", "repos"), "`repos` is for organization scope",
                  "remove it, or use `org:` instead of `repo:`")
        for i, r in enumerate(gh.repos):
            if gh.org and not r.startswith(gh.org + "/"):
                p.add(("github", "repos", i), f"{r!r} is not a repository of {gh.org!r}",
                      f"write it as `{gh.org}/NAME`")
        auth = self._auth(gh)
        secret = self._webhook_secret(cfg.webhook)
        host, port = self._listen(cfg.webhook.listen)
        if not cfg.webhook.path.startswith("/"):
            p.add(("webhook", "path"), "must start with '/'", "e.g. `path: /webhook`")
        max_body = self._size(("webhook", "max_body"), cfg.webhook.max_body) or 1
        pools = tuple(self._pool(i, s, cfg) for i, s in enumerate(cfg.pools))
        seen: set[str] = set()
        for i, pool in enumerate(pools):
            if pool.name in seen:
                p.add(("pools", i, "name"), f"pool {pool.name!r} is declared twice",
                      "give each pool its own name")
            seen.add(pool.name)
        state = Path(cfg.state)
        if not state.is_absolute():
            state = self.path.parent / state
        docker = cfg.backends.docker or DockerSchema()
        return RunnersConfig(
            id=cfg.id, path=self.path, repo=gh.repo, org=gh.org, repos=tuple(gh.repos),
            api_url=gh.api_url.rstrip("/"), auth=auth, runner_group_id=gh.runner_group_id,
            webhook_secret=secret, listen_host=host, listen_port=port,
            webhook_path=cfg.webhook.path, max_body=max_body, state_path=state,
            reconcile_interval=self._duration(("reconcile_interval",),
                                              cfg.reconcile_interval) or 30.0,
            grace_period=self._duration(("grace_period",), cfg.grace_period),
            docker=docker, pools=pools, docker_hosts=self._docker_hosts(docker),
            placement=docker.placement, ec2=self._ec2(cfg.backends.ec2, pools),
            host_down_after=self._duration(("backends", "docker", "down_after"),
                                           docker.down_after),
            host_list_timeout=self._duration(("backends", "docker", "list_timeout"),
                                             docker.list_timeout) or 15.0)

    def _docker_hosts(self, d: DockerSchema) -> tuple[DockerHost, ...]:
        if not d.hosts:
            return (DockerHost("default", d.host, tuple(d.gpus), d.network, d.gpu_driver,
                               dict(d.env)),)
        loc: Loc = ("backends", "docker")
        if d.host is not None or d.gpus:
            self.problems.add(loc, "give either `host`/`gpus` (one host) or `hosts:` "
                              "(several), not both",
                              "move this host into `hosts:` as `{name: ..., host: ..., gpus: "
                              "[...]}`", key=True)
        names: set[str] = set()
        urls: set[str] = set()
        for i, h in enumerate(d.hosts):
            if not NAME.fullmatch(h.name):
                self.problems.add((*loc, "hosts", i, "name"), f"{h.name!r} is not a valid "
                                  "host name", "use 1-31 lower-case letters, digits and '-'")
            if h.name in names:
                self.problems.add((*loc, "hosts", i, "name"), f"host {h.name!r} is listed "
                                  "twice", "give each host its own name")
            url = h.host or "default"
            if url in urls:
                self.problems.add((*loc, "hosts", i, "host"), f"the daemon {url!r} is listed "
                                  "twice", "each host is one Docker daemon")
            names.add(h.name)
            urls.add(url)
        return tuple(DockerHost(h.name, h.host, tuple(h.gpus), h.network, h.gpu_driver,
                                {**d.env, **h.env}) for h in d.hosts)

    def _ec2(self, e: Ec2Schema | None, pools: tuple[Pool, ...]) -> Ec2Settings | None:
        uses = [i for i, pool in enumerate(pools) if pool.backend == "ec2"]
        if e is None:
            for i in uses:
                self.problems.add(("pools", i, "backend"), "the pool uses the ec2 backend, "
                                  "but `backends.ec2` is not configured",
                                  "add `backends: {ec2: {region: us-east-1, subnets: [...]}}` "
                                  "(see docs/runners-aws.md)")
            return None
        loc: Loc = ("backends", "ec2")
        if not REGION.fullmatch(e.region):
            self.problems.add((*loc, "region"), f"{e.region!r} is not an AWS region",
                              "e.g. `region: us-east-1`")
        if not _PREFIX.fullmatch(e.parameter_prefix):
            self.problems.add((*loc, "parameter_prefix"), f"{e.parameter_prefix!r} is not an "
                              "SSM parameter path", "e.g. `/gha-mlops` (1-5 levels)")
        for key, value in e.tags.items():
            reserved = key.lower().startswith(("aws:", "dev.gha-mlops"))
            if not METADATA_TAG_KEY.fullmatch(key) or reserved or len(value) > 256:
                self.problems.add((*loc, "tags", key), f"{key!r}: {value!r} is not a tag "
                                  "this autoscaler may set",
                                  "keys up to 128 characters without spaces or '/' "
                                  "(instance metadata reads them), not starting with aws: "
                                  "or dev.gha-mlops; values up to 256")
        return Ec2Settings(region=e.region, endpoint_url=e.endpoint_url,
                           interruption_queue=e.interruption_queue,
                           parameter_prefix=e.parameter_prefix.rstrip("/"), tags=dict(e.tags))

    def _ec2_pool(self, i: int, s: PoolSchema, cfg: RunnersSchema) -> Ec2Pool | None:
        loc: Loc = ("pools", i, "ec2")
        e, defaults = s.ec2, cfg.backends.ec2
        if e is None:
            self.problems.add(("pools", i), "an ec2 pool needs `ec2:` with its instance_types "
                              "and ami (or launch_template)",
                              "e.g. `ec2: {instance_types: [g5.xlarge, g6.xlarge], ami: "
                              "ami-0123456789abcdef0}` (see docs/runners-aws.md)", key=True)
            return None
        for j, t in enumerate(e.instance_types):
            if not _INSTANCE_TYPE.fullmatch(t):
                self.problems.add((*loc, "instance_types", j), f"{t!r} is not an instance "
                                  "type", "e.g. g5.xlarge")
        if len(set(e.instance_types)) != len(e.instance_types):
            self.problems.add((*loc, "instance_types"), "an instance type is listed twice")
        if e.ami is None and e.launch_template is None:
            self.problems.add(loc, "name the image: `ami:` (an id or resolve:ssm:/parameter) "
                              "or a `launch_template:` that has one",
                              "e.g. `ami: resolve:ssm:/gha-mlops/runner-ami` (see "
                              "docs/runners-aws.md: building the AMI)", key=True)
        if e.ami is not None and not (AMI_ID.fullmatch(e.ami) or _SSM_NAME.fullmatch(e.ami)):
            self.problems.add((*loc, "ami"), f"{e.ami!r} is not an AMI id or an SSM parameter",
                              "write `ami-0123456789abcdef0` or `resolve:ssm:/path/to/ami-id`")
        if e.launch_template is not None and not _TEMPLATE.fullmatch(e.launch_template):
            self.problems.add((*loc, "launch_template"), f"{e.launch_template!r} is not a "
                              "launch template id (lt-...) or name")
        version = str(e.launch_template_version)
        if not _TEMPLATE_VERSION.fullmatch(version):
            self.problems.add((*loc, "launch_template_version"), f"{version!r} is not a "
                              "version", "$Default, $Latest or a number")
        subnets = tuple(e.subnets if e.subnets is not None else
                        defaults.subnets if defaults else [])
        groups = tuple(e.security_groups if e.security_groups is not None else
                       defaults.security_groups if defaults else [])
        if not subnets:
            self.problems.add(loc, "no subnets: the fleet launches into the pool's subnets",
                              "list them under the pool's `ec2.subnets` or "
                              "`backends.ec2.subnets` (one per availability zone helps "
                              "spot capacity)", key=True)
        for key, ids in (("subnets", subnets), ("security_groups", groups)):
            for j, value in enumerate(ids):
                if not _AWS_ID[key].fullmatch(value):
                    where = (*loc, key, j) if getattr(e, key) is not None else \
                        ("backends", "ec2", key, j)
                    self.problems.add(where, f"{value!r} is not a {key[:-1].replace('_', ' ')} "
                                      "id", f"e.g. {'subnet' if key == 'subnets' else 'sg'}-"
                                      "0123456789abcdef0")
        profile = e.instance_profile or (defaults.instance_profile if defaults else None)
        if profile is not None and not _PROFILE.fullmatch(profile):
            self.problems.add((*loc, "instance_profile"), f"{profile!r} is not an instance "
                              "profile name or ARN")
        root = self._size((*loc, "root_volume"), e.root_volume) if e.root_volume else None
        if root is not None and not 8 * 1024**3 <= root <= 16 * 1024**4:
            self.problems.add((*loc, "root_volume"), "must be between 8GiB and 16TiB")
        if e.rerun_on_demand and e.capacity == "spot":
            self.problems.add((*loc, "rerun_on_demand"), "`capacity: spot` launches nothing "
                              "on-demand", "use `capacity: spot-then-on-demand`, or drop "
                              "rerun_on_demand")
        for key in ("cpus", "memory"):
            if getattr(s, key) is not None:
                self.problems.add(("pools", i, key), f"`{key}` is for docker pools: an ec2 "
                                  "runner has its whole instance", "choose the instance_types "
                                  "instead", key=True)
        return Ec2Pool(instance_types=tuple(e.instance_types), subnets=subnets,
                       security_groups=groups, ami=e.ami, launch_template=e.launch_template,
                       launch_template_version=version, instance_profile=profile,
                       root_volume_gb=-(-root // 1024**3) if root else None,
                       capacity=e.capacity, spot_allocation=e.spot_allocation,
                       expiry_grace=self._duration((*loc, "expiry_grace"), e.expiry_grace),
                       rerun_on_demand=e.rerun_on_demand)

    def _pool(self, i: int, s: PoolSchema, cfg: RunnersSchema) -> Pool:
        p = self.problems
        if not NAME.fullmatch(s.name):
            p.add(("pools", i, "name"), f"{s.name!r} is not a valid pool name",
                  "use 1-31 lower-case letters, digits and '-'")
        if s.min_idle > s.max:
            p.add(("pools", i, "min_idle"), f"min_idle ({s.min_idle}) is more than max "
                  f"({s.max})", "warm runners count towards the maximum; lower min_idle")
        if s.backend == "docker" and s.gpus:
            d = cfg.backends.docker or DockerSchema()
            most = max([len(d.gpus), *(len(h.gpus) for h in d.hosts)])
            if s.gpus > most:
                p.add(("pools", i, "gpus"), f"each runner wants {s.gpus} GPU(s) but no host of "
                      f"the docker backend lists that many (at most {most})",
                      "list the host's GPUs under `backends: {docker: {gpus: [\"0\", ...]}}` "
                      "(ids as `nvidia-smi -L` shows them, or their UUIDs)")
        if s.backend == "docker" and not s.image:
            p.add(("pools", i), "a docker pool needs `image:` (the runner image)",
                  "e.g. `image: ghcr.io/octo/runner:2.330.0` (runner/Dockerfile builds one)",
                  key=True)
        if s.backend != "ec2" and s.ec2 is not None:
            p.add(("pools", i, "ec2"), "`ec2:` is for pools with `backend: ec2`",
                  "add `backend: ec2`, or remove `ec2:`", key=True)
        ec2 = self._ec2_pool(i, s, cfg) if s.backend == "ec2" else None
        memory = self._size(("pools", i, "memory"), s.memory) if s.memory is not None else None
        labels = frozenset(x.strip().lower() for x in (*DEFAULT_LABELS, *s.labels))
        register = REGISTER_TIMEOUT[s.backend] if s.register_timeout is None else \
            self._duration(("pools", i, "register_timeout"), s.register_timeout)
        return Pool(
            name=s.name, labels=labels, backend=s.backend, image=s.image or "",
            min_idle=s.min_idle,
            max=s.max, cpus=s.cpus, memory_mb=memory // 1024**2 if memory else None,
            gpus=s.gpus,
            idle_timeout=self._duration(("pools", i, "idle_timeout"), s.idle_timeout),
            max_lifetime=self._duration(("pools", i, "max_lifetime"), s.max_lifetime),
            register_timeout=register, env=dict(s.env), ec2=ec2)

    def _auth(self, gh: GitHubSchema) -> GitHubAuth:
        p = self.problems
        if (gh.app is None) == (gh.token_env is None):
            p.add(("github",), "configure exactly one of `app:` (a GitHub App, recommended) "
                  "and `token_env:`",
                  "e.g. `app: {id: 12345, private_key_file: /etc/gha-mlops/app.pem}`", key=True)
            return GitHubAuth()
        if gh.token_env is not None:
            token = self._env(("github", "token_env"), gh.token_env, "a GitHub token")
            return GitHubAuth(token=token)
        assert gh.app is not None
        app = gh.app
        if (app.private_key_file is None) == (app.private_key_env is None):
            p.add(("github", "app"), "name the App's private key with exactly one of "
                  "`private_key_file` and `private_key_env`",
                  "download the key from the App's settings page (a .pem file)")
            return GitHubAuth()
        if app.private_key_env is not None:
            key = self._env(("github", "app", "private_key_env"), app.private_key_env,
                            "the App's private key (PEM)")
        else:
            key = self._file(("github", "app", "private_key_file"), app.private_key_file or "")
        if key is not None and "PRIVATE KEY" not in key:
            p.add(("github", "app"), "the private key is not a PEM key",
                  "use the .pem file GitHub generated for the App (BEGIN RSA PRIVATE KEY)")
        return GitHubAuth(app_id=app.id, private_key=key, installation_id=app.installation_id)

    def _webhook_secret(self, w: WebhookSchema) -> bytes:
        if (w.secret_env is None) == (w.secret_file is None):
            self.problems.add(("webhook",), "name the webhook secret with exactly one of "
                              "`secret_env` and `secret_file`",
                              "the same secret as in the webhook's settings on GitHub; "
                              "generate one with `openssl rand -hex 32`", key=True)
            return b""
        if w.secret_env is not None:
            value = self._env(("webhook", "secret_env"), w.secret_env, "the webhook secret")
        else:
            value = self._file(("webhook", "secret_file"), w.secret_file or "")
        value = (value or "").strip()
        if self.need_secrets and value and len(value) < 16:
            self.problems.add(("webhook",), "the webhook secret is shorter than 16 characters",
                              "use a long random secret: `openssl rand -hex 32`")
        return value.encode()

    def _env(self, loc: Loc, name: str, what: str) -> str | None:
        value = self.env.get(name)
        if not value and self.need_secrets:
            self.problems.add(loc, f"${name} is not set (it holds {what})",
                              f"set it in the service's environment, e.g. in "
                              f"/etc/gha-mlops/runners.env: `{name}=...`")
        return value or None

    def _file(self, loc: Loc, name: str) -> str | None:
        path = Path(name)
        if not path.is_absolute():
            path = self.path.parent / path
        try:
            return path.read_text()
        except OSError as err:
            if self.need_secrets:
                self.problems.add(loc, f"cannot read {path}: {err.strerror}",
                                  "check the path and that the service's user may read it")
            return None

    def _listen(self, listen: str) -> tuple[str, int]:
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) < 65536:
            self.problems.add(("webhook", "listen"), f"{listen!r} is not HOST:PORT",
                              "e.g. `listen: 0.0.0.0:8080` (behind a TLS proxy)")
            return "127.0.0.1", 8080
        return host.strip("[]"), int(port)

    def _duration(self, loc: Loc, value: Any) -> float:
        try:
            return parse_duration(value)
        except ValueError as err:
            self.problems.add(loc, str(err))
            return 0.0

    def _size(self, loc: Loc, value: Any) -> int:
        try:
            return parse_bytes(value)
        except ValueError as err:
            self.problems.add(loc, str(err))
            return 0


_MESSAGES = {
    "string_type": "expected a string, got {got}",
    "int_type": "expected a whole number, got {got}",
    "int_parsing": "expected a whole number, got {got}",
    "float_type": "expected a number, got {got}",
    "float_parsing": "expected a number, got {got}",
    "list_type": "expected a list, got {got}",
    "dict_type": "expected a mapping, got {got}",
    "model_type": "expected a mapping, got {got}",
    "too_short": "must not be empty",
    "greater_than_equal": "must be at least {ge}, got {got}",
    "greater_than": "must be more than {gt}, got {got}",
    "literal_error": "expected {expected}, got {got}",
}


def _schema_problems(problems: Problems, errors: list[Any]) -> None:
    # A missing key and an unknown key that is a typo of it are one mistake: report the typo.
    missing = {tuple(e["loc"]) for e in errors if e["type"] == "missing"}
    typos = {(*e["loc"][:-1], close[0]) for e in errors if e["type"] == "extra_forbidden"
             for close in [difflib.get_close_matches(str(e["loc"][-1]),
                                                     [str(m[-1]) for m in missing], n=1,
                                                     cutoff=0.5)]
             if close}
    for e in errors:
        if e["type"] == "missing" and tuple(e["loc"]) in typos:
            continue
        # Union members add their type name to the location ("str", "int", ...): drop them.
        loc: Loc = tuple(x for x in e["loc"] if not (isinstance(x, str) and (
            x in ("str", "int", "float") or x.endswith("]"))))
        kind = e["type"]
        if kind == "extra_forbidden":
            allowed = _fields_at(loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.5)
            hint = (f"did you mean {close[0]!r}? " if close else "") + \
                "allowed keys: " + ", ".join(allowed)
            problems.add(loc, f"unknown key {loc[-1]!r}", hint, key=True)
        elif kind == "missing":
            problems.add(loc[:-1], f"missing required key {loc[-1]!r}",
                         "see docs/runners.md for each key", key=True)
        else:
            template = _MESSAGES.get(kind)
            got = type_name(e.get("input"))
            message = (template.format(got=got, **(e.get("ctx") or {})) if template
                       else str(e.get("msg", "invalid value")).removeprefix("Value error, "))
            problems.add(loc, message)


def _fields_at(loc: Loc) -> list[str]:
    model: type[BaseModel] = RunnersSchema
    for part in loc:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[str(part)].annotation
        nested = _model_in(annotation)
        if nested is None:
            return []
        model = nested
    return list(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
