"""Serving the demo model: oip_server.py vs MLServer, same ONNX file, same request, same machine.

Load comes from a separate process, `hey` (Debian): 10 s runs at 1, 8 and 32 concurrent
keep-alive clients (throughput, p50, p99), and a rate-limited run at 100 requests/s (4 clients
x 25 req/s; hey's -q is per client) for p50/p99; oip_server also with binary tensors. All the
servers run at once and take turns, run after run and load after load, so each sees the same
background on a shared machine; each figure is the median of --runs runs.
Goals (issue 14): p99 <= 10 ms at 100 req/s, throughput >= MLServer's.

The model: DEMO_DIR/package/model.onnx when the demo has run there, else the demo's DigitNet
(untrained weights: the same compute) exported here with torch.export + torch.onnx. MLServer
(PyPI) goes into its own venv, benchmarks/.venv-mlserver, with the tiny runtime class of
benchmarks/mlserver_onnx_runtime.py (MLServer has no official ONNX runtime).

    .venv/bin/python benchmarks/bench_serving.py [--demo-dir gha-mlops-demo] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from _common import REPO, WORK

SERVER = REPO / "src/gha_mlops/packaging/oip_server.py"
MLSERVER_VENV = REPO / "benchmarks/.venv-mlserver"
RUNTIME = REPO / "benchmarks/mlserver_onnx_runtime.py"
DIR = WORK / "serving"
NAME, VERSION = "digits", "1.0.0"
CONCURRENCY = (1, 8, 32)


def demo_model(demo_dir: Path) -> Path:
    """The demo's packaged model, or DigitNet exported here (same architecture and cost)."""
    packaged = demo_dir / "package/model.onnx"
    if packaged.is_file():
        return packaged
    out = DIR / "digitnet.onnx"
    if not out.exists():
        DIR.mkdir(parents=True, exist_ok=True)
        code = (
            "import sys, torch\n"
            f"sys.path.insert(0, {str(REPO / 'src/gha_mlops/demo/project/src')!r})\n"
            "from model import DigitNet\n"
            "torch.manual_seed(0)\n"
            "m = DigitNet().eval()\n"
            "ep = torch.export.export(m, (torch.zeros(2, 1, 16, 16),),"
            " dynamic_shapes=({0: torch.export.Dim.AUTO},))\n"
            "torch.onnx.export(ep, ep.example_inputs[0], dynamo=True, input_names=['input'],"
            f" output_names=['logits']).save({str(out)!r})\n")
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return out


def model_dir(onnx_path: Path) -> Path:
    """oip_server's model directory: model.onnx and model.json with the graph's signature."""
    import onnxruntime as ort

    folder = DIR / "model"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, folder / "model.onnx")
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    kinds = {"tensor(float)": "FP32", "tensor(int64)": "INT64"}

    def spec(arg: object) -> dict[str, object]:
        return {"name": arg.name, "datatype": kinds[arg.type],  # type: ignore[attr-defined]
                "shape": [d if isinstance(d, int) else -1 for d in arg.shape]}  # type: ignore[attr-defined]

    (folder / "model.json").write_text(json.dumps({
        "name": NAME, "version": VERSION, "platform": "onnxruntime_onnx",
        "inputs": [spec(a) for a in session.get_inputs()],
        "outputs": [spec(a) for a in session.get_outputs()]}))
    return folder


def request_body(folder: Path) -> tuple[Path, np.ndarray]:
    """One 1x1x16x16 image in [0, 1] (4 decimals) as an OIP JSON request, and the array."""
    rng = np.random.default_rng(0)
    x = np.round(rng.random((1, 1, 16, 16)), 4).astype(np.float32)
    body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                        "data": [round(float(v), 4) for v in x.ravel()]}]}
    path = DIR / "body.json"
    path.write_text(json.dumps(body))
    return path, x


def binary_body(x: np.ndarray) -> tuple[Path, int]:
    """The same image with the binary tensor extension (oip_server only: MLServer has none):
    the body, and the length of its JSON part for the Inference-Header-Content-Length."""
    header = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape),
                                     "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "outputs": [{"name": "logits",
                                      "parameters": {"binary_data": True}}]}).encode()
    path = DIR / "body.bin"
    path.write_bytes(header + x.astype("<f4").tobytes())
    return path, len(header)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode} before it was ready")
        try:
            # the model's readiness: MLServer's server is "ready" even when the model failed
            with urllib.request.urlopen(f"{url}/v2/models/{NAME}/ready", timeout=2) as r:
                if r.status == 200:
                    return time.monotonic() - start
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{url} not ready within {timeout} s")


@contextmanager
def started(argv: Sequence[str], url: str, log: Path, cwd: Path | None = None
            ) -> Iterator[float]:
    """Run a server (output to ``log``: a pipe nobody reads would block it); yield seconds
    from start to ready; SIGTERM (then SIGKILL) its process group."""
    with log.open("wb") as sink:
        proc = subprocess.Popen(list(argv), cwd=cwd, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        yield wait_ready(url, proc)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def ensure_mlserver() -> Path:
    """MLServer in its own venv (never ours: it pins its own FastAPI, uvicorn, pydantic)."""
    mlserver = MLSERVER_VENV / "bin/mlserver"
    if not mlserver.exists():
        print("installing mlserver into", MLSERVER_VENV, file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(MLSERVER_VENV)], check=True)
        (MLSERVER_VENV / ".gitignore").write_text("*\n")
        # uvloop 0.22 removed what MLServer 1.7's parallel workers call at start
        # (asyncio.get_event_loop() outside a loop): every worker dies, no model loads.
        subprocess.run([str(MLSERVER_VENV / "bin/pip"), "install", "-q", "mlserver",
                        "onnxruntime", "numpy", "uvloop<0.22"], check=True)
    return mlserver


def mlserver_dir(onnx_path: Path, port: int, workers: int) -> Path:
    folder = DIR / f"mlserver-{workers}"
    model = folder / NAME
    model.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(RUNTIME, folder / RUNTIME.name)
    (folder / "settings.json").write_text(json.dumps({
        "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
        "parallel_workers": workers, "debug": False}))
    (model / "model-settings.json").write_text(json.dumps({
        "name": NAME, "implementation": "mlserver_onnx_runtime.OnnxRuntime",
        "parameters": {"uri": str(onnx_path.resolve()), "version": VERSION}}))
    return folder


_LINE = re.compile(r"^\s+(\d+)%+ in ([\d.]+) secs", re.M)


def hey(url: str, body: Path, concurrency: int, seconds: int, qps: int = 0,
        headers: Sequence[str] = ()) -> dict[str, float]:
    """One hey run: requests/s, p50 and p99 in ms, and how many answers were not 200."""
    argv = ["hey", "-z", f"{seconds}s", "-c", str(concurrency), "-m", "POST", "-T",
            "application/json", "-D", str(body)]
    for header in headers:
        argv += ["-H", header]
    if qps:
        argv += ["-q", str(qps)]
    out = subprocess.run([*argv, url], check=True, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = {int(p): float(s) * 1000 for p, s in _LINE.findall(out)}
    ok = sum(int(n) for n in re.findall(r"\[200\]\s+(\d+) responses", out))
    total = sum(int(n) for n in re.findall(r"\[\d+\]\s+(\d+) responses", out))
    return {"rps": rps, "p50": pct[50], "p99": pct[99], "failed": total - ok
            + len(re.findall(r"Error distribution", out))}


def check_answer(url: str, body: Path, want: np.ndarray) -> None:
    """Both servers must answer the benchmark's request with onnxruntime's own logits."""
    request = urllib.request.Request(url, data=body.read_bytes(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as r:
        out = json.loads(r.read())["outputs"][0]
    np.testing.assert_allclose(np.array(out["data"]).reshape(out["shape"]), want, atol=1e-6)


Load = tuple[str, int, int, Path, tuple[str, ...]]  # label, clients, req/s each, body, headers


def loads_for(body: Path, binary: tuple[Path, int] | None = None) -> list[Load]:
    """1, 8 and 32 clients as fast as they can, 100 req/s; binary tensors at 8 clients."""
    loads: list[Load] = [(f"c={c}", c, 0, body, ()) for c in CONCURRENCY]
    loads.append(("100 req/s", 4, 25, body, ()))
    if binary:
        loads.append(("c=8 binary", 8, 0, binary[0],
                      (f"Inference-Header-Content-Length: {binary[1]}",)))
    return loads


@dataclass
class Served:
    """One server under test: its name, infer URL, the loads it takes, and the samples."""

    name: str
    url: str
    loads: list[Load]
    samples: dict[str, list[dict[str, float]]] = field(default_factory=dict)


def measure(servers: list[Served], runs: int, seconds: int) -> dict[str, object]:
    """Interleaved: run after run, load after load, every server in turn, so that each sees
    the same background on this shared machine; then the median of each load's runs."""
    for server in servers:
        hey(server.url, server.loads[0][3], 8, 2)  # warm-up: connections, caches, allocator
    labels = list(dict.fromkeys(load[0] for server in servers for load in server.loads))
    for run in range(runs):
        for label in labels:
            for server in servers:
                for name, clients, qps, body, headers in server.loads:
                    if name == label:
                        sample = hey(server.url, body, clients, seconds, qps, headers)
                        sample["loadavg_1m"] = os.getloadavg()[0]
                        server.samples.setdefault(label, []).append(sample)
        print(f"run {run + 1}/{runs} done, load average {os.getloadavg()[0]:.1f}", flush=True)
    results: dict[str, object] = {}
    for server in servers:
        table = {}
        for label, samples in server.samples.items():
            med = {k: statistics.median(s[k] for s in samples)
                   for k in ("rps", "p50", "p99", "loadavg_1m")}
            med["failed"] = sum(s["failed"] for s in samples)
            table[label] = med
            print(f"  {server.name:<28} {label:<10} {med['rps']:9.0f} req/s  p50 "
                  f"{med['p50']:6.2f} ms  p99 {med['p99']:6.2f} ms  non-200: "
                  f"{med['failed']:.0f}  load average {med['loadavg_1m']:.1f}")
        results[server.name] = table
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-dir", type=Path, default=REPO / "gha-mlops-demo")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="oip_server --workers values to measure")
    parser.add_argument("--mlserver-workers", type=int, nargs="+", default=[1, 0],
                        help="MLServer parallel_workers values (1: its default; 0: inline)")
    parser.add_argument("--skip-mlserver", action="store_true")
    args = parser.parse_args()
    onnx_path = demo_model(args.demo_dir)
    folder = model_dir(onnx_path)
    body, x = request_body(folder)
    import onnxruntime as ort

    want = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(
        None, {"input": x})[0]
    print(f"model {onnx_path} ({onnx_path.stat().st_size} bytes), body {body.stat().st_size} "
          f"bytes; {os.cpu_count()} CPUs (shared with other work: figures are noisy)")
    servers: list[Served] = []
    with ExitStack() as stack:
        for workers in args.workers:
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            argv = [sys.executable, str(SERVER), "--model-dir", str(folder), "--port",
                    str(port), "--workers", str(workers)]
            ready_s = stack.enter_context(started(argv, base, DIR / f"oip-{workers}.log"))
            print(f"oip_server --workers {workers}: ready in {ready_s:.2f} s", flush=True)
            servers.append(Served(f"oip_server workers={workers}",
                                  f"{base}/v2/models/{NAME}/infer",
                                  loads_for(body, binary_body(x))))
        for workers in [] if args.skip_mlserver else args.mlserver_workers:
            mlserver = ensure_mlserver()
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            ready_s = stack.enter_context(started(
                [str(mlserver), "start", "."], base, DIR / f"mlserver-{workers}.log",
                cwd=mlserver_dir(onnx_path, port, workers)))
            print(f"MLServer parallel_workers={workers}: ready in {ready_s:.2f} s", flush=True)
            servers.append(Served(f"MLServer parallel_workers={workers}",
                                  f"{base}/v2/models/{NAME}/infer", loads_for(body)))
        for server in servers:
            check_answer(server.url, body, want)
        results = measure(servers, args.runs, args.seconds)
    out = REPO / "benchmarks/results/serving.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print("wrote", out.relative_to(REPO))


if __name__ == "__main__":
    main()
