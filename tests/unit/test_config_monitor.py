"""``monitor:`` in mlops.yaml: every default, the full example (also from the validated-config
cache), and one clear error per class of mistake, naming the key, its line and what to write
instead; the bounds agree with the alarm (HysteresisConfig) and the names with the log."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gha_mlops.config import load_pipeline
from gha_mlops.config._monitor import TENSOR_NAME
from gha_mlops.config.model import MonitorAlarm, MonitorConfig, MonitorModel, MonitorRetrain
from gha_mlops.errors import ConfigError
from gha_mlops.monitor.hysteresis import HysteresisConfig
from gha_mlops.monitor.predlog_writer import TENSOR_NAME as LOG_TENSOR_NAME

HEAD = """\
stages:
  train:
    cmd: echo
    outs: [package]
registry:
  stages: [dev, staging, production]
  champion: production
  models:
    digits:
      path: package/model.onnx
"""
# One model with only what is required, its key at line 13.
MINIMAL = """\
monitor:
  models:
    digits:
      log: logs/predictions
"""
FULL = """\
monitor:
  models:
    digits:
      log: logs/predictions
      sample: 0.25
      stage: production
      window: 24h
      share: 0.5
      features: ["x[0]", "x[1]"]
      label: label
      alarm: {high: 0.5, low: 0.3, k: 2, n: 3, m: 1, cooldown: 7d, min_samples: 1000}
      retrain: {workflow: retrain.yml, ref: main, inputs: {epochs: "3"}, reason_input: reason}
      issue_labels: [drift]
      collect_into: feedback
"""


def _load(tmp_path: Path, text: str) -> MonitorConfig | None:
    (tmp_path / "mlops.yaml").write_text(text)
    (tmp_path / ".gha-mlops").mkdir(exist_ok=True)  # so the validated config is cached
    return load_pipeline(tmp_path / "mlops.yaml").monitor


def _with(body: str) -> str:
    """``HEAD`` and MINIMAL plus ``body`` (keys indented as the model's)."""
    return HEAD + MINIMAL + body


def test_every_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    found = _load(tmp_path, HEAD + MINIMAL)
    digits = MonitorModel(
        name="digits", log="logs/predictions", stage=None, window_s=86400.0, share=0.5,
        features=None, label=None,
        alarm=MonitorAlarm(high=0.5, low=0.3, k=2, n=3, m=1, cooldown_s=604800.0,
                           min_samples=1000),
        retrain=None, issue_labels=("drift",), collect_into=None)
    assert found == MonitorConfig(models={"digits": digits})
    assert found is not None and found.models["digits"].source == "mlops.yaml:13"


def test_the_full_example_and_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    found = _load(tmp_path, HEAD + FULL)
    digits = MonitorModel(
        name="digits", log="logs/predictions", sample=0.25, stage="production",
        window_s=86400.0,
        share=0.5, features=("x[0]", "x[1]"), label="label",
        alarm=MonitorAlarm(high=0.5, low=0.3, k=2, n=3, m=1, cooldown_s=604800.0,
                           min_samples=1000),
        retrain=MonitorRetrain(workflow="retrain.yml", ref="main", inputs={"epochs": "3"},
                               reason_input="reason"),
        issue_labels=("drift",), collect_into="feedback")
    assert found == MonitorConfig(models={"digits": digits})
    assert found is not None and found.models["digits"].source == "mlops.yaml:13"
    # Loaded again, from the validated-config cache: the same value, the same source.
    cached = json.loads((tmp_path / ".gha-mlops" / "tmp" / "config.json").read_text())
    assert cached["monitor"]["models"]["digits"]["line"] == 13
    again = load_pipeline(tmp_path / "mlops.yaml").monitor
    assert again == found
    assert again is not None and again.models["digits"].source == "mlops.yaml:13"
    # What the alarm is built from is what HysteresisConfig accepts.
    alarm = again.models["digits"].alarm
    HysteresisConfig(high=alarm.high, low=alarm.low, k=alarm.k, n=alarm.n, m=alarm.m,
                     cooldown_s=alarm.cooldown_s, min_samples=alarm.min_samples)


def test_no_section_is_no_monitor(tmp_path: Path) -> None:
    assert _load(tmp_path, HEAD) is None


def test_no_reason_and_several_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    text = (HEAD + "    other:\n      path: package/other.onnx\n" + MINIMAL
            + "      retrain: {workflow: retrain.yaml, reason_input: null}\n"
            + "    other:\n      log: /var/log/predictions/\n      window: 90m\n")
    found = _load(tmp_path, text)
    assert found is not None and list(found.models) == ["digits", "other"]
    assert found.models["digits"].retrain == MonitorRetrain(workflow="retrain.yaml", ref=None,
                                                            inputs={}, reason_input=None)
    assert found.models["other"].log == "/var/log/predictions"
    assert found.models["other"].window_s == 5400.0
    assert found.models["other"].source == "mlops.yaml:18"


@pytest.mark.parametrize(("log", "normalized"), [
    ("logs/./predictions/", "logs/predictions"),
    ("/var/log//predictions", "/var/log/predictions"),
    ("//mnt/nas/predictions", "/mnt/nas/predictions"),
    ("/../mnt/x", "/mnt/x"),  # above the root is the root: still an absolute path
    ("s3://ml-logs", "s3://ml-logs"),
    ("s3://ml-logs/digits/", "s3://ml-logs/digits"),
    ("s3://ml.logs-2/a/b", "s3://ml.logs-2/a/b"),
    ("./2024:01", "2024:01"),
])
def test_log_locations(tmp_path: Path, log: str, normalized: str) -> None:
    found = _load(tmp_path, HEAD + MINIMAL.replace("logs/predictions", f"'{log}'"))
    assert found is not None and found.models["digits"].log == normalized


@pytest.mark.parametrize(("log", "words", "hint"), [
    ("../logs", "climbs out of the workspace", "as an absolute path"),
    ("logs/../../x", "climbs out of the workspace", "as an absolute path"),
    ("s3:/ml-logs/x", "is not a valid s3:// URL", "did you mean 's3://ml-logs/x'?"),
    ("s3:ml-logs", "is not a valid s3:// URL", "did you mean 's3://ml-logs'?"),
    ("gs://ml-logs/x", "names a gs: location", "AWS_ENDPOINT_URL"),
    ("file:///var/log", "names a file: location", "s3://bucket/prefix"),
    ("C:/logs", "Windows drive path", "POSIX path"),
    ("logs\\predictions", "uses '\\' as a separator", "with '/'"),
    ("~/logs", "does not expand", "absolute path"),
    ("/", "the file system's root", "/var/log/predictions"),
    (".", "the whole workspace", "inside the workspace"),
    (".gha-mlops/logs", "inside .gha-mlops/", "outside .gha-mlops/"),
    ("logs\n", "control characters", "s3://bucket/prefix"),
    (" logs", "leading or trailing spaces", "s3://bucket/prefix"),
    ("s3://Ml_Logs/x", "is not an S3 bucket name", "s3://ml-logs/digits"),
    ("s3://ml-logs/a//b", "an empty, '.' or '..' part", "s3://bucket/prefix"),
    ("s3://ml-logs/../b", "an empty, '.' or '..' part", "s3://bucket/prefix"),
    ("s3://ml-logs/x?versionId=1", "has a query or fragment", "s3://bucket/prefix"),
    ("s3://user@ml-logs/x", "is not an S3 bucket name", "s3://bucket/prefix"),
])
def test_each_log_rule(tmp_path: Path, log: str, words: str, hint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, HEAD + MINIMAL.replace("logs/predictions", json.dumps(log)))
    err = caught.value
    assert words in err.message and err.line == 14, (err.message, err.line)
    assert err.hint is not None and hint in err.hint, err.hint


@pytest.mark.parametrize(("window", "seconds"), [
    ("90m", 5400.0), ("24h", 86400.0), ("7d", 604800.0), ("1.5h", 5400.0), ("60", 60.0),
    ("366d", 366 * 86400.0), ("'3600 s'", 3600.0),
])
def test_windows_in_seconds(tmp_path: Path, window: str, seconds: float) -> None:
    found = _load(tmp_path, _with(f"      window: {window}\n"))
    assert found is not None and found.models["digits"].window_s == seconds


@pytest.mark.parametrize(("window", "words"), [
    ("59", "59 s is outside 1 m..366 d"), ("30s", "30 s is outside 1 m..366 d"),
    ("367d", "367 d is outside 1 m..366 d"), ("-5", "-5 s is outside 1 m..366 d"),
    ("1 day", "expected a number of seconds or a duration such as '90m'"),
    ("1w", "expected a number of seconds or a duration such as '90m'"),
    ("true", "expected a number of seconds or a duration"), (".inf", "a finite number"),
])
def test_each_window_rule(tmp_path: Path, window: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, _with(f"      window: {window}\n"))
    err = caught.value
    assert words in err.message and err.line == 15, (err.message, err.line)
    assert err.hint is not None and "from 1 minute to 366 days" in err.hint


# (the file, words of the message, words of the hint). The line of the mistake is the one
# marked `# <-`.
MISTAKES = {
    "no registry": (HEAD.split("registry:")[0] + MINIMAL.replace("monitor:", "monitor:  # <-"),
                    "monitoring needs a `registry:` section", "under `registry:`"),
    "no models": (HEAD + "monitor:  # <-\n  models: {}\n",
                  "there are no models to monitor", "digits: {log: logs/predictions}"),
    "not a mapping": (HEAD + "monitor: [digits]  # <-\n", "expected a mapping, got a list",
                      "`monitor` takes a mapping with `models:`"),
    "unknown model": (HEAD + MINIMAL.replace("    digits:", "    digit:  # <-"),
                      "no model named 'digit' in registry.models", "did you mean 'digits'?"),
    "unknown stage": (_with("      stage: prod  # <-\n"),
                      "'prod' is not one of the registry's stages",
                      "'dev', 'staging', 'production'"),
    "model null": (HEAD + "monitor:\n  models:\n    digits:  # <-\n",
                   "expected a mapping, got nothing (null)", "at least `log`"),
    "missing log": (HEAD + "monitor:\n  models:\n    digits:  # <-\n      window: 24h\n",
                    "missing required key 'log'", "`log` takes"),
    "empty log": (HEAD + MINIMAL.replace("logs/predictions", "''  # <-"),
                  "must not be empty", "`log` takes a directory"),
    "unknown key": (_with("      windw: 24h  # <-\n"), "unknown key 'windw'",
                    "did you mean 'window'? allowed keys: log, sample, stage, window"),
    "share zero": (_with("      share: 0  # <-\n"), "must be more than 0", "`share` takes"),
    "sample zero": (_with("      sample: 0  # <-\n"), "must be more than 0", "`sample` takes"),
    "sample over one": (_with("      sample: 2  # <-\n"), "must be at most 1",
                        "`sample` takes"),
    "share over one": (_with("      share: 1.5  # <-\n"), "must be at most 1",
                       "`share` takes"),
    "share a string": (_with("      share: half  # <-\n"),
                       "expected a number, got a string 'half'", "`share` takes"),
    "features empty": (_with("      features: []  # <-\n"), "expected at least 1 item",
                       "`features` takes"),
    "features twice": (_with("      features:\n        - age\n        - age  # <-\n"),
                       "'age' is listed twice (as features[0])", "remove one"),
    "feature name": (_with("      features:\n        - age\n        - 'x[-1]'  # <-\n"),
                     "'x[-1]' is not a feature column name", "`x[0]` ... `x[9999]`"),
    "feature not a string": (_with("      features:\n        - 3  # <-\n"),
                             "expected a string, got an integer 3", "`features` takes"),
    "label name": (_with("      label: 'predicted class'  # <-\n"),
                   "'predicted class' is not a tensor name", "`label: label`"),
    "collect_into name": (_with("      collect_into: 'my data'  # <-\n"),
                          "'my data' is not a dataset name", "`collect_into: feedback`"),
    "low over high": (_with("      alarm:\n        high: 0.3\n        low: 0.5  # <-\n"),
                      "low (0.5) must be below high (0.3)", "the gap between them"),
    "low equals high": (_with("      alarm: {high: 0.4, low: 0.4}  # <-\n"),
                        "low (0.4) must be below high (0.4)", "the gap between them"),
    "k over n": (_with("      alarm:\n        k: 4  # <-\n"), "k (4) is more than n (3)",
                 "make it at most n"),
    "m over n": (_with("      alarm:\n        n: 2\n        m: 3  # <-\n"),
                 "m (3) is more than n (2)", "make it at most n"),
    "m zero": (_with("      alarm:\n        m: 0  # <-\n"), "must be at least 1",
               "`m` takes"),
    "n over 100": (_with("      alarm:\n        n: 101  # <-\n"), "must be at most 100",
                   "`n` takes"),
    "high over one": (_with("      alarm:\n        high: 2  # <-\n"), "must be at most 1",
                      "`high` takes"),
    "k a string": (_with("      alarm:\n        k: '2'  # <-\n"),
                   "expected a whole number, got a string '2'", "`k` takes"),
    "negative cooldown": (_with("      alarm:\n        cooldown: -1  # <-\n"),
                          "-1 s is outside 0 s..366 d", "`cooldown` takes"),
    "long cooldown": (_with("      alarm:\n        cooldown: 400d  # <-\n"),
                      "400 d is outside 0 s..366 d", "`cooldown` takes"),
    "min_samples zero": (_with("      alarm:\n        min_samples: 0  # <-\n"),
                         "must be at least 1", "`min_samples` takes"),
    "unknown alarm key": (_with("      alarm:\n        cooldown_s: 3600  # <-\n"),
                          "unknown key 'cooldown_s'", "did you mean 'cooldown'?"),
    "no workflow": (_with("      retrain:  # <-\n        ref: main\n"),
                    "missing required key 'workflow'", "`workflow: retrain.yml`"),
    "workflow path": (_with("      retrain:\n        workflow: .github/workflows/retrain.yml"
                            "  # <-\n"), "is a path, not a workflow file name",
                      "`workflow: retrain.yml`"),
    "workflow climbs": (_with("      retrain:\n        workflow: ../retrain.yml  # <-\n"),
                        "is a path, not a workflow file name", "`workflow: retrain.yml`"),
    "workflow suffix": (_with("      retrain:\n        workflow: retrain.json  # <-\n"),
                        "'retrain.json' is not a workflow file name", "ending .yml or .yaml"),
    "ref": (_with("      retrain:\n        workflow: r.yml\n        ref: 'main..dev'  # <-\n"),
            "'main..dev' is not a git branch or tag name", "`ref: main`"),
    "input not a string": (_with("      retrain:\n        workflow: r.yml\n        inputs:\n"
                                 "          epochs: 3  # <-\n"),
                           "expected a string, got an integer 3", "quote the value"),
    "input name": (_with("      retrain:\n        workflow: r.yml\n        inputs:\n"
                         "          1epochs: '3'  # <-\n"),
                   "'1epochs' is not a workflow input name", "start with a letter or '_'"),
    "input long": (_with("      retrain:\n        workflow: r.yml\n        inputs:\n"
                         f"          notes: '{'x' * 1025}'  # <-\n"),
                   "the value is 1025 characters, more than 1024", "short value"),
    "inputs case": (_with("      retrain:\n        workflow: r.yml\n        inputs:\n"
                          "          epochs: '3'\n          Epochs: '4'  # <-\n"),
                    "it is the same as the input 'epochs'", "without regard to case"),
    "reason overwrites": (_with("      retrain:\n        workflow: r.yml\n        inputs: "
                                "{Reason: x}\n        reason_input: reason  # <-\n"),
                          "the reason would overwrite the input 'Reason'",
                          "`reason_input: null`"),
    "reason name": (_with("      retrain:\n        workflow: r.yml\n        reason_input: "
                          "'why?'  # <-\n"), "'why?' is not a workflow input name",
                    "start with a letter"),
    "too many inputs": (_with("      retrain:\n        workflow: r.yml\n        inputs:  # <-\n"
                              + "".join(f"          i{i}: x\n" for i in range(25))),
                        "26 inputs (with reason_input) are more than the 25 GitHub accepts",
                        "pass fewer inputs"),
    "labels empty": (_with("      issue_labels: []  # <-\n"), "expected at least 1 item",
                     "the first one finds"),
    "label long": (_with(f"      issue_labels: [{'x' * 51}]  # <-\n"),
                   "is 51 characters, more than GitHub's 50", "`issue_labels` takes"),
    "label comma": (_with("      issue_labels: ['drift,ml']  # <-\n"),
                    "holds a ','", "`issue_labels` takes"),
    "label twice": (_with("      issue_labels:\n        - drift\n        - Drift  # <-\n"),
                    "is listed twice (as issue_labels[0]", "`issue_labels` takes"),
    "label spaces": (_with("      issue_labels: [' drift']  # <-\n"),
                     "leading or trailing spaces", "`issue_labels` takes"),
    "key not a string": (_with("      retrain:\n        workflow: r.yml\n        inputs:\n"
                               "          1: x  # <-\n"), "key '1' is not a string",
                         "quote it"),
}


@pytest.mark.parametrize("case", list(MISTAKES))
def test_a_mistake_is_named_with_its_line_and_a_hint(tmp_path: Path, case: str) -> None:
    text, words, hint = MISTAKES[case]
    marked = [i for i, line in enumerate(text.splitlines(), start=1) if "# <-" in line]
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    err = caught.value
    assert words in err.message, (err.message, err.notes)
    assert err.hint is not None and hint in err.hint, err.hint
    assert err.message.startswith("monitor"), err.message  # the key path comes first
    assert err.line == marked[0], (err.line, err.message)


def test_every_mistake_is_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two mistakes in two models: the first is the error, the second a note at its line."""
    monkeypatch.chdir(tmp_path)
    text = (HEAD + "    other:\n      path: package/other.onnx\n" + MINIMAL
            + "      window: 30s\n    other:\n      log: ../x\n")
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    assert "window: 30 s is outside" in caught.value.message and caught.value.line == 17
    assert any("mlops.yaml:19: monitor.models.other.log: '../x' climbs out" in note
               for note in caught.value.notes), caught.value.notes


@pytest.mark.parametrize("ref", ["main", "release/v1.2", "refs/heads/main", "v1.0.0",
                                 "0123456789abcdef0123456789abcdef01234567"])
def test_refs_git_takes(tmp_path: Path, ref: str) -> None:
    found = _load(tmp_path, _with(f"      retrain: {{workflow: r.yml, ref: '{ref}'}}\n"))
    assert found is not None
    retrain = found.models["digits"].retrain
    assert retrain is not None and retrain.ref == ref


@pytest.mark.parametrize("ref", ["-main", "main/", "a//b", "a.lock", ".hidden", "a b",
                                 "a~1", "a^", "a:b", "a?", "a*", "a[", "@", "a@{1}", "a.",
                                 "x" * 256])
def test_refs_git_refuses(tmp_path: Path, ref: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, _with(f"      retrain: {{workflow: r.yml, ref: '{ref}'}}\n"))
    assert "is not a git branch or tag name" in caught.value.message


def test_25_inputs_are_the_most(tmp_path: Path) -> None:
    """GitHub's cap since 2025-12-04 (it was 10): 24 inputs and the reason pass."""
    inputs = "".join(f"          i{i}: x\n" for i in range(24))
    found = _load(tmp_path, _with("      retrain:\n        workflow: r.yml\n        inputs:\n"
                                  + inputs))
    assert found is not None
    retrain = found.models["digits"].retrain
    assert retrain is not None and len(retrain.inputs) == 24


@pytest.mark.parametrize("alarm", [
    "{k: 3, n: 3, m: 3}", "{k: 1, n: 100, m: 100}", "{cooldown: 0}", "{cooldown: 366d}",
    "{high: 1, low: 0}", "{min_samples: 1}", "{min_samples: 1000000000000}",
])
def test_every_alarm_the_config_takes_the_alarm_takes(tmp_path: Path, alarm: str) -> None:
    found = _load(tmp_path, _with(f"      alarm: {alarm}\n"))
    assert found is not None
    a = found.models["digits"].alarm
    HysteresisConfig(high=a.high, low=a.low, k=a.k, n=a.n, m=a.m, cooldown_s=a.cooldown_s,
                     min_samples=a.min_samples)


@pytest.mark.parametrize("name", ["x", "input_0", "a.b/c:d-e", "0", "x" * 128])
def test_tensor_names_are_the_logs(name: str) -> None:
    """The config's tensor grammar is the log writer's (config cannot import it)."""
    import re

    assert LOG_TENSOR_NAME.pattern == TENSOR_NAME
    assert re.fullmatch(TENSOR_NAME, name)


def test_feature_columns_are_the_profiles(tmp_path: Path) -> None:
    """Every column name features.column_names makes is a feature name the config takes."""
    from gha_mlops.monitor.features import column_names

    names = [*column_names("x", (2, 5)), *column_names("age", ())]
    listed = "".join(f"        - '{n}'\n" for n in names)
    found = _load(tmp_path, _with("      features:\n" + listed))
    assert found is not None and found.models["digits"].features == tuple(names)


REPO = Path(__file__).resolve().parents[2]


def _doc_example() -> str:
    """The example of docs/monitor-config.md, as it is written there."""
    doc = (REPO / "docs" / "monitor-config.md").read_text()
    found = re.search(r"<!-- example: loaded by tests/unit/test_config_monitor.py -->\n"
                      r"```yaml\n(.*?)```", doc, re.S)
    assert found, "docs/monitor-config.md lost its checked example"
    return found.group(1)


def test_the_documented_example_loads(tmp_path: Path) -> None:
    found = _load(tmp_path, _doc_example())
    assert found is not None and list(found.models) == ["digits", "churn"]
    digits, churn = found.models["digits"], found.models["churn"]
    assert digits.stage == "prod" and digits.features == ("x[0]", "x[1]")
    assert digits.sample == 0.2 and found.models["churn"].sample == 0.1
    assert digits.retrain == MonitorRetrain(workflow="retrain.yml", ref="main",
                                            inputs={"epochs": "3"}, reason_input="reason")
    assert digits.issue_labels == ("drift", "digits")
    assert churn.log == "s3://ml-logs/churn" and churn.window_s == 7 * 86400.0
    assert churn.stage is None and churn.retrain is None and churn.alarm == MonitorAlarm()
