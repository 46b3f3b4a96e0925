"""``gha-mlops monitor check`` end to end: a real mlops.yaml in a temp workspace, a log
written by BatchWriter, the CLI in a subprocess; the verdict on stdout, in the step outputs
and summary, the report folder, the alarm state beside the log, and the errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gha_mlops.monitor.profile import dump_profile
from gha_mlops.testing.github_emulator import GitHubEmulator
from tests.conftest import Workspace
from tests.integration.test_remotes import aws_env, bucket, moto_endpoint  # noqa: F401
from tests.unit.test_monitor_check import HOUR, T0, reference, write

pytest_plugins = ["tests.integration.github_fixtures"]

CONFIG = """\
stages:
  train:
    cmd: echo
    outs: [package]
registry:
  stages: [dev, staging, production]
  champion: production
  models:
    m:
      path: package/model.onnx
monitor:
  models:
    m:
      log: logs
      window: 1h
      alarm: {high: 0.5, low: 0.3, k: 2, n: 3, min_samples: 300}
"""


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    space = Workspace(tmp_path)
    space.write("mlops.yaml", CONFIG)
    (tmp_path / "profile.json").write_bytes(dump_profile(reference()))
    return space


def _check(ws: Workspace, end: float, *args: str, env: dict[str, str] | None = None,
           ) -> tuple[int, str, str]:
    proc = ws.cli("monitor", "check", "m", "--version", "v1", "--profile", "profile.json",
                  "--end", str(int(end)), *args, env=env)
    return proc.returncode, proc.stdout, proc.stderr


def _outputs(path: Path) -> dict[str, str]:
    """GITHUB_OUTPUT's name<<DELIM / value / DELIM records."""
    lines, out, i = path.read_text().splitlines(), {}, 0
    while i < len(lines):
        name, _, delim = lines[i].partition("<<")
        j = lines.index(delim, i + 1)
        out[name] = "\n".join(lines[i + 1:j])
        i = j + 1
    return out


def test_verdicts_outputs_report_and_state(ws: Workspace) -> None:
    logs = ws.root / "logs"
    write(logs, T0)
    code, out, err = _check(ws, T0 + HOUR, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["schema"] == "gha-mlops.monitor-verdict/1" and doc["rows"] == 1000
    assert doc["alarm"]["status"] == "ok" and doc["window"]["seconds"] == 3600
    state = logs / "m" / "monitor" / "alarm.json"
    assert json.loads(state.read_text())["windows"][0]["samples"] == 1000
    for i in (1, 2):
        write(logs, T0 + i * HOUR, shift=1.5, seed=i)
    assert _check(ws, T0 + 2 * HOUR)[0] == 0
    gh_out, summary = ws.root / "gh_out", ws.root / "gh_summary"
    gh_out.touch()
    summary.touch()
    code, out, err = _check(ws, T0 + 3 * HOUR, "--output", "report", env={
        "GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(gh_out),
        "GITHUB_STEP_SUMMARY": str(summary)})
    assert code == 0, err  # a drift is not a failure of the command
    assert "m v1: drift" in out and "4 of 4 features drifted" in out
    outputs = _outputs(gh_out)
    assert (outputs["status"], outputs["tripped"], outputs["dispatch"]) == (
        "drift", "true", "true")
    assert json.loads(outputs["verdict"])["dataset_drift"]["drifted"] is True
    assert "### Drift check of <code>m</code> <code>v1</code>: drift" in summary.read_text()
    files = sorted(p.name for p in (ws.root / "report").iterdir())
    assert "report.md" in files and "verdict.json" in files and "alarm-scores.png" in files
    assert len([f for f in files if f.startswith("drift-")]) == 4


def test_state_file_option_and_no_data(ws: Workspace) -> None:
    code, out, err = _check(ws, T0 + HOUR, "--state", "alarm.json")
    assert code == 0, err
    assert "not enough data" in out and "0 rows" in out
    assert json.loads((ws.root / "alarm.json").read_text())["windows"][0]["samples"] == 0
    assert not (ws.root / "logs" / "m" / "monitor").exists()


def test_a_damaged_state_stops_the_check_and_stays(ws: Workspace) -> None:
    write(ws.root / "logs", T0)
    state = ws.root / "logs" / "m" / "monitor" / "alarm.json"
    state.parent.mkdir(parents=True)
    state.write_text('{"format": "gha-mlops.monitor.alarm/1", "tripped": tru')
    code, _out, err = _check(ws, T0 + HOUR)
    assert code == 2 and "alarm.json" in err and "is not JSON" in err
    assert "Traceback" not in err
    assert state.read_text().endswith('"tripped": tru')  # never reset


def test_usage_errors(ws: Workspace) -> None:
    proc = ws.cli("monitor", "check", "other", "--version", "v1", "--profile", "profile.json")
    assert proc.returncode == 2 and "'other' is not under monitor.models" in proc.stderr
    assert "mlops.yaml" in proc.stderr and "monitored models: m" in proc.stderr
    code, _, err = _check(ws, T0, "--window", "a day")
    assert code == 2 and "--window 'a day'" in err
    code, _, err = _check(ws, T0, "--window", "10s")
    assert code == 2 and "1 minute to 366 days" in err
    proc = ws.cli("monitor", "check", "m", "--version", "v1", "--profile", "profile.json",
                  "--end", "yesterday")
    assert proc.returncode == 2 and "not a time" in proc.stderr
    code, _, err = _check(ws, T0, "--profile", "missing.json")
    assert code == 2 and "missing.json" in err


def test_act_opens_the_issue_and_dispatches_once(ws: Workspace, github: GitHubEmulator,
                                                 ) -> None:
    ws.write("mlops.yaml", CONFIG + "      retrain: {workflow: retrain.yml}\n")
    github.repo("octo/demo").add_workflow("retrain.yml", inputs={"reason": {"required": False}})
    env = {"GITHUB_TOKEN": github.token, "GITHUB_API_URL": github.url,
           "GITHUB_REPOSITORY": "octo/demo", "GITHUB_RUN_ID": "42"}
    logs = ws.root / "logs"
    for i in range(4):
        write(logs, T0 + i * HOUR, shift=1.5, seed=i)
        code, out, err = _check(ws, T0 + (i + 1) * HOUR, "--act", env=env)
        assert code == 0, err
    assert "drift" in out
    [issue] = github.issues("octo/demo")
    assert issue.state == "open" and "drift" in issue.labels
    assert len(github.repo("octo/demo").dispatches) == 1  # tripped once, dispatched once
    state = json.loads((logs / "m" / "monitor" / "alarm.json").read_text())
    assert state["tripped"] and state["last_dispatch"] is not None
    proc = ws.cli("monitor", "check", "m", "--version", "v1", "--profile", "profile.json",
                  "--act", env={"GITHUB_TOKEN": "x"})
    assert proc.returncode == 2 and "GITHUB_REPOSITORY" in proc.stderr


@pytest.mark.usefixtures("aws_env")
def test_a_log_in_s3_keeps_its_state_there(ws: Workspace, bucket: str,  # noqa: F811
                                           moto_endpoint: str) -> None:  # noqa: F811
    import boto3

    local = ws.root / "local"
    for i in range(2):
        write(local, T0 + i * HOUR, shift=1.5, seed=i)
    client = boto3.client("s3", endpoint_url=moto_endpoint)
    try:
        for path in sorted(local.rglob("*.jsonl.gz")):
            client.put_object(Bucket=bucket, Key="prod/" + path.relative_to(local).as_posix(),
                              Body=path.read_bytes())
        env = {"AWS_ENDPOINT_URL": moto_endpoint}
        for i in range(2):
            code, out, err = _check(ws, T0 + (i + 1) * HOUR, "--log", f"s3://{bucket}/prod",
                                    "--json", env=env)
            assert code == 0, err
        doc = json.loads(out)
        assert doc["rows"] == 1000 and doc["alarm"]["status"] == "drift"
        body = client.get_object(Bucket=bucket, Key="prod/m/monitor/alarm.json")["Body"].read()
    finally:
        client.close()
    state = json.loads(body)
    assert state["tripped"] and [w["samples"] for w in state["windows"]] == [1000, 1000]
    assert not (ws.root / "logs").exists()
