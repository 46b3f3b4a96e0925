"""`gha-mlops monitor collect` end to end through the real CLI: a prediction log and late
feedback in a workspace (or in a real moto S3 bucket), the rows appended to a tracked directory dataset, pushed to a real
directory remote, the Actions outputs and summary, and the next `gha-mlops run` whose stage
depends on data:feedback recording the new version."""

from __future__ import annotations

import calendar
import csv
import json
from pathlib import Path

import pytest

from gha_mlops.monitor.predlog_writer import BatchWriter, write_feedback
from tests.conftest import Workspace
from tests.integration.test_remotes import aws_env, bucket, moto_endpoint  # noqa: F401

T0 = float(calendar.timegm((2026, 3, 10, 12, 0, 0)))
SCHEMA = {"inputs": {"x": ["FP64", [-1, 2]]}, "outputs": {"y": ["INT64", [-1]]}}
PIPELINE = """\
remotes:
  shared:
    url: ../remote
stages:
  train:
    cmd: cat data/feedback/*.csv | wc -l > rows.txt
    deps: [data:feedback]
    outs: [rows.txt]
"""
WINDOW = ["--log", "logs", "--end", "2026-03-10T13:00Z", "--window", "1h"]


@pytest.fixture
def ws(workspace: Workspace) -> Workspace:
    workspace.write("mlops.yaml", PIPELINE)
    (workspace.root / "data/feedback").mkdir(parents=True)
    workspace.cli("data", "add", "data/feedback", check=True)
    with BatchWriter(workspace.root / "logs", "digits", "1.0.0", SCHEMA) as w:
        for i in range(6):
            w.add(f"req-{i}", {"x": [i / 10, 1.0]}, {"y": i % 2}, T0 + 60 * i)
    # Labels arrive after the window ends (an hour later).
    write_feedback(workspace.root / "logs", "digits",
                   [("req-1", 1, T0 + 3700), ("req-4", 0, T0 + 3710), ("other", 1, T0 + 3720)])
    return workspace


def _actions_env(tmp: Path) -> dict[str, str]:
    (tmp / "out").write_text("")
    (tmp / "summary").write_text("")
    return {"GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(tmp / "out"),
            "GITHUB_STEP_SUMMARY": str(tmp / "summary")}


def _outputs(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    found = {}
    for i, line in enumerate(lines):
        if "<<ghadelim_" in line:
            found[line.split("<<")[0]] = lines[i + 1]
    return found


def test_collect_appends_pushes_and_the_next_run_records_the_version(
        ws: Workspace, tmp_path: Path) -> None:
    env = _actions_env(tmp_path)
    # The remote's folder is missing: the push fails (exit 6), the rows stay in the dataset.
    proc = ws.cli("monitor", "collect", "digits", "--into", "feedback", *WINDOW, env=env)
    assert proc.returncode == 6 and "the collected rows are kept in" in proc.stderr
    assert len(list((ws.root / "data/feedback").glob("*.csv"))) == 1
    (ws.root.parent / "remote").mkdir()
    env = _actions_env(tmp_path)
    proc = ws.cli("monitor", "collect", "digits", "--into", "feedback", *WINDOW, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "nothing new to collect" in proc.stdout and "pushed to shared" in proc.stdout
    outputs = _outputs(tmp_path / "out")
    assert outputs["rows"] == "0"
    assert "2 of the window's 6 rows have a label, 2 were collected before" in proc.stdout
    pointer = (ws.root / "data/feedback.lock.yaml").read_text()
    assert outputs["dataset"] == "feedback"
    assert f"version: {outputs['version']}" in pointer
    assert "Feedback of digits collected into feedback" in (tmp_path / "summary").read_text()
    [file] = (ws.root / "data/feedback").glob("digits-20260310T120000Z-20260310T130000Z-*.csv")
    with file.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["id"], r["version"], r["x[0]"], r["x[1]"], r["label"]) for r in rows] == [
        ("req-1", "1.0.0", "0.1", "1.0", "1"), ("req-4", "1.0.0", "0.4", "1.0", "0")]
    assert any((ws.root.parent / "remote").rglob("*"))  # pushed to the directory remote

    ws.cli("run", check=True)
    record = json.loads(ws.cli("runs", "show", "--json", check=True).stdout)
    assert record["datasets"]["feedback"]["version"] == outputs["version"]
    assert record["data"] == {"data:feedback": outputs["version"]}
    assert ws.read("rows.txt").strip() == "3"

    again = ws.cli("monitor", "collect", "digits", "--into", "feedback", *WINDOW, "--json")
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    assert (result["rows"], result["already"], result["file"]) == (0, 2, None)
    assert result["version"] == outputs["version"] and result["remote"] == "shared"


def test_the_log_window_and_dataset_come_from_monitor_models(ws: Workspace) -> None:
    ws.write("mlops.yaml", PIPELINE + """\
registry:
  stages: [prod]
  models:
    digits:
      path: rows.txt
monitor:
  models:
    digits:
      log: logs
      window: 1h
      collect_into: feedback
""")
    (ws.root.parent / "remote").mkdir()
    proc = ws.cli("monitor", "collect", "digits", "--end", "2026-03-10T13:00Z", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert (result["dataset"], result["rows"], result["window_rows"]) == ("feedback", 2, 6)


def test_a_model_not_declared_needs_log_and_into(ws: Workspace) -> None:
    proc = ws.cli("monitor", "collect", "digits", "--into", "feedback")
    assert proc.returncode == 2
    assert "'digits' is not under monitor.models" in proc.stderr
    assert "--log" in proc.stderr and "Traceback" not in proc.stderr


def test_a_file_dataset_or_a_missing_one_is_refused_with_what_to_run(ws: Workspace) -> None:
    ws.write("data/table.csv", "a\n1\n")
    ws.cli("data", "add", "data/table.csv", check=True)
    proc = ws.cli("monitor", "collect", "digits", "--into", "table", *WINDOW)
    assert proc.returncode == 2 and "is a single file" in proc.stderr, proc.stderr
    proc = ws.cli("monitor", "collect", "digits", "--into", "fresh", *WINDOW)
    assert proc.returncode == 2 and "mkdir -p data/fresh" in proc.stderr, proc.stderr
    assert not list((ws.root / "data").glob("*/*.csv"))


@pytest.mark.parametrize(("option", "value", "says"), [
    ("--window", "10s", "1 minute to 366 days"), ("--window", "soon", "--window 24h"),
    ("--end", "yesterday", "not a time"), ("--end", "2026-13-01", "not a time"),
    ("--max-rows", "0", "0 is not in the range")])
def test_bad_options_are_usage_errors(ws: Workspace, option: str, value: str,
                                      says: str) -> None:
    args = ["monitor", "collect", "digits", "--into", "feedback", "--log", "logs"]
    proc = ws.cli(*args, option, value)
    assert proc.returncode == 2 and says in proc.stderr, proc.stderr


@pytest.mark.usefixtures("aws_env")
def test_a_log_in_s3_is_collected_as_a_folder_is(ws: Workspace, bucket: str,  # noqa: F811
                                                 moto_endpoint: str) -> None:  # noqa: F811
    import boto3

    client = boto3.client("s3", endpoint_url=moto_endpoint)
    try:
        for path in sorted((ws.root / "logs").rglob("*")):
            if path.is_file():
                key = "prod/" + path.relative_to(ws.root / "logs").as_posix()
                client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
    finally:
        client.close()
    (ws.root.parent / "remote").mkdir()
    window = ["--log", f"s3://{bucket}/prod", *WINDOW[2:], "--json"]
    proc = ws.cli("monitor", "collect", "digits", "--into", "feedback", *window,
                  env={"AWS_ENDPOINT_URL": moto_endpoint})
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert (result["rows"], result["window_rows"], result["remote"]) == (2, 6, "shared")
    assert result["log_skipped"] == {} and result["feedback_skipped"] == {}
