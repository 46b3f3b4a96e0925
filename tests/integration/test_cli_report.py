"""`gha-mlops report` through the real CLI: two runs of a small shell-stage workspace that
differ by `--set` parameters, compared with `report --baseline latest~1`; gates that pass and
fail (exit codes), a metrics file missing on one side, a NaN metric, a baseline given as a
downloaded record file, and the step summary in Actions."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import CLI

PIPELINE = """\
seed: 1
params: params.yaml
model: model.bin
stages:
  train:
    cmd: python train.py
    deps: [train.py]
    params: [train]
    outs: [model.bin]
    metrics: [metrics/eval.json]
    plots: [plots/history.csv]
"""

GATES = """\
gates:
  test_accuracy: {min_delta: -0.002}
  latency_ms: {max: 20}
"""

TRAIN = """\
import json, os, pathlib
import yaml

p = yaml.safe_load(open(os.environ["GHA_MLOPS_PARAMS"]))["train"]
acc = float(p["acc"])
pathlib.Path("metrics").mkdir(exist_ok=True)
pathlib.Path("plots").mkdir(exist_ok=True)
if p.get("broken"):
    pathlib.Path("metrics/eval.json").write_text("{not json")
else:
    json.dump({"test_accuracy": float("nan") if p.get("nan") else acc,
               "test_loss": round(1 - acc, 6), "latency_ms": 12.5,
               "confusion_matrix": [[9, 1], [1, 9]]}, open("metrics/eval.json", "w"))
rows = "".join(f"{e},{1 / e:.4f},{acc * e / 3:.4f}\\n" for e in range(1, 4))
pathlib.Path("plots/history.csv").write_text("epoch,loss,accuracy\\n" + rows)
pathlib.Path("model.bin").write_text(f"model {acc}")
"""


def _cli(cwd: Path, *args: str, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items()
            if not k.startswith("GITHUB_") and k != "RUNNER_TEMP"}
    full.update(env or {})
    proc = subprocess.run([*CLI, *args], cwd=cwd, env=full, capture_output=True, text=True,
                          timeout=120, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def _ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "mlops.yaml").write_text(PIPELINE + GATES)
    (root / "params.yaml").write_text("train:\n  acc: 0.95\n  nan: false\n  broken: false\n")
    (root / "train.py").write_text(TRAIN)
    _ok(_cli(root, "run"))  # the baseline
    return root


def test_a_regression_fails_the_gate_and_the_report_says_why(ws: Path, tmp_path: Path) -> None:
    _ok(_cli(ws, "run", "--set", "train.acc=0.9469"))
    out = tmp_path / "report"
    proc = _cli(ws, "report", "--baseline", "latest~1", "--output", str(out),
                "--report-id", "pr-7")
    assert proc.returncode == 1, proc.stderr
    assert "test_accuracy dropped 0.0031, more than the allowed 0.002" in proc.stderr
    assert "1 of 2 gates failed" in proc.stderr
    markdown = (out / "report.md").read_text()
    assert markdown.startswith("<!-- gha-mlops-report:pr-7 -->\n")
    assert "❌ Model comparison: 1 of 2 gates failed" in markdown
    assert "<code>train.acc</code>" in markdown  # the changed parameter
    assert "💾 cached" not in markdown  # the stage ran on both sides
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["curve-plots-history-csv.png", "matrix-metrics-eval-json-confusion-matrix.png",
                    "metrics.png"]
    for name in pngs:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in markdown


def test_an_improvement_passes(ws: Path) -> None:
    _ok(_cli(ws, "run", "--set", "train.acc=0.96"))
    proc = _ok(_cli(ws, "report", "--baseline", "latest~1"))
    assert "✅ Model comparison: all 2 gates pass" in proc.stdout
    assert "🟢 better" in proc.stdout
    assert proc.stdout.startswith("<!-- gha-mlops-report:default -->")


def test_the_same_run_compares_as_unchanged_and_cached(ws: Path) -> None:
    _ok(_cli(ws, "run"))
    proc = _ok(_cli(ws, "report", "latest", "--baseline", "latest~1"))
    assert "💾 cached" in proc.stdout
    assert "(unchanged)" in proc.stdout  # the model's sha256


def test_a_metrics_file_missing_on_the_head_side_fails_its_gates(ws: Path) -> None:
    failed = _cli(ws, "run", "--set", "train.broken=true")
    assert failed.returncode != 0  # the stage cannot read its metrics file: the run fails
    proc = _cli(ws, "report", "--baseline", "latest~1")
    assert proc.returncode == 1, proc.stderr
    assert "test_accuracy is missing from the head run (the baseline has 0.95)" in proc.stderr
    assert "The head run failed" in proc.stdout
    assert "🚫 removed" in proc.stdout


def test_without_gates_a_missing_metric_is_reported_not_fatal(ws: Path) -> None:
    (ws / "mlops.yaml").write_text(PIPELINE)
    _cli(ws, "run", "--set", "train.broken=true")
    proc = _ok(_cli(ws, "report", "--baseline", "latest~1"))
    assert "no gates declared" in proc.stdout
    # The other way round: the baseline lacks the metrics, the head has them.
    _ok(_cli(ws, "run"))
    proc = _ok(_cli(ws, "report", "--baseline", "latest~1"))
    assert "🆕 added" in proc.stdout


def test_a_nan_metric_is_shown_and_fails_its_gate(ws: Path) -> None:
    _cli(ws, "run", "--set", "train.nan=true")
    proc = _cli(ws, "report", "--baseline", "latest~1")
    assert proc.returncode == 1, proc.stderr
    assert "test_accuracy is nan on the head run, not a finite number" in proc.stderr
    row = next(line for line in proc.stdout.splitlines()
               if line.startswith("| <code>metrics/eval.json:test\\_accuracy"))
    assert "| nan |" in row and "🔴 worse" in row


def test_the_baseline_can_be_a_downloaded_record_file(ws: Path, tmp_path: Path) -> None:
    record = json.loads(_ok(_cli(ws, "runs", "show", "latest", "--json")).stdout)
    artifact = tmp_path / "champion"
    (artifact / "metrics").mkdir(parents=True)
    (artifact / "plots").mkdir()
    (artifact / "run.json").write_text(json.dumps(record))
    shutil.copy(ws / "metrics/eval.json", artifact / "metrics/eval.json")
    shutil.copy(ws / "plots/history.csv", artifact / "plots/history.csv")
    _ok(_cli(ws, "run", "--set", "train.acc=0.951"))
    out = tmp_path / "out"
    _ok(_cli(ws, "report", "--baseline", str(artifact / "run.json"), "-o", str(out)))
    # The plots were read beside the record: both sides' curves and matrices are drawn.
    assert (out / "curve-plots-history-csv.png").is_file()
    assert "Files not used" not in (out / "report.md").read_text()
    missing = _cli(ws, "report", "--baseline", str(tmp_path / "nope.json"))
    assert missing.returncode == 2
    assert "no run record file" in missing.stderr


def test_in_actions_the_report_goes_to_the_step_summary(ws: Path, tmp_path: Path) -> None:
    _ok(_cli(ws, "run", "--set", "train.acc=0.5"))
    summary = tmp_path / "summary.md"
    summary.write_text("")
    env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    proc = _cli(ws, "report", "--baseline", "latest~1", env=env)
    assert proc.returncode == 1
    text = summary.read_text()
    assert text.startswith("<!-- gha-mlops-report:default -->")
    assert "❌ Model comparison" in text
    assert "::error" in proc.stdout + proc.stderr
    assert "[!CAUTION]" in text  # the error boundary's note follows the report


def test_help_is_fast_and_imports_nothing_heavy(ws: Path) -> None:
    proc = _ok(_cli(ws, "report", "--help"))
    assert "--baseline" in proc.stdout
    code = ("import sys; from gha_mlops.cli import report; "
            "bad = [m for m in ('matplotlib', 'pydantic', 'yaml') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([CLI[0], "-c", code], check=True, timeout=60)


def image_plot_workspace(root: Path) -> Path:
    """``root``: the pipeline with a declared image plot whose bytes end in the accuracy."""
    root.mkdir()
    (root / "mlops.yaml").write_text(PIPELINE.replace(
        "plots: [plots/history.csv]", "plots: [plots/history.csv, plots/fig.png]"))
    (root / "params.yaml").write_text("train:\n  acc: 0.95\n  nan: false\n  broken: false\n")
    (root / "train.py").write_text(TRAIN + '\npathlib.Path("plots/fig.png").write_bytes('
                                   'b"\\x89PNG\\r\\n\\x1a\\n" + str(acc).encode())\n')
    return root


def test_image_plots_a_stage_declares_are_in_the_report(tmp_path: Path) -> None:
    root = image_plot_workspace(tmp_path / "img")
    _ok(_cli(root, "run"))
    champion = tmp_path / "champion"  # the baseline as a downloaded artifact keeps its files
    shutil.copytree(root, champion)
    _ok(_cli(root, "run", "--set", "train.acc=0.96"))
    [record] = (champion / ".gha-mlops/runs").glob("2*.json")
    out = tmp_path / "report"
    _ok(_cli(root, "report", "--baseline", str(record), "--output", str(out)))
    assert (out / "declared-plots-fig-head.png").read_bytes().endswith(b"0.96")
    assert (out / "declared-plots-fig-baseline.png").read_bytes().endswith(b"0.95")
    markdown = (out / "report.md").read_text()
    assert "](declared-plots-fig-baseline.png)" in markdown
    assert "](declared-plots-fig-head.png)" in markdown
