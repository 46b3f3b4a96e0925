"""Gates on a new version's metrics: the OIP server's /metrics parsed (from the server's own
renderer, so a format change there breaks this test, not a rollout), Prometheus'
histogram_quantile, windows over counter resets, and the verdicts as a table."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from gha_mlops.config.model import DeployGates
from gha_mlops.deploy.errors import DeployError
from gha_mlops.deploy.gates import (
    MAX_METRICS_BYTES,
    MAX_METRICS_LINES,
    MIN_EVIDENCE,
    MetricsSample,
    Window,
    combine,
    histogram_quantile,
    host_window,
    judge,
    parse_metrics,
    window,
)
from gha_mlops.packaging import oip_server

INF = math.inf


def _record(metrics: oip_server.Metrics, ok: int = 0, client: int = 0, server: int = 0,
            other: int = 0, seconds: float = 0.003) -> str:
    """Count on the real server's counters ``ok`` successful inferences taking ``seconds``,
    ``client`` 400s, ``server`` 500s and 503s (half each) and ``other`` readiness probes;
    its /metrics text then."""
    infer = oip_server.ENDPOINTS.index("infer")
    for _ in range(ok):
        metrics.count(infer, 200)
        metrics.observe(seconds)
    for _ in range(client):
        metrics.count(infer, 400)
    for i in range(server):
        metrics.count(infer, 500 if i % 2 else 503)
    for _ in range(other):
        metrics.count(oip_server.ENDPOINTS.index("health_ready"), 503)
    return metrics.render("m", "1.0.0").decode()


def _rendered(ok: int = 0, client: int = 0, server: int = 0, other: int = 0,
              seconds: float = 0.003) -> str:
    """/metrics of a fresh server after :func:`_record`."""
    return _record(oip_server.Metrics(1), ok, client, server, other, seconds)


def test_the_servers_own_metrics_parse_into_infer_counts_and_the_histogram() -> None:
    sample = parse_metrics(_rendered(ok=30, client=4, server=6, other=9), where="b")
    assert (sample.requests, sample.server_errors) == (40, 6)  # 4xx are the client's fault
    assert sample.buckets[-1] == (INF, 30) and len(sample.buckets) == 14
    assert dict(sample.buckets)[0.0025] == 0 and dict(sample.buckets)[0.005] == 30
    fresh = parse_metrics(_rendered(), where="b")
    assert (fresh.requests, fresh.server_errors) == (0, 0)
    assert parse_metrics("", where="b") == MetricsSample(0, 0, ())


def test_hostile_metrics_text_is_bounded_and_malformed_lines_are_ignored() -> None:
    good = 'oip_requests_total{endpoint="infer",code="200"} 10\n'
    junk = "\n".join([
        'oip_requests_total{endpoint="infer",code="500"} -3',       # negative counter
        'oip_requests_total{endpoint="infer",code="502"} NaN',
        'oip_requests_total{endpoint="infer",code="5xx"} 4',        # not a code
        'oip_requests_total{endpoint="infer",code="503" 4',         # unclosed labels
        'oip_requests_total{endpoint="infer",code=503} 4',          # unquoted value
        'oip_requests_total{endpoint="infer\\",code=\\"503"} 4',    # escaped quotes
        'oip_requests_total{endpoint="health_ready",code="503"} 7',  # not inference
        'oip_inference_duration_seconds_bucket{le="abc"} 3',
        'oip_requests_total{endpoint="infer",code="200"} 10 1700000000000',  # a duplicate
        "\x00\xff garbage {{{ }}} " * 3,
    ])
    sample = parse_metrics(good + junk, where="b")
    assert (sample.requests, sample.server_errors, sample.buckets) == (10, 0, ())
    with pytest.raises(DeployError, match=r"^b: /metrics is over"):
        parse_metrics("#" * (MAX_METRICS_BYTES + 1), where="b")
    late = "# filler\n" * MAX_METRICS_LINES + good  # past the line bound: never read
    assert parse_metrics(late, where="b").requests == 0


@pytest.mark.parametrize(("buckets", "want"), [
    # rank 99 of 100 falls in (0.01, 0.1]: 0.01 + 0.09 * (99 - 50) / (100 - 50)
    (((0.001, 0), (0.01, 50), (0.1, 100), (INF, 100)), 0.0982),
    # in the first bucket: interpolated from 0
    (((0.01, 100), (INF, 100)), 0.0099),
    # in the +Inf bucket: the highest finite bound
    (((0.1, 10), (INF, 100)), 0.1),
    # non-monotonic counts (a torn scrape) are made monotonic first: 40 reads as 50
    (((0.01, 50), (0.025, 40), (0.1, 100), (INF, 100)), 0.025 + 0.075 * 49 / 50),
    (((0.01, 0), (INF, 0)), None),              # no observations
    (((0.01, 5), (0.1, 10)), None),             # no +Inf bucket
    (((INF, 10),), None),                       # fewer than two buckets
])
def test_p99_follows_prometheus_histogram_quantile(
        buckets: tuple[tuple[float, float], ...], want: float | None) -> None:
    got = histogram_quantile(0.99, buckets)
    assert got == want if want is None else got == pytest.approx(want)


def test_a_window_is_the_difference_and_a_counter_reset_means_after_alone() -> None:
    server = oip_server.Metrics(1)
    before = parse_metrics(_record(server, ok=100, server=2), where="b")
    after = parse_metrics(_record(server, ok=200, server=8, seconds=0.2), where="b")
    w = window(before, after)
    assert (w.requests, w.server_errors) == (208, 8)
    assert w.error_rate == pytest.approx(8 / 208)
    assert w.p99_ms == pytest.approx(100 + 150 * 198 / 200)  # rank 198 of 200 in (0.1, 0.25]
    restarted = parse_metrics(_rendered(ok=5, server=1), where="b")
    assert window(after, restarted) == window(MetricsSample(0, 0, ()), restarted)
    assert window(restarted, restarted) == Window(0, 0, None, None)


def test_samples_of_several_hosts_add_up() -> None:
    one = parse_metrics(_rendered(ok=10, server=2), where="h1")
    two = parse_metrics(_rendered(ok=30, seconds=0.02), where="h2")
    both = combine([one, two])
    assert (both.requests, both.server_errors) == (42, 2)
    assert dict(both.buckets)[0.005] == 10 and dict(both.buckets)[INF] == 40
    assert combine([]) == MetricsSample(0, 0, ())


def test_a_window_over_hosts_sees_one_hosts_restart() -> None:
    one, two = oip_server.Metrics(1), oip_server.Metrics(1)
    before = [parse_metrics(_record(one, ok=100), where="h1"),
              parse_metrics(_record(two, ok=100), where="h2")]
    # host 1 restarts and answers 30 (10 of them 5xx); host 2 answers 150 more
    after = [parse_metrics(_record(oip_server.Metrics(1), ok=20, server=10), where="h1"),
             parse_metrics(_record(two, ok=150), where="h2")]
    w = host_window(before, after)
    assert (w.requests, w.server_errors) == (180, 10)
    # the sums alone went from 200 to 280 and would hide the restart: 80 requests, 10 errors
    assert window(combine(before), combine(after)).requests == 80


GATES = DeployGates(max_error_rate=0.01, max_p99_ms=250, min_requests=0)


def _w(requests: float, errors: float = 0, p99: float | None = 5.0) -> Window:
    return Window(requests, errors, errors / requests if requests else None,
                  p99 if requests else None)


@pytest.mark.parametrize(("w", "gates", "final", "want", "detail"), [
    # clear failures once the evidence is in, mid-bake or at its end
    (_w(387, 12), GATES, False, {"max_error_rate": False, "max_p99_ms": True},
     "error rate 3.1% (12 of 387) > 1.0%"),
    (_w(50, 0, p99=312.4), GATES, True, {"max_error_rate": True, "max_p99_ms": False},
     "p99 312.4 ms over 50 requests > 250 ms"),
    # too little evidence mid-bake: no verdict yet, even at 2 errors of 3
    (_w(MIN_EVIDENCE - 1, 2, p99=900), GATES, False,
     {"max_error_rate": True, "max_p99_ms": True}, "waiting for 20 requests"),
    (_w(MIN_EVIDENCE, 2), GATES, False, {"max_error_rate": False, "max_p99_ms": True},
     "error rate 10.0% (2 of 20) > 1.0%"),
    # at the end of the bake the evidence there is counts
    (_w(3, 1), GATES, True, {"max_error_rate": False, "max_p99_ms": True}, "(1 of 3)"),
    # healthy
    (_w(500, 1), GATES, True, {"max_error_rate": True, "max_p99_ms": True},
     "error rate 0.2% (1 of 500) <= 1.0%"),
    # no traffic: passes with a note, unless min_requests asks for some
    (_w(0), GATES, True, {"max_error_rate": True, "max_p99_ms": True}, "no traffic"),
    (_w(0), DeployGates(min_requests=10), True,
     {"max_error_rate": True, "min_requests": False}, "0 inference requests < min_requests"),
    (_w(9, 9), DeployGates(min_requests=10), True,
     {"max_error_rate": True, "min_requests": False}, "not judged: 9 inference requests"),
    (_w(10, 0), DeployGates(min_requests=10), True,
     {"max_error_rate": True, "min_requests": True}, "10 inference requests >= min_requests"),
    # min_requests is judged only at the end; no p99 gate without max_p99_ms
    (_w(0), DeployGates(min_requests=10), False, {"max_error_rate": True}, "no traffic"),
    # every request failed: no latency to measure, the error gate decides
    (Window(40, 40, 1.0, None), GATES, False, {"max_error_rate": False, "max_p99_ms": True},
     "p99 not measured"),
])
def test_judge(w: Window, gates: DeployGates, final: bool, want: dict[str, bool],
               detail: str) -> None:
    results = judge(w, gates, final=final)
    assert {r.name: r.passed for r in results} == want
    assert any(detail in r.detail for r in results), [r.detail for r in results]


def test_the_verdict_lines_in_the_docs_are_the_ones_judge_writes() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "deploy-gates.md").read_text()
    block = doc.split("Each verdict is one line", 1)[1].split("```text\n", 1)[1]
    shown = block.split("```", 1)[0].splitlines()
    lines = [
        *(r.detail for r in judge(_w(387, 12), GATES, final=False)[:1]),
        *(r.detail for r in judge(_w(500, 1), GATES, final=True)[:1]),
        *(r.detail for r in judge(_w(387, 0, p99=312.4), GATES, final=True)[1:]),
        *(r.detail for r in judge(_w(12, 2), GATES, final=False)[:1]),
        *(r.detail for r in judge(_w(0), GATES, final=True)[:1]),
        *(r.detail for r in judge(_w(8), DeployGates(min_requests=200), final=True)[-1:]),
    ]
    assert shown == lines
