"""The pydantic schema of ``mlops.yaml``. Imported only when a config must be (re)validated."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

STAGE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def _as_list(value: Any) -> Any:
    """Accept a single string where a list of strings is expected."""
    return [value] if isinstance(value, str) else value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class EnvSchema(_Strict):
    lock: str | None = Field(default=None, min_length=1)


class StageSchema(_Strict):
    cmd: str | list[str]
    desc: str | None = None
    deps: list[str] = Field(default_factory=list)
    params: list[str] = Field(default_factory=list)
    outs: list[str] = Field(default_factory=list)
    metrics: list[str] = Field(default_factory=list)
    plots: list[str] = Field(default_factory=list)

    _coerce_lists = field_validator("deps", "params", "outs", "metrics", "plots", mode="before")(
        _as_list
    )

    @field_validator("cmd")
    @classmethod
    def _cmd_not_empty(cls, value: str | list[str]) -> str | list[str]:
        parts = [value] if isinstance(value, str) else value
        if not parts or any(not p.strip() for p in parts):
            raise ValueError("a command must not be empty")
        return value


class RemoteSchema(_Strict):
    url: str = Field(min_length=1)
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None


class GateSchema(_Strict):
    """Rules a metric must satisfy for a comparison to pass (see docs/report.md)."""

    min: float | None = Field(default=None, allow_inf_nan=False)
    max: float | None = Field(default=None, allow_inf_nan=False)
    min_delta: float | None = Field(default=None, allow_inf_nan=False)
    max_delta: float | None = Field(default=None, allow_inf_nan=False)
    max_relative_drop: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    direction: Literal["higher", "lower"] | None = None


GATE_RULES = ("min", "max", "min_delta", "max_delta", "max_relative_drop")


class ToleranceSchema(_Strict):
    atol: float = Field(default=1.0e-5, ge=0, allow_inf_nan=False)
    rtol: float = Field(default=1.0e-4, ge=0, allow_inf_nan=False)


class RegistryModelSchema(_Strict):
    """One model of the registry: the run output that is the model (see docs/registry.md)."""

    path: str = Field(min_length=1)
    description: str | None = None
    check_data: str | None = Field(default=None, min_length=1)
    tolerance: ToleranceSchema = Field(default_factory=ToleranceSchema)


class RegistrySchema(_Strict):
    """``registry:``: the models that can be registered, the stages they can be promoted to,
    and the stage whose model ``gha-mlops report`` compares with."""

    stages: list[str] = Field(default_factory=lambda: ["dev", "staging", "prod"], min_length=1)
    champion: str = Field(default="prod", min_length=1)
    models: dict[str, RegistryModelSchema] = Field(default_factory=dict)


class DeployHostSchema(_Strict):
    """One Docker host of an environment (docs/deploy-config.md)."""

    docker: str = Field(min_length=1)
    address: str | None = Field(default=None, min_length=1)


class DeployGatesSchema(_Strict):
    """The gates a new version's own metrics must pass over each bake."""

    max_error_rate: float = Field(default=0.01, ge=0, le=1, allow_inf_nan=False)
    max_p99_ms: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    min_requests: int = Field(default=0, ge=0)


def _duration(value: Any) -> Any:
    """A duration key as seconds: a number, or a string such as ``10s``, ``2m``, ``500ms``
    (bounds are checked in ``_deploy``, which names them)."""
    from gha_mlops.config._deploy import parse_duration

    return parse_duration(value)


class DeployEnvironmentSchema(_Strict):
    """One environment of ``deploy.environments``; the checks that span keys or sections
    (ports all different, the stage a registry stage, ...) are ``_deploy``'s."""

    stage: str = Field(min_length=1)
    hosts: list[DeployHostSchema]
    port: int = Field(ge=1, le=65535)
    backend_ports: list[Annotated[int, Field(ge=1, le=65535)]] | None = Field(
        default=None, min_length=2, max_length=2)
    listen: str = "0.0.0.0"
    bind: str = "127.0.0.1"
    workers: int = Field(default=1, ge=1, le=64)
    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=lambda: [10, 50, 100], min_length=1, max_length=10)
    bake: float = 10.0
    ready_timeout: float = 60.0
    drain: float = 5.0
    gates: DeployGatesSchema = Field(default_factory=DeployGatesSchema)
    golden: bool = True
    url: str | None = None
    production: bool = False

    _durations = field_validator("bake", "ready_timeout", "drain", mode="before")(_duration)


class DeploySchema(_Strict):
    """``deploy:``: the model deployed, the router image and the environments."""

    model: str | None = Field(default=None, min_length=1)
    router_image: str = "nginx:1.27-bookworm"
    environments: dict[str, DeployEnvironmentSchema] = Field(default_factory=dict)


def _monitor_duration(value: Any) -> Any:
    """A monitoring duration as seconds: a number, or a string such as ``90m``, ``24h``,
    ``7d`` (bounds are checked in ``_monitor``, which names them)."""
    from gha_mlops.config._monitor import parse_duration

    return parse_duration(value)


class MonitorAlarmSchema(_Strict):
    """The drift alarm's hysteresis (docs/monitor-config.md); ``low < high`` and ``k``,
    ``m`` at most ``n`` are ``_monitor``'s checks."""

    high: float = Field(default=0.5, ge=0, le=1, allow_inf_nan=False)
    low: float = Field(default=0.3, ge=0, le=1, allow_inf_nan=False)
    k: int = Field(default=2, ge=1, le=100)
    n: int = Field(default=3, ge=1, le=100)
    m: int = Field(default=1, ge=1, le=100)
    cooldown: float = 604800.0
    min_samples: int = Field(default=1000, ge=1, le=10**12)

    _durations = field_validator("cooldown", mode="before")(_monitor_duration)


class MonitorRetrainSchema(_Strict):
    """The retraining workflow a tripped alarm dispatches; the forms of the workflow file
    name, the ref and the input names are ``_monitor``'s checks."""

    workflow: str = Field(min_length=1)
    ref: str | None = Field(default=None, min_length=1)
    inputs: dict[str, str] = Field(default_factory=dict)
    reason_input: str | None = Field(default="reason", min_length=1)


class MonitorModelSchema(_Strict):
    """One model of ``monitor.models``; the checks of forms and across sections (the model
    a registry model, the stage a registry stage, the log location) are ``_monitor``'s."""

    log: str = Field(min_length=1)
    sample: float = Field(default=0.1, gt=0, le=1, allow_inf_nan=False)
    stage: str | None = Field(default=None, min_length=1)
    window: float = 86400.0
    share: float = Field(default=0.5, gt=0, le=1, allow_inf_nan=False)
    features: list[str] | None = Field(default=None, min_length=1, max_length=10_000)
    label: str | None = Field(default=None, min_length=1)
    alarm: MonitorAlarmSchema = Field(default_factory=MonitorAlarmSchema)
    retrain: MonitorRetrainSchema | None = None
    issue_labels: list[str] = Field(default_factory=lambda: ["drift"], min_length=1,
                                    max_length=10)
    collect_into: str | None = Field(default=None, min_length=1)

    _durations = field_validator("window", mode="before")(_monitor_duration)


class MonitorSchema(_Strict):
    """``monitor:``: the monitored models by ``registry.models`` name."""

    models: dict[str, MonitorModelSchema] = Field(default_factory=dict)


class ConfigSchema(_Strict):
    version: int = 1
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    params: str = Field(default="params.yaml", min_length=1)
    env: EnvSchema = Field(default_factory=EnvSchema)
    model: str | None = Field(default=None, min_length=1)
    determinism: Literal["native", "portable"] = "native"
    remotes: dict[str, RemoteSchema] = Field(default_factory=dict)
    default_remote: str | None = None
    stages: dict[str, StageSchema] = Field(min_length=1)
    gates: dict[str, GateSchema] = Field(default_factory=dict)
    registry: RegistrySchema | None = None
    deploy: DeploySchema | None = None
    monitor: MonitorSchema | None = None

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != 1:
            raise ValueError("only version 1 is known to this gha-mlops")
        return value
