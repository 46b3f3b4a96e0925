"""What the autoscaler tells operators: Prometheus metrics on ``/metrics`` and structured logs
(one JSON object per line, each carrying the job id and runner name it concerns)."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gha_mlops.runners.config import Pool
    from gha_mlops.runners.policy import RunnerView

# What the scrape-time gauges read: the pools, the queued jobs per pool and the unservable
# ones (from the last decision), and the runners not gone.
Snapshot = tuple[Sequence["Pool"], Mapping[str, int], int, Sequence["RunnerView"]]

LOG = logging.getLogger("gha_mlops.runners")
_FIELDS = ("job_id", "runner", "pool", "machine", "repo", "delivery", "reason", "hint")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        for key in _FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"))


def setup_logging(level: str = "info", stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    LOG.handlers[:] = [handler]
    LOG.setLevel(level.upper())
    LOG.propagate = False


def log(level: int, msg: str, **fields: object) -> None:
    LOG.log(level, msg, extra={k: v for k, v in fields.items() if v is not None})


_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_WAIT = (1, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)


class Metrics:
    """The autoscaler's Prometheus metrics, in their own registry."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.launch_seconds = Histogram(
            "gha_mlops_runners_launch_seconds",
            "From reserving a runner to its machine running.", ["pool"], buckets=_LATENCY,
            registry=r)
        self.queue_to_running = Histogram(
            "gha_mlops_runners_queued_to_running_seconds",
            "From a job being queued to a runner of ours starting it.", ["pool"],
            buckets=_WAIT, registry=r)
        self.errors = Counter("gha_mlops_runners_errors", "Errors, by kind.", ["kind"],
                              registry=r)
        self.webhooks = Counter("gha_mlops_runners_webhooks", "Webhook deliveries by outcome.",
                                ["outcome"], registry=r)
        self.actions = Counter("gha_mlops_runners_actions",
                               "What the scaler did (launch, drain, remove, rerun ...).",
                               ["action"], registry=r)
        self.interruptions = Counter(
            "gha_mlops_runners_interruptions",
            "Machines whose host gave notice it takes them away (a spot interruption "
            "warning), or took them with no notice seen; once per machine, by pool.",
            ["pool"], registry=r)
        self.rate_remaining = Gauge("gha_mlops_runners_github_rate_limit_remaining",
                                    "GitHub API requests left in the current window.",
                                    registry=r)
        self.rate_limit = Gauge("gha_mlops_runners_github_rate_limit",
                                "GitHub API requests allowed per window.", registry=r)
        self.last_reconcile = Gauge("gha_mlops_runners_last_reconcile_timestamp_seconds",
                                    "When the last full reconcile pass ended.", registry=r)

    def watch(self, snapshot: Callable[[], Snapshot]) -> None:
        """Report the pools' queued jobs and runners by state from ``snapshot`` when
        scraped (not on every pass: passes stay cheap however many runners there are)."""
        self.registry.register(_Gauges(snapshot))

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class _Gauges:
    """A Prometheus collector computing the state gauges at scrape time."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.snapshot = snapshot

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from gha_mlops.runners.policy import ALIVE

        pools, queued, unservable, runners = self.snapshot()
        q = GaugeMetricFamily("gha_mlops_runners_queued_jobs",
                              "Jobs waiting for a runner, by the pool that serves them.",
                              labels=["pool"])
        for pool in pools:
            q.add_metric([pool.name], queued.get(pool.name, 0))
        yield q
        yield GaugeMetricFamily("gha_mlops_runners_unservable_jobs",
                                "Queued jobs whose runs-on labels no pool serves.",
                                value=unservable)
        counts: dict[tuple[str, str], int] = {}
        for r in runners:
            counts[(r.pool, r.state)] = counts.get((r.pool, r.state), 0) + 1
        g = GaugeMetricFamily("gha_mlops_runners", "Runners by pool and state.",
                              labels=["pool", "state"])
        for pool in pools:
            for state in ALIVE:
                g.add_metric([pool.name, state], counts.get((pool.name, state), 0))
        yield g
