"""Rollouts and rollbacks under a constant load: failed requests, overhead and rollback time.

Goals (issue 15): under a constant 200 requests/s through the router, 0 failed requests during
a successful rollout and during a rollback; time from `gha-mlops deploy` to 100 % on the new
version with a 10 s bake per step (3 steps: 10 -> 50 -> 100), minus the bakes, <= 5 s; time to
roll back <= 3 s.

Side by side (the anchor): the blue/green a team writes by hand with the docker CLI and nginx,
the way most "deploy with Docker" guides do it: `docker run` the new container, poll its
readiness, rewrite the nginx upstream to it, `nginx -s reload`, `docker rm -f` the old one;
run under the same load on the same router image, with no retries, no drain and no gates.

What runs: a private dockerd (as the tests start it: root, a socket under /tmp), the tests'
router image (Debian's nginx) and serving base, a real OCI registry (docker-registry), the
tests' two-version workspace (tests/integration/deploy_helpers.py), and the CLI as a user
types it (`gha-mlops deploy ...`, a subprocess, so its start-up is counted).

    .venv/bin/python benchmarks/bench_deploy.py [--runs 3] [--bake 10] [--rate 200]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import REPO, WORK

sys.path.insert(0, str(REPO))

from tests.integration.deploy_fixtures import ROUTER_DEBOOTSTRAP_ARGS, ROUTER_IMAGE
from tests.integration.deploy_helpers import (
    IDENT,
    MODEL,
    environment_yaml,
    infer_body,
    make_workspace,
    remove_env,
)
from tests.integration.docker_fixtures import Dockerd, debootstrap_tarball
from tests.integration.package_helpers import free_port
from tests.integration.registry_fixtures import OciRegistry
from tests.integration.serving_fixtures import cache_dir, import_serving_base

from gha_mlops.testing.load import ConstantLoad, LoadReport

DIR = WORK / "deploy"
ENV = "bench"


def _cli(ws: Any, daemon: Dockerd, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    proc = ws.cli("deploy", *args, env={"DOCKER_HOST": daemon.base_url, **IDENT}, timeout=600)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"`gha-mlops deploy {' '.join(args)}` failed ({proc.returncode}):\n"
                         + proc.stdout + proc.stderr)
    return took, proc


def _loaded(port: int, rate: float) -> ConstantLoad:
    return ConstantLoad(f"http://127.0.0.1:{port}/v2/models/{MODEL}/infer", infer_body(),
                        rate=rate)


def _ours(ws: Any, daemon: Dockerd, port: int, args: argparse.Namespace) -> dict[str, Any]:
    """--runs rollouts (alternating versions) and rollbacks under load."""
    out: dict[str, list[Any]] = {"rollout_s": [], "overhead_s": [], "switch_s": [],
                                 "rollback_s": [], "rollout_failed": [], "rollback_failed": [],
                                 "sent": []}
    _cli(ws, daemon, MODEL, "--version", "1.0.0", "--env", ENV)
    for _ in range(args.runs):
        with _loaded(port, args.rate) as load:
            took, _ = _cli(ws, daemon, MODEL, "--version", "1.1.0", "--env", ENV)
        report = load.report()
        out["rollout_s"].append(took)
        out["overhead_s"].append(took - 3 * args.bake)
        out["rollout_failed"].append(report.failed)
        out["sent"].append(report.sent)
        _print_load("rollout", took, report)
        with _loaded(port, args.rate) as load:
            took, _ = _cli(ws, daemon, "rollback", "--env", ENV)
        report = load.report()
        out["rollback_s"].append(took)
        out["rollback_failed"].append(report.failed)
        _print_load("rollback", took, report)
    return out


def _print_load(what: str, took: float, report: LoadReport) -> None:
    print(f"  {what:8s} {took:6.2f} s; {report.sent} requests at {report.achieved_rate:.0f}/s, "
          f"{report.failed} failed ({report.resent} resent once on a fresh connection after a "
          f"kept-alive one was closed), p99 {report.p99_ms:.1f} ms, versions {report.versions}",
          flush=True)


NGINX = """\
daemon off; worker_processes auto; pid /tmp/anchor.pid; error_log stderr warn;
events {{ worker_connections 4096; }}
http {{ access_log off;
  upstream model {{ server 127.0.0.1:{backend}; keepalive 32; }}
  server {{ listen 127.0.0.1:{port};
    location / {{ proxy_pass http://model; proxy_http_version 1.1;
                 proxy_set_header Connection ""; }} }} }}
"""


def _anchor(daemon: Dockerd, images: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """The hand-written blue/green (see the module docstring), timed and loaded alike."""
    docker = ["docker", "-H", daemon.base_url]
    port, ports = free_port(), [free_port(), free_port()]
    conf = DIR / "anchor.conf"

    def write_conf(backend: int) -> None:
        conf.write_text(NGINX.format(backend=backend, port=port))
        subprocess.run([*docker, "cp", str(conf), "anchor-nginx:/etc/anchor.conf"], check=True)

    def start(image: str, slot: int) -> None:
        subprocess.run([*docker, "rm", "-f", f"anchor-{slot}"], capture_output=True)
        subprocess.run([*docker, "run", "-d", "--name", f"anchor-{slot}", "--network", "host",
                        "-e", f"PORT={ports[slot]}", image, "--host", "127.0.0.1"],
                       check=True, capture_output=True)
        url = f"http://127.0.0.1:{ports[slot]}/v2/health/ready"
        while subprocess.run(["curl", "-sf", url], capture_output=True).returncode != 0:
            time.sleep(0.05)

    subprocess.run([*docker, "rm", "-f", "anchor-nginx"], capture_output=True)
    subprocess.run([*docker, "create", "--name", "anchor-nginx", "--network", "host",
                    "--entrypoint", "nginx", ROUTER_IMAGE, "-c", "/etc/anchor.conf"],
                   check=True, capture_output=True)
    start(images[0], 0)
    write_conf(ports[0])
    subprocess.run([*docker, "start", "anchor-nginx"], check=True, capture_output=True)
    time.sleep(1)
    times, failed = [], []
    slot = 0
    try:
        for run in range(2 * args.runs):
            new = 1 - slot
            with _loaded(port, args.rate) as load:
                begin = time.perf_counter()
                start(images[(run + 1) % 2], new)
                write_conf(ports[new])
                subprocess.run([*docker, "exec", "anchor-nginx", "nginx", "-c",
                                "/etc/anchor.conf", "-s", "reload"], check=True)
                subprocess.run([*docker, "rm", "-f", f"anchor-{slot}"], check=True,
                               capture_output=True)
                times.append(time.perf_counter() - begin)
                time.sleep(2)
            report = load.report()
            failed.append(report.failed)
            _print_load("anchor", times[-1], report)
            slot = new
    finally:
        subprocess.run([*docker, "rm", "-f", "anchor-nginx", "anchor-0", "anchor-1"],
                       capture_output=True)
    return {"switch_s": times, "failed": failed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--bake", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=200.0)
    args = parser.parse_args()
    DIR.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="gha-mlops-bench-deploy-", dir="/tmp"))
    (root / "dockerd").mkdir()
    (root / "registry").mkdir()
    daemon = Dockerd(root / "dockerd")
    registry = OciRegistry(root / "registry")
    try:
        daemon.start()
        registry.start()
        base = import_serving_base(daemon)
        tarball = debootstrap_tarball(ROUTER_DEBOOTSTRAP_ARGS, "rootfs-nginx")
        repository, tag = ROUTER_IMAGE.split(":")
        daemon.client().api.import_image_from_file(str(tarball), repository=repository, tag=tag)
        ws = make_workspace(root / "ws", daemon, base, cache_dir() / "serving-wheels",
                            registry.host)
        section = environment_yaml(ENV, daemon, ROUTER_IMAGE, bake=f"{args.bake:g}s",
                                   gates="{max_error_rate: 0.01, max_p99_ms: 250}")
        ws.write("mlops.yaml", ws.read("mlops.yaml") + section)
        port = int(section.split("port: ", 1)[1].split("\n", 1)[0])
        ours = _ours(ws, daemon, port, args)
        remove_env(daemon, ENV)
        images = [f"{registry.host}/{MODEL}:1.0.0", f"{registry.host}/{MODEL}:1.1.0"]
        anchor = _anchor(daemon, images, args)
    finally:
        registry.stop()
        daemon.close()
        shutil.rmtree(root, ignore_errors=True)
    _summary(ours, anchor, args)


def _summary(ours: dict[str, Any], anchor: dict[str, Any], args: argparse.Namespace) -> None:
    med = statistics.median
    print(f"\nours, {args.runs} runs at {args.rate:g} req/s, bake {args.bake:g} s x 3 steps:")
    print(f"  rollout: median {med(ours['rollout_s']):.2f} s, overhead beyond the bakes "
          f"{med(ours['overhead_s']):.2f} s (goal <= 5 s), failed requests "
          f"{sum(ours['rollout_failed'])} of {sum(ours['sent'])} (goal 0)")
    print(f"  rollback: median {med(ours['rollback_s']):.2f} s (goal <= 3 s), failed requests "
          f"{sum(ours['rollback_failed'])} (goal 0)")
    print(f"anchor (hand-written docker run + nginx reload + docker rm), {len(anchor['switch_s'])}"
          f" switches: median {med(anchor['switch_s']):.2f} s, failed requests "
          f"{sum(anchor['failed'])}")
    print(f"ratio, our rollback / the anchor's switch: "
          f"{med(ours['rollback_s']) / med(anchor['switch_s']):.2f}")
    (DIR / "results.json").write_text(json.dumps({"ours": ours, "anchor": anchor,
                                                  "args": vars(args)}, indent=2))


if __name__ == "__main__":
    main()
