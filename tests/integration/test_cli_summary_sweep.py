"""The real CLI as GitHub Actions steps would run it: `summary` into the step summary, and a
sweep end to end: `sweep plan` -> one `run --set` per leg -> records downloaded as artifacts
`run-<leg>` -> `sweep select`. The runner's files are temp files, parsed here as the runner
parses them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLI

PIPELINE = """\
seed: 1
params: params.yaml
stages:
  train:
    cmd: python train.py
    deps: [train.py]
    params: [train]
    outs: [model.bin]
    metrics: [metrics/eval.json]
    plots: [plots/history.csv, plots/confusion.png]
"""

# Accuracy peaks at lr=0.01 and grows with epochs; lr >= 1 "diverges" (the stage fails). The
# tag must arrive as a string: "0.5" is one only if `set` quoted it.
TRAIN = """\
import json, os, pathlib, sys
import yaml

p = yaml.safe_load(open(os.environ["GHA_MLOPS_PARAMS"]))["train"]
lr, epochs, tag = p["lr"], p["epochs"], p["tag"]
if not isinstance(tag, str):
    sys.exit(f"tag must be a string, got {tag!r}")
if lr >= 1:
    sys.exit("diverged")
acc = round(1 - abs(lr - 0.01) - 1 / (epochs * 10), 6)
pathlib.Path("metrics").mkdir(exist_ok=True)
pathlib.Path("plots").mkdir(exist_ok=True)
json.dump({"test_accuracy": acc, "test_loss": round(1 - acc, 6),
           "per_class": {str(c): {"f1": acc, "support": 10} for c in range(10)},
           "confusion_matrix": [[9, 1], [0, 10]]}, open("metrics/eval.json", "w"))
rows = "".join(f"{e},{1 / e:.4f},{acc * e / epochs:.4f}\\n" for e in range(1, epochs + 1))
pathlib.Path("plots/history.csv").write_text("epoch,loss,accuracy\\n" + rows)
pathlib.Path("plots/confusion.png").write_bytes(b"\\x89PNG not really")
pathlib.Path("model.bin").write_text(f"{lr} {epochs} {tag}")
"""

GRID = """\
# two learning rates x two epoch counts, plus one leg that fails
train.lr: [0.1, 0.01]
train.epochs: [2, 5]
train.tag: ["0.5"]
include:
  - {train.lr: 1.0, train.epochs: 2, train.tag: sgd}
"""


BEST = "leg-04-lr0.01-epochs5-tag0.5"


def _accuracy(lr: float, epochs: int) -> float:
    return round(1 - abs(lr - 0.01) - 1 / (epochs * 10), 6)


def parse_output_file(text: str) -> dict[str, str]:
    """``$GITHUB_OUTPUT`` as the runner reads it: ``name=value`` lines and
    ``name<<DELIMITER`` ... ``DELIMITER`` blocks. A name written twice is an error here."""
    out: dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line:
            i += 1
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delim = line.split("<<", 1)
            end = lines.index(delim, i + 1)  # ValueError: an unterminated block
            value = "\n".join(lines[i + 1:end])
            i = end + 1
        else:
            name, value = line.split("=", 1)
            i += 1
        assert name not in out, f"output {name} written twice"
        out[name] = value
    return out


class Step:
    """One Actions step's environment: fresh GITHUB_OUTPUT and GITHUB_STEP_SUMMARY files."""

    def __init__(self, tmp: Path, name: str) -> None:
        self.output = tmp / f"{name}.output"
        self.summary = tmp / f"{name}.summary.md"
        self.output.write_text("")
        self.summary.write_text("")
        self.env = {"GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(self.output),
                    "GITHUB_STEP_SUMMARY": str(self.summary),
                    "GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "o/r",
                    "GITHUB_RUN_ID": "42"}

    def outputs(self) -> dict[str, str]:
        return parse_output_file(self.output.read_text())


def _cli(cwd: Path, *args: str, env: dict[str, str] | None = None,
         ok: bool = True) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items()
            if not k.startswith("GITHUB_") and k != "RUNNER_TEMP"}
    full.update(env or {})
    proc = subprocess.run([*CLI, *args], cwd=cwd, env=full, capture_output=True, text=True,
                          timeout=120, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    if ok:
        assert proc.returncode == 0, f"{args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "mlops.yaml").write_text(PIPELINE)
    (root / "params.yaml").write_text("train:\n  lr: 0.05\n  epochs: 3\n  tag: sgd\n")
    (root / "train.py").write_text(TRAIN)
    return root


# --------------------------------------------------------------------------- summary


def test_summary_goes_to_the_step_summary_in_actions(ws: Path, tmp_path: Path) -> None:
    _cli(ws, "run")
    step = Step(tmp_path, "summary")
    step.summary.write_text("earlier text of the step\n")
    proc = _cli(ws, "summary", env=step.env)
    run_id = json.loads(_cli(ws, "runs", "show", "--json").stdout)["id"]
    assert proc.stdout == f"wrote the summary of run {run_id} to the step summary\n"
    md = step.summary.read_text()
    assert md.startswith("earlier text of the step\n## ✅ gha-mlops run succeeded\n")
    assert f"| Run | `{run_id}` |" in md
    assert f"| `test_accuracy` | {_accuracy(0.05, 3):g} |" in md
    assert "<code>per_class</code> (20 values)" in md
    assert "| **0** | 9 | 1 |" in md  # the confusion matrix, from this run's metrics file
    assert "| `train` | ✅ ran |" in md
    assert '```mermaid\n%%{init: {"themeVariables": {"xyChart": {"plotColorPalette": ' in md
    assert '    x-axis "epoch" ["1", "2", "3"]' in md
    assert "🟦 `loss` · 🟧 `accuracy`" in md
    assert "- `plots/confusion.png`: an image (stage `train`" in md
    assert "[the run's artifacts](https://github.com/o/r/actions/runs/42)" in md
    assert step.outputs() == {}  # summary sets no outputs


def test_summary_prints_markdown_outside_actions_and_writes_output_files(
        ws: Path, tmp_path: Path) -> None:
    _cli(ws, "run")
    printed = _cli(ws, "summary", "latest").stdout
    assert printed.startswith("## ✅ gha-mlops run succeeded")
    out = tmp_path / "out" / "summary.md"
    proc = _cli(ws, "summary", "--output", str(out))
    assert proc.stdout.startswith("wrote the summary of run ") and str(out) in proc.stdout
    assert out.read_text() == printed
    assert not list(out.parent.glob(".summary.md.*"))  # no temp file left behind
    # A changed plot is not charted as this run's
    (ws / "plots/history.csv").write_text("epoch,loss\n1,9\n")
    changed = _cli(ws, "summary").stdout
    assert "```mermaid" not in changed
    assert "plots/history.csv in the workspace is not this run's" in changed


def test_summary_errors_are_user_errors(ws: Path) -> None:
    missing = _cli(ws, "summary", ok=False)
    assert missing.returncode == 2 and "no runs recorded" in missing.stderr
    _cli(ws, "run")
    unknown = _cli(ws, "summary", "nope", ok=False)
    assert unknown.returncode == 2 and "error: no run 'nope'" in unknown.stderr
    (ws / "not-a-record.json").write_text('{"accuracy": 1}')
    bad = _cli(ws, "summary", "not-a-record.json", ok=False)
    assert bad.returncode == 2 and "is not a gha-mlops run record" in bad.stderr


# --------------------------------------------------------------------------- sweep


def _run_leg(ws: Path, leg: dict[str, str], artifacts: Path) -> dict[str, Any]:
    """What a leg job does: run with the leg's overrides, upload the record (and the metrics
    and plots) as artifact run-<leg>; here the "download" is a copy into ``artifacts``."""
    args = [arg for line in leg["set"].splitlines() for arg in ("--set", line)]
    _cli(ws, "run", *args, ok=False)
    record: dict[str, Any] = json.loads(_cli(ws, "runs", "show", "latest", "--json").stdout)
    dest = artifacts / f"run-{leg['leg']}"
    runs = dest / ".gha-mlops" / "runs"
    runs.mkdir(parents=True)
    shutil.copy(ws / ".gha-mlops" / "runs" / f"{record['id']}.json", runs)
    for rel in ("metrics", "plots"):
        if record["status"] == "succeeded":
            shutil.copytree(ws / rel, dest / rel)
    return record


def test_sweep_plan_run_legs_select_the_best(ws: Path, tmp_path: Path) -> None:
    (ws / "sweep.yaml").write_text(GRID)
    plan_step = Step(tmp_path, "plan")
    plan = _cli(ws, "sweep", "plan", "--grid", "sweep.yaml", env=plan_step.env)
    outputs = plan_step.outputs()
    matrix = json.loads(outputs["matrix"])
    assert json.loads(plan.stdout.splitlines()[0]) == matrix
    assert outputs["legs"] == "5"
    assert [leg["leg"] for leg in matrix["include"]] == [
        "leg-01-lr0.1-epochs2-tag0.5", "leg-02-lr0.1-epochs5-tag0.5",
        "leg-03-lr0.01-epochs2-tag0.5", BEST, "leg-05-lr1.0-epochs2-tagsgd"]
    assert matrix["include"][3]["set"] == "train.lr=0.01\ntrain.epochs=5\ntrain.tag='0.5'"

    artifacts = tmp_path / "artifacts"
    records = {leg["leg"]: _run_leg(ws, leg, artifacts) for leg in matrix["include"]}
    assert [r["status"] for r in records.values()] == ["succeeded"] * 4 + ["failed"]
    assert records[BEST]["params"]["overrides"] == {
        "train.lr": 0.01, "train.epochs": 5, "train.tag": "0.5"}

    select_step = Step(tmp_path, "select")
    proc = _cli(ws, "sweep", "select", "--metric", "test_accuracy", "--direction", "max",
                str(artifacts), env=select_step.env)
    out = select_step.outputs()
    best = records[BEST]
    assert out["best-leg"] == BEST
    assert out["best-run-id"] == best["id"]
    assert json.loads(out["best-value"]) == _accuracy(0.01, 5)
    assert json.loads(out["best-overrides"]) == best["params"]["overrides"]
    assert out["metric"] == "metrics/eval.json:test_accuracy"
    ranking = json.loads(out["ranking"])
    assert [(r["rank"], r["leg"]) for r in ranking] == [
        (1, BEST), (2, "leg-03-lr0.01-epochs2-tag0.5"),
        (3, "leg-02-lr0.1-epochs5-tag0.5"), (4, "leg-01-lr0.1-epochs2-tag0.5")]
    assert ranking[1]["value"] == _accuracy(0.01, 2)
    assert ranking[1]["directory"] == "run-leg-03-lr0.01-epochs2-tag0.5"
    skipped = json.loads(out["skipped"])
    assert [(s["leg"], s["reason"]) for s in skipped] == [
        ("leg-05-lr1.0-epochs2-tagsgd", "the run failed (stage 'train')")]
    md = select_step.summary.read_text()
    assert md.startswith("### 🏆 Sweep: best leg by `metrics/eval.json:test_accuracy` (max)")
    assert f"| 1 | `{BEST}` | {_accuracy(0.01, 5):.10g} | `{best['id']}` |" in md
    assert "- `leg-05-lr1.0-epochs2-tagsgd`: the run failed (stage 'train')" in md
    assert "| Rank | Leg | `test_accuracy` | Run | Overrides |" in proc.stdout

    # min picks the other end; outside Actions nothing is written
    low = _cli(ws, "sweep", "select", "-m", "metrics/eval.json:test_accuracy", "-d", "min",
               "--json", str(artifacts))
    assert json.loads(low.stdout)["best"]["leg"] == "leg-01-lr0.1-epochs2-tag0.5"

    # the best leg's own summary, from its downloaded artifact
    best_file = artifacts / f"run-{BEST}" / ".gha-mlops" / "runs" / f"{best['id']}.json"
    summary = _cli(tmp_path, "summary", str(best_file)).stdout
    assert "### Parameter overrides" in summary and "| `train.tag` | `\"0.5\"` |" in summary
    assert '    x-axis "epoch" ["1", "2", "3", "4", "5"]' in summary


def test_sweep_errors_are_clear(ws: Path, tmp_path: Path) -> None:
    (ws / "sweep.yaml").write_text("train.lr: [0.1, 0.01]\ntrain.epochs: 5\n")
    bad = _cli(ws, "sweep", "plan", "--grid", "sweep.yaml", ok=False)
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: sweep.yaml:2:15: train.epochs: expected a list of "
                                 "values, got an integer 5\n")
    assert bad.stdout == ""
    step = Step(tmp_path, "plan")
    over = _cli(ws, "sweep", "plan", "--grid-json", '{"a": [1, 2, 3]}', "--max-legs", "2",
                env=step.env, ok=False)
    assert over.returncode == 2 and "--max-legs is 2" in over.stderr
    assert step.outputs() == {}  # no matrix on failure
    assert "::error title=gha-mlops::--grid-json: the grid makes 3 legs" in over.stdout

    _cli(ws, "run")
    artifacts = tmp_path / "artifacts" / "run-leg-01"
    artifacts.mkdir(parents=True)
    for record in (ws / ".gha-mlops" / "runs").glob("2*.json"):
        shutil.copy(record, artifacts)
    missing = _cli(ws, "sweep", "select", "--metric", "f1", "--direction", "max",
                   str(tmp_path / "artifacts"), ok=False)
    assert missing.returncode == 2
    assert "no run record has the metric 'f1'" in missing.stderr
    assert "metrics/eval.json:test_accuracy" in missing.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    none = _cli(ws, "sweep", "select", "-m", "x", "-d", "max", str(empty), ok=False)
    assert none.returncode == 2 and "no run records in" in none.stderr
    no_direction = _cli(ws, "sweep", "select", "-m", "x", str(empty), ok=False)
    assert no_direction.returncode == 2 and "--direction" in no_direction.stderr
