"""10,000 files of 10 KB through an S3 remote: gha-mlops packs vs DVC, on one moto server.

Both tools push the same files to the same moto server (``python -m moto.server`` on loopback,
started here) and pull them into a fresh cache and workspace. Each operation runs in its own
process, so interpreter start-up and imports count for both. Medians over ``--runs`` runs.

- gha-mlops, the commands a user types: ``data add data``, ``data status``, ``data push``; then,
  in a second workspace holding only mlops.yaml and the pointer, ``data fetch`` (into the
  cache) and, with the cache removed again, ``data pull`` (fetch plus checkout, what
  ``dvc pull`` does).
- DVC with dvc-s3 (its own venv, benchmarks/.work/dvc-venv): ``dvc add``, ``dvc status``,
  ``dvc push``, and ``dvc pull`` after removing the cache and the data.

Also: hashing throughput of one 1 GB file, ``sha256_file`` against ``sha256sum``.

Run by hand: ``.venv/bin/python benchmarks/bench_data_transfer.py`` (about 5 minutes).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from _common import DVC, DVC_VENV, GHA_MLOPS, WORK

BENCH = WORK / "data-transfer"
FILES, SIZE = 10_000, 10_240
GOAL = 10.0  # push and pull at least 10x faster than DVC
AWS_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
           "DVC_NO_ANALYTICS": "1"}


# --------------------------------------------------------------------------------- helpers


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") and k != "PYTHONDONTWRITEBYTECODE"}
    env.update(AWS_ENV)
    return env


def _timed(argv: list[str], cwd: Path) -> float:
    # Write back what earlier steps (copies, deletions) left dirty, so that no step pays
    # for the one before it.
    os.sync()
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=_env(), capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n"
                         f"{proc.stderr}")
    return elapsed


@contextmanager
def moto_server() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(BENCH / "moto.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("moto server did not start; see " + str(log.name)) from None
                time.sleep(0.2)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def make_bucket(endpoint: str, name: str) -> None:
    import boto3  # type: ignore[import-untyped]

    client = boto3.client("s3", endpoint_url=endpoint, **{
        "aws_access_key_id": "bench", "aws_secret_access_key": "bench",
        "region_name": "us-east-1"})
    try:
        client.create_bucket(Bucket=name)
    finally:
        client.close()


def make_dataset(root: Path) -> None:
    """10,000 files of 10 KB of seeded random bytes, in 100 directories of 100."""
    marker = root / ".complete"
    if marker.exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(2024)
    for i in range(FILES):
        path = root / f"d{i // 100:02d}" / f"f{i:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(SIZE))
    marker.write_text("")


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# --------------------------------------------------------------------------------- gha-mlops
def bench_gha(endpoint: str, data: Path, times: dict[str, list[float]]) -> None:
    """One run of each gha-mlops command a user types, appended to ``times``."""
    gha = str(GHA_MLOPS)
    ws = _fresh(BENCH / "gha")
    shutil.copytree(data, ws / "data")
    bucket = f"gha-{uuid.uuid4().hex[:10]}"
    make_bucket(endpoint, bucket)
    config = (f"remotes:\n  s3:\n    url: s3://{bucket}/gha\n    endpoint_url: {endpoint}\n"
              "stages:\n  noop:\n    cmd: 'true'\n")
    (ws / "mlops.yaml").write_text(config)
    for name in ("add", "status", "push", "fetch", "pull"):
        times.setdefault(name, [])
    times["add"].append(_timed([gha, "data", "add", "data"], ws))
    times["status"].append(_timed([gha, "data", "status"], ws))
    times["push"].append(_timed([gha, "data", "push"], ws))
    # A second machine: the pointer and the config, an empty cache.
    other = _fresh(BENCH / "gha-other")
    (other / "mlops.yaml").write_text(config)
    shutil.copy(ws / "data.lock.yaml", other / "data.lock.yaml")
    times["fetch"].append(_timed([gha, "data", "fetch"], other))
    shutil.rmtree(other / ".gha-mlops")
    times["pull"].append(_timed([gha, "data", "pull"], other))
    assert len(list((other / "data").rglob("*.bin"))) == FILES
    print("  gha-mlops: " + "  ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()),
          flush=True)


# --------------------------------------------------------------------------------- DVC


def ensure_dvc_s3() -> None:
    if not DVC.exists():
        subprocess.run([sys.executable, "-m", "venv", str(DVC_VENV)], check=True)
    probe = subprocess.run([str(DVC_VENV / "bin/python"), "-c", "import dvc_s3"],
                           capture_output=True)
    if probe.returncode != 0:
        subprocess.run([str(DVC_VENV / "bin/pip"), "install", "-q", "dvc", "dvc-s3"],
                       check=True)


def bench_dvc(endpoint: str, data: Path, times: dict[str, list[float]]) -> None:
    """One run of each DVC operation, appended to ``times``."""
    dvc = str(DVC)
    ws = _fresh(BENCH / "dvc")
    shutil.copytree(data, ws / "data")
    bucket = f"dvc-{uuid.uuid4().hex[:10]}"
    make_bucket(endpoint, bucket)
    for argv in (["init", "--no-scm", "-q"],
                 ["remote", "add", "-d", "bench", f"s3://{bucket}/dvc"],
                 ["remote", "modify", "bench", "endpointurl", endpoint],
                 ["config", "core.analytics", "false"]):
        _timed([dvc, *argv], ws)
    for name in ("add", "status", "push", "pull"):
        times.setdefault(name, [])
    times["add"].append(_timed([dvc, "add", "-q", "data"], ws))
    times["status"].append(_timed([dvc, "status", "-q"], ws))
    times["push"].append(_timed([dvc, "push", "-q"], ws))
    shutil.rmtree(ws / ".dvc" / "cache")
    shutil.rmtree(ws / "data")
    times["pull"].append(_timed([dvc, "pull", "-q"], ws))
    assert len(list((ws / "data").rglob("*.bin"))) == FILES
    print("  dvc:       " + "  ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()),
          flush=True)


# --------------------------------------------------------------------------------- hashing


def bench_hashing(runs: int) -> tuple[float, float]:
    """(gha-mlops MB/s, sha256sum MB/s) on one 1 GB file, page cache warm."""
    from gha_mlops.store.hashing import sha256_file

    big = WORK / "hash-1GB.bin"
    if not big.exists() or big.stat().st_size != 1 << 30:
        rng = random.Random(7)
        with open(big, "wb") as fh:
            for _ in range(1024):
                fh.write(rng.randbytes(1 << 20))
    subprocess.run(["cat", str(big)], stdout=subprocess.DEVNULL, check=True)  # warm
    ours, theirs = [], []
    for _ in range(runs):
        start = time.perf_counter()
        a = sha256_file(big)
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        out = subprocess.run(["sha256sum", str(big)], capture_output=True, text=True,
                             check=True).stdout
        theirs.append(time.perf_counter() - start)
        assert out.split()[0] == a
    mb = (1 << 30) / 1e6
    return mb / statistics.median(ours), mb / statistics.median(theirs)


# --------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-dvc", action="store_true")
    parser.add_argument("--skip-hash", action="store_true")
    args = parser.parse_args()
    BENCH.mkdir(parents=True, exist_ok=True)
    data = BENCH / "dataset"
    make_dataset(data)
    print(f"{FILES} files of {SIZE} bytes, {args.runs} runs, {os.cpu_count()} CPUs", flush=True)
    gha: dict[str, list[float]] = {}
    dvc: dict[str, list[float]] = {}
    if not args.skip_dvc:
        ensure_dvc_s3()
    with moto_server() as endpoint:
        # Interleaved, so a machine that gets slower or faster affects both tools alike.
        for i in range(args.runs):
            print(f"run {i + 1}", flush=True)
            bench_gha(endpoint, data, gha)
            if not args.skip_dvc:
                bench_dvc(endpoint, data, dvc)
    print(f"\n{'operation':<10}{'gha-mlops':>12}{'dvc':>12}{'ratio':>10}")
    for name in ("add", "status", "push", "pull", "fetch"):
        ours = statistics.median(gha[name])
        line = f"{name:<10}{ours:>11.2f}s"
        if name in dvc:
            theirs = statistics.median(dvc[name])
            ratio = theirs / ours
            goal = GOAL if name in ("push", "pull") else 2.0
            line += f"{theirs:>11.2f}s{ratio:>9.1f}x   goal >= {goal:.0f}x: " + \
                ("met" if ratio >= goal else "NOT met")
        print(line)
    if not args.skip_hash:
        ours_mb, theirs_mb = bench_hashing(args.runs)
        share = ours_mb / theirs_mb
        print(f"\nsha256 of 1 GB: gha-mlops {ours_mb:.0f} MB/s, sha256sum {theirs_mb:.0f} MB/s "
              f"({share:.0%}; goal >= 80%: {'met' if share >= 0.8 else 'NOT met'})")


if __name__ == "__main__":
    main()
