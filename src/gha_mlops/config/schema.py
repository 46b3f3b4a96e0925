"""The pydantic schema of ``mlops.yaml``. Imported only when a config must be (re)validated."""

from __future__ import annotations

import re
from typing import Any, Literal

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

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != 1:
            raise ValueError("only version 1 is known to this gha-mlops")
        return value
