"""The runner autoscaler's webhook intake under a burst of new connections.

The intake's HTTP server (with its SQLite state for delivery ids, and a thread that empties
the event queue in place of the worker) listens on loopback. A client process (so that the
server has the interpreter to itself) starts ``--burst`` threads that wait on one barrier,
then each opens a NEW connection at the same instant and sends one request: even ones a
signed ``workflow_job`` delivery (its own job and delivery id), odd ones ``GET /healthz``.
Each records how its connection ended (answered, reset, refused, timed out) and the seconds
from the barrier to the whole answer.

Goal: 0 resets or refusals, every request answered, and no second-long waits (a SYN dropped
by a full accept queue is retransmitted after 1 s, which shows as a max above 1 s).
Run: .venv/bin/python benchmarks/bench_intake_burst.py [--burst 200] [--runs 5]
Loopback only; every loop is bounded (one request per thread, a 15 s socket timeout).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import multiprocessing as mp
import queue
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import percentile

SECRET = b"bench-burst-0123456789abcdef0123"
TIMEOUT = 15.0


def _request(i: int) -> bytes:
    if i % 2:
        return b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    body = json.dumps({
        "action": "queued", "repository": {"full_name": "octo/demo"},
        "workflow_job": {"id": 10_000_000 + i, "run_id": 42, "run_attempt": 1,
                         "name": "train", "status": "queued",
                         "labels": ["self-hosted", "gpu"]}}).encode()
    sig = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    head = (f"POST /webhook HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"X-GitHub-Event: workflow_job\r\nX-GitHub-Delivery: burst-{time.time_ns()}-{i}\r\n"
            f"X-Hub-Signature-256: {sig}\r\n\r\n")
    return head.encode() + body


def _one(port: int, data: bytes, barrier: threading.Barrier,
         out: list[tuple[str, float]], i: int) -> None:
    barrier.wait()
    start = time.perf_counter()
    outcome = "no answer"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
            s.sendall(data)
            answer = b""
            while len(answer) < 65536:  # bounded: the answers are a few hundred bytes
                chunk = s.recv(65536)
                if not chunk:
                    break
                answer += chunk
        if answer.startswith(b"HTTP/1.1 "):
            outcome = answer[9:12].decode("ascii", "replace")
    except ConnectionResetError:
        outcome = "reset"
    except ConnectionRefusedError:
        outcome = "refused"
    except TimeoutError:
        outcome = "timeout"
    except OSError as err:
        outcome = f"error {err.errno}"
    out[i] = (outcome, time.perf_counter() - start)


def burst(port: int, n: int, conn: Any) -> None:
    """In the client process: ``n`` threads, one new connection each, all at once."""
    data = [_request(i) for i in range(n)]
    barrier = threading.Barrier(n)
    out: list[tuple[str, float]] = [("not run", 0.0)] * n
    threads = [threading.Thread(target=_one, args=(port, data[i], barrier, out, i))
               for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=TIMEOUT * 2)
    conn.send(out)
    conn.close()


def run_once(n: int, backlog: int | None = None) -> list[tuple[str, float]]:
    from gha_mlops.runners import intake as intake_module
    from gha_mlops.runners.intake import Intake, IntakeServer
    from gha_mlops.runners.observe import Metrics
    from gha_mlops.runners.state import State

    if backlog is not None:  # the side-by-side anchor: the listen backlog before issue 11
        intake_module._HTTPServer.request_queue_size = backlog

    with tempfile.TemporaryDirectory(prefix="bench-burst-") as tmp:
        state = State(Path(tmp) / "state.db")
        intake = Intake(secret=SECRET, path="/webhook", max_body=1 << 20,
                        first_delivery=state.first_delivery, metrics=Metrics())
        server = IntakeServer(intake, "127.0.0.1", 0, health=lambda: (True, "ok")).start()
        done = threading.Event()

        def drain() -> None:  # stands for the worker: keeps the queue from filling
            while not done.is_set():
                with contextlib.suppress(queue.Empty):
                    intake.events.get(timeout=0.1)

        drainer = threading.Thread(target=drain, daemon=True)
        drainer.start()
        try:
            ctx = mp.get_context("spawn")
            here, there = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=burst, args=(server.port, n, there))
            proc.start()
            there.close()
            out: list[tuple[str, float]] = here.recv()
            proc.join(timeout=60)
        finally:
            server.stop()
            done.set()
            drainer.join()
            state.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--burst", type=int, default=200, help="new connections at once")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backlog", type=int, default=None,
                        help="listen backlog instead of the product's (5 = Python's default, "
                        "what the intake used before; the anchor of the comparison)")
    args = parser.parse_args()
    try:
        somaxconn = Path("/proc/sys/net/core/somaxconn").read_text().strip()
    except OSError:
        somaxconn = "?"
    print(f"intake burst: {args.burst} new connections at once on 127.0.0.1, {args.runs} runs "
          f"(Python {sys.version.split()[0]}, somaxconn {somaxconn}, backlog "
          f"{args.backlog if args.backlog is not None else 'as shipped'})")
    rows = []
    for r in range(args.runs):
        out = run_once(args.burst, args.backlog)
        times = [t for _, t in out]
        outcomes: dict[str, int] = {}
        for o, _ in out:
            outcomes[o] = outcomes.get(o, 0) + 1
        answered = sum(v for k, v in outcomes.items() if k in ("200", "202"))
        bad = sum(outcomes.get(k, 0) for k in ("reset", "refused"))
        slow = sum(1 for t in times if t >= 1.0)
        row = {"answered": answered, "resets": bad, "slow_1s": slow,
               "p50_ms": percentile(times, 50) * 1e3, "p99_ms": percentile(times, 99) * 1e3,
               "max_ms": max(times) * 1e3}
        rows.append(row)
        print(f"run {r + 1}: answered {answered}/{args.burst}, resets/refusals {bad}, "
              f">=1s {slow}, p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, "
              f"max {row['max_ms']:.1f} ms   {dict(sorted(outcomes.items()))}")
    print("median over runs: " + ", ".join(
        f"{k} {statistics.median(r[k] for r in rows):.1f}" for k in rows[0]))


if __name__ == "__main__":
    main()
