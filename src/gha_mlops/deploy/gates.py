"""Gates on a new version's own metrics: parse the OIP server's ``/metrics``, take the
difference of two samples over a bake window, and judge it against the environment's gates.

Pure: no I/O, no clock. The numbers are the server's own counters (docs/deploy-gates.md):

- ``requests``: the inference answers, ``oip_requests_total{endpoint="infer"}`` summed over
  every status code; ``server_errors`` those with a code >= 500 (4xx are the client's fault);
- the latency histogram ``oip_inference_duration_seconds_bucket{le=...}`` (cumulative
  counts of the successful inferences), from which ``p99`` is estimated the way Prometheus'
  ``histogram_quantile`` does (linear within the bucket the rank falls in).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gha_mlops.config.model import DeployGates
from gha_mlops.deploy.errors import DeployError

MIN_EVIDENCE = 20  # before the end of a bake, a gate fails only with >= this many requests
MAX_METRICS_BYTES = 1024 * 1024
MAX_METRICS_LINES = 10_000

_REQUESTS = "oip_requests_total"
_BUCKET = "oip_inference_duration_seconds_bucket"
# name{labels} value [timestamp]; labels parsed separately, so a '}' inside a quoted label
# value cannot shift the value.
_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?[ \t]+(\S+)(?:[ \t]+-?\d+)?")
_LABEL = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\\n]|\\.)*)"[ \t]*'
                    r"(?:,|$)")


@dataclass(frozen=True)
class MetricsSample:
    """One scrape: inference ``requests`` answered, those that were ``server_errors`` (5xx),
    and the latency histogram's ``buckets`` as ``(le, cumulative count)`` sorted by ``le``
    (seconds; the last is ``math.inf`` when the server exposed it)."""

    requests: float
    server_errors: float
    buckets: tuple[tuple[float, float], ...] = ()


EMPTY = MetricsSample(0.0, 0.0, ())


def _labels(text: str) -> dict[str, str] | None:
    """The labels of ``{...}`` (without the braces); None when malformed."""
    found: dict[str, str] = {}
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _LABEL.match(text, pos)
        if match is None or match.end() == pos:
            return None
        found[match.group(1)] = match.group(2).replace('\\"', '"').replace("\\\\", "\\")
        pos = match.end()
    return found


def _value(text: str) -> float | None:
    """A counter's value: finite or +Inf and not negative; None otherwise."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value >= 0 and not math.isnan(value) and value != math.inf else None


def _bound(text: str) -> float | None:
    if text in ("+Inf", "Inf", "inf", "+inf"):
        return math.inf
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_metrics(text: str, *, where: str) -> MetricsSample:
    """The inference counters and latency histogram of an OIP server's ``/metrics`` text.

    Hostile input is bounded: over :data:`MAX_METRICS_BYTES` characters is a DeployError
    naming ``where``; only the first :data:`MAX_METRICS_LINES` lines are read; a malformed
    line, a negative or NaN value, or an unknown code is ignored; no inference sample at all
    gives zeros (a server that has answered nothing yet). A series given twice counts once
    (the last one)."""
    if len(text) > MAX_METRICS_BYTES:
        raise DeployError(
            f"{where}: /metrics is over {MAX_METRICS_BYTES} bytes ({len(text)}): not the "
            "gha-mlops OIP server's metrics",
            hint="check that the backend's image is one `gha-mlops package` built")
    codes: dict[int, float] = {}
    buckets: dict[float, float] = {}
    for number, line in enumerate(text.splitlines()):
        if number >= MAX_METRICS_LINES:
            break
        if not line.startswith((_REQUESTS, _BUCKET)):
            continue  # comments (# HELP, # TYPE) and the other series
        match = _SAMPLE.fullmatch(line.strip())
        if match is None:
            continue
        name, raw_labels, raw_value = match.groups()
        labels = _labels(raw_labels or "")
        value = _value(raw_value)
        if labels is None or value is None:
            continue
        if name == _REQUESTS and labels.get("endpoint") == "infer":
            code = labels.get("code", "")
            if code.isdigit() and len(code) == 3:
                codes[int(code)] = value
        elif name == _BUCKET:
            le = _bound(labels.get("le", ""))
            if le is not None:
                buckets[le] = value
    return MetricsSample(
        requests=sum(codes.values()),
        server_errors=sum(v for code, v in codes.items() if code >= 500),
        buckets=tuple(sorted(buckets.items())))


def _count_at(buckets: tuple[tuple[float, float], ...], le: float) -> float:
    """The cumulative count at ``le``: that of the largest bound <= ``le`` (0 if none)."""
    count = 0.0
    for bound, value in buckets:
        if bound > le:
            break
        count = value
    return count


def combine(samples: Iterable[MetricsSample]) -> MetricsSample:
    """The sum of samples (one per host): counters add, histograms add bucket by bucket (a
    host without some bound contributes its count at the next lower bound)."""
    items = list(samples)
    bounds = sorted({le for s in items for le, _ in s.buckets})
    return MetricsSample(
        requests=sum(s.requests for s in items),
        server_errors=sum(s.server_errors for s in items),
        buckets=tuple((le, sum(_count_at(s.buckets, le) for s in items)) for le in bounds))


@dataclass(frozen=True)
class Window:
    """What happened between two samples: inference ``requests``, ``server_errors``, the
    ``error_rate`` (None without requests) and the estimated ``p99_ms`` (None without a
    successful, timed inference)."""

    requests: float
    server_errors: float
    error_rate: float | None
    p99_ms: float | None


def _reset(before: MetricsSample, after: MetricsSample) -> bool:
    if after.requests < before.requests or after.server_errors < before.server_errors:
        return True
    return any(_count_at(after.buckets, le) < value for le, value in before.buckets)


def histogram_quantile(q: float, buckets: tuple[tuple[float, float], ...]) -> float | None:
    """Prometheus' ``histogram_quantile``: None without a ``+Inf`` bucket, with fewer than
    two buckets or no observations; a rank in the ``+Inf`` bucket gives the highest finite
    bound; else linear interpolation within the bucket (from 0 for the first one).
    Non-monotonic counts (a hostile or torn scrape) are raised to be monotonic, as
    Prometheus does."""
    if len(buckets) < 2 or buckets[-1][0] != math.inf:
        return None
    fixed: list[tuple[float, float]] = []
    highest = 0.0
    for le, count in buckets:
        highest = max(highest, count)
        fixed.append((le, highest))
    total = fixed[-1][1]
    if total <= 0:
        return None
    rank = q * total
    index = next(i for i, (_, count) in enumerate(fixed) if count >= rank)
    if index == len(fixed) - 1:
        return fixed[-2][0]
    if index == 0 and fixed[0][0] <= 0:
        return fixed[0][0]
    start, below = (0.0, 0.0) if index == 0 else fixed[index - 1]
    end, count = fixed[index]
    if count <= below:
        return end
    return start + (end - start) * (rank - below) / (count - below)


def _delta(before: MetricsSample, after: MetricsSample) -> MetricsSample:
    """What was counted from ``before`` to ``after`` (``after`` alone after a reset)."""
    if _reset(before, after):
        return after
    return MetricsSample(
        requests=after.requests - before.requests,
        server_errors=after.server_errors - before.server_errors,
        buckets=tuple((le, count - _count_at(before.buckets, le))
                      for le, count in after.buckets))


def _window(delta: MetricsSample) -> Window:
    p99 = histogram_quantile(0.99, delta.buckets)
    return Window(requests=delta.requests, server_errors=delta.server_errors,
                  error_rate=delta.server_errors / delta.requests if delta.requests > 0
                  else None,
                  p99_ms=p99 * 1000 if p99 is not None else None)


def window(before: MetricsSample, after: MetricsSample) -> Window:
    """The window from ``before`` to ``after``. A counter that went down means the server
    restarted (its counters start again from zero): the window is then ``after`` alone."""
    return _window(_delta(before, after))


def host_window(before: Sequence[MetricsSample], after: Sequence[MetricsSample]) -> Window:
    """The window of several hosts, ``before[i]`` and ``after[i]`` being host ``i``'s: each
    host's difference (with its own reset check) is taken first, then they are added up.
    Better than ``window(combine(before), combine(after))``, where one host's restart can
    hide under the others' growth and shrink the window."""
    if len(before) != len(after):
        raise ValueError(f"host_window: {len(before)} samples before, {len(after)} after")
    return _window(combine(_delta(b, a) for b, a in zip(before, after, strict=True)))


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict on a window: its ``name`` (the key in ``gates:``), the measured
    ``value`` and the ``limit`` (None: not measured / no limit), whether it ``passed``, and a
    human line with the numbers."""

    name: str
    value: float | None
    limit: float | None
    passed: bool
    detail: str


def _pct(value: float) -> str:
    percent = value * 100
    return f"{percent:.1f}%" if percent == 0 or percent >= 0.1 else f"{percent:.2g}%"


def _n(value: float) -> str:
    return f"{value:.0f}"


def _not_judged(name: str, limit: float | None, w: Window, gates: DeployGates) -> GateResult:
    if w.requests <= 0:
        detail = "no traffic: no inference request reached the new version"
    else:
        detail = (f"not judged: {_n(w.requests)} inference requests, fewer than "
                  f"min_requests ({gates.min_requests})")
    return GateResult(name, None, limit, True, detail)


def _error_gate(w: Window, gates: DeployGates, judged: bool) -> GateResult:
    limit = gates.max_error_rate
    rate = w.error_rate
    if rate is None:
        return GateResult("max_error_rate", None, limit, True,
                          "no traffic: no inference request reached the new version")
    counts = f"({_n(w.server_errors)} of {_n(w.requests)})"
    if rate > limit and judged:
        return GateResult("max_error_rate", rate, limit, False,
                          f"error rate {_pct(rate)} {counts} > {_pct(limit)}")
    op = ">" if rate > limit else "<="
    wait = "" if judged else f", waiting for {MIN_EVIDENCE} requests to judge"
    return GateResult("max_error_rate", rate, limit, True,
                      f"error rate {_pct(rate)} {counts} {op} {_pct(limit)}{wait}")


def _p99_gate(w: Window, limit: float, judged: bool) -> GateResult:
    p99 = w.p99_ms
    if p99 is None:
        return GateResult("max_p99_ms", None, limit, True,
                          f"p99 not measured: no successful inference among "
                          f"{_n(w.requests)} requests")
    over = p99 > limit
    line = f"p99 {p99:.1f} ms over {_n(w.requests)} requests {'>' if over else '<='} " \
           f"{limit:g} ms"
    if over and not judged:
        line += f", waiting for {MIN_EVIDENCE} requests to judge"
    return GateResult("max_p99_ms", p99, limit, not (over and judged), line)


def judge(w: Window, gates: DeployGates, *, final: bool) -> list[GateResult]:
    """The verdict of every gate on ``w``: ``max_error_rate``, ``max_p99_ms`` (when set) and,
    when ``final`` (the end of a bake), ``min_requests`` (when > 0).

    Before the end of a bake a gate fails only with at least :data:`MIN_EVIDENCE` requests
    (two errors in the first three requests are not a verdict yet). At the end, with fewer
    than ``max(1, min_requests)`` requests, the error and latency gates pass with a "no
    traffic" / "not judged" detail, and ``min_requests`` (when > 0) fails."""
    results: list[GateResult] = []
    enough = w.requests >= max(1, gates.min_requests)
    if final and not enough:
        results.append(_not_judged("max_error_rate", gates.max_error_rate, w, gates))
        if gates.max_p99_ms is not None:
            results.append(_not_judged("max_p99_ms", gates.max_p99_ms, w, gates))
    else:
        judged = final or w.requests >= MIN_EVIDENCE
        results.append(_error_gate(w, gates, judged))
        if gates.max_p99_ms is not None:
            results.append(_p99_gate(w, gates.max_p99_ms, judged))
    if final and gates.min_requests > 0:
        passed = w.requests >= gates.min_requests
        results.append(GateResult(
            "min_requests", w.requests, float(gates.min_requests), passed,
            f"{_n(w.requests)} inference requests {'>=' if passed else '<'} min_requests "
            f"{gates.min_requests}" + ("" if passed else ": too little traffic to judge the "
                                       "new version")))
    return results
