"""The pipeline as frozen, typed domain objects.

These are plain dataclasses, free of pydantic, so that a no-op ``gha-mlops run`` can rebuild
them from the validated-config cache without importing the validator.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

OutputKind = Literal["out", "metric", "plot"]


@dataclass(frozen=True)
class Output:
    """A path a stage writes: a model or data (``out``), a metrics file, or a plot."""

    path: str
    kind: OutputKind


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline. Paths are POSIX and relative to the workspace root."""

    name: str
    cmd: str
    deps: tuple[str, ...]
    params: tuple[str, ...]
    outs: tuple[Output, ...]
    upstream: tuple[str, ...]
    desc: str | None = None

    @property
    def out_paths(self) -> tuple[str, ...]:
        return tuple(o.path for o in self.outs)


@dataclass(frozen=True)
class Remote:
    """Where datasets are pushed to and pulled from (``remotes:`` in mlops.yaml)."""

    name: str
    url: str
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None


GateDirection = Literal["higher", "lower"]


@dataclass(frozen=True)
class Gate:
    """A promotion gate (``gates:`` in mlops.yaml): rules on one metric of the head run,
    alone (``min``, ``max``) or against the baseline (``min_delta``, ``max_delta``,
    ``max_relative_drop``, a fraction of the baseline). ``metric`` is a metric key or
    ``FILE:KEY``; ``direction`` overrides the name-based guess of which way is better."""

    metric: str
    min: float | None = None
    max: float | None = None
    min_delta: float | None = None
    max_delta: float | None = None
    max_relative_drop: float | None = None
    direction: GateDirection | None = None
    # Where the gate is written (``mlops.yaml:12``), for messages; not part of its identity.
    source: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class RegistryModel:
    """A model of ``registry.models``: ``path`` is the run output (workspace-relative, POSIX)
    that is the model; ``check_data`` an optional ``.npy`` run output of inputs that an export
    is checked on, within ``atol``/``rtol``."""

    path: str
    description: str | None = None
    check_data: str | None = None
    atol: float = 1.0e-5
    rtol: float = 1.0e-4


@dataclass(frozen=True)
class RegistryConfig:
    """``registry:`` in mlops.yaml: the stages ``model promote`` accepts, the stage whose
    model is the report's champion (one of ``stages``), and the models by name."""

    stages: tuple[str, ...] = ("dev", "staging", "prod")
    champion: str = "prod"
    models: Mapping[str, RegistryModel] = field(default_factory=dict)


@dataclass(frozen=True)
class DeployHostConfig:
    """One Docker host of an environment: the daemon (``unix://``, ``tcp://``, ``ssh://``) and
    the address at which the deploying machine reaches ports on that host (default: the
    daemon URL's host; ``127.0.0.1`` for ``unix://``)."""

    docker: str
    address: str


@dataclass(frozen=True)
class DeployGates:
    """Gates on the new version's own metrics over each bake (docs/deploy.md):
    ``max_error_rate`` (5xx answers / inference requests, 0..1), ``max_p99_ms`` (None: no
    latency gate) and ``min_requests`` (fewer inference requests in a bake: the gate fails;
    0: a bake without traffic passes, with a note)."""

    max_error_rate: float = 0.01
    max_p99_ms: float | None = None
    min_requests: int = 0


@dataclass(frozen=True)
class DeployEnvironment:
    """One environment of ``deploy.environments``: where it runs (``hosts``, the router's
    ``listen`` address and ``port``, the two backend ports, the backends' ``bind`` address and
    server ``workers``), the registry ``stage`` that a successful rollout moves, the rollout
    ``steps`` (percent of traffic to the new version, strictly increasing, ending at 100;
    ``[100]`` is blue/green), the ``bake_s`` per step, timeouts, the gates, and what GitHub is
    told (``url``: the environment URL; ``production``)."""

    name: str
    stage: str
    hosts: tuple[DeployHostConfig, ...]
    port: int
    backend_ports: tuple[int, int]
    listen: str = "0.0.0.0"
    bind: str = "127.0.0.1"
    workers: int = 1
    steps: tuple[int, ...] = (10, 50, 100)
    bake_s: float = 10.0
    ready_timeout_s: float = 60.0
    drain_s: float = 5.0
    gates: DeployGates = field(default_factory=DeployGates)
    golden: bool = True
    url: str | None = None
    production: bool = False
    # Where the environment is written (``mlops.yaml:40``), for messages.
    source: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class DeployConfig:
    """``deploy:`` in mlops.yaml: the model deployed (a ``registry.models`` name; None: the
    only one there), the router image (nginx) and the environments by name."""

    model: str | None = None
    router_image: str = "nginx:1.27-bookworm"
    environments: Mapping[str, DeployEnvironment] = field(default_factory=dict)


@dataclass(frozen=True)
class MonitorAlarm:
    """The drift alarm's hysteresis (``gha_mlops.monitor.hysteresis.HysteresisConfig``): a
    window drifts when its share of drifted features is over ``high``; the alarm trips when
    ``k`` of the last ``n`` windows drift and clears when the last ``m`` are under ``low``;
    no new trip for ``cooldown_s`` after a dispatched retraining; a window of fewer than
    ``min_samples`` rows says "not enough data"."""

    high: float = 0.5
    low: float = 0.3
    k: int = 2
    n: int = 3
    m: int = 1
    cooldown_s: float = 604800.0
    min_samples: int = 1000


@dataclass(frozen=True)
class MonitorRetrain:
    """What a tripped alarm dispatches: the consumer's retraining ``workflow`` (a file name
    under .github/workflows, e.g. ``retrain.yml``) on ``ref`` (None: the repository's default
    branch) with ``inputs`` plus the reason in the input named ``reason_input`` (None: the
    reason is not passed)."""

    workflow: str
    ref: str | None = None
    inputs: Mapping[str, str] = field(default_factory=dict)
    reason_input: str | None = "reason"


@dataclass(frozen=True)
class MonitorModel:
    """One model of ``monitor.models`` (keyed by its ``registry.models`` name):

    - ``log``: where its prediction log lies: a directory (workspace-relative or absolute)
      or ``s3://bucket/prefix`` (endpoint and credentials from the AWS environment);
    - ``sample``: the share of instances the served model logs (a deploy starts its
      backends with it);
    - ``stage``: the registry stage whose version is judged (None: the newest version);
    - ``window_s``: the default window of ``monitor check`` / ``monitor collect``;
    - ``share``: the dataset drifts when this share of its features drift;
    - ``features``: the feature columns tested (None: every one of the reference profile);
    - ``label``: the output tensor whose value is the predicted class, compared with the
      feedback's labels for performance (None: no performance section);
    - ``alarm``, ``retrain`` (None: a tripped alarm opens the issue, dispatches nothing),
      ``issue_labels`` (the labels of the drift issue), ``collect_into`` (the dataset that
      ``monitor collect`` appends to by default; None: ``--into`` is required)."""

    name: str
    log: str
    sample: float = 0.1
    stage: str | None = None
    window_s: float = 86400.0
    share: float = 0.5
    features: tuple[str, ...] | None = None
    label: str | None = None
    alarm: MonitorAlarm = field(default_factory=MonitorAlarm)
    retrain: MonitorRetrain | None = None
    issue_labels: tuple[str, ...] = ("drift",)
    collect_into: str | None = None
    # Where the model is written (``mlops.yaml:40``), for messages.
    source: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class MonitorConfig:
    """``monitor:`` in mlops.yaml: the monitored models by name (docs/monitoring.md)."""

    models: Mapping[str, MonitorModel] = field(default_factory=dict)


@dataclass(frozen=True)
class Pipeline:
    """A validated ``mlops.yaml`` with its params, stages in a runnable (topological) order."""

    root: Path
    config_file: Path
    config_sha256: str
    seed: int
    params_file: str
    params: Mapping[str, Any]
    env_lock: str | None
    stages: Mapping[str, Stage] = field(default_factory=dict)
    model: str | None = None
    remotes: Mapping[str, Remote] = field(default_factory=dict)
    default_remote: str | None = None
    # The workspace's datasets by name (``gha_mlops.data.pointer.Dataset``), found while
    # loading when a stage depends on ``data:NAME``; None when no stage does.
    datasets: Mapping[str, Any] | None = None
    # ``--set`` overrides (dotted key -> value) already applied to ``params``, in the order
    # given; empty when ``params`` is the params file as it is.
    overrides: Mapping[str, Any] = field(default_factory=dict)
    # Promotion gates by metric name, in the order of mlops.yaml (empty when none declared).
    gates: Mapping[str, Gate] = field(default_factory=dict)
    # ``determinism:``: ``portable`` starts every stage with its CPU kernel dispatchers pinned
    # to the architecture's baseline (gha_mlops.train.portable_environment); ``native`` leaves
    # them to the libraries.
    determinism: str = "native"
    # ``registry:`` (the model registry in git tags, docs/registry.md); None when absent.
    registry: RegistryConfig | None = None
    # ``deploy:`` (environments, docs/deploy.md); None when absent.
    deploy: DeployConfig | None = None
    # ``monitor:`` (drift checks, feedback collection, docs/monitoring.md); None when absent.
    monitor: MonitorConfig | None = None

    def stage(self, name: str) -> Stage:
        return self.stages[name]

    def producer_of(self, path: str) -> str | None:
        """The stage whose output is ``path`` or contains it, if any (the first in run order
        when outputs nest). Time proportional to the depth of ``path``, not to the number of
        stages: the engine asks it for every dep of every stage."""
        producers = self._producers
        found = producers.get(path)
        cut = path.find("/")
        while cut != -1:  # the outputs that contain path: each prefix ending before a '/'
            hit = producers.get(path[:cut])
            if hit is not None and (found is None or hit < found):
                found = hit
            cut = path.find("/", cut + 1)
        return found[1] if found is not None else None

    @functools.cached_property
    def _producers(self) -> dict[str, tuple[int, str]]:
        """Output path -> (place in run order, name) of the first stage that writes it."""
        producers: dict[str, tuple[int, str]] = {}
        for place, stage in enumerate(self.stages.values()):
            for out in stage.out_paths:
                producers.setdefault(out, (place, stage.name))
        return producers

    def downstream(self, names: set[str]) -> set[str]:
        """``names`` and every stage that depends on them, transitively."""
        result = set(names)
        for stage in self.stages.values():  # topological order: one pass suffices
            if any(u in result for u in stage.upstream):
                result.add(stage.name)
        return result

    def upstream_closure(self, names: set[str]) -> set[str]:
        """``names`` and every stage they depend on, transitively."""
        result = set(names)
        for stage in reversed(list(self.stages.values())):
            if stage.name in result:
                result.update(stage.upstream)
        return result


def param_value(params: Mapping[str, Any], key: str) -> Any:
    """The value at dotted ``key`` in ``params``; raises ``KeyError(key)`` when absent."""
    node: Any = params
    for part in key.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(key)
    return node
