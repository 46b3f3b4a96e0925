"""Mistakes a new user makes that used to pass silently or point at the wrong line: a remote
URL with one slash, a gate on a metric nothing measures, a YAML error reported a line late."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gha_mlops.config import load_pipeline
from gha_mlops.config.model import Gate
from gha_mlops.data.stores import open_store
from gha_mlops.errors import ConfigError, RemoteError
from gha_mlops.reporting.compare import compare
from gha_mlops.reporting.gates import evaluate_gate

STAGES = "stages:\n  train:\n    cmd: python train.py\n    metrics: [metrics.json]\n"

# --------------------------------------------------------------------------- remotes

BAD_REMOTES = [  # url, what the hint must say
    ("s3:/bucket/prefix", "did you mean 's3://bucket/prefix'?"),
    ("s3:bucket", "did you mean 's3://bucket'?"),
    ("file:/mnt/nas/data", "did you mean 'file:///mnt/nas/data'?"),
    ("gs://bucket/prefix", "s3://bucket/prefix"),
    ("nas:datasets", "./nas:datasets"),
    ("C:\\\\data", "POSIX directory path"),
]


@pytest.mark.parametrize(("url", "hint"), BAD_REMOTES)
def test_a_url_of_no_known_form_is_a_config_error_at_its_line(
        tmp_path: Path, url: str, hint: str) -> None:
    (tmp_path / "mlops.yaml").write_text(f'remotes:\n  nas:\n    url: "{url}"\n{STAGES}')
    with pytest.raises(ConfigError) as exc:
        load_pipeline(tmp_path / "mlops.yaml")
    err = exc.value
    assert err.line == 3 and err.file is not None and err.file.endswith("mlops.yaml")
    assert "remotes.nas.url" in err.message
    assert err.hint is not None and hint in err.hint
    # open_store refuses it too (a URL that comes from elsewhere): never a folder 's3:'
    with pytest.raises(RemoteError):
        open_store(url.replace("\\\\", "\\"))
    assert [p.name for p in tmp_path.iterdir()] == ["mlops.yaml"]


@pytest.mark.parametrize("url", ["backups/2024:01", "../remote", "/mnt/nas/data",
                                 "./s3:/odd-but-explicit", "s3://bucket/prefix",
                                 "file:///mnt/nas", "https://example.com/data"])
def test_paths_and_known_urls_still_load(tmp_path: Path, url: str) -> None:
    (tmp_path / "mlops.yaml").write_text(f'remotes:\n  nas:\n    url: "{url}"\n{STAGES}')
    assert load_pipeline(tmp_path / "mlops.yaml").remotes["nas"].url == url


# --------------------------------------------------------------------------- YAML lines

BROKEN_YAML = [  # text, the line the user must fix, words of the message
    ("missing ':' after a key, the next line a key",
     "stages:\n  train:\n    cmd python train.py\n    deps: [a]\n", 3, "without 'key: value'"),
    ("missing ':' after a stage name",
     "stages:\n  train\n    cmd: x\n", 2, "without 'key: value'"),
    ("missing ':' and a comment line after it",
     "stages:\n  train:\n    cmd x\n    # note\n    deps: [a]\n", 3, "without 'key: value'"),
    ("missing ':' and a blank line after it",
     "stages:\n  train:\n    cmd x\n\n    deps: [a]\n", 3, "without 'key: value'"),
    ("missing ':' on the last line",
     "stages:\n  train:\n    cmd: x\n    deps\n", 4, "without 'key: value'"),
    ("a key indented deeper than the one above",
     "stages:\n  train:\n    cmd: python t.py\n     deps: [a]\n", 4, "'key: value' where"),
    ("a key indented less, after a value on a line of its own",
     "stages:\n  train:\n    cmd:\n      python x\n   deps: [a]\n", 5, "indentation"),
    ("a key indented less than the one above",
     "stages:\n  train:\n    cmd: python t.py\n   deps: [a]\n", 4, "indentation"),
    ("a top-level key indented under the one above",
     "seed: 1\n  stages:\n    train:\n      cmd: x\n", 2, "'key: value' where"),
    ("a key at the column of the list items above",
     "stages:\n  train:\n    deps:\n      - a\n      outs: [b]\n", 5, "list items"),
    ("a tab before a key", "stages:\n  train:\n\tcmd: x\n", 3, "tab"),
    ("a tab after a plain value", "stages:\n  train:\n    cmd: x\n\tdeps: [a]\n", 4, "tab"),
    ("an unclosed '['", "stages:\n  train:\n    cmd: x\n    deps: [a, b\n    outs: [c]\n",
     4, "'[' opened here"),
    ("an unclosed '{'", "stages:\n  train: {cmd: x\n  test:\n    cmd: y\n", 2,
     "'{' opened here"),
    ("an unclosed quote", "stages:\n  train:\n    cmd: \"python t.py\n    deps: [a]\n", 3,
     "quoted string"),
]


@pytest.mark.parametrize(("text", "line", "words"), [c[1:] for c in BROKEN_YAML],
                         ids=[c[0] for c in BROKEN_YAML])
def test_a_yaml_error_points_at_the_line_to_fix(tmp_path: Path, text: str, line: int,
                                                words: str) -> None:
    (tmp_path / "mlops.yaml").write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_pipeline(tmp_path / "mlops.yaml")
    assert exc.value.line == line, (exc.value.message, exc.value.notes)
    assert words in exc.value.message
    assert exc.value.notes[0].startswith(f"{line} | ")  # the line itself is quoted


# --------------------------------------------------------------------------- gates


def test_a_gate_when_no_stage_declares_a_metrics_file_is_an_error_at_its_line(
        tmp_path: Path) -> None:
    (tmp_path / "mlops.yaml").write_text(
        "stages:\n  train:\n    cmd: python train.py\n\ngates:\n  accuracy: {min: 0.9}\n")
    with pytest.raises(ConfigError) as exc:
        load_pipeline(tmp_path / "mlops.yaml")
    assert exc.value.line == 6 and "gates.accuracy" in exc.value.message
    assert exc.value.hint is not None and "metrics:" in exc.value.hint


GATES = ("gates:\n  test_accuracy: {min_delta: -0.002}\n  test_acuracy: {min: 0.5}\n"
         "  metrics.json:loss: {max: 1}\n")


def test_a_gate_metric_no_metrics_file_has_warns_at_its_line_with_a_guess(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "mlops.yaml").write_text(STAGES + GATES)
    (tmp_path / "metrics.json").write_text(json.dumps(
        {"test_accuracy": 0.9, "nested": {"loss": 0.2}}))
    pipeline = load_pipeline(tmp_path / "mlops.yaml")
    err = capsys.readouterr().err
    assert "mlops.yaml:7: gates.test_acuracy: no metric 'test_acuracy' in metrics.json; " \
           "did you mean 'test_accuracy'?" in err
    assert "mlops.yaml:8: gates.metrics.json:loss: no metric 'loss' in metrics.json; " \
           "did you mean 'metrics.json:nested.loss'?" in err
    assert "test_accuracy:" not in err.replace("'test_accuracy'", "")  # the right one is quiet
    assert pipeline.gates["test_acuracy"].source is not None
    load_pipeline(tmp_path / "mlops.yaml")
    assert capsys.readouterr().err == ""  # once per process


def test_gates_before_any_run_warn_once_that_they_cannot_be_checked_yet(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "mlops.yaml").write_text(STAGES + GATES)
    load_pipeline(tmp_path / "mlops.yaml")
    err = capsys.readouterr().err
    assert err.count("warning:") == 1
    assert "mlops.yaml:6: gates: cannot check the metric of 3 gates yet: metrics.json does " \
           "not exist yet" in err


def test_report_names_the_gate_line_and_the_closest_metric(tmp_path: Path) -> None:
    (tmp_path / "mlops.yaml").write_text(STAGES + GATES)
    (tmp_path / "metrics.json").write_text('{"test_accuracy": 0.9}')
    gate = load_pipeline(tmp_path / "mlops.yaml").gates["test_acuracy"]
    record = {"id": "r", "stages": [], "metrics": {"metrics.json": {"test_accuracy": 0.9}}}
    result = evaluate_gate(compare(record, record), gate)
    assert result.status == "fail"
    assert result.reasons[0].startswith("test_acuracy is missing from the head run")
    assert result.reasons[0].endswith("mlops.yaml:7); did you mean test_accuracy?")
    bare = evaluate_gate(compare(record, record), Gate("test_acuracy", min=0.5))
    assert "did you mean test_accuracy?" in bare.reasons[0]


def test_the_line_lacking_its_colon_is_found_deep_in_a_long_file(tmp_path: Path) -> None:
    lines = ["stages:"] + [f"  s{i}:\n    cmd: |\n      echo {i}\n      echo: {i}\n"
                           f"    deps: [a.txt]" for i in range(400)]
    lines[-1] = "  last:\n    cmd: x\n    deps [a.txt]\n    outs: [b.txt]"  # lines 1997-2000
    (tmp_path / "mlops.yaml").write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as exc:
        load_pipeline(tmp_path / "mlops.yaml")
    assert exc.value.line == 1999 and "without 'key: value'" in exc.value.message


def test_a_metrics_file_linked_out_of_the_workspace_is_not_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (tmp_path / "secret.json").write_text('{"test_acuracy_token": "s3cr3t"}')
    (ws / "metrics.json").symlink_to(tmp_path / "secret.json")
    (ws / "mlops.yaml").write_text(STAGES + GATES)
    load_pipeline(ws / "mlops.yaml")
    err = capsys.readouterr().err
    assert "test_acuracy_token" not in err and "does not exist yet" in err
