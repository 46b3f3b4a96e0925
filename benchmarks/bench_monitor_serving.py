"""What the prediction log costs a request: oip_server.py on the demo model at a constant
200 requests/s (gha_mlops.testing.load.ConstantLoad, 8 keep-alive connections), p50 and p99
latency (from the time each request was due) without --log (the anchor) and with --log DIR at
--log-sample 1.0 and 0.1. The three servers run at once and take turns, run after run, so
each sees the same background on a shared machine; each figure is the median of --runs runs.
Goal (issue 16): p99 overhead <= 1 ms.

The model and request: bench_serving's (the demo's DigitNet, one 1x1x16x16 image as JSON).

    .venv/bin/python benchmarks/bench_monitor_serving.py [--runs 5] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from _common import REPO, WORK
from bench_serving import NAME, demo_model, free_port, model_dir, request_body, wait_ready

from gha_mlops.testing.load import ConstantLoad

SERVER = REPO / "src/gha_mlops/packaging/oip_server.py"
DIR = WORK / "monitor-serving"
RATE = 200.0
CONFIGS = {"no log": [], "log 1.0": ["--log-sample", "1"], "log 0.1": ["--log-sample", "0.1"]}


@contextmanager
def server(name: str, folder: Path, extra: list[str]) -> Iterator[str]:
    port = free_port()
    argv = [sys.executable, str(SERVER), "--model-dir", str(folder), "--port", str(port)]
    if extra:
        argv += ["--log", str(DIR / name.replace(" ", "-")), *extra]
    log = open(DIR / f"{name.replace(' ', '-')}.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()


def logged(url: str) -> dict[str, float]:
    """The log counters of /metrics (empty without --log)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {line.split('"')[1]: float(line.split()[-1]) for line in text.splitlines()
            if line.startswith("gha_mlops_predlog_rows_total")}


def in_process(folder: Path, body: bytes, requests: int = 3000) -> dict[str, dict[str, float]]:
    """The time App.handle takes for one inference (parse, run, answer, log), in this
    process: what the log adds to a request, without the network and load generator's
    noise. Median and p99 in microseconds, configurations interleaved, best of 3 medians."""
    sys.path.insert(0, str(SERVER.parent))
    import oip_server as srv

    model = srv.load_model(folder)
    times: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for _ in range(3):
        for name, extra in CONFIGS.items():
            sample = float(extra[1]) if extra else 0.0
            config = srv.LogConfig(str(DIR / "in-process"), sample, 1000, 5.0) if extra else None
            app = srv.App(srv.Metrics(1), log=config)
            app.set_model(model)
            path = f"/v2/models/{NAME}/infer"
            for _ in range(300):
                app.handle("POST", path, body)
            each = []
            for _ in range(requests):
                start = time.perf_counter()
                app.handle("POST", path, body)
                each.append(time.perf_counter() - start)
            app.close()
            times[name].append(statistics.median(each) * 1e6)
            times[name].append(sorted(each)[int(len(each) * 0.99)] * 1e6)
    return {name: {"p50_us": round(min(v[0::2]), 1), "p99_us": round(min(v[1::2]), 1)}
            for name, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo-dir", type=Path, default=Path("gha-mlops-demo"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    shutil.rmtree(DIR, ignore_errors=True)
    DIR.mkdir(parents=True)
    folder = model_dir(demo_model(args.demo_dir))
    body_path, _ = request_body(folder)
    body = body_path.read_bytes()
    runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name in CONFIGS}
    with ExitStack() as stack:
        urls = {name: stack.enter_context(server(name, folder, extra))
                for name, extra in CONFIGS.items()}
        for url in urls.values():  # warm up: connections, caches, the first batches
            with ConstantLoad(f"{url}/v2/models/{NAME}/infer", body, rate=RATE):
                time.sleep(2.0)
        for run in range(args.runs):
            for name, url in urls.items():
                with ConstantLoad(f"{url}/v2/models/{NAME}/infer", body, rate=RATE) as load:
                    time.sleep(args.seconds)
                report = load.report()
                runs[name].append((report.p50_ms, report.p99_ms, report.failed))
                print(f"run {run + 1} {name:8s} p50 {report.p50_ms:6.3f} ms  p99 "
                      f"{report.p99_ms:6.3f} ms  sent {report.sent} failed {report.failed} "
                      f"rate {report.achieved_rate:.1f}/s", flush=True)
        counters = {name: logged(url) for name, url in urls.items()}
    handle = in_process(folder, body)
    for name, figures in handle.items():
        print(f"in process {name:8s} App.handle p50 {figures['p50_us']:6.1f} us  p99 "
              f"{figures['p99_us']:6.1f} us")
    results: dict[str, object] = {"rate": RATE, "runs": args.runs, "seconds": args.seconds,
                                  "python": sys.version.split()[0], "in_process": handle}
    anchor = statistics.median(p99 for _, p99, _ in runs["no log"])
    for name, values in runs.items():
        p50 = statistics.median(v[0] for v in values)
        p99 = statistics.median(v[1] for v in values)
        results[name] = {"p50_ms": round(p50, 3), "p99_ms": round(p99, 3),
                         "p99_overhead_ms": round(p99 - anchor, 3),
                         "failed": sum(v[2] for v in values), "log": counters[name],
                         "p99_each_ms": [round(v[1], 3) for v in values]}
        print(f"{name:8s} median p50 {p50:6.3f} ms  p99 {p99:6.3f} ms  "
              f"p99 overhead {p99 - anchor:+.3f} ms  log {counters[name]}")
    out = REPO / "benchmarks/results/monitor_serving.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
