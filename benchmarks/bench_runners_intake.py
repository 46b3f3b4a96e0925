"""The runner autoscaler's webhook intake under load: latency to a launch, and throughput.

The real :class:`~gha_mlops.runners.service.Service` (intake server, event worker, scaler
loop, SQLite state, JSON logs at info level to a file) listens on loopback with
:class:`FakeRunnersGitHub` for GitHub and a :class:`FakeBackend` whose ``on_launch`` records
``time.monotonic()`` per runner. A load generator in a separate process sends signed
``workflow_job`` ``queued`` deliveries (GitHub's own example payload from
@octokit/webhooks-examples, each with a new job id and delivery id) over keep-alive HTTP/1.1
connections and records the monotonic time each request was sent (CLOCK_MONOTONIC is one
clock for the whole machine, so the two processes' times compare).

(a) latency: at a moderate rate (``--rate`` events/s), from a request being sent to the
    backend's launch call for the runner its job caused, p50 and p99. The scaler launches for
    *demand* (so many queued jobs, so many runners), not for a named job, so nothing links a
    runner to a job; with one launch per job and none failing, the k-th launch (in time) is
    paired with the k-th request sent (in time).
(b) throughput: every connection sends as fast as it gets answers, for ``--seconds``; the
    events/s answered 202 (accepted) and the p99 of the HTTP answer time.

Goal: p99 <= 20 ms (send -> launch at the moderate rate), >= 1000 events/s accepted.
Run: .venv/bin/python benchmarks/bench_runners_intake.py [--runs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import logging
import math
import multiprocessing as mp
import queue
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import percentile

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / ".ci/npm/node_modules/@octokit/webhooks-examples/api.github.com/index.json"
SECRET_ENV = "BENCH_WEBHOOK_SECRET"
SECRET = "bench-" + "0123456789abcdef" * 2
LABELS = ["self-hosted", "gpu"]
CONFIG = """
id: bench
github: {{repo: octo/demo, token_env: BENCH_TOKEN}}
webhook: {{secret_env: {secret_env}, listen: "127.0.0.1:0"}}
state: {state}
reconcile_interval: 30s
pools:
  - {{name: gpu, labels: [gpu], image: runner:bench, max: {max_runners}}}
"""
JOB_ID_SENTINEL = 987654321987  # replaced in the serialized template
RUN_ID_SENTINEL = 876543219876


# -- the load generator (its own process) ------------------------------------------------------


def payload_template(labels: list[str]) -> bytes:
    """GitHub's example ``workflow_job`` ``queued`` delivery, made ours: our repository,
    ``runs-on: labels``, and sentinel ids to replace per job."""
    if not EXAMPLES.exists():
        raise SystemExit(f"{EXAMPLES} is missing: run `make npm-deps` (npm ci --prefix .ci/npm)")
    for entry in json.loads(EXAMPLES.read_text()):
        if entry["name"] == "workflow_job":
            example = next(e for e in entry["examples"] if e["action"] == "queued")
            break
    else:
        raise SystemExit("no workflow_job example")
    example["repository"]["full_name"] = "octo/demo"
    job = example["workflow_job"]
    job.update(id=JOB_ID_SENTINEL, run_id=RUN_ID_SENTINEL, labels=labels, status="queued")
    return json.dumps(example).encode()


class Request:
    """Builds each signed delivery for a job id."""

    def __init__(self, host: str, port: int, secret: bytes, labels: list[str]) -> None:
        self.head = (f"POST /webhook HTTP/1.1\r\nHost: {host}:{port}\r\n"
                     "Content-Type: application/json\r\nUser-Agent: GitHub-Hookshot/bench\r\n"
                     "X-GitHub-Event: workflow_job\r\n")
        template = payload_template(labels)
        self.parts = template.split(str(JOB_ID_SENTINEL).encode())
        self.secret = secret

    def build(self, job_id: int) -> bytes:
        body = str(job_id).encode().join(self.parts).replace(
            str(RUN_ID_SENTINEL).encode(), str(job_id + 7).encode())
        sig = hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        head = (f"{self.head}X-GitHub-Delivery: {uuid.uuid4()}\r\n"
                f"X-Hub-Signature-256: sha256={sig}\r\nContent-Length: {len(body)}\r\n\r\n")
        return head.encode() + body


def read_answer(sock: socket.socket, buf: bytearray) -> int:
    """Read one HTTP/1.1 response (with a Content-Length) from ``sock``; its status."""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = bytes(buf[:end]).decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            total = end + 4 + length
            while len(buf) < total:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("the server closed the connection")
                buf += chunk
            status = int(head.split(" ", 2)[1])
            del buf[:total]
            return status
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        buf += chunk


class Clock:
    """When the measured phase starts: once every connection has warmed up."""

    def __init__(self, conns: int, seconds: float | None, first_id: int) -> None:
        self.start = self.stop_at = 0.0
        self.first_id = first_id
        self.barrier = threading.Barrier(conns, action=self._go)
        self.seconds = seconds

    def _go(self) -> None:
        self.start = time.monotonic() + 0.05
        self.stop_at = self.start + self.seconds if self.seconds else math.inf


def _connection(port: int, req: Request, warm: Request, ids: range, rate: float | None,
                warmup: int, clock: Clock, out: list[tuple[int, float, float, int]]) -> None:
    """One keep-alive connection: ``warmup`` unmeasured deliveries of jobs for GitHub-hosted
    runners (the whole path, no launch), then its job ids in turn (the k-th job of the run
    at the start + k/``rate``, or as fast as answers come without a rate), recording (job
    id, sent, answer seconds, status)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray()
    try:
        for i in range(warmup):
            sock.sendall(warm.build(ids[0] + 10**9 + i))
            read_answer(sock, buf)
        clock.barrier.wait()
        start, stop_at = clock.start, clock.stop_at
        for job_id in ids:
            data = req.build(job_id)
            if rate:
                wait = start + (job_id - clock.first_id) / rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            sent = time.monotonic()
            if sent >= stop_at:
                break
            sock.sendall(data)
            status = read_answer(sock, buf)
            out.append((job_id, sent, time.monotonic() - sent, status))
    finally:
        sock.close()


def load(port: int, secret: bytes, first_id: int, n: int, conns: int, rate: float | None,
         seconds: float | None, warmup: int, results: Any) -> None:
    """The load generator's process: ``n`` jobs (ids from ``first_id``) over ``conns``
    connections; sends its records back through ``results`` (a pipe end)."""
    req = Request("127.0.0.1", port, secret, LABELS)
    warm = Request("127.0.0.1", port, secret, ["ubuntu-latest"])
    outs: list[list[tuple[int, float, float, int]]] = [[] for _ in range(conns)]
    clock = Clock(conns, seconds, first_id)
    threads = [threading.Thread(target=_connection,
                                args=(port, req, warm, range(first_id + c, first_id + n, conns),
                                      rate, warmup, clock, outs[c]))
               for c in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.send([rec for out in outs for rec in out])
    results.close()


# -- the service (this process) ----------------------------------------------------------------


@dataclass
class Run:
    sent: list[tuple[int, float, float, int]] = field(default_factory=list)  # measured phase
    launches: list[float] = field(default_factory=list)  # monotonic times, sorted
    applied_at_end: int = 0  # jobs the event worker had applied when the load ended
    launched_at_end: int = 0  # launches by then
    window: float = 0.0  # seconds from the first send to the last answer


def serve_and_load(*, n: int, conns: int, rate: float | None, seconds: float | None,
                   max_runners: int = 100_000,
                   settle: float, warmup: int = 20, endpoint_only: bool = False) -> Run:
    """Start a Service, run the load generator against it, and collect what happened. With
    ``endpoint_only``, only the intake's HTTP server with its State (the delivery ids) runs,
    and a thread that just empties the event queue stands for the worker and the scaler."""
    from gha_mlops.github.port import GhJob
    from gha_mlops.runners.backends.base import LaunchSpec
    from gha_mlops.runners.config import load_config
    from gha_mlops.runners.intake import Intake, IntakeServer
    from gha_mlops.runners.observe import Metrics, setup_logging
    from gha_mlops.runners.service import Service
    from gha_mlops.runners.state import State
    from gha_mlops.testing.fake_runners import FakeBackend, FakeRunnersGitHub

    class BenchGitHub(FakeRunnersGitHub):
        """GitHub knows every job the generator sends; this fake learns of one when the
        scaler asks for it (a full pass reads the jobs it has not seen listed)."""

        def get_job(self, repo: str, job_id: int) -> GhJob:
            with self._lock:
                if job_id not in self.jobs:
                    self.jobs[job_id] = GhJob(id=job_id, repo=repo, run_id=job_id + 7,
                                              run_attempt=1, name="train", status="queued",
                                              labels=tuple(LABELS))
            return super().get_job(repo, job_id)

    launched: list[float] = []  # list.append is atomic: the launch threads append

    def on_launch(spec: LaunchSpec) -> None:
        launched.append(time.monotonic())

    with tempfile.TemporaryDirectory(prefix="bench-intake-") as tmp:
        cfg_path = Path(tmp) / "runners.yaml"
        cfg_path.write_text(CONFIG.format(secret_env=SECRET_ENV, state=Path(tmp) / "state.db",
                                          max_runners=max_runners))
        config = load_config(cfg_path, {SECRET_ENV: SECRET, "BENCH_TOKEN": "t0ken"})
        log_file = (Path(tmp) / "service.log").open("w")
        setup_logging("info", log_file)  # as `runners serve` does (JSON lines), to a file
        if endpoint_only:
            state = State(config.state_path)
            intake = Intake(secret=config.webhook_secret, path=config.webhook_path,
                            max_body=config.max_body, first_delivery=state.first_delivery,
                            metrics=Metrics())
            server = IntakeServer(intake, "127.0.0.1", 0, health=lambda: (True, "ok"))
            drained = threading.Event()

            def drain() -> None:
                while not drained.is_set():
                    with contextlib.suppress(queue.Empty):
                        intake.events.get(timeout=0.1)

            drainer = threading.Thread(target=drain, daemon=True)
            drainer.start()
            server.start()

            def stop() -> None:
                server.stop()
                drained.set()
                drainer.join()
                state.close()
        else:
            service = Service.build(config, github=BenchGitHub(), backends={
                "docker": FakeBackend(on_launch=on_launch)}, port=0)
            service.start()
            server, state, stop = service.server, service.state, service.stop
        try:
            time.sleep(0.3)  # the first (full) pass
            ctx = mp.get_context("spawn")
            here, there = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=load, args=(server.port, SECRET.encode(), 10_000,
                                                  n, conns, rate, seconds, warmup, there))
            proc.start()
            there.close()
            sent: list[tuple[int, float, float, int]] = here.recv()
            launched_at_end = len(launched)
            applied = sum(1 for j in state.jobs(("queued",)) if "gpu" in j.labels)
            proc.join()
            accepted = sum(1 for rec in sent if rec[3] == 202)
            deadline = time.monotonic() + settle
            while len(launched) < accepted and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop()
            logging.getLogger("gha_mlops.runners").handlers.clear()
            log_file.close()
    window = max(r[1] + r[2] for r in sent) - min(r[1] for r in sent) if sent else math.nan
    return Run(sent=sent, launches=sorted(launched), applied_at_end=applied,
               launched_at_end=launched_at_end, window=window)



def latency_run(args: argparse.Namespace) -> dict[str, Any]:
    r = serve_and_load(n=args.events, conns=args.conns, rate=args.rate, seconds=None,
                       settle=60.0)
    ok = sorted(rec[1] for rec in r.sent if rec[3] == 202)
    lat = [launch - sent for sent, launch in zip(ok, r.launches, strict=False)]
    answers = [rec[2] for rec in r.sent]
    span = ok[-1] - ok[0] if len(ok) > 1 else math.nan
    blocks = [lat[i:i + args.block] for i in range(0, len(lat), args.block)]
    return {"sent": len(r.sent), "accepted": len(ok), "launches": len(r.launches),
            "rate": (len(ok) - 1) / span if span else math.nan,
            "p50": percentile(lat, 50), "p99": percentile(lat, 99), "max": max(lat, default=math.nan),
            "answer_p50": percentile(answers, 50), "answer_p99": percentile(answers, 99),
            "blocks": [(percentile(b, 50), percentile(b, 99)) for b in blocks]}


def throughput_run(args: argparse.Namespace, conns: int,
                   endpoint_only: bool = False) -> dict[str, float]:
    seconds = args.endpoint_seconds if endpoint_only else args.seconds
    r = serve_and_load(n=10**9, conns=conns, rate=None, seconds=seconds, settle=0.0,
                       max_runners=args.throughput_max,
                       endpoint_only=endpoint_only)
    answers = [rec[2] for rec in r.sent]
    accepted = sum(1 for rec in r.sent if rec[3] == 202)
    return {"sent": len(r.sent), "accepted": accepted, "other": len(r.sent) - accepted,
            "eps": accepted / r.window, "answer_p50": percentile(answers, 50),
            "answer_p99": percentile(answers, 99), "answer_max": max(answers, default=math.nan),
            "applied": r.applied_at_end / r.window, "launched": r.launched_at_end / r.window}


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each (median reported)")
    parser.add_argument("--rate", type=float, default=200.0, help="events/s for (a)")
    parser.add_argument("--events", type=int, default=1000, help="events sent in (a)")
    parser.add_argument("--block", type=int, default=250,
                        help="(a) also reports the latency of each block of this many jobs")
    parser.add_argument("--conns", type=int, default=4, help="client connections for (a)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each (b) run")
    parser.add_argument("--endpoint-seconds", type=float, default=5.0,
                        help="length of each (c) run")
    parser.add_argument("--throughput-conns", default="1,4,16",
                        help="client connections for (b), comma-separated")
    parser.add_argument("--throughput-max", type=int, default=100,
                        help="the pool's max in (b): a flood of jobs fills it, then queues "
                        "(in (a) it is large enough for every job to get a launch)")
    parser.add_argument("--only", choices=["latency", "throughput", "endpoint"], default=None)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    print(f"gha-mlops runners intake on 127.0.0.1 (Python {sys.version.split()[0]}, "
          f"{mp.cpu_count()} CPUs); load generator in its own process; median of {args.runs}")
    ok = True
    if args.only in (None, "latency"):
        t = time.perf_counter()
        lat = [latency_run(args) for _ in range(args.runs)]
        p99 = median_of(lat, "p99")
        ok &= p99 <= 0.020
        print(f"\n(a) send -> backend launch: {args.events} queued events at {args.rate:.0f}/s "
              f"over {args.conns} keep-alive connections (nothing leaves the queue: job k is "
              f"sent with k-1 queued before it)")
        head = (f"{'run':<7}{'sent':>6}{'202':>6}{'launch':>7}{'rate/s':>8}{'p50 ms':>8}"
                f"{'p99 ms':>9}{'max ms':>9}{'ans p50 ms':>11}{'ans p99 ms':>11}")
        print(head)
        print("-" * len(head))
        keys = ("sent", "accepted", "launches", "rate", "p50", "p99", "max", "answer_p50",
                "answer_p99")
        for i, r in enumerate([*lat, {k: median_of(lat, k) for k in keys}]):
            name = f"#{i + 1}" if i < len(lat) else "median"
            print(f"{name:<7}{r['sent']:>6.0f}{r['accepted']:>6.0f}{r['launches']:>7.0f}"
                  f"{r['rate']:>8.0f}{r['p50'] * 1e3:>8.1f}{r['p99'] * 1e3:>9.1f}"
                  f"{r['max'] * 1e3:>9.1f}{r['answer_p50'] * 1e3:>11.2f}"
                  f"{r['answer_p99'] * 1e3:>11.2f}")
        print("by jobs already queued (median of the runs' p50 / p99, ms):")
        n_blocks = min(len(r["blocks"]) for r in lat)
        for b in range(n_blocks):
            p50s = [r["blocks"][b][0] for r in lat]
            p99s = [r["blocks"][b][1] for r in lat]
            print(f"  jobs {b * args.block + 1:>5}-{(b + 1) * args.block:<5} "
                  f"p50 {statistics.median(p50s) * 1e3:8.1f}   "
                  f"p99 {statistics.median(p99s) * 1e3:8.1f}")
        print(f"goal p99 <= 20 ms: {'met' if p99 <= 0.020 else 'NOT met'} ({p99 * 1e3:.1f} ms)"
              f"   [{time.perf_counter() - t:.0f} s]")
    if args.only in (None, "throughput"):
        t = time.perf_counter()
        print(f"\n(b) full speed for {args.seconds:.0f} s, pool max {args.throughput_max}: events/s answered 202, answer time; "
              "and what the event worker applied and the scaler launched meanwhile")
        head = (f"{'conns':<7}{'sent':>8}{'202':>8}{'503':>7}{'202/s':>8}{'ans p50 ms':>11}"
                f"{'ans p99 ms':>11}{'ans max ms':>11}{'applied/s':>10}{'launched/s':>11}")
        print(head)
        print("-" * len(head))
        met = []
        for c in [int(x) for x in args.throughput_conns.split(",") if x.strip()]:
            tp = [throughput_run(args, c) for _ in range(args.runs)]
            m = {k: median_of(tp, k) for k in tp[0]}
            met.append(m["eps"] >= 1000 and m["answer_p99"] <= 0.020 and m["other"] == 0)
            print(f"{c:<7}{m['sent']:>8.0f}{m['accepted']:>8.0f}{m['other']:>7.0f}"
                  f"{m['eps']:>8.0f}{m['answer_p50'] * 1e3:>11.2f}"
                  f"{m['answer_p99'] * 1e3:>11.2f}{m['answer_max'] * 1e3:>11.1f}"
                  f"{m['applied']:>10.0f}{m['launched']:>11.0f}")
        ok &= any(met)
        print(f"goal >= 1000 events/s accepted, none refused, answer p99 <= 20 ms: "
              f"{'met' if any(met) else 'NOT met'}   [{time.perf_counter() - t:.0f} s]")
    if args.only in (None, "endpoint"):
        t = time.perf_counter()
        print(f"\n(c) the endpoint alone (intake HTTP server + its State for delivery ids; the "
              f"queue emptied, no worker, no scaler), full speed for {args.endpoint_seconds:.0f} s")
        head = (f"{'conns':<7}{'sent':>8}{'202':>8}{'503':>7}{'202/s':>8}{'ans p50 ms':>11}"
                f"{'ans p99 ms':>11}{'ans max ms':>11}")
        print(head)
        print("-" * len(head))
        for c in [int(x) for x in args.throughput_conns.split(",") if x.strip()]:
            tp = [throughput_run(args, c, endpoint_only=True) for _ in range(args.runs)]
            m = {k: median_of(tp, k) for k in tp[0]}
            print(f"{c:<7}{m['sent']:>8.0f}{m['accepted']:>8.0f}{m['other']:>7.0f}"
                  f"{m['eps']:>8.0f}{m['answer_p50'] * 1e3:>11.2f}"
                  f"{m['answer_p99'] * 1e3:>11.2f}{m['answer_max'] * 1e3:>11.1f}")
        print(f"   [{time.perf_counter() - t:.0f} s]")
    print(f"\nwall time {time.perf_counter() - started:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
