"""Gates as a table: rules, values on both sides, the verdict and the sentence that says why."""

from __future__ import annotations

import math
from typing import Any

import pytest

from gha_mlops.config.model import Gate
from gha_mlops.reporting.compare import RunFiles, compare
from gha_mlops.reporting.gates import (
    GateFailedError,
    evaluate_gate,
    evaluate_gates,
    gate_failed_error,
)


def _comparison(base: dict[str, Any], head: dict[str, Any], directions: Any = None) -> Any:
    def files(values: dict[str, Any]) -> RunFiles:
        return RunFiles(documents={"m.json": values})

    record = {"id": "r", "stages": [], "metrics": {}}
    return compare(record, record, base_files=files(base), head_files=files(head),
                   directions=directions)


CASES: list[tuple[str, dict[str, Any], float | None, float | None, str, str]] = [
    # (metric, rules, base, head, status, reason fragment)
    ("test_accuracy", {"min_delta": -0.002}, 0.95, 0.9469, "fail",
     "test_accuracy dropped 0.0031, more than the allowed 0.002"),
    ("test_accuracy", {"min_delta": -0.002}, 0.95, 0.949, "pass", ""),
    ("test_accuracy", {"min_delta": 0.01}, 0.9, 0.905, "fail",
     "test_accuracy changed by +0.005, less than the required +0.01"),
    ("test_accuracy", {"min_delta": 0}, 0.9, 0.9, "pass", ""),
    ("latency_ms", {"max": 20}, 10, 25, "fail", "latency_ms is 25, above the maximum 20 by 5"),
    ("latency_ms", {"max": 20}, None, 20, "pass", ""),
    ("test_accuracy", {"min": 0.9}, 0.95, 0.85, "fail",
     "test_accuracy is 0.85, below the minimum 0.9 by 0.05"),
    ("latency_ms", {"max_delta": 2}, 10, 13.5, "fail",
     "latency_ms rose 3.5, more than the allowed 2"),
    ("latency_ms", {"max_delta": -1}, 10, 9.5, "fail",
     "latency_ms changed by -0.5, it must fall by at least 1"),
    ("test_accuracy", {"max_relative_drop": 0.01}, 0.8, 0.78, "fail",
     "test_accuracy dropped 2.5% (0.8 -> 0.78), more than the allowed 1%"),
    ("test_accuracy", {"max_relative_drop": 0.05}, 0.8, 0.78, "pass", ""),
    ("val_loss", {"max_relative_drop": 0.1}, 0.2, 0.25, "fail",
     "val_loss rose 25% (0.2 -> 0.25), more than the allowed 10%"),
    ("val_loss", {"max_relative_drop": 0.1}, 0.2, 0.1, "pass", ""),  # better: no drop
    ("score", {"max_relative_drop": 0.1, "direction": "lower"}, 1.0, 1.5, "fail",
     "score rose 50%"),
    ("errors", {"max_relative_drop": 0.1}, 0, 2, "fail", "from 0 to 2"),
    ("errors", {"max_relative_drop": 0.1}, 0, 0, "pass", ""),
    ("test_accuracy", {"min": 0.5}, 0.9, None, "fail",
     "test_accuracy is missing from the head run (the baseline has 0.9)"),
    ("test_accuracy", {"min": 0.5}, None, None, "fail",
     "test_accuracy is missing from the head run (and from the baseline)"),
    ("test_accuracy", {"min": 0.5}, 0.9, math.nan, "fail",
     "test_accuracy is nan on the head run, not a finite number"),
    ("test_accuracy", {"max": 2}, 0.9, math.inf, "fail", "is inf on the head run"),
    ("test_accuracy", {"min_delta": -0.01}, None, 0.9, "skipped",
     "min_delta not checked: the baseline has no value for it"),
    ("test_accuracy", {"min_delta": -0.01}, math.nan, 0.9, "skipped",
     "the baseline has nan"),
    ("test_accuracy", {"min_delta": -0.01, "min": 0.95}, None, 0.9, "fail",
     "below the minimum 0.95"),
    ("test_accuracy", {"min_delta": -0.01, "min": 0.5}, None, 0.9, "pass",
     "min_delta not checked"),
]


@pytest.mark.parametrize(("metric", "rules", "base", "head", "status", "reason"), CASES)
def test_gate(metric: str, rules: dict[str, Any], base: float | None, head: float | None,
              status: str, reason: str) -> None:
    c = _comparison({} if base is None else {metric: base},
                    {} if head is None else {metric: head},
                    {metric: rules["direction"]} if "direction" in rules else None)
    result = evaluate_gate(c, Gate(metric=metric, **rules))
    assert result.status == status, result.reasons
    assert result.passed == (status != "fail")
    text = " ".join(result.reasons)
    assert reason in text
    if not reason:
        assert not result.reasons


def test_a_key_in_two_files_is_ambiguous_until_qualified() -> None:
    record = {"id": "r", "stages": [], "metrics": {"a.json": {"acc": 0.9},
                                                   "b.json": {"acc": 0.5}}}
    c = compare(record, record)
    result = evaluate_gate(c, Gate(metric="acc", min=0.6))
    assert result.status == "fail"
    assert "ambiguous" in result.reasons[0] and "a.json:acc" in result.reasons[0]
    assert evaluate_gate(c, Gate(metric="a.json:acc", min=0.6)).status == "pass"
    assert evaluate_gate(c, Gate(metric="b.json:acc", min=0.6)).status == "fail"


def test_verdict_and_error() -> None:
    c = _comparison({"acc": 0.9, "latency_ms": 10}, {"acc": 0.8, "latency_ms": 30})
    assert evaluate_gates(c, {}).passed
    verdict = evaluate_gates(c, {"acc": Gate("acc", min_delta=-0.01),
                                 "latency_ms": Gate("latency_ms", max=20),
                                 "acc:min": Gate("acc", min=0)})
    assert not verdict.passed
    assert [r.gate.metric for r in verdict.failed] == ["acc", "latency_ms"]
    err = gate_failed_error(verdict)
    assert isinstance(err, GateFailedError)
    assert err.exit_code == 1
    assert err.message.startswith("2 of 3 gates failed: acc dropped 0.1")
    assert "latency_ms is 30, above the maximum 20" in err.message
    assert err.hint


def test_gates_are_loaded_from_mlops_yaml_and_survive_the_cache(tmp_path: Any) -> None:
    from gha_mlops.config import STATE_DIR, load_pipeline

    (tmp_path / STATE_DIR).mkdir()
    (tmp_path / "params.yaml").write_text("a: 1\n")
    (tmp_path / "mlops.yaml").write_text(
        "stages:\n  train:\n    cmd: python train.py\n    metrics: [eval/m.json]\n"
        "gates:\n  test_accuracy: {min_delta: -0.002}\n  latency_ms: {max: 20}\n"
        "  eval/m.json:loss: {max_relative_drop: 0.1, direction: lower}\n")
    first = load_pipeline(tmp_path / "mlops.yaml")
    assert first.gates == {
        "test_accuracy": Gate("test_accuracy", min_delta=-0.002),
        "latency_ms": Gate("latency_ms", max=20.0),
        "eval/m.json:loss": Gate("eval/m.json:loss", max_relative_drop=0.1, direction="lower"),
    }
    assert (tmp_path / STATE_DIR / "tmp" / "config.json").is_file()
    assert load_pipeline(tmp_path / "mlops.yaml") == first  # from the validated-config cache
    (tmp_path / "mlops.yaml").write_text("stages:\n  train:\n    cmd: python train.py\n")
    assert load_pipeline(tmp_path / "mlops.yaml").gates == {}
