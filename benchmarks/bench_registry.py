"""The registry at 10,000 tags: `gha-mlops model list` / `model show NAME` against `gto show`
/ `gto show NAME` on the same repository (issue 14: goal >= 20x faster, and <= 0.3 s).

The repository is made with ONE `git fast-import`: 2,000 commits, one version tag on each
(400 versions of each of 5 models, with a lineage message like `model register` writes), and
8,000 stage tags (assign and unassign over dev, staging and prod), each model's events dated
one second apart as the registry dates them. Each command runs as a process, as a user runs it;
the figure is the median of --repeat runs (GTO fewer: it takes seconds).

Run: .venv/bin/python benchmarks/bench_registry.py [--repeat 7] [--gto-repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = 5
VERSIONS = 400  # per model: 2,000 version tags
STAGE_EVENTS = 1600  # per model: 8,000 stage tags
STAGES = ("dev", "staging", "prod")
BIN = Path(sys.executable).parent


def lineage(model: str, version: str, i: int) -> str:
    doc = {"schema": "gha-mlops/lineage@1", "run_id": f"20260101-000000-{i:06x}",
           "commit": "0" * 40, "model": {"path": "package/model.onnx", "sha256": "a" * 64},
           "datasets": {"data:digits": f"v{i % 7}"}, "params_hash": "b" * 64,
           "metrics": {"test_accuracy": 0.9, "loss": 0.1},
           "signature": {"inputs": [{"name": "input", "datatype": "FP32",
                                     "shape": [-1, 1, 16, 16]}],
                         "outputs": [{"name": "logits", "datatype": "FP32",
                                      "shape": [-1, 10]}]}}
    return f"Register {model} {version} from run {doc['run_id']}\n\n{json.dumps(doc)}\n"


def _data(text: str) -> bytes:
    raw = text.encode()
    return b"data %d\n%s\n" % (len(raw), raw)


def build(repo: Path) -> int:
    """The repository (see the module's docstring); returns the number of tags."""
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    out: list[bytes] = []
    base, mark, tags = 1_700_000_000, 0, 0
    commits: dict[tuple[int, int], int] = {}
    for m in range(MODELS):
        for v in range(VERSIONS):
            mark += 1
            commits[(m, v)] = mark
            out.append(b"commit refs/heads/main\nmark :%d\n" % mark)
            out.append(b"committer b <b@x> %d +0000\n" % base + _data(f"m{m} v{v}"))
            if mark > 1:
                out.append(b"from :%d\n" % (mark - 1))
            out.append(b"M 644 inline f.txt\n" + _data(f"{m} {v}"))
    for m in range(MODELS):
        name, when = f"model-{m}", base
        for v in range(VERSIONS):
            version = f"{1 + v // 100}.{(v // 10) % 10}.{v % 10}"
            when += 1
            out.append(f"tag {name}@v{version}\n".encode() + b"from :%d\n" % commits[(m, v)])
            out.append(b"tagger b <b@x> %d +0000\n" % when + _data(lineage(name, version, v)))
            tags += 1
        for e in range(STAGE_EVENTS):
            counter = e + 1
            when += 1
            stage, v = STAGES[e % 3], (e * 7) % VERSIONS
            undo = "!" if e % 5 == 4 else ""
            out.append(f"tag {name}#{stage}{undo}#{counter}\n".encode()
                       + b"from :%d\n" % commits[(m, v)])
            out.append(b"tagger b <b@x> %d +0000\n" % when + _data(f"stage {stage}"))
            tags += 1
    subprocess.run(["git", "fast-import", "--quiet"], cwd=repo, input=b"".join(out),
                   check=True)
    subprocess.run(["git", "checkout", "-q", "main"], cwd=repo, check=True)
    return tags


def timed(cmd: list[str], cwd: Path, repeat: int) -> tuple[float, float, str]:
    """Median wall time and median CPU time (user + system, the command and its children:
    the figure a loaded machine does not inflate) of ``cmd`` over ``repeat`` runs, and its
    last output."""
    times, cpus, out = [], [], ""
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
        out = proc.stdout
    return statistics.median(times), statistics.median(cpus), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--gto-repeat", type=int, default=3)
    parser.add_argument("--packed", action="store_true",
                        help="pack the refs first (as `git gc` or a clone leaves them)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-registry-") as tmp:
        repo = Path(tmp) / "repo"
        start = time.perf_counter()
        count = build(repo)
        print(f"{count} tags made in {time.perf_counter() - start:.1f} s; load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        if args.packed:
            subprocess.run(["git", "pack-refs", "--all"], cwd=repo, check=True)
        ours = [str(BIN / "gha-mlops"), "model"]
        rows = [("list", [*ours, "list", "--json"], [str(BIN / "gto"), "show", "--json"]),
                ("show model-0", [*ours, "show", "model-0", "--json"],
                 [str(BIN / "gto"), "show", "model-0", "--json"])]
        for label, mine, gto in rows:
            t_ours, c_ours, out_ours = timed(mine, repo, args.repeat)
            t_gto, c_gto, out_gto = timed(gto, repo, args.gto_repeat)
            print(f"{label:<14} gha-mlops {t_ours * 1000:6.0f} ms (cpu {c_ours * 1000:5.0f})"
                  f"   gto {t_gto * 1000:8.0f} ms (cpu {c_gto * 1000:8.0f})"
                  f"   ratio {t_gto / t_ours:5.1f}x   goal <= 300 ms and >= 20x")
            if label == "list":
                _agree(json.loads(out_ours), json.loads(out_gto))


def _agree(ours: list[dict[str, object]], theirs: dict[str, dict[str, object]]) -> None:
    """The two reads of the repository must agree, or the timing means nothing."""
    for model in ours:
        gto = theirs[str(model["name"])]
        stages = {k: v.lstrip("v") for k, v in gto["stage"].items() if v}  # type: ignore[union-attr]
        assert model["latest"] == str(gto["version"]).lstrip("v"), (model, gto)
        assert model["stages"] == stages, (model, gto)
    print(f"agreement: {len(ours)} models, same latest versions and stages as gto")


if __name__ == "__main__":
    main()
